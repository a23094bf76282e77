//! Operating Passerelle: metrics (every series, parsed), the audit trail (one line per
//! upstream exchange, with the acting person and the patient), overload (503 +
//! Retry-After), per-client rate limits (429), source CIDRs, slow clients that do not
//! starve the others, and certificate renewal by reload under load.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use passerelle_e2e::messages::insi_search_bare;
use passerelle_e2e::{Harness, Options, SOAP_CT};
use passerelle_mocks::faults::FaultSpec;
use tokio::io::AsyncWriteExt;

/// `name{labels} value` lines of a Prometheus exposition, by metric name.
fn parse_metrics(text: &str) -> BTreeMap<String, Vec<(String, f64)>> {
    let mut out: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("numeric value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        out.entry(name.to_string())
            .or_default()
            .push((labels.to_string(), value));
    }
    out
}

#[tokio::test]
async fn metrics_expose_every_series_and_audit_has_one_line_per_exchange() {
    let h = Harness::start().await;
    assert_eq!(h.dmp_query_a().await.status, 200);
    assert_eq!(h.insi_search_a().await.status, 200);
    let refused = h
        .post(
            "/insi/auto",
            &[("authorization", "Bearer nope")],
            SOAP_CT,
            "<x/>",
        )
        .await;
    assert_eq!(refused.status, 401);

    let (status, text) = h.admin("/metrics").await;
    assert_eq!(status, 200);
    let m = parse_metrics(&text);
    for name in [
        "passerelle_requests_total",
        "passerelle_access_refusals_total",
        "passerelle_request_duration_seconds_bucket",
        "passerelle_request_duration_seconds_sum",
        "passerelle_request_duration_seconds_count",
        "passerelle_upstream_duration_seconds_bucket",
        "passerelle_signing_duration_seconds_bucket",
        "passerelle_in_flight_requests",
        "passerelle_upstream_connections_total",
        "passerelle_upstream_idle_connections",
        "passerelle_upstream_tls_handshakes_total",
        "passerelle_certificate_expiry_seconds",
        "passerelle_reloads_total",
    ] {
        assert!(m.contains_key(name), "{name} missing:\n{text}");
    }
    let requests = &m["passerelle_requests_total"];
    assert!(
        requests
            .iter()
            .any(|(l, v)| l.contains("service=\"dmp/registry\"")
                && l.contains("outcome=\"ok\"")
                && *v == 1.0),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|(l, v)| l.contains("service=\"insi\"")
            && l.contains("outcome=\"ok\"")
            && *v == 1.0),
        "{requests:?}"
    );
    assert!(
        m["passerelle_access_refusals_total"]
            .iter()
            .any(|(l, v)| l == "code=\"UnknownClient\"" && *v == 1.0)
    );
    let expiry = &m["passerelle_certificate_expiry_seconds"];
    assert_eq!(expiry.len(), 10, "2 tenants x 5 roles: {expiry:?}");
    assert!(
        expiry.iter().all(|(_, v)| *v > 86_400.0 * 300.0),
        "{expiry:?}"
    );
    let signing = &m["passerelle_signing_duration_seconds_count"];
    assert_eq!(signing[0].1, 1.0, "one VIHF signed");
    assert!(
        m["passerelle_upstream_tls_handshakes_total"]
            .iter()
            .any(|(l, v)| l.contains("kind=\"full\"") && *v == 1.0)
    );
    let (status, ready) = h.admin("/readyz").await;
    assert_eq!((status, ready.as_str()), (200, "ready\n"));

    // The audit trail: one line per upstream exchange, none for the refusal.
    let lines = h.audit_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let dmp = &lines[0];
    assert_eq!(dmp["service"], "dmp/registry");
    assert_eq!(dmp["action"], "urn:ihe:iti:2007:RegistryStoredQuery");
    assert_eq!(dmp["client"], "sandbox");
    assert_eq!(dmp["tenant"], "ch-test-a");
    assert_eq!(dmp["structure"], h.eg(0).as_str());
    assert_eq!(dmp["actor_id"], "899900063480");
    // One INS format for both services: 15 characters, and the namespace's OID.
    assert_eq!(dmp["patient_ins"], "207058575627097");
    assert_eq!(dmp["patient_ins_oid"], "1.2.250.1.213.1.4.10");
    assert_eq!(dmp["insi_mode"], "");
    assert!(dmp["instance"].as_str().is_some_and(|i| !i.is_empty()));
    assert_eq!(dmp["outcome"], "ok");
    assert_eq!(dmp["upstream_status"], 200);
    assert!(
        dmp["message_id"]
            .as_str()
            .is_some_and(|m| m.starts_with("urn:uuid:"))
    );
    assert!(!dmp["request_id"].as_str().unwrap_or("").is_empty());
    let insi = &lines[1];
    assert_eq!(insi["service"], "insi");
    assert_eq!(insi["action"], "rechercherInsAvecTraitsIdentite");
    assert_eq!(insi["patient_ins"], "207058575627097", "the INS returned");
    assert_eq!(insi["patient_ins_oid"], "1.2.250.1.213.1.4.10");
    assert_eq!(insi["insi_mode"], "auto");
    assert_eq!(insi["instance"], dmp["instance"]);
    assert!(
        insi["message_id"]
            .as_str()
            .is_some_and(|m| m.starts_with("uuid:"))
    );
}

