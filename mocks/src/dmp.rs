//! Mock DMP (`/si-dmp-server/v2/services/<service>`, domain.md §4–§6), a strict oracle
//! that shares none of Passerelle's conventions: what it accepts comes from the official
//! WSDL annex ([`crate::wsdl`]) and XSDs, signatures are checked by libxmlsec1 as a
//! standard XML-DSig processor does, and the VIHF's values are read by libxml2's XPath.
//!
//! On every request, in order, it refuses with a SOAP 1.2 fault naming the check:
//! the service path, the envelope, WS-Addressing (exactly one `MessageID`, `To`,
//! `ReplyTo` and `Action`, none empty; `To` = this service's URL; `ReplyTo` anonymous),
//! the SOAP/HTTP binding ([`binding`]: Content-Type media type of the envelope's SOAP
//! version, `charset` utf-8, `action` parameters = the Action, MTOM `type`/`start-info`
//! and root part labels, SOAP 1.1 `SOAPAction` = the Action; `mustUnderstand` on Action
//! and ReplyTo when switched on), the Action as an operation of this service in its
//! WSDL, the SOAP Body against the XSD of that operation's element, the VIHF alone in
//! `wsse:Security`, its signature (libxmlsec1, up to the test root), Issuer = TLS client
//! subject, then its values as libxml2's XPath reads them ([`vihf`]): one
//! `Subject/NameID`, identity attributes once in the whole assertion with one value, no
//! mixed content, one authentication mode spelling, the required attributes, `INDIRECTE`,
//! `Identifiant_Structure` = client OU or one of its geographic entities, IssueInstant
//! within ±5 minutes.
//!
//! Then: ITI-41 (MTOM, lot signature verified with the Manifest processed against the
//! document parts, `signs` association, duplicate submission set refused as a real
//! registry does), ITI-18 (documents recorded for the patient), ITI-43 (their bytes over
//! MTOM), and for every other operation the schema-valid answer of its WSDL. Every
//! accepted request is recorded ([`MockDmp::exchanges`]).

mod binding;
pub mod vihf;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use passerelle_signing::xml::{self, Element};
use passerelle_signing::{SuppliedDocument, TrustAnchors, verify_lot, verify_vihf};

use crate::server::{MockRequest, MockResponse, Service};
use crate::soap::{self, Envelope, Fault, FaultCode, WSA};
use crate::wsdl::{Catalog, Operation};
use crate::{MockError, mtom, xsd};

pub const BASE_PATH: &str = "/si-dmp-server/v2/services/";
pub use passerelle_soap::xds::{
    ITI18, ITI41, ITI43, ITI57, QUERY, RIM, RS, SAML, SIGNS, WSSE, XDSB, XOP,
};
use passerelle_soap::xds::{PATIENT_ID_SCHEME, Submission, UNIQUE_ID_SCHEME, descendants as all};

const SUCCESS: &str = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success";
const FAILURE: &str = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure";
const PARTIAL_SUCCESS: &str = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess";
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
    /// Submission set uniqueIds already accepted, oldest first (the last
    /// [`DmpConfig::retain`]).
    submissions: VecDeque<String>,
    /// The same, for the duplicate check.
    known: HashSet<String>,
    /// In submission order: a set's documents follow each other.
    documents: VecDeque<StoredDocument>,
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
    /// The DMP WSDL/XSD annex (`../shared/spec/dmp`).
    pub spec_dir: std::path::PathBuf,
    /// How many submission sets (with their documents) and recorded exchanges are kept,
    /// the oldest dropped first: a long run (the soak) must not grow the mock's memory
    /// and its queries' answers without end. A submission set dropped can be submitted
    /// again (the duplicate check sees the ones kept).
    pub retain: usize,
}

/// [`DmpConfig::retain`] by default: far more than any test sends.
pub const DEFAULT_RETAIN: usize = 10_000;

/// An accepted request, as recorded.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub service: String,
    /// WSDL operation name.
    pub operation: String,
    pub action: String,
    pub message_id: String,
    /// Subject DN of the TLS client.
    pub client_subject: String,
    /// The VIHF's identity as the mock read it (libxml2 XPath).
    pub identity: vihf::Identity,
}

