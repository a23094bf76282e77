//! The TOML file as written by the operator, before validation.
//!
//! Values that need parsing (addresses, CIDRs, durations, UUIDs, identifiers) stay
//! strings here so that validation can report every bad value at once, each with its
//! field path, instead of stopping at the first one as serde would.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct ConfigFile {
    pub listener: InternalListenerSection,
    pub admin: ListenerSection,
    pub software: SoftwareSection,
    #[serde(default)]
    pub trust: TrustSection,
    pub dmp: Option<DmpSection>,
    pub insi: Option<InsiSection>,
    /// The establishment's forward proxy for outbound traffic.
    pub egress: Option<EgressSection>,
    /// Other services reached over mutual TLS with each tenant's `org_auth` certificate.
    #[serde(default)]
    pub services: Vec<ServiceSection>,
    #[serde(default)]
    pub tenants: Vec<TenantSection>,
    #[serde(default)]
    pub clients: Vec<ClientSection>,
    #[serde(default)]
    pub security: SecuritySection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub audit: AuditSection,
    /// Homologation capture: the exchanges of a few clients written to files, for a
    /// short time.
    pub capture: Option<CaptureSection>,
}

/// `[capture]`: while it is in force, the requests of the listed clients are written as
/// sent upstream, and their answers as received, one file each (the CNDA asks for the
/// SOAP frames exchanged during homologation). Enabled by the configuration only.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CaptureSection {
    /// `[[clients]]` names whose requests are captured.
    #[serde(default)]
    pub clients: Vec<String>,
    /// Tenants to capture for; empty: every tenant of the listed clients.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// When the capture stops by itself (RFC 3339); required.
    pub until: Option<String>,
    /// Where the files go; default `capture` next to the configuration.
    pub dir: Option<PathBuf>,
}

/// `[listener]`: where internal systems connect, and how much they may ask at once.
#[derive(Debug, Clone, Deserialize)]
pub struct InternalListenerSection {
    pub address: String,
    /// Time a client may take to send its request headers.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: String,
    /// Requests handled at once; beyond, 503 with Retry-After.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Client connections open at once; left out, derived from the process's open-files
    /// limit (RLIMIT_NOFILE) when the proxy starts.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Time a connection may stay open with no request in flight (HTTP/1.1 and HTTP/2).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    /// Interval of the HTTP/2 PING frames sent to check that a client is still there.
    #[serde(default = "default_http2_keep_alive_interval")]
    pub http2_keep_alive_interval: String,
    /// Time a client has to acknowledge a PING before its HTTP/2 connection is closed.
    #[serde(default = "default_http2_keep_alive_timeout")]
    pub http2_keep_alive_timeout: String,
    /// TLS on the internal listener, with optional client certificates.
    pub tls: Option<ListenerTlsSection>,
}

/// `[listener.tls]`: HTTPS for internal systems, and the CAs of their certificates.
#[derive(Debug, Clone, Deserialize)]
pub struct ListenerTlsSection {
    /// The proxy's server certificate (PEM, with its chain).
    pub cert: PathBuf,
    /// Its private key (PEM, unencrypted, mode 0600).
    pub key: PathBuf,
    /// CAs whose certificates internal clients may present (`clients.cert_sha256` /
    /// `cert_subject` identify them).
    #[serde(default)]
    pub client_ca: Vec<PathBuf>,
    /// Refuse TLS connections without a client certificate.
    #[serde(default)]
    pub require_client_certificate: bool,
}

fn default_header_read_timeout() -> String {
    "30s".into()
}

fn default_max_concurrent_requests() -> usize {
    1024
}

fn default_idle_timeout() -> String {
    "60s".into()
}

fn default_http2_keep_alive_interval() -> String {
    "30s".into()
}

fn default_http2_keep_alive_timeout() -> String {
    "10s".into()
}

