//! `scripts/soak.sh [DURATION]` (`cargo bench -p passerelle-benches --bench soak`): the
//! sandbox stack under a steady mixed load for a long time, with reloads and bursts of
//! upstream faults, sampled every window; writes `target/soak/soak.csv`, `soak.png`
//! and `soak.json`, prints the verdicts, exits 1 when one fails.
//!
//! The stack: the mock DMP and the mock INSi as their own processes (release builds;
//! the DMP keeps only the last few submission sets, so that its query answers do not
//! grow through the run), Passerelle (release) in front of them. The load: INSi
//! searches, DMP queries (TD3.1) and DMP submissions (TD2.1, two 50 KB documents) in
//! the proportions 5 : 4 : 1, first at a fixed concurrency to measure the stack's
//! capacity, then at a fixed rate of `SOAK_LOAD` (0.5) of it for the soak.
//!
//! Settings (environment; seconds unless named otherwise): `SOAK_SECONDS` (3600),
//! `SOAK_WARMUP` (300), `SOAK_WINDOW` (10), `SOAK_RELOAD_EVERY` (300: SIGHUP, checked on
//! `passerelle_reloads_total`), `SOAK_BURST_EVERY` (600), `SOAK_BURST_FIRST` (450),
//! `SOAK_BURST_SECONDS` (20: both mocks fail `SOAK_BURST_ERROR_RATE` = 0.3 of their
//! requests), `SOAK_CONNECTIONS` (16), `SOAK_LOAD` (0.5), `SOAK_CAPACITY_SECONDS` (20).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use passerelle_benches::load::{self, Endpoint, LoadConfig, Mode, Window};
use passerelle_benches::resources;
use passerelle_benches::soak::{self, Bounds, Sample};
use passerelle_benches::stack::{self, Mock, Passerelle};
use passerelle_benches::workloads::{self, DmpQuery, DmpSubmit, InsiSearch, Mixed, Via};
use passerelle_certs_test::shared_test_pki;

/// After a burst of faults, how long answers may still be the faults' (requests that
/// were in flight when they stopped).
const RECOVERY_S: f64 = 2.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One plain HTTP/1.0 exchange with an admin port: the body of a 2xx answer.
fn admin(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        tcp,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.split_whitespace()
        .nth(1)
        .filter(|code| code.starts_with('2'))
        .map(|_| body.to_string())
}

/// The value of the first line of `metrics` that starts with `series`.
fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// What happened when, seconds from the start of the soak.
#[derive(Debug, Default)]
struct Events {
    /// (start, end) of each fault burst.
    bursts: Vec<(f64, f64)>,
    reloads: Vec<f64>,
    reloads_confirmed: u64,
    failures: Vec<String>,
}

/// Sends the reloads and fault bursts on their schedule until `end`.
#[allow(clippy::too_many_arguments)]
fn control(
    start: Instant,
    end: Duration,
    reload_every: f64,
    burst_first: f64,
    burst_every: f64,
    burst_seconds: f64,
    error_rate: f64,
    passerelle: (u32, u16),
    mocks: [u16; 2],
    events: Arc<Mutex<Events>>,
) {
    let mut schedule: Vec<(f64, &str)> = Vec::new();
    let mut t = reload_every;
    while t < end.as_secs_f64() {
        schedule.push((t, "reload"));
        t += reload_every;
    }
    let mut t = burst_first;
    while t + burst_seconds < end.as_secs_f64() {
        schedule.push((t, "burst"));
        schedule.push((t + burst_seconds, "calm"));
        t += burst_every;
    }
    schedule.sort_by(|a, b| a.0.total_cmp(&b.0));
    let reloads = |port| {
        admin(port, "GET", "/metrics", "")
            .and_then(|m| metric(&m, "passerelle_reloads_total{result=\"success\"}"))
            .unwrap_or(0.0)
    };
    for (at, what) in schedule {
        let due = start + Duration::from_secs_f64(at);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let now = start.elapsed().as_secs_f64();
        let Ok(mut e) = events.lock() else { return };
        match what {
            "reload" => {
                let before = reloads(passerelle.1);
                let sent = std::process::Command::new("kill")
                    .args(["-HUP", &passerelle.0.to_string()])
                    .status()
                    .is_ok_and(|s| s.success());
                e.reloads.push(now);
                drop(e);
                // The reload runs in the background: wait for its count (at most 10 s).
                let asked = Instant::now();
                while sent
                    && reloads(passerelle.1) <= before
                    && asked.elapsed() < Duration::from_secs(10)
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let Ok(mut e) = events.lock() else { return };
                if reloads(passerelle.1) > before {
                    e.reloads_confirmed += 1;
                } else {
                    e.failures
                        .push(format!("reload at {now:.0} s not counted as a success"));
                }
            }
            "burst" | "calm" => {
                let faults = if what == "burst" {
                    format!("{{\"*\": {{\"error_rate\": {error_rate}}}}}")
                } else {
                    "{}".to_string()
                };
                for port in mocks {
                    if admin(port, "PUT", "/faults", &faults).is_none() {
                        e.failures.push(format!(
                            "PUT /faults on the mock's admin port {port} failed"
                        ));
                    }
                }
                if what == "burst" {
                    e.bursts.push((now, now));
                } else if let Some(last) = e.bursts.last_mut() {
                    last.1 = now;
                }
            }
            _ => {}
        }
    }
}

