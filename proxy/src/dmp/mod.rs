//! The DMP path: identity (the internal system's unsigned VIHF, validated and re-signed,
//! or one built from the `X-Vihf-*` headers), the structure check against the tenant,
//! WS-Addressing completed where missing, the lot signature of ITI-41 submissions, and
//! the request sent with the tenant's ORG AUTH_CLI. All signing happens on the blocking
//! pool, bounded by the signing slots, before any byte goes upstream.

pub mod identity;
mod submission;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Response};
use passerelle_config::{CertRole, DmpSigning, SignatureDigest, Software, StructureId};
use passerelle_signing::xml::{self, Element, Node, Scope};
use passerelle_signing::{
    DigestAlgorithm, SignedVihf, Signer, SigningError, SoftwareIdentity, VihfContext, VihfError,
    VihfOptions, resign_vihf, sign_vihf,
};
use passerelle_soap::WSA;
use passerelle_soap::dmp::{DmpOperation, DmpService};
use passerelle_soap::xds::{self, ITI41, SAML, WSSE};
use time::OffsetDateTime;

use crate::body::ProxyBody;
use crate::fault::ProxyError;
use crate::message::{SoapMessage, wsa_block};
use crate::state::{ProxyState, TenantRuntime};
use crate::upstream::Retry;
use submission::{LotPlan, SignedSubmission};

/// The marker replaced by the signed VIHF once the envelope is written: the token goes
/// out exactly as it was signed.
const VIHF_MARKER: &str = "passerelle-signed-vihf";

/// What one DMP exchange was, for the log (no patient data) and the audit trail.
#[derive(Debug, Clone, Default)]
pub struct DmpSummary {
    pub action: String,
    /// The operation the Action names (`None` on a service path Passerelle does not know).
    pub operation: Option<DmpOperation>,
    pub message_id: String,
    pub structure: String,
    pub documents: usize,
    /// Audit only: the acting person's national id.
    pub actor_id: String,
    /// Audit only: the patient's INS (HL7 CX).
    pub patient_ins: String,
    pub signing: std::time::Duration,
    pub upstream: std::time::Duration,
    /// Whether the request went to the upstream pool.
    pub exchanged: bool,
}

fn digest(d: SignatureDigest) -> DigestAlgorithm {
    match d {
        SignatureDigest::Sha256 => DigestAlgorithm::Sha256,
        SignatureDigest::Sha1 => DigestAlgorithm::Sha1,
    }
}

pub fn vihf_options(s: &DmpSigning) -> VihfOptions {
    VihfOptions {
        vihf_version: s.vihf_version.clone(),
        auth_mode_attribute: s.auth_mode_attribute.clone(),
        digest: digest(s.vihf_digest),
        inclusive_prefixes: s.inclusive_prefixes.clone(),
        max_authn_age_secs: s.max_authn_age.as_secs(),
    }
}

pub fn software_identity(s: &Software) -> SoftwareIdentity {
    SoftwareIdentity {
        name: s.lps_name.clone(),
        version: s.lps_version.clone(),
        homologation_id: s.dmp_homologation_id.clone(),
        lps_id: s.lps_id.clone(),
    }
}

/// Where the identity comes from.
enum Identity {
    /// An unsigned VIHF from `wsse:Security`.
    Supplied(String),
    /// Built from headers; the structure was already checked.
    Built(Box<VihfContext>),
}

fn signing_error(e: SigningError, tenant: &TenantRuntime) -> ProxyError {
    match e {
        SigningError::Vihf(VihfError::ForeignStructure(structure)) => {
            ProxyError::ForeignStructure {
                structure,
                tenant: tenant.id.to_string(),
            }
        }
        SigningError::Vihf(VihfError::Xml(xml::XmlError::Dtd)) => {
            ProxyError::DtdForbidden(VihfError::Xml(xml::XmlError::Dtd).to_string())
        }
        SigningError::Vihf(v) => ProxyError::BadIdentity(v.to_string()),
        SigningError::Document(d) => ProxyError::BadSubmission(d),
        SigningError::Key(_) | SigningError::Sign => ProxyError::SigningFailed(e.to_string()),
    }
}