/// `[audit]`: the audit trail (one JSON line per upstream exchange).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuditSection {
    pub path: PathBuf,
    /// Start a new file before this size (0: never by size).
    pub rotate_bytes: u64,
    /// Start a new file each day (UTC).
    pub rotate_daily: bool,
    /// fsync each batch of lines before answering (slower, survives a power cut).
    pub fsync: bool,
    /// Name of this replica, written in every audit line; left out, the host name.
    pub instance: Option<String>,
    /// `file` (the JSONL trail at `path`) or `postgres` (a table at `url`).
    pub sink: String,
    /// PostgreSQL: `postgres://user@host:port/database[?sslmode=require]`, no password.
    pub url: Option<String>,
    /// PostgreSQL: the file holding the role's password (0600).
    pub password_file: Option<PathBuf>,
    /// PostgreSQL over TLS: the CA certificate(s) of the database server (PEM); left out,
    /// the system's.
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL unreachable: `spool` (records kept in a local file, replayed in order
    /// when it is back) or `refuse` (new requests refused with `AuditUnavailable`).
    pub on_failure: String,
    /// PostgreSQL: the local spool file; left out, `<path>` with `.spool.jsonl`.
    pub spool: Option<PathBuf>,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            path: PathBuf::from("audit/passerelle-audit.jsonl"),
            rotate_bytes: 100 * 1024 * 1024,
            rotate_daily: true,
            fsync: false,
            instance: None,
            sink: "file".into(),
            url: None,
            password_file: None,
            ca_file: None,
            on_failure: "spool".into(),
            spool: None,
        }
    }
}

/// `[limits]`: what one internal request may cost.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LimitsSection {
    /// Largest request body accepted, in bytes (ITI-41 submissions included).
    pub max_body_bytes: u64,
    /// Requests in flight at once per upstream pool (tenant, service, certificate).
    pub upstream_concurrency: usize,
    /// Time a request's whole body may take to arrive, from its headers.
    pub body_read_timeout: String,
    /// Request body bytes held in memory at once, all requests together; left out,
    /// four times `max_body_bytes`.
    pub max_inflight_body_bytes: Option<u64>,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024 * 1024,
            upstream_concurrency: 64,
            body_read_timeout: "30s".into(),
            max_inflight_body_bytes: None,
        }
    }
}

/// `[admin]`: the operators' listener (health, readiness, metrics, pools).
#[derive(Debug, Clone, Deserialize)]
pub struct ListenerSection {
    /// `host:port` to listen on (a host name is resolved once, at load).
    pub address: String,
    /// SHA-256 (hex) of the bearer token required for everything but `/healthz`;
    /// left out, the admin listener asks for no token.
    #[serde(default)]
    pub token_sha256: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SoftwareSection {
    /// `LPS_Nom` of the VIHF and `LPS/@Nom` of the INSi context.
    pub lps_name: String,
    pub lps_version: String,
    /// CNDA homologation number (`LPS_ID_HOMOLOGATION_DMP`).
    #[serde(default)]
    pub dmp_homologation_id: String,
    /// `LPS_ID` of the VIHF (the official INDIRECTE example carries one, e.g.
    /// `01.01.01.01`); not emitted when absent.
    #[serde(default)]
    pub lps_id: Option<String>,
    /// INSi `IDAM` given by the CNAM for this software.
    #[serde(default)]
    pub insi_idam: String,
    /// UUID identifying this installation (INSi `Instance`).
    pub instance_id: String,
}

/// Anchors for the tenants' own certificates (the IGC-Santé root), with optional
/// intermediates (when a certificate file lacks its chain) and CRLs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TrustSection {
    #[serde(default)]
    pub anchors: Vec<PathBuf>,
    #[serde(default)]
    pub intermediates: Vec<PathBuf>,
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// `[trust.crl_download]`: CRLs fetched over HTTP and kept fresh, besides `crls`.
    pub crl_download: Option<CrlDownloadSection>,
    /// `[trust.ocsp]`: the status of our own certificates asked to their OCSP responder.
    pub ocsp: Option<OcspSection>,
    /// Which sources establish revocation status; default: `crl`, or `both` with
    /// `[trust.ocsp]`.
    pub revocation: Option<crate::model::RevocationSources>,
    /// When a source cannot establish it: `soft` (served, said) or `hard` (refused).
    #[serde(default)]
    pub revocation_failure: crate::model::RevocationFailure,
}

