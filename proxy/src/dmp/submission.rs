//! ITI-41 (TD2.1/TD2.2): the lot signature. The submission is read from the envelope
//! and its MTOM parts (documents stay slices of the request), the documents are
//! digested and the lot signed with ORG SIGN on the blocking pool, then the signature
//! document is added: its ExtrinsicObject and the `HasMember` and `signs` associations
//! in the RegistryObjectList, an `xdsb:Document` in the request, and one more MIME part
//! (inline base64 when the request was not MTOM).

use std::cell::OnceCell;

use base64::Engine;
use bytes::Bytes;
use passerelle_signing::lot::read_xml_document;
use passerelle_signing::lot::{LotMetadata, LotMetadataInput};
use passerelle_signing::xml::{self, Element, Node};
use passerelle_signing::{
    DigestAlgorithm, DocumentDigest, LotRequest, SignedLot, Signer, SigningError, lot_metadata,
    sign_lot,
};
use passerelle_soap::mtom::Attachment;
use passerelle_soap::xds::{
    self, COPIED_CLASSIFICATIONS, Submission, SubmittedDocument, XDSB, XOP,
};
use time::OffsetDateTime;

use crate::fault::ProxyError;
use crate::message::SoapMessage;

/// A submission to sign.
#[derive(Debug)]
pub struct LotPlan {
    pub documents: Vec<SubmittedDocument>,
    /// Signed by the internal system (`lot_signature_passthrough`): checked like any
    /// other submission, forwarded without a new lot signature.
    pub already_signed: bool,
    set_entry_id: String,
    set_unique_id: String,
    /// Structure ids of the submission set authors' `authorInstitution`.
    set_institutions: Vec<String>,
    patient_id: String,
    copied_classifications: Vec<Element>,
    /// Per document, what the CDA structure check and the lot's digest need of it when
    /// it is XML, read in one parse on first use ([`xml_reading`]); `sign` pairs them with
    /// `documents` as the structure check does.
    parsed: Vec<OnceCell<Option<Result<XmlReading, SigningError>>>>,
}

/// What a submission needs of one XML document, read in one pass without a tree: the
/// canonical form is written while the document is parsed, and the CDA's authors are
/// picked up on the way.
#[derive(Debug)]
struct XmlReading {
    /// For a CDA (`ClinicalDocument` in `urn:hl7-org:v3`): the structure ids of
    /// `author/assignedAuthor/representedOrganization/id` under the structures'
    /// assigning authority.
    cda_organizations: Option<Vec<String>>,
    /// Its Canonical XML (with comments), or why the lot signature refuses it.
    canonical: Result<String, SigningError>,
}

impl XmlReading {
    fn of(d: &SubmittedDocument) -> Result<Self, SigningError> {
        let mut cda = CdaAuthors::default();
        let doc = read_xml_document(&d.unique_id, &d.content, |tag| cda.see(tag))?;
        Ok(Self {
            cda_organizations: cda.organizations,
            canonical: doc.canonical(),
        })
    }
}

/// Document `d` read into `read` when its MIME type is XML: parsed the first time it is
/// asked for, as the lot signature reads it (an error when the lot signature would
/// refuse it).
fn xml_reading<'r>(
    d: &SubmittedDocument,
    read: &'r OnceCell<Option<Result<XmlReading, SigningError>>>,
) -> Option<&'r Result<XmlReading, SigningError>> {
    read.get_or_init(|| {
        passerelle_signing::lot::is_xml_mime(&d.mime_type).then(|| XmlReading::of(d))
    })
    .as_ref()
}

/// See [`XmlReading::cda_organizations`], gathered from the start tags of one pass.
#[derive(Debug, Default)]
struct CdaAuthors {
    /// `None` until the root is seen to be a CDA.
    organizations: Option<Vec<String>>,
}

impl CdaAuthors {
    const HL7: &str = "urn:hl7-org:v3";
    const PATH: [&str; 5] = [
        "ClinicalDocument",
        "author",
        "assignedAuthor",
        "representedOrganization",
        "id",
    ];

    fn see(&mut self, tag: &xml::StartTag<'_>) {
        if tag.depth() == 0 {
            self.organizations =
                (tag.local() == Self::PATH[0] && tag.namespace() == Self::HL7).then(Vec::new);
            return;
        }
        let Some(ids) = &mut self.organizations else {
            return;
        };
        if tag.depth() == Self::PATH.len() - 1
            && tag.path_is(&Self::PATH)
            && tag.attribute("root") == Some(xds::STRUCTURE_AUTHORITY)
            && let Some(ext) = tag.attribute("extension")
        {
            ids.push(ext.trim().to_string());
        }
    }
}

/// A signed submission, ready to be written into the request.
#[derive(Debug)]
pub struct SignedSubmission {
    lot: SignedLot,
    metadata: LotMetadata,
    entry_id: String,
}

/// A fresh OID under `2.25` (UUID-derived, ITU-T X.667): the signature's uniqueId.
fn new_oid() -> String {
    format!("2.25.{}", uuid::Uuid::new_v4().as_u128())
}

