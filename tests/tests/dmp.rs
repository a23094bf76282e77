//! DMP through Passerelle: TD2.1 (three documents, lot signed by the proxy), TD3.1 and
//! TD3.2 back, identity from headers and from the internal system's own VIHF, two
//! tenants kept apart, structure outside the tenant refused before any upstream byte,
//! and every body the proxy emitted valid against the DMP XSDs.

use passerelle_e2e::messages::{
    self, find_documents, retrieve, submission, three_documents, vihf_headers,
};
use passerelle_e2e::{
    Harness, SOAP_CT, TempFile, spec, xmllint, xmlsec1_verify, xmlsec1_verify_vihf,
};
use passerelle_mocks::dmp::REPOSITORY_UNIQUE_ID;
use passerelle_soap::Envelope;
use passerelle_soap::envelope::standalone;
use passerelle_soap::mtom;

fn headers<'a>(tenant: &'a str, vihf: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    let mut h: Vec<(&str, &str)> = vihf.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.push(("x-passerelle-tenant", tenant));
    h
}

/// The body element of an envelope, alone, validated against `xsd` (under spec/dmp/schema).
fn assert_valid(envelope: &[u8], xsd: &str) -> String {
    let env = Envelope::parse(std::str::from_utf8(envelope).expect("UTF-8")).expect("envelope");
    let (e, scope) = env.body_element().expect("body element");
    let alone = standalone(e, &scope);
    let (ok, out) = xmllint(&alone, &spec().join("dmp/schema").join(xsd));
    assert!(ok, "{xsd}: {out}\n{alone}");
    alone
}

