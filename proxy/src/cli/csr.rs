//! `passerelle csr`: the first step of a renewal. Generates the RSA-2048 key on this
//! machine (the key never leaves it: ANS rule), keeps it in the pending area next to the
//! configuration (0600, folders 0700), and prints a CSR whose subject follows the
//! IGC-Santé ORG profile: `C=FR, ST, O, OU=<structure id>, CN`.
//!
//! ST and O default to those of the tenant's current certificate (a renewal repeats
//! them); CN to the role's current CN, and INSi roles force `INSI-AUTO` / `INSI-MANU`.
//! The key itself is never printed or logged.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509NameBuilder, X509ReqBuilder};
use passerelle_config::file::CertSource;
use passerelle_config::{CertRole, CertificateInfo};

use super::lifecycle::{Entry, LifecycleError, RoleArg, private_dir, temp_beside, write_new};

mod token;

#[derive(Debug, clap::Args)]
pub struct CsrArgs {
    /// Configuration file (TOML); the pending key is kept next to it.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The tenant (`[[tenants]] id`).
    #[arg(long, value_name = "ID")]
    tenant: String,
    /// The certificate role to renew.
    #[arg(long, value_enum)]
    role: RoleArg,
    /// The CN (service name, e.g. "PROXY DMP CHU NANTES"); default: the current
    /// certificate's. INSi roles require exactly INSI-AUTO / INSI-MANU.
    #[arg(long, value_name = "NAME")]
    cn: Option<String>,
    /// The legal name (O); default: the tenant's current certificate's.
    #[arg(long, value_name = "NAME")]
    organization: Option<String>,
    /// The département (ST, e.g. "Loire-Atlantique (44)"); default: the tenant's
    /// current certificate's.
    #[arg(long, value_name = "NAME")]
    state: Option<String>,
    /// Replace a pending key that has not been installed yet (its CSR becomes useless).
    #[arg(long)]
    force: bool,
    /// Generate the key pair inside a PKCS#11 token (sensitive, never extractable)
    /// instead of a file. Module, token and PIN default to the role's current
    /// `[tenants.certificates.<role>.pkcs11]` table.
    #[arg(long)]
    pkcs11: bool,
    /// The PKCS#11 module (the token vendor's library).
    #[arg(long, value_name = "FILE", requires = "pkcs11")]
    module: Option<PathBuf>,
    /// The token, by label.
    #[arg(
        long,
        value_name = "LABEL",
        requires = "pkcs11",
        conflicts_with = "slot"
    )]
    token_label: Option<String>,
    /// The token, by slot id.
    #[arg(long, value_name = "ID", requires = "pkcs11")]
    slot: Option<u64>,
    /// A file (0600) holding the token's user PIN.
    #[arg(long, value_name = "FILE", requires = "pkcs11")]
    pin_file: Option<PathBuf>,
    /// The new key's CKA_LABEL; default `<tenant>-<role>-<UTC time>`.
    #[arg(long, value_name = "LABEL", requires = "pkcs11")]
    key_label: Option<String>,
    /// The new key's CKA_ID in hexadecimal; default: 8 random bytes.
    #[arg(long, value_name = "HEX", requires = "pkcs11")]
    key_id: Option<String>,
}

/// The IGC-Santé ORG subject of the CSR.
#[derive(Debug, PartialEq, Eq)]
struct Subject {
    state: String,
    organization: String,
    structure_id: String,
    common_name: String,
}

pub fn run(args: &CsrArgs) -> ExitCode {
    match csr(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("passerelle csr: {e}");
            ExitCode::FAILURE
        }
    }
}

