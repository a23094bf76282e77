//! `mock-dmp`: the mock DMP web services over mutual TLS, with an admin port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use passerelle_mocks::faults;

/// Mock DMP (`/si-dmp-server/v2/services/{registry,repository,patients,habilitations,PatientSpecific}`):
/// requires a client certificate chained to the ORG intermediate; checks the VIHF
/// (signature, Issuer = TLS subject, structure, mode, attributes, IssueInstant) and the
/// WS-Addressing Action; ITI-41 with lot signature, ITI-18, ITI-43, ITI-57 over an
/// in-memory registry; canned HL7v3 acknowledgements.
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
    /// Faults at start, JSON by operation (`*` for all).
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-dmp: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let pki = passerelle_certs_test::Manifest::load(&cli.pki).map_err(|e| {
        format!(
            "{e} (run passerelle-certs-test --out {} first)",
            cli.pki.display()
        )
    })?;
    let initial = match &cli.faults {
        Some(path) => faults::load_file(path)?,
        None => Default::default(),
    };
    let (running, _) =
        passerelle_mocks::start_dmp(&pki, cli.listen, cli.admin, faults::Faults::new(initial))
            .await
            .map_err(|e| e.to_string())?;
    println!(
        "mock-dmp: https://{}/si-dmp-server/v2/services/ (admin http://{})",
        running.address, running.admin_address
    );
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())
}
