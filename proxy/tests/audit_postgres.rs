//! The PostgreSQL audit sink against a real PostgreSQL (a cluster of its own, started by
//! each test): schema migration, commits, the chain and what `verify` finds when rows are
//! edited, deleted or reordered, the same answers as the file sink, and a database that
//! goes away: records spooled and replayed (none lost, none doubled), or new requests
//! refused.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use passerelle_config::{OnAuditFailure, PostgresAudit};
use passerelle_mocks::postgres::TestPostgres;
use passerelle_proxy::audit::postgres::{self, PgTrail};
use passerelle_proxy::audit::query::{self, Filter};
use passerelle_proxy::audit::{AuditRecord, FileTrail, Place, Rotation};

const PATIENTS: [&str; 3] = ["207058575627097", "180016812345678", "295123456789012"];

fn record(i: usize) -> AuditRecord {
    AuditRecord {
        time: format!("2026-01-{:02}T{:02}:00:00Z", 1 + i % 28, i % 24),
        instance: "passerelle-test".into(),
        request_id: format!("request-{i}"),
        source: "10.0.0.1".into(),
        sent_upstream: true,
        message_id: format!("urn:uuid:{i}"),
        client: ["dpi", "lab"][i % 2].into(),
        tenant: ["ch-test-a", "ch-test-b"][i % 2].into(),
        structure: "11690010012".into(),
        service: "dmp/registry".into(),
        action: "urn:ihe:iti:2007:RegistryStoredQuery".into(),
        actor_id: ["899900063480", "810001234567"][i % 3 % 2].into(),
        patient_ins: PATIENTS[i % 3].into(),
        patient_ins_oid: "1.2.250.1.213.1.4.10".into(),
        purpose: "normal".into(),
        outcome: "ok".into(),
        upstream_status: 200,
        latency_ms: i as u64,
        ..AuditRecord::default()
    }
}

