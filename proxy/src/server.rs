//! The internal listener (HTTP/1.1 keep-alive and HTTP/2, in clear or over TLS with
//! optional client certificates) and the admin listener, the routes, and one request
//! from arrival to answer: capacity -> route -> access control and rate -> body within
//! the limit -> DMP or INSi path -> upstream answer passed through, or a fault; then
//! metrics, the audit line (before the answer leaves) and one log line without
//! patient data.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::access::{PeerCertificate, Service};
use crate::audit::AuditRecord;
use crate::body::{ProxyBody, read_limited};
use crate::dmp::{self, DmpSummary};
use crate::fault::ProxyError;
use crate::insi;
use crate::message::SoapMessage;
use crate::runtime::Proxy;
use crate::state::{InsiMode, ProxyState};
use crate::upstream::Retry;

/// Headers that concern one connection only, never forwarded.
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

/// A running proxy: its bound addresses, its shared parts, and a handle to stop it.
#[derive(Debug)]
pub struct RunningProxy {
    pub address: SocketAddr,
    pub admin_address: SocketAddr,
    pub proxy: Arc<Proxy>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningProxy {
    /// The state in force now.
    pub fn state(&self) -> Arc<ProxyState> {
        self.proxy.state()
    }

    /// Stops accepting, lets in-flight requests finish within `grace`, then returns.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(grace + Duration::from_secs(1), task).await;
        }
    }
}

/// Serves `proxy` on the two listeners until [`RunningProxy::shutdown`].
pub fn start(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    admin: TcpListener,
    grace: Duration,
) -> std::io::Result<RunningProxy> {
    let address = listener.local_addr()?;
    let admin_address = admin.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let tls = proxy
        .state()
        .config
        .listener_tls
        .as_ref()
        .map(inbound_tls)
        .transpose()?;
    let main = tokio::spawn(serve(
        listener,
        tls,
        stopped.clone(),
        grace,
        Arc::clone(&proxy),
        |proxy, peer, cert, req| async move {
            Ok::<_, Infallible>(handle(proxy, peer, cert, req).await)
        },
    ));
    let admin_task = tokio::spawn(serve(
        admin,
        None,
        stopped,
        grace,
        Arc::clone(&proxy),
        |proxy, _, _, req| async move { Ok::<_, Infallible>(admin_route(&proxy, &req)) },
    ));
    Ok(RunningProxy {
        address,
        admin_address,
        proxy,
        stop,
        tasks: vec![main, admin_task],
    })
}

/// The internal listener's TLS: the proxy's certificate, and client certificates
/// verified against `client_ca` (optional unless required).
fn inbound_tls(t: &passerelle_config::ListenerTls) -> std::io::Result<TlsAcceptor> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let err = |e: String| std::io::Error::other(format!("listener.tls: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err(e.to_string()))?;
    let builder = if t.client_cas_der.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for ca in &t.client_cas_der {
            roots
                .add(CertificateDer::from(ca.clone()))
                .map_err(|e| err(format!("client_ca: {e}")))?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if t.require_client_certificate {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        builder.with_client_cert_verifier(verifier.build().map_err(|e| err(e.to_string()))?)
    };
    let chain = t
        .chain_der
        .iter()
        .cloned()
        .map(CertificateDer::from)
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(t.key.pkcs8_der().to_vec()));
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| err(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn serve<F, Fut>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
    grace: Duration,
    proxy: Arc<Proxy>,
    handler: F,
) where
    F: Fn(Arc<Proxy>, SocketAddr, Option<Arc<PeerCertificate>>, Request<Incoming>) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let header_read_timeout = proxy.state().config.limits.header_read_timeout;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        let handler = handler.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let service =
                        service_fn(move |req| handler(Arc::clone(&proxy), peer, None, req));
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
                Some(acceptor) => {
                    // The handshake counts against the header read timeout: a client
                    // that opens a connection and says nothing is dropped.
                    let stream = match tokio::time::timeout(
                        header_read_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake with an internal client failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| Arc::new(PeerCertificate::from_der(c)));
                    let service =
                        service_fn(move |req| handler(Arc::clone(&proxy), peer, cert.clone(), req));
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "grace period over: open connections dropped"
        );
    }
}

/// The route of a request.
enum Route {
    Dmp(String),
    Insi(Option<InsiMode>),
}

