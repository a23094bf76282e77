//! The mocks' servers: HTTPS (HTTP/1.1 keep-alive over TLS with a required client
//! certificate) for the service, plain HTTP for the admin port.
//!
//! A [`Service`] answers a [`MockRequest`]; this module applies the fault decisions,
//! records statistics and streams the body (slowly, or cut, when asked).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use passerelle_config::CertificateInfo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::MockError;
use crate::faults::{Decision, Faults};
use crate::stats::{ReceivedBody, RequestRecord, Stats};

/// Largest request body a mock reads.
const MAX_BODY: usize = 256 * 1024 * 1024;

/// The TLS client as the mock saw it.
#[derive(Debug, Clone, Default)]
pub struct ClientIdentity {
    /// RFC 2253 subject DN.
    pub subject: String,
    pub common_name: Option<String>,
    pub organizational_unit: Option<String>,
    pub serial_hex: String,
}

#[derive(Debug)]
pub struct MockRequest {
    pub method: http::Method,
    pub path: String,
    /// The query string, without its `?`.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub client: ClientIdentity,
}

#[derive(Debug, Clone)]
pub struct MockResponse {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Bytes,
    /// Operation name for statistics and fault selection.
    pub operation: String,
    /// `ok`, or the check that refused the request.
    pub outcome: String,
}

/// A mock service.
pub trait Service: Send + Sync + 'static {
    fn handle(&self, request: &MockRequest) -> MockResponse;
    /// The answer when fault injection fails a request of `operation`.
    fn unavailable(&self, operation: &str) -> MockResponse;
}

/// A mock running on the current tokio runtime; dropping it stops its listeners.
#[derive(Debug)]
pub struct Running {
    pub address: SocketAddr,
    pub admin_address: SocketAddr,
    pub stats: Arc<Stats>,
    pub faults: Arc<Faults>,
    shutdown: watch::Sender<bool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Binds both ports and serves `service` until the returned handle is dropped.
pub async fn start(
    service: Arc<dyn Service>,
    tls: Arc<rustls::ServerConfig>,
    listen: SocketAddr,
    admin: SocketAddr,
    faults: Faults,
) -> Result<Running, MockError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| MockError::Listen {
            address: listen,
            source,
        })?;
    let admin_listener = TcpListener::bind(admin)
        .await
        .map_err(|source| MockError::Listen {
            address: admin,
            source,
        })?;
    let address = listener.local_addr().map_err(|source| MockError::Listen {
        address: listen,
        source,
    })?;
    let admin_address = admin_listener
        .local_addr()
        .map_err(|source| MockError::Listen {
            address: admin,
            source,
        })?;
    let stats = Arc::new(Stats::default());
    let faults = Arc::new(faults);
    let (shutdown, watch_rx) = watch::channel(false);
    tokio::spawn(serve_tls(
        listener,
        tls,
        service,
        stats.clone(),
        faults.clone(),
        watch_rx.clone(),
    ));
    tokio::spawn(serve_admin(
        admin_listener,
        stats.clone(),
        faults.clone(),
        watch_rx,
    ));
    Ok(Running {
        address,
        admin_address,
        stats,
        faults,
        shutdown,
    })
}

async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: Arc<dyn Service>,
    stats: Arc<Stats>,
    faults: Arc<Faults>,
    shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    accept_loop(listener, shutdown, move |tcp| {
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let (service, stats, faults) = (service.clone(), stats.clone(), faults.clone());
        async move {
            // A refused handshake (no or foreign client certificate) just closes.
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            stats.handshake();
            let client = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|der| CertificateInfo::from_der(der).ok())
                .map(|info| ClientIdentity {
                    subject: info.subject,
                    common_name: info.common_name,
                    organizational_unit: info.organizational_unit,
                    serial_hex: info.serial_hex,
                })
                .unwrap_or_default();
            let client = Arc::new(client);
            let svc = service_fn(move |req: Request<Incoming>| {
                let (service, stats, faults, client) = (
                    service.clone(),
                    stats.clone(),
                    faults.clone(),
                    client.clone(),
                );
                async move {
                    Ok::<_, Infallible>(answer(req, &*service, &stats, &faults, &client).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    })
    .await;
}

/// Accepts connections until shutdown, serving each on its own task.
async fn accept_loop<F, Fut>(listener: TcpListener, mut shutdown: watch::Receiver<bool>, serve: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                // A failed accept (e.g. too many open files) affects one connection only.
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        tokio::spawn(serve(tcp));
    }
}

async fn answer(
    req: Request<Incoming>,
    service: &dyn Service,
    stats: &Stats,
    faults: &Faults,
    client: &ClientIdentity,
) -> Response<FaultyBody> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or interrupted\n",
            );
        }
    };
    let request = MockRequest {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
        client: client.clone(),
    };
    let mut response = service.handle(&request);
    // Recorded on receipt, before any injected latency, as a real server would log it.
    stats.record_body(ReceivedBody {
        operation: response.operation.clone(),
        content_type: request
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        body: request.body.clone(),
    });
    let decision = faults.decide(&response.operation);
    if decision.fail {
        let op = response.operation.clone();
        response = service.unavailable(&op);
        response.outcome = "injected_fault".into();
    }
    if decision.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(decision.latency_ms)).await;
    }
    stats.record(RequestRecord {
        operation: response.operation.clone(),
        outcome: response.outcome.clone(),
        client_subject: client.subject.clone(),
        client_serial: client.serial_hex.clone(),
    });
    let mut builder = Response::builder()
        .status(response.status)
        .header(http::header::CONTENT_TYPE, response.content_type);
    if decision.clock_offset_s != 0 {
        let offset = std::time::Duration::from_secs(decision.clock_offset_s.unsigned_abs());
        let now = std::time::SystemTime::now();
        let shown = if decision.clock_offset_s > 0 {
            now + offset
        } else {
            now - offset
        };
        builder = builder.header(http::header::DATE, httpdate::fmt_http_date(shown));
    }
    if decision.reset_after_bytes.is_some() || decision.slow_body_bytes_per_sec.is_some() {
        builder = builder.header(http::header::CONTENT_LENGTH, response.body.len());
    }
    builder
        .body(FaultyBody::new(response.body, &decision))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot build response\n"))
}

