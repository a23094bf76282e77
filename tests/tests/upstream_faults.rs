//! Upstream down, timing out, resetting, or presenting a certificate outside the
//! configured anchors: each gets its own passerelle fault that says whether the request
//! was sent; an ITI-41 submission reaches the DMP at most once.

use std::collections::BTreeMap;

use passerelle_e2e::messages::{find_documents, submission, three_documents, vihf_headers};
use passerelle_e2e::{Harness, Options, Reply, SOAP_CT};
use passerelle_mocks::faults::FaultSpec;

async fn query(h: &Harness) -> Reply {
    let vihf = vihf_headers(&h.eg(0));
    let mut headers: Vec<(&str, &str)> = vihf.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.push(("x-passerelle-tenant", "ch-test-a"));
    h.post("/dmp/registry", &headers, SOAP_CT, find_documents())
        .await
}

async fn submit(h: &Harness, tag: &str) -> Reply {
    let vihf = vihf_headers(&h.eg(0));
    let mut headers: Vec<(&str, &str)> = vihf.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.push(("x-passerelle-tenant", "ch-test-a"));
    let (ct, body) = submission(
        &format!("1.2.250.1.999.{tag}.100"),
        &three_documents(tag),
        &h.eg(0),
    );
    h.post("/dmp/repository", &headers, &ct, body).await
}

fn fault(h: &Harness, operation: &str, spec: FaultSpec) {
    h.dmp
        .faults
        .replace(BTreeMap::from([(operation.to_string(), spec)]))
        .expect("faults");
}

fn assert_fault(reply: &Reply, status: u16, code: &str, sent: bool) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(
        reply.fault_code().as_deref(),
        Some(code),
        "{}",
        reply.text()
    );
    assert!(
        reply.text().contains(&format!(
            "<passerelle:SentUpstream>{sent}</passerelle:SentUpstream>"
        )),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn upstream_down_is_unreachable_and_nothing_was_sent() {
    // A port nobody listens on: tcpmux's (1), privileged and unused. A port freed by
    // binding and dropping a listener could be taken by another test's server meanwhile.
    let closed = 1;
    let h = Harness::start_with(Options {
        dmp_url: Some(format!(
            "https://localhost:{closed}/si-dmp-server/v2/services"
        )),
        ..Options::default()
    })
    .await;
    let reply = query(&h).await;
    assert_fault(&reply, 502, "UpstreamUnreachable", false);
    assert!(
        reply.text().contains("can be sent again"),
        "{}",
        reply.text()
    );
    let reply = submit(&h, "down").await;
    assert_fault(&reply, 502, "UpstreamUnreachable", false);
}

#[tokio::test]
async fn upstream_with_a_certificate_outside_the_anchors_fails_tls() {
    let h = Harness::start_with(Options {
        dmp_trust_anchor: Some("bad/other-root.foreign-root.pem".into()),
        ..Options::default()
    })
    .await;
    let reply = query(&h).await;
    assert_fault(&reply, 502, "UpstreamTls", false);
    assert!(
        reply.text().to_lowercase().contains("certificate"),
        "{}",
        reply.text()
    );
    assert_eq!(h.dmp.stats.count("RegistryStoredQuery", "ok"), 0);
}

#[tokio::test]
async fn timeout_and_reset_get_their_faults_and_a_submission_is_sent_at_most_once() {
    let h = Harness::start_with(Options {
        request_timeout: Some("1s"),
        ..Options::default()
    })
    .await;

    fault(
        &h,
        "RegistryStoredQuery",
        FaultSpec {
            latency_ms: 2500,
            ..FaultSpec::default()
        },
    );
    let reply = query(&h).await;
    assert_fault(&reply, 504, "UpstreamTimeout", true);

    fault(
        &h,
        "RegistryStoredQuery",
        FaultSpec {
            reset_after_bytes: Some(40),
            ..FaultSpec::default()
        },
    );
    let reply = query(&h).await;
    assert_fault(&reply, 502, "UpstreamConnectionLost", true);
    assert!(reply.text().contains("WAS sent"), "{}", reply.text());

    // ITI-41 cut mid-response: the DMP recorded it once, and the proxy did not resend.
    fault(
        &h,
        "ProvideAndRegisterDocumentSet-b",
        FaultSpec {
            reset_after_bytes: Some(40),
            ..FaultSpec::default()
        },
    );
    let reply = submit(&h, "reset").await;
    assert_fault(&reply, 502, "UpstreamConnectionLost", true);
    // ITI-41 answered too late: still once.
    fault(
        &h,
        "ProvideAndRegisterDocumentSet-b",
        FaultSpec {
            latency_ms: 2500,
            ..FaultSpec::default()
        },
    );
    let reply = submit(&h, "slow").await;
    assert_fault(&reply, 504, "UpstreamTimeout", true);
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let submissions = h.dmp_service.submissions();
    assert_eq!(
        submissions,
        vec![
            "1.2.250.1.999.reset.100".to_string(),
            "1.2.250.1.999.slow.100".to_string()
        ],
        "each submission reached the DMP exactly once (the mock registers on receipt)"
    );
    let received = h
        .dmp
        .stats
        .recent_bodies()
        .iter()
        .filter(|b| b.operation == "ProvideAndRegisterDocumentSet-b")
        .count();
    assert_eq!(
        received, 2,
        "two ITI-41 requests received in all: no resend"
    );

    // Faults off: the pool recovers on fresh connections.
    h.dmp.faults.replace(BTreeMap::new()).expect("faults");
    assert_eq!(query(&h).await.status, 200);
}
