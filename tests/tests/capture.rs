//! The homologation capture (`[capture]`) end to end: files written only for the listed
//! client, only until `until`, readable only by their owner; enabled by a reload, never
//! by a request header; its start and stop logged.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use passerelle_e2e::{Harness, Options, Reply, SOAP_CT, messages};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// SHA-256 of the sandbox token (client A, `sih-a`).
const TOKEN_A_SHA256: &str = "24b9cd79145e7e5dbc8a202c85b29f5c13a1b7a9bf060a5d9dfa6c1e756c0a92";
/// Client B's token, and its SHA-256.
const TOKEN_B: &str = "token-b";
const TOKEN_B_SHA256: &str = "49e2bb7eab54cf09b409ffafd3fa8a8a955a60eb972faacaefbed3dbd3207132";

/// Headers a client might hope turn a capture on: none does.
const PLAUSIBLE: [(&str, &str); 4] = [
    ("x-passerelle-capture", "1"),
    ("x-capture", "on"),
    ("x-debug", "capture"),
    ("x-passerelle-trace", "true"),
];

/// Every log line of this test binary (a global subscriber; each test looks for lines
/// that name its own capture folder).
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut logs) = LOGS.lock() {
            logs.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_writer(|| Sink)
            .with_ansi(false)
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .try_init();
    });
}

/// The log lines holding every one of `words`.
fn log_lines(words: &[&str]) -> Vec<String> {
    let logs = LOGS.lock().map(|l| l.clone()).unwrap_or_default();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_string)
        .collect()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("RFC 3339")
}

/// Two clients with access to everything: A (the sandbox token) and B.
fn two_clients() -> toml::Value {
    let client = |name: &str, token: &str| {
        json!({
            "name": name,
            "source_cidrs": ["127.0.0.0/8", "::1/128"],
            "token_sha256": token,
            "tenants": ["ch-test-a", "ch-test-b"],
            "services": ["dmp", "insi", "svc"],
        })
    };
    let v = json!([
        client("sih-a", TOKEN_A_SHA256),
        client("sih-b", TOKEN_B_SHA256)
    ]);
    toml::Value::try_from(v).expect("TOML")
}

/// Starts the harness with both clients and, when `until` is given, a capture of A.
async fn start(dir: &Path, until: Option<OffsetDateTime>) -> Harness {
    capture_logs();
    let mut keys = Vec::new();
    if let Some(until) = until {
        keys = vec![
            ("capture", "clients", toml::Value::from(vec!["sih-a"])),
            ("capture", "until", rfc3339(until).into()),
            ("capture", "dir", dir.display().to_string().into()),
        ];
    }
    Harness::start_with(Options {
        clients: Some(two_clients()),
        keys,
        ..Options::default()
    })
    .await
}

/// Rewrites the configuration with `[capture]` (A until `until`), or without, and
/// reloads it as SIGHUP does.
fn reload_with(h: &Harness, dir: &Path, until: Option<OffsetDateTime>) {
    let text = std::fs::read_to_string(&h.config_path).expect("configuration");
    let mut doc: toml::Table = text.parse().expect("TOML");
    doc.remove("capture");
    if let Some(until) = until {
        let mut capture = toml::Table::new();
        capture.insert("clients".into(), vec!["sih-a"].into());
        capture.insert("until".into(), rfc3339(until).into());
        capture.insert("dir".into(), dir.display().to_string().into());
        doc.insert("capture".into(), toml::Value::Table(capture));
    }
    std::fs::write(&h.config_path, toml::to_string(&doc).expect("TOML")).expect("write");
    h.proxy().proxy.reload().expect("reload accepted");
}

/// Every file under `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn request_id(reply: &Reply) -> String {
    reply
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("X-Request-Id")
        .to_string()
}

/// The capture files of `reply`'s request: (request, response).
fn captured(dir: &Path, reply: &Reply) -> (String, Vec<u8>) {
    let day = dir.join(OffsetDateTime::now_utc().date().to_string());
    let id = request_id(reply);
    let request = std::fs::read(day.join(format!("{id}.request.http")))
        .unwrap_or_else(|e| panic!("request of {id} captured: {e}; {:?}", files(dir)));
    let response = std::fs::read(day.join(format!("{id}.response.http")))
        .unwrap_or_else(|e| panic!("response of {id} captured: {e}"));
    (String::from_utf8_lossy(&request).into_owned(), response)
}

