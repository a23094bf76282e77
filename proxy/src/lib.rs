//! Passerelle's server: SOAP traffic from the hospital's internal systems, signed where
//! it must be, forwarded over mutual TLS with exactly the right certificate; a JSON API
//! to INSi; and the other services reached with the establishment's ORG certificate.
//!
//! - [`server`]: the listeners (internal and admin) and their connections.
//! - [`listener`]: client connections: the cap, idle and first-request timeouts, eviction.
//! - [`pipeline`]: one request from arrival to answer, phase by phase, in order.
//! - [`exchange`]: what a request is, typed (route, client, tenant, operation, identity
//!   signed, timings); log, metrics and audit are written from it.
//! - [`access`]: which internal client may act for which tenant and service (default deny).
//! - [`message`]: the request as a SOAP message (envelope, MTOM parts, header edits).
//! - [`dmp`]: identity (VIHF re-signed or built), structure check, WS-Addressing, the lot
//!   signature of ITI-41.
//! - [`insi`]: INSi certificate selection and the contexts the caller left out.
//! - [`api`]: the JSON API (`/api/insi/search`, `/api/insi/vitale`, `/api/openapi.json`):
//!   typed requests, the first-name strategy, INSi's answers read into JSON.
//! - [`services`]: the `[[services]]` routes (`/svc/<name>/<path>`): path, method and
//!   headers checked, the request for the tenant's `org_auth` pool.
//! - [`upstream`]: per (tenant, service, role) mutual-TLS connection pools.
//! - [`probe`]: `passerelle check --online`, one TLS handshake per tenant certificate and
//!   upstream, each failure named by the setting to fix.
//! - [`state`]: everything above, built once from the configuration.
//! - [`runtime`]: the state in force (swapped whole on reload), limits, metrics, audit.
//! - [`crl`]: `[trust.crl_download]`: CRLs fetched, verified and kept fresh.
//! - [`ocsp`]: `[trust.ocsp]`: our own certificates' status asked to their responder.
//! - [`fetch`]: plain HTTP for CRLs and OCSP, direct or through `[egress]`.
//! - [`schedule`]: their timing (nextUpdate, backoff).
//! - [`audit`]: the audit trail, one JSON line per upstream exchange.
//! - [`capture`]: the homologation capture (`[capture]`): requests and answers of listed
//!   clients written to private files, until a set time.
//! - [`metrics`]: counters and histograms, in Prometheus text.
//! - [`fault`]: every refusal and its SOAP 1.2 fault or JSON error, in one place.
//! - [`body`]: request and response bodies.
//! - [`sanitize`]: client text made safe to log.

pub mod access;
pub mod api;
pub mod audit;
pub mod body;
pub mod capture;
pub mod crl;
pub mod dmp;
pub mod egress;
pub mod exchange;
pub mod fault;
pub mod fetch;
pub mod insi;
pub mod listener;
pub mod message;
pub mod metrics;
pub mod ocsp;
pub mod ocsp_answer;
pub mod pipeline;
pub mod probe;
pub mod runtime;
pub mod sanitize;
pub mod schedule;
pub mod server;
pub mod server_ocsp;
pub mod services;
pub mod state;
pub mod tokens;
pub mod upstream;

pub use runtime::Proxy;
pub use server::{RunningProxy, start};
pub use state::ProxyState;
