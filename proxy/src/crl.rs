//! `[trust.crl_download]` at run time: fetches each CRL (HTTP, through the `[egress]`
//! forward proxy when set), checks it was signed by one of the configured CA
//! certificates and is not older than the copy kept, and writes it atomically over the
//! last good copy. The file watch then reloads, so a downloaded CRL revokes the
//! upstream servers' chains and our own certificates exactly as a `crls` file does.
//!
//! Timing: each CRL again after `refresh` times a random factor in [3/4, 1] (the CA
//! asks for randomised download times), sooner when its `nextUpdate` comes first; a
//! failed download is tried again after `retry`, doubling up to two hours (never past
//! `refresh`). A failure never removes the copy kept.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::x509::{X509, X509Crl};
use passerelle_config::{CrlDownload, CrlSource, asn1_time};
use time::OffsetDateTime;

use crate::fetch::{Fetch, FetchError, fetch};
use crate::runtime::Proxy;
use crate::schedule::{self, sleep_until_due, until};

/// How often the task looks at the configuration when nothing is due (a reload may add
/// or remove sources).
const IDLE: Duration = Duration::from_secs(30);
/// The longest wait between two tries of a failing download.
const MAX_BACKOFF: Duration = Duration::from_secs(2 * 3600);
/// A `thisUpdate` this far ahead of our clock is accepted (clock skew with the CA).
const FUTURE_SLACK_SECONDS: i64 = 300;

/// Why a download was not kept.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{url}: no complete answer within {seconds} s (trust.crl_download.timeout)")]
    Timeout { url: String, seconds: u64 },
    #[error("{url}: the answer is not a PEM or DER CRL")]
    NotACrl { url: String },
    #[error(
        "{url}: a CRL the TLS library cannot use ({reason}: a v1, delta or indirect CRL, or an unknown extension); refused, it would stop every upstream's TLS"
    )]
    Unusable { url: String, reason: String },
    #[error(
        "{url}: issued by \"{issuer}\", but the certificates naming this distribution point are issued by \"{expected}\": refused (another CA's CRL would hide this one's revocations)"
    )]
    WrongIssuer {
        url: String,
        issuer: String,
        expected: String,
    },
    #[error(
        "{url}: issued by \"{issuer}\", which no configured CA certificate names (add the CA to [trust] anchors or intermediates)"
    )]
    UnknownIssuer { url: String, issuer: String },
    #[error(
        "{url}: the signature does not verify with the key of \"{issuer}\": not that CA's CRL (altered on the way, or another CA with the same name); the copy kept stays"
    )]
    BadSignature { url: String, issuer: String },
    #[error("{url}: thisUpdate {this_update} is ahead of our clock: check NTP")]
    Future { url: String, this_update: String },
    #[error(
        "{url}: older than the copy kept (thisUpdate {new} before {kept}): refused, it could bring back revoked certificates"
    )]
    Older {
        url: String,
        new: String,
        kept: String,
    },
    #[error(
        "{url}: issued by \"{issuer}\", but the copy kept is \"{kept}\"'s: refused (another CA's CRL at this URL would drop this one's revocations); if the URL really changed CA, delete {file}"
    )]
    OtherIssuer {
        url: String,
        issuer: String,
        kept: String,
        file: String,
    },
    #[error("{file}: cannot write the downloaded CRL: {reason}")]
    Write { file: String, reason: String },
}

/// What a successful download did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new CRL replaced the copy (the watch reloads).
    Updated,
    /// The same CRL as the copy: nothing written.
    Unchanged,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// Per CRL URL: downloads by outcome and the last failure, for the metrics and
/// `/readyz`. Kept across reloads.
#[derive(Debug, Default)]
pub struct CrlStatus {
    sources: Mutex<HashMap<String, SourceStatus>>,
}

/// One URL's downloads.
#[derive(Debug, Default, Clone)]
pub struct SourceStatus {
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    /// Why the last try failed; `None` once one succeeds.
    pub last_error: Option<String>,
}

