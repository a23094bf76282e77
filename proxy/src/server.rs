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
    stop_internal: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
    internal: JoinHandle<()>,
    admin: JoinHandle<()>,
}

impl RunningProxy {
    /// The state in force now.
    pub fn state(&self) -> Arc<ProxyState> {
        self.proxy.state()
    }

    /// `/readyz` answers 503 "draining" from now on; requests are still served (a load
    /// balancer takes a probe period or two to stop sending).
    pub fn drain(&self) {
        self.proxy.metrics.draining.store(true, Ordering::Relaxed);
    }

    /// Drains, stops accepting internal connections, lets in-flight requests finish
    /// within `grace`, then stops the admin listener (which answered "draining" all
    /// along) and returns.
    ///
    /// "In flight" counts request tasks, not connections: an exchange goes on after its
    /// client went away (it may have reached the national service) and is awaited too,
    /// so its audit line is written before the process ends.
    pub async fn shutdown(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        self.drain();
        let _ = self.stop_internal.send(true);
        let _ = tokio::time::timeout_at(deadline + Duration::from_secs(1), self.internal).await;
        while self.proxy.metrics.requests_in_flight() > 0 && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = self.proxy.metrics.requests_in_flight();
        if left > 0 {
            tracing::warn!(
                requests = left,
                grace_s = grace.as_secs(),
                "grace period over: requests still in flight are abandoned"
            );
        }
        let _ = self.stop_admin.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.admin).await;
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
    let (stop_internal, stopped) = watch::channel(false);
    let (stop_admin, admin_stopped) = watch::channel(false);
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
        admin_stopped,
        Duration::from_secs(1),
        Arc::clone(&proxy),
        (admin_table, admin_policy),
        |proxy, _, _, req| async move { Ok::<_, Infallible>(admin_route(&proxy, &req)) },
    ));
    Ok(RunningProxy {
        address,
        admin_address,
        proxy,
        stop_internal,
        stop_admin,
        internal: main,
        admin: admin_task,
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

/// Whether `req` may use an admin route other than `/healthz`: always when
/// `[admin] token_sha256` is not set, else with that bearer token.
fn admin_allowed(state: &ProxyState, req: &Request<Incoming>) -> bool {
    let Some(expected) = state.config.admin_token_sha256 else {
        return true;
    };
    crate::access::bearer(req.headers()).is_some_and(|token| {
        openssl::memcmp::eq(&openssl::sha::sha256(token.as_bytes()), &expected)
    })
}

/// `/readyz`: 503 "draining" once shutdown began; otherwise 200 with the (tenant,
/// role) pairs disabled by an unusable certificate listed (each of their requests gets
/// its fault, the other pairs serve), or 503 when `?strict` asks for all-or-nothing.
fn readiness(proxy: &Proxy, state: &ProxyState, strict: bool) -> Response<ProxyBody> {
    if proxy.metrics.draining.load(Ordering::Relaxed) {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining: shutting down, in-flight requests are finishing\n".into(),
        );
    }
    // Our clock off from every national service heard from in the last minutes: a local
    // clock problem (every VIHF would be refused), not one service's. One service off
    // while others agree is for its alert, not a reason to take the instance out.
    let max = i64::try_from(state.config.max_clock_skew.as_secs()).unwrap_or(i64::MAX);
    let observed: Vec<(String, i64)> = state
        .pools()
        .filter_map(|p| Some((p.name().to_string(), p.stats.clock_skew()?)))
        .collect();
    if !observed.is_empty() && observed.iter().all(|(_, skew)| skew.abs() > max) {
        let skewed: Vec<String> = observed
            .iter()
            .map(|(name, skew)| format!("{name}: {skew} s"))
            .collect();
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!(
                "not ready: clock skew with the national services beyond security.max_clock_skew ({max} s), check NTP: {}\n",
                skewed.join(", ")
            ),
        );
    }
    let audit = proxy.audit().status();
    if audit.refusing {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!(
                "not ready: audit database {} unreachable and [audit] on_failure = \"refuse\": requests are refused (AuditUnavailable) until it is back\n",
                proxy.audit().describe()
            ),
        );
    }
    // A certificate OCSP says is revoked: the CA withdrew it now, which an operator must
    // act on at once (a CRL revocation found at load shows as a degraded pair below).
    let ocsp_revoked: Vec<String> = state
        .credentials()
        .filter_map(|c| {
            c.ocsp_revoked
                .get()
                .map(|why| format!("{} {}: {why}", c.tenant, c.role))
        })
        .filter(|_| state.config.ocsp.is_some())
        .collect();
    if !ocsp_revoked.is_empty() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!(
                "not ready: certificate revoked (OCSP), its requests are refused (CertificateRevoked): {}\n",
                ocsp_revoked.join("; ")
            ),
        );
    }
    // A key's token unusable (an HSM unreachable, a token pulled out, its PIN refused):
    // usually every tenant of the instance is hit, and another replica may reach it.
    let tokens: Vec<String> = state
        .credentials()
        .filter_map(|c| {
            c.token_unavailable()
                .map(|why| format!("{} {}: {why}", c.tenant, c.role))
        })
        .collect();
    if !tokens.is_empty() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!(
                "not ready: key token unavailable, its requests are refused (KeyUnavailable) until it is back: {}\n",
                tokens.join("; ")
            ),
        );
    }
    let now = time::OffsetDateTime::now_utc();
    let degraded = state.degraded(now);
    // No service of any tenant left (a DMP needs both its certificates): nothing can be
    // served, whatever `strict` says.
    let none_usable = !degraded.is_empty() && !state.can_serve(now);
    // Served, records spooled: ready, but an operator must know.
    let spooling = !audit.up || audit.spooled > 0;
    let mut crls = crl_lines(proxy, state, now);
    crls.extend(ocsp_lines(state));
    let mut body = String::from(if none_usable {
        "not ready: no usable certificate\n"
    } else if degraded.is_empty() && !spooling && crls.is_empty() {
        "ready\n"
    } else {
        "ready, degraded\n"
    });
    if spooling {
        body.push_str(&format!(
            "degraded audit: database {} {}, {} record(s) in the local spool (replayed once it is reachable)\n",
            proxy.audit().describe(),
            if audit.up { "reachable again" } else { "unreachable" },
            audit.spooled
        ));
    }
    for (c, why) in &degraded {
        body.push_str(&format!(
            "degraded {} {} {}: {why}\n",
            c.tenant,
            c.role,
            why.code()
        ));
    }
    for line in &crls {
        body.push_str(line);
    }
    let status = if none_usable || strict && (!degraded.is_empty() || spooling || !crls.is_empty())
    {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    text(status, "text/plain", body)
}

