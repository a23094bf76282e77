//! One request, from arrival to answer, in the order its phases run (pingora's
//! `ProxyHttp` phases are the model). Each phase either fills the typed [`Exchange`] and
//! hands on, or refuses with a [`ProxyError`] that becomes a SOAP 1.2 fault:
//!
//! | # | phase | what | limits |
//! |---|---|---|---|
//! | 1 | admit | a request slot | `listener.max_concurrent_requests` → `Overloaded` |
//! | 2 | route | `POST /dmp/<route>`, `/insi[/auto\|/manu]` | → `UnknownRoute`, `UnknownDmpService` |
//! | 3 | authenticate | client by token / certificate, source, tenant, service; rate | default deny; `clients.rate_per_second` |
//! | 4 | read body | the whole body | `limits.max_body_bytes`, body deadline, in-flight budget |
//! | 5 | identity | envelope, WS-Addressing, operation, VIHF or headers, structure | blocking pool, `signing slots` |
//! | 6 | sign | VIHF and lot with ORG SIGN, envelope written | blocking pool |
//! | 7 | forward | the tenant's pool for (service, certificate) | pool concurrency, timeouts; only reads retried |
//! | 8 | record | metrics, audit line (before the answer), one log line | |
//!
//! The whole exchange runs in a task of its own: once a request may have been written
//! upstream it completes (or times out) and is audited and logged, even when the
//! internal system has gone away (connection closed, HTTP/2 stream reset).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::access::{PeerCertificate, Service};
use crate::audit::AuditRecord;
use crate::body::{ProxyBody, read_limited};
use crate::exchange::{Exchange, Route};
use crate::fault::ProxyError;
use crate::runtime::Proxy;
use crate::sanitize::log_safe;
use crate::state::{ProxyState, TenantRuntime};
use crate::{dmp, insi};

/// Headers that concern one connection only, never passed back.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// INSi bodies up to this size are parsed on the async worker (cheaper than a hop to
/// the blocking pool); larger ones, and every DMP body, on the blocking pool.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// Serves one request of the internal listener.
pub async fn handle(
    proxy: Arc<Proxy>,
    peer: SocketAddr,
    cert: Option<Arc<PeerCertificate>>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let id = request_id(&req);
    let span = tracing::info_span!("request", request_id = %id);
    // Its own task: dropping this future (the client went away) does not drop it.
    let task = tokio::spawn(run(proxy, peer, cert, req, id.clone()).instrument(span));
    match task.await {
        Ok(response) => response,
        Err(e) => ProxyError::Internal(format!("request task: {e}")).to_response(&id),
    }
}

/// A request id from `X-Request-Id` when it is reasonable, else a new one.
fn request_id(req: &Request<Incoming>) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string)
}

