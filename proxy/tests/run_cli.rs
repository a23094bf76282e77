//! `passerelle run`, the real binary, as an operator runs it: it serves DMP and INSi
//! through the mocks; stops on SIGTERM answering every accepted request, with one audit
//! line per upstream exchange; reloads on SIGHUP and when its files change; refuses a
//! 65 MiB body without holding it; logs (human or JSON) carry no patient data, token or
//! key. A configuration with errors does not start.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use passerelle_certs_test::{ConfigAddresses, shared_test_pki};
use passerelle_mocks::faults::{FaultSpec, Faults};
use passerelle_mocks::server::Running;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The mocks, and `passerelle run` on a configuration pointing at them.
struct Fixture {
    /// Kept running for the proxy's DMP pools.
    _dmp: Running,
    insi: Running,
    child: Child,
    listen: u16,
    admin: u16,
    config: PathBuf,
    audit: PathBuf,
    /// Tenant A's first geographic establishment (FINESS EG): the structure its DMP
    /// requests name.
    eg: String,
}

impl Fixture {
    async fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, "", None).await
    }

    /// `extra_config` is appended to the configuration; `open_files` sets the proxy's
    /// RLIMIT_NOFILE (soft and hard), through `prlimit`.
    async fn start_with(extra: &[&str], extra_config: &str, open_files: Option<u64>) -> Self {
        Self::start_edited(extra, open_files, &|text| format!("{text}{extra_config}")).await
    }

    /// `edit` rewrites the configuration (the PKI's, pointing at the mocks) before start.
    async fn start_edited(
        extra: &[&str],
        open_files: Option<u64>,
        edit: &dyn Fn(String) -> String,
    ) -> Self {
        let pki = shared_test_pki().expect("PKI");
        let any = "127.0.0.1:0".parse().expect("addr");
        let spec =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/insi/xsd");
        let (dmp, _service) = passerelle_mocks::start_dmp(
            &pki,
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/dmp"),
            any,
            any,
            Faults::default(),
        )
        .await
        .expect("mock DMP");
        let insi = passerelle_mocks::start_insi(&pki, &spec, any, any, Faults::default())
            .await
            .expect("mock INSi");
        let (listen, admin) = (free_port(), free_port());
        let audit = std::env::temp_dir()
            .join(format!("passerelle-run-cli-{listen}"))
            .join("audit.jsonl");
        let config = pki
            .write_config(
                &format!("run-cli-{listen}.toml"),
                &ConfigAddresses {
                    listener: format!("127.0.0.1:{listen}"),
                    admin: format!("127.0.0.1:{admin}"),
                    dmp_port: dmp.address.port(),
                    insi_port: insi.address.port(),
                    echo_port: None,
                    audit: Some(audit.clone()),
                },
            )
            .expect("write configuration");
        // Every test certificate expires within 2,000 days: each gets its daily warning.
        let mut text = std::fs::read_to_string(&config).expect("configuration");
        text.push_str("\n[security]\nexpiry_warning_days = 2000\n");
        std::fs::write(&config, edit(text)).expect("write");
        let mut command = match open_files {
            // prlimit sets the limit, then executes the proxy in its place (same pid).
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(env!("CARGO_BIN_EXE_passerelle"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_passerelle")),
        };
        let child = command
            .args(["run", "--config"])
            .arg(&config)
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start passerelle");
        let f = Self {
            _dmp: dmp,
            insi,
            child,
            listen,
            admin,
            config,
            audit,
            eg: pki.tenants[0].geographic_structure_ids[0].clone(),
        };
        let started = Instant::now();
        while f.admin_get("/healthz").await.1 != "ok\n" {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "passerelle did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        f
    }

    async fn admin_get(&self, path: &str) -> (u16, String) {
        let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", self.admin)).await else {
            return (0, String::new());
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", "admin")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = sender.send_request(req).await.expect("response");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// POST as the sandbox client for tenant A; `None` when the connection was refused.
    async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Option<(u16, String)> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.listen))
            .await
            .ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .ok()?;
        tokio::spawn(conn);
        let mut req = http::Request::post(path)
            .header("host", "passerelle")
            .header("content-type", "application/soap+xml")
            .header("authorization", "Bearer sandbox-token");
        if !headers.iter().any(|(k, _)| *k == "x-passerelle-tenant") {
            req = req.header("x-passerelle-tenant", "ch-test-a");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = sender
            .send_request(req.body(Full::new(body)).expect("request"))
            .await
            .ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn insi_search(&self) -> Option<(u16, String)> {
        self.insi_search_as("ch-test-a").await
    }

    async fn insi_search_as(&self, tenant: &str) -> Option<(u16, String)> {
        let body = std::fs::read(format!("{EXAMPLES}/insi-rechercher-traits-minimal.xml"))
            .expect("example");
        self.post(
            "/insi/auto",
            &[("x-passerelle-tenant", tenant)],
            Bytes::from(body),
        )
        .await
    }

    async fn dmp_query(&self) -> Option<(u16, String)> {
        let body = std::fs::read(format!("{EXAMPLES}/dmp-find-documents.xml")).expect("example");
        self.post(
            "/dmp/registry",
            &[
                ("x-vihf-subject-id", "899900063480"),
                ("x-vihf-subject-name", "MAX%20LIBRE"),
                ("x-vihf-role", "10^M%C3%A9decin"),
                ("x-vihf-sector", "SA01"),
                (
                    "x-vihf-patient",
                    "207058575627097^^^%261.2.250.1.213.1.4.10%26ISO^NH",
                ),
                ("x-vihf-structure", &self.eg),
            ],
            Bytes::from(body),
        )
        .await
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Peak resident memory of the proxy so far, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    /// Resident memory of the proxy now, in KiB.
    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// File descriptors the proxy has open now.
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// SIGTERM, then the exit status and the whole log.
    fn stop(self) -> (std::process::ExitStatus, String, Vec<serde_json::Value>) {
        self.signal("TERM");
        self.stop_waiting()
    }

    /// The exit status (once a SIGTERM already sent took effect) and the whole log.
    fn stop_waiting(mut self) -> (std::process::ExitStatus, String, Vec<serde_json::Value>) {
        let exit = self.child.wait().expect("wait");
        let mut log = String::new();
        self.child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut log)
            .expect("log");
        // The exchanges (refused attempts, never sent, are left out).
        let audit = std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("audit JSON"))
            .filter(|l| l["sent_upstream"] == true)
            .collect();
        (exit, log, audit)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = std::fs::remove_file(&self.config);
        if let Some(dir) = self.audit.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Patient data, the token and key material must never be in the log.
fn assert_clean(log: &str) {
    for secret in [
        "2070585756270",
        "207058575627097",
        "MARTIN",
        "CLAIRE",
        "MAX LIBRE",
        "MAX%20LIBRE",
        "sandbox-token",
        "PRIVATE KEY",
    ] {
        assert!(!log.contains(secret), "{secret:?} found in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_then_stops_on_sigterm_without_patient_data_in_logs() {
    let f = Fixture::start(&[]).await;
    let (status, body) = f.insi_search().await.expect("answer");
    assert_eq!(status, 200);
    assert!(body.contains("<CodeCR>00</CodeCR>"), "{body}");
    let (status, body) = f.dmp_query().await.expect("answer");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ResponseStatusType:Success"), "{body}");
    let (exit, log, audit) = f.stop();
    assert!(exit.success(), "exit {exit:?}\n{log}");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains(" request ") || l.ends_with(" request"))
            .count(),
        2,
        "{log}"
    );
    assert!(log.contains("stopped"), "{log}");
    assert_clean(&log);
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("certificate expires soon"))
            .count(),
        8,
        "one warning per certificate (2 tenants x 4 roles):\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_answers_every_accepted_request_and_audits_each_exchange() {
    let f = std::sync::Arc::new(Fixture::start(&["--log-format", "json"]).await);
    f.insi
        .faults
        .replace(BTreeMap::from([(
            "*".to_string(),
            FaultSpec {
                latency_ms: 400,
                ..FaultSpec::default()
            },
        )]))
        .expect("faults");
    let mut load = Vec::new();
    for _ in 0..40 {
        let f = std::sync::Arc::clone(&f);
        load.push(tokio::spawn(async move { f.insi_search().await }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    f.signal("TERM");
    let mut answered = 0;
    for task in load {
        // `None`: not accepted (connection refused after the listener closed).
        if let Some((status, body)) = task.await.expect("task") {
            assert_eq!(
                status, 200,
                "an accepted request was answered with an error: {body}"
            );
            answered += 1;
        }
    }
    assert_eq!(
        answered, 40,
        "all 40 were accepted before SIGTERM and all were answered"
    );
    let f = std::sync::Arc::try_unwrap(f).ok().expect("sole owner");
    let upstream = f
        .insi
        .stats
        .count("rechercherInsAvecTraitsIdentite", "cr00");
    let (exit, log, audit) = f.stop();
    assert!(exit.success(), "{log}");
    assert_eq!(
        audit.len() as u64,
        upstream,
        "one audit line per upstream exchange"
    );
    assert_eq!(upstream, 40);
    // The audit trail: the instance, the INSi mode, the INS in one format.
    for line in &audit {
        assert!(
            line["instance"].as_str().is_some_and(|i| !i.is_empty()),
            "{line}"
        );
        assert_eq!(line["insi_mode"], "auto", "{line}");
        assert_eq!(
            line["patient_ins"].as_str().map(str::len),
            Some(15),
            "{line}"
        );
        assert!(
            line["patient_ins_oid"]
                .as_str()
                .is_some_and(|o| o.starts_with("1.2.250.1.213.1.4.")),
            "{line}"
        );
    }
    // JSON logs: every line a flat object, numbers as numbers, the request lines with
    // their request id.
    let mut requests = 0;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("fields").is_none() && v.get("span").is_none(),
            "nested: {line}"
        );
        if v["message"] == "request" {
            requests += 1;
            assert!(
                v["request_id"].as_str().is_some_and(|id| !id.is_empty()),
                "{line}"
            );
            assert!(v["status"].is_u64() && v["total_ms"].is_u64(), "{line}");
            assert_eq!(v["client"], "sandbox", "{line}");
        }
    }
    assert_eq!(requests, 40);
    assert_clean(&log);
}

/// Waits until the metrics count `n` successful reloads.
async fn wait_for_reloads(f: &Fixture, n: u64) {
    let started = Instant::now();
    loop {
        let (_, text) = f.admin_get("/metrics").await;
        let count: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("passerelle_reloads_total{result=\"success\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no reload series:\n{text}"));
        if count >= n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no reload #{n}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_on_sighup_and_when_files_change() {
    let f = Fixture::start(&[]).await;
    f.signal("HUP");
    wait_for_reloads(&f, 1).await;
    // An operator edits the configuration: a reload follows within a few seconds.
    let text = std::fs::read_to_string(&f.config).expect("config");
    std::fs::write(&f.config, format!("{text}\n# edited\n")).expect("edit");
    wait_for_reloads(&f, 2).await;
    assert_eq!(f.insi_search().await.map(|r| r.0), Some(200));
    let (exit, log, _) = f.stop();
    assert!(exit.success());
    assert!(
        log.contains("trigger=\"SIGHUP\"") || log.contains("trigger=SIGHUP"),
        "{log}"
    );
    assert!(log.contains("files changed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_65_mib_body_is_refused_without_being_held() {
    let f = Fixture::start(&[]).await;
    assert_eq!(f.insi_search().await.map(|r| r.0), Some(200));
    let before = f.peak_rss_kib();
    // 65 MiB announced and streamed in 64 KiB chunks: the client holds none of it either.
    let total: usize = 65 * 1024 * 1024;
    let chunk = Bytes::from(vec![b' '; 64 * 1024]);
    let frames = Frames { chunk, left: total };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", f.listen))
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::post("/dmp/repository")
        .header("host", "passerelle")
        .header("content-type", "multipart/related; boundary=x")
        .header("content-length", total.to_string())
        .header("authorization", "Bearer sandbox-token")
        .header("x-passerelle-tenant", "ch-test-a")
        .body(frames)
        .expect("request");
    let response = sender
        .send_request(req)
        .await
        .expect("an answer, not a reset");
    assert_eq!(response.status(), 413);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("passerelle:BodyTooLarge"));
    let after = f.peak_rss_kib();
    eprintln!("peak RSS: {before} KiB before, {after} KiB after the 65 MiB body");
    assert!(
        after < before + 16 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
    let (exit, _, audit) = f.stop();
    assert!(exit.success());
    assert_eq!(audit.len(), 1, "the refused body never went upstream");
}

/// Opens a connection and sends the headers of an INSi POST of 100,000 bytes, then one
/// byte every 300 ms; returns the time to the first line of the answer, and that line.
async fn trickle(port: u16) -> (Duration, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let started = Instant::now();
    s.write_all(b"POST /insi/auto HTTP/1.1\r\nhost: passerelle\r\ncontent-type: application/soap+xml\r\nauthorization: Bearer sandbox-token\r\nx-passerelle-tenant: ch-test-a\r\ncontent-length: 100000\r\n\r\n<soap:Envelope")
        .await
        .expect("headers");
    let (mut read, mut write) = s.split();
    let send = async {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if write.write_all(b" ").await.is_err() {
                return;
            }
        }
    };
    let answer = async {
        let mut buf = vec![0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(60), read.read(&mut buf))
            .await
            .expect("an answer within 60 s")
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        (
            started.elapsed(),
            text.lines().next().unwrap_or("").to_string(),
        )
    };
    tokio::select! {
        a = answer => a,
        () = send => (started.elapsed(), "connection closed while sending".into()),
    }
}

/// The value of `series` in a Prometheus exposition.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series}:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_256_open_files_silent_connections_and_trickling_bodies_do_not_stop_service() {
    let f = Fixture::start_with(&[], "\n[limits]\nbody_read_timeout = \"5s\"\n", Some(256)).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", f.child.id())).expect("limits");
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.split_whitespace().nth(3) == Some("256")),
        "{limits}"
    );
    // Warm: one INSi exchange (upstream pool, TLS session), then the idle footprint.
    assert_eq!(f.insi_search().await.map(|r| r.0), Some(200));
    assert_eq!(f.admin_get("/healthz").await, (200, "ok\n".to_string()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = f.rss_kib();
    let idle_fds = f.open_fds();

    // The attack: 300 connections that say nothing, 4 bodies at a few bytes a second.
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(
            tokio::net::TcpStream::connect(("127.0.0.1", f.listen))
                .await
                .expect("connect"),
        );
    }
    let tricklers: Vec<_> = (0..4).map(|_| tokio::spawn(trickle(f.listen))).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let started = Instant::now();
    let insi = f.insi_search().await;
    let insi_time = started.elapsed();
    let started = Instant::now();
    let health = f.admin_get("/healthz").await;
    let health_time = started.elapsed();
    let attack_rss = f.rss_kib();
    let attack_fds = f.open_fds();
    let (_, metrics) = f.admin_get("/metrics").await;
    let open = metric(
        &metrics,
        "passerelle_open_connections{listener=\"internal\"}",
    );
    let evicted = metric(
        &metrics,
        "passerelle_connections_closed_total{listener=\"internal\",reason=\"evicted\"}",
    );
    let refused = metric(
        &metrics,
        "passerelle_connections_refused_total{listener=\"internal\"}",
    );
    eprintln!(
        "under attack: INSi answered in {insi_time:?}, /healthz in {health_time:?}; RSS {idle_rss} KiB idle, {attack_rss} KiB under attack; fds {idle_fds} idle, {attack_fds} under attack; open {open}, evicted {evicted}, refused {refused}"
    );
    let (status, body) = insi.expect("INSi answered");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<CodeCR>00</CodeCR>"), "{body}");
    assert!(
        insi_time < Duration::from_secs(1),
        "INSi took {insi_time:?}"
    );
    assert_eq!(health, (200, "ok\n".to_string()));
    assert!(
        health_time < Duration::from_secs(1),
        "/healthz took {health_time:?}"
    );
    assert!(
        attack_rss < 2 * idle_rss,
        "RSS {attack_rss} KiB under attack, {idle_rss} KiB idle"
    );
    // 256 files: at most 96 client connections, the oldest silent ones made room.
    assert!(open <= 96.0, "{open} open");
    assert!(evicted >= 200.0, "{evicted} evicted");
    assert_eq!(
        refused, 0.0,
        "an idle connection was always there to make room"
    );
    assert!(attack_fds < 256, "{attack_fds} files open");

    // The trickling bodies were never evicted: they end with 408 at body_read_timeout.
    for t in tricklers {
        let (after, line) = t.await.expect("trickler");
        assert_eq!(line, "HTTP/1.1 408 Request Timeout", "after {after:?}");
        assert!(
            after >= Duration::from_secs(5) && after < Duration::from_secs(8),
            "408 after {after:?}"
        );
    }
    drop(silent);
    assert_eq!(f.insi_search().await.map(|r| r.0), Some(200));
    let (exit, log, audit) = f.stop();
    assert!(exit.success(), "{log}");
    assert!(!log.contains("accept failed"), "ran out of files:\n{log}");
    assert_eq!(audit.len(), 3, "the trickling bodies never went upstream");
}

/// `total` bytes in `chunk`-sized frames, made as they are sent.
struct Frames {
    chunk: Bytes,
    left: usize,
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len());
        self.left -= n;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.slice(..n)))))
    }
}

