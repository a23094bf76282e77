//! `[trust.crl_download]`: the download folder's CRLs joined to the trust (read before
//! the tenants' certificates are checked, so a downloaded CRL revokes as a `crls` file
//! does), and the download plan: the URLs (configured, then the HTTP CRL distribution
//! points named by every certificate the configuration holds), the CA certificates a
//! CRL must be signed by, the forward proxy, the timing.

use std::path::PathBuf;

use openssl::x509::{X509, X509Crl, X509NameRef};

use super::Validator;
use super::egress::Egress;
use crate::file::CrlDownloadSection;
use crate::model::{CrlDownload, CrlSource, Tenant, UpstreamTrust};
use crate::report::Severity;

const FIELD: &str = "trust.crl_download";

/// A name as RFC 2253 writes it (most significant last), for messages and labels.
pub(super) fn name(n: &X509NameRef) -> String {
    let mut parts: Vec<String> = n
        .entries()
        .map(|e| {
            format!(
                "{}={}",
                e.object().nid().short_name().unwrap_or("?"),
                e.data()
                    .to_string()
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            )
        })
        .collect();
    parts.reverse();
    parts.join(",")
}

/// The certificates whose CRL distribution points and keys the plan uses.
pub(super) struct Known<'a> {
    pub(super) anchors: &'a [X509],
    pub(super) intermediates: &'a [X509],
    pub(super) tenants: &'a [Tenant],
    pub(super) upstreams: Vec<&'a UpstreamTrust>,
}

impl Validator {
    /// Every `*.crl` in the download folder, in name order (none yet: nothing).
    pub(super) fn download_folder(&mut self, d: &CrlDownloadSection) -> Vec<(PathBuf, X509Crl)> {
        let dir = self.resolve(&d.directory);
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "crl"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                self.problem(
                    Severity::Error,
                    Some(&dir),
                    &format!("{FIELD}.directory"),
                    format!("cannot read the folder: {e}"),
                );
                Vec::new()
            }
        };
        files.sort();
        let mut out = Vec::new();
        for file in files {
            if let Some(crl) = self.crl_file(&file, &format!("{FIELD}.directory"), true) {
                // Only CRLs rustls reads too: one it refuses would stop every upstream.
                if let Ok(der) = crl.to_der()
                    && let Err(e) = webpki::OwnedCertRevocationList::from_der(&der)
                {
                    self.problem(
                        Severity::Warning,
                        Some(&file),
                        &format!("{FIELD}.directory"),
                        format!("a CRL the TLS library refuses ({e:?}): not used; remove it"),
                    );
                    continue;
                }
                if let Ok(der) = crl.to_der() {
                    self.downloaded_crls.push(der);
                }
                out.push((file, crl));
            }
        }
        out
    }

    /// The download plan. Names each downloaded copy in use by its URL, and warns of a
    /// copy no URL names any more (still used until removed).
    pub(super) fn crl_download(
        &mut self,
        d: &CrlDownloadSection,
        known: &Known<'_>,
        egress: Option<&Egress>,
    ) -> Option<CrlDownload> {
        let refresh = self.duration(&format!("{FIELD}.refresh"), &d.refresh);
        let timeout = self.duration(&format!("{FIELD}.timeout"), &d.timeout);
        let retry = self.duration(&format!("{FIELD}.retry"), &d.retry);
        if retry.is_some_and(|r| r < std::time::Duration::from_secs(1)) {
            self.error(&format!("{FIELD}.retry"), "at least \"1s\"");
        } else if let (Some(retry), Some(refresh)) = (retry, refresh)
            && retry > refresh
        {
            self.error(
                &format!("{FIELD}.retry"),
                format!(
                    "longer than refresh ({}): a failed download would wait longer than a good one",
                    d.refresh
                ),
            );
        }
        if refresh.is_some_and(|r| r < std::time::Duration::from_secs(60)) {
            self.error(
                &format!("{FIELD}.refresh"),
                "at least \"1m\": the CA publishes daily, and each fetch costs it",
            );
        } else if refresh.is_some_and(|r| r > std::time::Duration::from_secs(7 * 24 * 3600)) {
            self.error(
                &format!("{FIELD}.refresh"),
                "at most \"7d\": a revocation would be seen a week late",
            );
        } else if refresh.is_some_and(|r| r > std::time::Duration::from_secs(24 * 3600)) {
            self.warning(
                &format!("{FIELD}.refresh"),
                "longer than a day: IGC-Santé publishes its CRLs daily, a revocation would be seen late",
            );
        }
        if d.max_bytes < 1024 {
            self.error(
                &format!("{FIELD}.max_bytes"),
                format!("{} is too small for a CRL (at least 1024)", d.max_bytes),
            );
        }
        let mut urls: Vec<url::Url> = Vec::new();
        for (i, u) in d.urls.iter().enumerate() {
            match url::Url::parse(u) {
                Ok(u) if !u.username().is_empty() || u.password().is_some() => self.error(
                    &format!("{FIELD}.urls[{i}]"),
                    "must not carry credentials (user:password@): a CRL is public, and they would reach the forward proxy's logs",
                ),
                Ok(u) if u.scheme() == "http" && u.host().is_some() => {
                    if !urls.contains(&u) {
                        urls.push(u);
                    }
                }
                Ok(_) => self.error(
                    &format!("{FIELD}.urls[{i}]"),
                    format!("{u:?} must be an http:// URL with a host (a CRL carries its own signature; an https download would need the web PKI)"),
                ),
                Err(e) => self.error(&format!("{FIELD}.urls[{i}]"), format!("{u:?} is not a URL: {e}")),
            }
        }
        let certificates = certificates(known);
        // The issuer each discovered URL must publish for: the issuer of the
        // certificate that names it (a URL two issuers name is held to none).
        let mut expected: Vec<(url::Url, Option<Vec<u8>>)> = Vec::new();
        if d.discover {
            for cert in &certificates {
                let issuer = cert.issuer_name().to_der().ok();
                for u in distribution_points(cert) {
                    match expected.iter_mut().find(|(known, _)| *known == u) {
                        Some((_, e)) if *e != issuer => {
                            self.warning(
                                FIELD,
                                format!("{u} is the CRL distribution point of certificates of different issuers: any configured CA's CRL is accepted there"),
                            );
                            *e = None;
                        }
                        Some(_) => {}
                        None => expected.push((u.clone(), issuer.clone())),
                    }
                    if !urls.contains(&u) {
                        urls.push(u);
                    }
                }
            }
        }
        if urls.is_empty() {
            self.warning(
                FIELD,
                "no CRL to download: no certificate names an http:// CRL distribution point; list them in urls",
            );
        }
        let mut issuers: Vec<Vec<u8>> = Vec::new();
        for cert in certificates.iter().filter(|c| is_ca(c)) {
            if let Ok(der) = cert.to_der()
                && !issuers.contains(&der)
            {
                issuers.push(der);
            }
        }
        let directory = self.resolve(&d.directory);
        let mut sources = Vec::new();
        for u in urls {
            let egress = self.egress_route(FIELD, d.egress.as_deref(), &u, egress);
            let issuer = expected
                .iter()
                .find(|(known, _)| *known == u)
                .and_then(|(_, e)| e.clone());
            sources.push(CrlSource {
                url: u,
                egress,
                issuer,
            });
        }
        let plan = CrlDownload {
            directory: directory.clone(),
            sources,
            refresh: refresh?,
            retry: retry?,
            timeout: timeout?,
            max_bytes: d.max_bytes,
            issuers,
        };
        let mut orphans = Vec::new();
        for c in self
            .crls_in_use
            .iter_mut()
            .filter(|c| c.file.parent() == Some(directory.as_path()))
        {
            match plan
                .sources
                .iter()
                .find(|s| plan.file_for(&s.url) == c.file)
            {
                Some(s) => c.url = Some(s.url.to_string()),
                None => orphans.push(c.file.clone()),
            }
        }
        for report in &mut self.certificates {
            if let Some(r) = report.revocation.as_mut()
                && let Some(s) = r.source.as_ref()
                && s.parent() == Some(directory.as_path())
            {
                r.url = plan
                    .sources
                    .iter()
                    .find(|src| plan.file_for(&src.url) == *s)
                    .map(|src| src.url.to_string());
            }
        }
        for file in orphans {
            self.problem(
                Severity::Warning,
                Some(&file),
                &format!("{FIELD}.directory"),
                "no configured or discovered URL names this CRL any more: it is still used, but never refreshed; remove the file if it is no longer needed".into(),
            );
        }
        Some(plan)
    }
}

