//! Passerelle's configuration: one TOML file, validated fully before anything runs.
//!
//! [`inspect`] reads the file and every file it names, and reports **all** problems at
//! once, each naming the file and the field at fault ([`Problem`]), beside one
//! [`CertificateReport`] per configured certificate. [`load`] is the same check for
//! the proxy: it returns the validated, typed [`Config`] only when no problem is an
//! error. The TOML model is in [`file`]; identifiers ([`TenantId`], [`StructureId`],
//! [`CertRole`]) are parsed once, here, and typed from then on.

pub mod file;
mod ids;
mod material;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509, X509Crl, X509StoreContext};
use serde::Serialize;
use time::OffsetDateTime;

pub use ids::{CertRole, IdError, StructureId, StructureKind, TenantId};
pub use material::{CertificateInfo, PrivateKey, rfc2253, role_problems};

use file::{CertSource, ConfigFile, TimeoutsSection};

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
        )
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

/// Everything [`inspect`] found.
#[derive(Debug)]
pub struct Inspection {
    /// The validated configuration, present when no problem is an error.
    pub config: Option<Config>,
    pub certificates: Vec<CertificateReport>,
    pub problems: Vec<Problem>,
}

impl Inspection {
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }
}

/// Why [`load`] refused a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {} error(s) in the configuration:\n{}", path.display(), problems.len(),
        problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        /// The errors (warnings are left out).
        problems: Vec<Problem>,
    },
}

/// A validated configuration, ready for the proxy.
#[derive(Debug)]
pub struct Config {
    /// The file it was loaded from.
    pub path: PathBuf,
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    pub software: Software,
    pub dmp: Option<DmpService>,
    pub insi: Option<InsiService>,
    pub tenants: Vec<Tenant>,
    pub clients: Vec<InternalClient>,
    pub security: file::SecuritySection,
    pub limits: Limits,
    pub audit: Audit,
    /// `None`: the internal listener is plain HTTP.
    pub listener_tls: Option<ListenerTls>,
    /// Warnings found while loading (an expiring certificate, no client declared, ...).
    pub warnings: Vec<Problem>,
}

impl Config {
    pub fn tenant(&self, id: &TenantId) -> Option<&Tenant> {
        self.tenants.iter().find(|t| &t.id == id)
    }
}

/// Software identity carried in VIHF tokens and INSi contexts.
#[derive(Debug, Clone)]
pub struct Software {
    pub lps_name: String,
    pub lps_version: String,
    pub dmp_homologation_id: String,
    /// `LPS_ID` of the VIHF, when configured.
    pub lps_id: Option<String>,
    pub insi_idam: String,
    pub instance_id: uuid::Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub tls: Duration,
    pub request: Duration,
    pub idle: Duration,
}

/// Trust for an upstream's server certificate: IGC-Santé anchors, never the web PKI.
#[derive(Debug, Clone)]
pub struct UpstreamTrust {
    /// DER anchors.
    pub anchors: Vec<Vec<u8>>,
    /// DER CRLs.
    pub crls: Vec<Vec<u8>>,
}

/// What one internal request may cost, and how many run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// Requests in flight at once per upstream pool.
    pub upstream_concurrency: usize,
    /// Time a client may take to send its request headers (for the first request of a
    /// connection: from the moment it opened, TLS handshake included).
    pub header_read_timeout: Duration,
    /// Requests handled at once; beyond, 503 with Retry-After.
    pub max_concurrent_requests: usize,
    /// Client connections open at once on the internal listener; `None`: derived from
    /// the open-files limit when the proxy starts.
    pub max_connections: Option<usize>,
    /// Time a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// HTTP/2 PING interval, and the time a client has to acknowledge one.
    pub http2_keep_alive_interval: Duration,
    pub http2_keep_alive_timeout: Duration,
    /// Time a request's whole body may take to arrive, from its headers; beyond, 408.
    pub body_read_timeout: Duration,
    /// Request body bytes held in memory at once, all requests together; beyond, 503.
    pub max_inflight_body_bytes: usize,
}

/// TLS on the internal listener.
#[derive(Debug)]
pub struct ListenerTls {
    /// The server certificate then its chain, DER.
    pub chain_der: Vec<Vec<u8>>,
    pub key: PrivateKey,
    /// CAs of the internal clients' certificates, DER.
    pub client_cas_der: Vec<Vec<u8>>,
    pub require_client_certificate: bool,
}

/// The audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Absolute, or resolved against the configuration file's directory.
    pub path: PathBuf,
    pub rotate_bytes: u64,
    pub rotate_daily: bool,
    pub fsync: bool,
}

/// Digest of a signature (`sha256`, or `sha1` for the older profiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureDigest {
    #[default]
    Sha256,
    Sha1,
}

/// How the proxy signs for the DMP (the open points of domain.md §5 and §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmpSigning {
    /// `VIHF_Version` value.
    pub vihf_version: String,
    /// `Authentification_mode` or `Authentification_Mode`.
    pub auth_mode_attribute: String,
    pub vihf_digest: SignatureDigest,
    pub lot_digest: SignatureDigest,
    /// InclusiveNamespaces PrefixList of the VIHF reference (empty: none).
    pub inclusive_prefixes: Vec<String>,
    /// Forward a submission that already carries a lot signature instead of refusing it.
    pub lot_signature_passthrough: bool,
    /// An internal system's `AuthnInstant` older than this is refused.
    pub max_authn_age: Duration,
}

#[derive(Debug, Clone)]
pub struct DmpService {
    pub base_url: url::Url,
    /// Route name (`/dmp/<name>`) to service path under `base_url`.
    pub services: BTreeMap<String, String>,
    pub trust: UpstreamTrust,
    pub timeouts: Timeouts,
    pub signing: DmpSigning,
}