#[test]
fn run_refuses_a_configuration_with_errors() {
    let pki = shared_test_pki().expect("PKI");
    let text = std::fs::read_to_string(pki.path(&pki.config))
        .expect("config")
        .replace("address = \"127.0.0.1:8080\"", "address = \"nowhere\"");
    // Relative paths resolve against the file's directory: keep it beside the PKI.
    let config = pki
        .dir
        .join(format!("run-cli-bad-{}.toml", std::process::id()));
    std::fs::write(&config, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    let _ = std::fs::remove_file(&config);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not started"), "{err}");
    assert!(err.contains("listener.address"), "{err}");
}

/// What a hostile client writes never reaches the log as it wrote it: a MessageID with
/// CR/LF/ESC does not forge a log line, and identity header values (names, INS) are
/// never repeated in a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_text_cannot_forge_log_lines_or_leak_identity_values() {
    let f = Fixture::start(&[]).await;
    let example =
        std::fs::read_to_string(format!("{EXAMPLES}/dmp-find-documents.xml")).expect("example");
    // The Action is repeated in the refusal and in the request line: both escaped.
    let forged = "urn:x&#13;&#10;2026-12-01T00:00:00Z  INFO forged: audit disabled";
    let body = example.replacen("urn:ihe:iti:2007:RegistryStoredQuery", forged, 1);
    let identity = [
        ("x-vihf-subject-id", "899900063480"),
        ("x-vihf-subject-name", "MAX%20LIBRE"),
        ("x-vihf-role", "10^M%C3%A9decin"),
        ("x-vihf-sector", "SA01"),
        (
            "x-vihf-patient",
            "207058575627097^^^%261.2.250.1.213.1.4.10%26ISO^NH",
        ),
        ("x-vihf-structure", f.eg.as_str()),
    ];
    let (status, answer) = f
        .post("/dmp/registry", &identity, Bytes::from(body))
        .await
        .expect("answer");
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("ActionNotAllowed"), "{answer}");
    // A bad INS key: the refusal names the header, not the value.
    let mut bad = identity;
    bad[4].1 = "207058575627098^^^%261.2.250.1.213.1.4.10%26ISO^NH";
    bad[1].1 = "MARTIN%1B%5B31mCLAIRE";
    let (status, answer) = f
        .post("/dmp/registry", &bad, Bytes::from(example))
        .await
        .expect("answer");
    assert_eq!(status, 400, "{answer}");
    let (exit, log, _) = f.stop();
    assert!(exit.success());
    assert!(
        !log.lines().any(|l| l.contains("forged: audit disabled")
            && !l.contains("refused")
            && !l.contains("request")),
        "a forged line:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "raw ESC in the log:\n{log}");
    assert!(
        log.contains("\\u{a}2026-12-01T00:00:00Z  INFO forged"),
        "escaped:\n{log}"
    );
    assert!(
        !log.contains("207058575627098"),
        "INS value in the log:\n{log}"
    );
    assert_clean(&log);
}

