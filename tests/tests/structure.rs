//! One structure everywhere: the tenant's geographic entity (EG) in the VIHF, the
//! submission set, the document entries and the CDA, by `[dmp.policy]`. A foreign
//! structure anywhere is refused with its place named and nothing sent; the legal entity
//! is refused where EGs exist; VIHF ≠ submission set is refused or warned; a foreign CDA
//! organisation is warned and counted, and still sent.

use bytes::Bytes;
use passerelle_e2e::messages::{
    DOCUMENT_AUTHOR_SCHEME, SUBMISSION_SET_AUTHOR_SCHEME, find_documents, submission,
    three_documents, vihf_headers,
};
use passerelle_e2e::{Harness, Options, SOAP_CT};

fn headers(tenant: &str, vihf: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut h = vihf.to_vec();
    h.push(("x-passerelle-tenant", tenant.to_string()));
    h
}

fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The MTOM body with the `authorInstitution` of `object`'s author (`scheme`) moved from
/// `from` to `to`.
fn retarget(body: &Bytes, scheme: &str, object: &str, from: &str, to: &str) -> Bytes {
    let find = |hay: &[u8], needle: &[u8], start: usize| {
        hay[start..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| i + start)
    };
    let anchor = format!("classificationScheme=\"{scheme}\" classifiedObject=\"{object}\"");
    let at = find(body, anchor.as_bytes(), 0).expect("author classification");
    let old = format!("IDNST^^^{from}");
    let pos = find(body, old.as_bytes(), at).expect("authorInstitution");
    let mut out = body[..pos].to_vec();
    out.extend_from_slice(format!("IDNST^^^{to}").as_bytes());
    out.extend_from_slice(&body[pos + old.len()..]);
    Bytes::from(out)
}

struct Tenant {
    id: String,
    ej: String,
    eg: String,
    eg2: String,
    foreign: String,
}

fn tenant(h: &Harness) -> Tenant {
    let a = &h.pki.tenants[0];
    Tenant {
        id: a.id.clone(),
        ej: a.structure_id.clone(),
        eg: a.geographic_structure_ids[0].clone(),
        eg2: a.geographic_structure_ids[1].clone(),
        foreign: h.pki.tenants[1].geographic_structure_ids[0].clone(),
    }
}

