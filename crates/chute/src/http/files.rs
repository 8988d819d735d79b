//! The file catalog over HTTP: `GET /api/files` (the caller's files, paginated),
//! `GET|HEAD /api/files/{id}` (download with Range, ETag / If-None-Match and a safe
//! Content-Disposition) and `DELETE /api/files/{id}`. Another user's file is 404.

use super::extract::{Path, Query};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::AppState;
use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};
use super::error_code;
use super::openapi::Errors;
use super::serve::serve_file;
use crate::meta::FileRecord;

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Files per page, 1 to 1000 (100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` of the page before.
    after: Option<String>,
}

/// A page of the caller's files.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = FileList)]
pub struct FileList {
    files: Vec<crate::meta::FileJson>,
    /// The cursor of the next page (`after`), null at the end.
    next: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/files",
    tag = "files",
    summary = "The caller's files, in upload order",
    params(ListQuery),
    responses((status = 200, description = "A page of files", body = FileList), Errors),
    security(("token" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<FileList>> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            error_code::BAD_LIMIT,
            format!("limit must be 1 to {MAX_PAGE}"),
        ));
    }
    let files = state
        .engine
        .meta
        .list_files(user.id, q.after.as_deref(), limit)
        .await?;
    let next = if files.len() as u32 == limit {
        files.last().map(|f| f.id.clone())
    } else {
        None
    };
    Ok(Json(FileList {
        files: files.iter().map(crate::meta::FileJson::from).collect(),
        next,
    }))
}

async fn owned_file(state: &AppState, owner_id: i64, id: &str) -> ApiResult<FileRecord> {
    match state.engine.meta.get_file(id).await? {
        Some(f) if f.owner_id == owner_id => Ok(f),
        _ => Err(ApiError::not_found("file")),
    }
}

#[utoipa::path(
    delete,
    path = "/api/files/{id}",
    tag = "files",
    summary = "Delete a file and its bytes",
    params(("id" = String, Path, description = "The file's id")),
    responses((status = 204, description = "Deleted"), Errors),
    security(("token" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    match state.engine.delete_file(user.id, &id).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::not_found("file")),
    }
}

#[utoipa::path(
    get,
    path = "/api/files/{id}",
    tag = "files",
    summary = "Download a file (HEAD too)",
    description = "One `Range`, `ETag` (the sha256) and `If-None-Match`, and `Content-Disposition: attachment` with the exact name as `filename*`. Compressed files are decompressed on the fly.",
    params(("id" = String, Path, description = "The file's id"), super::serve::DownloadHeaders),
    responses(
        super::serve::Download,
        Errors,
    ),
    security(("token" = [])),
)]
pub async fn download(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let f = owned_file(&state, user.id, &id).await?;
    serve_file(&state, &f, &headers, "attachment").await
}