/// The mock DMP service.
#[derive(Debug)]
pub struct MockDmp {
    config: DmpConfig,
    catalog: Catalog,
    /// Input element local name -> the answer's body.
    answers: HashMap<String, Element>,
    registry: Mutex<Registry>,
    exchanges: Mutex<VecDeque<Exchange>>,
    /// Whether `wsa:Action` and `wsa:ReplyTo` must carry `mustUnderstand` true.
    require_must_understand: AtomicBool,
    /// Where the schemas embedded in the WSDLs were written; removed on drop.
    _scratch: tempfile::TempDir,
}

/// The answers of the operations the mock has no state for, schema-valid (checked by
/// `fixtures/dmp/check.sh` and the mock's tests), by the local name of the request.
const ANSWERS: [(&str, &str); 11] = [
    (
        "PRPA_IN201307UV02",
        include_str!("../fixtures/dmp/responses/prpa_in201307.xml"),
    ),
    (
        "PRPA_IN201311UV02",
        include_str!("../fixtures/dmp/responses/prpa_in201311.xml"),
    ),
    (
        "PRPA_IN201314UV02",
        include_str!("../fixtures/dmp/responses/prpa_in201314.xml"),
    ),
    (
        "PRPA_IN201305UV02",
        include_str!("../fixtures/dmp/responses/prpa_in201305.xml"),
    ),
    (
        "setAuthorization",
        include_str!("../fixtures/dmp/responses/setAuthorization.xml"),
    ),
    (
        "listAuthorizationByPatient",
        include_str!("../fixtures/dmp/responses/listAuthorizationByPatient.xml"),
    ),
    (
        "patientList",
        include_str!("../fixtures/dmp/responses/patientList.xml"),
    ),
    (
        "createPatientAccess",
        include_str!("../fixtures/dmp/responses/createPatientAccess.xml"),
    ),
    (
        "patientOTPUpdate",
        include_str!("../fixtures/dmp/responses/patientOTPUpdate.xml"),
    ),
    (
        "updatePatientAccess",
        include_str!("../fixtures/dmp/responses/updatePatientAccess.xml"),
    ),
    (
        "identityCertification",
        include_str!("../fixtures/dmp/responses/identityCertification.xml"),
    ),
];