fn csr(args: &CsrArgs) -> Result<(), LifecycleError> {
    let role = CertRole::from(args.role);
    let entry = Entry::find(&args.config, &args.tenant, role)?;
    let subject = subject(&entry, args)?;
    let dir = entry.pending_dir();
    let key_path = dir.join("key.pem");
    if key_path.exists() && !args.force {
        return Err(LifecycleError::file(
            &key_path,
            "a pending key already exists (a CSR made earlier, not installed yet): install its certificate with `passerelle install`, or pass --force to replace it (its CSR becomes useless)",
        ));
    }
    private_dir(&dir)?;
    if args.pkcs11 {
        return token::csr(args, &entry, &subject, &dir);
    }
    let rsa = Rsa::generate(2048).map_err(LifecycleError::openssl("generating the RSA key"))?;
    let key = PKey::from_rsa(rsa).map_err(LifecycleError::openssl("wrapping the key"))?;
    let req = request(&key, &subject)?;
    let csr_pem = req
        .to_pem()
        .map_err(LifecycleError::openssl("encoding the CSR"))?;
    let key_pem = zeroize::Zeroizing::new(
        key.private_key_to_pem_pkcs8()
            .map_err(LifecycleError::openssl("encoding the key as PKCS#8"))?,
    );
    // Temp file then rename: a crash never leaves half a key under the pending name.
    let tmp = temp_beside(&key_path, "new");
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, &key_pem, 0o600)?;
    std::fs::rename(&tmp, &key_path).map_err(LifecycleError::io(&key_path))?;
    let csr_path = write_csr(&dir, &csr_pem)?;

    // The CSR alone on stdout (`> request.csr`), the instructions on stderr.
    print!("{}", String::from_utf8_lossy(&csr_pem));
    eprintln!(
        "passerelle csr: tenant {} {role}: CSR for C=FR, ST={}, O={}, OU={}, CN={} (RSA 2048, SHA-256)\n\
         \n  pending key: {} (0600, never leaves this machine)\n  CSR (copy):  {}\n\
         \nNext:\n  1. Upload the CSR on the IGC-Santé platform, product ORG, usage {}.\n  \
         2. When the certificate arrives (PEM, DER or PKCS#7):\n     \
         passerelle install --config {} --tenant {} --role {role} CERTIFICATE [--chain CHAIN]\n  \
         3. Verify: passerelle check --config {} and the admin /readyz.",
        entry.tenant,
        subject.state,
        subject.organization,
        subject.structure_id,
        subject.common_name,
        key_path.display(),
        csr_path.display(),
        usage(role),
        args.config.display(),
        entry.tenant,
        args.config.display(),
    );
    Ok(())
}

/// Writes `csr.pem` in the pending folder (temp file, rename, folder synced).
fn write_csr(dir: &Path, csr_pem: &[u8]) -> Result<PathBuf, LifecycleError> {
    let csr_path = dir.join("csr.pem");
    let tmp = temp_beside(&csr_path, "new");
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, csr_pem, 0o644)?;
    std::fs::rename(&tmp, &csr_path).map_err(LifecycleError::io(&csr_path))?;
    super::lifecycle::sync_dir(dir)?;
    Ok(csr_path)
}

/// What to pick on the portal for `role`.
fn usage(role: CertRole) -> &'static str {
    match role {
        CertRole::DmpAuth => "AUTH_CLI (client authentication, for the DMP's mutual TLS)",
        CertRole::DmpSign => "SIGN (signature, for VIHF and submission lots)",
        CertRole::InsiAuto => "AUTH_CLI with CN INSI-AUTO (INSi, automated calls)",
        CertRole::InsiManu => "AUTH_CLI with CN INSI-MANU (INSi, calls made by a person)",
        CertRole::OrgAuth => "AUTH_CLI (client authentication, for the other services)",
    }
}

/// The current certificate of `source`, when readable (PEM or DER; a PKCS#12 needs its
/// password, so its subject is read through the password file).
fn current_info(entry: &Entry, source: &CertSource) -> Option<CertificateInfo> {
    let der = if let Some(cert) = &source.cert {
        let bytes = std::fs::read(entry.resolve(cert)).ok()?;
        openssl::x509::X509::stack_from_pem(&bytes)
            .ok()
            .and_then(|s| s.into_iter().next())
            .or_else(|| openssl::x509::X509::from_der(&bytes).ok())?
            .to_der()
            .ok()?
    } else {
        let p12 = std::fs::read(entry.resolve(source.pkcs12.as_deref()?)).ok()?;
        let password = zeroize::Zeroizing::new(
            std::fs::read_to_string(entry.resolve(source.password_file.as_deref()?)).ok()?,
        );
        let parsed = openssl::pkcs12::Pkcs12::from_der(&p12)
            .ok()?
            .parse2(password.trim_end_matches(['\r', '\n']))
            .ok()?;
        parsed.cert?.to_der().ok()?
    };
    CertificateInfo::from_der(&der).ok()
}

