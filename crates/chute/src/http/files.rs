//! The file catalog over HTTP: `GET /api/files` (the caller's files, paginated),
//! `GET|HEAD /api/files/{id}` (download with Range, ETag / If-None-Match and a safe
//! Content-Disposition) and `DELETE /api/files/{id}`. Another user's file is 404.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};
use super::error_code;
use super::serve::serve_file;
use crate::meta::FileRecord;

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<u32>,
    after: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({
        "files": files.iter().map(FileRecord::to_json).collect::<Vec<_>>(),
        "next": next,
    })))
}

async fn owned_file(state: &AppState, owner_id: i64, id: &str) -> ApiResult<FileRecord> {
    match state.engine.meta.get_file(id).await? {
        Some(f) if f.owner_id == owner_id => Ok(f),
        _ => Err(ApiError::not_found("file")),
    }
}

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

pub async fn download(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let f = owned_file(&state, user.id, &id).await?;
    serve_file(&state, &f, &headers, "attachment").await
}