/// `[trust.ocsp]`: how often the tenants' certificates are checked with OCSP, and where.
#[derive(Debug, Clone, Deserialize)]
pub struct OcspSection {
    /// The responder asked about every tenant certificate; default: each certificate's
    /// own (its Authority Information Access OCSP URL).
    pub responder: Option<String>,
    /// The responder asked about the national services' certificates (with
    /// `[trust] revocation` "ocsp" or "both"); default: each certificate's own (AIA).
    pub server_responder: Option<String>,
    /// Time between two checks of one certificate (sooner at the answer's nextUpdate).
    #[serde(default = "default_ocsp_refresh")]
    pub refresh: String,
    /// Wait before asking again after a failure (doubled per failure, up to `refresh`);
    /// default 5 minutes, or `refresh` when shorter.
    pub retry: Option<String>,
    /// Time one exchange may take.
    #[serde(default = "default_ocsp_timeout")]
    pub timeout: String,
    /// `proxy` (default when `[egress]` is set) or `direct`.
    pub egress: Option<String>,
}

impl Default for OcspSection {
    /// What `revocation = "ocsp"` or `"both"` uses without a `[trust.ocsp]` section.
    fn default() -> Self {
        Self {
            responder: None,
            server_responder: None,
            refresh: default_ocsp_refresh(),
            retry: None,
            timeout: default_ocsp_timeout(),
            egress: None,
        }
    }
}

fn default_ocsp_refresh() -> String {
    "1h".into()
}

fn default_ocsp_timeout() -> String {
    "10s".into()
}

/// `[trust.crl_download]`: where the CRLs come from, where the last good copies are
/// kept, and how often they are fetched again.
#[derive(Debug, Clone, Deserialize)]
pub struct CrlDownloadSection {
    /// The folder holding the last good copy of each CRL (relative to the configuration).
    #[serde(default = "default_crl_directory")]
    pub directory: PathBuf,
    /// Also fetch the CRL distribution points named by the anchors, intermediates and
    /// tenant certificates.
    #[serde(default = "default_true")]
    pub discover: bool,
    /// CRL URLs fetched besides the discovered ones (`http://` only: a CRL is signed).
    #[serde(default)]
    pub urls: Vec<String>,
    /// Time between two fetches of one CRL (randomised down to 3/4 of it); a CRL whose
    /// `nextUpdate` comes sooner is fetched then.
    #[serde(default = "default_crl_refresh")]
    pub refresh: String,
    /// Wait before trying a failed download again (doubled per failure, up to 2 hours).
    #[serde(default = "default_crl_retry")]
    pub retry: String,
    /// Time one download may take.
    #[serde(default = "default_crl_timeout")]
    pub timeout: String,
    /// The largest CRL accepted.
    #[serde(default = "default_crl_max_bytes")]
    pub max_bytes: u64,
    /// `proxy` (default when `[egress]` is set) or `direct`.
    pub egress: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_crl_directory() -> PathBuf {
    PathBuf::from("crls")
}

fn default_crl_refresh() -> String {
    "24h".into()
}

fn default_crl_retry() -> String {
    "15m".into()
}

fn default_crl_timeout() -> String {
    "30s".into()
}

fn default_crl_max_bytes() -> u64 {
    32 * 1024 * 1024
}

#[derive(Debug, Clone, Deserialize)]
pub struct DmpSection {
    /// `https://<host>/si-dmp-server/v2/services`.
    pub base_url: String,
    /// Route name (`/dmp/<name>`) to service path under `base_url`.
    #[serde(default = "default_dmp_services")]
    pub services: BTreeMap<String, String>,
    /// Anchors the DMP's server certificate must chain to.
    pub trust_anchors: Vec<PathBuf>,
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    #[serde(default)]
    pub signing: DmpSigningSection,
    #[serde(default)]
    pub policy: DmpPolicySection,
    /// `proxy` (default when `[egress]` is set) or `direct`.
    pub egress: Option<String>,
}

/// `[egress]`: the hospital's HTTP forward proxy, through which the connections to the
/// national services are tunnelled (`CONNECT`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSection {
    /// `http://host:port`.
    pub proxy: String,
    /// Basic authentication to the proxy: the user, with `password_file`.
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Hosts (`dmp.example.fr`, `.example.fr` for a domain) and networks (CIDR) reached
    /// directly.
    #[serde(default)]
    pub no_proxy: Vec<String>,
}

