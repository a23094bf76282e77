//! Every refusal the proxy makes, and the one place where it becomes an answer: on the
//! SOAP routes (`/dmp`, `/insi`) a SOAP 1.2 Fault with a stable `passerelle:<Code>`
//! subcode, on the JSON routes (`/api`, `/svc`) a JSON error with the same stable code;
//! both with an HTTP status, a reason a person can act on, and whether anything was
//! sent upstream. A CNAM fault met by the JSON API carries its `siram` and
//! `desir_NNN` / `insi_NNN` codes and whether it is worth retrying.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use passerelle_signing::xml::Element;
use passerelle_soap::{Fault, FaultCode};

use crate::api::insi::CnamFault;
use crate::body::ProxyBody;

/// Namespace of the `passerelle:` fault subcodes and detail.
pub const FAULT_NS: &str = "urn:passerelle:fault";

use crate::upstream::ExchangeError;
pub use crate::upstream::Sent;

/// How a refusal is written: by the routes' family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFormat {
    /// `/dmp/...`, `/insi...` and anything unknown: a SOAP 1.2 Fault.
    Soap,
    /// `/api/...` and `/svc/...`: `{"error": {...}}`.
    Json,
}

impl AnswerFormat {
    /// The format of the answers of a request path.
    pub fn of_path(path: &str) -> Self {
        if ["/api/", "/svc/"].iter().any(|p| path.starts_with(p)) {
            Self::Json
        } else {
            Self::Soap
        }
    }
}

