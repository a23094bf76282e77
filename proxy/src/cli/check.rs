//! `passerelle check`: one row per configured certificate, then every problem found;
//! with `--online`, then one TLS handshake per tenant certificate and upstream
//! ([`passerelle_proxy::probe`]).
//!
//! Each row says the certificate's revocation status and its source: the `[trust]
//! crls` file signed by its issuer that answered, or "not checked" when none does.
//!
//! Exit status: 0 when there is no error (warnings allowed), 1 when there is one
//! (an online probe that fails is one). With `[audit] sink = "postgres"`, `--online`
//! also connects to the audit database and reads its schema version and grants.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use passerelle_config::{AuditSink, CertificateReport, Inspection, Severity};
use passerelle_proxy::audit::{self, postgres::Probe as AuditProbe};
use passerelle_proxy::probe::{self, Outcome, Probe};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Then connect to each upstream (DMP, INSi) with each tenant's certificate: a TLS
    /// handshake, nothing sent; each failure is named by the setting to fix.
    #[arg(long)]
    online: bool,
}

/// The online part of the report.
enum Online {
    /// `--online` not asked.
    NotAsked,
    /// Not run: the configuration does not load.
    Skipped(&'static str),
    /// The handshakes, and the audit database's probe when `[audit] sink = "postgres"`.
    Probes(Vec<Probe>, Option<AuditProbe>),
}

impl Online {
    fn failed(&self) -> bool {
        match self {
            Self::NotAsked => false,
            Self::Skipped(_) => true,
            Self::Probes(p, audit) => {
                p.iter().any(|p| p.outcome == Outcome::Error)
                    || audit.as_ref().is_some_and(|a| !a.ok)
            }
        }
    }
}

pub fn run(args: &CheckArgs) -> ExitCode {
    let inspection = passerelle_config::inspect(&args.config);
    let online = match (&inspection.config, args.online) {
        (_, false) => Online::NotAsked,
        (None, true) => {
            Online::Skipped("the configuration has errors that stop Passerelle: fix them first")
        }
        (Some(config), true) => match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(async {
                let audit = async {
                    match &config.audit.sink {
                        AuditSink::Postgres(pg) => Some(audit::postgres::probe(pg).await),
                        AuditSink::File => None,
                    }
                };
                let (probes, audit) = tokio::join!(
                    probe::probe_all(config, time::OffsetDateTime::now_utc()),
                    audit
                );
                Online::Probes(probes, audit)
            }),
            Err(_) => Online::Skipped("cannot start the async runtime"),
        },
    };
    let text = if args.json {
        json_report(&args.config, &inspection, &online)
    } else {
        table_report(&args.config, &inspection) + &online_report(&online)
    };
    // A closed stdout (`| head`) is not an error of the configuration.
    let _ = std::io::stdout().write_all(text.as_bytes());
    if inspection.has_errors() || online.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn json_report(config: &std::path::Path, inspection: &Inspection, online: &Online) -> String {
    let mut value = serde_json::json!({
        "config": config,
        "ok": !inspection.has_errors() && !online.failed(),
        "certificates": inspection.certificates,
        "problems": inspection.problems,
    });
    match online {
        Online::NotAsked => {}
        Online::Skipped(why) => value["online"] = serde_json::json!({ "skipped": why }),
        Online::Probes(p, audit) => {
            value["online"] = serde_json::json!(p);
            if let Some(audit) = audit {
                value["audit_database"] = serde_json::json!(audit);
            }
        }
    }
    let mut text =
        serde_json::to_string_pretty(&value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    text.push('\n');
    text
}

const HEADERS: [&str; 10] = [
    "TENANT",
    "ROLE",
    "SUBJECT CN",
    "OU",
    "ISSUER CN",
    "SERIAL",
    "NOT AFTER",
    "DAYS",
    "REVOCATION",
    "STATUS",
];

fn row(c: &CertificateReport) -> [String; 10] {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    [
        c.tenant.clone(),
        c.role.to_string(),
        or_dash(&c.subject_cn),
        or_dash(&c.subject_ou),
        or_dash(&c.issuer_cn),
        or_dash(&c.serial),
        c.not_after
            .map(|t| format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()))
            .unwrap_or_else(|| "-".into()),
        c.days_left
            .map(|d| d.to_string())
            .unwrap_or_else(|| "-".into()),
        // "not checked" is said outright: no CRL configured is not "good".
        c.revocation
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "-".into()),
        c.status.to_string(),
    ]
}

fn table_report(config: &std::path::Path, inspection: &Inspection) -> String {
    let rows: Vec<[String; 10]> = inspection.certificates.iter().map(row).collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = format!("configuration: {}\n\n", config.display());
    if rows.is_empty() {
        out.push_str("no certificate could be read\n");
    } else {
        out.push_str(&line(&HEADERS.map(String::from)));
        for r in &rows {
            out.push_str(&line(r));
        }
    }
    let errors = inspection
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    let warnings = inspection.problems.len() - errors;
    if !inspection.problems.is_empty() {
        out.push_str("\nproblems:\n");
        for p in &inspection.problems {
            out.push_str(&format!("  {p}\n"));
        }
    }
    out.push_str(&format!(
        "\n{} certificate(s), {errors} error(s), {warnings} warning(s): {}\n",
        rows.len(),
        if errors == 0 {
            "configuration OK"
        } else {
            "configuration REFUSED"
        }
    ));
    out
}

/// The online probes: one line each, then the failures with the setting to fix.
fn online_report(online: &Online) -> String {
    let (probes, audit) = match online {
        Online::NotAsked => return String::new(),
        Online::Skipped(why) => return format!("\nonline checks not run: {why}\n"),
        Online::Probes(p, audit) => (p, audit),
    };
    let mut out = String::from(
        "\nonline checks (TLS handshake with each tenant certificate, nothing sent):\n",
    );
    let width = |f: fn(&Probe) -> usize| probes.iter().map(f).max().unwrap_or(0);
    let (tw, rw, uw) = (
        width(|p| p.tenant.len()),
        width(|p| p.role.len()),
        width(|p| p.upstream.len()),
    );
    for p in probes {
        let status = match p.outcome {
            Outcome::Ok => "ok",
            Outcome::Error => "ERROR",
            Outcome::Skipped => "skipped",
        };
        let line = match (&p.setting, &p.tls_version) {
            (Some(setting), _) => format!("{setting}: {}", p.message),
            (None, Some(v)) => format!("{} ({v})", p.message),
            (None, None) => p.message.clone(),
        };
        out.push_str(&format!(
            "  {status:<7}  {:<tw$}  {:<rw$}  {:<uw$}  {line}\n",
            p.tenant, p.role, p.upstream
        ));
        if let Some(detail) = p.detail.as_ref().filter(|_| p.outcome == Outcome::Error) {
            out.push_str(&format!("           ({detail})\n"));
        }
    }
    let failed = probes
        .iter()
        .filter(|p| p.outcome == Outcome::Error)
        .count();
    out.push_str(&format!(
        "\n{} handshake(s), {failed} failed: {}\n",
        probes.len(),
        if failed == 0 {
            "upstreams OK"
        } else {
            "upstreams REFUSED"
        }
    ));
    if let Some(a) = audit {
        let status = if a.ok { "ok" } else { "ERROR" };
        let line = match &a.setting {
            Some(setting) => format!("{setting}: {}", a.message),
            None => a.message.clone(),
        };
        out.push_str(&format!(
            "\naudit database (read only, nothing written):\n  {status:<7}  {}  {line}\n",
            a.url
        ));
    }
    out
}