/// The unsigned assertion in `wsse:Security`, serialized on its own, with the acting
/// person's id and the patient's INS as it says them (for the audit trail).
fn supplied_vihf(message: &SoapMessage) -> Option<(String, String, String)> {
    let (security, scope) = message.envelope.header(WSSE, "Security")?;
    let inner = xml::scope_of(security, &scope);
    let assertion = security.elements().find(|e| {
        e.local == "Assertion" && xml::namespace_of(e, &inner).as_deref() == Some(SAML)
    })?;
    let actor = xds::descendants(assertion, "NameID")
        .first()
        .map(|n| n.text_content().trim().to_string())
        .unwrap_or_default();
    let patient = xds::descendants(assertion, "Attribute")
        .into_iter()
        .find(|a| a.attribute("Name") == Some("urn:oasis:names:tc:xacml:2.0:resource:resource-id"))
        .and_then(|a| {
            xds::descendants(a, "AttributeValue")
                .first()
                .map(|v| v.text_content().trim().to_string())
        })
        .unwrap_or_default();
    Some((
        passerelle_soap::envelope::standalone(assertion, &inner),
        actor,
        patient,
    ))
}

/// Replaces `wsse:Security` by one holding only the marker, and completes WS-Addressing
/// so that exactly one `MessageID`, `To` and `ReplyTo` go upstream: an empty one (the
/// official examples carry `<To xmlns="http://www.w3.org/2005/08/addressing"/>`) is filled
/// in place, a missing one added, a present one kept. Duplicates were refused before.
fn rewrite_headers(message: &mut SoapMessage, to: &str) -> Result<String, ProxyError> {
    let soap_ns = message.envelope.soap_ns;
    let root_scope = xml::scope_of(&message.envelope.root, &Scope::new());
    let header = message.header_mut()?;
    let header_scope = xml::scope_of(header, &root_scope);
    let is = |n: &Node, ns: &str, local: &str| matches!(n, Node::Element(e) if e.local == local && xml::namespace_of(e, &header_scope).as_deref() == Some(ns));
    header.children.retain(|n| !is(n, WSSE, "Security"));
    let position =
        |header: &Element, local: &str| header.children.iter().position(|n| is(n, WSA, local));
    let message_id_at = position(header, "MessageID");
    let to_at = position(header, "To");
    let reply_to_at = position(header, "ReplyTo");

    let mut security = Element::new(Some("wsse"), "Security").ns(Some("wsse"), WSSE);
    security.children.push(Node::Comment(VIHF_MARKER.into()));
    header.children.push(Node::Element(security));

    let message_id = fill_or_add(header, message_id_at, "MessageID", || {
        format!("urn:uuid:{}", uuid::Uuid::new_v4())
    });
    fill_or_add(header, to_at, "To", || to.to_string());
    let anonymous = || {
        Element::new(Some("wsa"), "Address")
            .ns(Some("wsa"), WSA)
            .text("http://www.w3.org/2005/08/addressing/anonymous")
    };
    match reply_to_at.and_then(|i| header.children.get_mut(i)) {
        Some(Node::Element(reply_to)) => {
            let has_address = reply_to
                .elements()
                .any(|e| e.local == "Address" && !e.text_content().trim().is_empty());
            if !has_address {
                reply_to.children = vec![Node::Element(anonymous())];
            }
        }
        _ => header.children.push(Node::Element(
            Element::new(Some("wsa"), "ReplyTo")
                .ns(Some("wsa"), WSA)
                .ns(Some("soapenv"), soap_ns)
                .attr("soapenv:mustUnderstand", "true")
                .child(anonymous()),
        )),
    }
    Ok(message_id)
}

/// The text of the WS-Addressing header at `at`, filled with `value()` when empty; or a
/// new header block when there is none.
fn fill_or_add(
    header: &mut Element,
    at: Option<usize>,
    local: &'static str,
    value: impl FnOnce() -> String,
) -> String {
    if let Some(Node::Element(e)) = at.and_then(|i| header.children.get_mut(i)) {
        let text = e.text_content().trim().to_string();
        if !text.is_empty() {
            return text;
        }
        let v = value();
        e.children = vec![Node::Text(v.clone().into())];
        return v;
    }
    let v = value();
    header
        .children
        .push(Node::Element(wsa_block(local, v.clone())));
    v
}

