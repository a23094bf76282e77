//! A hostile internal system against the running proxy (issue: typed pipeline under
//! hostile input). Each case was accepted, or mis-recorded, before: another legal
//! entity's structure signed, unsigned assertions forwarded, a falsified audit trail, a
//! VIHF spliced where the client chose, an abandoned submission never audited, client
//! text as metric labels, control characters signed, duplicate headers (first wins).

use bytes::Bytes;
use passerelle_e2e::messages::{self, find_documents, submission, three_documents, vihf_headers};
use passerelle_e2e::{Harness, PATIENT, SOAP_CT};
use passerelle_mocks::faults::FaultSpec;
use passerelle_soap::xds::ITI18;

const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";

fn tenant_header(h: &Harness) -> Vec<(&'static str, String)> {
    vec![("x-passerelle-tenant", h.pki.tenants[0].id.clone())]
}

fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// TD3.1 with the internal system's own VIHF `vihf` in wsse:Security.
fn query_with(vihf: &str) -> String {
    find_documents().replace(
        "</soap:Header>",
        &format!(
            "<wsse:Security xmlns:wsse=\"{}\">{vihf}</wsse:Security></soap:Header>",
            passerelle_soap::xds::WSSE
        ),
    )
}

fn attribute(name: &str, value: &str) -> String {
    format!(
        r#"<saml2:Attribute Name="{name}"><saml2:AttributeValue xsi:type="xs:string">{value}</saml2:AttributeValue></saml2:Attribute>"#
    )
}

