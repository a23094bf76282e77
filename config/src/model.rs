//! The validated, typed configuration the proxy runs on: [`Config`] and its parts
//! (listener TLS, software identity, DMP and INSi services, tenants and their
//! certificate material, internal clients, limits, audit). The validators in
//! `validate` build these from the [`file`](mod@crate::file) model once every value
//! has been checked.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::file;
use crate::ids::{CertRole, StructureId, TenantId};
use crate::material::{CertificateInfo, KeyMaterial, PrivateKey};
use crate::report::Problem;

/// A validated configuration, ready for the proxy.
#[derive(Debug)]
pub struct Config {
    /// The file it was loaded from.
    pub path: PathBuf,
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    /// SHA-256 of the bearer token the admin listener requires for everything but
    /// `/healthz` (`[admin] token_sha256`); `None`: no token asked.
    pub admin_token_sha256: Option<[u8; 32]>,
    pub software: Software,
    pub dmp: Option<DmpService>,
    pub insi: Option<InsiService>,
    /// `[[services]]`: the other services reached over mutual TLS.
    pub services: Vec<MtlsService>,
    pub tenants: Vec<Tenant>,
    pub clients: Vec<InternalClient>,
    pub security: file::SecuritySection,
    /// `security.max_clock_skew`, parsed.
    pub max_clock_skew: Duration,
    pub limits: Limits,
    pub audit: Audit,
    /// `[capture]`, when present (in force only until its `until`).
    pub capture: Option<Capture>,
    /// `None`: the internal listener is plain HTTP.
    pub listener_tls: Option<ListenerTls>,
    /// `[trust.crl_download]`, when present.
    pub crl_download: Option<CrlDownload>,
    /// Every CRL in use (files and downloaded copies), once each.
    pub crls: Vec<CrlInUse>,
    /// `[trust.ocsp]`, when present: the tenants' certificates to check.
    pub ocsp: Option<OcspCheck>,
    /// Warnings found while loading (an expiring certificate, no client declared, ...).
    pub warnings: Vec<Problem>,
}

impl Config {
    pub fn tenant(&self, id: &TenantId) -> Option<&Tenant> {
        self.tenants.iter().find(|t| &t.id == id)
    }

    /// The `[[services]]` entry named `name`.
    pub fn service(&self, name: &str) -> Option<&MtlsService> {
        self.services.iter().find(|s| s.name == name)
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
    /// DER CRLs (none when `[trust] revocation = "ocsp"`).
    pub crls: Vec<Vec<u8>>,
    /// How the server's certificate's revocation status is established.
    pub revocation: UpstreamRevocation,
}

/// `[trust] revocation`: which sources establish a certificate's revocation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationSources {
    /// CRL files and downloads only (the default without `[trust.ocsp]`).
    #[default]
    Crl,
    /// OCSP only: no CRL may be configured.
    Ocsp,
    /// Both: revoked by either is revoked (the default with `[trust.ocsp]`).
    Both,
}

impl RevocationSources {
    pub fn crl(self) -> bool {
        matches!(self, Self::Crl | Self::Both)
    }

    pub fn ocsp(self) -> bool {
        matches!(self, Self::Ocsp | Self::Both)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crl => "crl",
            Self::Ocsp => "ocsp",
            Self::Both => "both",
        }
    }
}

/// `[trust] revocation_failure`: what happens when a source cannot establish the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationFailure {
    /// Served, with a warning, a metric and an alert (the default).
    #[default]
    Soft,
    /// Refused: every source of `revocation` must vouch for the certificate.
    Hard,
}

/// The revocation policy of one upstream's server certificates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamRevocation {
    /// CRLs apply (`crl` or `both`).
    pub crl: bool,
    /// OCSP applies (`ocsp` or `both`), and how to ask.
    pub ocsp: Option<UpstreamOcsp>,
    pub failure: RevocationFailure,
}

impl UpstreamRevocation {
    pub fn hard(&self) -> bool {
        self.failure == RevocationFailure::Hard
    }

    /// Every setting, for a pool's digest (the egress proxy's password hashed).
    pub fn fingerprint(&self) -> Vec<u8> {
        let mut out = format!("{}/{:?}/", self.crl, self.failure).into_bytes();
        if let Some(o) = &self.ocsp {
            let responder = o.responder.as_ref().map(url::Url::as_str).unwrap_or("");
            out.extend(
                format!("{responder}/{:?}/{:?}/{:?}/", o.refresh, o.retry, o.timeout).bytes(),
            );
            out.extend(
                o.egress
                    .as_ref()
                    .map(EgressProxy::fingerprint)
                    .unwrap_or_default(),
            );
        }
        out
    }
}

