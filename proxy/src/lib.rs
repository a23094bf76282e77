//! Passerelle's server: SOAP traffic from the hospital's internal systems, signed where
//! it must be, forwarded over mutual TLS with exactly the right certificate.
//!
//! - [`server`]: listeners, routes, one request from arrival to answer.
//! - [`access`]: which internal client may act for which tenant and service (default deny).
//! - [`message`]: the request as a SOAP message (envelope, MTOM parts, header edits).
//! - [`dmp`]: identity (VIHF re-signed or built), structure check, WS-Addressing, the lot
//!   signature of ITI-41.
//! - [`insi`]: INSi certificate selection and the contexts the caller left out.
//! - [`upstream`]: per (tenant, service, role) mutual-TLS connection pools.
//! - [`state`]: everything above, built once from the configuration.
//! - [`runtime`]: the state in force (swapped whole on reload), limits, metrics, audit.
//! - [`audit`]: the audit trail, one JSON line per upstream exchange.
//! - [`metrics`]: counters and histograms, in Prometheus text.
//! - [`fault`]: every refusal and its SOAP 1.2 fault, in one place.
//! - [`body`]: request and response bodies.

pub mod access;
pub mod audit;
pub mod body;
pub mod dmp;
pub mod fault;
pub mod insi;
pub mod message;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod state;
pub mod upstream;

pub use runtime::Proxy;
pub use server::{RunningProxy, start};
pub use state::ProxyState;
