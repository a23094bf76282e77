//! Re-signing a VIHF supplied by an internal system, and the hostile inputs it refuses.

mod common;

use common::{SAML_ID_ATTR, fixture, xmlsec1_verify};
use passerelle_config::{CertRole, StructureId};
use passerelle_signing::{SigningError, VihfError, VihfOptions, resign_vihf, verify_vihf};

/// An unsigned VIHF as an internal system would write it (default namespace style,
/// whitespace, another Issuer and an old signature to drop).
fn sih_vihf(structure: &str, mode: &str) -> String {
    sih_vihf_at(
        structure,
        mode,
        time::OffsetDateTime::now_utc() - time::Duration::minutes(5),
    )
}

/// [`sih_vihf`] with the user's login at `authn`.
fn sih_vihf_at(structure: &str, mode: &str, authn: time::OffsetDateTime) -> String {
    let authn = authn
        .format(&time::format_description::well_known::Rfc3339)
        .expect("date");
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Assertion xmlns="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xs="http://www.w3.org/2001/XMLSchema" ID="_6f1c2a44-7b1e-4c61-9d3e-0a1b2c3d4e5f" IssueInstant="2020-01-01T00:00:00Z" Version="2.0">
  <Issuer>CN=wrong</Issuer>
  <ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo/></ds:Signature>
  <Subject><NameID>899900063480</NameID></Subject>
  <AuthnStatement AuthnInstant="{authn}"><AuthnContext><AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password</AuthnContextClassRef></AuthnContext></AuthnStatement>
  <AttributeStatement>
    <Attribute Name="Identifiant_Structure"><AttributeValue xsi:type="xs:string">{structure}</AttributeValue></Attribute>
    <Attribute Name="Secteur_Activite"><AttributeValue xsi:type="xs:string">SA01^1.2.250.1.71.4.2.4</AttributeValue></Attribute>
    <Attribute Name="urn:oasis:names:tc:xspa:1.0:subject:subject-id"><AttributeValue xsi:type="xs:string">Zoé D'Aragon &amp; fils</AttributeValue></Attribute>
    <Attribute Name="urn:oasis:names:tc:xacml:2.0:subject:role"><AttributeValue><Role xmlns="urn:hl7-org:v3" code="10" codeSystem="1.2.250.1.71.1.2.7" displayName="Médecin" xsi:type="CE"/></AttributeValue></Attribute>
    <Attribute Name="VIHF_Version"><AttributeValue xsi:type="xs:string">3.0</AttributeValue></Attribute>
    <Attribute Name="Authentification_mode"><AttributeValue xsi:type="xs:string">{mode}</AttributeValue></Attribute>
    <Attribute Name="urn:oasis:names:tc:xacml:2.0:resource:resource-id"><AttributeValue xsi:type="xs:string">207058575627097^^^&amp;1.2.250.1.213.1.4.10&amp;ISO^NH</AttributeValue></Attribute>
    <Attribute Name="Ressource_URN"><AttributeValue xsi:type="xs:string">urn:dmp</AttributeValue></Attribute>
    <Attribute Name="urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"><AttributeValue><PurposeOfUse xmlns="urn:hl7-org:v3" code="normal" codeSystem="1.2.250.1.213.1.1.4.248" displayName="Accès normal" xsi:type="CE"/></AttributeValue></Attribute>
    <Attribute Name="LPS_Nom"><AttributeValue xsi:type="xs:string">DPI</AttributeValue></Attribute>
    <Attribute Name="LPS_Version"><AttributeValue xsi:type="xs:string">7.2</AttributeValue></Attribute>
  </AttributeStatement>
</Assertion>"#
    )
}

fn owns(f: &common::Fixture, tenant: usize) -> impl Fn(&StructureId) -> bool + '_ {
    move |s| f.config.tenants[tenant].owns_structure(s)
}

