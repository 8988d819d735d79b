//! The HTTP layer, the only place axum lives: one module per protocol adapter or resource.
//!
//! - [`multipart`]: `POST /api/files`, Django-style streaming form uploads.
//! - [`chunked`]: the django-chunked-upload protocol (resumable, Content-Range chunks).
//! - [`tus`]: tus 1.0 (core, creation, defer-length, expiration, checksum, termination).
//! - [`files`]: listing, downloading and deleting catalog files.
//! - [`progress`]: `GET /api/progress/{id}` for uploads tagged with X-Progress-ID.
//! - [`health`]: `GET /healthz`.
//! - [`auth`], [`body`], [`error`]: bearer tokens, guarded request bodies, JSON errors.

pub mod auth;
pub mod body;
pub mod chunked;
pub mod error;
pub mod files;
pub mod health;
pub mod multipart;
pub mod progress;
pub mod tus;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
use tower_http::trace::TraceLayer;

use crate::upload::Engine;
use crate::upload::handler::Chain;
use crate::upload::handlers::{ChainContext, build_chain};
use crate::upload::progress::ProgressRegistry;
use error::ApiError;

/// Builds the handler chain of a route for one request. Replace it to give a route handlers
/// of your own (Django's per-view `request.upload_handlers`).
pub type ChainFactory = Arc<dyn Fn(&ChainContext) -> Chain + Send + Sync>;

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub progress: Arc<ProgressRegistry>,
    /// The chain of `POST /api/files`.
    pub files_chain: ChainFactory,
}

impl AppState {
    pub fn new(engine: Engine) -> Self {
        let names = engine.settings.file_upload_handlers.clone();
        let progress = Arc::new(ProgressRegistry::new(engine.settings.progress_retention.0));
        Self {
            engine,
            progress,
            files_chain: Arc::new(move |ctx: &ChainContext| build_chain(&names, ctx)),
        }
    }
}

/// All routes, ready to serve or to mount in another axum app.
pub fn router(state: AppState) -> Router {
    let tus = Router::new()
        .route("/tus", post(tus::create).options(tus::options))
        .route("/tus/", post(tus::create).options(tus::options))
        .route(
            "/tus/{id}",
            patch(tus::patch)
                .head(tus::head)
                .delete(tus::delete)
                .get(tus::get)
                .post(tus::method_override)
                .options(tus::options),
        )
        .layer(axum::middleware::from_fn(tus::protocol_layer));
    Router::new()
        .merge(tus)
        .route("/healthz", get(health::healthz))
        .route("/api/files", get(files::list).post(multipart::upload))
        .route(
            "/api/files/{id}",
            get(files::download).delete(files::delete),
        )
        .route("/api/progress/{id}", get(progress::report))
        .route(
            "/api/chunked_upload",
            get(chunked::status).post(chunked::chunk),
        )
        .route(
            "/api/chunked_upload/",
            get(chunked::status).post(chunked::chunk),
        )
        .route("/api/chunked_upload_complete", post(chunked::complete))
        .route("/api/chunked_upload_complete/", post(chunked::complete))
        .fallback(|| async { ApiError::not_found("route").into_response() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not allowed here",
            )
            .into_response()
        })
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
