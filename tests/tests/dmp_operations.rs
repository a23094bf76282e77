//! Every operation of the DMP WSDL annex, SIH -> Passerelle -> mock DMP, with requests
//! written from the WSDL/XSD (`mocks/fixtures/dmp`), not from Passerelle's output; the
//! mock validates each body against its XSD and answers with a schema-valid body.
//! WS-Addressing as the official examples send it (empty `To` and `MessageID`), SOAP
//! version / media type mismatches, and the VIHF's `LPS_ID`.

use passerelle_e2e::messages::vihf_headers;
use passerelle_e2e::{Harness, Options, SOAP_CT, xmllint};
use passerelle_mocks::fixtures::{DMP_OPERATIONS, body_element, dmp_dir};
use passerelle_soap::Envelope;
use passerelle_soap::envelope::standalone;

const WSA: &str = "http://www.w3.org/2005/08/addressing";

/// An envelope as the official examples write it: `Action` filled, `MessageID` and `To`
/// present but empty, no `ReplyTo`.
fn official_style(action: &str, body: &str) -> String {
    format!(
        r#"<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Header><Action xmlns="{WSA}" soap:mustUnderstand="true">{action}</Action><MessageID xmlns="{WSA}"/><To xmlns="{WSA}"/></soap:Header><soap:Body>{body}</soap:Body></soap:Envelope>"#
    )
}

fn headers<'a>(tenant: &'a str, vihf: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    let mut h: Vec<(&str, &str)> = vihf.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.push(("x-passerelle-tenant", tenant));
    h
}

/// The SOAP envelope a mock received last, and its Content-Type.
fn last_received(h: &Harness) -> (String, String) {
    let last = h
        .dmp
        .stats
        .recent_bodies()
        .pop()
        .expect("the mock received a request");
    let body = if last.content_type.starts_with("multipart/related") {
        passerelle_soap::mtom::parse(&last.content_type, &last.body)
            .expect("MTOM")
            .root
    } else {
        last.body.clone()
    };
    (
        String::from_utf8(body.to_vec()).expect("UTF-8"),
        last.content_type,
    )
}

fn count_wsa(envelope: &str, local: &str) -> (usize, Vec<String>) {
    let env = Envelope::parse(envelope).expect("envelope");
    let n = env.header_count(WSA, local);
    let text = env.header_text(WSA, local).into_iter().collect();
    (n, text)
}

#[tokio::test]
async fn every_wsdl_operation_goes_through_and_is_answered_valid() {
    let h = Harness::start().await;
    let tenant = h.pki.tenants[0].id.clone();
    let vihf = vihf_headers(&h.eg(0));
    let hdrs = headers(&tenant, &vihf);
    let mut sent = 0;
    for op in DMP_OPERATIONS {
        for action in op.actions {
            let request = official_style(action, body_element(op.request));
            let reply = h
                .post(&format!("/dmp/{}", op.service), &hdrs, SOAP_CT, request)
                .await;
            assert_eq!(reply.status, 200, "{action}: {}", reply.text());
            sent += 1;
            // Upstream saw exactly one of each WS-Addressing header, filled.
            let (upstream, _) = last_received(&h);
            for local in ["MessageID", "To", "ReplyTo", "Action"] {
                let (n, text) = count_wsa(&upstream, local);
                assert_eq!(n, 1, "{action}: {local} in {upstream}");
                // ReplyTo's content is its Address element, checked by the mock.
                assert!(
                    local == "ReplyTo" || text.iter().all(|t| !t.is_empty()),
                    "{action}: empty {local}"
                );
            }
            if op.name == "iti43" {
                continue; // an MTOM answer; its body is checked by the ITI-43 tests
            }
            let env = Envelope::parse(&reply.text()).expect("answer envelope");
            let (e, scope) = env.body_element().expect("answer body");
            let alone = standalone(e, &scope);
            let (ok, out) = xmllint(&alone, &dmp_dir().join(op.response_schema));
            assert!(ok, "{action}: {out}\n{alone}");
        }
    }
    let exchanges = h.dmp_service.exchanges();
    assert_eq!(exchanges.len(), sent, "every request accepted once");
    // The audit trail has a line per exchange, with the Action as sent.
    let audit = h.audit_lines();
    assert_eq!(audit.len(), sent);
    assert!(
        audit
            .iter()
            .any(|l| l["action"] == "urn:hl7-org:v3:setAuthorization")
    );
}

