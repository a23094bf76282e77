//! Bodies: reading an internal request within the size limit, the chunked body sent
//! upstream (document parts are forwarded as slices of the request, never copied), and
//! the body answered to the internal system (a fault, or the upstream response).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
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

/// Reads a whole request body, refusing it as soon as it passes `limit` bytes: a
/// declared Content-Length over the limit is refused before reading anything. A refused
/// body is dropped as it arrives, never held.
pub async fn read_limited<B>(
    body: B,
    declared: Option<u64>,
    limit: usize,
) -> Result<Bytes, ProxyError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body);
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let mut body = body;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::BodyRead(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total > limit {
                drain(body);
                return Err(ProxyError::BodyTooLarge { limit });
            }
            chunks.push(data);
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
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

    #[tokio::test]
    async fn limit_is_enforced_on_declared_and_actual_length() {
        let ok = read_limited(Full::new(Bytes::from_static(b"abc")), Some(3), 3)
            .await
            .expect("within limit");
        assert_eq!(&ok[..], b"abc");
        let declared = read_limited(Full::new(Bytes::new()), Some(4), 3).await;
        assert!(matches!(
            declared,
            Err(ProxyError::BodyTooLarge { limit: 3 })
        ));
        let actual = read_limited(Full::new(Bytes::from_static(b"abcd")), None, 3).await;
        assert!(matches!(actual, Err(ProxyError::BodyTooLarge { limit: 3 })));
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
