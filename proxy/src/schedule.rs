//! Timing shared by the background checks ([`crl`](crate::crl) downloads and
//! [`ocsp`](crate::ocsp) checks): the wait until a `nextUpdate`, the backoff after
//! failures, and the sleep until the next one is due.

use std::time::Duration;

use time::OffsetDateTime;

/// Time from `now` to `t` (a second past it, so that the issuer's new data is out);
/// none: a long time.
pub fn until(t: Option<OffsetDateTime>, now: OffsetDateTime) -> Duration {
    t.map_or(Duration::MAX, |t| {
        Duration::from_secs(u64::try_from((t - now).whole_seconds()).unwrap_or(0) + 1)
    })
}

/// `retry` doubled per failure after the first, at most `cap` (never below `retry`).
pub fn backoff(retry: Duration, failures: u32, cap: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    retry.saturating_mul(1u32 << exp).min(cap.max(retry))
}

/// Sleeps until the earliest of `due`, at most `idle` (the configuration is looked at
/// again then: a reload may add or remove work).
pub async fn sleep_until_due(due: impl Iterator<Item = tokio::time::Instant>, idle: Duration) {
    let now = tokio::time::Instant::now();
    let next = due.min().unwrap_or(now + idle).min(now + idle);
    tokio::time::sleep_until(next).await;
}
