//! Connections to the national services. One [`UpstreamPool`] per (tenant, service,
//! certificate role), each with its own rustls `ClientConfig` built once: the client
//! certificate is chosen by choosing the pool, so a request can never leave with the
//! certificate of another tenant or service. Server certificates are verified against
//! the configured IGC-Santé anchors (+ CRLs), never the web PKI.
//!
//! Connections are HTTP/1.1 keep-alive, kept idle up to the `idle` timeout, and TLS
//! sessions are resumable (rustls' in-memory cache), so a handshake, which costs an
//! RSA-2048 signature, is rare. A request is retried only when the caller allows it
//! *and* hyper hands the request back unwritten.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use passerelle_config::UpstreamOcsp;
use passerelle_config::{CertMaterial, EgressProxy, KeyMaterial, Timeouts, UpstreamTrust};
use passerelle_pkcs11::tls::TlsKey;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, DigitallySignedStruct};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
    UnixTime,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::body::{Chunks, ProxyBody};
use crate::capture::{Recorder, Tee};
use crate::server_ocsp::{ServerOcsp, ServerStatus};

/// Whether the request, or part of it, reached the national service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Not one byte of the request was written upstream: it is safe to send it again.
    No,
    /// The request was written; the service may have processed it.
    Yes,
}

/// A request ready to go: the pool of the tenant's certificate for the service, what
/// to send, and whether it may be sent again.
#[derive(Debug)]
pub struct Outgoing {
    pub pool: Arc<UpstreamPool>,
    /// `POST` for the DMP and INSi; the internal system's for a generic service.
    pub method: http::Method,
    /// Path and query to request; `None`: the pool's URL's own (DMP, INSi).
    pub target: Option<String>,
    /// `None`: no body type (a generic service's GET).
    pub content_type: Option<String>,
    pub extra: Vec<(http::HeaderName, http::HeaderValue)>,
    pub chunks: Vec<Bytes>,
    pub retry: Retry,
}

impl Outgoing {
    /// A SOAP POST to the pool's URL.
    pub fn post(
        pool: Arc<UpstreamPool>,
        content_type: String,
        extra: Vec<(http::HeaderName, http::HeaderValue)>,
        chunks: Vec<Bytes>,
        retry: Retry,
    ) -> Self {
        Self {
            pool,
            method: http::Method::POST,
            target: None,
            content_type: Some(content_type),
            extra,
            chunks,
            retry,
        }
    }

    /// Sends it on its pool (see [`UpstreamPool::send`]); with `capture`, the request
    /// and its answer (or why none came) are written to the capture folder too.
    pub async fn send(
        self,
        capture: Option<&Recorder>,
    ) -> Result<Response<ProxyBody>, ExchangeError> {
        let Self {
            pool,
            method,
            target,
            content_type,
            extra,
            chunks,
            retry,
        } = self;
        let result = pool
            .send(
                &method,
                target.as_deref(),
                content_type.as_deref(),
                &extra,
                chunks,
                retry,
                capture,
            )
            .await;
        if let (Some(recorder), Err(e)) = (capture, &result) {
            recorder.failure(&e.to_string(), e.sent() != Sent::No).await;
        }
        result
    }
}

/// Why an exchange with a national service failed, and whether the request was sent.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("{upstream} unreachable: {reason}")]
    Unreachable { upstream: String, reason: String },
    #[error("{upstream}: {reason}")]
    EgressUnreachable { upstream: String, reason: String },
    #[error("{upstream}: {reason}")]
    EgressRefused { upstream: String, reason: String },
    #[error("TLS with {upstream} failed: {reason}")]
    Tls { upstream: String, reason: String },
    #[error("{upstream} did not answer within {seconds} s ({phase})")]
    Timeout {
        upstream: String,
        phase: &'static str,
        seconds: u64,
        sent: Sent,
    },
    #[error("connection to {upstream} lost {when}: {reason}")]
    ConnectionLost {
        upstream: String,
        when: &'static str,
        reason: String,
        sent: Sent,
    },
    #[error("{upstream}'s certificate is revoked: {reason}")]
    ServerRevoked { upstream: String, reason: String },
    #[error(
        "the revocation status of {upstream}'s certificate is unknown, and trust.revocation_failure = \"hard\": {reason}"
    )]
    RevocationUnknown { upstream: String, reason: String },
    /// The client key's token could not sign the handshake.
    #[error("{0}")]
    KeyUnavailable(String),
    /// Every session with the client key's token stayed in use.
    #[error("{0}")]
    KeyBusy(String),
    #[error("upstream: {0}")]
    Internal(String),
}

