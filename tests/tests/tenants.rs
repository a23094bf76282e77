//! Two tenants in one proxy: each request reaches the mocks with its own tenant's
//! certificates, never the other's; a structure outside the tenant is refused before
//! any upstream byte (no connection even opened).

use std::sync::atomic::Ordering;

use passerelle_e2e::messages::{find_documents, insi_search_bare, vihf_headers};
use passerelle_e2e::{Harness, SOAP_CT};

#[tokio::test]
async fn each_tenant_uses_its_own_certificates() {
    let h = Harness::start().await;
    for round in 0..3 {
        for t in 0..2 {
            let tenant = h.pki.tenants[t].id.clone();
            let vihf = vihf_headers(&h.eg(t));
            let mut headers: Vec<(&str, &str)> =
                vihf.iter().map(|(k, v)| (*k, v.as_str())).collect();
            headers.push(("x-passerelle-tenant", &tenant));
            let reply = h
                .post("/dmp/registry", &headers, SOAP_CT, find_documents())
                .await;
            assert_eq!(
                reply.status,
                200,
                "tenant {t} round {round}: {}",
                reply.text()
            );
            let reply = h
                .post(
                    "/insi/auto",
                    &[("x-passerelle-tenant", &tenant)],
                    SOAP_CT,
                    insi_search_bare("MARTIN", "CLAIRE", "F", "2007-05-14"),
                )
                .await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    }
    let dmp = h.dmp.stats.to_json();
    let insi = h.insi.stats.to_json();
    for t in 0..2 {
        assert_eq!(dmp["clients"][h.subject(t, "dmp_auth")], 3, "{dmp}");
        assert_eq!(insi["clients"][h.subject(t, "insi_auto")], 3, "{insi}");
    }
    assert_eq!(
        dmp["clients"].as_object().map(|o| o.len()),
        Some(2),
        "only the two DMP certificates: {dmp}"
    );
    assert_eq!(
        insi["clients"].as_object().map(|o| o.len()),
        Some(2),
        "only the two INSI-AUTO certificates: {insi}"
    );
    // The mock DMP also checked that each VIHF's Issuer is the TLS client's subject.
    assert_eq!(h.dmp.stats.count("RegistryStoredQuery", "ok"), 6);
}

#[tokio::test]
async fn structure_of_another_tenant_is_refused_before_any_upstream_byte() {
    let h = Harness::start().await;
    let a = h.pki.tenants[0].id.clone();
    // Tenant B's legal entity, then one of B's geographic entities, under tenant A.
    for foreign in [
        h.pki.tenants[1].structure_id.clone(),
        h.pki.tenants[1].geographic_structure_ids[0].clone(),
    ] {
        let vihf = vihf_headers(&foreign);
        let mut headers: Vec<(&str, &str)> = vihf.iter().map(|(k, v)| (*k, v.as_str())).collect();
        headers.push(("x-passerelle-tenant", &a));
        let reply = h
            .post("/dmp/registry", &headers, SOAP_CT, find_documents())
            .await;
        assert_eq!(reply.status, 403, "{}", reply.text());
        assert_eq!(reply.fault_code().as_deref(), Some("ForeignStructure"));
        assert!(
            reply.text().contains(&foreign),
            "the reason names the structure"
        );
        assert!(
            reply
                .text()
                .contains("<passerelle:SentUpstream>false</passerelle:SentUpstream>")
        );
    }
    // One of A's own geographic entities is fine.
    let vihf = vihf_headers(&h.pki.tenants[0].geographic_structure_ids[1]);
    let mut headers: Vec<(&str, &str)> = vihf.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.push(("x-passerelle-tenant", &a));
    let before = connections(&h);
    assert_eq!(
        before, 0,
        "no upstream connection was opened for the refused requests"
    );
    assert!(h.dmp.stats.recent_bodies().is_empty());
    let reply = h
        .post("/dmp/registry", &headers, SOAP_CT, find_documents())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

fn connections(h: &Harness) -> u64 {
    h.proxy()
        .state()
        .pools()
        .map(|p| p.stats.connections.load(Ordering::Relaxed))
        .sum()
}
