//! `[trust.ocsp]` with the real binary against a real OCSP responder: `openssl ocsp`
//! serving the test PKI's index, signed by the ORG intermediate (the certificates'
//! issuer). Good, revoked, unknown and responder down, each with its documented
//! behaviour: a revoked certificate's pair is refused at once (`CertificateRevoked`,
//! nothing sent) and `/readyz` answers 503 naming it; unknown and down are soft-fail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use passerelle_certs_test::{Manifest, shared_test_pki};
use passerelle_e2e::binaries::{Passerelle, checked_config};
use passerelle_e2e::ocsp_responder::Responder;
use passerelle_e2e::{SOAP_CT, TOKEN, free_port, messages};

/// The sandbox configuration with `[trust.ocsp]` asking `responder`.
fn config(pki: &Manifest, dir: &Path, responder: &str) -> PathBuf {
    let ocsp: toml::Table =
        format!("responder = {responder:?}\nrefresh = \"1m\"\ntimeout = \"5s\"\n")
            .parse()
            .expect("TOML");
    checked_config(pki, dir, vec![("trust.ocsp", ocsp)])
}

fn wait_for(p: &Passerelle, series: &str, within: Duration) {
    let end = std::time::Instant::now() + within;
    while p.metric(series).is_none() {
        assert!(
            std::time::Instant::now() < end,
            "{series} not within {within:?}; log:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

const A: &str = "tenant=\"ch-test-a\"";

async fn dmp_query(p: &Passerelle, eg: &str) -> passerelle_e2e::Reply {
    let mut headers: Vec<(String, String)> = messages::vihf_headers(eg)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    headers.push(("x-passerelle-tenant".into(), "ch-test-a".into()));
    headers.push(("authorization".into(), format!("Bearer {TOKEN}")));
    passerelle_e2e::post(
        p.address,
        "/dmp/registry",
        &headers,
        SOAP_CT,
        messages::find_documents().into(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_certificates_are_checked_with_a_real_ocsp_responder() {
    let pki = shared_test_pki().expect("PKI");
    let dir = tempfile::tempdir().expect("tempdir");
    let a = &pki.tenants[0];
    let eg = a.geographic_structure_ids[0].clone();
    let tenant_a: Vec<PathBuf> = a.leaves().iter().map(|l| pki.path(&l.cert)).collect();

    // Good: every certificate of tenant A in the index; tenant B's unknown to it.
    let good: Vec<(&Path, bool)> = tenant_a.iter().map(|c| (c.as_path(), false)).collect();
    let responder = Responder::start(&pki, dir.path(), &good);
    let p = Passerelle::start(
        &config(&pki, dir.path(), &responder.url())
            .display()
            .to_string(),
    );
    let good_series =
        format!("passerelle_certificate_ocsp_status{{{A},role=\"dmp_auth\",status=\"good\"}}");
    wait_for(&p, &good_series, Duration::from_secs(30));
    let unknown_b = "passerelle_certificate_ocsp_status{tenant=\"ch-test-b\",role=\"dmp_auth\",status=\"unknown\"}";
    wait_for(&p, unknown_b, Duration::from_secs(30));
    let (status, body) = p.admin_get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(
            "degraded ocsp ch-test-b dmp_auth: the responder does not know this certificate"
        ),
        "unknown is soft-fail, and said: {body}"
    );
    assert!(!body.contains("ch-test-a"), "tenant A is good: {body}");
    let revoked = format!("passerelle_certificate_revoked{{{A},role=\"dmp_auth\"}}");
    assert_eq!(p.metric(&revoked).as_deref(), Some("0"));
    drop(p);
    drop(responder);

    // Revoked: tenant A's DMP authentication certificate. Refused at once, 503.
    let mut entries = good.clone();
    entries[0].1 = true;
    let responder = Responder::start(&pki, dir.path(), &entries);
    let p = Passerelle::start(
        &config(&pki, dir.path(), &responder.url())
            .display()
            .to_string(),
    );
    wait_for(
        &p,
        &format!("passerelle_certificate_ocsp_status{{{A},role=\"dmp_auth\",status=\"revoked\"}}"),
        Duration::from_secs(30),
    );
    assert_eq!(p.metric(&revoked).as_deref(), Some("1"));
    assert_eq!(
        p.metric(&format!(
            "passerelle_certificate_usable{{{A},role=\"dmp_auth\"}}"
        ))
        .as_deref(),
        Some("0")
    );
    let (status, body) = p.admin_get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("certificate revoked (OCSP)") && body.contains("ch-test-a dmp_auth"),
        "{body}"
    );
    let reply = dmp_query(&p, &eg).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("CertificateRevoked"),
        "{}",
        reply.text()
    );
    assert!(reply.text().contains("OCSP"), "{}", reply.text());
    assert!(
        p.wait_log(&["certificate revoked (OCSP)"], Duration::from_secs(10))
            .is_some(),
        "an error line: {}",
        p.log()
    );
    drop(p);
    drop(responder);

    // A responder the issuer did not delegate (answers signed with a tenant's own key):
    // no usable answer, soft-fail.
    let rogue = Responder::signed_by(
        dir.path(),
        &entries,
        &pki.path(&pki.ca.org_intermediate),
        &pki.path(&a.org_auth.cert),
        &pki.path(&a.org_auth.key),
    );
    let p = Passerelle::start(&config(&pki, dir.path(), &rogue.url()).display().to_string());
    let error_series =
        format!("passerelle_certificate_ocsp_status{{{A},role=\"dmp_auth\",status=\"error\"}}");
    wait_for(&p, &error_series, Duration::from_secs(30));
    assert!(
        p.wait_log(
            &["does not verify with the certificate's issuer"],
            Duration::from_secs(10)
        )
        .is_some(),
        "{}",
        p.log()
    );
    assert_eq!(
        p.metric(&revoked).as_deref(),
        Some("0"),
        "its 'revoked' is not believed"
    );
    drop(p);
    drop(rogue);

    // Responder down: soft-fail, tenant A served as before (its pairs usable), and said.
    let down = format!("http://127.0.0.1:{}/", free_port());
    let p = Passerelle::start(&config(&pki, dir.path(), &down).display().to_string());
    wait_for(&p, &error_series, Duration::from_secs(30));
    assert_eq!(
        p.metric(&format!(
            "passerelle_certificate_usable{{{A},role=\"dmp_auth\"}}"
        ))
        .as_deref(),
        Some("1")
    );
    let (status, body) = p.admin_get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("degraded ocsp ch-test-a dmp_auth:") && body.contains("cannot connect"),
        "{body}"
    );
    // The log comes through a pipe read by another thread: the metric can show the
    // state before its line is read.
    assert!(
        p.wait_log(&["OCSP check failed"], Duration::from_secs(10))
            .is_some(),
        "{}",
        p.log()
    );
}