/// A failed handshake: a revoked server certificate, or one whose status the CRLs
/// cannot establish under hard-fail, gets its own error; anything else is TLS.
fn tls_error(upstream: &str, e: std::io::Error) -> ExchangeError {
    use rustls::CertificateError as C;
    let upstream = upstream.to_string();
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    // Our own client key's token could not sign the handshake.
    if let Some(rustls::Error::Other(other)) = rustls_error
        && let Some(token) = other.0.downcast_ref::<passerelle_pkcs11::Pkcs11Error>()
    {
        return match token {
            passerelle_pkcs11::Pkcs11Error::Busy { .. } => {
                ExchangeError::KeyBusy(token.to_string())
            }
            _ => ExchangeError::KeyUnavailable(token.to_string()),
        };
    }
    let certificate = rustls_error.and_then(|r| match r {
        rustls::Error::InvalidCertificate(c) => Some(c.clone()),
        _ => None,
    });
    match certificate {
        Some(C::Revoked) => ExchangeError::ServerRevoked {
            upstream,
            reason: "a CRL in use lists it, or a CA certificate of its chain".into(),
        },
        Some(C::UnknownRevocationStatus) => ExchangeError::RevocationUnknown {
            upstream,
            reason: "no CRL is at hand for a CA of its chain, the root's included (the service's crls, or [trust.crl_download])".into(),
        },
        Some(C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. }) => {
            ExchangeError::RevocationUnknown {
                upstream,
                reason: "a CRL of its chain is past its nextUpdate (the service's crls, or [trust.crl_download])".into(),
            }
        }
        _ => ExchangeError::Tls {
            upstream,
            reason: e.to_string(),
        },
    }
}

impl ExchangeError {
    /// Whether the request may have reached the service.
    pub fn sent(&self) -> Sent {
        match self {
            Self::Timeout { sent, .. } | Self::ConnectionLost { sent, .. } => *sent,
            _ => Sent::No,
        }
    }
}
/// Responses up to this size are read whole before the internal system gets anything,
/// so that a connection cut mid-body becomes a clean fault; longer ones (ITI-43 with
/// large documents) are streamed after this much.
pub const BUFFERED_RESPONSE_BYTES: usize = 1024 * 1024;

/// Idle connections kept per pool.
const MAX_IDLE: usize = 64;

/// Whether a request may be sent a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Idempotent: once more on a fresh connection, only if the first attempt was not
    /// written at all.
    IfNotSent,
    /// ITI-41, ITI-57 and anything unknown: never.
    Never,
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{url}: {reason}")]
    Url { url: String, reason: String },
    #[error("TLS configuration for {pool}: {reason}")]
    Tls { pool: String, reason: String },
}

/// Where a pool connects.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// Full URL, for messages.
    pub url: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    authority: String,
    path: String,
}

impl UpstreamTarget {
    /// Host and port to connect to.
    pub fn address(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// The name sent in SNI, which the server's certificate must carry.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    pub fn parse(url: &str) -> Result<Self, UpstreamError> {
        let bad = |reason: &str| UpstreamError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "https" {
            return Err(bad("only https is supported"));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(bad("no host")),
        };
        let port = parsed.port_or_known_default().unwrap_or(443);
        let server_name = ServerName::try_from(host.clone()).map_err(|e| bad(&e.to_string()))?;
        let authority = match parsed.port() {
            Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or(&host)),
            None => parsed.host_str().unwrap_or(&host).to_string(),
        };
        let mut path = parsed.path().to_string();
        if let Some(q) = parsed.query() {
            path = format!("{path}?{q}");
        }
        Ok(Self {
            url: url.to_string(),
            host,
            port,
            server_name,
            authority,
            path,
        })
    }
}

