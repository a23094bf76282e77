//! Mock DMP (`/si-dmp-server/v2/services/<service>`, domain.md §4–§6).
//!
//! On every request, in order, it refuses with a SOAP 1.2 fault naming the check:
//! the service path, the envelope, the WS-Addressing Action of the endpoint, the VIHF
//! alone in `wsse:Security`, its signature (libxmlsec1, up to the test root), Issuer =
//! TLS client subject, `Identifiant_Structure` = client OU or one of its geographic
//! entities, `INDIRECTE` and the required attributes, IssueInstant within ±5 minutes.
//!
//! Then: ITI-41 (MTOM, lot signature verified against the document parts, `signs`
//! association, duplicate submission set refused as a real registry does), ITI-18
//! (documents recorded for the patient), ITI-43 (their bytes over MTOM), ITI-57
//! (success), and canned acknowledgements for the HL7v3 and habilitation operations.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use passerelle_signing::resign::{AUTH_MODE_NAMES, REQUIRED_ATTRIBUTES};
use passerelle_signing::xml::{self, Element};
use passerelle_signing::{SuppliedDocument, TrustAnchors, verify_lot, verify_vihf};

use crate::mtom;
use crate::server::{MockRequest, MockResponse, Service};
use crate::soap::{self, Envelope, Fault, FaultCode, WSA};

pub const BASE_PATH: &str = "/si-dmp-server/v2/services/";
pub const WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
pub const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const RS: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0";
pub const RIM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0";
pub const QUERY: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0";
pub const XDSB: &str = "urn:ihe:iti:xds-b:2007";
pub const XOP: &str = "http://www.w3.org/2004/08/xop/include";

pub const ITI41: &str = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b";
pub const ITI43: &str = "urn:ihe:iti:2007:RetrieveDocumentSet";
pub const ITI18: &str = "urn:ihe:iti:2007:RegistryStoredQuery";
pub const ITI57: &str = "urn:ihe:iti:2010:UpdateDocumentSet";

const UNIQUE_ID_SCHEME: &str = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab";
const PATIENT_ID_SCHEME: &str = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427";
const SUBMISSION_UNIQUE_ID_SCHEME: &str = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8";
const CLASS_CODE_SCHEME: &str = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a";
const SIGNATURE_CLASS: &str = "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1";
const SIGNS: &str = "urn:ihe:iti:2007:AssociationType:signs";
const SUCCESS: &str = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success";
const FAILURE: &str = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure";
/// The mock repository's uniqueId.
pub const REPOSITORY_UNIQUE_ID: &str = "1.2.250.1.213.1.1.1.1";

/// WS-Addressing Actions each service accepts (domain.md §4).
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

/// A document the mock registry holds.
#[derive(Debug, Clone)]
pub struct StoredDocument {
    pub unique_id: String,
    pub patient_id: String,
    pub mime_type: String,
    pub content: Bytes,
    pub submission_set: String,
    /// Subject DN of the TLS client that submitted it.
    pub client_subject: String,
}

#[derive(Debug, Default)]
struct Registry {
    /// Submission set uniqueIds already accepted.
    submissions: Vec<String>,
    documents: Vec<StoredDocument>,
}

/// Mock DMP configuration.
#[derive(Debug, Clone)]
pub struct DmpConfig {
    /// Anchors for VIHF and lot signatures (the test root) and the ORG intermediate.
    pub trust: TrustAnchors,
    /// Legal entity structure id -> its geographic entities.
    pub geographic: HashMap<String, Vec<String>>,
    /// Allowed distance between IssueInstant and now.
    pub max_clock_skew: Duration,
}

/// The mock DMP service.
#[derive(Debug)]
pub struct MockDmp {
    config: DmpConfig,
    registry: Mutex<Registry>,
}

/// A refusal: the check that failed and why.
struct Refusal {
    outcome: &'static str,
    reason: String,
}

fn refuse<T>(outcome: &'static str, reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        outcome,
        reason: reason.into(),
    })
}

fn descendants<'e>(e: &'e Element, local: &str, out: &mut Vec<&'e Element>) {
    for c in e.elements() {
        if c.local == local {
            out.push(c);
        }
        descendants(c, local, out);
    }
}

fn all<'e>(e: &'e Element, local: &str) -> Vec<&'e Element> {
    let mut out = Vec::new();
    descendants(e, local, &mut out);
    out
}

