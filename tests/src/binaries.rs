//! The workspace's real binaries (`passerelle`, `passerelle-certs-test`), built once per
//! test run, and a `passerelle run` child process read through its JSON log.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The path of a workspace binary, built once for this test run (`cargo build -p
/// passerelle-proxy -p passerelle-certs-test --bins`, into the workspace's target).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = Command::new(env!("CARGO"))
            .current_dir(&workspace)
            .args([
                "build",
                "--quiet",
                "-p",
                "passerelle-proxy",
                "-p",
                "passerelle-certs-test",
                "--bins",
            ])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building the binaries failed");
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"))
            .join("debug")
    });
    dir.join(name)
}

/// Runs a workspace binary to its end.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(bin(program))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// Standard output then standard error, as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A configuration `passerelle-certs-test` wrote (paths relative to the PKI folder),
/// read and removed, its file paths made absolute: to be written anywhere.
pub fn sandbox_config_elsewhere(
    written: &std::path::Path,
    pki_dir: &std::path::Path,
) -> toml::Table {
    fn absolute(v: &mut toml::Value, base: &std::path::Path) {
        match v {
            toml::Value::String(s) if !s.is_empty() && base.join(&*s).is_file() => {
                *s = base.join(&*s).display().to_string();
            }
            toml::Value::Array(a) => a.iter_mut().for_each(|v| absolute(v, base)),
            toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| absolute(v, base)),
            _ => {}
        }
    }
    let doc: toml::Table = std::fs::read_to_string(written)
        .expect("read the configuration")
        .parse()
        .expect("TOML");
    let _ = std::fs::remove_file(written);
    let mut value = toml::Value::Table(doc);
    absolute(&mut value, pki_dir);
    match value {
        toml::Value::Table(t) => t,
        _ => unreachable!("a table stays a table"),
    }
}

/// The sandbox configuration written in `dir` for a `passerelle run` that sends nothing
/// upstream (the mocks' ports are unused), with `tables` added (`"trust.ocsp"` goes
/// under `[trust]`), and checked: `passerelle check` must pass.
pub fn checked_config(
    pki: &passerelle_certs_test::Manifest,
    dir: &std::path::Path,
    tables: Vec<(&str, toml::Table)>,
) -> PathBuf {
    let mut doc = sandbox_config(pki, dir);
    for (path, table) in tables {
        let (parent, key) = match path.split_once('.') {
            Some((parent, key)) => (
                doc.get_mut(parent)
                    .and_then(|t| t.as_table_mut())
                    .unwrap_or_else(|| panic!("[{parent}]")),
                key,
            ),
            None => (&mut doc, path),
        };
        parent.insert(key.into(), toml::Value::Table(table));
    }
    let path = write_config(&doc, dir);
    let check = run(
        "passerelle",
        &["check", "--config", &path.display().to_string()],
    );
    assert!(check.status.success(), "check: {}", text(&check));
    path
}

/// The sandbox configuration written in `dir` (upstream ports unused), tenant A's
/// certificate tables replaced by `tenant_a` (by role), not checked.
pub fn unchecked_config(
    pki: &passerelle_certs_test::Manifest,
    dir: &std::path::Path,
    tenant_a: &[(&str, toml::Table)],
) -> PathBuf {
    let mut doc = sandbox_config(pki, dir);
    let certificates = doc
        .get_mut("tenants")
        .and_then(|t| t.as_array_mut())
        .and_then(|t| t.first_mut())
        .and_then(|a| a.get_mut("certificates"))
        .and_then(|c| c.as_table_mut())
        .expect("tenant A's certificates");
    for (role, table) in tenant_a {
        certificates.insert(role.to_string(), toml::Value::Table(table.clone()));
    }
    write_config(&doc, dir)
}

fn write_config(doc: &toml::Table, dir: &std::path::Path) -> PathBuf {
    let path = dir.join(format!("passerelle-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, toml::to_string(doc).expect("TOML")).expect("write");
    path
}

/// The sandbox configuration for `dir` (audit there, upstream ports unused), with
/// absolute paths.
fn sandbox_config(pki: &passerelle_certs_test::Manifest, dir: &std::path::Path) -> toml::Table {
    let name = format!("e2e-{}.toml", uuid::Uuid::new_v4().simple());
    let written = pki
        .write_config(
            &name,
            &passerelle_certs_test::ConfigAddresses {
                listener: "127.0.0.1:0".into(),
                admin: "127.0.0.1:0".into(),
                dmp_port: 9,
                insi_port: 9,
                echo_port: Some(9),
                audit: Some(dir.join("audit.jsonl")),
            },
        )
        .expect("config");
    sandbox_config_elsewhere(&written, &pki.dir)
}

/// A `passerelle run` child process, killed on drop.
#[derive(Debug)]
pub struct Passerelle {
    child: std::process::Child,
    /// The internal listener.
    pub address: SocketAddr,
    /// The admin listener (`/readyz`, `/metrics`).
    pub admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Passerelle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Passerelle {
    /// Starts `passerelle run --config CONFIG --log-format json` and waits (30 s at
    /// most) for its "passerelle ready" line.
    pub fn start(config: &str) -> Self {
        Self::start_with_env(config, &[])
    }

    /// [`Self::start`] with `env` added to the child's environment.
    pub fn start_with_env(config: &str, env: &[(String, String)]) -> Self {
        let mut child = Command::new(bin("passerelle"))
            .args(["run", "--config", config, "--log-format", "json"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("passerelle run");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("passerelle ready") {
                    let _ = tx.send(line.clone());
                }
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let ready = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("not ready: {:?}", log.lock().map(|l| l.join("\n"))));
        let v: serde_json::Value = serde_json::from_str(&ready).expect("JSON log line");
        let field = |name: &str| -> SocketAddr {
            v["fields"][name]
                .as_str()
                .or(v[name].as_str())
                .unwrap_or_else(|| panic!("{name} address in {ready}"))
                .parse()
                .expect("address")
        };
        Self {
            address: field("listen"),
            admin: field("admin"),
            child,
            log,
        }
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Waits (up to `within`) for a log line holding every one of `parts`; the line.
    pub fn wait_log(&self, parts: &[&str], within: Duration) -> Option<String> {
        let end = std::time::Instant::now() + within;
        loop {
            let found = self.log.lock().ok().and_then(|l| {
                l.iter()
                    .find(|line| parts.iter().all(|p| line.contains(p)))
                    .cloned()
            });
            if found.is_some() || std::time::Instant::now() > end {
                return found;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The value of one series (name and labels, exactly) in `/metrics`.
    pub fn metric(&self, series: &str) -> Option<String> {
        let (_, body) = self.admin_get("/metrics");
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next().map(str::to_string))
    }

    /// The admin listener's answer to `GET path`: status and body (plain HTTP/1.1).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.admin).expect("admin connect");
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: passerelle\r\nConnection: close\r\n\r\n"
        )
        .expect("admin write");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}
