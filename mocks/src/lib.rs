//! Mock national services for tests, benchmarks and the sandbox: they refuse what the
//! real services refuse, and answer fast enough never to be the bottleneck.
//!
//! - [`tls`]: the HTTPS side: SERV SSL certificate, TLS 1.2 and 1.3, a client
//!   certificate required and chained to the configured ORG intermediate.
//! - [`server`]: the accept loop (HTTP/1.1 keep-alive over TLS) and the plain-HTTP admin
//!   port (`/health`, `/stats`, `/faults`).
//! - [`faults`]: fault injection per operation (latency, error rate, reset after N
//!   bytes, slow body), set at start and changeable at runtime.
//! - [`stats`]: counts per operation and outcome, and the client certificate seen.
//! - [`soap`]: SOAP envelopes and SOAP 1.2 faults.
//! - [`insi`]: the mock INSi (`/lps`).

pub mod faults;
pub mod insi;
pub mod server;
pub mod soap;
pub mod stats;
pub mod tls;

/// Why a mock could not start.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    #[error("{path}: {message}")]
    File {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("XML schema {path}: {message}")]
    Schema {
        path: std::path::PathBuf,
        message: String,
    },
}
