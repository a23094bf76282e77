//! `passerelle install`: puts a renewed certificate in service, or rolls back to the
//! previous set.
//!
//! 1. Reads what the IGC-Santé portal delivered: a certificate in PEM, DER or PKCS#7
//!    (`.p7b`, PEM or DER), with an optional `--chain`, matched with the key `passerelle
//!    csr` left in the pending area; or a PKCS#12 the portal generated (`--p12` with
//!    `--password-file`).
//! 2. Checks the delivery itself: one certificate for the key, a chain that links.
//! 3. Writes the new files to temporary names beside those the configuration names
//!    (same folder, so the final rename is atomic), and runs every `passerelle check`
//!    rule on them through [`passerelle_config::inspect_candidate`] (role, key usages,
//!    CN, OU, anchors, validity, CRLs, uniqueness, DMP pairing). Any error: the
//!    temporary files go, nothing was replaced.
//! 4. Keeps the set in place under `previous/<tenant>/<role>/<UTC time>/` (0700/0600),
//!    then renames each new file over the old one, key first. The running Passerelle
//!    reloads on its file watch. The watch acts only once the files have stayed
//!    unchanged for a whole period, and a reload that would pair a key with another
//!    certificate is refused (the running pair stays), so no request sees a half
//!    installed pair.
//!
//! `--rollback` restores the newest set under `previous/` the same way (checked, then
//! renamed in), keeping the set it replaces under `<UTC time>-rolled-back`; the
//! restored folder is renamed `...-restored` so that another rollback goes one set
//! further back.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use openssl::pkcs7::Pkcs7;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509, X509VerifyResult};
use passerelle_config::file::CertSource;
use passerelle_config::{Candidate, CertRole, CertificateInfo, CertificateKey, Severity};
use zeroize::Zeroizing;

use super::lifecycle::{
    Entry, LifecycleError, RoleArg, private_dir, read_input, sync_dir, temp_beside, utc_stamp,
    write_new,
};

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Configuration file (TOML): the files it names for the tenant's role are replaced.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The tenant (`[[tenants]] id`).
    #[arg(long, value_name = "ID")]
    tenant: String,
    /// The certificate role.
    #[arg(long, value_enum)]
    role: RoleArg,
    /// The certificate the portal delivered for the pending key (`passerelle csr`):
    /// PEM, DER, or PKCS#7 (.p7b) with its chain.
    #[arg(value_name = "CERT", required_unless_present_any = ["p12", "rollback"])]
    cert: Option<PathBuf>,
    /// The intermediate certificates, if delivered apart (PEM, DER or PKCS#7).
    #[arg(long, value_name = "FILE", requires = "cert")]
    chain: Option<PathBuf>,
    /// A PKCS#12 the portal generated (key included) instead of CERT.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "cert",
        requires = "password_file"
    )]
    p12: Option<PathBuf>,
    /// The file holding the PKCS#12's password (trailing newline ignored).
    #[arg(long, value_name = "FILE", requires = "p12")]
    password_file: Option<PathBuf>,
    /// Restore the set the last install replaced.
    #[arg(long, conflicts_with_all = ["cert", "p12"])]
    rollback: bool,
}

/// Why `install` refused. Nothing was replaced in either case.
#[derive(Debug, thiserror::Error)]
enum InstallError {
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(
        "refused, nothing replaced: the new {role} certificate of tenant {tenant} fails the checks of passerelle check:\n{}",
        problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
    )]
    Checks {
        tenant: String,
        role: CertRole,
        problems: Vec<String>,
    },
}

/// One file of a certificate set: the configuration key naming it, where it is, its
/// name in a kept set, and its mode.
#[derive(Debug, Clone)]
struct Slot {
    field: &'static str,
    target: PathBuf,
    kept_as: &'static str,
    mode: u32,
}

/// The files a role's entry names.
#[derive(Debug)]
enum Layout {
    Pem {
        cert: Slot,
        chain: Option<Slot>,
        key: Slot,
    },
    Pkcs12 {
        p12: Slot,
        password: Slot,
    },
}