fn external_id(e: &Element, scheme: &str) -> Option<String> {
    e.elements()
        .find(|c| {
            c.local == "ExternalIdentifier" && c.attribute("identificationScheme") == Some(scheme)
        })
        .and_then(|c| c.attribute("value"))
        .map(str::to_string)
}

fn envelope_with_action(action: &str, relates_to: &str, body: Element) -> String {
    soap::envelope(
        vec![
            Element::new(Some("wsa"), "Action")
                .ns(Some("wsa"), WSA)
                .text(action.to_string()),
            Element::new(Some("wsa"), "RelatesTo")
                .ns(Some("wsa"), WSA)
                .text(relates_to.to_string()),
        ],
        body,
    )
}

fn registry_response(status: &'static str, error: Option<(&'static str, String)>) -> Element {
    let mut r = Element::new(Some("rs"), "RegistryResponse")
        .ns(Some("rs"), RS)
        .attr("status", status);
    if let Some((code, context)) = error {
        r = r.child(
            Element::new(Some("rs"), "RegistryErrorList").child(
                Element::new(Some("rs"), "RegistryError")
                    .attr("codeContext", context)
                    .attr("errorCode", code)
                    .attr(
                        "severity",
                        "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error",
                    ),
            ),
        );
    }
    r
}

impl MockDmp {
    pub fn new(config: DmpConfig) -> Self {
        Self {
            config,
            registry: Mutex::new(Registry::default()),
        }
    }

    /// Documents recorded so far (for tests and `/stats`-like checks).
    pub fn documents(&self) -> Vec<StoredDocument> {
        self.registry
            .lock()
            .map(|r| r.documents.clone())
            .unwrap_or_default()
    }

    /// Submission set uniqueIds accepted so far.
    pub fn submissions(&self) -> Vec<String> {
        self.registry
            .lock()
            .map(|r| r.submissions.clone())
            .unwrap_or_default()
    }

    fn check_vihf(&self, env: &Envelope, req: &MockRequest) -> Result<(), Refusal> {
        let Some((security, scope)) = env.header(WSSE, "Security") else {
            return refuse("vihf_missing", "VIHF missing: no wsse:Security header");
        };
        let inner = xml::scope_of(security, &scope);
        let children: Vec<&Element> = security.elements().collect();
        let assertion = match children.as_slice() {
            [] => return refuse("vihf_missing", "VIHF missing: wsse:Security is empty"),
            [a] if a.local == "Assertion"
                && xml::namespace_of(a, &inner).as_deref() == Some(SAML) =>
            {
                *a
            }
            _ => {
                return refuse(
                    "vihf_not_alone",
                    "wsse:Security must hold the VIHF assertion alone (no Timestamp, token or signature)",
                );
            }
        };
        let text = soap::standalone(assertion, &inner);
        let vihf = verify_vihf(&text, &self.config.trust).map_err(|e| Refusal {
            outcome: "vihf_signature",
            reason: format!("VIHF signature: {e}"),
        })?;
        if vihf.issuer != req.client.subject {
            return refuse(
                "vihf_issuer",
                format!(
                    "VIHF Issuer {:?} is not the TLS client certificate's subject {:?}",
                    vihf.issuer, req.client.subject
                ),
            );
        }
        for name in REQUIRED_ATTRIBUTES {
            if vihf.attribute(name).is_none_or(|v| v.trim().is_empty()) {
                return refuse(
                    "vihf_attributes",
                    format!("VIHF attribute {name} is missing"),
                );
            }
        }
        let mode = AUTH_MODE_NAMES
            .iter()
            .find_map(|n| vihf.attribute(n))
            .unwrap_or("");
        if mode != "INDIRECTE" {
            return refuse(
                "vihf_mode",
                format!("VIHF authentication mode is {mode:?}, expected INDIRECTE"),
            );
        }
        let structure = vihf.attribute("Identifiant_Structure").unwrap_or("");
        let ou = req.client.organizational_unit.as_deref().unwrap_or("");
        let geographic = self.config.geographic.get(ou);
        if structure != ou && !geographic.is_some_and(|g| g.iter().any(|s| s == structure)) {
            return refuse(
                "vihf_structure",
                format!(
                    "VIHF Identifiant_Structure {structure} does not belong to the legal entity {ou} of the TLS certificate"
                ),
            );
        }
        let instant = time::OffsetDateTime::parse(
            &vihf.issue_instant,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| Refusal {
            outcome: "vihf_instant",
            reason: format!("VIHF IssueInstant {:?} is not a date", vihf.issue_instant),
        })?;
        let skew = (time::OffsetDateTime::now_utc() - instant).abs();
        if skew > self.config.max_clock_skew {
            return refuse(
                "vihf_instant",
                format!(
                    "VIHF IssueInstant {} is {} s from now (allowed: ±{} s)",
                    vihf.issue_instant,
                    skew.whole_seconds(),
                    self.config.max_clock_skew.as_secs()
                ),
            );
        }
        Ok(())
    }

