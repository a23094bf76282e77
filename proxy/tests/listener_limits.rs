//! The internal listener's limits over real loopback sockets: a connection that says
//! nothing (plain, h2c after its preface, TLS) is closed after `header_read_timeout`, an
//! idle HTTP/1.1 or HTTP/2 connection after `idle_timeout`; at `max_connections` the
//! longest-idle connection makes room, and when none is idle the new one is refused and
//! counted; a body that trickles gets 408 `BodyTimeout` with nothing sent upstream; the
//! memory budget of bodies answers 503 `Overloaded`. Every wait is bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use passerelle_certs_test::{ConfigAddresses, shared_test_pki};
use passerelle_mocks::faults::Faults;
use passerelle_mocks::server::Running;
use passerelle_proxy::{Proxy, ProxyState, RunningProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
/// The longest any single wait of these tests may take.
const BOUND: Duration = Duration::from_secs(10);

/// Mock INSi and an in-process proxy whose configuration got `keys` ((table, key, value)).
struct Fixture {
    insi: Running,
    proxy: Option<RunningProxy>,
    config: std::path::PathBuf,
    audit_dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_dir_all(&self.audit_dir);
    }
}

impl Fixture {
    async fn start(keys: &[(&str, &str, toml::Value)]) -> Self {
        let pki = shared_test_pki().expect("PKI");
        let any = "127.0.0.1:0".parse().expect("address");
        let spec =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/insi/xsd");
        let insi = passerelle_mocks::start_insi(&pki, &spec, any, any, Faults::default())
            .await
            .expect("mock INSi");
        let run = uuid::Uuid::new_v4().simple().to_string();
        let audit_dir = std::env::temp_dir().join(format!("passerelle-limits-{run}"));
        let config = pki
            .write_config(
                &format!("limits-{run}.toml"),
                &ConfigAddresses {
                    listener: "127.0.0.1:0".into(),
                    admin: "127.0.0.1:0".into(),
                    // No DMP in these tests: nothing listens there.
                    dmp_port: 9,
                    insi_port: insi.address.port(),
                    echo_port: None,
                    audit: Some(audit_dir.join("audit.jsonl")),
                },
            )
            .expect("configuration");
        let mut doc: toml::Table = std::fs::read_to_string(&config)
            .expect("read")
            .parse()
            .expect("TOML");
        for (table, key, value) in keys {
            let t = doc
                .entry(table.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = t {
                t.insert(key.to_string(), value.clone());
            }
        }
        std::fs::write(&config, toml::to_string(&doc).expect("TOML")).expect("write");
        let loaded = passerelle_config::load(&config).expect("valid configuration");
        let proxy = Arc::new(Proxy::new(ProxyState::new(loaded).expect("state")).expect("proxy"));
        let listener = tokio::net::TcpListener::bind(any).await.expect("bind");
        let admin = tokio::net::TcpListener::bind(any).await.expect("bind");
        let proxy =
            passerelle_proxy::start(proxy, listener, admin, Duration::from_secs(2)).expect("start");
        Self {
            insi,
            proxy: Some(proxy),
            config,
            audit_dir,
        }
    }

    fn proxy(&self) -> &RunningProxy {
        self.proxy.as_ref().expect("running")
    }

    async fn admin_get(&self, path: &str) -> (u16, String) {
        let tcp = TcpStream::connect(self.proxy().admin_address)
            .await
            .expect("connect admin");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", "admin")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = tokio::time::timeout(BOUND, sender.send_request(req))
            .await
            .expect("admin answers in time")
            .expect("response");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// The value of one series of the admin `/metrics`.
    async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series}:\n{text}"))
    }

    /// Waits until `series` reaches `value`.
    async fn wait_metric(&self, series: &str, value: f64) {
        self.wait_metric_until(series, |v| v >= value).await;
    }

