//! Trust material: `[trust]` for the tenants' own certificates ([`TenantTrust`]), and
//! each upstream's anchors and CRLs ([`UpstreamTrust`]); reading certificate and CRL
//! files.

use std::path::PathBuf;

use openssl::x509::{X509, X509Crl};

use super::Validator;
use crate::file;
use crate::material;
use crate::model::UpstreamTrust;
use crate::report::Severity;

/// Anchors, intermediates and CRLs for checking the tenants' own certificates.
pub(super) struct TenantTrust {
    pub(super) anchors: Vec<X509>,
    pub(super) intermediates: Vec<X509>,
    pub(super) crls: Vec<(PathBuf, X509Crl)>,
}

impl Validator {
    fn certificate_files(&mut self, field: &str, paths: &[PathBuf]) -> Vec<X509> {
        let mut out = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let full = self.resolve(p);
            match material::read_certificates(&full) {
                Ok(certs) => out.extend(certs),
                Err(e) => self.problem(Severity::Error, Some(&full), &format!("{field}[{i}]"), e),
            }
        }
        out
    }

    /// Reads trust anchors, one file after another. An intermediate whose root is among
    /// the anchors too (a root + intermediate bundle) is fine. One without its root:
    /// for `[trust]`, an error (chain building needs the root, and `trust.intermediates`
    /// is where intermediates go); for an upstream's anchors, where any certificate of
    /// the server's chain can end the path, a warning.
    fn anchor_files(&mut self, field: &str, paths: &[PathBuf], tenant_trust: bool) -> Vec<X509> {
        let mut files = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let full = self.resolve(p);
            match material::read_certificates(&full) {
                Ok(certs) => files.push((i, full, certs)),
                Err(e) => self.problem(Severity::Error, Some(&full), &format!("{field}[{i}]"), e),
            }
        }
        let roots: Vec<X509> = files
            .iter()
            .flat_map(|(_, _, certs)| certs.iter().filter(|c| is_root(c)).cloned())
            .collect();
        let mut out = Vec::new();
        for (i, full, certs) in files {
            for cert in &certs {
                let root_listed = roots.iter().any(|root| {
                    root.issued(cert) == openssl::x509::X509VerifyResult::OK
                        && root
                            .public_key()
                            .is_ok_and(|k| cert.verify(&k).unwrap_or(false))
                });
                if is_root(cert) || root_listed {
                    continue;
                }
                let info = cert
                    .to_der()
                    .ok()
                    .and_then(|der| crate::material::CertificateInfo::from_der(&der).ok());
                let (subject, issuer) = info.map(|i| (i.subject, i.issuer)).unwrap_or_default();
                let (severity, advice) = if tenant_trust {
                    (
                        Severity::Error,
                        "move it to trust.intermediates and name the root it chains to (its issuer) in trust.anchors",
                    )
                } else {
                    (
                        Severity::Warning,
                        "the server's chain is accepted up to it, but name the root it chains to (its issuer) instead, so that a server certificate from a renewed intermediate is still accepted",
                    )
                };
                self.problem(
                    severity,
                    Some(&full),
                    &format!("{field}[{i}]"),
                    format!(
                        "{subject:?} is not a root but an intermediate issued by {issuer:?}: {advice}"
                    ),
                );
            }
            out.extend(certs);
        }
        out
    }

    fn crl_files(&mut self, field: &str, paths: &[PathBuf]) -> Vec<(PathBuf, X509Crl)> {
        let mut out = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let full = self.resolve(p);
            let field = format!("{field}[{i}]");
            let crl = std::fs::read(&full)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|b| {
                    X509Crl::from_pem(&b)
                        .or_else(|_| X509Crl::from_der(&b))
                        .map_err(|_| "not a PEM or DER CRL".to_string())
                });
            match crl {
                Ok(crl) => {
                    let stale = crl.next_update().is_some_and(|next| {
                        openssl::asn1::Asn1Time::from_unix(self.now.unix_timestamp())
                            .is_ok_and(|now| next < now)
                    });
                    if stale {
                        self.problem(
                            Severity::Warning,
                            Some(&full),
                            &field,
                            "the CRL is past its nextUpdate: fetch the current one (IGC-Santé publishes daily)".into(),
                        );
                    }
                    out.push((full, crl));
                }
                Err(e) => self.problem(Severity::Error, Some(&full), &field, e),
            }
        }
        out
    }

    pub(super) fn tenant_trust(&mut self, t: &file::TrustSection) -> TenantTrust {
        if t.anchors.is_empty() {
            self.error(
                "trust.anchors",
                "no trust anchor: name the IGC-Santé root certificate the tenants' certificates chain to",
            );
        }
        TenantTrust {
            anchors: self.anchor_files("trust.anchors", &t.anchors, true),
            intermediates: self.certificate_files("trust.intermediates", &t.intermediates),
            crls: self.crl_files("trust.crls", &t.crls),
        }
    }

    pub(super) fn upstream_trust(
        &mut self,
        section: &str,
        anchors: &[PathBuf],
        crls: &[PathBuf],
    ) -> UpstreamTrust {
        if anchors.is_empty() {
            self.error(
                &format!("{section}.trust_anchors"),
                "no trust anchor: name the IGC-Santé root the service's certificate chains to (the web PKI is never used)",
            );
        }
        let anchors = self
            .anchor_files(&format!("{section}.trust_anchors"), anchors, false)
            .iter()
            .filter_map(|c| c.to_der().ok())
            .collect();
        let crls = self
            .crl_files(&format!("{section}.crls"), crls)
            .iter()
            .filter_map(|(_, c)| c.to_der().ok())
            .collect();
        UpstreamTrust { anchors, crls }
    }
}

/// A root: issued by itself (names and key identifiers) and signed by its own key.
fn is_root(cert: &X509) -> bool {
    cert.issued(cert) == openssl::x509::X509VerifyResult::OK
        && cert
            .public_key()
            .is_ok_and(|key| cert.verify(&key).unwrap_or(false))
}