    fn provide_and_register(
        &self,
        env: &Envelope,
        attachments: &HashMap<String, Bytes>,
        req: &MockRequest,
    ) -> Result<Element, Refusal> {
        let Some((body, _)) = env.body_element() else {
            return refuse("iti41_body", "empty SOAP Body");
        };
        let objects = all(body, "ExtrinsicObject");
        let package = all(body, "RegistryPackage");
        let [package] = package.as_slice() else {
            return refuse(
                "iti41_metadata",
                "exactly one RegistryPackage (the submission set) expected",
            );
        };
        let Some(set_uid) = external_id(package, SUBMISSION_UNIQUE_ID_SCHEME) else {
            return refuse("iti41_metadata", "the submission set has no uniqueId");
        };
        // Document contents by entry id, from MTOM parts (or inline base64).
        let mut contents: HashMap<String, Bytes> = HashMap::new();
        for doc in all(body, "Document") {
            let Some(id) = doc.attribute("id") else {
                continue;
            };
            let content = match doc.elements().find(|e| e.local == "Include") {
                Some(include) => {
                    let cid = mtom::cid(include.attribute("href").unwrap_or(""));
                    match attachments.get(&cid) {
                        Some(b) => b.clone(),
                        None => {
                            return refuse(
                                "iti41_mtom",
                                format!("document {id}: no MIME part with Content-ID <{cid}>"),
                            );
                        }
                    }
                }
                None => {
                    use base64::Engine;
                    let text: String = doc.text_content().split_whitespace().collect();
                    Bytes::from(
                        base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .map_err(|_| Refusal {
                                outcome: "iti41_mtom",
                                reason: format!(
                                    "document {id}: content is neither xop:Include nor base64"
                                ),
                            })?,
                    )
                }
            };
            contents.insert(id.to_string(), content);
        }
        let mut entries = Vec::new();
        let mut signature = None;
        for eo in objects {
            let id = eo.attribute("id").unwrap_or("").to_string();
            let unique_id = external_id(eo, UNIQUE_ID_SCHEME).ok_or(Refusal {
                outcome: "iti41_metadata",
                reason: format!("document {id} has no uniqueId"),
            })?;
            let patient_id = external_id(eo, PATIENT_ID_SCHEME).unwrap_or_default();
            let mime = eo
                .attribute("mimeType")
                .unwrap_or("application/octet-stream")
                .to_string();
            let content = contents.get(&id).cloned().ok_or(Refusal {
                outcome: "iti41_mtom",
                reason: format!("document {id} has metadata but no content"),
            })?;
            let is_signature = eo.elements().any(|c| {
                c.local == "Classification"
                    && c.attribute("classificationScheme") == Some(CLASS_CODE_SCHEME)
                    && c.attribute("nodeRepresentation") == Some(SIGNATURE_CLASS)
            });
            let entry = (id, unique_id, patient_id, mime, content);
            if is_signature {
                if signature.is_some() {
                    return refuse(
                        "lot_signature",
                        "more than one signature document in the submission",
                    );
                }
                signature = Some(entry);
            } else {
                entries.push(entry);
            }
        }
        let Some((sig_id, sig_uid, sig_patient, sig_mime, sig_content)) = signature else {
            return refuse(
                "lot_signature_missing",
                "lot signature missing: no document with classCode 1.3.6.1.4.1.19376.1.2.1.1.1",
            );
        };
        let package_id = package.attribute("id").unwrap_or("");
        let signs = all(body, "Association").into_iter().any(|a| {
            a.attribute("associationType") == Some(SIGNS)
                && a.attribute("sourceObject") == Some(sig_id.as_str())
                && a.attribute("targetObject") == Some(package_id)
        });
        if !signs {
            return refuse(
                "lot_signs_association",
                "the signs association (signature -> submission set) is missing",
            );
        }
        let sig_text = std::str::from_utf8(&sig_content).map_err(|_| Refusal {
            outcome: "lot_signature",
            reason: "the signature document is not UTF-8".into(),
        })?;
        let supplied: Vec<SuppliedDocument<'_>> = entries
            .iter()
            .map(|(_, uid, _, mime, content)| SuppliedDocument {
                unique_id: uid,
                mime_type: mime,
                content,
            })
            .collect();
        let verified =
            verify_lot(sig_text, &supplied, &self.config.trust).map_err(|e| Refusal {
                outcome: "lot_signature_invalid",
                reason: format!("lot signature: {e}"),
            })?;
        if verified.submission_set_unique_id.as_deref() != Some(set_uid.as_str()) {
            return refuse(
                "lot_signature_invalid",
                "the lot signature's manifest does not name this submission set",
            );
        }
        let mut registry = self.registry.lock().map_err(|_| Refusal {
            outcome: "internal",
            reason: "registry lock poisoned".into(),
        })?;
        if registry.submissions.contains(&set_uid) {
            return Ok(registry_response(
                FAILURE,
                Some((
                    "XDSDuplicateUniqueIdInRegistry",
                    format!("SubmissionSet uniqueId {set_uid} already registered"),
                )),
            ));
        }
        registry.submissions.push(set_uid.clone());
        for (_, unique_id, patient_id, mime_type, content) in entries.into_iter().chain(
            std::iter::once((sig_id, sig_uid, sig_patient, sig_mime, sig_content)),
        ) {
            registry.documents.push(StoredDocument {
                unique_id,
                patient_id,
                mime_type,
                content,
                submission_set: set_uid.clone(),
                client_subject: req.client.subject.clone(),
            });
        }
        Ok(registry_response(SUCCESS, None))
    }

