//! `passerelle csr --pkcs11`: the key pair is generated inside the token (sensitive,
//! never extractable), the CSR is signed there; nothing secret is written anywhere.
//! The pending folder gets the CSR and `pkcs11.toml`, the table that names the new key.

use std::path::{Path, PathBuf};

use openssl::bn::BigNum;
use openssl::rsa::Rsa;
use passerelle_pkcs11::{
    KeySelector, KeySpec, Pin, RsaPublicKey, SignMechanism, TokenKey, TokenSelector,
    generate_rsa_key,
};
use rcgen::string::PrintableString;
use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue};

use super::{CsrArgs, Subject, usage, write_csr};
use crate::cli::lifecycle::{Entry, LifecycleError, utc_stamp, write_new};

/// The token key as rcgen signs a request with it.
struct CsrKey {
    key: TokenKey,
    /// RSAPublicKey (PKCS#1) DER: what SubjectPublicKeyInfo's bit string holds.
    public_der: Vec<u8>,
}

impl rcgen::PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_der
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl rcgen::SigningKey for CsrKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key
            .sign(SignMechanism::RsaPkcs1Sha256, message)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

pub(super) fn csr(
    args: &CsrArgs,
    entry: &Entry,
    subject: &Subject,
    dir: &Path,
) -> Result<(), LifecycleError> {
    let configured = entry.source.pkcs11.as_ref();
    let usage_error = |what: &str, flag: &str| {
        LifecycleError::Usage(format!(
            "--pkcs11: no {what}: give {flag} (or configure [tenants.certificates.{}.pkcs11])",
            entry.role
        ))
    };
    let module = args
        .module
        .clone()
        .or_else(|| configured.map(|c| entry.resolve(&c.module)))
        .ok_or_else(|| usage_error("module", "--module"))?;
    let token = match (&args.token_label, args.slot) {
        (Some(label), _) => TokenSelector::Label(label.clone()),
        (None, Some(slot)) => TokenSelector::Slot(slot),
        (None, None) => match configured {
            Some(c) => match (&c.token_label, c.slot) {
                (Some(label), _) => TokenSelector::Label(label.clone()),
                (None, Some(slot)) => TokenSelector::Slot(slot),
                (None, None) => return Err(usage_error("token", "--token-label or --slot")),
            },
            None => return Err(usage_error("token", "--token-label or --slot")),
        },
    };
    let pin_file: PathBuf = args
        .pin_file
        .clone()
        .or_else(|| configured.map(|c| entry.resolve(&c.pin_file)))
        .ok_or_else(|| usage_error("PIN file", "--pin-file"))?;
    let pin = std::fs::read_to_string(&pin_file)
        .map(zeroize::Zeroizing::new)
        .map_err(LifecycleError::io(&pin_file))?;
    let pin = Pin::new(pin.trim_end_matches(['\r', '\n']).to_string());
    let label = args.key_label.clone().unwrap_or_else(|| {
        format!(
            "{}-{}-{}",
            entry.tenant,
            entry.role.config_key().replace('_', "-"),
            utc_stamp()
        )
    });
    let id = match &args.key_id {
        Some(hex_id) => hex::decode(hex_id.replace(':', ""))
            .ok()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                LifecycleError::Usage(format!("--key-id {hex_id:?}: not hexadecimal"))
            })?,
        None => {
            let mut id = vec![0u8; 8];
            openssl::rand::rand_bytes(&mut id)
                .map_err(LifecycleError::openssl("drawing a key id"))?;
            id
        }
    };
    if label.is_empty() || label.chars().any(char::is_control) {
        return Err(LifecycleError::Usage(format!(
            "--key-label {label:?}: not empty, no control characters"
        )));
    }

    let spec = KeySpec {
        module: module.clone(),
        token: token.clone(),
        key: KeySelector::Label(label.clone()),
        pin,
        sessions: 1,
    };
    let key = generate_rsa_key(spec, &label, &id, 2048)
        .map_err(|e| LifecycleError::file(&module, e.to_string()))?;
    let public = key
        .public_key()
        .map_err(|e| LifecycleError::file(&module, e.to_string()))?;
    let key = CsrKey {
        public_der: pkcs1_der(&public)?,
        key,
    };
    let csr_pem = request(&key, subject)?;
    // Checked with OpenSSL before anything is written: the signature the token made
    // verifies with the public key the request carries.
    let parsed = openssl::x509::X509Req::from_pem(csr_pem.as_bytes())
        .map_err(LifecycleError::openssl("reading the CSR back"))?;
    let verified = parsed
        .public_key()
        .and_then(|k| parsed.verify(&k))
        .map_err(LifecycleError::openssl("verifying the CSR"))?;
    if !verified {
        return Err(LifecycleError::file(
            &module,
            "the token's signature of the CSR does not verify: the token is not usable for ORG keys",
        ));
    }

    let csr_path = write_csr(dir, csr_pem.as_bytes())?;
    let table_path = dir.join("pkcs11.toml");
    let _ = std::fs::remove_file(&table_path);
    let table = table(&module, &token, &label, &id, &pin_file);
    write_new(&table_path, table.as_bytes(), 0o644)?;

    print!("{csr_pem}");
    eprintln!(
        "passerelle csr: tenant {} {}: CSR for C=FR, ST={}, O={}, OU={}, CN={} (RSA 2048, SHA-256)\n\
         \n  key pair generated inside {token} (module {}): CKA_LABEL {label:?}, CKA_ID {}, sensitive, never extractable\n  CSR (copy):  {}\n\
         \nNext:\n  1. Upload the CSR on the IGC-Santé platform, product ORG, usage {}.\n  \
         2. When the certificate arrives, put it (and its chain) in place of the role's `cert` / `chain`, and\n     \
         replace the role's [tenants.certificates.{}.pkcs11] table by the one in {} (the new key).\n  \
         3. Verify: passerelle check --config {}, reload (SIGHUP), then the admin /readyz.",
        entry.tenant,
        entry.role,
        subject.state,
        subject.organization,
        subject.structure_id,
        subject.common_name,
        module.display(),
        hex::encode(&id),
        csr_path.display(),
        usage(entry.role),
        entry.role,
        table_path.display(),
        args.config.display(),
    );
    Ok(())
}

