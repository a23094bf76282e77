//! Fault injection per operation: added latency, an error rate (the mock answers its
//! service's "temporarily unavailable" fault with HTTP 500), a connection reset after N
//! bytes of response body, and a slow body. Set at start (`--faults FILE`) and
//! replaced at runtime with `PUT /faults` on the admin port.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Faults of one operation. All off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSpec {
    /// Added before answering.
    pub latency_ms: u64,
    /// Share of requests answered with a fault, 0.0 to 1.0 (deterministic: exactly
    /// that share of consecutive requests).
    pub error_rate: f64,
    /// Cut the connection after this many bytes of response body.
    pub reset_after_bytes: Option<u64>,
    /// Send the body at this rate.
    pub slow_body_bytes_per_sec: Option<u64>,
    /// The mock's clock, as its `Date` header shows it, is this many seconds ahead
    /// (negative: behind).
    pub clock_offset_s: i64,
}

/// Reads a faults file (JSON object: operation -> [`FaultSpec`]).
pub fn load_file(path: &std::path::Path) -> Result<BTreeMap<String, FaultSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Faults by operation name; `*` applies to every operation without its own entry.
#[derive(Debug, Default)]
pub struct Faults {
    specs: RwLock<BTreeMap<String, FaultSpec>>,
    counter: AtomicU64,
}

/// What to do with one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub latency_ms: u64,
    pub fail: bool,
    pub reset_after_bytes: Option<u64>,
    pub slow_body_bytes_per_sec: Option<u64>,
    pub clock_offset_s: i64,
}

impl Faults {
    pub fn new(specs: BTreeMap<String, FaultSpec>) -> Self {
        Self {
            specs: RwLock::new(specs),
            counter: AtomicU64::new(0),
        }
    }

    /// Replaces every fault (runtime change); returns an error for an invalid rate.
    pub fn replace(&self, specs: BTreeMap<String, FaultSpec>) -> Result<(), String> {
        if let Some((op, _)) = specs
            .iter()
            .find(|(_, s)| !(0.0..=1.0).contains(&s.error_rate))
        {
            return Err(format!("{op}: error_rate must be between 0.0 and 1.0"));
        }
        if let Ok(mut guard) = self.specs.write() {
            *guard = specs;
        }
        self.counter.store(0, Ordering::Relaxed);
        Ok(())
    }

    pub fn snapshot(&self) -> BTreeMap<String, FaultSpec> {
        self.specs.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// The faults to apply to one request of `operation`.
    pub fn decide(&self, operation: &str) -> Decision {
        let Ok(specs) = self.specs.read() else {
            return Decision::default();
        };
        let Some(spec) = specs.get(operation).or_else(|| specs.get("*")) else {
            return Decision::default();
        };
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let fail = spec.error_rate > 0.0
            && ((n as f64) * spec.error_rate).floor()
                > (((n - 1) as f64) * spec.error_rate).floor();
        Decision {
            latency_ms: spec.latency_ms,
            fail,
            reset_after_bytes: spec.reset_after_bytes,
            slow_body_bytes_per_sec: spec.slow_body_bytes_per_sec,
            clock_offset_s: spec.clock_offset_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rate_is_exact_over_consecutive_requests() {
        let faults = Faults::new(
            [(
                "op".to_string(),
                FaultSpec {
                    error_rate: 0.25,
                    ..FaultSpec::default()
                },
            )]
            .into(),
        );
        let failures = (0..100).filter(|_| faults.decide("op").fail).count();
        assert_eq!(failures, 25);
        assert!(!faults.decide("other").fail);
    }

    #[test]
    fn wildcard_and_replace() {
        let faults = Faults::default();
        assert_eq!(faults.decide("x"), Decision::default());
        faults
            .replace(
                [(
                    "*".to_string(),
                    FaultSpec {
                        latency_ms: 5,
                        ..FaultSpec::default()
                    },
                )]
                .into(),
            )
            .expect("valid");
        assert_eq!(faults.decide("x").latency_ms, 5);
        assert!(
            faults
                .replace(
                    [(
                        "*".to_string(),
                        FaultSpec {
                            error_rate: 2.0,
                            ..FaultSpec::default()
                        }
                    )]
                    .into()
                )
                .is_err()
        );
    }
}
