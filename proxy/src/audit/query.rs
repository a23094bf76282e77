//! Reading the trail back, the same way from either sink: "who accessed this patient",
//! "what did this person do", and exports of a time range. Records come out oldest
//! first, each with its stored line (the chained JSON), so an export of a contiguous
//! range can itself be checked with `audit verify`.

use std::fs::File;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_postgres::Client;

use super::AuditRecord;
use super::postgres::{FETCH, PgError};

/// Which records: every given criterion must hold. `until` is exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub patient: Option<String>,
    pub actor: Option<String>,
    pub tenant: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
}

impl Filter {
    fn matches(&self, r: &AuditRecord) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        if !(eq(&self.patient, &r.patient_ins)
            && eq(&self.actor, &r.actor_id)
            && eq(&self.tenant, &r.tenant))
        {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Ok(t) = OffsetDateTime::parse(&r.time, &Rfc3339) else {
            return false;
        };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{file}:{line}: not an audit record: {reason}")]
    Record {
        file: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("audit database: {0}")]
    Db(#[from] PgError),
}

impl From<tokio_postgres::Error> for QueryError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(PgError::Db(e))
    }
}

/// Calls `each` with every matching record of the trail `files` (oldest first) and its
/// stored line.
pub fn scan_files(
    files: &[PathBuf],
    filter: &Filter,
    each: &mut dyn FnMut(&str, &AuditRecord) -> io::Result<()>,
) -> Result<(), QueryError> {
    for file in files {
        let reader = io::BufReader::new(File::open(file)?);
        for (i, line) in reader.lines().enumerate() {
            let line = line?;
            let record: AuditRecord =
                serde_json::from_str(&line).map_err(|e| QueryError::Record {
                    file: file.clone(),
                    line: i + 1,
                    reason: e.to_string(),
                })?;
            if filter.matches(&record) {
                each(&line, &record)?;
            }
        }
    }
    Ok(())
}

/// The same over the PostgreSQL table, through its indexes, read in pages.
pub async fn scan_table(
    client: &mut Client,
    filter: &Filter,
    each: &mut dyn FnMut(&str, &AuditRecord) -> io::Result<()>,
) -> Result<(), QueryError> {
    let time = |t: &Option<OffsetDateTime>| t.and_then(|t| t.format(&Rfc3339).ok());
    let (since, until) = (time(&filter.since), time(&filter.until));
    let tx = client.transaction().await?;
    let statement = tx
        .prepare(
            "SELECT line FROM passerelle_audit \
             WHERE ($1::text IS NULL OR patient_ins = $1) \
               AND ($2::text IS NULL OR actor_id = $2) \
               AND ($3::text IS NULL OR tenant = $3) \
               AND ($4::text IS NULL OR time >= $4::text::timestamptz) \
               AND ($5::text IS NULL OR time < $5::text::timestamptz) \
             ORDER BY seq",
        )
        .await?;
    let portal = tx
        .bind(
            &statement,
            &[
                &filter.patient,
                &filter.actor,
                &filter.tenant,
                &since,
                &until,
            ],
        )
        .await?;
    loop {
        let rows = tx.query_portal(&portal, FETCH).await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let line: String = row.get(0);
            let record: AuditRecord = serde_json::from_str(&line).map_err(|e| {
                QueryError::Db(PgError::Schema(format!(
                    "a stored line is not a record: {e}"
                )))
            })?;
            each(&line, &record)?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// How `audit query` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for a person.
    Table,
    /// A JSON array of records (without their chain fields).
    Json,
    /// RFC 4180 CSV with a header line.
    Csv,
    /// The stored lines as they are (chain included): what `audit export` writes.
    Jsonl,
}

/// The columns of `table` and `csv`, in order.
const COLUMNS: [&str; 12] = [
    "time",
    "instance",
    "client",
    "tenant",
    "structure",
    "service",
    "action",
    "actor_id",
    "patient_ins",
    "purpose",
    "outcome",
    "sent_upstream",
];

fn cells(r: &AuditRecord) -> [String; 12] {
    [
        r.time.clone(),
        r.instance.clone(),
        r.client.clone(),
        r.tenant.clone(),
        r.structure.clone(),
        r.service.clone(),
        r.action.clone(),
        r.actor_id.clone(),
        r.patient_ins.clone(),
        r.purpose.clone(),
        r.outcome.clone(),
        r.sent_upstream.to_string(),
    ]
}

/// A CSV field: quoted when it must be (RFC 4180), and a leading `=`, `+`, `-`, `@`, tab
/// or CR made inert (a client's text must not become a spreadsheet formula).
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// A table cell: one line, at most `width` characters.
fn table_cell(text: &str, width: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(width) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// Writes matching records in a format, as they come.
#[derive(Debug)]
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    count: usize,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, format: Format) -> io::Result<Self> {
        let mut p = Self {
            out,
            format,
            count: 0,
        };
        match format {
            Format::Csv => writeln!(p.out, "{}", COLUMNS.join(","))?,
            Format::Table => writeln!(
                p.out,
                "{:<25} {:<12} {:<14} {:<10} {:<14} {:<22} {:<14} {:<15} {:<10} outcome",
                "time",
                "client",
                "tenant",
                "structure",
                "service",
                "action",
                "actor_id",
                "patient_ins",
                "purpose",
            )?,
            Format::Json => write!(p.out, "[")?,
            Format::Jsonl => {}
        }
        Ok(p)
    }

    pub fn record(&mut self, line: &str, r: &AuditRecord) -> io::Result<()> {
        match self.format {
            Format::Jsonl => writeln!(self.out, "{line}")?,
            Format::Json => {
                let sep = if self.count == 0 { "\n" } else { ",\n" };
                write!(self.out, "{sep}")?;
                serde_json::to_writer(&mut self.out, r)?;
            }
            Format::Csv => {
                let row: Vec<String> = cells(r).iter().map(|c| csv_field(c)).collect();
                writeln!(self.out, "{}", row.join(","))?;
            }
            Format::Table => writeln!(
                self.out,
                "{:<25} {:<12} {:<14} {:<10} {:<14} {:<22} {:<14} {:<15} {:<10} {}",
                table_cell(&r.time, 25),
                table_cell(&r.client, 12),
                table_cell(&r.tenant, 14),
                table_cell(&r.structure, 10),
                table_cell(&r.service, 14),
                table_cell(r.action.rsplit(['/', ':']).next().unwrap_or(""), 22),
                table_cell(&r.actor_id, 14),
                table_cell(&r.patient_ins, 15),
                table_cell(&r.purpose, 10),
                table_cell(&r.outcome, 24),
            )?,
        }
        self.count += 1;
        Ok(())
    }

    /// Closes the output; returns how many records were written.
    pub fn finish(mut self) -> io::Result<usize> {
        if self.format == Format::Json {
            writeln!(self.out, "{}]", if self.count == 0 { "" } else { "\n" })?;
        }
        self.out.flush()?;
        Ok(self.count)
    }
}