/// Client B's DMP query, with headers that look like they could turn a capture on.
async fn dmp_query_b(h: &Harness) -> Reply {
    let vihf = messages::vihf_headers(&h.eg(0));
    let bearer = format!("Bearer {TOKEN_B}");
    let mut headers: Vec<(&str, &str)> = vihf.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.push(("x-passerelle-tenant", "ch-test-a"));
    headers.push(("authorization", &bearer));
    headers.extend(PLAUSIBLE);
    h.post(
        "/dmp/registry",
        &headers,
        SOAP_CT,
        messages::find_documents(),
    )
    .await
}

/// Client B's INSi search, with the same headers.
async fn insi_search_b(h: &Harness) -> Reply {
    let bearer = format!("Bearer {TOKEN_B}");
    let mut headers = vec![
        ("x-passerelle-tenant", "ch-test-a"),
        ("authorization", bearer.as_str()),
    ];
    headers.extend(PLAUSIBLE);
    h.post(
        "/insi/auto",
        &headers,
        SOAP_CT,
        messages::insi_search_bare("MARTIN", "CLAIRE", "F", "2007-05-14"),
    )
    .await
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing"))
}

#[tokio::test]
async fn only_the_listed_client_is_captured_and_only_its_owner_reads_the_files() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("capture");
    let h = start(
        &dir,
        Some(OffsetDateTime::now_utc() + time::Duration::hours(1)),
    )
    .await;

    // Client A: its DMP query and INSi search, each request as sent and its answer.
    let dmp = h.dmp_query_a().await;
    assert_eq!(dmp.status, 200, "{}", dmp.text());
    let (request, response) = captured(&dir, &dmp);
    assert!(request.starts_with("POST "), "{request}");
    assert!(request.contains("\r\nhost: localhost:"), "{request}");
    assert!(
        request.contains("<saml2:Assertion"),
        "the VIHF signed by Passerelle"
    );
    // The signer writes XML-DSig in the default namespace (no `ds:` prefix).
    assert!(
        request.contains("<SignatureValue>"),
        "the VIHF's signature: {request}"
    );
    assert!(request.contains("<wsa:MessageID"), "WS-Addressing as sent");
    let lower = request.to_ascii_lowercase();
    assert!(!lower.contains("authorization"), "no credential header");
    assert!(!request.contains("sandbox-token"));
    assert!(
        !lower.contains("x-vihf-"),
        "the internal system's headers stay out"
    );
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(response.ends_with(&dmp.body), "the answer as received");

    let insi = h.insi_search_a().await;
    assert_eq!(insi.status, 200, "{}", insi.text());
    let (request, response) = captured(&dir, &insi);
    assert!(
        request.contains("rechercherInsAvecTraitsIdentite"),
        "{request}"
    );
    assert!(
        request.contains("ContexteLPS"),
        "the contexts Passerelle added"
    );
    assert!(response.ends_with(&insi.body));
    assert!(String::from_utf8_lossy(&response).contains("NumIdentifiant"));

    // The JSON API and a [[services]] route leave through the same place.
    let api = h
        .post_json(
            "/api/insi/search",
            "ch-test-a",
            &json!({"birth_name": "MARTIN", "first_names": ["CLAIRE"], "sex": "F",
                    "birth_date": "2007-05-14", "mode": "auto"}),
        )
        .await;
    assert_eq!(api.status, 200, "{}", api.text());
    let (request, _) = captured(&dir, &api);
    assert!(request.contains("rechercherInsAvecTraitsIdentite"));
    let svc = h
        .send(
            "POST",
            "/svc/echo/messages",
            &[("x-passerelle-tenant", "ch-test-a")],
            Some("application/json"),
            r#"{"to":"x"}"#,
        )
        .await;
    assert_eq!(svc.status, 200, "{}", svc.text());
    let (request, response) = captured(&dir, &svc);
    assert!(request.ends_with(r#"{"to":"x"}"#), "{request}");
    assert!(response.ends_with(&svc.body));
    let before_b = files(&dir);
    assert_eq!(before_b.len(), 8, "{before_b:?}");

    // Client B, with headers that might look like switches: nothing.
    assert_eq!(dmp_query_b(&h).await.status, 200);
    assert_eq!(insi_search_b(&h).await.status, 200);
    assert_eq!(files(&dir), before_b, "nothing of client B");

    // Folders 0700, files 0600.
    assert_eq!(mode(&dir), 0o700);
    for file in &before_b {
        assert_eq!(mode(file), 0o600, "{}", file.display());
        assert_eq!(mode(file.parent().expect("day")), 0o700);
    }
    let (_, metrics) = h.admin("/metrics").await;
    assert_eq!(metric(&metrics, "passerelle_capture_files_total"), 8.0);
    assert_eq!(metric(&metrics, "passerelle_capture_errors_total"), 0.0);
    assert_eq!(metric(&metrics, "passerelle_capture_active"), 1.0);
    let shown = dir.display().to_string();
    assert_eq!(
        log_lines(&["capture started", &shown, "sih-a"]).len(),
        1,
        "the start is logged once"
    );
}

#[tokio::test]
async fn no_header_turns_a_capture_on() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("capture");
    let h = start(&dir, None).await;
    let headers: Vec<(&str, &str)> = [("x-passerelle-tenant", "ch-test-a")]
        .into_iter()
        .chain(PLAUSIBLE)
        .collect();
    let reply = h
        .post(
            "/insi/auto",
            &headers,
            SOAP_CT,
            messages::insi_search_bare("MARTIN", "CLAIRE", "F", "2007-05-14"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(dmp_query_b(&h).await.status, 200);
    assert!(!dir.exists(), "{:?}", files(&dir));
    // Nor next to the configuration, the default folder.
    let default = h.config_path.parent().expect("dir").join("capture");
    assert!(
        files(&default)
            .iter()
            .all(|f| !f.display().to_string().contains(&request_id(&reply)))
    );
}

#[tokio::test]
async fn a_capture_runs_only_between_its_reload_and_its_until() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("capture");
    let shown = dir.display().to_string();

    // `until` already past: the configuration loads, nothing is captured.
    let h = start(
        &dir,
        Some(OffsetDateTime::now_utc() - time::Duration::hours(1)),
    )
    .await;
    assert_eq!(h.dmp_query_a().await.status, 200);
    assert!(files(&dir).is_empty(), "{:?}", files(&dir));
    let (_, metrics) = h.admin("/metrics").await;
    assert_eq!(metric(&metrics, "passerelle_capture_active"), 0.0);
    assert!(log_lines(&["capture started", &shown]).is_empty());

    // Enabled by reload, for a few seconds.
    let until = OffsetDateTime::now_utc() + time::Duration::seconds(4);
    reload_with(&h, &dir, Some(until));
    assert_eq!(log_lines(&["capture started", &shown]).len(), 1);
    let reply = h.dmp_query_a().await;
    assert_eq!(reply.status, 200);
    let (request, _) = captured(&dir, &reply);
    assert!(request.contains("<saml2:Assertion"));
    assert_eq!(files(&dir).len(), 2);

    // Past `until`: it stops by itself, and says so once.
    let wait = until - OffsetDateTime::now_utc() + time::Duration::milliseconds(300);
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    let reply = h.dmp_query_a().await;
    assert_eq!(reply.status, 200);
    assert_eq!(h.insi_search_a().await.status, 200);
    assert_eq!(files(&dir).len(), 2, "nothing after until");
    let mut stopped = Vec::new();
    for _ in 0..50 {
        stopped = log_lines(&["capture stopped (until reached)", &shown]);
        if !stopped.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stopped.len(), 1, "the stop is logged once");
    let (_, metrics) = h.admin("/metrics").await;
    assert_eq!(metric(&metrics, "passerelle_capture_active"), 0.0);

    // Enabled again, then the table removed by a reload: stopped, and logged.
    reload_with(
        &h,
        &dir,
        Some(OffsetDateTime::now_utc() + time::Duration::hours(1)),
    );
    assert_eq!(log_lines(&["capture started", &shown]).len(), 2);
    reload_with(&h, &dir, None);
    let removed = log_lines(&["capture stopped", "removed by reload", &shown]);
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(h.dmp_query_a().await.status, 200);
    assert_eq!(files(&dir).len(), 2, "nothing once removed");
}

#[tokio::test]
async fn a_capture_that_cannot_be_written_never_fails_the_request() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("capture");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let h = start(
        &dir,
        Some(OffsetDateTime::now_utc() + time::Duration::hours(1)),
    )
    .await;
    // Someone opens the folder to everyone after the start: nothing goes there.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let reply = h.dmp_query_a().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(h.insi_search_a().await.status, 200);
    assert!(files(&dir).is_empty(), "{:?}", files(&dir));
    let (_, metrics) = h.admin("/metrics").await;
    assert_eq!(metric(&metrics, "passerelle_capture_errors_total"), 2.0);
    assert_eq!(metric(&metrics, "passerelle_capture_files_total"), 0.0);
    let shown = dir.display().to_string();
    assert_eq!(
        log_lines(&[
            "capture write failed",
            &shown,
            "writable by group or others"
        ])
        .len(),
        2
    );
}