fn plain(status: StatusCode, text: &'static str) -> Response<FaultyBody> {
    let mut r = Response::new(FaultyBody::new(
        Bytes::from_static(text.as_bytes()),
        &Decision::default(),
    ));
    *r.status_mut() = status;
    r
}

/// A response body that may be cut after N bytes or sent slowly.
pub struct FaultyBody {
    data: Bytes,
    sent: usize,
    reset_after: Option<usize>,
    chunk: usize,
    delay: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The cut point was reached and a pause armed, so that the bytes before it are
    /// flushed to the wire before the connection is reset.
    reset_armed: bool,
}

impl std::fmt::Debug for FaultyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyBody")
            .field("len", &self.data.len())
            .field("sent", &self.sent)
            .field("reset_after", &self.reset_after)
            .finish_non_exhaustive()
    }
}

impl FaultyBody {
    fn new(data: Bytes, decision: &Decision) -> Self {
        let (chunk, delay) = match decision.slow_body_bytes_per_sec {
            // Ten chunks a second at the requested rate.
            Some(rate) if rate > 0 => (
                ((rate / 10).max(1)) as usize,
                Some(Duration::from_millis(100)),
            ),
            _ => (usize::MAX, None),
        };
        Self {
            data,
            sent: 0,
            reset_after: decision.reset_after_bytes.map(|n| n as usize),
            chunk,
            delay,
            sleep: None,
            reset_armed: false,
        }
    }
}

impl Body for FaultyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.sent >= this.data.len() {
            return Poll::Ready(None);
        }
        let at_cut = this.reset_after.is_some_and(|limit| this.sent >= limit);
        if at_cut && !this.reset_armed {
            this.reset_armed = true;
            this.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
        }
        if let Some(sleep) = this.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        if at_cut {
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "fault injection: connection reset",
            ))));
        }
        let end = this
            .data
            .len()
            .min(this.sent.saturating_add(this.chunk))
            .min(this.reset_after.unwrap_or(usize::MAX).max(this.sent + 1));
        let frame = this.data.slice(this.sent..end);
        this.sent = end;
        if let Some(delay) = this.delay {
            this.sleep = Some(Box::pin(tokio::time::sleep(delay)));
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.data.len()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact((self.data.len() - self.sent) as u64)
    }
}

async fn serve_admin(
    listener: TcpListener,
    stats: Arc<Stats>,
    faults: Arc<Faults>,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(listener, shutdown, move |tcp| {
        let (stats, faults) = (stats.clone(), faults.clone());
        async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (stats, faults) = (stats.clone(), faults.clone());
                async move { Ok::<_, Infallible>(admin(req, &stats, &faults).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        }
    })
    .await;
}

async fn admin(req: Request<Incoming>, stats: &Stats, faults: &Faults) -> Response<Full<Bytes>> {
    let json = |status: StatusCode, v: serde_json::Value| {
        let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    };
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/health") => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
        ("GET", "/stats") => json(StatusCode::OK, stats.to_json()),
        ("GET", "/faults") => json(StatusCode::OK, serde_json::json!(faults.snapshot())),
        ("PUT", "/faults") => {
            let body = match Limited::new(req.into_body(), 1024 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": "unreadable body"}),
                    );
                }
            };
            match serde_json::from_slice(&body)
                .map_err(|e| e.to_string())
                .and_then(|specs| faults.replace(specs))
            {
                Ok(()) => json(StatusCode::OK, serde_json::json!(faults.snapshot())),
                Err(e) => json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": e })),
            }
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "GET /health, GET /stats, GET /faults, PUT /faults"}),
        ),
    }
}