fn main() {
    let seconds: f64 = env_or("SOAK_SECONDS", 3600.0);
    let warmup: f64 = env_or("SOAK_WARMUP", 300.0);
    let window: f64 = env_or("SOAK_WINDOW", 10.0);
    let reload_every: f64 = env_or("SOAK_RELOAD_EVERY", 300.0);
    let burst_every: f64 = env_or("SOAK_BURST_EVERY", 600.0);
    let burst_first: f64 = env_or("SOAK_BURST_FIRST", 450.0);
    let burst_seconds: f64 = env_or("SOAK_BURST_SECONDS", 20.0);
    let error_rate: f64 = env_or("SOAK_BURST_ERROR_RATE", 0.3);
    let connections: usize = env_or("SOAK_CONNECTIONS", 16);
    let share: f64 = env_or("SOAK_LOAD", 0.5);
    let capacity_seconds: f64 = env_or("SOAK_CAPACITY_SECONDS", 20.0);
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/soak");
    std::fs::create_dir_all(out.join("audit")).expect("target/soak");
    let spec = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec");

    stack::build_release(&["passerelle-proxy", "passerelle-mocks"]);
    let pki = shared_test_pki().expect("test PKI");
    let spec_dir = |sub: &str| spec.join(sub).to_string_lossy().into_owned();
    let dmp: Mock = stack::start_mock(
        "mock-dmp",
        &pki,
        &["--spec", &spec_dir("dmp"), "--retain", "5"],
        &out.join("mock-dmp.log"),
    );
    let insi: Mock = stack::start_mock(
        "mock-insi",
        &pki,
        &["--xsd", &spec_dir("insi/xsd")],
        &out.join("mock-insi.log"),
    );
    let passerelle: Passerelle = stack::start_passerelle(
        &pki,
        dmp.port,
        insi.port,
        &out,
        "",
        Some(&out.join("passerelle.log")),
    );
    let pid = passerelle.proc.child.id();
    let structure = pki.tenants[0].geographic_structure_ids[0].clone();
    let mix: Arc<dyn load::Workload> = Arc::new(Mixed::new(vec![
        (
            5,
            "insi",
            workloads::shared(InsiSearch::new(Via::Passerelle)),
        ),
        (
            4,
            "dmp-query",
            workloads::shared(DmpQuery::passerelle(&structure)),
        ),
        (
            1,
            "dmp-submit",
            workloads::shared(DmpSubmit::passerelle(&structure)),
        ),
    ]));
    let endpoint = Endpoint {
        address: format!("127.0.0.1:{}", passerelle.port)
            .parse()
            .expect("address"),
        tls: None,
    };
    let generator = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    eprintln!(
        "capacity: mixed load (insi 5 : dmp-query 4 : dmp-submit 1) at {connections} connections, {capacity_seconds} s..."
    );
    let capacity = generator.block_on(load::run(
        &endpoint,
        Arc::clone(&mix),
        LoadConfig {
            mode: Mode::Concurrency(connections),
            warmup: Duration::from_secs(5),
            duration: Duration::from_secs_f64(capacity_seconds),
            max_requests: None,
        },
    ));
    eprintln!(
        "  {:.0} req/s, p99 {:.2} ms, errors {:?}",
        capacity.throughput, capacity.p99_ms, capacity.errors
    );
    assert!(
        capacity.errors.is_empty() && capacity.throughput > 1.0,
        "the stack does not answer the capacity run cleanly: {:?}",
        capacity.errors
    );
    let rate = capacity.throughput * share;
    eprintln!(
        "soak: {rate:.0} req/s ({:.0} % of capacity) for {seconds} s; reload every {reload_every} s, \
         {burst_seconds} s of faults (error rate {error_rate}) every {burst_every} s from {burst_first} s; \
         a sample every {window} s",
        share * 100.0
    );

    let events = Arc::new(Mutex::new(Events::default()));
    let start = Instant::now();
    let controller = {
        let events = Arc::clone(&events);
        let mocks = [dmp.admin_port, insi.admin_port];
        let admin_port = passerelle.admin_port;
        std::thread::spawn(move || {
            control(
                start,
                Duration::from_secs_f64(seconds),
                reload_every,
                burst_first,
                burst_every,
                burst_seconds,
                error_rate,
                (pid, admin_port),
                mocks,
                events,
            )
        })
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Window>();
    let sampler = {
        let events = Arc::clone(&events);
        let admin_port = passerelle.admin_port;
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            let mut cpu_before = resources::cpu_seconds(pid);
            while let Some(w) = rx.blocking_recv() {
                let t_s = w.at.as_secs_f64();
                let cpu = resources::cpu_seconds(pid);
                let (fds, sockets) = resources::open_fds(pid);
                let client_connections = admin(admin_port, "GET", "/metrics", "")
                    .and_then(|m| metric(&m, "passerelle_open_connections{listener=\"internal\"}"))
                    .unwrap_or(-1.0) as i64;
                let (injected, reload) = events.lock().map_or((false, false), |e| {
                    let from = t_s - window;
                    (
                        // A window touching a burst or the 2 s after it (the requests
                        // in flight when the faults stopped).
                        e.bursts
                            .iter()
                            .any(|(b, c)| *b < t_s && c.max(*b) + RECOVERY_S > from),
                        e.reloads.iter().any(|r| *r > from && *r <= t_s),
                    )
                });
                let errors: u64 = w.errors.values().sum();
                samples.push(Sample {
                    t_s,
                    requests: w.requests,
                    throughput: w.requests as f64 / window,
                    errors,
                    error_kinds: w
                        .errors
                        .iter()
                        .map(|(k, n)| format!("{k}:{n}"))
                        .collect::<Vec<_>>()
                        .join(";"),
                    injected,
                    reload,
                    p50_ms: w.p50_ms,
                    p99_ms: w.p99_ms,
                    max_ms: w.max_ms,
                    rss_mib: resources::rss_mib(pid),
                    fds,
                    sockets,
                    client_connections,
                    cpu_percent: (cpu - cpu_before) / window * 100.0,
                });
                cpu_before = cpu;
                if samples.len() % 30 == 0 {
                    eprintln!(
                        "  {:>5.0} s: {:.0} req/s, p99 {:.2} ms, RSS {:.1} MiB, {} fds, errors {}",
                        t_s,
                        w.requests as f64 / window,
                        w.p99_ms,
                        resources::rss_mib(pid),
                        fds,
                        errors
                    );
                }
            }
            samples
        })
    };
    let report = generator.block_on(load::run_windowed(
        &endpoint,
        mix,
        LoadConfig {
            mode: Mode::Rate {
                per_second: rate,
                connections,
            },
            warmup: Duration::ZERO,
            duration: Duration::from_secs_f64(seconds),
            max_requests: None,
        },
        Duration::from_secs_f64(window),
        tx,
    ));
    let samples = sampler.join().expect("sampler");
    let _ = controller.join();
    let events = events
        .lock()
        .map(|mut e| std::mem::take(&mut *e))
        .unwrap_or_default();

    let bounds = Bounds {
        warmup_s: warmup,
        max_rss_drift: 0.10,
        fd_slack: 8,
        segment_s: 600.0_f64.min(seconds / 4.0),
        max_p99_ratio: 1.5,
    };
    let verdict = soak::judge(&samples, &bounds);
    std::fs::write(out.join("soak.csv"), soak::csv(&samples)).expect("soak.csv");
    let title = format!(
        "Passerelle soak: {:.0} min at {rate:.0} req/s ({:.0} % of the {:.0} req/s measured), reload every {:.0} min, faults every {:.0} min",
        seconds / 60.0,
        share * 100.0,
        capacity.throughput,
        reload_every / 60.0,
        burst_every / 60.0
    );
    if let Err(e) = soak::draw(&out.join("soak.png"), &title, &samples, window) {
        eprintln!("chart not drawn: {e}");
    }
    let summary = serde_json::json!({
        "capacity": capacity,
        "rate": rate,
        "report": report,
        "bounds": bounds,
        "verdict": verdict,
        "reloads_sent": events.reloads.len(),
        "reloads_confirmed": events.reloads_confirmed,
        "bursts": events.bursts,
        "control_failures": events.failures,
    });
    std::fs::write(
        out.join("soak.json"),
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )
    .expect("soak.json");

    eprintln!(
        "\nsoak: {} requests in {:.0} s ({:.1} req/s), p99 {:.2} ms overall; {} reloads sent, {} confirmed; {} fault bursts",
        report.requests,
        report.seconds,
        report.throughput,
        report.p99_ms,
        events.reloads.len(),
        events.reloads_confirmed,
        events.bursts.len()
    );
    for check in &verdict.checks {
        eprintln!(
            "  {} {}: {}",
            if check.passed { "PASS" } else { "FAIL" },
            check.name,
            check.measured
        );
    }
    for failure in &events.failures {
        eprintln!("  FAIL {failure}");
    }
    eprintln!("report: {}/soak.csv, soak.png, soak.json", out.display());
    drop(passerelle);
    drop(dmp);
    drop(insi);
    if !verdict.passed() || !events.failures.is_empty() {
        std::process::exit(1);
    }
}
