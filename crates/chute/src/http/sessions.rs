//! Upload sessions, the upload.views API (paths and JSON names as in the original, so its
//! front ends work unchanged):
//!
//! - `POST /upload-session/` opens a session; `GET /upload-session/{token}/` shows it.
//! - `GET|POST /upload-session/{token}/files/` lists or adds files (multipart field `file`,
//!   validated and, with `clamav_enabled`, scanned while it streams).
//! - `GET|DELETE /upload-session/{token}/files/{name}/` serves or removes one file; the GET
//!   streams it, or hands it to nginx by `X-Accel-Redirect` (`serve_mode`).
//! - `POST /upload-session/{token}/store/` keeps the files for good (they join the catalog).
//!
//! Owners do everything with their sessions; staff read any session but change none; others
//! see an invalid token (400) on upload and 404 elsewhere, never another user's data.

use std::sync::{Arc, Mutex};

use super::extract::Path;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};
use super::error_code;
use super::form::receive_request;
use super::headers::{multipart_boundary, rfc3339};
use super::openapi::Errors;
use super::origin::form_hooks;
use super::serve::serve_file;
use crate::config::{HandlerName, ServeMode};
use crate::meta::{
    FileRecord, SessionAddRefused, SessionLimits, SessionRecord, SessionStatus, User, now_unix,
};
use crate::names::content_disposition;
use crate::upload::UploadError;
use crate::upload::events::SESSION;
use crate::upload::handler::Chain;
use crate::upload::handlers::validate::{SessionUsage, ValidateHandler};
use crate::upload::handlers::{ChainContext, build_handlers, integrations, scanner};
use crate::upload::sessions::{new_session_token, valid_session_token};

/// An upload session as the API shows it.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Session)]
pub struct SessionJson {
    upload_session_token: String,
    /// CREATED, UPLOADING, COPYING_IN_PROGRESS, STORED, COPYING_FAILED or EXPIRED.
    #[schema(value_type = String)]
    status: SessionStatus,
    file_count: u64,
    /// Bytes of the session's files.
    total_size: u64,
    /// When an unstored session expires (RFC 3339).
    expires_at: Option<String>,
    // The limits a session is held to, for a page to show against its totals.
    max_file_count: u64,
    max_total_size: u64,
    max_file_size: u64,
}

fn session_json(state: &AppState, s: &SessionRecord) -> SessionJson {
    let settings = &state.engine.settings;
    SessionJson {
        upload_session_token: s.token.clone(),
        status: s.status,
        file_count: s.file_count,
        total_size: s.total_size,
        expires_at: state.engine.session_expires_at(s).and_then(rfc3339),
        max_file_count: settings.max_total_upload_count,
        max_total_size: settings.max_total_upload_size.bytes(),
        max_file_size: settings.max_single_upload_size.bytes(),
    }
}

/// A session's file list.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = SessionFiles)]
pub struct SessionFiles {
    files: Vec<SessionFile>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SessionFile {
    name: String,
    size: u64,
    /// Where to read it: `/upload-session/{token}/files/{name}/`.
    url: String,
}

/// A file the session accepted.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SessionFileAccepted)]
pub struct Accepted {
    file: String,
    /// Always true: a refusal is a 400 error, with `accepted: false`.
    accepted: bool,
    upload_session_token: String,
    url: String,
}

/// A multipart body with one file in the field `file`.
#[derive(utoipa::ToSchema)]
#[schema(as = SessionUpload)]
#[allow(dead_code)] // Only described: the body is streamed, never built into this.
pub struct SessionUpload {
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// The URL of a session file (the name percent-encoded as one path segment).
pub fn file_url(token: &str, name: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let enc = percent_encoding::utf8_percent_encode(name, SEGMENT);
    format!("/upload-session/{token}/files/{enc}/")
}

fn invalid_token(token: &str) -> ApiError {
    ApiError::bad_request(error_code::INVALID_SESSION, "Invalid upload session token")
        .with("uploadSessionToken", token.to_string())
}

fn not_found() -> ApiError {
    ApiError::not_found("upload session")
}

/// How the user may use a session.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Owner,
    /// Staff reading another user's session.
    StaffReader,
}

/// Loads a session the user may see, expiring it first if it went idle. None for an unknown
/// token or another user's session (unless the user is staff).
async fn visible_session(
    state: &AppState,
    user: &User,
    token: &str,
) -> ApiResult<Option<(SessionRecord, Access)>> {
    if !valid_session_token(token) {
        return Ok(None);
    }
    let Some(mut s) = state.engine.meta.get_session(token).await? else {
        return Ok(None);
    };
    let access = if s.owner_id == user.id {
        Access::Owner
    } else if user.is_staff {
        Access::StaffReader
    } else {
        return Ok(None);
    };
    if state.engine.session_is_stale(&s, now_unix()) {
        state.engine.expire_session(token).await?;
        s = match state.engine.meta.get_session(token).await? {
            Some(s) => s,
            None => return Ok(None),
        };
    }
    Ok(Some((s, access)))
}

/// The session, for its owner only: others get 404, staff 403 (they may read, not change).
async fn owned_session(state: &AppState, user: &User, token: &str) -> ApiResult<SessionRecord> {
    match visible_session(state, user, token).await? {
        Some((s, Access::Owner)) => Ok(s),
        Some((_, Access::StaffReader)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            error_code::READ_ONLY_ACCESS,
            "staff may read another user's session but not change it",
        )),
        None => Err(not_found()),
    }
}