impl DmpService {
    /// Full URL of a service by route name.
    pub fn service_url(&self, name: &str) -> Option<String> {
        self.services
            .get(name)
            .map(|path| format!("{}/{}", self.base_url.as_str().trim_end_matches('/'), path))
    }
}

#[derive(Debug, Clone)]
pub struct InsiService {
    pub url: url::Url,
    pub trust: UpstreamTrust,
    pub timeouts: Timeouts,
}

/// One legal entity and its certificates.
#[derive(Debug)]
pub struct Tenant {
    pub id: TenantId,
    /// The legal entity (EJ): the OU of every certificate of the tenant.
    pub structure_id: StructureId,
    /// Its geographic entities (EG).
    pub geographic_structure_ids: Vec<StructureId>,
    pub certificates: BTreeMap<CertRole, CertMaterial>,
}

impl Tenant {
    /// Whether a structure may act under this tenant's certificates: the legal entity
    /// itself or one of its geographic entities.
    pub fn owns_structure(&self, structure: &StructureId) -> bool {
        &self.structure_id == structure || self.geographic_structure_ids.contains(structure)
    }
}

/// Intermediates (nearest first) and the anchor a verified chain ended at, DER.
type VerifiedChain = (Vec<Vec<u8>>, Option<Vec<u8>>);

/// A certificate with its chain and key, checked against its role.
#[derive(Debug)]
pub struct CertMaterial {
    pub role: CertRole,
    pub info: CertificateInfo,
    /// The leaf, DER.
    pub leaf_der: Vec<u8>,
    /// Intermediates up to (not including) the anchor, DER, nearest first.
    pub intermediates_der: Vec<Vec<u8>>,
    /// The configured trust anchor (root) the chain ended at, DER; `None` when the leaf
    /// is itself the anchor. XAdES `SigningCertificate` lists the chain up to the root.
    pub anchor_der: Option<Vec<u8>>,
    pub key: PrivateKey,
    /// The file it was read from (certificate or PKCS#12).
    pub source: PathBuf,
}

/// A service an internal client may call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServiceScope {
    /// Every DMP service.
    AllDmp,
    /// One DMP service by route name.
    Dmp(String),
    Insi,
}

/// An internal system (SIH) allowed to use the proxy.
#[derive(Debug, Clone)]
pub struct InternalClient {
    pub name: String,
    pub source_cidrs: Vec<IpNet>,
    /// SHA-256 of the bearer token, 32 bytes.
    pub token_sha256: Option<[u8; 32]>,
    /// SHA-256 fingerprint of the client certificate, 32 bytes.
    pub cert_sha256: Option<[u8; 32]>,
    pub cert_subject: Option<String>,
    pub tenants: Vec<TenantId>,
    pub services: Vec<ServiceScope>,
    /// Requests per second allowed (burst: one second's worth); `None`: unlimited.
    pub rate_per_second: Option<f64>,
}

/// Validates the configuration at `path` and every file it names; returns it when no
/// problem is an error (warnings travel in [`Config::warnings`]).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let inspection = inspect(path);
    match inspection.config {
        Some(config) => Ok(config),
        None => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: inspection
                .problems
                .into_iter()
                .filter(|p| p.severity == Severity::Error)
                .collect(),
        }),
    }
}

/// Reads and checks the configuration at `path`, collecting every problem.
pub fn inspect(path: &Path) -> Inspection {
    inspect_at(path, OffsetDateTime::now_utc())
}

/// [`inspect`] as if the time were `now` (for tests of expiry rules).
pub fn inspect_at(path: &Path, now: OffsetDateTime) -> Inspection {
    let mut v = Validator {
        config_path: path.to_path_buf(),
        base: path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        now,
        problems: Vec::new(),
        certificates: Vec::new(),
        allow_insecure_keys: false,
        expiry_warning_days: 30,
    };
    let config = v.run();
    let config = if v.problems.iter().any(|p| p.severity == Severity::Error) {
        None
    } else {
        config.map(|mut c| {
            c.warnings = v.problems.clone();
            c
        })
    };
    Inspection {
        config,
        certificates: v.certificates,
        problems: v.problems,
    }
}

struct Validator {
    config_path: PathBuf,
    base: PathBuf,
    now: OffsetDateTime,
    problems: Vec<Problem>,
    certificates: Vec<CertificateReport>,
    allow_insecure_keys: bool,
    expiry_warning_days: u32,
}

/// Anchors, intermediates and CRLs for checking the tenants' own certificates.
struct TenantTrust {
    anchors: Vec<X509>,
    intermediates: Vec<X509>,
    crls: Vec<(PathBuf, X509Crl)>,
}

impl Validator {
    fn problem(&mut self, severity: Severity, file: Option<&Path>, field: &str, message: String) {
        self.problems.push(Problem {
            severity,
            file: file.map_or_else(|| self.config_path.clone(), Path::to_path_buf),
            field: field.to_string(),
            message,
            certificate: None,
        });
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.problem(Severity::Error, None, field, message.into());
    }

