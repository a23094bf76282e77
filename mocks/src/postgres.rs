//! A real PostgreSQL server for tests and benchmarks: a cluster made with `initdb` in a
//! temporary folder and run with `pg_ctl` on a loopback port (Debian's `postgresql`
//! package, installed by `scripts/install-deps.sh`). It can be stopped and started again
//! on the same port, to play a database outage.
//!
//! PostgreSQL refuses to run as root: under root the cluster belongs to the `postgres`
//! user the package creates, and its commands run through `runuser`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A PostgreSQL cluster of its own, with a database `passerelle` owned by the
/// (superuser) role `passerelle`, password authentication over TCP.
#[derive(Debug)]
pub struct TestPostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// The role's password.
    pub password: String,
    running: bool,
}

/// The newest installed PostgreSQL's programs (`/usr/lib/postgresql/<version>/bin`:
/// Debian keeps `initdb` and `pg_ctl` off the PATH).
fn bin_dir() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            format!("/usr/lib/postgresql: {e} (install postgresql: scripts/install-deps.sh)")
        })?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| "no PostgreSQL under /usr/lib/postgresql".into())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

impl TestPostgres {
    /// Creates and starts the cluster (a second or two).
    pub fn start() -> Result<Self, String> {
        let bin = bin_dir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("free port: {e}"))?;
        let dir =
            std::env::temp_dir().join(format!("passerelle-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let password = uuid::Uuid::new_v4().simple().to_string();
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, &password).map_err(|e| e.to_string())?;
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !ok.success() {
                return Err("chown to the postgres user failed (is postgresql installed?)".into());
            }
        }
        let mut pg = Self {
            port,
            dir,
            bin,
            password,
            running: false,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-U",
                "passerelle",
                "--auth=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        pg.start_again()?;
        pg.psql("postgres", "CREATE DATABASE passerelle")?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs one of PostgreSQL's programs (as `postgres` under root).
    fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = command
            .args(args)
            .env("PGPASSWORD", &self.password)
            .current_dir(&self.dir)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{program} {args:?}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts the server (again), on the same port, and waits until it accepts.
    pub fn start_again(&mut self) -> Result<(), String> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200",
            self.port,
            self.dir.display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-o",
                &options,
                "-l",
                &self.dir.join("server.log").display().to_string(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        )?;
        self.running = true;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                return Err("PostgreSQL did not start listening".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops the server (`fast`: open connections are closed, as in a restart).
    pub fn stop(&mut self) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )?;
        self.running = false;
        Ok(())
    }

    /// The URL Passerelle's `[audit] url` takes (no password).
    pub fn url(&self) -> String {
        format!(
            "postgres://passerelle@127.0.0.1:{}/passerelle?sslmode=disable",
            self.port
        )
    }

    /// Writes the password to `path`, 0600, for `[audit] password_file`.
    pub fn write_password_file(&self, path: &Path) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, &self.password).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())
    }

    /// Runs SQL with `psql` in `database`; the rows, one a line, fields split by `|`.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "passerelle",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", &self.password)
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "psql {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self.run(
                "pg_ctl",
                &[
                    "-D",
                    &self.data().display().to_string(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
