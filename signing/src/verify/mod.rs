//! Verification of VIHF tokens and lot signatures with libxmlsec1, the reference
//! implementation, plus the structural checks that stop signature-wrapping attacks:
//! exactly one assertion, exactly one signature, its single reference pointing at the
//! assertion's registered ID. Lot signatures additionally have their manifest processed
//! by libxmlsec1 as any standard XML-DSig processor would: each `urn:oid:` reference
//! dereferenced to the supplied document's bytes, its own declared transforms applied.
//! Nothing of the signer's conventions is reused here. Each error names the check that
//! failed.

mod ffi;

pub(crate) use ffi::is_absolute_uri;

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use passerelle_config::CertificateInfo;

use crate::dsig::{DSIG_NS, ENVELOPED};
use crate::lot::{self, MANIFEST_ID, SIGNED_PROPERTIES_ID, XADES_NS};
use crate::vihf::SAML_NS;
use crate::xml::{self, C14n, Element, Node, Scope};

/// Certificates to verify signers against: anchors (trusted) and intermediates (used to
/// build the chain only).
#[derive(Debug, Clone, Default)]
pub struct TrustAnchors {
    pub anchors: Vec<Vec<u8>>,
    pub intermediates: Vec<Vec<u8>>,
}

impl TrustAnchors {
    /// Reads PEM (or DER) certificate files.
    pub fn from_files(anchors: &[&Path], intermediates: &[&Path]) -> Result<Self, VerifyError> {
        let read = |paths: &[&Path]| -> Result<Vec<Vec<u8>>, VerifyError> {
            let mut out = Vec::new();
            for p in paths {
                let bytes = std::fs::read(p).map_err(|e| {
                    VerifyError::Trust(format!("{}: cannot read: {e}", p.display()))
                })?;
                let certs = openssl::x509::X509::stack_from_pem(&bytes)
                    .ok()
                    .filter(|c| !c.is_empty())
                    .or_else(|| openssl::x509::X509::from_der(&bytes).ok().map(|c| vec![c]))
                    .ok_or_else(|| {
                        VerifyError::Trust(format!("{}: no certificate in it", p.display()))
                    })?;
                for c in certs {
                    out.push(c.to_der().map_err(|e| VerifyError::Trust(e.to_string()))?);
                }
            }
            Ok(out)
        };
        Ok(Self {
            anchors: read(anchors)?,
            intermediates: read(intermediates)?,
        })
    }
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not well-formed or not allowed: {0}")]
    Xml(#[from] xml::XmlError),
    #[error("structure check failed: {0}")]
    Structure(String),
    #[error("signature check failed: {0}")]
    Signature(String),
    #[error("manifest check failed for {uri}: {reason}")]
    Manifest { uri: String, reason: String },
    #[error("trust anchors: {0}")]
    Trust(String),
}

fn structure<T>(message: impl Into<String>) -> Result<T, VerifyError> {
    Err(VerifyError::Structure(message.into()))
}

/// What a verified VIHF says.
#[derive(Debug, Clone)]
pub struct VerifiedVihf {
    pub id: String,
    pub issue_instant: String,
    /// `Issuer` text (equals the signer's subject DN).
    pub issuer: String,
    pub signer: CertificateInfo,
    /// `NameID`.
    pub subject_id: String,
    /// Attribute name to values (strings; `code` of coded values).
    pub attributes: BTreeMap<String, Vec<String>>,
}

impl VerifiedVihf {
    /// First value of an attribute.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// Elements named `(ns, local)` anywhere under `e` (inclusive).
fn count_named(e: &Element, scope: &Scope, ns: &str, local: &str) -> usize {
    let inner = xml::scope_of(e, scope);
    let me = usize::from(e.local == local && xml::resolve(&inner, e.prefix.as_deref()) == Some(ns));
    me + e
        .elements()
        .map(|c| count_named(c, &inner, ns, local))
        .sum::<usize>()
}

fn child<'e>(e: &'e Element, scope: &Scope, ns: &str, local: &str) -> Vec<&'e Element> {
    e.elements()
        .filter(|c| c.local == local && xml::namespace_of(c, scope).as_deref() == Some(ns))
        .collect()
}

