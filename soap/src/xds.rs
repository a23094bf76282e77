//! The DMP's XDS side (domain.md §4, §6): namespaces, WS-Addressing actions per
//! service, and reading an ITI-41 submission (`ProvideAndRegisterDocumentSetRequest`)
//! into its submission set and documents, contents resolved from MTOM parts or inline
//! base64.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use bytes::Bytes;
use passerelle_signing::xml::Element;

use crate::mtom;

pub const WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
pub const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const RS: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0";
pub const RIM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0";
pub const QUERY: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0";
pub const LCM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0";
pub const XDSB: &str = "urn:ihe:iti:xds-b:2007";
pub const XOP: &str = "http://www.w3.org/2004/08/xop/include";

pub const ITI41: &str = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b";
pub const ITI43: &str = "urn:ihe:iti:2007:RetrieveDocumentSet";
pub const ITI18: &str = "urn:ihe:iti:2007:RegistryStoredQuery";
pub const ITI57: &str = "urn:ihe:iti:2010:UpdateDocumentSet";

pub const UNIQUE_ID_SCHEME: &str = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab";
pub const PATIENT_ID_SCHEME: &str = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427";
pub const SUBMISSION_UNIQUE_ID_SCHEME: &str = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8";
pub const CLASS_CODE_SCHEME: &str = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a";
/// classCode of the lot signature document ("Digital Signature").
pub const SIGNATURE_CLASS: &str = "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1";
pub const SIGNS: &str = "urn:ihe:iti:2007:AssociationType:signs";

/// Classification schemes a signature document copies from the submission's documents
/// (confidentiality, healthcare facility type, practice setting, author).
pub const COPIED_CLASSIFICATIONS: [&str; 4] = [
    "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
    "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1",
    "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead",
    "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d",
];

/// WS-Addressing Actions each DMP service accepts (domain.md §4); empty for a service
/// name the table does not know.
pub fn actions(service: &str) -> &'static [&'static str] {
    match service {
        "registry" => &[ITI18, ITI57],
        "repository" => &[ITI41, ITI43],
        "patients" => &[
            "urn:hl7-org:v3:PRPA_IN201307UV02",
            "urn:hl7-org:v3:PRPA_IN201305UV02",
            "urn:hl7-org:v3:PRPA_IN201314UV02",
            "urn:hl7-org:v3:PRPA_IN201311UV02",
        ],
        "habilitations" => &["urn:si-dmp-habilitations:HabilitationsEndPoint:setAuthorization"],
        "PatientSpecific" => &["urn:si-dmp-patients:PatientSpecificEndPoint:patientList"],
        _ => &[],
    }
}

/// Every element named `local` below `e` (any namespace), in document order.
pub fn descendants<'e>(e: &'e Element, local: &str) -> Vec<&'e Element> {
    fn walk<'e>(e: &'e Element, local: &str, out: &mut Vec<&'e Element>) {
        for c in e.elements() {
            if c.local == local {
                out.push(c);
            }
            walk(c, local, out);
        }
    }
    let mut out = Vec::new();
    walk(e, local, &mut out);
    out
}

/// `value` of the `ExternalIdentifier` of `scheme` directly under `e`.
pub fn external_id(e: &Element, scheme: &str) -> Option<String> {
    e.elements()
        .find(|c| {
            c.local == "ExternalIdentifier" && c.attribute("identificationScheme") == Some(scheme)
        })
        .and_then(|c| c.attribute("value"))
        .map(str::to_string)
}