    /// Waits until the value of `series` satisfies `ok`.
    async fn wait_metric_until(&self, series: &str, ok: impl Fn(f64) -> bool) {
        let started = Instant::now();
        loop {
            let v = self.metric(series).await;
            if ok(v) {
                return;
            }
            assert!(started.elapsed() < BOUND, "{series} stays at {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A complete INSi search on a new HTTP/1.1 connection, as the sandbox client.
    async fn insi_search(&self) -> (u16, String) {
        let tcp = TcpStream::connect(self.proxy().address)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let response = tokio::time::timeout(BOUND, sender.send_request(insi_request()))
            .await
            .expect("answered in time")
            .expect("response");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

fn insi_request() -> http::Request<Full<Bytes>> {
    let body =
        std::fs::read(format!("{EXAMPLES}/insi-rechercher-traits-minimal.xml")).expect("example");
    http::Request::post("/insi/auto")
        .header("host", "passerelle")
        .header("content-type", "application/soap+xml")
        .header("authorization", "Bearer sandbox-token")
        .header("x-passerelle-tenant", "ch-test-a")
        .body(Full::new(Bytes::from(body)))
        .expect("request")
}

fn duration(s: &str) -> toml::Value {
    toml::Value::String(s.into())
}

/// Reads until the peer closes (EOF or reset); the time it took and what was read.
async fn until_closed(stream: &mut TcpStream) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(BOUND, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (started.elapsed(), seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!("still open after {BOUND:?}"),
        }
    }
}

/// Reads one HTTP/1.1 answer (head and Content-Length body) from `stream`.
async fn read_answer(stream: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return text;
            }
        }
        match tokio::time::timeout(BOUND, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            other => panic!("no complete answer ({other:?}): {text}"),
        }
    }
}

/// The types of the HTTP/2 frames in `bytes`.
fn h2_frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let length =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    types
}

/// Whether the peer has closed `stream` (without waiting).
async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_header_read_timeout_also_h2c_and_tls() {
    let pki = shared_test_pki().expect("PKI");
    let mut tls = toml::Table::new();
    tls.insert(
        "cert".into(),
        pki.path(&pki.server.chain).display().to_string().into(),
    );
    tls.insert(
        "key".into(),
        pki.path(&pki.server.key).display().to_string().into(),
    );
    let keys = [
        ("listener", "header_read_timeout", duration("1s")),
        ("listener", "idle_timeout", duration("30s")),
    ];
    let plain = Fixture::start(&keys).await;
    // Nothing at all.
    let mut silent = TcpStream::connect(plain.proxy().address)
        .await
        .expect("connect");
    // h2c: the preface and SETTINGS, then no request.
    let mut h2 = TcpStream::connect(plain.proxy().address)
        .await
        .expect("connect");
    h2.write_all(H2_PREFACE).await.expect("preface");
    let (after, _) = until_closed(&mut silent).await;
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "silent connection closed after {after:?}"
    );
    let (after, seen) = until_closed(&mut h2).await;
    assert!(
        after < Duration::from_secs(4),
        "h2c connection closed after {after:?}"
    );
    // The server's SETTINGS (4), then a GOAWAY (7) before it closed.
    let frames = h2_frame_types(&seen);
    assert_eq!(frames.first(), Some(&4), "{frames:?}");
    assert!(frames.contains(&7), "a GOAWAY before closing: {frames:?}");
    plain
        .wait_metric(
            "passerelle_connections_closed_total{listener=\"internal\",reason=\"silent\"}",
            2.0,
        )
        .await;

    let mut keys = keys.to_vec();
    keys.push(("listener", "tls", toml::Value::Table(tls)));
    let tls = Fixture::start(&keys).await;
    // TCP open, no ClientHello.
    let mut silent = TcpStream::connect(tls.proxy().address)
        .await
        .expect("connect");
    let (after, _) = until_closed(&mut silent).await;
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "TLS connection without a handshake closed after {after:?}"
    );
    // The handshake done, then no request.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(
            openssl::x509::X509::from_pem(
                &std::fs::read(pki.path(&pki.ca.root)).expect("root file"),
            )
            .expect("root")
            .to_der()
            .expect("DER"),
        ))
        .expect("add root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(tls.proxy().address)
        .await
        .expect("connect");
    let started = Instant::now();
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("handshake");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(BOUND, stream.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "closed, not data: {closed:?}"
    );
    let after = started.elapsed();
    assert!(
        after < Duration::from_secs(3),
        "TLS connection without a request closed after {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http1_and_h2c_connections_are_closed_after_the_idle_timeout() {
    let f = Fixture::start(&[
        ("listener", "header_read_timeout", duration("10s")),
        ("listener", "idle_timeout", duration("1s")),
    ])
    .await;
    // HTTP/1.1 keep-alive: one request, then nothing.
    let tcp = TcpStream::connect(f.proxy().address)
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    let conn = tokio::spawn(conn);
    let response = sender.send_request(insi_request()).await.expect("response");
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.expect("body");
    let answered = Instant::now();
    tokio::time::timeout(BOUND, conn)
        .await
        .expect("closed by the proxy")
        .expect("task")
        .expect("clean close");
    let after = answered.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "idle HTTP/1.1 connection closed after {after:?}"
    );

    // h2c (prior knowledge): one request, then nothing.
    let tcp = TcpStream::connect(f.proxy().address)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let response = sender.send_request(insi_request()).await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    response.into_body().collect().await.expect("body");
    let answered = Instant::now();
    tokio::time::timeout(BOUND, conn)
        .await
        .expect("closed by the proxy (GOAWAY)")
        .expect("task")
        .expect("clean close");
    let after = answered.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "idle h2c connection closed after {after:?}"
    );
    assert!(sender.is_closed());
    f.wait_metric(
        "passerelle_connections_closed_total{listener=\"internal\",reason=\"idle\"}",
        2.0,
    )
    .await;
}

