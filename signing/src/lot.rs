//! Signature of the submission set ("lot de soumission", domain.md §6): an IHE DSG /
//! XAdES-BES detached signature over the documents of an ITI-41 submission, sent as one
//! more document, and the XDS metadata that declares it.
//!
//! Documents are reduced to their digests first ([`DocumentDigest`]), so a caller can
//! hash large documents as they arrive; XML documents are canonicalised (c14n with
//! comments) before digesting, as the profile requires, and their manifest Reference
//! declares that transform so that any standard XML-DSig processor agrees.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use time::OffsetDateTime;

use crate::SigningError;
use crate::dsig::{self, DSIG_NS, ReferenceSpec};
use crate::signer::{DigestAlgorithm, IssuerSerial, Signer};
use crate::xml::{self, C14n, Element, Scope, canonicalize};

pub const XADES_NS: &str = "http://uri.etsi.org/01903/v1.1.1#";
pub const RIM_NS: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0";
pub const MANIFEST_ID: &str = "IHEManifest";
pub const SIGNED_PROPERTIES_ID: &str = "S0-SignedProperties";
/// `purposeOfSignature`: "Source" (ASTM E1762).
pub const PURPOSE_SOURCE: &str = "1.2.840.10065.1.12.1.14";
const MANIFEST_TYPE: &str = "http://www.w3.org/2000/09/xmldsig#Manifest";
const SIGNED_PROPERTIES_TYPE: &str = "http://uri.etsi.org/01903/v1.1.1#SignedProperties";
/// The submission set is listed in the manifest with this placeholder digest.
pub const SUBMISSION_SET_PLACEHOLDER_DIGEST: &[u8] = &[0];

/// Whether a MIME type is XML (its bytes are canonicalised before digesting).
pub fn is_xml_mime(mime: &str) -> bool {
    let m = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    m == "text/xml" || m == "application/xml" || m.ends_with("+xml")
}

/// One document of the submission, reduced to its manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentDigest {
    /// XDS `uniqueId` of the document (an OID).
    pub unique_id: String,
    pub digest: Vec<u8>,
    /// Digested as XML: `digest` is over the Canonical XML (with comments) of the whole
    /// document, so its manifest Reference declares that transform; otherwise over the
    /// raw bytes, with no transform.
    pub xml: bool,
}

/// The transform an XML document's manifest Reference declares: with it, a standard
/// XML-DSig processor that dereferences `urn:oid:<uniqueId>` to the document's bytes
/// recomputes [`DocumentDigest::digest`].
pub const XML_DOCUMENT_TRANSFORM: &str =
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments";

/// Encodings that decode pure-ASCII bytes exactly as UTF-8 does.
fn ascii_compatible(encoding: &str) -> bool {
    let e = encoding.to_ascii_lowercase();
    e == "us-ascii"
        || e == "ascii"
        || e == "latin1"
        || e.starts_with("iso-8859-")
        || e.starts_with("windows-125")
        || e.starts_with("cp125")
}

