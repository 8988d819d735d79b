//! `GET /api/progress/{id}`: the state of the caller's upload tagged with `X-Progress-ID`,
//! in the JSON shape of nginx's upload-progress module.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};
use super::multipart::valid_progress_id;
use crate::upload::progress::{ProgressEntry, ProgressState};

/// Records how a tagged request ended: done, or the status of its error.
pub fn finish<T>(entry: Option<&ProgressEntry>, result: &ApiResult<T>) {
    if let Some(p) = entry {
        p.finish(match result {
            Ok(_) => ProgressState::Done,
            Err(e) => ProgressState::Error(e.status.as_u16()),
        });
    }
}

pub async fn report(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if !valid_progress_id(&id) {
        return Err(ApiError::bad_request(
            "bad_progress_id",
            "not a valid progress id",
        ));
    }
    let report = state.progress.report(user.id, &id);
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(report)).into_response())
}
