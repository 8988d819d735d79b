//! Download links over HTTP (`upload::links` makes and checks them):
//! - `POST /api/files/{id}/link` with `{"expires_in": seconds}` (at most
//!   `download_link_max_age`): `{"url", "expires_at"}` for the caller's own file;
//! - `GET|HEAD /dl/{id}?k&e&s`: the file, with no Authorization header, as `/api/files/{id}`
//!   serves it (Range, ETag, Content-Disposition). A link that chute did not make for this
//!   file and expiry is 403 `link_invalid`; one past its expiry 403 `link_expired`; a file
//!   deleted since, 404.

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
use crate::upload::links::LinkRefused;

#[derive(Deserialize)]
pub struct LinkRequest {
    expires_in: Option<i64>,
}

pub async fn create(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path(id): Path<String>,
    body: Option<Json<LinkRequest>>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let max = state.engine.settings.download_link_max_age.0.as_secs() as i64;
    let bad = || {
        ApiError::bad_request(
            error_code::BAD_EXPIRY,
            format!("send {{\"expires_in\": seconds}}, 1 to {max}"),
        )
    };
    let expires_in = body
        .and_then(|Json(b)| b.expires_in)
        .filter(|s| (1..=max).contains(s))
        .ok_or_else(bad)?;
    match state.engine.meta.get_file(&id).await? {
        Some(f) if f.owner_id == user.id => {}
        _ => return Err(ApiError::not_found("file")),
    }
    let expires = crate::meta::now_unix() + expires_in;
    let url = state.engine.link_path(&id, expires).await?;
    let expires_at = super::headers::rfc3339(expires);
    Ok((
        StatusCode::CREATED,
        Json(json!({"url": url, "expires_at": expires_at})),
    ))
}

#[derive(Deserialize)]
pub struct LinkQuery {
    k: Option<String>,
    e: Option<String>,
    s: Option<String>,
}

pub async fn download(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let invalid = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            error_code::LINK_INVALID,
            "this link is not valid (it was changed, or its key was replaced)",
        )
    };
    let (Some(kid), Some(expires), Some(sig)) = (
        q.k.and_then(|k| k.parse::<i64>().ok()),
        q.e.and_then(|e| e.parse::<i64>().ok()),
        q.s,
    ) else {
        return Err(invalid());
    };
    match state.engine.check_link(&id, kid, expires, &sig).await? {
        Ok(()) => {}
        Err(LinkRefused::Invalid) => return Err(invalid()),
        Err(LinkRefused::Expired) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                error_code::LINK_EXPIRED,
                "this link has expired",
            ));
        }
    }
    match state.engine.meta.get_file(&id).await? {
        Some(f) => serve_file(&state, &f, &headers, "attachment").await,
        _ => Err(ApiError::not_found("file")),
    }
}
