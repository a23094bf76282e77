//! `passerelle check`: one row per configured certificate, then every problem found.
//!
//! Exit status: 0 when there is no error (warnings allowed), 1 when there is one.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use passerelle_config::{CertificateReport, Inspection, Severity};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &CheckArgs) -> ExitCode {
    let inspection = passerelle_config::inspect(&args.config);
    let text = if args.json {
        json_report(&args.config, &inspection)
    } else {
        table_report(&args.config, &inspection)
    };
    // A closed stdout (`| head`) is not an error of the configuration.
    let _ = std::io::stdout().write_all(text.as_bytes());
    if inspection.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn json_report(config: &std::path::Path, inspection: &Inspection) -> String {
    let value = serde_json::json!({
        "config": config,
        "ok": !inspection.has_errors(),
        "certificates": inspection.certificates,
        "problems": inspection.problems,
    });
    let mut text =
        serde_json::to_string_pretty(&value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    text.push('\n');
    text
}

const HEADERS: [&str; 9] = [
    "TENANT",
    "ROLE",
    "SUBJECT CN",
    "OU",
    "ISSUER CN",
    "SERIAL",
    "NOT AFTER",
    "DAYS",
    "STATUS",
];

fn row(c: &CertificateReport) -> [String; 9] {
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
        c.status.to_string(),
    ]
}

fn table_report(config: &std::path::Path, inspection: &Inspection) -> String {
    let rows: Vec<[String; 9]> = inspection.certificates.iter().map(row).collect();
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