#[test]
fn sih_vihf_is_resigned_and_verifies_with_xmlsec1() {
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let eg = &f.pki.tenants[0].geographic_structure_ids[1];
    let now = time::OffsetDateTime::now_utc();
    let signed = resign_vihf(
        &sih_vihf(eg, "INDIRECTE"),
        owns(&f, 0),
        &signer,
        &VihfOptions::default(),
        now,
    )
    .expect("resign");
    assert_eq!(signed.id, "_6f1c2a44-7b1e-4c61-9d3e-0a1b2c3d4e5f");
    assert!(!signed.xml().contains("CN=wrong"));
    assert!(!signed.xml().contains("2020-01-01T00:00:00Z\" Version"));
    assert_eq!(
        signed.xml().matches("<Signature ").count(),
        1,
        "the new signature"
    );
    assert!(
        !signed.xml().contains("<ds:Signature"),
        "the old signature is dropped"
    );
    let verified = verify_vihf(&signed.xml(), &f.trust()).expect("crate verifier");
    assert_eq!(
        verified.attribute("Identifiant_Structure"),
        Some(eg.as_str())
    );
    assert_eq!(
        verified.attribute("urn:oasis:names:tc:xspa:1.0:subject:subject-id"),
        Some("Zoé D'Aragon & fils")
    );
    let (ok, out) = xmlsec1_verify(&signed.xml(), &f.root(), &f.intermediate(), &SAML_ID_ATTR);
    assert!(ok, "{out}\n{}", signed.xml());
}

fn refused(f: &common::Fixture, xml: &str) -> SigningError {
    let signer = f.signer(0, CertRole::DmpSign);
    resign_vihf(
        xml,
        owns(f, 0),
        &signer,
        &VihfOptions::default(),
        time::OffsetDateTime::now_utc(),
    )
    .expect_err("must be refused")
}

