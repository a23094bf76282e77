//! The PostgreSQL sink: one row per record in `passerelle_audit`, shared by replicas.
//!
//! - **Schema**: created and migrated by Passerelle at connection, in versioned steps
//!   recorded in `passerelle_schema` (under an advisory lock: replicas starting together
//!   migrate once). A database migrated by a newer Passerelle is refused, not altered.
//! - **Chain**: each row keeps the JSON line a file trail would hold (`line`, starting
//!   with `prev_sha256`) and the fields as indexed columns. One chain per database: a
//!   batch takes the head row (`passerelle_audit_head`) `FOR UPDATE`, so replicas append
//!   one after another. The table is append-only (a trigger refuses UPDATE, DELETE and
//!   TRUNCATE); [`verify`] finds what someone able to drop the trigger changed anyway.
//! - **Commit before answer**: one writer task per process batches the records waiting
//!   and commits them in one transaction; each request waits for its batch's commit.
//! - **Database unreachable**: the batch goes to a local spool file (0600, fsynced)
//!   instead, and requests are answered; with `on_failure = "refuse"` new requests are
//!   refused while it is down (`AuditUnavailable`, nothing sent). Once connected again
//!   the spool is replayed in order, then emptied. Every record carries a `record_id`:
//!   a replay after a commit whose acknowledgement was lost skips what is already in,
//!   so nothing is lost or doubled.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use passerelle_config::{OnAuditFailure, PostgresAudit};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, NoTls};

use super::{AuditError, AuditRecord, Broken, Chain, Place, SinkStatus, Verified};
use super::{chained, hex};

/// The table of records.
pub const TABLE: &str = "passerelle_audit";

/// Records committed in one transaction at most.
const MAX_BATCH: usize = 512;
/// Spooled records replayed in one transaction.
const REPLAY_CHUNK: usize = 500;
/// A commit that takes longer counts as a lost database (the batch is spooled).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connection attempts while the database is unreachable: after 1 s, doubling to this.
const MAX_RETRY: Duration = Duration::from_secs(10);
/// While unreachable, a warning this often (not one per attempt).
const DOWN_LOG_EVERY: Duration = Duration::from_secs(300);
/// Key of the advisory lock that serialises migrations across replicas.
const MIGRATION_LOCK: i64 = 0x7061_7373_6175_6469; // "passaudi"

/// Errors of the database side.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("TLS to the database: {0}")]
    Tls(#[from] openssl::error::ErrorStack),
    #[error("{0}")]
    Schema(String),
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
}

struct Migration {
    version: i32,
    description: &'static str,
    sql: &'static str,
}

/// The schema, step by step. A released step is never edited: add the next one.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "audit records, chain head, append-only trigger",
    sql: r"
CREATE TABLE passerelle_audit (
    seq bigint PRIMARY KEY,
    record_id uuid NOT NULL UNIQUE,
    prev_sha256 text NOT NULL,
    line text NOT NULL,
    time timestamptz NOT NULL,
    instance text NOT NULL,
    request_id text NOT NULL,
    source text NOT NULL,
    sent_upstream boolean NOT NULL,
    message_id text NOT NULL,
    client text NOT NULL,
    tenant text NOT NULL,
    structure text NOT NULL,
    service text NOT NULL,
    action text NOT NULL,
    actor_id text NOT NULL,
    insi_mode text NOT NULL,
    patient_ins text NOT NULL,
    patient_ins_oid text NOT NULL,
    purpose text NOT NULL,
    outcome text NOT NULL,
    upstream_status integer NOT NULL,
    latency_ms bigint NOT NULL
);
CREATE INDEX passerelle_audit_patient_ins ON passerelle_audit (patient_ins, time);
CREATE INDEX passerelle_audit_actor_id ON passerelle_audit (actor_id, time);
CREATE INDEX passerelle_audit_tenant ON passerelle_audit (tenant, time);
CREATE INDEX passerelle_audit_time ON passerelle_audit (time);
CREATE TABLE passerelle_audit_head (
    id smallint PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL,
    sha256 text NOT NULL
);
INSERT INTO passerelle_audit_head VALUES (1, 0, repeat('0', 64));
CREATE FUNCTION passerelle_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'passerelle_audit is append-only: records are never changed or removed';
END $$;
CREATE TRIGGER passerelle_audit_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON passerelle_audit
    FOR EACH STATEMENT EXECUTE FUNCTION passerelle_audit_append_only();
