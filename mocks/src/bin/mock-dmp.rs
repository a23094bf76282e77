//! `mock-dmp`: the mock DMP web services over mutual TLS, with an admin port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The same allocator as the proxy's: under the benchmark's load glibc's `malloc`/`free`
/// took a quarter of the mock DMP's samples (perf), and the mocks share the machine's cores
/// with the proxy they measure.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Mock DMP (`/si-dmp-server/v2/services/{registry,repository,patients,habilitations,PatientSpecific,patientCertif}`):
/// requires a client certificate chained to the ORG intermediate; checks WS-Addressing,
/// the Action and the SOAP Body against the official WSDL annex and XSDs, the VIHF
/// (signature, Issuer = TLS subject, structure, mode, attributes, IssueInstant); ITI-41
/// with lot signature (Manifest processed), ITI-18, ITI-43 over an in-memory registry;
/// schema-valid answers for the other operations.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Test PKI directory written by passerelle-certs-test (certificates, trust, tenants' geographic entities).
    #[arg(long, value_name = "DIR", default_value = "sandbox")]
    pki: PathBuf,
    /// Address of the HTTPS service.
    #[arg(long, default_value = "127.0.0.1:9443")]
    listen: SocketAddr,
    /// Address of the plain-HTTP admin port (GET /health, GET /stats, GET|PUT /faults).
    #[arg(long, default_value = "127.0.0.1:9543")]
    admin: SocketAddr,
    /// The DMP WSDL/XSD annex (its `wsdl/` and `schema/` folders): the operations the
    /// mock accepts and the schemas of their bodies.
    #[arg(long, value_name = "DIR", default_value = "../shared/spec/dmp")]
    spec: PathBuf,
    /// Faults at start, JSON by operation (`*` for all).
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,
    /// Submission sets (with their documents) and recorded requests kept in memory, the
    /// oldest dropped first: bounds the mock's memory, and its query answers, in long
    /// runs (the soak keeps a few).
    #[arg(long, value_name = "N", default_value_t = passerelle_mocks::dmp::DEFAULT_RETAIN)]
    retain: usize,
}

fn main() -> ExitCode {
    passerelle_mocks::run_binary("mock-dmp", run(Cli::parse()))
}

async fn run(cli: Cli) -> Result<(), String> {
    let (pki, faults) = passerelle_mocks::binary_setup(&cli.pki, cli.faults.as_deref())?;
    let (running, _) = passerelle_mocks::start_dmp_retaining(
        &pki, &cli.spec, cli.listen, cli.admin, faults, cli.retain,
    )
    .await
    .map_err(|e| e.to_string())?;
    println!(
        "mock-dmp: https://{}/si-dmp-server/v2/services/ (admin http://{})",
        running.address, running.admin_address
    );
    passerelle_mocks::stop_signal().await
}
