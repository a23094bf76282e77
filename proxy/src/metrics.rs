//! What the proxy counts, and its Prometheus text exposition on the admin listener.
//! Counters are atomics in sharded maps (no global lock on the request path); pool
//! counters and certificate expiry are read from the state in force when scraped.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use time::OffsetDateTime;

use crate::state::ProxyState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            d.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The client connections of one listener, kept by its connection table.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    /// Open now.
    pub open: AtomicI64,
    /// Closed at once on arrival: the cap was reached and none was idle.
    pub refused: AtomicU64,
    /// Closed to make room for a new one (the longest idle, at the cap).
    pub evicted: AtomicU64,
    /// Closed after `idle_timeout` with no request in flight.
    pub idle: AtomicU64,
    /// Closed because no request came within `header_read_timeout` of opening.
    pub silent: AtomicU64,
}

/// Every series the proxy exposes, kept across reloads.
#[derive(Debug, Default)]
pub struct Metrics {
    /// The internal listener's connections.
    pub internal_connections: Arc<ConnectionCounters>,
    /// The admin listener's connections.
    pub admin_connections: Arc<ConnectionCounters>,
    /// Request body bytes held in memory now (the `limits.max_inflight_body_bytes` budget).
    pub inflight_body_bytes: Arc<AtomicU64>,
    /// (service, action, outcome) -> count.
    requests: DashMap<(String, String, String), AtomicU64>,
    /// service -> whole request latency.
    total: DashMap<String, Histogram>,
    /// service -> upstream exchange latency.
    upstream: DashMap<String, Histogram>,
    signing: Histogram,
    in_flight: AtomicI64,
    reload_success: AtomicU64,
    reload_failure: AtomicU64,
    /// Refusals by the access policy (who, not what), by code.
    access_refusals: DashMap<&'static str, AtomicU64>,
    structure_warnings: DashMap<&'static str, AtomicU64>,
}

