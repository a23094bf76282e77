//! What one request is, typed: the route it took, who sent it, for which tenant, the
//! operation from a closed set, the identity that was signed, timings, and whether it
//! reached the national service. The pipeline fills it phase by phase; the log line,
//! the metrics and the audit trail are all written from it, and from nothing else.

use std::fmt;
use std::time::Duration;

use passerelle_config::TenantId;
use passerelle_signing::SignedIdentity;
use passerelle_soap::dmp::{DmpOperation, DmpService};

use crate::state::InsiMode;

/// Where a request goes: `POST /dmp/<route>` or `POST /insi[/auto|/manu]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A DMP route of `[dmp.services]`, and the DMP service its path names (`None`: a
    /// path Passerelle does not know, passed through and never re-sent).
    Dmp {
        name: String,
        service: Option<DmpService>,
    },
    /// INSi, with the certificate the path asks for (`None`: the tenant's only one).
    Insi(Option<InsiMode>),
}

impl Route {
    /// The route of a path, before any configuration is consulted.
    pub fn parse(method: &http::Method, path: &str) -> Option<Self> {
        if method != http::Method::POST {
            return None;
        }
        let path = path.trim_end_matches('/');
        if let Some(name) = path.strip_prefix("/dmp/") {
            return (!name.is_empty() && !name.contains('/')).then(|| Self::Dmp {
                name: name.to_string(),
                service: None,
            });
        }
        match path {
            "/insi" => Some(Self::Insi(None)),
            "/insi/auto" => Some(Self::Insi(Some(InsiMode::Auto))),
            "/insi/manu" => Some(Self::Insi(Some(InsiMode::Manu))),
            _ => None,
        }
    }
}

impl fmt::Display for Route {
    /// `dmp/<route>` or `insi`: the `service` of logs, metrics and the audit trail.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dmp { name, .. } => write!(f, "dmp/{name}"),
            Self::Insi(_) => f.write_str("insi"),
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
            Self::Other => "other",
        }
    }
}

/// Time spent in each phase that matters to an operator.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Parsing, identity and signatures (blocking pool).
    pub signing: Duration,
    /// Upstream: from the first byte written to the answer's head (and body when short).
    pub upstream: Duration,
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
    /// INSi: the INS the service returned and its OID (audit trail only).
    pub returned_ins: Option<(String, String)>,
    pub timings: Timings,
    /// Whether any byte may have reached the national service (audited when true).
    pub sent_upstream: bool,
    pub upstream_status: Option<u16>,
}

impl Exchange {
    pub fn new(request_id: String) -> Self {
        Self {
            request_id,
            ..Self::default()
        }
    }

    /// `dmp/<route>`, `insi`, or `unrouted`.
    pub fn service(&self) -> String {
        self.route
            .as_ref()
            .map_or_else(|| "unrouted".to_string(), Route::to_string)
    }

    /// The structure the exchange was made for: the signed `Identifiant_Structure`
    /// (DMP) or the INSi certificate's OU.
    pub fn structure(&self) -> &str {
        self.identity
            .as_ref()
            .map(|i| i.structure.as_str())
            .or(self.insi_emetteur.as_deref())
            .unwrap_or("")
    }
}