impl Layout {
    fn of(entry: &Entry) -> Result<Self, LifecycleError> {
        let s = &entry.source;
        let slot = |field, p: &Path, kept_as, mode| Slot {
            field,
            target: entry.resolve(p),
            kept_as,
            mode,
        };
        if s.pkcs11.is_some() {
            return Err(LifecycleError::file(
                &entry.config,
                format!(
                    "tenant {} {}: the key is in a PKCS#11 token; install handles file keys only: put the new certificate in `cert` / `chain` and the table `passerelle csr --pkcs11` wrote (pending/.../pkcs11.toml) in place of the role's, then passerelle check and reload",
                    entry.tenant, entry.role
                ),
            ));
        }
        match (&s.cert, &s.key, &s.pkcs12, &s.password_file) {
            (Some(cert), Some(key), None, None) => Ok(Self::Pem {
                cert: slot("cert", cert, "cert.pem", 0o644),
                chain: s
                    .chain
                    .as_deref()
                    .map(|c| slot("chain", c, "chain.pem", 0o644)),
                key: slot("key", key, "key.pem", 0o600),
            }),
            (None, None, Some(p12), Some(password)) => Ok(Self::Pkcs12 {
                p12: slot("pkcs12", p12, "pkcs12.p12", 0o600),
                password: slot("password_file", password, "password", 0o600),
            }),
            _ => Err(LifecycleError::file(
                &entry.config,
                format!(
                    "tenant {} {}: give either cert + key (+ chain) or pkcs12 + password_file (passerelle check says more)",
                    entry.tenant, entry.role
                ),
            )),
        }
    }

    /// In the order they are renamed in: the key (or PKCS#12) first.
    fn slots(&self) -> Vec<&Slot> {
        match self {
            Self::Pem { cert, chain, key } => {
                let mut v = vec![key];
                v.extend(chain);
                v.push(cert);
                v
            }
            Self::Pkcs12 { p12, password } => vec![p12, password],
        }
    }
}

/// A new file for a slot, and the input it comes from (what error messages name).
struct NewFile {
    slot: Slot,
    bytes: Zeroizing<Vec<u8>>,
    origin: PathBuf,
    temp: PathBuf,
}

/// Leaf, key and linked intermediates (nearest first, no self-signed root).
struct Delivered {
    leaf: X509,
    chain: Vec<X509>,
    key: PKey<Private>,
    leaf_origin: PathBuf,
    key_origin: PathBuf,
    /// For a PKCS#12 delivered into a PKCS#12 entry: its bytes and password, as is.
    p12: Option<(Vec<u8>, Zeroizing<Vec<u8>>, PathBuf)>,
}

pub fn run(args: &InstallArgs) -> ExitCode {
    match install(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("passerelle install: {e}");
            ExitCode::FAILURE
        }
    }
}

fn install(args: &InstallArgs) -> Result<(), InstallError> {
    let role = CertRole::from(args.role);
    let entry = Entry::find(&args.config, &args.tenant, role)?;
    let layout = Layout::of(&entry)?;
    let slots = layout.slots();
    for slot in &slots {
        refuse_symlink(slot)?;
    }
    // One file for two keys (a combined PEM): written apart, each would erase the other.
    for (i, a) in slots.iter().enumerate() {
        if let Some(b) = slots[i + 1..].iter().find(|b| b.target == a.target) {
            return Err(LifecycleError::file(
                &a.target,
                format!(
                    "{} and {} name the same file: install writes them apart, give each its own file",
                    a.field, b.field
                ),
            )
            .into());
        }
    }
    // Two installs of one (tenant, role) at once would interleave their renames and
    // kept sets: the second is refused while the first runs.
    let _lock = lock(&entry)?;
    if args.rollback {
        return rollback(&entry, &layout);
    }
    let delivered = match (&args.cert, &args.p12, &args.password_file) {
        (Some(cert), None, _) => from_certificate(&entry, cert, args.chain.as_deref())?,
        (None, Some(p12), Some(password)) => from_pkcs12(p12, password)?,
        _ => {
            return Err(LifecycleError::Usage(
                "give CERT, or --p12 FILE --password-file FILE, or --rollback".into(),
            )
            .into());
        }
    };
    let files = render(&layout, &delivered)?;
    let before = serial_of(&entry);
    let checked = stage_and_check(&entry, &layout, files)?;
    let kept = keep_current(&entry, &layout, &utc_stamp())?;
    replace(&checked, kept.as_deref())?;
    if args.cert.is_some() {
        // The key is in service now; the pending copy would only be a second copy.
        let pending = entry.pending_dir();
        let _ = fs::remove_file(pending.join("key.pem"));
        let _ = fs::remove_file(pending.join("csr.pem"));
        let _ = fs::remove_dir(&pending);
    }
    let kept = kept.map(|k| {
        format!(
            "previous set kept in {} (passerelle install --rollback restores it)",
            k.display()
        )
    });
    report(&entry, before, kept, "installed");
    Ok(())
}

