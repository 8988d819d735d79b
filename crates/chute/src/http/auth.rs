//! `Authorization: Bearer TOKEN` on every API request; a missing or wrong token is 401.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::meta::User;

pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("send an API token as `Authorization: Bearer TOKEN`")
        })?;
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not readable"))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(ApiError::unauthorized(
                    "the Authorization scheme must be Bearer",
                ));
            }
        };
        match crate::auth::authenticate(state.engine.meta.as_ref(), token).await? {
            Some(user) => Ok(AuthUser(user)),
            None => Err(ApiError::unauthorized("the API token is not valid")),
        }
    }
}
