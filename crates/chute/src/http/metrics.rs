//! `GET /metrics`: the Prometheus text format of `crate::metrics`. On `listen` it needs
//! `metrics_token` as a bearer token (users' API tokens do not open it; without the setting it
//! answers 404). On its own `metrics_listen` address (`router`) it is open unless
//! metrics_token is set; that address also answers `/readyz`, through a drain.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::error::ApiError;
use super::error_code;
use super::openapi::Errors;

/// Prometheus's text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `/metrics` on the main address.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "With `metrics_token` as the bearer token (users' tokens get 401); 404 when `metrics_token` is not set.",
    responses(
        (status = 200, description = "The Prometheus text format", content_type = "text/plain", body = String),
        Errors,
    ),
    security(("metrics_token" = [])),
)]
pub async fn on_listen(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.engine.settings.metrics_token.is_empty() {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            error_code::NOT_FOUND,
            "metrics are not served here: set metrics_token (or metrics_listen)",
        )
        .into_response();
    }
    serve(&state, &headers)
}

/// `/metrics` on `metrics_listen`.
async fn on_own_address(State(state): State<AppState>, headers: HeaderMap) -> Response {
    serve(&state, &headers)
}

fn serve(state: &AppState, headers: &HeaderMap) -> Response {
    let want = &state.engine.settings.metrics_token;
    if !want.is_empty() && !bearer_is(headers, want) {
        return ApiError::unauthorized("send metrics_token as `Authorization: Bearer TOKEN`")
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.engine.metrics.render(),
    )
        .into_response()
}

/// Whether the request's bearer token is `want`, compared by digest so that the time taken
/// says nothing about how much of it matched.
fn bearer_is(headers: &HeaderMap, want: &str) -> bool {
    let Ok(got) = super::auth::bearer(headers) else {
        return false;
    };
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    digest(got).as_ref() == digest(want).as_ref()
}

/// The router of `metrics_listen`: `/metrics` only.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(on_own_address))
        // Probes may come here too: it stays up while the node drains.
        .route("/readyz", get(super::drain::readyz))
        .fallback(|| async { ApiError::not_found("route").into_response() })
        .with_state(state)
}
