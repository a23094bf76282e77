//! The DMP path, phases 5 and 6 of [`crate::pipeline`]: [`identify`] (the envelope, one
//! WS-Addressing header of each, the Action an operation of the route's service and the
//! Body its element, answers to the anonymous endpoint only, the identity — the internal
//! system's unsigned VIHF or the `X-Vihf-*` headers — and its structure one of the
//! tenant's, the lot to sign) and [`sign`] (VIHF and lot with ORG SIGN, documents of the
//! VIHF's patient only, WS-Addressing completed, the envelope written), giving the
//! request for the tenant's ORG AUTH_CLI pool. Both run on the blocking pool, bounded by
//! the signing slots (`pipeline::cpu_work`), before any byte goes upstream.

pub mod identity;
pub mod structure;
mod submission;

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use passerelle_config::{CertRole, DmpSigning, SignatureDigest, Software, StructureId};
use passerelle_signing::xml::{self, Element, Node, Scope};
use passerelle_signing::{
    DigestAlgorithm, Signer, SigningError, SoftwareIdentity, VihfContext, VihfError, VihfOptions,
    resign_vihf_in, sign_vihf_in,
};
use passerelle_soap::WSA;
use passerelle_soap::dmp::{DmpOperation, DmpService};
use passerelle_soap::xds::{ITI41, SAML, WSSE};
use time::OffsetDateTime;

use crate::exchange::{Exchange, Operation};
use crate::fault::ProxyError;
use crate::message::{SoapMessage, wsa_block};
use crate::state::{ProxyState, TenantRuntime};
use crate::upstream::{Retry, UpstreamPool};
use submission::LotPlan;

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
                place: "VIHF Identifiant_Structure".into(),
                tenant: tenant.id.to_string(),
            }
        }
        SigningError::Vihf(VihfError::Xml(xml::XmlError::Dtd)) => {
            ProxyError::DtdForbidden(VihfError::Xml(xml::XmlError::Dtd).to_string())
        }
        SigningError::Vihf(v) => ProxyError::BadIdentity(v.to_string()),
        SigningError::Document(d) => ProxyError::BadSubmission(d),
        SigningError::KeyUnavailable(reason) => ProxyError::KeyUnavailable(reason),
        SigningError::KeyBusy(reason) => {
            tracing::warn!(%reason, "token key busy: request refused (Overloaded)");
            ProxyError::Overloaded
        }
        SigningError::Key(_) | SigningError::Sign => ProxyError::SigningFailed(e.to_string()),
    }
}

/// The internal system's unsigned assertion: the one `saml:Assertion` of the one
/// `wsse:Security` header, serialized on its own. Any other assertion anywhere in the
/// envelope (another header block, a Security element of another namespace, the Body)
/// is refused: it would go upstream unsigned next to the proxy's.
fn supplied_vihf(message: &SoapMessage) -> Result<Option<String>, ProxyError> {
    let securities = message.envelope.header_count(WSSE, "Security");
    if securities > 1 {
        return Err(ProxyError::DuplicateHeader {
            header: "wsse:Security",
            count: securities,
        });
    }
    let security = message.envelope.header(WSSE, "Security");
    let mut inside = Vec::new();
    if let Some((security, scope)) = &security {
        let inner = xml::scope_of(security, scope);
        inside.extend(
            security
                .elements()
                .filter(|e| is_assertion(e, &inner))
                .map(|e| (e, inner.clone())),
        );
    }
    if inside.len() > 1 {
        return Err(ProxyError::BadIdentity(format!(
            "wsse:Security holds {} SAML assertions: exactly one VIHF is allowed",
            inside.len()
        )));
    }
    let skip = security.as_ref().map(|(s, _)| *s);
    let outside = count_assertions_outside(&message.envelope.root, skip);
    if outside > 0 {
        return Err(ProxyError::BadIdentity(format!(
            "{outside} SAML assertion(s) outside wsse:Security (another header block or the Body): only the VIHF in wsse:Security is allowed"
        )));
    }
    Ok(inside
        .first()
        .map(|(assertion, scope)| passerelle_soap::envelope::standalone(assertion, scope)))
}