/// The CRLs an operator must look at: in use past their `nextUpdate`, and downloads
/// with no copy yet. Revocation still works with the copy kept, so the instance stays
/// ready (`strict` aside).
fn crl_lines(proxy: &Proxy, state: &ProxyState, now: time::OffsetDateTime) -> Vec<String> {
    let mut out: Vec<String> = state
        .config
        .crls
        .iter()
        .filter(|c| c.stale(now))
        .map(|c| {
            format!(
                "degraded crl {}: past its nextUpdate ({}): revocations published since are not seen{}\n",
                c.source(),
                c.next_update
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_default(),
                if c.url.is_some() {
                    "; the downloads fail (see \"CRL download failed\" in the log)"
                } else {
                    ""
                }
            )
        })
        .collect();
    if let Some(plan) = &state.config.crl_download {
        let failing = proxy.metrics.crl.snapshot();
        for source in &plan.sources {
            let url = source.url.to_string();
            let kept = state
                .config
                .crls
                .iter()
                .any(|c| c.url.as_deref() == Some(&url));
            if let Some(error) = failing
                .iter()
                .find(|(u, _)| *u == url)
                .and_then(|(_, s)| s.last_error.as_ref())
                .filter(|_| !kept)
            {
                out.push(format!(
                    "degraded crl {url}: no copy downloaded yet: {error}\n"
                ));
            }
        }
    }
    out
}

/// The certificates OCSP could not vouch for (soft-fail: served, but an operator must
/// know): the responder does not know them, or gave no usable answer; ours, and the
/// national services' (`degraded ocsp server <CN>`).
fn ocsp_lines(state: &ProxyState) -> Vec<String> {
    use crate::state::OcspVerdict;
    if state.config.ocsp.is_none() {
        return Vec::new();
    }
    state
        .ocsp
        .snapshot()
        .into_iter()
        .filter(|((tenant, role), checked)| {
            // Only the certificates in use now.
            state.credentials().any(|c| {
                c.tenant.as_str() == tenant && c.role == *role && c.serial == checked.serial
            })
        })
        .filter_map(|((tenant, role), checked)| match checked.verdict {
            OcspVerdict::Unknown => Some(format!(
                "degraded ocsp {tenant} {role}: the responder does not know this certificate\n"
            )),
            OcspVerdict::Failed(why) => Some(format!("degraded ocsp {tenant} {role}: {why}\n")),
            _ => None,
        })
        .chain(
            state
                .ocsp
                .servers
                .unknown()
                .into_iter()
                .map(|(server, why)| format!("degraded ocsp server {server}: {why}\n")),
        )
        .collect()
}

/// Admin routes: `/healthz`, `/readyz[?strict]`, `/metrics` (Prometheus text) and
/// `/pools`; all but `/healthz` behind `[admin] token_sha256` when it is set.
fn admin_route(proxy: &Proxy, req: &Request<Incoming>) -> Response<ProxyBody> {
    let state = proxy.state();
    let now = time::OffsetDateTime::now_utc();
    let path = req.uri().path();
    if path != "/healthz" && !admin_allowed(&state, req) {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "send 'Authorization: Bearer <token>': the admin token whose SHA-256 is [admin] token_sha256\n"
                .into(),
        );
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"passerelle-admin\""),
        );
        return r;
    }
    match (req.method(), path) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/readyz") => {
            let strict = req.uri().query().is_some_and(|q| {
                q.split('&')
                    .any(|kv| matches!(kv, "strict" | "strict=1" | "strict=true"))
            });
            readiness(proxy, &state, strict)
        }
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            proxy.metrics.render(&state, now, proxy.audit().status()),
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
                        "route": p.route(),
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
