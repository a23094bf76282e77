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
pub struct VerifyArgs {
    #[command(flatten)]
    input: Input,
    /// The SHA-256 the newest record must have (a head logged as `audit chain head`):
    /// records cut from the end are then found too.
    #[arg(long, value_name = "HEX")]
    expect_head: Option<String>,
    /// The first record must start the trail (`prev_sha256` of 64 zeros): records cut
    /// from the start, or files left out, are then found too.
    #[arg(long)]
    expect_genesis: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// What to check: files, or the configured trail.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct Input {
    /// Trail files, oldest first.
    files: Vec<PathBuf>,
    /// The configuration whose `[audit] path` to check, with its rotated files.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub fn run(command: &AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify(args) => verify(args),
    }
}

fn verify(args: &VerifyArgs) -> ExitCode {
    let files = match &args.input.config {
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
        None => args.input.files.clone(),
    };
    let mut result = match audit::verify(&files) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot read the trail: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Nothing to check is not a trail that holds.
    let mut problems = Vec::new();
    if result.records + result.unchained == 0 {
        problems.push("no record found".to_string());
    }
    if let Some(expected) = &args.expect_head
        && result.broken.is_none()
        && !expected.eq_ignore_ascii_case(&result.head)
    {
        problems.push(format!(
            "the newest record's hash is {}, not the expected head {expected}: records are missing at the end (or more were written since)",
            result.head
        ));
    }
    if args.expect_genesis && !result.from_genesis && result.records > 0 {
        problems.push(
            "the first record does not start the trail: records or files are missing at the start"
                .into(),
        );
    }
    let intact = result.broken.is_none() && problems.is_empty();
    if result.broken.is_none()
        && let Some(first) = problems.first()
    {
        result.broken = Some(audit::Broken {
            file: files.last().cloned().unwrap_or_default(),
            line: result.records,
            request_id: String::new(),
            reason: first.clone(),
        });
    }
    if args.json {
        let value = serde_json::json!({
            "files": files,
            "records": result.records,
            "from_genesis": result.from_genesis,
            "unchained": result.unchained,
            "head_sha256": result.head,
            "intact": intact,
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
                "{} record(s) in {} file(s): chain intact{}{}; head {}",
                result.records,
                files.len(),
                if result.from_genesis {
                    ", from the trail's first record"
                } else {
                    " (the first file does not start the trail)"
                },
                if result.unchained > 0 {
                    format!(
                        ", after {} line(s) written before the chain existed",
                        result.unchained
                    )
                } else {
                    String::new()
                },
                result.head
            ),
            Some(b) => println!("chain BROKEN after {} good record(s): {b}", result.records),
        }
    }
    if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
