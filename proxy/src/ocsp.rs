//! `[trust.ocsp]` at run time: asks each tenant certificate's OCSP responder for its
//! status, at start and then every `refresh` (sooner at the answer's `nextUpdate`), and
//! writes the answer on the state's [`OcspBoard`](crate::state::OcspBoard).
//!
//! - **revoked**: the (tenant, role) pair is refused at once (`CertificateRevoked`, no
//!   reload needed: every credential of that certificate shares the board's slot), an
//!   error is logged, `passerelle_certificate_revoked` turns 1 and `/readyz` answers 503
//!   naming it, until a later verified "good" for that serial (a `certificateHold`
//!   released) or a new certificate. Held in memory only: a restart asks again.
//! - a failure while a verified answer is still valid keeps that answer (logged).
//! - **unknown** (the responder does not know the certificate) and **no usable answer**
//!   (responder down, bad signature, stale answer): soft-fail. Requests go on; a
//!   warning is logged, `passerelle_certificate_ocsp_status` says so and `/readyz`
//!   (still 200) lists it.
//!
//! An answer counts only when signed by the certificate's issuer, or by a responder
//! that issuer delegated (`id-kp-OCSPSigning`), chaining to the configured anchors; its
//! `thisUpdate` / `nextUpdate` must hold (5 minutes of clock slack; without
//! `nextUpdate`, at most 7 days old). No nonce is sent (RFC 5019: responders serve
//! pre-produced answers), so an answer may be replayed within its validity.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openssl::hash::MessageDigest;
use openssl::ocsp::{
    OcspCertId, OcspCertStatus, OcspFlag, OcspRequest, OcspResponse, OcspResponseStatus,
};
use openssl::stack::Stack;
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use passerelle_config::{OcspCheck, OcspTarget};
use time::OffsetDateTime;

use crate::fetch::{Fetch, fetch};
use crate::runtime::Proxy;
use crate::schedule::{backoff, sleep_until_due, until};
use crate::state::OcspVerdict;

/// How often the task looks at the configuration when nothing is due.
const IDLE: Duration = Duration::from_secs(30);
/// The largest OCSP answer read (a few KiB in practice).
const MAX_ANSWER: u64 = 1024 * 1024;
/// Clock slack on an answer's `thisUpdate` / `nextUpdate`.
const SLACK_SECONDS: u32 = 300;
/// The oldest answer without `nextUpdate` accepted (a replayed old "good").
const MAX_AGE_SECONDS: u32 = 7 * 24 * 3600;

/// Keeps every certificate of `[trust.ocsp]` checked, for as long as it runs.
pub async fn keep_checked(proxy: Arc<Proxy>) {
    let mut due: HashMap<(String, String), (tokio::time::Instant, u32)> = HashMap::new();
    loop {
        let state = proxy.state();
        let Some(check) = state.config.ocsp.clone() else {
            due.clear();
            drop(state);
            tokio::time::sleep(IDLE).await;
            continue;
        };
        let board = Arc::clone(&state.ocsp);
        drop(state);
        let key = |t: &OcspTarget| (format!("{}/{}", t.tenant, t.role), t.serial.clone());
        due.retain(|k, _| check.targets.iter().any(|t| key(t) == *k));
        for target in &check.targets {
            let now = tokio::time::Instant::now();
            let entry = due.entry(key(target)).or_insert((now, 0));
            if entry.0 > now {
                continue;
            }
            let tenant = target.tenant.as_str();
            let (verdict, wait, valid_until) = match ask(target, &check).await {
                Ok((verdict, next_update)) => {
                    // Not sooner than a minute (or retry): an answer just past its
                    // nextUpdate (within the clock slack) must not make us poll.
                    let wait = until(next_update, OffsetDateTime::now_utc())
                        .min(check.refresh)
                        .max(check.retry.min(Duration::from_secs(60)));
                    entry.1 = 0;
                    let valid_until = next_update.or_else(|| {
                        let wait = time::Duration::try_from(check.refresh).ok()?;
                        Some(OffsetDateTime::now_utc() + wait)
                    });
                    (verdict, wait, valid_until)
                }
                Err(reason) => {
                    entry.1 = entry.1.saturating_add(1);
                    let wait = backoff(check.retry, entry.1, check.refresh);
                    (OcspVerdict::Failed(reason), wait, None)
                }
            };
            match &verdict {
                OcspVerdict::Good => tracing::debug!(
                    tenant,
                    role = %target.role,
                    serial = %target.serial,
                    "OCSP: good"
                ),
                OcspVerdict::Revoked(why) => tracing::error!(
                    tenant,
                    role = %target.role,
                    serial = %target.serial,
                    reason = %why,
                    "certificate revoked (OCSP): its requests are refused (CertificateRevoked); install a new certificate"
                ),
                OcspVerdict::Unknown => tracing::warn!(
                    tenant,
                    role = %target.role,
                    serial = %target.serial,
                    responder = %target.url,
                    "OCSP: the responder does not know this certificate (wrong responder, or not one of this CA's); requests go on"
                ),
                OcspVerdict::Failed(reason) => tracing::warn!(
                    tenant,
                    role = %target.role,
                    serial = %target.serial,
                    error = %reason,
                    retry_in_s = wait.as_secs(),
                    "OCSP check failed: requests go on (soft-fail)"
                ),
            }
            board.record(tenant, target.role, &target.serial, verdict, valid_until);
            entry.0 = now
                .checked_add(wait.max(Duration::from_secs(1)))
                .unwrap_or(now);
        }
        sleep_until_due(due.values().map(|d| d.0), IDLE).await;
    }
}