/// The TLS client configuration of one pool: the upstream's anchors and CRLs, and the
/// one client certificate this pool presents. With OCSP in the policy and `ocsp` given,
/// a stapled answer is verified and kept there during the handshake; the connection is
/// judged after it ([`UpstreamPool::connect`]).
pub fn client_config(
    pool: &str,
    trust: &UpstreamTrust,
    cert: &CertMaterial,
    ocsp: Option<&Arc<ServerOcsp>>,
) -> Result<Arc<ClientConfig>, UpstreamError> {
    let err = |reason: String| UpstreamError::Tls {
        pool: pool.to_string(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for anchor in &trust.anchors {
        roots
            .add(CertificateDer::from(anchor.clone()))
            .map_err(|e| err(format!("trust anchor: {e}")))?;
    }
    let crls: Vec<CertificateRevocationListDer<'static>> = trust
        .crls
        .iter()
        .map(|c| CertificateRevocationListDer::from(c.clone()))
        .collect();
    let hard_crl = trust.revocation.crl && trust.revocation.hard();
    let mut verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if !crls.is_empty() {
        verifier = verifier.with_crls(crls);
        verifier = if hard_crl {
            // Every certificate of the chain needs its issuer's CRL, current.
            verifier.enforce_revocation_expiration()
        } else {
            // A CRL covers the certificates of its issuer only; the others stay accepted.
            verifier.allow_unknown_revocation_status()
        };
    }
    let inner = verifier.build().map_err(|e| err(e.to_string()))?;
    let verifier = Arc::new(RevocationVerifier {
        inner,
        no_crl_hard: hard_crl && trust.crls.is_empty(),
        staples: match (&trust.revocation.ocsp, ocsp) {
            (Some(settings), Some(board)) => Some((settings.clone(), Arc::clone(board))),
            _ => None,
        },
        anchors: trust.anchors.clone(),
    });
    let chain: Vec<CertificateDer<'static>> = std::iter::once(cert.leaf_der.clone())
        .chain(cert.intermediates_der.iter().cloned())
        .map(CertificateDer::from)
        .collect();
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &cert.key {
        KeyMaterial::File(key) => builder
            .with_client_auth_cert(
                chain,
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec())),
            )
            .map_err(|e| err(format!("client certificate: {e}")))?,
        // The handshake's signature is made in the token.
        KeyMaterial::Token(key) => builder.with_client_cert_resolver(Arc::new(
            SingleCertAndKey::from(TlsKey::new(Arc::clone(key)).certified(chain)),
        )),
    };
    let mut config = config;
    if hard_crl {
        // A resumed handshake verifies no certificate: a CRL that went past its
        // nextUpdate since would not be noticed. Full handshakes only (connections are
        // kept, so they stay rare).
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// rustls's WebPKI verifier (anchors, CRLs), plus what the revocation policy adds
/// during the handshake: hard-fail with CRLs and none at hand refuses; a stapled OCSP
/// answer is verified and kept for [`UpstreamPool::connect`] to judge.
#[derive(Debug)]
struct RevocationVerifier {
    inner: Arc<WebPkiServerVerifier>,
    /// `revocation_failure = "hard"` with CRLs, and not one CRL for this upstream.
    no_crl_hard: bool,
    staples: Option<(UpstreamOcsp, Arc<ServerOcsp>)>,
    anchors: Vec<Vec<u8>>,
}

impl ServerCertVerifier for RevocationVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if self.no_crl_hard {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownRevocationStatus,
            ));
        }
        if let Some((settings, board)) = &self.staples
            && !ocsp_response.is_empty()
        {
            let chain: Vec<&[u8]> = intermediates.iter().map(|c| c.as_ref()).collect();
            board.staple(
                settings,
                &self.anchors,
                end_entity.as_ref(),
                &chain,
                ocsp_response,
            );
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// Everything a pool is built from. Two equal specs build pools that behave the same,
/// so a reload keeps the running pool (its idle connections, TLS sessions and
/// counters) when its spec's [`PoolSpec::digest`] did not change.
#[derive(Debug)]
pub struct PoolSpec<'a> {
    pub key: PoolKey,
    pub url: &'a str,
    pub trust: &'a UpstreamTrust,
    pub cert: &'a CertMaterial,
    pub timeouts: Timeouts,
    pub concurrency: usize,
    /// The forward proxy to tunnel through (`None`: direct).
    pub egress: Option<&'a EgressProxy>,
    /// What OCSP said of the servers' certificates: shared by every pool, kept across
    /// reloads (not part of the digest).
    pub server_ocsp: &'a Arc<ServerOcsp>,
}

