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
//!   (responder down, bad signature, stale answer): a warning is logged,
//!   `passerelle_certificate_ocsp_status` says so and `/readyz` (still 200) lists it.
//!   Soft-fail: requests go on. Hard-fail (`revocation_failure = "hard"`): the pair is
//!   refused (`CertificateRevocationUnknown`) until a "good", as from start until the
//!   first answer.
//!
//! How an answer is asked for and verified: [`crate::ocsp_answer`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openssl::x509::X509;
use passerelle_config::{OcspCheck, OcspTarget};
use time::OffsetDateTime;

use crate::ocsp_answer::{OcspVerdict, ossl, query, read_answer};
use crate::runtime::Proxy;
use crate::schedule::{backoff, sleep_until_due, until};

/// How often the task looks at the configuration when nothing is due.
const IDLE: Duration = Duration::from_secs(30);

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
            board.record(
                tenant,
                target.role,
                &target.serial,
                verdict,
                valid_until,
                check.hard_fail,
            );
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
    let leaf = X509::from_der(&target.leaf).map_err(ossl("the certificate"))?;
    let issuer = X509::from_der(&target.issuer).map_err(ossl("its issuer"))?;
    let answer = query(
        &target.url,
        target.egress.as_ref(),
        check.timeout,
        &leaf,
        &issuer,
    )
    .await?;
    let trust: Vec<X509> = target
        .trust
        .iter()
        .filter_map(|der| X509::from_der(der).ok())
        .collect();
    read_answer(
        &answer,
        target.url.as_str(),
        "trust.ocsp.responder",
        &leaf,
        &issuer,
        &trust,
    )
}
