//! Submission-lot signatures: 3 documents (one XML), verified by the crate (manifest
//! recomputed) and by Debian's `xmlsec1` with only the trust anchors.

mod common;

use common::{fixture, xmlsec1_verify};
use passerelle_config::CertRole;
use passerelle_signing::lot::{LotMetadataInput, RIM_NS};
use passerelle_signing::xml::Element;
use passerelle_signing::{
    DigestAlgorithm, DocumentDigest, LotRequest, SuppliedDocument, lot_metadata, sign_lot,
    verify_lot,
};

struct Doc {
    unique_id: &'static str,
    mime: &'static str,
    content: Vec<u8>,
}

fn documents() -> Vec<Doc> {
    let mut cda = String::from(
        "<?xml version=\"1.0\"?>\n<ClinicalDocument xmlns=\"urn:hl7-org:v3\">\r\n  <!-- compte rendu -->\n",
    );
    while cda.len() < 100_000 {
        cda.push_str(
            "  <section><text>Résultat &amp; conclusion &lt;normale&gt; — ✓</text></section>\n",
        );
    }
    cda.push_str("</ClinicalDocument>\n");
    vec![
        Doc {
            unique_id: "1.2.250.1.999.1.1.7.1",
            mime: "text/xml",
            content: cda.into_bytes(),
        },
        Doc {
            unique_id: "1.2.250.1.999.1.1.7.2",
            mime: "application/pdf",
            content: (0..100_000u32).map(|i| (i % 251) as u8).collect(),
        },
        Doc {
            unique_id: "1.2.250.1.999.1.1.7.3",
            mime: "text/plain",
            content: vec![b'x'; 100_000],
        },
    ]
}

fn request(docs: &[Doc], digest: DigestAlgorithm) -> LotRequest {
    LotRequest {
        submission_set_unique_id: "1.2.250.1.999.1.1.7.100".into(),
        signature_unique_id: "1.2.250.1.999.1.1.7.200".into(),
        documents: docs
            .iter()
            .map(|d| {
                DocumentDigest::compute(d.unique_id, d.mime, &d.content, digest).expect("digest")
            })
            .collect(),
        digest,
        signing_time: time::OffsetDateTime::now_utc(),
    }
}

fn supplied(docs: &[Doc]) -> Vec<SuppliedDocument<'_>> {
    docs.iter()
        .map(|d| SuppliedDocument {
            unique_id: d.unique_id,
            mime_type: d.mime,
            content: &d.content,
        })
        .collect()
}

const XMLSEC_LOT: [&str; 1] = ["--ignore-manifests"];

#[test]
fn lot_signature_verifies_with_crate_and_xmlsec1() {
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let docs = documents();
    for digest in [DigestAlgorithm::Sha256, DigestAlgorithm::Sha1] {
        let signed = sign_lot(&request(&docs, digest), &signer).expect("sign");
        let verified =
            verify_lot(&signed.xml, &supplied(&docs), &f.trust()).expect("crate verifier");
        assert_eq!(verified.documents.len(), 3);
        assert_eq!(
            verified.submission_set_unique_id.as_deref(),
            Some("1.2.250.1.999.1.1.7.100")
        );
        assert_eq!(verified.signer.subject, f.pki.tenants[0].dmp_sign.subject);
        let (ok, out) = xmlsec1_verify(&signed.xml, &f.root(), &f.intermediate(), &XMLSEC_LOT);
        assert!(ok, "{digest:?}: xmlsec1 refused: {out}\n{}", signed.xml);
    }
}

#[test]
fn lot_signature_has_the_ihe_dsg_shape() {
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let signed = sign_lot(&request(&documents(), DigestAlgorithm::Sha256), &signer).expect("sign");
    let x = &signed.xml;
    for needle in [
        "<Signature xmlns=\"http://www.w3.org/2000/09/xmldsig#\" Id=\"1.2.250.1.999.1.1.7.200\">",
        "<CanonicalizationMethod Algorithm=\"http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments\"/>",
        "<Reference Type=\"http://www.w3.org/2000/09/xmldsig#Manifest\" URI=\"#IHEManifest\">",
        "<Reference Type=\"http://uri.etsi.org/01903/v1.1.1#SignedProperties\" URI=\"#S0-SignedProperties\">",
        "<xades:QualifyingProperties xmlns:xades=\"http://uri.etsi.org/01903/v1.1.1#\" Target=\"#1.2.250.1.999.1.1.7.200\">",
        "<xades:SignedProperties Id=\"S0-SignedProperties\">",
        "<xades:SigningTime>",
        "<xades:SignaturePolicyIdentifier><xades:SignaturePolicyImplied/></xades:SignaturePolicyIdentifier>",
        "<SignatureProperty Id=\"purposeOfSignature\" Target=\"#1.2.250.1.999.1.1.7.200\">1.2.840.10065.1.12.1.14</SignatureProperty>",
        "<Manifest Id=\"IHEManifest\">",
        "<Reference URI=\"urn:oid:1.2.250.1.999.1.1.7.1\">",
        "<Reference URI=\"urn:oid:1.2.250.1.999.1.1.7.100\"><DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><DigestValue>AA==</DigestValue></Reference>",
    ] {
        assert!(x.contains(needle), "missing {needle}\n{x}");
    }
    // SigningCertificate: one Cert per chain certificate (leaf + ORG intermediate), decimal serials.
    assert_eq!(x.matches("<xades:Cert>").count(), 2);
    let serial = f.config.tenants[0].certificates[&CertRole::DmpSign]
        .info
        .serial_decimal
        .clone();
    assert!(x.contains(&format!("<X509SerialNumber>{serial}</X509SerialNumber>")));
    assert!(x.contains("<X509IssuerName>CN=TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS,OU=IGC-SANTE TEST,OU=0002 187512751,O=ASIP-SANTE,C=FR</X509IssuerName>"));
}