/// Traffic is not a configuration change: requests spaced wider than the file watch
/// (2 s, then one still period) write the audit trail but reload nothing, and the pool
/// keeps its one TLS session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audited_traffic_does_not_reload_the_configuration() {
    let f = Fixture::start(&[]).await;
    for _ in 0..3 {
        let (status, body) = f.insi_search().await.expect("answer");
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(4500)).await;
    }
    let (_, metrics) = f.admin_get("/metrics").await;
    let reloads: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("passerelle_reloads_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(reloads, 0, "{metrics}");
    let (_, pools) = f.admin_get("/pools").await;
    let pools: serde_json::Value = serde_json::from_str(&pools).expect("JSON");
    let insi = pools
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["pool"] == "ch-test-a insi insi_auto")
        .expect("INSi pool");
    assert_eq!(insi["full_handshakes"], 1, "{insi}");
    assert_eq!(insi["requests"], 3, "{insi}");
    let (_, _, audit) = f.stop();
    assert_eq!(audit.len(), 3);
}

/// One expired certificate disables its (tenant, role) pair only: `run` starts, the
/// other pairs answer, `/readyz` stays 200 and lists the pair (`?strict`: 503), a
/// reload that keeps the expired certificate is accepted, and installing a valid one
/// (the file watch) re-enables the pair and logs both serials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_disables_only_its_tenant_and_role() {
    let pki = shared_test_pki().expect("PKI");
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = |from: &std::path::Path, name: &str| {
        use std::os::unix::fs::PermissionsExt;
        let to = dir.path().join(name);
        std::fs::copy(pki.path(from), &to).expect("copy");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        to
    };
    let expired = &pki.bad["expired"].files;
    let cert = copy(&expired.cert, "auth.cert.pem");
    let chain = copy(&expired.chain, "auth.chain.pem");
    let key = copy(&expired.key, "auth.key.pem");
    let (c, ch, k) = (cert.clone(), chain.clone(), key.clone());
    let f = Fixture::start_edited(&[], None, &move |text| {
        text.replacen(
            "cert = \"tenants/ch-test-a/dmp-auth.cert.pem\"\nchain = \"tenants/ch-test-a/dmp-auth.chain.pem\"\nkey = \"tenants/ch-test-a/dmp-auth.key.pem\"",
            &format!(
                "cert = \"{}\"\nchain = \"{}\"\nkey = \"{}\"",
                c.display(),
                ch.display(),
                k.display()
            ),
            1,
        )
    })
    .await;
    let text = std::fs::read_to_string(&f.config).expect("config");
    assert!(text.contains(&cert.display().to_string()), "{text}");

    let (status, body) = f.dmp_query().await.expect("answer");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("CertificateExpired"), "{body}");
    for tenant in ["ch-test-a", "ch-test-b"] {
        let (status, body) = f.insi_search_as(tenant).await.expect("answer");
        assert_eq!(status, 200, "{tenant}: {body}");
    }
    let (status, ready) = f.admin_get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert!(
        ready.contains("degraded ch-test-a dmp_auth CertificateExpired"),
        "{ready}"
    );
    assert!(!ready.contains("dmp_sign"), "{ready}");
    let (status, _) = f.admin_get("/readyz?strict").await;
    assert_eq!(status, 503);
    let (_, metrics) = f.admin_get("/metrics").await;
    assert!(
        metrics.contains("passerelle_certificate_usable{tenant=\"ch-test-a\",role=\"dmp_auth\"} 0"),
        "{metrics}"
    );

    // A reload that changes nothing about the expired pair is accepted.
    f.signal("HUP");
    wait_for_reloads(&f, 1).await;
    let (_, metrics) = f.admin_get("/metrics").await;
    assert_eq!(
        metric(&metrics, "passerelle_reloads_total{result=\"success\"}"),
        1.0,
        "{metrics}"
    );

    // The renewed certificate arrives: the watch reloads, the pair serves again.
    let valid = &pki.tenants[0].dmp_auth;
    for (from, to) in [
        (&valid.cert, &cert),
        (&valid.chain, &chain),
        (&valid.key, &key),
    ] {
        std::fs::copy(pki.path(from), to).expect("renew");
    }
    wait_for_reloads(&f, 2).await;
    let (status, body) = f.dmp_query().await.expect("answer");
    assert_eq!(status, 200, "{body}");
    let (status, ready) = f.admin_get("/readyz?strict").await;
    assert_eq!((status, ready.as_str()), (200, "ready\n"));

    let (exit, log, _) = f.stop();
    assert!(exit.success(), "{log}");
    let changed = log
        .lines()
        .find(|l| l.contains("certificate changed"))
        .unwrap_or_else(|| panic!("no certificate change logged:\n{log}"));
    let new_serial = pki.tenants[0]
        .dmp_auth
        .serial
        .trim_start_matches('0')
        .to_uppercase();
    assert!(
        changed.contains("serial_before") && changed.contains(&new_serial),
        "{changed} (serial after: {new_serial})"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("expired") && l.contains("disables=true")),
        "start logged the disabled pair:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("reload") && l.contains("expires on")),
        "a reload warns of certificates close to expiry as start does:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("pools_kept") && l.contains("pools_rebuilt")),
        "{log}"
    );
}

