//! What the proxy counts, and its Prometheus text exposition on the admin listener.
//! Counters are atomics in sharded maps (no global lock on the request path); pool
//! counters and certificate expiry are read from the state in force when scraped, and
//! the process metrics from `/proc/self` (Linux only) at the same moment.
//!
//! Every label value comes from a closed set (configured names, codes, operations),
//! never from request text, so no request can create a series. The alert rules in
//! `deploy/prometheus/alerts.yml` use these names; the e2e test `prometheus_rules`
//! checks that each one they use is exported.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use time::OffsetDateTime;

use crate::audit::SinkStatus;
use crate::state::{Credential, ProxyState};

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

/// The request counters' `tenant` and `client` before access control named them
/// (reserved by the configuration: no tenant or client has this name).
pub const UNKNOWN: &str = passerelle_config::UNATTRIBUTED;

/// The last configuration load: the one at start counts as a success.
#[derive(Debug)]
struct LastLoad {
    failed: AtomicBool,
    /// Unix time of the last successful load, in milliseconds.
    success_unix_millis: AtomicU64,
}

impl Default for LastLoad {
    fn default() -> Self {
        Self {
            failed: AtomicBool::new(false),
            success_unix_millis: AtomicU64::new(unix_millis(SystemTime::now())),
        }
    }
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
    /// Set on SIGTERM: the proxy finishes the requests in flight and takes no new ones.
    pub draining: AtomicBool,
    /// Homologation capture files written, and capture writes that failed.
    pub capture: Arc<crate::capture::CaptureCounters>,
    /// `[trust.crl_download]`: downloads per URL, and the last failure.
    pub crl: crate::crl::CrlStatus,
    /// (tenant, client, service, action, outcome) -> count.
    requests: DashMap<RequestKey, AtomicU64>,
    /// service -> whole request latency.
    total: DashMap<String, Histogram>,
    /// service -> upstream exchange latency.
    upstream: DashMap<String, Histogram>,
    signing: Histogram,
    in_flight: AtomicI64,
    reload_success: AtomicU64,
    reload_failure: AtomicU64,
    last_load: LastLoad,
    audit_write_failures: AtomicU64,
    refusal_audit_suppressed: AtomicU64,
    /// Refusals by the access policy (who, not what), by code.
    access_refusals: DashMap<&'static str, AtomicU64>,
    structure_warnings: DashMap<&'static str, AtomicU64>,
}

/// The label values of `passerelle_requests_total`, in exposition order: tenant, client,
/// service, action, outcome.
type RequestKey = (String, String, String, String, String);

