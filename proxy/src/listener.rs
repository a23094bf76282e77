//! Client connections: how many may be open at once, how long one may stay open without
//! a request, and what happens at the cap. Each limit is one small type:
//!
//! - [`ConnectionTable`]: the cap on the open connections of one listener. At the cap, a
//!   new connection takes the place of the longest-idle one, which is closed at once
//!   (as Envoy's overload manager shortens idle timeouts under pressure); when none is
//!   idle, the new connection is closed at once: refused, and counted.
//! - [`ConnectionPolicy`]: the timeouts of one connection. Its first request must come
//!   within `header_read_timeout` of its opening (TLS handshake and HTTP/2 preface
//!   included, so a connection that says nothing is closed); after that, it may stay
//!   `idle_timeout` without a request in flight (HTTP/1.1 and HTTP/2). HTTP/2 clients
//!   get PINGs, and a client that does not answer them is dropped.
//! - [`Tracked`]: the service layer that marks a connection busy from a request's
//!   headers until its answer has been sent (a [`Guarded`] body).
//! - [`drive`]: runs one connection under its policy, its slot and its listener's
//!   shutdown.
//!
//! The internal and admin listeners each have their own table, so the admin listener
//! stays usable when the internal one is saturated. The internal cap defaults to what
//! the process's open-files limit leaves once upstream connections, the audit trail and
//! the admin listener are counted.

use std::collections::HashMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use passerelle_config::Limits;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::metrics::ConnectionCounters;

/// Connections the admin listener keeps open at once (its own budget).
pub const ADMIN_MAX_CONNECTIONS: usize = 16;

/// File descriptors kept for the process itself: standard streams, the runtime, the two
/// listeners, the audit trail, reading configuration and certificate files on reload.
const RESERVED_FDS: u64 = 48;

/// The smallest derived cap.
const MIN_CONNECTIONS: usize = 16;

/// How long a connection closed for idleness may take to say goodbye (HTTP/2 GOAWAY)
/// before it is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// The soft open-files limit (RLIMIT_NOFILE) of this process, read from
/// `/proc/self/limits`: `None` when unknown, `u64::MAX` when unlimited.
pub fn open_files_limit() -> Option<u64> {
    parse_open_files_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// The default cap on client connections for an open-files limit: what is left once
/// [`RESERVED_FDS`] and the admin listener are counted, half of it, since each client
/// request in flight may hold one upstream connection (unknown limit: 1024).
pub fn derived_max_connections(open_files: Option<u64>) -> usize {
    let open_files = open_files.unwrap_or(1024).min(1 << 20);
    let spare = open_files.saturating_sub(RESERVED_FDS + ADMIN_MAX_CONNECTIONS as u64);
    usize::try_from(spare / 2)
        .unwrap_or(usize::MAX)
        .max(MIN_CONNECTIONS)
}

/// The connection limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionPolicy {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time to the end of the first request's headers, from the connection's opening;
    /// for later requests (HTTP/1.1), from the end of the previous answer.
    pub header_read_timeout: Duration,
    /// Time a connection may stay with no request in flight.
    pub idle_timeout: Duration,
    pub http2_keep_alive_interval: Duration,
    pub http2_keep_alive_timeout: Duration,
}

impl ConnectionPolicy {
    /// The internal listener's: `[listener]`, the cap derived from the open-files limit
    /// when not configured.
    pub fn internal(limits: &Limits) -> Self {
        let max_connections = limits
            .max_connections
            .unwrap_or_else(|| derived_max_connections(open_files_limit()));
        Self::with_cap(limits, max_connections)
    }

    /// The admin listener's: the same timeouts, its own small cap.
    pub fn admin(limits: &Limits) -> Self {
        Self::with_cap(limits, ADMIN_MAX_CONNECTIONS)
    }

    fn with_cap(limits: &Limits, max_connections: usize) -> Self {
        Self {
            max_connections,
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            http2_keep_alive_interval: limits.http2_keep_alive_interval,
            http2_keep_alive_timeout: limits.http2_keep_alive_timeout,
        }
    }

    /// hyper's settings for these limits: HTTP/1.1 keep-alive with the header read
    /// timeout, HTTP/2 with keep-alive PINGs.
    pub fn http(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(self.http2_keep_alive_interval)
            .keep_alive_timeout(self.http2_keep_alive_timeout);
        builder
    }
}

