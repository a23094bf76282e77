//! Bodies: reading an internal request within its limits, the chunked body sent
//! upstream (document parts are forwarded as slices of the request, never copied), and
//! the body answered to the internal system (a fault, or the upstream response).
//!
//! A request body is read within three limits:
//! - its size, `limits.max_body_bytes` (413 `BodyTooLarge`);
//! - its time, `limits.body_read_timeout` from the headers (408 `BodyTimeout`), so a
//!   client trickling a few bytes a second cannot hold a request slot for long;
//! - the memory of all bodies held at once, `limits.max_inflight_body_bytes` (503
//!   `Overloaded`): a [`BodyReservation`] in the shared [`BodyBudget`], taken by the
//!   declared Content-Length at once, or chunk by chunk as a chunked body grows, and
//!   given back when the request ends.
//!
//! The last two come with the request's admission ([`crate::runtime::Proxy::admit`]),
//! which the pipeline hands to [`read_limited`]; the reservation is given back when the
//! admission is dropped.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::fault::ProxyError;
use crate::upstream::PooledBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long, and how much, a refused body is still read (and dropped) so that the client,
/// still sending, gets to read its 413 instead of a reset connection ("lingering close").
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);
const DRAIN_BYTES: u64 = 256 * 1024 * 1024;

/// Reads the rest of a refused body into nothing, within [`DRAIN_TIME`] and
/// [`DRAIN_BYTES`]; the connection closes after.
fn drain<B>(body: B)
where
    B: Body<Data = Bytes> + Send + 'static,
{
    tokio::spawn(async move {
        let mut body = std::pin::pin!(body);
        let mut read = 0u64;
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    read += data.len() as u64;
                    if read > DRAIN_BYTES {
                        break;
                    }
                }
            }
        })
        .await;
    });
}

/// The request body bytes held in memory at once by all requests together
/// (`limits.max_inflight_body_bytes`). What is held now is shared with the metrics
/// (`passerelle_inflight_body_bytes`).
#[derive(Debug)]
pub struct BodyBudget {
    limit: AtomicUsize,
    held: Arc<AtomicU64>,
}

impl BodyBudget {
    /// A budget of `limit` bytes; `held` counts what is taken.
    pub fn new(limit: usize, held: Arc<AtomicU64>) -> Self {
        Self {
            limit: AtomicUsize::new(limit),
            held,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// A new limit (reload); bytes held beyond it are given back as their requests end.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        let limit = self.limit() as u64;
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n as u64).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.held.fetch_sub(n as u64, Ordering::AcqRel);
    }
}

/// One request's share of the [`BodyBudget`], given back whole when it is dropped (when
/// the request ends).
#[derive(Debug)]
pub struct BodyReservation {
    budget: Arc<BodyBudget>,
    bytes: AtomicUsize,
}

impl BodyReservation {
    pub fn new(budget: Arc<BodyBudget>) -> Self {
        Self {
            budget,
            bytes: AtomicUsize::new(0),
        }
    }

    /// Takes `n` more bytes, or `Overloaded` when the budget has not that much left.
    pub fn grow(&self, n: usize) -> Result<(), ProxyError> {
        if n == 0 {
            return Ok(());
        }
        if self.budget.take(n) {
            self.bytes.fetch_add(n, Ordering::Relaxed);
            Ok(())
        } else {
            Err(ProxyError::BodyMemoryFull {
                limit: self.budget.limit(),
            })
        }
    }

    /// Bytes taken so far.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        self.budget.give_back(*self.bytes.get_mut());
    }
}

/// What reading one request's body may cost: time (a deadline counted from its
/// admission, right after its headers) and memory (a reservation in the shared budget).
#[derive(Debug)]
pub struct BodyLimits {
    deadline: tokio::time::Instant,
    timeout: Duration,
    reservation: BodyReservation,
}

