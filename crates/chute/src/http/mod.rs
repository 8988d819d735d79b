//! The HTTP layer, the only place axum lives. This file routes, and decides which protocol a
//! request speaks (`speaks_draft`); the protocol adapters sit side by side on the shared
//! modules below them and name no other adapter (`scripts/layers.sh`).
//!
//! Protocol adapters:
//! - [`multipart`]: `POST /api/files`, Django-style streaming form uploads.
//! - [`chunked`]: the django-chunked-upload protocol (resumable, Content-Range chunks).
//! - [`tus`]: tus 1.0 with every extension (`tus/concat.rs`: concatenation).
//! - [`ietf`]: the IETF resumable-upload draft (interop 8) at `/resumable/{id}`.
//! - [`sessions`]: upload sessions (the upload.views API), validation, scanning, X-Accel.
//! - [`files`]: listing, downloading and deleting catalog files.
//! - [`me`]: `GET /api/me`, the caller as chute sees them.
//! - [`links`]: download links (`POST /api/files/{id}/link`, `GET /dl/{id}`).
//! - [`ui`]: the upload page at `GET /`.
//!
//! Shared below them:
//! - [`resumable`]: what tus and the draft share (load, lock, append, settle, terminate).
//! - [`form`], [`headers`], [`serve`]: receiving multipart/form-data, parsing headers, a
//!   stored file as JSON and as bytes.
//! - [`progress`]: X-Progress-ID and `GET /api/progress/{id}`; [`health`]: `GET /healthz`;
//!   [`drain`]: `GET /readyz`, and 503 `draining` while the node shuts down.
//! - [`metrics`]: `GET /metrics` (Prometheus); [`access`]: around every route, the request
//!   id, the access log line and the request metrics.
//! - [`auth`], [`admission`], [`body`], [`error`], [`error_code`]: bearer tokens, uploads in
//!   flight per user, guarded request bodies, JSON errors and their codes.
//! - [`cors`]: browsers on other origins (preflights, exposed headers), around everything.
//! - [`proxies`]: behind a proxy or a path prefix: the public URLs chute returns, and the
//!   client's address.

pub mod access;
pub mod admission;
pub mod auth;
pub mod body;
pub mod chunked;
pub mod cors;
pub mod drain;
pub mod error;
pub mod error_code;
pub mod events;
pub mod extract;
pub mod files;
pub mod form;
pub mod headers;
pub mod health;
pub mod ietf;
pub mod links;
pub mod me;
pub mod metrics;
pub mod multipart;
pub mod openapi;
pub mod origin;
pub mod progress;
pub mod proxies;
pub mod resumable;
pub mod serve;
pub mod sessions;
pub mod tus;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use self::openapi::Errors;

use self::auth::AuthUser;
use crate::auth::jwt::JwtVerifier;

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
    /// Upload requests in flight per user (`max_concurrent_uploads_per_user`).
    pub in_flight: Arc<admission::InFlight>,
    /// Checks the application's signed tokens, when a key is set.
    pub jwt: Option<Arc<JwtVerifier>>,
    /// Set when the node starts draining (`app::serve_app`, on its shutdown signal).
    pub drain: Arc<drain::Drain>,
    /// The OpenAPI document of this state's router, made by `router`.
    pub openapi: Arc<openapi::Document>,
}

impl AppState {
    /// The state of a server on `engine`; fails when the settings' signing key is not valid.
    pub fn new(engine: Engine) -> anyhow::Result<Self> {
        let jwt = JwtVerifier::from_settings(&engine.settings)
            .map_err(anyhow::Error::msg)?
            .map(Arc::new);
        let names = engine.settings.file_upload_handlers.0.clone();
        let progress = Arc::new(ProgressRegistry::new(engine.settings.progress_retention.0));
        let in_flight = admission::InFlight::new(
            engine.settings.max_concurrent_uploads_per_user,
            engine.metrics.gauge(crate::metrics::UPLOADS_IN_FLIGHT, &[]),
        );
        Ok(Self {
            engine,
            progress,
            files_chain: Arc::new(move |ctx: &ChainContext| build_chain(&names, ctx)),
            in_flight,
            jwt,
            drain: Arc::default(),
            openapi: Arc::default(),
        })
    }
}

