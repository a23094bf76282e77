//! VIHF tokens: built, signed, and checked by the crate's verifier and by Debian's
//! `xmlsec1` given only the trust anchors; validated against the SAML 2.0 XSD.

mod common;

use common::{SAML_ID_ATTR, fixture, vihf_schema, xmllint_schema, xmlsec1_verify};
use passerelle_config::CertRole;
use passerelle_signing::vihf::{VihfRole, saml_instant};
use passerelle_signing::{DigestAlgorithm, SoftwareIdentity, VihfContext, sign_vihf, verify_vihf};
use proptest::prelude::*;

fn example_context() -> VihfContext {
    let json = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/vihf-context.json"
    ))
    .expect("examples/vihf-context.json");
    VihfContext::from_json(&json).expect("valid example")
}

fn software() -> SoftwareIdentity {
    SoftwareIdentity {
        name: "PASSERELLE".into(),
        version: "0.1.0".into(),
        homologation_id: "TEST-HOMOLOGATION-0000".into(),
        lps_id: None,
    }
}

/// With an InclusiveNamespaces prefix list (the ANS kit's), the listed prefixes in
/// force where the token sits are part of what Exclusive XML Canonicalization signs.
/// A token signed for its place in an envelope whose namespaces bind them (a SOAP
/// envelope in the default namespace, `ds` and `saml` declared on it) verifies there
/// with xmlsec1, in the envelope; the same token signed as a document of its own does
/// not.
#[test]
fn a_prefix_list_token_verifies_in_the_envelope_it_was_signed_for() {
    use passerelle_signing::sign_vihf_in;
    use passerelle_signing::xml::Scope;
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let mut ctx = example_context();
    ctx.options.inclusive_prefixes = ["ds", "saml", "#default", "xsi"]
        .iter()
        .map(|p| p.to_string())
        .collect();
    const SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
    const WSSE: &str =
        "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
    let inherited: Scope = [
        (None, SOAP),
        (Some("ds"), "http://www.w3.org/2000/09/xmldsig#"),
        (Some("saml"), "urn:oasis:names:tc:SAML:2.0:assertion"),
        (Some("wsse"), WSSE),
    ]
    .iter()
    .map(|(p, u)| (p.map(str::to_string), u.to_string()))
    .collect();
    let in_envelope = |token: &str| {
        format!(
            "<Envelope xmlns=\"{SOAP}\" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" \
             xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\"><Header>\
             <wsse:Security xmlns:wsse=\"{WSSE}\">{token}</wsse:Security></Header>\
             <Body/></Envelope>"
        )
    };
    let now = time::OffsetDateTime::now_utc();
    let placed = sign_vihf_in(&ctx, &software(), &signer, now, &inherited).expect("sign");
    let (ok, out) = xmlsec1_verify(
        &in_envelope(&placed.text),
        &f.root(),
        &f.intermediate(),
        &SAML_ID_ATTR,
    );
    assert!(ok, "xmlsec1 refused the token in its envelope: {out}");
    let alone = sign_vihf(&ctx, &software(), &signer, now).expect("sign");
    let (ok, _) = xmlsec1_verify(
        &in_envelope(&alone.text),
        &f.root(),
        &f.intermediate(),
        &SAML_ID_ATTR,
    );
    assert!(
        !ok,
        "signed as a document of its own, the token should not verify there"
    );
    let (ok, out) = xmlsec1_verify(&alone.text, &f.root(), &f.intermediate(), &SAML_ID_ATTR);
    assert!(ok, "{out}");
}

/// The example context signed by tenant A's ORG SIGN key, now.
fn example_vihf(f: &common::Fixture) -> passerelle_signing::SignedVihf {
    let signer = f.signer(0, CertRole::DmpSign);
    sign_vihf(
        &example_context(),
        &software(),
        &signer,
        time::OffsetDateTime::now_utc(),
    )
    .expect("sign")
}

