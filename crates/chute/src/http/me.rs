//! `GET /api/me`: who the caller is, as chute sees them: their name, whether they are staff,
//! the limits their uploads are held to (the server's, narrowed by a signed token's claims)
//! and what they store.

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::auth::AuthUser;
use super::error::ApiResult;
use super::openapi::Errors;

/// `GET /api/me`
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Me)]
pub struct MeJson {
    /// The user's name.
    name: String,
    /// Whether the user is staff.
    staff: bool,
    /// Bytes the user may store (null: no limit).
    quota: Option<u64>,
    /// The largest upload (null: no limit).
    max_upload_size: Option<u64>,
    /// Bytes the user stores, with what open uploads hold.
    usage: u64,
}

#[utoipa::path(
    get,
    path = "/api/me",
    tag = "files",
    summary = "The caller, their limits and usage",
    responses((status = 200, description = "The caller as chute sees them", body = MeJson), Errors),
    security(("token" = [])),
)]
pub async fn me(
    State(state): State<AppState>,
    AuthUser(user, limits): AuthUser,
) -> ApiResult<Json<MeJson>> {
    let usage = state.engine.meta.usage_bytes(user.id).await?;
    Ok(Json(MeJson {
        name: user.name,
        staff: user.is_staff,
        quota: limits.quota,
        max_upload_size: limits.max_upload_size,
        usage,
    }))
}
