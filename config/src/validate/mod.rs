//! Validation: turns the [`file`](crate::file) model into the typed
//! [`model`](crate::model), reporting every problem at once.
//!
//! [`Validator`] carries the state of one check (the configuration path, the clock,
//! the problems and certificate rows found so far) and the helpers every area shares:
//! recording problems, resolving paths, parsing addresses, URLs, durations and
//! timeouts, and checking secret file permissions. The entry points and the pass over
//! the whole file are in `run`; each area of the file has its own module.

mod audit;
mod capture;
mod certificates;
mod clients;
mod crl_download;
mod dmp;
mod egress;
mod insi;
mod limits;
mod listener;
mod ocsp;
mod run;
mod services;
mod software;
mod tenants;
#[cfg(test)]
mod tests;
mod trust;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;

use crate::file::TimeoutsSection;
use crate::model::Timeouts;
use crate::report::{CertificateReport, Problem, Severity};

pub use audit::shared_write_mode;
pub use capture::MAX_CAPTURE_WINDOW_DAYS;
pub use run::{Candidate, ConfigError, Inspection, inspect, inspect_at, inspect_candidate, load};

struct Validator {
    config_path: PathBuf,
    base: PathBuf,
    now: OffsetDateTime,
    problems: Vec<Problem>,
    certificates: Vec<CertificateReport>,
    allow_insecure_keys: bool,
    expiry_warning_days: u32,
    /// Files checked in place of one (tenant, role)'s configured ones.
    candidate: Option<Candidate>,
    /// The download folder's CRLs (DER), added to every upstream's trust.
    downloaded_crls: Vec<Vec<u8>>,
    /// Every CRL read, once each.
    crls_in_use: Vec<crate::model::CrlInUse>,
}

impl Validator {
    fn problem(&mut self, severity: Severity, file: Option<&Path>, field: &str, message: String) {
        self.problems.push(Problem {
            severity,
            file: file.map_or_else(|| self.config_path.clone(), Path::to_path_buf),
            field: field.to_string(),
            message,
            certificate: None,
            disables: false,
        });
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.problem(Severity::Error, None, field, message.into());
    }

    fn warning(&mut self, field: &str, message: impl Into<String>) {
        self.problem(Severity::Warning, None, field, message.into());
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// An address to listen on: `ip:port`, or `name:port` resolved once, here (the
    /// first loopback address the name resolves to, else its first address).
    fn socket_addr(&mut self, field: &str, value: &str) -> Option<SocketAddr> {
        if let Ok(a) = value.parse() {
            return Some(a);
        }
        let shape = || {
            format!(
                "{value:?} is not an address of the form host:port (e.g. \"127.0.0.1:8080\" or \"localhost:8080\")"
            )
        };
        let Some((host, port)) = value.rsplit_once(':') else {
            self.error(field, shape());
            return None;
        };
        if host.is_empty() || host.contains(':') || port.parse::<u16>().is_err() {
            self.error(field, shape());
            return None;
        }
        use std::net::ToSocketAddrs;
        match value.to_socket_addrs() {
            Ok(found) => {
                let found: Vec<SocketAddr> = found.collect();
                // IPv4 loopback first: `localhost` resolving to ::1 first would leave
                // clients of 127.0.0.1 (and 127.0.0.0/8 source rules) refused.
                let chosen = found
                    .iter()
                    .find(|a| a.is_ipv4() && a.ip().is_loopback())
                    .or_else(|| found.iter().find(|a| a.ip().is_loopback()))
                    .or_else(|| found.iter().find(|a| a.is_ipv4()))
                    .or(found.first())
                    .copied();
                if chosen.is_none() {
                    self.error(field, format!("host name {host:?} resolves to no address"));
                }
                chosen
            }
            Err(e) => {
                self.error(
                    field,
                    format!("cannot resolve host name {host:?}: {e} (give an IP address, or a name this host resolves)"),
                );
                None
            }
        }
    }

    fn https_url(&mut self, field: &str, value: &str) -> Option<url::Url> {
        match url::Url::parse(value) {
            Ok(u) if u.scheme() == "https" && u.host().is_some() && u.query().is_none() => Some(u),
            Ok(_) => {
                self.error(
                    field,
                    format!("{value:?} must be an https:// URL with a host and no query"),
                );
                None
            }
            Err(e) => {
                self.error(field, format!("{value:?} is not a URL: {e}"));
                None
            }
        }
    }

    fn duration(&mut self, field: &str, value: &str) -> Option<Duration> {
        match humantime::parse_duration(value) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                self.error(
                    field,
                    format!(
                        "{value:?} is not a positive duration such as \"30s\", \"500ms\" or \"2m\""
                    ),
                );
                None
            }
        }
    }

    fn timeouts(&mut self, section: &str, t: &TimeoutsSection) -> Option<Timeouts> {
        let mut parse =
            |name: &str, value: &str| self.duration(&format!("{section}.timeouts.{name}"), value);
        let connect = parse("connect", &t.connect);
        let tls = parse("tls", &t.tls);
        let request = parse("request", &t.request);
        let idle = parse("idle", &t.idle);
        Some(Timeouts {
            connect: connect?,
            tls: tls?,
            request: request?,
            idle: idle?,
        })
    }

    /// A SHA-256 written in hexadecimal (64 digits, `:` allowed between them).
    fn sha256_hex(&mut self, field: &str, value: &str) -> Option<[u8; 32]> {
        let cleaned: String = value.chars().filter(|c| *c != ':').collect();
        let digest = hex::decode(&cleaned)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        if digest.is_none() {
            self.error(
                field,
                "must be a SHA-256 in hexadecimal (64 digits, ':' allowed)",
            );
        }
        digest
    }

    /// Key files must not be readable by group or others unless the operator opts in.
    fn check_secret_permissions(&mut self, field: &str, path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            let (severity, advice) = if self.allow_insecure_keys {
                (
                    Severity::Warning,
                    "accepted because security.allow_insecure_key_permissions = true",
                )
            } else {
                (
                    Severity::Error,
                    "run `chmod 600` on it (or set security.allow_insecure_key_permissions = true)",
                )
            };
            self.problem(
                severity,
                Some(path),
                field,
                format!("secret file is readable by group or others (mode {mode:04o}): {advice}"),
            );
        }
    }
}