#[tokio::test]
async fn the_geographic_entity_everywhere_goes_through_and_anything_else_is_named() {
    let h = Harness::start().await;
    let t = tenant(&h);
    let hdrs = headers(&t.id, &vihf_headers(&t.eg));
    // Consistent EG everywhere: accepted, and the audit names it.
    let (ct, body) = submission("1.2.250.1.999.st1.100", &three_documents("st1"), &t.eg);
    let reply = h.post("/dmp/repository", &pairs(&hdrs), &ct, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(h.audit_lines()[0]["structure"], t.eg.as_str());
    let sent = h.dmp_service.exchanges().len();

    // A foreign structure in the submission set, in one document entry, in the VIHF.
    let (ct, body) = submission("1.2.250.1.999.st2.100", &three_documents("st2"), &t.eg);
    let foreign_set = retarget(
        &body,
        SUBMISSION_SET_AUTHOR_SCHEME,
        "SubmissionSet01",
        &t.eg,
        &t.foreign,
    );
    let foreign_doc = retarget(
        &body,
        DOCUMENT_AUTHOR_SCHEME,
        "Document02",
        &t.eg,
        &t.foreign,
    );
    for (case, body, place) in [
        (
            "submission set",
            foreign_set,
            "submission set authorInstitution",
        ),
        (
            "document entry",
            foreign_doc,
            "document entry Document02 authorInstitution",
        ),
    ] {
        let reply = h.post("/dmp/repository", &pairs(&hdrs), &ct, body).await;
        assert_eq!(reply.status, 403, "{case}: {}", reply.text());
        assert_eq!(
            reply.fault_code().as_deref(),
            Some("ForeignStructure"),
            "{case}"
        );
        assert!(
            reply.text().contains(place) && reply.text().contains(&t.foreign),
            "{case}: {}",
            reply.text()
        );
    }
    let foreign_vihf = headers(&t.id, &vihf_headers(&t.foreign));
    let reply = h
        .post(
            "/dmp/registry",
            &pairs(&foreign_vihf),
            SOAP_CT,
            find_documents(),
        )
        .await;
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("ForeignStructure"),
        "{}",
        reply.text()
    );
    assert!(
        reply.text().contains("X-Vihf-Structure"),
        "{}",
        reply.text()
    );
    assert_eq!(h.dmp_service.exchanges().len(), sent, "nothing sent");

    // The legal entity where geographic entities exist: in the VIHF, in the set.
    let ej_vihf = headers(&t.id, &vihf_headers(&t.ej));
    let reply = h
        .post("/dmp/registry", &pairs(&ej_vihf), SOAP_CT, find_documents())
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.fault_code().as_deref(), Some("GeographicRequired"));
    assert!(
        reply.text().contains(&t.eg) && reply.text().contains(&t.eg2),
        "lists the EGs: {}",
        reply.text()
    );
    let (ct, body) = submission("1.2.250.1.999.st3.100", &three_documents("st3"), &t.ej);
    let reply = h.post("/dmp/repository", &pairs(&ej_vihf), &ct, body).await;
    assert_eq!(reply.fault_code().as_deref(), Some("GeographicRequired"));
    assert_eq!(h.dmp_service.exchanges().len(), sent, "nothing sent");

    // VIHF ≠ submission set (both the tenant's) under the default `refuse`.
    let (ct, body) = submission("1.2.250.1.999.st4.100", &three_documents("st4"), &t.eg2);
    let reply = h.post("/dmp/repository", &pairs(&hdrs), &ct, body).await;
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("StructureMismatch"),
        "{}",
        reply.text()
    );

    // Without X-Vihf-Structure, a submission acts for its submission set's structure.
    let without: Vec<(&'static str, String)> = hdrs
        .iter()
        .filter(|(k, _)| *k != "x-vihf-structure")
        .cloned()
        .collect();
    let (ct, body) = submission("1.2.250.1.999.st5.100", &three_documents("st5"), &t.eg2);
    let reply = h.post("/dmp/repository", &pairs(&without), &ct, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        h.audit_lines().last().expect("line")["structure"],
        t.eg2.as_str()
    );
}

