//! `[audit]`: where the trail goes, checked without creating or changing anything (the
//! folder exists or can be created, this process may write there, no one else may),
//! and the name of this replica written in every line.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustix::fs::{Access, AtFlags};

use super::Validator;
use crate::file;
use crate::model::Audit;

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
        self.audit_path(&path);
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
        })
    }

    /// What `run` will do with the trail, checked ahead: create the missing folders
    /// (0700), then create or append to the file (0600) and rename it on rotation;
    /// refuse a folder or file that group or others may write.
    fn audit_path(&mut self, path: &Path) {
        let field = "audit.path";
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