#[test]
fn signed_vihf_verifies_with_crate_and_xmlsec1() {
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let now = time::OffsetDateTime::now_utc();
    let vihf = sign_vihf(&example_context(), &software(), &signer, now).expect("sign");

    let verified = verify_vihf(&vihf.xml(), &f.trust()).expect("crate verifier");
    assert_eq!(verified.id, vihf.id);
    assert!(verified.id.starts_with('_'));
    assert_eq!(verified.issuer, f.pki.tenants[0].dmp_sign.subject);
    assert_eq!(verified.issue_instant, saml_instant(now));
    assert_eq!(verified.subject_id, "899900063480");
    assert_eq!(
        verified.attribute("Identifiant_Structure"),
        Some("1690010012")
    );
    assert_eq!(
        verified.attribute("Authentification_mode"),
        Some("INDIRECTE")
    );
    assert_eq!(
        verified.attribute("urn:oasis:names:tc:xacml:2.0:resource:resource-id"),
        Some("207058575627097^^^&1.2.250.1.213.1.4.10&ISO^NH")
    );
    assert_eq!(
        verified.attributes["urn:oasis:names:tc:xacml:2.0:subject:role"],
        vec!["10".to_string(), "SM26".to_string()]
    );
    assert_eq!(verified.attribute("LPS_Nom"), Some("PASSERELLE"));

    let (ok, out) = xmlsec1_verify(&vihf.xml(), &f.root(), &f.intermediate(), &SAML_ID_ATTR);
    assert!(ok, "xmlsec1 refused: {out}\n{}", vihf.xml());
}

#[test]
fn assertion_has_the_shape_of_the_ans_examples() {
    let f = fixture();
    let vihf = example_vihf(&f);
    let x = &vihf.xml();
    assert!(x.starts_with(&format!(
        "<saml2:Assertion xmlns:saml2=\"urn:oasis:names:tc:SAML:2.0:assertion\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" ID=\"{}\" IssueInstant=\"",
        vihf.id
    )));
    // Element order: Issuer, Signature, Subject, AuthnStatement, AttributeStatement.
    let pos = |needle: &str| x.find(needle).unwrap_or_else(|| panic!("{needle} missing"));
    assert!(pos("<saml2:Issuer") < pos("<Signature xmlns=\"http://www.w3.org/2000/09/xmldsig#\">"));
    assert!(pos("</Signature>") < pos("<saml2:Subject>"));
    assert!(pos("<saml2:Subject>") < pos("<saml2:AuthnStatement"));
    assert!(pos("</saml2:AuthnStatement>") < pos("<saml2:AttributeStatement>"));
    // Attribute order of domain.md §5.
    let order = [
        "Identifiant_Structure",
        "Secteur_Activite",
        "urn:oasis:names:tc:xspa:1.0:subject:subject-id",
        "urn:oasis:names:tc:xacml:2.0:subject:role",
        "VIHF_Version",
        "Authentification_mode",
        "urn:oasis:names:tc:xacml:2.0:resource:resource-id",
        "Ressource_URN",
        "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse",
        "LPS_Nom",
        "LPS_Version",
        "LPS_ID_HOMOLOGATION_DMP",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|n| pos(&format!("Name=\"{n}\"")))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "attribute order {positions:?}"
    );
    for needle in [
        "Format=\"urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName\">CN=PASSERELLE DMP CENTRE HOSPITALIER TEST A,OU=1690010004,O=CENTRE HOSPITALIER TEST A,ST=Rhône (69),C=FR</saml2:Issuer>",
        "<saml2:AttributeValue xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" xsi:type=\"xs:string\">1690010012</saml2:AttributeValue>",
        "<Role xmlns=\"urn:hl7-org:v3\" code=\"10\" codeSystem=\"1.2.250.1.71.1.2.7\" displayName=\"Médecin\" xsi:type=\"CE\"/>",
        "<Role xmlns=\"urn:hl7-org:v3\" code=\"SM26\" codeSystem=\"1.2.250.1.71.4.2.5\"",
        "<PurposeOfUse xmlns=\"urn:hl7-org:v3\" code=\"normal\" codeSystem=\"1.2.250.1.213.1.1.4.248\" codeSystemName=\"mode acces VIHF 2.0\" displayName=\"Accès normal\" xsi:type=\"CE\"/>",
        "urn:oasis:names:tc:SAML:2.0:ac:classes:Password",
        "<CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
        "<SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/>",
        "<Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/><Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
        "<DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/>",
        "<KeyInfo><X509Data><X509Certificate>",
        ">INDIRECTE</saml2:AttributeValue>",
        ">urn:dmp</saml2:AttributeValue>",
        ">3.0</saml2:AttributeValue>",
    ] {
        assert!(x.contains(needle), "missing {needle}\n{x}");
    }
    assert!(!x.contains("Conditions"));
}