#[tokio::test]
async fn a_second_structure_in_the_vihf_is_refused_not_signed() {
    let h = Harness::start().await;
    let a = h.eg(0);
    let b = h.pki.tenants[1].structure_id.clone();
    let good = messages::unsigned_vihf(&a, "INDIRECTE");
    let first = attribute("Identifiant_Structure", &a);
    assert!(good.contains(&first));
    let variants = [
        (
            "second Attribute",
            good.replace(
                "</saml2:AttributeStatement>",
                &format!("{}</saml2:AttributeStatement>", attribute("Identifiant_Structure", &b)),
            ),
        ),
        (
            "second AttributeValue",
            good.replace(
                &first,
                &first.replace(
                    "</saml2:Attribute>",
                    &format!(
                        r#"<saml2:AttributeValue xsi:type="xs:string">{b}</saml2:AttributeValue></saml2:Attribute>"#
                    ),
                ),
            ),
        ),
        (
            "second AttributeStatement",
            good.replace(
                "</saml2:AttributeStatement>",
                &format!(
                    "</saml2:AttributeStatement><saml2:AttributeStatement>{}</saml2:AttributeStatement>",
                    attribute("Identifiant_Structure", &b)
                ),
            ),
        ),
        (
            "non-SAML AttributeValue first",
            good.replace(
                &first,
                &format!(
                    r#"<saml2:Attribute Name="Identifiant_Structure"><x:AttributeValue xmlns:x="urn:x">{a}</x:AttributeValue><saml2:AttributeValue xsi:type="xs:string">{b}</saml2:AttributeValue></saml2:Attribute>"#
                ),
            ),
        ),
    ];
    let hdrs = tenant_header(&h);
    for (case, vihf) in variants {
        let reply = h
            .post("/dmp/registry", &pairs(&hdrs), SOAP_CT, query_with(&vihf))
            .await;
        assert_eq!(reply.status, 400, "{case}: {}", reply.text());
        assert_eq!(reply.fault_code().as_deref(), Some("BadIdentity"), "{case}");
        assert!(
            reply.text().contains("Identifiant_Structure"),
            "{case}: {}",
            reply.text()
        );
    }
    assert!(h.dmp_service.exchanges().is_empty(), "nothing sent");
    // The single-valued original goes through.
    let reply = h
        .post("/dmp/registry", &pairs(&hdrs), SOAP_CT, query_with(&good))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn assertions_outside_the_one_security_header_are_refused() {
    let h = Harness::start().await;
    let a = h.eg(0);
    let vihf = messages::unsigned_vihf(&a, "INDIRECTE");
    let with_vihf = query_with(&vihf);
    let cases = [
        (
            "another header block",
            with_vihf.replace(
                "<soap:Header>",
                &format!("<soap:Header><x:Extra xmlns:x=\"urn:x\">{vihf}</x:Extra>"),
            ),
        ),
        (
            "the Body",
            with_vihf.replace(
                "</query:AdhocQueryRequest>",
                &format!("{vihf}</query:AdhocQueryRequest>"),
            ),
        ),
        (
            "a Security of another namespace",
            with_vihf.replace(
                "<soap:Header>",
                &format!("<soap:Header><o:Security xmlns:o=\"urn:other-wsse\">{vihf}</o:Security>"),
            ),
        ),
        (
            "two sibling assertions",
            with_vihf.replace("</wsse:Security>", &format!("{vihf}</wsse:Security>")),
        ),
        (
            "X-Vihf headers and an assertion in the Body",
            find_documents().replace(
                "</query:AdhocQueryRequest>",
                &format!("{vihf}</query:AdhocQueryRequest>"),
            ),
        ),
    ];
    let mut hdrs = tenant_header(&h);
    hdrs.extend(vihf_headers(&a));
    for (case, envelope) in cases {
        let headers = if case.starts_with("X-Vihf") {
            pairs(&hdrs)
        } else {
            pairs(&hdrs[..1])
        };
        let reply = h.post("/dmp/registry", &headers, SOAP_CT, envelope).await;
        assert_eq!(reply.status, 400, "{case}: {}", reply.text());
        assert_eq!(reply.fault_code().as_deref(), Some("BadIdentity"), "{case}");
    }
    assert!(h.dmp_service.exchanges().is_empty(), "nothing sent");
}

#[tokio::test]
async fn the_audit_records_the_values_that_were_signed() {
    let h = Harness::start().await;
    let a = h.eg(0);
    let hdrs = tenant_header(&h);
    // A NameID and a resource-id placed before the real ones, outside Subject and the
    // attribute statement: the old audit took the first element of each name. Such a
    // token is refused now: identity values have one place.
    let decoy = r#"<x:Ext xmlns:x="urn:x"><saml2:NameID>111111111111</saml2:NameID><saml2:Attribute Name="urn:oasis:names:tc:xacml:2.0:resource:resource-id"><saml2:AttributeValue>FAKE</saml2:AttributeValue></saml2:Attribute></x:Ext><saml2:Subject>"#;
    let vihf = messages::unsigned_vihf(&a, "INDIRECTE").replacen("<saml2:Subject>", decoy, 1);
    let reply = h
        .post("/dmp/registry", &pairs(&hdrs), SOAP_CT, query_with(&vihf))
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.fault_code().as_deref(), Some("BadIdentity"));
    assert!(h.audit_lines().is_empty(), "nothing sent, no exchange");
    // The refused attempt is recorded, without the values it was refused for.
    let refusals = h.audit_refusals();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["outcome"], "BadIdentity");
    assert_eq!(refusals[0]["client"], "sandbox");
    assert_eq!(refusals[0]["sent_upstream"], false);
    let text = refusals[0].to_string();
    assert!(
        !text.contains("FAKE") && !text.contains("111111111111"),
        "{text}"
    );
    // The audit line of an accepted token holds the values signed.
    let vihf = messages::unsigned_vihf(&a, "INDIRECTE");
    let reply = h
        .post("/dmp/registry", &pairs(&hdrs), SOAP_CT, query_with(&vihf))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let audit = h.audit_lines();
    let line = audit.last().expect("audit line");
    assert_eq!(line["actor_id"], "899900063480", "{line}");
    assert_eq!(
        format!(
            "{}^^^&{}&ISO^NH",
            line["patient_ins"].as_str().unwrap_or(""),
            line["patient_ins_oid"].as_str().unwrap_or("")
        ),
        PATIENT,
        "{line}"
    );
    assert_eq!(line["structure"], a.as_str(), "{line}");
    let sent = h.dmp.stats.recent_bodies().pop().expect("sent");
    let text = String::from_utf8_lossy(&sent.body);
    assert!(
        text.contains(">899900063480<") && text.contains(&a),
        "{text}"
    );
}