fn is_assertion(e: &Element, scope: &Scope) -> bool {
    e.local == "Assertion" && xml::namespace_of(e, scope).as_deref() == Some(SAML)
}

/// SAML assertions below `root`, the `skip` element's subtree left out. A namespace is
/// resolved only for elements named `Assertion`, from their ancestors: no scope is
/// copied per element, so the walk is linear in the envelope whatever its declarations.
fn count_assertions_outside(root: &Element, skip: Option<&Element>) -> usize {
    fn walk<'a>(e: &'a Element, ancestors: &mut Vec<&'a Element>, skip: Option<&Element>) -> usize {
        if skip.is_some_and(|s| std::ptr::eq(s, e)) {
            return 0;
        }
        let me =
            usize::from(e.local == "Assertion" && xml::namespace_in(e, ancestors) == Some(SAML));
        ancestors.push(e);
        let below = e
            .elements()
            .map(|c| walk(c, ancestors, skip))
            .sum::<usize>();
        ancestors.pop();
        me + below
    }
    walk(root, &mut Vec::new(), skip)
}

/// Replaces `wsse:Security` by one holding only the signed VIHF, and completes WS-Addressing
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
    let action_at = position(header, "Action");

    // The token's place: the one `wsse:Security`, which [`envelope_with_token`] fills
    // with the signed text when the envelope is written. Nothing is searched in text
    // the client wrote. Its signature uses exclusive c14n, so it verifies wherever it
    // sits.
    let security = Element::new(Some("wsse"), "Security").ns(Some("wsse"), WSSE);
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
    // Action and ReplyTo are mustUnderstand (domain.md §4): a receiver that does not
    // process WS-Addressing must fault rather than guess.
    for at in [action_at, reply_to_at].into_iter().flatten() {
        if let Some(Node::Element(block)) = header.children.get_mut(at) {
            must_understand(block, soap_ns, &header_scope);
        }
    }
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
                // SOAP 1.1's schema takes 0|1, SOAP 1.2's a boolean.
                .attr(
                    "soapenv:mustUnderstand",
                    if soap_ns == passerelle_soap::SOAP12 {
                        "true"
                    } else {
                        "1"
                    },
                )
                .child(anonymous()),
        )),
    }
    Ok(message_id)
}

/// The `wsse:Security` block [`rewrite_headers`] placed, and the namespaces in force
/// inside it.
fn security_block(message: &SoapMessage) -> Result<(&Element, Scope), ProxyError> {
    let (security, header_scope) = message
        .envelope
        .header(WSSE, "Security")
        .ok_or_else(|| ProxyError::Internal("the wsse:Security block is missing".into()))?;
    Ok((security, xml::scope_of(security, &header_scope)))
}

/// The envelope as it goes upstream: the signed token's text, as it was signed, inside
/// the `wsse:Security` block [`rewrite_headers`] placed.
fn envelope_with_token(message: &SoapMessage, token: &str) -> Result<String, ProxyError> {
    let (security, _) = security_block(message)?;
    Ok(message.envelope.root.to_xml_with(security, token))
}