/// `previous/<tenant>/<role>/.lock`, created exclusively and holding our pid; removed
/// when dropped. A lock whose process is gone (a crash) is taken over. (File locks on
/// the handle need Rust 1.89, above this workspace's MSRV.)
struct InstallLock(PathBuf);

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn lock(entry: &Entry) -> Result<InstallLock, LifecycleError> {
    let dir = entry.previous_dir();
    private_dir(&dir)?;
    let path = dir.join(".lock");
    for _ in 0..2 {
        match write_new(&path, std::process::id().to_string().as_bytes(), 0o600) {
            Ok(()) => return Ok(InstallLock(path)),
            Err(LifecycleError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let alive = holder
                    .trim()
                    .parse::<u32>()
                    .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                if alive {
                    return Err(LifecycleError::file(
                        &path,
                        format!(
                            "another install of this tenant's role is running (pid {}): wait for it",
                            holder.trim()
                        ),
                    ));
                }
                let _ = fs::remove_file(&path);
            }
            Err(e) => return Err(e),
        }
    }
    Err(LifecycleError::file(&path, "cannot take the install lock"))
}

/// Replacing a symbolic link would cut it (the rename puts a file in its place) and
/// leave the real file, wherever it is, unchanged: refused.
fn refuse_symlink(slot: &Slot) -> Result<(), LifecycleError> {
    match fs::symlink_metadata(&slot.target) {
        Ok(m) if m.file_type().is_symlink() => Err(LifecycleError::file(
            &slot.target,
            format!(
                "{} is a symbolic link: install replaces files by renaming over them, point the configuration at the real file",
                slot.field
            ),
        )),
        Ok(m) if !m.is_file() => Err(LifecycleError::file(
            &slot.target,
            format!("{} is not a regular file", slot.field),
        )),
        _ => match slot.target.parent() {
            Some(dir) if dir.is_dir() => Ok(()),
            _ => Err(LifecycleError::file(
                &slot.target,
                format!("{}: its folder does not exist", slot.field),
            )),
        },
    }
}

/// Every certificate of a delivered file: PEM (one or more), DER, or PKCS#7.
fn read_certificates(path: &Path) -> Result<Vec<X509>, LifecycleError> {
    let bytes = read_input(path)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(LifecycleError::file(path, "is empty"));
    }
    let certs = if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        if bytes.windows(11).any(|w| w == b"PRIVATE KEY") {
            // Said without echoing any of it.
            return Err(LifecycleError::file(
                path,
                "holds a private key, not a certificate: give the certificate the portal delivered (install reads the pending key itself)",
            ));
        }
        if bytes.windows(16).any(|w| w == b"-----BEGIN PKCS7") {
            pkcs7_certificates(path, Pkcs7::from_pem(&bytes).ok())?
        } else {
            let certs = X509::stack_from_pem(&bytes).unwrap_or_default();
            if certs.is_empty() {
                return Err(LifecycleError::file(
                    path,
                    "not a readable PEM certificate: damaged (base64 or structure) or another kind of PEM file",
                ));
            }
            certs
        }
    } else if let Ok(cert) = X509::from_der(&bytes) {
        vec![cert]
    } else if let Ok(p7) = Pkcs7::from_der(&bytes) {
        pkcs7_certificates(path, Some(p7))?
    } else if Pkcs12::from_der(&bytes).is_ok() {
        return Err(LifecycleError::file(
            path,
            "is a PKCS#12 (.p12): use --p12 FILE --password-file FILE",
        ));
    } else {
        return Err(LifecycleError::file(
            path,
            "is neither a certificate (PEM or DER) nor a PKCS#7 (.p7b): damaged or another kind of file",
        ));
    };
    if certs.is_empty() {
        return Err(LifecycleError::file(path, "holds no certificate"));
    }
    Ok(certs)
}