async fn run(
    proxy: Arc<Proxy>,
    peer: SocketAddr,
    cert: Option<Arc<PeerCertificate>>,
    req: Request<Incoming>,
    id: String,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let _in_flight = proxy.metrics.in_flight();
    // The state in force when the request arrived serves it to the end, even across a reload.
    let state = proxy.state();
    let mut exchange = Exchange::new(id);
    exchange.peer = Some(peer);
    let result = phases(&proxy, &state, peer, cert.as_deref(), req, &mut exchange).await;
    let (mut response, code) = match result {
        Ok(r) => (r, None),
        Err(e) => {
            let code = e.code();
            if exchange.client.is_none() {
                exchange.client = e.identified_client().map(str::to_string);
            }
            if e.is_access_refusal() {
                proxy.metrics.access_refused(code);
            }
            let client = exchange.client.as_deref().unwrap_or("-");
            let message = e.to_string();
            let reason = log_safe(&message);
            if e.is_upstream_failure() {
                tracing::warn!(code, client, reason = %reason, "upstream failed");
            } else {
                tracing::warn!(code, client, reason = %reason, "refused");
            }
            (e.to_response(&exchange.request_id), Some(code))
        }
    };
    if let Ok(v) = HeaderValue::from_str(&exchange.request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    record(&proxy, &mut exchange, &response, code, started.elapsed()).await;
    response
}

/// Phases 1 to 7.
async fn phases(
    proxy: &Proxy,
    state: &Arc<ProxyState>,
    peer: SocketAddr,
    cert: Option<&PeerCertificate>,
    req: Request<Incoming>,
    exchange: &mut Exchange,
) -> Result<Response<ProxyBody>, ProxyError> {
    // 1. Admit: a request slot, the body's deadline and memory share.
    let admission = proxy.admit()?;

    // 2. Route.
    let route = route(state, req.method(), req.uri().path())?;
    exchange.route = Some(route.clone());

    // 3. Authenticate: default deny.
    let scope = match &route {
        Route::Dmp { name, .. } => Service::Dmp(name),
        Route::Insi(_) => Service::Insi,
    };
    let grant = state
        .access
        .authorize(req.headers(), peer.ip(), cert, scope)?;
    exchange.client = Some(grant.client.clone());
    exchange.tenant = Some(grant.tenant.clone());
    proxy.take_token(&grant.client, grant.rate_per_second)?;
    tenant_of(state, exchange)?;

    // 4. Read the body.
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = read_limited(
        body,
        declared,
        state.config.limits.max_body_bytes,
        Some(&admission.body),
    )
    .await?;

    // 5 and 6: identity, sign.
    let outgoing = match route {
        Route::Dmp { name, .. } => {
            on_blocking_pool(state, exchange, move |state, exchange| {
                let tenant = tenant_of(state, exchange)?;
                let request = dmp::identify(
                    state,
                    tenant,
                    &name,
                    &parts.headers,
                    &content_type,
                    body,
                    exchange,
                )?;
                dmp::sign(request, tenant, exchange)
            })
            .await?
        }
        Route::Insi(mode) => {
            if body.len() <= INLINE_PARSE_BYTES {
                let tenant = tenant_of(state, exchange)?;
                insi::identify(state, tenant, mode, &content_type, body, exchange)?
            } else {
                on_blocking_pool(state, exchange, move |state, exchange| {
                    let tenant = tenant_of(state, exchange)?;
                    insi::identify(state, tenant, mode, &content_type, body, exchange)
                })
                .await?
            }
        }
    };

    // 7. Forward, with the tenant's certificate for the service.
    exchange.sent_upstream = true;
    let sent_at = Instant::now();
    let answer = outgoing
        .pool
        .send(
            &outgoing.content_type,
            &outgoing.extra,
            outgoing.chunks,
            outgoing.retry,
        )
        .await;
    exchange.timings.upstream = sent_at.elapsed();
    let response = answer?;
    exchange.upstream_status = Some(response.status().as_u16());
    Ok(strip_hop_by_hop(response))
}

/// Phase 2: the route, checked against the configuration.
fn route(state: &ProxyState, method: &http::Method, path: &str) -> Result<Route, ProxyError> {
    let route = Route::parse(method, path).ok_or_else(|| ProxyError::UnknownRoute {
        method: method.to_string(),
        path: path.to_string(),
    })?;
    Ok(match route {
        Route::Dmp { name, .. } => {
            let dmp = state
                .config
                .dmp
                .as_ref()
                .ok_or(ProxyError::ServiceNotConfigured("dmp"))?;
            if !dmp.services.contains_key(&name) {
                return Err(ProxyError::UnknownDmpService(name));
            }
            let service = dmp::service_of(dmp, &name);
            Route::Dmp { name, service }
        }
        Route::Insi(mode) => {
            state
                .config
                .insi
                .as_ref()
                .ok_or(ProxyError::ServiceNotConfigured("insi"))?;
            Route::Insi(mode)
        }
    })
}

/// The granted tenant's runtime state.
fn tenant_of<'s>(
    state: &'s ProxyState,
    exchange: &Exchange,
) -> Result<&'s TenantRuntime, ProxyError> {
    let id = exchange
        .tenant
        .as_ref()
        .ok_or_else(|| ProxyError::Internal("no tenant granted".into()))?;
    state
        .tenants
        .get(id)
        .ok_or_else(|| ProxyError::Internal(format!("tenant {id} has no runtime state")))
}

/// Runs CPU work (parsing, signing, writing) on the blocking pool, a bounded number at
/// a time (the signing slots), never on an async worker.
async fn on_blocking_pool<T: Send + 'static>(
    state: &Arc<ProxyState>,
    exchange: &mut Exchange,
    work: impl FnOnce(&ProxyState, &mut Exchange) -> Result<T, ProxyError> + Send + 'static,
) -> Result<T, ProxyError> {
    let permit = Arc::clone(&state.signing_slots)
        .acquire_owned()
        .await
        .map_err(|_| ProxyError::Internal("signing slots closed".into()))?;
    let state = Arc::clone(state);
    let mut moved = std::mem::take(exchange);
    let (back, result) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let started = Instant::now();
        let result = work(&state, &mut moved);
        moved.timings.signing += started.elapsed();
        (moved, result)
    })
    .await
    .map_err(|e| ProxyError::Internal(format!("blocking task: {e}")))?;
    *exchange = back;
    result
}

fn strip_hop_by_hop(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    for name in HOP_BY_HOP {
        response.headers_mut().remove(name);
    }
    response
}

/// The INS an INSi answer returns (`NumIdentifiant` + `Cle`, and its `OID`), for the
/// audit trail.
fn returned_ins(body: &ProxyBody) -> Option<(String, String)> {
    let ProxyBody::Full(bytes) = body else {
        return None;
    };
    let text = String::from_utf8_lossy(bytes);
    let between = |open: &str, close: &str| {
        let start = text.find(open)? + open.len();
        let end = text[start..].find(close)?;
        Some(text[start..start + end].trim().to_string())
    };
    Some((
        format!(
            "{}{}",
            between("<NumIdentifiant>", "</NumIdentifiant>")?,
            between("<Cle>", "</Cle>")?
        ),
        between("<OID>", "</OID>").unwrap_or_default(),
    ))
}