/// Marks a header block `mustUnderstand` (SOAP 1.2: `true`, SOAP 1.1: `1`), replacing
/// whatever SOAP `mustUnderstand` the client wrote (`false`, `0`, or SOAP 1.1 `true`,
/// which its schema does not allow), with a namespace declaration of its own.
fn must_understand(block: &mut Element, soap_ns: &'static str, header_scope: &Scope) {
    let own: Vec<(Option<String>, String)> = block
        .namespaces
        .iter()
        .map(|(p, u)| (p.as_deref().map(str::to_string), u.to_string()))
        .collect();
    let is_soap = |prefix: Option<&str>| {
        let Some(prefix) = prefix else {
            return false;
        };
        own.iter()
            .find(|(p, _)| p.as_deref() == Some(prefix))
            .map(|(_, u)| u.as_str())
            .or_else(|| xml::resolve(header_scope, Some(prefix)))
            == Some(soap_ns)
    };
    block
        .attributes
        .retain(|a| !(a.local == "mustUnderstand" && is_soap(a.prefix.as_deref())));
    block
        .namespaces
        .push((Some("passerelle-soap".into()), soap_ns.into()));
    block.attributes.push(xml::Attribute {
        prefix: Some("passerelle-soap".into()),
        local: "mustUnderstand".into(),
        value: if soap_ns == passerelle_soap::SOAP12 {
            "true"
        } else {
            "1"
        }
        .into(),
    });
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

/// A DMP request read and checked, ready to sign (end of phase 5, identity).
pub struct DmpRequest {
    message: SoapMessage,
    operation: Option<DmpOperation>,
    action: String,
    identity: Identity,
    lot: Option<LotPlan>,
    pool: Arc<UpstreamPool>,
    signer: Arc<dyn Signer>,
    /// The tenant's legal entity and geographic entities: the only structures signed.
    owned: Vec<StructureId>,
    options: VihfOptions,
    software: SoftwareIdentity,
    lot_digest: DigestAlgorithm,
    now: OffsetDateTime,
}

impl std::fmt::Debug for DmpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmpRequest")
            .field("action", &self.action)
            .field("pool", &self.pool.name())
            .finish_non_exhaustive()
    }
}

/// A signed DMP request, ready to send (end of phase 6).
pub type SignedRequest = crate::upstream::Outgoing;

/// Phase 5, identity: the envelope parsed (DTDs refused), one WS-Addressing header of
/// each, the Action an operation of `route`'s service, the identity (the internal
/// system's VIHF or the `X-Vihf-*` headers) and its structure one of the tenant's, the
/// lot to sign for ITI-41. CPU work: runs on the blocking pool.
pub fn identify(
    state: &ProxyState,
    tenant: &TenantRuntime,
    route: &str,
    headers: &HeaderMap,
    content_type: &str,
    body: Bytes,
    exchange: &mut Exchange,
) -> Result<DmpRequest, ProxyError> {
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
        .get(route)
        .ok_or_else(|| ProxyError::UnknownDmpService(route.to_string()))?;
    let now = OffsetDateTime::now_utc();
    upstream.auth.check(now)?;
    upstream.sign.check(now)?;

    identity::check_single(headers)?;
    let message = SoapMessage::read(content_type, body)?;
    message.check_single_addressing()?;
    let action = message.wsa("Action").ok_or(ProxyError::MissingAction)?;
    exchange.action = Some(action.clone());
    // A service path Passerelle knows only takes its own operations; a path configured
    // for a service it does not know is passed through, and never re-sent.
    let known_service = service_of(settings, route);
    let operation = match known_service {
        Some(s) => Some(DmpOperation::from_action(s, &action).ok_or_else(|| {
            ProxyError::ActionNotAllowed {
                action: action.clone(),
                service: route.to_string(),
            }
        })?),
        None => None,
    };
    exchange.operation = operation.map_or(Operation::Other, Operation::Dmp);
    check_body(&message, operation, &action)?;
    check_reply_endpoints(&message)?;
    if let Some(id) = message.wsa("MessageID")
        && (id.chars().count() > MAX_MESSAGE_ID || id.chars().any(char::is_whitespace))
    {
        return Err(ProxyError::BadAddressing(format!(
            "wsa:MessageID must be a URI of at most {MAX_MESSAGE_ID} characters without spaces (e.g. urn:uuid:...)"
        )));
    }

    let lot = if action == ITI41 {
        let plan = LotPlan::read(&message, settings.signing.lot_signature_passthrough)?;
        exchange.documents = plan.as_ref().map_or(0, |p| p.documents.len());
        plan
    } else {
        None
    };
    let identity = match supplied_vihf(&message)? {
        Some(assertion) => Identity::Supplied(assertion),
        None if identity::present(headers) => {
            // Without X-Vihf-Structure, a submission acts for its submission set's
            // structure (an EG of the tenant), anything else for the legal entity.
            let default_structure = lot
                .as_ref()
                .and_then(|l| l.set_institutions().first().cloned())
                .unwrap_or_else(|| tenant.structure_id.to_string());
            let ctx = identity::from_headers(
                headers,
                &default_structure,
                software_identity(&state.config.software),
                vihf_options(&settings.signing),
            )?;
            let structure = ctx
                .validate()
                .map_err(|e| ProxyError::BadIdentity(e.to_string()))?;
            check_structure(tenant, &structure)?;
            Identity::Built(Box::new(ctx))
        }
        None => return Err(ProxyError::MissingIdentity),
    };
    Ok(DmpRequest {
        message,
        operation,
        action,
        identity,
        lot,
        pool: Arc::clone(pool),
        signer: Arc::clone(&upstream.signer),
        owned: std::iter::once(tenant.structure_id.clone())
            .chain(tenant.geographic_structure_ids.iter().cloned())
            .collect(),
        options: vihf_options(&settings.signing),
        software: software_identity(&state.config.software),
        lot_digest: digest(settings.signing.lot_digest),
        now,
    })
}

