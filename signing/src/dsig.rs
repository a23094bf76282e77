//! XML-DSig building blocks shared by the VIHF and the lot signature: `SignedInfo`,
//! `SignatureValue` over its canonical form, `KeyInfo` with the certificate.
//!
//! Elements are unprefixed in the XML-DSig namespace, declared once on `Signature`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::SigningError;
use crate::signer::{DigestAlgorithm, Signer};
use crate::xml::{C14n, Element, Scope, canonicalize};

pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

/// One `Reference` of a `SignedInfo` or a `Manifest`.
#[derive(Debug, Clone)]
pub struct ReferenceSpec {
    pub uri: String,
    pub reference_type: Option<&'static str>,
    /// Transform algorithm URIs, in order.
    pub transforms: Vec<&'static str>,
    pub digest: DigestAlgorithm,
    pub digest_value: Vec<u8>,
}

impl ReferenceSpec {
    pub fn element(&self) -> Element {
        let mut r = Element::new(None, "Reference");
        if let Some(t) = self.reference_type {
            r = r.attr("Type", t);
        }
        r = r.attr("URI", self.uri.clone());
        if !self.transforms.is_empty() {
            let mut transforms = Element::new(None, "Transforms");
            for t in &self.transforms {
                transforms =
                    transforms.child(Element::new(None, "Transform").attr("Algorithm", *t));
            }
            r = r.child(transforms);
        }
        r.child(Element::new(None, "DigestMethod").attr("Algorithm", self.digest.digest_uri()))
            .child(Element::new(None, "DigestValue").text(B64.encode(&self.digest_value)))
    }
}

/// `SignedInfo` with its canonicalization and signature methods.
pub fn signed_info(
    c14n: &C14n,
    signature: DigestAlgorithm,
    references: &[ReferenceSpec],
) -> Element {
    let mut si = Element::new(None, "SignedInfo")
        .child(Element::new(None, "CanonicalizationMethod").attr("Algorithm", c14n.uri()))
        .child(
            Element::new(None, "SignatureMethod").attr("Algorithm", signature.rsa_signature_uri()),
        );
    for r in references {
        si = si.child(r.element());
    }
    si
}

/// Signs the canonical form of `signed_info`, which sits in `scope` (the namespaces in
/// force where it is placed: at least the default XML-DSig namespace).
pub fn signature_value(
    signer: &dyn Signer,
    digest: DigestAlgorithm,
    signed_info: &Element,
    scope: &Scope,
    c14n: &C14n,
) -> Result<Element, SigningError> {
    let canonical = canonicalize(signed_info, scope, c14n, None);
    let value = signer.sign(digest, canonical.as_bytes())?;
    Ok(Element::new(None, "SignatureValue").text(B64.encode(value)))
}

/// `KeyInfo/X509Data` with the signing certificate (the leaf alone, as the ANS
/// examples carry it).
pub fn key_info(signer: &dyn Signer) -> Element {
    Element::new(None, "KeyInfo").child(Element::new(None, "X509Data").child(
        Element::new(None, "X509Certificate").text(signer.certificate_base64().into_owned()),
    ))
}

/// The scope inside a `Signature` element that declares XML-DSig as default namespace.
pub fn dsig_scope(outer: &Scope) -> Scope {
    let mut scope = outer.clone();
    scope.insert(None, DSIG_NS.to_string());
    scope
}