",
}];

/// The schema version this Passerelle writes.
pub fn schema_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Connects with the configured URL, password and TLS; the connection's task ends
/// by calling `on_close`.
pub async fn connect(
    config: &PostgresAudit,
    on_close: impl FnOnce() + Send + 'static,
) -> Result<Client, PgError> {
    let mut pg: tokio_postgres::Config = config.url.parse()?;
    if let Some(password) = &config.password {
        pg.password(password.as_bytes());
    }
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_secs(5));
    }
    if pg.get_application_name().is_none() {
        pg.application_name("passerelle");
    }
    // A database that vanished (no FIN) is noticed within a minute, not hours.
    pg.keepalives_idle(Duration::from_secs(30));
    let client = if pg.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
        let (client, connection) = pg.connect(NoTls).await?;
        spawn_connection(connection, on_close);
        client
    } else {
        let mut builder = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())?;
        if let Some(ca) = &config.ca_file {
            builder.set_ca_file(ca)?;
        }
        let tls = postgres_openssl::MakeTlsConnector::new(builder.build());
        let (client, connection) = pg.connect(tls).await?;
        spawn_connection(connection, on_close);
        client
    };
    Ok(client)
}

fn spawn_connection<F>(connection: F, on_close: impl FnOnce() + Send + 'static)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "audit database connection ended");
        }
        on_close();
    });
}

/// What `passerelle check --online` learnt of the audit database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// The configured URL (it holds no password: the configuration refuses one).
    pub url: String,
    pub ok: bool,
    /// The setting or grant to fix, for an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
    /// What was found, for people.
    pub message: String,
}

/// Privileges writing records takes once the schema exists: (table, privilege).
const NEEDED: [(&str, &str); 5] = [
    ("passerelle_audit", "INSERT"),
    ("passerelle_audit", "SELECT"),
    ("passerelle_audit_head", "SELECT"),
    ("passerelle_audit_head", "UPDATE"),
    ("passerelle_schema", "SELECT"),
];

/// Connects as the proxy would and reads, without writing: the schema version, the
/// privileges of the role on each table, and whether the session is encrypted.
pub async fn probe(config: &PostgresAudit) -> Probe {
    let url = config.url.clone();
    let error = |setting: &str, message: String| Probe {
        url: url.clone(),
        ok: false,
        setting: Some(setting.to_string()),
        message,
    };
    let client = match tokio::time::timeout(Duration::from_secs(10), connect(config, || {})).await {
        Err(_) => return error("audit.url", "no answer within 10 s".to_string()),
        Ok(Err(e)) => {
            // 28P01 invalid_password, 28000 invalid_authorization_specification.
            let setting = match e.sqlstate() {
                Some("28P01") if config.password.is_some() => "audit.password_file",
                _ => "audit.url",
            };
            return error(setting, format!("cannot connect: {e}"));
        }
        Ok(Ok(client)) => client,
    };
    match inspect(&client).await {
        Ok(found) => found.judge(url),
        Err(e) => error("audit.url", format!("connected, then: {e}")),
    }
}

impl PgError {
    fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::Db(e) => e.code().map(tokio_postgres::error::SqlState::code),
            _ => None,
        }
    }
}

/// The facts [`probe`] reads.
struct Found {
    role: String,
    /// `None`: no `passerelle_schema` table yet.
    version: Option<i32>,
    can_create: bool,
    missing: Vec<String>,
    encrypted: bool,
}