/// `[dmp.policy]` (and `[tenants.policy]`, which overrides it key by key): which
/// structures the DMP metadata may name (domain.md §2: the geographic entity in the
/// VIHF, the submission set and the documents).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DmpPolicySection {
    /// `refuse` (default) or `warn`: the VIHF's structure and the submission set's
    /// `authorInstitution` differ.
    pub structure_consistency: Option<String>,
    /// Refuse the legal entity where a geographic entity is expected (default: true
    /// when the tenant lists `geographic_structure_ids`).
    pub require_geographic: Option<bool>,
    /// `refuse`, `warn` (default) or `off`: a CDA document's
    /// `representedOrganization` is not one of the tenant's structures.
    pub cda_structure: Option<String>,
}

/// `[dmp.signing]`: the open points of domain.md §5 and §6.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DmpSigningSection {
    pub vihf_version: String,
    pub auth_mode_attribute: String,
    pub vihf_digest: String,
    pub lot_digest: String,
    pub inclusive_prefixes: Vec<String>,
    /// Forward a submission that already carries a lot signature instead of refusing it.
    pub lot_signature_passthrough: bool,
    /// Oldest `AuthnInstant` kept from an internal system's VIHF (humantime, e.g. `12h`).
    pub max_authn_age: String,
}

impl Default for DmpSigningSection {
    fn default() -> Self {
        Self {
            vihf_version: "3.0".into(),
            auth_mode_attribute: "Authentification_mode".into(),
            vihf_digest: "sha256".into(),
            lot_digest: "sha256".into(),
            inclusive_prefixes: Vec::new(),
            lot_signature_passthrough: false,
            max_authn_age: "12h".into(),
        }
    }
}

/// The service paths seen in working DMP clients (domain.md §4).
pub fn default_dmp_services() -> BTreeMap<String, String> {
    [
        "registry",
        "repository",
        "patients",
        "habilitations",
        "PatientSpecific",
        "patientCertif",
    ]
    .into_iter()
    .map(|s| (s.to_string(), s.to_string()))
    .collect()
}

#[derive(Debug, Clone, Deserialize)]
pub struct InsiSection {
    /// `https://.../lps`.
    pub url: String,
    pub trust_anchors: Vec<PathBuf>,
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    /// `proxy` (default when `[egress]` is set) or `direct`.
    pub egress: Option<String>,
}

/// `[[services]]`: another service reached over mutual TLS (an MSSanté operator's API,
/// ROR, ...) at `/svc/<name>/<path>`, with the tenant's certificate of `certificate`.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceSection {
    /// The route name (`/svc/<name>/...`), a metric label and the `svc/<name>` scope of
    /// clients: a-z, 0-9, '-' and '_'.
    pub name: String,
    /// `https://host[:port][/base]`: a request to `/svc/<name>/<path>` goes to
    /// `<url>/<path>`.
    pub url: String,
    /// The tenant certificate role presented: `org_auth`.
    pub certificate: String,
    /// Anchors the service's server certificate must chain to (never the web PKI).
    pub trust_anchors: Vec<PathBuf>,
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// HTTP methods allowed (default `["POST"]`).
    #[serde(default = "default_service_methods")]
    pub methods: Vec<String>,
    /// Paths allowed under `url`, by prefix on whole segments (`"/messages"` allows
    /// `/messages` and `/messages/12`, not `/messagesX`); `"/"` allows every path.
    #[serde(default)]
    pub path_prefixes: Vec<String>,
    /// Request headers passed on besides `Content-Type` and `Accept` (never
    /// `Authorization`, `Cookie`, `Host` or the connection's own headers).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    /// `none` (default): never sent twice; `if_not_sent`: once more on a fresh
    /// connection when the first attempt was not written at all.
    #[serde(default = "default_service_retry")]
    pub retry: String,
    /// `proxy` (default when `[egress]` is set) or `direct`.
    pub egress: Option<String>,
}

fn default_service_methods() -> Vec<String> {
    vec!["POST".into()]
}