/// Writes the envelope with the signed VIHF in place of the marker.
fn write_envelope(message: &SoapMessage, vihf: &SignedVihf) -> Result<Bytes, ProxyError> {
    let text = message.envelope.root.to_xml();
    let marker = format!("<!--{VIHF_MARKER}-->");
    let at = text.find(&marker).ok_or_else(|| {
        ProxyError::Internal("VIHF marker lost while writing the envelope".into())
    })?;
    let token = vihf.xml.trim_start();
    let token = match token.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or(token, |(_, t)| t.trim_start()),
        None => token,
    };
    let mut out = String::with_capacity(text.len() + token.len());
    out.push_str(&text[..at]);
    out.push_str(token);
    out.push_str(&text[at + marker.len()..]);
    Ok(Bytes::from(out))
}

/// Forwards one DMP request of `tenant` to `service`.
pub async fn forward(
    state: &ProxyState,
    tenant: &TenantRuntime,
    service: &str,
    headers: &HeaderMap,
    content_type: &str,
    body: Bytes,
    summary: &mut DmpSummary,
) -> Result<Response<ProxyBody>, ProxyError> {
    let settings = state
        .config
        .dmp
        .as_ref()
        .ok_or(ProxyError::ServiceNotConfigured("dmp"))?;
    let upstream = tenant
        .dmp
        .as_ref()
        .ok_or_else(|| ProxyError::CertificateMissing {
            tenant: tenant.id.to_string(),
            role: format!("{} + {}", CertRole::DmpAuth, CertRole::DmpSign),
        })?;
    let pool = upstream
        .pools
        .get(service)
        .ok_or_else(|| ProxyError::UnknownDmpService(service.to_string()))?;
    let now = OffsetDateTime::now_utc();
    upstream.auth.check(now)?;
    upstream.sign.check(now)?;

    let mut message = SoapMessage::read(content_type, body)?;
    message.check_single_addressing()?;
    let action = message.wsa("Action").ok_or(ProxyError::MissingAction)?;
    // A service path Passerelle knows only takes its own operations; a path configured
    // for a service it does not know is passed through, and never re-sent.
    let known_service = settings
        .services
        .get(service)
        .and_then(|path| DmpService::from_path(path.rsplit('/').next().unwrap_or(path)));
    let operation = match known_service {
        Some(s) => Some(DmpOperation::from_action(s, &action).ok_or_else(|| {
            ProxyError::ActionNotAllowed {
                action: action.clone(),
                service: service.to_string(),
            }
        })?),
        None => None,
    };
    summary.action = action.clone();
    summary.operation = operation;

    let identity = match supplied_vihf(&message) {
        Some((assertion, actor, patient)) => {
            summary.actor_id = actor;
            summary.patient_ins = patient;
            Identity::Supplied(assertion)
        }
        None if identity::present(headers) => {
            let ctx = identity::from_headers(
                headers,
                tenant.structure_id.as_str(),
                software_identity(&state.config.software),
                vihf_options(&settings.signing),
            )?;
            let structure = ctx
                .validate()
                .map_err(|e| ProxyError::BadIdentity(e.to_string()))?;
            check_structure(tenant, &structure)?;
            summary.structure = structure.to_string();
            summary.actor_id = ctx.actor.id.clone();
            summary.patient_ins = ctx.patient.to_cx();
            Identity::Built(Box::new(ctx))
        }
        None => return Err(ProxyError::MissingIdentity),
    };

    let lot = if action == ITI41 {
        let plan = LotPlan::read(&message, settings.signing.lot_signature_passthrough)?;
        summary.documents = plan.as_ref().map_or(0, |p| p.documents.len());
        plan
    } else {
        None
    };

    // Sign on the blocking pool, a bounded number at a time.
    let permit = Arc::clone(&state.signing_slots)
        .acquire_owned()
        .await
        .map_err(|_| ProxyError::Internal("signing slots closed".into()))?;
    let signer = Arc::clone(&upstream.signer);
    let owned: Vec<StructureId> = std::iter::once(tenant.structure_id.clone())
        .chain(tenant.geographic_structure_ids.iter().cloned())
        .collect();
    let options = vihf_options(&settings.signing);
    let lot_digest = digest(settings.signing.lot_digest);
    let software = software_identity(&state.config.software);
    let started = std::time::Instant::now();
    let signed = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        sign_all(
            identity,
            lot,
            signer.as_ref(),
            &owned,
            &options,
            &software,
            lot_digest,
            now,
        )
    })
    .await
    .map_err(|e| ProxyError::Internal(format!("signing task: {e}")))?
    .map_err(|e| signing_error(e, tenant))?;
    summary.signing = started.elapsed();
    if summary.structure.is_empty() {
        summary.structure = signed.structure.clone();
    }

    let message_id = rewrite_headers(&mut message, pool.url())?;
    summary.message_id = message_id;
    let attachments = match &signed.lot {
        Some(lot) => lot.apply(&mut message)?,
        None => message
            .mtom
            .as_ref()
            .map(|m| m.attachments.clone())
            .unwrap_or_default(),
    };
    let root = write_envelope(&message, &signed.vihf)?;
    let (content_type, chunks) = message.upstream_body(root, &attachments);
    // Only reads may be sent again (and only when provably unsent): every other DMP
    // operation changes state (domain.md §4).
    let retry = if operation.is_some_and(DmpOperation::reads_only) {
        Retry::IfNotSent
    } else {
        Retry::Never
    };
    let extra = soap_action_header(&message, &action);
    summary.exchanged = true;
    let sent_at = std::time::Instant::now();
    let answer = pool.send(&content_type, &extra, chunks, retry).await;
    summary.upstream = sent_at.elapsed();
    answer
}