/// Every certificate the configuration holds: `[trust]`'s, the tenants' leaves and
/// chains, the upstreams' anchors.
fn certificates(known: &Known<'_>) -> Vec<X509> {
    let mut out: Vec<X509> = known
        .anchors
        .iter()
        .chain(known.intermediates)
        .cloned()
        .collect();
    let ders = known
        .tenants
        .iter()
        .flat_map(|t| t.certificates.values())
        .flat_map(|m| {
            std::iter::once(&m.leaf_der)
                .chain(&m.intermediates_der)
                .chain(m.anchor_der.as_ref())
        })
        .chain(known.upstreams.iter().flat_map(|u| u.anchors.iter()));
    out.extend(ders.filter_map(|der| X509::from_der(der).ok()));
    out
}

fn is_ca(cert: &X509) -> bool {
    // basicConstraints cA: only a CA's key signs CRLs.
    cert.to_der()
        .ok()
        .and_then(|der| {
            x509_parser::parse_x509_certificate(&der)
                .ok()
                .map(|(_, c)| c.is_ca())
        })
        .unwrap_or(false)
}

/// The `http://` full names of a certificate's CRL distribution points (LDAP ones are
/// not fetched).
fn distribution_points(cert: &X509) -> Vec<url::Url> {
    let Some(points) = cert.crl_distribution_points() else {
        return Vec::new();
    };
    points
        .iter()
        .filter_map(|p| p.distpoint()?.fullname())
        .flat_map(|names| names.iter().filter_map(|n| n.uri()))
        .filter_map(|u| url::Url::parse(u).ok())
        .filter(|u| u.scheme() == "http" && u.host().is_some())
        .collect()
}