#[test]
fn hostile_inputs_get_typed_errors() {
    let f = fixture();
    let ej = f.pki.tenants[0].structure_id.clone();
    let good = sih_vihf(&ej, "INDIRECTE");

    // DTD with entity expansion (billion laughs) and external entity.
    let lol = format!(
        "<!DOCTYPE Assertion [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]>{}",
        good.replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", "")
    );
    assert!(matches!(
        refused(&f, &lol),
        SigningError::Vihf(VihfError::Xml(_))
    ));
    let xxe = good.replace(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
        "<?xml version=\"1.0\"?><!DOCTYPE Assertion [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>",
    );
    assert!(matches!(
        refused(&f, &xxe),
        SigningError::Vihf(VihfError::Xml(_))
    ));
    let undeclared = good.replace("MAX", "&x;").replace("Zoé", "&x;");
    assert!(matches!(
        refused(&f, &undeclared),
        SigningError::Vihf(VihfError::Xml(_))
    ));

    // A namespace name that is not an absolute URI: Canonical XML cannot cover it
    // (libxml2 refuses), so the signature could never verify (found by the fuzzer).
    for declaration in [
        "xmlns:saml=\"1.2.250.1.71.1.2.7\"",
        "xmlns:r=\"relative/path\"",
        "xmlns:s=\"urn:with space\"",
        "xmlns:b=\"urn:bad%zz\"",
        "xmlns:u=\"urn:caf\u{e9}\"",
        "xmlns:k=\"http://www.w3.org/2001/XML[chema-instance\"",
        "xmlns:q=\"http://host:port/\"",
        "xmlns:f=\"urn:a#b#c\"",
    ] {
        let relative = good.replace(
            "<Role xmlns=\"urn:hl7-org:v3\"",
            &format!("<Role xmlns=\"urn:hl7-org:v3\" {declaration}"),
        );
        assert_ne!(relative, good);
        match refused(&f, &relative) {
            SigningError::Vihf(VihfError::Invalid(reason)) => {
                assert!(
                    reason.contains("not an absolute URI"),
                    "{declaration}: {reason}"
                )
            }
            other => panic!("{declaration}: {other:?}"),
        }
    }
    // White space around an identity value: what is signed would not be what is
    // audited (found by the fuzzer's `vihf` target).
    for (from, to) in [
        (
            "<NameID>899900063480</NameID>",
            "<NameID> 899900063480</NameID>",
        ),
        (
            "<NameID>899900063480</NameID>",
            "<NameID>899900063480\n  </NameID>",
        ),
        (
            &*format!("xs:string\">{ej}<"),
            &*format!("xs:string\">{ej} <"),
        ),
    ] {
        let padded = good.replace(from, to);
        assert_ne!(padded, good, "{to}");
        match refused(&f, &padded) {
            SigningError::Vihf(VihfError::Invalid(reason)) => {
                assert!(
                    reason.contains("white space around the value"),
                    "{to}: {reason}"
                )
            }
            other => panic!("{to}: {other:?}"),
        }
    }

    // Absolute URIs of every shape stay accepted.
    for declaration in [
        "xmlns:h=\"http://example.org/a?b=c#d\"",
        "xmlns:o=\"urn:oid:1.2.250.1.71.1.2.7\"",
        "xmlns:p=\"urn:x:%C3%A9\"",
    ] {
        let fine = good.replace(
            "<Role xmlns=\"urn:hl7-org:v3\"",
            &format!("<Role xmlns=\"urn:hl7-org:v3\" {declaration}"),
        );
        resign_vihf(
            &fine,
            owns(&f, 0),
            &f.signer(0, CertRole::DmpSign),
            &VihfOptions::default(),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap_or_else(|e| panic!("{declaration}: {e}"));
    }

    // Two assertions (one nested).
    let nested = good.replace(
        "<Subject>",
        "<Advice><Assertion ID=\"_x\" Version=\"2.0\"/></Advice><Subject>",
    );
    assert_eq!(
        refused(&f, &nested),
        SigningError::Vihf(VihfError::AssertionCount(2))
    );

    // A signature wrapped deeper in the assertion.
    let wrapped = good.replace(
        "<Subject>",
        "<Advice><ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"/></Advice><Subject>",
    );
    assert!(refused(&f, &wrapped).to_string().contains("nested"));

    // Missing attributes, each named.
    for name in ["Secteur_Activite", "Ressource_URN", "LPS_Nom"] {
        let missing = good.replace(&format!("Name=\"{name}\""), "Name=\"Other\"");
        assert_eq!(
            refused(&f, &missing),
            SigningError::Vihf(VihfError::MissingAttribute(name.into()))
        );
    }
    // Not INDIRECTE.
    assert_eq!(
        refused(&f, &sih_vihf(&ej, "DIRECTE")),
        SigningError::Vihf(VihfError::NotIndirect("DIRECTE".into()))
    );
    // A structure of another tenant.
    let other = f.pki.tenants[1].structure_id.clone();
    assert_eq!(
        refused(&f, &sih_vihf(&other, "INDIRECTE")),
        SigningError::Vihf(VihfError::ForeignStructure(other))
    );
    // Not an assertion, not XML, bad ID.
    assert_eq!(
        refused(&f, "<Response xmlns=\"urn:x\"/>"),
        SigningError::Vihf(VihfError::NotAnAssertion)
    );
    assert!(matches!(
        refused(&f, "not xml <"),
        SigningError::Vihf(VihfError::Xml(_))
    ));
    let bad_id = good.replace("ID=\"_6f1c", "ID=\"6f1c");
    assert!(refused(&f, &bad_id).to_string().contains("NCName"));
    let no_issuer = good.replace("<Issuer>CN=wrong</Issuer>", "");
    assert_eq!(
        refused(&f, &no_issuer),
        SigningError::Vihf(VihfError::MissingIssuer)
    );
}

#[test]
fn values_have_one_place_and_one_reading() {
    let f = fixture();
    let ej = f.pki.tenants[0].structure_id.clone();
    let other = f.pki.tenants[1].structure_id.clone();
    let good = sih_vihf(&ej, "INDIRECTE");
    let attr = |name: &str, value: &str| {
        format!(
            r#"<Attribute Name="{name}"><AttributeValue xsi:type="xs:string">{value}</AttributeValue></Attribute>"#
        )
    };
    let cases = [
        // An identity element where some readers look (first in document order) and the
        // proxy does not.
        (
            "Attribute under SubjectConfirmationData",
            good.replace(
                "</NameID></Subject>",
                &format!(
                    "</NameID><SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\"><SubjectConfirmationData>{}</SubjectConfirmationData></SubjectConfirmation></Subject>",
                    attr("Identifiant_Structure", &other)
                ),
            ),
            "Subject holds",
        ),
        (
            "Attribute under Conditions",
            good.replace(
                "<AuthnStatement",
                &format!("<Conditions>{}</Conditions><AuthnStatement", attr("Identifiant_Structure", &other)),
            ),
            "identity elements have one place",
        ),
        ("Advice", good.replace("<Subject>", "<Advice/><Subject>"), "Advice"),
        (
            "second Issuer",
            good.replace("<Subject>", "<Issuer>CN=other</Issuer><Subject>"),
            "Issuer",
        ),
        // Mixed content: the proxy read the text, a DOM reader the whole string.
        (
            "element inside NameID",
            good.replace("<NameID>899900063480</NameID>", "<NameID>8999<x:y xmlns:x=\"urn:x\">0006</x:y>3480</NameID>"),
            "NameID holds elements",
        ),
        (
            "element inside a string value",
            good.replace(&format!(">{ej}</AttributeValue>"), &format!(">{ej}<x:c xmlns:x=\"urn:x\" code=\"{other}\"/></AttributeValue>")),
            "text only",
        ),
        (
            "text beside a coded value",
            good.replace("<Role xmlns", "1999999999<Role xmlns"),
            "exactly one HL7 element",
        ),
        (
            "coded value outside HL7",
            good.replace("<Role xmlns=\"urn:hl7-org:v3\"", "<Role xmlns=\"urn:x\""),
            "HL7 v3",
        ),
    ];
    for (case, xml, why) in cases {
        let err = refused(&f, &xml).to_string();
        assert!(err.contains(why), "{case}: {err}");
    }
    // A non-breaking space around the structure is not white space to XML: not trimmed,
    // so the value checked is the value signed (and it is not a structure id).
    let nbsp = good.replace(&format!(">{ej}<"), &format!(">\u{a0}{ej}<"));
    assert!(
        refused(&f, &nbsp)
            .to_string()
            .contains("Identifiant_Structure")
    );
}

#[test]
fn authn_instant_is_kept_only_when_recent_and_not_in_the_future() {
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let structure = f.pki.tenants[0].structure_id.clone();
    let now = time::OffsetDateTime::now_utc();
    let resign = |authn: time::OffsetDateTime, options: &VihfOptions| {
        resign_vihf(
            &sih_vihf_at(&structure, "INDIRECTE", authn),
            owns(&f, 0),
            &signer,
            options,
            now,
        )
    };
    let defaults = VihfOptions::default();
    // 11 h ago: kept as the SIH said it; IssueInstant is now.
    let eleven = now - time::Duration::hours(11);
    let signed = resign(eleven, &defaults).expect("recent login");
    let kept = eleven
        .format(&time::format_description::well_known::Rfc3339)
        .expect("date");
    assert!(
        signed.xml().contains(&format!("AuthnInstant=\"{kept}\"")),
        "{}",
        signed.xml()
    );
    // 13 h ago, and 10 min ahead: refused, naming AuthnInstant.
    for (authn, why) in [
        (
            now - time::Duration::hours(13),
            "older than dmp.signing.max_authn_age",
        ),
        (now + time::Duration::minutes(10), "is in the future"),
    ] {
        let err = resign(authn, &defaults).expect_err(why);
        let text = err.to_string();
        assert!(
            text.contains("AuthnInstant") && text.contains(why),
            "{text}"
        );
    }
    // A stricter operator setting.
    let strict = VihfOptions {
        max_authn_age_secs: 3600,
        ..VihfOptions::default()
    };
    assert!(resign(now - time::Duration::hours(2), &strict).is_err());
    assert!(resign(now - time::Duration::minutes(30), &strict).is_ok());
    // No AuthnStatement at all.
    let full = sih_vihf(&structure, "INDIRECTE");
    let without: String = full
        .lines()
        .filter(|l| !l.contains("AuthnStatement"))
        .collect::<Vec<_>>()
        .join("\n");
    let err = resign_vihf(&without, owns(&f, 0), &signer, &defaults, now).expect_err("none");
    assert!(err.to_string().contains("AuthnStatement"), "{err}");
}
