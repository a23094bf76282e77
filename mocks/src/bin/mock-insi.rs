//! `mock-insi`: the mock INSi service over mutual TLS, with an admin port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The same allocator as the proxy's and the mock DMP's (where glibc's `malloc`/`free`
/// took a quarter of the samples under the benchmark's load): the mocks share the
/// machine's cores with the proxy they measure.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Mock INSi (`/lps`): requires an INSI-AUTO or INSI-MANU client certificate chained to
/// the ORG intermediate, checks ContexteLPS / ContexteBAM / WS-Addressing, validates the
/// body against the CNAM XSDs, and answers from a built-in identity table.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Test PKI directory written by passerelle-certs-test (server certificate, ORG CA).
    #[arg(long, value_name = "DIR", default_value = "sandbox")]
    pki: PathBuf,
    /// Address of the HTTPS service.
    #[arg(long, default_value = "127.0.0.1:9444")]
    listen: SocketAddr,
    /// Address of the plain-HTTP admin port (GET /health, GET /stats, GET|PUT /faults).
    #[arg(long, default_value = "127.0.0.1:9544")]
    admin: SocketAddr,
    /// Folder of the CNAM INSi XSDs.
    #[arg(long, value_name = "DIR", default_value = "../shared/spec/insi/xsd")]
    xsd: PathBuf,
    /// Faults at start, JSON by operation (`*` for all), e.g.
    /// {"rechercherInsAvecTraitsIdentite": {"error_rate": 0.1}, "*": {"latency_ms": 20}}.
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,
}

fn main() -> ExitCode {
    passerelle_mocks::run_binary("mock-insi", run(Cli::parse()))
}

async fn run(cli: Cli) -> Result<(), String> {
    let (pki, faults) = passerelle_mocks::binary_setup(&cli.pki, cli.faults.as_deref())?;
    let running = passerelle_mocks::start_insi(&pki, &cli.xsd, cli.listen, cli.admin, faults)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "mock-insi: https://{}/lps (admin http://{})",
        running.address, running.admin_address
    );
    passerelle_mocks::stop_signal().await
}
