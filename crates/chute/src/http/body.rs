//! Request bodies as streams with guards: an idle timeout per read and a minimum rate over
//! each span of that timeout (slow clients cannot hold a connection forever, whether they
//! stop or trickle), a total-size limit, and a cap on the bytes a multipart parser may buffer
//! while it looks for part headers. Whichever guard tripped is recorded, so the adapter
//! answers with the right status.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use super::error_code;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyFailure {
    IdleTimeout,
    /// Fewer bytes per second than the minimum over a span of the idle timeout.
    TooSlow {
        min_rate: u64,
    },
    TooLarge {
        limit: u64,
    },
    /// The body took longer than `request_max_duration` in all.
    TooLong {
        max: Duration,
    },
    PartHeadersTooLarge,
    /// The connection failed or the client went away.
    Client(String),
}

impl From<BodyFailure> for super::error::ApiError {
    fn from(f: BodyFailure) -> Self {
        use super::error::ApiError;
        use axum::http::StatusCode;
        match f {
            BodyFailure::TooLarge { limit } => ApiError::too_large(
                error_code::TOO_LARGE,
                format!("the request body is over the {limit}-byte limit"),
            ),
            BodyFailure::IdleTimeout => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                error_code::BODY_TIMEOUT,
                "the request body stopped arriving",
            ),
            BodyFailure::TooSlow { min_rate } => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                error_code::BODY_TOO_SLOW,
                format!("the request body arrived at under {min_rate} bytes per second"),
            ),
            BodyFailure::TooLong { max } => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                error_code::BODY_TOO_LONG,
                format!(
                    "the request body took longer than {} s (request_max_duration)",
                    max.as_secs()
                ),
            ),
            BodyFailure::PartHeadersTooLarge => ApiError::bad_request(
                error_code::PART_HEADERS_TOO_LARGE,
                "a multipart part's headers are too large",
            ),
            BodyFailure::Client(e) => ApiError::bad_request(
                error_code::INTERRUPTED,
                format!("the request body could not be read: {e}"),
            ),
        }
    }
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

/// How a body is guarded (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    pub idle: Duration,
    /// Bytes per second over each span of `idle`; 0 for none.
    pub min_rate: u64,
    pub limit: Option<u64>,
    pub header_limit: u64,
    /// The longest the whole body may take; None for no bound.
    pub max_duration: Option<Duration>,
}

impl BodyLimits {
    /// The idle timeout, minimum rate and longest duration of the settings, with the given
    /// limits.
    pub fn new(settings: &crate::config::Settings, limit: Option<u64>, header_limit: u64) -> Self {
        let max = settings.request_max_duration.0;
        Self {
            idle: settings.request_body_idle_timeout.0,
            min_rate: settings.request_body_min_rate.bytes(),
            limit,
            header_limit,
            max_duration: (!max.is_zero()).then_some(max),
        }
    }
}