/// A whole XML document (a submitted clinical document) read as the lot signature reads
/// it: a UTF-8 BOM skipped, UTF-8 required, DTDs refused, its Canonical XML (with
/// comments) written while it is parsed, without a tree. `observe` sees every start
/// tag: the proxy's structure checks read the CDA's authors in the same pass.
pub fn read_xml_document(
    unique_id: &str,
    content: &[u8],
    observe: impl FnMut(&xml::StartTag<'_>),
) -> Result<XmlDocument, SigningError> {
    let bad = |reason: String| SigningError::Document(format!("document {unique_id}: {reason}"));
    // The BOM is not part of what a declared encoding reads (see `XmlDocument::canonical`).
    let content = content.strip_prefix(b"\xef\xbb\xbf").unwrap_or(content);
    let text = std::str::from_utf8(content).map_err(|_| {
        bad("XML content is not UTF-8 (only UTF-8 XML documents are signed)".into())
    })?;
    // A clinical document may be far larger than an envelope (a structured CDA of tens of
    // megabytes): the element count is bounded by the body size limit instead; the other
    // limits, which bound the work per element, stay.
    let limits = xml::Limits {
        max_elements: usize::MAX,
        ..xml::Limits::DEFAULT
    };
    let read = xml::canonicalize_document_str(text, &limits, true, observe)
        .map_err(|e| bad(e.to_string()))?;
    Ok(XmlDocument {
        unique_id: unique_id.to_string(),
        canonical: read.canonical,
        declared_encoding: read.declared_encoding,
        ascii: content.is_ascii(),
    })
}

/// A whole XML document read by [`read_xml_document`].
#[derive(Debug)]
pub struct XmlDocument {
    unique_id: String,
    canonical: String,
    declared_encoding: Option<String>,
    ascii: bool,
}

impl XmlDocument {
    /// Its Canonical XML (with comments), as a standard processor computes it from the
    /// document's bytes: a UTF-8 BOM and the XML declaration are not part of it (libxml2
    /// skips both), comments and processing instructions around the root element are.
    /// Refused when the document declares an encoding that reads its bytes otherwise.
    pub fn canonical(self) -> Result<String, SigningError> {
        // A verifier decodes the bytes with the declared encoding: another encoding than
        // UTF-8 gives the same characters only when every byte is ASCII.
        if let Some(encoding) = &self.declared_encoding {
            let utf8 =
                encoding.eq_ignore_ascii_case("utf-8") || encoding.eq_ignore_ascii_case("utf8");
            if !(utf8 || ascii_compatible(encoding) && self.ascii) {
                return Err(SigningError::Document(format!(
                    "document {}: declares encoding {encoding:?}: only UTF-8 XML documents are signed",
                    self.unique_id
                )));
            }
        }
        Ok(self.canonical)
    }
}

/// The Canonical XML (with comments) of a whole XML document ([`XmlDocument::canonical`]).
pub fn canonical_xml_document(unique_id: &str, content: &[u8]) -> Result<String, SigningError> {
    read_xml_document(unique_id, content, |_| {})?.canonical()
}

impl DocumentDigest {
    /// Digests a whole document. XML (by MIME type) is parsed (DTDs refused) and
    /// canonicalised first, and recorded as such (see [`DocumentDigest::xml`]).
    pub fn compute(
        unique_id: &str,
        mime_type: &str,
        content: &[u8],
        digest: DigestAlgorithm,
    ) -> Result<Self, SigningError> {
        if is_xml_mime(mime_type) {
            let canonical = canonical_xml_document(unique_id, content)?;
            return Ok(Self::of_canonical_xml(unique_id, &canonical, digest));
        }
        Ok(Self {
            unique_id: unique_id.to_string(),
            digest: digest.digest(content),
            xml: false,
        })
    }

    /// Digests an XML document (the caller has an XML MIME type) from its canonical
    /// form ([`canonical_xml_document`], or [`XmlDocument::canonical`] on a document already
    /// parsed): as [`DocumentDigest::compute`] does, without parsing it again.
    pub fn of_canonical_xml(unique_id: &str, canonical: &str, digest: DigestAlgorithm) -> Self {
        Self {
            unique_id: unique_id.to_string(),
            digest: digest.digest(canonical.as_bytes()),
            xml: true,
        }
    }
}

/// What to sign.
#[derive(Debug, Clone)]
pub struct LotRequest {
    /// `uniqueId` of the submission set.
    pub submission_set_unique_id: String,
    /// `uniqueId` given to the signature document (also the `Signature/@Id`).
    pub signature_unique_id: String,
    pub documents: Vec<DocumentDigest>,
    pub digest: DigestAlgorithm,
    pub signing_time: OffsetDateTime,
}

/// The signature document, ready to attach as one more document of the submission.
#[derive(Debug, Clone)]
pub struct SignedLot {
    pub signature_unique_id: String,
    pub xml: String,
}

fn xades(local: &'static str) -> Element {
    Element::new(Some("xades"), local)
}

fn ds(local: &'static str) -> Element {
    Element::new(None, local)
}

/// `xades:Cert` for one certificate of the chain: digest and issuer/serial (decimal).
fn cert_element(der: &[u8], id: &IssuerSerial, digest: DigestAlgorithm) -> Element {
    xades("Cert")
        .child(
            xades("CertDigest")
                .child(ds("DigestMethod").attr("Algorithm", digest.digest_uri()))
                .child(ds("DigestValue").text(B64.encode(digest.digest(der)))),
        )
        .child(
            xades("IssuerSerial")
                .child(ds("X509IssuerName").text(id.issuer.clone()))
                .child(ds("X509SerialNumber").text(id.serial_decimal.clone())),
        )
}

/// Signs the lot: manifest of the documents, XAdES signed properties, SignedInfo in
/// c14n-with-comments, all with `signer` (the tenant's ORG SIGN key).
pub fn sign_lot(request: &LotRequest, signer: &dyn Signer) -> Result<SignedLot, SigningError> {
    if request.documents.is_empty() {
        return Err(SigningError::Document(
            "a submission lot needs at least one document".into(),
        ));
    }
    let digest = request.digest;
    let sig_id = &request.signature_unique_id;

    let mut manifest = ds("Manifest").attr("Id", MANIFEST_ID);
    for d in &request.documents {
        manifest = manifest.child(
            ReferenceSpec {
                uri: format!("urn:oid:{}", d.unique_id),
                reference_type: None,
                transforms: if d.xml {
                    vec![XML_DOCUMENT_TRANSFORM]
                } else {
                    vec![]
                },
                digest,
                digest_value: d.digest.clone(),
            }
            .element(),
        );
    }
    manifest = manifest.child(
        ReferenceSpec {
            uri: format!("urn:oid:{}", request.submission_set_unique_id),
            reference_type: None,
            transforms: vec![],
            digest,
            digest_value: SUBMISSION_SET_PLACEHOLDER_DIGEST.to_vec(),
        }
        .element(),
    );

    // Every certificate up to and including the root, as the official TD2.1 sample.
    let mut signing_certificate = xades("SigningCertificate");
    let chain = signer.certificate_chain_to_root();
    let ids = signer.issuer_serials_to_root()?;
    if ids.len() != chain.len() {
        return Err(SigningError::Key(format!(
            "the signer gave {} issuer/serial pairs for {} certificates",
            ids.len(),
            chain.len()
        )));
    }
    for (der, id) in chain.iter().zip(ids.iter()) {
        signing_certificate = signing_certificate.child(cert_element(der, id, digest));
    }
    let signed_properties = xades("SignedProperties")
        .attr("Id", SIGNED_PROPERTIES_ID)
        .child(
            xades("SignedSignatureProperties")
                .child(xades("SigningTime").text(crate::vihf::saml_instant(request.signing_time)))
                .child(signing_certificate)
                .child(xades("SignaturePolicyIdentifier").child(xades("SignaturePolicyImplied"))),
        );
    let qualifying = xades("QualifyingProperties")
        .ns(Some("xades"), XADES_NS)
        .attr("Target", format!("#{sig_id}"))
        .child(signed_properties);

    // Reference digests: same-document references without transforms are canonicalised
    // with Canonical XML 1.0 without comments, in their context (default ns = XML-DSig).
    let root_scope = dsig::dsig_scope(&Scope::new());
    let manifest_digest =
        digest.digest(canonicalize(&manifest, &root_scope, &C14n::INCLUSIVE, None).as_bytes());
    let qualifying_scope = xml::scope_of(&qualifying, &root_scope);
    let signed_properties_element = qualifying
        .elements()
        .next()
        .ok_or_else(|| SigningError::Document("internal: no SignedProperties".into()))?;
    let properties_digest = digest.digest(
        canonicalize(
            signed_properties_element,
            &qualifying_scope,
            &C14n::INCLUSIVE,
            None,
        )
        .as_bytes(),
    );

    let c14n = C14n::INCLUSIVE_WITH_COMMENTS;
    let signed_info = dsig::signed_info(
        &c14n,
        digest,
        &[
            ReferenceSpec {
                uri: format!("#{MANIFEST_ID}"),
                reference_type: Some(MANIFEST_TYPE),
                transforms: vec![],
                digest,
                digest_value: manifest_digest,
            },
            ReferenceSpec {
                uri: format!("#{SIGNED_PROPERTIES_ID}"),
                reference_type: Some(SIGNED_PROPERTIES_TYPE),
                transforms: vec![],
                digest,
                digest_value: properties_digest,
            },
        ],
    );
    let value = dsig::signature_value(signer, digest, &signed_info, &root_scope, &c14n)?;
    let signature = ds("Signature")
        .ns(None, DSIG_NS)
        .attr("Id", sig_id.clone())
        .child(signed_info)
        .child(value)
        .child(dsig::key_info(signer))
        .child(ds("Object").child(qualifying))
        .child(
            // In no namespace, as the official sample: the xmldsig schema would want an
            // element in another namespace inside a ds:SignatureProperty, not text.
            ds("Object").child(
                ds("SignatureProperties").ns(None, "").child(
                    ds("SignatureProperty")
                        .attr("Id", "purposeOfSignature")
                        .attr("Target", format!("#{sig_id}"))
                        .text(PURPOSE_SOURCE),
                ),
            ),
        )
        .child(ds("Object").child(manifest));
    Ok(SignedLot {
        signature_unique_id: sig_id.clone(),
        xml: format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}",
            signature.to_xml()
        ),
    })
}