/// The supplement schema for the PatientSpecific operations the annex lacks.
const SUPPLEMENT_XSD: &str =
    include_str!("../fixtures/dmp/schemas/PatientsSpecific-access-supplement.xsd");

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
    /// Reads the WSDL annex of `config.spec_dir` and compiles every operation's schema.
    pub fn new(config: DmpConfig) -> Result<Self, MockError> {
        let scratch = tempfile::Builder::new()
            .prefix("mock-dmp-schemas")
            .tempdir()
            .map_err(|e| MockError::File {
                path: std::env::temp_dir(),
                message: e.to_string(),
            })?;
        let supplement = scratch
            .path()
            .join("PatientsSpecific-access-supplement.xsd");
        std::fs::write(&supplement, SUPPLEMENT_XSD).map_err(|e| MockError::File {
            path: supplement.clone(),
            message: e.to_string(),
        })?;
        let catalog = Catalog::load(&config.spec_dir.join("wsdl"), &supplement, scratch.path())?;
        for op in &catalog.operations {
            xsd::load(&op.input_schema)?;
        }
        let mut answers = HashMap::new();
        for (request, text) in ANSWERS {
            let body =
                xml::parse(text.trim_start_matches('\u{feff}')).map_err(|e| MockError::Schema {
                    path: format!("fixtures/dmp/responses (answer to {request})").into(),
                    message: e.to_string(),
                })?;
            answers.insert(request.to_string(), body);
        }
        Ok(Self {
            config,
            catalog,
            answers,
            registry: Mutex::new(Registry::default()),
            exchanges: Mutex::new(VecDeque::new()),
            // domain.md §4: Action and ReplyTo are mustUnderstand.
            require_must_understand: AtomicBool::new(true),
            _scratch: scratch,
        })
    }

    /// Switches the `mustUnderstand` check of `wsa:Action` and `wsa:ReplyTo` on or off
    /// (on by default: domain.md §4).
    pub fn require_must_understand(&self, on: bool) {
        self.require_must_understand.store(on, Ordering::Relaxed);
    }

    /// The operations read from the WSDLs.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Every request accepted so far, in order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges
            .lock()
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Documents recorded so far (for tests and `/stats`-like checks).
    pub fn documents(&self) -> Vec<StoredDocument> {
        self.registry
            .lock()
            .map(|r| r.documents.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Submission set uniqueIds accepted so far.
    pub fn submissions(&self) -> Vec<String> {
        self.registry
            .lock()
            .map(|r| r.submissions.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The VIHF: alone in `wsse:Security`, its signature and Issuer verified by
    /// libxmlsec1 and OpenSSL ([`verify_vihf`]), then its identity read by libxml2's XPath
    /// from the very text verified ([`vihf::read`]).
    fn check_vihf(&self, env: &Envelope, req: &MockRequest) -> Result<vihf::Identity, Refusal> {
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
        // The cryptographic check, the chain and Issuer = signer (libxmlsec1, OpenSSL);
        // its reading of the values is not used.
        let verified = verify_vihf(&text, &self.config.trust).map_err(|e| Refusal {
            outcome: "vihf_signature",
            reason: format!("VIHF signature: {e}"),
        })?;
        if verified.issuer != req.client.subject {
            return refuse(
                "vihf_issuer",
                format!(
                    "VIHF Issuer {:?} is not the TLS client certificate's subject {:?}",
                    verified.issuer, req.client.subject
                ),
            );
        }
        let identity = vihf::read(&text)?;
        if identity.mode != "INDIRECTE" {
            return refuse(
                "vihf_mode",
                format!(
                    "VIHF authentication mode is {:?}, expected INDIRECTE",
                    identity.mode
                ),
            );
        }
        let structure = identity.structure.as_str();
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
        // Since 2024 the DMP wants the geographic entity that acts: a legal entity that
        // has geographic entities may not be named itself.
        if structure == ou && geographic.is_some_and(|g| !g.is_empty()) {
            return refuse(
                "vihf_structure",
                format!(
                    "VIHF Identifiant_Structure {structure} is the legal entity, which has geographic entities: name the geographic entity that acts"
                ),
            );
        }
        let instant = time::OffsetDateTime::parse(
            &identity.issue_instant,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| Refusal {
            outcome: "vihf_instant",
            reason: format!(
                "VIHF IssueInstant {:?} is not a date",
                identity.issue_instant
            ),
        })?;
        let skew = (time::OffsetDateTime::now_utc() - instant).abs();
        if skew > self.config.max_clock_skew {
            return refuse(
                "vihf_instant",
                format!(
                    "VIHF IssueInstant {} is {} s from now (allowed: ±{} s)",
                    identity.issue_instant,
                    skew.whole_seconds(),
                    self.config.max_clock_skew.as_secs()
                ),
            );
        }
        Ok(identity)
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
        if registry.known.contains(&set_uid) {
            return Ok(registry_response(
                FAILURE,
                Some((
                    "XDSDuplicateUniqueIdInRegistry",
                    format!("SubmissionSet uniqueId {set_uid} already registered"),
                )),
            ));
        }
        let retain = self.config.retain.max(1);
        while registry.submissions.len() >= retain {
            let Some(oldest) = registry.submissions.pop_front() else {
                break;
            };
            registry.known.remove(&oldest);
            while registry
                .documents
                .front()
                .is_some_and(|d| d.submission_set == oldest)
            {
                registry.documents.pop_front();
            }
        }
        registry.submissions.push_back(set_uid.clone());
        registry.known.insert(set_uid.clone());
        for d in entries.into_iter().chain(std::iter::once(signature)) {
            registry.documents.push_back(StoredDocument {
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

    /// ITI-43: the documents found, over MTOM; an unknown uniqueId gets an
    /// `XDSDocumentUniqueIdError` (status PartialSuccess, or Failure when none is found),
    /// as an XDS.b repository answers.
    fn retrieve(&self, env: &Envelope) -> Result<(Element, Vec<mtom::Attachment>), Refusal> {
        let Some((body, _)) = env.body_element() else {
            return refuse("iti43_body", "empty SOAP Body");
        };
        let docs = self.documents();
        let mut responses = Vec::new();
        let mut unknown = Vec::new();
        let mut attachments = Vec::new();
        for request in all(body, "DocumentRequest") {
            let uid = request
                .elements()
                .find(|e| e.local == "DocumentUniqueId")
                .map(|e| e.text_content().trim().to_string())
                .unwrap_or_default();
            let Some(doc) = docs.iter().find(|d| d.unique_id == uid) else {
                unknown.push(uid);
                continue;
            };
            let cid = format!("doc{}@mock-dmp", attachments.len() + 1);
            responses.push(
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
        let status = match (responses.is_empty(), unknown.is_empty()) {
            (_, true) => SUCCESS,
            (true, false) => FAILURE,
            (false, false) => PARTIAL_SUCCESS,
        };
        let mut registry = Element::new(Some("rs"), "RegistryResponse")
            .ns(Some("rs"), RS)
            .attr("status", status);
        if !unknown.is_empty() {
            let mut list = Element::new(Some("rs"), "RegistryErrorList");
            for uid in unknown {
                list = list.child(
                    Element::new(Some("rs"), "RegistryError")
                        .attr("codeContext", format!("no document has uniqueId {uid}"))
                        .attr("errorCode", "XDSDocumentUniqueIdError")
                        .attr(
                            "severity",
                            "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error",
                        ),
                );
            }
            registry = registry.child(list);
        }
        let mut response = Element::new(Some("xdsb"), "RetrieveDocumentSetResponse")
            .ns(Some("xdsb"), XDSB)
            .child(registry);
        for r in responses {
            response = response.child(r);
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

/// The single WS-Addressing header `local`, or why not.
fn one_wsa<'e>(env: &'e Envelope, local: &str) -> Result<&'e Element, Refusal> {
    match env.header_count(WSA, local) {
        1 => env.header(WSA, local).map(|(e, _)| e).ok_or(Refusal {
            outcome: "addressing",
            reason: format!("wsa:{local} unreadable"),
        }),
        0 => refuse("addressing", format!("wsa:{local} is missing")),
        n => refuse(
            "addressing",
            format!("wsa:{local} appears {n} times: exactly one is required"),
        ),
    }
}

/// WS-Addressing as the DMP requires it (domain.md §4): one of each, none empty, `To`
/// naming this service, replies to the anonymous endpoint.
fn check_addressing(env: &Envelope, expected_to: &str) -> Result<(String, String), Refusal> {
    let mut texts = Vec::new();
    for local in ["MessageID", "To", "Action"] {
        let text = one_wsa(env, local)?.text_content().trim().to_string();
        if text.is_empty() {
            return refuse("addressing", format!("wsa:{local} is empty"));
        }
        texts.push(text);
    }
    let reply_to = one_wsa(env, "ReplyTo")?;
    let address = reply_to
        .elements()
        .find(|e| e.local == "Address")
        .map(|e| e.text_content().trim().to_string())
        .unwrap_or_default();
    if address != "http://www.w3.org/2005/08/addressing/anonymous" {
        return refuse(
            "addressing",
            format!("wsa:ReplyTo/Address {address:?} is not the anonymous endpoint"),
        );
    }
    if texts[1] != expected_to {
        return refuse(
            "addressing",
            format!(
                "wsa:To {:?} is not this service's URL {expected_to:?}",
                texts[1]
            ),
        );
    }
    let action = texts.pop().unwrap_or_default();
    let message_id = texts.swap_remove(0);
    Ok((message_id, action))
}

/// The Body's single element against the operation's schema. ITI-41 documents travel as
/// `xop:Include` (MTOM); their content is left out of the validation, as an XOP-aware
/// validator reads the part in its place.
fn check_body(env: &Envelope, op: &Operation) -> Result<(), Refusal> {
    let Some((body, scope)) = env.body_element() else {
        return refuse("body", "the SOAP Body is empty");
    };
    let ns = xml::namespace_of(body, &scope).unwrap_or_default();
    if ns != op.input.ns || body.local != op.input.local.as_str() {
        return refuse(
            "body",
            format!(
                "the SOAP Body holds {{{ns}}}{}, operation {} takes {}",
                body.local, op.name, op.input
            ),
        );
    }
    let mut copy = body.clone();
    blank_xop(&mut copy);
    let text = soap::standalone(&copy, &scope);
    xsd::validate(&op.input_schema, &text).map_err(|why| Refusal {
        outcome: "schema",
        reason: format!(
            "the SOAP Body is not valid against {}: {why}",
            op.input_schema
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
    })
}

/// Empties every `xop:Include` parent (an `xdsb:Document`): base64 of no bytes.
fn blank_xop(e: &mut Element) {
    let has_include = e.elements().any(|c| c.local == "Include");
    if has_include && e.local == "Document" {
        e.children.clear();
        return;
    }
    for c in &mut e.children {
        if let xml::Node::Element(c) = c {
            blank_xop(c);
        }
    }
}

impl MockDmp {
    fn record(
        &self,
        service: &str,
        op: &Operation,
        action: &str,
        message_id: &str,
        req: &MockRequest,
        identity: vihf::Identity,
    ) {
        if let Ok(mut e) = self.exchanges.lock() {
            if e.len() >= self.config.retain.max(1) {
                e.pop_front();
            }
            e.push_back(Exchange {
                service: service.to_string(),
                operation: op.name.clone(),
                action: action.to_string(),
                message_id: message_id.to_string(),
                client_subject: req.client.subject.clone(),
                identity,
            });
        }
    }

    fn answer(
        &self,
        op: &Operation,
        env: &Envelope,
        attachments: Option<&mtom::Mtom>,
        req: &MockRequest,
        relates_to: &str,
        label: &str,
    ) -> Result<MockResponse, Refusal> {
        let soap_type = "application/soap+xml; charset=utf-8".to_string();
        let ok = |body: Element, outcome: &str| MockResponse {
            status: StatusCode::OK,
            content_type: soap_type.clone(),
            body: Bytes::from(envelope_with_action(&op.output_action, relates_to, body)),
            operation: label.to_string(),
            outcome: outcome.into(),
        };
        match op.input.local.as_str() {
            "ProvideAndRegisterDocumentSetRequest" => {
                let r = self.provide_and_register(env, attachments, req)?;
                let outcome = if r.attribute("status") == Some(FAILURE) {
                    "duplicate"
                } else {
                    "ok"
                };
                Ok(ok(r, outcome))
            }
            "AdhocQueryRequest" => Ok(ok(self.stored_query(env)?, "ok")),
            "RetrieveDocumentSetRequest" => {
                let (r, attachments) = self.retrieve(env)?;
                let root = envelope_with_action(&op.output_action, relates_to, r);
                let (content_type, body) = mtom::build(&root, &attachments);
                Ok(MockResponse {
                    status: StatusCode::OK,
                    content_type,
                    body,
                    operation: label.to_string(),
                    outcome: "ok".into(),
                })
            }
            "SubmitObjectsRequest" => Ok(ok(registry_response(SUCCESS, None), "ok")),
            other => match self.answers.get(other) {
                Some(body) => Ok(ok(body.clone(), "ok")),
                None => refuse(
                    "not_implemented",
                    format!("the mock has no answer for {}", op.name),
                ),
            },
        }
    }
}

impl Service for MockDmp {
    fn handle(&self, req: &MockRequest) -> MockResponse {
        let services = self.catalog.services();
        let Some(service) = req
            .path
            .strip_prefix(BASE_PATH)
            .filter(|s| services.contains(s))
        else {
            return MockResponse {
                status: StatusCode::NOT_FOUND,
                content_type: "text/plain".into(),
                body: Bytes::from(format!(
                    "no DMP service at {}: use {BASE_PATH}{{{}}}\n",
                    req.path,
                    services.join(",")
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
        // Statistics and fault injection name an operation by its Action's last segment.
        let label = env
            .header_text(WSA, "Action")
            .and_then(|a| a.rsplit([':', '/']).next().map(str::to_string))
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "unknown".into());
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let expected_to = format!("https://{host}{}", req.path);
        let (message_id, action) = match check_addressing(&env, &expected_to) {
            Ok(v) => v,
            Err(r) => return self.fault(&label, r),
        };
        let binding =
            binding::check_http(&req.headers, &req.body, env.soap_ns, &action).and_then(|()| {
                if self.require_must_understand.load(Ordering::Relaxed) {
                    binding::check_must_understand(&root, env.soap_ns)
                } else {
                    Ok(())
                }
            });
        if let Err(r) = binding {
            return self.fault(&label, r);
        }
        let Some(op) = self.catalog.find(service, &action) else {
            return self.fault(
                &label,
                Refusal {
                    outcome: "action",
                    reason: format!(
                        "wsa:Action {action:?} is not an operation of the {service} service's WSDL"
                    ),
                },
            );
        };
        let result = check_body(&env, op)
            .and_then(|()| self.check_vihf(&env, req))
            .and_then(|identity| {
                self.answer(op, &env, attachments.as_ref(), req, &message_id, &label)
                    .map(|r| (r, identity))
            });
        match result {
            Ok((response, identity)) => {
                self.record(service, op, &action, &message_id, req, identity);
                response
            }
            Err(r) => self.fault(&label, r),
        }
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
