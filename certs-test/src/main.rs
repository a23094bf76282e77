//! `passerelle-certs-test`: writes a test PKI shaped like IGC-Santé TEST (see the library
//! docs); `sign-csr` makes its ORG intermediate sign a CSR, as the IGC-Santé portal would.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use passerelle_certs_test::{
    CrlIssuer, CrlOptions, CsrProfile, IssuerChoiceArg, OutputFormat, PkiOptions, SignCsrOptions,
    generate, sign_csr, write_crl,
};

/// Write a test PKI shaped like the IGC-Santé TEST hierarchy: root, ORG and server
/// intermediates, per-tenant ORG AUTH_CLI / ORG SIGN / INSI-AUTO / INSI-MANU leaves,
/// SERV SSL leaves for the mock services, negative fixtures, and a sandbox passerelle.toml.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    generate: GenerateArgs,
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// Output directory (created if absent).
    #[arg(long)]
    out: Option<PathBuf>,
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Act as the test CA: sign a CSR (e.g. from `passerelle csr`) with the PKI's ORG
    /// intermediate, under the ORG AUTH_CLI or ORG SIGN profile.
    SignCsr(SignCsrArgs),
    /// Write a CRL of the PKI's ORG intermediate (or of a throwaway CA with the same
    /// names): the serials revoked, its times and number chosen.
    Crl(CrlArgs),
}

#[derive(Debug, clap::Args)]
struct CrlArgs {
    /// The test PKI directory (as written by `--out`).
    #[arg(long, value_name = "DIR")]
    pki: PathBuf,
    /// The CRL to write: PEM, or DER when the name ends in `.der`.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// A serial to revoke, hexadecimal (repeatable).
    #[arg(long = "revoke", value_name = "SERIAL")]
    revoked: Vec<String>,
    /// thisUpdate, seconds from now.
    #[arg(long, default_value_t = -60, allow_negative_numbers = true)]
    this_update: i64,
    /// nextUpdate, seconds from now (negative: a stale CRL).
    #[arg(long, default_value_t = 24 * 3600, allow_negative_numbers = true)]
    next_update: i64,
    /// The CRL number.
    #[arg(long, default_value_t = 2)]
    number: u64,
    /// `foreign`: a throwaway CA with the ORG intermediate's names (a bad signature);
    /// `root`: the root (another CA's CRL).
    #[arg(long, value_enum, default_value = "org")]
    issuer: CrlIssuer,
}

#[derive(Debug, clap::Args)]
struct SignCsrArgs {
    /// The test PKI directory (as written by `--out`).
    #[arg(long, value_name = "DIR")]
    pki: PathBuf,
    /// The CSR (PEM).
    #[arg(long, value_name = "FILE")]
    csr: PathBuf,
    /// The certificate to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// `auth`: ORG AUTH_CLI (dmp_auth, insi_auto, insi_manu, org_auth); `sign`: ORG SIGN (dmp_sign).
    #[arg(long, value_enum, default_value = "auth")]
    profile: CsrProfile,
    #[arg(long, value_enum, default_value = "pem")]
    format: OutputFormat,
    /// Also write the issuing intermediate (PEM) to this file.
    #[arg(long, value_name = "FILE")]
    chain_out: Option<PathBuf>,
    /// Validity in days.
    #[arg(long, default_value_t = 3 * 365, allow_negative_numbers = true)]
    days: i64,
    /// Start the validity this many days ago (more than --days: an expired certificate).
    #[arg(long, default_value_t = 0)]
    backdate_days: i64,
    /// Replace the CSR's CN (a wrong-CN delivery).
    #[arg(long, value_name = "NAME")]
    cn: Option<String>,
    /// Replace the CSR's OU (a wrong-structure delivery).
    #[arg(long, value_name = "STRUCTURE")]
    ou: Option<String>,
    /// `foreign`: a throwaway CA with the same names, outside the configured anchors.
    #[arg(long, value_enum, default_value = "org")]
    issuer: IssuerChoiceArg,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::SignCsr(a)) => {
            let options = SignCsrOptions {
                pki: a.pki,
                csr: a.csr,
                profile: a.profile,
                out: a.out.clone(),
                format: a.format,
                chain_out: a.chain_out,
                days: a.days,
                backdate_days: a.backdate_days,
                common_name: a.cn,
                organizational_unit: a.ou,
                issuer: a.issuer,
            };
            match sign_csr(&options) {
                Ok(signed) => {
                    println!(
                        "signed: serial {} subject {} -> {}",
                        signed.serial,
                        signed.subject,
                        a.out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("passerelle-certs-test sign-csr: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Crl(a)) => {
            let options = CrlOptions {
                pki: a.pki,
                out: a.out.clone(),
                revoked: a.revoked,
                this_update: a.this_update,
                next_update: a.next_update,
                number: a.number,
                issuer: a.issuer,
            };
            match write_crl(&options) {
                Ok(_) => {
                    println!("CRL number {} -> {}", options.number, a.out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("passerelle-certs-test crl: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => generate_pki(cli.generate),
    }
}

fn generate_pki(args: GenerateArgs) -> ExitCode {
    let Some(out) = args.out else {
        eprintln!(
            "passerelle-certs-test: --out DIR is required (or use a subcommand: sign-csr, crl)"
        );
        return ExitCode::FAILURE;
    };
    let started = std::time::Instant::now();
    let options = PkiOptions {
        out,
        tenants: args.tenants,
        server_names: args.server_names,
        force: args.force,
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