fn not_writable(token: &str, status: SessionStatus) -> ApiError {
    ApiError::bad_request(
        error_code::SESSION_CLOSED,
        format!(
            "the upload session is {}; its files can no longer change",
            status.as_str()
        ),
    )
    .with("uploadSessionToken", token.to_string())
    .with("status", status.as_str())
}

#[utoipa::path(
    post,
    path = "/upload-session/",
    tag = "sessions",
    summary = "Open an upload session",
    responses(
        (status = 201, description = "The new session", body = SessionJson, links(
            ("show" = (operation_id = "sessions.show", parameters(("token" = "$response.body#/uploadSessionToken")))),
            ("list" = (operation_id = "sessions.list", parameters(("token" = "$response.body#/uploadSessionToken")))),
            ("upload" = (operation_id = "sessions.upload", parameters(("token" = "$response.body#/uploadSessionToken")))),
            ("store" = (operation_id = "sessions.store", parameters(("token" = "$response.body#/uploadSessionToken")))),
        )),
        Errors,
    ),
    security(("token" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
) -> ApiResult<Response> {
    let token = new_session_token().map_err(ApiError::internal)?;
    let now = now_unix();
    state
        .engine
        .meta
        .create_session(&token, user.id, now)
        .await?;
    let s = state
        .engine
        .meta
        .get_session(&token)
        .await?
        .ok_or_else(not_found)?;
    Ok((StatusCode::CREATED, Json(session_json(&state, &s))).into_response())
}

#[utoipa::path(
    get,
    path = "/upload-session/{token}/",
    tag = "sessions",
    summary = "A session's status, totals and limits",
    params(("token" = String, Path, pattern = "^[A-Za-z0-9]{32}$", description = "The session's `uploadSessionToken` (else 400 `invalid_session`)")),
    responses((status = 200, description = "The session", body = SessionJson), Errors),
    security(("token" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path(token): Path<String>,
) -> ApiResult<Json<SessionJson>> {
    let (s, _) = visible_session(&state, &user, &token)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(session_json(&state, &s)))
}

#[utoipa::path(
    get,
    path = "/upload-session/{token}/files/",
    tag = "sessions",
    summary = "A session's files",
    params(("token" = String, Path, pattern = "^[A-Za-z0-9]{32}$", description = "The session's `uploadSessionToken` (else 400 `invalid_session`)")),
    responses((status = 200, description = "The files", body = SessionFiles), Errors),
    security(("token" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path(token): Path<String>,
) -> ApiResult<Json<SessionFiles>> {
    let (s, _) = visible_session(&state, &user, &token)
        .await?
        .ok_or_else(not_found)?;
    let files = state.engine.meta.session_files(&s.token).await?;
    Ok(Json(SessionFiles {
        files: files
            .iter()
            .map(|f| SessionFile {
                name: f.name.clone(),
                size: f.size,
                url: file_url(&s.token, &f.name),
            })
            .collect(),
    }))
}

/// Adds the handlers every session upload starts with to the route's chain.
fn session_chain(
    state: &AppState,
    ctx: &ChainContext,
    usage: SessionUsage,
    name_slot: Arc<Mutex<Option<String>>>,
) -> Chain {
    let s = &state.engine.settings;
    // The pre-create hook first: its renaming is what validation then checks.
    let mut handlers = integrations(ctx);
    handlers.push(Box::new(
        ValidateHandler::new(
            s.accepted_file_formats.clone(),
            s.max_single_upload_size.bytes(),
            Some(usage),
        )
        .only_field("file")
        .with_name_slot(name_slot),
    ));
    handlers.extend(scanner(ctx));
    // Session files are served by nginx in x-accel-redirect mode, which cannot undo zstd.
    let names: Vec<HandlerName> = s
        .file_upload_handlers
        .0
        .iter()
        .copied()
        .filter(|n| !(*n == HandlerName::Compress && s.serve_mode == ServeMode::XAccelRedirect))
        .collect();
    handlers.extend(build_handlers(&names, ctx));
    Chain::new(handlers, s.file_upload_chunk_size.bytes() as usize)
}

#[utoipa::path(
    post,
    path = "/upload-session/{token}/files/",
    tag = "sessions",
    summary = "Add one file to a session (validated, maybe scanned)",
    description = "A refused file is 400 `invalid_file` with `file`, `accepted: false` and `verboseError`; an unknown or another user's token 400 `invalid_session`.",
    params(("token" = String, Path, pattern = "^[A-Za-z0-9]{32}$", description = "The session's `uploadSessionToken` (else 400 `invalid_session`)")),
    request_body(content = SessionUpload, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Accepted", body = Accepted, links(
            ("read" = (operation_id = "sessions.get_file", parameters(("token" = "$response.body#/uploadSessionToken"), ("name" = "$response.body#/file")))),
            ("remove" = (operation_id = "sessions.delete_file", parameters(("token" = "$response.body#/uploadSessionToken"), ("name" = "$response.body#/file")))),
            ("store" = (operation_id = "sessions.store", parameters(("token" = "$response.body#/uploadSessionToken")))),
        )),
        Errors,
    ),
    security(("token" = [])),
)]
pub async fn upload(
    State(state): State<AppState>,
    AuthUser(user, caller): AuthUser,
    Path(token): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let _admitted = state.in_flight.admit(user.id)?;
    let began = time::OffsetDateTime::now_utc();
    let settings = state.engine.settings.clone();
    let session = match visible_session(&state, &user, &token).await? {
        Some((s, Access::Owner)) => s,
        _ => return Err(invalid_token(&token)),
    };
    if !session.status.accepts_changes() {
        return Err(not_writable(&token, session.status));
    }
    let (content_type, boundary) = multipart_boundary(
        req.headers(),
        "send the file as multipart/form-data, field `file`",
    )
    .map_err(|e| e.with("uploadSessionToken", token.clone()))?;
    let existing = state.engine.meta.session_files(&token).await?;
    let usage = SessionUsage {
        count: existing.len() as u64,
        total: existing.iter().map(|f| f.size).sum(),
        names: existing.into_iter().map(|f| f.name).collect(),
        max_count: settings.max_total_upload_count,
        max_total: settings.max_total_upload_size.bytes(),
    };
    let used_bytes = match caller.quota {
        Some(_) => state.engine.meta.usage_bytes(user.id).await?,
        None => 0,
    };
    let (gate, progress_events) = form_hooks(
        &state.engine,
        &user,
        SESSION,
        Some(&token),
        req.headers(),
        req.extensions(),
    );
    let ctx = ChainContext {
        storage: state.engine.storage.clone(),
        settings: settings.clone(),
        used_bytes,
        limits: caller,
        progress: None,
        extra_checksums: Vec::new(),
        request_length: None,
        gate,
        progress_events,
        metrics: state.engine.metrics.clone(),
    };
    let name_slot = Arc::new(Mutex::new(None));
    let chain = session_chain(&state, &ctx, usage, name_slot.clone());
    let refused = |e: ApiError| {
        let e = e.with("uploadSessionToken", token.clone());
        if !e.status.is_client_error() {
            return e;
        }
        // Every refusal has one shape: a short `error`, a sentence in `verboseError`, and
        // the file's name (empty when the request broke before it could be read).
        let name = name_slot.lock().ok().and_then(|n| n.clone());
        let verbose = e.message.clone();
        let mut e = e
            .with("accepted", false)
            .with("file", name.unwrap_or_default());
        if !e.extra.iter().any(|(k, _)| *k == "verboseError") {
            e = e.with("verboseError", verbose);
        }
        e
    };
    let counted = state.engine.metrics.form_upload(SESSION);
    let got = receive_request(
        &state,
        req,
        chain,
        (content_type, boundary),
        caller.max_upload_size,
    )
    .await
    .map_err(&refused)?;
    let mut files = got.outcome.files.into_iter();
    let Some(done) = files.next() else {
        return Err(ApiError::bad_request(
            error_code::NO_FILE,
            "No file was uploaded (field `file`)",
        )
        .with("uploadSessionToken", token.clone()));
    };
    state
        .engine
        .pre_finish_file(user.id, &done, SESSION, Some(&token))
        .await
        .map_err(|e| ApiError::from(e).with("uploadSessionToken", token.clone()))?;
    let mut record = state.engine.place(user.id, done).await?;
    // The validated name is the session's name for the file (unique within the session).
    if let Ok(Some(n)) = name_slot.lock().map(|n| n.clone()) {
        record.name = n;
    }
    let limits = SessionLimits {
        max_count: settings.max_total_upload_count,
        max_total: settings.max_total_upload_size.bytes(),
    };
    let added = state
        .engine
        .add_session_file(&token, &record, limits, caller.quota, began)
        .await;
    let refusal = match added {
        Ok(Ok(())) => None,
        Ok(Err(r)) => Some(r),
        Err(e) => {
            state.engine.delete_object(record.storage_key.clone()).await;
            return Err(e.into());
        }
    };
    if let Some(r) = refusal {
        state.engine.delete_object(record.storage_key.clone()).await;
        let (error, verbose) = match r {
            SessionAddRefused::NotWritable(status) => return Err(not_writable(&token, status)),
            SessionAddRefused::NotFound => return Err(invalid_token(&token)),
            SessionAddRefused::Duplicate => (
                "Duplicate file name",
                format!(
                    "A file named \"{}\" is already in this session.",
                    record.name
                ),
            ),
            SessionAddRefused::TooMany { max } => (
                "Too many files",
                format!("The session already holds the most files allowed ({max})."),
            ),
            SessionAddRefused::TooLarge { max, .. } => (
                "Session is too large",
                format!(
                    "With \"{}\" the session would hold more than the {max} bytes allowed.",
                    record.name
                ),
            ),
        };
        return Err(refused(
            UploadError::Invalid {
                error: error.into(),
                verbose,
            }
            .into(),
        ));
    }
    counted.finished();
    let url = file_url(&token, &record.name);
    Ok(Json(Accepted {
        file: record.name,
        accepted: true,
        upload_session_token: token,
        url,
    })
    .into_response())
}

