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

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use passerelle_benches::load::{self, Endpoint, LoadConfig, Mode, Window};
use passerelle_benches::resources;
use passerelle_benches::soak::{self, Bounds, Sample};
use passerelle_benches::stack::{self, Mock, Passerelle, admin};
use passerelle_benches::workloads::{self, DmpQuery, DmpSubmit, InsiSearch, Mixed, Via};
use passerelle_certs_test::shared_test_pki;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
    /// Start of each fault burst (when asked) and its end (once both mocks are calm
    /// again; `None`: it never ended).
    bursts: Vec<(f64, Option<f64>)>,
    reloads: Vec<f64>,
    reloads_confirmed: usize,
    failures: Vec<String>,
}

/// The settings of the reloads and fault bursts, seconds.
#[derive(Debug, Clone, Copy)]
struct Plan {
    end: f64,
    reload_every: f64,
    burst_first: f64,
    burst_every: f64,
    burst_seconds: f64,
    error_rate: f64,
}

impl Plan {
    /// The events in time order: `reload`, `burst` and `calm`, each within the run.
    fn schedule(&self) -> Vec<(f64, &'static str)> {
        let mut schedule: Vec<(f64, &'static str)> = Vec::new();
        let mut t = self.reload_every;
        while t < self.end {
            schedule.push((t, "reload"));
            t += self.reload_every;
        }
        let mut t = self.burst_first;
        while t + self.burst_seconds < self.end {
            schedule.push((t, "burst"));
            schedule.push((t + self.burst_seconds, "calm"));
            t += self.burst_every;
        }
        schedule.sort_by(|a, b| a.0.total_cmp(&b.0));
        schedule
    }

    fn count(&self, what: &str) -> usize {
        self.schedule().iter().filter(|(_, w)| *w == what).count()
    }
}

fn lock(events: &Mutex<Events>) -> std::sync::MutexGuard<'_, Events> {
    events
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sends the reloads and fault bursts on `plan`'s schedule; `passerelle`: its pid and
/// admin port; `mocks`: their admin ports.
fn control(
    start: Instant,
    plan: Plan,
    passerelle: (u32, u16),
    mocks: [u16; 2],
    events: &Mutex<Events>,
) {
    let reloads = |port| {
        admin(port, "GET", "/metrics", "")
            .and_then(|m| metric(&m, "passerelle_reloads_total{result=\"success\"}"))
            .unwrap_or(0.0)
    };
    for (at, what) in plan.schedule() {
        let due = start + Duration::from_secs_f64(at);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let now = start.elapsed().as_secs_f64();
        match what {
            "reload" => {
                let before = reloads(passerelle.1);
                let sent = std::process::Command::new("kill")
                    .args(["-HUP", &passerelle.0.to_string()])
                    .status()
                    .is_ok_and(|s| s.success());
                lock(events).reloads.push(now);
                // The reload runs in the background: wait for its count (at most 10 s).
                let asked = Instant::now();
                while sent
                    && reloads(passerelle.1) <= before
                    && asked.elapsed() < Duration::from_secs(10)
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let mut e = lock(events);
                if reloads(passerelle.1) > before {
                    e.reloads_confirmed += 1;
                } else {
                    e.failures
                        .push(format!("reload at {now:.0} s not counted as a success"));
                }
            }
            "burst" | "calm" => {
                let faults = if what == "burst" {
                    // Recorded before the first mock fails.
                    lock(events).bursts.push((now, None));
                    format!("{{\"*\": {{\"error_rate\": {}}}}}", plan.error_rate)
                } else {
                    "{}".to_string()
                };
                for port in mocks {
                    if admin(port, "PUT", "/faults", &faults).is_none() {
                        lock(events).failures.push(format!(
                            "PUT /faults on the mock's admin port {port} failed"
                        ));
                    }
                }
                if what == "calm" {
                    // Recorded once both mocks are calm.
                    let end = start.elapsed().as_secs_f64();
                    if let Some(last) = lock(events).bursts.last_mut() {
                        last.1 = Some(end);
                    }
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
    for (name, value) in [
        ("SOAK_SECONDS", seconds),
        ("SOAK_WINDOW", window),
        ("SOAK_RELOAD_EVERY", reload_every),
        ("SOAK_BURST_EVERY", burst_every),
        ("SOAK_BURST_SECONDS", burst_seconds),
        ("SOAK_LOAD", share),
        ("SOAK_CAPACITY_SECONDS", capacity_seconds),
    ] {
        assert!(
            value.is_finite() && value > 0.0,
            "{name} must be a number above 0 (got {value})"
        );
    }
    assert!(
        (0.0..=1.0).contains(&error_rate) && share <= 1.0 && connections > 0,
        "SOAK_BURST_ERROR_RATE and SOAK_LOAD must be between 0 and 1, SOAK_CONNECTIONS above 0"
    );
    assert!(
        (0.0..seconds).contains(&warmup) && burst_first >= 0.0,
        "SOAK_WARMUP must be from 0 to below SOAK_SECONDS, SOAK_BURST_FIRST not negative"
    );
    let plan = Plan {
        end: seconds,
        reload_every,
        burst_first,
        burst_every,
        burst_seconds,
        error_rate,
    };
    let settings = Settings {
        seconds,
        warmup,
        window,
        share,
        plan,
    };
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/soak");
    std::fs::create_dir_all(out.join("audit")).expect("target/soak");
    if std::env::var_os("SOAK_REJUDGE").is_some() {
        // Judge (and draw) the last run again from its files, with the same settings.
        let csv = std::fs::read_to_string(out.join("soak.csv")).expect("target/soak/soak.csv");
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("soak.json")).expect("target/soak/soak.json"),
        )
        .expect("soak.json");
        let samples = soak::parse_csv(&csv).expect("soak.csv");
        let recorded = Recorded::read(&json);
        if !judge_and_report(&out, samples, &recorded, &settings) {
            std::process::exit(1);
        }
        return;
    }
    let spec = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec");

    stack::build_release(&["passerelle-proxy", "passerelle-mocks"]);
    let pki = shared_test_pki().expect("test PKI");
    let spec_dir = |sub: &str| spec.join(sub).to_string_lossy().into_owned();
    // The mock DMP keeps 5 submission sets: its query answers stay the same size.
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
    // A new mix for each run: each DmpSubmit numbers its submission sets afresh.
    let mix = || -> Arc<dyn load::Workload> {
        Arc::new(Mixed::new(vec![
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
        ]))
    };
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
        mix(),
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
        std::thread::spawn(move || control(start, plan, (pid, admin_port), mocks, &events))
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Window>();
    let sampler = {
        let admin_port = passerelle.admin_port;
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            let mut cpu_before = resources::cpu_seconds(pid);
            let mut read_before = Instant::now();
            while let Some(w) = rx.blocking_recv() {
                let t_s = w.at.as_secs_f64();
                let cpu = resources::cpu_seconds(pid);
                let read_at = Instant::now();
                let (fds, sockets) = resources::open_fds(pid);
                let client_connections = admin(admin_port, "GET", "/metrics", "")
                    .and_then(|m| metric(&m, "passerelle_open_connections{listener=\"internal\"}"))
                    .unwrap_or(-1.0) as i64;
                let errors: u64 = w.errors.values().sum();
                let rss_mib = resources::rss_mib(pid);
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
                    // Set from the events once the run is over (soak::flag).
                    injected: false,
                    reload: false,
                    p50_ms: w.p50_ms,
                    p99_ms: w.p99_ms,
                    max_ms: w.max_ms,
                    rss_mib,
                    fds,
                    sockets,
                    client_connections,
                    // Over the time between two readings, not the nominal window.
                    cpu_percent: (cpu - cpu_before)
                        / read_at.duration_since(read_before).as_secs_f64().max(1e-3)
                        * 100.0,
                });
                cpu_before = cpu;
                read_before = read_at;
                if samples.len() % 30 == 0 {
                    eprintln!(
                        "  {t_s:>5.0} s: {:.0} req/s, p99 {:.2} ms, RSS {rss_mib:.1} MiB, {fds} fds, errors {errors}",
                        w.requests as f64 / window,
                        w.p99_ms,
                    );
                }
            }
            samples
        })
    };
    let report = generator.block_on(load::run_windowed(
        &endpoint,
        mix(),
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
    let mut samples = sampler.join().expect("sampler");
    let controlled = controller.join();
    let mut events = std::mem::take(&mut *lock(&events));
    if controlled.is_err() {
        events
            .failures
            .push("the thread sending reloads and faults died".into());
    }
    // Errors answered after the last window closed count too, in the last window.
    let in_windows: u64 = samples.iter().map(|s| s.errors).sum();
    let late = report
        .errors
        .values()
        .sum::<u64>()
        .saturating_sub(in_windows);
    if let Some(last) = samples.last_mut().filter(|_| late > 0) {
        last.errors += late;
        last.error_kinds = format!("{};after_last_window:{late}", last.error_kinds);
    }
    let recorded = Recorded {
        capacity: serde_json::to_value(&capacity).unwrap_or_default(),
        capacity_throughput: capacity.throughput,
        rate,
        report: serde_json::to_value(&report).unwrap_or_default(),
        bursts: events.bursts,
        reloads: events.reloads,
        reloads_confirmed: events.reloads_confirmed,
        failures: events.failures,
    };
    let passed = judge_and_report(&out, samples, &recorded, &settings);
    drop(passerelle);
    drop(dmp);
    drop(insi);
    if !passed {
        std::process::exit(1);
    }
}

/// The settings a soak's verdict depends on.
#[derive(Debug, Clone, Copy)]
struct Settings {
    seconds: f64,
    warmup: f64,
    window: f64,
    share: f64,
    plan: Plan,
}

/// What a soak recorded besides its samples (`soak.json`).
#[derive(Debug)]
struct Recorded {
    capacity: serde_json::Value,
    capacity_throughput: f64,
    rate: f64,
    report: serde_json::Value,
    bursts: Vec<(f64, Option<f64>)>,
    reloads: Vec<f64>,
    reloads_confirmed: usize,
    failures: Vec<String>,
}

impl Recorded {
    /// Reads `soak.json` as [`judge_and_report`] writes it.
    fn read(json: &serde_json::Value) -> Self {
        let number = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
        let bursts = json["bursts"]
            .as_array()
            .map(|a| a.iter().map(|b| (number(&b[0]), b[1].as_f64())).collect())
            .unwrap_or_default();
        let reloads = json["reloads"]
            .as_array()
            .map(|a| a.iter().map(number).collect())
            .unwrap_or_default();
        Self {
            capacity: json["capacity"].clone(),
            capacity_throughput: number(&json["capacity"]["throughput"]),
            rate: number(&json["rate"]),
            report: json["report"].clone(),
            bursts,
            reloads,
            reloads_confirmed: json["reloads_confirmed"].as_u64().unwrap_or(0) as usize,
            failures: json["control_failures"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Flags the windows from the events, judges, writes `soak.csv`, `soak.png` and
/// `soak.json` into `out`, prints the verdicts; true when every one passed.
fn judge_and_report(
    out: &std::path::Path,
    mut samples: Vec<Sample>,
    recorded: &Recorded,
    settings: &Settings,
) -> bool {
    let Settings {
        seconds,
        warmup,
        window,
        share,
        plan,
    } = *settings;
    soak::flag(&mut samples, &recorded.bursts, &recorded.reloads, window);
    let bounds = Bounds {
        warmup_s: warmup,
        rate: recorded.rate,
        reloads_scheduled: plan.count("reload"),
        bursts_scheduled: plan.count("burst"),
        max_rss_drift: 0.10,
        max_rss_peak: 1.5,
        fd_slack: 4,
        segment_s: 600.0_f64.min(seconds / 4.0),
        max_p99_ratio: 1.5,
    };
    let done = soak::Done {
        reloads_confirmed: recorded.reloads_confirmed,
        bursts: recorded.bursts.len(),
    };
    let verdict = soak::judge(&samples, &bounds, &done);
    std::fs::write(out.join("soak.csv"), soak::csv(&samples)).expect("soak.csv");
    let title = format!(
        "Passerelle soak: {:.0} min at {:.0} req/s ({:.0} % of the {:.0} req/s measured), reload every {:.0} min, faults every {:.0} min",
        seconds / 60.0,
        recorded.rate,
        share * 100.0,
        recorded.capacity_throughput,
        plan.reload_every / 60.0,
        plan.burst_every / 60.0
    );
    if let Err(e) = soak::draw(&out.join("soak.png"), &title, &samples, window) {
        eprintln!("chart not drawn: {e}");
    }
    let summary = serde_json::json!({
        "capacity": recorded.capacity,
        "rate": recorded.rate,
        "report": recorded.report,
        "bounds": bounds,
        "verdict": verdict,
        "reloads": recorded.reloads,
        "reloads_sent": recorded.reloads.len(),
        "reloads_confirmed": recorded.reloads_confirmed,
        "bursts": recorded.bursts,
        "control_failures": recorded.failures,
    });
    std::fs::write(
        out.join("soak.json"),
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )
    .expect("soak.json");
    let number = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    eprintln!(
        "\nsoak: {} requests in {:.0} s ({:.1} req/s), p99 {:.2} ms overall; {} reloads sent, {} confirmed; {} fault bursts",
        recorded.report["requests"],
        number(&recorded.report["seconds"]),
        number(&recorded.report["throughput"]),
        number(&recorded.report["p99_ms"]),
        recorded.reloads.len(),
        recorded.reloads_confirmed,
        recorded.bursts.len()
    );
    for check in &verdict.checks {
        eprintln!(
            "  {} {}: {}",
            if check.passed { "PASS" } else { "FAIL" },
            check.name,
            check.measured
        );
    }
    for failure in &recorded.failures {
        eprintln!("  FAIL {failure}");
    }
    eprintln!("report: {}/soak.csv, soak.png, soak.json", out.display());
    verdict.passed() && recorded.failures.is_empty()
}