impl BodyLimits {
    /// Limits for a request whose headers arrived now.
    pub fn new(timeout: Duration, budget: Arc<BodyBudget>) -> Self {
        Self {
            deadline: tokio::time::Instant::now() + timeout,
            timeout,
            reservation: BodyReservation::new(budget),
        }
    }

    /// Bytes of the body budget this request holds.
    pub fn reserved(&self) -> usize {
        self.reservation.bytes()
    }

    fn timeout_error(&self) -> ProxyError {
        ProxyError::BodyTimeout {
            seconds: self.timeout.as_secs_f64().ceil().max(1.0) as u64,
        }
    }
}

/// Reads a whole request body, refusing it as soon as it passes `limit` bytes: a
/// declared Content-Length over the limit is refused before reading anything. A refused
/// body is dropped as it arrives, never held.
///
/// Under the [`BodyLimits`] of the request handled by this task, the body must also
/// arrive before its deadline (`BodyTimeout`), and its bytes are taken from the shared
/// budget: the declared Content-Length at once, a chunked body as it grows (`Overloaded`
/// when the budget is spent).
pub async fn read_limited<B>(
    body: B,
    declared: Option<u64>,
    limit: usize,
    limits: Option<&BodyLimits>,
) -> Result<Bytes, ProxyError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body);
        return Err(ProxyError::BodyTooLarge { limit });
    }
    // Bytes of this body taken from the budget so far.
    let mut reserved = 0usize;
    if let (Some(l), Some(n)) = (&limits, declared) {
        // At most `limit`, which is a usize.
        let n = usize::try_from(n).unwrap_or(limit);
        if let Err(e) = l.reservation.grow(n) {
            drain(body);
            return Err(e);
        }
        reserved = n;
    }
    let mut body = body;
    // Each frame is copied into one buffer as it arrives and dropped: the body is held
    // once (a list of frames joined at the end held it twice, 2.5× a 63 MiB body at
    // the peak), and hyper reads into the buffer it already has. A declared length is
    // allocated at once (reserved above; pages are only resident once written); a
    // chunked body grows by doubling, so up to twice its size while it is copied.
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut total = 0usize;
    loop {
        let frame = match &limits {
            Some(l) => match tokio::time::timeout_at(l.deadline, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => {
                    drain(body);
                    return Err(l.timeout_error());
                }
            },
            None => body.frame().await,
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| ProxyError::BodyRead(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total > limit {
                drain(body);
                return Err(ProxyError::BodyTooLarge { limit });
            }
            if let Some(l) = &limits
                && total > reserved
            {
                if let Err(e) = l.reservation.grow(total - reserved) {
                    drain(body);
                    return Err(e);
                }
                reserved = total;
            }
            // An empty frame (h2's END_STREAM often comes in one) holds nothing.
            if data.is_empty() {
                continue;
            }
            // A body of one frame is kept as it came, without a copy.
            if joined.is_empty() && first.is_none() {
                first = Some(data);
                continue;
            }
            if let Some(f) = first.take() {
                let expected = declared.and_then(|n| usize::try_from(n).ok());
                joined.reserve(expected.unwrap_or(0).max(f.len() + data.len()));
                joined.extend_from_slice(&f);
            }
            joined.extend_from_slice(&data);
        }
    }
    Ok(match first {
        Some(f) => f,
        None => joined.freeze(),
    })
}

/// A body made of ready chunks, with an exact length (hence a Content-Length).
#[derive(Debug, Default)]
pub struct Chunks {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    pub fn new(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Self { chunks, remaining }
    }

