//! `passerelle health`, the real binary, against `passerelle run`: exit 0 on /healthz,
//! the admin token from `--token-file` for /readyz behind `[admin] token_sha256`, exit 1
//! on /readyz's 503 while draining, and exit 1 at once when nothing listens.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use passerelle_certs_test::{ConfigAddresses, shared_test_pki};

const ADMIN_TOKEN: &str = "psl_health-cli-admin-token";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn health(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .arg("health")
        .args(args)
        .env_remove("PASSERELLE_HEALTHZ_URL")
        .output()
        .expect("passerelle health")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Kills the proxy if a test fails half-way.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn health_against_a_running_proxy() {
    let pki = shared_test_pki().expect("PKI");
    let (listen, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = pki
        .write_config(
            &format!("health-cli-{admin}.toml"),
            &ConfigAddresses {
                listener: format!("127.0.0.1:{listen}"),
                admin: format!("127.0.0.1:{admin}"),
                // No upstream is asked: nothing needs to listen there.
                dmp_port: free_port(),
                insi_port: free_port(),
                echo_port: None,
                audit: Some(dir.path().join("audit.jsonl")),
            },
        )
        .expect("configuration");
    let digest: String = openssl::sha::sha256(ADMIN_TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let address = format!("address = \"127.0.0.1:{admin}\"\n");
    let text = std::fs::read_to_string(&config).expect("read");
    assert_eq!(text.matches(&address).count(), 1, "{text}");
    std::fs::write(
        &config,
        text.replace(&address, &format!("{address}token_sha256 = \"{digest}\"\n")),
    )
    .expect("write");
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).expect("token file");
    let token_file = token_file.to_str().expect("path");

    let healthz = format!("http://127.0.0.1:{admin}/healthz");
    let readyz = format!("http://127.0.0.1:{admin}/readyz");
    let mut proxy = Proxy(
        Command::new(env!("CARGO_BIN_EXE_passerelle"))
            .args(["run", "--config"])
            .arg(&config)
            .args(["--drain-delay", "3s", "--grace", "1s"])
            .stderr(Stdio::null())
            .spawn()
            .expect("passerelle run"),
    );

    // Started: /healthz answers 200, exit 0.
    let started = Instant::now();
    let up = loop {
        let out = health(&["--url", &healthz]);
        if out.status.success() || started.elapsed() > Duration::from_secs(30) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(up.status.code(), Some(0), "{}", stdout(&up));
    assert_eq!(
        stdout(&up),
        format!("healthy: {healthz} answered 200 OK: ok\n")
    );

    // /readyz is behind the admin token: 401 without it, 200 with --token-file.
    let refused = health(&["--url", &readyz]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stdout(&refused).starts_with(&format!("unhealthy: {readyz} answered 401 Unauthorized")),
        "{}",
        stdout(&refused)
    );
    let ready = health(&["--url", &readyz, "--token-file", token_file]);
    assert_eq!(ready.status.code(), Some(0), "{}", stdout(&ready));
    assert_eq!(
        stdout(&ready),
        format!("healthy: {readyz} answered 200 OK: ready\n")
    );
    assert!(!stdout(&ready).contains(ADMIN_TOKEN));

    // SIGTERM with --drain-delay 3s: /readyz answers 503 "draining" at once, exit 1.
    let killed = Command::new("kill")
        .args(["-TERM", &proxy.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let started = Instant::now();
    let draining = loop {
        let out = health(&["--url", &readyz, "--token-file", token_file]);
        if !out.status.success() || started.elapsed() > Duration::from_secs(2) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(draining.status.code(), Some(1), "{}", stdout(&draining));
    assert!(
        stdout(&draining).starts_with(&format!(
            "unhealthy: {readyz} answered 503 Service Unavailable: draining"
        )),
        "{}",
        stdout(&draining)
    );

    // Stopped: nothing listens, exit 1 at once (not after --timeout).
    let exit = proxy.0.wait().expect("wait");
    assert!(exit.success(), "{exit:?}");
    let started = Instant::now();
    let gone = health(&["--url", &healthz, "--timeout", "10s"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        stdout(&gone).starts_with(&format!(
            "unhealthy: {healthz}: cannot connect to 127.0.0.1:{admin}"
        )),
        "{}",
        stdout(&gone)
    );
    let _ = std::fs::remove_file(Path::new(&config));
}

/// Without `--url`, `$PASSERELLE_HEALTHZ_URL` (the image sets it), else the default.
#[test]
fn the_url_comes_from_the_variable_or_the_default() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let out = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .arg("health")
        .env("PASSERELLE_HEALTHZ_URL", &url)
        .output()
        .expect("passerelle health");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with(&format!("unhealthy: {url}: ")),
        "{}",
        stdout(&out)
    );
    // Something may listen on this machine's 9090: only the URL asked is checked.
    let out = health(&["--timeout", "1s"]);
    assert!(
        stdout(&out).starts_with("unhealthy: http://127.0.0.1:9090/healthz: ")
            || stdout(&out).starts_with("healthy: http://127.0.0.1:9090/healthz "),
        "{}",
        stdout(&out)
    );
}
