//! The running proxy's shared parts: the state in force (swapped whole on reload, so a
//! request finishes on the material it started with), metrics, the audit trail, the
//! cap on concurrent requests, the memory budget of request bodies and the per-client
//! rate limits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use passerelle_config::inspect;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::audit::{AuditError, AuditTrail};
use crate::body::{BodyBudget, BodyLimits};
use crate::fault::ProxyError;
use crate::metrics::Metrics;
use crate::state::ProxyState;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// A request admitted: its slot among `listener.max_concurrent_requests` and its body
/// limits, held until the request ends.
#[derive(Debug)]
pub struct Admission {
    _slot: OwnedSemaphorePermit,
    /// The body's deadline and its share of the body budget.
    pub body: BodyLimits,
}

/// A client's rate limiter (GCRA, `governor`): `rate` requests a second, a burst of one
/// second's worth; rebuilt when a reload changes the rate.
#[derive(Debug)]
struct ClientRate {
    rate: f64,
    limiter: governor::DefaultDirectRateLimiter,
}

impl ClientRate {
    fn new(rate: f64) -> Option<Self> {
        let period = Duration::try_from_secs_f64(1.0 / rate).ok()?;
        let burst = std::num::NonZeroU32::new(rate.max(1.0) as u32)?;
        let quota = governor::Quota::with_period(period)?.allow_burst(burst);
        Some(Self {
            rate,
            limiter: governor::RateLimiter::direct(quota),
        })
    }
}

/// Everything shared by all connections, for the life of the process.
#[derive(Debug)]
pub struct Proxy {
    state: ArcSwap<ProxyState>,
    config_path: PathBuf,
    pub metrics: Metrics,
    audit: AuditTrail,
    capacity: Arc<Semaphore>,
    /// Request body bytes held at once (`limits.max_inflight_body_bytes`).
    bodies: Arc<BodyBudget>,
    rates: DashMap<String, ClientRate>,
    /// Audit lines of refused attempts a second, per configured client ("" for attempts
    /// no credential identified): a closed set of keys.
    refusal_audits: DashMap<String, ClientRate>,
    /// Logs when the homologation capture starts and stops.
    capture: crate::capture::CaptureControl,
}

/// Refused attempts audited a second per client, and for all unidentified ones together
/// (burst: as many); the others are counted (`passerelle_audit_refusals_suppressed_total`).
const REFUSALS_AUDITED_PER_SECOND: f64 = 20.0;

impl Proxy {
    /// Builds the state and opens the audit trail of `config`.
    pub fn new(state: ProxyState) -> Result<Self, StartError> {
        let trail = AuditTrail::open(&state.config.audit)?;
        let metrics = Metrics::default();
        let bodies = Arc::new(BodyBudget::new(
            state.config.limits.max_inflight_body_bytes,
            Arc::clone(&metrics.inflight_body_bytes),
        ));
        let capture = crate::capture::CaptureControl::default();
        capture.announce(None, state.config.capture.as_ref());
        Ok(Self {
            capture,
            capacity: Arc::new(Semaphore::new(state.config.limits.max_concurrent_requests)),
            bodies,
            config_path: state.config.path.clone(),
            state: ArcSwap::from_pointee(state),
            metrics,
            audit: trail,
            rates: DashMap::new(),
            refusal_audits: DashMap::new(),
        })
    }

    /// The state in force now; a request keeps the one it started with.
    pub fn state(&self) -> Arc<ProxyState> {
        self.state.load_full()
    }