    fn stored_query(&self, env: &Envelope) -> Result<Element, Refusal> {
        let Some((body, _)) = env.body_element() else {
            return refuse("iti18_body", "empty SOAP Body");
        };
        let patient = all(body, "Slot")
            .into_iter()
            .find(|s| s.attribute("name") == Some("$XDSDocumentEntryPatientId"))
            .and_then(|s| all(s, "Value").first().map(|v| v.text_content()))
            .map(|v| v.trim().trim_matches('\'').to_string())
            .ok_or(Refusal {
                outcome: "iti18_query",
                reason: "the query has no $XDSDocumentEntryPatientId slot".into(),
            })?;
        let docs = self.documents();
        let mut list = Element::new(Some("rim"), "RegistryObjectList").ns(Some("rim"), RIM);
        for (i, d) in docs.iter().filter(|d| d.patient_id == patient).enumerate() {
            let id = format!("urn:uuid:{}", uuid::Uuid::new_v4());
            let slot = |name: &'static str, value: String| {
                Element::new(Some("rim"), "Slot").attr("name", name).child(
                    Element::new(Some("rim"), "ValueList")
                        .child(Element::new(Some("rim"), "Value").text(value)),
                )
            };
            let ext =
                |scheme: &'static str, value: &str, name: &'static str| {
                    Element::new(Some("rim"), "ExternalIdentifier")
                        .attr("id", format!("urn:uuid:{}", uuid::Uuid::new_v4()))
                        .attr("identificationScheme", scheme)
                        .attr("registryObject", id.clone())
                        .attr("value", value.to_string())
                        .child(Element::new(Some("rim"), "Name").child(
                            Element::new(Some("rim"), "LocalizedString").attr("value", name),
                        ))
                };
            let sha1: String = passerelle_signing::DigestAlgorithm::Sha1
                .digest(&d.content)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            list = list.child(
                Element::new(Some("rim"), "ExtrinsicObject")
                    .attr("id", id.clone())
                    .attr("mimeType", d.mime_type.clone())
                    .attr(
                        "objectType",
                        "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1",
                    )
                    .attr(
                        "status",
                        "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved",
                    )
                    .child(slot("hash", sha1))
                    .child(slot("repositoryUniqueId", REPOSITORY_UNIQUE_ID.to_string()))
                    .child(slot("size", d.content.len().to_string()))
                    .child(slot("submissionSetUniqueId", d.submission_set.clone()))
                    .child(
                        Element::new(Some("rim"), "Name").child(
                            Element::new(Some("rim"), "LocalizedString")
                                .attr("value", format!("Document {}", i + 1)),
                        ),
                    )
                    .child(ext(
                        PATIENT_ID_SCHEME,
                        &d.patient_id,
                        "XDSDocumentEntry.patientId",
                    ))
                    .child(ext(
                        UNIQUE_ID_SCHEME,
                        &d.unique_id,
                        "XDSDocumentEntry.uniqueId",
                    )),
            );
        }
        Ok(Element::new(Some("query"), "AdhocQueryResponse")
            .ns(Some("query"), QUERY)
            .attr("status", SUCCESS)
            .child(list))
    }

    fn retrieve(&self, env: &Envelope) -> Result<(Element, Vec<mtom::Attachment>), Refusal> {
        let Some((body, _)) = env.body_element() else {
            return refuse("iti43_body", "empty SOAP Body");
        };
        let docs = self.documents();
        let mut response = Element::new(Some("xdsb"), "RetrieveDocumentSetResponse")
            .ns(Some("xdsb"), XDSB)
            .child(registry_response(SUCCESS, None));
        let mut attachments = Vec::new();
        for request in all(body, "DocumentRequest") {
            let uid = request
                .elements()
                .find(|e| e.local == "DocumentUniqueId")
                .map(|e| e.text_content().trim().to_string())
                .unwrap_or_default();
            let Some(doc) = docs.iter().find(|d| d.unique_id == uid) else {
                return refuse("iti43_unknown", format!("no document has uniqueId {uid}"));
            };
            let cid = format!("doc{}@mock-dmp", attachments.len() + 1);
            response = response.child(
                Element::new(Some("xdsb"), "DocumentResponse")
                    .child(
                        Element::new(Some("xdsb"), "RepositoryUniqueId").text(REPOSITORY_UNIQUE_ID),
                    )
                    .child(Element::new(Some("xdsb"), "DocumentUniqueId").text(uid.clone()))
                    .child(Element::new(Some("xdsb"), "mimeType").text(doc.mime_type.clone()))
                    .child(
                        Element::new(Some("xdsb"), "Document").child(
                            Element::new(Some("xop"), "Include")
                                .ns(Some("xop"), XOP)
                                .attr("href", format!("cid:{cid}")),
                        ),
                    ),
            );
            attachments.push(mtom::Attachment {
                content_id: cid,
                mime_type: doc.mime_type.clone(),
                content: doc.content.clone(),
            });
        }
        Ok((response, attachments))
    }

    fn fault(&self, operation: &str, refusal: Refusal) -> MockResponse {
        MockResponse {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            content_type: "application/soap+xml; charset=utf-8".into(),
            body: Bytes::from(soap::fault_envelope(&Fault {
                code: FaultCode::Sender,
                subcode: None,
                reason: refusal.reason,
                detail: None,
            })),
            operation: operation.into(),
            outcome: refusal.outcome.into(),
        }
    }
}