fn subject(entry: &Entry, args: &CsrArgs) -> Result<Subject, LifecycleError> {
    let current = current_info(entry, &entry.source);
    // O and ST are the legal entity's: any of its current certificates has them.
    let any = current.clone().or_else(|| {
        entry
            .others
            .iter()
            .find_map(|(_, s)| current_info(entry, s))
    });
    let pick = |given: &Option<String>, found: Option<String>, what: &str, flag: &str| {
        given
            .clone()
            .or(found)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                LifecycleError::Usage(format!(
                    "no current certificate of tenant {} to copy the {what} from: give {flag}",
                    entry.tenant
                ))
            })
    };
    let organization = pick(
        &args.organization,
        any.as_ref().and_then(|i| i.organization.clone()),
        "legal name (O)",
        "--organization",
    )?;
    let state = pick(
        &args.state,
        any.as_ref().and_then(|i| i.state.clone()),
        "département (ST)",
        "--state",
    )?;
    let common_name = match entry.role.required_common_name() {
        Some(required) => {
            if let Some(cn) = args.cn.as_deref().filter(|cn| *cn != required) {
                return Err(LifecycleError::Usage(format!(
                    "--cn {cn:?}: {} requires exactly {required:?} (INSi answers DESIR_560 otherwise); leave --cn out",
                    entry.role
                )));
            }
            required.to_string()
        }
        None => pick(
            &args.cn,
            current.and_then(|i| i.common_name),
            "service name (CN)",
            "--cn",
        )?,
    };
    // Values go into the DN as written; control characters would make a CSR the portal
    // refuses, or a subject the logs print oddly.
    for (what, v) in [
        ("--cn", &common_name),
        ("--organization", &organization),
        ("--state", &state),
    ] {
        if v.chars().any(char::is_control) || v.len() > 64 {
            return Err(LifecycleError::Usage(format!(
                "{what} {v:?}: at most 64 characters, no control characters"
            )));
        }
    }
    Ok(Subject {
        state,
        organization,
        structure_id: entry.structure_id.clone(),
        common_name,
    })
}

fn request(
    key: &PKey<openssl::pkey::Private>,
    s: &Subject,
) -> Result<openssl::x509::X509Req, LifecycleError> {
    let build = || -> Result<openssl::x509::X509Req, openssl::error::ErrorStack> {
        let mut name = X509NameBuilder::new()?;
        // DER order of real ORG certificates: C, ST, O, OU, CN.
        name.append_entry_by_text("C", "FR")?;
        name.append_entry_by_text("ST", &s.state)?;
        name.append_entry_by_text("O", &s.organization)?;
        name.append_entry_by_text("OU", &s.structure_id)?;
        name.append_entry_by_text("CN", &s.common_name)?;
        let name = name.build();
        let mut req = X509ReqBuilder::new()?;
        req.set_version(0)?;
        req.set_subject_name(&name)?;
        req.set_pubkey(key)?;
        req.sign(key, MessageDigest::sha256())?;
        Ok(req.build())
    };
    build().map_err(LifecycleError::openssl("building the CSR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_carries_the_org_subject_and_verifies() {
        let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
        let s = Subject {
            state: "Rhône (69)".into(),
            organization: "CENTRE DE SANTE RPPS15287".into(),
            structure_id: "10B0152872".into(),
            common_name: "INSI-AUTO".into(),
        };
        let req = request(&key, &s).expect("request");
        assert!(req.verify(&key).expect("verify"));
        let entries: Vec<(String, String)> = req
            .subject_name()
            .entries()
            .map(|e| {
                (
                    e.object().nid().short_name().expect("sn").to_string(),
                    e.data().to_string().expect("utf8"),
                )
            })
            .collect();
        let expected = [
            ("C", "FR"),
            ("ST", "Rhône (69)"),
            ("O", "CENTRE DE SANTE RPPS15287"),
            ("OU", "10B0152872"),
            ("CN", "INSI-AUTO"),
        ];
        assert_eq!(
            entries,
            expected.map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }
}