async fn inspect(client: &Client) -> Result<Found, PgError> {
    let row = client
        .query_one(
            "SELECT current_user::text, \
                    coalesce(has_schema_privilege(current_schema(), 'CREATE'), false), \
                    to_regclass('passerelle_schema') IS NOT NULL, \
                    coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
            &[],
        )
        .await?;
    let (role, can_create, exists, encrypted): (String, bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let mut found = Found {
        role,
        version: None,
        can_create,
        missing: Vec::new(),
        encrypted,
    };
    if !exists {
        return Ok(found);
    }
    found.version = Some(
        client
            .query_one(
                "SELECT coalesce(max(version), 0) FROM passerelle_schema",
                &[],
            )
            .await?
            .get(0),
    );
    for (table, privilege) in NEEDED {
        let granted: bool = client
            .query_one(
                "SELECT CASE WHEN to_regclass($1::text) IS NULL THEN false \
                 ELSE has_table_privilege($1::text, $2::text) END",
                &[&table, &privilege],
            )
            .await?
            .get(0);
        if !granted {
            found.missing.push(format!("{privilege} on {table}"));
        }
    }
    Ok(found)
}

impl Found {
    fn judge(self, url: String) -> Probe {
        let latest = schema_version();
        let tls = if self.encrypted {
            "TLS"
        } else {
            "not encrypted"
        };
        let (ok, setting, message) = match self.version {
            None if self.can_create => (
                true,
                None,
                format!(
                    "role {}, {tls}: no schema yet, Passerelle creates it (version {latest}) at its first start",
                    self.role
                ),
            ),
            None => (
                false,
                Some("database grants"),
                format!(
                    "role {} may not create tables and the schema does not exist: start once with the owner's role, or GRANT CREATE",
                    self.role
                ),
            ),
            Some(v) if v > latest => (
                false,
                Some("passerelle version"),
                format!(
                    "schema version {v} was written by a newer Passerelle (this one writes {latest}): upgrade this instance"
                ),
            ),
            Some(v) if v < latest && !self.can_create => (
                false,
                Some("database grants"),
                format!(
                    "schema version {v}, this Passerelle migrates to {latest} at start and role {} may not: run it once with the owner's role",
                    self.role
                ),
            ),
            Some(_) if !self.missing.is_empty() => (
                false,
                Some("database grants"),
                format!(
                    "role {} lacks {}: records could not be written",
                    self.role,
                    self.missing.join(", ")
                ),
            ),
            Some(v) => (
                true,
                None,
                format!(
                    "role {}, {tls}, schema version {v} (this Passerelle writes {latest}), INSERT and SELECT granted",
                    self.role
                ),
            ),
        };
        Probe {
            url,
            ok,
            setting: setting.map(str::to_string),
            message,
        }
    }
}

/// Brings the schema to [`schema_version`].
pub async fn migrate(client: &mut Client) -> Result<(), PgError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('passerelle_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    let current: i32 = if exists {
        tx.query_one(
            "SELECT coalesce(max(version), 0) FROM passerelle_schema",
            &[],
        )
        .await?
        .get(0)
    } else {
        0
    };
    let latest = schema_version();
    if current == latest {
        // Nothing to create: a role granted only what writing records takes will do.
        tx.commit().await?;
        return Ok(());
    }
    if !exists {
        tx.batch_execute(
            "CREATE TABLE passerelle_schema (
                version integer PRIMARY KEY,
                description text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    }
    if current > latest {
        return Err(PgError::Schema(format!(
            "the database's audit schema is at version {current}, newer than this Passerelle's ({latest}): a newer Passerelle migrated it; upgrade this one"
        )));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO passerelle_schema (version, description) VALUES ($1, $2)",
            &[&m.version, &m.description],
        )
        .await?;
        tracing::info!(
            version = m.version,
            description = m.description,
            "audit database schema migrated"
        );
    }
    tx.commit().await?;
    Ok(())
}

/// One record on its way: its id makes a replay idempotent.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    record_id: String,
    record: AuditRecord,
}

struct Job {
    entry: Entry,
    ack: oneshot::Sender<Result<(), AuditError>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Connected (set by the writer, cleared as soon as the connection ends).
    up: AtomicBool,
    /// Bumped at each connection: a late end of an older one changes nothing.
    generation: AtomicU64,
    /// Records in the spool, not yet in the database.
    spooled: AtomicU64,
    refuse: bool,
}

/// Handle to the writer task; cloning shares it.
#[derive(Clone)]
pub struct PgTrail {
    tx: mpsc::UnboundedSender<Job>,
    shared: Arc<Shared>,
    describe: Arc<str>,
    spool: PathBuf,
}

impl std::fmt::Debug for PgTrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTrail")
            .field("url", &self.describe)
            .field("spool", &self.spool)
            .finish()
    }
}

