//! `mock-echo`: the mock echo service over mutual TLS, with an admin port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Mock echo service (`/echo/...`): requires a client certificate chained to the ORG
/// intermediate and answers every request with a JSON description of what it received
/// (client certificate subject, method, path, query, body).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Test PKI directory written by passerelle-certs-test (server certificate, ORG CA).
    #[arg(long, value_name = "DIR", default_value = "sandbox")]
    pki: PathBuf,
    /// Address of the HTTPS service.
    #[arg(long, default_value = "127.0.0.1:9445")]
    listen: SocketAddr,
    /// Address of the plain-HTTP admin port (GET /health, GET /stats, GET|PUT /faults).
    #[arg(long, default_value = "127.0.0.1:9545")]
    admin: SocketAddr,
    /// Faults at start, JSON by method (`*` for all), e.g. {"*": {"latency_ms": 20}}.
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,
}

fn main() -> ExitCode {
    passerelle_mocks::run_binary("mock-echo", run(Cli::parse()))
}

async fn run(cli: Cli) -> Result<(), String> {
    let (pki, faults) = passerelle_mocks::binary_setup(&cli.pki, cli.faults.as_deref())?;
    let running = passerelle_mocks::start_echo(&pki, cli.listen, cli.admin, faults)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "mock-echo: https://{}/echo/ (admin http://{})",
        running.address, running.admin_address
    );
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())
}
