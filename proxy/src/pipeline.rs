//! One request, from arrival to answer, in the order its phases run (pingora's
//! `ProxyHttp` phases are the model). Each phase either fills the typed [`Exchange`] and
//! hands on, or refuses with a [`ProxyError`] that becomes a SOAP 1.2 fault (`/dmp`,
//! `/insi`) or a JSON error (`/api`, `/svc`):
//!
//! | # | phase | what | limits |
//! |---|---|---|---|
//! | 1 | admit | a request slot | `listener.max_concurrent_requests` → `Overloaded` |
//! | 2 | route | `POST /dmp/<route>`, `/insi[/auto\|/manu]`, `/api/insi/{search,vitale}`, `GET /api/openapi.json` (answered here, no credentials), `/svc/<name>/<path>` (method and path allowed) | → `UnknownRoute`, `UnknownDmpService`, `UnknownService`, `MethodNotAllowed`, `BadPath`, `PathNotAllowed` |
//! | 3 | authenticate | client by token / certificate, source, tenant, service; rate; the audit sink takes records | default deny; `clients.rate_per_second`; `audit.on_failure = "refuse"` → `AuditUnavailable` |
//! | 4 | read body | the whole body | `limits.max_body_bytes`, body deadline, in-flight budget |
//! | 5 | identity / build | DMP: envelope, WS-Addressing, operation, VIHF or headers, structure; INSi: envelope, contexts; JSON API: the typed request and its search; services: the request for the `org_auth` pool | DMP: the blocking pool, `signing slots`; INSi: in place up to 64 KiB, else the same |
//! | 6 | sign | DMP: VIHF and lot with ORG SIGN, envelope written | as phase 5 |
//! | 7 | forward | the tenant's pool for (service, certificate); a JSON INSi search sends one request after another until an answer decides; the request and answer written to files when `[capture]` lists the client | pool concurrency, timeouts; only reads retried |
//! | 8 | record | metrics, one audit line per request sent upstream (before the answer), one log line | |
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
use crate::api::insi::Search;
use crate::audit::AuditRecord;
use crate::body::{ProxyBody, read_limited};
use crate::exchange::{Attempt, Exchange, Route};
use crate::fault::{AnswerFormat, ProxyError};
use crate::runtime::Proxy;
use crate::sanitize::log_safe;
use crate::state::{ProxyState, TenantRuntime};
use crate::upstream::Outgoing;
use crate::{api, dmp, insi, services};

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

/// The largest JSON API body: its requests are a few hundred bytes.
const MAX_API_BODY_BYTES: usize = 64 * 1024;

/// INSi bodies up to this size are parsed on the async worker: tens of microseconds,
/// cheaper than the two thread hand-offs of the blocking pool. Larger ones go to the
/// blocking pool. DMP requests always do: they are signed, and a signature (0.25 to
/// 1.2 ms of a core, longer on a token) never runs inside an async worker's poll
/// (architecture.md), so that the signing slots bound it and health, metrics and INSi
/// traffic keep their workers when signing saturates the CPU.
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
    let format = AnswerFormat::of_path(req.uri().path());
    let task = tokio::spawn(run(proxy, peer, cert, req, id.clone(), format).instrument(span));
    match task.await {
        Ok(response) => response,
        Err(e) => ProxyError::Internal(format!("request task: {e}")).to_answer(&id, format),
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
    format: AnswerFormat,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let _in_flight = proxy.metrics.in_flight();
    // The state in force when the request arrived serves it to the end, even across a reload.
    let state = proxy.state();
    let mut exchange = Exchange::new(id);
    exchange.peer = Some(peer);
    exchange.tenant_asked = req
        .headers()
        .get(crate::access::TENANT_HEADER)
        .map(|v| bounded(&String::from_utf8_lossy(v.as_bytes()), MAX_AUDIT_TENANT));
    let result = phases(&proxy, &state, peer, cert.as_deref(), req, &mut exchange).await;
    let (mut response, failure) = match result {
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
            (
                e.to_answer(&exchange.request_id, format),
                Some((code, e.outcome())),
            )
        }
    };
    if let Ok(v) = HeaderValue::from_str(&exchange.request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    record(&proxy, &mut exchange, &response, failure, started.elapsed()).await;
    response
}