/// The head's length and the bytes of the answer file at `path`, once its body holds
/// `body_len` bytes: a streamed answer's file is complete shortly after its last chunk
/// went to the client.
async fn read_when_complete(path: &Path, body_len: usize) -> (usize, Vec<u8>) {
    for _ in 0..50 {
        if let Ok(bytes) = std::fs::read(path)
            && let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n")
            && bytes.len() >= end + 4 + body_len
        {
            return (end + 4, bytes);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never held {body_len} bytes of body", path.display());
}

#[tokio::test]
async fn a_submission_is_captured_as_signed_and_a_streamed_answer_whole() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("capture");
    let h = start(
        &dir,
        Some(OffsetDateTime::now_utc() + time::Duration::hours(1)),
    )
    .await;
    let vihf = messages::vihf_headers(&h.eg(0));
    let mut headers: Vec<(&str, &str)> = vihf.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.push(("x-passerelle-tenant", "ch-test-a"));

    // ITI-41 with a document over the buffered answer size (1 MiB), so that its
    // retrieval is streamed back.
    let mut docs = messages::three_documents("cap41");
    docs[1].content = (0..1_500_000u32).map(|i| (i % 253) as u8).collect();
    let (ct, body) = messages::submission("1.2.250.1.999.cap41.100", &docs, &h.eg(0));
    let reply = h.post("/dmp/repository", &headers, &ct, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let day = dir.join(OffsetDateTime::now_utc().date().to_string());
    let id = request_id(&reply);
    let request = std::fs::read(day.join(format!("{id}.request.http"))).expect("captured");
    // Exactly what the DMP received: MTOM bytes with the VIHF and the lot signature
    // Passerelle made (the mock verified it).
    let sent = h.dmp.stats.recent_bodies().pop().expect("body recorded");
    assert!(request.ends_with(&sent.body), "the body as sent upstream");
    let head = String::from_utf8_lossy(&request[..request.len() - sent.body.len()]);
    assert!(
        head.contains(&format!("content-type: {}", sent.content_type)),
        "{head}"
    );
    let text = String::from_utf8_lossy(&request);
    assert!(text.contains("<saml2:Assertion"));
    assert!(text.contains("xades"), "the lot signature (XAdES)");

    // ITI-43 of the large document: streamed to the client, written whole.
    let reply = h
        .post(
            "/dmp/repository",
            &headers,
            SOAP_CT,
            messages::retrieve(
                passerelle_mocks::dmp::REPOSITORY_UNIQUE_ID,
                &docs[1].unique_id,
            ),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.body.len() > 1_500_000);
    let id = request_id(&reply);
    let path = day.join(format!("{id}.response.http"));
    let (head_len, response) = read_when_complete(&path, reply.body.len()).await;
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert_eq!(
        &response[head_len..],
        &reply.body[..],
        "the answer as received"
    );
}

#[tokio::test]
async fn a_tenant_filter_leaves_the_other_tenants_out() {
    capture_logs();
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("capture");
    let until = rfc3339(OffsetDateTime::now_utc() + time::Duration::hours(1));
    let h = Harness::start_with(Options {
        clients: Some(two_clients()),
        keys: vec![
            ("capture", "clients", toml::Value::from(vec!["sih-a"])),
            ("capture", "tenants", toml::Value::from(vec!["ch-test-b"])),
            ("capture", "until", until.into()),
            ("capture", "dir", dir.display().to_string().into()),
        ],
        ..Options::default()
    })
    .await;
    assert_eq!(h.insi_search_a().await.status, 200);
    assert!(files(&dir).is_empty(), "tenant A is not captured");
    let reply = h
        .post(
            "/insi/auto",
            &[("x-passerelle-tenant", "ch-test-b")],
            SOAP_CT,
            messages::insi_search_bare("MARTIN", "CLAIRE", "F", "2007-05-14"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (request, _) = captured(&dir, &reply);
    assert!(request.contains("rechercherInsAvecTraitsIdentite"));
    assert_eq!(files(&dir).len(), 2);
}