impl PoolSpec<'_> {
    /// SHA-256 over every input, each length-prefixed (no two specs share a digest by
    /// concatenation).
    pub fn digest(&self) -> [u8; 32] {
        let mut h = openssl::sha::Sha256::new();
        let mut part = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        part(self.key.to_string().as_bytes());
        part(self.url.as_bytes());
        for list in [&self.trust.anchors, &self.trust.crls] {
            part(&(list.len() as u64).to_be_bytes());
            list.iter().for_each(|d| part(d));
        }
        part(&self.cert.leaf_der);
        part(&(self.cert.intermediates_der.len() as u64).to_be_bytes());
        self.cert.intermediates_der.iter().for_each(|d| part(d));
        match &self.cert.key {
            KeyMaterial::File(key) => part(key.pkcs8_der()),
            // Each opening of a token key is its own (a reload opens it again, with the
            // PIN file of now): a pool keeps the key it was built with.
            KeyMaterial::Token(key) => {
                part(key.describe().as_bytes());
                part(&(Arc::as_ptr(key) as usize as u64).to_be_bytes());
            }
        }
        let t = self.timeouts;
        for d in [t.connect, t.tls, t.request, t.idle] {
            part(&d.as_nanos().to_be_bytes());
        }
        part(&(self.concurrency as u64).to_be_bytes());
        part(&self.trust.revocation.fingerprint());
        part(
            &self
                .egress
                .map(EgressProxy::fingerprint)
                .unwrap_or_default(),
        );
        h.finish()
    }
}

/// Counters of one pool.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Connections opened (TCP + TLS).
    pub connections: AtomicU64,
    /// Full TLS handshakes.
    pub full_handshakes: AtomicU64,
    /// Resumed TLS handshakes.
    pub resumed_handshakes: AtomicU64,
    /// Requests sent.
    pub requests: AtomicU64,
    /// Our clock minus the service's (`Date` of its last answer), in seconds, and when
    /// it was seen; `None` until an answer carried a readable `Date`.
    clock_skew: Mutex<Option<(i64, Instant)>>,
}

/// A skew worth a warning in the log: the DMP's tolerance is a few minutes.
const CLOCK_SKEW_WARNING_S: i64 = 30;

/// How long a skew observation counts: with no answer since (an instance taken out of
/// rotation gets no traffic), the guard forgets it rather than hold the instance out.
const CLOCK_SKEW_FRESH: Duration = Duration::from_secs(300);

impl PoolStats {
    /// Our clock minus the service's at its last answer, in seconds, if that answer came
    /// within the last [`CLOCK_SKEW_FRESH`].
    pub fn clock_skew(&self) -> Option<i64> {
        self.clock_skew
            .lock()
            .ok()
            .and_then(|s| *s)
            .filter(|(_, at)| at.elapsed() <= CLOCK_SKEW_FRESH)
            .map(|(skew, _)| skew)
    }

    /// Records the service's clock from an answer's `Date` (1 s resolution); warns when
    /// the skew crosses [`CLOCK_SKEW_WARNING_S`] (once per crossing, not per request).
    fn observe_date(&self, pool: &str, headers: &http::HeaderMap) {
        let Some(date) = headers
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
        else {
            return;
        };
        let now = std::time::SystemTime::now();
        let skew = match now.duration_since(date) {
            Ok(ahead) => i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX),
            Err(behind) => -i64::try_from(behind.duration().as_secs()).unwrap_or(i64::MAX),
        };
        let Ok(mut last) = self.clock_skew.lock() else {
            return;
        };
        let was_off = last.is_some_and(|(s, _)| s.abs() > CLOCK_SKEW_WARNING_S);
        let is_off = skew.abs() > CLOCK_SKEW_WARNING_S;
        if is_off && !was_off {
            tracing::warn!(
                pool,
                skew_s = skew,
                "clock skew with the national service: our clock minus its Date header; the DMP refuses VIHFs outside its tolerance: check NTP on this host"
            );
        } else if was_off && !is_off {
            tracing::info!(
                pool,
                skew_s = skew,
                "clock skew with the national service back within 30 s"
            );
        }
        *last = Some((skew, Instant::now()));
    }

    pub fn handshakes(&self) -> u64 {
        self.full_handshakes.load(Ordering::Relaxed)
            + self.resumed_handshakes.load(Ordering::Relaxed)
    }
}

