//! The PostgreSQL audit sink end to end: internal requests over sockets through the
//! proxy to the mock DMP, the records in a real PostgreSQL (started by each test).
//! Every answer's record is committed before the answer arrives (100 at once); the
//! database stopped mid-load with `spool`: every answered exchange ends in the table
//! once; with `refuse`: faults, nothing sent upstream, then service again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use passerelle_e2e::{Harness, Options};
use passerelle_mocks::postgres::TestPostgres;

/// A harness whose `[audit]` is the PostgreSQL `pg`, with `on_failure`.
async fn harness(pg: &TestPostgres, on_failure: &str) -> Harness {
    let dir = std::env::temp_dir().join(format!(
        "passerelle-e2e-pg-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let password = dir.join("pg.password");
    pg.write_password_file(&password).expect("password file");
    Harness::start_with(Options {
        keys: vec![
            ("audit", "sink", "postgres".into()),
            ("audit", "url", pg.url().into()),
            (
                "audit",
                "password_file",
                password.display().to_string().into(),
            ),
            ("audit", "on_failure", on_failure.into()),
            (
                "audit",
                "spool",
                dir.join("spool.jsonl").display().to_string().into(),
            ),
        ],
        ..Options::default()
    })
    .await
}

async fn database(pg: &TestPostgres) -> tokio_postgres::Client {
    let config = format!(
        "host=127.0.0.1 port={} user=passerelle dbname=passerelle password={}",
        pg.port, pg.password
    );
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

async fn wait_ready(h: &Harness, want: u16) -> String {
    let started = Instant::now();
    loop {
        let (status, body) = h.admin("/readyz").await;
        if status == want {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "/readyz stayed {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_record_is_committed_before_its_answer_under_100_concurrent_requests() {
    let pg = TestPostgres::start().expect("PostgreSQL");
    let h = Arc::new(harness(&pg, "spool").await);
    wait_ready(&h, 200).await;
    let db = Arc::new(database(&pg).await);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (h, db) = (Arc::clone(&h), Arc::clone(&db));
        tasks.push(tokio::spawn(async move {
            let reply = h.dmp_query_a().await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            let id = reply
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .expect("request id")
                .to_string();
            // Read at once, as the answer arrived: the row is already committed.
            let rows: i64 = db
                .query_one(
                    "SELECT count(*) FROM passerelle_audit WHERE request_id = $1",
                    &[&id],
                )
                .await
                .expect("count")
                .get(0);
            assert_eq!(
                rows, 1,
                "request {id}: {rows} row(s) when its answer arrived"
            );
            id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("task"));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    let total: i64 = db
        .query_one(
            "SELECT count(*) FROM passerelle_audit WHERE sent_upstream",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(total, 100);
    let (_, metrics) = h.admin("/metrics").await;
    assert!(metrics.contains("passerelle_audit_sink_up 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_stopped_mid_load_with_spool_loses_and_doubles_nothing() {
    let mut pg = TestPostgres::start().expect("PostgreSQL");
    let h = Arc::new(harness(&pg, "spool").await);
    wait_ready(&h, 200).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (h, stop) = (Arc::clone(&h), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let reply = h.dmp_query_a().await;
                assert_eq!(reply.status, 200, "spool mode serves: {}", reply.text());
                answered.push(
                    reply
                        .headers
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .expect("id")
                        .to_string(),
                );
            }
            answered
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    pg.stop().expect("stop PostgreSQL");
    // Ready all along (spool mode serves), saying where the records go.
    let started = Instant::now();
    loop {
        let (status, body) = h.admin("/readyz").await;
        assert_eq!(status, 200, "{body}");
        if body.contains("degraded audit") && body.contains("unreachable") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (_, metrics) = h.admin("/metrics").await;
    assert!(metrics.contains("passerelle_audit_sink_up 0"), "{metrics}");
    let spooled: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("passerelle_audit_spooled_records "))
        .and_then(|v| v.parse().ok())
        .expect("spooled records");
    assert!(spooled > 0, "requests went on while the database was down");
    pg.start_again().expect("start PostgreSQL");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = Vec::new();
    for w in workers {
        answered.extend(w.await.expect("worker"));
    }
    // The spool drains.
    let started = Instant::now();
    loop {
        let (_, metrics) = h.admin("/metrics").await;
        if metrics.contains("passerelle_audit_spooled_records 0")
            && metrics.contains("passerelle_audit_sink_up 1")
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let db = database(&pg).await;
    let rows = db
        .query(
            "SELECT request_id, count(*) FROM passerelle_audit WHERE sent_upstream GROUP BY request_id",
            &[],
        )
        .await
        .expect("rows");
    let mut in_table: Vec<String> = Vec::new();
    for row in &rows {
        let n: i64 = row.get(1);
        assert_eq!(
            n,
            1,
            "request {} recorded {n} times",
            row.get::<_, String>(0)
        );
        in_table.push(row.get(0));
    }
    in_table.sort();
    answered.sort();
    assert!(answered.len() > 20, "load ran: {}", answered.len());
    assert_eq!(in_table, answered, "every answered exchange, once");
    assert_eq!(
        h.dmp_service.exchanges().len(),
        answered.len(),
        "as many as the DMP received"
    );
    let spooled: i64 = pg
        .psql("passerelle", "SELECT count(*) FROM passerelle_audit")
        .expect("psql")
        .parse()
        .expect("count");
    assert_eq!(spooled as usize, answered.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_stopped_with_refuse_refuses_and_sends_nothing() {
    let mut pg = TestPostgres::start().expect("PostgreSQL");
    let h = harness(&pg, "refuse").await;
    wait_ready(&h, 200).await;
    assert_eq!(h.dmp_query_a().await.status, 200);
    pg.stop().expect("stop PostgreSQL");
    let body = wait_ready(&h, 503).await;
    assert!(body.contains("audit database"), "{body}");
    let before = h.dmp_service.exchanges().len();
    for _ in 0..5 {
        let reply = h.dmp_query_a().await;
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(reply.fault_code().as_deref(), Some("AuditUnavailable"));
        let text = reply.text();
        assert!(
            text.contains("<passerelle:SentUpstream>false</passerelle:SentUpstream>"),
            "{text}"
        );
        assert_eq!(
            reply
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("5")
        );
    }
    let insi = h.insi_search_a().await;
    assert_eq!(insi.fault_code().as_deref(), Some("AuditUnavailable"));
    assert_eq!(
        h.dmp_service.exchanges().len(),
        before,
        "nothing sent upstream while the database is down"
    );
    pg.start_again().expect("start PostgreSQL");
    wait_ready(&h, 200).await;
    assert_eq!(h.dmp_query_a().await.status, 200);
    let rows: i64 = pg
        .psql(
            "passerelle",
            "SELECT count(*) FROM passerelle_audit WHERE sent_upstream",
        )
        .expect("psql")
        .parse()
        .expect("count");
    assert_eq!(rows, 2, "the two exchanges, none of the refusals");
}