/// What phase 5 leaves for phase 7.
enum Work {
    /// One request; its answer is passed back as it came (DMP, INSi over SOAP, services).
    Forward(Outgoing),
    /// A JSON INSi search: requests sent one at a time until an answer decides.
    InsiSearch(Box<Search>),
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
    let route = route(state, req.method(), req.uri())?;
    exchange.route = Some(route.clone());

    // 3. Authenticate: default deny (the API's description excepted: it holds no data).
    let scope = match &route {
        Route::OpenApi => return Ok(api::openapi::response()),
        Route::Dmp { name, .. } => Service::Dmp(name),
        Route::Insi(_) | Route::InsiApi(_) => Service::Insi,
        Route::Service(call) => Service::Svc(&call.name),
    };
    let grant = state
        .access
        .authorize(req.headers(), peer.ip(), cert, scope)?;
    exchange.client = Some(grant.client.clone());
    exchange.tenant = Some(grant.tenant.clone());
    proxy.take_token(&grant.client, grant.rate_per_second)?;
    tenant_of(state, exchange)?;
    // Nothing goes upstream that could not be recorded.
    if !proxy.audit().admits() {
        return Err(ProxyError::AuditUnavailable);
    }

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

    // 5 and 6: identity or build, sign.
    let work = match route {
        Route::OpenApi => return Ok(api::openapi::response()),
        Route::Dmp { name, .. } => Work::Forward(
            cpu_work(false, state, exchange, move |state, exchange| {
                let started = Instant::now();
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
                let signed = dmp::sign(request, tenant, exchange);
                exchange.timings.signing += started.elapsed();
                signed
            })
            .await?,
        ),
        Route::Insi(mode) => Work::Forward(
            cpu_work(
                body.len() <= INLINE_PARSE_BYTES,
                state,
                exchange,
                move |state, exchange| {
                    let tenant = tenant_of(state, exchange)?;
                    insi::identify(state, tenant, mode, &content_type, body, exchange)
                },
            )
            .await?,
        ),
        Route::InsiApi(call) => {
            // A JSON request is a few hundred bytes: a large one is refused before parsing.
            if body.len() > MAX_API_BODY_BYTES {
                return Err(ProxyError::BodyTooLarge {
                    limit: MAX_API_BODY_BYTES,
                });
            }
            let request = api::insi::read(call, &content_type, &body)?;
            insi::certificate(tenant_of(state, exchange)?, request.mode, exchange)?;
            Work::InsiSearch(Box::new(Search::new(request.query)))
        }
        Route::Service(call) => {
            let service = services::check(&state.config.services, &call, exchange)?;
            let tenant = tenant_of(state, exchange)?;
            Work::Forward(services::build(
                service,
                tenant,
                &call,
                &parts.headers,
                body,
                exchange,
            )?)
        }
    };

    // 7. Forward, with the tenant's certificate for the service.
    match work {
        Work::Forward(outgoing) => Ok(strip_hop_by_hop(
            forward(proxy, state, outgoing, exchange).await?,
        )),
        Work::InsiSearch(mut search) => {
            let tenant = tenant_of(state, exchange)?;
            let upstream = insi::certificate(tenant, exchange.insi_mode, exchange)?;
            // The whole search within one request timeout, and each INSi call after the
            // first charged to the client's rate like a request of its own.
            let timeout = state
                .config
                .insi
                .as_ref()
                .map_or(Duration::from_secs(60), |i| i.timeouts.request);
            let deadline = Instant::now() + timeout;
            while let Some(body) = search.next_body() {
                if search.attempts() > 0 {
                    proxy.take_token(&grant.client, grant.rate_per_second)?;
                    if Instant::now() >= deadline {
                        return Err(ProxyError::UpstreamTimeout {
                            upstream: upstream.pool.url().to_string(),
                            phase: "the first-name search (all its INSi calls)",
                            seconds: timeout.as_secs(),
                            sent: crate::upstream::Sent::Yes,
                        });
                    }
                }
                exchange.insi_attempts = search.attempts();
                let outgoing = insi::complete(body, upstream, &state.config.software, exchange)?;
                let response = forward(proxy, state, outgoing, exchange).await?;
                let result = api::insi::answer::read(&response, upstream.pool.url())?;
                if let (Some(attempt), Some(individual)) =
                    (exchange.attempts.last_mut(), &result.individual)
                {
                    attempt.returned_ins = Some((
                        format!("{}{}", individual.ins.nir, individual.ins.key),
                        individual.ins.oid.clone(),
                    ));
                }
                search.record(result);
            }
            search.into_response(&exchange.request_id)
        }
    }
}