#[tokio::test]
async fn the_signed_vihf_goes_where_the_proxy_put_it_not_where_a_comment_says() {
    let h = Harness::start().await;
    let a = h.eg(0);
    let mut hdrs = tenant_header(&h);
    hdrs.extend(vihf_headers(&a));
    // The proxy's own marker comment, placed by the client in a header block that comes
    // before the proxy's wsse:Security.
    let envelope = find_documents().replace(
        "<soap:Header>",
        "<soap:Header><x:Note xmlns:x=\"urn:x\"><!--passerelle-signed-vihf--></x:Note>",
    );
    let reply = h
        .post("/dmp/registry", &pairs(&hdrs), SOAP_CT, envelope)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = h.dmp.stats.recent_bodies().pop().expect("sent");
    let text = String::from_utf8(sent.body.to_vec()).expect("UTF-8");
    let env = passerelle_soap::Envelope::parse(&text).expect("envelope");
    let (security, _) = env
        .header(passerelle_soap::xds::WSSE, "Security")
        .expect("wsse:Security");
    assert!(
        security.elements().any(|e| e.local == "Assertion"),
        "the VIHF is in wsse:Security: {text}"
    );
    let (note, _) = env.header("urn:x", "Note").expect("the client's block");
    assert_eq!(
        note.elements().count(),
        0,
        "nothing spliced into it: {text}"
    );
    assert_eq!(text.matches(&format!("xmlns:saml2=\"{SAML}\"")).count(), 1);
}

/// Sends `request` (raw HTTP/1.1) and closes the connection after `after`.
async fn send_then_leave(h: &Harness, request: Vec<u8>, after: std::time::Duration) {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(h.proxy().address)
        .await
        .expect("connect");
    tcp.write_all(&request).await.expect("write");
    tokio::time::sleep(after).await;
    drop(tcp);
}

fn raw_post(h: &Harness, path: &str, headers: &[(&str, String)], ct: &str, body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n",
        h.proxy().address,
        passerelle_e2e::TOKEN,
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

async fn wait_for_audit(h: &Harness, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..100 {
        let lines = h.audit_lines();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    h.audit_lines()
}

#[tokio::test]
async fn an_abandoned_exchange_completes_and_is_audited() {
    let h = Harness::start().await;
    let a = h.eg(0);
    let mut hdrs = tenant_header(&h);
    hdrs.extend(vihf_headers(&a));
    let slow = FaultSpec {
        latency_ms: 600,
        ..FaultSpec::default()
    };
    h.dmp
        .faults
        .replace(
            [
                ("ProvideAndRegisterDocumentSet-b".to_string(), slow.clone()),
                ("RegistryStoredQuery".to_string(), slow),
            ]
            .into(),
        )
        .expect("faults");

    // ITI-41 over HTTP/1.1: the client closes while the DMP is still answering.
    let docs = three_documents("gone41");
    let (ct, body) = submission("1.2.250.1.999.gone41.100", &docs, &a);
    let request = raw_post(&h, "/dmp/repository", &hdrs, &ct, &body);
    send_then_leave(&h, request, std::time::Duration::from_millis(200)).await;
    let lines = wait_for_audit(&h, 1).await;
    assert_eq!(lines.len(), 1, "the submission is audited");
    assert_eq!(lines[0]["action"], passerelle_soap::xds::ITI41);
    assert_eq!(lines[0]["outcome"], "ok");
    assert_eq!(h.dmp_service.submissions().len(), 1, "sent once");

    // A read over HTTP/2: the client resets its stream.
    let tcp = tokio::net::TcpStream::connect(h.proxy().address)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2c");
    tokio::spawn(connection);
    let mut request = http::Request::post("/dmp/registry")
        .header("authorization", format!("Bearer {}", passerelle_e2e::TOKEN))
        .header("content-type", SOAP_CT);
    for (k, v) in &hdrs {
        request = request.header(*k, v.as_str());
    }
    let request = request
        .body(http_body_util::Full::new(Bytes::from(find_documents())))
        .expect("request");
    let pending = sender.send_request(request);
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), pending).await;
    drop(sender);
    let lines = wait_for_audit(&h, 2).await;
    assert_eq!(lines.len(), 2, "the read is audited too");
    assert_eq!(lines[1]["action"], ITI18);
}