/// Decrements the in-flight gauge when the request is answered.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Requests being handled now, from admission to their audit line.
    pub fn requests_in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// One request answered. `tenant` and `client` are the configured names access
    /// control granted (`None` before it did: counted as [`UNKNOWN`]).
    pub fn request(
        &self,
        service: &str,
        action: &str,
        outcome: &str,
        tenant: Option<&str>,
        client: Option<&str>,
        total: Duration,
    ) {
        self.requests
            .entry((
                tenant.unwrap_or(UNKNOWN).to_string(),
                client.unwrap_or(UNKNOWN).to_string(),
                service.to_string(),
                action.to_string(),
                outcome.to_string(),
            ))
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
            self.last_load
                .success_unix_millis
                .store(unix_millis(SystemTime::now()), Ordering::Relaxed);
            &self.reload_success
        } else {
            &self.reload_failure
        }
        .fetch_add(1, Ordering::Relaxed);
        self.last_load.failed.store(!ok, Ordering::Relaxed);
    }

    /// A refused attempt of no identified client was not audited (over the rate).
    pub fn refusal_audit_suppressed(&self) {
        self.refusal_audit_suppressed
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the last load (start or reload) was refused.
    pub fn last_reload_failed(&self) -> bool {
        self.last_load.failed.load(Ordering::Relaxed)
    }

    /// An audit record could not be written (the answer still went to the client).
    pub fn audit_write_failed(&self) {
        self.audit_write_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, state: &ProxyState, now: OffsetDateTime, audit: SinkStatus) -> String {
        let mut out = String::with_capacity(8192);
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut out,
            "passerelle_build_info",
            "gauge",
            "Always 1; the labels say which Passerelle runs.",
        );
        let _ = writeln!(
            out,
            "passerelle_build_info{{version=\"{}\"}} 1",
            label(env!("CARGO_PKG_VERSION"))
        );
        head(
            &mut out,
            "passerelle_requests_total",
            "counter",
            "Requests answered, by tenant and client (configured names, none before access control granted them), service, action and outcome (ok, upstream_fault, or the passerelle fault code).",
        );
        let mut rows: Vec<_> = self
            .requests
            .iter()
            .map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed)))
            .collect();
        rows.sort();
        for ((tenant, client, service, action, outcome), n) in rows {
            let _ = writeln!(
                out,
                "passerelle_requests_total{{tenant=\"{}\",client=\"{}\",service=\"{}\",action=\"{}\",outcome=\"{}\"}} {n}",
                label(&tenant),
                label(&client),
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
            "Time to read and sign one DMP request (VIHF, and lot), its queueing excluded.",
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
            "passerelle_upstream_pool_info",
            "gauge",
            "Each upstream pool, with the route its connections take: direct, or the [egress] proxy's host:port.",
        );
        for p in &pools {
            let _ = writeln!(
                out,
                "passerelle_upstream_pool_info{{{},url=\"{}\",route=\"{}\"}} 1",
                pool_labels(p),
                label(p.url()),
                label(&p.route())
            );
        }
        head(
            &mut out,
            "passerelle_upstream_clock_skew_seconds",
            "gauge",
            "Our clock minus the national service's (the Date header of the pool's last answer), in seconds.",
        );
        for p in &pools {
            if let Some(skew) = p.stats.clock_skew() {
                let _ = writeln!(
                    out,
                    "passerelle_upstream_clock_skew_seconds{{{}}} {skew}",
                    pool_labels(p)
                );
            }
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
        self.render_certificates(&mut out, state, now);
        self.render_crls(&mut out, state, now);
        render_ocsp(&mut out, state);
        render_server_ocsp(&mut out, state);
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
        // Unlabelled series: one line each.
        let scalars: [(&str, &str, &str, String); 10] = [
            (
                "passerelle_audit_sink_up",
                "gauge",
                "1 when the audit sink takes records (the file is open, the database connected); 0 while the database is unreachable.",
                u8::from(audit.up).to_string(),
            ),
            (
                "passerelle_audit_spooled_records",
                "gauge",
                "Audit records waiting in the local spool for the database.",
                audit.spooled.to_string(),
            ),
            (
                "passerelle_config_last_reload_success",
                "gauge",
                "1 when the last configuration load (start or reload) succeeded, 0 when it failed and the previous configuration still runs.",
                u8::from(!self.last_load.failed.load(Ordering::Relaxed)).to_string(),
            ),
            (
                "passerelle_config_last_reload_success_timestamp_seconds",
                "gauge",
                "Unix time of the last successful configuration load (start or reload).",
                format!(
                    "{:.3}",
                    self.last_load.success_unix_millis.load(Ordering::Relaxed) as f64 / 1e3
                ),
            ),
            (
                "passerelle_audit_write_failures_total",
                "counter",
                "Audit records that could not be written (the request was answered all the same).",
                self.audit_write_failures
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "passerelle_audit_refusals_suppressed_total",
                "counter",
                "Refused attempts left out of the audit trail (over 20 a second per client, and for unidentified ones together).",
                self.refusal_audit_suppressed
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "passerelle_draining",
                "gauge",
                "1 once SIGTERM was received: requests in flight finish, new ones are not taken.",
                u8::from(self.draining.load(Ordering::Relaxed)).to_string(),
            ),
            (
                "passerelle_capture_active",
                "gauge",
                "1 while a homologation capture ([capture]) is in force: the listed clients' exchanges are written to files.",
                u8::from(state.config.capture.as_ref().is_some_and(|c| c.active(now))).to_string(),
            ),
            (
                "passerelle_capture_files_total",
                "counter",
                "Homologation capture files written (requests, answers, failures).",
                self.capture.files.load(Ordering::Relaxed).to_string(),
            ),
            (
                "passerelle_capture_errors_total",
                "counter",
                "Homologation capture writes that failed (the request went on).",
                self.capture.errors.load(Ordering::Relaxed).to_string(),
            ),
        ];
        for (name, kind, help, value) in scalars {
            head(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        render_process(&mut out);
        out
    }

    /// Per tenant certificate: the time left, its end, whether it is revoked, and
    /// whether its (tenant, role) pair serves requests.
    fn render_certificates(&self, out: &mut String, state: &ProxyState, now: OffsetDateTime) {
        let mut credentials: Vec<_> = state.credentials().collect();
        credentials.sort_by(|a, b| (&a.tenant, a.role).cmp(&(&b.tenant, b.role)));
        type Value = fn(&Credential, OffsetDateTime) -> i64;
        let series: [(&str, &str, Value); 5] = [
            (
                "passerelle_certificate_expiry_seconds",
                "Seconds until each tenant certificate expires (negative: expired).",
                |c, now| (c.not_after - now).whole_seconds(),
            ),
            (
                "passerelle_certificate_not_after_timestamp_seconds",
                "Unix time at which each tenant certificate expires (its notAfter).",
                |c, _| c.not_after.unix_timestamp(),
            ),
            (
                "passerelle_certificate_revoked",
                "1 when a configured CRL revokes the tenant certificate.",
                |c, _| i64::from(c.revocation().is_some()),
            ),
            (
                "passerelle_certificate_usable",
                "1 when the (tenant, role) pair serves requests; 0 when its certificate is expired, not yet valid or revoked, or its key's token unavailable, and only that pair is refused.",
                |c, now| i64::from(c.check(now).is_ok()),
            ),
            (
                "passerelle_certificate_key_unavailable",
                "1 when the certificate's key is in a PKCS#11 token that cannot be used now (its requests get KeyUnavailable, /readyz answers 503); 0 otherwise.",
                |c, _| i64::from(c.token_unavailable().is_some()),
            ),
        ];
        for (name, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for c in &credentials {
                let _ = writeln!(
                    out,
                    "{name}{{tenant=\"{}\",role=\"{}\"}} {}",
                    label(c.tenant.as_str()),
                    c.role,
                    value(c, now)
                );
            }
        }
    }

    /// Every CRL in use: seconds to its `nextUpdate`; and the downloads per URL.
    fn render_crls(&self, out: &mut String, state: &ProxyState, now: OffsetDateTime) {
        let name = "passerelle_crl_next_update_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Seconds until each CRL in use must be replaced (its nextUpdate; negative: stale, revocations since are not seen), by URL for a downloaded copy, else by file.\n# TYPE {name} gauge"
        );
        for c in &state.config.crls {
            if let Some(next) = c.next_update {
                let _ = writeln!(
                    out,
                    "{name}{{crl=\"{}\"}} {}",
                    label(&c.source()),
                    (next - now).whole_seconds()
                );
            }
        }
        let name = "passerelle_crl_downloads_total";
        let _ = writeln!(
            out,
            "# HELP {name} CRL downloads by URL and outcome (updated, unchanged, failed).\n# TYPE {name} counter"
        );
        for (url, s) in self.crl.snapshot() {
            for (outcome, n) in [
                ("updated", s.updated),
                ("unchanged", s.unchanged),
                ("failed", s.failed),
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{crl=\"{}\",outcome=\"{outcome}\"}} {n}",
                    label(&url)
                );
            }
        }
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

/// The standard process metrics (as Prometheus' own client libraries name them), read
/// from `/proc/self` with the `procfs` crate (the workspace denies `unsafe`, which the
/// page size and clock tick rate would need by hand). A value that cannot be read is
/// left out rather than guessed.
#[cfg(target_os = "linux")]
fn render_process(out: &mut String) {
    use procfs::process::{LimitValue, Process};
    let Ok(me) = Process::myself() else {
        return;
    };
    let mut gauge = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    if let Ok(stat) = me.stat() {
        let ticks = procfs::ticks_per_second() as f64;
        gauge(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (stat.utime + stat.stime) as f64 / ticks,
        );
        gauge(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            (stat.rss * procfs::page_size()) as f64,
        );
        gauge(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            stat.vsize as f64,
        );
        if let Ok(boot) = procfs::boot_time_secs() {
            gauge(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                boot as f64 + stat.starttime as f64 / ticks,
            );
        }
    }
    if let Ok(n) = me.fd_count() {
        gauge(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            n as f64,
        );
    }
    if let Ok(limits) = me.limits()
        && let LimitValue::Value(max) = limits.max_open_files.soft_limit
    {
        gauge(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max as f64,
        );
    }
}

/// No `/proc` here: the process metrics are left out.
#[cfg(not(target_os = "linux"))]
fn render_process(_out: &mut String) {}

/// The last OCSP check of each tenant certificate in use: 1 on its status.
fn render_ocsp(out: &mut String, state: &ProxyState) {
    let name = "passerelle_certificate_ocsp_status";
    let _ = writeln!(
        out,
        "# HELP {name} 1 on the last OCSP status of each tenant certificate in use ([trust.ocsp]): good, revoked, unknown, or error (no usable answer: soft-fail).\n# TYPE {name} gauge"
    );
    if state.config.ocsp.is_none() {
        return;
    }
    for ((tenant, role), checked) in state.ocsp.snapshot() {
        let in_use = state
            .credentials()
            .any(|c| c.tenant.as_str() == tenant && c.role == role && c.serial == checked.serial);
        if in_use {
            let _ = writeln!(
                out,
                "{name}{{tenant=\"{}\",role=\"{role}\",status=\"{}\"}} 1",
                label(&tenant),
                checked.verdict.label()
            );
        }
    }
}

/// OCSP for the upstream servers' certificates: the answers obtained, and the
/// connections let through without a status (soft-fail).
fn render_server_ocsp(out: &mut String, state: &ProxyState) {
    let name = "passerelle_upstream_ocsp_answers_total";
    let _ = writeln!(
        out,
        "# HELP {name} OCSP answers about the upstream servers' certificates, by source (stapled in the handshake, or the responder's) and status (error: no usable answer).\n# TYPE {name} counter"
    );
    for ((source, status), n) in state.ocsp.servers.answers() {
        let _ = writeln!(out, "{name}{{source=\"{source}\",status=\"{status}\"}} {n}");
    }
    let name = "passerelle_upstream_revocation_soft_failures_total";
    let _ = writeln!(
        out,
        "# HELP {name} Connections to a national service used although OCSP established no status for its certificate (trust.revocation_failure = \"soft\").\n# TYPE {name} counter\n{name} {}",
        state
            .ocsp
            .servers
            .soft_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE_SINK: SinkStatus = SinkStatus {
        up: true,
        spooled: 0,
        refusing: false,
    };

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

    /// The sandbox configuration of the shared test PKI, as the proxy runs it.
    fn state() -> ProxyState {
        let pki = passerelle_certs_test::shared_test_pki().expect("test PKI");
        let work = tempfile::tempdir().expect("tempdir");
        let name = format!("metrics-{}.toml", uuid::Uuid::new_v4().simple());
        let path = pki
            .write_config(
                &name,
                &passerelle_certs_test::ConfigAddresses {
                    audit: Some(work.path().join("audit.jsonl")),
                    ..Default::default()
                },
            )
            .expect("configuration");
        let config = passerelle_config::load(&path).expect("configuration loads");
        let _ = std::fs::remove_file(&path);
        ProxyState::new(config).expect("state")
    }

    /// The value of the one series `series` (name and labels as exposed).
    fn value(text: &str, series: &str) -> f64 {
        let prefix = format!("{series} ");
        let mut found = text.lines().filter_map(|l| l.strip_prefix(&prefix));
        let v = found
            .next()
            .unwrap_or_else(|| panic!("no {series}:\n{text}"));
        assert!(found.next().is_none(), "{series} twice");
        v.parse().unwrap_or_else(|_| panic!("{series} {v}"))
    }

    #[test]
    fn every_line_is_a_declared_series_with_a_number() {
        let m = Metrics::default();
        m.request("insi", "other", "ok", Some("t"), Some("c"), Duration::ZERO);
        let text = m.render(&state(), OffsetDateTime::now_utc(), FILE_SINK);
        let mut declared = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().expect("name");
                assert!(declared.insert(name.to_string()), "{name} declared twice");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, v) = line.rsplit_once(' ').expect("series and value");
            v.parse::<f64>()
                .unwrap_or_else(|_| panic!("not a number: {line}"));
            let name = series.split('{').next().expect("name");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| declared.contains(*f))
                .unwrap_or(name);
            assert!(declared.contains(family), "{line} without # TYPE");
        }
    }

    #[test]
    fn requests_carry_the_granted_tenant_and_client_or_none() {
        let m = Metrics::default();
        let d = Duration::from_millis(3);
        m.request("unrouted", "", "UnknownRoute", None, None, d);
        m.request("insi", "other", "ok", Some("ch-a"), Some("dpi"), d);
        m.request("insi", "other", "ok", Some("ch-a"), Some("dpi"), d);
        let text = m.render(&state(), OffsetDateTime::now_utc(), FILE_SINK);
        assert_eq!(
            value(
                &text,
                "passerelle_requests_total{tenant=\"none\",client=\"none\",service=\"unrouted\",action=\"\",outcome=\"UnknownRoute\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "passerelle_requests_total{tenant=\"ch-a\",client=\"dpi\",service=\"insi\",action=\"other\",outcome=\"ok\"}"
            ),
            2.0
        );
    }

    #[test]
    fn reloads_audit_failures_draining_and_build_info() {
        let m = Metrics::default();
        let state = state();
        let now = OffsetDateTime::now_utc();
        let start = (now.unix_timestamp_nanos() / 1_000_000) as f64 / 1e3;
        let text = m.render(&state, now, FILE_SINK);
        assert_eq!(value(&text, "passerelle_config_last_reload_success"), 1.0);
        let loaded = value(
            &text,
            "passerelle_config_last_reload_success_timestamp_seconds",
        );
        assert!((loaded - start).abs() < 60.0, "{loaded} vs {start}");
        assert_eq!(value(&text, "passerelle_audit_write_failures_total"), 0.0);
        assert_eq!(value(&text, "passerelle_draining"), 0.0);
        assert_eq!(
            value(
                &text,
                &format!(
                    "passerelle_build_info{{version=\"{}\"}}",
                    env!("CARGO_PKG_VERSION")
                )
            ),
            1.0
        );

        // A failed reload: the gauge drops, the time of the last success stays.
        m.last_load
            .success_unix_millis
            .store(1_000, Ordering::Relaxed);
        m.reload(false);
        m.audit_write_failed();
        m.draining.store(true, Ordering::Relaxed);
        let text = m.render(&state, now, FILE_SINK);
        assert_eq!(value(&text, "passerelle_config_last_reload_success"), 0.0);
        assert_eq!(
            value(
                &text,
                "passerelle_config_last_reload_success_timestamp_seconds"
            ),
            1.0
        );
        assert_eq!(
            value(&text, "passerelle_reloads_total{result=\"failure\"}"),
            1.0
        );
        assert_eq!(value(&text, "passerelle_audit_write_failures_total"), 1.0);
        assert_eq!(value(&text, "passerelle_draining"), 1.0);

        // A good one: back to 1, stamped now.
        m.reload(true);
        let text = m.render(&state, now, FILE_SINK);
        assert_eq!(value(&text, "passerelle_config_last_reload_success"), 1.0);
        let loaded = value(
            &text,
            "passerelle_config_last_reload_success_timestamp_seconds",
        );
        assert!((loaded - start).abs() < 60.0, "{loaded} vs {start}");
    }

    #[test]
    fn certificates_show_their_end_and_whether_their_pair_serves() {
        let m = Metrics::default();
        let state = state();
        let credentials: Vec<_> = state.credentials().collect();
        assert!(!credentials.is_empty());
        let now = OffsetDateTime::now_utc();
        // Far after every certificate's end: each pair is refused, and says so.
        let later = credentials
            .iter()
            .map(|c| c.not_after)
            .max()
            .expect("a certificate")
            + time::Duration::days(1);
        let (text, late) = (
            m.render(&state, now, FILE_SINK),
            m.render(&state, later, FILE_SINK),
        );
        for c in credentials {
            let l = format!("{{tenant=\"{}\",role=\"{}\"}}", c.tenant, c.role);
            let end = value(
                &text,
                &format!("passerelle_certificate_not_after_timestamp_seconds{l}"),
            );
            assert_eq!(end, c.not_after.unix_timestamp() as f64);
            let left = value(&text, &format!("passerelle_certificate_expiry_seconds{l}"));
            assert!((now.unix_timestamp() as f64 + left - end).abs() <= 1.0);
            assert_eq!(
                value(&text, &format!("passerelle_certificate_usable{l}")),
                if c.check(now).is_ok() { 1.0 } else { 0.0 }
            );
            assert_eq!(
                value(&text, &format!("passerelle_certificate_revoked{l}")),
                if c.revocation().is_some() { 1.0 } else { 0.0 }
            );
            assert_eq!(
                value(&late, &format!("passerelle_certificate_usable{l}")),
                0.0
            );
            assert!(value(&late, &format!("passerelle_certificate_expiry_seconds{l}")) < 0.0);
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_come_from_proc() {
        let text = Metrics::default().render(&state(), OffsetDateTime::now_utc(), FILE_SINK);
        assert!(value(&text, "process_open_fds") >= 3.0);
        assert!(value(&text, "process_max_fds") >= value(&text, "process_open_fds"));
        assert!(value(&text, "process_resident_memory_bytes") > 1e6);
        assert!(
            value(&text, "process_virtual_memory_bytes")
                >= value(&text, "process_resident_memory_bytes")
        );
        assert!(value(&text, "process_cpu_seconds_total") >= 0.0);
        let started = value(&text, "process_start_time_seconds");
        let now = OffsetDateTime::now_utc().unix_timestamp() as f64;
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{started}"
        );
    }
}