/// What a pool is for: one tenant, one service, one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolKey {
    pub tenant: String,
    /// `dmp/<service>` or `insi`.
    pub service: String,
    pub role: passerelle_config::CertRole,
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.tenant, self.service, self.role)
    }
}

struct IdleConnection {
    conn: Conn,
    since: Instant,
}

/// One HTTP connection, and the SHA-256 of the server certificate it was opened with
/// (when OCSP applies): the status that certificate has now decides whether an idle
/// connection may still be used.
struct Conn {
    sender: SendRequest<Chunks>,
    leaf: Option<[u8; 32]>,
}

/// Keep-alive connections to one upstream URL with one client certificate.
pub struct UpstreamPool {
    key: PoolKey,
    /// `<tenant> <service> <role>`, for messages.
    name: String,
    target: UpstreamTarget,
    tls: TlsConnector,
    /// [`PoolSpec::digest`] of what it was built from.
    digest: [u8; 32],
    /// The forward proxy its connections are tunnelled through.
    egress: Option<EgressProxy>,
    /// OCSP for the server's certificate: settings, the shared answers, the anchors an
    /// answer may chain to, and whether no status refuses (hard-fail).
    ocsp: Option<PoolOcsp>,
    timeouts: Timeouts,
    idle: Mutex<VecDeque<IdleConnection>>,
    /// Requests in flight at once on this pool.
    slots: tokio::sync::Semaphore,
    pub stats: PoolStats,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("name", &self.name)
            .field("url", &self.target.url)
            .finish_non_exhaustive()
    }
}

struct PoolOcsp {
    settings: UpstreamOcsp,
    board: Arc<ServerOcsp>,
    anchors: Vec<Vec<u8>>,
    hard: bool,
}

fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

impl UpstreamPool {
    /// Builds the pool `spec` describes: its TLS client configuration and target.
    pub fn build(spec: &PoolSpec<'_>) -> Result<Self, UpstreamError> {
        let name = spec.key.to_string();
        Ok(Self {
            tls: TlsConnector::from(client_config(
                &name,
                spec.trust,
                spec.cert,
                Some(spec.server_ocsp),
            )?),
            ocsp: spec.trust.revocation.ocsp.clone().map(|settings| PoolOcsp {
                settings,
                board: Arc::clone(spec.server_ocsp),
                anchors: spec.trust.anchors.clone(),
                hard: spec.trust.revocation.hard(),
            }),
            target: UpstreamTarget::parse(spec.url)?,
            name,
            key: spec.key.clone(),
            digest: spec.digest(),
            egress: spec.egress.cloned(),
            timeouts: spec.timeouts,
            idle: Mutex::new(VecDeque::new()),
            slots: tokio::sync::Semaphore::new(spec.concurrency.max(1)),
            stats: PoolStats::default(),
        })
    }

