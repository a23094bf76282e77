//! Submission-lot signatures: 3 documents (one XML), verified by the crate and by
//! Debian's `xmlsec1` as standard XML-DSig processors (Manifest processed, `urn:oid:`
//! mapped to each document's bytes) with only the trust anchors.

mod common;

use common::{XmlsecLot, fixture, xmllint_schema, xmlsec1_verify, xmlsec1_verify_lot};
use passerelle_config::CertRole;
use passerelle_signing::lot::{LotMetadataInput, RIM_NS, XADES_NS};
use passerelle_signing::xml::{Element, Scope, parse, scope_of};
use passerelle_signing::{
    DigestAlgorithm, DocumentDigest, LotRequest, Signer, SuppliedDocument, VerifyError,
    lot_metadata, sign_lot, verify_lot,
};

struct Doc {
    unique_id: &'static str,
    mime: &'static str,
    content: Vec<u8>,
}

/// A CDA-like document whose raw bytes are not its canonical form: XML declaration with
/// encoding, a style-sheet processing instruction and a comment before the root, CRLF,
/// comments, references, single-quoted and empty elements, a comment after the root.
fn documents() -> Vec<Doc> {
    let mut cda = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<?xml-stylesheet type=\"text/xsl\" href=\"CDA.xsl\"?>\r\n<!-- produit par le SIH -->\n<ClinicalDocument xmlns=\"urn:hl7-org:v3\" xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance'>\r\n  <!-- compte rendu -->\n  <realmCode code='FR'/>\r\n",
    );
    while cda.len() < 100_000 {
        cda.push_str(
            "  <section><text>Résultat &amp; conclusion &lt;normale&gt; — ✓</text></section>\n",
        );
    }
    cda.push_str("</ClinicalDocument>\r\n<!-- fin -->\r\n");
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
const SUBMISSION_SET: &str = "1.2.250.1.999.1.1.7.100";

/// `xmlsec1 --verify` with the Manifest processed and the documents mapped.
fn xmlsec1_lot(xml: &str, docs: &[Doc]) -> XmlsecLot {
    let f = fixture();
    let mapped: Vec<(&str, &[u8])> = docs
        .iter()
        .map(|d| (d.unique_id, d.content.as_slice()))
        .collect();
    xmlsec1_verify_lot(xml, &f.root(), &f.intermediate(), &mapped, SUBMISSION_SET)
}

/// Every document reference succeeded, and the submission set's placeholder is the only
/// failing one.
fn assert_standard_processor_accepts(result: &XmlsecLot, docs: &[Doc], what: &str) {
    assert!(result.ok, "{what}: xmlsec1 refused: {}", result.output);
    assert_eq!(
        result.manifest.len(),
        docs.len() + 1,
        "{what}: {}",
        result.output
    );
    for d in docs {
        let uri = format!("urn:oid:{}", d.unique_id);
        assert_eq!(
            result.status(&uri),
            Some("succeeded"),
            "{what}: {uri} ({}): {}",
            d.mime,
            result.output
        );
    }
    assert_eq!(
        result.status(&format!("urn:oid:{SUBMISSION_SET}")),
        Some("invalid"),
        "{what}: {}",
        result.output
    );
    assert!(
        result.output.contains(&format!(
            "Manifests References (ok/all): {}/{}",
            docs.len(),
            docs.len() + 1
        )),
        "{what}: {}",
        result.output
    );
}

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
            Some(SUBMISSION_SET)
        );
        assert_eq!(verified.signer.subject, f.pki.tenants[0].dmp_sign.subject);
        let (ok, out) = xmlsec1_verify(&signed.xml, &f.root(), &f.intermediate(), &XMLSEC_LOT);
        assert!(ok, "{digest:?}: xmlsec1 refused: {out}\n{}", signed.xml);
        assert_standard_processor_accepts(
            &xmlsec1_lot(&signed.xml, &docs),
            &docs,
            &format!("{digest:?}"),
        );
    }
}