/// Registers `routes` at the path their annotation gives, and at the same path with (or
/// without) its trailing slash, as Django's URLs answer both. The document names the first.
fn both_slashes(
    router: OpenApiRouter<AppState>,
    routes: UtoipaMethodRouter<AppState>,
) -> OpenApiRouter<AppState> {
    let Some(path) = routes.1.paths.keys().next().cloned() else {
        return router.routes(routes);
    };
    let alias = match path.strip_suffix('/') {
        Some(bare) => bare.to_string(),
        None => format!("{path}/"),
    };
    let same = routes.2.clone();
    router.routes(routes).route(&alias, same)
}

/// The upload-session routes.
fn session_routes() -> OpenApiRouter<AppState> {
    [
        routes!(sessions::create),
        routes!(sessions::show),
        routes!(sessions::list, sessions::upload),
        routes!(sessions::get_file, sessions::delete_file),
        routes!(sessions::store),
    ]
    .into_iter()
    .fold(OpenApiRouter::default(), both_slashes)
}

/// Request line and headers over `max_request_header_size` get 431 with a JSON error (hyper
/// takes in up to 256 KiB of them, so that it is chute, not hyper, that answers).
async fn header_limit_layer(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let limit = state.engine.settings.max_request_header_size.bytes() as usize;
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    let size = req
        .headers()
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4);
    if size <= limit {
        return next.run(req).await;
    }
    let mut res = ApiError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        error_code::HEADERS_TOO_LARGE,
        format!("the request line and headers are over {limit} bytes (max_request_header_size)"),
    )
    .into_response();
    res.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    res
}

/// Read-only mode (`file_upload_enabled = false`): every change answers 405, and of the
/// upload-session routes only the GET of one file is served.
async fn read_only_layer(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if state.engine.settings.file_upload_enabled {
        return next.run(req).await;
    }
    let read = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let path = req.uri().path();
    let session_read = path.starts_with("/upload-session/") && {
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        // "", "upload-session", token, "files", name
        parts.len() == 5 && parts[3] == "files"
    };
    let allowed = if path.starts_with("/upload-session") {
        read && session_read
    } else {
        read
    };
    if allowed {
        return next.run(req).await;
    }
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        error_code::READ_ONLY,
        "uploads are disabled: chute is in read-only mode",
    )
    .into_response()
}

/// Whether a request speaks the IETF resumable-upload draft: its requests carry
/// `Upload-Complete`, and may come to the tus endpoint and the file API too.
pub(crate) fn speaks_draft(h: &HeaderMap) -> bool {
    h.contains_key("upload-complete")
}

/// `POST /tus/`: a tus creation, or the draft's.
#[utoipa::path(
    post,
    path = "/tus/",
    tag = "tus",
    summary = "Create an upload (tus, or the IETF draft when Upload-Complete is sent)",
    description = "tus creation: `Upload-Length` or `Upload-Defer-Length: 1`, optional \
        `Upload-Metadata` (`filename`, `filetype`), `Upload-Concat`, and with a body of \
        `application/offset+octet-stream` its first bytes (creation-with-upload). A request \
        with `Upload-Complete` and no `Tus-Resumable` is the IETF draft's creation instead, \
        described at `POST /resumable/`.",
    params(tus::CreateHeaders),
    request_body(content = Option<crate::http::openapi::Binary>, content_type = "application/offset+octet-stream", description = "The upload's first bytes (may be empty)"),
    responses(
        (status = 201, description = "Created; the upload is at `Location`. A draft creation with every byte has the stored file's JSON (`File`) as its body", headers(
            ("Location" = String, description = "The upload's URL"),
            ("Upload-Offset" = u64, description = "Bytes received so far"),
            ("Upload-Expires" = String, description = "When the unfinished upload expires (HTTP date)"),
        )),
        ietf::Conflicts, Errors,
    ),
    security(("token" = [])),
)]
async fn create_at_tus(state: State<AppState>, user: AuthUser, req: Request) -> Response {
    if speaks_draft(req.headers()) {
        ietf::create(state, user, req).await
    } else {
        tus::create(state, user, req).await.into_response()
    }
}

/// `OPTIONS /tus/`: tus's capabilities, and the draft's limits (its clients ask here too).
#[utoipa::path(
    options,
    path = "/tus/",
    tag = "tus",
    summary = "tus's capabilities and the draft's limits",
    responses(
        (status = 204, description = "What this server supports", headers(
            ("Tus-Version" = String), ("Tus-Extension" = String),
            ("Tus-Checksum-Algorithm" = String),
            ("Tus-Max-Size" = u64, description = "`max_upload_size`, when set"),
            ("Upload-Limit" = String, description = "The draft's limits (a structured dictionary)"),
        )),
        Errors,
    ),
)]
async fn options_at_tus(state: State<AppState>) -> Response {
    let limit = ietf::upload_limit(&state, None);
    let mut res = tus::options(state).await;
    res.headers_mut().insert("upload-limit", limit);
    res
}

