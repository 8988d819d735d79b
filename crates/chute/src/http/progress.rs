//! `GET /api/progress/{id}`: the state of the caller's upload tagged with `X-Progress-ID`,
//! in the JSON shape of nginx's upload-progress module; and `X-Progress-ID` itself (header or
//! query), which form uploads and tus PATCHes take to be followed here.

use super::extract::Path;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};
use super::error_code;
use super::openapi::Errors;
use crate::upload::progress::{ProgressEntry, ProgressState};

/// Records how a tagged request ended: done, or the status of its error.
pub fn finish<T>(entry: Option<&ProgressEntry>, result: &ApiResult<T>) {
    finish_status(entry, result.as_ref().err().map(|e| e.status.as_u16()));
}

/// Records how a tagged request ended: done (None), or with this error status.
pub fn finish_status(entry: Option<&ProgressEntry>, error: Option<u16>) {
    if let Some(p) = entry {
        p.finish(match error {
            None => ProgressState::Done,
            Some(status) => ProgressState::Error(status),
        });
    }
}

#[utoipa::path(
    get,
    path = "/api/progress/{id}",
    tag = "files",
    summary = "The progress of a request sent with `X-Progress-ID`",
    params(("id" = String, Path, pattern = "^[A-Za-z0-9._-]{1,128}$", description = "The progress id: 1-128 letters, digits, `-`, `_` or `.`")),
    responses(
        (status = 200, description = "nginx upload-progress JSON", body = crate::upload::progress::ProgressReport),
        Errors,
    ),
    security(("token" = [])),
)]
pub async fn report(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if !valid_progress_id(&id) {
        return Err(ApiError::bad_request(
            error_code::BAD_PROGRESS_ID,
            "not a valid progress id",
        ));
    }
    let report = state.progress.report(user.id, &id);
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(report)).into_response())
}

/// The client's progress id, from the `X-Progress-ID` header or query argument.
pub(crate) fn progress_id(headers: &HeaderMap, query: Option<&str>) -> ApiResult<Option<String>> {
    let from_header = headers
        .get("x-progress-id")
        .map(|v| v.to_str().unwrap_or("\u{0}").to_string());
    let from_query = query.and_then(|q| {
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.eq_ignore_ascii_case("x-progress-id")
                .then(|| v.to_string())
        })
    });
    match from_header.or(from_query) {
        None => Ok(None),
        Some(id) if valid_progress_id(&id) => Ok(Some(id)),
        Some(_) => Err(ApiError::bad_request(
            error_code::BAD_PROGRESS_ID,
            "X-Progress-ID must be 1 to 128 letters, digits, '-', '_' or '.'",
        )),
    }
}

pub fn valid_progress_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
