//! `passerelle audit verify`: checks the audit trail's hash chain (see
//! [`passerelle_proxy::audit`]) and names the first record that breaks it.
//!
//! Exit status: 0 when the chain holds, 1 when it is broken or a file cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

use passerelle_proxy::audit;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of trail files (oldest first), or of the configured trail
    /// (its rotated files, oldest first, then the current one).
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct VerifyArgs {
    /// Trail files, oldest first.
    files: Vec<PathBuf>,
    /// The configuration whose `[audit] path` to check, with its rotated files.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(command: &AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify(args) => verify(args),
    }
}

fn verify(args: &VerifyArgs) -> ExitCode {
    let files = match &args.config {
        Some(config) => match passerelle_config::load(config) {
            Ok(c) => {
                let mut files = audit::rotated_files(&c.audit.path);
                if c.audit.path.exists() {
                    files.push(c.audit.path.clone());
                }
                files
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        None => args.files.clone(),
    };
    let result = match audit::verify(&files) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot read the trail: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        let value = serde_json::json!({
            "files": files,
            "records": result.records,
            "from_genesis": result.from_genesis,
            "head_sha256": result.head,
            "intact": result.broken.is_none(),
            "broken": result.broken.as_ref().map(|b| serde_json::json!({
                "file": b.file,
                "line": b.line,
                "request_id": b.request_id,
                "reason": b.reason,
            })),
        });
        println!("{value}");
    } else {
        match &result.broken {
            None => println!(
                "{} record(s) in {} file(s): chain intact{}; head {}",
                result.records,
                files.len(),
                if result.from_genesis {
                    ", from the trail's first record"
                } else {
                    " (the first file does not start the trail)"
                },
                result.head
            ),
            Some(b) => println!("chain BROKEN after {} good record(s): {b}", result.records),
        }
    }
    if result.broken.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