#[test]
fn assertion_validates_against_the_saml_schema() {
    let f = fixture();
    let signer = f.signer(1, CertRole::DmpSign);
    let mut ctx = example_context();
    ctx.structure_id = f.pki.tenants[1].geographic_structure_ids[0].clone();
    ctx.roles = vec![VihfRole::Automate];
    let vihf =
        sign_vihf(&ctx, &software(), &signer, time::OffsetDateTime::now_utc()).expect("sign");
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, out) = xmllint_schema(&vihf.xml(), &vihf_schema(dir.path()));
    assert!(ok, "{out}\n{}", vihf.xml());
    assert!(out.contains("validates"), "{out}");
    assert!(
        vihf.xml()
            .contains("code=\"AUTOMATE\" codeSystem=\"1.2.250.1.213.1.1.4.6\"")
    );
    // The schema set does catch mistakes: an element out of SAML order fails.
    let broken = vihf
        .xml()
        .replacen("<saml2:Subject>", "<saml2:Bogus/><saml2:Subject>", 1);
    assert!(!xmllint_schema(&broken, &vihf_schema(dir.path())).0);
}

#[test]
fn sha1_profile_verifies_too() {
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let mut ctx = example_context();
    ctx.options.digest = DigestAlgorithm::Sha1;
    ctx.options.auth_mode_attribute = "Authentification_Mode".into();
    ctx.options.inclusive_prefixes = vec!["xsi".into(), "xs".into()];
    let vihf =
        sign_vihf(&ctx, &software(), &signer, time::OffsetDateTime::now_utc()).expect("sign");
    assert!(
        vihf.xml()
            .contains("http://www.w3.org/2000/09/xmldsig#rsa-sha1")
    );
    assert!(vihf.xml().contains("PrefixList=\"xsi xs\""));
    assert!(vihf.xml().contains("Name=\"Authentification_Mode\""));
    verify_vihf(&vihf.xml(), &f.trust()).expect("crate verifier");
    let (ok, out) = xmlsec1_verify(&vihf.xml(), &f.root(), &f.intermediate(), &SAML_ID_ATTR);
    assert!(ok, "{out}");
}

/// Flips one character inside the part of the document between `start` and `end`.
fn tamper(xml: &str, start: &str, end: &str) -> String {
    let from = xml.find(start).expect("start marker") + start.len();
    let to = from + xml[from..].find(end).expect("end marker");
    let target = (from..to)
        .find(|i| xml.as_bytes()[*i].is_ascii_alphanumeric())
        .expect("something to flip");
    let mut bytes = xml.as_bytes().to_vec();
    bytes[target] = if bytes[target] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("ascii flip keeps utf-8")
}

#[test]
fn one_changed_byte_in_any_signed_part_breaks_both_verifiers() {
    let f = fixture();
    let vihf = example_vihf(&f);
    for (what, start, end) in [
        ("NameID", "<saml2:NameID>", "</saml2:NameID>"),
        (
            "structure",
            "xsi:type=\"xs:string\">",
            "</saml2:AttributeValue>",
        ),
        (
            "INS",
            "resource-id\"><saml2:AttributeValue xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" xsi:type=\"xs:string\">",
            "^",
        ),
        ("role code", "<Role xmlns=\"urn:hl7-org:v3\" code=\"", "\""),
        ("IssueInstant", "IssueInstant=\"", "\""),
        ("SignatureValue", "<SignatureValue>", "</SignatureValue>"),
        ("DigestValue", "<DigestValue>", "</DigestValue>"),
    ] {
        let bad = tamper(&vihf.xml(), start, end);
        assert_ne!(bad, vihf.xml());
        assert!(
            verify_vihf(&bad, &f.trust()).is_err(),
            "crate verifier accepted a changed {what}"
        );
        let (ok, out) = xmlsec1_verify(&bad, &f.root(), &f.intermediate(), &SAML_ID_ATTR);
        assert!(!ok, "xmlsec1 accepted a changed {what}: {out}");
    }
}

#[test]
fn wrong_trust_anchor_is_refused() {
    let f = fixture();
    let vihf = example_vihf(&f);
    let foreign = f.pki.path(
        f.pki.bad["other-root"]
            .foreign_root
            .as_ref()
            .expect("foreign root"),
    );
    let trust = passerelle_signing::TrustAnchors::from_files(&[&foreign], &[]).expect("trust");
    let err = verify_vihf(&vihf.xml(), &trust).expect_err("foreign anchor");
    assert!(err.to_string().contains("signature check failed"), "{err}");
}

