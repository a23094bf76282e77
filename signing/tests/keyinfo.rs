//! The verifier's key comes from the one certificate it checks: `KeyInfo` holds exactly
//! one `X509Data` with exactly one `X509Certificate`, and libxmlsec1 verifies with that
//! certificate's key only. An attacker who signs with their own key and puts its
//! `KeyValue` in front of a legitimate certificate (which chains to the anchors) must be
//! refused, for VIHF tokens and lot signatures alike.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::fixture;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use passerelle_config::CertRole;
use passerelle_signing::{
    DigestAlgorithm, DocumentDigest, LotRequest, SoftwareIdentity, SoftwareSigner,
    SuppliedDocument, VerifyError, VihfContext, sign_lot, sign_vihf, verify_lot, verify_vihf,
};

fn context() -> VihfContext {
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

/// A fresh RSA key that no certificate vouches for.
fn attacker_key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey")
}

/// A signer that signs with `key` but presents tenant A's legitimate ORG SIGN chain, so
/// that its `KeyInfo/X509Data` holds a certificate that chains to the anchors.
fn attacker_signer(f: &common::Fixture, key: &PKey<Private>) -> SoftwareSigner {
    let material = &f.config.tenants[0].certificates[&CertRole::DmpSign];
    let mut chain = vec![material.leaf_der.clone()];
    chain.extend(material.intermediates_der.iter().cloned());
    SoftwareSigner::from_pkcs8(&key.private_key_to_pkcs8().expect("pkcs8"), chain).expect("signer")
}

/// `<KeyValue>` of an RSA public key (XML-DSig `CryptoBinary`: big-endian, base64).
fn key_value(key: &PKey<Private>) -> String {
    let rsa = key.rsa().expect("rsa");
    format!(
        "<KeyValue><RSAKeyValue><Modulus>{}</Modulus><Exponent>{}</Exponent></RSAKeyValue></KeyValue>",
        B64.encode(rsa.n().to_vec()),
        B64.encode(rsa.e().to_vec())
    )
}

/// `xml` with `insert` as the first child of `KeyInfo` (signed documents here write it
/// `<KeyInfo>` in the default XML-DSig namespace; `KeyInfo` is not covered by the
/// signature, so editing it leaves the signature value valid).
fn prepend_to_key_info(xml: &str, insert: &str) -> String {
    assert_eq!(xml.matches("<KeyInfo>").count(), 1, "{xml}");
    xml.replace("<KeyInfo>", &format!("<KeyInfo>{insert}"))
}

fn append_to_key_info(xml: &str, insert: &str) -> String {
    assert_eq!(xml.matches("</KeyInfo>").count(), 1, "{xml}");
    xml.replace("</KeyInfo>", &format!("{insert}</KeyInfo>"))
}

fn attacker_vihf(f: &common::Fixture, key: &PKey<Private>) -> String {
    sign_vihf(
        &context(),
        &software(),
        &attacker_signer(f, key),
        time::OffsetDateTime::now_utc(),
    )
    .expect("sign")
    .xml()
}

fn legitimate_vihf(f: &common::Fixture) -> String {
    sign_vihf(
        &context(),
        &software(),
        &f.signer(0, CertRole::DmpSign),
        time::OffsetDateTime::now_utc(),
    )
    .expect("sign")
    .xml()
}

const DOC_UID: &str = "1.2.250.1.999.1.1.9.1";
const SET_UID: &str = "1.2.250.1.999.1.1.9.100";
const DOC: &[u8] = b"compte rendu";

fn lot_request() -> LotRequest {
    LotRequest {
        submission_set_unique_id: SET_UID.into(),
        signature_unique_id: "1.2.250.1.999.1.1.9.200".into(),
        documents: vec![
            DocumentDigest::compute(DOC_UID, "text/plain", DOC, DigestAlgorithm::Sha256)
                .expect("digest"),
        ],
        digest: DigestAlgorithm::Sha256,
        signing_time: time::OffsetDateTime::now_utc(),
    }
}

fn supplied() -> [SuppliedDocument<'static>; 1] {
    [SuppliedDocument {
        unique_id: DOC_UID,
        mime_type: "text/plain",
        content: DOC,
    }]
}

/// A named change to a signed document.
type Edit = Box<dyn Fn(&str) -> String>;

fn assert_key_info_refused(err: &VerifyError, what: &str) {
    assert!(
        matches!(err, VerifyError::Structure(m) if m.contains("KeyInfo")),
        "{what}: {err}"
    );
}

/// `KeyInfo` carries the signer's leaf, encoded once and kept: the same base64 as the
/// trait's default (which encodes at each call) and as the leaf's DER, at every call.
#[test]
fn key_info_holds_the_leaf_certificate_encoded_once() {
    #[derive(Debug)]
    struct Default<'a>(&'a SoftwareSigner);
    impl passerelle_signing::Signer for Default<'_> {
        fn sign(
            &self,
            digest: DigestAlgorithm,
            message: &[u8],
        ) -> Result<Vec<u8>, passerelle_signing::SigningError> {
            self.0.sign(digest, message)
        }
        fn certificate_chain(&self) -> &[Vec<u8>] {
            self.0.certificate_chain()
        }
        fn certificate(&self) -> &passerelle_config::CertificateInfo {
            self.0.certificate()
        }
    }
    use passerelle_signing::Signer as _;
    let f = fixture();
    let signer = f.signer(0, CertRole::DmpSign);
    let leaf = &f.config.tenants[0].certificates[&CertRole::DmpSign].leaf_der;
    let expected = B64.encode(leaf);
    for _ in 0..2 {
        assert_eq!(signer.certificate_base64(), expected);
        assert_eq!(Default(&signer).certificate_base64(), expected);
    }
    let token = sign_vihf(
        &context(),
        &software(),
        &signer,
        time::OffsetDateTime::now_utc(),
    )
    .expect("vihf")
    .xml();
    assert!(token.contains(&format!("<X509Certificate>{expected}</X509Certificate>")));
}

