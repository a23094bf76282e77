//! Mock national services for tests, benchmarks and the sandbox: they refuse what the
//! real services refuse, and answer fast enough never to be the bottleneck.
//!
//! - [`tls`]: the HTTPS side: SERV SSL certificate, TLS 1.2 and 1.3, a client
//!   certificate required and chained to the configured ORG intermediate.
//! - [`server`]: the accept loop (HTTP/1.1 keep-alive over TLS) and the plain-HTTP admin
//!   port (`/health`, `/stats`, `/faults`).
//! - [`postgres`]: a real PostgreSQL cluster for the audit sink's tests (not a mock).
//! - [`faults`]: fault injection per operation (latency, error rate, reset after N
//!   bytes, slow body), set at start and changeable at runtime.
//! - [`stats`]: counts per operation and outcome, and the client certificate seen.
//! - [`soap`]: SOAP envelopes and SOAP 1.2 faults.
//! - [`insi`]: the mock INSi (`/lps`).
//! - [`echo`]: the mock echo service (`/echo/...`), a generic mutual-TLS server for the
//!   proxy's `[[services]]` routes: it answers with what it received.
//! - [`dmp`]: the mock DMP (`/si-dmp-server/v2/services/...`), with [`mtom`] for ITI-41/43,
//!   [`wsdl`] (its operations, read from the official WSDL annex) and [`xsd`] (libxml2
//!   schema validation).

pub mod dmp;
pub mod echo;
pub mod faults;
pub mod fixtures;
pub mod insi;
pub use passerelle_soap::mtom;
pub mod postgres;
pub mod server;
pub use passerelle_soap::envelope as soap;
pub mod stats;
pub mod tls;
pub mod wsdl;
pub mod xsd;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use passerelle_certs_test::Manifest;

/// Starts the mock DMP on the current tokio runtime with the material of a certs-test
/// PKI (SERV SSL leaf, ORG intermediate as client CA, test root as signature anchor,
/// tenants' geographic entities) and the DMP WSDL/XSD annex of `spec_dir`
/// (`../shared/spec/dmp`). Port 0 picks an ephemeral port.
pub async fn start_dmp(
    pki: &Manifest,
    spec_dir: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
    faults: faults::Faults,
) -> Result<(server::Running, Arc<dmp::MockDmp>), MockError> {
    start_dmp_retaining(pki, spec_dir, listen, admin, faults, dmp::DEFAULT_RETAIN).await
}

/// [`start_dmp`], keeping the last `retain` submission sets and exchanges
/// ([`dmp::DmpConfig::retain`]).
pub async fn start_dmp_retaining(
    pki: &Manifest,
    spec_dir: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
    faults: faults::Faults,
    retain: usize,
) -> Result<(server::Running, Arc<dmp::MockDmp>), MockError> {
    let org = pki.path(&pki.ca.org_intermediate);
    let tls = tls::server_config(
        &pki.path(&pki.server.chain),
        &pki.path(&pki.server.key),
        &org,
    )?;
    let root = pki.path(&pki.ca.root);
    let trust = passerelle_signing::TrustAnchors::from_files(&[&root], &[&org])
        .map_err(|e| MockError::Tls(e.to_string()))?;
    let geographic: HashMap<String, Vec<String>> = pki
        .tenants
        .iter()
        .map(|t| (t.structure_id.clone(), t.geographic_structure_ids.clone()))
        .collect();
    let service = Arc::new(dmp::MockDmp::new(dmp::DmpConfig {
        trust,
        geographic,
        max_clock_skew: Duration::from_secs(300),
        spec_dir: spec_dir.to_path_buf(),
        retain,
    })?);
    let running = server::start(service.clone(), tls, listen, admin, faults).await?;
    Ok((running, service))
}

/// Starts the mock INSi on the current tokio runtime with a certs-test PKI and the CNAM
/// XSDs of `xsd_dir` (`../shared/spec/insi/xsd`).
pub async fn start_insi(
    pki: &Manifest,
    xsd_dir: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
    faults: faults::Faults,
) -> Result<server::Running, MockError> {
    start_insi_stapling(pki, xsd_dir, listen, admin, faults, Vec::new()).await
}

/// The mock INSi, stapling `ocsp` (a DER OCSP response about its certificate; empty:
/// none) in its handshakes.
pub async fn start_insi_stapling(
    pki: &Manifest,
    xsd_dir: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
    faults: faults::Faults,
    ocsp: Vec<u8>,
) -> Result<server::Running, MockError> {
    let tls = tls::stapling_server_config(
        &pki.path(&pki.server.chain),
        &pki.path(&pki.server.key),
        &pki.path(&pki.ca.org_intermediate),
        ocsp,
    )?;
    let service = Arc::new(insi::MockInsi::new(xsd_dir.to_path_buf())?);
    server::start(service, tls, listen, admin, faults).await
}

/// Starts the mock echo service on the current tokio runtime with a certs-test PKI (its
/// SERV SSL leaf; clients must present a certificate of the ORG intermediate).
pub async fn start_echo(
    pki: &Manifest,
    listen: SocketAddr,
    admin: SocketAddr,
    faults: faults::Faults,
) -> Result<server::Running, MockError> {
    let tls = tls::server_config(
        &pki.path(&pki.server.chain),
        &pki.path(&pki.server.key),
        &pki.path(&pki.ca.org_intermediate),
    )?;
    server::start(Arc::new(echo::MockEcho), tls, listen, admin, faults).await
}

/// The body of a mock binary's `main`: runs `serve` on a multi-threaded runtime and
/// turns an error into a message on stderr and exit status 1.
pub fn run_binary(
    name: &str,
    serve: impl std::future::Future<Output = Result<(), String>>,
) -> std::process::ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
        .and_then(|rt| rt.block_on(serve));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM (`podman stop`, `docker stop`, systemd,
/// Kubernetes): how a mock binary is stopped.
pub async fn stop_signal() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted.map_err(|e| format!("SIGINT: {e}")),
        _ = terminate.recv() => Ok(()),
    }
}

#[cfg(test)]
mod signal_tests {
    /// SIGTERM ends the wait (tokio's handler replaces the default, which would kill
    /// this test process).
    #[tokio::test]
    async fn sigterm_stops() {
        // Installed here first: should the task not listen yet, SIGTERM still does not
        // kill the test process.
        let _guard = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        let waiting = tokio::spawn(super::stop_signal());
        // The task installs its listener when it first runs.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("stopped on SIGTERM")
            .expect("task");
        assert_eq!(stopped, Ok(()));
    }
}

/// Loads a certs-test PKI for a mock binary, and its faults file when given.
pub fn binary_setup(
    pki: &Path,
    faults: Option<&Path>,
) -> Result<(Manifest, faults::Faults), String> {
    let manifest = Manifest::load(pki).map_err(|e| {
        format!(
            "{e} (run passerelle-certs-test --out {} first)",
            pki.display()
        )
    })?;
    let initial = match faults {
        Some(path) => faults::load_file(path)?,
        None => Default::default(),
    };
    Ok((manifest, faults::Faults::new(initial)))
}

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