#[tokio::test]
async fn empty_to_and_message_id_are_filled_in_place_and_duplicates_refused() {
    let h = Harness::start().await;
    let tenant = h.pki.tenants[0].id.clone();
    let vihf = vihf_headers(&h.eg(0));
    let hdrs = headers(&tenant, &vihf);
    let op = DMP_OPERATIONS[0];
    let request = official_style(op.actions[0], body_element(op.request));
    let reply = h
        .post("/dmp/registry", &hdrs, SOAP_CT, request.clone())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (upstream, _) = last_received(&h);
    let (n, to) = count_wsa(&upstream, "To");
    assert_eq!(n, 1, "{upstream}");
    assert!(
        to[0].starts_with("https://localhost:")
            && to[0].ends_with("/si-dmp-server/v2/services/registry"),
        "{to:?}"
    );
    let (n, id) = count_wsa(&upstream, "MessageID");
    assert_eq!(n, 1);
    assert!(id[0].starts_with("urn:uuid:"), "{id:?}");
    // The audit line carries the MessageID that went upstream.
    assert_eq!(h.audit_lines()[0]["message_id"], id[0].as_str());

    // A MessageID the SIH gave is kept as it is.
    let mine = "urn:uuid:0f0e0d0c-0b0a-4909-8807-060504030201";
    let with_id = request.replace(
        &format!("<MessageID xmlns=\"{WSA}\"/>"),
        &format!("<MessageID xmlns=\"{WSA}\">{mine}</MessageID>"),
    );
    let reply = h.post("/dmp/registry", &hdrs, SOAP_CT, with_id).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(count_wsa(&last_received(&h).0, "MessageID").1, [mine]);

    // Two To, two MessageID, two Action: refused before anything is sent.
    let before = h.dmp_service.exchanges().len();
    for local in ["To", "MessageID", "Action", "ReplyTo"] {
        let block = format!("<{local} xmlns=\"{WSA}\">x</{local}>");
        let twice = request.replace("<soap:Header>", &format!("<soap:Header>{block}{block}"));
        let reply = h.post("/dmp/registry", &hdrs, SOAP_CT, twice).await;
        assert_eq!(reply.status, 400, "{local}: {}", reply.text());
        assert_eq!(reply.fault_code().as_deref(), Some("DuplicateHeader"));
        assert!(
            reply.text().contains(&format!("wsa:{local}")),
            "{}",
            reply.text()
        );
    }
    assert_eq!(h.dmp_service.exchanges().len(), before);
}

#[tokio::test]
async fn media_type_follows_the_envelope_soap_version() {
    let h = Harness::start().await;
    let tenant = h.pki.tenants[0].id.clone();
    let vihf = vihf_headers(&h.eg(0));
    let hdrs = headers(&tenant, &vihf);
    let op = DMP_OPERATIONS[0];
    let soap12 = official_style(op.actions[0], body_element(op.request));
    // SOAP 1.2 labelled text/xml: sent as application/soap+xml.
    let reply = h
        .post(
            "/dmp/registry",
            &hdrs,
            "text/xml; charset=utf-8",
            soap12.clone(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (_, ct) = last_received(&h);
    assert!(ct.starts_with("application/soap+xml"), "{ct}");
    // SOAP 1.1 labelled application/soap+xml: sent as text/xml with a SOAPAction.
    let soap11 = soap12.replace(
        "http://www.w3.org/2003/05/soap-envelope",
        "http://schemas.xmlsoap.org/soap/envelope/",
    );
    let reply = h.post("/dmp/registry", &hdrs, SOAP_CT, soap11).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (_, ct) = last_received(&h);
    assert!(ct.starts_with("text/xml"), "{ct}");
    // The client's parameters are not copied: an `action` naming another operation, or
    // a charset other than the UTF-8 Passerelle writes, would mislead the receiver.
    let reply = h
        .post(
            "/dmp/registry",
            &hdrs,
            "application/soap+xml; charset=ISO-8859-1; action=\"urn:hl7-org:v3:PRPA_IN201311UV02\"",
            soap12,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(last_received(&h).1, "application/soap+xml; charset=utf-8");
}

#[tokio::test]
async fn lps_id_is_emitted_when_configured() {
    let h = Harness::start_with(Options {
        keys: vec![("software", "lps_id", "01.01.01.01".into())],
        ..Options::default()
    })
    .await;
    let tenant = h.pki.tenants[0].id.clone();
    let vihf = vihf_headers(&h.eg(0));
    let op = DMP_OPERATIONS[0];
    let reply = h
        .post(
            "/dmp/registry",
            &headers(&tenant, &vihf),
            SOAP_CT,
            official_style(op.actions[0], body_element(op.request)),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (upstream, _) = last_received(&h);
    let purpose = upstream
        .find("urn:oasis:names:tc:xspa:1.0:subject:purposeofuse")
        .expect("purposeofuse");
    let lps_id = upstream.find("Name=\"LPS_ID\"").expect("LPS_ID");
    let lps_nom = upstream.find("Name=\"LPS_Nom\"").expect("LPS_Nom");
    assert!(purpose < lps_id && lps_id < lps_nom, "{upstream}");
    assert!(upstream.contains(">01.01.01.01<"), "{upstream}");
}
