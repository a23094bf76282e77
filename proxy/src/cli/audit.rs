//! `passerelle audit`: checks the trail's hash chain (see [`passerelle_proxy::audit`])
//! and reads it back, from either sink (`[audit] sink`, with `--config`) or from trail
//! files given by name.
//!
//! - `verify`: names the first record that breaks the chain; exit 1 when broken.
//! - `query`: the records of a patient, an actor, a tenant, a time range; as a table,
//!   JSON or CSV.
//! - `export`: the stored lines of a time range, chain included (an export of a
//!   contiguous range verifies on its own).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use passerelle_config::{AuditSink, PostgresAudit};
use passerelle_proxy::audit::{self, Place, Verified, postgres, query};

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of trail files (oldest first), or of the configured sink
    /// (file: its rotated files, oldest first, then the current one; PostgreSQL: the
    /// table).
    Verify(VerifyArgs),
    /// Records of a patient, an actor, a tenant or a time range ("who accessed this
    /// patient"), oldest first.
    Query(QueryArgs),
    /// The stored records of a time range as JSON lines, chain included.
    Export(ExportArgs),
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

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    input: Input,
    /// The patient's INS (15 characters).
    #[arg(long, value_name = "INS")]
    patient: Option<String>,
    /// The acting person's national id (VIHF NameID).
    #[arg(long, value_name = "ID")]
    actor: Option<String>,
    /// The tenant (legal entity) as configured.
    #[arg(long, value_name = "TENANT")]
    tenant: Option<String>,
    #[command(flatten)]
    range: Range,
    #[arg(long, value_enum, default_value = "table")]
    format: QueryFormat,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    input: Input,
    #[command(flatten)]
    range: Range,
    /// Write to this file (created 0600, never overwritten) instead of standard output.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// A time range: a date (midnight UTC) or an RFC 3339 time.
#[derive(Debug, clap::Args)]
struct Range {
    /// From this time on (included).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Before this time (excluded).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum QueryFormat {
    Table,
    Json,
    Csv,
}

/// What to read: files, or the configured sink.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct Input {
    /// Trail files, oldest first.
    files: Vec<PathBuf>,
    /// The configuration whose `[audit]` sink to read (the file trail with its rotated
    /// files, or the PostgreSQL table).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// The trail to read, resolved.
enum Source {
    Files(Vec<PathBuf>),
    Table(PostgresAudit),
}

impl Input {
    fn source(&self) -> Result<Source, String> {
        let Some(config) = &self.config else {
            return Ok(Source::Files(self.files.clone()));
        };
        let c = passerelle_config::load(config).map_err(|e| e.to_string())?;
        Ok(match c.audit.sink {
            AuditSink::File => {
                let mut files = audit::rotated_files(&c.audit.path);
                if c.audit.path.exists() {
                    files.push(c.audit.path.clone());
                }
                Source::Files(files)
            }
            AuditSink::Postgres(pg) => Source::Table(pg),
        })
    }
}

/// Runs `work` with a connection to the audit database (read only: no migration).
fn with_database<T>(
    pg: &PostgresAudit,
    work: impl AsyncFnOnce(&mut tokio_postgres::Client) -> Result<T, String>,
) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let mut client = postgres::connect(pg, || {})
            .await
            .map_err(|e| format!("audit database {}: {e}", pg.url))?;
        work(&mut client).await
    })
}

impl Range {
    fn parse(&self) -> Result<query::Filter, String> {
        let parse = |t: &Option<String>| t.as_deref().map(query::parse_time).transpose();
        Ok(query::Filter {
            since: parse(&self.since)?,
            until: parse(&self.until)?,
            ..query::Filter::default()
        })
    }
}