fn pkcs7_certificates(path: &Path, p7: Option<Pkcs7>) -> Result<Vec<X509>, LifecycleError> {
    let p7 = p7.ok_or_else(|| LifecycleError::file(path, "damaged PKCS#7"))?;
    let certs = p7
        .signed()
        .and_then(|s| s.certificates())
        .map(|s| s.iter().map(ToOwned::to_owned).collect::<Vec<_>>())
        .unwrap_or_default();
    if certs.is_empty() {
        return Err(LifecycleError::file(
            path,
            "the PKCS#7 holds no certificate",
        ));
    }
    Ok(certs)
}

fn info(cert: &X509) -> Option<CertificateInfo> {
    CertificateInfo::from_der(&cert.to_der().ok()?).ok()
}

fn subject(cert: &X509) -> String {
    info(cert).map(|i| i.subject).unwrap_or_default()
}

fn is_self_signed(cert: &X509) -> bool {
    cert.issued(cert) == X509VerifyResult::OK
        && cert
            .public_key()
            .is_ok_and(|k| cert.verify(&k).unwrap_or(false))
}

/// Finds the leaf for `key` among `certs` and orders the rest from it upwards; refuses
/// several end-entity certificates and certificates off the path.
fn link(
    certs: Vec<(X509, PathBuf)>,
    key: &PKey<Private>,
    key_origin: &Path,
) -> Result<(X509, PathBuf, Vec<X509>), LifecycleError> {
    let mut pool: Vec<(X509, PathBuf)> = Vec::new();
    for (c, origin) in certs {
        let der = c.to_der().ok();
        if !pool.iter().any(|(p, _)| p.to_der().ok() == der) {
            pool.push((c, origin));
        }
    }
    let leaves: Vec<usize> = (0..pool.len())
        .filter(|i| info(&pool[*i].0).is_some_and(|inf| !inf.is_ca))
        .collect();
    if leaves.len() > 1 {
        let names: Vec<String> = leaves
            .iter()
            .map(|i| format!("{:?}", subject(&pool[*i].0)))
            .collect();
        return Err(LifecycleError::file(
            &pool[leaves[0]].1,
            format!(
                "holds {} end-entity certificates ({}): give the one certificate for this role",
                leaves.len(),
                names.join(", ")
            ),
        ));
    }
    let position = pool
        .iter()
        .position(|(c, _)| c.public_key().is_ok_and(|public| public.public_eq(key)));
    let Some(position) = position else {
        let origin = pool.first().map(|(_, o)| o.clone()).unwrap_or_default();
        return Err(LifecycleError::file(
            &origin,
            format!(
                "no certificate in it is for the key {} (its public key differs): it was issued for another key, another CSR or another role",
                key_origin.display()
            ),
        ));
    };
    let (leaf, leaf_origin) = pool.remove(position);
    let mut chain = Vec::new();
    let mut current = leaf.clone();
    while let Some(i) = pool.iter().position(|(ca, _)| {
        ca.issued(&current) == X509VerifyResult::OK
            && ca
                .public_key()
                .is_ok_and(|k| current.verify(&k).unwrap_or(false))
    }) {
        let (ca, _) = pool.remove(i);
        if is_self_signed(&ca) {
            // The root: the configured anchors hold it; not sent, not written.
            break;
        }
        current = ca.clone();
        chain.push(ca);
    }
    if let Some((stray, origin)) = pool.into_iter().find(|(c, _)| !is_self_signed(c)) {
        return Err(LifecycleError::file(
            &origin,
            format!(
                "the chain does not link: {:?} is not on the path from the certificate up to its root (the certificate's issuer is {:?})",
                subject(&stray),
                info(&leaf).map(|i| i.issuer).unwrap_or_default()
            ),
        ));
    }
    Ok((leaf, leaf_origin, chain))
}