/// OCSP for an upstream's server certificate: the stapled answer when the server sends
/// one, else the responder, its answer cached until its `nextUpdate` (at most `refresh`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamOcsp {
    /// `[trust.ocsp] responder`; `None`: the certificate's own (AIA).
    pub responder: Option<url::Url>,
    pub refresh: Duration,
    /// How long a failure is remembered before the responder is asked again.
    pub retry: Duration,
    pub timeout: Duration,
    pub egress: Option<EgressProxy>,
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

/// The homologation capture (`[capture]`): which requests are written to files, and
/// until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// `[[clients]]` names whose requests are captured (at least one).
    pub clients: std::collections::BTreeSet<String>,
    /// Only requests for these tenants; empty: any tenant.
    pub tenants: std::collections::BTreeSet<TenantId>,
    /// The capture is off from this instant on.
    pub until: time::OffsetDateTime,
    /// Absolute folder the files go to (created 0700).
    pub dir: PathBuf,
}

impl Capture {
    /// Whether a request of `client` for `tenant` is captured at `now`.
    pub fn applies(&self, client: &str, tenant: &TenantId, now: time::OffsetDateTime) -> bool {
        now < self.until
            && self.clients.contains(client)
            && (self.tenants.is_empty() || self.tenants.contains(tenant))
    }

    /// Whether it is in force at `now` (before `until`).
    pub fn active(&self, now: time::OffsetDateTime) -> bool {
        now < self.until
    }
}

/// The audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Absolute, or resolved against the configuration file's directory.
    pub path: PathBuf,
    pub rotate_bytes: u64,
    pub rotate_daily: bool,
    pub fsync: bool,
    /// Name of this replica, written in every audit line (`[audit] instance`, default:
    /// the host name).
    pub instance: String,
    /// Where records go: the file at `path`, or a PostgreSQL table.
    pub sink: AuditSink,
}

/// Where audit records are committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    File,
    Postgres(PostgresAudit),
}

/// `[audit] sink = "postgres"`.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresAudit {
    /// The URL as configured (it holds no password).
    pub url: String,
    /// From `password_file`.
    pub password: Option<zeroize::Zeroizing<String>>,
    /// CA certificates of the database server, for TLS; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    pub on_failure: OnAuditFailure,
    /// Where records wait while the database is unreachable (0600).
    pub spool: PathBuf,
}

impl std::fmt::Debug for PostgresAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresAudit")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("on_failure", &self.on_failure)
            .field("spool", &self.spool)
            .finish()
    }
}

/// What happens to requests while the audit database is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnAuditFailure {
    /// Served; their records are spooled locally and replayed, in order, once it is back.
    Spool,
    /// New requests refused (`AuditUnavailable`, nothing sent upstream).
    Refuse,
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
    /// The forward proxy its connections go through; `None`: direct.
    pub egress: Option<EgressProxy>,
}

/// The establishment's HTTP forward proxy (`[egress]`), as a service reaches it.
#[derive(Clone, PartialEq, Eq)]
pub struct EgressProxy {
    pub host: String,
    pub port: u16,
    /// Basic authentication: user and password (from `password_file`).
    credentials: Option<(String, zeroize::Zeroizing<String>)>,
}

impl EgressProxy {
    pub fn new(host: String, port: u16, credentials: Option<(String, String)>) -> Self {
        Self {
            host,
            port,
            credentials: credentials.map(|(u, p)| (u, zeroize::Zeroizing::new(p))),
        }
    }

    /// `host:port`, for messages and labels.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// `base64(user:password)` for `Proxy-Authorization: Basic`.
    pub fn basic_credentials(&self) -> Option<String> {
        use base64::Engine;
        self.credentials.as_ref().map(|(user, password)| {
            let plain = zeroize::Zeroizing::new(format!("{user}:{}", password.as_str()));
            base64::engine::general_purpose::STANDARD.encode(plain.as_bytes())
        })
    }

    /// What identifies it in a pool's spec: address and credentials (a new password
    /// rebuilds the pools that use it).
    pub fn fingerprint(&self) -> Vec<u8> {
        let mut out = self.address().into_bytes();
        if let Some((user, password)) = &self.credentials {
            out.push(0);
            out.extend_from_slice(&openssl::sha::sha256(
                format!("{user}\0{}", password.as_str()).as_bytes(),
            ));
        }
        out
    }
}

