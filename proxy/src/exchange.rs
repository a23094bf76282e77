//! What one request is, typed: the route it took, who sent it, for which tenant, the
//! operation from a closed set, the identity that was signed, timings, and each request
//! it sent the national service (one, or several for a JSON INSi search). The pipeline
//! fills it phase by phase; the log line, the metrics and the audit trail are all
//! written from it, and from nothing else.

use std::fmt;
use std::time::Duration;

use passerelle_config::{ServiceMethod, TenantId};
use passerelle_signing::SignedIdentity;
use passerelle_soap::dmp::{DmpOperation, DmpService};

use crate::fault::ProxyError;
use crate::services::ServiceCall;
use crate::state::InsiMode;

/// A call of the INSi JSON API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsiApiCall {
    /// `POST /api/insi/search`: by identity traits (RECSANSVITALE).
    Search,
    /// `POST /api/insi/vitale`: by carte Vitale (RECVITALE).
    Vitale,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /dmp/<route>`: a DMP route of `[dmp.services]`, and the DMP service its path
    /// names (`None`: a path Passerelle does not know, passed through and never re-sent).
    Dmp {
        name: String,
        service: Option<DmpService>,
    },
    /// `POST /insi[/auto|/manu]`: INSi over SOAP, with the certificate the path asks for
    /// (`None`: the tenant's only one).
    Insi(Option<InsiMode>),
    /// The INSi JSON API.
    InsiApi(InsiApiCall),
    /// `GET /api/openapi.json`: the JSON API's description.
    OpenApi,
    /// `/svc/<name>/<path>`: a `[[services]]` entry, any method.
    Service(ServiceCall),
}

impl Route {
    /// The route of a request line, before any configuration is consulted. `path` is the
    /// request's path as sent (still percent-encoded), `query` its query string.
    pub fn parse(
        method: &http::Method,
        path: &str,
        query: Option<&str>,
    ) -> Result<Self, ProxyError> {
        let unknown = || ProxyError::UnknownRoute {
            method: method.to_string(),
            path: path.to_string(),
        };
        if let Some(rest) = path.strip_prefix("/svc/") {
            return ServiceCall::parse(method, rest, query).map(Self::Service);
        }
        let only = |allowed: http::Method, route: Self| {
            if *method == allowed {
                Ok(route)
            } else {
                Err(ProxyError::MethodNotAllowed {
                    method: method.to_string(),
                    route: path.to_string(),
                    allowed: allowed.to_string(),
                })
            }
        };
        match path {
            "/api/insi/search" => {
                return only(http::Method::POST, Self::InsiApi(InsiApiCall::Search));
            }
            "/api/insi/vitale" => {
                return only(http::Method::POST, Self::InsiApi(InsiApiCall::Vitale));
            }
            "/api/openapi.json" => return only(http::Method::GET, Self::OpenApi),
            _ => {}
        }
        if method != http::Method::POST {
            return Err(unknown());
        }
        let trimmed = path.trim_end_matches('/');
        if let Some(name) = trimmed.strip_prefix("/dmp/") {
            return if !name.is_empty() && !name.contains('/') {
                Ok(Self::Dmp {
                    name: name.to_string(),
                    service: None,
                })
            } else {
                Err(unknown())
            };
        }
        match trimmed {
            "/insi" => Ok(Self::Insi(None)),
            "/insi/auto" => Ok(Self::Insi(Some(InsiMode::Auto))),
            "/insi/manu" => Ok(Self::Insi(Some(InsiMode::Manu))),
            _ => Err(unknown()),
        }
    }
}

impl fmt::Display for Route {
    /// `dmp/<route>`, `insi` (over SOAP or JSON: one service), `openapi` or
    /// `svc/<name>`: the `service` of logs, metrics and the audit trail.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dmp { name, .. } => write!(f, "dmp/{name}"),
            Self::Insi(_) | Self::InsiApi(_) => f.write_str("insi"),
            Self::OpenApi => f.write_str("openapi"),
            Self::Service(call) => write!(f, "svc/{}", call.name),
        }
    }
}

/// The operation, from a closed set (metric labels never take client text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Operation {
    /// Not known yet (refused before the body was read).
    #[default]
    Unknown,
    Dmp(DmpOperation),
    /// An INSi operation: `rechercherInsAvecTraitsIdentite`, `rechercherInsAvecCarteVitale`
    /// or `other`.
    Insi(&'static str),
    /// A `[[services]]` request, by its (allowed) method.
    Service(ServiceMethod),
    /// An Action on a DMP path Passerelle does not know.
    Other,
}

impl Operation {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unknown => "",
            Self::Dmp(op) => op.name(),
            Self::Insi(op) => op,
            Self::Service(method) => method.as_str(),
            Self::Other => "other",
        }
    }
}

/// Time spent in each phase that matters to an operator.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// DMP: reading the request, identity and signatures (phases 5 and 6).
    pub signing: Duration,
    /// Upstream: from the first byte written to the answer's head (and body when short).
    pub upstream: Duration,
}

/// One request sent to the national service: one audit line each.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    /// `wsa:MessageID` it carried (empty for a generic service).
    pub message_id: String,
    /// HTTP status of the answer; `None` when there was none.
    pub upstream_status: Option<u16>,
    /// The fault code when the exchange itself failed (timeout, connection lost, ...).
    pub failure: Option<&'static str>,
    /// INSi: the INS the answer returned and its OID.
    pub returned_ins: Option<(String, String)>,
    /// Whether any of it may have reached the service (what the client's fault says).
    pub sent: bool,
}

impl Attempt {
    /// `ok`, `upstream_fault` (the service answered an error), or the failure's code.
    pub fn outcome(&self) -> &'static str {
        match (self.failure, self.upstream_status) {
            (Some(code), _) => code,
            (None, Some(status)) if (200..300).contains(&status) => "ok",
            (None, _) => "upstream_fault",
        }
    }
}

/// One request, as the pipeline learnt it.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    pub request_id: String,
    /// The internal system's address.
    pub peer: Option<std::net::SocketAddr>,
    /// The `[[clients]]` name.
    pub client: Option<String>,
    pub tenant: Option<TenantId>,
    /// The `X-Passerelle-Tenant` header as the client sent it (bounded): what a refused
    /// attempt asked for, recorded when no tenant was granted.
    pub tenant_asked: Option<String>,
    pub route: Option<Route>,
    pub operation: Operation,
    /// `wsa:Action` as the internal system sent it (audit trail).
    pub action: Option<String>,
    /// `wsa:MessageID` as it went upstream.
    pub message_id: Option<String>,
    /// DMP: exactly the identity values that were signed.
    pub identity: Option<SignedIdentity>,
    /// ITI-41: the documents of the submission.
    pub documents: usize,
    /// Structure rules the policy let through with a warning (metric labels).
    pub structure_warnings: Vec<&'static str>,
    /// INSi: the certificate's OU, emitter of the contexts.
    pub insi_emetteur: Option<String>,
    /// INSi: the header blocks Passerelle added.
    pub insi_completed: Vec<&'static str>,
    /// INSi: the certificate used (automated or manual calls).
    pub insi_mode: Option<InsiMode>,
    /// A `[[services]]` request: the `org_auth` certificate's OU (audit trail).
    pub service_structure: Option<String>,
    /// The JSON INSi search: how many requests it sent.
    pub insi_attempts: usize,
    pub timings: Timings,
    /// Whether any byte may have reached the national service (audited when true).
    pub sent_upstream: bool,
    /// Each request sent upstream, in order (audited one line each).
    pub attempts: Vec<Attempt>,
}

impl Exchange {
    pub fn new(request_id: String) -> Self {
        Self {
            request_id,
            ..Self::default()
        }
    }

    /// `dmp/<route>`, `insi`, `openapi`, `svc/<name>`, or `unrouted`.
    pub fn service(&self) -> String {
        self.route
            .as_ref()
            .map_or_else(|| "unrouted".to_string(), Route::to_string)
    }

    /// The structure the exchange was made for: the signed `Identifiant_Structure`
    /// (DMP), the INSi certificate's OU, or the `org_auth` certificate's OU.
    pub fn structure(&self) -> &str {
        self.identity
            .as_ref()
            .map(|i| i.structure.as_str())
            .or(self.insi_emetteur.as_deref())
            .or(self.service_structure.as_deref())
            .unwrap_or("")
    }
}