fn route(method: &Method, path: &str) -> Option<Route> {
    if method != Method::POST {
        return None;
    }
    let path = path.trim_end_matches('/');
    if let Some(service) = path.strip_prefix("/dmp/") {
        return (!service.is_empty() && !service.contains('/'))
            .then(|| Route::Dmp(service.to_string()));
    }
    match path {
        "/insi" => Some(Route::Insi(None)),
        "/insi/auto" => Some(Route::Insi(Some(InsiMode::Auto))),
        "/insi/manu" => Some(Route::Insi(Some(InsiMode::Manu))),
        _ => None,
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

/// What the log line, the metrics and the audit trail say of a request.
#[derive(Debug, Default)]
struct RequestLog {
    client: String,
    tenant: String,
    service: String,
    dmp: DmpSummary,
    insi_operation: String,
    insi_completed: Vec<&'static str>,
    insi_message_id: String,
    insi_emetteur: String,
    /// Whether an upstream exchange was attempted.
    exchanged: bool,
    upstream: Duration,
    upstream_status: u16,
    patient_ins: String,
}

impl RequestLog {
    /// The operation as a metric label, from a closed set.
    fn action_label(&self) -> &str {
        match self.dmp.operation {
            Some(op) => op.name(),
            None if self.service == "insi" => &self.insi_operation,
            None if self.dmp.action.is_empty() => "",
            None => "other",
        }
    }

    /// The Action as the internal system sent it (audit trail, log).
    fn action(&self) -> &str {
        if self.dmp.action.is_empty() {
            &self.insi_operation
        } else {
            &self.dmp.action
        }
    }
}

/// The INS an INSi answer returns (`NumIdentifiant` + `Cle`), for the audit trail.
fn returned_ins(body: &ProxyBody) -> String {
    let ProxyBody::Full(bytes) = body else {
        return String::new();
    };
    let text = String::from_utf8_lossy(bytes);
    let between = |open: &str, close: &str| {
        let start = text.find(open)? + open.len();
        let end = text[start..].find(close)?;
        Some(text[start..start + end].trim().to_string())
    };
    match (
        between("<NumIdentifiant>", "</NumIdentifiant>"),
        between("<Cle>", "</Cle>"),
    ) {
        (Some(nir), Some(key)) => format!("{nir}{key}"),
        _ => String::new(),
    }
}

async fn handle(
    proxy: Arc<Proxy>,
    peer: SocketAddr,
    cert: Option<Arc<PeerCertificate>>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let id = request_id(&req);
    let span = tracing::info_span!("request", request_id = %id);
    handle_in_span(proxy, peer, cert, req, id)
        .instrument(span)
        .await
}

async fn handle_in_span(
    proxy: Arc<Proxy>,
    peer: SocketAddr,
    cert: Option<Arc<PeerCertificate>>,
    req: Request<Incoming>,
    id: String,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let _in_flight = proxy.metrics.in_flight();
    let mut log = RequestLog::default();
    // The state in force when the request arrived serves it to the end, even across a reload.
    let state = proxy.state();
    let result = match proxy.admit() {
        Ok(_slot) => dispatch(&proxy, &state, peer, cert.as_deref(), req, &mut log).await,
        Err(e) => Err(e),
    };
    let (mut response, code) = match result {
        Ok(r) => (r, None),
        Err(e) => {
            let code = e.code();
            if e.is_access_refusal() {
                proxy.metrics.access_refused(code);
            }
            tracing::warn!(code, reason = %e, "refused");
            (e.to_response(&id), Some(code))
        }
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let outcome = match code {
        Some(c) => c,
        None if response.status().is_success() => "ok",
        None => "upstream_fault",
    };
    if log.service.is_empty() {
        log.service = "unrouted".into();
    }
    let total = started.elapsed();
    proxy
        .metrics
        .request(&log.service, log.action_label(), outcome, total);
    if log.dmp.signing > Duration::ZERO {
        proxy.metrics.signing(log.dmp.signing);
    }
    if log.exchanged {
        proxy.metrics.upstream(&log.service, log.upstream);
        if log.service == "insi" {
            log.patient_ins = returned_ins(response.body());
        }
        let record = AuditRecord {
            time: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            request_id: id.clone(),
            message_id: if log.dmp.message_id.is_empty() {
                log.insi_message_id.clone()
            } else {
                log.dmp.message_id.clone()
            },
            client: log.client.clone(),
            tenant: log.tenant.clone(),
            structure: if log.dmp.structure.is_empty() {
                log.insi_emetteur.clone()
            } else {
                log.dmp.structure.clone()
            },
            service: log.service.clone(),
            action: log.action().to_string(),
            actor_id: log.dmp.actor_id.clone(),
            patient_ins: if log.patient_ins.is_empty() {
                log.dmp.patient_ins.clone()
            } else {
                log.patient_ins.clone()
            },
            outcome: outcome.to_string(),
            upstream_status: log.upstream_status,
            latency_ms: total.as_millis() as u64,
        };
        // Written and flushed before the internal system gets its answer.
        if let Err(e) = proxy.audit().record(&record).await {
            tracing::error!(error = %e, path = %proxy.audit().path().display(), "audit trail write failed");
        }
    }
    tracing::info!(
        peer = %peer,
        client = %log.client,
        tenant = %log.tenant,
        service = %log.service,
        action = %log.action(),
        message_id = %if log.dmp.message_id.is_empty() { &log.insi_message_id } else { &log.dmp.message_id },
        structure = %log.dmp.structure,
        documents = log.dmp.documents,
        completed = ?log.insi_completed,
        status = response.status().as_u16(),
        code = code.unwrap_or("-"),
        signing_ms = log.dmp.signing.as_millis(),
        upstream_ms = log.upstream.as_millis(),
        total_ms = total.as_millis(),
        "request"
    );
    response
}

async fn dispatch(
    proxy: &Proxy,
    state: &ProxyState,
    peer: SocketAddr,
    cert: Option<&PeerCertificate>,
    req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Response<ProxyBody>, ProxyError> {
    let route = route(req.method(), req.uri().path()).ok_or_else(|| ProxyError::UnknownRoute {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
    })?;
    let service = match &route {
        Route::Dmp(name) => {
            let dmp = state
                .config
                .dmp
                .as_ref()
                .ok_or(ProxyError::ServiceNotConfigured("dmp"))?;
            if !dmp.services.contains_key(name) {
                return Err(ProxyError::UnknownDmpService(name.clone()));
            }
            Service::Dmp(name)
        }
        Route::Insi(_) => {
            state
                .config
                .insi
                .as_ref()
                .ok_or(ProxyError::ServiceNotConfigured("insi"))?;
            Service::Insi
        }
    };
    log.service = service.to_string();
    let grant = state
        .access
        .authorize(req.headers(), peer.ip(), cert, service)?;
    log.client = grant.client.clone();
    log.tenant = grant.tenant.to_string();
    proxy.take_token(&grant.client, grant.rate_per_second)?;
    let tenant = state.tenants.get(&grant.tenant).ok_or_else(|| {
        ProxyError::Internal(format!("tenant {} has no runtime state", grant.tenant))
    })?;
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
    let body = read_limited(body, declared, state.config.limits.max_body_bytes).await?;
    let response = match route {
        Route::Dmp(name) => {
            let r = dmp::forward(
                state,
                tenant,
                &name,
                &parts.headers,
                &content_type,
                body,
                &mut log.dmp,
            )
            .await;
            log.exchanged = log.dmp.exchanged;
            log.upstream = log.dmp.upstream;
            r?
        }
        Route::Insi(mode) => {
            let (_, upstream) = insi::select(tenant, mode)?;
            upstream.credential.check(time::OffsetDateTime::now_utc())?;
            let message = SoapMessage::read(&content_type, body)?;
            let request = insi::prepare(
                message,
                upstream,
                &state.config.software,
                time::OffsetDateTime::now_utc(),
            )?;
            log.insi_operation = request.operation.clone();
            log.insi_completed = request.completed.clone();
            log.insi_message_id = request.message_id.clone();
            log.insi_emetteur = upstream.emetteur.clone();
            log.exchanged = true;
            let sent_at = Instant::now();
            // INSi searches read only: one retry if the first attempt was never written.
            let r = upstream
                .pool
                .send(&content_type, &[], vec![request.body], Retry::IfNotSent)
                .await;
            log.upstream = sent_at.elapsed();
            r?
        }
    };
    log.upstream_status = response.status().as_u16();
    Ok(strip_hop_by_hop(response))
}

fn strip_hop_by_hop(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    for name in HOP_BY_HOP {
        response.headers_mut().remove(name);
    }
    response
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::Full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    r
}

/// Admin routes: `/healthz`, `/readyz`, `/metrics` (Prometheus text) and `/pools`.
fn admin_route(proxy: &Proxy, req: &Request<Incoming>) -> Response<ProxyBody> {
    let state = proxy.state();
    let now = time::OffsetDateTime::now_utc();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/readyz") => {
            let expired: Vec<String> = state
                .credentials()
                .filter(|c| c.check(now).is_err())
                .map(|c| format!("{} {}", c.tenant, c.role))
                .collect();
            if expired.is_empty() {
                text(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("expired certificates: {}\n", expired.join(", ")),
                )
            }
        }
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            proxy.metrics.render(&state, now),
        ),
        (&Method::GET, "/pools") => {
            let pools: Vec<serde_json::Value> = state
                .pools()
                .map(|p| {
                    serde_json::json!({
                        "pool": p.name(),
                        "url": p.url(),
                        "connections": p.stats.connections.load(Ordering::Relaxed),
                        "full_handshakes": p.stats.full_handshakes.load(Ordering::Relaxed),
                        "resumed_handshakes": p.stats.resumed_handshakes.load(Ordering::Relaxed),
                        "requests": p.stats.requests.load(Ordering::Relaxed),
                        "idle": p.idle_connections(),
                    })
                })
                .collect();
            text(
                StatusCode::OK,
                "application/json",
                serde_json::Value::Array(pools).to_string(),
            )
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "GET /healthz, /readyz, /metrics or /pools\n".into(),
        ),
    }
}