/// Why a submission could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmissionError {
    #[error("the SOAP Body holds no ProvideAndRegisterDocumentSetRequest")]
    NotASubmission,
    #[error("exactly one RegistryPackage (the submission set) is expected, found {0}")]
    SubmissionSetCount(usize),
    #[error("the submission set has no XDSSubmissionSet.uniqueId")]
    NoSubmissionSetUniqueId,
    #[error("document entry {0:?} has no XDSDocumentEntry.uniqueId")]
    NoUniqueId(String),
    #[error("document entry {0:?} has metadata but no xdsb:Document content")]
    NoContent(String),
    #[error("xdsb:Document {id:?}: no MIME part has the Content-ID <{cid}>")]
    MissingPart { id: String, cid: String },
    #[error("xdsb:Document {id:?}: xop:Include names the root part <{cid}> (the envelope)")]
    IncludeNamesRoot { id: String, cid: String },
    #[error("xdsb:Document {id:?}: xop:Include href {href:?} is not a cid: URL")]
    BadIncludeHref { id: String, href: String },
    #[error("xdsb:Documents {first:?} and {second:?} both include the MIME part <{cid}>")]
    PartIncludedTwice {
        cid: String,
        first: String,
        second: String,
    },
    #[error(
        "MIME part <{0}> is not included by any xdsb:Document: it would travel without being covered by the lot signature"
    )]
    UnreferencedPart(String),
    #[error("an xop:Include outside an xdsb:Document")]
    StrayInclude,
    #[error("an xdsb:Document has no id")]
    DocumentWithoutId,
    #[error("two xdsb:Document elements have the id {0:?}")]
    DuplicateDocument(String),
    #[error("xdsb:Document {0:?} matches no document entry (ExtrinsicObject)")]
    DocumentWithoutEntry(String),
    #[error(
        "xdsb:Document {0:?}: content must be one xop:Include or base64 text, not both nor several"
    )]
    AmbiguousContent(String),
    #[error("xdsb:Document {0:?}: content is neither xop:Include nor base64")]
    BadInlineContent(String),
    #[error("the submission holds no document")]
    Empty,
    #[error("author of {0:?}: {1}")]
    BadAuthor(String, String),
}

/// Assigning authority of structure identifiers (FINESS, SIRET, ... with their type
/// prefix) in XDS `authorInstitution` and HL7 ids.
pub const STRUCTURE_AUTHORITY: &str = "1.2.250.1.71.4.2.2";
/// `classificationScheme` of the submission set's author.
pub const SET_AUTHOR_SCHEME: &str = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d";
/// `classificationScheme` of a document entry's author.
pub const DOCUMENT_AUTHOR_SCHEME: &str = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d";

/// The structure id an `authorInstitution` (HL7 v2 XON) names:
/// `CH DE VALENCE^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^11234567891` gives `11234567891`.
/// `None` for a name without identifier; an identifier under another assigning authority
/// is an error (a receiver would not read it as a structure, the proxy could not check it).
pub fn xon_structure(xon: &str) -> Result<Option<String>, String> {
    let components: Vec<&str> = xon.split('^').collect();
    let id = components.get(9).copied().unwrap_or("").trim();
    if id.is_empty() {
        // A name alone; an identifier elsewhere (XON.3) would be read by some and not
        // checked here.
        if components.get(2).is_some_and(|c| !c.trim().is_empty()) {
            return Err(
                "authorInstitution has an identifier in XON.3: the structure id goes in XON.10 (after the last ^)"
                    .into(),
            );
        }
        return Ok(None);
    }
    let authority = components
        .get(5)
        .and_then(|hd| hd.split('&').nth(1))
        .unwrap_or("");
    if authority != STRUCTURE_AUTHORITY {
        return Err(format!(
            "authorInstitution names an identifier under assigning authority {authority:?}: structures are identified under {STRUCTURE_AUTHORITY}"
        ));
    }
    Ok(Some(id.to_string()))
}

/// The structures named by the `authorInstitution` slots of the author classifications
/// (`scheme`) of the registry object `object_id`; `classifications` are every
/// Classification of the metadata, collected once (wherever they sit).
fn author_institutions(
    classifications: &[&Element],
    scheme: &str,
    object_id: &str,
) -> Result<Vec<String>, SubmissionError> {
    let mut out = Vec::new();
    for c in classifications.iter().filter(|c| {
        c.attribute("classificationScheme") == Some(scheme)
            && c.attribute("classifiedObject") == Some(object_id)
    }) {
        for slot in c
            .elements()
            .filter(|s| s.local == "Slot" && s.attribute("name") == Some("authorInstitution"))
        {
            for value in descendants(slot, "Value") {
                if let Some(id) = xon_structure(value.text_content().trim())
                    .map_err(|e| SubmissionError::BadAuthor(object_id.to_string(), e))?
                {
                    out.push(id);
                }
            }
        }
    }
    Ok(out)
}

