//! A node going away: `GET /readyz`, and the answer to requests that arrive while it drains.
//!
//! `app::serve_app` starts the drain on its shutdown signal: it stops accepting connections at
//! once, and from then on `/readyz` answers 503 (on `listen` for connections still open, and on
//! `metrics_listen`, which stays up to the end), every other new request but `/healthz` gets 503
//! `draining` with `Retry-After` and `Connection: close` (its client goes to another node),
//! and requests already in flight have `shutdown_grace` to finish.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::error_code;
use super::openapi::Errors;

/// Whether this node is draining.
#[derive(Debug, Default)]
pub struct Drain {
    draining: AtomicBool,
}

impl Drain {
    pub fn start(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Seconds a client is told to wait before it tries again (another node, or this one back).
const RETRY_AFTER: &str = "5";

fn draining() -> Response {
    draining_error().into_response()
}

/// 503 `draining`, with `Retry-After` and `Connection: close`: also the answer of a resumable
/// upload's request that was asked to end by the drain (its client retries, elsewhere).
pub(crate) fn draining_error() -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        error_code::DRAINING,
        "this node is shutting down; try again (another node, or this one once it is back)",
    );
    e.headers
        .push((header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER)));
    e.headers
        .push((header::CONNECTION, HeaderValue::from_static("close")));
    e
}

/// New requests while draining get 503, but for the liveness and readiness probes.
pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.drain.is_draining() && !matches!(req.uri().path(), "/healthz" | "/readyz") {
        return draining();
    }
    next.run(req).await
}

/// `GET /readyz`: 503 `draining` from the start of a drain; otherwise as `/healthz` (the
/// catalog answers and the storage is writable).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness: as /healthz, but 503 `draining` from the start of a shutdown",
    responses((status = 200, description = "Ready"), Errors),
)]
pub async fn readyz(state: State<AppState>) -> Response {
    if state.drain.is_draining() {
        return draining();
    }
    super::health::healthz(state).await
}
