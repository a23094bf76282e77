//! The audit trail: one record per upstream exchange (and per refused attempt), the
//! record of every access the establishment is legally responsible for (domain.md §1).
//! It is not the log: it holds the acting person and the patient, and lives apart.
//!
//! Two sinks, chosen by `[audit] sink`: [`file`] (a JSONL file, rotated) and
//! [`postgres`] (a table shared by replicas; a local spool while the database is
//! unreachable). Either way a record is committed before the internal system gets its
//! answer.
//!
//! Tamper evidence: every record is a JSON line starting with `prev_sha256`, the SHA-256
//! of the line before it in the same sink (across rotations and restarts; 64 zeros for
//! the very first), so an edited, deleted or reordered record breaks the chain at the
//! next one. [`Chain`] checks a sequence of lines; [`file::verify`] and
//! [`postgres::verify`] feed it. The newest record has no successor: its hash is logged
//! (`audit chain head`), an anchor outside the trail.
//!
//! [`query`] reads either sink back ("who accessed this patient").

pub mod file;
pub mod postgres;
pub mod query;

use std::io;
use std::path::{Path, PathBuf};

use passerelle_config::{AuditSink, OnAuditFailure};
use serde::{Deserialize, Serialize};

pub use file::{FileTrail, Rotation, rotated_files, verify};

/// One upstream exchange, or one refused attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditRecord {
    /// RFC 3339, UTC.
    pub time: String,
    /// The Passerelle instance that wrote it (`audit.instance`, default the host name).
    pub instance: String,
    pub request_id: String,
    /// The internal system's address.
    pub source: String,
    /// Whether any of the request may have reached the national service: `false` for a
    /// refused attempt (its `outcome` is the fault code).
    pub sent_upstream: bool,
    /// WS-Addressing MessageID sent upstream.
    pub message_id: String,
    pub client: String,
    /// The tenant granted; for a refused attempt that got none, the `X-Passerelle-Tenant`
    /// the client asked for (its text, cut to 64 characters), if any.
    pub tenant: String,
    /// Structure id the request acted under (VIHF `Identifiant_Structure`; INSi: Emetteur).
    pub structure: String,
    /// `dmp/<service>`, `insi`, `svc/<name>`.
    pub service: String,
    /// WS-Addressing Action (DMP) or INSi operation.
    pub action: String,
    /// National id of the acting person (VIHF `NameID`); empty for INSi.
    pub actor_id: String,
    /// INSi: `auto` or `manu`, the certificate the call used; empty for the DMP.
    pub insi_mode: String,
    /// The patient's INS, 15 characters (NIR + key), whatever the service: DMP, the
    /// VIHF resource-id; INSi, the INS returned, if any.
    pub patient_ins: String,
    /// The OID of the INS's namespace (`1.2.250.1.213.1.4.8` NIR, `.4.10` test NIR,
    /// `.4.9` NIA); empty when there is no INS.
    pub patient_ins_oid: String,
    /// DMP: the VIHF `purposeofuse` (`normal`, `bris_de_glace` for break-glass access,
    /// `centre_15`); empty for INSi.
    pub purpose: String,
    /// `ok`, `upstream_fault`, or the passerelle fault code.
    pub outcome: String,
    /// HTTP status of the upstream answer; 0 when there was none.
    pub upstream_status: u16,
    pub latency_ms: u64,
}

/// The `prev_sha256` of a trail's very first record.
pub(crate) const GENESIS: [u8; 32] = [0; 32];

pub(crate) fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The line as stored: `{"prev_sha256":"<hex>",` then the record's other fields.
pub(crate) fn chained(record_json: &str, prev: &[u8; 32]) -> String {
    let rest = record_json.strip_prefix('{').unwrap_or(record_json);
    let sep = if rest.starts_with('}') { "" } else { "," };
    format!("{{\"prev_sha256\":\"{}\"{sep}{rest}", hex(prev))
}

/// Where a record sits in its sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// 1-based line of a trail file.
    File { file: PathBuf, line: usize },
    /// `seq` of a row of the PostgreSQL table.
    Row { seq: i64 },
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File { file, line } => write!(f, "{}:{line}", file.display()),
            Self::Row { seq } => write!(f, "{} seq {seq}", postgres::TABLE),
        }
    }
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub place: Place,
    pub request_id: String,
    pub reason: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (request_id {:?})",
            self.place, self.reason, self.request_id
        )
    }
}

/// What a verification found: the records read, and the first break if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: usize,
    /// The first record's `prev_sha256` is 64 zeros: the trail is complete from its start.
    pub from_genesis: bool,
    /// Lines at the start written before the chain existed (no `prev_sha256`: a trail
    /// older than this version); the first chained record links to the last of them.
    pub unchained: usize,
    pub head: String,
    pub broken: Option<Broken>,
}

/// A hash chain checked one line at a time, whatever the sink.
#[derive(Debug)]
pub struct Chain {
    prev: Option<[u8; 32]>,
    out: Verified,
}