/// A Classification nested in a registry object classifies that object: one naming
/// another, or none, would be read as the parent's by some registries and skipped by
/// the checks (and copied onto the lot signature's entry).
fn check_nested_classifications(parent: &Element) -> Result<(), SubmissionError> {
    let id = parent.attribute("id").unwrap_or("");
    match parent
        .elements()
        .filter(|c| c.local == "Classification")
        .find(|c| c.attribute("classifiedObject") != Some(id))
    {
        None => Ok(()),
        Some(c) => Err(SubmissionError::BadAuthor(
            id.to_string(),
            format!(
                "a nested Classification ({}) classifies {:?}, not its parent",
                c.attribute("classificationScheme").unwrap_or(""),
                c.attribute("classifiedObject").unwrap_or("")
            ),
        )),
    }
}

/// One document entry of a submission.
#[derive(Debug, Clone)]
pub struct SubmittedDocument {
    /// `id` of the ExtrinsicObject (and of its `xdsb:Document`).
    pub entry_id: String,
    pub unique_id: String,
    /// `XDSDocumentEntry.patientId` (CX), empty when absent.
    pub patient_id: String,
    pub mime_type: String,
    pub content: Bytes,
    /// Whether its classCode is the lot signature's.
    pub is_signature: bool,
    /// Structure ids of its authors' `authorInstitution`.
    pub institutions: Vec<String>,
}

/// An ITI-41 submission as read from its envelope body and MTOM parts.
#[derive(Debug, Clone)]
pub struct Submission {
    /// `id` of the RegistryPackage.
    pub set_entry_id: String,
    pub set_unique_id: String,
    /// Structure ids of the submission set authors' `authorInstitution`.
    pub set_institutions: Vec<String>,
    pub documents: Vec<SubmittedDocument>,
}

