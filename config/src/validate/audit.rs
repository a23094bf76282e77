//! `[audit]`: where the trail goes, checked without creating or changing anything (the
//! folder exists or can be created, this process may write there, no one else may),
//! and the name of this replica written in every line.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustix::fs::{Access, AtFlags};

use super::Validator;
use crate::file;
use crate::model::{Audit, AuditSink, OnAuditFailure, PostgresAudit};

/// The permission bits of a file or folder that group or others may write, `None` when
/// only its owner may. Passerelle refuses such an audit trail or folder: anyone who can
/// write the trail can forge or erase who accessed which patient.
pub fn shared_write_mode(path: &Path) -> io::Result<Option<u32>> {
    let mode = std::fs::metadata(path)?.permissions().mode();
    Ok((mode & 0o022 != 0).then_some(mode & 0o7777))
}

/// Whether this process (effective uid and gids) may do `access` on `path`: access(2)
/// asks the kernel, so ACLs, read-only mounts and root are taken into account.
pub(super) fn allowed(path: &Path, access: Access) -> Result<(), String> {
    rustix::fs::accessat(rustix::fs::CWD, path, access, AtFlags::EACCESS)
        .map_err(|e| io::Error::from(e).to_string())
}

/// The longest audit instance name.
const MAX_INSTANCE: usize = 64;

impl Validator {
    pub(super) fn audit(&mut self, a: &file::AuditSection) -> Option<Audit> {
        let path = self.resolve(&a.path);
        let sink = self.audit_sink(a, &path)?;
        match &sink {
            AuditSink::File => self.audit_path("audit.path", &path),
            AuditSink::Postgres(pg) => self.audit_path("audit.spool", &pg.spool),
        }
        let instance = match &a.instance {
            Some(name) => {
                let ok = !name.is_empty()
                    && name.chars().count() <= MAX_INSTANCE
                    && name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
                    && name.trim() == name;
                if !ok {
                    self.error(
                        "audit.instance",
                        format!("{name:?} must be 1 to {MAX_INSTANCE} printable ASCII characters, without leading or trailing spaces (it names this replica in every audit line)"),
                    );
                    return None;
                }
                name.clone()
            }
            None => match host_name() {
                Some(h) => h,
                None => {
                    self.error(
                        "audit.instance",
                        "not set, and the host name cannot be read: name this replica (e.g. instance = \"passerelle-1\")",
                    );
                    return None;
                }
            },
        };
        Some(Audit {
            path,
            rotate_bytes: a.rotate_bytes,
            rotate_daily: a.rotate_daily,
            fsync: a.fsync,
            instance,
            sink,
        })
    }

    /// `sink` and, for PostgreSQL, its connection and failure settings. The URL is
    /// checked here (scheme, host, user, database, no password, known parameters) so that
    /// `check` names a mistake before `run` tries to connect.
    fn audit_sink(&mut self, a: &file::AuditSection, path: &Path) -> Option<AuditSink> {
        let postgres_only = [
            ("audit.url", a.url.is_some()),
            ("audit.password_file", a.password_file.is_some()),
            ("audit.ca_file", a.ca_file.is_some()),
            ("audit.spool", a.spool.is_some()),
        ];
        match a.sink.as_str() {
            "file" => {
                for (field, set) in postgres_only {
                    if set {
                        self.error(
                            field,
                            "only for sink = \"postgres\" (the trail is the file at audit.path)",
                        );
                    }
                }
                Some(AuditSink::File)
            }
            "postgres" => self.postgres_audit(a, path).map(AuditSink::Postgres),
            other => {
                self.error(
                    "audit.sink",
                    format!("{other:?}: use \"file\" (the JSONL trail at audit.path) or \"postgres\" (a table, with audit.url)"),
                );
                None
            }
        }
    }

