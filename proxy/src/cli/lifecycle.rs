//! What `passerelle csr` and `passerelle install` share: finding a (tenant, role) in the
//! configuration file, the folders they keep next to it, and writing files atomically.
//!
//! Layout, next to the configuration file (`<dir>`):
//!
//! ```text
//! <dir>/pending/<tenant>/<role>/key.pem    the key `csr` made, 0600 (folders 0700)
//! <dir>/pending/<tenant>/<role>/csr.pem    its CSR (public)
//! <dir>/previous/<tenant>/<role>/<UTC>/    the set `install` replaced: cert.pem, chain.pem,
//!                                          key.pem, or pkcs12.p12 + password (all 0600)
//! ```
//!
//! The pending key is the only copy of a key whose certificate is on order: it is never
//! printed or logged, and `csr` refuses to overwrite it without `--force`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use passerelle_config::file::{CertSource, ConfigFile};
use passerelle_config::{CertRole, TenantId};

/// A certificate role as the command line names it.
/// Spelled as the configuration keys (`dmp_auth`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum RoleArg {
    /// ORG AUTH_CLI for mutual TLS with the DMP.
    DmpAuth,
    /// ORG SIGN for VIHF and submission-lot signatures.
    DmpSign,
    /// ORG AUTH_CLI with CN INSI-AUTO.
    InsiAuto,
    /// ORG AUTH_CLI with CN INSI-MANU.
    InsiManu,
    /// ORG AUTH_CLI for the `[[services]]`.
    OrgAuth,
}

impl From<RoleArg> for CertRole {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::DmpAuth => Self::DmpAuth,
            RoleArg::DmpSign => Self::DmpSign,
            RoleArg::InsiAuto => Self::InsiAuto,
            RoleArg::InsiManu => Self::InsiManu,
            RoleArg::OrgAuth => Self::OrgAuth,
        }
    }
}

/// Why a lifecycle command stopped. Every message names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: tenant {tenant:?} is not configured (tenants: {known})", config.display())]
    UnknownTenant {
        config: PathBuf,
        tenant: String,
        known: String,
    },
    #[error(
        "{}: tenant {tenant} has no [tenants.certificates.{role}] entry: add it (the files it names may not exist yet), install writes where it says",
        config.display()
    )]
    RoleNotConfigured {
        config: PathBuf,
        tenant: String,
        role: CertRole,
    },
    #[error("{0}")]
    Usage(String),
    #[error("OpenSSL failed while {context}: {source}")]
    OpenSsl {
        context: &'static str,
        source: openssl::error::ErrorStack,
    },
}

impl LifecycleError {
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        Self::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn openssl(context: &'static str) -> impl FnOnce(openssl::error::ErrorStack) -> Self {
        move |source| Self::OpenSsl { context, source }
    }
}

/// One (tenant, role) of the configuration file, as written.
#[derive(Debug)]
pub struct Entry {
    pub config: PathBuf,
    /// The configuration's folder: relative paths resolve from it, and the pending and
    /// previous areas live in it.
    pub base: PathBuf,
    pub tenant: TenantId,
    /// Its position in `[[tenants]]` (problems name it `tenants[<index>]`).
    pub index: usize,
    pub structure_id: String,
    pub role: CertRole,
    pub source: CertSource,
    /// The tenant's other configured sources (for `csr`'s O and ST defaults).
    pub others: Vec<(CertRole, CertSource)>,
}

