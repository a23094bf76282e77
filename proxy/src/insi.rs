//! The INSi path: pick the tenant's INSI-AUTO or INSI-MANU certificate, fill in the
//! `ContexteLPS`, `ContexteBAM`, `wsa:Action` and `wsa:MessageID` headers the internal
//! system left out (Emetteur = the certificate's OU; software identity from the
//! configuration), and forward. A request that lacks nothing is forwarded byte for byte.
//! The JSON API's requests ([`complete`]) are bodies without any header, completed the
//! same way.

use std::sync::Arc;

use bytes::Bytes;
use passerelle_config::{CertRole, Software};
use passerelle_signing::xml::Element;
use passerelle_soap::insi::{
    ACTION_PREFIX, CTXBAM_NS, CTXLPS_NS, LpsIdentity, OP_TRAITS, OP_VITALE, contexte_bam,
    contexte_lps, operation_of,
};
use time::OffsetDateTime;

use crate::exchange::{Exchange, Operation};
use crate::fault::ProxyError;
use crate::message::{SoapMessage, wsa_block};
use crate::state::{InsiMode, InsiUpstream, ProxyState, TenantRuntime};
use crate::upstream::{Outgoing, Retry};

/// Chooses the certificate: the route's mode, or the tenant's only INSi certificate.
pub fn select(
    tenant: &TenantRuntime,
    mode: Option<InsiMode>,
) -> Result<(InsiMode, &InsiUpstream), ProxyError> {
    let missing = |role: CertRole| ProxyError::CertificateMissing {
        tenant: tenant.id.to_string(),
        role: role.to_string(),
    };
    match mode {
        Some(m) => tenant
            .insi
            .get(&m)
            .map(|u| (m, u))
            .ok_or_else(|| missing(m.role())),
        None => {
            let mut all = tenant.insi.iter();
            match (all.next(), all.next()) {
                (Some((m, u)), None) => Ok((*m, u)),
                (None, _) => Err(missing(CertRole::InsiAuto)),
                (Some(_), Some(_)) => Err(ProxyError::InsiModeRequired {
                    tenant: tenant.id.to_string(),
                }),
            }
        }
    }
}

/// The tenant's INSi certificate for `mode` ([`select`]), usable now; the exchange
/// learns the mode and the emitter (the certificate's OU).
pub fn certificate<'t>(
    tenant: &'t TenantRuntime,
    mode: Option<InsiMode>,
    exchange: &mut Exchange,
) -> Result<&'t InsiUpstream, ProxyError> {
    let (mode, upstream) = select(tenant, mode)?;
    exchange.insi_mode = Some(mode);
    upstream.credential.check(OffsetDateTime::now_utc())?;
    exchange.insi_emetteur = Some(upstream.emetteur.clone());
    Ok(upstream)
}

/// Phase 5 for INSi: the tenant's certificate for the mode (auto / manu), the envelope
/// parsed (SOAP 1.2, DTDs refused), the contexts completed. No identity to sign: the
/// INSi certificate is the identity.
pub fn identify(
    state: &ProxyState,
    tenant: &TenantRuntime,
    mode: Option<InsiMode>,
    content_type: &str,
    body: Bytes,
    exchange: &mut Exchange,
) -> Result<Outgoing, ProxyError> {
    let upstream = certificate(tenant, mode, exchange)?;
    let message = SoapMessage::read(content_type, body)?;
    outgoing(message, upstream, &state.config.software, exchange)
}

/// A JSON API request: the body element (`RECSANSVITALE`, `RECVITALE`) in an envelope
/// without any header, completed exactly as the SOAP route completes such an envelope,
/// for the certificate [`certificate`] chose.
pub fn complete(
    body: Element,
    upstream: &InsiUpstream,
    software: &Software,
    exchange: &mut Exchange,
) -> Result<Outgoing, ProxyError> {
    let xml = passerelle_soap::envelope(Vec::new(), body);
    let message = SoapMessage::read(passerelle_soap::mtom::SOAP12_MEDIA_TYPE, Bytes::from(xml))?;
    outgoing(message, upstream, software, exchange)
}

/// The completed request for the certificate's pool; the exchange learns its
/// operation, Action, MessageID and what was completed.
fn outgoing(
    message: SoapMessage,
    upstream: &InsiUpstream,
    software: &Software,
    exchange: &mut Exchange,
) -> Result<Outgoing, ProxyError> {
    let request = prepare(message, upstream, software, OffsetDateTime::now_utc())?;
    exchange.action = Some(request.operation.clone());
    exchange.operation = Operation::Insi(request.label);
    exchange.message_id = Some(request.message_id.clone());
    exchange.insi_completed = request.completed.clone();
    // INSi searches only read: one retry when the first attempt was provably unsent.
    Ok(Outgoing::post(
        Arc::clone(&upstream.pool),
        request.content_type,
        Vec::new(),
        request.body,
        Retry::IfNotSent,
    ))
}