#[tokio::test]
async fn overload_gets_503_with_retry_after() {
    let h = Harness::start_with(Options {
        listener: vec![("max_concurrent_requests", toml::Value::Integer(1))],
        ..Options::default()
    })
    .await;
    h.insi
        .faults
        .replace(BTreeMap::from([(
            "*".to_string(),
            FaultSpec {
                latency_ms: 800,
                ..FaultSpec::default()
            },
        )]))
        .expect("faults");
    let (slow, quick) = tokio::join!(h.insi_search_a(), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.insi_search_a().await
    });
    assert_eq!(slow.status, 200, "{}", slow.text());
    assert_eq!(quick.status, 503, "{}", quick.text());
    assert_eq!(quick.fault_code().as_deref(), Some("Overloaded"));
    assert_eq!(
        quick
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
}

fn clients(rate: Option<f64>, cidr: &str) -> toml::Value {
    let mut client = toml::Table::new();
    client.insert("name".into(), "lab".into());
    client.insert("source_cidrs".into(), toml::Value::Array(vec![cidr.into()]));
    client.insert(
        "token_sha256".into(),
        "24b9cd79145e7e5dbc8a202c85b29f5c13a1b7a9bf060a5d9dfa6c1e756c0a92".into(),
    );
    client.insert(
        "tenants".into(),
        toml::Value::Array(vec!["ch-test-a".into()]),
    );
    client.insert("services".into(), toml::Value::Array(vec!["insi".into()]));
    if let Some(r) = rate {
        client.insert("rate_per_second".into(), toml::Value::Float(r));
    }
    toml::Value::Array(vec![toml::Value::Table(client)])
}

#[tokio::test]
async fn rate_limit_and_source_cidr_refuse_before_upstream() {
    let h = Harness::start_with(Options {
        clients: Some(clients(Some(1.0), "127.0.0.0/8")),
        ..Options::default()
    })
    .await;
    assert_eq!(h.insi_search_a().await.status, 200);
    let limited = h.insi_search_a().await;
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(limited.fault_code().as_deref(), Some("RateLimited"));
    assert!(limited.headers.contains_key("retry-after"));
    // The client may not use the DMP at all.
    assert_eq!(
        h.dmp_query_a().await.fault_code().as_deref(),
        Some("ServiceNotAllowed")
    );
    assert_eq!(
        h.insi.stats.recent_bodies().len(),
        1,
        "only the first request went upstream"
    );

    let h = Harness::start_with(Options {
        clients: Some(clients(None, "10.0.0.0/8")),
        ..Options::default()
    })
    .await;
    let reply = h.insi_search_a().await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.fault_code().as_deref(), Some("SourceNotAllowed"));
    assert!(h.insi.stats.recent_bodies().is_empty());
}