impl CrlStatus {
    fn record<T>(&self, url: &str, result: &Result<(Outcome, T), CrlError>) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let s = sources.entry(url.to_string()).or_default();
        match result {
            Ok((Outcome::Updated, _)) => s.updated += 1,
            Ok((Outcome::Unchanged, _)) => s.unchanged += 1,
            Err(_) => s.failed += 1,
        }
        s.last_error = result.as_ref().err().map(ToString::to_string);
    }

    /// Every URL tried, in URL order.
    pub fn snapshot(&self) -> Vec<(String, SourceStatus)> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = sources
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Keeps every CRL of `[trust.crl_download]` fresh, for as long as it runs.
pub async fn keep_fresh(proxy: Arc<Proxy>) {
    let mut due: HashMap<String, (tokio::time::Instant, u32)> = HashMap::new();
    loop {
        let state = proxy.state();
        let Some(plan) = state.config.crl_download.clone() else {
            due.clear();
            tokio::time::sleep(IDLE).await;
            continue;
        };
        drop(state);
        due.retain(|url, _| plan.sources.iter().any(|s| s.url.as_str() == url));
        for source in &plan.sources {
            let now = tokio::time::Instant::now();
            let url = source.url.to_string();
            let entry = due
                .entry(url.clone())
                .or_insert_with(|| (later(now, first_wait(&plan, source)), 0));
            if entry.0 > now {
                continue;
            }
            let result = download(&plan, source).await;
            proxy.metrics.crl.record(&url, &result);
            match &result {
                Ok((outcome, next_update)) => {
                    tracing::info!(crl = %url, outcome = outcome.label(), "CRL downloaded");
                    *entry = (later(now, wait_after(&plan, *next_update)), 0);
                }
                Err(e) => {
                    let failures = entry.1.saturating_add(1);
                    let wait = backoff(&plan, failures);
                    tracing::warn!(
                        crl = %url,
                        error = %e,
                        failures,
                        retry_in_s = wait.as_secs(),
                        "CRL download failed: the last good copy (if any) stays in use"
                    );
                    *entry = (later(now, wait), failures);
                }
            }
        }
        sleep_until_due(due.values().map(|d| d.0), IDLE).await;
    }
}

/// Fetches, checks and keeps one CRL; also its `nextUpdate`.
async fn download(
    plan: &CrlDownload,
    source: &CrlSource,
) -> Result<(Outcome, Option<OffsetDateTime>), CrlError> {
    let url = source.url.to_string();
    let request = Fetch {
        url: &source.url,
        egress: source.egress.as_ref(),
        post: None,
        accept: "application/pkix-crl, application/x-pkcs7-crl, */*",
        max: plan.max_bytes,
        setting: "trust.crl_download",
    };
    let bytes = match tokio::time::timeout(plan.timeout, fetch(request)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(CrlError::Timeout {
                url,
                seconds: plan.timeout.as_secs().max(1),
            });
        }
    };
    // Parsing and checking a CRL of up to max_bytes, and the write, stay off the
    // async workers.
    let (plan, source) = (plan.clone(), source.clone());
    tokio::task::spawn_blocking(move || keep(&plan, &source, &bytes))
        .await
        .unwrap_or_else(|e| {
            Err(CrlError::Write {
                file: url,
                reason: format!("the check stopped: {e}"),
            })
        })
}

/// Checks the download against the copy kept and writes it when it is new.
fn keep(
    plan: &CrlDownload,
    source: &CrlSource,
    bytes: &[u8],
) -> Result<(Outcome, Option<OffsetDateTime>), CrlError> {
    let url = source.url.to_string();
    let file = plan.file_for(&source.url);
    let kept = std::fs::read(&file)
        .ok()
        .and_then(|b| parse(&b).ok())
        .filter(|k| issuer_cert(k, &plan.issuers).is_some());
    let crl = verify(
        source,
        &file,
        bytes,
        &plan.issuers,
        kept.as_ref(),
        OffsetDateTime::now_utc(),
    )?;
    let next_update = crl.next_update().and_then(asn1_time);
    let der = crl.to_der().map_err(|_| CrlError::NotACrl { url })?;
    if kept.as_ref().and_then(|k| k.to_der().ok()).as_ref() == Some(&der) {
        return Ok((Outcome::Unchanged, next_update));
    }
    write_atomically(&file, &der)?;
    Ok((Outcome::Updated, next_update))
}