fn default_service_retry() -> String {
    "none".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct TimeoutsSection {
    #[serde(default = "default_connect")]
    pub connect: String,
    #[serde(default = "default_tls")]
    pub tls: String,
    #[serde(default = "default_request")]
    pub request: String,
    #[serde(default = "default_idle")]
    pub idle: String,
}

fn default_connect() -> String {
    "5s".into()
}
fn default_tls() -> String {
    "10s".into()
}
fn default_request() -> String {
    "60s".into()
}
fn default_idle() -> String {
    "90s".into()
}

impl Default for TimeoutsSection {
    fn default() -> Self {
        Self {
            connect: default_connect(),
            tls: default_tls(),
            request: default_request(),
            idle: default_idle(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct TenantSection {
    pub id: String,
    /// `1` + FINESS juridique: the OU of every certificate of this tenant.
    pub structure_id: String,
    /// Geographic entities (FINESS géographique) of this legal entity.
    #[serde(default)]
    pub geographic_structure_ids: Vec<String>,
    #[serde(default)]
    pub certificates: CertificatesSection,
    /// Overrides of `[dmp.policy]` for this tenant.
    #[serde(default)]
    pub policy: DmpPolicySection,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CertificatesSection {
    pub dmp_auth: Option<CertSource>,
    pub dmp_sign: Option<CertSource>,
    pub insi_auto: Option<CertSource>,
    pub insi_manu: Option<CertSource>,
    /// ORG AUTH_CLI for the `[[services]]` (neither the DMP's nor INSi's).
    pub org_auth: Option<CertSource>,
}

/// Either PEM files (`cert` + `key`, optional `chain`), a PKCS#12 with its password file,
/// or `cert` (+ `chain`) with the key in a PKCS#11 token (`[...pkcs11]`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CertSource {
    pub cert: Option<PathBuf>,
    pub chain: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub pkcs12: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub pkcs11: Option<Pkcs11Section>,
}

/// `[tenants.certificates.<role>.pkcs11]`: the private key in a PKCS#11 token (HSM).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Section {
    /// The token vendor's PKCS#11 library (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label (or `slot`).
    pub token_label: Option<String>,
    pub slot: Option<u64>,
    /// The private key's `CKA_LABEL` (or `key_id`).
    pub key_label: Option<String>,
    /// The private key's `CKA_ID`, hexadecimal.
    pub key_id: Option<String>,
    /// A file (mode 0600) holding the user PIN; a trailing newline is ignored.
    pub pin_file: PathBuf,
    /// Sessions kept open with the token at most (concurrent signatures beyond wait).
    #[serde(default = "default_pkcs11_sessions")]
    pub sessions: usize,
}

fn default_pkcs11_sessions() -> usize {
    8
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClientSection {
    pub name: String,
    /// Source networks the client may connect from; empty means nowhere.
    #[serde(default)]
    pub source_cidrs: Vec<String>,
    /// SHA-256 (hex) of the bearer token the client presents.
    pub token_sha256: Option<String>,
    /// SHA-256 fingerprint (hex, `:` allowed) of the client's TLS certificate.
    pub cert_sha256: Option<String>,
    /// Subject DN (RFC 2253) of the client's TLS certificate.
    pub cert_subject: Option<String>,
    #[serde(default)]
    pub tenants: Vec<String>,
    /// `dmp` (every DMP service), `dmp/<service>`, `insi`, `svc` (every `[[services]]`
    /// entry), `svc/<name>`.
    #[serde(default)]
    pub services: Vec<String>,
    /// Requests per second allowed to this client (token bucket, burst = one second).
    pub rate_per_second: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SecuritySection {
    /// Accept key, PKCS#12 and password files readable by group or others.
    #[serde(default)]
    pub allow_insecure_key_permissions: bool,
    /// Warn when a certificate expires within this many days.
    #[serde(default = "default_expiry_warning_days")]
    pub expiry_warning_days: u32,
    /// `/readyz` answers 503 when a national service's clock (its `Date` header) is
    /// further than this from ours: the DMP refuses VIHFs issued "in the future" or too
    /// long ago.
    #[serde(default = "default_max_clock_skew")]
    pub max_clock_skew: String,
}

fn default_max_clock_skew() -> String {
    "120s".into()
}

fn default_expiry_warning_days() -> u32 {
    30
}

impl Default for SecuritySection {
    fn default() -> Self {
        Self {
            allow_insecure_key_permissions: false,
            expiry_warning_days: default_expiry_warning_days(),
            max_clock_skew: default_max_clock_skew(),
        }
    }
}
