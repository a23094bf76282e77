//! Revocation of the national services' certificates, against real parts: the mock
//! INSi's SERV SSL certificate checked by OCSP with a real `openssl ocsp` responder
//! (and stapled answers made by `openssl ocsp` from the same kind of index), and by
//! CRLs of its intermediate written by `passerelle-certs-test crl`. Each case of the
//! policy (`[trust] revocation`, `revocation_failure`) with its documented behaviour:
//! good served; revoked refused before a byte is sent (`UpstreamCertificateRevoked`);
//! no status served under soft-fail (counted, `/readyz` says so) and refused under
//! hard-fail (`UpstreamRevocationUnknown`).

use std::path::{Path, PathBuf};

use passerelle_certs_test::{CrlIssuer, CrlOptions, Manifest, shared_test_pki, write_crl};
use passerelle_e2e::ocsp_responder::{Responder, staple};
use passerelle_e2e::{Harness, Options, Reply, free_port};

/// The requests the mock INSi received, whatever their outcome.
fn insi_requests(h: &Harness) -> u64 {
    let stats = h.insi.stats.to_json();
    stats["operations"]
        .as_object()
        .map(|ops| {
            ops.values()
                .filter_map(|o| o.as_object())
                .flat_map(|o| o.values())
                .filter_map(serde_json::Value::as_u64)
                .sum()
        })
        .unwrap_or(0)
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Tenant A's certificates, all good, for the responder of our own certificates.
fn tenant_a_certificates(pki: &Manifest) -> Vec<PathBuf> {
    pki.tenants[0]
        .leaves()
        .iter()
        .map(|l| pki.path(&l.cert))
        .collect()
}

/// `[trust]` keys: the policy, and `[trust.ocsp]` asking `own` about the tenants'
/// certificates and `server` about the services'.
fn ocsp_options(
    revocation: &str,
    failure: &str,
    own: &str,
    server: &str,
    staple: Vec<u8>,
) -> Options {
    let mut ocsp = toml::Table::new();
    ocsp.insert("responder".into(), own.into());
    ocsp.insert("server_responder".into(), server.into());
    ocsp.insert("refresh".into(), "1m".into());
    ocsp.insert("timeout".into(), "3s".into());
    let mut keys = vec![
        ("trust", "revocation", revocation.into()),
        ("trust", "revocation_failure", failure.into()),
        ("trust", "ocsp", toml::Value::Table(ocsp)),
    ];
    if revocation == "ocsp" {
        // "ocsp" consults no CRL: the sandbox's ORG CRL goes.
        keys.push(("trust", "crls", toml::Value::Array(Vec::new())));
    }
    Options {
        keys,
        insi_staple: staple,
        ..Options::default()
    }
}

async fn search(h: &Harness) -> Reply {
    h.insi_search_a().await
}

/// Starts the OCSP task of our own certificates (the binary's `run` does) and waits
/// until tenant A's are answered for (hard-fail holds them until then).
async fn own_certificates_checked(h: &Harness) {
    let task = tokio::spawn(passerelle_proxy::ocsp::keep_checked(std::sync::Arc::clone(
        &h.proxy().proxy,
    )));
    // Runs for the rest of the test (the runtime ends with it).
    drop(task);
    for _ in 0..150 {
        let (_, metrics) = h.admin("/metrics").await;
        if metrics.contains(
            "passerelle_certificate_ocsp_status{tenant=\"ch-test-a\",role=\"insi_auto\",status=\"good\"} 1",
        ) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("tenant A's certificates were not checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_decides_for_the_services_certificate_soft_fail() {
    let pki = shared_test_pki().expect("PKI");
    let dir = tempfile::tempdir().expect("tempdir");
    let own_entries: Vec<PathBuf> = tenant_a_certificates(&pki);
    let own: Vec<(&Path, bool)> = own_entries.iter().map(|c| (c.as_path(), false)).collect();
    let own_responder = Responder::start(&pki, dir.path(), &own);
    let server_cert = pki.path(&pki.server.cert);

    // Good: served; one answer from the responder, whatever the connections.
    let servers = Responder::servers(&pki, dir.path(), &[(server_cert.as_path(), false)]);
    let h = Harness::start_with(ocsp_options(
        "both",
        "soft",
        &own_responder.url(),
        &servers.url(),
        Vec::new(),
    ))
    .await;
    let reply = search(&h).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (_, metrics) = h.admin("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "passerelle_upstream_ocsp_answers_total{source=\"responder\",status=\"good\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "passerelle_upstream_revocation_soft_failures_total"
        ),
        Some(0.0)
    );
    drop(h);
    drop(servers);

    // Revoked: refused after the handshake, before the request; nothing reaches INSi.
    let servers = Responder::servers(&pki, dir.path(), &[(server_cert.as_path(), true)]);
    let h = Harness::start_with(ocsp_options(
        "both",
        "soft",
        &own_responder.url(),
        &servers.url(),
        Vec::new(),
    ))
    .await;
    let reply = search(&h).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("UpstreamCertificateRevoked"),
        "{}",
        reply.text()
    );
    assert!(reply.text().contains("revoked on"), "{}", reply.text());
    assert_eq!(insi_requests(&h), 0, "nothing was sent");
    let again = search(&h).await;
    assert_eq!(
        again.fault_code().as_deref(),
        Some("UpstreamCertificateRevoked")
    );
    let (_, metrics) = h.admin("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "passerelle_upstream_ocsp_answers_total{source=\"responder\",status=\"revoked\"}"
        ),
        Some(1.0),
        "the answer is kept until its nextUpdate: {metrics}"
    );
    drop(h);
    drop(servers);

    // Unknown to the responder, then the responder down: soft-fail, served, counted,
    // and /readyz (still 200) names the server and the reason.
    let servers = Responder::servers(&pki, dir.path(), &[]);
    for url in [servers.url(), format!("http://127.0.0.1:{}/", free_port())] {
        let h = Harness::start_with(ocsp_options(
            "both",
            "soft",
            &own_responder.url(),
            &url,
            Vec::new(),
        ))
        .await;
        let reply = search(&h).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let (_, metrics) = h.admin("/metrics").await;
        assert_eq!(
            metric(
                &metrics,
                "passerelle_upstream_revocation_soft_failures_total"
            ),
            Some(1.0),
            "{metrics}"
        );
        let (status, body) = h.admin("/readyz").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("degraded ocsp server localhost:"),
            "{url}: {body}"
        );
        let (status, _) = h.admin("/readyz?strict").await;
        assert_eq!(status, 503);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_fail_refuses_what_no_source_vouches_for_and_stapled_answers_count() {
    let pki = shared_test_pki().expect("PKI");
    let dir = tempfile::tempdir().expect("tempdir");
    let own_entries: Vec<PathBuf> = tenant_a_certificates(&pki);
    let own: Vec<(&Path, bool)> = own_entries.iter().map(|c| (c.as_path(), false)).collect();
    let own_responder = Responder::start(&pki, dir.path(), &own);
    let server_cert = pki.path(&pki.server.cert);
    let ca = pki.path(&pki.ca.server_intermediate);
    let ca_key = pki.path(&pki.ca.server_intermediate_key);
    let down = format!("http://127.0.0.1:{}/", free_port());

    // The services' responder down, nothing stapled: refused, nothing sent.
    let h = Harness::start_with(ocsp_options(
        "ocsp",
        "hard",
        &own_responder.url(),
        &down,
        Vec::new(),
    ))
    .await;
    own_certificates_checked(&h).await;
    let reply = search(&h).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("UpstreamRevocationUnknown"),
        "{}",
        reply.text()
    );
    assert!(reply.text().contains("cannot connect"), "{}", reply.text());
    assert_eq!(insi_requests(&h), 0, "nothing was sent");
    // Tenant B's certificates are unknown to our responder: under hard-fail, its
    // pairs are not used.
    let (_, body) = h.admin("/readyz").await;
    assert!(
        body.contains("degraded ch-test-b insi_auto CertificateRevocationUnknown"),
        "{body}"
    );
    let b = h
        .post(
            "/insi/auto",
            &[("x-passerelle-tenant", "ch-test-b")],
            passerelle_e2e::SOAP_CT,
            passerelle_e2e::messages::insi_search_bare("MARTIN", "CLAIRE", "F", "2007-05-14"),
        )
        .await;
    assert_eq!(b.status, 503, "{}", b.text());
    assert_eq!(
        b.fault_code().as_deref(),
        Some("CertificateRevocationUnknown")
    );
    drop(h);

    // A stapled "good" vouches on its own: served with the responder still down.
    let good = staple(
        dir.path(),
        &[(server_cert.as_path(), false)],
        &ca,
        &ca_key,
        &server_cert,
    );
    let h = Harness::start_with(ocsp_options(
        "ocsp",
        "hard",
        &own_responder.url(),
        &down,
        good,
    ))
    .await;
    own_certificates_checked(&h).await;
    let reply = search(&h).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (_, metrics) = h.admin("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "passerelle_upstream_ocsp_answers_total{source=\"stapled\",status=\"good\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "passerelle_upstream_ocsp_answers_total{source=\"responder\",status=\"error\"}"
        ),
        None,
        "the responder was not asked: {metrics}"
    );
    drop(h);

    // A stapled "revoked": refused.
    let revoked = staple(
        dir.path(),
        &[(server_cert.as_path(), true)],
        &ca,
        &ca_key,
        &server_cert,
    );
    let h = Harness::start_with(ocsp_options(
        "ocsp",
        "hard",
        &own_responder.url(),
        &down,
        revoked,
    ))
    .await;
    own_certificates_checked(&h).await;
    let reply = search(&h).await;
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("UpstreamCertificateRevoked"),
        "{}",
        reply.text()
    );
    assert!(reply.text().contains("stapled"), "{}", reply.text());
    assert_eq!(insi_requests(&h), 0);
    drop(h);

    // A staple signed by another key (a tenant's, not delegated by the issuer) does
    // not count: the responder is asked (down), so refused.
    let a = &pki.tenants[0];
    let forged = staple(
        dir.path(),
        &[(server_cert.as_path(), false)],
        &pki.path(&a.org_auth.cert),
        &pki.path(&a.org_auth.key),
        &server_cert,
    );
    let h = Harness::start_with(ocsp_options(
        "ocsp",
        "hard",
        &own_responder.url(),
        &down,
        forged,
    ))
    .await;
    own_certificates_checked(&h).await;
    let reply = search(&h).await;
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("UpstreamRevocationUnknown"),
        "{}",
        reply.text()
    );
    let (_, metrics) = h.admin("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "passerelle_upstream_ocsp_answers_total{source=\"stapled\",status=\"error\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
}

/// A CRL of the SERV SSL intermediate, written by the test CA.
fn server_crl(pki: &Manifest, dir: &Path, revoked: &[String], next_update: i64) -> PathBuf {
    let out = dir.join(format!("server-{}.crl", uuid::Uuid::new_v4().simple()));
    let mut options = CrlOptions::new(&pki.dir, &out);
    options.issuer = CrlIssuer::Server;
    options.revoked = revoked.to_vec();
    options.next_update = next_update;
    options.this_update = next_update.min(0) - 3600;
    write_crl(&options).expect("CRL");
    out
}

fn crl_options(failure: &str, upstream_crls: Vec<PathBuf>) -> Options {
    let crls = upstream_crls
        .iter()
        .map(|p| toml::Value::String(p.display().to_string()))
        .collect();
    let crls = toml::Value::Array(crls);
    Options {
        // Hard-fail with CRLs wants one for every upstream (the mocks share the
        // certificate).
        keys: vec![
            ("trust", "revocation", "crl".into()),
            ("trust", "revocation_failure", failure.into()),
            ("insi", "crls", crls.clone()),
            ("dmp", "crls", crls.clone()),
            ("services[0]", "crls", crls),
        ],
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crls_decide_for_the_services_certificate_and_hard_fail_wants_them_current() {
    let pki = shared_test_pki().expect("PKI");
    let dir = tempfile::tempdir().expect("tempdir");
    let serial = pki.server.serial.clone();
    // The root's CRL covers the intermediate: hard-fail checks the whole chain.
    let root_crl = dir.path().join("root.crl");
    let mut options = CrlOptions::new(&pki.dir, &root_crl);
    options.issuer = CrlIssuer::Root;
    write_crl(&options).expect("root CRL");

    // A current CRL that lists the certificate: refused, with its own code.
    let listed = server_crl(&pki, dir.path(), std::slice::from_ref(&serial), 86_400);
    let h = Harness::start_with(crl_options("soft", vec![listed, root_crl.clone()])).await;
    let reply = search(&h).await;
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("UpstreamCertificateRevoked"),
        "{}",
        reply.text()
    );
    assert_eq!(insi_requests(&h), 0);
    drop(h);

    // A stale CRL that does not list it: served under soft-fail, refused under hard.
    let stale = server_crl(&pki, dir.path(), &[], -60);
    let h = Harness::start_with(crl_options("soft", vec![stale.clone(), root_crl.clone()])).await;
    let reply = search(&h).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    drop(h);
    let h = Harness::start_with(crl_options("hard", vec![stale, root_crl.clone()])).await;
    let reply = search(&h).await;
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("UpstreamRevocationUnknown"),
        "{}",
        reply.text()
    );
    assert!(reply.text().contains("nextUpdate"), "{}", reply.text());
    drop(h);

    // Hard-fail, the intermediate's CRL current but no CRL of the root (for the
    // intermediate): refused; with both: served.
    let current = server_crl(&pki, dir.path(), &[], 86_400);
    let h = Harness::start_with(crl_options("hard", vec![current.clone()])).await;
    let reply = search(&h).await;
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("UpstreamRevocationUnknown"),
        "{}",
        reply.text()
    );
    drop(h);
    let h = Harness::start_with(crl_options("hard", vec![current, root_crl])).await;
    let reply = search(&h).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}
