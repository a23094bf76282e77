//! `[trust.crl_download]` with the real binary: a `passerelle run` fetches the ORG
//! intermediate's CRL from a local HTTP server started here, through a real forward
//! proxy (tinyproxy) or directly. The CRL is rotated during the test (the new one
//! revokes tenant A's DMP certificate: the pair stops serving), then replaced by one
//! another CA signed (refused, the last good copy stays, and it goes stale: `/readyz`
//! stays 200 and says so), then the server goes down, then comes back with a good CRL
//! (the certificate serves again). The CRLs are written by `passerelle-certs-test crl`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use passerelle_certs_test::{Manifest, shared_test_pki};
use passerelle_e2e::binaries::{Passerelle, checked_config, run, text};
use passerelle_e2e::forward_proxy::ForwardProxy;

/// A plain HTTP server answering every GET with the CRL in place (404 when none), that
/// can be stopped (connection refused) and started again on the same port.
struct CrlServer {
    address: SocketAddr,
    body: Arc<Mutex<Option<Vec<u8>>>>,
    served: Arc<AtomicUsize>,
    /// The request lines received.
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CrlServer {
    fn start() -> Self {
        let mut s = Self {
            address: "127.0.0.1:0".parse().expect("address"),
            body: Arc::new(Mutex::new(None)),
            served: Arc::new(AtomicUsize::new(0)),
            lines: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        s.listen();
        s
    }

    fn listen(&mut self) {
        let listener = TcpListener::bind(self.address).expect("bind");
        self.address = listener.local_addr().expect("address");
        listener.set_nonblocking(true).expect("nonblocking");
        self.stop.store(false, Ordering::SeqCst);
        let (body, served, lines, stop) = (
            Arc::clone(&self.body),
            Arc::clone(&self.served),
            Arc::clone(&self.lines),
            Arc::clone(&self.stop),
        );
        self.thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                        break;
                    }
                }
                if let Ok(mut l) = lines.lock() {
                    l.push(line.trim_end().to_string());
                }
                let crl = body.lock().ok().and_then(|b| b.clone());
                let mut out = &stream;
                let _ = match crl {
                    Some(crl) => {
                        served.fetch_add(1, Ordering::SeqCst);
                        write!(
                            out,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            crl.len()
                        )
                        .and_then(|()| out.write_all(&crl))
                    }
                    None => out.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
                let _ = out.flush();
                let mut rest = [0u8; 64];
                let _ = (&stream).read(&mut rest);
            }
        }));
    }

    fn serve(&self, crl: Option<Vec<u8>>) {
        if let Ok(mut b) = self.body.lock() {
            *b = crl;
        }
    }

    /// Stops listening: connections are refused.
    fn down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn url(&self) -> String {
        format!("http://{}/CRL/ACI-EL-ORG-TEST.crl", self.address)
    }
}

impl Drop for CrlServer {
    fn drop(&mut self) {
        self.down();
    }
}

/// A CRL of the test PKI's ORG intermediate (or of a foreign CA), written by the
/// `passerelle-certs-test crl` binary.
fn crl(pki: &Manifest, dir: &Path, name: &str, args: &[&str]) -> Vec<u8> {
    let out = dir.join(name);
    let pki_dir = pki.dir.display().to_string();
    let out_arg = out.display().to_string();
    let mut all = vec!["crl", "--pki", pki_dir.as_str(), "--out", out_arg.as_str()];
    all.extend_from_slice(args);
    let o = run("passerelle-certs-test", &all);
    assert!(o.status.success(), "certs-test crl: {}", text(&o));
    std::fs::read(&out).expect("read the CRL")
}

/// The certificate's serial as `openssl x509 -serial` prints it.
fn serial(cert: &Path) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(cert)
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_string()
}

/// The sandbox configuration with `[trust.crl_download]` for `url` and, when given,
/// `[egress]`.
fn config(pki: &Manifest, dir: &Path, url: &str, egress: Option<&str>) -> PathBuf {
    let download: toml::Table = format!(
        "directory = {:?}\ndiscover = false\nurls = [{url:?}]\nrefresh = \"1m\"\nretry = \"1s\"\ntimeout = \"5s\"\n",
        dir.join("crls").display().to_string()
    )
    .parse()
    .expect("TOML");
    let mut tables = vec![("trust.crl_download", download)];
    if let Some(proxy) = egress {
        let mut e = toml::Table::new();
        e.insert("proxy".into(), toml::Value::String(proxy.into()));
        tables.push(("egress", e));
    }
    checked_config(pki, dir, tables)
}

