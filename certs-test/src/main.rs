//! `passerelle-certs-test`: writes a test PKI shaped like IGC-Santé TEST (see the library docs).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use passerelle_certs_test::{PkiOptions, generate};

/// Write a test PKI shaped like the IGC-Santé TEST hierarchy: root, ORG and server
/// intermediates, per-tenant ORG AUTH_CLI / ORG SIGN / INSI-AUTO / INSI-MANU leaves,
/// SERV SSL leaves for the mock services, negative fixtures, and a sandbox passerelle.toml.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Output directory (created if absent).
    #[arg(long)]
    out: PathBuf,
    /// Number of legal entities (tenants), 1 to 26.
    #[arg(long, default_value_t = 2)]
    tenants: usize,
    /// Extra DNS name or IP address for the mock servers' certificate (repeatable).
    #[arg(long = "server-name", value_name = "NAME")]
    server_names: Vec<String>,
    /// Regenerate even when matching material already exists.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let started = std::time::Instant::now();
    let options = PkiOptions {
        out: cli.out,
        tenants: cli.tenants,
        server_names: cli.server_names,
        force: cli.force,
    };
    match generate(&options) {
        Ok(manifest) => {
            println!(
                "test PKI ready in {} ({} tenants, {} bad fixtures, {:.1}s)",
                manifest.dir.display(),
                manifest.tenants.len(),
                manifest.bad.len(),
                started.elapsed().as_secs_f64()
            );
            println!("  root:    {}", manifest.path(&manifest.ca.root).display());
            println!("  config:  {}", manifest.path(&manifest.config).display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("passerelle-certs-test: {e}");
            ExitCode::FAILURE
        }
    }
}