fn one<'e>(
    e: &'e Element,
    scope: &Scope,
    ns: &str,
    local: &str,
    what: &str,
) -> Result<&'e Element, VerifyError> {
    match child(e, scope, ns, local).as_slice() {
        [only] => Ok(only),
        [] => structure(format!("{what}: no {local} element")),
        _ => structure(format!("{what}: more than one {local} element")),
    }
}

/// The only element child of `parent`, which must be `(DSIG_NS, local)`; text other
/// than XML white space is refused too (comments are let through).
fn only_child<'e>(
    parent: &'e Element,
    scope: &Scope,
    local: &str,
    what: &str,
) -> Result<&'e Element, VerifyError> {
    let xml_space = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    let text = |n: &Node| matches!(n, Node::Text(t) if !t.chars().all(xml_space));
    if parent.children.iter().any(text) {
        return structure(format!(
            "{what} must hold exactly one {local} and nothing else, found text"
        ));
    }
    let children: Vec<&Element> = parent.elements().collect();
    match children.as_slice() {
        [only]
            if only.local == local
                && xml::namespace_of(only, scope).as_deref() == Some(DSIG_NS) =>
        {
            Ok(only)
        }
        [] => structure(format!("{what}: no {local} element")),
        _ => structure(format!(
            "{what} must hold exactly one {local} and nothing else, found [{}]",
            children
                .iter()
                .map(|c| c.local.as_ref())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The signer certificate: `KeyInfo` must hold exactly one `X509Data` holding exactly one
/// `X509Certificate`, and nothing else (no `KeyValue`, `KeyName`, `RetrievalMethod`,
/// second certificate, issuer-serial or subject name). libxmlsec1 then verifies with
/// this certificate's key and no other (see `ffi`), and it is the one whose chain is
/// checked and which is reported.
fn signer_certificate(
    signature: &Element,
    scope: &Scope,
) -> Result<(Vec<u8>, CertificateInfo), VerifyError> {
    let key_info = one(signature, scope, DSIG_NS, "KeyInfo", "Signature")?;
    let ki_scope = xml::scope_of(key_info, scope);
    let data = only_child(key_info, &ki_scope, "X509Data", "KeyInfo")?;
    let data_scope = xml::scope_of(data, &ki_scope);
    let cert = only_child(data, &data_scope, "X509Certificate", "X509Data")?;
    let b64: String = cert.text_content().split_whitespace().collect();
    let der = B64
        .decode(b64)
        .map_err(|_| VerifyError::Structure("X509Certificate is not base64".into()))?;
    let info = CertificateInfo::from_der(&der).map_err(VerifyError::Structure)?;
    Ok((der, info))
}

/// Parsed anchors and intermediates, by digest of their DER: parsing certificates is the
/// dearest step of a verification with OpenSSL 3, so each trust set is parsed once.
type ParsedTrust = (openssl::x509::store::X509Store, Vec<openssl::x509::X509>);

fn parsed_trust(trust: &TrustAnchors) -> Result<std::sync::Arc<ParsedTrust>, VerifyError> {
    use openssl::x509::X509;
    use openssl::x509::store::X509StoreBuilder;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], Arc<ParsedTrust>>>> = OnceLock::new();
    let bad = |e: openssl::error::ErrorStack| VerifyError::Trust(e.to_string());
    let mut hasher = openssl::sha::Sha256::new();
    for der in &trust.anchors {
        hasher.update(b"A");
        hasher.update(der);
    }
    for der in &trust.intermediates {
        hasher.update(b"I");
        hasher.update(der);
    }
    let key = hasher.finish();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(found) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(found);
    }
    let mut store = X509StoreBuilder::new().map_err(bad)?;
    for der in &trust.anchors {
        store
            .add_cert(X509::from_der(der).map_err(bad)?)
            .map_err(bad)?;
    }
    let intermediates = trust
        .intermediates
        .iter()
        .map(|der| X509::from_der(der).map_err(bad))
        .collect::<Result<Vec<_>, _>>()?;
    let parsed = Arc::new((store.build(), intermediates));
    if let Ok(mut c) = cache.lock() {
        c.insert(key, Arc::clone(&parsed));
    }
    Ok(parsed)
}

/// The signer's certificate must chain to the anchors given, and to nothing else
/// (libxmlsec1's own X509 store also holds the system's web-PKI roots, so its chain
/// check is switched off and this one is authoritative).
fn check_chain(leaf_der: &[u8], trust: &TrustAnchors) -> Result<(), VerifyError> {
    use openssl::stack::Stack;
    use openssl::x509::{X509, X509StoreContext};
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};
    // A chain found valid is not built again for a minute (a busy verifier sees the same
    // few signers over and over); validity dates are checked again after that.
    const REMEMBER: Duration = Duration::from_secs(60);
    static VALID: OnceLock<Mutex<HashMap<[u8; 32], Instant>>> = OnceLock::new();
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(leaf_der);
    for der in trust.anchors.iter().chain(&trust.intermediates) {
        hasher.update(der);
    }
    let key = hasher.finish();
    let valid = VALID.get_or_init(|| Mutex::new(HashMap::new()));
    let known = valid
        .lock()
        .ok()
        .and_then(|v| v.get(&key).copied())
        .is_some_and(|at| at.elapsed() < REMEMBER);
    if known {
        return Ok(());
    }
    let bad = |e: openssl::error::ErrorStack| VerifyError::Trust(e.to_string());
    let parsed = parsed_trust(trust)?;
    let (store, intermediates) = &*parsed;
    let leaf = X509::from_der(leaf_der).map_err(bad)?;
    let mut chain = Stack::new().map_err(bad)?;
    for cert in intermediates {
        chain.push(cert.clone()).map_err(bad)?;
    }
    let mut ctx = X509StoreContext::new().map_err(bad)?;
    let verdict = ctx
        .init(store, &leaf, &chain, |c| {
            Ok(c.verify_cert()?
                .then_some(())
                .ok_or_else(|| c.error().to_string()))
        })
        .map_err(bad)?;
    verdict.map_err(|reason| {
        VerifyError::Signature(format!(
            "the signer's certificate does not chain to the trust anchors: {reason}"
        ))
    })?;
    if let Ok(mut v) = valid.lock() {
        v.retain(|_, at| at.elapsed() < REMEMBER);
        v.insert(key, Instant::now());
    }
    Ok(())
}