fn from_certificate(
    entry: &Entry,
    cert: &Path,
    chain: Option<&Path>,
) -> Result<Delivered, LifecycleError> {
    let key_path = entry.pending_dir().join("key.pem");
    let mut certs: Vec<(X509, PathBuf)> = read_certificates(cert)?
        .into_iter()
        .map(|c| (c, cert.to_path_buf()))
        .collect();
    if let Some(chain) = chain {
        certs.extend(
            read_certificates(chain)?
                .into_iter()
                .map(|c| (c, chain.to_path_buf())),
        );
    }
    let key_bytes = Zeroizing::new(fs::read(&key_path).map_err(|e| {
        LifecycleError::file(
            &key_path,
            format!(
                "no pending key ({e}): run `passerelle csr` first (the certificate must be for its CSR), or give --p12 for material the portal generated"
            ),
        )
    })?);
    let key = PKey::private_key_from_pem(&key_bytes)
        .map_err(|_| LifecycleError::file(&key_path, "not a PEM private key"))?;
    let (leaf, leaf_origin, chain) = link(certs, &key, &key_path)?;
    Ok(Delivered {
        leaf,
        chain,
        key,
        leaf_origin,
        key_origin: key_path,
        p12: None,
    })
}

fn from_pkcs12(p12: &Path, password_file: &Path) -> Result<Delivered, LifecycleError> {
    let bytes = read_input(p12)?;
    let password = Zeroizing::new(read_input(password_file)?);
    let text = std::str::from_utf8(&password)
        .map_err(|_| LifecycleError::file(password_file, "the password is not UTF-8 text"))?
        .trim_end_matches(['\r', '\n']);
    let parsed = Pkcs12::from_der(&bytes)
        .map_err(|_| LifecycleError::file(p12, "not a PKCS#12 (.p12) file"))?
        .parse2(text)
        .map_err(|_| {
            LifecycleError::file(
                p12,
                format!(
                    "cannot open: wrong password in {} or damaged file",
                    password_file.display()
                ),
            )
        })?;
    let key = parsed
        .pkey
        .ok_or_else(|| LifecycleError::file(p12, "holds no private key"))?;
    let certs: Vec<(X509, PathBuf)> = parsed
        .cert
        .into_iter()
        .chain(parsed.ca.into_iter().flatten())
        .map(|c| (c, p12.to_path_buf()))
        .collect();
    if certs.is_empty() {
        return Err(LifecycleError::file(p12, "holds no certificate"));
    }
    let (leaf, leaf_origin, chain) = link(certs, &key, p12)?;
    Ok(Delivered {
        leaf,
        chain,
        key,
        leaf_origin,
        key_origin: p12.to_path_buf(),
        p12: Some((bytes, password, password_file.to_path_buf())),
    })
}

/// The new files, in the form the entry names.
fn render(layout: &Layout, d: &Delivered) -> Result<Vec<NewFile>, LifecycleError> {
    let pem = |certs: &[&X509]| -> Result<Vec<u8>, LifecycleError> {
        let mut out = Vec::new();
        for c in certs {
            out.extend(
                c.to_pem()
                    .map_err(LifecycleError::openssl("encoding a certificate"))?,
            );
        }
        Ok(out)
    };
    let file = |slot: &Slot, bytes: Vec<u8>, origin: &Path| NewFile {
        slot: slot.clone(),
        bytes: Zeroizing::new(bytes),
        origin: origin.to_path_buf(),
        temp: temp_beside(&slot.target, "install"),
    };
    let mut with_chain: Vec<&X509> = vec![&d.leaf];
    with_chain.extend(d.chain.iter());
    Ok(match layout {
        Layout::Pem { cert, chain, key } => {
            let key_pem = d
                .key
                .private_key_to_pem_pkcs8()
                .map_err(LifecycleError::openssl("encoding the key as PKCS#8"))?;
            let mut files = vec![file(key, key_pem, &d.key_origin)];
            match chain {
                // As the portal's chain files: the leaf, then its intermediates.
                Some(chain) => {
                    files.push(file(chain, pem(&with_chain)?, &d.leaf_origin));
                    files.push(file(cert, pem(&[&d.leaf])?, &d.leaf_origin));
                }
                // No chain file: the certificate file carries the intermediates.
                None => files.push(file(cert, pem(&with_chain)?, &d.leaf_origin)),
            }
            files
        }
        Layout::Pkcs12 { p12, password } => {
            match &d.p12 {
                Some((bytes, pass, pass_origin)) => vec![
                    file(p12, bytes.clone(), &d.key_origin),
                    file(password, pass.to_vec(), pass_origin),
                ],
                None => {
                    // A CSR-made key into a PKCS#12 entry: sealed with the password already
                    // configured, which stays as it is.
                    let text = Zeroizing::new(fs::read_to_string(&password.target).map_err(|e| {
                    LifecycleError::file(
                        &password.target,
                        format!("cannot read the configured PKCS#12 password ({e}): write it first"),
                    )
                })?);
                    let mut stack = openssl::stack::Stack::new()
                        .map_err(LifecycleError::openssl("building the PKCS#12"))?;
                    for c in &d.chain {
                        stack
                            .push(c.clone())
                            .map_err(LifecycleError::openssl("building the PKCS#12"))?;
                    }
                    let mut builder = Pkcs12::builder();
                    builder.pkey(&d.key).cert(&d.leaf).ca(stack);
                    let der = builder
                        .build2(text.trim_end_matches(['\r', '\n']))
                        .and_then(|p| p.to_der())
                        .map_err(LifecycleError::openssl("building the PKCS#12"))?;
                    vec![
                        file(p12, der, &d.leaf_origin),
                        file(password, text.as_bytes().to_vec(), &password.target),
                    ]
                }
            }
        }
    })
}

