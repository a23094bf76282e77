//! What a check reports: [`Problem`]s with their [`Severity`] (and the
//! [`CertificateKey`] tying a problem to a certificate), and one [`CertificateReport`]
//! row per configured certificate with its [`Status`]; `Display` and `Serialize` give
//! the text and JSON renderings `passerelle check` prints.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use time::OffsetDateTime;

use crate::ids::CertRole;

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    /// The file at fault: the configuration file, or the certificate/key file it names.
    pub file: PathBuf,
    /// The configuration field, as a path (`tenants[0].certificates.dmp_auth.key`).
    pub field: String,
    pub message: String,
    /// The certificate this problem concerns, when it concerns one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateKey>,
    /// An error that disables only its certificate's (tenant, role) pair at run time
    /// (expired, not yet valid, revoked): `run` and reloads go on with that pair
    /// answering `CertificateExpired`, so one late renewal does not stop every tenant.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub disables: bool,
}

impl Problem {
    /// An error that prevents start and reload (not one that disables a pair).
    pub fn blocks(&self) -> bool {
        self.severity == Severity::Error && !self.disables
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}: {}",
            self.severity,
            self.file.display(),
            self.field,
            self.message
        )?;
        if self.disables {
            f.write_str(" (Passerelle runs with this tenant's certificate role disabled until it is replaced)")?;
        }
        Ok(())
    }
}

/// Identifies a configured certificate: the tenant (as written) and the role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CertificateKey {
    pub tenant: String,
    pub role: CertRole,
}

impl Serialize for CertRole {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.config_key())
    }
}

/// One row of `passerelle check`.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateReport {
    pub tenant: String,
    pub role: CertRole,
    /// Main file (certificate or PKCS#12).
    pub file: PathBuf,
    pub subject_cn: Option<String>,
    pub subject_ou: Option<String>,
    pub issuer_cn: Option<String>,
    pub serial: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    pub days_left: Option<i64>,
    /// `ok`, `warning` or `error`: the worst problem found for this certificate.
    pub status: Status,
    /// What the configured CRLs say about it; `None` when the certificate could not be
    /// read.
    pub revocation: Option<Revocation>,
}

/// Revocation status of one certificate and where it comes from: a `[trust] crls` file
/// or a copy `[trust.crl_download]` keeps (named by its URL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revocation {
    pub status: RevocationStatus,
    /// The CRL file that answered (the newest, when several do); `None` when no
    /// configured CRL covers the certificate.
    pub source: Option<PathBuf>,
    /// The URL `source` is downloaded from, for a `[trust.crl_download]` copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// When it was revoked (OpenSSL's date form), for `revoked`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_on: Option<String>,
    /// The OCSP responder asked about it at run time (`[trust] revocation` "ocsp" or
    /// "both"); `check` itself does not ask.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ocsp: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationStatus {
    /// A CRL signed by its issuer does not list it.
    Good,
    /// A CRL signed by its issuer lists it.
    Revoked,
    /// No configured CRL was signed by its issuer (or none is configured).
    NotChecked,
}

impl fmt::Display for Revocation {
    /// `good (CRL ACI-EL-ORG.crl)`, `REVOKED on ... (CRL ...)` or `not checked`: the CRL
    /// by its URL when downloaded, else by file name only, for a table cell (the JSON
    /// report has the whole path).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = self.url.clone().or_else(|| {
            self.source
                .as_deref()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        });
        let ocsp = self.ocsp.as_deref().map(|u| {
            let host = url::Url::parse(u)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| u.to_string());
            format!("OCSP {host} at run time")
        });
        match (self.status, source, ocsp) {
            (RevocationStatus::NotChecked, _, Some(ocsp)) | (_, None, Some(ocsp)) => {
                f.write_str(&ocsp)
            }
            (RevocationStatus::Good, Some(crl), Some(ocsp)) => {
                write!(f, "good (CRL {crl}) + {ocsp}")
            }
            (RevocationStatus::NotChecked, _, None) | (_, None, None) => f.write_str("not checked"),
            (RevocationStatus::Good, Some(crl), None) => write!(f, "good (CRL {crl})"),
            (RevocationStatus::Revoked, Some(crl), _) => match &self.revoked_on {
                Some(on) => write!(f, "REVOKED on {on} (CRL {crl})"),
                None => write!(f, "REVOKED (CRL {crl})"),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Error,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}