    /// The digest of the spec it was built from.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    pub fn url(&self) -> &str {
        &self.target.url
    }

    /// The path of the pool's URL, without a trailing `/`: a generic service's requests
    /// go below it.
    pub fn base_path(&self) -> &str {
        let path = self.target.path.split('?').next().unwrap_or("");
        path.trim_end_matches('/')
    }

    /// Connections idle in the pool now.
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().map(|q| q.len()).unwrap_or(0)
    }

    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        // Most recently used first: the likeliest to be still open upstream.
        while let Some(c) = idle.pop_back() {
            if !c.conn.sender.is_closed()
                && c.since.elapsed() < self.timeouts.idle
                && self.still_vouched_for(&c.conn)
            {
                return Some(c.conn);
            }
        }
        None
    }

    /// A kept connection is used again only while the status its server certificate
    /// was opened with still holds: not once revoked, nor once that answer has expired
    /// (a new connection asks again), nor, under hard-fail, while it is unknown.
    fn still_vouched_for(&self, conn: &Conn) -> bool {
        let (Some(ocsp), Some(leaf)) = (&self.ocsp, &conn.leaf) else {
            return true;
        };
        match ocsp.board.held(leaf) {
            Some(ServerStatus::Good) => true,
            Some(ServerStatus::Unknown(_)) => !ocsp.hard,
            Some(ServerStatus::Revoked(_)) | None => false,
        }
    }

    fn checkin(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() >= MAX_IDLE {
                idle.pop_front();
            }
            idle.push_back(IdleConnection {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// `direct`, or the forward proxy's `host:port`: the route its connections take.
    pub fn route(&self) -> String {
        self.egress
            .as_ref()
            .map_or_else(|| "direct".to_string(), EgressProxy::address)
    }

    /// A TCP connection to the service: direct, or a CONNECT tunnel through the
    /// forward proxy; within the connect timeout either way.
    async fn open_tcp(&self) -> Result<TcpStream, ExchangeError> {
        let upstream = &self.target.url;
        let (host, port) = (self.target.host.as_str(), self.target.port);
        if let Some(proxy) = &self.egress {
            return crate::egress::tunnel(proxy, host, port, self.timeouts.connect)
                .await
                .map_err(|e| match e {
                    crate::egress::EgressError::Timeout { .. } => ExchangeError::Timeout {
                        upstream: upstream.clone(),
                        phase: "CONNECT tunnel through the egress proxy",
                        seconds: secs(self.timeouts.connect),
                        sent: Sent::No,
                    },
                    crate::egress::EgressError::Unreachable { .. } => {
                        ExchangeError::EgressUnreachable {
                            upstream: upstream.clone(),
                            reason: e.to_string(),
                        }
                    }
                    crate::egress::EgressError::Refused { .. }
                    | crate::egress::EgressError::Protocol { .. } => ExchangeError::EgressRefused {
                        upstream: upstream.clone(),
                        reason: e.to_string(),
                    },
                });
        }
        tokio::time::timeout(self.timeouts.connect, TcpStream::connect((host, port)))
            .await
            .map_err(|_| ExchangeError::Timeout {
                upstream: upstream.clone(),
                phase: "TCP connect",
                seconds: secs(self.timeouts.connect),
                sent: Sent::No,
            })?
            .map_err(|e| ExchangeError::Unreachable {
                upstream: upstream.clone(),
                reason: e.to_string(),
            })
    }

    /// A new connection: TCP (or tunnel), TLS, and, when OCSP applies, the status of
    /// the server's certificate, asked within what is left of the request's time.
    async fn connect(&self, deadline: Instant) -> Result<Conn, ExchangeError> {
        let upstream = &self.target.url;
        let tcp = self.open_tcp().await?;
        let _ = tcp.set_nodelay(true);
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        let tls = tokio::time::timeout(
            self.timeouts.tls,
            self.tls.connect(self.target.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| ExchangeError::Timeout {
            upstream: upstream.clone(),
            phase: "TLS handshake",
            seconds: secs(self.timeouts.tls),
            sent: Sent::No,
        })?
        .map_err(|e| tls_error(upstream, e))?;
        let mut leaf = None;
        if let Some(ocsp) = &self.ocsp {
            let peer = tls.get_ref().1.peer_certificates().unwrap_or(&[]);
            leaf = peer.first().map(|c| openssl::sha::sha256(c.as_ref()));
            let asked = ocsp.board.status(&ocsp.settings, &ocsp.anchors, peer);
            let status = tokio::time::timeout_at(deadline.into(), asked)
                .await
                .map_err(|_| ExchangeError::Timeout {
                    upstream: upstream.clone(),
                    phase: "the OCSP status of the server's certificate (trust.ocsp.timeout)",
                    seconds: secs(self.timeouts.request),
                    sent: Sent::No,
                })?;
            match status {
                ServerStatus::Good => {}
                ServerStatus::Revoked(reason) => {
                    return Err(ExchangeError::ServerRevoked {
                        upstream: upstream.clone(),
                        reason,
                    });
                }
                ServerStatus::Unknown(reason) if ocsp.hard => {
                    return Err(ExchangeError::RevocationUnknown {
                        upstream: upstream.clone(),
                        reason,
                    });
                }
                ServerStatus::Unknown(_) => crate::server_ocsp::soft_failure(&ocsp.board),
            }
        }
        match tls.get_ref().1.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => &self.stats.resumed_handshakes,
            _ => &self.stats.full_handshakes,
        }
        .fetch_add(1, Ordering::Relaxed);
        let (sender, connection) = http1::handshake(TokioIo::new(tls)).await.map_err(|e| {
            ExchangeError::ConnectionLost {
                upstream: upstream.clone(),
                when: "while setting up HTTP",
                reason: e.to_string(),
                sent: Sent::No,
            }
        })?;
        tokio::spawn(async move {
            // Ends when the connection closes (either side, or the idle pool drops it).
            let _ = connection.await;
        });
        Ok(Conn { sender, leaf })
    }

    /// Sends one request and reads its response: whole when short, otherwise
    /// [`BUFFERED_RESPONSE_BYTES`] then streamed. `method`, `target` (path and query;
    /// `None`: the pool URL's), `content_type` and `body` are the request's; `extra`
    /// headers are added as they are. With `capture`, the request is written as handed
    /// to the HTTP client (once, before its first attempt), and the answer as read.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        self: &Arc<Self>,
        method: &http::Method,
        target: Option<&str>,
        content_type: Option<&str>,
        extra: &[(http::HeaderName, http::HeaderValue)],
        body: Vec<Bytes>,
        retry: Retry,
        capture: Option<&Recorder>,
    ) -> Result<Response<ProxyBody>, ExchangeError> {
        let upstream = &self.target.url;
        let path = target.unwrap_or(self.target.path.as_str());
        let build = || -> Result<Request<Chunks>, ExchangeError> {
            let chunks = Chunks::new(body.iter().cloned());
            let bodiless = chunks.is_empty()
                && matches!(
                    *method,
                    http::Method::GET
                        | http::Method::HEAD
                        | http::Method::DELETE
                        | http::Method::OPTIONS
                );
            let mut b = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(http::header::HOST, self.target.authority.as_str());
            if let Some(content_type) = content_type {
                b = b.header(http::header::CONTENT_TYPE, content_type);
            }
            if !bodiless {
                b = b.header(http::header::CONTENT_LENGTH, chunks.len());
            }
            for (k, v) in extra {
                b = b.header(k, v);
            }
            b.body(chunks)
                .map_err(|e| ExchangeError::Internal(format!("upstream request: {e}")))
        };
        let mut request = build()?;
        let mut attempts = 0;
        let deadline = Instant::now() + self.timeouts.request;
        // Wait for a slot within the request's time (limits.upstream_concurrency).
        let _slot = tokio::time::timeout(self.timeouts.request, self.slots.acquire())
            .await
            .map_err(|_| ExchangeError::Timeout {
                upstream: upstream.clone(),
                phase: "waiting for a free upstream slot (limits.upstream_concurrency)",
                seconds: secs(self.timeouts.request),
                sent: Sent::No,
            })?
            .map_err(|_| ExchangeError::Internal("upstream slots closed".into()))?;
        loop {
            let (mut conn, reused) = match self.checkout() {
                Some(c) => (c, true),
                None => (self.connect(deadline).await?, false),
            };
            if let Err(e) = conn.sender.ready().await {
                if reused {
                    // Closed while idle: nothing was written on it; take another.
                    continue;
                }
                return Err(ExchangeError::ConnectionLost {
                    upstream: upstream.clone(),
                    when: "right after connecting",
                    reason: e.to_string(),
                    sent: Sent::No,
                });
            }
            if attempts == 0
                && let Some(recorder) = capture
            {
                recorder
                    .request(request.method(), path, request.headers(), &body)
                    .await;
            }
            attempts += 1;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                // Spent before a byte was written (a slow handshake or OCSP responder).
                return Err(ExchangeError::Timeout {
                    upstream: upstream.clone(),
                    phase: "before sending (connecting took the request's time)",
                    seconds: secs(self.timeouts.request),
                    sent: Sent::No,
                });
            }
            let response = match tokio::time::timeout(
                remaining,
                conn.sender.try_send_request(request),
            )
            .await
            {
                Err(_) => {
                    return Err(ExchangeError::Timeout {
                        upstream: upstream.clone(),
                        phase: "waiting for the response",
                        seconds: secs(self.timeouts.request),
                        sent: Sent::Yes,
                    });
                }
                Ok(Ok(response)) => response,
                Ok(Err(mut e)) => {
                    let reason = e.error().to_string();
                    match e.take_message() {
                        Some(unsent) if retry == Retry::IfNotSent && attempts < 2 => {
                            request = unsent;
                            continue;
                        }
                        Some(_) => {
                            return Err(ExchangeError::ConnectionLost {
                                upstream: upstream.clone(),
                                when: "before the request was written",
                                reason,
                                sent: Sent::No,
                            });
                        }
                        None => {
                            return Err(ExchangeError::ConnectionLost {
                                upstream: upstream.clone(),
                                when: "before the response",
                                reason,
                                sent: Sent::Yes,
                            });
                        }
                    }
                }
            };
            return self.read_response(response, conn, deadline, capture).await;
        }
    }

    async fn read_response(
        self: &Arc<Self>,
        response: Response<Incoming>,
        conn: Conn,
        deadline: Instant,
        capture: Option<&Recorder>,
    ) -> Result<Response<ProxyBody>, ExchangeError> {
        let upstream = &self.target.url;
        let (parts, mut incoming) = response.into_parts();
        self.stats.observe_date(&self.name, &parts.headers);
        let mut head: Vec<Bytes> = Vec::new();
        let mut read = 0usize;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let frame = match tokio::time::timeout(remaining, incoming.frame()).await {
                Err(_) => {
                    return Err(ExchangeError::Timeout {
                        upstream: upstream.clone(),
                        phase: "reading the response body",
                        seconds: secs(self.timeouts.request),
                        sent: Sent::Yes,
                    });
                }
                Ok(None) => {
                    self.checkin(conn);
                    let body = match head.len() {
                        0 => Bytes::new(),
                        1 => head.swap_remove(0),
                        _ => Bytes::from(head.concat()),
                    };
                    if let Some(recorder) = capture {
                        recorder.response(&parts, &body).await;
                    }
                    return Ok(Response::from_parts(parts, ProxyBody::Full(body)));
                }
                Ok(Some(Err(e))) => {
                    return Err(ExchangeError::ConnectionLost {
                        upstream: upstream.clone(),
                        when: "during the response",
                        reason: e.to_string(),
                        sent: Sent::Yes,
                    });
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                read += data.len();
                head.push(data);
                if read > BUFFERED_RESPONSE_BYTES {
                    let rest = PooledBody {
                        inner: incoming,
                        conn: Some(conn),
                        pool: Arc::clone(self),
                        tee: capture.and_then(|r| r.streamed_response(&parts, &head)),
                    };
                    return Ok(Response::from_parts(
                        parts,
                        ProxyBody::Streaming {
                            head: Chunks::new(head),
                            rest,
                        },
                    ));
                }
            }
        }
    }
}

