//! `cargo bench -p passerelle-benches --bench compare`: Passerelle against direct access
//! and against nginx, in one run, on this machine.
//!
//! Passerelle, nginx and the mocks (release builds of `mock-dmp` and `mock-insi`) run as
//! their own processes, so that each one's CPU time and memory can be read: the mocks'
//! CPU per request is printed beside the proxy's, to show when they, not the proxy,
//! limit a throughput. The INSi and DMP query scenarios then run again at a fixed rate,
//! half of the lower throughput sustained (rows `@50%`): latency at equal, moderate load. Every scenario runs against each
//! target with the same load; the raw RSA-2048 sign rate of the ORG SIGN key is measured
//! in the same run. Prints a table, writes `target/bench/compare.json` and
//! `target/bench/compare.png`.
//!
//! Settings (environment): `BENCH_SECONDS` (measure, default 8), `BENCH_WARMUP` (2),
//! `BENCH_INSI_CONCURRENCY` (256), `BENCH_DMP_CONCURRENCY` (32), `BENCH_RATE` (requests
//! a second: fixed-rate mode instead of fixed concurrency), `BENCH_ONLY` (comma-separated
//! scenarios: `insi`, `dmp-query`, `dmp-query-postgres`, `dmp-submit`, `dmp-submit-64m`),
//! `BENCH_SUBMISSIONS` (direct submissions signed in advance, 3000; a direct submission run
//! ends when they are used up, after a warm-up of at most 0.25 s).
//!
//! `dmp-submit-64m` sends, one at a time, three submissions of one PDF just under the
//! default 64 MiB body limit (`BENCH_LARGE_BYTES`, default 63 MiB) through a Passerelle
//! of its own: its peak resident memory above where it started, per body byte.
//!
//! `dmp-query-postgres` runs the DMP query against a second Passerelle whose audit sink is
//! a real PostgreSQL (started here, `initdb` in a temporary folder), to compare with the
//! file sink in the same run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use passerelle_benches::chart::{self, Bar};
use passerelle_benches::load::{self, Endpoint, LoadConfig, LoadReport, Mode};
use passerelle_benches::resources;
use passerelle_benches::stack::{
    Mock, Proc, build_release, free_port, start_mock, start_passerelle, wait_for_port,
};
use passerelle_benches::workloads::{self, DmpQuery, DmpSubmit, InsiSearch, Via};
use passerelle_certs_test::{LeafFiles, Manifest, shared_test_pki};
use passerelle_config::CertRole;
use passerelle_signing::{DigestAlgorithm, Signer, SoftwareSigner};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Serialize;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mtls(pki: &Manifest, leaf: &LeafFiles) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.path(&pki.ca.root)).expect("root"))
        .expect("root");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.path(&leaf.chain))
        .expect("chain")
        .collect::<Result<_, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_file(pki.path(&leaf.key)).expect("key");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client certificate"),
    )
}

/// Raw RSA-2048 signatures a second, one core, with the ORG SIGN key.
fn rsa_rate(signer: &dyn Signer) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        let _ = signer.sign(DigestAlgorithm::Sha256, format!("message {n}").as_bytes());
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn start_nginx(pki: &Manifest, insi_port: u16, out: &Path) -> Option<(Proc, u16)> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let port = free_port();
    let prefix = out.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).expect("nginx dir");
    let leaf = &pki.tenants[0].insi_auto;
    // The same job as Passerelle's INSi path without contexts to fill: an mTLS forward
    // proxy with the tenant's INSI-AUTO certificate and keep-alive upstream connections.
    let conf = format!(
        r#"worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  upstream insi {{ server 127.0.0.1:{insi_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 100000;
    location /lps {{
      proxy_pass https://insi;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_certificate {chain};
      proxy_ssl_certificate_key {key};
      proxy_ssl_trusted_certificate {root};
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_session_reuse on;
    }}
  }}
}}
"#,
        prefix = prefix.display(),
        chain = pki.path(&leaf.chain).display(),
        key = pki.path(&leaf.key).display(),
        root = pki.path(&pki.ca.root).display(),
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("nginx.conf");
    let child = Command::new(nginx)
        .args(["-p"])
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"])
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_for_port(port, "nginx");
    Some((
        Proc {
            child,
            with_children: true,
        },
        port,
    ))
}