#[tokio::test]
async fn warn_policies_let_through_log_and_count() {
    let h = Harness::start_with(Options {
        keys: vec![("dmp.policy", "structure_consistency", "warn".into())],
        ..Options::default()
    })
    .await;
    let t = tenant(&h);
    let hdrs = headers(&t.id, &vihf_headers(&t.eg));
    // VIHF ≠ submission set under `warn`: sent, counted.
    let (ct, body) = submission("1.2.250.1.999.st6.100", &three_documents("st6"), &t.eg2);
    let reply = h.post("/dmp/repository", &pairs(&hdrs), &ct, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // A CDA whose representedOrganization is another establishment's (default `warn`).
    let mut docs = three_documents("st7");
    docs[0].content = format!(
        r#"<ClinicalDocument xmlns="urn:hl7-org:v3"><author><assignedAuthor><representedOrganization><id root="1.2.250.1.71.4.2.2" extension="{}"/></representedOrganization></assignedAuthor></author><title>CR</title></ClinicalDocument>"#,
        t.foreign
    )
    .into_bytes();
    let (ct, body) = submission("1.2.250.1.999.st7.100", &docs, &t.eg);
    let reply = h.post("/dmp/repository", &pairs(&hdrs), &ct, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(h.dmp_service.submissions().len(), 2, "both sent");
    let (_, metrics) = h.admin("/metrics").await;
    for kind in ["vihf_submission_set_mismatch", "cda_foreign_structure"] {
        assert!(
            metrics.contains(&format!(
                "passerelle_structure_warnings_total{{kind=\"{kind}\"}} 1"
            )),
            "{kind}: {metrics}"
        );
    }
}

#[tokio::test]
async fn cda_structure_refuse_names_the_document() {
    let h = Harness::start_with(Options {
        keys: vec![("dmp.policy", "cda_structure", "refuse".into())],
        ..Options::default()
    })
    .await;
    let t = tenant(&h);
    let hdrs = headers(&t.id, &vihf_headers(&t.eg));
    let mut docs = three_documents("st8");
    docs[0].content = format!(
        r#"<ClinicalDocument xmlns="urn:hl7-org:v3"><author><assignedAuthor><representedOrganization><id root="1.2.250.1.71.4.2.2" extension="{}"/></representedOrganization></assignedAuthor></author></ClinicalDocument>"#,
        t.foreign
    )
    .into_bytes();
    let (ct, body) = submission("1.2.250.1.999.st8.100", &docs, &t.eg);
    let reply = h.post("/dmp/repository", &pairs(&hdrs), &ct, body).await;
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("ForeignStructure"),
        "{}",
        reply.text()
    );
    assert!(
        reply
            .text()
            .contains("Document01 CDA representedOrganization"),
        "{}",
        reply.text()
    );
    assert!(h.dmp_service.submissions().is_empty());
}

#[tokio::test]
async fn no_metadata_escapes_the_checks() {
    let h = Harness::start_with(Options {
        keys: vec![("dmp.signing", "lot_signature_passthrough", true.into())],
        ..Options::default()
    })
    .await;
    let t = tenant(&h);
    let hdrs = headers(&t.id, &vihf_headers(&t.eg));
    // A submission the internal system signed itself (passthrough on) is checked too.
    let config = passerelle_config::load(&h.config_path).expect("config");
    let signer = passerelle_signing::SoftwareSigner::from_material(
        &config.tenants[0].certificates[&passerelle_config::CertRole::DmpSign],
    )
    .expect("signer");
    let (ct, body) = passerelle_e2e::messages::signed_submission(
        "1.2.250.1.999.st9.100",
        &three_documents("st9"),
        &t.eg,
        &signer,
    );
    let foreign = retarget(
        &body,
        DOCUMENT_AUTHOR_SCHEME,
        "Document02",
        &t.eg,
        &t.foreign,
    );
    let reply = h.post("/dmp/repository", &pairs(&hdrs), &ct, foreign).await;
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("ForeignStructure"),
        "{}",
        reply.text()
    );
    // A nested author Classification that names another object.
    let (ct, body) = submission("1.2.250.1.999.st10.100", &three_documents("st10"), &t.eg);
    let anchor = format!(
        "classificationScheme=\"{DOCUMENT_AUTHOR_SCHEME}\" classifiedObject=\"Document02\""
    );
    let elsewhere = format!(
        "classificationScheme=\"{DOCUMENT_AUTHOR_SCHEME}\" classifiedObject=\"urn:uuid:other\""
    );
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(text.contains(&anchor));
    let bytes = body.to_vec();
    let at = bytes
        .windows(anchor.len())
        .position(|w| w == anchor.as_bytes())
        .expect("anchor");
    let mut moved = bytes[..at].to_vec();
    moved.extend_from_slice(elsewhere.as_bytes());
    moved.extend_from_slice(&bytes[at + anchor.len()..]);
    let reply = h
        .post("/dmp/repository", &pairs(&hdrs), &ct, Bytes::from(moved))
        .await;
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("BadSubmission"),
        "{}",
        reply.text()
    );
    assert!(reply.text().contains("not its parent"), "{}", reply.text());
    // An identifier in XON.3 instead of XON.10.
    let xon3 = retarget(&body, DOCUMENT_AUTHOR_SCHEME, "Document02", &t.eg, "");
    let needle = b"CENTRE HOSPITALIER TEST^^^^^";
    let mut v = xon3.to_vec();
    let after = v
        .windows(anchor.len())
        .position(|w| w == anchor.as_bytes())
        .expect("anchor");
    let pos = after
        + v[after..]
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("xon");
    v.splice(
        pos..pos + needle.len(),
        format!("CENTRE HOSPITALIER TEST^^{}^^^", t.foreign).into_bytes(),
    );
    let reply = h
        .post("/dmp/repository", &pairs(&hdrs), &ct, Bytes::from(v))
        .await;
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("BadSubmission"),
        "{}",
        reply.text()
    );
    // No structure in the submission set where EGs are required.
    let no_set = retarget(
        &body,
        SUBMISSION_SET_AUTHOR_SCHEME,
        "SubmissionSet01",
        &t.eg,
        "",
    );
    let reply = h.post("/dmp/repository", &pairs(&hdrs), &ct, no_set).await;
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("GeographicRequired"),
        "{}",
        reply.text()
    );
    assert!(h.dmp_service.exchanges().is_empty(), "nothing sent");
}