/// A canned HL7v3 accept acknowledgement (MCCI_IN000002UV01, `typeCode AA`) for the
/// TD0.x / TD1.x and habilitation operations; its `interactionId` names the response
/// interaction of the request (PRPA_IN201308UV02 for PRPA_IN201307UV02, ...).
fn hl7_acknowledgement(action: &str) -> Element {
    let interaction = action.rsplit(':').next().unwrap_or("MCCI_IN000002UV01");
    let response = match interaction {
        "PRPA_IN201307UV02" => "PRPA_IN201308UV02",
        "PRPA_IN201305UV02" => "PRPA_IN201306UV02",
        other => other,
    };
    let el = |local: &'static str| Element::new(None, local);
    let device = |id: &'static str| {
        el("device")
            .attr("classCode", "DEV")
            .attr("determinerCode", "INSTANCE")
            .child(el("id").attr("root", id))
    };
    el("MCCI_IN000002UV01")
        .ns(None, "urn:hl7-org:v3")
        .attr("ITSVersion", "XML_1.0")
        .child(el("id").attr("root", uuid::Uuid::new_v4().to_string()))
        .child(el("creationTime").attr(
            "value",
            passerelle_signing::lot::dtm(time::OffsetDateTime::now_utc()),
        ))
        .child(
            el("interactionId")
                .attr("extension", response.to_string())
                .attr("root", "2.16.840.1.113883.1.6"),
        )
        .child(el("processingCode").attr("code", "P"))
        .child(el("processingModeCode").attr("code", "T"))
        .child(el("acceptAckCode").attr("code", "NE"))
        .child(
            el("receiver")
                .attr("typeCode", "RCV")
                .child(device("1.2.250.1.213.4.1.1")),
        )
        .child(
            el("sender")
                .attr("typeCode", "SND")
                .child(device("1.2.250.1.213.4.1")),
        )
        .child(
            el("acknowledgement")
                .child(el("typeCode").attr("code", "AA"))
                .child(
                    el("targetMessage")
                        .child(el("id").attr("root", uuid::Uuid::new_v4().to_string())),
                ),
        )
}

