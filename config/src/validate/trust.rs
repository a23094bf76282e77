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
            if let Some(crl) = self.crl_file(&full, &format!("{field}[{i}]"), false) {
                out.push((full, crl));
            }
        }
        out
    }

    /// Reads one CRL (PEM or DER), warns when it is past its `nextUpdate`, and records
    /// it among the CRLs in use. `downloaded`: a copy in `[trust.crl_download]`'s folder.
    pub(super) fn crl_file(
        &mut self,
        full: &std::path::Path,
        field: &str,
        downloaded: bool,
    ) -> Option<X509Crl> {
        let crl = std::fs::read(full)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|b| {
                X509Crl::from_pem(&b)
                    .or_else(|_| X509Crl::from_der(&b))
                    .map_err(|_| "not a PEM or DER CRL".to_string())
            });
        let crl = match crl {
            Ok(crl) => crl,
            Err(e) => {
                // A bad copy in the download folder (put there by hand, or half-written
                // by another writer) is skipped: the last good CRLs stay in force.
                let severity = if downloaded {
                    Severity::Warning
                } else {
                    Severity::Error
                };
                self.problem(severity, Some(full), field, format!("{e}: not used"));
                return None;
            }
        };
        let in_use = crate::model::CrlInUse {
            file: full.to_path_buf(),
            url: None,
            issuer: super::crl_download::name(crl.issuer_name()),
            this_update: crate::model::asn1_time(crl.last_update()),
            next_update: crl.next_update().and_then(crate::model::asn1_time),
        };
        if in_use.stale(self.now) {
            let advice = if downloaded {
                "the download of a newer one failed so far (see the log lines \"CRL download failed\"); it is still used"
            } else {
                "fetch the current one (IGC-Santé publishes daily), or let [trust.crl_download] do it"
            };
            self.problem(
                Severity::Warning,
                Some(full),
                field,
                format!("the CRL is past its nextUpdate: {advice}"),
            );
        }
        if !self.crls_in_use.iter().any(|c| c.file == in_use.file) {
            self.crls_in_use.push(in_use);
        }
        Some(crl)
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
            crls: {
                let mut crls = self.crl_files("trust.crls", &t.crls);
                if let Some(d) = &t.crl_download {
                    crls.extend(self.download_folder(d));
                }
                crls
            },
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
        let mut all: Vec<X509Crl> = self
            .crl_files(&format!("{section}.crls"), crls)
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        // The downloaded CRLs speak for the servers' chains too.
        all.extend(
            self.downloaded_crls
                .iter()
                .filter_map(|der| X509Crl::from_der(der).ok()),
        );
        UpstreamTrust {
            anchors,
            crls: newest_per_issuer(all),
            // Set once `[trust]`'s policy is read (`Validator::revocation`).
            revocation: Default::default(),
        }
    }
}

/// A root: issued by itself (names and key identifiers) and signed by its own key.
/// One CRL per issuer name, the newest (`thisUpdate`): rustls uses the first CRL whose
/// issuer matches, so an older file or copy listed first would hide the fresh one.
fn newest_per_issuer(crls: Vec<X509Crl>) -> Vec<Vec<u8>> {
    let mut kept: Vec<X509Crl> = Vec::new();
    for crl in crls {
        let same = kept.iter().position(|k| {
            k.issuer_name()
                .try_cmp(crl.issuer_name())
                .is_ok_and(|o| o.is_eq())
        });
        match same {
            Some(i) if kept[i].last_update() < crl.last_update() => kept[i] = crl,
            Some(_) => {}
            None => kept.push(crl),
        }
    }
    kept.iter().filter_map(|c| c.to_der().ok()).collect()
}

fn is_root(cert: &X509) -> bool {
    cert.issued(cert) == openssl::x509::X509VerifyResult::OK
        && cert
            .public_key()
            .is_ok_and(|key| cert.verify(&key).unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle_certs_test::{CrlIssuer, CrlOptions, shared_test_pki, write_crl};

    /// An upstream gets one CRL per issuer, the newest, whatever the order of the files.
    #[test]
    fn the_upstreams_get_the_newest_crl_of_each_issuer() {
        let pki = shared_test_pki().expect("PKI");
        let dir = tempfile::tempdir().expect("tempdir");
        let make = |name: &str, this_update: i64, issuer: CrlIssuer| {
            let mut o = CrlOptions::new(&pki.dir, dir.path().join(name));
            o.this_update = this_update;
            o.issuer = issuer;
            X509Crl::from_pem(&write_crl(&o).expect("crl")).expect("parse")
        };
        let fresh = make("fresh.crl", -30, CrlIssuer::Org);
        let old = make("old.crl", -7200, CrlIssuer::Org);
        let root = make("root.crl", -60, CrlIssuer::Root);
        let (fresh_der, old_der) = (fresh.to_der().expect("der"), old.to_der().expect("der"));
        let kept = newest_per_issuer(vec![old, root, fresh]);
        assert_eq!(kept.len(), 2, "one per issuer");
        assert_eq!(
            kept[0], fresh_der,
            "the newest ORG CRL, in the old one's place"
        );
        assert!(!kept.contains(&old_der));
    }
}