#[test]
fn xml_document_references_declare_their_transform() {
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let docs = documents();
    let signed = sign_lot(&request(&docs, DigestAlgorithm::Sha256), &signer).expect("sign");
    let x = &signed.xml;
    let transform = "<Transforms><Transform Algorithm=\"http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments\"/></Transforms>";
    assert!(
        x.contains(&format!(
            "<Reference URI=\"urn:oid:1.2.250.1.999.1.1.7.1\">{transform}<DigestMethod"
        )),
        "{x}"
    );
    // Binary and text documents: raw bytes, no transform; the raw digest is the one
    // written.
    for d in &docs[1..] {
        let raw = openssl::sha::sha256(&d.content);
        assert!(
            x.contains(&format!(
                "<Reference URI=\"urn:oid:{}\"><DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><DigestValue>{}</DigestValue>",
                d.unique_id,
                b64(&raw)
            )),
            "{}: {x}",
            d.unique_id
        );
    }
    assert_eq!(x.matches("<Transforms>").count(), 1, "{x}");
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The signer's old convention (XML digested canonically, but no Transforms declared):
/// a standard processor digests the raw bytes and refuses the reference; so does the
/// crate's verifier, saying why.
#[test]
fn xml_reference_without_declared_transform_is_refused_by_both() {
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let docs = documents();
    let mut req = request(&docs, DigestAlgorithm::Sha256);
    assert!(req.documents[0].xml);
    req.documents[0].xml = false;
    let signed = sign_lot(&req, &signer).expect("sign");
    assert!(!signed.xml.contains("<Transforms>"));

    let result = xmlsec1_lot(&signed.xml, &docs);
    assert!(result.ok, "SignedInfo still verifies: {}", result.output);
    assert_eq!(
        result.status("urn:oid:1.2.250.1.999.1.1.7.1"),
        Some("invalid"),
        "{}",
        result.output
    );
    assert_eq!(
        result.status("urn:oid:1.2.250.1.999.1.1.7.2"),
        Some("succeeded")
    );

    let err = verify_lot(&signed.xml, &supplied(&docs), &f.trust()).expect_err("no transform");
    let text = err.to_string();
    assert!(
        matches!(&err, VerifyError::Manifest { uri, .. } if uri == "urn:oid:1.2.250.1.999.1.1.7.1"),
        "{err:?}"
    );
    assert!(
        text.contains("the Reference declares no Transforms")
            && text.contains("XML documents need the c14n-with-comments transform declared"),
        "{text}"
    );
}

/// Byte order mark, declared encodings, and what sits around the root element: the
/// signer's canonical form is the one libxmlsec1 computes from the raw bytes.
#[test]
fn xml_document_variants_agree_with_a_standard_processor() {
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let variants: [(&str, Vec<u8>); 6] = [
        (
            "BOM and UTF-8 declaration",
            b"\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<a>\xc3\xa9t\xc3\xa9</a>\r\n".to_vec(),
        ),
        ("BOM, no declaration", b"\xef\xbb\xbf<a b='1'>x</a>".to_vec()),
        (
            "ISO-8859-1 declared, ASCII content",
            b"<?xml version='1.0' encoding='ISO-8859-1'?><a>&#233;t&#xE9;</a>".to_vec(),
        ),
        (
            "lower-case utf-8, standalone",
            b"<?xml version=\"1.0\" encoding=\"utf-8\" standalone=\"yes\"?><a/>".to_vec(),
        ),
        (
            "comments and processing instructions around the root",
            // (CDATA with LF only: libxml2 2.9's push parser, which libxmlsec1 uses for
            // dereferenced documents, keeps a CR inside CDATA, against XML 1.0 §2.11.)
            b"<!--a-->\n<?pi   data with  spaces  ?><?empty?>\r\n<r><![CDATA[<x> & \n]]></r>\n<!--b--><?z?>\n"
                .to_vec(),
        ),
        (
            "attribute normalisation",
            b"<a x=\"1\r\n2\t3 &#9;&#10;&#13;\" xmlns:p=\"urn:p\" p:y=\"&quot;&lt;&gt;\"/>".to_vec(),
        ),
    ];
    for (what, content) in variants {
        let docs = vec![Doc {
            unique_id: "1.2.250.1.999.1.1.7.9",
            mime: "text/xml",
            content,
        }];
        let signed = sign_lot(&request(&docs, DigestAlgorithm::Sha256), &signer)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_standard_processor_accepts(&xmlsec1_lot(&signed.xml, &docs), &docs, what);
        verify_lot(&signed.xml, &supplied(&docs), &f.trust())
            .unwrap_or_else(|e| panic!("{what}: crate verifier: {e}"));
    }
    // Another encoding than UTF-8 with non-ASCII bytes: a verifier would decode other
    // characters than the signer; refused instead.
    let latin1 = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>\xc3\xa9</a>";
    let err = DocumentDigest::compute("1.2.3", "text/xml", latin1, DigestAlgorithm::Sha256)
        .expect_err("latin-1");
    assert!(err.to_string().contains("ISO-8859-1"), "{err}");
}

/// The signature document is valid against the XML-DSig schema: SignatureProperties in
/// no namespace (text-only SignatureProperty), XAdES as lax content of ds:Object.
#[test]
fn lot_signature_validates_against_the_xmldsig_schema() {
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let signed = sign_lot(&request(&documents(), DigestAlgorithm::Sha256), &signer).expect("sign");
    assert!(
        signed.xml.contains("<Object><SignatureProperties xmlns=\"\"><SignatureProperty Id=\"purposeOfSignature\" Target=\"#1.2.250.1.999.1.1.7.200\">1.2.840.10065.1.12.1.14</SignatureProperty></SignatureProperties></Object>"),
        "{}",
        signed.xml
    );
    let xsd = common::shared_spec().join("insi/xsd/SAML/xmldsig-core-schema.xsd");
    let (_, out) = xmllint_schema(&signed.xml, &xsd);
    // The one complaint left: Signature/@Id is the signature document's uniqueId (an OID,
    // domain.md §6), which is not an xs:ID (NCName). Anything else is a regression.
    let errors: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("validity error"))
        .filter(|l| {
            !(l.contains("element Signature:")
                && l.contains("attribute 'Id': '1.2.250.1.999.1.1.7.200' is not a valid value of the atomic type 'xs:ID'"))
        })
        .collect();
    assert!(errors.is_empty(), "{out}");
    // With an NCName Id the whole document validates.
    let mut ncname = request(&documents(), DigestAlgorithm::Sha256);
    ncname.signature_unique_id = "S1.2.250.1.999.1.1.7.200".into();
    let signed = sign_lot(&ncname, &signer).expect("sign");
    let (ok, out) = xmllint_schema(&signed.xml, &xsd);
    assert!(ok, "{out}\n{}", signed.xml);
}

