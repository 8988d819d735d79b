//! `Authorization: Bearer TOKEN` on every API request: chute's own API token, or a token
//! signed by the application (`crate::auth::jwt`). A missing or wrong token is 401.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use super::error_code;
use crate::auth::jwt::{JwtError, JwtVerifier};
use crate::meta::{MetaError, MetaStore, User};
use crate::upload::limits::Limits;

/// The token of `Authorization: Bearer TOKEN`, or 401 saying what is wrong with the header.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("send an API token as `Authorization: Bearer TOKEN`")
    })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not readable"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
        _ => Err(ApiError::unauthorized(
            "the Authorization scheme must be Bearer",
        )),
    }
}

/// The caller, and the limits their uploads are held to (the server's, narrowed by a signed
/// token's claims).
pub struct AuthUser(pub User, pub Limits);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)?;
        let limits = Limits::of(&state.engine.settings);
        if let Some(jwt) = &state.jwt
            && JwtVerifier::looks_like_jwt(token)
        {
            let claims = jwt.verify(token).map_err(|e| match e {
                JwtError::Expired => {
                    ApiError::unauthorized_as(error_code::TOKEN_EXPIRED, e.to_string())
                }
                JwtError::Invalid(_) => {
                    ApiError::unauthorized_as(error_code::TOKEN_INVALID, e.to_string())
                }
            })?;
            let mut user = user_on_first_sight(state.engine.meta.as_ref(), &claims.user).await?;
            user.is_staff = claims.staff;
            let limits = limits.narrowed(claims.max_upload_size, claims.quota);
            note_user(parts, &user.name);
            return Ok(AuthUser(user, limits));
        }
        match crate::auth::authenticate(state.engine.meta.as_ref(), token).await? {
            Some(user) => {
                note_user(parts, &user.name);
                Ok(AuthUser(user, limits))
            }
            None => Err(ApiError::unauthorized("the API token is not valid")),
        }
    }
}

/// Tells the access line who the caller is.
fn note_user(parts: &Parts, name: &str) {
    if let Some(note) = parts.extensions.get::<super::access::AccessNote>() {
        note.set_user(name);
    }
}

/// The user named by a valid signed token, created when first seen (a concurrent first
/// sight on another request or node finds the one created there).
async fn user_on_first_sight(meta: &dyn MetaStore, name: &str) -> Result<User, ApiError> {
    if let Some(u) = meta.user_by_name(name).await? {
        return Ok(u);
    }
    match meta.create_user(name, false).await {
        Ok(u) => {
            tracing::info!(user = name, "user created from a signed token");
            Ok(u)
        }
        Err(MetaError::Conflict(_)) => meta
            .user_by_name(name)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the token's user could not be created")),
        Err(e) => Err(e.into()),
    }
}