    pub fn audit(&self) -> &AuditTrail {
        &self.audit
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Admits a request whose headers just arrived, in the task that handles it: a slot
    /// among `max_concurrent_requests` (else `Overloaded`), and the limits of its body,
    /// `limits.body_read_timeout` from now and a share of the body budget, which
    /// [`crate::body::read_limited`] enforces when given them. Both are given back when
    /// the [`Admission`] is dropped.
    pub fn admit(&self) -> Result<Admission, ProxyError> {
        let slot = Arc::clone(&self.capacity)
            .try_acquire_owned()
            .map_err(|_| ProxyError::Overloaded)?;
        let body = BodyLimits::new(
            self.state.load().config.limits.body_read_timeout,
            Arc::clone(&self.bodies),
        );
        Ok(Admission { _slot: slot, body })
    }

    /// Whether a refused attempt of `client` (a configured name; `None`: no credential
    /// identified it) gets its audit line, within [`REFUSALS_AUDITED_PER_SECOND`] for
    /// each; counted when not. A client refused by access control is not rate limited
    /// as a client yet: this bounds what its refusals write.
    pub fn admit_refusal_audit(&self, client: Option<&str>) -> bool {
        let key = client.unwrap_or("");
        let admitted = match self.refusal_audits.entry(key.to_string()) {
            dashmap::Entry::Occupied(o) => o.get().limiter.check().is_ok(),
            dashmap::Entry::Vacant(v) => match ClientRate::new(REFUSALS_AUDITED_PER_SECOND) {
                Some(rate) => v.insert(rate).limiter.check().is_ok(),
                None => true,
            },
        };
        if !admitted {
            self.metrics.refusal_audit_suppressed();
        }
        admitted
    }

    /// The memory budget of request bodies.
    pub fn body_budget(&self) -> &BodyBudget {
        &self.bodies
    }

    /// One request of `client` against its rate, or `RateLimited` with the wait.
    pub fn take_token(&self, client: &str, rate: Option<f64>) -> Result<(), ProxyError> {
        use governor::clock::{Clock, DefaultClock};
        let Some(rate) = rate else {
            return Ok(());
        };
        let fresh = || {
            ClientRate::new(rate)
                .ok_or_else(|| ProxyError::Internal(format!("rate {rate}/s is not usable")))
        };
        let mut entry = match self.rates.entry(client.to_string()) {
            dashmap::Entry::Occupied(o) => o.into_ref(),
            dashmap::Entry::Vacant(v) => v.insert(fresh()?),
        };
        if entry.rate != rate {
            *entry = fresh()?;
        }
        entry.limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ProxyError::RateLimited {
                client: client.to_string(),
                retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }

    /// Reloads the configuration file and every certificate it names, keeping the
    /// pools whose material did not change. On any blocking error the running state
    /// stays and every reason is returned; so it does when a certificate that works
    /// now would be replaced by an unusable one (a renewal that went wrong). An
    /// unusable certificate that is already disabled does not block the reload.
    pub fn reload(&self) -> Result<Reloaded, Vec<String>> {
        let result = self.try_reload();
        self.metrics.reload(result.is_ok());
        result
    }

    fn try_reload(&self) -> Result<Reloaded, Vec<String>> {
        let inspection = inspect(&self.config_path);
        let errors: Vec<String> = inspection
            .problems
            .iter()
            .filter(|p| p.blocks())
            .map(ToString::to_string)
            .collect();
        let config = match inspection.config {
            Some(config) if errors.is_empty() => config,
            _ if errors.is_empty() => {
                return Err(vec!["the configuration could not be read".into()]);
            }
            _ => return Err(errors),
        };
        let old = self.state();
        if config.listener != old.config.listener || config.admin != old.config.admin {
            tracing::warn!("listener and admin addresses change only on restart");
        }
        let (a, b) = (&old.config.audit, &config.audit);
        if (&a.path, a.rotate_bytes, a.rotate_daily, a.fsync, &a.sink)
            != (&b.path, b.rotate_bytes, b.rotate_daily, b.fsync, &b.sink)
        {
            tracing::warn!(
                running = %self.audit.describe(),
                "[audit] sink, path, rotate_bytes, rotate_daily, fsync and the database settings change only on restart: the trail stays where it is until then ([audit] instance applies now)"
            );
        }
        if listener_limits_changed(&old.config.limits, &config.limits) {
            tracing::warn!(
                "listener limits (header_read_timeout, max_concurrent_requests, max_connections, idle_timeout, http2_keep_alive_*) change only on restart"
            );
        }
        let state = ProxyState::build(config, Some(&old)).map_err(|e| vec![e.to_string()])?;
        let now = time::OffsetDateTime::now_utc();
        // A different certificate replacing one that works: the renewal went wrong. (The
        // same certificate, newly revoked by a CRL update, is disabled as it should be.)
        let replaces_working = |new: &crate::state::Credential| {
            old.credentials().any(|c| {
                c.tenant == new.tenant
                    && c.role == new.role
                    && c.serial != new.serial
                    && c.check(now).is_ok()
            })
        };
        let regressions: Vec<String> = state
            .degraded(now)
            .into_iter()
            .filter(|(c, _)| replaces_working(c))
            .map(|(c, why)| {
                format!(
                    "tenant {} {}: {why}; the running certificate (serial {}) still works, so it stays",
                    c.tenant,
                    c.role,
                    old.credentials()
                        .find(|o| o.tenant == c.tenant && o.role == c.role)
                        .map_or("-", |o| o.serial.as_str()),
                )
            })
            .collect();
        if !regressions.is_empty() {
            return Err(regressions);
        }
        let report = Reloaded::between(&old, &state, inspection.problems);
        self.bodies
            .set_limit(state.config.limits.max_inflight_body_bytes);
        self.capture
            .announce(old.config.capture.as_ref(), state.config.capture.as_ref());
        self.state.store(Arc::new(state));
        Ok(report)
    }
}

/// What a reload changed, for its log lines.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Warnings and the errors that disable a (tenant, role) pair.
    pub problems: Vec<passerelle_config::Problem>,
    /// (tenant, role, serial before, serial after) of every certificate that changed,
    /// appeared or went away.
    pub certificates: Vec<(String, String, Option<String>, Option<String>)>,
    /// Pools kept as they ran (connections and TLS sessions kept).
    pub pools_kept: usize,
    /// Pools built anew, by name.
    pub pools_built: Vec<String>,
}

impl Reloaded {
    fn between(
        old: &ProxyState,
        new: &ProxyState,
        problems: Vec<passerelle_config::Problem>,
    ) -> Self {
        use std::collections::BTreeMap;
        let serials = |s: &ProxyState| -> BTreeMap<(String, String), String> {
            s.credentials()
                .map(|c| ((c.tenant.to_string(), c.role.to_string()), c.serial.clone()))
                .collect()
        };
        let (before, after) = (serials(old), serials(new));
        let mut certificates = Vec::new();
        for key in before
            .keys()
            .chain(after.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let (b, a) = (before.get(key), after.get(key));
            if b != a {
                certificates.push((key.0.clone(), key.1.clone(), b.cloned(), a.cloned()));
            }
        }
        let running: Vec<&Arc<crate::upstream::UpstreamPool>> = old.pools().collect();
        let (mut pools_kept, mut pools_built) = (0, Vec::new());
        for pool in new.pools() {
            if running.iter().any(|p| Arc::ptr_eq(p, pool)) {
                pools_kept += 1;
            } else {
                pools_built.push(pool.name().to_string());
            }
        }
        pools_built.sort();
        Self {
            problems: problems.into_iter().filter(|p| !p.blocks()).collect(),
            certificates,
            pools_kept,
            pools_built,
        }
    }
}

/// Whether the `[listener]` limits, which are read at start only, differ.
fn listener_limits_changed(
    old: &passerelle_config::Limits,
    new: &passerelle_config::Limits,
) -> bool {
    old.header_read_timeout != new.header_read_timeout
        || old.max_concurrent_requests != new.max_concurrent_requests
        || old.max_connections != new.max_connections
        || old.idle_timeout != new.idle_timeout
        || old.http2_keep_alive_interval != new.http2_keep_alive_interval
        || old.http2_keep_alive_timeout != new.http2_keep_alive_timeout
}

#[cfg(test)]
mod rate_tests {
    use super::ClientRate;

    #[test]
    fn burst_is_one_seconds_worth_and_fractional_rates_work() {
        let five = ClientRate::new(5.0).expect("5/s");
        let allowed = (0..10).filter(|_| five.limiter.check().is_ok()).count();
        assert_eq!(allowed, 5, "a burst of one second's worth");
        let half = ClientRate::new(0.5).expect("0.5/s");
        assert!(half.limiter.check().is_ok());
        assert!(half.limiter.check().is_err(), "the next one in 2 s");
        assert!(ClientRate::new(0.0).is_none());
    }
}
