//! The running proxy's shared parts: the state in force (swapped whole on reload, so a
//! request finishes on the material it started with), metrics, the audit trail, the
//! cap on concurrent requests, the memory budget of request bodies and the per-client
//! rate limits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use passerelle_config::{Severity, inspect};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::audit::{AuditTrail, Rotation};
use crate::body::{BodyBudget, BodyLimits};
use crate::fault::ProxyError;
use crate::metrics::Metrics;
use crate::state::ProxyState;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("audit trail {path}: {source}")]
    Audit {
        path: PathBuf,
        source: std::io::Error,
    },
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
}

impl Proxy {
    /// Builds the state and opens the audit trail of `config`.
    pub fn new(state: ProxyState) -> Result<Self, StartError> {
        let audit = &state.config.audit;
        let trail = AuditTrail::open(
            &audit.path,
            Rotation {
                max_bytes: audit.rotate_bytes,
                daily: audit.rotate_daily,
            },
            audit.fsync,
        )
        .map_err(|source| StartError::Audit {
            path: audit.path.clone(),
            source,
        })?;
        let metrics = Metrics::default();
        let bodies = Arc::new(BodyBudget::new(
            state.config.limits.max_inflight_body_bytes,
            Arc::clone(&metrics.inflight_body_bytes),
        ));
        Ok(Self {
            capacity: Arc::new(Semaphore::new(state.config.limits.max_concurrent_requests)),
            bodies,
            config_path: state.config.path.clone(),
            state: ArcSwap::from_pointee(state),
            metrics,
            audit: trail,
            rates: DashMap::new(),
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

    /// Reloads the configuration file and every certificate it names. On any error the
    /// running state stays and every reason is returned.
    pub fn reload(&self) -> Result<(), Vec<String>> {
        let inspection = inspect(&self.config_path);
        let errors: Vec<String> = inspection
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .map(ToString::to_string)
            .collect();
        let result = match inspection.config {
            Some(config) if errors.is_empty() => {
                let old = self.state();
                if config.listener != old.config.listener || config.admin != old.config.admin {
                    tracing::warn!("listener and admin addresses change only on restart");
                }
                if listener_limits_changed(&old.config.limits, &config.limits) {
                    tracing::warn!(
                        "listener limits (header_read_timeout, max_concurrent_requests, max_connections, idle_timeout, http2_keep_alive_*) change only on restart"
                    );
                }
                match ProxyState::new(config) {
                    Ok(state) => {
                        self.bodies
                            .set_limit(state.config.limits.max_inflight_body_bytes);
                        self.state.store(Arc::new(state));
                        Ok(())
                    }
                    Err(e) => Err(vec![e.to_string()]),
                }
            }
            _ if errors.is_empty() => Err(vec!["the configuration could not be read".into()]),
            _ => Err(errors),
        };
        self.metrics.reload(result.is_ok());
        result
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