fn sink(pg: &TestPostgres, dir: &Path, on_failure: OnAuditFailure) -> PostgresAudit {
    PostgresAudit {
        url: pg.url(),
        password: Some(zeroize::Zeroizing::new(pg.password.clone())),
        ca_file: None,
        on_failure,
        spool: dir.join("spool").join("audit.spool.jsonl"),
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn client(config: &PostgresAudit) -> tokio_postgres::Client {
    postgres::connect(config, || {}).await.expect("connect")
}

async fn table_records(config: &PostgresAudit, filter: &Filter) -> Vec<AuditRecord> {
    let mut c = client(config).await;
    let mut out = Vec::new();
    query::scan_table(&mut c, filter, &mut |_, r| {
        out.push(r.clone());
        Ok(())
    })
    .await
    .expect("scan table");
    out
}

async fn verify(config: &PostgresAudit) -> passerelle_proxy::audit::Verified {
    postgres::verify(&mut client(config).await)
        .await
        .expect("verify")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_and_the_file_answer_the_same_queries() {
    let pg = TestPostgres::start().expect("PostgreSQL");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sink(&pg, dir.path(), OnAuditFailure::Spool);
    let trail = PgTrail::open(&config).expect("open");
    until("connected", || trail.status().up).await;
    let path = dir.path().join("file").join("audit.jsonl");
    let file = FileTrail::open(
        &path,
        Rotation {
            max_bytes: 4_000,
            daily: false,
        },
        false,
    )
    .expect("file trail");
    for i in 0..60 {
        trail.record(&record(i)).await.expect("table");
        file.record(&record(i)).await.expect("file");
    }
    // The schema is versioned.
    assert_eq!(
        pg.psql("passerelle", "SELECT max(version) FROM passerelle_schema")
            .expect("psql"),
        postgres::schema_version().to_string()
    );
    let mut files = passerelle_proxy::audit::rotated_files(&path);
    assert!(files.len() > 2, "rotated: {files:?}");
    files.push(path.clone());
    let since = query::parse_time("2026-01-05").expect("time");
    let until_t = query::parse_time("2026-01-20T12:00:00Z").expect("time");
    let filters = [
        Filter {
            patient: Some(PATIENTS[0].into()),
            ..Filter::default()
        },
        Filter {
            actor: Some("810001234567".into()),
            ..Filter::default()
        },
        Filter {
            tenant: Some("ch-test-b".into()),
            since: Some(since),
            until: Some(until_t),
            ..Filter::default()
        },
        Filter {
            patient: Some(PATIENTS[1].into()),
            actor: Some("810001234567".into()),
            since: Some(since),
            ..Filter::default()
        },
        Filter::default(),
    ];
    for filter in &filters {
        let mut from_file = Vec::new();
        query::scan_files(&files, filter, &mut |_, r| {
            from_file.push(r.clone());
            Ok(())
        })
        .expect("scan files");
        let from_table = table_records(&config, filter).await;
        assert!(!from_file.is_empty(), "{filter:?} matched nothing");
        assert_eq!(from_file, from_table, "{filter:?}");
    }
    // "Who accessed this patient": every third record.
    assert_eq!(
        table_records(
            &config,
            &Filter {
                patient: Some(PATIENTS[0].into()),
                ..Filter::default()
            }
        )
        .await
        .len(),
        20
    );
    let table = verify(&config).await;
    assert_eq!((table.records, table.from_genesis), (60, true));
    assert_eq!(table.broken, None);
    let file_check = passerelle_proxy::audit::verify(&files).expect("verify files");
    assert_eq!((file_check.records, file_check.broken), (60, None));
}

/// Runs SQL as someone who can disable the append-only trigger (the table's owner).
fn tamper(pg: &TestPostgres, sql: &str) {
    pg.psql(
        "passerelle",
        &format!(
            "BEGIN; ALTER TABLE passerelle_audit DISABLE TRIGGER passerelle_audit_append_only; {sql}; ALTER TABLE passerelle_audit ENABLE TRIGGER passerelle_audit_append_only; COMMIT;"
        ),
    )
    .expect("tamper");
}

fn restore(pg: &TestPostgres) {
    tamper(
        pg,
        "DELETE FROM passerelle_audit; INSERT INTO passerelle_audit SELECT * FROM kept; \
         UPDATE passerelle_audit_head SET seq = (SELECT seq FROM kept_head), sha256 = (SELECT sha256 FROM kept_head)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_edited_deleted_or_reordered_row() {
    let pg = TestPostgres::start().expect("PostgreSQL");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sink(&pg, dir.path(), OnAuditFailure::Spool);
    let trail = PgTrail::open(&config).expect("open");
    until("connected", || trail.status().up).await;
    for i in 0..10 {
        trail.record(&record(i)).await.expect("record");
    }
    assert_eq!(verify(&config).await.broken, None);
    // Append-only: the table refuses changes from anyone who keeps the trigger.
    let refused = pg
        .psql(
            "passerelle",
            "UPDATE passerelle_audit SET patient_ins = '' WHERE seq = 3",
        )
        .expect_err("append-only");
    assert!(refused.contains("append-only"), "{refused}");
    assert!(
        pg.psql("passerelle", "DELETE FROM passerelle_audit")
            .is_err()
    );
    pg.psql(
        "passerelle",
        "CREATE TABLE kept AS SELECT * FROM passerelle_audit; CREATE TABLE kept_head AS SELECT * FROM passerelle_audit_head",
    )
    .expect("keep");

    let broken_at = |v: passerelle_proxy::audit::Verified| {
        let b = v.broken.expect("broken");
        match b.place {
            Place::Row { seq } => (seq, b.reason),
            other => panic!("{other:?}"),
        }
    };

    // The chained line edited: its columns no longer say what it says, and the next
    // record's prev_sha256 no longer matches.
    tamper(
        &pg,
        &format!(
            "UPDATE passerelle_audit SET line = replace(line, '{}', '100000000000001') WHERE seq = 4",
            PATIENTS[0]
        ),
    );
    let (seq, reason) = broken_at(verify(&config).await);
    assert_eq!(seq, 4, "{reason}");
    assert!(reason.contains("patient_ins"), "{reason}");
    restore(&pg);
    // Line and column edited together: the chain breaks at the next record.
    tamper(
        &pg,
        &format!(
            "UPDATE passerelle_audit SET line = replace(line, '{0}', '100000000000001'), patient_ins = '100000000000001' WHERE seq = 4",
            PATIENTS[0]
        ),
    );
    let (seq, reason) = broken_at(verify(&config).await);
    assert_eq!(seq, 5, "{reason}");
    assert!(reason.contains("prev_sha256"), "{reason}");
    restore(&pg);
    // Only an indexed column edited (what a query reads).
    tamper(
        &pg,
        "UPDATE passerelle_audit SET actor_id = 'someone-else' WHERE seq = 7",
    );
    let (seq, reason) = broken_at(verify(&config).await);
    assert_eq!(seq, 7, "{reason}");
    assert!(reason.contains("actor_id"), "{reason}");
    restore(&pg);
    // Deleted.
    tamper(&pg, "DELETE FROM passerelle_audit WHERE seq = 6");
    let (seq, reason) = broken_at(verify(&config).await);
    assert_eq!(seq, 7, "{reason}");
    assert!(reason.contains("missing"), "{reason}");
    restore(&pg);
    // Reordered: two records' places swapped.
    tamper(
        &pg,
        "UPDATE passerelle_audit SET seq = -3 WHERE seq = 3; \
         UPDATE passerelle_audit SET seq = 3 WHERE seq = 4; \
         UPDATE passerelle_audit SET seq = 4 WHERE seq = -3",
    );
    let (seq, reason) = broken_at(verify(&config).await);
    assert_eq!(seq, 3, "{reason}");
    restore(&pg);
    // The newest deleted: the head row says where the chain ended.
    tamper(&pg, "DELETE FROM passerelle_audit WHERE seq = 10");
    let (seq, reason) = broken_at(verify(&config).await);
    assert_eq!(seq, 10, "{reason}");
    assert!(reason.contains("head"), "{reason}");
    restore(&pg);
    assert_eq!(verify(&config).await.broken, None);
}

fn spool_path(config: &PostgresAudit) -> PathBuf {
    config.spool.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_down_records_are_spooled_then_replayed_once() {
    let mut pg = TestPostgres::start().expect("PostgreSQL");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sink(&pg, dir.path(), OnAuditFailure::Spool);
    let trail = PgTrail::open(&config).expect("open");
    until("connected", || trail.status().up).await;
    for i in 0..20 {
        trail.record(&record(i)).await.expect("record");
    }
    pg.stop().expect("stop");
    until("connection loss noticed", || !trail.status().up).await;
    assert!(!trail.status().refusing, "spool mode serves");
    // Each acknowledged while the database is down: in the spool, fsynced.
    for i in 20..45 {
        trail.record(&record(i)).await.expect("spooled");
    }
    assert_eq!(trail.status().spooled, 25);
    assert_eq!(
        postgres::spooled_records(&spool_path(&config)).expect("count"),
        25
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(spool_path(&config))
            .expect("spool")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let spooled = std::fs::read(spool_path(&config)).expect("spool");
    pg.start_again().expect("restart");
    until("spool replayed", || {
        trail.status().up && trail.status().spooled == 0
    })
    .await;
    // Records after the replay follow it.
    for i in 45..50 {
        trail.record(&record(i)).await.expect("record");
    }
    let all = table_records(&config, &Filter::default()).await;
    let ids: Vec<String> = all.iter().map(|r| r.request_id.clone()).collect();
    let expected: Vec<String> = (0..50).map(|i| format!("request-{i}")).collect();
    assert_eq!(ids, expected, "all, once, in order");
    assert_eq!(verify(&config).await.broken, None);

    // A commit whose acknowledgement was lost looks like a failure: the same records
    // are spooled again. Replaying them adds nothing.
    drop(trail);
    std::fs::write(spool_path(&config), &spooled).expect("spool again");
    let trail = PgTrail::open(&config).expect("reopen");
    assert_eq!(trail.status().spooled, 25);
    until("replayed again", || {
        trail.status().up && trail.status().spooled == 0
    })
    .await;
    let again = table_records(&config, &Filter::default()).await;
    assert_eq!(again.len(), 50, "none doubled");
    assert_eq!(verify(&config).await.broken, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_refuse_the_sink_says_so_while_the_database_is_down() {
    let mut pg = TestPostgres::start().expect("PostgreSQL");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = sink(&pg, dir.path(), OnAuditFailure::Refuse);
    let trail = PgTrail::open(&config).expect("open");
    until("connected", || trail.status().up).await;
    assert!(!trail.status().refusing);
    pg.stop().expect("stop");
    until("refusing", || trail.status().refusing).await;
    // A record of an exchange already under way is still kept (spooled), never lost.
    trail.record(&record(0)).await.expect("spooled");
    assert_eq!(trail.status().spooled, 1);
    pg.start_again().expect("restart");
    until("serving again", || {
        !trail.status().refusing && trail.status().spooled == 0
    })
    .await;
    assert_eq!(table_records(&config, &Filter::default()).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_never_reached_spools_from_the_start() {
    // A port nothing listens on.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = PostgresAudit {
        url: "postgres://passerelle@127.0.0.1:1/passerelle?sslmode=disable".into(),
        password: None,
        ca_file: None,
        on_failure: OnAuditFailure::Spool,
        spool: dir.path().join("spool.jsonl"),
    };
    let trail = PgTrail::open(&config).expect("open");
    trail.record(&record(0)).await.expect("spooled");
    let status = trail.status();
    assert!(!status.up && status.spooled == 1 && !status.refusing);
}

/// The separation docs/operations.md describes: once the owner created the schema, a
/// role granted only SELECT and INSERT on the records (and the head row) writes them,
/// verifies them, and can neither change nor remove one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_with_only_insert_and_select_writes_and_verifies() {
    let pg = TestPostgres::start().expect("PostgreSQL");
    let dir = tempfile::tempdir().expect("tempdir");
    let owner = sink(&pg, dir.path(), OnAuditFailure::Spool);
    let trail = PgTrail::open(&owner).expect("open");
    until("schema created", || trail.status().up).await;
    trail.record(&record(0)).await.expect("record");
    drop(trail);
    pg.psql(
        "passerelle",
        "CREATE ROLE writer LOGIN PASSWORD 'writer-password'; \
         GRANT SELECT, INSERT ON passerelle_audit TO writer; \
         GRANT SELECT, UPDATE ON passerelle_audit_head TO writer; \
         GRANT SELECT ON passerelle_schema TO writer",
    )
    .expect("grants");
    let writer = PostgresAudit {
        url: owner.url.replace("passerelle@", "writer@"),
        password: Some(zeroize::Zeroizing::new("writer-password".into())),
        spool: dir.path().join("writer.spool.jsonl"),
        ..owner.clone()
    };
    let trail = PgTrail::open(&writer).expect("open");
    until("connected as writer", || trail.status().up).await;
    for i in 1..5 {
        trail.record(&record(i)).await.expect("record");
    }
    assert_eq!(trail.status().spooled, 0, "committed, not spooled");
    let checked = verify(&writer).await;
    assert_eq!((checked.records, checked.broken), (5, None));
    let c = client(&writer).await;
    let denied = c
        .execute(
            "UPDATE passerelle_audit SET client = 'x' WHERE seq = 1",
            &[],
        )
        .await
        .expect_err("no UPDATE");
    assert!(
        format!("{denied:?}").contains("permission denied"),
        "{denied:?}"
    );
    assert!(
        c.execute("DELETE FROM passerelle_audit", &[])
            .await
            .is_err(),
        "no DELETE"
    );
}

/// `check --online`'s look at the audit database: it reads, never writes, and names
/// what to fix: the password file, a missing grant, or a database that does not answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_online_check_names_the_password_the_grant_or_the_database_at_fault() {
    let mut pg = TestPostgres::start().expect("PostgreSQL");
    let dir = tempfile::tempdir().expect("tempdir");
    let owner = sink(&pg, dir.path(), OnAuditFailure::Refuse);

    let fresh = postgres::probe(&owner).await;
    assert!(fresh.ok, "{fresh:?}");
    assert!(fresh.message.contains("no schema yet"), "{fresh:?}");
    let tables = pg
        .psql(
            "passerelle",
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'passerelle%'",
        )
        .expect("count tables");
    assert_eq!(tables.trim(), "0", "the probe created nothing");

    let trail = PgTrail::open(&owner).expect("open");
    until("schema created", || trail.status().up).await;
    drop(trail);
    let migrated = postgres::probe(&owner).await;
    assert!(migrated.ok, "{migrated:?}");
    assert!(
        migrated.message.contains("INSERT and SELECT granted"),
        "{migrated:?}"
    );

    let wrong = PostgresAudit {
        password: Some(zeroize::Zeroizing::new("not-the-password".into())),
        ..owner.clone()
    };
    let refused = postgres::probe(&wrong).await;
    assert!(!refused.ok);
    assert_eq!(
        refused.setting.as_deref(),
        Some("audit.password_file"),
        "{refused:?}"
    );
    assert!(!refused.message.contains("not-the-password"), "{refused:?}");

    pg.psql(
        "passerelle",
        "CREATE ROLE reader LOGIN PASSWORD 'reader-password'; \
         GRANT SELECT ON passerelle_audit, passerelle_audit_head, passerelle_schema TO reader",
    )
    .expect("grants");
    let reader = PostgresAudit {
        url: owner.url.replace("passerelle@", "reader@"),
        password: Some(zeroize::Zeroizing::new("reader-password".into())),
        ..owner.clone()
    };
    let short = postgres::probe(&reader).await;
    assert!(!short.ok, "{short:?}");
    assert_eq!(
        short.setting.as_deref(),
        Some("database grants"),
        "{short:?}"
    );
    assert!(short.message.contains("INSERT"), "{short:?}");

    pg.stop().expect("stop");
    let down = postgres::probe(&owner).await;
    assert!(!down.ok, "{down:?}");
    assert!(down.setting.is_some(), "{down:?}");
}