impl Service for MockDmp {
    fn handle(&self, req: &MockRequest) -> MockResponse {
        let Some(service) = req
            .path
            .strip_prefix(BASE_PATH)
            .filter(|s| !actions(s).is_empty())
        else {
            return MockResponse {
                status: StatusCode::NOT_FOUND,
                content_type: "text/plain".into(),
                body: Bytes::from(format!(
                    "no DMP service at {}: use {BASE_PATH}{{registry,repository,patients,habilitations,PatientSpecific}}\n",
                    req.path
                )),
                operation: "unknown".into(),
                outcome: "not_found".into(),
            };
        };
        let content_type = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let (root, attachments) = if content_type
            .to_ascii_lowercase()
            .starts_with("multipart/related")
        {
            match mtom::parse(&content_type, &req.body) {
                Ok(m) => (m.root, m.parts),
                Err(e) => {
                    return self.fault(
                        "unknown",
                        Refusal {
                            outcome: "mtom",
                            reason: format!("MTOM: {e}"),
                        },
                    );
                }
            }
        } else {
            (req.body.clone(), HashMap::new())
        };
        let env = match std::str::from_utf8(&root)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(Envelope::parse)
        {
            Ok(env) => env,
            Err(e) => {
                return self.fault(
                    "unknown",
                    Refusal {
                        outcome: "malformed",
                        reason: format!("not a SOAP envelope: {e}"),
                    },
                );
            }
        };
        let action = env.header_text(WSA, "Action").unwrap_or_default();
        let operation = action
            .rsplit([':', '/'])
            .next()
            .unwrap_or("unknown")
            .to_string();
        if !actions(service).contains(&action.as_str()) {
            return self.fault(
                &operation,
                Refusal {
                    outcome: "action",
                    reason: format!(
                        "wsa:Action {action:?} is not an operation of the {service} service"
                    ),
                },
            );
        }
        if let Err(r) = self.check_vihf(&env, req) {
            return self.fault(&operation, r);
        }
        let relates_to = env.header_text(WSA, "MessageID").unwrap_or_default();
        let ok = |body: String, content_type: String| MockResponse {
            status: StatusCode::OK,
            content_type,
            body: Bytes::from(body),
            operation: operation.clone(),
            outcome: "ok".into(),
        };
        let soap_type = "application/soap+xml; charset=utf-8".to_string();
        let result = match action.as_str() {
            ITI41 => self.provide_and_register(&env, &attachments, req).map(|r| {
                let failed = r.attribute("status") == Some(FAILURE);
                let mut resp = ok(
                    envelope_with_action(&format!("{ITI41}Response"), &relates_to, r),
                    soap_type.clone(),
                );
                if failed {
                    resp.outcome = "duplicate".into();
                }
                resp
            }),
            ITI18 => self.stored_query(&env).map(|r| {
                ok(
                    envelope_with_action(&format!("{ITI18}Response"), &relates_to, r),
                    soap_type.clone(),
                )
            }),
            ITI57 => Ok(ok(
                envelope_with_action(
                    &format!("{ITI57}-Response"),
                    &relates_to,
                    registry_response(SUCCESS, None),
                ),
                soap_type.clone(),
            )),
            ITI43 => self.retrieve(&env).map(|(r, attachments)| {
                let root = envelope_with_action(&format!("{ITI43}Response"), &relates_to, r);
                let (content_type, body) = mtom::build(&root, &attachments);
                MockResponse {
                    status: StatusCode::OK,
                    content_type,
                    body,
                    operation: operation.clone(),
                    outcome: "ok".into(),
                }
            }),
            other => Ok(ok(
                envelope_with_action(
                    &format!("{other}Response"),
                    &relates_to,
                    hl7_acknowledgement(other),
                ),
                soap_type.clone(),
            )),
        };
        result.unwrap_or_else(|r| self.fault(&operation, r))
    }

    fn unavailable(&self, operation: &str) -> MockResponse {
        self.fault(
            operation,
            Refusal {
                outcome: "injected_fault",
                reason: "Service temporairement indisponible (fault injection)".into(),
            },
        )
    }
}