/// `OPTIONS /tus/{id}`: as at `/tus/`.
#[utoipa::path(
    options,
    path = "/tus/{id}",
    tag = "tus",
    summary = "tus's capabilities and the draft's limits",
    params(("id" = String, Path, description = "The upload's id")),
    responses((status = 204, description = "As `OPTIONS /tus/`"), Errors),
)]
async fn options_at_tus_upload(state: State<AppState>) -> Response {
    options_at_tus(state).await
}

/// `POST /api/files`: a form upload, or the draft's upgrade of one into a resumable upload.
#[utoipa::path(
    post,
    path = "/api/files",
    tag = "files",
    summary = "Upload files in one multipart/form-data request",
    description = "Any number of files (`data_upload_max_number_files`) and text fields, \
        streamed through the upload-handler chain. `X-Progress-ID` (header or query) reports \
        at `/api/progress/{id}`. With `Upload-Complete: ?0|?1` the request is the IETF \
        draft's resumable form upload (201 at `Location`, as `POST /resumable/`): its answer, \
        once complete, is this one.",
    params(multipart::FormParams),
    request_body(content = multipart::FormBody, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "The files stored and the fields sent", body = multipart::FormAnswer, links(
            ("download" = (operation_id = "files.download", parameters(("id" = "$response.body#/files/0/id")))),
            ("delete" = (operation_id = "files.delete", parameters(("id" = "$response.body#/files/0/id")))),
            ("link" = (operation_id = "links.create", parameters(("id" = "$response.body#/files/0/id")))),
        )),
        ietf::Conflicts, Errors,
    ),
    security(("token" = [])),
)]
async fn post_files(state: State<AppState>, user: AuthUser, req: Request) -> Response {
    if speaks_draft(req.headers()) {
        ietf::upgrade_form_upload(state, user, req).await
    } else {
        multipart::upload(state, user, req).await.into_response()
    }
}

/// The described routes: every route chute serves but the UI's assets.
fn described_routes() -> OpenApiRouter<AppState> {
    // `/tus` answers as `/tus/`; the protocol layer checks `Tus-Resumable` on all of them.
    let tus = both_slashes(
        OpenApiRouter::default(),
        routes!(create_at_tus, options_at_tus),
    )
    .routes(routes!(
        tus::patch,
        tus::head,
        tus::delete,
        tus::get,
        tus::method_override,
        options_at_tus_upload
    ))
    .layer(axum::middleware::from_fn(tus::protocol_layer));
    let router = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(tus)
        .routes(routes!(ietf::head, ietf::get, ietf::patch, ietf::delete))
        .routes(routes!(health::healthz))
        .routes(routes!(drain::readyz))
        .routes(routes!(metrics::on_listen))
        .routes(routes!(openapi::document))
        .routes(routes!(files::list, post_files))
        .routes(routes!(files::download, files::delete))
        .routes(routes!(links::create))
        .routes(routes!(links::download))
        .routes(routes!(progress::report))
        .routes(routes!(me::me))
        .routes(routes!(events::feed))
        .merge(session_routes());
    [
        routes!(ietf::create),
        routes!(chunked::status, chunked::chunk),
        routes!(chunked::complete),
    ]
    .into_iter()
    .fold(router, both_slashes)
}

/// All routes, ready to serve or to mount in another axum app.
pub fn router(state: AppState) -> Router {
    let settings = state.engine.settings.clone();
    let described = described_routes();
    let described = if settings.ui_enabled {
        described
            .routes(routes!(ui::index))
            .route("/ui/app.js", get(ui::app_js))
            .route("/ui/app.css", get(ui::app_css))
            .route("/ui/uppy.min.js", get(ui::uppy_js))
            .route("/ui/uppy.min.css", get(ui::uppy_css))
    } else {
        described
    };
    let (router, doc) = described.split_for_parts();
    state.openapi.set(doc);
    let router = router
        .fallback(|| async { ApiError::not_found("route").into_response() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                error_code::METHOD_NOT_ALLOWED,
                "this method is not allowed here",
            )
            .into_response()
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_only_layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            drain::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            header_limit_layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            proxies::layer,
        ));
    // Outermost, so that it times, counts and logs what the client gets, CORS included.
    cors::with_cors(router.with_state(state.clone()), &settings)
        .layer(axum::middleware::from_fn_with_state(state, access::layer))
}
