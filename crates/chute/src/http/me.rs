//! `GET /api/me`: who the caller is, as chute sees them: their name, whether they are staff,
//! the limits their uploads are held to (the server's, narrowed by a signed token's claims)
//! and what they store.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::auth::AuthUser;
use super::error::ApiResult;

pub async fn me(
    State(state): State<AppState>,
    AuthUser(user, limits): AuthUser,
) -> ApiResult<Json<Value>> {
    let usage = state.engine.meta.usage_bytes(user.id).await?;
    Ok(Json(json!({
        "name": user.name,
        "staff": user.is_staff,
        "quota": limits.quota,
        "max_upload_size": limits.max_upload_size,
        "usage": usage,
    })))
}
