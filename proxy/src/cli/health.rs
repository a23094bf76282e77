//! `passerelle health`: one HTTP/1.1 GET to the admin listener, for container health
//! checks (the image has no shell, curl or wget). Exit 0 on a 2xx answer, 1 on anything
//! else (another status, no connection, a timeout, a bad URL), with one line on stdout
//! saying which.
//!
//! The URL is `--url`, else `$PASSERELLE_HEALTHZ_URL`, else
//! `http://127.0.0.1:9090/healthz`. `/healthz` is never behind the admin token; for
//! `/readyz`, `/metrics` or `/pools` behind `[admin] token_sha256`, `--token-file` names
//! a file holding the token (only its first line is read).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Where the image's `HEALTHCHECK` asks when neither `--url` nor the variable is set.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9090/healthz";
/// The variable that overrides [`DEFAULT_URL`] (the image sets it; `-e` changes it).
pub const URL_VARIABLE: &str = "PASSERELLE_HEALTHZ_URL";
/// Bytes of the answer's body read, for the line printed (the admin routes answer a
/// few lines; `/metrics` is cut).
const BODY_LIMIT: usize = 64 * 1024;
/// Characters of the body's first line printed.
const SHOWN: usize = 160;

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The admin URL to ask, plain HTTP [default: $PASSERELLE_HEALTHZ_URL, else
    /// http://127.0.0.1:9090/healthz].
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Give up after this long: connecting, sending and the whole answer.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// File holding the admin bearer token (`[admin] token_sha256`), sent as
    /// `Authorization: Bearer`: for /readyz, /metrics or /pools; /healthz never needs it.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// What the probe found; [`Probe::line`] is what is printed.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// An answer, any status: healthy when 2xx.
    Answered {
        url: String,
        status: http::StatusCode,
        /// The body's first line, shortened.
        first_line: String,
    },
    /// No answer: the reason (bad URL, unreadable token, connection, timeout).
    Failed { url: String, reason: String },
}

impl Probe {
    pub fn healthy(&self) -> bool {
        matches!(self, Self::Answered { status, .. } if status.is_success())
    }

    pub fn line(&self) -> String {
        match self {
            Self::Answered {
                url,
                status,
                first_line,
            } => {
                let verdict = if status.is_success() {
                    "healthy"
                } else {
                    "unhealthy"
                };
                let reason = status.canonical_reason().unwrap_or("");
                let status = status.as_u16();
                if first_line.is_empty() {
                    format!("{verdict}: {url} answered {status} {reason}")
                } else {
                    format!("{verdict}: {url} answered {status} {reason}: {first_line}")
                }
            }
            Self::Failed { url, reason } => format!("unhealthy: {url}: {reason}"),
        }
    }
}

pub fn run(args: &HealthArgs) -> ExitCode {
    let url = args
        .url
        .clone()
        .or_else(|| std::env::var(URL_VARIABLE).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    let probe = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(probe(&url, args.timeout, args.token_file.as_deref())),
        Err(e) => Probe::Failed {
            url,
            reason: format!("cannot start the async runtime: {e}"),
        },
    };
    println!("{}", probe.line());
    if probe.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One GET to `url` within `timeout`, with the token of `token_file` when given.
pub async fn probe(url: &str, timeout: Duration, token_file: Option<&Path>) -> Probe {
    let failed = |reason: String| Probe::Failed {
        url: without_credentials(url),
        reason,
    };
    let target = match Target::parse(url) {
        Ok(t) => t,
        Err(reason) => return failed(reason),
    };
    let token = match token_file.map(read_token).transpose() {
        Ok(t) => t,
        Err(reason) => return failed(reason),
    };
    match tokio::time::timeout(timeout, get(&target, token.as_deref())).await {
        Ok(Ok((status, first_line))) => Probe::Answered {
            url: url.to_string(),
            status,
            first_line,
        },
        Ok(Err(reason)) => failed(reason),
        Err(_) => failed(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// `url` as printed: a user name or password in it is left out.
fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// The parts of an `http://` URL the request needs.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// `host:port` to connect to (IPv6 addresses in brackets).
    authority: String,
    /// The `Host` header: the URL's host, and its port when it is not 80.
    host_header: String,
    /// Path and query.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        if parsed.scheme() != "http" {
            return Err(format!(
                "scheme {}: the admin listener speaks plain http://",
                parsed.scheme()
            ));
        }
        let host = match parsed.host() {
            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
            Some(h) => h.to_string(),
            None => return Err("no host in the URL".into()),
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("credentials in the URL: use --token-file".into());
        }
        let port = parsed.port_or_known_default().unwrap_or(80);
        let host_header = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let path = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_string(),
        };
        Ok(Self {
            authority: format!("{host}:{port}"),
            host_header,
            path,
        })
    }
}