/// Why the proxy closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No request within `header_read_timeout` of the opening.
    Silent,
    /// No request in flight for `idle_timeout`.
    Idle,
}

/// One open connection, as its table and its driver see it.
#[derive(Debug)]
pub struct ConnectionState {
    id: u64,
    opened: Instant,
    /// Requests whose answer has not been sent yet.
    in_flight: AtomicUsize,
    /// Requests started on this connection.
    requests: AtomicU64,
    /// When the last request ended, in milliseconds since `opened`.
    idle_since_ms: AtomicU64,
    /// Signalled when the table gave this connection's slot to a new one.
    evicted: Notify,
    /// Signalled when the last request in flight ends (the idle deadline moves).
    became_idle: Notify,
}

impl ConnectionState {
    fn new(id: u64) -> Self {
        Self {
            id,
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            evicted: Notify::new(),
            became_idle: Notify::new(),
        }
    }

    /// Whether no request is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Since when it has been idle (meaningful when [`Self::is_idle`]).
    fn idle_since(&self) -> Instant {
        self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }

    /// When the connection is to be closed if nothing happens meanwhile, and why; `None`
    /// while a request is in flight.
    fn due(&self, policy: &ConnectionPolicy) -> Option<(Instant, CloseReason)> {
        if !self.is_idle() {
            None
        } else if self.requests.load(Ordering::Acquire) == 0 {
            Some((
                self.opened + policy.header_read_timeout,
                CloseReason::Silent,
            ))
        } else {
            Some((self.idle_since() + policy.idle_timeout, CloseReason::Idle))
        }
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> Active {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Active(Arc::clone(self))
    }
}

/// A request in flight on a connection; dropped when its answer has been sent (or
/// abandoned).
#[derive(Debug)]
pub struct Active(Arc<ConnectionState>);

impl Drop for Active {
    fn drop(&mut self) {
        let c = &self.0;
        let ms = c.opened.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
        c.idle_since_ms.store(ms, Ordering::Release);
        if c.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            c.became_idle.notify_one();
        }
    }
}

/// The open connections of one listener, at most `cap`.
#[derive(Debug)]
pub struct ConnectionTable {
    cap: usize,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnectionState>>>,
    counters: Arc<ConnectionCounters>,
}

impl ConnectionTable {
    pub fn new(cap: usize, counters: Arc<ConnectionCounters>) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            counters,
        })
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn counters(&self) -> &ConnectionCounters {
        &self.counters
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnectionState>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a connection just accepted: a free one, or the slot of the
    /// longest-idle connection, which is told to close at once. `None` (refused, counted)
    /// when the cap is reached and every connection has a request in flight.
    pub fn admit(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let mut open = self.lock();
        if open.len() >= self.cap {
            let victim = open
                .values()
                .filter(|c| c.is_idle())
                .min_by_key(|c| c.idle_since())
                .map(|c| c.id);
            match victim.and_then(|id| open.remove(&id)) {
                Some(victim) => {
                    victim.evicted.notify_one();
                    self.counters.evicted.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnectionState::new(id));
        open.insert(id, Arc::clone(&state));
        self.counters
            .open
            .store(open.len() as i64, Ordering::Relaxed);
        Some(ConnectionSlot {
            table: Arc::clone(self),
            state,
        })
    }
}

/// A connection's place in its table, given back when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    table: Arc<ConnectionTable>,
    state: Arc<ConnectionState>,
}

impl ConnectionSlot {
    pub fn state(&self) -> &Arc<ConnectionState> {
        &self.state
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.table.lock();
        // Already gone when evicted: its slot went to a new connection.
        open.remove(&self.state.id);
        self.table
            .counters
            .open
            .store(open.len() as i64, Ordering::Relaxed);
    }
}

/// The service layer that marks the connection busy while a request is in flight: from
/// the request's headers until its answer has been sent.
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    connection: Arc<ConnectionState>,
    inner: S,
}

impl<S> Tracked<S> {
    pub fn new(connection: Arc<ConnectionState>, inner: S) -> Self {
        Self { connection, inner }
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Guarded<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let active = self.connection.begin_request();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| Guarded {
                body,
                _active: active,
            }))
        })
    }
}

/// An answer's body that keeps its request in flight until it has been sent.
#[derive(Debug)]
pub struct Guarded<B> {
    body: B,
    _active: Active,
}

impl<B: Body + Unpin> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Where a listener is in its life, for its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// Stopping: finish the requests in flight, take no new ones.
    Draining,
    /// The grace period is over: drop every connection.
    Closed,
}