/// Phase 7 for one request: sent on its pool, timed, and recorded as an attempt (which
/// the audit trail writes, answered or not). Every route's request goes through here,
/// so the homologation capture (`[capture]`, in the state of this request) covers them
/// all: the configuration decides, never the request.
async fn forward(
    proxy: &Proxy,
    state: &ProxyState,
    outgoing: Outgoing,
    exchange: &mut Exchange,
) -> Result<Response<ProxyBody>, ProxyError> {
    let recorder = crate::capture::Recorder::for_exchange(
        state.config.capture.as_ref(),
        exchange,
        &proxy.metrics.capture,
    );
    let sent_at = Instant::now();
    let answer = outgoing
        .send(recorder.as_ref())
        .await
        .map_err(ProxyError::from);
    exchange.timings.upstream += sent_at.elapsed();
    // As the client's fault says it: unreachable, refused tunnels, TLS failures and
    // connect timeouts sent nothing.
    let sent = match &answer {
        Ok(_) => true,
        Err(e) => e.sent() != crate::upstream::Sent::No,
    };
    exchange.sent_upstream |= sent;
    exchange.attempts.push(Attempt {
        message_id: exchange.message_id.clone().unwrap_or_default(),
        upstream_status: answer.as_ref().ok().map(|r| r.status().as_u16()),
        failure: answer.as_ref().err().map(ProxyError::code),
        returned_ins: None,
        sent,
    });
    answer
}

/// Phase 2: the route, checked against the configuration.
fn route(state: &ProxyState, method: &http::Method, uri: &http::Uri) -> Result<Route, ProxyError> {
    let route = Route::parse(method, uri.path(), uri.query())?;
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
        Route::Insi(_) | Route::InsiApi(_) => {
            state
                .config
                .insi
                .as_ref()
                .ok_or(ProxyError::ServiceNotConfigured("insi"))?;
            route
        }
        // Checked against the configuration only after authentication (phase 5): an
        // unauthenticated client learns nothing of the services, their methods or paths.
        Route::Service(_) => route,
        Route::OpenApi => route,
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

/// Runs CPU work (parsing, signing, writing): in place when `inline` (short work without
/// a signature, see [`INLINE_PARSE_BYTES`]), otherwise on
/// the blocking pool, off the async workers, a bounded number at a time (the signing
/// slots).
async fn cpu_work<T: Send + 'static>(
    inline: bool,
    state: &Arc<ProxyState>,
    exchange: &mut Exchange,
    work: impl FnOnce(&ProxyState, &mut Exchange) -> Result<T, ProxyError> + Send + 'static,
) -> Result<T, ProxyError> {
    if inline {
        return work(state, exchange);
    }
    let permit = Arc::clone(&state.signing_slots)
        .acquire_owned()
        .await
        .map_err(|_| ProxyError::Internal("signing slots closed".into()))?;
    let state = Arc::clone(state);
    let mut moved = std::mem::take(exchange);
    let (back, result) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let result = work(&state, &mut moved);
        (moved, result)
    })
    .await
    .map_err(|e| ProxyError::Internal(format!("blocking task: {e}")))?;
    *exchange = back;
    result
}

