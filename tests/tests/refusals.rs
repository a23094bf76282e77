//! Every class of bad input gets a SOAP 1.2 fault with its stable code, a reason that
//! names what to fix, and nothing reaches the mocks.

use passerelle_e2e::messages::{
    find_documents, insi_search_bare, submission, three_documents, vihf_headers,
};
use passerelle_e2e::{Harness, Options, SOAP_CT};

struct Case {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    content_type: &'static str,
    body: bytes::Bytes,
    status: u16,
    code: &'static str,
    reason: &'static str,
}

fn with_identity(structure: &str, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut h = vihf_headers(structure);
    h.push(("x-passerelle-tenant", "ch-test-a".into()));
    for (k, v) in extra {
        h.retain(|(n, _)| n != k);
        h.push((k, v.to_string()));
    }
    h
}

#[tokio::test]
async fn each_class_of_bad_input_gets_its_fault_and_nothing_goes_upstream() {
    let h = Harness::start_with(Options {
        limits_max_body: Some(256 * 1024),
        ..Options::default()
    })
    .await;
    let a = h.eg(0);
    let ok_body = bytes::Bytes::from(find_documents());
    let insi = bytes::Bytes::from(insi_search_bare("MARTIN", "CLAIRE", "F", "2007-05-14"));
    let cases = vec![
        Case { name: "malformed XML", path: "/dmp/registry", headers: with_identity(&a, &[]), content_type: SOAP_CT, body: "<soap:Envelope xmlns:soap=\"http://www.w3.org/2003/05/soap-envelope\"><soap:Body>".into(), status: 400, code: "MalformedXml", reason: "malformed XML" },
        Case { name: "DTD with external entity", path: "/insi/auto", headers: vec![("x-passerelle-tenant", "ch-test-a".into())], content_type: SOAP_CT, body: "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><x>&xxe;</x>".into(), status: 400, code: "DtdForbidden", reason: "never expanded" },
        Case { name: "entity without DTD", path: "/dmp/registry", headers: with_identity(&a, &[]), content_type: SOAP_CT, body: "<soap:Envelope xmlns:soap=\"http://www.w3.org/2003/05/soap-envelope\"><soap:Body>&xxe;</soap:Body></soap:Envelope>".into(), status: 400, code: "MalformedXml", reason: "xxe" },
        Case { name: "not SOAP", path: "/dmp/registry", headers: with_identity(&a, &[]), content_type: SOAP_CT, body: "<hello/>".into(), status: 400, code: "NotSoap", reason: "Envelope" },
        Case { name: "oversized body", path: "/dmp/registry", headers: with_identity(&a, &[]), content_type: SOAP_CT, body: bytes::Bytes::from(vec![b' '; 300 * 1024]), status: 413, code: "BodyTooLarge", reason: "limits.max_body_bytes" },
        Case { name: "JSON", path: "/dmp/registry", headers: with_identity(&a, &[]), content_type: "application/json", body: "{}".into(), status: 415, code: "UnsupportedMediaType", reason: "application/soap+xml" },
        Case { name: "missing identity", path: "/dmp/registry", headers: vec![("x-passerelle-tenant", "ch-test-a".into())], content_type: SOAP_CT, body: ok_body.clone(), status: 400, code: "MissingIdentity", reason: "X-Vihf-" },
        Case { name: "bad INS key", path: "/dmp/registry", headers: with_identity(&a, &[("x-vihf-patient", "207058575627098")]), content_type: SOAP_CT, body: ok_body.clone(), status: 400, code: "BadIdentity", reason: "x-vihf-patient" },
        Case { name: "missing header", path: "/dmp/registry", headers: with_identity(&a, &[]).into_iter().filter(|(k, _)| *k != "x-vihf-sector").collect(), content_type: SOAP_CT, body: ok_body.clone(), status: 400, code: "BadIdentity", reason: "x-vihf-sector is missing" },
        Case { name: "wrong tenant", path: "/dmp/registry", headers: with_identity(&a, &[("x-passerelle-tenant", "chu-ailleurs")]), content_type: SOAP_CT, body: ok_body.clone(), status: 403, code: "TenantNotAllowed", reason: "chu-ailleurs" },
        Case { name: "no tenant among several", path: "/dmp/registry", headers: vihf_headers(&a), content_type: SOAP_CT, body: ok_body.clone(), status: 400, code: "TenantRequired", reason: "X-Passerelle-Tenant" },
        Case { name: "no token", path: "/insi/auto", headers: vec![("authorization", "Basic Zm9vOmJhcg==".into())], content_type: SOAP_CT, body: insi.clone(), status: 401, code: "MissingCredentials", reason: "Bearer" },
        Case { name: "unknown token", path: "/insi/auto", headers: vec![("authorization", "Bearer guess".into())], content_type: SOAP_CT, body: insi.clone(), status: 401, code: "UnknownClient", reason: "no declared client" },
        Case { name: "unknown route", path: "/dmp/nowhere", headers: with_identity(&a, &[]), content_type: SOAP_CT, body: ok_body.clone(), status: 404, code: "UnknownDmpService", reason: "nowhere" },
        Case { name: "unknown path", path: "/admin", headers: vec![], content_type: SOAP_CT, body: ok_body.clone(), status: 404, code: "UnknownRoute", reason: "POST /dmp/" },
        Case { name: "missing action", path: "/dmp/registry", headers: with_identity(&a, &[]), content_type: SOAP_CT, body: find_documents().replace(r#"<wsa:Action soap:mustUnderstand="true">urn:ihe:iti:2007:RegistryStoredQuery</wsa:Action>"#, "").into(), status: 400, code: "MissingAction", reason: "wsa:Action" },
        Case { name: "action of another service", path: "/dmp/repository", headers: with_identity(&a, &[]), content_type: SOAP_CT, body: ok_body.clone(), status: 400, code: "ActionNotAllowed", reason: "repository" },
        Case { name: "INSi in SOAP 1.1", path: "/insi/auto", headers: vec![("x-passerelle-tenant", "ch-test-a".into())], content_type: "text/xml", body: insi_search_bare("MARTIN", "CLAIRE", "F", "2007-05-14").replace("http://www.w3.org/2003/05/soap-envelope", "http://schemas.xmlsoap.org/soap/envelope/").into(), status: 400, code: "NotSoap", reason: "SOAP 1.2" },
    ];
    for case in cases {
        let headers: Vec<(&str, &str)> =
            case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = h
            .post(case.path, &headers, case.content_type, case.body.clone())
            .await;
        assert_eq!(reply.status, case.status, "{}: {}", case.name, reply.text());
        assert_eq!(
            reply.content_type(),
            "application/soap+xml; charset=utf-8",
            "{}",
            case.name
        );
        assert_eq!(
            reply.fault_code().as_deref(),
            Some(case.code),
            "{}: {}",
            case.name,
            reply.text()
        );
        assert!(
            reply.text().contains(case.reason),
            "{}: reason should mention {:?}: {}",
            case.name,
            case.reason,
            reply.text()
        );
        passerelle_signing::xml::parse(&reply.text())
            .unwrap_or_else(|e| panic!("{}: fault is not well-formed: {e}", case.name));
    }
    assert!(
        h.dmp.stats.recent_bodies().is_empty(),
        "nothing reached the mock DMP"
    );
    assert!(
        h.insi.stats.recent_bodies().is_empty(),
        "nothing reached the mock INSi"
    );
}

#[tokio::test]
async fn a_submission_already_signed_is_refused() {
    let h = Harness::start().await;
    let a = h.eg(0);
    let docs = three_documents("presigned");
    let (ct, body) = submission("1.2.250.1.999.presigned.100", &docs, &a);
    // Mark document 3 as a lot signature, as an SIH that signs itself would.
    let marker: &[u8] = b"<rim:ExtrinsicObject id=\"Document03\" mimeType=\"text/plain\" objectType=\"urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1\">";
    let at = body
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("document 3 metadata")
        + marker.len();
    let mut text = body[..at].to_vec();
    text.extend_from_slice(br#"<rim:Classification classificationScheme="urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a" classifiedObject="Document03" id="urn:uuid:0e6a6f64-0b7b-4cc4-9f1e-000000000001" nodeRepresentation="urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1"/>"#);
    text.extend_from_slice(&body[at..]);
    let headers = with_identity(&a, &[]);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reply = h.post("/dmp/repository", &headers, &ct, text).await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(reply.fault_code().as_deref(), Some("LotAlreadySigned"));
    assert!(reply.text().contains("lot_signature_passthrough"));
    assert!(h.dmp.stats.recent_bodies().is_empty());
}