fn parse(bytes: &[u8]) -> Result<X509Crl, openssl::error::ErrorStack> {
    X509Crl::from_der(bytes).or_else(|_| X509Crl::from_pem(bytes))
}

/// The configured CA certificate whose name is the CRL's issuer and whose key signed it.
fn issuer_cert(crl: &X509Crl, issuers: &[Vec<u8>]) -> Option<X509> {
    issuers
        .iter()
        .filter_map(|der| X509::from_der(der).ok())
        .filter(|ca| {
            ca.subject_name()
                .try_cmp(crl.issuer_name())
                .is_ok_and(|o| o.is_eq())
        })
        .find(|ca| {
            ca.public_key()
                .ok()
                .and_then(|key| crl.verify(&key).ok())
                .unwrap_or(false)
        })
}

/// The downloaded CRL, once signed by a configured CA, not from the future, and not
/// older than the copy kept.
pub fn verify(
    source: &CrlSource,
    file: &Path,
    bytes: &[u8],
    issuers: &[Vec<u8>],
    kept: Option<&X509Crl>,
    now: OffsetDateTime,
) -> Result<X509Crl, CrlError> {
    let url = source.url.as_str();
    let crl = parse(bytes).map_err(|_| CrlError::NotACrl { url: url.into() })?;
    let der = crl
        .to_der()
        .map_err(|_| CrlError::NotACrl { url: url.into() })?;
    if let Err(e) = webpki::OwnedCertRevocationList::from_der(&der) {
        return Err(CrlError::Unusable {
            url: url.into(),
            reason: format!("{e:?}"),
        });
    }
    let issuer = name(crl.issuer_name());
    if let Some(expected) = source
        .issuer
        .as_deref()
        .and_then(|d| openssl::x509::X509Name::from_der(d).ok())
        && !expected.try_cmp(crl.issuer_name()).is_ok_and(|o| o.is_eq())
    {
        return Err(CrlError::WrongIssuer {
            url: url.into(),
            issuer,
            expected: name(&expected),
        });
    }
    let named = issuers
        .iter()
        .filter_map(|d| X509::from_der(d).ok())
        .any(|ca| {
            ca.subject_name()
                .try_cmp(crl.issuer_name())
                .is_ok_and(|o| o.is_eq())
        });
    if !named {
        return Err(CrlError::UnknownIssuer {
            url: url.into(),
            issuer,
        });
    }
    if issuer_cert(&crl, issuers).is_none() {
        return Err(CrlError::BadSignature {
            url: url.into(),
            issuer,
        });
    }
    let ahead = Asn1Time::from_unix(now.unix_timestamp() + FUTURE_SLACK_SECONDS)
        .is_ok_and(|limit| crl.last_update() > limit);
    if ahead {
        return Err(CrlError::Future {
            url: url.into(),
            this_update: crl.last_update().to_string(),
        });
    }
    if let Some(kept) = kept
        && !kept
            .issuer_name()
            .try_cmp(crl.issuer_name())
            .is_ok_and(|o| o.is_eq())
    {
        return Err(CrlError::OtherIssuer {
            url: url.into(),
            issuer,
            kept: name(kept.issuer_name()),
            file: file.display().to_string(),
        });
    }
    if let Some(kept) = kept
        && kept.last_update() > crl.last_update()
    {
        return Err(CrlError::Older {
            url: url.into(),
            new: crl.last_update().to_string(),
            kept: kept.last_update().to_string(),
        });
    }
    Ok(crl)
}