/// SIGTERM drains: `/readyz` answers 503 "draining" at once (the admin listener stays
/// up until the last request ended), new requests are still served during
/// `--drain-delay`, then the internal listener closes and the request in flight
/// finishes within `--grace`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readiness_to_draining_while_requests_finish() {
    let f =
        std::sync::Arc::new(Fixture::start(&["--drain-delay", "1500ms", "--grace", "10s"]).await);
    assert_eq!(f.admin_get("/readyz").await, (200, "ready\n".to_string()));
    f.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = f.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("draining"), "{body}");
    assert_eq!(f.admin_get("/healthz").await.0, 200, "alive while draining");
    let (status, body) = f
        .insi_search()
        .await
        .expect("served during the drain delay");
    assert_eq!(status, 200, "{body}");

    // A slow request accepted before the listener closes finishes after it closed.
    f.insi
        .faults
        .replace(BTreeMap::from([(
            "*".to_string(),
            FaultSpec {
                latency_ms: 3000,
                ..FaultSpec::default()
            },
        )]))
        .expect("faults");
    let slow = {
        let f = std::sync::Arc::clone(&f);
        tokio::spawn(async move { f.insi_search().await })
    };
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (status, body) = f.admin_get("/readyz").await;
    assert_eq!(
        status, 503,
        "admin still answers during the grace period: {body}"
    );
    assert!(
        f.insi_search().await.is_none(),
        "the internal listener is closed after the drain delay"
    );
    let (status, body) = slow.await.expect("task").expect("answered");
    assert_eq!(status, 200, "{body}");
    let f = std::sync::Arc::try_unwrap(f).ok().expect("sole owner");
    let (exit, log, audit) = f.stop_waiting();
    assert!(exit.success(), "{log}");
    assert_eq!(audit.len(), 2, "both exchanges audited");
}