/// SigningCertificate lists leaf, intermediate and root (the configured anchor), each
/// with the digest of its DER; KeyInfo keeps the leaf only.
#[test]
fn signing_certificate_lists_the_chain_up_to_the_root() {
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let material = &f.config.tenants[0].certificates[&CertRole::DmpSign];
    let root_pem = std::fs::read(f.root()).expect("root");
    let root_der = openssl::x509::X509::from_pem(&root_pem)
        .expect("root pem")
        .to_der()
        .expect("der");
    assert_eq!(material.anchor_der.as_deref(), Some(root_der.as_slice()));
    assert_eq!(signer.certificate_chain().len(), 2);
    assert_eq!(signer.certificate_chain_to_root().len(), 3);
    let expected = [
        material.leaf_der.clone(),
        material.intermediates_der[0].clone(),
        root_der,
    ];
    for digest in [DigestAlgorithm::Sha256, DigestAlgorithm::Sha1] {
        let signed = sign_lot(&request(&documents(), digest), &signer).expect("sign");
        let root = parse(&signed.xml).expect("parse");
        let mut certs = Vec::new();
        collect_xades(&root, &Scope::new(), "Cert", &mut certs);
        assert_eq!(certs.len(), 3, "{}", signed.xml);
        for (cert, der) in certs.iter().zip(&expected) {
            let value = cert
                .elements()
                .find(|e| e.local == "CertDigest")
                .and_then(|d| d.elements().find(|e| e.local == "DigestValue"))
                .map(Element::text_content)
                .expect("CertDigest/DigestValue");
            assert_eq!(value, b64(&digest.digest(der)), "{digest:?}");
            // Issuer and serial of that certificate (kept by the signer from the first
            // lot on): the serial as OpenSSL reads it, in decimal.
            let serial = cert
                .elements()
                .find(|e| e.local == "IssuerSerial")
                .expect("IssuerSerial");
            let field = |local: &str| {
                serial
                    .elements()
                    .find(|e| e.local == local)
                    .map(Element::text_content)
            };
            let x509 = openssl::x509::X509::from_der(der).expect("der");
            let decimal = x509
                .serial_number()
                .to_bn()
                .and_then(|bn| bn.to_dec_str())
                .expect("serial")
                .to_string();
            assert_eq!(field("X509SerialNumber"), Some(decimal), "{digest:?}");
            let info = passerelle_config::CertificateInfo::from_der(der).expect("info");
            assert_eq!(field("X509IssuerName"), Some(info.issuer), "{digest:?}");
        }
        assert_eq!(signed.xml.matches("<X509Certificate>").count(), 1);
    }
}