/// A name's values, for messages: control characters escaped (an unsigned CRL's names
/// reach the log and `/readyz` in an error).
fn name(n: &openssl::x509::X509NameRef) -> String {
    let text = n
        .entries()
        .filter_map(|e| e.data().to_string().ok().map(|s| s.to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    crate::sanitize::shown(&text, 300)
}

/// Next to the copy, then renamed over it: a reader (the reload) sees the old CRL or
/// the new one, never half of one.
fn write_atomically(file: &Path, der: &[u8]) -> Result<(), CrlError> {
    let err = |e: std::io::Error| CrlError::Write {
        file: file.display().to_string(),
        reason: e.to_string(),
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    // Unique per writer: replicas sharing the folder never write into one another's.
    let mut nonce = [0u8; 8];
    let _ = openssl::rand::rand_bytes(&mut nonce);
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id(),
        u64::from_le_bytes(nonce)
    ));
    let written = (|| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(der)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `now + wait`, a year at most (no overflow whatever the settings).
fn later(now: tokio::time::Instant, wait: Duration) -> tokio::time::Instant {
    now.checked_add(wait.min(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

/// A number in [0, 1].
fn random() -> f64 {
    let mut b = [0u8; 4];
    if openssl::rand::rand_bytes(&mut b).is_ok() {
        f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
    } else {
        0.5
    }
}

/// A factor in [3/4, 1]: downloads spread over time, as the CA asks.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.75 + 0.25 * random())
}

/// Until the first download of `source` after a start or a reload: now when no usable
/// copy is kept or it is past its `nextUpdate`, else what is left of a refresh period
/// counted from the copy's last write.
fn first_wait(plan: &CrlDownload, source: &CrlSource) -> Duration {
    let file = plan.file_for(&source.url);
    let Some(crl) = std::fs::read(&file).ok().and_then(|b| parse(&b).ok()) else {
        return Duration::ZERO;
    };
    let now = OffsetDateTime::now_utc();
    let next_update = crl.next_update().and_then(asn1_time);
    if next_update.is_some_and(|n| n <= now) {
        return Duration::ZERO;
    }
    let age = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| m.elapsed().ok())
        .unwrap_or(plan.refresh);
    jitter(plan.refresh)
        .saturating_sub(age)
        .min(after(plan, next_update, now))
}

/// After a good download: a randomised refresh period, or the CRL's `nextUpdate` when
/// sooner; a CRL already past its `nextUpdate` (the CA is late) is tried as after a
/// failure.
fn wait_after(plan: &CrlDownload, next_update: Option<OffsetDateTime>) -> Duration {
    let now = OffsetDateTime::now_utc();
    if next_update.is_some_and(|n| n <= now) {
        return backoff(plan, 1);
    }
    jitter(plan.refresh).min(after(plan, next_update, now))
}

/// Until a second past `nextUpdate`, plus a random share of `refresh` / 96 (15 minutes
/// for a day): replicas do not all ask the CA in the same second.
fn after(plan: &CrlDownload, next_update: Option<OffsetDateTime>, now: OffsetDateTime) -> Duration {
    until(next_update, now).saturating_add((plan.refresh / 96).mul_f64(random()))
}

/// `retry`, doubled per failure, at most two hours and never past `refresh`.
fn backoff(plan: &CrlDownload, failures: u32) -> Duration {
    schedule::backoff(plan.retry, failures, MAX_BACKOFF.min(plan.refresh))
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle_certs_test::{CrlIssuer, CrlOptions, shared_test_pki, write_crl};

    fn org_ca() -> Vec<Vec<u8>> {
        let pki = shared_test_pki().expect("PKI");
        let pem = std::fs::read(pki.path(&pki.ca.org_intermediate)).expect("read");
        vec![X509::from_pem(&pem).expect("pem").to_der().expect("der")]
    }

    fn crl(tweak: impl FnOnce(&mut CrlOptions)) -> Vec<u8> {
        let pki = shared_test_pki().expect("PKI");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = CrlOptions::new(&pki.dir, dir.path().join("c.crl"));
        tweak(&mut options);
        write_crl(&options).expect("crl")
    }

    /// Each refusal names its reason; a good CRL, PEM or DER, passes.
    #[test]
    fn a_crl_is_kept_only_when_signed_current_and_not_older() {
        let cas = org_ca();
        let now = OffsetDateTime::now_utc();
        let url = CrlSource {
            url: "http://crl.test/org.crl".parse().expect("URL"),
            egress: None,
            issuer: None,
        };
        let url = &url;
        let f = Path::new("crls/crl.test_org.crl");
        let good = crl(|_| {});
        let kept = verify(url, f, &good, &cas, None, now).expect("good PEM");
        let der = kept.to_der().expect("der");
        verify(url, f, &der, &cas, Some(&kept), now).expect("the same again, DER");

        let foreign = crl(|o| o.issuer = CrlIssuer::Foreign);
        let e = verify(url, f, &foreign, &cas, None, now)
            .err()
            .expect("foreign");
        assert!(matches!(e, CrlError::BadSignature { .. }), "{e}");
        assert!(e.to_string().contains("does not verify"), "{e}");

        let e = verify(url, f, &good, &[], None, now).err().expect("no CA");
        assert!(matches!(e, CrlError::UnknownIssuer { .. }), "{e}");

        let e = verify(url, f, b"<html>maintenance</html>", &cas, None, now)
            .err()
            .expect("html");
        assert!(matches!(e, CrlError::NotACrl { .. }), "{e}");

        let older = crl(|o| o.this_update = -7200);
        let e = verify(url, f, &older, &cas, Some(&kept), now)
            .err()
            .expect("older");
        assert!(matches!(e, CrlError::Older { .. }), "{e}");
        verify(url, f, &older, &cas, None, now).expect("older, but nothing kept");

        // A CRL of another configured CA at this URL: refused once a copy is kept.
        let root = {
            let pki = shared_test_pki().expect("PKI");
            let pem = std::fs::read(pki.path(&pki.ca.root)).expect("read");
            X509::from_pem(&pem).expect("pem")
        };
        let mut both = cas.clone();
        both.push(root.to_der().expect("der"));
        let other = crl(|o| o.issuer = CrlIssuer::Root);
        verify(url, f, &other, &both, None, now).expect("the root's CRL, nothing kept");
        let e = verify(url, f, &other, &both, Some(&kept), now)
            .err()
            .expect("other CA");
        assert!(matches!(e, CrlError::OtherIssuer { .. }), "{e}");
        // At a distribution point the ORG certificates name, only the ORG CA's CRL.
        let org_point = CrlSource {
            issuer: Some(
                X509::from_der(&cas[0])
                    .expect("der")
                    .subject_name()
                    .to_der()
                    .expect("name"),
            ),
            ..url.clone()
        };
        let e = verify(&org_point, f, &other, &both, None, now)
            .err()
            .expect("the root's CRL at the ORG point");
        assert!(matches!(e, CrlError::WrongIssuer { .. }), "{e}");
        verify(&org_point, f, &good, &both, None, now).expect("the ORG CRL there");

        let future = crl(|o| o.this_update = 3600);
        let e = verify(url, f, &future, &cas, None, now)
            .err()
            .expect("future");
        assert!(matches!(e, CrlError::Future { .. }), "{e}");
    }

    /// Failures back off from `retry` to two hours, never past `refresh`; a refresh is
    /// between 3/4 and all of the period, and a nearer nextUpdate wins.
    #[test]
    fn the_timing_is_randomised_and_bounded() {
        let mut plan = CrlDownload {
            directory: "crls".into(),
            sources: Vec::new(),
            refresh: Duration::from_secs(24 * 3600),
            retry: Duration::from_secs(900),
            timeout: Duration::from_secs(30),
            max_bytes: 1 << 20,
            issuers: Vec::new(),
        };
        assert_eq!(backoff(&plan, 1), Duration::from_secs(900));
        assert_eq!(backoff(&plan, 2), Duration::from_secs(1800));
        assert_eq!(backoff(&plan, 40), MAX_BACKOFF);
        plan.refresh = Duration::from_secs(3600);
        assert_eq!(backoff(&plan, 40), Duration::from_secs(3600));
        for _ in 0..100 {
            let w = wait_after(&plan, None);
            assert!(w >= Duration::from_secs(2700) && w <= Duration::from_secs(3600));
        }
        let soon = OffsetDateTime::now_utc() + time::Duration::seconds(60);
        // A second past nextUpdate, then up to refresh / 96 at random.
        assert!(wait_after(&plan, Some(soon)) <= Duration::from_secs(61 + 38));
        let past = OffsetDateTime::now_utc() - time::Duration::seconds(60);
        assert_eq!(wait_after(&plan, Some(past)), plan.retry);
    }
}