#[test]
fn vihf_signed_by_an_attacker_key_value_before_a_legitimate_certificate_is_refused() {
    let f = fixture();
    let key = attacker_key();
    let forged = attacker_vihf(&f, &key);
    // Without the KeyValue, the signature does not match the certificate's key.
    let err = verify_vihf(&forged, &f.trust()).expect_err("wrong key");
    assert!(matches!(err, VerifyError::Signature(_)), "{err}");
    // With the attacker's KeyValue first, libxmlsec1 (certificate check off) used to take
    // the KeyValue as the verification key while the chain check approved X509Data.
    let with_key_value = prepend_to_key_info(&forged, &key_value(&key));
    let err = verify_vihf(&with_key_value, &f.trust()).expect_err("KeyValue before X509Data");
    assert_key_info_refused(&err, "KeyValue before X509Data");
    let after = append_to_key_info(&forged, &key_value(&key));
    let err = verify_vihf(&after, &f.trust()).expect_err("KeyValue after X509Data");
    assert_key_info_refused(&err, "KeyValue after X509Data");
}

#[test]
fn lot_signed_by_an_attacker_key_value_before_a_legitimate_certificate_is_refused() {
    let f = fixture();
    let key = attacker_key();
    let forged = sign_lot(&lot_request(), &attacker_signer(&f, &key))
        .expect("sign")
        .xml;
    let err = verify_lot(&forged, &supplied(), &f.trust()).expect_err("wrong key");
    assert!(matches!(err, VerifyError::Signature(_)), "{err}");
    let with_key_value = prepend_to_key_info(&forged, &key_value(&key));
    let err =
        verify_lot(&with_key_value, &supplied(), &f.trust()).expect_err("KeyValue before X509Data");
    assert_key_info_refused(&err, "KeyValue before X509Data");
}

#[test]
fn key_info_holds_one_x509_data_with_one_certificate_and_nothing_else() {
    let f = fixture();
    let vihf = legitimate_vihf(&f);
    verify_vihf(&vihf, &f.trust()).expect("the untouched token verifies");
    let lot = sign_lot(&lot_request(), &f.signer(0, CertRole::DmpSign))
        .expect("sign")
        .xml;
    verify_lot(&lot, &supplied(), &f.trust()).expect("the untouched lot verifies");

    let material = &f.config.tenants[0].certificates[&CertRole::DmpSign];
    let leaf = B64.encode(&material.leaf_der);
    let intermediate = B64.encode(&material.intermediates_der[0]);
    let second_certificate = format!("<X509Certificate>{intermediate}</X509Certificate>");
    let edits: Vec<(&str, Edit)> = vec![
        (
            "KeyName",
            Box::new(|x: &str| prepend_to_key_info(x, "<KeyName>signer</KeyName>")),
        ),
        (
            "RetrievalMethod",
            Box::new(|x: &str| {
                append_to_key_info(
                    x,
                    "<RetrievalMethod URI=\"#x\" Type=\"http://www.w3.org/2000/09/xmldsig#X509Data\"/>",
                )
            }),
        ),
        (
            "second X509Data",
            Box::new(move |x: &str| {
                append_to_key_info(
                    x,
                    &format!("<X509Data><X509Certificate>{leaf}</X509Certificate></X509Data>"),
                )
            }),
        ),
        (
            "second X509Certificate",
            Box::new(move |x: &str| {
                x.replace("</X509Data>", &format!("{second_certificate}</X509Data>"))
            }),
        ),
        (
            "X509SubjectName beside the certificate",
            Box::new(|x: &str| {
                x.replace(
                    "</X509Data>",
                    "<X509SubjectName>CN=x</X509SubjectName></X509Data>",
                )
            }),
        ),
        (
            "text in KeyInfo",
            Box::new(|x: &str| prepend_to_key_info(x, "stray")),
        ),
        (
            "element of another namespace in KeyInfo",
            Box::new(|x: &str| prepend_to_key_info(x, "<x:K xmlns:x=\"urn:x\"/>")),
        ),
    ];
    for (what, edit) in &edits {
        let bad = edit(&vihf);
        assert_ne!(bad, vihf, "{what}: the edit changed nothing");
        let err = verify_vihf(&bad, &f.trust()).expect_err(what);
        assert!(
            matches!(err, VerifyError::Structure(_)),
            "VIHF {what}: {err}"
        );
        let bad = edit(&lot);
        assert_ne!(bad, lot, "{what}: the edit changed nothing");
        let err = verify_lot(&bad, &supplied(), &f.trust()).expect_err(what);
        assert!(
            matches!(err, VerifyError::Structure(_)),
            "lot {what}: {err}"
        );
    }
    // Whitespace and comments between KeyInfo children stay allowed.
    let spaced = prepend_to_key_info(&vihf, "\n  <!-- signer -->\n  ");
    verify_vihf(&spaced, &f.trust()).expect("whitespace and a comment in KeyInfo");
}
