//! `passerelle`: the proxy's command line. Each subcommand lives in [`cli`].

mod cli;

/// glibc's allocator spends a fifth of a pass-through request in contended
/// `malloc`/`free` (perf, INSi scenario); mimalloc's thread-local heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Outbound proxy from hospital information systems to the DMP and INSi national services.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve: the internal listener and the admin listener of the configuration.
    Run(cli::run::RunArgs),
    /// Validate a configuration and every certificate it names; exit 1 on any error.
    Check(cli::check::CheckArgs),
    /// Renewal, step 1: generate a key here (kept in the pending area next to the
    /// configuration, never printed) and print the CSR to upload on the IGC-Santé portal.
    Csr(cli::csr::CsrArgs),
    /// Renewal, step 2: check the delivered certificate (or PKCS#12) with every `check`
    /// rule, then replace the configured files atomically, keeping the previous set
    /// (`--rollback` restores it). The running proxy reloads on its file watch.
    Install(cli::install::InstallArgs),
    /// VIHF tokens.
    #[command(subcommand)]
    Vihf(cli::vihf::VihfCommand),
    /// Verify a VIHF or a lot signature with libxmlsec1; exit 1 with the reason if invalid.
    Verify(cli::verify::VerifyArgs),
    /// Bearer tokens for internal clients and the admin listener (only their SHA-256 is configured).
    #[command(subcommand)]
    Token(cli::token::TokenCommand),
    /// One GET to the admin listener (default /healthz), for container health checks:
    /// exit 0 on a 2xx answer, 1 otherwise.
    Health(cli::health::HealthArgs),
    /// The audit trail: check its hash chain.
    #[command(subcommand)]
    Audit(cli::audit::AuditCommand),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => cli::run::run(&args),
        Command::Check(args) => cli::check::run(&args),
        Command::Csr(args) => cli::csr::run(&args),
        Command::Install(args) => cli::install::run(&args),
        Command::Vihf(command) => cli::vihf::run(&command),
        Command::Verify(args) => cli::verify::run(&args),
        Command::Token(command) => cli::token::run(&command),
        Command::Health(args) => cli::health::run(&args),
        Command::Audit(command) => cli::audit::run(&command),
    }
}