/// The token: the file's first line, trimmed; visible ASCII as a bearer token is.
fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--token-file {}: cannot read: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(format!("--token-file {}: empty", path.display()));
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "--token-file {}: a bearer token is visible ASCII without spaces",
            path.display()
        ));
    }
    Ok(token.to_string())
}

/// Connect, send the GET, read the status and the start of the body.
async fn get(target: &Target, token: Option<&str>) -> Result<(http::StatusCode, String), String> {
    let tcp = tokio::net::TcpStream::connect(target.authority.as_str())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.authority))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("HTTP handshake with {}: {e}", target.authority))?;
    let connection = tokio::spawn(connection);
    let mut request = http::Request::get(target.path.as_str())
        .header(http::header::HOST, target.host_header.as_str())
        .header(
            http::header::USER_AGENT,
            concat!("passerelle-health/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("no HTTP answer from {}: {e}", target.authority))?;
    let status = response.status();
    // The status decides; a body cut short or too long still shows what came.
    let mut body = response.into_body();
    let mut read = Vec::new();
    while read.len() < BODY_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read.extend_from_slice(data);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    connection.abort();
    let body = read;
    Ok((status, first_line(&body)))
}

/// The body's first line, control characters dropped, at most [`SHOWN`] characters.
fn first_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().next().unwrap_or("").trim();
    let mut shown: String = line
        .chars()
        .filter(|c| !c.is_control())
        .take(SHOWN)
        .collect();
    if line.chars().count() > SHOWN {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server answering each connection with `response` (raw HTTP/1.1), sending back
    /// the request head it read; `None` accepts and never answers.
    async fn server(
        response: Option<String>,
    ) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (heads, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (heads, response) = (heads.clone(), response.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
                    match &response {
                        Some(r) => {
                            let _ = tcp.write_all(r.as_bytes()).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                });
            }
        });
        (port, received)
    }

    fn answer(status: &str, body: &str) -> Option<String> {
        Some(format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ))
    }
    const DRAINING: &str = "draining: shutting down, in-flight requests are finishing\n";

    #[tokio::test]
    async fn a_2xx_answer_is_healthy() {
        let (port, mut heads) = server(answer("200 OK", "ok\n")).await;
        let url = format!("http://127.0.0.1:{port}/healthz");
        let probe = probe(&url, Duration::from_secs(2), None).await;
        assert!(probe.healthy(), "{probe:?}");
        assert_eq!(probe.line(), format!("healthy: {url} answered 200 OK: ok"));
        let head = heads.recv().await.expect("request");
        assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("host: 127.0.0.1:{port}\r\n"))
        );
        assert!(!head.to_ascii_lowercase().contains("authorization"));
    }

    #[tokio::test]
    async fn a_503_is_unhealthy_with_the_reason() {
        let (port, _heads) = server(answer("503 Service Unavailable", DRAINING)).await;
        let url = format!("http://127.0.0.1:{port}/readyz?strict");
        let probe = probe(&url, Duration::from_secs(2), None).await;
        assert!(!probe.healthy());
        assert_eq!(
            probe.line(),
            format!(
                "unhealthy: {url} answered 503 Service Unavailable: draining: shutting down, in-flight requests are finishing"
            )
        );
    }

    #[tokio::test]
    async fn nothing_listening_fails_at_once() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let started = std::time::Instant::now();
        let probe = probe(
            &format!("http://127.0.0.1:{port}/healthz"),
            Duration::from_secs(5),
            None,
        )
        .await;
        assert!(!probe.healthy());
        assert!(probe.line().contains("cannot connect"), "{}", probe.line());
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_server_that_does_not_answer_times_out() {
        let (port, _heads) = server(None).await;
        let started = std::time::Instant::now();
        let probe = probe(
            &format!("http://127.0.0.1:{port}/healthz"),
            Duration::from_millis(300),
            None,
        )
        .await;
        assert!(!probe.healthy());
        assert!(
            probe.line().ends_with("no answer within 300ms"),
            "{}",
            probe.line()
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn the_token_file_gives_the_bearer_header() {
        let (port, mut heads) = server(answer("200 OK", "ok\n")).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("admin-token");
        std::fs::write(&file, "psl_admin-secret\n").expect("write");
        let probe = probe(
            &format!("http://localhost:{port}/readyz"),
            Duration::from_secs(2),
            Some(&file),
        )
        .await;
        assert!(probe.healthy(), "{probe:?}");
        let head = heads.recv().await.expect("request");
        assert!(
            head.contains("authorization: Bearer psl_admin-secret\r\n"),
            "{head}"
        );
        // Never the token in what is printed.
        assert!(!probe.line().contains("secret"));

        std::fs::write(&file, "\n").expect("write");
        let empty = super::probe("http://127.0.0.1:9/", Duration::from_secs(1), Some(&file)).await;
        assert!(
            empty.line().ends_with("admin-token: empty"),
            "{}",
            empty.line()
        );
        let missing = dir.path().join("missing");
        let probe = super::probe(
            "http://127.0.0.1:9/",
            Duration::from_secs(1),
            Some(&missing),
        )
        .await;
        assert!(probe.line().contains("cannot read"), "{}", probe.line());
    }

    #[test]
    fn urls() {
        assert_eq!(
            Target::parse("http://127.0.0.1:9090/healthz"),
            Ok(Target {
                authority: "127.0.0.1:9090".into(),
                host_header: "127.0.0.1:9090".into(),
                path: "/healthz".into(),
            })
        );
        assert_eq!(
            Target::parse("http://[::1]/readyz?strict"),
            Ok(Target {
                authority: "[::1]:80".into(),
                host_header: "[::1]".into(),
                path: "/readyz?strict".into(),
            })
        );
        for (url, error) in [
            ("https://127.0.0.1:9090/healthz", "plain http://"),
            ("localhost:9090/healthz", "scheme localhost"),
            ("127.0.0.1:9090/healthz", "not a URL"),
            ("healthz", "not a URL"),
            ("http://admin:secret@127.0.0.1/readyz", "use --token-file"),
        ] {
            let e = Target::parse(url).expect_err(url);
            assert!(e.contains(error), "{url}: {e}");
        }
    }

    #[tokio::test]
    async fn credentials_in_the_url_are_refused_and_not_printed() {
        let probe = probe(
            "http://admin:secret@127.0.0.1:9/readyz",
            Duration::from_secs(1),
            None,
        )
        .await;
        assert_eq!(
            probe.line(),
            "unhealthy: http://127.0.0.1:9/readyz: credentials in the URL: use --token-file"
        );
    }

    #[test]
    fn first_lines_are_short_and_clean() {
        assert_eq!(
            first_line(b"ready, degraded\ndegraded a b\n"),
            "ready, degraded"
        );
        assert_eq!(first_line(b""), "");
        assert_eq!(first_line(b"a\x1b[31mb"), "a[31mb");
        let long = "x".repeat(500);
        assert_eq!(first_line(long.as_bytes()).chars().count(), SHOWN + 1);
    }
}