#[test]
fn changed_document_or_signature_is_refused() {
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let docs = documents();
    let signed = sign_lot(&request(&docs, DigestAlgorithm::Sha256), &signer).expect("sign");

    // One byte of a document.
    let mut changed = documents();
    changed[1].content[50_000] ^= 1;
    let err = verify_lot(&signed.xml, &supplied(&changed), &f.trust()).expect_err("changed pdf");
    assert!(
        err.to_string().contains("urn:oid:1.2.250.1.999.1.1.7.2")
            && err.to_string().contains("does not match"),
        "{err}"
    );

    // XML documents are compared canonically: re-serialised equivalently still matches,
    // a changed character does not.
    let mut reformatted = documents();
    reformatted[0].content = String::from_utf8(reformatted[0].content.clone())
        .expect("utf8")
        .replace("<?xml version=\"1.0\"?>\n", "")
        .replace("\r\n", "\n")
        .into_bytes();
    verify_lot(&signed.xml, &supplied(&reformatted), &f.trust()).expect("canonically equal");
    let mut edited = documents();
    let pos = edited[0]
        .content
        .iter()
        .position(|b| *b == b'R')
        .expect("R");
    edited[0].content[pos] = b'r';
    assert!(verify_lot(&signed.xml, &supplied(&edited), &f.trust()).is_err());

    // A document the manifest does not cover, and one it covers but is not supplied.
    let mut extra = supplied(&docs);
    extra.push(SuppliedDocument {
        unique_id: "1.2.250.1.999.9",
        mime_type: "text/plain",
        content: b"x",
    });
    let err = verify_lot(&signed.xml, &extra, &f.trust()).expect_err("uncovered");
    assert!(err.to_string().contains("not covered"), "{err}");
    let err = verify_lot(&signed.xml, &supplied(&docs)[..2], &f.trust()).expect_err("missing");
    assert!(err.to_string().contains("no supplied document"), "{err}");

    // One character of the signed XML: manifest digest, signed properties, signature value.
    for (start, what) in [
        (
            "<Manifest Id=\"IHEManifest\"><Reference URI=\"urn:oid:1.2.250.1.999.1.1.7.1\"><DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><DigestValue>",
            "manifest",
        ),
        ("<xades:SigningTime>", "signing time"),
        ("<SignatureValue>", "signature value"),
    ] {
        let i = signed.xml.find(start).expect(what) + start.len();
        let mut bytes = signed.xml.clone().into_bytes();
        bytes[i] = if bytes[i] == b'2' { b'3' } else { b'2' };
        let bad = String::from_utf8(bytes).expect("utf8");
        assert!(
            verify_lot(&bad, &supplied(&docs), &f.trust()).is_err(),
            "crate accepted changed {what}"
        );
        let (ok, _) = xmlsec1_verify(&bad, &f.root(), &f.intermediate(), &XMLSEC_LOT);
        assert!(!ok, "xmlsec1 accepted changed {what}");
    }
}

#[test]
fn metadata_declares_the_signature_document() {
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let signed = sign_lot(&request(&documents(), DigestAlgorithm::Sha256), &signer).expect("sign");
    let author = Element::new(Some("rim"), "Classification")
        .attr(
            "classificationScheme",
            "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d",
        )
        .attr("classifiedObject", "Document01")
        .attr("id", "urn:uuid:old")
        .attr("nodeRepresentation", "");
    let metadata = lot_metadata(
        &LotMetadataInput {
            submission_set_entry_id: "SubmissionSet01".into(),
            signature_entry_id: "SignatureDocument".into(),
            patient_id: "207058575627097^^^&1.2.250.1.213.1.4.10&ISO^NH".into(),
            creation_time: time::OffsetDateTime::now_utc(),
            copied_classifications: vec![author],
        },
        &signed,
    );
    let eo = metadata.extrinsic_object.to_xml();
    assert!(eo.contains(&format!("xmlns:rim=\"{RIM_NS}\"")));
    for needle in [
        "mimeType=\"text/xml\"",
        "nodeRepresentation=\"urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1\"",
        "nodeRepresentation=\"http://www.w3.org/2000/09/xmldsig#\"",
        "nodeRepresentation=\"E1762\"",
        "nodeRepresentation=\"1.2.840.10065.1.12.1.14\"",
        "value=\"1.2.250.1.999.1.1.7.200\"",
        "classificationScheme=\"urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d\" classifiedObject=\"SignatureDocument\"",
        &format!("<rim:Value>{}</rim:Value>", signed.xml.len()),
    ] {
        assert!(eo.contains(needle), "missing {needle}\n{eo}");
    }
    let sha1: String = openssl::sha::sha1(signed.xml.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(eo.contains(&sha1));
    assert!(!eo.contains("urn:uuid:old"));
    let has_member = metadata.has_member.to_xml();
    assert!(
        has_member.contains("HasMember")
            && has_member.contains("sourceObject=\"SubmissionSet01\"")
            && has_member.contains("<rim:Value>Original</rim:Value>")
    );
    let signs = metadata.signs.to_xml();
    assert!(
        signs.contains("associationType=\"urn:ihe:iti:2007:AssociationType:signs\"")
            && signs
                .contains("sourceObject=\"SignatureDocument\" targetObject=\"SubmissionSet01\"")
    );
}