/// What the XDS metadata of the signature document copies from the submission.
#[derive(Debug, Clone)]
pub struct LotMetadataInput {
    /// `id` of the submission set's RegistryPackage in the request (`SubmissionSet01`).
    pub submission_set_entry_id: String,
    /// `id` to give the signature's ExtrinsicObject (`urn:uuid:...` or symbolic).
    pub signature_entry_id: String,
    /// Patient id (CX), as in the submission's `XDSDocumentEntry.patientId`.
    pub patient_id: String,
    pub creation_time: OffsetDateTime,
    /// Classifications copied from a document of the submission: confidentiality,
    /// healthcare facility type, practice setting, author (rim:Classification elements).
    /// Their `classifiedObject` and `id` are rewritten for the signature entry.
    pub copied_classifications: Vec<Element>,
}

/// The XDS metadata to add to the submission for the signature document.
#[derive(Debug, Clone)]
pub struct LotMetadata {
    pub extrinsic_object: Element,
    /// SubmissionSet -> signature, `HasMember` (SubmissionSetStatus=Original).
    pub has_member: Element,
    /// Signature -> SubmissionSet, `urn:ihe:iti:2007:AssociationType:signs`.
    pub signs: Element,
}

fn rim(local: &'static str) -> Element {
    Element::new(Some("rim"), local)
}