pub struct GuardedBody<S> {
    inner: S,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    min_rate: u64,
    /// Time spent waiting for the client in the current span, and the bytes it sent then.
    /// Only waiting counts: while the reader does not poll (its handlers are busy, a scanner
    /// is deciding), the client is not the one who is slow.
    span_waited: Duration,
    span_bytes: u64,
    waiting_since: Option<Instant>,
    limit: Option<u64>,
    header_limit: u64,
    /// When the whole body must have arrived (`request_max_duration`).
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
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
    pub fn new(inner: S, limits: BodyLimits) -> (Self, Arc<BodyState>) {
        let state = Arc::new(BodyState::default());
        let BodyLimits {
            idle,
            min_rate,
            limit,
            header_limit,
            max_duration,
        } = limits;
        let body = Self {
            inner,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
            min_rate,
            span_waited: Duration::ZERO,
            span_bytes: 0,
            waiting_since: None,
            limit,
            header_limit,
            deadline: max_duration.map(|d| (Box::pin(tokio::time::sleep(d)), d)),
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
        if let Some((deadline, max)) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            let max = *max;
            return self.trip(BodyFailure::TooLong { max });
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
                    let now = Instant::now();
                    self.sleep.as_mut().reset(now + idle);
                    let n = bytes.len() as u64;
                    if let Some(since) = self.waiting_since.take() {
                        self.span_waited += now.duration_since(since);
                    }
                    self.span_bytes += n;
                    let waited = self.span_waited;
                    if waited >= idle {
                        let min_rate = self.min_rate;
                        if (self.span_bytes as f64) < min_rate as f64 * waited.as_secs_f64() {
                            return self.trip(BodyFailure::TooSlow { min_rate });
                        }
                        self.span_waited = Duration::ZERO;
                        self.span_bytes = 0;
                    }
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
                    if self.waiting_since.is_none() {
                        self.waiting_since = Some(Instant::now());
                    }
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

    fn limits(idle: Duration, limit: Option<u64>, header_limit: u64) -> BodyLimits {
        BodyLimits {
            idle,
            min_rate: 0,
            limit,
            header_limit,
            max_duration: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_is_cut_off_at_the_longest_duration() {
        // 100 bytes every 100 ms: fast enough for every other guard, for ever.
        let bounded = BodyLimits {
            max_duration: Some(Duration::from_secs(10)),
            min_rate: 500,
            ..limits(Duration::from_secs(1), None, 100)
        };
        let (mut body, state) = GuardedBody::new(trickle(Duration::from_millis(100)), bounded);
        let mut got = 0;
        while let Some(Ok(c)) = body.next().await {
            got += c.len();
        }
        assert_eq!(
            state.failure(),
            Some(BodyFailure::TooLong {
                max: Duration::from_secs(10)
            })
        );
        assert!((9_800..=10_000).contains(&got), "{got}");
        // A body that has stopped is cut off at the deadline too, not left waiting.
        let stalled = BodyLimits {
            max_duration: Some(Duration::from_secs(3)),
            ..limits(Duration::from_secs(3600), None, 100)
        };
        let (mut body, state) =
            GuardedBody::new(futures::stream::pending::<Result<Bytes, String>>(), stalled);
        assert!(body.next().await.expect("cut").is_err());
        assert!(matches!(state.failure(), Some(BodyFailure::TooLong { .. })));
    }

    /// 100 bytes every `every`, forever.
    fn trickle(every: Duration) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        Box::pin(futures::stream::unfold((), move |()| async move {
            tokio::time::sleep(every).await;
            Some((Ok(Bytes::from(vec![0; 100])), ()))
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_trickling_under_the_minimum_rate_is_cut_off() {
        // 100 bytes every 100 ms is 1000 B/s: never idle for 1 s, yet under 2000 B/s.
        let slow = BodyLimits {
            min_rate: 2000,
            ..limits(Duration::from_secs(1), None, 100)
        };
        let (mut body, state) = GuardedBody::new(trickle(Duration::from_millis(100)), slow);
        let mut got = 0;
        while let Some(Ok(c)) = body.next().await {
            got += c.len();
        }
        assert_eq!(
            state.failure(),
            Some(BodyFailure::TooSlow { min_rate: 2000 })
        );
        assert!(
            (900..=1100).contains(&got),
            "cut after the first span: {got}"
        );
        // The same trickle is fast enough for a minimum of 500 B/s.
        let ok = BodyLimits {
            min_rate: 500,
            ..limits(Duration::from_secs(1), None, 100)
        };
        let (body, state) = GuardedBody::new(trickle(Duration::from_millis(100)), ok);
        let got: Vec<_> = body.take(50).collect().await;
        assert!(got.iter().all(Result::is_ok));
        assert_eq!(state.failure(), None);
        // A fast client whose reader stops polling for a while (busy handlers) is not slow:
        // only the time spent waiting for the client counts.
        let chunks: Vec<Result<Bytes, String>> =
            (0..40).map(|_| Ok(Bytes::from(vec![0; 100]))).collect();
        let (mut body, state) = GuardedBody::new(futures::stream::iter(chunks), slow);
        let mut n = 0;
        while let Some(c) = body.next().await {
            assert!(c.is_ok(), "chunk {n}: {:?}", state.failure());
            n += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!((n, state.failure()), (40, None));
    }

    #[tokio::test]
    async fn limit_and_idle_timeout_trip_with_a_reason() {
        let chunks: Vec<Result<Bytes, String>> =
            vec![Ok(Bytes::from(vec![0; 600])), Ok(Bytes::from(vec![0; 600]))];
        let (mut body, state) = GuardedBody::new(
            futures::stream::iter(chunks),
            limits(Duration::from_secs(5), Some(1000), 100),
        );
        assert!(body.next().await.expect("first").is_ok());
        assert!(body.next().await.expect("second").is_err());
        assert_eq!(state.failure(), Some(BodyFailure::TooLarge { limit: 1000 }));
        assert!(body.next().await.is_none());

        let pending = futures::stream::pending::<Result<Bytes, String>>();
        let (mut body, state) =
            GuardedBody::new(pending, limits(Duration::from_millis(50), None, 100));
        assert!(body.next().await.expect("timeout").is_err());
        assert_eq!(state.failure(), Some(BodyFailure::IdleTimeout));

        let chunks: Vec<Result<Bytes, String>> =
            vec![Ok(Bytes::from(vec![0; 60])), Ok(Bytes::from(vec![0; 60]))];
        let (mut body, state) = GuardedBody::new(
            futures::stream::iter(chunks),
            limits(Duration::from_secs(5), None, 100),
        );
        state.set_header_phase(true);
        assert!(body.next().await.expect("first").is_ok());
        assert!(body.next().await.expect("second").is_err());
        assert_eq!(state.failure(), Some(BodyFailure::PartHeadersTooLarge));
    }
}