/// Removes temporary files when dropped, unless they were renamed in.
struct Staged(Vec<NewFile>);

impl Drop for Staged {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = fs::remove_file(&f.temp);
        }
    }
}

/// Writes the new files under temporary names and checks them with every rule of
/// `passerelle check`; on an error, they are removed and nothing is replaced.
fn stage_and_check(
    entry: &Entry,
    layout: &Layout,
    files: Vec<NewFile>,
) -> Result<Staged, InstallError> {
    let staged = Staged(files);
    for f in &staged.0 {
        let _ = fs::remove_file(&f.temp);
        write_new(&f.temp, &f.bytes, f.slot.mode)?;
        same_owner(&f.temp, &f.slot.target)?;
    }
    let temp_of = |field: &str| {
        staged
            .0
            .iter()
            .find(|f| f.slot.field == field)
            .map(|f| f.temp.clone())
    };
    let source = match layout {
        Layout::Pem { .. } => CertSource {
            cert: temp_of("cert"),
            chain: temp_of("chain"),
            key: temp_of("key"),
            ..CertSource::default()
        },
        Layout::Pkcs12 { .. } => CertSource {
            pkcs12: temp_of("pkcs12"),
            password_file: temp_of("password_file"),
            ..CertSource::default()
        },
    };
    let inspection = passerelle_config::inspect_candidate(
        &entry.config,
        time::OffsetDateTime::now_utc(),
        Candidate {
            tenant: entry.tenant.to_string(),
            role: entry.role,
            source,
        },
    );
    let key = CertificateKey {
        tenant: entry.tenant.to_string(),
        role: entry.role,
    };
    // Tenant-level certificate errors (the DMP AUTH/SIGN pairing) carry no key.
    let tenant_certificates = format!("tenants[{}].certificates", entry.index);
    let mut refusals = Vec::new();
    let mut others = 0;
    for p in &inspection.problems {
        let ours = p.certificate.as_ref() == Some(&key)
            || (p.certificate.is_none() && p.field.starts_with(&tenant_certificates))
            || staged.0.iter().any(|f| f.temp == p.file);
        // Messages name the delivered file, not the temporary copy.
        let mut shown = p.clone();
        if let Some(f) = staged.0.iter().find(|f| f.temp == p.file) {
            shown.file = f.origin.clone();
        }
        let text = shown.to_string();
        let text = staged.0.iter().fold(text, |t, f| {
            t.replace(
                &f.temp.display().to_string(),
                &f.origin.display().to_string(),
            )
        });
        match (ours, p.severity) {
            (true, Severity::Error) => refusals.push(text),
            (true, Severity::Warning) => eprintln!("passerelle install: {text}"),
            (false, _) if p.blocks() => others += 1,
            _ => {}
        }
    }
    if !refusals.is_empty() {
        return Err(InstallError::Checks {
            tenant: entry.tenant.to_string(),
            role: entry.role,
            problems: refusals,
        });
    }
    if others > 0 {
        eprintln!(
            "passerelle install: note: the configuration has {others} other error(s) (passerelle check --config {}): the running Passerelle will not reload until they are fixed",
            entry.config.display()
        );
    }
    Ok(staged)
}

