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
pub use passerelle_soap::xds::{
    ITI18, ITI41, ITI43, ITI57, QUERY, RIM, RS, SAML, SIGNS, WSSE, XDSB, XOP, actions,
};
use passerelle_soap::xds::{PATIENT_ID_SCHEME, Submission, UNIQUE_ID_SCHEME, descendants as all};

const SUCCESS: &str = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success";
const FAILURE: &str = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure";
/// The mock repository's uniqueId.
pub const REPOSITORY_UNIQUE_ID: &str = "1.2.250.1.213.1.1.1.1";

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
        parts: Option<&mtom::Mtom>,
        req: &MockRequest,
    ) -> Result<Element, Refusal> {
        let Some((body, _)) = env.body_element() else {
            return refuse("iti41_body", "empty SOAP Body");
        };
        let submission = Submission::read(body, parts).map_err(|e| Refusal {
            outcome: "iti41_metadata",
            reason: e.to_string(),
        })?;
        let (signatures, entries): (Vec<_>, Vec<_>) = submission
            .documents
            .into_iter()
            .partition(|d| d.is_signature);
        let signature = match <[_; 1]>::try_from(signatures) {
            Ok([signature]) => signature,
            Err(v) if v.is_empty() => {
                return refuse(
                    "lot_signature_missing",
                    "lot signature missing: no document with classCode 1.3.6.1.4.1.19376.1.2.1.1.1",
                );
            }
            Err(_) => {
                return refuse(
                    "lot_signature",
                    "more than one signature document in the submission",
                );
            }
        };
        let set_uid = submission.set_unique_id;
        let signs = all(body, "Association").into_iter().any(|a| {
            a.attribute("associationType") == Some(SIGNS)
                && a.attribute("sourceObject") == Some(signature.entry_id.as_str())
                && a.attribute("targetObject") == Some(submission.set_entry_id.as_str())
        });
        if !signs {
            return refuse(
                "lot_signs_association",
                "the signs association (signature -> submission set) is missing",
            );
        }
        let sig_text = std::str::from_utf8(&signature.content).map_err(|_| Refusal {
            outcome: "lot_signature",
            reason: "the signature document is not UTF-8".into(),
        })?;
        let supplied: Vec<SuppliedDocument<'_>> = entries
            .iter()
            .map(|d| SuppliedDocument {
                unique_id: &d.unique_id,
                mime_type: &d.mime_type,
                content: &d.content,
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
        for d in entries.into_iter().chain(std::iter::once(signature)) {
            registry.documents.push(StoredDocument {
                unique_id: d.unique_id,
                patient_id: d.patient_id,
                mime_type: d.mime_type,
                content: d.content,
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
                Ok(m) => (m.root.clone(), Some(m)),
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
            (req.body.clone(), None)
        };
        let env = match std::str::from_utf8(&root)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(|t| Envelope::parse(t).map_err(|e| e.to_string()))
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
            ITI41 => self
                .provide_and_register(&env, attachments.as_ref(), req)
                .map(|r| {
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