/// What goes upstream.
#[derive(Debug)]
pub struct InsiRequest {
    pub body: Vec<Bytes>,
    /// `rechercherInsAvecTraitsIdentite`, ... or the Action as sent for other operations.
    pub operation: String,
    /// The operation as a metric label, from a closed set (`other` for the rest).
    pub label: &'static str,
    /// Content-Type and body chunks to send (the media type matches SOAP 1.2).
    pub content_type: String,
    pub message_id: String,
    /// The headers the proxy added, for the log.
    pub completed: Vec<&'static str>,
}

/// Completes the headers the internal system left out.
pub fn prepare(
    mut message: SoapMessage,
    upstream: &InsiUpstream,
    software: &Software,
    now: OffsetDateTime,
) -> Result<InsiRequest, ProxyError> {
    if !message.is_soap12() {
        return Err(ProxyError::NotSoap(
            "INSi accepts SOAP 1.2 only (http://www.w3.org/2003/05/soap-envelope)".into(),
        ));
    }
    message.check_single_addressing()?;
    let body_operation = message
        .envelope
        .body_name()
        .and_then(|(ns, local)| operation_of(&ns, &local));
    let stamp = passerelle_signing::vihf::saml_instant(now);
    let mut completed = Vec::new();
    // Contexts the client wrote: one of each, and emitted by this certificate's
    // structure (CNAM reads Emetteur; the audit records the certificate's OU).
    for (ns, local, header) in [
        (CTXLPS_NS, "ContexteLPS", "ctxlps:ContexteLPS"),
        (CTXBAM_NS, "ContexteBAM", "ctxbam:ContexteBAM"),
    ] {
        let count = message.envelope.header_count(ns, local);
        if count > 1 {
            return Err(ProxyError::DuplicateHeader { header, count });
        }
        if let Some((context, _)) = message.envelope.header(ns, local) {
            let emetteurs: Vec<String> = context
                .elements()
                .filter(|e| e.local == "Emetteur")
                .map(|e| e.text_content().trim().to_string())
                .collect();
            if emetteurs.as_slice() != [upstream.emetteur.clone()] {
                return Err(ProxyError::BadInsiRequest(format!(
                    "{header}: Emetteur must be the INSi certificate's structure ({}), once",
                    upstream.emetteur
                )));
            }
        }
    }
    if message.envelope.header(CTXLPS_NS, "ContexteLPS").is_none() {
        let instance = software.instance_id.to_string();
        let lps = LpsIdentity {
            idam: &software.insi_idam,
            name: &software.lps_name,
            version: &software.lps_version,
            instance: &instance,
        };
        let id = uuid::Uuid::new_v4().to_string();
        message.add_header(contexte_lps(&id, &stamp, &upstream.emetteur, &lps))?;
        completed.push("ContexteLPS");
    }
    if message.envelope.header(CTXBAM_NS, "ContexteBAM").is_none() {
        let id = uuid::Uuid::new_v4().to_string();
        message.add_header(contexte_bam(&id, &stamp, &upstream.emetteur))?;
        completed.push("ContexteBAM");
    }
    let action = match message.wsa("Action") {
        Some(a) => a,
        None => {
            let op = body_operation.ok_or_else(|| {
                ProxyError::BadInsiRequest(
                    "no wsa:Action, and the body is neither RECSANSVITALE nor RECVITALE: set the Action".into(),
                )
            })?;
            let action = format!("{ACTION_PREFIX}{op}");
            message.add_header(wsa_block("Action", action.clone()))?;
            completed.push("wsa:Action");
            action
        }
    };
    let message_id = match message.wsa("MessageID") {
        Some(id) => id,
        None => {
            let id = format!("uuid:{}", uuid::Uuid::new_v4());
            message.add_header(wsa_block("MessageID", id.clone()))?;
            completed.push("wsa:MessageID");
            id
        }
    };
    let operation = action
        .strip_prefix(ACTION_PREFIX)
        .unwrap_or(&action)
        .to_string();
    let label = [OP_TRAITS, OP_VITALE]
        .into_iter()
        .find(|op| *op == operation)
        .unwrap_or("other");
    let root = if completed.is_empty() {
        message.root.clone()
    } else {
        Bytes::from(message.envelope.root.to_xml())
    };
    let (content_type, body) = message.upstream_body(root, &[]);
    Ok(InsiRequest {
        body,
        operation,
        label,
        content_type,
        message_id,
        completed,
    })
}