#[derive(Debug, Serialize)]
struct Row {
    scenario: &'static str,
    target: &'static str,
    #[serde(flatten)]
    report: LoadReport,
    /// Proxy CPU seconds per 1,000 requests (none for direct access).
    cpu_s_per_1000: Option<f64>,
    /// Cores the proxy kept busy during the measurement.
    cores_used: Option<f64>,
    /// Peak resident memory during this scenario, its warm-up included.
    peak_rss_mib: Option<f64>,
    /// Resident memory when the measurement began (the peak's starting point).
    start_rss_mib: Option<f64>,
    /// TLS handshakes the mock served during the run (warm-up included).
    upstream_handshakes: u64,
    /// The upstream mock's CPU seconds per 1,000 requests (warm-up included, as the
    /// proxy's).
    mock_cpu_s_per_1000: f64,
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    scenario: &'static str,
    target: &'static str,
    endpoint: &Endpoint,
    workload: Arc<dyn load::Workload>,
    config: LoadConfig,
    proc: Option<&Proc>,
    mock: &Mock,
) -> Row {
    let cpu_before = proc.map(Proc::cpu);
    let mock_before = mock.proc.cpu();
    // The peak of this scenario, not of the ones the same process served before, and
    // where it starts (none when the peak could not be reset).
    let start_rss_mib = match proc {
        Some(p) if p.reset_peak_rss() => Some(p.pids().into_iter().map(resources::rss_mib).sum()),
        Some(_) => {
            eprintln!("  (peak memory not reset: the {target} peak covers earlier scenarios)");
            None
        }
        None => None,
    };
    let hs_before = mock.handshakes();
    let started = Instant::now();
    let report = load::run(endpoint, workload, config).await;
    let wall = started.elapsed().as_secs_f64();
    let cpu = proc.map(|p| p.cpu() - cpu_before.unwrap_or(0.0));
    let mock_cpu = mock.proc.cpu() - mock_before;
    let row = Row {
        scenario,
        target,
        cpu_s_per_1000: cpu.map(|c| c / report.requests.max(1) as f64 * 1000.0),
        cores_used: cpu.map(|c| c / wall),
        peak_rss_mib: proc.map(Proc::peak_rss_mib),
        start_rss_mib,
        upstream_handshakes: mock.handshakes() - hs_before,
        mock_cpu_s_per_1000: mock_cpu / report.requests.max(1) as f64 * 1000.0,
        report,
    };
    eprintln!(
        "  {scenario:<10} {target:<10} {:>8.0} req/s  p99 {:>7.2} ms  errors {:?}",
        row.report.throughput, row.report.p99_ms, row.report.errors
    );
    row
}