impl Submission {
    /// Reads a submission; `body` is the SOAP Body's first element, `parts` the MTOM
    /// message it came in (if any).
    ///
    /// What a document's content is must not depend on the reader: each `xdsb:Document`
    /// has an id, unique, of a document entry (`ExtrinsicObject`), and holds either exactly
    /// one `xop:Include` with a `cid:` href naming an attachment (not the root), or base64
    /// text; no `xop:Include` appears anywhere else. Each attachment is included by
    /// exactly one document: two documents naming one part are refused, and so is a part
    /// no document names, since the proxy forwards every part and the lot signature
    /// covers only the documents (an unreferenced part would travel unsigned).
    pub fn read(body: &Element, parts: Option<&mtom::Mtom>) -> Result<Self, SubmissionError> {
        if body.local != "ProvideAndRegisterDocumentSetRequest" {
            return Err(SubmissionError::NotASubmission);
        }
        let packages = descendants(body, "RegistryPackage");
        let [package] = packages.as_slice() else {
            return Err(SubmissionError::SubmissionSetCount(packages.len()));
        };
        let set_unique_id = external_id(package, SUBMISSION_UNIQUE_ID_SCHEME)
            .ok_or(SubmissionError::NoSubmissionSetUniqueId)?;
        let entries: Vec<&Element> = descendants(body, "ExtrinsicObject");
        let entry_ids: HashSet<&str> = entries.iter().filter_map(|eo| eo.attribute("id")).collect();
        let documents_in_body: Vec<&Element> =
            body.elements().filter(|e| e.local == "Document").collect();
        // Every xop:Include must be the content of an xdsb:Document: an Include elsewhere
        // would be resolved by a receiver's XOP processing without being signed.
        let included_in_documents: usize = documents_in_body
            .iter()
            .map(|d| d.elements().filter(|e| e.local == "Include").count())
            .sum();
        if descendants(body, "Include").len() != included_in_documents {
            return Err(SubmissionError::StrayInclude);
        }
        let mut contents: HashMap<&str, Bytes> = HashMap::new();
        // Content-ID to the id of the xdsb:Document that includes it.
        let mut used: HashMap<String, &str> = HashMap::new();
        for doc in documents_in_body {
            let id = doc
                .attribute("id")
                .ok_or(SubmissionError::DocumentWithoutId)?;
            if contents.contains_key(id) {
                return Err(SubmissionError::DuplicateDocument(id.to_string()));
            }
            if !entry_ids.contains(id) {
                return Err(SubmissionError::DocumentWithoutEntry(id.to_string()));
            }
            let includes: Vec<&Element> = doc.elements().filter(|e| e.local == "Include").collect();
            let has_text = !doc.text_content().trim().is_empty();
            let content = match includes.as_slice() {
                [include] if !has_text && doc.elements().count() == 1 => {
                    let href = include.attribute("href").unwrap_or("");
                    let is_cid = href
                        .get(..4)
                        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("cid:"));
                    if !is_cid {
                        return Err(SubmissionError::BadIncludeHref {
                            id: id.to_string(),
                            href: href.to_string(),
                        });
                    }
                    let cid = mtom::cid(href);
                    if parts.and_then(|m| m.root_content_id.as_deref()) == Some(cid.as_str()) {
                        return Err(SubmissionError::IncludeNamesRoot {
                            id: id.to_string(),
                            cid,
                        });
                    }
                    let Some(part) = parts.and_then(|m| m.part(&cid)).cloned() else {
                        return Err(SubmissionError::MissingPart {
                            id: id.to_string(),
                            cid,
                        });
                    };
                    if let Some(first) = used.insert(cid.clone(), id) {
                        return Err(SubmissionError::PartIncludedTwice {
                            cid,
                            first: first.to_string(),
                            second: id.to_string(),
                        });
                    }
                    part
                }
                [] if doc.elements().next().is_none() => {
                    let text: String = doc.text_content().split_whitespace().collect();
                    Bytes::from(
                        base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .map_err(|_| SubmissionError::BadInlineContent(id.to_string()))?,
                    )
                }
                _ => return Err(SubmissionError::AmbiguousContent(id.to_string())),
            };
            contents.insert(id, content);
        }
        // Every attachment is the content of exactly one document: the proxy forwards
        // every part, and one no document names would travel unsigned beside the signed
        // ones (and could be what a receiver resolves a reference to).
        if let Some(unused) = parts
            .into_iter()
            .flat_map(|m| &m.attachments)
            .find(|a| !used.contains_key(&a.content_id))
        {
            return Err(SubmissionError::UnreferencedPart(unused.content_id.clone()));
        }
        // Every Classification once: looking them up per entry would be quadratic.
        let classifications = descendants(body, "Classification");
        check_nested_classifications(package)?;
        let mut documents = Vec::new();
        for eo in entries {
            check_nested_classifications(eo)?;
            let entry_id = eo.attribute("id").unwrap_or("").to_string();
            let unique_id = external_id(eo, UNIQUE_ID_SCHEME)
                .ok_or_else(|| SubmissionError::NoUniqueId(entry_id.clone()))?;
            let content = contents
                .get(entry_id.as_str())
                .cloned()
                .ok_or_else(|| SubmissionError::NoContent(entry_id.clone()))?;
            documents.push(SubmittedDocument {
                institutions: author_institutions(
                    &classifications,
                    DOCUMENT_AUTHOR_SCHEME,
                    &entry_id,
                )?,
                patient_id: external_id(eo, PATIENT_ID_SCHEME).unwrap_or_default(),
                mime_type: eo
                    .attribute("mimeType")
                    .unwrap_or("application/octet-stream")
                    .to_string(),
                is_signature: eo.elements().any(|c| {
                    c.local == "Classification"
                        && c.attribute("classificationScheme") == Some(CLASS_CODE_SCHEME)
                        && c.attribute("nodeRepresentation") == Some(SIGNATURE_CLASS)
                }),
                entry_id,
                unique_id,
                content,
            });
        }
        if documents.is_empty() {
            return Err(SubmissionError::Empty);
        }
        let set_entry_id = package.attribute("id").unwrap_or("").to_string();
        Ok(Self {
            set_institutions: author_institutions(
                &classifications,
                SET_AUTHOR_SCHEME,
                &set_entry_id,
            )?,
            set_entry_id,
            set_unique_id,
            documents,
        })
    }

    /// Whether the submission already carries a lot signature document.
    pub fn is_signed(&self) -> bool {
        self.documents.iter().any(|d| d.is_signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle_signing::xml;

    fn body(docs: &str) -> Element {
        xml::parse(&format!(
            r#"<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="{XDSB}" xmlns:rim="{RIM}"><rim:RegistryPackage id="SS"><rim:ExternalIdentifier identificationScheme="{SUBMISSION_UNIQUE_ID_SCHEME}" value="1.2.3"/></rim:RegistryPackage><rim:ExtrinsicObject id="D1" mimeType="text/plain"><rim:ExternalIdentifier identificationScheme="{UNIQUE_ID_SCHEME}" value="1.2.3.1"/><rim:ExternalIdentifier identificationScheme="{PATIENT_ID_SCHEME}" value="P^^^&amp;1.2&amp;ISO"/></rim:ExtrinsicObject>{docs}</xdsb:ProvideAndRegisterDocumentSetRequest>"#
        ))
        .expect("xml")
    }

    /// A submission with document entries `D1`, `D2`, ... (`entries` of them) and `docs`.
    fn body_with(entries: usize, docs: &str) -> Element {
        let entries: String = (1..=entries)
            .map(|i| format!(r#"<rim:ExtrinsicObject id="D{i}" mimeType="text/plain"><rim:ExternalIdentifier identificationScheme="{UNIQUE_ID_SCHEME}" value="1.2.3.{i}"/></rim:ExtrinsicObject>"#))
            .collect();
        xml::parse(&format!(
            r#"<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="{XDSB}" xmlns:rim="{RIM}" xmlns:xop="{XOP}"><rim:RegistryPackage id="SS"><rim:ExternalIdentifier identificationScheme="{SUBMISSION_UNIQUE_ID_SCHEME}" value="1.2.3"/></rim:RegistryPackage>{entries}{docs}</xdsb:ProvideAndRegisterDocumentSetRequest>"#
        ))
        .expect("xml")
    }

    fn include(id: &str, href: &str) -> String {
        format!(r#"<xdsb:Document id="{id}"><xop:Include href="{href}"/></xdsb:Document>"#)
    }

    /// An MTOM message with attachments `a@x`, `b@x` (root `root.message@passerelle`).
    fn two_parts() -> mtom::Mtom {
        let part = |id: &str, content: &'static [u8]| mtom::Attachment {
            content_id: id.into(),
            mime_type: "text/plain".into(),
            content: Bytes::from_static(content),
        };
        let (ct, raw) = mtom::build("<root/>", &[part("a@x", b"A"), part("b@x", b"B")]);
        mtom::parse(&ct, &raw).expect("mtom")
    }

    #[test]
    fn each_part_is_included_once_and_every_part_is_included() {
        let m = two_parts();
        let both = format!("{}{}", include("D1", "cid:a%40x"), include("D2", "CID:b@x"));
        let s = Submission::read(&body_with(2, &both), Some(&m)).expect("read");
        assert_eq!(&s.documents[0].content[..], b"A");
        assert_eq!(&s.documents[1].content[..], b"B");

        // Two Includes naming the same part (two spellings of one Content-ID).
        let twice = format!("{}{}", include("D1", "cid:a@x"), include("D2", "cid:a%40x"));
        let err = Submission::read(&body_with(2, &twice), Some(&m)).expect_err("twice");
        assert_eq!(
            err,
            SubmissionError::PartIncludedTwice {
                cid: "a@x".into(),
                first: "D1".into(),
                second: "D2".into()
            }
        );
        // A part no document includes would travel unsigned.
        let err = Submission::read(&body_with(1, &include("D1", "cid:a@x")), Some(&m))
            .expect_err("unreferenced");
        assert_eq!(err, SubmissionError::UnreferencedPart("b@x".into()));
        assert!(err.to_string().contains("<b@x>"), "{err}");
        // Parts that do not exist, or the root.
        let missing = format!("{}{}", include("D1", "cid:a@x"), include("D2", "cid:c@x"));
        let err = Submission::read(&body_with(2, &missing), Some(&m)).expect_err("missing");
        assert_eq!(
            err,
            SubmissionError::MissingPart {
                id: "D2".into(),
                cid: "c@x".into()
            }
        );
        let root = format!(
            "{}{}",
            include("D1", "cid:a@x"),
            include("D2", "cid:root.message@passerelle")
        );
        let err = Submission::read(&body_with(2, &root), Some(&m)).expect_err("root");
        assert!(
            matches!(err, SubmissionError::IncludeNamesRoot { .. }),
            "{err}"
        );
        let err = Submission::read(&body_with(2, &include("D1", "a@x")), Some(&m))
            .expect_err("not a cid: URL");
        assert!(
            matches!(err, SubmissionError::BadIncludeHref { .. }),
            "{err}"
        );
    }

    #[test]
    fn document_contents_are_unambiguous() {
        let m = two_parts();
        let a = include("D1", "cid:a@x");
        let b = include("D2", "cid:b@x");
        let read = |entries: usize, docs: String| {
            Submission::read(&body_with(entries, &docs), Some(&m)).expect_err(&docs)
        };
        // Two xdsb:Document with one id: which one is the document's content?
        assert_eq!(
            read(
                2,
                format!("{a}{b}{}", r#"<xdsb:Document id="D1">QQ==</xdsb:Document>"#)
            ),
            SubmissionError::DuplicateDocument("D1".into())
        );
        assert_eq!(
            read(
                2,
                format!("{a}{b}{}", r#"<xdsb:Document>QQ==</xdsb:Document>"#)
            ),
            SubmissionError::DocumentWithoutId
        );
        assert_eq!(
            read(
                2,
                format!("{a}{b}{}", r#"<xdsb:Document id="D9">QQ==</xdsb:Document>"#)
            ),
            SubmissionError::DocumentWithoutEntry("D9".into())
        );
        // An Include and text, two Includes, an Include outside any document.
        assert_eq!(
            read(
                2,
                format!(
                    "{b}{}",
                    r#"<xdsb:Document id="D1">QQ==<xop:Include href="cid:a@x"/></xdsb:Document>"#
                )
            ),
            SubmissionError::AmbiguousContent("D1".into())
        );
        assert_eq!(
            read(
                2,
                r#"<xdsb:Document id="D1"><xop:Include href="cid:a@x"/><xop:Include href="cid:b@x"/></xdsb:Document>"#.to_string()
            ),
            SubmissionError::AmbiguousContent("D1".into())
        );
        assert_eq!(
            read(
                2,
                format!(
                    "{a}{b}{}",
                    r#"<rim:Slot><xop:Include href="cid:a@x"/></rim:Slot>"#
                )
            ),
            SubmissionError::StrayInclude
        );
    }

    #[test]
    fn reads_inline_and_mtom_contents() {
        let inline = body(r#"<xdsb:Document id="D1">aGVsbG8=</xdsb:Document>"#);
        let s = Submission::read(&inline, None).expect("read");
        assert_eq!(s.set_unique_id, "1.2.3");
        assert_eq!(s.set_entry_id, "SS");
        assert_eq!(&s.documents[0].content[..], b"hello");
        assert_eq!(s.documents[0].patient_id, "P^^^&1.2&ISO");
        assert!(!s.is_signed());

        let xop = body(&format!(
            r#"<xdsb:Document id="D1"><xop:Include xmlns:xop="{XOP}" href="cid:d1%40x"/></xdsb:Document>"#
        ));
        let (ct, raw) = mtom::build(
            "<root/>",
            &[mtom::Attachment {
                content_id: "d1@x".into(),
                mime_type: "text/plain".into(),
                content: Bytes::from_static(b"bytes"),
            }],
        );
        let m = mtom::parse(&ct, &raw).expect("mtom");
        let s = Submission::read(&xop, Some(&m)).expect("read");
        assert_eq!(&s.documents[0].content[..], b"bytes");
        assert_eq!(
            Submission::read(&xop, None).expect_err("no parts"),
            SubmissionError::MissingPart {
                id: "D1".into(),
                cid: "d1@x".into()
            }
        );
        assert_eq!(
            Submission::read(&body(""), None).expect_err("no content"),
            SubmissionError::NoContent("D1".into())
        );
    }
}
