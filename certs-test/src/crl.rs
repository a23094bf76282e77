//! `passerelle-certs-test crl`: a CRL of the test PKI's ORG intermediate, as IGC-Santé
//! publishes one daily, with the serials, times and CRL number a test chooses; or the
//! same signed by a throwaway CA with the same names (a CRL whose signature no
//! configured certificate verifies).

use std::fs;
use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, IsCa, Issuer,
    KeyIdMethod, KeyPair, RevocationReason, RevokedCertParams, SerialNumber,
};
use time::Duration;

use super::sign::{IssuerChoiceArg, ca};
use super::{CertsTestError, Manifest, Result, ca_name, io_err, now_seconds};

/// What `crl` writes.
#[derive(Debug, Clone)]
pub struct CrlOptions {
    /// The test PKI directory (with `pki.json`).
    pub pki: PathBuf,
    /// The CRL to write (PEM, or DER when the name ends in `.der`).
    pub out: PathBuf,
    /// Serials revoked, hexadecimal (as `openssl x509 -serial` prints them).
    pub revoked: Vec<String>,
    /// `thisUpdate`, seconds from now (negative: in the past).
    pub this_update: i64,
    /// `nextUpdate`, seconds from now (negative: a stale CRL).
    pub next_update: i64,
    pub number: u64,
    pub issuer: CrlIssuer,
}

/// Who signs the CRL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CrlIssuer {
    /// The ORG intermediate: the CRL its leaves name.
    Org,
    /// A throwaway CA with the ORG intermediate's names: a signature no configured
    /// certificate verifies.
    Foreign,
    /// The root: another configured CA's CRL.
    Root,
    /// The SERV SSL intermediate: the CRL of the mock services' certificate.
    Server,
}

/// A CA of the test PKI, by its key file and common name, to sign with.
fn named_ca(key_path: &std::path::Path, common_name: &str) -> Result<(CertificateParams, KeyPair)> {
    let key_pem = fs::read_to_string(key_path).map_err(io_err(key_path))?;
    let key = KeyPair::from_pkcs8_pem_and_sign_algo(&key_pem, &rcgen::PKCS_RSA_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_identifier_method = KeyIdMethod::Sha256;
    Ok((params, key))
}

impl CrlOptions {
    /// Issued a minute ago, valid a day, nothing revoked, number 2 (the generated
    /// PKI's CRL is number 1).
    pub fn new(pki: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            pki: pki.into(),
            out: out.into(),
            revoked: Vec::new(),
            this_update: -60,
            next_update: 24 * 3600,
            number: 2,
            issuer: CrlIssuer::Org,
        }
    }
}

/// Writes the CRL; returns its bytes.
pub fn write_crl(options: &CrlOptions) -> Result<Vec<u8>> {
    let now = now_seconds();
    let mut revoked_certs = Vec::new();
    for serial in &options.revoked {
        let bytes = openssl::bn::BigNum::from_hex_str(serial)
            .map(|n| n.to_vec())
            .map_err(|_| CertsTestError::Csr(format!("--revoke {serial:?}: not hexadecimal")))?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&bytes),
            revocation_time: now - Duration::minutes(5),
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        });
    }
    let (params, key) = match options.issuer {
        CrlIssuer::Org => ca(&options.pki, IssuerChoiceArg::Org).map(|(p, k, _)| (p, k))?,
        CrlIssuer::Foreign => ca(&options.pki, IssuerChoiceArg::Foreign).map(|(p, k, _)| (p, k))?,
        CrlIssuer::Root => {
            let manifest = Manifest::load(&options.pki)?;
            named_ca(
                &manifest.path(&manifest.ca.root_key),
                "TEST AC RACINE IGC-SANTE ELEMENTAIRE",
            )?
        }
        CrlIssuer::Server => {
            let manifest = Manifest::load(&options.pki)?;
            named_ca(
                &manifest.path(&manifest.ca.server_intermediate_key),
                "TEST AC IGC-SANTE ELEMENTAIRE SERVEURS",
            )?
        }
    };
    let crl = CertificateRevocationListParams {
        this_update: now + Duration::seconds(options.this_update),
        next_update: now + Duration::seconds(options.next_update),
        crl_number: SerialNumber::from(options.number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&Issuer::from_params(&params, &key))?;
    let bytes = if options.out.extension().is_some_and(|e| e == "der") {
        crl.der().to_vec()
    } else {
        crl.pem()?.into_bytes()
    };
    fs::write(&options.out, &bytes).map_err(io_err(&options.out))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::x509::{X509, X509Crl};

    /// The CRL verifies with the ORG intermediate's key and lists the serial; a foreign
    /// one does not verify; a stale one is past its nextUpdate.
    #[test]
    fn the_crl_is_signed_by_the_org_intermediate_and_lists_the_serials() {
        let pki = crate::shared_test_pki().expect("PKI");
        let dir = tempfile::tempdir().expect("tempdir");
        let org = X509::from_pem(
            &fs::read(pki.path(&pki.ca.org_intermediate)).expect("read the intermediate"),
        )
        .expect("intermediate");
        let mut options = CrlOptions::new(&pki.dir, dir.path().join("a.crl"));
        options.revoked = vec!["1A2B".into(), "abc".into()];
        let crl = X509Crl::from_pem(&write_crl(&options).expect("crl")).expect("parse");
        assert!(crl.verify(&org.public_key().expect("key")).expect("verify"));
        let serials: Vec<String> = crl
            .get_revoked()
            .expect("revoked")
            .iter()
            .map(|r| {
                r.serial_number()
                    .to_bn()
                    .and_then(|b| b.to_hex_str().map(|h| h.to_string()))
                    .expect("serial")
            })
            .collect();
        assert_eq!(serials, ["1A2B", "0ABC"]);

        options.issuer = CrlIssuer::Foreign;
        options.out = dir.path().join("b.der");
        let foreign = X509Crl::from_der(&write_crl(&options).expect("crl")).expect("DER");
        assert!(
            !foreign
                .verify(&org.public_key().expect("key"))
                .expect("verify")
        );
        assert_eq!(
            foreign.issuer_name().to_der().expect("der"),
            crl.issuer_name().to_der().expect("der"),
            "same names, other key"
        );

        options.issuer = CrlIssuer::Root;
        options.out = dir.path().join("root.crl");
        let by_root = X509Crl::from_pem(&write_crl(&options).expect("crl")).expect("parse");
        let root = X509::from_pem(&fs::read(pki.path(&pki.ca.root)).expect("read")).expect("root");
        assert!(
            by_root
                .verify(&root.public_key().expect("key"))
                .expect("verify")
        );
    }
}