fn main() {
    let seconds: f64 = env_or("BENCH_SECONDS", 8.0);
    let warmup: f64 = env_or("BENCH_WARMUP", 2.0);
    let insi_concurrency: usize = env_or("BENCH_INSI_CONCURRENCY", 256);
    let dmp_concurrency: usize = env_or("BENCH_DMP_CONCURRENCY", 32);
    let rate: Option<f64> = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok());
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let began = Instant::now();

    let pki = shared_test_pki().expect("test PKI");
    let config = passerelle_config::load(&pki.path(&pki.config)).expect("sandbox configuration");
    let signer = SoftwareSigner::from_material(&config.tenants[0].certificates[&CertRole::DmpSign])
        .expect("ORG SIGN");
    // Tenant A's first geographic establishment (FINESS EG): the structure a DMP request
    // names, in the VIHF and as the XDS authorInstitution.
    let structure = pki.tenants[0].geographic_structure_ids[0].clone();
    eprintln!("raw RSA-2048 signature rate (ORG SIGN, one core)...");
    let rsa = rsa_rate(&signer);
    eprintln!("  {rsa:.0} signatures/s");
    // The same on every core at once: vCPUs may share physical cores, and a signature
    // costs more when all of them are busy (as under load).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rsa_all: f64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cores).map(|_| s.spawn(|| rsa_rate(&signer))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
    });
    eprintln!("  {rsa_all:.0} signatures/s on {cores} cores at once");

    // The scenarios to run: `BENCH_ONLY`, or all.
    let only: Option<String> = std::env::var("BENCH_ONLY").ok();
    let wanted = |scenario: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|s| s == scenario))
    };
    // The mocks, as their own processes (the release builds).
    build_release(&["passerelle-proxy", "passerelle-mocks"]);
    let spec = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec");
    let spec_dir = |sub: &str| spec.join(sub).to_string_lossy().into_owned();
    let dmp = start_mock(
        "mock-dmp",
        &pki,
        &["--spec", &spec_dir("dmp")],
        &out.join("mock-dmp.log"),
    );
    let insi = start_mock(
        "mock-insi",
        &pki,
        &["--xsd", &spec_dir("insi/xsd")],
        &out.join("mock-insi.log"),
    );
    let started = start_passerelle(&pki, dmp.port, insi.port, &out, "", None);
    let (passerelle, proxy_port) = (started.proc, started.port);
    // The same Passerelle with its audit records in a real PostgreSQL (default settings:
    // every commit flushed), for the file-vs-database comparison.
    let postgres = if wanted("dmp-query-postgres") {
        match passerelle_mocks::postgres::TestPostgres::start() {
            Ok(pg) => {
                let password = out.join("audit-db.password");
                pg.write_password_file(&password).expect("password file");
                let settings = format!(
                    "sink = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\nspool = \"{}\"\n",
                    pg.url(),
                    password.display(),
                    out.join("audit/postgres.spool.jsonl").display()
                );
                let started = start_passerelle(&pki, dmp.port, insi.port, &out, &settings, None);
                Some((pg, started.proc, started.port))
            }
            Err(e) => {
                eprintln!("PostgreSQL not available ({e}): the dmp-query-postgres row is left out");
                None
            }
        }
    } else {
        None
    };
    // A Passerelle of its own for the large submission: its memory growth is measured
    // from a process that served nothing else.
    let large = wanted("dmp-submit-64m")
        .then(|| start_passerelle(&pki, dmp.port, insi.port, &out.join("large"), "", None));
    let nginx = start_nginx(&pki, insi.port, &out);
    if nginx.is_none() {
        eprintln!(
            "nginx not found: run scripts/install-deps.sh --bench (the nginx row is left out)"
        );
    }

    let generator = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let localhost = ServerName::try_from("localhost").expect("name");
    let direct = |leaf: &LeafFiles, port: u16| Endpoint {
        address: format!("127.0.0.1:{port}").parse().expect("address"),
        tls: Some((mtls(&pki, leaf), localhost.clone())),
    };
    let plain = |port: u16| Endpoint {
        address: format!("127.0.0.1:{port}").parse().expect("address"),
        tls: None,
    };
    // A fixed rate, for the latency rows at half capacity (none when the whole run is
    // already at a fixed rate).
    let at_rate = |per_second: f64, connections: usize| LoadConfig {
        mode: Mode::Rate {
            per_second,
            connections,
        },
        warmup: Duration::from_secs_f64(warmup),
        duration: Duration::from_secs_f64(seconds),
        max_requests: None,
    };
    let half_of_capacity = |rows: &[Row], scenario: &str, targets: &[&str]| {
        let lowest = targets
            .iter()
            .filter_map(|t| {
                rows.iter()
                    .find(|r| r.scenario == scenario && r.target == *t)
            })
            .map(|r| r.report.throughput)
            .fold(f64::INFINITY, f64::min);
        (rate.is_none() && lowest.is_finite() && lowest > 0.0).then_some(lowest / 2.0)
    };
    let bounds = |concurrency: usize, max: Option<u64>| LoadConfig {
        mode: match rate {
            Some(per_second) => Mode::Rate {
                per_second,
                connections: concurrency,
            },
            None => Mode::Concurrency(concurrency),
        },
        warmup: Duration::from_secs_f64(warmup),
        duration: Duration::from_secs_f64(seconds),
        max_requests: max,
    };
    let mut rows = Vec::new();
    let mut large_body_mib = None;
    eprintln!("load ({seconds} s each after {warmup} s warm-up):");
    generator.block_on(async {
        if wanted("insi") {
            rows.push(
                measure(
                    "insi",
                    "direct",
                    &direct(&pki.tenants[0].insi_auto, insi.port),
                    workloads::shared(InsiSearch::new(Via::Direct)),
                    bounds(insi_concurrency, None),
                    None,
                    &insi,
                )
                .await,
            );
            // At full concurrency, then (latency at equal, moderate load) both at half
            // the lower capacity.
            for (proxy_label, nginx_label, half) in [
                ("passerelle", "nginx", false),
                ("passerelle @50%", "nginx @50%", true),
            ] {
                let c = if half {
                    match half_of_capacity(&rows, "insi", &["passerelle", "nginx"]) {
                        Some(rate) => at_rate(rate, insi_concurrency),
                        None => break,
                    }
                } else {
                    bounds(insi_concurrency, None)
                };
                rows.push(
                    measure(
                        "insi",
                        proxy_label,
                        &plain(proxy_port),
                        workloads::shared(InsiSearch::new(Via::Passerelle)),
                        c,
                        Some(&passerelle),
                        &insi,
                    )
                    .await,
                );
                if let Some((nginx, port)) = &nginx {
                    rows.push(
                        measure(
                            "insi",
                            nginx_label,
                            &plain(*port),
                            workloads::shared(InsiSearch::new(Via::Nginx)),
                            c,
                            Some(nginx),
                            &insi,
                        )
                        .await,
                    );
                }
            }
        }
        if wanted("dmp-query") {
            // At full concurrency, then (latency at equal, moderate load) both at half of
            // what Passerelle sustained.
            for (direct_label, proxy_label, half) in [
                ("direct", "passerelle", false),
                ("direct @50%", "passerelle @50%", true),
            ] {
                let c = if half {
                    match half_of_capacity(&rows, "dmp-query", &["passerelle"]) {
                        Some(rate) => at_rate(rate, dmp_concurrency),
                        None => break,
                    }
                } else {
                    bounds(dmp_concurrency, None)
                };
                rows.push(
                    measure(
                        "dmp-query",
                        direct_label,
                        &direct(&pki.tenants[0].dmp_auth, dmp.port),
                        workloads::shared(DmpQuery::direct(&structure, &signer)),
                        c,
                        None,
                        &dmp,
                    )
                    .await,
                );
                rows.push(
                    measure(
                        "dmp-query",
                        proxy_label,
                        &plain(proxy_port),
                        workloads::shared(DmpQuery::passerelle(&structure)),
                        c,
                        Some(&passerelle),
                        &dmp,
                    )
                    .await,
                );
            }
        }
        if wanted("dmp-query-postgres")
            && let Some((_, proc, port)) = &postgres
        {
            rows.push(
                measure(
                    "dmp-query",
                    "passerelle+pg",
                    &plain(*port),
                    workloads::shared(DmpQuery::passerelle(&structure)),
                    bounds(dmp_concurrency, None),
                    Some(proc),
                    &dmp,
                )
                .await,
            );
        }
        if wanted("dmp-submit") {
            // Direct submissions are signed in advance, each with its own submission set.
            let count: u64 = env_or("BENCH_SUBMISSIONS", 3000);
            eprintln!("  (signing {count} submissions in advance for direct access...)");
            let presigned = DmpSubmit::direct(&structure, &signer, count);
            // Each is sent once: a short warm-up leaves most of them to the measurement
            // (the mock takes them faster than they can be signed here).
            let c = LoadConfig {
                warmup: Duration::from_secs_f64(warmup.min(0.25)),
                ..bounds(dmp_concurrency, Some(presigned.prepared()))
            };
            rows.push(
                measure(
                    "dmp-submit",
                    "direct",
                    &direct(&pki.tenants[0].dmp_auth, dmp.port),
                    workloads::shared(presigned),
                    c,
                    None,
                    &dmp,
                )
                .await,
            );
            rows.push(
                measure(
                    "dmp-submit",
                    "passerelle",
                    &plain(proxy_port),
                    workloads::shared(DmpSubmit::passerelle(&structure)),
                    bounds(dmp_concurrency, None),
                    Some(&passerelle),
                    &dmp,
                )
                .await,
            );
        }
        if let Some(large) = &large {
            // Its one-time costs first (thread heaps, the upstream connection, the
            // blocking pool), with ordinary submissions.
            let _ = load::run(
                &plain(large.port),
                workloads::shared(DmpSubmit::passerelle(&structure)),
                LoadConfig {
                    mode: Mode::Concurrency(2),
                    warmup: Duration::ZERO,
                    duration: Duration::from_secs(30),
                    max_requests: Some(8),
                },
            )
            .await;
            let bytes: usize = env_or("BENCH_LARGE_BYTES", 63 * 1024 * 1024);
            let c = LoadConfig {
                mode: Mode::Concurrency(1),
                warmup: Duration::ZERO,
                duration: Duration::from_secs(600),
                max_requests: Some(3),
            };
            let row = measure(
                "dmp-submit-64m",
                "passerelle",
                &plain(large.port),
                workloads::shared(DmpSubmit::passerelle_with(&structure, move |i| {
                    workloads::one_large_document(i, bytes)
                })),
                c,
                Some(&large.proc),
                &dmp,
            )
            .await;
            large_body_mib = Some(bytes as f64 / (1024.0 * 1024.0));
            rows.push(row);
        }
    });

    // Ratios measured in this run.
    let find = |s: &str, t: &str| rows.iter().find(|r| r.scenario == s && r.target == t);
    let mut ratios = serde_json::Map::new();
    if let (Some(p), Some(n)) = (find("insi", "passerelle"), find("insi", "nginx")) {
        ratios.insert(
            "insi_throughput_vs_nginx".into(),
            (p.report.throughput / n.report.throughput).into(),
        );
        ratios.insert(
            "insi_p99_vs_nginx".into(),
            (p.report.p99_ms / n.report.p99_ms).into(),
        );
    }
    if let (Some(p), Some(n)) = (find("insi", "passerelle @50%"), find("insi", "nginx @50%")) {
        ratios.insert(
            "insi_p99_at_half_load_vs_nginx".into(),
            (p.report.p99_ms / n.report.p99_ms).into(),
        );
    }
    if let (Some(p), Some(d)) = (
        find("dmp-query", "passerelle @50%"),
        find("dmp-query", "direct @50%"),
    ) {
        ratios.insert(
            "dmp_query_p99_at_half_load_vs_direct".into(),
            (p.report.p99_ms / d.report.p99_ms).into(),
        );
    }
    // Issue 18's goals: a signed request's proxy CPU counted in raw signatures (this
    // run's one-core rate), the INSi path's CPU against nginx's.
    for scenario in ["dmp-query", "dmp-submit"] {
        if let Some(cpu) = find(scenario, "passerelle").and_then(|p| p.cpu_s_per_1000) {
            ratios.insert(
                format!(
                    "{}_proxy_cpu_per_request_in_signatures",
                    scenario.replace('-', "_")
                ),
                (cpu / 1000.0 * rsa).into(),
            );
        }
    }
    if let (Some(p), Some(n)) = (
        find("insi", "passerelle").and_then(|r| r.cpu_s_per_1000),
        find("insi", "nginx").and_then(|r| r.cpu_s_per_1000),
    ) {
        ratios.insert("insi_cpu_per_request_vs_nginx".into(), (p / n).into());
    }
    if let Some(p) = find("dmp-query", "passerelle") {
        let used = p.cores_used.unwrap_or(1.0).max(0.01);
        ratios.insert(
            "dmp_query_vs_rsa_rate_x_cores".into(),
            (p.report.throughput / (rsa * used)).into(),
        );
        ratios.insert(
            "dmp_query_vs_loaded_rsa_rate_x_cores".into(),
            (p.report.throughput / (rsa_all / cores as f64 * used)).into(),
        );
    }
    if let (Some(f), Some(p)) = (
        find("dmp-query", "passerelle"),
        find("dmp-query", "passerelle+pg"),
    ) {
        ratios.insert(
            "dmp_query_postgres_sink_vs_file_sink_throughput".into(),
            (p.report.throughput / f.report.throughput).into(),
        );
        if let (Some(fc), Some(pc)) = (f.cpu_s_per_1000, p.cpu_s_per_1000) {
            ratios.insert(
                "dmp_query_postgres_sink_vs_file_sink_cpu".into(),
                (pc / fc).into(),
            );
        }
    }
    if let (Some(r), Some(body)) = (find("dmp-submit-64m", "passerelle"), large_body_mib)
        && let (Some(peak), Some(start)) = (r.peak_rss_mib, r.start_rss_mib)
        && r.report.errors.is_empty()
    {
        ratios.insert(
            "dmp_submit_64m_peak_rss_growth_per_body_byte".into(),
            ((peak - start) / body).into(),
        );
        eprintln!(
            "dmp-submit-64m: resident {start:.1} MiB before, peak {peak:.1} MiB, body {body:.1} MiB"
        );
    }
    if let (Some(p), Some(d)) = (find("dmp-query", "passerelle"), find("dmp-query", "direct")) {
        ratios.insert(
            "dmp_query_vs_direct".into(),
            (p.report.throughput / d.report.throughput).into(),
        );
    }

    println!();
    println!(
        "| scenario | target | req/s | p50 ms | p99 ms | p99.9 ms | errors | proxy CPU s / 1k req | proxy cores | peak RSS MiB | upstream handshakes | mock CPU s / 1k req |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {:.3} |",
            r.scenario,
            r.target,
            r.report.throughput,
            r.report.p50_ms,
            r.report.p99_ms,
            r.report.p999_ms,
            r.report.errors.values().sum::<u64>(),
            opt(r.cpu_s_per_1000, 3),
            opt(r.cores_used, 2),
            opt(r.peak_rss_mib, 1),
            r.upstream_handshakes,
            r.mock_cpu_s_per_1000
        );
    }
    println!();
    println!(
        "raw RSA-2048 sign rate (ORG SIGN): {rsa:.0}/s on one core, {rsa_all:.0}/s on {cores} cores at once"
    );
    for (k, v) in &ratios {
        println!("{k}: {:.3}", v.as_f64().unwrap_or(0.0));
    }
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c
                .lines()
                .find_map(|l| l.strip_prefix("model name\t: ").map(str::to_string)))
            .unwrap_or_default()
    );
    let json = serde_json::json!({
        "machine": machine,
        "settings": { "seconds": seconds, "warmup": warmup, "insi_concurrency": insi_concurrency, "dmp_concurrency": dmp_concurrency, "rate": rate },
        "rsa_sign_per_second": rsa,
        "rsa_sign_per_second_all_cores": rsa_all,
        "rows": rows,
        "ratios": ratios,
        "total_seconds": began.elapsed().as_secs_f64(),
    });
    std::fs::write(
        out.join("compare.json"),
        serde_json::to_string_pretty(&json).expect("JSON"),
    )
    .expect("compare.json");
    let bars: Vec<Bar> = rows
        .iter()
        .map(|r| Bar {
            label: format!("{} / {}", r.scenario, r.target),
            throughput: r.report.throughput,
            p99_ms: r.report.p99_ms,
            cpu_ms: r.cpu_s_per_1000,
        })
        .collect();
    match chart::draw(
        &out.join("compare.png"),
        &format!("Passerelle vs direct vs nginx ({machine})"),
        &bars,
    ) {
        Ok(()) => println!("wrote target/bench/compare.json and target/bench/compare.png"),
        Err(e) => println!("wrote target/bench/compare.json; chart not drawn: {e}"),
    }
    println!("total {:.0} s", began.elapsed().as_secs_f64());
    drop(passerelle);
    drop(large);
    drop(nginx);
    drop(postgres);
    let _ = std::fs::remove_dir_all(out.join("audit"));
    let _ = std::fs::remove_dir_all(out.join("large"));
}