/// Gives a new file the owner and group of the file it replaces: run as root, install
/// must not leave a key the Passerelle user cannot read (its reload would be refused).
fn same_owner(new: &Path, target: &Path) -> Result<(), LifecycleError> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(old), Ok(now)) = (fs::metadata(target), fs::metadata(new)) else {
        return Ok(());
    };
    if (old.uid(), old.gid()) == (now.uid(), now.gid()) {
        return Ok(());
    }
    std::os::unix::fs::chown(new, Some(old.uid()), Some(old.gid())).map_err(|e| {
        LifecycleError::file(
            target,
            format!(
                "cannot give the new file this file's owner (uid {}, gid {}): {e}; run install as that user (the Passerelle user) or as root",
                old.uid(),
                old.gid()
            ),
        )
    })
}

/// Copies the files in place now into `previous/<tenant>/<role>/<name>/`; `None` when
/// there is none yet (a first installation).
fn keep_current(
    entry: &Entry,
    layout: &Layout,
    name: &str,
) -> Result<Option<PathBuf>, LifecycleError> {
    let present: Vec<&Slot> = layout
        .slots()
        .into_iter()
        .filter(|s| s.target.is_file())
        .collect();
    if present.is_empty() {
        return Ok(None);
    }
    let parent = entry.previous_dir();
    private_dir(&parent)?;
    let mut dir = parent.join(name);
    let mut n = 2;
    while dir.exists() {
        dir = parent.join(format!("{name}-{n}"));
        n += 1;
    }
    private_dir(&dir)?;
    for slot in present {
        let bytes =
            Zeroizing::new(fs::read(&slot.target).map_err(LifecycleError::io(&slot.target))?);
        write_new(&dir.join(slot.kept_as), &bytes, 0o600)?;
    }
    sync_dir(&dir)?;
    Ok(Some(dir))
}

/// Renames the checked files over the configured ones, key (or PKCS#12) first. If a
/// rename fails half-way, the files already renamed are put back from the kept set, so
/// the disk never keeps a key with another key's certificate (the running Passerelle
/// refuses to reload such a pair, but a restart would not start).
fn replace(staged: &Staged, kept: Option<&Path>) -> Result<(), LifecycleError> {
    for (done, f) in staged.0.iter().enumerate() {
        if let Err(e) = fs::rename(&f.temp, &f.slot.target) {
            let mut undo = Vec::new();
            for g in &staged.0[..done] {
                let restored = kept
                    .map(|k| k.join(g.slot.kept_as))
                    .filter(|k| k.is_file())
                    .and_then(|k| fs::read(k).ok())
                    .map(Zeroizing::new)
                    .and_then(|bytes| {
                        let tmp = temp_beside(&g.slot.target, "undo");
                        let _ = fs::remove_file(&tmp);
                        write_new(&tmp, &bytes, g.slot.mode).ok()?;
                        fs::rename(&tmp, &g.slot.target).ok()
                    });
                if restored.is_none() {
                    undo.push(g.slot.target.display().to_string());
                }
            }
            let state = if undo.is_empty() {
                "the files already replaced were put back".to_string()
            } else {
                format!(
                    "COULD NOT PUT BACK {}: restore them from {} before any restart",
                    undo.join(", "),
                    kept.map_or_else(|| "a backup".into(), |k| k.display().to_string())
                )
            };
            return Err(LifecycleError::file(
                &f.slot.target,
                format!("cannot replace it ({e}); {state}"),
            ));
        }
    }
    let mut dirs: Vec<&Path> = staged
        .0
        .iter()
        .filter_map(|f| f.slot.target.parent())
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        sync_dir(d)?;
    }
    Ok(())
}

