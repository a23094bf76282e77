//! The load generator: keep-alive HTTP/1.1 connections (plain or mutual TLS) driven at a
//! fixed concurrency or a fixed rate, latencies in an HDR histogram.
//!
//! Fixed rate measures each latency from the request's *intended* send time, so a slow
//! answer that delays the following requests is counted in their latency too (no
//! coordinated omission). A warm-up period runs first and is not recorded; the
//! measurement stops at its deadline or after a request budget.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde::Serialize;

/// How the load is applied.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// This many connections, each sending its next request when the last is answered.
    Concurrency(usize),
    /// This many requests a second in all, spread over `connections`.
    Rate { per_second: f64, connections: usize },
}

/// One run's bounds.
#[derive(Debug, Clone, Copy)]
pub struct LoadConfig {
    pub mode: Mode,
    pub warmup: Duration,
    pub duration: Duration,
    /// Send at most this many requests in all, warm-up included (e.g. the number of
    /// submissions signed in advance, each usable once).
    pub max_requests: Option<u64>,
}

/// Where the generator connects.
#[derive(Clone)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// Mutual TLS (direct access to the services) or plain HTTP (a proxy).
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// What is sent, and how an answer is judged.
pub trait Workload: Send + Sync {
    /// Request number `i` (0-based, warm-up included).
    fn request(&self, i: u64) -> http::Request<Full<Bytes>>;
    /// `Err(kind)` when the answer is not the expected one.
    fn check(&self, status: u16, body: &[u8]) -> Result<(), &'static str>;
    /// [`Self::check`] for the answer to request number `i` (a mix of workloads judges
    /// each answer by the workload that sent it).
    fn check_answer(&self, _i: u64, status: u16, body: &[u8]) -> Result<(), &'static str> {
        self.check(status, body)
    }
}

/// What one window of a run measured ([`run_windowed`]): the requests answered (or
/// failed) during it, latencies from their intended send times.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// End of the window, from the start of the measurement.
    pub at: Duration,
    pub requests: u64,
    pub errors: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub mode: Mode,
    pub requests: u64,
    pub errors: BTreeMap<String, u64>,
    pub seconds: f64,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// A window's latencies and errors by kind.
type WindowFigures = (Histogram<u64>, BTreeMap<String, u64>);

struct Shared {
    histogram: Mutex<Histogram<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// The current window's latencies and errors, when the run is windowed.
    window: Option<Mutex<WindowFigures>>,
    next: AtomicU64,
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

impl Shared {
    fn error(&self, kind: &str) {
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(kind.to_string()).or_default() += 1;
        }
        if let Some(Ok(mut w)) = self.window.as_ref().map(Mutex::lock) {
            *w.1.entry(kind.to_string()).or_default() += 1;
        }
    }

    fn latency(&self, latency: Duration) {
        let micros = latency.as_micros().max(1) as u64;
        if let Ok(mut h) = self.histogram.lock() {
            let _ = h.record(micros);
        }
        if let Some(Ok(mut w)) = self.window.as_ref().map(Mutex::lock) {
            let _ = w.0.record(micros);
        }
    }

    /// The current window's figures, and a new window begun.
    fn take_window(&self, at: Duration) -> Option<Window> {
        let mut w = self.window.as_ref()?.lock().ok()?;
        let (h, errors) = std::mem::replace(&mut *w, (new_histogram(), BTreeMap::new()));
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Some(Window {
            at,
            requests: h.len(),
            errors,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            max_ms: h.max() as f64 / 1000.0,
        })
    }
}

async fn connect(endpoint: &Endpoint) -> Result<SendRequest<Full<Bytes>>, &'static str> {
    let tcp = tokio::net::TcpStream::connect(endpoint.address)
        .await
        .map_err(|_| "connect")?;
    let _ = tcp.set_nodelay(true);
    match &endpoint.tls {
        None => {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|_| "http")?;
            tokio::spawn(conn);
            Ok(sender)
        }
        Some((config, name)) => {
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
                .connect(name.clone(), tcp)
                .await
                .map_err(|_| "tls")?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|_| "http")?;
            tokio::spawn(conn);
            Ok(sender)
        }
    }
}