impl PgTrail {
    /// Opens the spool and starts the writer task, which connects in the background
    /// (a database not reachable yet means spooling, or refusing, until it is).
    /// Must run inside the Tokio runtime.
    pub fn open(config: &PostgresAudit) -> Result<Self, AuditError> {
        let spool = Spool::open(&config.spool).map_err(|source| AuditError::Spool {
            path: config.spool.clone(),
            source,
        })?;
        let shared = Arc::new(Shared {
            refuse: config.on_failure == OnAuditFailure::Refuse,
            ..Shared::default()
        });
        shared.spooled.store(spool.pending, Ordering::Relaxed);
        if spool.pending > 0 {
            tracing::warn!(
                spool = %config.spool.display(),
                records = spool.pending,
                "audit records from an earlier run wait in the spool: replayed once the database is reached"
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            config: config.clone(),
            client: None,
            spool,
            shared: Arc::clone(&shared),
            retry_at: Instant::now(),
            retry_delay: Duration::from_secs(1),
            down_logged: None,
        };
        tokio::spawn(writer.run(rx));
        Ok(Self {
            tx,
            shared,
            describe: Arc::from(config.url.as_str()),
            spool: config.spool.clone(),
        })
    }

    /// Commits one record (to the table, or to the spool while the database is down).
    pub async fn record(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        let entry = Entry {
            record_id: uuid::Uuid::new_v4().to_string(),
            record: record.clone(),
        };
        self.tx
            .send(Job { entry, ack })
            .map_err(|_| AuditError::Stopped)?;
        done.await.map_err(|_| AuditError::Stopped)?
    }

    pub fn status(&self) -> SinkStatus {
        let up = self.shared.up.load(Ordering::Relaxed);
        SinkStatus {
            up,
            spooled: self.shared.spooled.load(Ordering::Relaxed),
            refusing: self.shared.refuse && !up,
        }
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    pub fn spool_path(&self) -> &Path {
        &self.spool
    }
}

/// The local spool: JSON lines of [`Entry`], appended and fsynced while the database is
/// unreachable, replayed from `replayed` on.
struct Spool {
    path: PathBuf,
    file: File,
    size: u64,
    /// Bytes at the start already committed to the database (this run).
    replayed: u64,
    pending: u64,
}

impl Spool {
    fn open(path: &Path) -> io::Result<Self> {
        if path.exists() {
            super::file::repair_torn_tail(path)?;
        }
        let (file, size) = super::file::open_private(path)?;
        let pending = io::BufReader::new(File::open(path)?)
            .split(b'\n')
            .filter(|l| l.as_ref().is_ok_and(|l| !l.is_empty()))
            .count() as u64;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            replayed: 0,
            pending,
        })
    }

    fn append(&mut self, entries: &[&Entry]) -> io::Result<()> {
        let mut buf = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, e).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        if let Err(e) = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
        {
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += buf.len() as u64;
        self.pending += entries.len() as u64;
        Ok(())
    }

    /// Up to `max` entries from where the replay stands, and the offset after them.
    /// A line that is not an entry (never acknowledged: a crash mid-write is cut off at
    /// open) is set aside in `<spool>.bad`, not replayed.
    fn read_chunk(&self, max: usize) -> io::Result<(Vec<Entry>, u64)> {
        let mut reader = io::BufReader::new(File::open(&self.path)?);
        reader.seek(io::SeekFrom::Start(self.replayed))?;
        let mut entries = Vec::new();
        let mut offset = self.replayed;
        let mut line = Vec::new();
        while entries.len() < max {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            offset += n as u64;
            match serde_json::from_slice::<Entry>(&line) {
                Ok(e) => entries.push(e),
                Err(e) => {
                    let bad = self.path.with_extension("bad");
                    let (mut f, _) = super::file::open_private(&bad)?;
                    f.write_all(&line)?;
                    tracing::error!(spool = %self.path.display(), set_aside = %bad.display(), error = %e, "an audit spool line is not a record: set aside");
                }
            }
        }
        Ok((entries, offset))
    }

    /// `n` entries up to `offset` are in the database; an entirely replayed spool is
    /// emptied.
    fn replayed(&mut self, offset: u64, n: u64) -> io::Result<()> {
        self.replayed = offset;
        self.pending = self.pending.saturating_sub(n);
        if self.replayed >= self.size {
            self.file.set_len(0)?;
            self.file.sync_all()?;
            self.size = 0;
            self.replayed = 0;
            self.pending = 0;
        }
        Ok(())
    }
}