impl fmt::Debug for EgressProxy {
    /// Never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressProxy")
            .field("address", &self.address())
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
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
    /// The forward proxy its connections go through; `None`: direct.
    pub egress: Option<EgressProxy>,
}

/// Whether a generic service's request may be sent a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceRetry {
    /// Never (the default): the service's operations are not known to Passerelle.
    #[default]
    Never,
    /// Once more on a fresh connection, only when the first attempt was not written.
    IfNotSent,
}

/// An HTTP method a generic service allows, from a closed set (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceMethod {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl ServiceMethod {
    pub const ALL: [ServiceMethod; 7] = [
        Self::Get,
        Self::Head,
        Self::Post,
        Self::Put,
        Self::Patch,
        Self::Delete,
        Self::Options,
    ];

    /// The method as HTTP writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
            Self::Options => "OPTIONS",
        }
    }

    /// The method of an HTTP request line, if it is one of the set.
    pub fn parse(method: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == method)
    }
}

/// `[[services]]`: a service reached over mutual TLS at `/svc/<name>/<path>` with the
/// tenant's certificate of `role`.
#[derive(Debug, Clone)]
pub struct MtlsService {
    pub name: String,
    /// The base URL; `<path>` is appended to its path.
    pub url: url::Url,
    /// The tenant certificate presented ([`CertRole::OrgAuth`]).
    pub role: CertRole,
    pub methods: Vec<ServiceMethod>,
    /// Allowed path prefixes, each `/` or `/segment[/segment...]` (no trailing `/`).
    pub path_prefixes: Vec<String>,
    /// Request header names passed on besides `content-type` and `accept`, lower case.
    pub forward_headers: Vec<String>,
    pub trust: UpstreamTrust,
    pub timeouts: Timeouts,
    pub retry: ServiceRetry,
    /// The forward proxy its connections go through; `None`: direct.
    pub egress: Option<EgressProxy>,
}

impl MtlsService {
    /// The allowed prefix `path` falls under (on whole segments), if any. `path` must
    /// already be normalised (see the proxy's service path): `/a/b`, no `.`, `..` or
    /// empty segment.
    pub fn allowed_prefix(&self, path: &str) -> Option<&str> {
        self.path_prefixes
            .iter()
            .find(|p| {
                p.as_str() == "/"
                    || path == p.as_str()
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .map(String::as_str)
    }

    /// The full URL of `path` (normalised, starting with `/`) under the base URL.
    pub fn url_of(&self, path: &str) -> String {
        format!("{}{path}", self.url.as_str().trim_end_matches('/'))
    }
}

/// One legal entity and its certificates.
#[derive(Debug)]
pub struct Tenant {
    pub id: TenantId,
    /// `[dmp.policy]` with this tenant's overrides, resolved.
    pub policy: DmpPolicy,
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
    pub key: KeyMaterial,
    /// The file it was read from (certificate or PKCS#12).
    pub source: PathBuf,
    /// Revoked according to a configured CRL: when, and by which CRL. The certificate's
    /// (tenant, role) pair is disabled, not the whole configuration.
    pub revoked: Option<String>,
}

/// A service an internal client may call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServiceScope {
    /// Every DMP service.
    AllDmp,
    /// One DMP service by route name.
    Dmp(String),
    Insi,
    /// Every `[[services]]` entry.
    AllServices,
    /// One `[[services]]` entry by name.
    Service(String),
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

/// Refuse, or let through with a warning (logged and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyMode {
    Refuse,
    Warn,
    Off,
}

/// Which structures a tenant's DMP metadata may name (`[dmp.policy]`, overridden per
/// tenant), resolved for one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmpPolicy {
    /// VIHF structure ≠ submission set's `authorInstitution`: `Refuse` or `Warn`.
    pub structure_consistency: PolicyMode,
    /// The legal entity is refused where a geographic entity is expected.
    pub require_geographic: bool,
    /// A CDA's `representedOrganization` outside the tenant.
    pub cda_structure: PolicyMode,
}

impl Default for DmpPolicy {
    fn default() -> Self {
        Self {
            structure_consistency: PolicyMode::Refuse,
            require_geographic: false,
            cda_structure: PolicyMode::Warn,
        }
    }
}

