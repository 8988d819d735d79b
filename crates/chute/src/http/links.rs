//! Download links over HTTP (`upload::links` makes and checks them):
//! - `POST /api/files/{id}/link` with `{"expires_in": seconds}` (at most
//!   `download_link_max_age`): `{"url", "expires_at"}` for the caller's own file;
//! - `GET|HEAD /dl/{id}?k&e&s`: the file, with no Authorization header, as `/api/files/{id}`
//!   serves it (Range, ETag, Content-Disposition). A link that chute did not make for this
//!   file and expiry is 403 `link_invalid`; one past its expiry 403 `link_expired`; a file
//!   deleted since, 404.

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
use crate::upload::links::LinkRefused;

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = LinkRequest)]
pub struct LinkRequest {
    /// Seconds the link works for: 1 to `download_link_max_age` (7 days by default).
    #[schema(required = true, value_type = i64, minimum = 1)]
    expires_in: Option<i64>,
}

/// A download link.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Link)]
pub struct LinkJson {
    /// The link: a path to `GET /dl/{id}` with its signature.
    url: String,
    /// When it stops working (RFC 3339).
    expires_at: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/files/{id}/link",
    tag = "links",
    summary = "Make a download link to one of the caller's files",
    params(("id" = String, Path, description = "The file's id")),
    request_body(content = LinkRequest, content_type = "application/json"),
    responses((status = 201, description = "The link", body = LinkJson), Errors),
    security(("token" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path(id): Path<String>,
    req: axum::extract::Request,
) -> ApiResult<(StatusCode, Json<LinkJson>)> {
    let max = state.engine.settings.download_link_max_age.0.as_secs() as i64;
    let bad = || {
        ApiError::bad_request(
            error_code::BAD_EXPIRY,
            format!("send {{\"expires_in\": seconds}}, 1 to {max}"),
        )
    };
    // Read by hand: whatever the body is (none, not JSON, too long), the answer is this JSON
    // error, not axum's plain-text one.
    let body = axum::body::to_bytes(req.into_body(), 4096)
        .await
        .map_err(|_| bad())?;
    let expires_in = serde_json::from_slice::<LinkRequest>(&body)
        .ok()
        .and_then(|b| b.expires_in)
        .filter(|s| (1..=max).contains(s))
        .ok_or_else(bad)?;
    match state.engine.meta.get_file(&id).await? {
        Some(f) if f.owner_id == user.id => {}
        _ => return Err(ApiError::not_found("file")),
    }
    let expires = crate::meta::now_unix() + expires_in;
    let url = state.engine.link_path(&id, expires).await?;
    let expires_at = super::headers::rfc3339(expires);
    Ok((StatusCode::CREATED, Json(LinkJson { url, expires_at })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// The signing key's id.
    k: Option<String>,
    /// The expiry (Unix seconds).
    e: Option<String>,
    /// The signature.
    s: Option<String>,
}

#[utoipa::path(
    get,
    path = "/dl/{id}",
    tag = "links",
    summary = "Download through a link, with no token (HEAD too)",
    params(("id" = String, Path, description = "The file's id"), LinkQuery, super::serve::DownloadHeaders),
    responses(
        super::serve::Download,
        Errors,
    ),
)]
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