struct Writer {
    config: PostgresAudit,
    client: Option<Client>,
    spool: Spool,
    shared: Arc<Shared>,
    retry_at: Instant,
    retry_delay: Duration,
    /// When "unreachable" was last logged, while it is.
    down_logged: Option<Instant>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let replay_due = self.client.is_some() && self.spool.pending > 0;
            tokio::select! {
                job = rx.recv() => {
                    let Some(first) = job else { break };
                    let mut jobs = vec![first];
                    while jobs.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
                    }
                    self.handle(jobs).await;
                }
                _ = tick.tick() => self.keep_connected().await,
                () = std::future::ready(()), if replay_due => self.replay_chunk().await,
            }
        }
        // Every sender is gone (shutdown): what could be committed was, before its
        // answer; what waits in the spool is replayed at the next start.
        if self.spool.pending > 0 {
            tracing::warn!(spool = %self.spool.path.display(), records = self.spool.pending, "audit records left in the spool at shutdown: replayed at the next start");
        }
    }

    /// Connects when due; notices a lost connection.
    async fn keep_connected(&mut self) {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.lost("the connection closed".into());
        }
        if self.client.is_some() || Instant::now() < self.retry_at {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let generation = shared.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let on_close = move || {
            if shared.generation.load(Ordering::Relaxed) == generation {
                shared.up.store(false, Ordering::Relaxed);
            }
        };
        let attempt = async {
            let mut client = connect(&self.config, on_close).await?;
            migrate(&mut client).await?;
            Ok::<_, PgError>(client)
        };
        match tokio::time::timeout(Duration::from_secs(15), attempt).await {
            Ok(Ok(client)) => {
                self.client = Some(client);
                self.shared.up.store(true, Ordering::Relaxed);
                self.retry_delay = Duration::from_secs(1);
                self.down_logged = None;
                tracing::info!(
                    database = %self.config.url,
                    spooled = self.spool.pending,
                    "audit database connected"
                );
            }
            Ok(Err(e)) => self.unreachable(e.to_string()),
            Err(_) => self.unreachable("no answer within 15 s".into()),
        }
    }

    fn unreachable(&mut self, reason: String) {
        self.retry_at = Instant::now() + self.retry_delay;
        self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY);
        let due = self
            .down_logged
            .is_none_or(|at| at.elapsed() >= DOWN_LOG_EVERY);
        if due {
            self.down_logged = Some(Instant::now());
            tracing::warn!(
                database = %self.config.url,
                reason = %reason,
                on_failure = super::on_failure_label(self.config.on_failure),
                spooled = self.spool.pending,
                "audit database unreachable: {}",
                if self.shared.refuse {
                    "new requests are refused (AuditUnavailable) until it is back"
                } else {
                    "records are spooled locally and replayed once it is back"
                }
            );
        }
    }

    fn lost(&mut self, reason: String) {
        self.client = None;
        self.shared.up.store(false, Ordering::Relaxed);
        self.retry_at = Instant::now();
        self.unreachable(reason);
    }

    async fn handle(&mut self, jobs: Vec<Job>) {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.lost("the connection closed".into());
        }
        let (entries, acks): (Vec<Entry>, Vec<_>) =
            jobs.into_iter().map(|j| (j.entry, j.ack)).unzip();
        let refs: Vec<&Entry> = entries.iter().collect();
        // In order: while older records wait in the spool, newer ones join them.
        if self.spool.pending == 0
            && let Some(client) = self.client.as_mut()
        {
            match commit(client, &refs, false).await {
                Ok(_) => {
                    for ack in acks {
                        let _ = ack.send(Ok(()));
                    }
                    return;
                }
                Err(e) => self.lost(format!("commit failed: {e}")),
            }
        }
        let result = self.spool.append(&refs);
        self.shared
            .spooled
            .store(self.spool.pending, Ordering::Relaxed);
        for ack in acks {
            let _ = ack.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(AuditError::Spool {
                    path: self.spool.path.clone(),
                    source: io::Error::new(e.kind(), e.to_string()),
                }),
            });
        }
    }

    async fn replay_chunk(&mut self) {
        let (entries, offset) = match self.spool.read_chunk(REPLAY_CHUNK) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(spool = %self.spool.path.display(), error = %e, "audit spool unreadable");
                // Not in a loop: the next tick tries again.
                self.retry_at = Instant::now() + MAX_RETRY;
                return;
            }
        };
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let refs: Vec<&Entry> = entries.iter().collect();
        match commit(client, &refs, true).await {
            Ok(inserted) => {
                let n = entries.len() as u64;
                if let Err(e) = self.spool.replayed(offset, n) {
                    tracing::error!(spool = %self.spool.path.display(), error = %e, "audit spool could not be emptied (its records are in the database; a replay skips them)");
                }
                self.shared
                    .spooled
                    .store(self.spool.pending, Ordering::Relaxed);
                tracing::info!(
                    replayed = inserted,
                    already_in = n - inserted,
                    left = self.spool.pending,
                    "audit spool replayed into the database"
                );
            }
            Err(e) => self.lost(format!("replay failed: {e}")),
        }
    }
}

