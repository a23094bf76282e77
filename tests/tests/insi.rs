//! INSi through Passerelle: CR 00 with the INSI-AUTO and the INSI-MANU certificate,
//! each chosen by its route; the contexts filled in when the internal system left them
//! out (valid against the CNAM XSDs); a complete request forwarded byte for byte.

use passerelle_e2e::messages::insi_search_bare;
use passerelle_e2e::{Harness, SOAP_CT, spec, xmllint};
use passerelle_soap::Envelope;
use passerelle_soap::envelope::standalone;
use passerelle_soap::insi::{CTXBAM_NS, CTXLPS_NS, OP_TRAITS};

fn validate_header(envelope: &Envelope, ns: &str, local: &str, xsd: &str) {
    let (block, scope) = envelope
        .header(ns, local)
        .unwrap_or_else(|| panic!("{local} present"));
    let alone = standalone(block, &scope);
    let (ok, out) = xmllint(&alone, &spec().join("insi/xsd").join(xsd));
    assert!(ok, "{local}: {out}\n{alone}");
}

#[tokio::test]
async fn search_gets_cr00_with_auto_and_manu_certificates() {
    let h = Harness::start().await;
    let tenant = h.pki.tenants[0].id.clone();
    for (route, role, count) in [
        ("/insi/auto", "insi_auto", 1),
        ("/insi/manu", "insi_manu", 1),
    ] {
        let reply = h
            .post(
                route,
                &[("x-passerelle-tenant", &tenant)],
                SOAP_CT,
                insi_search_bare("MARTIN", "CLAIRE", "F", "2007-05-14"),
            )
            .await;
        assert_eq!(reply.status, 200, "{route}: {}", reply.text());
        let text = reply.text();
        assert!(text.contains("<CodeCR>00</CodeCR>"), "{text}");
        assert!(
            text.contains("<NumIdentifiant>2070585756270</NumIdentifiant>"),
            "{text}"
        );
        let stats = h.insi.stats.to_json();
        assert_eq!(
            stats["clients"][h.subject(0, role)],
            count,
            "{route} used {role}: {stats}"
        );

        // What went upstream: the contexts the proxy added, valid against the CNAM XSDs,
        // Emetteur = the certificate's OU.
        let sent = h.insi.stats.recent_bodies().pop().expect("body recorded");
        let env =
            Envelope::parse(std::str::from_utf8(&sent.body).expect("UTF-8")).expect("envelope");
        validate_header(
            &env,
            CTXLPS_NS,
            "ContexteLPS",
            "CTX/ROOT_ctxlps_CTXLPS_V01_00.xsd",
        );
        validate_header(
            &env,
            CTXBAM_NS,
            "ContexteBAM",
            "CTX/ROOT_ctxbam_CTXBAM_V01_02.xsd",
        );
        let (body, scope) = env.body_element().expect("body");
        let (ok, out) = xmllint(
            &standalone(body, &scope),
            &spec().join("insi/xsd/ServiceIdentiteCertifiee/INSi_RECSANS_INS.xsd"),
        );
        assert!(ok, "{out}");
        let emetteur =
            passerelle_soap::envelope::find_text(&env.root, "Emetteur").expect("Emetteur");
        assert_eq!(emetteur, h.pki.tenants[0].structure_id);
        assert_eq!(
            env.header_text(passerelle_soap::WSA, "Action").as_deref(),
            Some(format!("urn:ServiceIdentiteCertifiee:1.0.0:{OP_TRAITS}").as_str())
        );
    }
    // Neither certificate of the other tenant was used.
    let stats = h.insi.stats.to_json();
    assert!(
        stats["clients"].get(h.subject(1, "insi_auto")).is_none(),
        "{stats}"
    );
    assert!(
        stats["clients"].get(h.subject(1, "insi_manu")).is_none(),
        "{stats}"
    );
}

#[tokio::test]
async fn complete_request_is_forwarded_byte_for_byte() {
    let h = Harness::start().await;
    let example = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/insi-rechercher-traits.xml"
    ))
    .expect("example");
    let reply = h
        .post(
            "/insi/auto",
            &[("x-passerelle-tenant", "ch-test-a")],
            SOAP_CT,
            example.clone(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains("<CodeCR>00</CodeCR>"));
    let sent = h.insi.stats.recent_bodies().pop().expect("body recorded");
    assert_eq!(&sent.body[..], &example[..], "forwarded unchanged");
}

#[tokio::test]
async fn insi_route_without_mode_needs_one_when_both_certificates_exist() {
    let h = Harness::start().await;
    let reply = h
        .post(
            "/insi",
            &[("x-passerelle-tenant", "ch-test-a")],
            SOAP_CT,
            insi_search_bare("MARTIN", "CLAIRE", "F", "2007-05-14"),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("InsiModeRequired"),
        "{}",
        reply.text()
    );
    assert!(reply.text().contains("/insi/auto"));
    assert!(
        h.insi.stats.recent_bodies().is_empty(),
        "nothing sent upstream"
    );
}
