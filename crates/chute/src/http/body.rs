//! Request bodies as streams with guards: an idle timeout per read (slow clients cannot hold a
//! connection forever), a total-size limit, and a cap on the bytes a multipart parser may
//! buffer while it looks for part headers. Whichever guard tripped is recorded, so the adapter
//! answers with the right status.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyFailure {
    IdleTimeout,
    TooLarge {
        limit: u64,
    },
    PartHeadersTooLarge,
    /// The connection failed or the client went away.
    Client(String),
}

#[derive(Debug, Default)]
pub struct BodyState {
    pub received: AtomicU64,
    failure: Mutex<Option<BodyFailure>>,
    header_phase: AtomicBool,
    header_bytes: AtomicU64,
}

impl BodyState {
    pub fn failure(&self) -> Option<BodyFailure> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    fn fail(&self, f: BodyFailure) {
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(f);
        }
    }

    /// Marks the time the parser is looking for the next part's headers.
    pub fn set_header_phase(&self, on: bool) {
        self.header_bytes.store(0, Ordering::Relaxed);
        self.header_phase.store(on, Ordering::Relaxed);
    }
}

pub struct GuardedBody<S> {
    inner: S,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    limit: Option<u64>,
    header_limit: u64,
    state: Arc<BodyState>,
    done: bool,
    /// Set after each chunk: the next poll yields once, so that a reader that loops while
    /// chunks are ready (multer does) takes one chunk at a time, and memory stays bounded
    /// however fast the bytes come.
    pause: bool,
    /// The rest of a chunk cut into pieces during a header phase.
    leftover: Option<Bytes>,
}

/// Size of the pieces handed to a parser looking for part headers.
const HEADER_PIECE: usize = 8 * 1024;

impl<S> GuardedBody<S> {
    pub fn new(
        inner: S,
        idle: Duration,
        limit: Option<u64>,
        header_limit: u64,
    ) -> (Self, Arc<BodyState>) {
        let state = Arc::new(BodyState::default());
        let body = Self {
            inner,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
            limit,
            header_limit,
            state: state.clone(),
            done: false,
            pause: false,
            leftover: None,
        };
        (body, state)
    }

    fn trip(&mut self, f: BodyFailure) -> Poll<Option<std::io::Result<Bytes>>> {
        let msg = format!("{f:?}");
        self.state.fail(f);
        self.done = true;
        Poll::Ready(Some(Err(std::io::Error::other(msg))))
    }
}

impl<S, E> Stream for GuardedBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.pause {
            self.pause = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let chunk = match self.leftover.take() {
            Some(rest) => rest,
            None => match self.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    let idle = self.idle;
                    self.sleep.as_mut().reset(Instant::now() + idle);
                    let n = bytes.len() as u64;
                    let total = self.state.received.fetch_add(n, Ordering::Relaxed) + n;
                    if let Some(limit) = self.limit
                        && total > limit
                    {
                        return self.trip(BodyFailure::TooLarge { limit });
                    }
                    bytes
                }
                Poll::Ready(Some(Err(e))) => return self.trip(BodyFailure::Client(e.to_string())),
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    return match self.sleep.as_mut().poll(cx) {
                        Poll::Ready(()) => self.trip(BodyFailure::IdleTimeout),
                        Poll::Pending => Poll::Pending,
                    };
                }
            },
        };
        self.pause = true;
        let mut chunk = chunk;
        if self.state.header_phase.load(Ordering::Relaxed) {
            // While the parser looks for headers it gets small pieces, one per poll, so the
            // bytes it takes in that phase measure the headers (plus at most a piece or two),
            // not how much the client happened to send in one go.
            if chunk.len() > HEADER_PIECE {
                self.leftover = Some(chunk.split_off(HEADER_PIECE));
            }
            let n = chunk.len() as u64;
            let h = self.state.header_bytes.fetch_add(n, Ordering::Relaxed) + n;
            if h > self.header_limit {
                return self.trip(BodyFailure::PartHeadersTooLarge);
            }
        }
        Poll::Ready(Some(Ok(chunk)))
    }
}

/// A trailer section, filled in when the body ends (HTTP/1.1 chunked trailers).
pub type Trailers = Arc<std::sync::Mutex<Option<axum::http::HeaderMap>>>;

/// The body's data frames as a stream; its trailer fields, if any, land in the returned slot
/// once the last data frame has been read.
pub fn with_trailers(
    body: axum::body::Body,
) -> (
    impl Stream<Item = Result<Bytes, axum::Error>> + Send + Unpin + 'static,
    Trailers,
) {
    use futures::StreamExt;
    let slot: Trailers = Arc::default();
    let fill = slot.clone();
    let stream = http_body_util::BodyStream::new(body).filter_map(move |frame| {
        let out = match frame {
            Ok(f) => match f.into_data() {
                Ok(d) => Some(Ok(d)),
                Err(f) => {
                    if let (Ok(t), Ok(mut g)) = (f.into_trailers(), fill.lock()) {
                        *g = Some(t);
                    }
                    None
                }
            },
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(out)
    });
    (stream, slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limit_and_idle_timeout_trip_with_a_reason() {
        let chunks: Vec<Result<Bytes, String>> =
            vec![Ok(Bytes::from(vec![0; 600])), Ok(Bytes::from(vec![0; 600]))];
        let (mut body, state) = GuardedBody::new(
            futures::stream::iter(chunks),
            Duration::from_secs(5),
            Some(1000),
            100,
        );
        assert!(body.next().await.expect("first").is_ok());
        assert!(body.next().await.expect("second").is_err());
        assert_eq!(state.failure(), Some(BodyFailure::TooLarge { limit: 1000 }));
        assert!(body.next().await.is_none());

        let pending = futures::stream::pending::<Result<Bytes, String>>();
        let (mut body, state) = GuardedBody::new(pending, Duration::from_millis(50), None, 100);
        assert!(body.next().await.expect("timeout").is_err());
        assert_eq!(state.failure(), Some(BodyFailure::IdleTimeout));

        let chunks: Vec<Result<Bytes, String>> =
            vec![Ok(Bytes::from(vec![0; 60])), Ok(Bytes::from(vec![0; 60]))];
        let (mut body, state) = GuardedBody::new(
            futures::stream::iter(chunks),
            Duration::from_secs(5),
            None,
            100,
        );
        state.set_header_phase(true);
        assert!(body.next().await.expect("first").is_ok());
        assert!(body.next().await.expect("second").is_err());
        assert_eq!(state.failure(), Some(BodyFailure::PartHeadersTooLarge));
    }
}
