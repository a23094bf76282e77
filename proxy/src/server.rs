//! The internal listener (HTTP/1.1 keep-alive and HTTP/2, in clear or over TLS with
//! optional client certificates) and the admin listener. Each request of the internal
//! listener goes through [`crate::pipeline`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::access::PeerCertificate;
use crate::body::ProxyBody;
use crate::listener::{self, ConnectionPolicy, ConnectionTable, Phase};
use crate::pipeline;
use crate::runtime::Proxy;
use crate::state::ProxyState;

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
///
/// Each listener has its own accept loop and its own connection table: the internal
/// one's cap is `listener.max_connections` (derived from the open-files limit when not
/// set), the admin one's is small and separate, so operators reach `/healthz` and
/// `/metrics` while internal clients saturate theirs.
pub fn start(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    admin: TcpListener,
    grace: Duration,
) -> std::io::Result<RunningProxy> {
    let address = listener.local_addr()?;
    let admin_address = admin.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let state = proxy.state();
    let tls = state
        .config
        .listener_tls
        .as_ref()
        .map(inbound_tls)
        .transpose()?;
    let limits = &state.config.limits;
    let policy = ConnectionPolicy::internal(limits);
    let open_files = listener::open_files_limit();
    tracing::info!(
        max_connections = policy.max_connections,
        configured = limits.max_connections.is_some(),
        open_files_limit = open_files.map_or_else(|| "unknown".to_string(), |n| n.to_string()),
        admin_max_connections = listener::ADMIN_MAX_CONNECTIONS,
        "client connections capped"
    );
    if let Some(n) = limits.max_connections
        && let Some(files) = open_files
        && n > listener::derived_max_connections(Some(files))
    {
        tracing::warn!(
            max_connections = n,
            open_files_limit = files,
            "listener.max_connections leaves little of the open-files limit for upstream connections and the admin listener: raise the limit (LimitNOFILE=) or lower listener.max_connections"
        );
    }
    let internal = ConnectionTable::new(
        policy.max_connections,
        Arc::clone(&proxy.metrics.internal_connections),
    );
    let main = tokio::spawn(serve(
        listener,
        tls,
        stopped.clone(),
        grace,
        Arc::clone(&proxy),
        (internal, policy),
        |proxy, peer, cert, req| async move {
            Ok::<_, Infallible>(pipeline::handle(proxy, peer, cert, req).await)
        },
    ));
    let admin_policy = ConnectionPolicy::admin(limits);
    let admin_table = ConnectionTable::new(
        admin_policy.max_connections,
        Arc::clone(&proxy.metrics.admin_connections),
    );
    let admin_task = tokio::spawn(serve(
        admin,
        None,
        stopped,
        grace,
        Arc::clone(&proxy),
        (admin_table, admin_policy),
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

/// One listener's accept loop: each connection gets a slot in `table` (or is closed at
/// once), then is served under `policy` (see [`listener`]) until it ends or the
/// listener stops; on stop, requests in flight get `grace` to finish.
async fn serve<F, Fut>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
    grace: Duration,
    proxy: Arc<Proxy>,
    (table, policy): (Arc<ConnectionTable>, ConnectionPolicy),
    handler: F,
) where
    F: Fn(Arc<Proxy>, SocketAddr, Option<Arc<PeerCertificate>>, Request<Incoming>) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let builder = policy.http();
    let (phase, phases) = watch::channel(Phase::Serving);
    // Every connection task holds a sender: `recv` ends when the last one has ended.
    let (running, mut ended) = mpsc::channel::<()>(1);
    let mut backoff = Duration::ZERO;
    let mut refusals_logged: Option<(Instant, u64)> = None;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff = Duration::ZERO;
                    a
                }
                Err(e) if listener::is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: pause, longer each time.
                    if backoff.is_zero() {
                        tracing::warn!(error = %e, open = table.len(), "accept failed: pausing this listener");
                    }
                    backoff = listener::accept_backoff(backoff);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => continue,
                        _ = stopped.changed() => break,
                    }
                }
            },
            _ = stopped.changed() => break,
        };
        let Some(slot) = table.admit() else {
            // Every connection has a request in flight: this one is closed at once.
            drop(stream);
            let refused = table.counters().refused.load(Ordering::Relaxed);
            if refusals_logged.is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(10)) {
                tracing::warn!(
                    peer = %peer,
                    max_connections = table.cap(),
                    refused_since_last = refused - refusals_logged.map_or(0, |(_, n)| n),
                    "connection refused: every open connection has a request in flight"
                );
                refusals_logged = Some((Instant::now(), refused));
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        let handler = handler.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let mut phases = phases.clone();
        let running = running.clone();
        tokio::spawn(async move {
            let _running = running;
            let connection = Arc::clone(slot.state());
            let result = match tls {
                None => {
                    let service = listener::Tracked::new(
                        connection,
                        service_fn(move |req| handler(Arc::clone(&proxy), peer, None, req)),
                    );
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    listener::drive(conn, &slot, &policy, phases).await
                }
                Some(acceptor) => {
                    // The handshake counts against the first request's deadline: a
                    // client that opens a connection and says nothing is dropped.
                    let stream = match listener::before_first_request(
                        &slot,
                        &policy,
                        &mut phases,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake with an internal client failed");
                            return;
                        }
                        Err(why) => {
                            tracing::debug!(peer = %peer, ?why, "connection closed during the TLS handshake");
                            return;
                        }
                    };
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| Arc::new(PeerCertificate::from_der(c)));
                    let service = listener::Tracked::new(
                        connection,
                        service_fn(move |req| handler(Arc::clone(&proxy), peer, cert.clone(), req)),
                    );
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    listener::drive(conn, &slot, &policy, phases).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(running);
    let _ = phase.send(Phase::Draining);
    if tokio::time::timeout(grace, ended.recv()).await.is_err() {
        tracing::warn!(
            grace_s = grace.as_secs(),
            open = table.len(),
            "grace period over: open connections dropped"
        );
        let _ = phase.send(Phase::Closed);
    }
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