/// `[trust.crl_download]`, resolved: the CRLs Passerelle fetches and keeps fresh.
#[derive(Debug, Clone, PartialEq)]
pub struct CrlDownload {
    /// The folder of last good copies, one file per URL ([`CrlDownload::file_for`]).
    pub directory: PathBuf,
    /// Every CRL fetched, configured URLs first, then those discovered in the
    /// certificates; each once.
    pub sources: Vec<CrlSource>,
    pub refresh: Duration,
    /// The first wait after a failed download (then doubled, up to 2 hours).
    pub retry: Duration,
    pub timeout: Duration,
    pub max_bytes: u64,
    /// The CA certificates (DER) a downloaded CRL must be signed by one of: the
    /// anchors and intermediates of `[trust]`, the tenants' chains, the upstreams'
    /// anchors.
    pub issuers: Vec<Vec<u8>>,
}

/// One CRL to fetch.
#[derive(Debug, Clone, PartialEq)]
pub struct CrlSource {
    pub url: url::Url,
    /// The forward proxy the download goes through; `None`: direct.
    pub egress: Option<EgressProxy>,
    /// The issuer name (DER) the CRL must have: the issuer of the certificate whose
    /// distribution point named the URL. `None` for a URL only `urls` lists: any
    /// configured CA, then the same one as the copy kept.
    pub issuer: Option<Vec<u8>>,
}

impl CrlDownload {
    /// The file holding the last good copy of `url`'s CRL.
    pub fn file_for(&self, url: &url::Url) -> PathBuf {
        self.directory.join(crl_file_name(url))
    }
}

/// `host_path_<hash>.crl`: the host and path with every character but letters, digits,
/// `.` and `-` turned into `_` (readable in a listing, never a path outside the folder),
/// then the first 8 bytes of the whole URL's SHA-256 in hex, so that two URLs never
/// share a file (`/a/b` and `/a_b`, a query, a port).
pub fn crl_file_name(url: &url::Url) -> String {
    let raw = format!("{}{}", url.host_str().unwrap_or("host"), url.path());
    let raw = raw.strip_suffix(".crl").unwrap_or(&raw);
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let digest = openssl::sha::sha256(url.as_str().as_bytes());
    name.push('_');
    name.push_str(&hex::encode(&digest[..8]));
    name.push_str(".crl");
    name
}

/// `[trust.ocsp]`, resolved: each tenant certificate, its issuer and its responder.
#[derive(Debug, Clone, PartialEq)]
pub struct OcspCheck {
    pub targets: Vec<OcspTarget>,
    pub refresh: Duration,
    pub retry: Duration,
    pub timeout: Duration,
    /// The upstream servers' certificates: asked the same way (`None`: not asked, as
    /// with `revocation = "crl"`).
    pub upstream: Option<UpstreamOcsp>,
    /// `revocation_failure = "hard"`: a certificate OCSP does not vouch for is not used.
    pub hard_fail: bool,
}

/// One tenant certificate to check.
#[derive(Debug, Clone, PartialEq)]
pub struct OcspTarget {
    pub tenant: TenantId,
    pub role: CertRole,
    /// Upper-case hexadecimal, as in the logs.
    pub serial: String,
    /// The certificate and its issuer's, DER.
    pub leaf: Vec<u8>,
    pub issuer: Vec<u8>,
    /// The CA certificates an answer's signer may chain to (the issuer and the
    /// anchors), DER.
    pub trust: Vec<Vec<u8>>,
    pub url: url::Url,
    pub egress: Option<EgressProxy>,
}

/// An ASN.1 time (a certificate's or a CRL's) as an [`OffsetDateTime`](time::OffsetDateTime).
pub fn asn1_time(t: &openssl::asn1::Asn1TimeRef) -> Option<time::OffsetDateTime> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(t).ok()?;
    let seconds = i64::from(diff.days) * 86_400 + i64::from(diff.secs);
    time::OffsetDateTime::from_unix_timestamp(seconds).ok()
}

/// A CRL the configuration uses, for the metrics and `/readyz`: where it comes from and
/// when it must be replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInUse {
    /// A `crls` entry, or the download folder's copy.
    pub file: PathBuf,
    /// The URL it is downloaded from, for a copy in the download folder.
    pub url: Option<String>,
    /// The issuer's name (RFC 2253).
    pub issuer: String,
    pub this_update: Option<time::OffsetDateTime>,
    pub next_update: Option<time::OffsetDateTime>,
}

impl CrlInUse {
    /// The URL when downloaded, else the file: a metric label and a readiness line.
    pub fn source(&self) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| self.file.display().to_string())
    }

    /// Past its `nextUpdate`: a newer CRL exists that Passerelle has not got.
    pub fn stale(&self, now: time::OffsetDateTime) -> bool {
        self.next_update.is_some_and(|n| n < now)
    }
}