    fn warning(&mut self, field: &str, message: impl Into<String>) {
        self.problem(Severity::Warning, None, field, message.into());
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn run(&mut self) -> Option<Config> {
        let text = match std::fs::read_to_string(&self.config_path) {
            Ok(t) => t,
            Err(e) => {
                self.error("(file)", format!("cannot read the configuration: {e}"));
                return None;
            }
        };
        let mut unknown = Vec::new();
        let parsed: Result<ConfigFile, String> = toml::Deserializer::parse(&text)
            .map_err(|e| e.to_string())
            .and_then(|de| {
                serde_ignored::deserialize(de, |path| unknown.push(field_path(&path)))
                    .map_err(|e| e.to_string())
            });
        for key in unknown {
            self.error(
                &key,
                "unknown key (check its spelling against the configuration reference)",
            );
        }
        let raw = match parsed {
            Ok(raw) => raw,
            Err(message) => {
                self.error("(syntax)", message.trim_end().replace('\n', "\n    "));
                return None;
            }
        };
        self.allow_insecure_keys = raw.security.allow_insecure_key_permissions;
        self.expiry_warning_days = raw.security.expiry_warning_days;

        let listener = self.socket_addr("listener.address", &raw.listener.address);
        let admin = self.socket_addr("admin.address", &raw.admin.address);
        if let (Some(l), Some(a)) = (listener, admin)
            && l == a
            && l.port() != 0
        {
            self.error(
                "admin.address",
                format!("same address as listener.address ({l})"),
            );
        }
        let software = self.software(&raw.software);
        let trust = self.tenant_trust(&raw.trust);
        let dmp = raw.dmp.as_ref().and_then(|d| self.dmp(d));
        let insi = raw.insi.as_ref().and_then(|i| self.insi(i));
        let tenants = self.tenants(&raw, &trust);
        let clients = self.clients(&raw, &tenants);
        let listener_tls = raw.listener.tls.as_ref().and_then(|t| self.listener_tls(t));
        if raw
            .listener
            .tls
            .as_ref()
            .is_none_or(|t| t.client_ca.is_empty())
            && clients
                .iter()
                .any(|c| c.cert_sha256.is_some() || c.cert_subject.is_some())
        {
            self.warning(
                "clients",
                "a client is identified by its certificate, but listener.tls.client_ca is not set: it cannot connect",
            );
        }

        Some(Config {
            path: self.config_path.clone(),
            listener: listener?,
            admin: admin?,
            software: software?,
            dmp,
            insi,
            tenants,
            clients,
            security: raw.security.clone(),
            listener_tls,
            limits: self.limits(&raw)?,
            audit: Audit {
                path: self.resolve(&raw.audit.path),
                rotate_bytes: raw.audit.rotate_bytes,
                rotate_daily: raw.audit.rotate_daily,
                fsync: raw.audit.fsync,
            },
            warnings: Vec::new(),
        })
    }

    fn listener_tls(&mut self, t: &file::ListenerTlsSection) -> Option<ListenerTls> {
        let cert_path = self.resolve(&t.cert);
        let key_path = self.resolve(&t.key);
        let certs = match material::read_certificates(&cert_path) {
            Ok(c) => c,
            Err(e) => {
                self.problem(Severity::Error, Some(&cert_path), "listener.tls.cert", e);
                return None;
            }
        };
        self.check_secret_permissions("listener.tls.key", &key_path);
        let key = match material::read_pem_key(&key_path) {
            Ok(k) => k,
            Err(e) => {
                self.problem(Severity::Error, Some(&key_path), "listener.tls.key", e);
                return None;
            }
        };
        let matches = certs[0].public_key().is_ok_and(|p| p.public_eq(&key));
        if !matches {
            self.problem(
                Severity::Error,
                Some(&key_path),
                "listener.tls.key",
                "the private key does not match listener.tls.cert".to_string(),
            );
            return None;
        }
        let mut client_cas_der = Vec::new();
        for (i, ca) in t.client_ca.iter().enumerate() {
            let path = self.resolve(ca);
            match material::read_certificates(&path) {
                Ok(cas) => client_cas_der.extend(cas.iter().filter_map(|c| c.to_der().ok())),
                Err(e) => self.problem(
                    Severity::Error,
                    Some(&path),
                    &format!("listener.tls.client_ca[{i}]"),
                    e,
                ),
            }
        }
        if t.require_client_certificate && t.client_ca.is_empty() {
            self.error(
                "listener.tls.require_client_certificate",
                "client certificates are required but listener.tls.client_ca names no CA",
            );
        }
        let chain_der = certs.iter().filter_map(|c| c.to_der().ok()).collect();
        let key = key
            .private_key_to_pkcs8()
            .map(|der| PrivateKey(zeroize::Zeroizing::new(der)))
            .map_err(|e| {
                self.problem(
                    Severity::Error,
                    Some(&key_path),
                    "listener.tls.key",
                    e.to_string(),
                )
            })
            .ok()?;
        Some(ListenerTls {
            chain_der,
            key,
            client_cas_der,
            require_client_certificate: t.require_client_certificate,
        })
    }

    fn limits(&mut self, raw: &ConfigFile) -> Option<Limits> {
        const FLOOR: u64 = 64 * 1024;
        let l = &raw.limits;
        let listener = &raw.listener;
        let header_read_timeout = self.duration(
            "listener.header_read_timeout",
            &listener.header_read_timeout,
        );
        let idle_timeout = self.duration("listener.idle_timeout", &listener.idle_timeout);
        let http2_keep_alive_interval = self.duration(
            "listener.http2_keep_alive_interval",
            &listener.http2_keep_alive_interval,
        );
        let http2_keep_alive_timeout = self.duration(
            "listener.http2_keep_alive_timeout",
            &listener.http2_keep_alive_timeout,
        );
        let body_read_timeout = self.duration("limits.body_read_timeout", &l.body_read_timeout);
        if listener.max_concurrent_requests == 0 {
            self.error("listener.max_concurrent_requests", "must be at least 1");
        }
        if listener.max_connections == Some(0) {
            self.error(
                "listener.max_connections",
                "must be at least 1 (leave it out to derive it from the open-files limit)",
            );
        }
        if l.upstream_concurrency == 0 {
            self.error("limits.upstream_concurrency", "must be at least 1");
        }
        if l.max_body_bytes < FLOOR {
            self.error(
                "limits.max_body_bytes",
                format!(
                    "{} bytes is too small for a SOAP request: at least {FLOOR}",
                    l.max_body_bytes
                ),
            );
            return None;
        }
        let inflight = l
            .max_inflight_body_bytes
            .unwrap_or_else(|| l.max_body_bytes.saturating_mul(4));
        if inflight < l.max_body_bytes {
            self.error(
                "limits.max_inflight_body_bytes",
                format!(
                    "{inflight} bytes is less than limits.max_body_bytes ({}): a body of the largest size allowed could never be read",
                    l.max_body_bytes
                ),
            );
            return None;
        }
        match (usize::try_from(l.max_body_bytes), usize::try_from(inflight)) {
            (Ok(max_body_bytes), Ok(max_inflight_body_bytes)) => Some(Limits {
                max_body_bytes,
                upstream_concurrency: l.upstream_concurrency.max(1),
                header_read_timeout: header_read_timeout?,
                max_concurrent_requests: listener.max_concurrent_requests.max(1),
                max_connections: listener.max_connections.map(|n| n.max(1)),
                idle_timeout: idle_timeout?,
                http2_keep_alive_interval: http2_keep_alive_interval?,
                http2_keep_alive_timeout: http2_keep_alive_timeout?,
                body_read_timeout: body_read_timeout?,
                max_inflight_body_bytes,
            }),
            (Err(_), _) => {
                self.error(
                    "limits.max_body_bytes",
                    "larger than this machine can address",
                );
                None
            }
            (_, Err(_)) => {
                self.error(
                    "limits.max_inflight_body_bytes",
                    "larger than this machine can address",
                );
                None
            }
        }
    }

    fn socket_addr(&mut self, field: &str, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    field,
                    format!("{value:?} is not an address of the form host:port (e.g. \"127.0.0.1:8080\")"),
                );
                None
            }
        }
    }

    fn software(&mut self, s: &file::SoftwareSection) -> Option<Software> {
        for (field, value) in [
            ("software.lps_name", &s.lps_name),
            ("software.lps_version", &s.lps_version),
        ] {
            if value.trim().is_empty() {
                self.error(field, "must not be empty");
            }
        }
        if s.dmp_homologation_id.trim().is_empty() {
            self.warning(
                "software.dmp_homologation_id",
                "empty: the DMP expects the CNDA homologation number in LPS_ID_HOMOLOGATION_DMP",
            );
        }
        if s.insi_idam.trim().is_empty() {
            self.warning(
                "software.insi_idam",
                "empty: INSi contexts carry the IDAM given by the CNAM",
            );
        }
        let instance_id = match uuid::Uuid::parse_str(&s.instance_id) {
            Ok(u) => Some(u),
            Err(_) => {
                self.error(
                    "software.instance_id",
                    format!(
                        "{:?} is not a UUID (generate one with `uuidgen`)",
                        s.instance_id
                    ),
                );
                None
            }
        };
        let lps_id = match s.lps_id.as_deref().map(str::trim) {
            Some("") => {
                self.error(
                    "software.lps_id",
                    "empty: remove the key, or give the LPS_ID to emit (e.g. \"01.01.01.01\")",
                );
                None
            }
            other => other.map(str::to_string),
        };
        Some(Software {
            lps_name: s.lps_name.clone(),
            lps_version: s.lps_version.clone(),
            dmp_homologation_id: s.dmp_homologation_id.clone(),
            lps_id,
            insi_idam: s.insi_idam.clone(),
            instance_id: instance_id?,
        })
    }

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

    fn tenant_trust(&mut self, t: &file::TrustSection) -> TenantTrust {
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

    fn upstream_trust(
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

    fn https_url(&mut self, field: &str, value: &str) -> Option<url::Url> {
        match url::Url::parse(value) {
            Ok(u) if u.scheme() == "https" && u.host().is_some() && u.query().is_none() => Some(u),
            Ok(_) => {
                self.error(
                    field,
                    format!("{value:?} must be an https:// URL with a host and no query"),
                );
                None
            }
            Err(e) => {
                self.error(field, format!("{value:?} is not a URL: {e}"));
                None
            }
        }
    }

    fn duration(&mut self, field: &str, value: &str) -> Option<Duration> {
        match humantime::parse_duration(value) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                self.error(
                    field,
                    format!(
                        "{value:?} is not a positive duration such as \"30s\", \"500ms\" or \"2m\""
                    ),
                );
                None
            }
        }
    }

    fn timeouts(&mut self, section: &str, t: &TimeoutsSection) -> Option<Timeouts> {
        let mut parse =
            |name: &str, value: &str| self.duration(&format!("{section}.timeouts.{name}"), value);
        let connect = parse("connect", &t.connect);
        let tls = parse("tls", &t.tls);
        let request = parse("request", &t.request);
        let idle = parse("idle", &t.idle);
        Some(Timeouts {
            connect: connect?,
            tls: tls?,
            request: request?,
            idle: idle?,
        })
    }

    fn dmp(&mut self, d: &file::DmpSection) -> Option<DmpService> {
        let base_url = self.https_url("dmp.base_url", &d.base_url);
        for (name, path) in &d.services {
            let ok_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok_name {
                self.error(
                    &format!("dmp.services.{name}"),
                    "service names may hold only letters, digits, '-' and '_' (they become /dmp/<name>)",
                );
            }
            if path.is_empty() || path.contains(['/', '?', '#', ' ']) {
                self.error(
                    &format!("dmp.services.{name}"),
                    format!("{path:?} must be one path segment such as \"registry\""),
                );
            }
        }
        if d.services.is_empty() {
            self.error("dmp.services", "no DMP service declared");
        }
        let trust = self.upstream_trust("dmp", &d.trust_anchors, &d.crls);
        let timeouts = self.timeouts("dmp", &d.timeouts);
        let signing = self.dmp_signing(&d.signing);
        Some(DmpService {
            base_url: base_url?,
            services: d.services.clone(),
            trust,
            timeouts: timeouts?,
            signing: signing?,
        })
    }

    fn digest(&mut self, field: &str, value: &str) -> Option<SignatureDigest> {
        match value {
            "sha256" => Some(SignatureDigest::Sha256),
            "sha1" => Some(SignatureDigest::Sha1),
            other => {
                self.error(
                    field,
                    format!("{other:?} is not a digest: \"sha256\" or \"sha1\""),
                );
                None
            }
        }
    }

    fn dmp_signing(&mut self, s: &file::DmpSigningSection) -> Option<DmpSigning> {
        const AUTH_MODE: [&str; 2] = ["Authentification_mode", "Authentification_Mode"];
        if !AUTH_MODE.contains(&s.auth_mode_attribute.as_str()) {
            self.error(
                "dmp.signing.auth_mode_attribute",
                format!(
                    "{:?} must be \"Authentification_mode\" or \"Authentification_Mode\"",
                    s.auth_mode_attribute
                ),
            );
        }
        if s.vihf_version.trim().is_empty() {
            self.error(
                "dmp.signing.vihf_version",
                "must not be empty (e.g. \"3.0\")",
            );
        }
        let vihf_digest = self.digest("dmp.signing.vihf_digest", &s.vihf_digest);
        let lot_digest = self.digest("dmp.signing.lot_digest", &s.lot_digest);
        let max_authn_age = self.duration("dmp.signing.max_authn_age", &s.max_authn_age);
        Some(DmpSigning {
            vihf_version: s.vihf_version.clone(),
            auth_mode_attribute: s.auth_mode_attribute.clone(),
            vihf_digest: vihf_digest?,
            lot_digest: lot_digest?,
            inclusive_prefixes: s.inclusive_prefixes.clone(),
            lot_signature_passthrough: s.lot_signature_passthrough,
            max_authn_age: max_authn_age?,
        })
    }

    fn insi(&mut self, i: &file::InsiSection) -> Option<InsiService> {
        let url = self.https_url("insi.url", &i.url);
        let trust = self.upstream_trust("insi", &i.trust_anchors, &i.crls);
        let timeouts = self.timeouts("insi", &i.timeouts);
        Some(InsiService {
            url: url?,
            trust,
            timeouts: timeouts?,
        })
    }

    fn tenants(&mut self, raw: &ConfigFile, trust: &TenantTrust) -> Vec<Tenant> {
        if raw.tenants.is_empty() {
            self.error(
                "tenants",
                "no tenant: declare at least one [[tenants]] with its certificates",
            );
        }
        let mut tenants = Vec::new();
        let mut seen_ids = BTreeSet::new();
        let mut seen_structures: HashMap<String, String> = HashMap::new();
        // Certificate fingerprint -> where it is used: one certificate, one tenant, one role.
        let mut seen_certs: HashMap<String, String> = HashMap::new();
        for (index, t) in raw.tenants.iter().enumerate() {
            let field = format!("tenants[{index}]");
            let id = match t.id.parse::<TenantId>() {
                Ok(id) => {
                    if !seen_ids.insert(id.clone()) {
                        self.error(
                            &format!("{field}.id"),
                            format!("tenant id {id} is declared twice"),
                        );
                    }
                    Some(id)
                }
                Err(e) => {
                    self.error(&format!("{field}.id"), e.to_string());
                    None
                }
            };
            let structure = match t.structure_id.parse::<StructureId>() {
                Ok(s) => {
                    if let Some(other) = seen_structures.insert(s.to_string(), t.id.clone()) {
                        self.warning(
                            &format!("{field}.structure_id"),
                            format!("structure {s} is also the legal entity of tenant {other}"),
                        );
                    }
                    Some(s)
                }
                Err(e) => {
                    self.error(&format!("{field}.structure_id"), e.to_string());
                    None
                }
            };
            let mut geographic = Vec::new();
            for (g, value) in t.geographic_structure_ids.iter().enumerate() {
                let gfield = format!("{field}.geographic_structure_ids[{g}]");
                match value.parse::<StructureId>() {
                    Ok(s) if Some(&s) == structure.as_ref() => self.warning(
                        &gfield,
                        format!("{s} is the legal entity itself; list only geographic entities"),
                    ),
                    Ok(s) if geographic.contains(&s) => {
                        self.warning(&gfield, format!("{s} is listed twice"))
                    }
                    Ok(s) => geographic.push(s),
                    Err(e) => self.error(&gfield, e.to_string()),
                }
            }

            let mut certificates = BTreeMap::new();
            let sources = [
                (CertRole::DmpAuth, &t.certificates.dmp_auth),
                (CertRole::DmpSign, &t.certificates.dmp_sign),
                (CertRole::InsiAuto, &t.certificates.insi_auto),
                (CertRole::InsiManu, &t.certificates.insi_manu),
            ];
            if sources.iter().all(|(_, s)| s.is_none()) {
                self.error(
                    &format!("{field}.certificates"),
                    "no certificate: a tenant needs dmp_auth + dmp_sign, insi_auto or insi_manu",
                );
            }
            for (role, source) in sources {
                let Some(source) = source else { continue };
                let cfield = format!("{field}.certificates.{}", role.config_key());
                let key = CertificateKey {
                    tenant: t.id.clone(),
                    role,
                };
                let before = self.problems.len();
                let material = self.certificate(&cfield, role, source, trust, structure.as_ref());
                if let Some(m) = &material {
                    let place = format!("tenant {} {}", t.id, role);
                    if let Some(other) = seen_certs.insert(m.info.sha256.clone(), place) {
                        self.problem(
                            Severity::Error,
                            Some(&m.source),
                            &cfield,
                            format!("the same certificate is already configured for {other}: one certificate serves one tenant and one role"),
                        );
                    }
                }
                for p in &mut self.problems[before..] {
                    p.certificate = Some(key.clone());
                }
                let status = self.problems[before..]
                    .iter()
                    .map(|p| p.severity)
                    .max()
                    .map_or(Status::Ok, |s| match s {
                        Severity::Warning => Status::Warning,
                        Severity::Error => Status::Error,
                    });
                let info = material.as_ref().map(|m| &m.info);
                self.certificates.push(CertificateReport {
                    tenant: t.id.clone(),
                    role,
                    file: self.resolve(
                        source
                            .cert
                            .as_deref()
                            .or(source.pkcs12.as_deref())
                            .unwrap_or(Path::new("")),
                    ),
                    subject_cn: info.and_then(|i| i.common_name.clone()),
                    subject_ou: info.and_then(|i| i.organizational_unit.clone()),
                    issuer_cn: info.and_then(|i| i.issuer_common_name.clone()),
                    serial: info.map(|i| i.serial_hex.clone()),
                    not_after: info.map(|i| i.not_after),
                    days_left: info.map(|i| i.days_left(self.now)),
                    status,
                });
                if let Some(m) = material {
                    certificates.insert(role, m);
                }
            }
            // The DMP compares the VIHF Issuer (SIGN subject) with the TLS client subject.
            match (certificates.get(&CertRole::DmpAuth), certificates.get(&CertRole::DmpSign)) {
                (Some(auth), Some(sign)) if auth.info.subject != sign.info.subject => self.error(
                    &format!("{field}.certificates.dmp_sign"),
                    format!(
                        "subject {:?} differs from dmp_auth's {:?}: the DMP expects the ORG SIGN and ORG AUTH_CLI certificates to carry the same DN",
                        sign.info.subject, auth.info.subject
                    ),
                ),
                _ => {}
            }
            let has = |role| sources.iter().any(|(r, s)| *r == role && s.is_some());
            if has(CertRole::DmpAuth) != has(CertRole::DmpSign) {
                self.error(
                    &format!("{field}.certificates"),
                    "DMP access needs both dmp_auth (TLS) and dmp_sign (VIHF and lot signatures)",
                );
            }
            if let (Some(id), Some(structure)) = (id, structure) {
                tenants.push(Tenant {
                    id,
                    structure_id: structure,
                    geographic_structure_ids: geographic,
                    certificates,
                });
            }
        }
        tenants
    }

    /// Key files must not be readable by group or others unless the operator opts in.
    fn check_secret_permissions(&mut self, field: &str, path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            let (severity, advice) = if self.allow_insecure_keys {
                (
                    Severity::Warning,
                    "accepted because security.allow_insecure_key_permissions = true",
                )
            } else {
                (
                    Severity::Error,
                    "run `chmod 600` on it (or set security.allow_insecure_key_permissions = true)",
                )
            };
            self.problem(
                severity,
                Some(path),
                field,
                format!("secret file is readable by group or others (mode {mode:04o}): {advice}"),
            );
        }
    }

    fn certificate(
        &mut self,
        field: &str,
        role: CertRole,
        source: &CertSource,
        trust: &TenantTrust,
        structure: Option<&StructureId>,
    ) -> Option<CertMaterial> {
        let (raw, main_file) = match (source, &source.cert, &source.pkcs12) {
            (
                CertSource {
                    key: Some(key),
                    chain,
                    password_file: None,
                    ..
                },
                Some(cert),
                None,
            ) => {
                let cert_path = self.resolve(cert);
                let key_path = self.resolve(key);
                self.check_secret_permissions(&format!("{field}.key"), &key_path);
                let certs = material::read_certificates(&cert_path)
                    .map_err(|e| {
                        self.problem(
                            Severity::Error,
                            Some(&cert_path),
                            &format!("{field}.cert"),
                            e,
                        )
                    })
                    .ok();
                let mut chain_certs = Vec::new();
                if let Some(chain) = chain {
                    let chain_path = self.resolve(chain);
                    match material::read_certificates(&chain_path) {
                        Ok(c) => chain_certs = c,
                        Err(e) => self.problem(
                            Severity::Error,
                            Some(&chain_path),
                            &format!("{field}.chain"),
                            e,
                        ),
                    }
                }
                let key = material::read_pem_key(&key_path)
                    .map_err(|e| {
                        self.problem(Severity::Error, Some(&key_path), &format!("{field}.key"), e)
                    })
                    .ok();
                let (mut certs, key) = (certs?, key?);
                let leaf = certs.remove(0);
                certs.extend(chain_certs);
                // A chain file usually starts with the leaf itself.
                let leaf_der = leaf.to_der().ok();
                certs.retain(|c| c.to_der().ok() != leaf_der);
                (
                    material::RawMaterial {
                        leaf,
                        supplied_chain: certs,
                        key,
                    },
                    cert_path,
                )
            }
            (
                CertSource {
                    password_file: Some(password),
                    cert: None,
                    key: None,
                    chain: None,
                    ..
                },
                None,
                Some(p12),
            ) => {
                let p12_path = self.resolve(p12);
                let password_path = self.resolve(password);
                self.check_secret_permissions(&format!("{field}.pkcs12"), &p12_path);
                self.check_secret_permissions(&format!("{field}.password_file"), &password_path);
                match material::read_pkcs12(&p12_path, &password_path) {
                    Ok(raw) => (raw, p12_path),
                    Err(material::Pkcs12Error::File(e)) => {
                        self.problem(
                            Severity::Error,
                            Some(&p12_path),
                            &format!("{field}.pkcs12"),
                            e,
                        );
                        return None;
                    }
                    Err(material::Pkcs12Error::Password(e)) => {
                        self.problem(
                            Severity::Error,
                            Some(&password_path),
                            &format!("{field}.password_file"),
                            e,
                        );
                        return None;
                    }
                }
            }
            _ => {
                self.error(
                    field,
                    "give either `cert` + `key` (+ optional `chain`) PEM files, or `pkcs12` + `password_file`",
                );
                return None;
            }
        };

        let leaf_der = raw.leaf.to_der().ok()?;
        let info = match CertificateInfo::from_der(&leaf_der) {
            Ok(i) => i,
            Err(e) => {
                self.problem(Severity::Error, Some(&main_file), field, e);
                return None;
            }
        };
        let mut err = |v: &mut Self, message: String| {
            v.problem(Severity::Error, Some(&main_file), field, message)
        };
        let key = match material::check_key(&raw) {
            Ok(k) => Some(k),
            Err(e) => {
                let key_field = if source.key.is_some() {
                    format!("{field}.key")
                } else {
                    field.to_string()
                };
                let key_file = source
                    .key
                    .as_deref()
                    .map(|k| self.resolve(k))
                    .unwrap_or_else(|| main_file.clone());
                self.problem(Severity::Error, Some(&key_file), &key_field, e);
                None
            }
        };
        for p in role_problems(&info, role) {
            err(self, p);
        }
        if let Some(structure) = structure {
            match info.organizational_unit.as_deref() {
                Some(ou) if ou == structure.as_str() => {}
                ou => err(
                    self,
                    format!(
                        "certificate OU is {:?} but the tenant's structure_id is {:?}: ORG certificates carry their legal entity's structure id",
                        ou.unwrap_or(""),
                        structure.as_str()
                    ),
                ),
            }
        }
        if info.not_before > self.now {
            err(
                self,
                format!("not valid before {} (not yet valid)", date(info.not_before)),
            );
        }
        let days_left = info.days_left(self.now);
        if info.not_after <= self.now {
            err(
                self,
                format!(
                    "expired on {} ({} days ago): renew it on the IGC-Santé portal",
                    date(info.not_after),
                    -days_left
                ),
            );
        } else if days_left < i64::from(self.expiry_warning_days) {
            self.problem(
                Severity::Warning,
                Some(&main_file),
                field,
                format!("expires on {} (in {days_left} days): renew it now, renewal must not interrupt service", date(info.not_after)),
            );
        }
        let chain = self.anchor(&mut err, &raw, trust);
        self.revocation(&raw, trust, &main_file, field);
        let (intermediates_der, anchor_der) = chain?;
        Some(CertMaterial {
            role,
            info,
            leaf_der,
            intermediates_der,
            anchor_der,
            key: key?,
            source: main_file,
        })
    }

    /// Builds the chain to a configured anchor, ignoring time (reported separately):
    /// the intermediates strictly between leaf and anchor, and the anchor itself.
    fn anchor(
        &mut self,
        err: &mut impl FnMut(&mut Self, String),
        raw: &material::RawMaterial,
        trust: &TenantTrust,
    ) -> Option<VerifiedChain> {
        if trust.anchors.is_empty() {
            return None;
        }
        let result = (|| -> Result<Result<VerifiedChain, String>, openssl::error::ErrorStack> {
            let mut store = X509StoreBuilder::new()?;
            for a in &trust.anchors {
                store.add_cert(a.clone())?;
            }
            store.set_flags(X509VerifyFlags::NO_CHECK_TIME)?;
            let store = store.build();
            let mut untrusted = Stack::new()?;
            for c in raw.supplied_chain.iter().chain(&trust.intermediates) {
                untrusted.push(c.clone())?;
            }
            let mut ctx = X509StoreContext::new()?;
            ctx.init(&store, &raw.leaf, &untrusted, |ctx| {
                if ctx.verify_cert()? {
                    let chain = ctx.chain().map(|c| {
                        let mut all: Vec<_> = c.iter().filter_map(|x| x.to_der().ok()).collect();
                        // Leaf first, anchor last: what lies strictly between, then the
                        // anchor (none when the leaf itself is the anchor).
                        let anchor = if all.len() > 1 { all.pop() } else { None };
                        let intermediates = all.get(1..).map(<[_]>::to_vec).unwrap_or_default();
                        (intermediates, anchor)
                    });
                    Ok(Ok(chain.unwrap_or_default()))
                } else {
                    Ok(Err(ctx.error().error_string().to_string()))
                }
            })
        })();
        match result {
            Ok(Ok(chain)) => Some(chain),
            Ok(Err(reason)) => {
                let issuer = CertificateInfo::from_der(&raw.leaf.to_der().unwrap_or_default())
                    .map(|i| i.issuer)
                    .unwrap_or_default();
                err(
                    self,
                    format!(
                        "not anchored in the configured trust (trust.anchors): {reason}; issuer is {issuer:?}"
                    ),
                );
                None
            }
            Err(e) => {
                err(self, format!("chain verification failed: {e}"));
                None
            }
        }
    }

    fn revocation(
        &mut self,
        raw: &material::RawMaterial,
        trust: &TenantTrust,
        file: &Path,
        field: &str,
    ) {
        let issuers: Vec<&X509> = raw
            .supplied_chain
            .iter()
            .chain(&trust.intermediates)
            .chain(&trust.anchors)
            .collect();
        for (crl_path, crl) in &trust.crls {
            let same_issuer = crl
                .issuer_name()
                .try_cmp(raw.leaf.issuer_name())
                .is_ok_and(|o| o == std::cmp::Ordering::Equal);
            if !same_issuer {
                continue;
            }
            // Only a CRL signed by the leaf's actual issuer speaks for it.
            let signed_by_issuer = issuers.iter().any(|ca| {
                ca.issued(&raw.leaf) == openssl::x509::X509VerifyResult::OK
                    && ca
                        .public_key()
                        .is_ok_and(|k| crl.verify(&k).unwrap_or(false))
            });
            if !signed_by_issuer {
                continue;
            }
            if let openssl::x509::CrlStatus::Revoked(entry) = crl.get_by_cert(&raw.leaf) {
                let when = entry.revocation_date().to_string();
                self.problem(
                    Severity::Error,
                    Some(file),
                    field,
                    format!("revoked on {when} according to {}", crl_path.display()),
                );
            }
        }
    }

    fn clients(&mut self, raw: &ConfigFile, tenants: &[Tenant]) -> Vec<InternalClient> {
        if raw.clients.is_empty() {
            self.warning(
                "clients",
                "no internal client declared: every request will be refused (access is default-deny)",
            );
        }
        let mut names = BTreeSet::new();
        let mut out = Vec::new();
        for (index, c) in raw.clients.iter().enumerate() {
            let field = format!("clients[{index}]");
            let mut ok = true;
            if c.name.trim().is_empty() {
                self.error(&format!("{field}.name"), "must not be empty");
                ok = false;
            } else if !names.insert(c.name.clone()) {
                self.error(
                    &format!("{field}.name"),
                    format!("client {:?} is declared twice", c.name),
                );
                ok = false;
            }
            let mut cidrs = Vec::new();
            for (i, s) in c.source_cidrs.iter().enumerate() {
                match s
                    .parse::<IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                {
                    Ok(n) => cidrs.push(n),
                    Err(_) => {
                        self.error(
                            &format!("{field}.source_cidrs[{i}]"),
                            format!("{s:?} is not a CIDR such as \"10.1.0.0/16\""),
                        );
                        ok = false;
                    }
                }
            }
            if let Some(rate) = c.rate_per_second
                && !(rate.is_finite() && rate > 0.0)
            {
                self.error(
                    &format!("{field}.rate_per_second"),
                    format!("{rate} is not a positive number of requests per second"),
                );
            }
            if c.source_cidrs.is_empty() {
                self.warning(
                    &format!("{field}.source_cidrs"),
                    "empty: this client can connect from nowhere",
                );
            }
            let mut digest = |name: &str, value: &Option<String>| -> Option<[u8; 32]> {
                let v = value.as_ref()?;
                let cleaned: String = v.chars().filter(|c| *c != ':').collect();
                match hex::decode(&cleaned)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                {
                    Some(d) => Some(d),
                    None => {
                        self.error(
                            &format!("{field}.{name}"),
                            "must be a SHA-256 in hexadecimal (64 digits, ':' allowed)",
                        );
                        ok = false;
                        None
                    }
                }
            };
            let token = digest("token_sha256", &c.token_sha256);
            let cert = digest("cert_sha256", &c.cert_sha256);
            if c.token_sha256.is_none() && c.cert_sha256.is_none() && c.cert_subject.is_none() {
                self.error(
                    &field,
                    "no credential: set token_sha256, cert_sha256 or cert_subject (an anonymous client is never admitted)",
                );
                ok = false;
            }
            let mut client_tenants = Vec::new();
            if c.tenants.is_empty() {
                self.error(
                    &format!("{field}.tenants"),
                    "empty: name the tenants this client may act for",
                );
                ok = false;
            }
            for (i, t) in c.tenants.iter().enumerate() {
                match t.parse::<TenantId>() {
                    Ok(id) if tenants.iter().any(|x| x.id == id) => client_tenants.push(id),
                    Ok(_) | Err(_) if raw.tenants.iter().any(|x| &x.id == t) => {}
                    _ => {
                        self.error(
                            &format!("{field}.tenants[{i}]"),
                            format!("no tenant has id {t:?}"),
                        );
                        ok = false;
                    }
                }
            }
            let mut services = Vec::new();
            if c.services.is_empty() {
                self.error(
                    &format!("{field}.services"),
                    "empty: list \"dmp\", \"dmp/<service>\" or \"insi\"",
                );
                ok = false;
            }
            for (i, s) in c.services.iter().enumerate() {
                let sfield = format!("{field}.services[{i}]");
                let scope = match s.as_str() {
                    "dmp" => Some(ServiceScope::AllDmp),
                    "insi" => Some(ServiceScope::Insi),
                    other => other
                        .strip_prefix("dmp/")
                        .map(|n| ServiceScope::Dmp(n.to_string())),
                };
                match scope {
                    Some(ServiceScope::Dmp(name))
                        if raw
                            .dmp
                            .as_ref()
                            .is_some_and(|d| !d.services.contains_key(&name)) =>
                    {
                        self.error(
                            &sfield,
                            format!("no DMP service is named {name:?} in [dmp.services]"),
                        );
                        ok = false;
                    }
                    Some(ServiceScope::AllDmp | ServiceScope::Dmp(_)) if raw.dmp.is_none() => {
                        self.error(
                            &sfield,
                            "DMP access granted but no [dmp] section is configured",
                        );
                        ok = false;
                    }
                    Some(ServiceScope::Insi) if raw.insi.is_none() => {
                        self.error(
                            &sfield,
                            "INSi access granted but no [insi] section is configured",
                        );
                        ok = false;
                    }
                    Some(scope) => services.push(scope),
                    None => {
                        self.error(
                            &sfield,
                            format!(
                                "{s:?} is not a service: use \"dmp\", \"dmp/<service>\" or \"insi\""
                            ),
                        );
                        ok = false;
                    }
                }
            }
            if ok {
                out.push(InternalClient {
                    name: c.name.clone(),
                    source_cidrs: cidrs,
                    token_sha256: token,
                    cert_sha256: cert,
                    cert_subject: c.cert_subject.clone(),
                    tenants: client_tenants,
                    services,
                    rate_per_second: c.rate_per_second,
                });
            }
        }
        out
    }
}

/// Formats a serde_ignored path as the configuration reference writes fields:
/// `tenants[0].certificates.dmp_auth.cert`.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        P::Map { parent, key } => {
            let parent = field_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            field_path(parent)
        }
    }
}

fn date(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}