/// RSAPublicKey DER (modulus, exponent), through OpenSSL's encoder.
fn pkcs1_der(public: &RsaPublicKey) -> Result<Vec<u8>, LifecycleError> {
    let n = BigNum::from_slice(&public.modulus).map_err(LifecycleError::openssl("the modulus"))?;
    let e =
        BigNum::from_slice(&public.exponent).map_err(LifecycleError::openssl("the exponent"))?;
    Rsa::from_public_components(n, e)
        .and_then(|rsa| rsa.public_key_to_der_pkcs1())
        .map_err(LifecycleError::openssl("encoding the public key"))
}

/// The request, with the subject of `csr`'s file keys: C (PrintableString, as OpenSSL
/// writes it), ST, O, OU, CN (UTF8String), in the DER order of real ORG certificates.
fn request(key: &CsrKey, s: &Subject) -> Result<String, LifecycleError> {
    let mut name = DistinguishedName::new();
    let country = PrintableString::try_from("FR")
        .map_err(|e| LifecycleError::Usage(format!("country: {e}")))?;
    name.push(DnType::CountryName, DnValue::PrintableString(country));
    name.push(DnType::StateOrProvinceName, s.state.as_str());
    name.push(DnType::OrganizationName, s.organization.as_str());
    name.push(DnType::OrganizationalUnitName, s.structure_id.as_str());
    name.push(DnType::CommonName, s.common_name.as_str());
    let mut params = CertificateParams::default();
    params.distinguished_name = name;
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|e| LifecycleError::Usage(format!("building the CSR in the token: {e}")))
}

/// The `[...pkcs11]` table naming the new key, for the configuration.
fn table(module: &Path, token: &TokenSelector, label: &str, id: &[u8], pin_file: &Path) -> String {
    let mut t = toml::Table::new();
    t.insert("module".into(), module.display().to_string().into());
    match token {
        TokenSelector::Label(l) => t.insert("token_label".into(), l.clone().into()),
        TokenSelector::Slot(s) => {
            t.insert("slot".into(), i64::try_from(*s).unwrap_or(i64::MAX).into())
        }
    };
    // By CKA_ID (drawn at random, unlike a label nobody else would reuse).
    t.insert("key_id".into(), hex::encode(id).into());
    t.insert("pin_file".into(), pin_file.display().to_string().into());
    format!(
        "# The new key (passerelle csr --pkcs11, CKA_LABEL {label:?}): replaces the role's\n# [tenants.certificates.<role>.pkcs11] table.\n{}",
        toml::to_string(&t).unwrap_or_default()
    )
}