/// The rest of a long upstream response; the connection goes back to its pool when the
/// body ends, and is closed if the internal system goes away first.
pub struct PooledBody {
    inner: Incoming,
    conn: Option<Conn>,
    pool: Arc<UpstreamPool>,
    /// The capture file the rest is written to as it passes, when captured.
    tee: Option<Tee>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("pool", &self.pool.name)
            .finish_non_exhaustive()
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(tee), Some(data)) = (&this.tee, frame.data_ref()) {
                    tee.chunk(data);
                }
            }
            Poll::Ready(None) => {
                // The capture file is complete: its writer ends.
                this.tee = None;
                if let Some(conn) = this.conn.take() {
                    this.pool.checkin(conn);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn a_skew_is_forgotten_once_stale() {
        let stats = PoolStats::default();
        let mut headers = http::HeaderMap::new();
        let ahead = std::time::SystemTime::now() + Duration::from_secs(300);
        headers.insert(
            http::header::DATE,
            http::HeaderValue::from_str(&httpdate::fmt_http_date(ahead)).expect("date"),
        );
        stats.observe_date("p", &headers);
        let skew = stats.clock_skew().expect("observed");
        assert!((-301..=-299).contains(&skew), "{skew}");
        // Seen longer ago than CLOCK_SKEW_FRESH: no longer counts.
        if let Some(long_ago) =
            Instant::now().checked_sub(CLOCK_SKEW_FRESH + Duration::from_secs(1))
            && let Ok(mut s) = stats.clock_skew.lock()
        {
            *s = Some((skew, long_ago));
            drop(s);
            assert_eq!(stats.clock_skew(), None);
        }
        // A garbage Date is ignored.
        let stats = PoolStats::default();
        headers.insert(
            http::header::DATE,
            http::HeaderValue::from_static("yesterday"),
        );
        stats.observe_date("p", &headers);
        assert_eq!(stats.clock_skew(), None);
    }
}