/// Longest `wsa:MessageID` kept (it goes into the audit trail and the log).
const MAX_MESSAGE_ID: usize = 256;

/// The Body holds exactly one element, the operation's: a receiver that routes by the
/// Body would otherwise run another operation than the one audited (and retried).
fn check_body(
    message: &SoapMessage,
    operation: Option<DmpOperation>,
    action: &str,
) -> Result<(), ProxyError> {
    let count = message.envelope.body_element_count();
    let found = message
        .envelope
        .body_name()
        .map(|(ns, local)| format!("{{{ns}}}{local}"))
        .unwrap_or_else(|| "no element".into());
    let expected = operation.map(DmpOperation::body_element);
    let matches = match (expected, message.envelope.body_name()) {
        (Some((ns, local)), Some((n, l))) => ns == n && local == l,
        (None, Some(_)) => true,
        (_, None) => false,
    };
    if count == 1 && matches {
        return Ok(());
    }
    Err(ProxyError::OperationMismatch {
        action: action.to_string(),
        expected: expected.map_or_else(
            || "one element".to_string(),
            |(ns, local)| format!("{{{ns}}}{local}"),
        ),
        found: if count > 1 {
            format!("{count} elements")
        } else {
            found
        },
    })
}

/// Answers go back on the connection, to Passerelle, and nowhere else: a `ReplyTo`,
/// `FaultTo` or `From` naming another endpoint could have a service that honours it
/// send patient data elsewhere; WS-Addressing headers of another version are refused as
/// a receiver may read either.
fn check_reply_endpoints(message: &SoapMessage) -> Result<(), ProxyError> {
    const ANONYMOUS: &str = "http://www.w3.org/2005/08/addressing/anonymous";
    const OTHER_VERSIONS: [&str; 3] = [
        "http://schemas.xmlsoap.org/ws/2004/08/addressing",
        "http://schemas.xmlsoap.org/ws/2004/03/addressing",
        "http://schemas.xmlsoap.org/ws/2003/03/addressing",
    ];
    let Some((header, scope)) = message.envelope.header_element() else {
        return Ok(());
    };
    let inner = xml::scope_of(header, &scope);
    for block in header.elements() {
        let ns = xml::namespace_of(block, &inner).unwrap_or_default();
        if OTHER_VERSIONS.contains(&ns.as_str()) {
            return Err(ProxyError::BadAddressing(format!(
                "header {:?} is in {ns}: only WS-Addressing 1.0 (http://www.w3.org/2005/08/addressing) is accepted",
                block.local.as_ref()
            )));
        }
        if ns == WSA && matches!(block.local.as_ref(), "ReplyTo" | "FaultTo" | "From") {
            let address: Vec<String> = block
                .elements()
                .filter(|e| e.local == "Address")
                .map(|e| e.text_content().trim().to_string())
                .collect();
            let anonymous = match address.as_slice() {
                [] => block.local == "ReplyTo",
                [a] => (a.is_empty() && block.local == "ReplyTo") || a == ANONYMOUS,
                _ => false,
            };
            if !anonymous {
                return Err(ProxyError::BadAddressing(format!(
                    "wsa:{} must be the anonymous endpoint ({ANONYMOUS}): answers come back through Passerelle",
                    block.local.as_ref()
                )));
            }
        }
    }
    Ok(())
}

