//! The processes a benchmark runs against, started from the shared test PKI: Passerelle
//! (release build) and the mock services as their own processes, with what is needed to
//! read their CPU time and memory and to stop them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use passerelle_certs_test::{ConfigAddresses, Manifest};

use crate::resources;

pub use passerelle_e2e::free_port;

/// Waits until something accepts connections on `port` (at most 30 s).
pub fn wait_for_port(port: u16, what: &str) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The workspace's release binaries folder (`target/release`).
pub fn release_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release")
}

/// Builds release binaries of `packages` (quietly; panics when the build fails).
pub fn build_release(packages: &[&str]) {
    let mut command = Command::new(env!("CARGO"));
    command.args(["build", "--release", "--quiet"]);
    for p in packages {
        command.args(["-p", p]);
    }
    let status = command.status().expect("cargo build");
    assert!(status.success(), "building {packages:?} failed");
}

/// A process under test: its pid(s) for CPU and memory. Stopped (SIGTERM) when dropped.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    /// Sum over the process and these children (nginx workers).
    pub with_children: bool,
}

impl Proc {
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.child.id()];
        if self.with_children {
            pids.extend(resources::children(self.child.id()));
        }
        pids
    }
    pub fn cpu(&self) -> f64 {
        self.pids().into_iter().map(resources::cpu_seconds).sum()
    }
    pub fn peak_rss_mib(&self) -> f64 {
        self.pids().into_iter().map(resources::peak_rss_mib).sum()
    }
    /// Starts a new peak-memory measurement (see [`resources::reset_peak_rss`]).
    pub fn reset_peak_rss(&self) -> bool {
        self.pids().into_iter().all(resources::reset_peak_rss)
    }
    /// Sends `signal` (`HUP`, `TERM`...) to the process.
    pub fn signal(&self, signal: &str) -> bool {
        Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal("TERM");
        let _ = self.child.wait();
    }
}

/// A running Passerelle: the process, its listener and admin ports, its configuration.
#[derive(Debug)]
pub struct Passerelle {
    pub proc: Proc,
    pub port: u16,
    pub admin_port: u16,
    pub config: PathBuf,
}

/// Passerelle (the release build: [`build_release`] it first, with the packages the
/// benchmark runs, in one command so that their features are built once) on the PKI's
/// configuration pointing at the mocks; `audit_sink`, when not empty, is added to its
/// `[audit]` table (the PostgreSQL sink's settings); its log (`PASSERELLE_LOG=warn`)
/// goes to `log`, or nowhere.
pub fn start_passerelle(
    pki: &Manifest,
    dmp_port: u16,
    insi_port: u16,
    out: &Path,
    audit_sink: &str,
    log: Option<&Path>,
) -> Passerelle {
    let binary = release_dir().join("passerelle");
    let (listen, admin) = (free_port(), free_port());
    let config = pki
        .write_config(
            &format!("bench-{listen}.toml"),
            &ConfigAddresses {
                listener: format!("127.0.0.1:{listen}"),
                admin: format!("127.0.0.1:{admin}"),
                dmp_port,
                insi_port,
                echo_port: None,
                audit: Some(out.join("audit/passerelle-audit.jsonl")),
            },
        )
        .expect("bench configuration");
    if !audit_sink.is_empty() {
        let text = std::fs::read_to_string(&config).expect("bench configuration");
        let text = text.replacen("[audit]\n", &format!("[audit]\n{audit_sink}"), 1);
        std::fs::write(&config, text).expect("bench configuration");
    }
    let stderr = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
        None => Stdio::null(),
    };
    let child = Command::new(binary)
        .args(["run", "--config"])
        .arg(&config)
        .env("PASSERELLE_LOG", "warn")
        .stderr(stderr)
        .spawn()
        .expect("start passerelle");
    wait_for_port(admin, "passerelle");
    wait_for_port(listen, "passerelle");
    Passerelle {
        proc: Proc {
            child,
            with_children: false,
        },
        port: listen,
        admin_port: admin,
        config,
    }
}

/// A mock service started as its own process (`mock-dmp`, `mock-insi`): the process,
/// its service and admin ports.
#[derive(Debug)]
pub struct Mock {
    pub proc: Proc,
    pub port: u16,
    pub admin_port: u16,
}

impl Mock {
    /// The TLS handshakes the mock has served since it started (its admin `GET /stats`;
    /// 0 when the answer cannot be read).
    pub fn handshakes(&self) -> u64 {
        admin(self.admin_port, "GET", "/stats", "")
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|stats| stats["handshakes"].as_u64())
            .unwrap_or(0)
    }
}

/// One plain-HTTP request to an admin port on loopback: the body of a 2xx answer, or
/// `None` (refused, unreachable, or not 2xx).
pub fn admin(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
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

/// Starts the release binary `name` (`mock-dmp`, `mock-insi`) on the PKI, with `args`
/// added (`--spec DIR`, `--xsd DIR`, `--retain N`); its output goes to `log`.
pub fn start_mock(name: &str, pki: &Manifest, args: &[&str], log: &Path) -> Mock {
    let (port, admin) = (free_port(), free_port());
    let out = std::fs::File::create(log).expect("mock log");
    let child = Command::new(release_dir().join(name))
        .arg("--pki")
        .arg(&pki.dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .args(args)
        .stdout(out.try_clone().map_or(Stdio::null(), Stdio::from))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start mock");
    wait_for_port(port, name);
    wait_for_port(admin, name);
    Mock {
        proc: Proc {
            child,
            with_children: false,
        },
        port,
        admin_port: admin,
    }
}