/// What of an upstream answer's headers the internal system gets: not the hop-by-hop
/// ones, nor those the answer's `Connection` header names as such (RFC 9110 §7.6.1), nor
/// `Set-Cookie` (a cookie of the national service's is Passerelle's connection's
/// business: the internal system's own cookies are never forwarded upstream either).
fn strip_hop_by_hop(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    let named: Vec<http::HeaderName> = response
        .headers()
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| http::HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let headers = response.headers_mut();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(http::header::SET_COOKIE);
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

/// The longest `action` an audit line keeps: a refused request's Action is the client's
/// text, of any length its body allowed.
const MAX_AUDIT_ACTION: usize = 256;

/// The longest tenant a refused attempt's audit line keeps (the client's header text).
const MAX_AUDIT_TENANT: usize = 64;

/// `text`, cut to `max` characters (marked with `…`).
fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The INS of a VIHF `resource-id` (HL7 CX `<INS>^^^&<OID>&ISO^NH`) as (INS, OID).
fn ins_of_cx(cx: &str) -> (String, String) {
    match passerelle_signing::Ins::from_cx(cx) {
        Ok(ins) => (ins.as_str().to_string(), ins.kind().oid().to_string()),
        Err(_) => (String::new(), String::new()),
    }
}

/// Phase 8: metrics, one audit line per request that may have reached the service
/// (written and flushed before the answer leaves), and one log line without patient
/// data. `failure` is the refusal's code and metric outcome.
async fn record(
    proxy: &Proxy,
    exchange: &mut Exchange,
    response: &Response<ProxyBody>,
    failure: Option<(&'static str, &'static str)>,
    total: Duration,
) {
    let code = failure.map(|(code, _)| code);
    let outcome = match failure {
        Some((_, outcome)) => outcome,
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
        // INSi over SOAP: the INS is read from the answer passed back.
        if matches!(exchange.route, Some(Route::Insi(_)))
            && let Some(attempt) = exchange.attempts.last_mut()
        {
            attempt.returned_ins = returned_ins(response.body());
        }
    }
    // Every exchange that may have reached the service, and every refused attempt: those
    // of an identified client always, the others (no valid credential) within a global
    // rate, so that a flood of anonymous requests cannot fill the disk.
    // Overload and rate refusals are about volume, not access: counted, not audited.
    // Nor is a refusal because the audit database is down: it would only fill the spool.
    let refused_access =
        code.is_some_and(|c| !matches!(c, "Overloaded" | "RateLimited" | "AuditUnavailable"));
    let audited = exchange.sent_upstream
        || (refused_access && proxy.admit_refusal_audit(exchange.client.as_deref()));
    if audited {
        let identity = exchange.identity.clone().unwrap_or_default();
        // One line per attempt sent upstream (a JSON search may make several); a refused
        // attempt, nothing sent, is one line with its fault code.
        let refused = [Attempt {
            message_id: exchange.message_id.clone().unwrap_or_default(),
            upstream_status: None,
            failure: code,
            returned_ins: None,
            sent: false,
        }];
        let attempts: &[Attempt] = if exchange.attempts.is_empty() {
            &refused
        } else {
            &exchange.attempts
        };
        for attempt in attempts {
            let (patient_ins, patient_ins_oid) = match &attempt.returned_ins {
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
                sent_upstream: attempt.sent,
                time: time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                request_id: exchange.request_id.clone(),
                message_id: attempt.message_id.clone(),
                client: exchange.client.clone().unwrap_or_default(),
                // Granted, or (a refused attempt) what the client asked for.
                tenant: exchange.tenant.as_ref().map_or_else(
                    || exchange.tenant_asked.clone().unwrap_or_default(),
                    ToString::to_string,
                ),
                structure: exchange.structure().to_string(),
                service: service.clone(),
                action: bounded(exchange.action.as_deref().unwrap_or(""), MAX_AUDIT_ACTION),
                actor_id: identity.actor_id.clone(),
                insi_mode: exchange
                    .insi_mode
                    .map(|m| m.label().to_string())
                    .unwrap_or_default(),
                patient_ins,
                patient_ins_oid,
                purpose: identity.purpose.clone(),
                outcome: attempt.outcome().to_string(),
                upstream_status: attempt.upstream_status.unwrap_or(0),
                latency_ms: u64::try_from(total.as_millis()).unwrap_or(u64::MAX),
            };
            // Written and flushed before the internal system gets its answer.
            if let Err(e) = proxy.audit().record(&record).await {
                proxy.metrics.audit_write_failed();
                tracing::error!(error = %e, sink = %proxy.audit().describe(), "audit record not written");
            }
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
        insi_attempts = exchange.insi_attempts,
        status = response.status().as_u16(),
        code = code.unwrap_or("-"),
        signing_ms = exchange.timings.signing.as_millis(),
        upstream_ms = exchange.timings.upstream.as_millis(),
        total_ms = total.as_millis(),
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_lose_hop_by_hop_connection_named_and_cookie_headers() {
        let mut response = Response::new(ProxyBody::Full(bytes::Bytes::new()));
        let h = response.headers_mut();
        h.insert(
            "connection",
            HeaderValue::from_static("close, X-Upstream-Secret"),
        );
        h.insert("x-upstream-secret", HeaderValue::from_static("s"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("set-cookie", HeaderValue::from_static("LB=abc"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        let response = strip_hop_by_hop(response);
        let names: Vec<&str> = response.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type"]);
    }
}