/// What interrupted a connection before its first request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    /// `header_read_timeout` passed (counted as silent).
    Deadline,
    /// Its slot went to a new connection.
    Evicted,
    /// The listener is stopping.
    Stopping,
}

/// Runs `setup` (a TLS handshake) within the connection's first-request deadline,
/// unless it is evicted or the listener stops first.
pub async fn before_first_request<F: Future>(
    slot: &ConnectionSlot,
    policy: &ConnectionPolicy,
    phase: &mut watch::Receiver<Phase>,
    setup: F,
) -> Result<F::Output, Interrupted> {
    let state = slot.state();
    let deadline = state.opened + policy.header_read_timeout;
    let mut setup = pin!(setup);
    loop {
        tokio::select! {
            out = setup.as_mut() => return Ok(out),
            () = tokio::time::sleep_until(deadline) => {
                slot.table.counters.silent.fetch_add(1, Ordering::Relaxed);
                return Err(Interrupted::Deadline);
            }
            () = state.evicted.notified() => return Err(Interrupted::Evicted),
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow_and_update() != Phase::Serving {
                    return Err(Interrupted::Stopping);
                }
            }
        }
    }
}

/// Polls `f` once, so that what it has to write (an HTTP/2 GOAWAY) is written if the
/// socket takes it.
async fn poll_once<F: Future>(mut f: Pin<&mut F>) {
    std::future::poll_fn(|cx| {
        let _ = f.as_mut().poll(cx);
        Poll::Ready(())
    })
    .await;
}

/// Serves one connection to its end under `policy`: closed when silent or idle too long,
/// at once when evicted and idle, gracefully when the listener drains, dropped when it
/// closes.
pub async fn drive<C>(
    connection: C,
    slot: &ConnectionSlot,
    policy: &ConnectionPolicy,
    mut phase: watch::Receiver<Phase>,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    let state = slot.state();
    let counters = &slot.table.counters;
    let mut connection = pin!(connection);
    // Set once a graceful close has begun; `Some`: dropped at that instant if not done.
    let mut closing: Option<Option<Instant>> = None;
    let mut evicted = false;
    if *phase.borrow_and_update() != Phase::Serving {
        connection.as_mut().graceful_shutdown();
        closing = Some(None);
    }
    loop {
        let wake = match closing {
            Some(Some(at)) => at,
            // Closing gracefully: only the connection's end or the listener's matter.
            Some(None) => Instant::now() + Duration::from_secs(3600),
            None => state
                .due(policy)
                .map_or_else(|| Instant::now() + policy.idle_timeout, |(at, _)| at),
        };
        tokio::select! {
            done = connection.as_mut() => return done,
            // The deadline is recomputed on the next turn.
            () = state.became_idle.notified() => {}
            () = state.evicted.notified(), if !evicted => {
                evicted = true;
                connection.as_mut().graceful_shutdown();
                if state.is_idle() {
                    poll_once(connection.as_mut()).await;
                    return Ok(());
                }
                // A request began meanwhile: let it finish, then close.
                closing.get_or_insert(None);
            }
            changed = phase.changed() => {
                let now = if changed.is_err() { Phase::Closed } else { *phase.borrow_and_update() };
                match now {
                    Phase::Serving => {}
                    Phase::Draining => {
                        if closing.is_none() {
                            connection.as_mut().graceful_shutdown();
                            closing = Some(None);
                        }
                    }
                    Phase::Closed => return Ok(()),
                }
            }
            () = tokio::time::sleep_until(wake) => match closing {
                Some(Some(_)) => return Ok(()),
                Some(None) => {}
                None => {
                    if let Some((at, reason)) = state.due(policy)
                        && at <= Instant::now()
                    {
                        match reason {
                            CloseReason::Silent => &counters.silent,
                            CloseReason::Idle => &counters.idle,
                        }
                        .fetch_add(1, Ordering::Relaxed);
                        connection.as_mut().graceful_shutdown();
                        closing = Some(Some(Instant::now() + CLOSE_LINGER));
                    }
                }
            },
        }
    }
}

/// The pause after a failed `accept`: 10 ms, doubling up to 1 s, so that running out of
/// file descriptors neither spins nor floods the log.
pub fn accept_backoff(previous: Duration) -> Duration {
    if previous.is_zero() {
        Duration::from_millis(10)
    } else {
        (previous * 2).min(Duration::from_secs(1))
    }
}