fn slot(name: &'static str, value: &str) -> Element {
    rim("Slot")
        .attr("name", name)
        .child(rim("ValueList").child(rim("Value").text(value.to_string())))
}

fn classification(
    scheme: &'static str,
    object: &str,
    node: &'static str,
    coding_scheme: &'static str,
    display: &'static str,
) -> Element {
    rim("Classification")
        .attr("classificationScheme", scheme)
        .attr("classifiedObject", object.to_string())
        .attr("id", format!("urn:uuid:{}", uuid::Uuid::new_v4()))
        .attr("nodeRepresentation", node)
        .attr(
            "objectType",
            "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification",
        )
        .child(slot("codingScheme", coding_scheme))
        .child(rim("Name").child(rim("LocalizedString").attr("value", display)))
}

fn external_identifier(
    scheme: &'static str,
    object: &str,
    value: &str,
    name: &'static str,
) -> Element {
    rim("ExternalIdentifier")
        .attr("id", format!("urn:uuid:{}", uuid::Uuid::new_v4()))
        .attr("identificationScheme", scheme)
        .attr(
            "objectType",
            "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier",
        )
        .attr("registryObject", object.to_string())
        .attr("value", value.to_string())
        .child(rim("Name").child(rim("LocalizedString").attr("value", name)))
}

