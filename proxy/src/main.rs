//! `passerelle`: the proxy's command line. Each subcommand lives in [`cli`].

mod cli;

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
    /// Validate a configuration and every certificate it names; exit 1 on any error.
    Check(cli::check::CheckArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check(args) => cli::check::run(&args),
    }
}