/// A proxy-side failure. Upstream SOAP faults are not errors on the SOAP routes: they
/// are passed through; the JSON API reads them ([`ProxyError::InsiFault`]).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // The route.
    #[error(
        "no route {method} {path}: use POST /dmp/<service>, POST /insi/auto | /insi/manu, POST /api/insi/search | /api/insi/vitale, GET /api/openapi.json or /svc/<service>/<path>"
    )]
    UnknownRoute { method: String, path: String },
    #[error("{method} is not allowed on {route}: use {allowed}")]
    MethodNotAllowed {
        method: String,
        route: String,
        allowed: String,
    },
    #[error("no service {0:?}: the [[services]] entries list the /svc/<name> routes")]
    UnknownService(String),
    #[error("path refused: {0}")]
    BadPath(String),
    /// The path itself is not repeated: it may name a patient, and refusals are logged.
    #[error("the path is under none of service {service:?}'s path_prefixes ({allowed})")]
    PathNotAllowed { service: String, allowed: String },
    #[error("{0} is not configured on this proxy (no [{0}] section)")]
    ServiceNotConfigured(&'static str),
    #[error("DMP service {0:?} is not configured: the [dmp.services] table lists the routes")]
    UnknownDmpService(String),

    // Who is calling.
    #[error(
        "no credentials: send 'Authorization: Bearer <token>' (the token whose SHA-256 is in [[clients]])"
    )]
    MissingCredentials,
    #[error("the bearer token matches no declared client")]
    UnknownClient,
    #[error("client {client:?} may not connect from {source_ip} (clients.source_cidrs)")]
    SourceNotAllowed {
        client: String,
        source_ip: std::net::IpAddr,
    },
    #[error(
        "client {client:?} is allowed several tenants: name one in the X-Passerelle-Tenant header"
    )]
    TenantRequired { client: String },
    #[error("client {client:?} may not act for tenant {tenant:?} (clients.tenants)")]
    TenantNotAllowed { client: String, tenant: String },
    #[error("client {client:?} may not use {service} (clients.services)")]
    ServiceNotAllowed { client: String, service: String },

    // The request.
    #[error("request body larger than the {limit}-byte limit (limits.max_body_bytes)")]
    BodyTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error(
        "the request body did not arrive within {seconds} s of its headers (limits.body_read_timeout)"
    )]
    BodyTimeout { seconds: u64 },
    #[error(
        "Content-Type {0:?} is not SOAP: use application/soap+xml (or text/xml for SOAP 1.1), or multipart/related for MTOM"
    )]
    UnsupportedMediaType(String),
    #[error("MTOM request: {0}")]
    BadMultipart(String),
    #[error("{0}")]
    MalformedXml(String),
    #[error("{0}")]
    DtdForbidden(String),
    #[error("the request is not a SOAP envelope: {0}")]
    NotSoap(String),
    #[error("the SOAP header has no wsa:Action")]
    MissingAction,
    #[error(
        "{count} {header} headers: exactly one is allowed (which one a receiver reads is not defined)"
    )]
    DuplicateHeader { header: &'static str, count: usize },
    #[error("Action {action:?} is not an operation of DMP service {service:?}")]
    ActionNotAllowed { action: String, service: String },
    #[error(
        "the SOAP Body must hold exactly one element, {expected} for Action {action:?}; it holds {found}"
    )]
    OperationMismatch {
        action: String,
        expected: String,
        found: String,
    },
    #[error("WS-Addressing: {0}")]
    BadAddressing(String),
    #[error(
        "no identity: put an unsigned VIHF in wsse:Security or send the X-Vihf-* headers (README, HTTP API)"
    )]
    MissingIdentity,
    #[error("identity: {0}")]
    BadIdentity(String),
    #[error(
        "structure {structure} ({place}) is neither tenant {tenant}'s legal entity nor one of its geographic entities"
    )]
    ForeignStructure {
        structure: String,
        place: String,
        tenant: String,
    },
    #[error(
        "{place} names the legal entity {structure}: tenant {tenant} has geographic entities ({geographic}), one of which is expected here (dmp.policy.require_geographic)"
    )]
    GeographicRequired {
        structure: String,
        place: String,
        tenant: String,
        geographic: String,
    },
    #[error(
        "the VIHF's Identifiant_Structure {vihf} is not the submission set's authorInstitution ({set}) (dmp.policy.structure_consistency)"
    )]
    StructureMismatch { vihf: String, set: String },
    #[error("submission: {0}")]
    BadSubmission(String),
    #[error(
        "the submission already carries a lot signature document; the proxy signs lots itself (dmp.signing.lot_signature_passthrough lets it through)"
    )]
    LotAlreadySigned,
    #[error(
        "tenant {tenant:?} has both INSi certificates: POST to /insi/auto (automated calls) or /insi/manu (a person's calls)"
    )]
    InsiModeRequired { tenant: String },
    #[error("INSi request: {0}")]
    BadInsiRequest(String),
    #[error("Content-Type {0:?} is not JSON: send application/json")]
    NotJson(String),
    #[error("the body is not a JSON document: {0}")]
    MalformedJson(String),
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },

    // The tenant's material.
    #[error("tenant {tenant:?} has no {role} certificate configured")]
    CertificateMissing { tenant: String, role: String },
    #[error(
        "tenant {tenant:?}'s {role} certificate expired on {not_after}: install the renewed one and reload"
    )]
    CertificateExpired {
        tenant: String,
        role: String,
        not_after: String,
    },
    #[error("tenant {tenant:?}'s {role} certificate is {reason}: install a new one and reload")]
    CertificateRevoked {
        tenant: String,
        role: String,
        reason: String,
    },
    #[error(
        "tenant {tenant:?}'s {role} certificate has no OCSP status ({reason}), and trust.revocation_failure = \"hard\": it is used again once its responder vouches for it"
    )]
    CertificateRevocationUnknown {
        tenant: String,
        role: String,
        reason: String,
    },
    #[error(
        "tenant {tenant:?}'s {role} certificate is not valid before {not_before}: check the clock, or keep the previous certificate until then"
    )]
    CertificateNotYetValid {
        tenant: String,
        role: String,
        not_before: String,
    },
    #[error("signing failed: {0}")]
    SigningFailed(String),
    /// The key's token (HSM) cannot be used now: nothing was signed or sent.
    #[error("{0}: the request was not sent; /readyz says when the key is usable again")]
    KeyUnavailable(String),

    // Upstream.
    #[error("{upstream} unreachable: {reason}")]
    UpstreamUnreachable { upstream: String, reason: String },
    #[error("no tunnel to {upstream}: {reason}")]
    EgressProxyUnreachable { upstream: String, reason: String },
    #[error("no tunnel to {upstream}: {reason}")]
    EgressProxyRefused { upstream: String, reason: String },
    #[error("TLS with {upstream} failed: {reason}")]
    UpstreamTls { upstream: String, reason: String },
    #[error("{upstream}'s certificate is revoked ({reason}): nothing was sent")]
    UpstreamCertificateRevoked { upstream: String, reason: String },
    #[error(
        "the revocation status of {upstream}'s certificate cannot be established ({reason}), and trust.revocation_failure = \"hard\": nothing was sent"
    )]
    UpstreamRevocationUnknown { upstream: String, reason: String },
    #[error("{upstream} did not answer within {seconds} s ({phase})")]
    UpstreamTimeout {
        upstream: String,
        phase: &'static str,
        seconds: u64,
        sent: Sent,
    },
    #[error("connection to {upstream} lost {when}: {reason}")]
    UpstreamConnectionLost {
        upstream: String,
        when: &'static str,
        reason: String,
        sent: Sent,
    },
    #[error("INSi answered with a fault: {}", .0.summary())]
    InsiFault(CnamFault),
    #[error("the answer of {upstream} could not be read: {reason}")]
    UpstreamAnswer { upstream: String, reason: String },
    #[error(
        "Passerelle is handling as many requests as it may (listener.max_concurrent_requests): retry shortly"
    )]
    Overloaded,
    #[error(
        "Passerelle holds as many request bodies in memory as it may (limits.max_inflight_body_bytes = {limit}): retry shortly"
    )]
    BodyMemoryFull { limit: usize },
    #[error(
        "client {client:?} is over its rate (clients.rate_per_second): retry in {retry_after} s"
    )]
    RateLimited { client: String, retry_after: u64 },
    #[error(
        "the audit database is unreachable and [audit] on_failure = \"refuse\": nothing is sent to the national services until every access can be recorded again"
    )]
    AuditUnavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ExchangeError> for ProxyError {
    fn from(e: ExchangeError) -> Self {
        match e {
            ExchangeError::Unreachable { upstream, reason } => {
                Self::UpstreamUnreachable { upstream, reason }
            }
            ExchangeError::EgressUnreachable { upstream, reason } => {
                Self::EgressProxyUnreachable { upstream, reason }
            }
            ExchangeError::EgressRefused { upstream, reason } => {
                Self::EgressProxyRefused { upstream, reason }
            }
            ExchangeError::Tls { upstream, reason } => Self::UpstreamTls { upstream, reason },
            ExchangeError::KeyUnavailable(reason) => Self::KeyUnavailable(reason),
            ExchangeError::KeyBusy(reason) => {
                tracing::warn!(%reason, "token key busy: request refused (Overloaded)");
                Self::Overloaded
            }
            ExchangeError::ServerRevoked { upstream, reason } => {
                Self::UpstreamCertificateRevoked { upstream, reason }
            }
            ExchangeError::RevocationUnknown { upstream, reason } => {
                Self::UpstreamRevocationUnknown { upstream, reason }
            }
            ExchangeError::Timeout {
                upstream,
                phase,
                seconds,
                sent,
            } => Self::UpstreamTimeout {
                upstream,
                phase,
                seconds,
                sent,
            },
            ExchangeError::ConnectionLost {
                upstream,
                when,
                reason,
                sent,
            } => Self::UpstreamConnectionLost {
                upstream,
                when,
                reason,
                sent,
            },
            ExchangeError::Internal(m) => Self::Internal(m),
        }
    }
}