/// Verifies a VIHF assertion (the whole document is the assertion): structure, then
/// libxmlsec1 signature and chain to `trust`, then `Issuer` = signer subject.
pub fn verify_vihf(xml_text: &str, trust: &TrustAnchors) -> Result<VerifiedVihf, VerifyError> {
    let root = xml::parse(xml_text)?;
    let scope = xml::scope_of(&root, &Scope::new());
    if root.local != "Assertion" || xml::resolve(&scope, root.prefix.as_deref()) != Some(SAML_NS) {
        return structure("the root element is not a SAML 2.0 Assertion");
    }
    let assertions = count_named(&root, &Scope::new(), SAML_NS, "Assertion");
    if assertions != 1 {
        return structure(format!(
            "exactly one Assertion expected, found {assertions}"
        ));
    }
    let id = root
        .attribute("ID")
        .ok_or_else(|| VerifyError::Structure("the Assertion has no ID".into()))?
        .to_string();
    let signatures = count_named(&root, &Scope::new(), DSIG_NS, "Signature");
    if signatures != 1 {
        return structure(format!(
            "exactly one Signature expected, found {signatures}"
        ));
    }
    let signature = one(&root, &scope, DSIG_NS, "Signature", "Assertion")?;
    let sig_scope = xml::scope_of(signature, &scope);
    let signed_info = one(signature, &sig_scope, DSIG_NS, "SignedInfo", "Signature")?;
    let si_scope = xml::scope_of(signed_info, &sig_scope);
    let reference = one(signed_info, &si_scope, DSIG_NS, "Reference", "SignedInfo")?;
    if reference.attribute("URI") != Some(&format!("#{id}")) {
        return structure(format!(
            "the signature's Reference URI {:?} does not point at the Assertion ID {id:?}",
            reference.attribute("URI").unwrap_or("")
        ));
    }
    let transforms: Vec<String> = reference
        .elements()
        .filter(|e| e.local == "Transforms")
        .flat_map(|t| {
            t.elements()
                .filter_map(|x| x.attribute("Algorithm").map(str::to_string))
        })
        .collect();
    if transforms != [ENVELOPED, C14n::EXCLUSIVE.uri()] {
        return structure(format!(
            "the Reference transforms must be enveloped-signature then exclusive c14n, found {transforms:?}"
        ));
    }
    let (signer_der, signer) = signer_certificate(signature, &sig_scope)?;

    ffi::verify(&ffi::Verification {
        xml: xml_text,
        root_id_attribute: Some("ID"),
        anchors: &trust.anchors,
        intermediates: &trust.intermediates,
        signer_certificate: &signer_der,
        manifest_documents: None,
    })
    .map_err(|f| VerifyError::Signature(f.message))?;
    check_chain(&signer_der, trust)?;

    let issuer = one(&root, &scope, SAML_NS, "Issuer", "Assertion")?.text_content();
    if issuer != signer.subject {
        return Err(VerifyError::Signature(format!(
            "Issuer {issuer:?} is not the signing certificate's subject {:?}",
            signer.subject
        )));
    }
    let subject_id = child(&root, &scope, SAML_NS, "Subject")
        .first()
        .and_then(|s| s.elements().find(|e| e.local == "NameID"))
        .map(Element::text_content)
        .unwrap_or_default();
    let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for statement in child(&root, &scope, SAML_NS, "AttributeStatement") {
        for attr in statement.elements().filter(|e| e.local == "Attribute") {
            let Some(name) = attr.attribute("Name") else {
                continue;
            };
            let values = attr
                .elements()
                .filter(|v| v.local == "AttributeValue")
                .map(|v| match v.elements().next() {
                    Some(coded) => coded.attribute("code").unwrap_or_default().to_string(),
                    None => v.text_content(),
                });
            attributes
                .entry(name.to_string())
                .or_default()
                .extend(values);
        }
    }
    Ok(VerifiedVihf {
        id,
        issue_instant: root
            .attribute("IssueInstant")
            .unwrap_or_default()
            .to_string(),
        issuer,
        signer,
        subject_id,
        attributes,
    })
}