/// PostgreSQL text holds no NUL: one from a client's field is replaced (the chained
/// line keeps it, JSON-escaped).
fn column(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// Commits `entries` after the head, in one transaction; with `dedupe`, those already
/// in (a replay) are skipped. Returns how many were inserted.
async fn commit(client: &mut Client, entries: &[&Entry], dedupe: bool) -> Result<u64, PgError> {
    let work = async {
        let tx = client.transaction().await?;
        let head = tx
            .query_one(
                "SELECT seq, sha256 FROM passerelle_audit_head WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await?;
        let mut seq: i64 = head.get(0);
        let head_hex: String = head.get(1);
        let mut prev = parse_hash(&head_hex).ok_or_else(|| {
            PgError::Schema(format!(
                "passerelle_audit_head holds {head_hex:?}, not a SHA-256"
            ))
        })?;
        let present: HashSet<String> = if dedupe {
            let ids: Vec<String> = entries.iter().map(|e| e.record_id.clone()).collect();
            tx.query(
                "SELECT record_id::text FROM passerelle_audit WHERE record_id = ANY($1::text[]::uuid[])",
                &[&ids],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
        } else {
            HashSet::new()
        };
        let mut cols = Columns::default();
        for entry in entries {
            if present.contains(&entry.record_id) {
                continue;
            }
            let json = serde_json::to_string(&entry.record)
                .map_err(|e| PgError::Schema(format!("record: {e}")))?;
            let line = chained(&json, &prev);
            seq += 1;
            cols.push(seq, entry, &hex(&prev), &line);
            prev = openssl::sha::sha256(line.as_bytes());
        }
        let inserted = cols.seq.len() as u64;
        if inserted > 0 {
            tx.execute(INSERT, &cols.params()).await?;
            tx.execute(
                "UPDATE passerelle_audit_head SET seq = $1, sha256 = $2 WHERE id = 1",
                &[&seq, &hex(&prev)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok::<_, PgError>(inserted)
    };
    tokio::time::timeout(COMMIT_TIMEOUT, work)
        .await
        .map_err(|_| PgError::Timeout(COMMIT_TIMEOUT))?
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let bytes = ::hex::decode(text).ok()?;
    bytes.try_into().ok()
}

/// One batch as column arrays, inserted with a single `unnest`.
#[derive(Default)]
struct Columns {
    seq: Vec<i64>,
    record_id: Vec<String>,
    prev: Vec<String>,
    line: Vec<String>,
    time: Vec<String>,
    text: [Vec<String>; 15],
    sent_upstream: Vec<bool>,
    upstream_status: Vec<i32>,
    latency_ms: Vec<i64>,
}

/// The text columns, in the order of [`INSERT`]'s parameters `$6` to `$20`, with how a
/// record gives each.
/// How a record gives a text column.
type Field = fn(&AuditRecord) -> &str;

const TEXT_COLUMNS: [(&str, Field); 15] = [
    ("instance", |r| &r.instance),
    ("request_id", |r| &r.request_id),
    ("source", |r| &r.source),
    ("message_id", |r| &r.message_id),
    ("client", |r| &r.client),
    ("tenant", |r| &r.tenant),
    ("structure", |r| &r.structure),
    ("service", |r| &r.service),
    ("action", |r| &r.action),
    ("actor_id", |r| &r.actor_id),
    ("insi_mode", |r| &r.insi_mode),
    ("patient_ins", |r| &r.patient_ins),
    ("patient_ins_oid", |r| &r.patient_ins_oid),
    ("purpose", |r| &r.purpose),
    ("outcome", |r| &r.outcome),
];

const INSERT: &str = "INSERT INTO passerelle_audit (seq, record_id, prev_sha256, line, time, \
    instance, request_id, source, message_id, client, tenant, structure, service, action, \
    actor_id, insi_mode, patient_ins, patient_ins_oid, purpose, outcome, \
    sent_upstream, upstream_status, latency_ms) \
    SELECT s, r::uuid, p, l, t::timestamptz, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, \
    c12, c13, c14, c15, su, us, lm \
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], \
    $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
    $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], \
    $19::text[], $20::text[], $21::boolean[], $22::integer[], $23::bigint[]) \
    AS u(s, r, p, l, t, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, \
    su, us, lm)";

impl Columns {
    fn push(&mut self, seq: i64, entry: &Entry, prev: &str, line: &str) {
        let r = &entry.record;
        self.seq.push(seq);
        self.record_id.push(entry.record_id.clone());
        self.prev.push(prev.to_string());
        self.line.push(line.to_string());
        // A record's time is ours (RFC 3339); should one not parse, the commit time.
        let time =
            if time::OffsetDateTime::parse(&r.time, &time::format_description::well_known::Rfc3339)
                .is_ok()
            {
                r.time.clone()
            } else {
                "now".to_string()
            };
        self.time.push(time);
        for (i, (_, get)) in TEXT_COLUMNS.iter().enumerate() {
            self.text[i].push(column(get(r)));
        }
        self.sent_upstream.push(r.sent_upstream);
        self.upstream_status.push(i32::from(r.upstream_status));
        self.latency_ms
            .push(i64::try_from(r.latency_ms).unwrap_or(i64::MAX));
    }

    fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        let mut p: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
            &self.seq,
            &self.record_id,
            &self.prev,
            &self.line,
            &self.time,
        ];
        for t in &self.text {
            p.push(t);
        }
        p.push(&self.sent_upstream);
        p.push(&self.upstream_status);
        p.push(&self.latency_ms);
        p
    }
}

/// Rows read at a time by [`verify`] and the queries (a cursor: the table may be large).
pub(crate) const FETCH: i32 = 1_000;

/// Checks the table's chain in `seq` order: every line's `prev_sha256` is the hash of
/// the line before, `seq` has no gap, every indexed column says what its chained line
/// says (a column changed alone would mislead a query), and the head row is the last
/// record's.
pub async fn verify(client: &mut Client) -> Result<Verified, PgError> {
    let tx = client.transaction().await?;
    let names: Vec<&str> = TEXT_COLUMNS.iter().map(|(n, _)| *n).collect();
    let statement = tx
        .prepare(&format!(
            "SELECT seq, line, (extract(epoch FROM time) * 1000000)::bigint, sent_upstream, \
             upstream_status, latency_ms, {} FROM passerelle_audit ORDER BY seq",
            names.join(", ")
        ))
        .await?;
    let portal = tx.bind(&statement, &[]).await?;
    let mut chain = Chain::default();
    let mut last_seq: Option<i64> = None;
    loop {
        let rows = tx.query_portal(&portal, FETCH).await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let seq: i64 = row.get(0);
            let line: String = row.get(1);
            let broken = |reason: String, request_id: String| Broken {
                place: Place::Row { seq },
                request_id,
                reason,
            };
            if let Some(last) = last_seq
                && seq != last + 1
            {
                return Ok(chain.broken(broken(
                    format!(
                        "seq jumps from {last} to {seq}: {} record(s) missing",
                        seq - last - 1
                    ),
                    String::new(),
                )));
            }
            last_seq = Some(seq);
            let value = match chain.push(line.as_bytes()) {
                Ok(v) => v,
                Err((reason, id)) => return Ok(chain.broken(broken(reason, id))),
            };
            if let Some(field) = column_mismatch(&row, &value) {
                let id = value["request_id"].as_str().unwrap_or("").to_string();
                return Ok(chain.broken(broken(
                    format!("column {field} differs from the chained record: the row was edited"),
                    id,
                )));
            }
        }
    }
    let head = tx
        .query_one(
            "SELECT seq, sha256 FROM passerelle_audit_head WHERE id = 1",
            &[],
        )
        .await?;
    let (head_seq, head_sha): (i64, String) = (head.get(0), head.get(1));
    let verified = chain.finish();
    tx.commit().await?;
    let last = last_seq.unwrap_or(0);
    if head_seq != last || (last > 0 && head_sha != verified.head) {
        let mut verified = verified;
        verified.broken = Some(Broken {
            place: Place::Row { seq: head_seq },
            request_id: String::new(),
            reason: format!(
                "the chain head (passerelle_audit_head: seq {head_seq}) is not the last record (seq {last}): records were removed at the end, or the head was changed"
            ),
        });
        return Ok(verified);
    }
    Ok(verified)
}

/// The first indexed column whose value is not the chained line's.
fn column_mismatch(row: &tokio_postgres::Row, value: &serde_json::Value) -> Option<&'static str> {
    let micros: i64 = row.get(2);
    let line_micros = value["time"]
        .as_str()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|t| (t.unix_timestamp_nanos() / 1_000) as i64);
    // The line keeps nanoseconds, the column microseconds (rounded on input).
    if line_micros.is_some_and(|m| (m - micros).abs() > 1) {
        return Some("time");
    }
    if row.get::<_, bool>(3) != value["sent_upstream"].as_bool().unwrap_or(false) {
        return Some("sent_upstream");
    }
    if i64::from(row.get::<_, i32>(4)) != value["upstream_status"].as_i64().unwrap_or(0) {
        return Some("upstream_status");
    }
    if row.get::<_, i64>(5) != value["latency_ms"].as_i64().unwrap_or(0) {
        return Some("latency_ms");
    }
    for (i, (name, _)) in TEXT_COLUMNS.iter().enumerate() {
        let stored: &str = row.get(6 + i);
        if stored != column(value[*name].as_str().unwrap_or("")) {
            return Some(name);
        }
    }
    None
}

