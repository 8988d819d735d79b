//! Around every route: the request id, one access-log line per request, and the request
//! metrics (`chute_http_*`, bytes in and out by protocol, error codes, quota refusals).
//!
//! - `X-Request-Id` is the client's when it is 1 to 128 visible ASCII characters, else a new
//!   one; it is set on the request (handlers and hooks see it) and on every response, and it
//!   names the span every log line of the request is in.
//! - The line is written when the response body ends (or the connection drops it), so that a
//!   download's bytes and time are its own: target `chute::access`, with method, route
//!   (template, never the raw path), status, bytes in and out, duration, user, upload id and
//!   request id. Nothing secret goes in: no query string, no header.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::{Frame, SizeHint};
use tracing::Instrument as _;

use super::AppState;
use super::error::ErrorCode;
use super::error_code;
use crate::metrics::{self, Metrics};

pub const REQUEST_ID: &str = "x-request-id";

/// What handlers tell the access line about a request (the caller, once known).
#[derive(Clone, Default, Debug)]
pub struct AccessNote {
    user: Arc<OnceLock<String>>,
}

impl AccessNote {
    pub fn set_user(&self, name: &str) {
        let _ = self.user.set(name.to_string());
    }
}

/// The client's request id when it is one chute can log and echo safely, else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(REQUEST_ID)
        && (1..=128).contains(&v.len())
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    let id = uuid::Uuid::now_v7().simple().to_string();
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The protocol a request speaks, for the `protocol` label: by route, and for the draft by
/// its `Upload-Complete` header (it may come to /tus/ and /api/files too).
fn protocol_of(route: &str, method: &Method, headers: &HeaderMap) -> &'static str {
    if (route.starts_with("/tus") || route.starts_with("/resumable") || route == "/api/files")
        && super::speaks_draft(headers)
    {
        return "ietf";
    }
    if route.starts_with("/tus") {
        "tus"
    } else if route.starts_with("/resumable") {
        "ietf"
    } else if route == "/api/files" && method == Method::POST {
        crate::upload::events::MULTIPART
    } else if route.starts_with("/api/chunked_upload") {
        "chunked"
    } else if route.starts_with("/upload-session") {
        crate::upload::events::SESSION
    } else if route.starts_with("/api/files") || route.starts_with("/dl/") {
        "files"
    } else {
        "other"
    }
}

/// The upload or file id a route names (`{id}`), read from the path at the same place.
fn path_id(route: &str, path: &str) -> Option<String> {
    let at = route.split('/').position(|s| s == "{id}")?;
    path.split('/').nth(at).map(str::to_string)
}

/// The route's template, or `unmatched` (raw paths would make a series per URL).
fn route_of(req: &Request) -> Arc<str> {
    req.extensions()
        .get::<MatchedPath>()
        .map(|m| Arc::from(m.as_str()))
        .unwrap_or_else(|| Arc::from("unmatched"))
}

pub async fn layer(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let metrics = state.engine.metrics.clone();
    let id = request_id(req.headers());
    req.headers_mut().insert(REQUEST_ID, id.clone());
    let route = route_of(&req);
    let method = req.method().clone();
    let protocol = protocol_of(&route, &method, req.headers());
    let mut upload_id = path_id(&route, req.uri().path());
    let note = AccessNote::default();
    req.extensions_mut().insert(note.clone());

    let (received, sent) = metrics.bytes(protocol);
    let bytes_in = Arc::new(AtomicU64::new(0));
    let tally = bytes_in.clone();
    let req = req.map(|b| {
        Counted::wrap(b, move |n| {
            received.increment(n);
            tally.fetch_add(n, Ordering::Relaxed);
        })
    });

    metrics.requests_in_flight().increment(1.0);
    // Made now, so that a request dropped before its answer (the client left) is counted and
    // logged too, as 499 (nginx's "client closed request").
    let mut done = Done {
        metrics,
        started,
        route,
        method,
        protocol,
        status: CLIENT_CLOSED,
        code: None,
        request_id: id.clone(),
        upload_id: None,
        note,
        bytes_in,
        bytes_out: AtomicU64::new(0),
    };
    let span = tracing::info_span!("request", request_id = %String::from_utf8_lossy(id.as_bytes()));
    let mut res = next.run(req).instrument(span).await;
    res.headers_mut().insert(REQUEST_ID, id);
    if upload_id.is_none()
        && res.status() == StatusCode::CREATED
        && let Some(loc) = res.headers().get(axum::http::header::LOCATION)
    {
        upload_id = loc
            .to_str()
            .ok()
            .and_then(|l| l.trim_end_matches('/').rsplit('/').next())
            .map(str::to_string);
    }
    done.status = res.status().as_u16();
    done.code = res.extensions().get::<ErrorCode>().map(|c| c.0);
    done.upload_id = upload_id;
    res.map(|b| {
        Counted::wrap(b, move |n| {
            sent.increment(n);
            done.bytes_out.fetch_add(n, Ordering::Relaxed);
        })
    })
}