#[test]
fn wrapped_and_duplicated_assertions_are_refused() {
    let f = fixture();
    let vihf = example_vihf(&f);
    // Signature wrapping: the signed assertion moved inside an evil one with another ID.
    let body = &vihf.xml();
    let wrapped = format!(
        "<saml2:Assertion xmlns:saml2=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_evil\" Version=\"2.0\"><saml2:Issuer>x</saml2:Issuer><saml2:Advice>{body}</saml2:Advice></saml2:Assertion>"
    );
    let err = verify_vihf(&wrapped, &f.trust()).expect_err("wrapped");
    assert!(err.to_string().contains("exactly one Assertion"), "{err}");
    // Reference pointing elsewhere than the root ID.
    let moved = vihf
        .xml()
        .replace(&format!("URI=\"#{}\"", vihf.id), "URI=\"#_other\"");
    let err = verify_vihf(&moved, &f.trust()).expect_err("moved reference");
    assert!(
        err.to_string()
            .contains("does not point at the Assertion ID"),
        "{err}"
    );
    // Issuer that is not the signer (re-signed by the right key would be caught by xmlsec).
    let dtd = format!("<!DOCTYPE x [<!ENTITY e \"y\">]>{}", vihf.xml());
    assert!(verify_vihf(&dtd, &f.trust()).is_err());
}

#[test]
fn invalid_contexts_are_refused_with_the_field_named() {
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    type Mutation = Box<dyn Fn(&mut VihfContext)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("roles", Box::new(|c| c.roles.clear())),
        ("structure_id", Box::new(|c| c.structure_id = "9123".into())),
        ("actor.id", Box::new(|c| c.actor.id = " ".into())),
        ("sector", Box::new(|c| c.sector = "SA07".into())),
    ];
    for (field, mutate) in cases {
        let mut ctx = example_context();
        mutate(&mut ctx);
        let err = sign_vihf(&ctx, &software(), &signer, time::OffsetDateTime::now_utc())
            .expect_err(field);
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    for bad in [
        r#"{"patient": {"ins": "207058575627096", "oid": "1.2.250.1.213.1.4.10"}}"#,
        r#"{"patient": {"ins": "207058575627097", "oid": "1.2.3"}}"#,
    ] {
        let mut json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../examples/vihf-context.json"
            ))
            .expect("read"),
        )
        .expect("json");
        let patch: serde_json::Value = serde_json::from_str(bad).expect("patch");
        json["patient"] = patch["patient"].clone();
        let err = VihfContext::from_json(&json.to_string()).expect_err(bad);
        assert!(err.to_string().contains("patient"), "{err}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Any Unicode in free-text fields (markup characters, combining marks, astral
    /// plane) is escaped so that the token still verifies with xmlsec1.
    #[test]
    fn arbitrary_text_still_verifies_with_xmlsec1(
        name in "[\\PC&<>\"'\u{301}\u{1F600}\u{10348}]{1,24}",
        display in "\\PC{1,16}",
        sector_code in "[\\PC&<>]{1,8}",
    ) {
        let f = fixture();
        let signer = f.signer(0, CertRole::DmpSign);
        let mut ctx = example_context();
        ctx.actor.name = name.clone();
        ctx.sector = format!("{sector_code}^1.2.250.1.71.4.2.4");
        if let VihfRole::Professional { profession, .. } = &mut ctx.roles[0] {
            profession.display_name = display;
        }
        prop_assume!(!name.trim().is_empty());
        let mut sw = software();
        sw.name = format!("LPS {name}");
        let vihf = sign_vihf(&ctx, &sw, &signer, time::OffsetDateTime::now_utc()).expect("sign");
        let verified = verify_vihf(&vihf.xml(), &f.trust()).expect("crate verifier");
        prop_assert_eq!(verified.attribute("urn:oasis:names:tc:xspa:1.0:subject:subject-id"), Some(name.as_str()));
        let (ok, out) = xmlsec1_verify(&vihf.xml(), &f.root(), &f.intermediate(), &SAML_ID_ATTR);
        prop_assert!(ok, "xmlsec1: {}\n{}", out, vihf.xml());
    }
}