fn collect_xades<'e>(e: &'e Element, scope: &Scope, local: &str, out: &mut Vec<&'e Element>) {
    let inner = scope_of(e, scope);
    let ns = e
        .prefix
        .as_deref()
        .and_then(|p| inner.get(&Some(p.to_string())));
    if e.local == local && ns.map(String::as_str) == Some(XADES_NS) {
        out.push(e);
    }
    for c in e.elements() {
        collect_xades(c, &inner, local, out);
    }
}

/// The verifier's loaders serve the supplied documents and nothing else: a reference
/// to a file, a relative path or an HTTP URL reads nothing and opens no connection.
#[test]
fn references_reach_only_the_supplied_documents() {
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let docs = documents();
    let signed = sign_lot(&request(&docs, DigestAlgorithm::Sha256), &signer).expect("sign");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let pdf = "urn:oid:1.2.250.1.999.1.1.7.2";
    for uri in [
        format!("http://127.0.0.1:{port}/document"),
        "file:///etc/hostname".to_string(),
        "/etc/hostname".to_string(),
        "Cargo.toml".to_string(),
    ] {
        let bad = signed.xml.replace(
            &format!("<Reference URI=\"{pdf}\">"),
            &format!("<Reference URI=\"{uri}\">"),
        );
        assert_ne!(bad, signed.xml);
        let err = verify_lot(&bad, &supplied(&docs), &f.trust()).expect_err(&uri);
        assert!(
            matches!(&err, VerifyError::Manifest { uri: u, .. } if *u == uri),
            "{uri}: {err:?}"
        );
    }
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the verifier connected to the URL"
    );
}

/// Several threads verify at once, each with its own documents (the loaders read a
/// per-thread map): a thread with a changed document never sees another's.
#[test]
fn concurrent_verifications_see_their_own_documents() {
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let docs = documents();
    let signed = sign_lot(&request(&docs, DigestAlgorithm::Sha256), &signer).expect("sign");
    let trust = f.trust();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (signed, trust) = (&signed, &trust);
            s.spawn(move || {
                let mut mine = documents();
                let honest = t % 2 == 0;
                if !honest {
                    let text = String::from_utf8(mine[0].content.clone()).expect("utf8");
                    mine[0].content = text.replacen("conclusion", "Conclusion", 1).into_bytes();
                }
                for _ in 0..10 {
                    let result = verify_lot(&signed.xml, &supplied(&mine), trust);
                    assert_eq!(result.is_ok(), honest, "thread {t}: {result:?}");
                }
            });
        }
    });
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
    // SigningCertificate: one Cert per chain certificate up to the root (leaf, ORG
    // intermediate, root), decimal serials.
    assert_eq!(x.matches("<xades:Cert>").count(), 3);
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
        .replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n", "")
        .replace("\r\n", "\n")
        .replace(
            "<realmCode code='FR'/>",
            "<realmCode code=\"FR\"></realmCode>",
        )
        .into_bytes();
    assert_ne!(reformatted[0].content, documents()[0].content);
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
            "<Manifest Id=\"IHEManifest\"><Reference URI=\"urn:oid:1.2.250.1.999.1.1.7.1\"><Transforms><Transform Algorithm=\"http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments\"/></Transforms><DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><DigestValue>",
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
