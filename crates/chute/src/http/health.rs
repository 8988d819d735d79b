//! `GET /healthz`: 200 when the database answers and the storage is writable, else 503.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::openapi::Errors;

/// `{"status": "ok"}`
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Only described.
struct Health {
    #[schema(pattern = "^ok$")]
    status: String,
}
use super::error::ApiError;
use super::error_code;

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness: the catalog answers and the storage is writable",
    responses((status = 200, description = "Healthy", body = inline(Health)), Errors),
)]
pub async fn healthz(State(state): State<AppState>) -> Response {
    if let Err(e) = state.engine.meta.ping().await {
        tracing::warn!(error = %e, "health: database unreachable");
        return unavailable("database unreachable");
    }
    let storage = state.engine.storage.clone();
    match tokio::task::spawn_blocking(move || storage.check()).await {
        Ok(Ok(())) => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: storage not writable");
            unavailable("storage not writable")
        }
        Err(_) => unavailable("storage check failed"),
    }
}

fn unavailable(msg: &str) -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        error_code::UNAVAILABLE,
        msg,
    )
    .into_response()
}