impl ProxyError {
    /// The stable code, as `passerelle:<Code>` in the fault and in logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownRoute { .. } => "UnknownRoute",
            Self::MethodNotAllowed { .. } => "MethodNotAllowed",
            Self::UnknownService(_) => "UnknownService",
            Self::BadPath(_) => "BadPath",
            Self::PathNotAllowed { .. } => "PathNotAllowed",
            Self::ServiceNotConfigured(_) => "ServiceNotConfigured",
            Self::UnknownDmpService(_) => "UnknownDmpService",
            Self::MissingCredentials => "MissingCredentials",
            Self::UnknownClient => "UnknownClient",
            Self::SourceNotAllowed { .. } => "SourceNotAllowed",
            Self::TenantRequired { .. } => "TenantRequired",
            Self::TenantNotAllowed { .. } => "TenantNotAllowed",
            Self::ServiceNotAllowed { .. } => "ServiceNotAllowed",
            Self::BodyTooLarge { .. } => "BodyTooLarge",
            Self::BodyRead(_) => "BodyRead",
            Self::BodyTimeout { .. } => "BodyTimeout",
            Self::UnsupportedMediaType(_) | Self::NotJson(_) => "UnsupportedMediaType",
            Self::MalformedJson(_) => "MalformedJson",
            Self::InvalidField { .. } => "InvalidField",
            Self::BadMultipart(_) => "BadMultipart",
            Self::MalformedXml(_) => "MalformedXml",
            Self::DtdForbidden(_) => "DtdForbidden",
            Self::NotSoap(_) => "NotSoap",
            Self::MissingAction => "MissingAction",
            Self::DuplicateHeader { .. } => "DuplicateHeader",
            Self::ActionNotAllowed { .. } => "ActionNotAllowed",
            Self::OperationMismatch { .. } => "OperationMismatch",
            Self::BadAddressing(_) => "BadAddressing",
            Self::MissingIdentity => "MissingIdentity",
            Self::BadIdentity(_) => "BadIdentity",
            Self::ForeignStructure { .. } => "ForeignStructure",
            Self::GeographicRequired { .. } => "GeographicRequired",
            Self::StructureMismatch { .. } => "StructureMismatch",
            Self::BadSubmission(_) => "BadSubmission",
            Self::LotAlreadySigned => "LotAlreadySigned",
            Self::InsiModeRequired { .. } => "InsiModeRequired",
            Self::BadInsiRequest(_) => "BadInsiRequest",
            Self::CertificateMissing { .. } => "CertificateMissing",
            Self::CertificateExpired { .. } => "CertificateExpired",
            Self::CertificateRevoked { .. } => "CertificateRevoked",
            Self::CertificateRevocationUnknown { .. } => "CertificateRevocationUnknown",
            Self::CertificateNotYetValid { .. } => "CertificateNotYetValid",
            Self::SigningFailed(_) => "SigningFailed",
            Self::KeyUnavailable(_) => "KeyUnavailable",
            Self::UpstreamUnreachable { .. } => "UpstreamUnreachable",
            Self::EgressProxyUnreachable { .. } => "EgressProxyUnreachable",
            Self::EgressProxyRefused { .. } => "EgressProxyRefused",
            Self::UpstreamTls { .. } => "UpstreamTls",
            Self::UpstreamCertificateRevoked { .. } => "UpstreamCertificateRevoked",
            Self::UpstreamRevocationUnknown { .. } => "UpstreamRevocationUnknown",
            Self::UpstreamTimeout { .. } => "UpstreamTimeout",
            Self::UpstreamConnectionLost { .. } => "UpstreamConnectionLost",
            Self::InsiFault(_) => "InsiFault",
            Self::UpstreamAnswer { .. } => "UpstreamAnswer",
            Self::Overloaded | Self::BodyMemoryFull { .. } => "Overloaded",
            Self::RateLimited { .. } => "RateLimited",
            Self::AuditUnavailable => "AuditUnavailable",
            Self::Internal(_) => "Internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownRoute { .. } | Self::UnknownDmpService(_) | Self::UnknownService(_) => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::ServiceNotConfigured(_) => StatusCode::NOT_FOUND,
            Self::MissingCredentials | Self::UnknownClient => StatusCode::UNAUTHORIZED,
            Self::SourceNotAllowed { .. }
            | Self::TenantNotAllowed { .. }
            | Self::ServiceNotAllowed { .. }
            | Self::ForeignStructure { .. }
            | Self::GeographicRequired { .. }
            | Self::StructureMismatch { .. }
            | Self::PathNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) | Self::NotJson(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::LotAlreadySigned => StatusCode::CONFLICT,
            Self::TenantRequired { .. }
            | Self::BodyRead(_)
            | Self::BadMultipart(_)
            | Self::MalformedXml(_)
            | Self::DtdForbidden(_)
            | Self::NotSoap(_)
            | Self::MissingAction
            | Self::DuplicateHeader { .. }
            | Self::ActionNotAllowed { .. }
            | Self::OperationMismatch { .. }
            | Self::BadAddressing(_)
            | Self::MissingIdentity
            | Self::BadIdentity(_)
            | Self::BadSubmission(_)
            | Self::InsiModeRequired { .. }
            | Self::BadInsiRequest(_)
            | Self::BadPath(_)
            | Self::MalformedJson(_)
            | Self::InvalidField { .. } => StatusCode::BAD_REQUEST,
            Self::CertificateMissing { .. }
            | Self::CertificateExpired { .. }
            | Self::CertificateRevoked { .. }
            | Self::CertificateRevocationUnknown { .. }
            | Self::CertificateNotYetValid { .. }
            | Self::KeyUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::SigningFailed(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::UpstreamUnreachable { .. }
            | Self::EgressProxyUnreachable { .. }
            | Self::EgressProxyRefused { .. }
            | Self::UpstreamTls { .. }
            | Self::UpstreamCertificateRevoked { .. }
            | Self::UpstreamRevocationUnknown { .. }
            | Self::UpstreamConnectionLost { .. }
            | Self::UpstreamAnswer { .. } => StatusCode::BAD_GATEWAY,
            // The service is down for a while: 503; it refused the request: 502.
            Self::InsiFault(f) if f.retryable() => StatusCode::SERVICE_UNAVAILABLE,
            Self::InsiFault(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Overloaded | Self::BodyMemoryFull { .. } | Self::AuditUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The `outcome` label of `passerelle_requests_total`: the code, except for a fault
    /// of the service itself, `upstream_fault` whether it was passed back (SOAP) or read
    /// (JSON API).
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::InsiFault(_) => "upstream_fault",
            _ => self.code(),
        }
    }

    /// Whether the request reached the national service.
    pub fn sent(&self) -> Sent {
        match self {
            Self::UpstreamTimeout { sent, .. } | Self::UpstreamConnectionLost { sent, .. } => *sent,
            Self::InsiFault(_) | Self::UpstreamAnswer { .. } => Sent::Yes,
            _ => Sent::No,
        }
    }

    /// The configured client a refusal of access control identified (its credential
    /// matched, its source, tenant or service did not).
    pub fn identified_client(&self) -> Option<&str> {
        match self {
            Self::SourceNotAllowed { client, .. }
            | Self::TenantRequired { client }
            | Self::TenantNotAllowed { client, .. }
            | Self::ServiceNotAllowed { client, .. } => Some(client),
            _ => None,
        }
    }

    /// Whether sending the same request again, unchanged, may succeed: Passerelle or the
    /// service is busy or down for a while, and nothing was sent (or INSi said it was
    /// temporarily unavailable). A request to fix, a certificate to renew, or one that
    /// may have reached the service is not.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Overloaded
            | Self::BodyMemoryFull { .. }
            | Self::RateLimited { .. }
            | Self::AuditUnavailable
            | Self::KeyUnavailable(_) => true,
            Self::UpstreamUnreachable { .. } => true,
            Self::UpstreamTimeout { sent, .. } | Self::UpstreamConnectionLost { sent, .. } => {
                *sent == Sent::No
            }
            Self::InsiFault(f) => f.retryable(),
            _ => false,
        }
    }

    /// The field of the request at fault, for a JSON answer.
    fn field(&self) -> Option<&str> {
        match self {
            Self::InvalidField { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Whether access control refused the caller (who, rather than what was sent).
    pub fn is_access_refusal(&self) -> bool {
        matches!(
            self,
            Self::MissingCredentials
                | Self::UnknownClient
                | Self::SourceNotAllowed { .. }
                | Self::TenantRequired { .. }
                | Self::TenantNotAllowed { .. }
                | Self::ServiceNotAllowed { .. }
        )
    }

    /// The national service could not be reached or did not answer: not a refusal of
    /// the request.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            Self::UpstreamUnreachable { .. }
                | Self::EgressProxyUnreachable { .. }
                | Self::EgressProxyRefused { .. }
                | Self::UpstreamTls { .. }
                | Self::UpstreamCertificateRevoked { .. }
                | Self::UpstreamRevocationUnknown { .. }
                | Self::UpstreamTimeout { .. }
                | Self::UpstreamConnectionLost { .. }
        )
    }

    /// Sender faults are the caller's to fix; Receiver faults are ours or upstream's.
    fn soap_code(&self) -> FaultCode {
        if self.status().is_client_error() {
            FaultCode::Sender
        } else {
            FaultCode::Receiver
        }
    }

    /// What the reason adds about resending.
    fn advice(&self) -> &'static str {
        match self {
            // INSi searches only read: the question is whether waiting helps.
            Self::InsiFault(f) if f.retryable() => {
                return " The search may be sent again later.";
            }
            Self::InsiFault(_) => {
                return " Sending it again unchanged will not help: the codes name the cause.";
            }
            _ => {}
        }
        match (self.sent(), self.status().is_server_error()) {
            (Sent::Yes, _) => {
                " The request WAS sent: the service may have processed it. For a submission or an update, check its outcome (e.g. TD3.1) before sending it again."
            }
            (Sent::No, true) => " Nothing was sent upstream: the request can be sent again.",
            (Sent::No, false) => " Nothing was sent upstream.",
        }
    }

    /// The answer in the route family's format.
    pub fn to_answer(&self, request_id: &str, format: AnswerFormat) -> Response<ProxyBody> {
        match format {
            AnswerFormat::Soap => self.to_response(request_id),
            AnswerFormat::Json => self.to_json_response(request_id),
        }
    }

    /// The JSON answer: `{"error": {"code", "message", "field"?, "request_id",
    /// "sent_upstream", "retryable", "cnam"?}}`.
    pub fn to_json_response(&self, request_id: &str) -> Response<ProxyBody> {
        let mut error = serde_json::json!({
            "code": self.code(),
            "message": format!("{}.{}", self, self.advice()),
            "request_id": request_id,
            "sent_upstream": self.sent() == Sent::Yes,
            "retryable": self.retryable(),
        });
        if let Some(field) = self.field() {
            error["field"] = serde_json::Value::String(field.to_string());
        }
        if let Self::InsiFault(f) = self {
            error["cnam"] = f.to_json();
        }
        let body = serde_json::json!({ "error": error }).to_string();
        let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
        self.finish(&mut response, request_id, "application/json");
        response
    }

    /// Status and headers every refusal carries, whatever its format.
    fn finish(&self, response: &mut Response<ProxyBody>, request_id: &str, media: &'static str) {
        *response.status_mut() = self.status();
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(media));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            response.headers_mut().insert("x-request-id", v);
        }
        let retry_after = match self {
            Self::Overloaded | Self::BodyMemoryFull { .. } => Some(1),
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            // INSi "temporarily unavailable": a short pause before the same request.
            Self::InsiFault(f) if f.retryable() => Some(5),
            Self::AuditUnavailable => Some(5),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"passerelle\""),
            );
        }
        if let Self::MethodNotAllowed { allowed, .. } = self
            && let Ok(v) = HeaderValue::from_str(allowed)
        {
            response.headers_mut().insert(http::header::ALLOW, v);
        }
    }

    /// The SOAP 1.2 fault answer.
    pub fn to_response(&self, request_id: &str) -> Response<ProxyBody> {
        let p = |local: &'static str| Element::new(Some("passerelle"), local);
        let detail = p("Error")
            .ns(Some("passerelle"), FAULT_NS)
            .child(p("Code").text(self.code()))
            .child(p("RequestId").text(request_id.to_string()))
            .child(p("SentUpstream").text(match self.sent() {
                Sent::No => "false",
                Sent::Yes => "true",
            }));
        let xml = passerelle_soap::fault_envelope(&Fault {
            code: self.soap_code(),
            subcode: Some((FAULT_NS, "passerelle", self.code().to_string())),
            reason: format!("{}.{}", self, self.advice()),
            detail: Some(detail),
        });
        let mut response = Response::new(ProxyBody::full(Bytes::from(xml)));
        self.finish(
            &mut response,
            request_id,
            "application/soap+xml; charset=utf-8",
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_code_and_whether_sent() {
        let e = ProxyError::UpstreamConnectionLost {
            upstream: "dmp/repository".into(),
            when: "before the response",
            reason: "reset".into(),
            sent: Sent::Yes,
        };
        let r = e.to_response("req-1");
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        let ProxyBody::Full(body) = r.into_body() else {
            panic!("full body expected")
        };
        let text = String::from_utf8(body.to_vec()).expect("utf8");
        passerelle_signing::xml::parse(&text).expect("well-formed");
        assert!(
            text.contains("<soap:Value>soap:Receiver</soap:Value>"),
            "{text}"
        );
        assert!(text.contains("passerelle:UpstreamConnectionLost"), "{text}");
        assert!(text.contains("<passerelle:SentUpstream>true</passerelle:SentUpstream>"));
        assert!(text.contains("WAS sent"), "{text}");
        let e = ProxyError::DtdForbidden("a DTD is not allowed".into());
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.soap_code(), FaultCode::Sender);
    }
}