/// One question to the responder: its verdict and the answer's `nextUpdate`; or why no
/// answer counts.
async fn ask(
    target: &OcspTarget,
    check: &OcspCheck,
) -> Result<(OcspVerdict, Option<OffsetDateTime>), String> {
    fn ossl(what: &'static str) -> impl Fn(openssl::error::ErrorStack) -> String {
        move |e| format!("{what}: {e}")
    }
    let leaf = X509::from_der(&target.leaf).map_err(ossl("the certificate"))?;
    let issuer = X509::from_der(&target.issuer).map_err(ossl("its issuer"))?;
    // SHA-1 CertID: what every responder answers (RFC 6960 §4.1.1; RFC 5019).
    let id = || OcspCertId::from_cert(MessageDigest::sha1(), &leaf, &issuer);
    let mut request = OcspRequest::new().map_err(ossl("building the request"))?;
    request
        .add_id(id().map_err(ossl("building the request"))?)
        .map_err(ossl("building the request"))?;
    let body = request.to_der().map_err(ossl("building the request"))?;
    let exchange = fetch(Fetch {
        url: &target.url,
        egress: target.egress.as_ref(),
        post: Some(("application/ocsp-request", Bytes::from(body))),
        accept: "application/ocsp-response",
        max: MAX_ANSWER,
        setting: "trust.ocsp",
    });
    let answer = match tokio::time::timeout(check.timeout, exchange).await {
        Ok(r) => r.map_err(|e| e.to_string())?,
        Err(_) => {
            return Err(format!(
                "{}: no answer within {} s (trust.ocsp.timeout)",
                target.url,
                check.timeout.as_secs().max(1)
            ));
        }
    };
    let url = &target.url;
    let response = OcspResponse::from_der(&answer)
        .map_err(|_| format!("{url}: the answer is not an OCSP response"))?;
    let status = response.status();
    if status != OcspResponseStatus::SUCCESSFUL {
        return Err(format!(
            "{url}: the responder answered {} ({})",
            status.as_raw(),
            match status {
                OcspResponseStatus::MALFORMED_REQUEST => "malformedRequest",
                OcspResponseStatus::INTERNAL_ERROR => "internalError",
                OcspResponseStatus::TRY_LATER => "tryLater",
                OcspResponseStatus::SIG_REQUIRED => "sigRequired",
                OcspResponseStatus::UNAUTHORIZED => {
                    "unauthorized: not this certificate's responder? set trust.ocsp.responder"
                }
                _ => "unknown status",
            }
        ));
    }
    let basic = response
        .basic()
        .map_err(|_| format!("{url}: no basic OCSP response in the answer"))?;
    let mut store = X509StoreBuilder::new().map_err(ossl("the trust store"))?;
    for der in &target.trust {
        if let Ok(ca) = X509::from_der(der) {
            let _ = store.add_cert(ca);
        }
    }
    let store = store.build();
    // The issuer and the chain as candidate signers: a CA-signed answer need not embed
    // its certificate (RFC 6960 `certs` is optional). Not trusted for that: OpenSSL
    // still requires the issuer itself or a responder it delegated.
    let mut untrusted = Stack::new().map_err(ossl("the trust store"))?;
    for der in &target.trust {
        if let Ok(ca) = X509::from_der(der) {
            let _ = untrusted.push(ca);
        }
    }
    basic
        .verify(&untrusted, &store, OcspFlag::empty())
        .map_err(|e| {
            format!("{url}: the answer's signature does not verify with the certificate's issuer or a responder it delegated: {e}")
        })?;
    let id = id().map_err(ossl("the certificate id"))?;
    let single = basic
        .find_status(&id)
        .ok_or_else(|| format!("{url}: the answer does not speak of this certificate"))?;
    single
        .check_validity(SLACK_SECONDS, Some(MAX_AGE_SECONDS))
        .map_err(|_| format!("{url}: the answer is outside its validity (thisUpdate / nextUpdate): a stale or replayed answer, or our clock is off"))?;
    let next_update = single.next_update().and_then(generalized);
    let verdict = match single.status {
        OcspCertStatus::GOOD => OcspVerdict::Good,
        OcspCertStatus::REVOKED => OcspVerdict::Revoked(format!(
            "revoked on {} according to the OCSP responder {url}",
            single
                .revocation_time
                .map(ToString::to_string)
                .unwrap_or_else(|| "an unstated date".into())
        )),
        _ => OcspVerdict::Unknown,
    };
    Ok((verdict, next_update))
}

fn generalized(t: &openssl::asn1::Asn1GeneralizedTimeRef) -> Option<OffsetDateTime> {
    // Asn1GeneralizedTimeRef derefs to no Asn1TimeRef: read it through its text form.
    let text = t.to_string();
    // OpenSSL prints fractional seconds when the time has them.
    let format = time::macros::format_description!(
        "[month repr:short] [day padding:space] [hour]:[minute]:[second][optional [.[subsecond]]] [year] GMT"
    );
    time::PrimitiveDateTime::parse(&text, &format)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenSSL's printed GeneralizedTime, with and without fractional seconds.
    #[test]
    fn generalized_times_are_read_with_or_without_fractions() {
        for (der_text, expected) in [
            ("20261202015550Z", "2026-12-02T01:55:50Z"),
            ("20261202015550.123Z", "2026-12-02T01:55:50.123Z"),
            ("20260105090000Z", "2026-01-05T09:00:00Z"),
        ] {
            let t = openssl::asn1::Asn1GeneralizedTime::from_str(der_text).expect("time");
            let parsed = generalized(&t).unwrap_or_else(|| panic!("{der_text} not read"));
            let expected =
                OffsetDateTime::parse(expected, &time::format_description::well_known::Rfc3339)
                    .expect("rfc3339");
            assert_eq!(parsed, expected, "{der_text}");
        }
    }
}
