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
            anchors: self.certificate_files("trust.anchors", &t.anchors),
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
            .certificate_files(&format!("{section}.trust_anchors"), anchors)
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