/// A document of the submission, as the verifier receives it.
#[derive(Debug, Clone, Copy)]
pub struct SuppliedDocument<'a> {
    pub unique_id: &'a str,
    /// Not used to verify: the Reference's own declared transforms say how the bytes
    /// are digested, as for any standard processor.
    pub mime_type: &'a str,
    pub content: &'a [u8],
}

/// What a verified lot signature covers.
#[derive(Debug, Clone)]
pub struct VerifiedLot {
    pub signature_id: String,
    pub signer: CertificateInfo,
    /// Document uniqueIds whose manifest references libxmlsec1 verified.
    pub documents: Vec<String>,
    /// The submission set uniqueId listed with the placeholder digest.
    pub submission_set_unique_id: Option<String>,
}

/// Verifies a lot signature document: structure, then libxmlsec1 on the whole
/// signature (SignedInfo references, signature value) and on the manifest, with each
/// `urn:oid:<uniqueId>` served the supplied document's raw bytes and the Reference's
/// own declared transforms applied, then the signer's chain. Every supplied document
/// must be referenced exactly once and its reference verify; the submission set's
/// reference (placeholder digest, no supplied document) is the only one let fail.
pub fn verify_lot(
    xml_text: &str,
    documents: &[SuppliedDocument<'_>],
    trust: &TrustAnchors,
) -> Result<VerifiedLot, VerifyError> {
    let root = xml::parse(xml_text.trim_start_matches('\u{feff}'))?;
    let scope = xml::scope_of(&root, &Scope::new());
    if root.local != "Signature" || xml::resolve(&scope, root.prefix.as_deref()) != Some(DSIG_NS) {
        return structure("the root element is not an XML-DSig Signature");
    }
    let signatures = count_named(&root, &Scope::new(), DSIG_NS, "Signature");
    if signatures != 1 {
        return structure(format!(
            "exactly one Signature expected, found {signatures}"
        ));
    }
    let signed_info = one(&root, &scope, DSIG_NS, "SignedInfo", "Signature")?;
    let si_scope = xml::scope_of(signed_info, &scope);
    let uris: Vec<&str> = child(signed_info, &si_scope, DSIG_NS, "Reference")
        .iter()
        .filter_map(|r| r.attribute("URI"))
        .collect();
    let expected = [
        format!("#{MANIFEST_ID}"),
        format!("#{SIGNED_PROPERTIES_ID}"),
    ];
    if uris.len() != 2 || !expected.iter().all(|e| uris.contains(&e.as_str())) {
        return structure(format!(
            "SignedInfo must reference {expected:?}, found {uris:?}"
        ));
    }
    // The IDs the references use must each name exactly one element.
    for id in [MANIFEST_ID, SIGNED_PROPERTIES_ID] {
        let n = count_attr(&root, "Id", id);
        if n != 1 {
            return structure(format!("Id {id:?} must appear exactly once, found {n}"));
        }
    }
    if count_named(&root, &Scope::new(), XADES_NS, "SignedProperties") != 1 {
        return structure("exactly one XAdES 1.1.1 SignedProperties expected");
    }
    // libxmlsec1 processes every Manifest of the signature: only the signed one may be.
    let manifests = count_named(&root, &Scope::new(), DSIG_NS, "Manifest");
    if manifests != 1 {
        return structure(format!("exactly one Manifest expected, found {manifests}"));
    }
    // (the scope returned is the one inside the Manifest element)
    let (manifest, manifest_scope) = find_by_id(&root, &Scope::new(), MANIFEST_ID)
        .ok_or_else(|| VerifyError::Structure("no Manifest".into()))?;
    if manifest.local != "Manifest"
        || xml::resolve(&manifest_scope, manifest.prefix.as_deref()) != Some(DSIG_NS)
    {
        return structure(format!(
            "Id {MANIFEST_ID:?} is not on the XML-DSig Manifest"
        ));
    }
    let (signer_der, signer) = signer_certificate(&root, &scope)?;

    let mut served: Vec<(&str, &[u8])> = Vec::with_capacity(documents.len());
    for d in documents {
        if served.iter().any(|(id, _)| *id == d.unique_id) {
            return Err(VerifyError::Manifest {
                uri: format!("urn:oid:{}", d.unique_id),
                reason: "two supplied documents have this uniqueId".into(),
            });
        }
        served.push((d.unique_id, d.content));
    }
    let outcomes = ffi::verify(&ffi::Verification {
        xml: xml_text,
        root_id_attribute: None,
        anchors: &trust.anchors,
        intermediates: &trust.intermediates,
        signer_certificate: &signer_der,
        manifest_documents: Some(&served),
    })
    .map_err(|f| match f.manifest_uri {
        Some(uri) => VerifyError::Manifest {
            uri,
            reason: format!("the reference could not be processed: {}", f.message),
        },
        None => VerifyError::Signature(f.message),
    })?;
    check_chain(&signer_der, trust)?;

    // The manifest as the crate reads it, to pair with libxmlsec1's outcomes.
    let references = child(manifest, &manifest_scope, DSIG_NS, "Reference");
    let same_references = references.len() == outcomes.len()
        && references
            .iter()
            .zip(&outcomes)
            .all(|(r, o)| r.attribute("URI").unwrap_or_default() == o.uri);
    if !same_references {
        return structure(format!(
            "the manifest's {} references are not the {} libxmlsec1 processed",
            references.len(),
            outcomes.len()
        ));
    }
    let mut covered: Vec<String> = Vec::new();
    let mut submission_set = None;
    for (reference, outcome) in references.iter().zip(&outcomes) {
        let fail = |reason: String| VerifyError::Manifest {
            uri: outcome.uri.clone(),
            reason,
        };
        let unique_id = outcome
            .uri
            .strip_prefix("urn:oid:")
            .ok_or_else(|| fail("not a urn:oid: reference".into()))?;
        match documents.iter().find(|d| d.unique_id == unique_id) {
            Some(_) if covered.iter().any(|c| c == unique_id) => {
                return Err(fail(
                    "the manifest references this document more than once".into(),
                ));
            }
            Some(doc) if !outcome.verified => {
                let mut reason = String::from("the digest does not match the supplied document");
                if !declares_transforms(reference, &manifest_scope) && parses_as_xml(doc.content) {
                    reason.push_str(
                        "; the Reference declares no Transforms: a standard processor digests \
                         the raw bytes; XML documents need the c14n-with-comments transform \
                         declared",
                    );
                }
                return Err(fail(reason));
            }
            Some(_) => covered.push(unique_id.to_string()),
            None if !outcome.verified
                && submission_set.is_none()
                && digest_value(reference)
                    == Some(lot::SUBMISSION_SET_PLACEHOLDER_DIGEST.to_vec()) =>
            {
                submission_set = Some(unique_id.to_string());
            }
            None => return Err(fail("no supplied document has this uniqueId".into())),
        }
    }
    if let Some(missing) = documents
        .iter()
        .find(|d| !covered.iter().any(|c| c == d.unique_id))
    {
        return Err(VerifyError::Manifest {
            uri: format!("urn:oid:{}", missing.unique_id),
            reason: "the document is not covered by the manifest".into(),
        });
    }
    Ok(VerifiedLot {
        signature_id: root.attribute("Id").unwrap_or_default().to_string(),
        signer,
        documents: covered,
        submission_set_unique_id: submission_set,
    })
}

/// Whether a Reference has a `Transforms` child.
fn declares_transforms(reference: &Element, scope: &Scope) -> bool {
    !child(
        reference,
        &xml::scope_of(reference, scope),
        DSIG_NS,
        "Transforms",
    )
    .is_empty()
}

/// The decoded `DigestValue` of a Reference.
fn digest_value(reference: &Element) -> Option<Vec<u8>> {
    let value: String = reference
        .elements()
        .find(|e| e.local == "DigestValue")?
        .text_content()
        .split_whitespace()
        .collect();
    B64.decode(value).ok()
}

/// Whether bytes are a well-formed XML document (only to explain a failed reference).
fn parses_as_xml(content: &[u8]) -> bool {
    let content = content.strip_prefix(b"\xef\xbb\xbf").unwrap_or(content);
    std::str::from_utf8(content).is_ok_and(|text| xml::parse_document(text).is_ok())
}

fn count_attr(e: &Element, name: &str, value: &str) -> usize {
    usize::from(e.attribute(name) == Some(value))
        + e.elements()
            .map(|c| count_attr(c, name, value))
            .sum::<usize>()
}

fn find_by_id<'e>(e: &'e Element, scope: &Scope, id: &str) -> Option<(&'e Element, Scope)> {
    let inner = xml::scope_of(e, scope);
    if e.attribute("Id") == Some(id) {
        return Some((e, inner));
    }
    e.elements().find_map(|c| find_by_id(c, &inner, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SoftwareIdentity, SoftwareSigner, VihfContext, sign_vihf};
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use passerelle_config::{CertMaterial, CertRole};

    fn trust(pki: &passerelle_certs_test::Manifest) -> TrustAnchors {
        TrustAnchors::from_files(
            &[&pki.path(&pki.ca.root)],
            &[&pki.path(&pki.ca.org_intermediate)],
        )
        .expect("trust")
    }

    /// The example context's VIHF, signed by `signer`.
    fn token(signer: &dyn crate::Signer) -> crate::SignedVihf {
        let json = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/vihf-context.json"
        ))
        .expect("example context");
        let context = VihfContext::from_json(&json).expect("context");
        let software = SoftwareIdentity {
            name: "PASSERELLE".into(),
            version: "0.1.0".into(),
            homologation_id: "TEST".into(),
            lps_id: None,
        };
        sign_vihf(&context, &software, signer, time::OffsetDateTime::now_utc()).expect("sign")
    }

    /// libxmlsec1 with `signer` as the certificate whose key verifies.
    fn run_ffi(trust: &TrustAnchors, signer: &CertMaterial, xml: &str) -> Result<(), ffi::Failure> {
        ffi::verify(&ffi::Verification {
            xml,
            root_id_attribute: Some("ID"),
            anchors: &trust.anchors,
            intermediates: &trust.intermediates,
            signer_certificate: &signer.leaf_der,
            manifest_documents: None,
        })
        .map(|_| ())
    }

    /// libxmlsec1 alone, with the structural checks of this module bypassed: a token
    /// signed by an attacker key, its `KeyValue` placed before a legitimate certificate,
    /// is refused because the key comes from the certificate handed to `ffi`, not from
    /// `KeyInfo`; the genuine token still verifies the same way.
    #[test]
    fn libxmlsec1_uses_only_the_signer_certificate_key() {
        let pki = passerelle_certs_test::shared_test_pki().expect("test PKI");
        let config = passerelle_config::load(&pki.path(&pki.config)).expect("config");
        let trust = trust(&pki);
        let material = &config.tenants[0].certificates[&CertRole::DmpSign];
        let run = |xml: &str| run_ffi(&trust, material, xml);

        let genuine = token(&SoftwareSigner::from_material(material).expect("signer"));
        run(&genuine.xml()).expect("genuine token");

        let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("key");
        let mut chain = vec![material.leaf_der.clone()];
        chain.extend(material.intermediates_der.iter().cloned());
        let attacker =
            SoftwareSigner::from_pkcs8(&key.private_key_to_pkcs8().expect("pkcs8"), chain)
                .expect("attacker signer");
        let forged = token(&attacker);
        let rsa = key.rsa().expect("rsa");
        let key_value = format!(
            "<KeyValue><RSAKeyValue><Modulus>{}</Modulus><Exponent>{}</Exponent></RSAKeyValue></KeyValue>",
            B64.encode(rsa.n().to_vec()),
            B64.encode(rsa.e().to_vec())
        );
        let forged = forged
            .xml()
            .replace("<KeyInfo>", &format!("<KeyInfo>{key_value}"));
        assert!(forged.contains("<KeyInfo><KeyValue>"), "{forged}");
        let failure = run(&forged).expect_err("attacker KeyValue");
        assert!(failure.message.contains("does not verify"), "{failure:?}");
    }

    /// The signer keys libxmlsec1 keeps per thread are told apart by certificate: on one
    /// thread, a token verified with its signer's key is refused against another
    /// certificate (tenant B's ORG SIGN), then verifies again with its own.
    #[test]
    fn a_kept_signer_key_serves_its_own_certificate_only() {
        let pki = passerelle_certs_test::shared_test_pki().expect("test PKI");
        let config = passerelle_config::load(&pki.path(&pki.config)).expect("config");
        let trust = trust(&pki);
        let a = &config.tenants[0].certificates[&CertRole::DmpSign];
        let b = &config.tenants[1].certificates[&CertRole::DmpSign];
        assert_ne!(a.leaf_der, b.leaf_der);
        let by_a = token(&SoftwareSigner::from_material(a).expect("signer")).xml();
        let by_b = token(&SoftwareSigner::from_material(b).expect("signer")).xml();
        for _ in 0..2 {
            run_ffi(&trust, a, &by_a).expect("A's token, A's key");
            let failure = run_ffi(&trust, b, &by_a).expect_err("A's token, B's key");
            assert!(failure.message.contains("does not verify"), "{failure:?}");
            run_ffi(&trust, b, &by_b).expect("B's token, B's key");
            let failure = run_ffi(&trust, a, &by_b).expect_err("B's token, A's key");
            assert!(failure.message.contains("does not verify"), "{failure:?}");
        }
    }
}