/// A body that tells `on_data` the size of each data frame as it passes, and keeps the inner
/// body's size hint (so that a known length is still sent as `Content-Length`).
struct Counted<F> {
    inner: Body,
    on_data: F,
}

impl<F: FnMut(u64) + Send + Unpin + 'static> Counted<F> {
    fn wrap(inner: Body, on_data: F) -> Body {
        Body::new(Self { inner, on_data })
    }
}

impl<F: FnMut(u64) + Send + Unpin + 'static> hyper::body::Body for Counted<F> {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(d) = frame.data_ref()
        {
            (this.on_data)(d.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The status logged for a request whose client left before it was answered.
const CLIENT_CLOSED: u16 = 499;

/// A request whose response is on its way; dropped with the response body, it writes the
/// access line and the request's figures.
struct Done {
    metrics: Arc<Metrics>,
    started: Instant,
    route: Arc<str>,
    method: Method,
    protocol: &'static str,
    status: u16,
    code: Option<&'static str>,
    request_id: HeaderValue,
    upload_id: Option<String>,
    note: AccessNote,
    bytes_in: Arc<AtomicU64>,
    bytes_out: AtomicU64,
}

impl Drop for Done {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        let m = &self.metrics;
        m.request(&self.route, self.method.as_str(), self.status, took);
        m.requests_in_flight().decrement(1.0);
        if let Some(code) = self.code {
            m.counter(metrics::ERRORS, &[("code", code)]).increment(1);
            if code == error_code::QUOTA_EXCEEDED {
                m.quota_refused(self.protocol);
            }
        }
        tracing::info!(
            target: "chute::access",
            method = %self.method,
            route = %self.route,
            status = self.status,
            bytes_in = self.bytes_in.load(Ordering::Relaxed),
            bytes_out = self.bytes_out.load(Ordering::Relaxed),
            duration_ms = took.as_micros() as f64 / 1000.0,
            user = %self.note.user.get().map(String::as_str).unwrap_or("-"),
            upload_id = %self.upload_id.as_deref().unwrap_or("-"),
            code = %self.code.unwrap_or("-"),
            request_id = %String::from_utf8_lossy(self.request_id.as_bytes()),
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_request_id_is_kept_only_when_safe() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("two words"));
        assert_ne!(request_id(&h), "two words");
        h.insert(REQUEST_ID, HeaderValue::from_str(&"x".repeat(129)).unwrap());
        assert_eq!(request_id(&h).len(), 32);
        assert_eq!(request_id(&HeaderMap::new()).len(), 32);
    }

    #[test]
    fn routes_name_their_protocol_and_id() {
        let h = HeaderMap::new();
        let mut draft = HeaderMap::new();
        draft.insert("upload-complete", HeaderValue::from_static("?1"));
        assert_eq!(protocol_of("/tus/{id}", &Method::PATCH, &h), "tus");
        assert_eq!(protocol_of("/tus/", &Method::POST, &draft), "ietf");
        assert_eq!(protocol_of("/api/files", &Method::POST, &h), "multipart");
        assert_eq!(protocol_of("/api/files", &Method::GET, &h), "files");
        assert_eq!(
            protocol_of("/upload-session/{token}/files/", &Method::POST, &h),
            "session"
        );
        assert_eq!(protocol_of("/healthz", &Method::GET, &h), "other");
        assert_eq!(path_id("/tus/{id}", "/tus/abc"), Some("abc".into()));
        assert_eq!(
            path_id("/api/files/{id}/link", "/api/files/f1/link"),
            Some("f1".into())
        );
        assert_eq!(path_id("/api/files", "/api/files"), None);
    }
}