fn wait(what: &str, within: Duration, mut ok: impl FnMut() -> bool, log: impl Fn() -> String) {
    let end = std::time::Instant::now() + within;
    while !ok() {
        assert!(
            std::time::Instant::now() < end,
            "{what}: not within {within:?}; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value of one series in `/metrics`.
fn metric(p: &Passerelle, series: &str) -> Option<f64> {
    p.metric(series)?.parse().ok()
}

#[test]
fn a_crl_downloaded_through_the_forward_proxy_is_rotated_refused_when_forged_and_kept_when_the_server_is_down()
 {
    let pki = shared_test_pki().expect("PKI");
    let dir = tempfile::tempdir().expect("tempdir");
    let tenant_serial = serial(&pki.path(&pki.tenants[0].dmp_auth.cert));
    let mut server = CrlServer::start();
    let url = server.url();
    let forward = ForwardProxy::start(None);
    let config = config(&pki, dir.path(), &url, Some(&forward.url()));
    let copy = dir
        .path()
        .join("crls")
        .join(passerelle_config::crl_file_name(&url.parse().expect("URL")));

    // 1. The CA's current CRL revokes nothing of ours; its nextUpdate is near, so the
    //    proxy fetches again then (as it would the next morning).
    server.serve(Some(crl(
        &pki,
        dir.path(),
        "1.crl",
        &["--number", "10", "--next-update", "8"],
    )));
    let p = Passerelle::start(&config.display().to_string());
    let log = || p.log();
    wait(
        "first download",
        Duration::from_secs(20),
        || copy.is_file(),
        log,
    );
    let next = format!("passerelle_crl_next_update_seconds{{crl=\"{url}\"}}");
    wait(
        "the copy in use (reloaded)",
        Duration::from_secs(20),
        || metric(&p, &next).is_some(),
        log,
    );
    let gets = forward.requests("GET");
    assert!(
        gets.iter().any(|l| l.contains(&url)),
        "fetched through the forward proxy: {gets:?}"
    );
    let (status, body) = p.admin_get("/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let revoked = "passerelle_certificate_revoked{tenant=\"ch-test-a\",role=\"dmp_auth\"}";
    assert_eq!(metric(&p, revoked), Some(0.0));

    // 2. Rotated: the new CRL revokes tenant A's DMP authentication certificate. Picked
    //    up at the old one's nextUpdate; the pair stops serving, the instance stays ready.
    server.serve(Some(crl(
        &pki,
        dir.path(),
        "2.crl",
        &[
            "--number",
            "11",
            "--next-update",
            "12",
            "--revoke",
            &tenant_serial,
        ],
    )));
    wait(
        "the rotated CRL revokes tenant A's dmp_auth",
        Duration::from_secs(40),
        || metric(&p, revoked) == Some(1.0),
        log,
    );
    let (status, body) = p.admin_get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("degraded ch-test-a dmp_auth CertificateRevoked"),
        "{body}"
    );
    let kept = std::fs::read(&copy).expect("copy");

    // 3. Forged: same names, another key. Refused and logged; the copy stays (the
    //    revocation holds) and, once past its nextUpdate, /readyz says it is stale.
    server.serve(Some(crl(
        &pki,
        dir.path(),
        "3.crl",
        &["--number", "12", "--issuer", "foreign"],
    )));
    wait(
        "the forged CRL refused",
        Duration::from_secs(40),
        || p.log().contains("does not verify with the key of"),
        log,
    );
    assert_eq!(std::fs::read(&copy).expect("copy"), kept, "the copy stays");
    wait(
        "readyz says the CRL is stale",
        Duration::from_secs(20),
        || {
            p.admin_get("/readyz")
                .1
                .contains(&format!("degraded crl {url}: past its nextUpdate"))
        },
        log,
    );
    let (status, body) = p.admin_get("/readyz");
    assert_eq!(status, 200, "stays ready: {body}");
    assert!(
        metric(&p, &next).is_some_and(|s| s <= 0.0),
        "zero or negative when stale"
    );
    assert_eq!(metric(&p, revoked), Some(1.0), "the revocation holds");
    let (strict, _) = p.admin_get("/readyz?strict");
    assert_eq!(strict, 503, "strict readiness counts a stale CRL");

    // 4. The server is down: failures counted, the copy stays.
    let failed = format!("passerelle_crl_downloads_total{{crl=\"{url}\",outcome=\"failed\"}}");
    let before = metric(&p, &failed).unwrap_or(0.0);
    server.down();
    wait(
        "a failure while the server is down",
        Duration::from_secs(40),
        || metric(&p, &failed).is_some_and(|n| n > before),
        log,
    );
    assert_eq!(std::fs::read(&copy).expect("copy"), kept, "the copy stays");

    // 5. Back with a CRL that no longer lists the certificate: it serves again.
    server.serve(Some(crl(&pki, dir.path(), "4.crl", &["--number", "13"])));
    server.listen();
    wait(
        "the good CRL again",
        Duration::from_secs(60),
        || metric(&p, revoked) == Some(0.0),
        log,
    );
    let (status, body) = p.admin_get("/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let updated = format!("passerelle_crl_downloads_total{{crl=\"{url}\",outcome=\"updated\"}}");
    assert_eq!(metric(&p, &updated), Some(3.0), "three CRLs kept");
    // The log names the URL and the reason of each failure, never a key.
    let logged = p.log();
    assert!(logged.contains("CRL download failed"), "{logged}");
    assert!(!logged.contains("PRIVATE KEY"));
}

/// Straight to the CRL server (no `[egress]`): a good CRL is kept; the `passerelle
/// check` report then names the downloaded copy by its URL.
#[test]
fn a_crl_downloaded_directly_is_used_and_named_by_check() {
    let pki = shared_test_pki().expect("PKI");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = CrlServer::start();
    let url = server.url();
    let config = config(&pki, dir.path(), &url, None);
    server.serve(Some(crl(&pki, dir.path(), "1.crl", &["--number", "20"])));
    let p = Passerelle::start(&config.display().to_string());
    let next = format!("passerelle_crl_next_update_seconds{{crl=\"{url}\"}}");
    wait(
        "downloaded and in use",
        Duration::from_secs(20),
        || metric(&p, &next).is_some_and(|s| s > 3600.0),
        || p.log(),
    );
    let lines = server.lines.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(
        lines
            .iter()
            .all(|l| l == "GET /CRL/ACI-EL-ORG-TEST.crl HTTP/1.1"),
        "origin-form GET: {lines:?}"
    );
    assert_eq!(server.served.load(Ordering::SeqCst), 1, "fetched once");
    let report = run(
        "passerelle",
        &["check", "--config", &config.display().to_string()],
    );
    let out = text(&report);
    assert!(report.status.success(), "{out}");
    assert!(out.contains(&url), "check names the URL: {out}");
}