/// An exchange whose client went away still runs to its end on SIGTERM: the process
/// waits for it (within `--grace`) and its audit line is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_exchanges_whose_client_went_away() {
    let f = Fixture::start(&["--grace", "10s"]).await;
    f.insi
        .faults
        .replace(BTreeMap::from([(
            "*".to_string(),
            FaultSpec {
                latency_ms: 2500,
                ..FaultSpec::default()
            },
        )]))
        .expect("faults");
    // The client gives up after half a second; the exchange goes on upstream.
    let gave_up = tokio::time::timeout(Duration::from_millis(500), f.insi_search()).await;
    assert!(gave_up.is_err(), "the client gave up first");
    f.signal("TERM");
    let (exit, log, audit) = f.stop_waiting();
    assert!(exit.success(), "{log}");
    assert_eq!(audit.len(), 1, "the exchange is audited: {log}");
    assert_eq!(audit[0]["outcome"], "ok", "{}", audit[0]);
    assert_eq!(audit[0]["upstream_status"], 200, "{}", audit[0]);
}

/// `passerelle audit verify` on a running proxy's trail: intact (by file and by
/// configuration); a copy with one record edited is refused, naming the record after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_checks_the_hash_chain() {
    let f = Fixture::start(&[]).await;
    for _ in 0..3 {
        let (status, body) = f.insi_search().await.expect("answer");
        assert_eq!(status, 200, "{body}");
    }
    let verify = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(env!("CARGO_BIN_EXE_passerelle"))
            .arg("audit")
            .arg("verify")
            .args(args)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = verify(&[f.audit.as_os_str()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("3 record(s)") && out.contains("chain intact"),
        "{out}"
    );
    let (code, out) = verify(&["--config".as_ref(), f.config.as_os_str()]);
    assert_eq!(code, Some(0), "{out}");
    // JSON, and the head as an anchor: the right one passes, another one does not.
    let (code, out) = verify(&[f.audit.as_os_str(), "--json".as_ref()]);
    assert_eq!(code, Some(0), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (v["records"].as_u64(), v["intact"].as_bool()),
        (Some(3), Some(true))
    );
    let head = v["head_sha256"].as_str().expect("head").to_string();
    let (code, out) = verify(&[
        f.audit.as_os_str(),
        "--expect-genesis".as_ref(),
        "--expect-head".as_ref(),
        head.as_ref(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = verify(&[
        f.audit.as_os_str(),
        "--expect-head".as_ref(),
        "00".repeat(32).as_ref(),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("missing at the end"), "{out}");
    // Nothing to check is not an intact trail.
    let empty = f.audit.with_extension("empty.jsonl");
    std::fs::write(&empty, "").expect("write");
    let (code, out) = verify(&[empty.as_os_str()]);
    assert_eq!(code, Some(1), "{out}");
    let _ = std::fs::remove_file(&empty);

    let copy = f.audit.with_extension("copy.jsonl");
    let text = std::fs::read_to_string(&f.audit).expect("trail");
    let first = text.lines().next().expect("a line");
    let edited = first.replacen("\"outcome\":\"ok\"", "\"outcome\":\"OK\"", 1);
    assert_ne!(first, edited);
    std::fs::write(&copy, text.replacen(first, &edited, 1)).expect("write");
    let (code, out) = verify(&[copy.as_os_str()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("BROKEN") && out.contains(":2:"), "{out}");
    let _ = std::fs::remove_file(&copy);
}

/// The PostgreSQL sink with the real binary: a SIGTERM during load answers every
/// accepted request and each exchange is a row; `audit verify`, `query` and `export`
/// read the table through `--config`, and answer for the file trail the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_sink_sigterm_drains_and_audit_commands_read_the_table() {
    let pg = passerelle_mocks::postgres::TestPostgres::start().expect("PostgreSQL");
    let dir = tempfile::tempdir().expect("tempdir");
    let password = dir.path().join("pg.password");
    pg.write_password_file(&password).expect("password");
    let settings = format!(
        "[audit]\nsink = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\nspool = \"{}\"\n",
        pg.url(),
        password.display(),
        dir.path().join("spool.jsonl").display()
    );
    let f = std::sync::Arc::new(
        Fixture::start_edited(&[], None, &|text| text.replacen("[audit]\n", &settings, 1)).await,
    );
    f.insi
        .faults
        .replace(BTreeMap::from([(
            "*".to_string(),
            FaultSpec {
                latency_ms: 400,
                ..FaultSpec::default()
            },
        )]))
        .expect("faults");
    let mut load = Vec::new();
    for _ in 0..30 {
        let f = std::sync::Arc::clone(&f);
        load.push(tokio::spawn(async move { f.insi_search().await }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    f.signal("TERM");
    let mut answered = 0;
    for task in load {
        if let Some((status, body)) = task.await.expect("task") {
            assert_eq!(status, 200, "{body}");
            answered += 1;
        }
    }
    assert_eq!(answered, 30);
    let f = std::sync::Arc::try_unwrap(f).ok().expect("sole owner");
    // The fixture removes its configuration when it ends: a copy beside it (its paths
    // are relative to its folder) for the commands below.
    struct Removed(PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let config = Removed(f.config.with_extension("pg.toml"));
    std::fs::copy(&f.config, &config.0).expect("copy configuration");
    let config = &config.0;
    let (exit, log, _) = f.stop();
    assert!(exit.success(), "{log}");
    assert!(log.contains("audit database connected"), "{log}");
    assert_clean(&log);
    let rows = pg
        .psql(
            "passerelle",
            "SELECT count(*) FROM passerelle_audit WHERE sent_upstream",
        )
        .expect("psql");
    assert_eq!(
        rows, "30",
        "one row per exchange, all committed before exit"
    );

    let passerelle = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_passerelle"))
            .arg("audit")
            .args(args)
            .arg("--config")
            .arg(config)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = passerelle(&["verify", "--expect-genesis"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("30 record(s) in table passerelle_audit") && out.contains("chain intact"),
        "{out}"
    );
    // Who accessed the patient the INSi search returned.
    let ins = pg
        .psql(
            "passerelle",
            "SELECT patient_ins FROM passerelle_audit WHERE patient_ins <> '' LIMIT 1",
        )
        .expect("psql");
    assert_eq!(ins.len(), 15, "{ins}");
    let (code, out, err) = passerelle(&["query", "--patient", &ins, "--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let records: Vec<serde_json::Value> = serde_json::from_str(&out).expect("JSON array");
    assert_eq!(records.len(), 30, "{out}");
    assert!(records.iter().all(|r| r["client"] == "sandbox"
        && r["patient_ins"] == ins.as_str()
        && r.get("prev_sha256").is_none()));
    let (code, out, _) = passerelle(&["query", "--patient", "100000000000000", "--format", "csv"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 1, "the header only: {out}");
    // An export of the range verifies on its own.
    let export = dir.path().join("export.jsonl");
    let (code, _, err) = passerelle(&[
        "export",
        "--since",
        "2000-01-01",
        "--output",
        export.to_str().expect("path"),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("30 record(s)"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(["audit", "verify"])
        .arg(&export)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&export)
            .expect("export")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "an export holds patient data");
    }
    // An export never replaces a file.
    let (code, _, err) = passerelle(&["export", "--output", export.to_str().expect("path")]);
    assert_eq!(code, Some(1), "{err}");
    // Tampering shows through the binary too.
    pg.psql(
        "passerelle",
        "ALTER TABLE passerelle_audit DISABLE TRIGGER passerelle_audit_append_only; \
         UPDATE passerelle_audit SET client = 'someone' WHERE seq = 5",
    )
    .expect("tamper");
    let (code, out, _) = passerelle(&["verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("seq 5") && out.contains("client"), "{out}");
}