impl Entry {
    /// Reads the configuration file and finds `tenant`'s `role` entry. Only the TOML is
    /// read here; the full check runs later on the candidate files.
    pub fn find(config: &Path, tenant: &str, role: CertRole) -> Result<Self, LifecycleError> {
        let text = fs::read_to_string(config).map_err(LifecycleError::io(config))?;
        let file: ConfigFile = toml::from_str(&text).map_err(|e| {
            LifecycleError::file(
                config,
                format!(
                    "not a valid configuration ({}): run passerelle check",
                    e.message()
                ),
            )
        })?;
        let known = || {
            file.tenants
                .iter()
                .map(|t| t.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some((index, t)) = file
            .tenants
            .iter()
            .enumerate()
            .find(|(_, t)| t.id == tenant)
        else {
            return Err(LifecycleError::UnknownTenant {
                config: config.to_path_buf(),
                tenant: tenant.to_string(),
                known: known(),
            });
        };
        // The id becomes a folder name: only a valid tenant id may.
        let id: TenantId = t
            .id
            .parse()
            .map_err(|e: passerelle_config::IdError| LifecycleError::file(config, e.to_string()))?;
        let c = &t.certificates;
        let all = [
            (CertRole::DmpAuth, &c.dmp_auth),
            (CertRole::DmpSign, &c.dmp_sign),
            (CertRole::InsiAuto, &c.insi_auto),
            (CertRole::InsiManu, &c.insi_manu),
            (CertRole::OrgAuth, &c.org_auth),
        ];
        let source = all
            .iter()
            .find(|(r, _)| *r == role)
            .and_then(|(_, s)| (*s).clone())
            .ok_or_else(|| LifecycleError::RoleNotConfigured {
                config: config.to_path_buf(),
                tenant: tenant.to_string(),
                role,
            })?;
        let others = all
            .iter()
            .filter(|(r, _)| *r != role)
            .filter_map(|(r, s)| Some((*r, (*s).clone()?)))
            .collect();
        let base = config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Ok(Self {
            config: config.to_path_buf(),
            base,
            tenant: id,
            index,
            structure_id: t.structure_id.clone(),
            role,
            source,
            others,
        })
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// `<dir>/pending/<tenant>/<role>`.
    pub fn pending_dir(&self) -> PathBuf {
        self.base
            .join("pending")
            .join(self.tenant.as_str())
            .join(self.role.config_key())
    }

    /// `<dir>/previous/<tenant>/<role>`.
    pub fn previous_dir(&self) -> PathBuf {
        self.base
            .join("previous")
            .join(self.tenant.as_str())
            .join(self.role.config_key())
    }
}

/// Creates `dir` and its missing parents with mode 0700, and refuses a symbolic link
/// or a folder others can enter where a private folder is expected.
pub fn private_dir(dir: &Path) -> Result<(), LifecycleError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(LifecycleError::io(dir))?;
    let meta = fs::symlink_metadata(dir).map_err(LifecycleError::io(dir))?;
    if !meta.is_dir() {
        return Err(LifecycleError::file(
            dir,
            "is not a folder (a symbolic link?): refused for private key material",
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(LifecycleError::io(dir))?;
    }
    Ok(())
}

/// Writes `bytes` to a new file `path` with `mode` (set at creation, so a key is never
/// readable by others even for an instant), flushed to disk. Fails if it exists.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), LifecycleError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(LifecycleError::io(path))?;
    f.write_all(bytes).map_err(LifecycleError::io(path))?;
    f.sync_all().map_err(LifecycleError::io(path))?;
    Ok(())
}

/// A temporary name beside `target`, in the same folder (so a rename is atomic) and
/// out of the file watch (which follows only the names the configuration gives).
pub fn temp_beside(target: &Path, tag: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.{tag}-{}.tmp", std::process::id()))
}

/// Flushes a folder's entries (the renames in it) to disk.
pub fn sync_dir(dir: &Path) -> Result<(), LifecycleError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LifecycleError::io(dir))
}

/// The most a delivered file (certificate, chain, PKCS#12, password) may weigh: a
/// chain is a few KiB, so anything near this is not what the portal delivered.
const MAX_INPUT: u64 = 1 << 20;

/// Reads an operator-given file: a regular file (not a FIFO or a device, which could
/// block or never end) of at most 1 MiB.
pub fn read_input(path: &Path) -> Result<Vec<u8>, LifecycleError> {
    let meta = fs::metadata(path).map_err(LifecycleError::io(path))?;
    if !meta.is_file() {
        return Err(LifecycleError::file(path, "is not a regular file"));
    }
    if meta.len() > MAX_INPUT {
        return Err(LifecycleError::file(
            path,
            format!(
                "is {} bytes: too large for a certificate, chain or PKCS#12 (at most 1 MiB)",
                meta.len()
            ),
        ));
    }
    fs::read(path).map_err(LifecycleError::io(path))
}

/// The UTC time as a folder name that sorts in time order: `20261201T081500Z`.
pub fn utc_stamp() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