#[tokio::test]
async fn a_thousand_idle_or_slow_connections_do_not_stop_a_normal_client() {
    let h = Harness::start().await;
    let mut idle = Vec::new();
    for i in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(h.proxy().address)
            .await
            .expect("connect");
        if i % 2 == 0 {
            // Slow: headers started, never finished.
            s.write_all(b"POST /insi/auto HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("write");
        }
        idle.push(s);
    }
    let started = std::time::Instant::now();
    let reply = h.insi_search_a().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served in {:?}",
        started.elapsed()
    );
    drop(idle);
}

/// Re-issues tenant A's ORG AUTH_CLI certificate (same subject and key, new serial) with
/// the test ORG intermediate, into `dir`; returns the new serial (upper-case hex).
fn renew_dmp_auth(h: &Harness, dir: &std::path::Path) -> String {
    let leaf = &h.pki.tenants[0].dmp_auth;
    let serial = format!("{:032X}", uuid::Uuid::new_v4().as_u128() >> 1);
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "[v3]\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\ncertificatePolicies = 1.2.250.1.213.1.7.2.1.1.1.1\nauthorityKeyIdentifier = keyid\nsubjectKeyIdentifier = hash\n",
    )
    .expect("ext");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = |rel: &std::path::Path| h.pki.path(rel).display().to_string();
    let req = dir.join("req.pem").display().to_string();
    let new_cert = dir.join("new.cert.pem").display().to_string();
    run(&[
        "x509",
        "-x509toreq",
        "-in",
        &p(&leaf.cert),
        "-signkey",
        &p(&leaf.key),
        "-out",
        &req,
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &req,
        "-CA",
        &p(&h.pki.ca.org_intermediate),
        "-CAkey",
        &p(&h.pki.ca.org_intermediate_key),
        "-set_serial",
        &format!("0x{serial}"),
        "-days",
        "800",
        "-sha256",
        "-extfile",
        &ext.display().to_string(),
        "-extensions",
        "v3",
        "-out",
        &new_cert,
    ]);
    let cert = std::fs::read_to_string(&new_cert).expect("new cert");
    let intermediate =
        std::fs::read_to_string(h.pki.path(&h.pki.ca.org_intermediate)).expect("intermediate");
    // Replace the files in place, as an operator copying the renewal would.
    std::fs::write(dir.join("dmp-auth.cert.pem"), &cert).expect("cert");
    std::fs::write(
        dir.join("dmp-auth.chain.pem"),
        format!("{cert}{intermediate}"),
    )
    .expect("chain");
    serial.trim_start_matches('0').to_string()
}