/// The spool's records, for tests and `audit` commands: how many wait.
pub fn spooled_records(path: &Path) -> io::Result<u64> {
    match File::open(path) {
        Ok(f) => Ok(io::BufReader::new(f)
            .split(b'\n')
            .filter(|l| l.as_ref().is_ok_and(|l| !l.is_empty()))
            .count() as u64),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::super::GENESIS;
    use super::*;

    #[test]
    fn genesis_head_parses() {
        assert_eq!(parse_hash(&hex(&GENESIS)), Some(GENESIS));
        assert_eq!(parse_hash("zz"), None);
    }

    #[test]
    fn every_text_column_is_in_the_insert_in_order() {
        let cols = INSERT
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(c, _)| c)
            .unwrap_or_default();
        let cols: Vec<&str> = cols.split(',').map(str::trim).collect();
        let text: Vec<&str> = TEXT_COLUMNS.iter().map(|(n, _)| *n).collect();
        assert_eq!(&cols[5..20], text.as_slice());
        assert_eq!(cols.len(), 23);
    }

    #[test]
    fn spool_appends_replays_and_empties() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.jsonl");
        let mut spool = Spool::open(&path).expect("open");
        let entries: Vec<Entry> = (0..5)
            .map(|i| Entry {
                record_id: format!("id-{i}"),
                record: AuditRecord {
                    request_id: format!("r{i}"),
                    ..AuditRecord::default()
                },
            })
            .collect();
        let refs: Vec<&Entry> = entries.iter().collect();
        spool.append(&refs[..3]).expect("append");
        spool.append(&refs[3..]).expect("append");
        assert_eq!(spool.pending, 5);
        // A restart counts what waits.
        drop(spool);
        let mut spool = Spool::open(&path).expect("reopen");
        assert_eq!(spool.pending, 5);
        let (chunk, offset) = spool.read_chunk(2).expect("chunk");
        assert_eq!(chunk.len(), 2);
        spool.replayed(offset, 2).expect("replayed");
        let (chunk, offset) = spool.read_chunk(10).expect("chunk");
        let ids: Vec<&str> = chunk.iter().map(|e| e.record.request_id.as_str()).collect();
        assert_eq!(ids, ["r2", "r3", "r4"]);
        spool.replayed(offset, 3).expect("replayed");
        assert_eq!(spooled_records(&path).expect("count"), 0);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