/// Types a browser may show inline: images, audio, video and PDF, never markup or scripts.
fn inline_safe(content_type: &str) -> bool {
    matches!(
        content_type,
        "image/jpeg"
            | "image/png"
            | "image/gif"
            | "image/webp"
            | "image/bmp"
            | "image/tiff"
            | "audio/mpeg"
            | "audio/wav"
            | "audio/x-wav"
            | "audio/ogg"
            | "audio/flac"
            | "audio/mp4"
            | "video/mp4"
            | "video/webm"
            | "video/ogg"
            | "video/quicktime"
            | "application/pdf"
    )
}

#[utoipa::path(
    get,
    path = "/upload-session/{token}/files/{name}/",
    tag = "sessions",
    summary = "Read a session file (inline for images, audio, video and PDF)",
    description = "Behind nginx (`serve_mode = x-accel-redirect`) the answer has no body but \
        `X-Accel-Redirect`, for nginx to serve the bytes.",
    params(("token" = String, Path, pattern = "^[A-Za-z0-9]{32}$", description = "The session's `uploadSessionToken` (else 400 `invalid_session`)"), ("name" = String, Path, description = "The file's name"), super::serve::DownloadHeaders),
    responses(
        super::serve::Download,
        Errors,
    ),
    security(("token" = [])),
)]
pub async fn get_file(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path((token, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (s, _) = visible_session(&state, &user, &token)
        .await?
        .ok_or_else(|| ApiError::not_found("file"))?;
    let mut f = state
        .engine
        .meta
        .session_file(&s.token, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("file"))?;
    // Content-Type from the extension (validation made the content agree with it).
    let ctype = mime_guess::from_path(&f.name)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_string();
    let disposition = if inline_safe(&ctype) {
        "inline"
    } else {
        "attachment"
    };
    f.content_type = Some(ctype.clone());
    if state.engine.settings.serve_mode == ServeMode::XAccelRedirect && f.encoding.is_none() {
        return Ok(x_accel(&state, &f, &ctype, disposition));
    }
    serve_file(&state, &f, &headers, disposition).await
}

/// Headers only: nginx serves the bytes from its internal location.
fn x_accel(state: &AppState, f: &FileRecord, ctype: &str, disposition: &str) -> Response {
    let mut h = HeaderMap::new();
    let target = format!("{}{}", state.engine.settings.x_accel_prefix, f.storage_key);
    let value =
        |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    h.insert("x-accel-redirect", value(&target));
    h.insert(header::CONTENT_TYPE, value(ctype));
    h.insert(
        header::CONTENT_DISPOSITION,
        value(&content_disposition(disposition, &f.name)),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    (StatusCode::OK, h).into_response()
}

#[utoipa::path(
    delete,
    path = "/upload-session/{token}/files/{name}/",
    tag = "sessions",
    summary = "Remove a file from an open session",
    params(("token" = String, Path, pattern = "^[A-Za-z0-9]{32}$", description = "The session's `uploadSessionToken` (else 400 `invalid_session`)"), ("name" = String, Path, description = "The file's name")),
    responses((status = 204, description = "Removed"), Errors),
    security(("token" = [])),
)]
pub async fn delete_file(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path((token, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let s = owned_session(&state, &user, &token).await?;
    match state
        .engine
        .meta
        .remove_session_file(&s.token, &name, now_unix())
        .await?
    {
        Ok(Some(f)) => {
            state.engine.delete_object(f.storage_key).await;
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(None) => Err(ApiError::not_found("file")),
        Err(status) => Err(not_writable(&token, status)),
    }
}

/// Keeps the session's files for good: COPYING_IN_PROGRESS, then STORED (files join the
/// catalog in one transaction), or COPYING_FAILED if that fails.
#[utoipa::path(
    post,
    path = "/upload-session/{token}/store/",
    tag = "sessions",
    summary = "Keep the session's files for good (they join /api/files)",
    params(("token" = String, Path, pattern = "^[A-Za-z0-9]{32}$", description = "The session's `uploadSessionToken` (else 400 `invalid_session`)")),
    responses((status = 200, description = "The session, STORED", body = SessionJson), Errors),
    security(("token" = [])),
)]
pub async fn store(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path(token): Path<String>,
) -> ApiResult<Json<SessionJson>> {
    let s = owned_session(&state, &user, &token).await?;
    let meta = &state.engine.meta;
    if !meta
        .set_session_status(
            &token,
            &[SessionStatus::Uploading],
            SessionStatus::CopyingInProgress,
            &[],
        )
        .await?
    {
        return Err(match s.status {
            SessionStatus::Created => ApiError::bad_request(
                error_code::EMPTY_SESSION,
                "the upload session has no files to store",
            )
            .with("uploadSessionToken", token.clone()),
            other => not_writable(&token, other),
        });
    }
    if let Err(e) = state.engine.store_session(&token, user.id).await {
        let _ = meta
            .set_session_status(
                &token,
                &[SessionStatus::CopyingInProgress],
                SessionStatus::CopyingFailed,
                &[],
            )
            .await;
        return Err(e.into());
    }
    let s = meta.get_session(&token).await?.ok_or_else(not_found)?;
    Ok(Json(session_json(&state, &s)))
}