/// XOP: the infoset with each `xop:Include` replaced by its part in base64.
fn inline_xop(root: &str, parts: &mtom::Mtom) -> String {
    use base64::Engine;
    let mut out = String::new();
    let mut rest = root;
    while let Some(start) = rest.find("<xop:Include") {
        let end = start + rest[start..].find("/>").expect("end of xop:Include") + 2;
        let include = &rest[start..end];
        let href = include
            .split("href=\"")
            .nth(1)
            .and_then(|h| h.split('"').next())
            .expect("href");
        let part = parts.part(&mtom::cid(href)).expect("part for href");
        out.push_str(&rest[..start]);
        out.push_str(&base64::engine::general_purpose::STANDARD.encode(part));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn td21_three_documents_then_td31_and_td32_return_the_bytes() {
    let h = Harness::start().await;
    let tenant = h.pki.tenants[0].id.clone();
    let structure = h.eg(0);
    let vihf = vihf_headers(&structure);
    let docs = three_documents("e2e41");
    let (ct, body) = submission("1.2.250.1.999.e2e41.100", &docs, &structure);

    let reply = h
        .post("/dmp/repository", &headers(&tenant, &vihf), &ct, body)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let rr = assert_valid(&reply.body, "ebRS/rs.xsd");
    assert!(rr.contains("ResponseStatusType:Success"), "{rr}");
    assert!(reply.headers.contains_key("x-request-id"));

    // The mock verified the lot signature against the parts and recorded 3 + 1 documents,
    // all received with tenant A's ORG AUTH_CLI.
    let stored = h.dmp_service.documents();
    assert_eq!(stored.len(), 4, "3 documents + the lot signature");
    assert!(
        stored
            .iter()
            .all(|d| d.client_subject == h.subject(0, "dmp_auth"))
    );
    assert_eq!(
        h.dmp.stats.count("ProvideAndRegisterDocumentSet-b", "ok"),
        1
    );

    // What the proxy emitted: MTOM, the envelope valid against XDS.b once XOP is inlined.
    let sent = h.dmp.stats.recent_bodies().pop().expect("body recorded");
    let parts = mtom::parse(&sent.content_type, &sent.body).expect("MTOM sent upstream");
    assert_eq!(
        parts.attachments.len(),
        4,
        "three documents + the signature part"
    );
    let root = std::str::from_utf8(&parts.root).expect("UTF-8");
    assert!(root.contains("<wsa:MessageID"), "MessageID added");
    assert!(root.contains(&format!(
            "<wsa:To xmlns:wsa=\"http://www.w3.org/2005/08/addressing\">{}",
            h.proxy()
                .state()
                .config
                .dmp
                .as_ref()
                .expect("dmp")
                .service_url("repository")
                .expect("url")
        )));
    assert_valid(
        inline_xop(root, &parts).as_bytes(),
        "IHE/XDS.b_DocumentRepository.xsd",
    );
    // The EG is the author institution of the set, of each document, and of the lot
    // signature document (its author copied from the first document).
    assert_eq!(
        root.matches(&format!("^IDNST^^^{structure}</rim:Value>"))
            .count(),
        docs.len() + 2,
        "{root}"
    );

    // The VIHF inside the emitted envelope: valid SAML 2.0, and both signatures verify
    // with Debian's xmlsec1 given only the trust anchors (invariant 5).
    let env = Envelope::parse(root).expect("envelope");
    let (security, scope) = env
        .header(passerelle_soap::xds::WSSE, "Security")
        .expect("wsse:Security");
    let inner = passerelle_signing::xml::scope_of(security, &scope);
    let assertion = security.elements().next().expect("the VIHF");
    let token = standalone(assertion, &inner);
    let (ok, out) = xmllint(&token, &vihf_schema());
    assert!(ok, "VIHF against SAML 2.0 + HL7v3 datatypes: {out}");
    xmlsec1_verify_vihf(&h.pki, &parts.root);
    let signature = parts.attachments.last().expect("signature part");
    assert_eq!(signature.mime_type, "text/xml");
    xmlsec1_verify(&h.pki, &signature.content, &["--ignore-manifests"]);
    // With the Manifest processed as any standard processor does: each `urn:oid:`
    // reference mapped to the part Passerelle sent, its declared transforms applied.
    // Every document reference verifies; only the submission set's placeholder does not.
    let files: Vec<(String, TempFile)> = docs
        .iter()
        .map(|d| {
            let sent = parts
                .attachments
                .iter()
                .find(|a| a.content.as_ref() == d.content.as_slice())
                .expect("the document's part");
            (d.unique_id.clone(), TempFile::new(&sent.content))
        })
        .chain(std::iter::once((
            "1.2.250.1.999.e2e41.100".to_string(),
            TempFile::new(b""),
        )))
        .collect();
    let mut args: Vec<String> = vec![
        "--enabled-reference-uris".into(),
        "same-doc,remote".into(),
        "--print-debug".into(),
    ];
    for (uid, file) in &files {
        args.push(format!("--url-map:urn:oid:{uid}"));
        args.push(file.0.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let debug = xmlsec1_verify(&h.pki, &signature.content, &args);
    // `--print-debug` writes each reference's status on the line before its URI.
    let status_of = |uid: &str| {
        let lines: Vec<&str> = debug.lines().collect();
        let at = lines
            .iter()
            .position(|l| *l == format!("== URI: \"urn:oid:{uid}\""))
            .expect("reference listed");
        lines[at - 1].to_string()
    };
    for (uid, _) in &files[..docs.len()] {
        assert_eq!(status_of(uid), "== Status: succeeded", "{uid}\n{debug}");
    }
    assert_ne!(
        status_of("1.2.250.1.999.e2e41.100"),
        "== Status: succeeded",
        "the AA== placeholder"
    );

    // TD3.1: the identity is the internal system's own unsigned VIHF this time.
    let reply = h
        .post(
            "/dmp/registry",
            &[("x-passerelle-tenant", tenant.as_str())],
            SOAP_CT,
            messages::dmp_request(
                passerelle_soap::xds::ITI18,
                Some(&messages::unsigned_vihf(&structure, "INDIRECTE")),
                find_documents()
                    .split("<soap:Body>")
                    .nth(1)
                    .and_then(|b| b.split("</soap:Body>").next())
                    .expect("body"),
            ),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let list = assert_valid(&reply.body, "ebRS/query.xsd");
    for d in &docs {
        assert!(list.contains(&d.unique_id), "{} not listed", d.unique_id);
    }
    let sent = h.dmp.stats.recent_bodies().pop().expect("body recorded");
    assert_valid(&sent.body, "ebRS/query.xsd");

    // TD3.2: each document's bytes, unchanged, over MTOM.
    for d in &docs {
        let reply = h
            .post(
                "/dmp/repository",
                &headers(&tenant, &vihf),
                SOAP_CT,
                retrieve(REPOSITORY_UNIQUE_ID, &d.unique_id),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let m = mtom::parse(&reply.content_type(), &reply.body).expect("MTOM response");
        assert_eq!(m.attachments.len(), 1);
        assert_eq!(
            &m.attachments[0].content[..],
            &d.content[..],
            "{} bytes differ",
            d.unique_id
        );
        let sent = h.dmp.stats.recent_bodies().pop().expect("body recorded");
        assert_valid(&sent.body, "IHE/XDS.b_DocumentRepository.xsd");
    }
}

/// SAML 2.0 assertion schema plus the HL7v3 datatypes, for the `xsi:type="CE"` values of
/// roles and purpose of use.
fn vihf_schema() -> std::path::PathBuf {
    let spec = spec().canonicalize().expect("spec");
    let wrapper = format!(
        r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:passerelle:test:vihf"><xs:import namespace="urn:oasis:names:tc:SAML:2.0:assertion" schemaLocation="{}"/><xs:import namespace="urn:hl7-org:v3" schemaLocation="{}"/></xs:schema>"#,
        spec.join("insi/xsd/SAML/saml-schema-assertion-2.0.xsd")
            .display(),
        spec.join("dmp/schema/HL7V3/NE2009/coreschemas/datatypes.xsd")
            .display(),
    );
    let path = std::env::temp_dir().join(format!("passerelle-e2e-vihf-{}.xsd", std::process::id()));
    std::fs::write(&path, wrapper).expect("write wrapper schema");
    path
}

#[tokio::test]
async fn td21_with_inline_base64_documents_is_signed_too() {
    let h = Harness::start().await;
    let docs = three_documents("inline");
    let (ct, body) = submission("1.2.250.1.999.inline.100", &docs, &h.eg(0));
    let parts = mtom::parse(&ct, &body).expect("MTOM");
    let inline = inline_xop(std::str::from_utf8(&parts.root).expect("UTF-8"), &parts);
    let vihf = vihf_headers(&h.eg(0));
    let reply = h
        .post(
            "/dmp/repository",
            &headers("ch-test-a", &vihf),
            SOAP_CT,
            inline,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.text().contains("ResponseStatusType:Success"),
        "{}",
        reply.text()
    );
    assert_eq!(h.dmp_service.documents().len(), 4);
    let sent = h.dmp.stats.recent_bodies().pop().expect("body recorded");
    assert!(
        sent.content_type.starts_with("application/soap+xml"),
        "stays inline SOAP"
    );
    assert_valid(&sent.body, "IHE/XDS.b_DocumentRepository.xsd");
}

#[tokio::test]
async fn the_internal_systems_vihf_is_checked_before_signing() {
    let h = Harness::start().await;
    let body = |vihf: &str| {
        messages::dmp_request(
            passerelle_soap::xds::ITI18,
            Some(vihf),
            find_documents()
                .split("<soap:Body>")
                .nth(1)
                .and_then(|b| b.split("</soap:Body>").next())
                .expect("body"),
        )
    };
    let tenant = [("x-passerelle-tenant", "ch-test-a")];
    let foreign = messages::unsigned_vihf(&h.pki.tenants[1].structure_id, "INDIRECTE");
    let reply = h
        .post("/dmp/registry", &tenant, SOAP_CT, body(&foreign))
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.fault_code().as_deref(), Some("ForeignStructure"));
    let direct = messages::unsigned_vihf(&h.eg(0), "DIRECTE");
    let reply = h
        .post("/dmp/registry", &tenant, SOAP_CT, body(&direct))
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.fault_code().as_deref(), Some("BadIdentity"));
    assert!(reply.text().contains("INDIRECTE"), "{}", reply.text());
    let doctype = format!(
        "<!DOCTYPE x>{}",
        messages::unsigned_vihf(&h.eg(0), "INDIRECTE")
    );
    let reply = h
        .post("/dmp/registry", &tenant, SOAP_CT, body(&doctype))
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        h.dmp.stats.recent_bodies().is_empty(),
        "nothing went upstream"
    );
}