/// Decrements the in-flight gauge when the request is answered.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn request(&self, service: &str, action: &str, outcome: &str, total: Duration) {
        self.requests
            .entry((service.to_string(), action.to_string(), outcome.to_string()))
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
        self.total
            .entry(service.to_string())
            .or_default()
            .observe(total);
    }

    pub fn upstream(&self, service: &str, d: Duration) {
        self.upstream
            .entry(service.to_string())
            .or_default()
            .observe(d);
    }

    pub fn signing(&self, d: Duration) {
        self.signing.observe(d);
    }

    /// A structure rule `[dmp.policy]` let through with a warning.
    pub fn structure_warning(&self, kind: &'static str) {
        self.structure_warnings
            .entry(kind)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn access_refused(&self, code: &'static str) {
        self.access_refusals
            .entry(code)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn reload(&self, ok: bool) {
        if ok {
            &self.reload_success
        } else {
            &self.reload_failure
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, state: &ProxyState, now: OffsetDateTime) -> String {
        let mut out = String::with_capacity(8192);
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut out,
            "passerelle_requests_total",
            "counter",
            "Requests answered, by service, action and outcome (ok, upstream_fault, or the passerelle fault code).",
        );
        let mut rows: Vec<_> = self
            .requests
            .iter()
            .map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed)))
            .collect();
        rows.sort();
        for ((service, action, outcome), n) in rows {
            let _ = writeln!(
                out,
                "passerelle_requests_total{{service=\"{}\",action=\"{}\",outcome=\"{}\"}} {n}",
                label(&service),
                label(&action),
                label(&outcome)
            );
        }
        for (name, help, key, map) in [
            (
                "passerelle_access_refusals_total",
                "Requests refused by access control, by fault code.",
                "code",
                &self.access_refusals,
            ),
            (
                "passerelle_structure_warnings_total",
                "Structure rules [dmp.policy] let through with a warning, by kind.",
                "kind",
                &self.structure_warnings,
            ),
        ] {
            head(&mut out, name, "counter", help);
            for e in map {
                let _ = writeln!(
                    out,
                    "{name}{{{key}=\"{}\"}} {}",
                    e.key(),
                    e.value().load(Ordering::Relaxed)
                );
            }
        }
        for (name, help, map) in [
            (
                "passerelle_request_duration_seconds",
                "Time from request to answer, by service.",
                &self.total,
            ),
            (
                "passerelle_upstream_duration_seconds",
                "Time of the upstream exchange, by service.",
                &self.upstream,
            ),
        ] {
            head(&mut out, name, "histogram", help);
            for e in map.iter() {
                e.value()
                    .render(&mut out, name, &format!("service=\"{}\"", label(e.key())));
            }
        }
        head(
            &mut out,
            "passerelle_signing_duration_seconds",
            "histogram",
            "Time to sign one request's VIHF (and lot), on the blocking pool.",
        );
        self.signing
            .render(&mut out, "passerelle_signing_duration_seconds", "");
        head(
            &mut out,
            "passerelle_in_flight_requests",
            "gauge",
            "Requests being handled.",
        );
        let _ = writeln!(
            out,
            "passerelle_in_flight_requests {}",
            self.in_flight.load(Ordering::Relaxed)
        );

        self.render_connections(&mut out);

        head(
            &mut out,
            "passerelle_upstream_connections_total",
            "counter",
            "Upstream connections opened, per pool.",
        );
        let mut pools: Vec<_> = state.pools().collect();
        pools.sort_by(|a, b| a.name().cmp(b.name()));
        let pool_labels = |p: &crate::upstream::UpstreamPool| {
            let k = p.key();
            format!(
                "tenant=\"{}\",service=\"{}\",role=\"{}\"",
                label(&k.tenant),
                label(&k.service),
                k.role
            )
        };
        for p in &pools {
            let _ = writeln!(
                out,
                "passerelle_upstream_connections_total{{{}}} {}",
                pool_labels(p),
                p.stats.connections.load(Ordering::Relaxed)
            );
        }
        head(
            &mut out,
            "passerelle_upstream_idle_connections",
            "gauge",
            "Idle keep-alive connections, per pool.",
        );
        for p in &pools {
            let _ = writeln!(
                out,
                "passerelle_upstream_idle_connections{{{}}} {}",
                pool_labels(p),
                p.idle_connections()
            );
        }
        head(
            &mut out,
            "passerelle_upstream_tls_handshakes_total",
            "counter",
            "Upstream TLS handshakes, per pool, full or resumed.",
        );
        for p in &pools {
            let l = pool_labels(p);
            let _ = writeln!(
                out,
                "passerelle_upstream_tls_handshakes_total{{{l},kind=\"full\"}} {}",
                p.stats.full_handshakes.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "passerelle_upstream_tls_handshakes_total{{{l},kind=\"resumed\"}} {}",
                p.stats.resumed_handshakes.load(Ordering::Relaxed)
            );
        }
        head(
            &mut out,
            "passerelle_certificate_expiry_seconds",
            "gauge",
            "Seconds until each tenant certificate expires (negative: expired).",
        );
        for c in state.credentials() {
            let _ = writeln!(
                out,
                "passerelle_certificate_expiry_seconds{{tenant=\"{}\",role=\"{}\"}} {}",
                label(c.tenant.as_str()),
                c.role,
                (c.not_after - now).whole_seconds()
            );
        }
        head(
            &mut out,
            "passerelle_reloads_total",
            "counter",
            "Configuration reloads, by result.",
        );
        let _ = writeln!(
            out,
            "passerelle_reloads_total{{result=\"success\"}} {}",
            self.reload_success.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "passerelle_reloads_total{{result=\"failure\"}} {}",
            self.reload_failure.load(Ordering::Relaxed)
        );
        out
    }

    /// Client connections per listener, and the request body bytes held.
    fn render_connections(&self, out: &mut String) {
        let listeners = [
            ("internal", &self.internal_connections),
            ("admin", &self.admin_connections),
        ];
        for (name, kind, help, value) in [
            (
                "passerelle_open_connections",
                "gauge",
                "Client connections open, per listener.",
                (|c: &ConnectionCounters| c.open.load(Ordering::Relaxed))
                    as fn(&ConnectionCounters) -> i64,
            ),
            (
                "passerelle_connections_refused_total",
                "counter",
                "Connections closed on arrival: the listener's cap was reached and none was idle.",
                |c: &ConnectionCounters| {
                    i64::try_from(c.refused.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
                },
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (listener, c) in listeners {
                let _ = writeln!(out, "{name}{{listener=\"{listener}\"}} {}", value(c));
            }
        }
        let _ = writeln!(
            out,
            "# HELP passerelle_connections_closed_total Connections the proxy closed, by reason: evicted (longest idle, to make room at the cap), idle (idle_timeout), silent (no request within header_read_timeout).\n# TYPE passerelle_connections_closed_total counter"
        );
        for (name, c) in listeners {
            for (reason, n) in [
                ("evicted", &c.evicted),
                ("idle", &c.idle),
                ("silent", &c.silent),
            ] {
                let _ = writeln!(
                    out,
                    "passerelle_connections_closed_total{{listener=\"{name}\",reason=\"{reason}\"}} {}",
                    n.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP passerelle_inflight_body_bytes Request body bytes held in memory now (limits.max_inflight_body_bytes).\n# TYPE passerelle_inflight_body_bytes gauge\npasserelle_inflight_body_bytes {}",
            self.inflight_body_bytes.load(Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_labels_are_escaped() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "service=\"a\"");
        assert!(
            out.contains("x_bucket{service=\"a\",le=\"0.001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{service=\"a\",le=\"0.025\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{service=\"a\",le=\"30\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{service=\"a\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_count{service=\"a\"} 3\n"), "{out}");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