impl LotPlan {
    /// Reads the submission (already signed: only with passthrough on).
    pub fn read(message: &SoapMessage, passthrough: bool) -> Result<Option<Self>, ProxyError> {
        let (body, _) = message
            .envelope
            .body_element()
            .ok_or_else(|| ProxyError::BadSubmission("empty SOAP Body".into()))?;
        let submission = Submission::read(body, message.mtom.as_ref())
            .map_err(|e| ProxyError::BadSubmission(e.to_string()))?;
        let already_signed = submission.is_signed();
        if already_signed && !passthrough {
            return Err(ProxyError::LotAlreadySigned);
        }
        let first = &submission.documents[0];
        if let Some(d) = submission
            .documents
            .iter()
            .find(|d| d.patient_id.is_empty())
        {
            return Err(ProxyError::BadSubmission(format!(
                "document entry {:?} has no XDSDocumentEntry.patientId",
                d.entry_id
            )));
        }
        let copied_classifications = xds::descendants(body, "ExtrinsicObject")
            .into_iter()
            .find(|eo| eo.attribute("id") == Some(first.entry_id.as_str()))
            .map(|eo| {
                eo.elements()
                    .filter(|c| {
                        c.local == "Classification"
                            && c.attribute("classificationScheme")
                                .is_some_and(|s| COPIED_CLASSIFICATIONS.contains(&s))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(Self {
            parsed: submission
                .documents
                .iter()
                .map(|_| OnceCell::new())
                .collect(),
            already_signed,
            set_institutions: submission.set_institutions,
            patient_id: first.patient_id.clone(),
            set_entry_id: submission.set_entry_id,
            set_unique_id: submission.set_unique_id,
            documents: submission.documents,
            copied_classifications,
        }))
    }

    /// Structure ids of the submission set authors' `authorInstitution`.
    pub fn set_institutions(&self) -> &[String] {
        &self.set_institutions
    }

    /// For each CDA document (`ClinicalDocument` in `urn:hl7-org:v3`), the structure ids
    /// of `author/assignedAuthor/representedOrganization/id` under the structures'
    /// assigning authority. Other documents, and XML that does not parse (the lot
    /// signature refuses it), name none.
    pub fn cda_organizations(&self) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        for (d, read) in self.documents.iter().zip(&self.parsed) {
            if let Some(Ok(XmlReading {
                cda_organizations: Some(ids),
                ..
            })) = xml_reading(d, read)
            {
                out.push((d.entry_id.clone(), ids.clone()));
            }
        }
        out
    }

    /// Every document must be the signed VIHF's patient: the lot would otherwise be signed
    /// for a patient the token (and the audit trail) does not name. INS and OID are
    /// compared (the CX's other components may be written differently).
    pub fn check_patient(&self, vihf_patient: &str) -> Result<(), String> {
        let key = |cx: &str| {
            passerelle_signing::Ins::from_cx(cx)
                .ok()
                .map(|ins| ins.to_cx())
        };
        let expected = key(vihf_patient);
        match self
            .documents
            .iter()
            .find(|d| expected.is_none() || key(&d.patient_id) != expected)
        {
            None => Ok(()),
            Some(d) => Err(format!(
                "document entry {:?}: its XDSDocumentEntry.patientId is not the VIHF's patient (resource-id)",
                d.entry_id
            )),
        }
    }

    /// Digests the documents and signs the lot (blocking: run it off the reactor).
    pub fn sign(
        mut self,
        signer: &dyn Signer,
        digest: DigestAlgorithm,
        now: OffsetDateTime,
    ) -> Result<SignedSubmission, SigningError> {
        // What the structure check read is used, and let go, one document at a time.
        let parsed = std::mem::take(&mut self.parsed);
        let documents = self
            .documents
            .iter()
            .zip(parsed)
            .map(|(d, read)| match read.into_inner().flatten() {
                Some(read) => read?
                    .canonical
                    .map(|c| DocumentDigest::of_canonical_xml(&d.unique_id, &c, digest)),
                None => DocumentDigest::compute(&d.unique_id, &d.mime_type, &d.content, digest),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let lot = sign_lot(
            &LotRequest {
                submission_set_unique_id: self.set_unique_id,
                signature_unique_id: new_oid(),
                documents,
                digest,
                signing_time: now,
            },
            signer,
        )?;
        let entry_id = format!("urn:uuid:{}", uuid::Uuid::new_v4());
        let metadata = lot_metadata(
            &LotMetadataInput {
                submission_set_entry_id: self.set_entry_id,
                signature_entry_id: entry_id.clone(),
                patient_id: self.patient_id,
                creation_time: now,
                copied_classifications: self.copied_classifications,
            },
            &lot,
        );
        Ok(SignedSubmission {
            lot,
            metadata,
            entry_id,
        })
    }
}

fn child_mut<'e>(e: &'e mut Element, local: &str) -> Option<&'e mut Element> {
    e.children.iter_mut().find_map(|n| match n {
        Node::Element(c) if c.local == local => Some(c),
        _ => None,
    })
}

impl SignedSubmission {
    /// Writes the signature document into the request; returns the MIME parts to send
    /// (the original ones, then the signature's when the request is MTOM).
    pub fn apply(&self, message: &mut SoapMessage) -> Result<Vec<Attachment>, ProxyError> {
        let lost = || ProxyError::Internal("submission structure lost while editing".into());
        let cid = format!("signature-{}@passerelle", uuid::Uuid::new_v4().simple());
        let mut document = Element::new(None, "Document")
            .ns(None, XDSB)
            .attr("id", self.entry_id.clone());
        let mut attachments = Vec::new();
        match &message.mtom {
            Some(m) => {
                attachments.extend(m.attachments.iter().cloned());
                attachments.push(Attachment {
                    content_id: cid.clone(),
                    mime_type: "text/xml".into(),
                    content: Bytes::from(self.lot.xml.clone()),
                });
                document = document.child(
                    Element::new(Some("xop"), "Include")
                        .ns(Some("xop"), XOP)
                        .attr("href", format!("cid:{}", cid.replace('@', "%40"))),
                );
            }
            None => {
                document =
                    document.text(base64::engine::general_purpose::STANDARD.encode(&self.lot.xml));
            }
        }
        let body = child_mut(&mut message.envelope.root, "Body").ok_or_else(lost)?;
        let request = child_mut(body, "ProvideAndRegisterDocumentSetRequest").ok_or_else(lost)?;
        let list = child_mut(request, "SubmitObjectsRequest")
            .and_then(|s| child_mut(s, "RegistryObjectList"))
            .ok_or_else(|| {
                ProxyError::BadSubmission("no SubmitObjectsRequest/RegistryObjectList".into())
            })?;
        for e in [
            &self.metadata.extrinsic_object,
            &self.metadata.has_member,
            &self.metadata.signs,
        ] {
            list.children.push(Node::Element(e.clone()));
        }
        request.children.push(Node::Element(document));
        Ok(attachments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(content: &str) -> Result<XmlReading, SigningError> {
        XmlReading::of(&SubmittedDocument {
            entry_id: "Document01".into(),
            unique_id: "1.2.3".into(),
            patient_id: String::new(),
            mime_type: "text/xml".into(),
            content: Bytes::from(content.to_string()),
            is_signature: false,
            institutions: Vec::new(),
        })
    }

    fn organizations(content: &str) -> Option<Vec<String>> {
        reading(content).expect("parses").cda_organizations
    }

    fn author(org: &str) -> String {
        format!(
            r#"<author><assignedAuthor><representedOrganization>{org}</representedOrganization></assignedAuthor></author>"#
        )
    }

    #[test]
    fn a_cda_names_its_authors_organizations_from_the_one_pass() {
        let id = |root: &str, ext: &str| format!(r#"<id root="{root}" extension="{ext}"/>"#);
        let structure = xds::STRUCTURE_AUTHORITY;
        let cda = format!(
            r#"<h:ClinicalDocument xmlns:h="urn:hl7-org:v3"><!--c-->{}{}<h:component>{}</h:component></h:ClinicalDocument>"#,
            author(&format!(
                "{}{}<asOrganizationPartOf>{}</asOrganizationPartOf>",
                id(structure, " 1000000001 "),
                id("1.2.250.1.71.4.2.1", "1000000002"),
                id(structure, "1000000003"),
            )),
            author(&id(structure, "1000000004")),
            // Deeper than the header's authors: not one of them.
            author(&id(structure, "1000000005")),
        );
        assert_eq!(
            organizations(&cda),
            Some(vec!["1000000001".to_string(), "1000000004".to_string()])
        );
        // The digest's canonical form comes from the same pass.
        let tree = xml::parse_document(&cda).expect("parses");
        assert_eq!(
            reading(&cda).expect("parses").canonical.as_deref(),
            Ok(xml::canonicalize_document(&tree, &xml::C14n::INCLUSIVE_WITH_COMMENTS).as_str())
        );
        // Not a CDA: another namespace, or another root.
        let other_ns = format!(
            r#"<ClinicalDocument xmlns="urn:other">{}</ClinicalDocument>"#,
            author(&id(structure, "1"))
        );
        assert_eq!(organizations(&other_ns), None);
        assert_eq!(organizations("<report/>"), None);
        // A CDA without authors names none (and is still a CDA).
        assert_eq!(
            organizations(r#"<ClinicalDocument xmlns="urn:hl7-org:v3"/>"#),
            Some(Vec::new())
        );
    }

    #[test]
    fn an_encoding_the_lot_refuses_still_names_the_authors() {
        let cda = format!(
            r#"<?xml version="1.0" encoding="ISO-8859-1"?><ClinicalDocument xmlns="urn:hl7-org:v3">{}<title>é</title></ClinicalDocument>"#,
            author(&format!(
                r#"<id root="{}" extension="1000000001"/>"#,
                xds::STRUCTURE_AUTHORITY
            ))
        );
        let read = reading(&cda).expect("parses");
        assert_eq!(read.cda_organizations, Some(vec!["1000000001".to_string()]));
        assert!(
            read.canonical
                .is_err_and(|e| e.to_string().contains("ISO-8859-1"))
        );
        assert!(reading("<a><b></a>").is_err());
    }
}