/// Sends the headers of an INSi POST declaring `length` bytes, and `first` of them.
async fn start_post(f: &Fixture, length: usize, first: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(f.proxy().address)
        .await
        .expect("connect");
    let head = format!(
        "POST /insi/auto HTTP/1.1\r\nhost: passerelle\r\ncontent-type: application/soap+xml\r\nauthorization: Bearer sandbox-token\r\nx-passerelle-tenant: ch-test-a\r\ncontent-length: {length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("headers");
    s.write_all(first).await.expect("first bytes");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_gets_408_body_timeout_and_nothing_goes_upstream() {
    let f = Fixture::start(&[("limits", "body_read_timeout", duration("1s"))]).await;
    let mut s = start_post(&f, 2000, b"<soap:Envelope").await;
    let started = Instant::now();
    // A few bytes a second, while reading what comes back.
    let (mut read, mut write) = s.split();
    let trickle = async {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if write.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let answer = async {
        let text = read_answer(&mut read).await;
        (started.elapsed(), text)
    };
    let ((after, text), ()) = tokio::select! {
        a = answer => (a, ()),
        () = trickle => panic!("no answer while trickling"),
    };
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("passerelle:BodyTimeout"), "{text}");
    assert!(
        text.contains("<passerelle:SentUpstream>false</passerelle:SentUpstream>"),
        "{text}"
    );
    assert!(text.contains("limits.body_read_timeout"), "{text}");
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "answered after {after:?}"
    );
    assert!(
        f.insi.stats.recent_bodies().is_empty(),
        "nothing was sent upstream"
    );
    let (_, metrics) = f.admin_get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("passerelle_requests_total")
                && l.contains("outcome=\"BodyTimeout\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    assert_eq!(f.metric("passerelle_inflight_body_bytes").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_of_bodies_answers_overloaded() {
    let f = Fixture::start(&[
        ("limits", "max_body_bytes", toml::Value::Integer(65536)),
        (
            "limits",
            "max_inflight_body_bytes",
            toml::Value::Integer(100_000),
        ),
    ])
    .await;
    // Holds 65,536 bytes of the budget while its body is on its way.
    let mut holder = start_post(&f, 65536, b"<soap").await;
    f.wait_metric("passerelle_inflight_body_bytes", 65536.0)
        .await;
    // A second one of the same size: refused at once, before its body is read.
    let mut second = start_post(&f, 65536, b"").await;
    let text = read_answer(&mut second).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.to_lowercase().contains("retry-after: 1"), "{text}");
    assert!(text.contains("passerelle:Overloaded"), "{text}");
    assert!(text.contains("limits.max_inflight_body_bytes"), "{text}");
    // A small request still fits.
    assert_eq!(f.insi_search().await.0, 200);
    // The holder goes away: its bytes are given back.
    holder.shutdown().await.expect("shutdown");
    drop(holder);
    f.wait_metric_until("passerelle_inflight_body_bytes", |v| v == 0.0)
        .await;
    assert_eq!(f.insi.stats.recent_bodies().len(), 1, "only the small one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_longest_idle_connection_makes_room_else_the_new_one_is_refused() {
    let f = Fixture::start(&[
        ("listener", "max_connections", toml::Value::Integer(3)),
        ("limits", "body_read_timeout", duration("30s")),
    ])
    .await;
    // Three silent connections fill the cap, oldest first.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(
            TcpStream::connect(f.proxy().address)
                .await
                .expect("connect"),
        );
        f.wait_metric(
            "passerelle_open_connections{listener=\"internal\"}",
            silent.len() as f64,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A real client still gets served: the oldest silent one made room.
    let started = Instant::now();
    assert_eq!(f.insi_search().await.0, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(is_closed(&mut silent[0]).await, "the oldest was evicted");
    assert!(!is_closed(&mut silent[2]).await, "the newest is still open");
    f.wait_metric(
        "passerelle_connections_closed_total{listener=\"internal\",reason=\"evicted\"}",
        1.0,
    )
    .await;
    drop(silent);
    f.wait_metric_until("passerelle_open_connections{listener=\"internal\"}", |v| {
        v == 0.0
    })
    .await;

    // Three requests in flight (bodies on their way): nothing is idle.
    let mut busy = Vec::new();
    for _ in 0..3 {
        busy.push(start_post(&f, 1000, b"<soap").await);
    }
    f.wait_metric("passerelle_in_flight_requests", 3.0).await;
    let mut refused = TcpStream::connect(f.proxy().address)
        .await
        .expect("the kernel accepts");
    let (after, seen) = until_closed(&mut refused).await;
    assert!(seen.is_empty(), "closed without an answer");
    assert!(after < Duration::from_secs(2), "closed at once: {after:?}");
    f.wait_metric(
        "passerelle_connections_refused_total{listener=\"internal\"}",
        1.0,
    )
    .await;
    // The admin listener has its own budget.
    assert_eq!(f.admin_get("/healthz").await, (200, "ok\n".into()));
    for s in &mut busy {
        assert!(!is_closed(s).await, "requests in flight are never evicted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_stays_usable_under_a_flood_of_its_own() {
    let f = Fixture::start(&[]).await;
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(
            TcpStream::connect(f.proxy().admin_address)
                .await
                .expect("connect"),
        );
    }
    let started = Instant::now();
    assert_eq!(f.admin_get("/healthz").await, (200, "ok\n".into()));
    assert!(started.elapsed() < Duration::from_secs(1));
    let open = f
        .metric("passerelle_open_connections{listener=\"admin\"}")
        .await;
    assert!(
        open <= passerelle_proxy::listener::ADMIN_MAX_CONNECTIONS as f64,
        "{open}"
    );
    assert!(
        f.metric("passerelle_connections_closed_total{listener=\"admin\",reason=\"evicted\"}")
            .await
            > 0.0
    );
}