pub fn run(command: &AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Query(args) => read(
            &args.input,
            query::Filter {
                patient: args.patient.clone(),
                actor: args.actor.clone(),
                tenant: args.tenant.clone(),
                ..match args.range.parse() {
                    Ok(f) => f,
                    Err(e) => return fail(&e),
                }
            },
            match args.format {
                QueryFormat::Table => query::Format::Table,
                QueryFormat::Json => query::Format::Json,
                QueryFormat::Csv => query::Format::Csv,
            },
            None,
        ),
        AuditCommand::Export(args) => match args.range.parse() {
            Ok(filter) => read(
                &args.input,
                filter,
                query::Format::Jsonl,
                args.output.as_ref(),
            ),
            Err(e) => fail(&e),
        },
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::FAILURE
}

/// `query` and `export`: matching records to standard output or `output`.
fn read(
    input: &Input,
    filter: query::Filter,
    format: query::Format,
    output: Option<&PathBuf>,
) -> ExitCode {
    let source = match input.source() {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let out: Box<dyn Write> = match output {
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            // Patient data: private, and an existing file is not replaced by mistake.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(f) => Box::new(std::io::BufWriter::new(f)),
                Err(e) => return fail(&format!("{}: {e}", path.display())),
            }
        }
    };
    let mut printer = match query::Printer::new(out, format) {
        Ok(p) => p,
        Err(e) => return fail(&e.to_string()),
    };
    let result = match &source {
        Source::Files(files) => {
            query::scan_files(files, &filter, &mut |line, r| printer.record(line, r))
                .map_err(|e| e.to_string())
        }
        Source::Table(pg) => with_database(pg, async |client| {
            query::scan_table(client, &filter, &mut |line, r| printer.record(line, r))
                .await
                .map_err(|e| e.to_string())
        }),
    };
    if let Err(e) = result {
        return fail(&e);
    }
    match printer.finish() {
        Ok(n) => {
            eprintln!("{n} record(s)");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn verify(args: &VerifyArgs) -> ExitCode {
    let source = match args.input.source() {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let (mut result, what, last_place): (Verified, String, Place) = match &source {
        Source::Files(files) => match audit::verify(files) {
            Ok(r) => (
                r,
                format!("{} file(s)", files.len()),
                Place::File {
                    file: files.last().cloned().unwrap_or_default(),
                    line: 0,
                },
            ),
            Err(e) => return fail(&format!("cannot read the trail: {e}")),
        },
        Source::Table(pg) => {
            let checked = with_database(pg, async |client| {
                postgres::verify(client).await.map_err(|e| e.to_string())
            });
            match checked {
                Ok(r) => {
                    let seq = i64::try_from(r.records).unwrap_or(i64::MAX);
                    (r, format!("table {}", postgres::TABLE), Place::Row { seq })
                }
                Err(e) => return fail(&format!("cannot read the trail: {e}")),
            }
        }
    };
    if let Source::Table(pg) = &source
        && let Ok(n) = postgres::spooled_records(&pg.spool)
        && n > 0
    {
        eprintln!(
            "note: {n} record(s) of this replica wait in {} for the database (not checked here)",
            pg.spool.display()
        );
    }
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
        let place = match last_place {
            Place::File { file, .. } => Place::File {
                file,
                line: result.records,
            },
            row => row,
        };
        result.broken = Some(audit::Broken {
            place,
            request_id: String::new(),
            reason: first.clone(),
        });
    }
    if args.json {
        let value = serde_json::json!({
            "trail": what,
            "records": result.records,
            "from_genesis": result.from_genesis,
            "unchained": result.unchained,
            "head_sha256": result.head,
            "intact": intact,
            "broken": result.broken.as_ref().map(|b| {
                let mut v = serde_json::json!({
                    "at": b.place.to_string(),
                    "request_id": b.request_id,
                    "reason": b.reason,
                });
                match &b.place {
                    Place::File { file, line } => {
                        v["file"] = serde_json::json!(file);
                        v["line"] = serde_json::json!(line);
                    }
                    Place::Row { seq } => v["seq"] = serde_json::json!(seq),
                }
                v
            }),
        });
        println!("{value}");
    } else {
        match &result.broken {
            None => println!(
                "{} record(s) in {what}: chain intact{}{}; head {}",
                result.records,
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
