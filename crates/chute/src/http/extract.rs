//! axum's `Path` and `Query` extractors, answering what they cannot read as chute's JSON
//! errors (`bad_path`, `bad_query`) rather than axum's plain text. Handlers import these in
//! their place.

use axum::extract::FromRequestParts;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::request::Parts;

use super::error::ApiError;
use super::error_code;

/// A path parameter: 400 `bad_path` when it does not decode (not UTF-8, say).
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    axum::extract::Path<T>: FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => Err(ApiError::bad_request(
                error_code::BAD_PATH,
                format!("the path cannot be read: {}", e.body_text()),
            )),
        }
    }
}

/// The query string: 400 `bad_query` when it does not parse into what the route takes.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    axum::extract::Query<T>: FromRequestParts<S, Rejection = QueryRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(ApiError::bad_request(
                error_code::BAD_QUERY,
                format!("the query string cannot be read: {}", e.body_text()),
            )),
        }
    }
}