#[tokio::test]
async fn metric_labels_come_from_closed_sets() {
    let h = Harness::start().await;
    let hdrs = tenant_header(&h);
    for i in 0..40 {
        let envelope = messages::insi_search_bare("MARTIN", "CLAIRE", "F", "1970-05-07").replace(
            "<soap:Body>",
            &format!(
                "<soap:Header><wsa:Action xmlns:wsa=\"http://www.w3.org/2005/08/addressing\">urn:client-chosen:{i}</wsa:Action></soap:Header><soap:Body>"
            ),
        );
        let _ = h.post("/insi/auto", &pairs(&hdrs), SOAP_CT, envelope).await;
    }
    let (status, metrics) = h.admin("/metrics").await;
    assert_eq!(status, 200);
    assert!(!metrics.contains("client-chosen"), "client text in a label");
    assert!(metrics.contains("action=\"other\""), "{metrics}");
}

#[tokio::test]
async fn control_characters_and_duplicate_headers_are_refused() {
    let h = Harness::start().await;
    let a = h.eg(0);
    let base = {
        let mut v = tenant_header(&h);
        v.extend(vihf_headers(&a));
        v
    };
    // Control characters in an X-Vihf header, percent-encoded.
    for bad in ["MAX%00LIBRE", "MAX%01LIBRE", "MAX%1B%5B31mLIBRE"] {
        let mut hdrs = base.clone();
        for (k, v) in &mut hdrs {
            if *k == "x-vihf-subject-name" {
                *v = bad.to_string();
            }
        }
        let reply = h
            .post("/dmp/registry", &pairs(&hdrs), SOAP_CT, find_documents())
            .await;
        assert_eq!(reply.status, 400, "{bad}");
        assert_eq!(reply.fault_code().as_deref(), Some("BadIdentity"));
        assert!(
            reply.text().contains("x-vihf-subject-name"),
            "{}",
            reply.text()
        );
        assert!(!reply.text().contains("LIBRE"), "the value is not echoed");
    }
    // Raw NUL and ESC in a body.
    for byte in [0x00u8, 0x1b] {
        let mut body = find_documents().into_bytes();
        let at = body.windows(5).position(|w| w == b"<rim:").expect("rim");
        body.insert(at, byte);
        let reply = h.post("/dmp/registry", &pairs(&base), SOAP_CT, body).await;
        assert_eq!(reply.status, 400);
        assert_eq!(
            reply.fault_code().as_deref(),
            Some("MalformedXml"),
            "{}",
            reply.text()
        );
    }
    // Duplicate headers: which one a reader takes is not defined.
    let tenant = h.pki.tenants[0].id.clone();
    let bearer = format!("Bearer {}", passerelle_e2e::TOKEN);
    let cases: Vec<(&str, Vec<(&'static str, String)>)> = vec![
        (
            "Authorization",
            vec![("authorization", bearer.clone()), ("authorization", bearer)],
        ),
        (
            "X-Passerelle-Tenant",
            vec![("x-passerelle-tenant", tenant.clone())],
        ),
        (
            "x-vihf-patient",
            vec![("x-vihf-patient", PATIENT.replace('&', "%26"))],
        ),
    ];
    for (header, extra) in cases {
        let mut hdrs = base.clone();
        hdrs.extend(extra);
        let reply = h
            .post("/dmp/registry", &pairs(&hdrs), SOAP_CT, find_documents())
            .await;
        assert_eq!(reply.status, 400, "{header}: {}", reply.text());
        assert_eq!(
            reply.fault_code().as_deref(),
            Some("DuplicateHeader"),
            "{header}"
        );
        assert!(reply.text().contains(header), "{header}: {}", reply.text());
    }
    assert!(h.dmp_service.exchanges().is_empty(), "nothing sent");
    // Two wsa:Action: refused too.
    let two = find_documents().replace(
        "<soap:Header>",
        &format!(
            "<soap:Header><wsa:Action xmlns:wsa=\"http://www.w3.org/2005/08/addressing\">{ITI18}</wsa:Action>"
        ),
    );
    let reply = h.post("/dmp/registry", &pairs(&base), SOAP_CT, two).await;
    assert_eq!(reply.fault_code().as_deref(), Some("DuplicateHeader"));
    let _ = messages::dmp_request;
}

#[tokio::test]
async fn body_addressing_patient_and_contexts_are_what_was_checked() {
    let h = Harness::start().await;
    let a = h.pki.tenants[0].structure_id.clone();
    let mut hdrs = tenant_header(&h);
    hdrs.extend(vihf_headers(&h.eg(0)));
    const WSA: &str = "http://www.w3.org/2005/08/addressing";
    let query = find_documents();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a Body element of another operation",
            query.replace(
                "<query:AdhocQueryRequest ",
                "<x:PRPA_IN201311UV02 xmlns:x=\"urn:hl7-org:v3\"/><query:AdhocQueryRequest ",
            ),
            "OperationMismatch",
        ),
        (
            "a Body element in another namespace",
            query.replace("xmlns:query=\"urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0\"", "xmlns:query=\"urn:evil\""),
            "OperationMismatch",
        ),
        (
            "a ReplyTo elsewhere",
            query.replace(
                "<soap:Header>",
                &format!("<soap:Header><ReplyTo xmlns=\"{WSA}\"><Address>https://collector.example/x</Address></ReplyTo>"),
            ),
            "BadAddressing",
        ),
        (
            "a FaultTo",
            query.replace(
                "<soap:Header>",
                &format!("<soap:Header><FaultTo xmlns=\"{WSA}\"><Address>https://collector.example/x</Address></FaultTo>"),
            ),
            "BadAddressing",
        ),
        (
            "WS-Addressing 2004/08",
            query.replace(
                "<soap:Header>",
                "<soap:Header><w:ReplyTo xmlns:w=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\"><w:Address>http://x</w:Address></w:ReplyTo>",
            ),
            "BadAddressing",
        ),
        (
            "a 300-character MessageID",
            query.replace(
                "<soap:Header>",
                &format!("<soap:Header><MessageID xmlns=\"{WSA}\">urn:{}</MessageID>", "x".repeat(300)),
            ),
            "BadAddressing",
        ),
    ];
    for (case, envelope, code) in cases {
        let reply = h
            .post("/dmp/registry", &pairs(&hdrs), SOAP_CT, envelope)
            .await;
        assert_eq!(reply.status, 400, "{case}: {}", reply.text());
        assert_eq!(
            reply.fault_code().as_deref(),
            Some(code),
            "{case}: {}",
            reply.text()
        );
    }
    // ITI-41 whose documents are another patient's than the VIHF's.
    let docs = three_documents("otherpatient");
    let (ct, body) = submission("1.2.250.1.999.otherpatient.100", &docs, &h.eg(0));
    let other = "248039263001064^^^&1.2.250.1.213.1.4.10&ISO^NH";
    let mut for_other = hdrs.clone();
    for (k, v) in &mut for_other {
        if *k == "x-vihf-patient" {
            *v = other.replace('&', "%26");
        }
    }
    let reply = h
        .post("/dmp/repository", &pairs(&for_other), &ct, body)
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.fault_code().as_deref(), Some("BadSubmission"));
    assert!(
        reply.text().contains("not the VIHF's patient"),
        "{}",
        reply.text()
    );
    assert!(h.dmp_service.exchanges().is_empty(), "nothing sent");

    // Break-glass access is recorded as such.
    let mut glass = hdrs.clone();
    glass.push(("x-vihf-purpose", "bris_de_glace".into()));
    let reply = h
        .post("/dmp/registry", &pairs(&glass), SOAP_CT, find_documents())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        h.audit_lines().last().expect("line")["purpose"],
        "bris_de_glace"
    );

    // INSi: contexts written by the client are one of each and of this certificate.
    let insi = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/insi-rechercher-traits.xml"
    ))
    .expect("example");
    let b = h.pki.tenants[1].structure_id.clone();
    let wrong_emetteur = insi.replace(
        &format!(">{a}</ctxlps:Emetteur>"),
        &format!(">{b}</ctxlps:Emetteur>"),
    );
    assert_ne!(wrong_emetteur, insi);
    let reply = h
        .post(
            "/insi/auto",
            &pairs(&tenant_header(&h)),
            SOAP_CT,
            wrong_emetteur,
        )
        .await;
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("BadInsiRequest"),
        "{}",
        reply.text()
    );
    let lps = insi
        .split("<ctxlps:ContexteLPS")
        .nth(1)
        .and_then(|rest| rest.split("</ctxlps:ContexteLPS>").next())
        .map(|inner| format!("<ctxlps:ContexteLPS{inner}</ctxlps:ContexteLPS>"))
        .expect("context");
    let twice = insi.replacen("<soap:Header>", &format!("<soap:Header>{lps}"), 1);
    let reply = h
        .post("/insi/auto", &pairs(&tenant_header(&h)), SOAP_CT, twice)
        .await;
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("DuplicateHeader"),
        "{}",
        reply.text()
    );
}
