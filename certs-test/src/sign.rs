//! `passerelle-certs-test sign-csr`: the test PKI's ORG intermediate acting as the
//! IGC-Santé portal does for a CSR made on the server (`passerelle csr`), so that the
//! whole renewal flow (csr, signature, `passerelle install`) runs in tests.
//!
//! The leaf gets the subject the CSR asks for and the ORG AUTH_CLI or ORG SIGN profile
//! of the generated leaves ([`apply_profile`](super::apply_profile)). Options make the
//! defective deliveries a hostile test needs: another CN or OU, an expired validity, a
//! CA outside the configured anchors (same names, other keys), and the formats a portal
//! may deliver (PEM, DER, PKCS#7 `.p7b`).

use std::fs;
use std::path::{Path, PathBuf};

use openssl::x509::X509Req;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose,
};
use time::Duration;

use super::{
    Builder, CertsTestError, LEAF_VALIDITY_DAYS, Manifest, Profile, Result, apply_profile, ca_name,
    io_err, new_key, now_seconds, ossl, random_serial, rcgen_key,
};

/// Which IGC-Santé product the signed certificate follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CsrProfile {
    /// ORG AUTH_CLI: digitalSignature / clientAuth (DMP TLS, INSi, services).
    Auth,
    /// ORG SIGN: digitalSignature + nonRepudiation / emailProtection.
    Sign,
}

/// Who signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IssuerChoiceArg {
    /// The test PKI's ORG intermediate (chains to the configured root).
    Org,
    /// A throwaway root and ORG intermediate with the same names but other keys: a
    /// certificate that no configured anchor accepts.
    Foreign,
}

/// How the certificate is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// The leaf in PEM.
    Pem,
    /// The leaf in DER (`.cer`).
    Der,
    /// A certs-only PKCS#7 (`.p7b`, DER) holding the leaf and its intermediate.
    P7b,
}

/// What `sign-csr` does.
#[derive(Debug, Clone)]
pub struct SignCsrOptions {
    /// The test PKI directory (with `pki.json`).
    pub pki: PathBuf,
    pub csr: PathBuf,
    pub profile: CsrProfile,
    pub out: PathBuf,
    pub format: OutputFormat,
    /// Also write the issuing intermediate (PEM) here.
    pub chain_out: Option<PathBuf>,
    pub days: i64,
    /// Start the validity this many days in the past (an expired certificate: more
    /// than `days`).
    pub backdate_days: i64,
    /// Replace the CSR's CN.
    pub common_name: Option<String>,
    /// Replace the CSR's OU (structure id).
    pub organizational_unit: Option<String>,
    pub issuer: IssuerChoiceArg,
}

impl SignCsrOptions {
    /// ORG AUTH_CLI from the ORG intermediate, 3 years, PEM.
    pub fn new(pki: &Path, csr: &Path, out: &Path) -> Self {
        Self {
            pki: pki.to_path_buf(),
            csr: csr.to_path_buf(),
            profile: CsrProfile::Auth,
            out: out.to_path_buf(),
            format: OutputFormat::Pem,
            chain_out: None,
            days: LEAF_VALIDITY_DAYS,
            backdate_days: 0,
            common_name: None,
            organizational_unit: None,
            issuer: IssuerChoiceArg::Org,
        }
    }
}

/// What was issued.
#[derive(Debug, Clone)]
pub struct SignedCsr {
    /// Upper-case hexadecimal, no leading zeros.
    pub serial: String,
    /// RFC 2253 subject, as OpenSSL prints it.
    pub subject: String,
}