/// Whether an `accept` error concerns only the connection being accepted (no pause).
pub fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_files_limit_is_read_and_the_cap_leaves_headroom() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax cpu time              unlimited            unlimited            seconds   \nMax open files            256                  4096                 files     \n";
        assert_eq!(parse_open_files_limit(limits), Some(256));
        assert_eq!(
            parse_open_files_limit(
                "Max open files            unlimited            unlimited            files"
            ),
            Some(u64::MAX)
        );
        assert_eq!(parse_open_files_limit("nothing"), None);
        assert!(open_files_limit().is_some_and(|n| n > 0), "Linux /proc");
        // 256 files: 48 reserved, 16 for admin, half of the rest for clients.
        assert_eq!(derived_max_connections(Some(256)), 96);
        assert_eq!(derived_max_connections(Some(1024)), 480);
        assert_eq!(derived_max_connections(Some(20)), MIN_CONNECTIONS);
        assert_eq!(derived_max_connections(None), 480);
        assert_eq!(
            derived_max_connections(Some(u64::MAX)),
            ((1 << 20) - 64) / 2
        );
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_is_evicted_else_refused() {
        let counters = Arc::new(ConnectionCounters::default());
        let table = ConnectionTable::new(2, Arc::clone(&counters));
        let a = table.admit().expect("a");
        tokio::time::sleep(Duration::from_millis(15)).await;
        let b = table.admit().expect("b");
        assert_eq!(counters.open.load(Ordering::Relaxed), 2);
        // `a` is busy, `b` idle: `c` takes b's slot.
        let busy = a.state().begin_request();
        let c = table.admit().expect("c evicts b");
        assert_eq!(counters.evicted.load(Ordering::Relaxed), 1);
        assert!(
            tokio::time::timeout(Duration::from_millis(1), b.state().evicted.notified())
                .await
                .is_ok(),
            "b was told to close"
        );
        assert_eq!(table.len(), 2);
        drop(b);
        assert_eq!(table.len(), 2, "b's slot went to c");
        // Both busy: refused.
        let _busy_c = c.state().begin_request();
        assert!(table.admit().is_none());
        assert_eq!(counters.refused.load(Ordering::Relaxed), 1);
        // `a` ends its request: it is idle again, and evicted next.
        drop(busy);
        assert!(a.state().is_idle());
        let d = table.admit().expect("d evicts a");
        assert_eq!(counters.evicted.load(Ordering::Relaxed), 2);
        drop(a);
        drop(c);
        assert_eq!(table.len(), 1);
        drop(d);
        assert!(table.is_empty());
        assert_eq!(counters.open.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn the_longest_idle_is_the_one_whose_last_request_ended_first() {
        let table = ConnectionTable::new(2, Arc::default());
        let a = table.admit().expect("a");
        let b = table.admit().expect("b");
        tokio::time::sleep(Duration::from_millis(15)).await;
        // `a` just served a request: `b` (idle since it opened) goes first.
        drop(a.state().begin_request());
        let _c = table.admit().expect("c");
        assert!(
            tokio::time::timeout(Duration::from_millis(1), b.state().evicted.notified())
                .await
                .is_ok()
        );
        let policy = ConnectionPolicy {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            http2_keep_alive_interval: Duration::from_secs(30),
            http2_keep_alive_timeout: Duration::from_secs(10),
        };
        let (at, reason) = a.state().due(&policy).expect("idle");
        assert_eq!(reason, CloseReason::Idle);
        assert_eq!(at, a.state().idle_since() + Duration::from_secs(60));
        let (at, reason) = b.state().due(&policy).expect("silent");
        assert_eq!(reason, CloseReason::Silent);
        assert_eq!(at, b.state().opened + Duration::from_secs(5));
        let _busy = a.state().begin_request();
        assert_eq!(a.state().due(&policy), None, "busy: no deadline");
    }

    #[test]
    fn accept_errors_back_off_up_to_a_second() {
        let mut d = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..10 {
            d = accept_backoff(d);
            seen.push(d.as_millis());
        }
        assert_eq!(seen[..4], [10, 20, 40, 80]);
        assert_eq!(*seen.last().expect("last"), 1000);
        assert!(is_per_connection(&std::io::Error::from(
            std::io::ErrorKind::ConnectionAborted
        )));
        assert!(!is_per_connection(&std::io::Error::from_raw_os_error(24)));
    }
}
