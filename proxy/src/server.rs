//! The internal listener (HTTP/1.1 keep-alive and cleartext HTTP/2) and the admin
//! listener, the routes, and one request from arrival to answer:
//! route -> access control -> body within the limit -> DMP or INSi path -> upstream
//! answer passed through, or a fault. One log line per request, without patient data.

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

use crate::access::Service;
use crate::body::{ProxyBody, read_limited};
use crate::dmp::{self, DmpSummary};
use crate::fault::ProxyError;
use crate::insi;
use crate::message::SoapMessage;
use crate::state::{InsiMode, ProxyState};
use crate::upstream::Retry;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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

/// A running proxy: its bound addresses, its state, and a handle to stop it.
#[derive(Debug)]
pub struct RunningProxy {
    pub address: SocketAddr,
    pub admin_address: SocketAddr,
    pub state: Arc<ProxyState>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningProxy {
    /// Stops accepting, lets in-flight requests finish within `grace`, then returns.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(grace + Duration::from_secs(1), task).await;
        }
    }
}

/// Serves `state` on the two listeners until [`RunningProxy::shutdown`].
pub fn start(
    state: Arc<ProxyState>,
    listener: TcpListener,
    admin: TcpListener,
    grace: Duration,
) -> std::io::Result<RunningProxy> {
    let address = listener.local_addr()?;
    let admin_address = admin.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let main = tokio::spawn(serve(
        listener,
        stopped.clone(),
        grace,
        Arc::clone(&state),
        |state, peer, req| async move { Ok::<_, Infallible>(handle(state, peer, req).await) },
    ));
    let admin_task = tokio::spawn(serve(
        admin,
        stopped,
        grace,
        Arc::clone(&state),
        |state, _, req| async move { Ok::<_, Infallible>(admin_route(&state, &req)) },
    ));
    Ok(RunningProxy {
        address,
        admin_address,
        state,
        stop,
        tasks: vec![main, admin_task],
    })
}

async fn serve<F, Fut>(
    listener: TcpListener,
    mut stopped: watch::Receiver<bool>,
    grace: Duration,
    state: Arc<ProxyState>,
    handler: F,
) where
    F: Fn(Arc<ProxyState>, SocketAddr, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
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
        let state = Arc::clone(&state);
        let handler = handler.clone();
        let service = service_fn(move |req| handler(Arc::clone(&state), peer, req));
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
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

/// What the log line of a request says.
#[derive(Debug, Default)]
struct RequestLog {
    client: String,
    tenant: String,
    service: String,
    forward_ms: Option<u128>,
    dmp: DmpSummary,
    insi_operation: String,
    insi_completed: Vec<&'static str>,
}

async fn handle(
    state: Arc<ProxyState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let id = request_id(&req);
    let mut log = RequestLog::default();
    let (mut response, code) = match dispatch(&state, peer, req, &mut log).await {
        Ok(r) => (r, None),
        Err(e) => {
            let code = e.code();
            tracing::warn!(request_id = %id, code, reason = %e, "refused");
            (e.to_response(&id), Some(code))
        }
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    tracing::info!(
        request_id = %id,
        peer = %peer,
        client = %log.client,
        tenant = %log.tenant,
        service = %log.service,
        action = %if log.dmp.action.is_empty() { &log.insi_operation } else { &log.dmp.action },
        message_id = %log.dmp.message_id,
        structure = %log.dmp.structure,
        documents = log.dmp.documents,
        completed = ?log.insi_completed,
        status = response.status().as_u16(),
        code = code.unwrap_or("-"),
        forward_ms = log.forward_ms.unwrap_or(0),
        total_ms = started.elapsed().as_millis(),
        "request"
    );
    response
}

async fn dispatch(
    state: &ProxyState,
    peer: SocketAddr,
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
    let grant = state.access.authorize(req.headers(), peer.ip(), service)?;
    log.client = grant.client.clone();
    log.tenant = grant.tenant.to_string();
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
    let sent_at = Instant::now();
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
            log.forward_ms = Some(sent_at.elapsed().as_millis());
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
            let sent_at = Instant::now();
            // INSi searches read only: one retry if the first attempt was never written.
            let r = upstream
                .pool
                .send(&content_type, &[], vec![request.body], Retry::IfNotSent)
                .await;
            log.forward_ms = Some(sent_at.elapsed().as_millis());
            r?
        }
    };
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

/// Admin routes: `/healthz` and `/pools` (connection and handshake counters per pool).
fn admin_route(state: &ProxyState, req: &Request<Incoming>) -> Response<ProxyBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n".into()),
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
            "GET /healthz or /pools\n".into(),
        ),
    }
}