/// Whether a folder under `previous/` is a set `--rollback` may restore.
fn restorable(name: &str) -> bool {
    // `<UTC stamp>` or `<UTC stamp>-<n>` (two installs in one second); never the sets
    // marked `-restored` or `-rolled-back` (with or without their own `-<n>`).
    let b = name.as_bytes();
    let stamp = b.len() >= 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z';
    let rest = &name[name.len().min(16)..];
    stamp
        && (rest.is_empty()
            || rest
                .strip_prefix('-')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit())))
}

fn rollback(entry: &Entry, layout: &Layout) -> Result<(), InstallError> {
    let parent = entry.previous_dir();
    let mut sets: Vec<String> = fs::read_dir(&parent)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| restorable(n))
                .collect()
        })
        .unwrap_or_default();
    sets.sort();
    let Some(name) = sets.pop() else {
        return Err(LifecycleError::file(
            &parent,
            "no previous set to roll back to (install keeps one here each time it replaces a certificate)",
        )
        .into());
    };
    let set = parent.join(&name);
    let mut files = Vec::new();
    for slot in layout.slots() {
        let kept = set.join(slot.kept_as);
        let bytes = Zeroizing::new(fs::read(&kept).map_err(|e| {
            LifecycleError::file(
                &kept,
                format!(
                    "cannot read ({e}): this set does not match the entry's {} file as configured now",
                    slot.field
                ),
            )
        })?);
        files.push(NewFile {
            slot: slot.clone(),
            bytes,
            origin: kept,
            temp: temp_beside(&slot.target, "rollback"),
        });
    }
    let before = serial_of(entry);
    let checked = stage_and_check(entry, layout, files)?;
    let kept = keep_current(entry, layout, &format!("{}-rolled-back", utc_stamp()))?;
    replace(&checked, kept.as_deref())?;
    let restored = parent.join(format!("{name}-restored"));
    fs::rename(&set, &restored).map_err(LifecycleError::io(&set))?;
    // The replaced set is kept but not offered to the next rollback, which goes one
    // set further back.
    let kept = Some(format!(
        "restored from {}; the replaced set is kept in {}",
        restored.display(),
        kept.map_or_else(
            || "(none: nothing was in place)".into(),
            |k| k.display().to_string()
        )
    ));
    report(entry, before, kept, "rolled back to");
    Ok(())
}

/// The serial of the role's certificate as configured now, if it can be read.
fn serial_of(entry: &Entry) -> Option<String> {
    passerelle_config::inspect(&entry.config)
        .certificates
        .into_iter()
        .find(|c| c.tenant == entry.tenant.as_str() && c.role == entry.role)
        .and_then(|c| c.serial)
}

fn report(entry: &Entry, before: Option<String>, kept: Option<String>, what: &str) {
    let row = passerelle_config::inspect(&entry.config)
        .certificates
        .into_iter()
        .find(|c| c.tenant == entry.tenant.as_str() && c.role == entry.role);
    let (serial, not_after) = row
        .as_ref()
        .map(|r| {
            (
                r.serial.clone().unwrap_or_else(|| "-".into()),
                r.not_after
                    .map(|t| t.date().to_string())
                    .unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    println!(
        "tenant {} {}: {what} serial {serial} (valid until {not_after}); was {}",
        entry.tenant,
        entry.role,
        before.as_deref().unwrap_or("none")
    );
    if let Some(kept) = kept {
        println!("  {kept}");
    }
    println!(
        "  the running Passerelle reloads within a few seconds (file watch; log line \"certificate changed\")\n  verify: passerelle check --config {} and the admin /readyz",
        entry.config.display()
    );
}

#[cfg(test)]
mod tests {
    use super::restorable;

    #[test]
    fn only_plain_kept_sets_are_restorable() {
        assert!(restorable("20261201T081500Z"));
        assert!(restorable("20261201T081500Z-2"));
        for name in [
            "20261201T081500Z-restored",
            "20261201T081500Z-rolled-back",
            "20261201T081500Z-rolled-back-2",
            "20261201T081500Z-2-restored",
            "20261201T081500Z-",
            "2026120XT081500Z",
            "notes",
            "",
        ] {
            assert!(!restorable(name), "{name}");
        }
    }
}