/// SOAP 1.1's HTTP binding names the operation in a `SOAPAction` header; SOAP 1.2 has
/// it in the envelope only.
fn soap_action_header(
    message: &SoapMessage,
    action: &str,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    if message.is_soap12() {
        return Vec::new();
    }
    http::HeaderValue::from_str(&format!("\"{action}\""))
        .map(|v| vec![(http::HeaderName::from_static("soapaction"), v)])
        .unwrap_or_default()
}

fn check_structure(tenant: &TenantRuntime, structure: &StructureId) -> Result<(), ProxyError> {
    if tenant.owns_structure(structure) {
        Ok(())
    } else {
        Err(ProxyError::ForeignStructure {
            structure: structure.to_string(),
            tenant: tenant.id.to_string(),
        })
    }
}

/// The signatures of one request.
struct Signed {
    vihf: SignedVihf,
    /// `Identifiant_Structure` of the token, for the log.
    structure: String,
    lot: Option<SignedSubmission>,
}

#[allow(clippy::too_many_arguments)]
fn sign_all(
    identity: Identity,
    lot: Option<LotPlan>,
    signer: &dyn Signer,
    owned: &[StructureId],
    options: &VihfOptions,
    software: &SoftwareIdentity,
    lot_digest: DigestAlgorithm,
    now: OffsetDateTime,
) -> Result<Signed, SigningError> {
    let owns = |s: &StructureId| owned.contains(s);
    let (vihf, structure) = match identity {
        Identity::Supplied(text) => {
            let seen = std::cell::RefCell::new(String::new());
            let vihf = resign_vihf(
                &text,
                |s| {
                    *seen.borrow_mut() = s.to_string();
                    owns(s)
                },
                signer,
                options,
                now,
            )?;
            (vihf, seen.into_inner())
        }
        Identity::Built(ctx) => {
            let structure = ctx.structure_id.clone();
            (sign_vihf(&ctx, software, signer, now)?, structure)
        }
    };
    let lot = lot
        .map(|plan| plan.sign(signer, lot_digest, now))
        .transpose()?;
    Ok(Signed {
        vihf,
        structure,
        lot,
    })
}