/// The longest a request may take, answer included: far above any timeout of the
/// proxy under test.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// One request on `sender`; `Err(kind)` on failure.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    workload: &dyn Workload,
    i: u64,
) -> Result<(), &'static str> {
    sender.ready().await.map_err(|_| "io")?;
    let response = sender
        .send_request(workload.request(i))
        .await
        .map_err(|_| "io")?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|_| "io")?
        .to_bytes();
    match status {
        200..=299 => workload.check_answer(i, status, &body),
        400..=499 => Err("status_4xx"),
        _ => Err("status_5xx"),
    }
}

/// Drives one connection until `end`: the worker of both modes. With `pace`, request
/// `k` of this worker is due at `start + k * pace` and its latency counts from then.
async fn worker(
    endpoint: Endpoint,
    workload: Arc<dyn Workload>,
    shared: Arc<Shared>,
    measure_from: Instant,
    end: Instant,
    max: Option<u64>,
    pace: Option<(Instant, Duration)>,
) {
    let mut sender = None;
    let mut k: u32 = 0;
    loop {
        let intended = match pace {
            Some((start, every)) => {
                let due = start + every * k;
                k += 1;
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                due
            }
            None => Instant::now(),
        };
        if intended >= end {
            return;
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if max.is_some_and(|m| i >= m) {
            return;
        }
        if sender.is_none() {
            match connect(&endpoint).await {
                Ok(s) => sender = Some(s),
                Err(kind) => {
                    if intended >= measure_from {
                        shared.error(kind);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        // A request that never ends would silently stop its connection's share of
        // the load: it is an error of its own, and the connection is dropped.
        let result = tokio::time::timeout(REQUEST_TIMEOUT, exchange(s, workload.as_ref(), i))
            .await
            .unwrap_or(Err("timeout"));
        let latency = intended.elapsed();
        if let Err(kind) = result {
            if matches!(kind, "io" | "timeout") {
                sender = None;
            }
            if intended >= measure_from {
                shared.error(kind);
            }
            continue;
        }
        if intended >= measure_from {
            shared.latency(latency);
        }
    }
}

/// Runs `workload` against `endpoint`.
pub async fn run(
    endpoint: &Endpoint,
    workload: Arc<dyn Workload>,
    config: LoadConfig,
) -> LoadReport {
    run_inner(endpoint, workload, config, None).await
}

/// [`run`], also sending on `windows` the figures of every `every` of the measurement
/// (a long run's time series: the soak).
pub async fn run_windowed(
    endpoint: &Endpoint,
    workload: Arc<dyn Workload>,
    config: LoadConfig,
    every: Duration,
    windows: tokio::sync::mpsc::UnboundedSender<Window>,
) -> LoadReport {
    run_inner(endpoint, workload, config, Some((every, windows))).await
}

async fn run_inner(
    endpoint: &Endpoint,
    workload: Arc<dyn Workload>,
    config: LoadConfig,
    windows: Option<(Duration, tokio::sync::mpsc::UnboundedSender<Window>)>,
) -> LoadReport {
    let shared = Arc::new(Shared {
        histogram: Mutex::new(new_histogram()),
        errors: Mutex::new(BTreeMap::new()),
        window: windows
            .as_ref()
            .map(|_| Mutex::new((new_histogram(), BTreeMap::new()))),
        next: AtomicU64::new(0),
    });
    let start = Instant::now();
    let measure_from = start + config.warmup;
    let end = measure_from + config.duration;
    let sampler = windows.map(|(every, tx)| {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut next = measure_from + every;
            // What the warm-up recorded is not a window.
            tokio::time::sleep_until(measure_from.into()).await;
            let _ = shared.take_window(Duration::ZERO);
            while next <= end {
                tokio::time::sleep_until(next.into()).await;
                if let Some(w) = shared.take_window(next - measure_from)
                    && tx.send(w).is_err()
                {
                    return;
                }
                next += every;
            }
        })
    });
    let (connections, pace) = match config.mode {
        Mode::Concurrency(n) => (n, None),
        Mode::Rate {
            per_second,
            connections,
        } => {
            let every = Duration::from_secs_f64(connections as f64 / per_second.max(0.001));
            (connections, Some(every))
        }
    };
    let mut tasks = Vec::new();
    for c in 0..connections {
        // Rate mode: the workers' schedules are staggered evenly.
        let pace = pace.map(|every| (start + every.mul_f64(c as f64 / connections as f64), every));
        tasks.push(tokio::spawn(worker(
            endpoint.clone(),
            Arc::clone(&workload),
            Arc::clone(&shared),
            measure_from,
            end,
            config.max_requests,
            pace,
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    if let Some(s) = sampler {
        let _ = s.await;
    }
    // Until the last answer: a budget may end the run early, and at a fixed rate the
    // backlog of an overloaded target is drained (and counted) after the deadline.
    let seconds = measure_from.elapsed().as_secs_f64().max(1e-9);
    let h = shared
        .histogram
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let requests = h.len();
    LoadReport {
        mode: config.mode,
        requests,
        errors: shared.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        seconds,
        throughput: requests as f64 / seconds,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    struct Hello;

    impl Workload for Hello {
        fn request(&self, _: u64) -> http::Request<Full<Bytes>> {
            http::Request::get("/")
                .header("host", "test")
                .body(Full::new(Bytes::new()))
                .expect("request")
        }
        fn check(&self, _: u16, body: &[u8]) -> Result<(), &'static str> {
            if body == b"hello" {
                Ok(())
            } else {
                Err("unexpected_answer")
            }
        }
    }

    /// A server answering "hello" after `delay`, one request at a time per connection.
    async fn server(delay: Duration) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"hello",
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn fixed_rate_counts_latency_from_the_intended_send_time() {
        // 50 ms per answer on one connection can serve 20/s; asking 60/s, requests
        // queue behind each other and their latency must grow with the backlog.
        let endpoint = Endpoint {
            address: server(Duration::from_millis(50)).await,
            tls: None,
        };
        let report = run(
            &endpoint,
            Arc::new(Hello),
            LoadConfig {
                mode: Mode::Rate {
                    per_second: 60.0,
                    connections: 1,
                },
                warmup: Duration::ZERO,
                duration: Duration::from_secs(1),
                max_requests: None,
            },
        )
        .await;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(
            report.throughput < 25.0,
            "one 50 ms connection: {}",
            report.throughput
        );
        assert!(
            report.max_ms > 1000.0,
            "the backlog shows in the latency: max {} ms",
            report.max_ms
        );
        assert!(report.p50_ms > 200.0, "p50 {} ms", report.p50_ms);
    }

    #[tokio::test]
    async fn fixed_concurrency_and_budget() {
        let endpoint = Endpoint {
            address: server(Duration::from_millis(5)).await,
            tls: None,
        };
        let report = run(
            &endpoint,
            Arc::new(Hello),
            LoadConfig {
                mode: Mode::Concurrency(4),
                warmup: Duration::from_millis(100),
                duration: Duration::from_secs(5),
                max_requests: Some(120),
            },
        )
        .await;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(
            report.requests <= 120 && report.requests >= 40,
            "{}",
            report.requests
        );
        assert!(
            report.p50_ms >= 5.0 && report.p50_ms < 100.0,
            "p50 {}",
            report.p50_ms
        );
        assert!(
            report.seconds < 5.0,
            "the budget ended the run early: {} s",
            report.seconds
        );
    }

    #[tokio::test]
    async fn a_windowed_run_reports_each_window() {
        let endpoint = Endpoint {
            address: server(Duration::from_millis(5)).await,
            tls: None,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let report = run_windowed(
            &endpoint,
            Arc::new(Hello),
            LoadConfig {
                mode: Mode::Rate {
                    per_second: 100.0,
                    connections: 2,
                },
                warmup: Duration::from_millis(200),
                duration: Duration::from_millis(1500),
                max_requests: None,
            },
            Duration::from_millis(500),
            tx,
        )
        .await;
        let mut windows = Vec::new();
        while let Ok(w) = rx.try_recv() {
            windows.push(w);
        }
        let ats: Vec<_> = windows.iter().map(|w| w.at.as_millis()).collect();
        assert_eq!(ats, [500, 1000, 1500]);
        for w in &windows {
            assert!((35..=65).contains(&w.requests), "{w:?}");
            assert!(w.errors.is_empty() && w.p99_ms >= 5.0, "{w:?}");
        }
        let in_windows: u64 = windows.iter().map(|w| w.requests).sum();
        // The last answers may come after the last window closed.
        assert!(
            report.requests - in_windows <= 2,
            "{report:?} vs {in_windows}"
        );
    }
}