/// `YYYYMMDDHHMMSS` (XDS / HL7 v3 DTM, UTC).
pub fn dtm(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Builds the ExtrinsicObject of the signature document and its two associations.
/// Each returned element declares the `rim` namespace itself.
pub fn lot_metadata(input: &LotMetadataInput, signed: &SignedLot) -> LotMetadata {
    let id = &input.signature_entry_id;
    let bytes = signed.xml.as_bytes();
    // XDS `hash` is the SHA-1 of the document, in hexadecimal.
    let hex: String = openssl::sha::sha1(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut eo = rim("ExtrinsicObject")
        .ns(Some("rim"), RIM_NS)
        .attr("id", id.clone())
        .attr("mimeType", "text/xml")
        .attr(
            "objectType",
            "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1",
        )
        .child(slot("creationTime", &dtm(input.creation_time)))
        .child(slot("hash", &hex))
        .child(slot("languageCode", "art"))
        .child(slot("size", &bytes.len().to_string()))
        .child(slot("sourcePatientId", &input.patient_id))
        .child(rim("Name").child(rim("LocalizedString").attr("value", "Source")))
        .child(classification(
            "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
            id,
            "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1",
            "URN",
            "Digital Signature",
        ))
        .child(classification(
            "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d",
            id,
            "http://www.w3.org/2000/09/xmldsig#",
            "URN",
            "Default Signature Style",
        ))
        .child(classification(
            "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
            id,
            "E1762",
            "ASTM",
            "Full Document",
        ))
        .child(classification(
            "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4",
            id,
            PURPOSE_SOURCE,
            "1.2.840.10065.1.12",
            "Source",
        ));
    for c in &input.copied_classifications {
        let mut c = c.clone();
        for a in &mut c.attributes {
            match a.local.as_ref() {
                "classifiedObject" => a.value = id.clone().into(),
                "id" => a.value = format!("urn:uuid:{}", uuid::Uuid::new_v4()).into(),
                _ => {}
            }
        }
        eo = eo.child(c);
    }
    eo = eo
        .child(external_identifier(
            "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427",
            id,
            &input.patient_id,
            "XDSDocumentEntry.patientId",
        ))
        .child(external_identifier(
            "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab",
            id,
            &signed.signature_unique_id,
            "XDSDocumentEntry.uniqueId",
        ));
    let association = |kind: &'static str, source: &str, target: &str| {
        rim("Association")
            .ns(Some("rim"), RIM_NS)
            .attr("associationType", kind)
            .attr("id", format!("urn:uuid:{}", uuid::Uuid::new_v4()))
            .attr(
                "objectType",
                "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association",
            )
            .attr("sourceObject", source.to_string())
            .attr("targetObject", target.to_string())
    };
    LotMetadata {
        extrinsic_object: eo,
        has_member: association(
            "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember",
            &input.submission_set_entry_id,
            id,
        )
        .child(slot("SubmissionSetStatus", "Original")),
        signs: association(
            "urn:ihe:iti:2007:AssociationType:signs",
            id,
            &input.submission_set_entry_id,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_mime_types() {
        for m in [
            "text/xml",
            "application/xml; charset=utf-8",
            "application/hl7-v3+xml",
        ] {
            assert!(is_xml_mime(m), "{m}");
        }
        for m in ["application/pdf", "text/plain", ""] {
            assert!(!is_xml_mime(m), "{m}");
        }
    }

    #[test]
    fn xml_documents_digest_their_canonical_form() {
        let a = DocumentDigest::compute(
            "1.2.3",
            "text/xml",
            b"<a  b='1'><!--c--><x/></a>",
            DigestAlgorithm::Sha256,
        )
        .expect("xml");
        let b = DocumentDigest::compute(
            "1.2.3",
            "text/xml",
            b"<a b=\"1\"><!--c--><x></x></a>",
            DigestAlgorithm::Sha256,
        )
        .expect("xml");
        assert_eq!(a, b);
        assert!(a.xml);
        let raw =
            DocumentDigest::compute("1.2.3", "application/pdf", b"%PDF", DigestAlgorithm::Sha256)
                .expect("pdf");
        assert_eq!(raw.digest, DigestAlgorithm::Sha256.digest(b"%PDF"));
        assert!(!raw.xml);
        assert!(
            DocumentDigest::compute(
                "1.2.3",
                "text/xml",
                b"<!DOCTYPE a><a/>",
                DigestAlgorithm::Sha256
            )
            .is_err()
        );
    }

    /// A document read once (the proxy's structure checks observe the same pass)
    /// digests as one read by `compute`, as its tree canonicalizes, and is refused for
    /// the same reasons.
    #[test]
    fn an_xml_document_read_once_digests_as_compute_does() {
        let content = b"\xef\xbb\xbf<?xml version=\"1.0\"?><a  b='1'><!--c--><x/></a>";
        let mut tags = Vec::new();
        read_xml_document("1.2.3", content, |t| tags.push(t.local().to_string())).expect("parse");
        assert_eq!(tags, ["a", "x"]);
        let of_parsed = |content: &[u8]| {
            let doc = read_xml_document("1.2.3", content, |_| {}).expect("parse");
            doc.canonical()
                .map(|c| DocumentDigest::of_canonical_xml("1.2.3", &c, DigestAlgorithm::Sha256))
        };
        assert_eq!(
            of_parsed(content),
            DocumentDigest::compute("1.2.3", "text/xml", content, DigestAlgorithm::Sha256)
        );
        let tree =
            xml::parse_document(std::str::from_utf8(&content[3..]).expect("UTF-8")).expect("parse");
        assert_eq!(
            canonical_xml_document("1.2.3", content).as_deref(),
            Ok(xml::canonicalize_document(&tree, &C14n::INCLUSIVE_WITH_COMMENTS).as_str())
        );
        let latin1 = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>é</a>".as_bytes();
        let refused = of_parsed(latin1);
        assert_eq!(
            refused,
            DocumentDigest::compute("1.2.3", "text/xml", latin1, DigestAlgorithm::Sha256)
        );
        assert!(
            refused.is_err_and(|e| e.to_string().contains("declares encoding \"ISO-8859-1\"")),
            "only UTF-8 XML documents are signed"
        );
        assert!(read_xml_document("1.2.3", b"\xff<a/>", |_| {}).is_err());
        // After a UTF-8 BOM, an ASCII document declaring Latin-1 reads the same characters.
        let bom_latin1 = b"\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a/>";
        assert_eq!(
            canonical_xml_document("1.2.3", bom_latin1).as_deref(),
            Ok("<a></a>")
        );
    }
}