/// The INS of a VIHF `resource-id` (HL7 CX `<INS>^^^&<OID>&ISO^NH`) as (INS, OID).
fn ins_of_cx(cx: &str) -> (String, String) {
    match passerelle_signing::Ins::from_cx(cx) {
        Ok(ins) => (ins.as_str().to_string(), ins.kind().oid().to_string()),
        Err(_) => (String::new(), String::new()),
    }
}

/// Phase 8: metrics, the audit line when anything may have reached the service
/// (written and flushed before the answer leaves), and one log line without patient data.
async fn record(
    proxy: &Proxy,
    exchange: &mut Exchange,
    response: &Response<ProxyBody>,
    code: Option<&'static str>,
    total: Duration,
) {
    let outcome = match code {
        Some(c) => c,
        None if response.status().is_success() => "ok",
        None => "upstream_fault",
    };
    let service = exchange.service();
    // Tenant and client only once access control granted them: configured names.
    proxy.metrics.request(
        &service,
        exchange.operation.label(),
        outcome,
        exchange.tenant.as_ref().map(|t| t.as_str()),
        exchange.client.as_deref(),
        total,
    );
    for kind in &exchange.structure_warnings {
        proxy.metrics.structure_warning(kind);
    }
    if exchange.timings.signing > Duration::ZERO {
        proxy.metrics.signing(exchange.timings.signing);
    }
    if exchange.sent_upstream {
        proxy.metrics.upstream(&service, exchange.timings.upstream);
        if matches!(exchange.route, Some(Route::Insi(_))) {
            exchange.returned_ins = returned_ins(response.body());
        }
    }
    // Every exchange that may have reached the service, and every refused attempt: those
    // of an identified client always, the others (no valid credential) within a global
    // rate, so that a flood of anonymous requests cannot fill the disk.
    // Overload and rate refusals are about volume, not access: counted, not audited.
    let refused_access = code.is_some_and(|c| !matches!(c, "Overloaded" | "RateLimited"));
    let audited = exchange.sent_upstream
        || (refused_access && (exchange.client.is_some() || proxy.admit_anonymous_refusal_audit()));
    if audited {
        let identity = exchange.identity.clone().unwrap_or_default();
        let (patient_ins, patient_ins_oid) = match &exchange.returned_ins {
            Some(returned) => returned.clone(),
            None if identity.patient.is_empty() => (String::new(), String::new()),
            None => ins_of_cx(&identity.patient),
        };
        let record = AuditRecord {
            instance: proxy.state().config.audit.instance.clone(),
            source: exchange
                .peer
                .map(|p| p.ip().to_string())
                .unwrap_or_default(),
            sent_upstream: exchange.sent_upstream,
            time: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            request_id: exchange.request_id.clone(),
            message_id: exchange.message_id.clone().unwrap_or_default(),
            client: exchange.client.clone().unwrap_or_default(),
            tenant: exchange
                .tenant
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            structure: exchange.structure().to_string(),
            service: service.clone(),
            action: exchange.action.clone().unwrap_or_default(),
            actor_id: identity.actor_id,
            insi_mode: exchange
                .insi_mode
                .map(|m| m.label().to_string())
                .unwrap_or_default(),
            patient_ins,
            patient_ins_oid,
            purpose: identity.purpose,
            outcome: outcome.to_string(),
            upstream_status: exchange.upstream_status.unwrap_or(0),
            latency_ms: u64::try_from(total.as_millis()).unwrap_or(u64::MAX),
        };
        // Written and flushed before the internal system gets its answer.
        if let Err(e) = proxy.audit().record(&record).await {
            proxy.metrics.audit_write_failed();
            tracing::error!(error = %e, path = %proxy.audit().path().display(), "audit trail write failed");
        }
    }
    let tenant = exchange
        .tenant
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    tracing::info!(
        peer = %exchange.peer.map(|p| p.to_string()).unwrap_or_default(),
        client = %exchange.client.as_deref().unwrap_or(""),
        tenant = %tenant,
        service = %log_safe(&service),
        action = %log_safe(exchange.action.as_deref().unwrap_or("")),
        message_id = %log_safe(exchange.message_id.as_deref().unwrap_or("")),
        structure = %exchange.structure(),
        documents = exchange.documents,
        completed = ?exchange.insi_completed,
        status = response.status().as_u16(),
        code = code.unwrap_or("-"),
        signing_ms = exchange.timings.signing.as_millis(),
        upstream_ms = exchange.timings.upstream.as_millis(),
        total_ms = total.as_millis(),
        "request"
    );
}