/// The DMP service a `[dmp.services]` route's path names.
pub fn service_of(settings: &passerelle_config::DmpService, route: &str) -> Option<DmpService> {
    settings
        .services
        .get(route)
        .and_then(|path| DmpService::from_path(path.rsplit('/').next().unwrap_or(path)))
}

/// Phase 6, sign: the VIHF (re-signed or built) and the lot with the tenant's ORG SIGN
/// key, then the envelope written with WS-Addressing completed. Nothing is sent before
/// every signature is made. CPU work: runs on the blocking pool.
pub fn sign(
    request: DmpRequest,
    tenant: &TenantRuntime,
    exchange: &mut Exchange,
) -> Result<SignedRequest, ProxyError> {
    let DmpRequest {
        mut message,
        operation,
        action,
        identity,
        lot,
        pool,
        signer,
        owned,
        options,
        software,
        lot_digest,
        now,
    } = request;
    let owns = |s: &StructureId| owned.contains(s);
    // The headers first: the token is signed for the place it will sit in (with an
    // InclusiveNamespaces prefix list, the namespaces in force there are signed too).
    let message_id = rewrite_headers(&mut message, pool.url())?;
    let (_, inherited) = security_block(&message)?;
    let vihf = match identity {
        Identity::Supplied(text) => {
            resign_vihf_in(&text, owns, signer.as_ref(), &options, now, &inherited)
        }
        Identity::Built(ctx) => sign_vihf_in(&ctx, &software, signer.as_ref(), now, &inherited),
    }
    .map_err(|e| signing_error(e, tenant))?;
    // Log and audit record exactly what was signed.
    exchange.identity = Some(vihf.identity.clone());
    // One structure everywhere, and the documents the VIHF's patient's, before the lot
    // is signed.
    for warning in structure::check(tenant, &vihf.identity.structure, lot.as_ref())? {
        tracing::warn!(kind = warning.kind, "{}", warning.message);
        exchange.structure_warnings.push(warning.kind);
    }
    if let Some(plan) = &lot {
        plan.check_patient(&vihf.identity.patient)
            .map_err(ProxyError::BadSubmission)?;
    }
    let lot = lot
        .filter(|plan| !plan.already_signed)
        .map(|plan| plan.sign(signer.as_ref(), lot_digest, now))
        .transpose()
        .map_err(|e| signing_error(e, tenant))?;
    exchange.message_id = Some(message_id);
    let attachments = match &lot {
        Some(lot) => lot.apply(&mut message)?,
        None => message
            .mtom
            .as_ref()
            .map(|m| m.attachments.clone())
            .unwrap_or_default(),
    };
    let root = Bytes::from(envelope_with_token(&message, &vihf.text)?);
    let (content_type, chunks) = message.upstream_body(root, &attachments);
    // Only reads may be sent again (and only when provably unsent): every other DMP
    // operation changes state (domain.md §4).
    let retry = if operation.is_some_and(DmpOperation::reads_only) {
        Retry::IfNotSent
    } else {
        Retry::Never
    };
    let extra = soap_action_header(&message, &action);
    Ok(SignedRequest::post(
        pool,
        content_type,
        extra,
        chunks,
        retry,
    ))
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
            place: "X-Vihf-Structure".into(),
            tenant: tenant.id.to_string(),
        })
    }
}
