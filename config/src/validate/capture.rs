//! `[capture]`: the homologation capture. Which clients (and, optionally, tenants) are
//! captured, until when, and where the files go. The window must be short (the files
//! hold patient data): an `until` more than [`MAX_CAPTURE_WINDOW_DAYS`] days ahead is
//! refused, one already past is only a warning (the capture is simply off). The folder
//! is checked as the audit trail's is, without creating anything: one that group or
//! others may write is refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rustix::fs::Access;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Validator;
use super::audit::{allowed, missing, shared_write_mode};
use crate::file::CaptureSection;
use crate::ids::TenantId;
use crate::model::{Capture, InternalClient, Tenant};

/// The furthest `until` accepted, in days from now: a capture is for a homologation
/// session, not a standing setting.
pub const MAX_CAPTURE_WINDOW_DAYS: i64 = 7;

/// The folder used when `dir` is left out, next to the configuration.
const DEFAULT_DIR: &str = "capture";

impl Validator {
    pub(super) fn capture(
        &mut self,
        c: &CaptureSection,
        clients: &[InternalClient],
        tenants: &[Tenant],
    ) -> Option<Capture> {
        let mut ok = true;
        if c.clients.is_empty() {
            self.error(
                "capture.clients",
                "must name at least one [[clients]] name: the capture is per client",
            );
            ok = false;
        }
        let mut names = BTreeSet::new();
        for name in &c.clients {
            if clients.iter().any(|k| &k.name == name) {
                names.insert(name.clone());
            } else {
                self.error(
                    "capture.clients",
                    format!("{name:?} is not the name of a [[clients]] entry"),
                );
                ok = false;
            }
        }
        let mut ids = BTreeSet::new();
        for id in &c.tenants {
            match id.parse::<TenantId>() {
                Ok(t) if tenants.iter().any(|k| k.id == t) => {
                    ids.insert(t);
                }
                _ => {
                    self.error(
                        "capture.tenants",
                        format!("{id:?} is not the id of a [[tenants]] entry"),
                    );
                    ok = false;
                }
            }
        }
        let until = self.capture_until(c.until.as_deref());
        let dir = self.resolve(c.dir.as_deref().unwrap_or(Path::new(DEFAULT_DIR)));
        ok &= self.capture_dir(&dir);
        Some(Capture {
            clients: names,
            tenants: ids,
            until: until?,
            dir,
        })
        .filter(|_| ok)
    }

    fn capture_until(&mut self, until: Option<&str>) -> Option<OffsetDateTime> {
        let field = "capture.until";
        let Some(text) = until else {
            self.error(
                field,
                "required: when the capture stops by itself (RFC 3339, e.g. \"2026-12-01T18:00:00Z\")",
            );
            return None;
        };
        let Ok(until) = OffsetDateTime::parse(text, &Rfc3339) else {
            self.error(
                field,
                format!(
                    "{text:?} is not an RFC 3339 date and time such as \"2026-12-01T18:00:00Z\""
                ),
            );
            return None;
        };
        if until <= self.now {
            self.warning(
                field,
                format!("{text} is past: nothing is captured (remove [capture] once the homologation is over)"),
            );
        } else if until - self.now > time::Duration::days(MAX_CAPTURE_WINDOW_DAYS) {
            self.error(
                field,
                format!("{text} is more than {MAX_CAPTURE_WINDOW_DAYS} days ahead: captures hold patient data, keep them to the homologation session"),
            );
            return None;
        }
        Some(until)
    }

    /// The folder exists and is a folder only its owner may write, or can be created in
    /// a folder this process may write.
    fn capture_dir(&mut self, dir: &PathBuf) -> bool {
        let field = "capture.dir";
        let shown = dir.display();
        let mut existing: &Path = dir;
        loop {
            match std::fs::metadata(existing) {
                Ok(meta) if meta.is_dir() => break,
                Ok(_) => {
                    self.error(
                        field,
                        format!(
                            "{} is not a folder, so {shown} cannot be used",
                            existing.display()
                        ),
                    );
                    return false;
                }
                Err(e) if missing(&e) => match existing.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
                    _ => return true,
                },
                Err(e) => {
                    self.error(field, format!("{}: {e}", existing.display()));
                    return false;
                }
            }
        }
        if let Err(e) = allowed(existing, Access::WRITE_OK | Access::EXEC_OK) {
            self.error(
                field,
                format!("this process cannot write in {} ({e})", existing.display()),
            );
            return false;
        }
        if existing == dir.as_path()
            && let Ok(Some(mode)) = shared_write_mode(dir)
        {
            self.error(
                field,
                format!("{shown} is writable by group or others (mode {mode:04o}): Passerelle refuses it; run `chmod 700` on it (the captures hold patient data)"),
            );
            return false;
        }
        true
    }
}