    fn postgres_audit(&mut self, a: &file::AuditSection, path: &Path) -> Option<PostgresAudit> {
        let Some(text) = &a.url else {
            self.error(
                "audit.url",
                "sink = \"postgres\" needs the database: url = \"postgres://passerelle@db.example:5432/passerelle\"",
            );
            return None;
        };
        let url = match url::Url::parse(text) {
            Ok(u) => u,
            Err(e) => {
                self.error("audit.url", format!("{text:?} is not a URL: {e}"));
                return None;
            }
        };
        let mut ok = true;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            self.error(
                "audit.url",
                format!("{text:?}: the scheme must be postgres://"),
            );
            ok = false;
        }
        if url.password().is_some() {
            // Nothing more is said of this URL: the messages would repeat the password.
            self.error(
                "audit.url",
                "no password in the URL (it would be in the configuration and in logs): put it in audit.password_file (0600)",
            );
            return None;
        }
        if url.username().is_empty() {
            self.error(
                "audit.url",
                format!("{text:?} names no user: postgres://USER@host:port/database"),
            );
            ok = false;
        }
        if url.host_str().is_none_or(str::is_empty) {
            self.error("audit.url", format!("{text:?} names no host"));
            ok = false;
        }
        if url.path().trim_start_matches('/').is_empty() {
            self.error(
                "audit.url",
                format!("{text:?} names no database: postgres://user@host:port/DATABASE"),
            );
            ok = false;
        }
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), value.as_ref()) {
                ("sslmode", "disable" | "prefer" | "require") => {}
                ("sslmode", other) => {
                    self.error(
                        "audit.url",
                        format!("sslmode={other}: use disable, prefer or require (require verifies the server's certificate and name against audit.ca_file or the system's CAs)"),
                    );
                    ok = false;
                }
                ("connect_timeout" | "application_name", _) => {}
                (other, _) => {
                    self.error(
                        "audit.url",
                        format!("unknown parameter {other:?}: only sslmode, connect_timeout and application_name are read"),
                    );
                    ok = false;
                }
            }
        }
        let password = match &a.password_file {
            None => None,
            Some(file) => {
                let file = self.resolve(file);
                self.check_secret_permissions("audit.password_file", &file);
                match std::fs::read_to_string(&file) {
                    Ok(text) => {
                        let text = zeroize::Zeroizing::new(text);
                        let password = text.trim_end_matches(['\r', '\n']);
                        if password.is_empty() {
                            self.error(
                                "audit.password_file",
                                format!("{} is empty", file.display()),
                            );
                            ok = false;
                        }
                        Some(zeroize::Zeroizing::new(password.to_string()))
                    }
                    Err(e) => {
                        self.error(
                            "audit.password_file",
                            format!("cannot read {}: {e}", file.display()),
                        );
                        ok = false;
                        None
                    }
                }
            }
        };
        let ca_file = a.ca_file.as_ref().map(|f| self.resolve(f));
        if let Some(ca) = &ca_file {
            match std::fs::read(ca).map(|pem| openssl::x509::X509::stack_from_pem(&pem)) {
                Ok(Ok(certs)) if !certs.is_empty() => {}
                Ok(_) => {
                    self.error(
                        "audit.ca_file",
                        format!("{} holds no PEM certificate", ca.display()),
                    );
                    ok = false;
                }
                Err(e) => {
                    self.error(
                        "audit.ca_file",
                        format!("cannot read {}: {e}", ca.display()),
                    );
                    ok = false;
                }
            }
        }
        let on_failure = match a.on_failure.as_str() {
            "spool" => OnAuditFailure::Spool,
            "refuse" => OnAuditFailure::Refuse,
            other => {
                self.error(
                    "audit.on_failure",
                    format!("{other:?}: use \"spool\" (served, records kept locally and replayed) or \"refuse\" (requests refused while the database is unreachable)"),
                );
                return None;
            }
        };
        let spool = match &a.spool {
            Some(p) => self.resolve(p),
            None => path.with_extension("spool.jsonl"),
        };
        ok.then(|| PostgresAudit {
            url: text.clone(),
            password,
            ca_file,
            on_failure,
            spool,
        })
    }

    /// What `run` will do with the trail, checked ahead: create the missing folders
    /// (0700), then create or append to the file (0600) and rename it on rotation;
    /// refuse a folder or file that group or others may write.
    fn audit_path(&mut self, field: &str, path: &Path) {
        let shown = path.display();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            Some(_) => Path::new("."),
            None => {
                self.error(field, format!("{shown} names no file"));
                return;
            }
        };
        match std::fs::metadata(path) {
            Ok(meta) if !meta.is_file() => {
                self.error(
                    field,
                    format!(
                        "{shown} exists and is not a file: name the trail's file, not its folder"
                    ),
                );
                return;
            }
            Ok(_) => {
                if let Err(e) = allowed(path, Access::WRITE_OK) {
                    self.error(
                        field,
                        format!("{shown} exists but this process cannot write it ({e}): give it to the user Passerelle runs as"),
                    );
                }
                self.refuse_shared_write(field, path, "the trail");
            }
            // Missing, or under a file (reported below, with the file named).
            Err(e) if missing(&e) => {}
            Err(e) => {
                self.error(field, format!("{shown}: {e}"));
                return;
            }
        }
        // The nearest folder that exists: the trail's own, or the one its missing
        // folders will be created in.
        let mut existing = dir;
        loop {
            match std::fs::metadata(existing) {
                Ok(meta) if meta.is_dir() => break,
                Ok(_) => {
                    self.error(
                        field,
                        format!(
                            "{} is not a folder, so {shown} cannot be created",
                            existing.display()
                        ),
                    );
                    return;
                }
                Err(e) if missing(&e) => match existing.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
                    Some(_) => existing = Path::new("."),
                    None => return,
                },
                Err(e) => {
                    self.error(field, format!("{}: {e}", existing.display()));
                    return;
                }
            }
        }
        if let Err(e) = allowed(existing, Access::WRITE_OK | Access::EXEC_OK) {
            let what = if existing == dir {
                "create the trail (and its rotated files) in it"
            } else {
                "create the trail's folder in it"
            };
            self.error(
                field,
                format!(
                    "this process cannot {what}: {} is not writable ({e})",
                    existing.display()
                ),
            );
        }
        if existing == dir {
            self.refuse_shared_write(field, dir, "the trail's folder");
        }
    }

    fn refuse_shared_write(&mut self, field: &str, path: &Path, what: &str) {
        if let Ok(Some(mode)) = shared_write_mode(path) {
            self.error(
                field,
                format!(
                    "{what} {} is writable by group or others (mode {mode:04o}): Passerelle refuses to start; run `chmod go-w` on it (the audit trail is the record of who accessed which patient)",
                    path.display()
                ),
            );
        }
    }
}

pub(super) fn missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// This host's name (uname's nodename), when it is a usable instance name.
fn host_name() -> Option<String> {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_str().ok()?.trim().to_string();
    let ok = !name.is_empty()
        && name.len() <= MAX_INSTANCE
        && name.chars().all(|c| c.is_ascii_graphic());
    ok.then_some(name)
}