/// Signs the CSR at `options.csr` (its signature checked first) and writes the
/// certificate.
pub fn sign_csr(options: &SignCsrOptions) -> Result<SignedCsr> {
    let csr_pem = fs::read_to_string(&options.csr).map_err(io_err(&options.csr))?;
    // rcgen checks the CSR's signature too; OpenSSL's check gives the clearer error.
    let req = X509Req::from_pem(csr_pem.as_bytes()).map_err(ossl("reading the CSR (PEM)"))?;
    let public = req.public_key().map_err(ossl("reading the CSR's key"))?;
    if !req.verify(&public).map_err(ossl("verifying the CSR"))? {
        return Err(CertsTestError::Csr(format!(
            "{}: the CSR's signature does not verify",
            options.csr.display()
        )));
    }
    let mut csr = CertificateSigningRequestParams::from_pem(&csr_pem)?;
    if let Some(cn) = &options.common_name {
        csr.params
            .distinguished_name
            .push(DnType::CommonName, cn.as_str());
    }
    if let Some(ou) = &options.organizational_unit {
        csr.params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, ou.as_str());
    }
    let not_before = now_seconds() - Duration::days(options.backdate_days);
    let not_after = not_before + Duration::days(options.days);
    let serial = random_serial()?;
    let params = &mut csr.params;
    params.is_ca = IsCa::ExplicitNoCa;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(serial.clone());
    params.key_identifier_method = KeyIdMethod::Sha256;
    params.use_authority_key_identifier_extension = true;
    let profile = match options.profile {
        CsrProfile::Auth => Profile::OrgAuthCli,
        CsrProfile::Sign => Profile::OrgSign,
    };
    apply_profile(params, profile, not_before, not_after);

    let (ca_params, ca_key, ca_pem) = ca(&options.pki, options.issuer)?;
    // The issuer is rebuilt from the CA's own parameters (names, key identifier
    // method), not parsed back from its certificate: its DN has two OUs, which a
    // parsed-back name would merge.
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let cert = csr.signed_by(&issuer)?;
    let ca_der = openssl::x509::X509::from_pem(ca_pem.as_bytes())
        .and_then(|c| c.to_der())
        .map_err(ossl("reading the intermediate"))?;
    let bytes = match options.format {
        OutputFormat::Pem => cert.pem().into_bytes(),
        OutputFormat::Der => cert.der().to_vec(),
        OutputFormat::P7b => super::der::pkcs7_certs_only(&[cert.der(), &ca_der]),
    };
    fs::write(&options.out, bytes).map_err(io_err(&options.out))?;
    if let Some(chain) = &options.chain_out {
        fs::write(chain, &ca_pem).map_err(io_err(chain))?;
    }
    let x509 = openssl::x509::X509::from_der(cert.der()).map_err(ossl("reading it back"))?;
    let subject = x509
        .subject_name()
        .entries()
        .map(|e| {
            format!(
                "{}={}",
                e.object().nid().short_name().unwrap_or("?"),
                e.data().to_string().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let serial_hex = x509
        .serial_number()
        .to_bn()
        .and_then(|b| b.to_hex_str().map(|h| h.to_string()))
        .map_err(ossl("reading the serial"))?;
    Ok(SignedCsr {
        serial: serial_hex.trim_start_matches('0').to_uppercase(),
        subject,
    })
}

/// The signing CA: its parameters, key and certificate (PEM).
pub(crate) fn ca(
    pki: &Path,
    choice: IssuerChoiceArg,
) -> Result<(CertificateParams, KeyPair, String)> {
    match choice {
        IssuerChoiceArg::Org => {
            let manifest = Manifest::load(pki)?;
            let key_path = manifest.path(&manifest.ca.org_intermediate_key);
            let cert_path = manifest.path(&manifest.ca.org_intermediate);
            let key_pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
            let ca_pem = fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
            let key = KeyPair::from_pkcs8_pem_and_sign_algo(&key_pem, &rcgen::PKCS_RSA_SHA256)?;
            Ok((org_params(), key, ca_pem))
        }
        IssuerChoiceArg::Foreign => {
            // Same names as the real test hierarchy, other keys (2048 bits: only the
            // names matter here, and a 4096-bit key costs seconds in debug builds).
            let not_before = now_seconds() - Duration::days(1);
            let root = Builder::make_ca(
                "TEST AC RACINE IGC-SANTE ELEMENTAIRE",
                None,
                BasicConstraints::Unconstrained,
                new_key(2048)?,
                not_before,
                not_before + Duration::days(20 * 365),
            )?;
            let org = Builder::make_ca(
                "TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS",
                Some(&root),
                BasicConstraints::Constrained(0),
                new_key(2048)?,
                not_before,
                not_before + Duration::days(10 * 365),
            )?;
            let (key, _) = rcgen_key(
                &openssl::pkey::PKey::private_key_from_pem(org.key_pem.as_bytes())
                    .map_err(ossl("reading the throwaway CA key"))?,
            )?;
            Ok((org.params, key, org.pem))
        }
    }
}

/// The ORG intermediate's parameters as [`Builder::new`] makes them: what an issuer
/// needs (its DN and key identifier method).
fn org_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_name("TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.key_identifier_method = KeyIdMethod::Sha256;
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509, X509StoreContext};

    /// A CSR signed by the PKI's ORG intermediate chains to the root, keeps the CSR's
    /// subject and key, and carries the role's profile; `--issuer foreign` does not chain.
    #[test]
    fn a_signed_csr_chains_to_the_test_root_with_the_profile() {
        let pki = crate::shared_test_pki().expect("PKI");
        let dir = tempfile::tempdir().expect("tempdir");
        let key = new_key(2048).expect("key");
        let mut name = openssl::x509::X509NameBuilder::new().expect("name");
        for (k, v) in [
            ("C", "FR"),
            ("ST", "Rhône (69)"),
            ("O", "CH TEST"),
            ("OU", "1690010004"),
            ("CN", "INSI-AUTO"),
        ] {
            name.append_entry_by_text(k, v).expect("entry");
        }
        let mut req = openssl::x509::X509ReqBuilder::new().expect("req");
        req.set_subject_name(&name.build()).expect("subject");
        req.set_pubkey(&key).expect("key");
        req.sign(&key, openssl::hash::MessageDigest::sha256())
            .expect("sign");
        let csr = dir.path().join("req.pem");
        fs::write(&csr, req.build().to_pem().expect("pem")).expect("write");

        let root = X509::from_pem(&fs::read(pki.path(&pki.ca.root)).expect("root")).expect("root");
        let org = X509::from_pem(&fs::read(pki.path(&pki.ca.org_intermediate)).expect("org"))
            .expect("org");
        let verifies = |leaf: &X509| {
            let mut store = X509StoreBuilder::new().expect("store");
            store.add_cert(root.clone()).expect("root");
            let store = store.build();
            let mut chain = Stack::new().expect("stack");
            chain.push(org.clone()).expect("push");
            let mut ctx = X509StoreContext::new().expect("ctx");
            ctx.init(&store, leaf, &chain, |c| c.verify_cert())
                .expect("verify")
        };

        let out = dir.path().join("cert.pem");
        let signed = sign_csr(&SignCsrOptions::new(&pki.dir, &csr, &out)).expect("signed");
        let cert = X509::from_pem(&fs::read(&out).expect("cert")).expect("cert");
        assert!(verifies(&cert));
        assert!(cert.public_key().expect("key").public_eq(&key));
        assert!(
            signed.subject.contains("OU=1690010004"),
            "{}",
            signed.subject
        );
        assert!(
            signed.subject.ends_with("CN=INSI-AUTO"),
            "{}",
            signed.subject
        );
        let text = String::from_utf8(cert.to_text().expect("text")).expect("utf8");
        assert!(text.contains("TLS Web Client Authentication"), "{text}");

        let mut foreign = SignCsrOptions::new(&pki.dir, &csr, &out);
        foreign.issuer = IssuerChoiceArg::Foreign;
        foreign.profile = CsrProfile::Sign;
        sign_csr(&foreign).expect("signed");
        let cert = X509::from_pem(&fs::read(&out).expect("cert")).expect("cert");
        assert!(
            !verifies(&cert),
            "a look-alike CA does not chain to the test root"
        );
        let text = String::from_utf8(cert.to_text().expect("text")).expect("utf8");
        assert!(text.contains("E-mail Protection"), "{text}");
    }
}