impl Default for Chain {
    fn default() -> Self {
        Self {
            prev: None,
            out: Verified {
                records: 0,
                from_genesis: false,
                unchained: 0,
                head: hex(&GENESIS),
                broken: None,
            },
        }
    }
}

impl Chain {
    /// Checks the next line; on a break, the reason and the record's request id.
    pub fn push(&mut self, line: &[u8]) -> Result<serde_json::Value, (String, String)> {
        let value: serde_json::Value = serde_json::from_slice(line)
            .map_err(|e| (format!("not a JSON record: {e}"), String::new()))?;
        let request_id = value["request_id"].as_str().unwrap_or("").to_string();
        let Some(claimed) = value["prev_sha256"].as_str() else {
            // Before the chain existed: only at the start of the trail.
            if self.out.records == 0 {
                self.out.unchained += 1;
                self.prev = Some(openssl::sha::sha256(line));
                return Ok(value);
            }
            return Err(("no prev_sha256".into(), request_id));
        };
        match self.prev {
            None => self.out.from_genesis = claimed == hex(&GENESIS),
            Some(p) if self.out.records == 0 && self.out.unchained > 0 => {
                // The first chained record follows the unchained ones.
                if claimed != hex(&p) {
                    return Err((
                        "prev_sha256 is not the hash of the last line written before the chain"
                            .into(),
                        request_id,
                    ));
                }
            }
            Some(p) if claimed != hex(&p) => {
                return Err((
                    "prev_sha256 is not the hash of the record before it: a record was edited, deleted or moved just before this one".into(),
                    request_id,
                ));
            }
            Some(_) => {}
        }
        let hash = openssl::sha::sha256(line);
        self.prev = Some(hash);
        self.out.head = hex(&hash);
        self.out.records += 1;
        Ok(value)
    }

    /// The result so far, with `broken` set.
    pub fn broken(mut self, broken: Broken) -> Verified {
        self.out.broken = Some(broken);
        self.out
    }

    pub fn finish(self) -> Verified {
        self.out
    }
}

/// Why a record could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit trail {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("audit spool {path}: {source}")]
    Spool {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("audit writer stopped")]
    Stopped,
    #[error("audit record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// How the sink stands, for `/readyz`, metrics and admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkStatus {
    /// The file is open, or the database connected.
    pub up: bool,
    /// Records waiting in the local spool for the database.
    pub spooled: u64,
    /// `[audit] on_failure = "refuse"` and the database is unreachable: new requests
    /// are refused.
    pub refusing: bool,
}

/// The configured sink; cloning shares it.
#[derive(Debug, Clone)]
pub enum AuditTrail {
    File(FileTrail),
    Postgres(postgres::PgTrail),
}

impl AuditTrail {
    /// Opens the configured sink. A database that is not reachable yet is not an error:
    /// records are spooled (or requests refused) until it is.
    pub fn open(config: &passerelle_config::Audit) -> Result<Self, AuditError> {
        match &config.sink {
            AuditSink::File => {
                let rotation = Rotation {
                    max_bytes: config.rotate_bytes,
                    daily: config.rotate_daily,
                };
                FileTrail::open(&config.path, rotation, config.fsync)
                    .map(Self::File)
                    .map_err(|source| AuditError::File {
                        path: config.path.clone(),
                        source,
                    })
            }
            AuditSink::Postgres(pg) => postgres::PgTrail::open(pg).map(Self::Postgres),
        }
    }

    /// Commits one record; returns once it is in the file, the table or the spool.
    pub async fn record(&self, record: &AuditRecord) -> Result<(), AuditError> {
        match self {
            Self::File(f) => f.record(record).await.map_err(|source| AuditError::File {
                path: f.path().to_path_buf(),
                source,
            }),
            Self::Postgres(p) => p.record(record).await,
        }
    }

    pub fn status(&self) -> SinkStatus {
        match self {
            Self::File(_) => SinkStatus {
                up: true,
                spooled: 0,
                refusing: false,
            },
            Self::Postgres(p) => p.status(),
        }
    }

    /// Whether a new request may be sent upstream: not while the database is unreachable
    /// with `on_failure = "refuse"`.
    pub fn admits(&self) -> bool {
        !self.status().refusing
    }

    /// For logs: the file's path, or the database URL (it holds no password).
    pub fn describe(&self) -> String {
        match self {
            Self::File(f) => f.path().display().to_string(),
            Self::Postgres(p) => p.describe().to_string(),
        }
    }

    /// The file sink's path (the spool's for PostgreSQL).
    pub fn path(&self) -> &Path {
        match self {
            Self::File(f) => f.path(),
            Self::Postgres(p) => p.spool_path(),
        }
    }
}

/// `[audit] on_failure`, as a label.
pub fn on_failure_label(on_failure: OnAuditFailure) -> &'static str {
    match on_failure {
        OnAuditFailure::Spool => "spool",
        OnAuditFailure::Refuse => "refuse",
    }
}