#[tokio::test]
async fn renewed_certificate_reloaded_under_load_loses_no_request() {
    let dir = dmp_auth_copy();
    let pki = passerelle_certs_test::shared_test_pki().expect("PKI");
    let leaf = pki.tenants[0].dmp_auth.clone();
    let h = Harness::start_with(Options {
        tenant_a_dmp_auth_dir: Some(dir.clone()),
        ..Options::default()
    })
    .await;
    h.dmp
        .faults
        .replace(BTreeMap::from([(
            "*".to_string(),
            FaultSpec {
                latency_ms: 150,
                ..FaultSpec::default()
            },
        )]))
        .expect("faults");
    let old_serial = leaf.serial.trim_start_matches('0').to_uppercase();

    let h = std::sync::Arc::new(h);
    let mut load = Vec::new();
    for i in 0..200 {
        let h = std::sync::Arc::clone(&h);
        load.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis((i % 20) * 20)).await;
            h.dmp_query_a().await
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let new_serial = renew_dmp_auth(&h, &dir);
    h.proxy().proxy.reload().expect("reload accepted");
    let mut failed = Vec::new();
    for task in load {
        let reply = task.await.expect("task");
        if reply.status != 200 {
            failed.push(reply.text());
        }
    }
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );

    // New requests go out on new connections with the renewed certificate.
    h.dmp.faults.replace(BTreeMap::new()).expect("faults");
    assert_eq!(h.dmp_query_a().await.status, 200);
    let stats = h.dmp.stats.to_json();
    let serials: BTreeSet<String> = stats["recent"]
        .as_array()
        .expect("recent")
        .iter()
        .map(|r| {
            r["client_serial"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches('0')
                .to_uppercase()
        })
        .collect();
    assert!(
        serials.contains(&old_serial),
        "requests before the reload used the old certificate: {serials:?}"
    );
    let last = stats["recent"]
        .as_array()
        .and_then(|r| r.last())
        .expect("last");
    assert_eq!(
        last["client_serial"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches('0')
            .to_uppercase(),
        new_serial,
        "the request after the reload presented the renewed certificate"
    );
    let (_, metrics) = h.admin("/metrics").await;
    assert!(
        metrics.contains("passerelle_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload rebuilds only the pools whose material changed: after tenant A's ORG
/// AUTH_CLI is renewed, its DMP pools are new (and present the new certificate) while
/// its INSi pool and every pool of tenant B keep their connections, TLS sessions and
/// counters; the reload reports the serial before and after.
#[tokio::test]
async fn a_reload_rebuilds_only_the_pools_whose_certificate_changed() {
    let dir = dmp_auth_copy();
    let h = Harness::start_with(Options {
        tenant_a_dmp_auth_dir: Some(dir.clone()),
        ..Options::default()
    })
    .await;
    assert_eq!(h.dmp_query_a().await.status, 200);
    assert_eq!(h.insi_search_a().await.status, 200);
    let pools = |text: &str| -> BTreeMap<String, serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(text).expect("JSON");
        v.as_array()
            .expect("array")
            .iter()
            .map(|p| (p["pool"].as_str().expect("name").to_string(), p.clone()))
            .collect()
    };
    let before = pools(&h.admin("/pools").await.1);
    let old_serial = h.pki.tenants[0]
        .dmp_auth
        .serial
        .trim_start_matches('0')
        .to_uppercase();

    let new_serial = renew_dmp_auth(&h, &dir);
    let report = h.proxy().proxy.reload().expect("reload accepted");
    assert_eq!(report.certificates.len(), 1, "{:?}", report.certificates);
    let (tenant, role, was, now) = &report.certificates[0];
    assert_eq!((tenant.as_str(), role.as_str()), ("ch-test-a", "dmp_auth"));
    assert_eq!(
        was.as_deref().map(|s| s.trim_start_matches('0')),
        Some(old_serial.as_str())
    );
    assert_eq!(
        now.as_deref().map(|s| s.trim_start_matches('0')),
        Some(new_serial.as_str())
    );
    assert!(
        !report.pools_built.is_empty()
            && report
                .pools_built
                .iter()
                .all(|p| p.starts_with("ch-test-a dmp/") && p.ends_with("dmp_auth")),
        "only tenant A's DMP pools are rebuilt: {:?}",
        report.pools_built
    );
    assert_eq!(
        report.pools_kept + report.pools_built.len(),
        before.len(),
        "every pool is either kept or rebuilt"
    );

    let after = pools(&h.admin("/pools").await.1);
    let insi = "ch-test-a insi insi_auto";
    assert_eq!(after[insi], before[insi], "the INSi pool is the same pool");
    assert_eq!(after[insi]["full_handshakes"], 1);
    assert_eq!(after[insi]["idle"], 1, "its connection is kept");
    assert_eq!(
        after["ch-test-a dmp/registry dmp_auth"]["requests"], 0,
        "new pool"
    );
    // The next requests: INSi on the kept connection, DMP with the renewed certificate.
    assert_eq!(h.insi_search_a().await.status, 200);
    assert_eq!(h.dmp_query_a().await.status, 200);
    let after = pools(&h.admin("/pools").await.1);
    assert_eq!(after[insi]["full_handshakes"], 1, "no new handshake");
    assert_eq!(after[insi]["requests"], 2);
    let stats = h.dmp.stats.to_json();
    let last = stats["recent"]
        .as_array()
        .and_then(|r| r.last())
        .expect("last");
    assert_eq!(
        last["client_serial"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches('0')
            .to_uppercase(),
        new_serial
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_bad_reload_keeps_the_running_configuration() {
    let dir = dmp_auth_copy();
    let pki = passerelle_certs_test::shared_test_pki().expect("PKI");
    let h = Harness::start_with(Options {
        tenant_a_dmp_auth_dir: Some(dir.clone()),
        ..Options::default()
    })
    .await;
    // The renewal went wrong: an expired certificate (with its key) was copied. Alone
    // it would only disable tenant A's DMP, but the running certificate works: the
    // reload is refused rather than break a working pair.
    let expired = &pki.bad["expired"].files;
    for (from, to) in [
        (&expired.cert, "dmp-auth.cert.pem"),
        (&expired.chain, "dmp-auth.chain.pem"),
        (&expired.key, "dmp-auth.key.pem"),
    ] {
        std::fs::copy(pki.path(from), dir.join(to)).expect("copy");
    }
    let reasons = h.proxy().proxy.reload().expect_err("refused");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("expired") && r.contains("still works")),
        "{reasons:?}"
    );
    assert_eq!(
        h.dmp_query_a().await.status,
        200,
        "still serving with the running material"
    );
    let (_, metrics) = h.admin("/metrics").await;
    assert!(
        metrics.contains("passerelle_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A private copy of tenant A's ORG AUTH_CLI files (`dmp-auth.{cert,chain,key}.pem`),
/// for tests that replace them.
fn dmp_auth_copy() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!(
        "passerelle-e2e-renew-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let pki = passerelle_certs_test::shared_test_pki().expect("PKI");
    let leaf = &pki.tenants[0].dmp_auth;
    for (from, to) in [
        (&leaf.cert, "dmp-auth.cert.pem"),
        (&leaf.chain, "dmp-auth.chain.pem"),
        (&leaf.key, "dmp-auth.key.pem"),
    ] {
        std::fs::copy(pki.path(from), dir.join(to)).expect("copy");
    }
    std::fs::set_permissions(
        dir.join("dmp-auth.key.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    dir
}

/// `[admin] token_sha256`: `/healthz` stays open for probes, every other admin route
/// wants the bearer token (401 with `WWW-Authenticate` otherwise).
#[tokio::test]
async fn the_admin_token_protects_every_route_but_healthz() {
    let token = "admin-secret-for-tests";
    // sha256sum of the token.
    let digest = "dee19532b2e4c8d4b5bd6743d463db624f59ca148151a22504e51e3ed46d748b".to_string();
    let h = Harness::start_with(Options {
        keys: vec![("admin", "token_sha256", toml::Value::String(digest))],
        ..Options::default()
    })
    .await;
    let admin = h.proxy().admin_address;
    let get = |path: &'static str, bearer: Option<&'static str>| async move {
        let mut sender = passerelle_e2e::http1(admin).await;
        let mut request = http::Request::get(path).header(http::header::HOST, "admin");
        if let Some(b) = bearer {
            request = request.header("authorization", format!("Bearer {b}"));
        }
        let response = sender
            .send_request(
                request
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .expect("request"),
            )
            .await
            .expect("response");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap_or("").to_string());
        (response.status().as_u16(), challenge)
    };
    assert_eq!(get("/healthz", None).await.0, 200);
    // Path tricks do not reach a protected route through /healthz.
    for path in [
        "//metrics",
        "/healthz/../metrics",
        "/healthz/",
        "/%68ealthz",
    ] {
        assert_eq!(get(path, None).await.0, 401, "{path}");
    }
    assert_eq!(get("/healthz?probe=1", None).await.0, 200);
    for path in ["/readyz", "/metrics", "/pools", "/nothing"] {
        let (status, challenge) = get(path, None).await;
        assert_eq!(status, 401, "{path}");
        assert!(challenge.is_some_and(|c| c.starts_with("Bearer")), "{path}");
        assert_eq!(get(path, Some("wrong")).await.0, 401, "{path}");
    }
    assert_eq!(get("/readyz", Some(token)).await.0, 200);
    assert_eq!(get("/metrics", Some(token)).await.0, 200);
    assert_eq!(get("/pools", Some(token)).await.0, 200);
}

/// A CRL update that revokes the certificate in use is taken at the next reload: the
/// reload is accepted, and that (tenant, role) pair alone is disabled with
/// `CertificateRevoked`.
#[tokio::test]
async fn a_crl_update_revoking_the_running_certificate_disables_its_pair() {
    let dir = dmp_auth_copy();
    let pki = passerelle_certs_test::shared_test_pki().expect("PKI");
    let revoked = &pki.bad["revoked"].files;
    for (from, to) in [
        (&revoked.cert, "dmp-auth.cert.pem"),
        (&revoked.chain, "dmp-auth.chain.pem"),
        (&revoked.key, "dmp-auth.key.pem"),
    ] {
        std::fs::copy(pki.path(from), dir.join(to)).expect("copy");
    }
    // Started before the CRL listing it was configured.
    let h = Harness::start_with(Options {
        tenant_a_dmp_auth_dir: Some(dir.clone()),
        keys: vec![("trust", "crls", toml::Value::Array(vec![]))],
        ..Options::default()
    })
    .await;
    assert_eq!(h.dmp_query_a().await.status, 200);

    let text = std::fs::read_to_string(&h.config_path).expect("config");
    let mut doc: toml::Table = text.parse().expect("TOML");
    let Some(toml::Value::Table(trust)) = doc.get_mut("trust") else {
        panic!("no [trust]");
    };
    trust.insert(
        "crls".into(),
        toml::Value::Array(vec!["ca/org-intermediate.crl.pem".into()]),
    );
    std::fs::write(&h.config_path, toml::to_string(&doc).expect("TOML")).expect("write");
    let report = h.proxy().proxy.reload().expect("the reload is accepted");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.disables && p.message.contains("revoked")),
        "{:?}",
        report.problems
    );
    let reply = h.dmp_query_a().await;
    assert_eq!(reply.status, 503);
    assert!(
        reply.text().contains("CertificateRevoked"),
        "{}",
        reply.text()
    );
    assert_eq!(h.insi_search_a().await.status, 200, "the other pairs serve");
    let (status, ready) = h.admin("/readyz").await;
    assert_eq!(status, 200);
    assert!(
        ready.contains("degraded ch-test-a dmp_auth CertificateRevoked"),
        "{ready}"
    );
    let (_, metrics) = h.admin("/metrics").await;
    assert!(
        metrics
            .contains("passerelle_certificate_revoked{tenant=\"ch-test-a\",role=\"dmp_auth\"} 1"),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The national service's clock, from its `Date` header: the skew is a metric per pool,
/// and beyond `security.max_clock_skew` (120 s by default) `/readyz` answers 503 (the DMP
/// refuses VIHFs outside its tolerance).
#[tokio::test]
async fn clock_skew_with_a_service_is_measured_and_guards_readiness() {
    let h = Harness::start().await;
    let skew_to = |seconds: i64| {
        h.insi.faults.replace(BTreeMap::from([(
            "*".to_string(),
            FaultSpec {
                clock_offset_s: seconds,
                ..FaultSpec::default()
            },
        )]))
    };
    let skew_metric = |text: &str| -> f64 {
        text.lines()
            .find(|l| {
                l.starts_with("passerelle_upstream_clock_skew_seconds{")
                    && l.contains("service=\"insi\"")
                    && l.contains("role=\"insi_auto\"")
                    && l.contains("tenant=\"ch-test-a\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no skew series:\n{text}"))
    };
    skew_to(60).expect("faults");
    assert_eq!(h.insi_search_a().await.status, 200);
    let skew = skew_metric(&h.admin("/metrics").await.1);
    assert!(
        (-62.0..=-59.0).contains(&skew),
        "the service is 60 s ahead: {skew}"
    );
    assert_eq!(h.admin("/readyz").await.0, 200, "60 s is within 120 s");

    skew_to(300).expect("faults");
    assert_eq!(h.insi_search_a().await.status, 200);
    let skew = skew_metric(&h.admin("/metrics").await.1);
    assert!((-302.0..=-299.0).contains(&skew), "{skew}");
    let (status, body) = h.admin("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("clock skew") && body.contains("ch-test-a insi insi_auto"),
        "{body}"
    );
    // The DMP's clock agrees with ours: INSi's is off, not ours; ready (its alert says so).
    assert_eq!(h.dmp_query_a().await.status, 200);
    let (status, body) = h.admin("/readyz").await;
    assert_eq!(status, 200, "{body}");

    // The clocks agree again: ready again.
    skew_to(0).expect("faults");
    assert_eq!(h.insi_search_a().await.status, 200);
    assert_eq!(h.admin("/readyz").await.0, 200);
}

/// Refused attempts are in the audit trail too (client, source, tenant and service
/// asked, fault code, `sent_upstream` false); those of no identified client within 20 a
/// second, the rest counted.
#[tokio::test]
async fn refused_attempts_are_audited_and_anonymous_ones_are_bounded() {
    let h = Harness::start().await;
    // An identified client asking for a tenant it may not use.
    let reply = h
        .post(
            "/insi/auto",
            &[("x-passerelle-tenant", "ch-unknown")],
            SOAP_CT,
            insi_search_bare("MARTIN", "CLAIRE", "F", "2007-05-14"),
        )
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    let refusals = h.audit_refusals();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let r = &refusals[0];
    assert_eq!(r["client"], "sandbox", "{r}");
    assert_eq!(r["service"], "insi", "{r}");
    assert_eq!(r["tenant"], "ch-unknown", "the tenant asked: {r}");
    assert_eq!(r["source"], "127.0.0.1", "{r}");
    assert_eq!(r["sent_upstream"], false, "{r}");
    assert_eq!(r["upstream_status"], 0, "{r}");
    assert!(
        r["outcome"]
            .as_str()
            .is_some_and(|c| c.starts_with("Tenant")),
        "{r}"
    );
    assert!(h.audit_lines().is_empty(), "no exchange");

    // A flood of requests without credentials: at most a second's worth audited.
    for _ in 0..60 {
        let reply = h
            .post(
                "/insi/auto",
                &[("authorization", "Bearer nope")],
                SOAP_CT,
                "<x/>",
            )
            .await;
        assert_eq!(reply.status, 401);
    }
    let anonymous = h
        .audit_refusals()
        .into_iter()
        .filter(|l| l["outcome"] == "UnknownClient")
        .count();
    assert!((20..60).contains(&anonymous), "{anonymous} of 60 audited");
    let (_, metrics) = h.admin("/metrics").await;
    let suppressed: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("passerelle_audit_refusals_suppressed_total "))
        .and_then(|v| v.parse().ok())
        .expect("suppressed counter");
    assert_eq!(suppressed as usize, 60 - anonymous, "{metrics}");
    // The chain holds over exchanges and refusals alike.
    let verified =
        passerelle_proxy::audit::verify(std::slice::from_ref(&h.audit_path)).expect("verify");
    assert_eq!(verified.broken, None);
    assert_eq!(verified.records, 1 + anonymous);
}