/// `2026-12-01T10:00:00Z` (RFC 3339) or `2026-12-01` (midnight UTC).
pub fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| {
            format!("{text:?}: give a date (2026-12-01, midnight UTC) or an RFC 3339 time (2026-12-01T10:00:00Z)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize, patient: &str, actor: &str, time: &str) -> AuditRecord {
        AuditRecord {
            time: time.into(),
            request_id: format!("r{i}"),
            patient_ins: patient.into(),
            actor_id: actor.into(),
            tenant: "ch-a".into(),
            outcome: "ok".into(),
            ..AuditRecord::default()
        }
    }

    #[test]
    fn filters_combine_and_until_is_exclusive() {
        let since = parse_time("2026-01-01").expect("date");
        let until = parse_time("2026-02-01T00:00:00Z").expect("time");
        let f = Filter {
            patient: Some("1".into()),
            since: Some(since),
            until: Some(until),
            ..Filter::default()
        };
        assert!(f.matches(&record(0, "1", "a", "2026-01-01T00:00:00Z")));
        assert!(!f.matches(&record(1, "1", "a", "2026-02-01T00:00:00Z")));
        assert!(!f.matches(&record(2, "2", "a", "2026-01-10T00:00:00Z")));
        assert!(!f.matches(&record(3, "1", "a", "not a time")));
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
    }

    #[test]
    fn json_output_is_an_array_even_when_empty() {
        let mut out = Vec::new();
        let p = Printer::new(&mut out, Format::Json).expect("printer");
        p.finish().expect("finish");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v, serde_json::json!([]));
        let mut out = Vec::new();
        let mut p = Printer::new(&mut out, Format::Json).expect("printer");
        for i in 0..2 {
            p.record("", &record(i, "1", "a", "2026-01-01T00:00:00Z"))
                .expect("record");
        }
        assert_eq!(p.finish().expect("finish"), 2);
        let v: Vec<AuditRecord> = serde_json::from_slice(&out).expect("json");
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn files_are_scanned_in_order_with_their_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.jsonl");
        let lines: Vec<String> = (0..4)
            .map(|i| {
                let p = if i % 2 == 0 { "1" } else { "2" };
                let mut v =
                    serde_json::to_value(record(i, p, "x", "2026-01-01T00:00:00Z")).expect("v");
                v["prev_sha256"] = serde_json::Value::String("00".into());
                v.to_string()
            })
            .collect();
        std::fs::write(&a, lines.join("\n") + "\n").expect("write");
        let mut seen = Vec::new();
        scan_files(
            std::slice::from_ref(&a),
            &Filter {
                patient: Some("1".into()),
                ..Filter::default()
            },
            &mut |line, r| {
                seen.push((line.to_string(), r.request_id.clone()));
                Ok(())
            },
        )
        .expect("scan");
        assert_eq!(
            seen,
            [
                (lines[0].clone(), "r0".to_string()),
                (lines[2].clone(), "r2".to_string())
            ]
        );
        std::fs::write(&a, "not json\n").expect("write");
        let err = scan_files(&[a], &Filter::default(), &mut |_, _| Ok(())).expect_err("bad");
        assert!(err.to_string().contains("a.jsonl:1"), "{err}");
    }
}