    pub fn len(&self) -> u64 {
        self.remaining
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.chunks.pop_front().map(|c| {
            self.remaining -= c.len() as u64;
            Ok(Frame::data(c))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// What the internal system receives.
#[derive(Debug)]
pub enum ProxyBody {
    /// A fault, or an upstream response read whole.
    Full(Bytes),
    /// A long upstream response: what was read already, then the rest as it comes.
    Streaming { head: Chunks, rest: PooledBody },
}

impl ProxyBody {
    pub fn full(b: Bytes) -> Self {
        Self::Full(b)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Full(b) => {
                if b.is_empty() {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Ok(Frame::data(std::mem::take(b)))))
                }
            }
            Self::Streaming { head, rest } => {
                if let Some(c) = head.chunks.pop_front() {
                    head.remaining -= c.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(c))));
                }
                Pin::new(rest).poll_frame(cx).map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.is_empty(),
            Self::Streaming { head, rest } => head.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(b) => SizeHint::with_exact(b.len() as u64),
            Self::Streaming { head, rest } => {
                let r = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(r.lower() + head.len());
                if let Some(upper) = r.upper() {
                    hint.set_upper(upper + head.len());
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use std::future::Future;

    #[tokio::test]
    async fn limit_is_enforced_on_declared_and_actual_length() {
        let ok = read_limited(Full::new(Bytes::from_static(b"abc")), Some(3), 3, None)
            .await
            .expect("within limit");
        assert_eq!(&ok[..], b"abc");
        let declared = read_limited(Full::new(Bytes::new()), Some(4), 3, None).await;
        assert!(matches!(
            declared,
            Err(ProxyError::BodyTooLarge { limit: 3 })
        ));
        let actual = read_limited(Full::new(Bytes::from_static(b"abcd")), None, 3, None).await;
        assert!(matches!(actual, Err(ProxyError::BodyTooLarge { limit: 3 })));
    }

    #[tokio::test]
    async fn frames_are_joined_in_order_whatever_the_declared_length() {
        let frames: &[&[&[u8]]] = &[
            &[],
            &[b"one frame"],
            &[b"ab", b"", b"cd", b"e"],
            &[b"", b"after an empty frame"],
            &[b"", b"", b"one frame between empty ones", b""],
            &[&[7u8; 70_000], b"-", &[9u8; 100_000]],
        ];
        for parts in frames {
            let whole: Vec<u8> = parts.concat();
            let n = whole.len() as u64;
            // The declared length, none, and lengths a body that lies about it gives
            // (hyper holds a client to its Content-Length; a joined body must not
            // depend on it).
            for declared in [Some(n), None, Some(n / 2), Some(n + 10)] {
                let body = Frames(parts.iter().map(|p| Bytes::copy_from_slice(p)).collect());
                let read = read_limited(body, declared, 1 << 20, None)
                    .await
                    .expect("within the limit");
                assert_eq!(
                    &read[..],
                    &whole[..],
                    "{} frames, declared {declared:?}",
                    parts.len()
                );
            }
        }
        let over = Frames([Bytes::from_static(b"abc"), Bytes::from_static(b"de")].into());
        assert!(matches!(
            read_limited(over, None, 4, None).await,
            Err(ProxyError::BodyTooLarge { limit: 4 })
        ));
    }

    /// A body of these frames, empty ones included, without a declared length.
    struct Frames(VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    /// A body of `left` one-byte frames, one every `every`, without a declared length.
    struct Trickle {
        left: usize,
        every: std::time::Duration,
        sleep: Pin<Box<tokio::time::Sleep>>,
    }

    impl Trickle {
        fn new(left: usize, every: std::time::Duration) -> Self {
            Self {
                left,
                every,
                sleep: Box::pin(tokio::time::sleep(every)),
            }
        }
    }

    impl Body for Trickle {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.left -= 1;
            let next = tokio::time::Instant::now() + self.every;
            self.sleep.as_mut().reset(next);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }
    }

    fn budget(limit: usize) -> Arc<BodyBudget> {
        Arc::new(BodyBudget::new(limit, Arc::new(AtomicU64::new(0))))
    }

    /// One request, in a task of its own as a request is: its limits entered, then its
    /// body read.
    async fn request<B>(
        limits: BodyLimits,
        body: B,
        declared: Option<u64>,
    ) -> Result<Bytes, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Display,
    {
        read_limited(body, declared, 4096, Some(&limits)).await
    }

    #[tokio::test]
    async fn a_trickling_body_times_out_and_gives_its_bytes_back() {
        let budget = budget(1024);
        let started = std::time::Instant::now();
        let held = Arc::clone(&budget);
        let limits = BodyLimits::new(Duration::from_millis(300), Arc::clone(&budget));
        let result = {
            let r = read_limited(
                Trickle::new(1000, Duration::from_millis(50)),
                None,
                4096,
                Some(&limits),
            )
            .await;
            // Chunked: the bytes read so far are held until the request ends.
            assert!(
                limits.reserved() > 0 && held.held() > 0,
                "bytes read are held"
            );
            drop(limits);
            r
        };
        assert!(
            matches!(result, Err(ProxyError::BodyTimeout { seconds: 1 })),
            "{result:?}"
        );
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
            "{elapsed:?}"
        );
        assert_eq!(budget.held(), 0, "given back when the request ended");
        // A body that arrives in time is read whole.
        let limits = BodyLimits::new(Duration::from_secs(5), Arc::clone(&budget));
        let body = request(limits, Trickle::new(3, Duration::from_millis(10)), None)
            .await
            .expect("in time");
        assert_eq!(&body[..], b"xxx");
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn the_budget_is_reserved_by_content_length_and_by_growth() {
        let budget = budget(100);
        let limits = || BodyLimits::new(Duration::from_secs(5), Arc::clone(&budget));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // Request 1 declares 60 bytes and holds them until it ends.
        let first = {
            let limits = limits();
            tokio::spawn(async move {
                let body = read_limited(
                    Full::new(Bytes::from(vec![b'a'; 60])),
                    Some(60),
                    1000,
                    Some(&limits),
                )
                .await
                .expect("within the budget");
                let _ = rx.await;
                body.len()
            })
        };
        while budget.held() < 60 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Request 2 declares 50: refused before anything is read.
        let refused = request(limits(), Full::new(Bytes::from(vec![b'b'; 50])), Some(50)).await;
        assert!(
            matches!(refused, Err(ProxyError::BodyMemoryFull { limit: 100 })),
            "{refused:?}"
        );
        let e = refused.expect_err("refused");
        assert_eq!(e.code(), "Overloaded");
        assert_eq!(e.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        // Request 3 is chunked: refused when it grows past what is left.
        let grown = request(limits(), Trickle::new(50, Duration::from_millis(1)), None).await;
        assert!(
            matches!(grown, Err(ProxyError::BodyMemoryFull { .. })),
            "{grown:?}"
        );
        assert_eq!(budget.held(), 60, "the refused ones gave their bytes back");
        let _ = tx.send(());
        assert_eq!(first.await.expect("task"), 60);
        assert_eq!(budget.held(), 0, "request 1 ended: its bytes are back");
        // Without limits only the size limit applies (150 bytes are more than the budget).
        let free = read_limited(
            Full::new(Bytes::from(vec![b'c'; 150])),
            Some(150),
            1000,
            None,
        )
        .await
        .expect("no budget");
        assert_eq!(free.len(), 150);
        let limits = limits();
        let here = read_limited(
            Full::new(Bytes::from(vec![b'd'; 150])),
            Some(150),
            1000,
            Some(&limits),
        )
        .await;
        drop(limits);
        assert!(
            matches!(here, Err(ProxyError::BodyMemoryFull { .. })),
            "{here:?}"
        );
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn chunks_have_an_exact_length() {
        let body = Chunks::new([
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"c"),
        ]);
        assert_eq!(body.size_hint().exact(), Some(3));
        let all = body.collect().await.expect("infallible").to_bytes();
        assert_eq!(&all[..], b"abc");
    }
}
