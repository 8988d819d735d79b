//! The IETF resumable-upload draft (draft-ietf-httpbis-resumable-upload-11, interop version 8)
//! on the same engine as tus.
//!
//! - Creation: `POST /tus/` (or `POST /resumable/`) carrying `Upload-Complete: ?0|?1`; the body
//!   is the file's first bytes (maybe all, maybe none). The upload resource is
//!   `/resumable/{id}` (`Location`). Name and type: `Content-Disposition`'s filename (or tus's
//!   `Upload-Metadata`) and the request's `Content-Type`.
//! - Upgrade: `POST /api/files` carrying `Upload-Complete` is the same form upload made
//!   resumable: its body (the multipart request) is staged as it arrives, and once complete
//!   it is processed by the file API, whose answer is the final response.
//! - Offset retrieval: `HEAD /resumable/{id}` → `Upload-Offset`, `Upload-Complete`,
//!   `Upload-Length` when known, `Upload-Limit`, `Cache-Control: no-store`.
//! - Append: `PATCH /resumable/{id}` with `Content-Type: application/partial-upload`,
//!   `Upload-Offset` and `Upload-Complete`.
//! - Cancellation: `DELETE /resumable/{id}`. `GET` downloads a finished upload (else answers
//!   like HEAD).
//! - Errors of the draft are RFC 9457 `application/problem+json` with status 409:
//!   mismatching-upload-offset (with `expected-offset`, `provided-offset`), completed-upload,
//!   inconsistent-upload-length. Every other error is chute's JSON error.
//!
//! Not sent: the 104 (Upload Resumption Supported) interim response. hyper, the HTTP stack,
//! sends no 1xx response but 100 Continue; clients learn the upload's URL from the final
//! response, or by creating the upload with an empty body first (the draft's careful
//! creation).

use super::extract::Path;
use crate::upload::limits::Limits;
use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};
use super::error_code;
use super::headers::{file_name, media_type, sf_integer, upload_complete};
use super::openapi::{Errors, count, header_params, one_of, text};
use super::origin::origin;
use super::resumable::{AppendError, append_stream, live, lock_upload};
use super::serve::serve_file;
use crate::meta::{FileRecord, Protocol, UploadMeta, UploadRecord, UploadState, User, now_unix};
use crate::upload::resumable::{Locked, NewUpload, UploadLock};

pub const PROTOCOL: Protocol = Protocol::Ietf;

header_params! {
    /// A creation's headers.
    pub CreateHeaders {
        ("Upload-Complete", true, one_of(&["?0", "?1"]), "Whether this body completes the upload"),
        ("Upload-Length", false, count(), "The upload's size, when known"),
        ("Content-Disposition", false, text(), "The file's name (`attachment; filename=...`)"),
        ("Upload-Metadata", false, text(), "tus-style metadata, another way to give the name and type"),
    }
}

header_params! {
    /// An append's headers.
    pub AppendHeaders {
        ("Upload-Offset", true, count(), "Where the body goes (else 409 `mismatching-upload-offset`)"),
        ("Upload-Complete", true, one_of(&["?0", "?1"]), "Whether this body completes the upload"),
        ("Upload-Length", false, count(), "The upload's size, when known"),
    }
}
pub const INTEROP_VERSION: &str = "8";
const PARTIAL_UPLOAD: &str = "application/partial-upload";
const PROBLEM_BASE: &str = "https://iana.org/assignments/http-problem-types#";
const MISMATCHING_OFFSET: &str = "mismatching-upload-offset";
const COMPLETED: &str = "completed-upload";
const INCONSISTENT_LENGTH: &str = "inconsistent-upload-length";
/// The draft's problem types, each also the problem's `code`.
pub const PROBLEM_KINDS: &[&str] = &[MISMATCHING_OFFSET, COMPLETED, INCONSISTENT_LENGTH];

/// An RFC 9457 problem of the draft (409), with chute's `error` and `code` beside.
fn problem(kind: &'static str, title: &str, extra: Value, offset: Option<u64>) -> Response {
    let mut body = json!({
        "type": format!("{PROBLEM_BASE}{kind}"),
        "title": title,
        "error": title,
        "code": kind,
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let mut res = (StatusCode::CONFLICT, Json(body)).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(o) = offset {
        h.insert("upload-offset", HeaderValue::from(o));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn mismatching_offset(expected: u64, provided: u64) -> Response {
    problem(
        MISMATCHING_OFFSET,
        "Upload-Offset does not match the upload's offset",
        json!({ "expected-offset": expected, "provided-offset": provided }),
        Some(expected),
    )
}

fn completed(offset: u64) -> Response {
    problem(
        COMPLETED,
        "the upload is already complete",
        json!({}),
        Some(offset),
    )
}

fn inconsistent_length(offset: Option<u64>) -> Response {
    problem(
        INCONSISTENT_LENGTH,
        "the upload's length is inconsistent with what was sent",
        json!({}),
        offset,
    )
}

/// An RFC 9457 problem of the IETF draft (409), with chute's `error` and `code` beside.
pub struct Problem;

impl utoipa::ToSchema for Problem {
    fn name() -> std::borrow::Cow<'static, str> {
        "Problem".into()
    }
}

impl utoipa::PartialSchema for Problem {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        let text = || {
            utoipa::openapi::schema::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
        };
        utoipa::openapi::schema::ObjectBuilder::new()
            .property("type", text())
            .property("title", text())
            .property("error", text())
            .property(
                "code",
                text().enum_values(Some(PROBLEM_KINDS.iter().copied())),
            )
            .property(
                "expected-offset",
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::Integer)
                    .minimum(Some(0)),
            )
            .property(
                "provided-offset",
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::Integer)
                    .minimum(Some(0)),
            )
            .required("type")
            .required("title")
            .required("error")
            .required("code")
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(true),
            ))
            .into()
    }
}

/// The 409 of a request that may speak the draft: its RFC 9457 problems, or chute's JSON error
/// (a tus or chunked conflict).
pub struct Conflicts;

impl utoipa::IntoResponses for Conflicts {
    fn responses()
    -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        use utoipa::{PartialSchema, ToSchema};
        let error = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(
                super::openapi::ErrorBody::name(),
            )))
            .build();
        let problem = ContentBuilder::new()
            .schema(Some(Problem::schema()))
            .build();
        let conflict = ResponseBuilder::new()
            .description(
                "A conflict: the draft's problems (mismatching-upload-offset, completed-upload, \
                 inconsistent-upload-length), with `Upload-Offset`",
            )
            .content("application/problem+json", problem)
            .content("application/json", error)
            .build();
        [("409".to_string(), conflict.into())].into()
    }
}

/// The `Upload-Limit` dictionary: chute's limits for this upload (or for new uploads).
pub fn upload_limit(state: &AppState, up: Option<&UploadRecord>) -> HeaderValue {
    let mut parts = vec!["min-size=0".to_string()];
    let max = match up {
        Some(up) => super::resumable::upload_max(state, up),
        None => state.engine.settings.max_upload_size.map(|m| m.bytes()),
    };
    if let Some(max) = max {
        parts.push(format!("max-size={max}"));
    }
    let age = match up.and_then(|u| u.expires_at) {
        Some(t) => (t - now_unix()).max(0),
        None => state.engine.settings.tus_upload_expiration.0.as_secs() as i64,
    };
    parts.push(format!("max-age={age}"));
    HeaderValue::from_str(&parts.join(", "))
        .unwrap_or_else(|_| HeaderValue::from_static("min-size=0"))
}

fn location(up: &UploadRecord) -> HeaderValue {
    HeaderValue::from_str(&format!("/resumable/{}", up.id))
        .unwrap_or_else(|_| HeaderValue::from_static("/resumable/"))
}

/// Headers every answer about an upload carries.
fn state_headers(state: &AppState, up: &UploadRecord) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("upload-offset", HeaderValue::from(up.offset));
    h.insert(
        "upload-complete",
        HeaderValue::from_static(if up.state == UploadState::Active {
            "?0"
        } else {
            "?1"
        }),
    );
    if let Some(l) = up.length {
        h.insert("upload-length", HeaderValue::from(l));
    }
    h.insert("upload-limit", upload_limit(state, Some(up)));
    h.insert(
        "upload-draft-interop-version",
        HeaderValue::from_static(INTEROP_VERSION),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h
}

/// What a finished upload answers: the file's JSON, as the file API gives it.
async fn finished(state: &AppState, up: &UploadRecord, status: StatusCode) -> ApiResult<Response> {
    let file: Option<FileRecord> = match &up.file_id {
        Some(id) => state.engine.meta.get_file(id).await?,
        None => None,
    };
    let body = file
        .as_ref()
        .map(FileRecord::to_json)
        .unwrap_or(Value::Null);
    Ok((status, state_headers(state, up), Json(body)).into_response())
}

/// Fixes the length of an upload whose client said `Upload-Complete: ?1`: what arrived, which
/// must agree with a length declared before.
async fn settle_length(state: &AppState, mut up: UploadRecord) -> Result<UploadRecord, Response> {
    match up.length {
        Some(l) if l != up.offset => Err(inconsistent_length(Some(up.offset))),
        Some(_) => Ok(up),
        None => {
            let set = state.engine.declare_length(&up, up.offset).await;
            if !matches!(set, Ok(true)) {
                return Err(inconsistent_length(Some(up.offset)));
            }
            up.length = Some(up.offset);
            Ok(up)
        }
    }
}

/// The form Content-Type of an upgraded `POST /api/files`, if the upload is one.
fn form_content_type(up: &UploadRecord) -> Option<String> {
    up.metadata.form_content_type.clone()
}

/// What a completed upload becomes: a file of its bytes, or, for an upgraded
/// `POST /api/files`, the form request it is, replayed through the file API (whose answer is
/// the final response, as the draft says).
async fn finish_upload(
    state: &AppState,
    user: &User,
    up: UploadRecord,
    status: StatusCode,
) -> Result<Response, Response> {
    // One completion at a time, on a record read under the lock: a repeated final append that
    // races the first finds the upload finished, or, once an upgraded form upload has been
    // replayed, gone; it never replays it a second time.
    let api = |e: ApiError| e.into_response();
    let _lock = lock_upload(state, &up.id).await.map_err(api)?;
    let up = match state.engine.meta.get_upload(&up.id).await {
        Ok(Some(u)) => u,
        Ok(None) => return Err(api(ApiError::not_found("upload"))),
        Err(e) => return Err(api(e.into())),
    };
    if up.state != UploadState::Active {
        return finished(state, &up, status).await.map_err(api);
    }
    let up = settle_length(state, up).await?;
    if let Some(ct) = form_content_type(&up) {
        return replay_form(state, user, up, &ct).await;
    }
    let algs = state.engine.checksum_algorithms(&[]);
    let done = async {
        let digests = state.engine.upload_digests(&up, &algs).await?;
        state.engine.complete_upload(&up, &digests).await
    }
    .await;
    let mut up = up;
    match done {
        Ok(file) => {
            up.state = UploadState::Complete;
            up.file_id = Some(file.id);
            finished(state, &up, status)
                .await
                .map_err(|e| e.into_response())
        }
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

/// The staged bytes of an upload as a request body, read off the reactor.
fn staged_body(state: &AppState, up: &UploadRecord) -> Body {
    use std::io::Read;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let storage = state.engine.storage.clone();
    let (key, len) = (up.staging_key.clone(), up.offset);
    tokio::task::spawn_blocking(move || {
        let mut r = match storage.read_staged(&key) {
            Ok(r) => r.take(len),
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e)));
                return;
            }
        };
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf.into())).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Replays a completed upgraded form upload through `POST /api/files`. The upload is gone
/// afterwards, unless the file API failed on its side (5xx), when a retry may succeed.
async fn replay_form(
    state: &AppState,
    user: &User,
    up: UploadRecord,
    content_type: &str,
) -> Result<Response, Response> {
    let req = Request::builder()
        .method("POST")
        .uri("/api/files")
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, up.offset)
        .body(staged_body(state, &up))
        .map_err(|e| ApiError::internal(e).into_response())?;
    // Boxed: the file API is also where upgrades start, so the futures nest (not at run time:
    // the replayed request carries no Upload-Complete).
    // Held to the limits the upload was created under.
    let limits =
        Limits::of(&state.engine.settings).narrowed(up.metadata.max_size, up.metadata.quota);
    let res = Box::pin(super::multipart::upload_form(state, user, limits, req)).await;
    let mut res = match res {
        Ok(r) => r,
        Err(e) if e.status.is_server_error() => return Err(e.into_response()),
        Err(e) => e.into_response(),
    };
    if let Err(e) = state.engine.discard_upload(&up, None).await {
        tracing::warn!(error = %e, upload = %up.id, "could not remove a replayed form upload");
    }
    let h = res.headers_mut();
    h.insert("upload-complete", HeaderValue::from_static("?1"));
    h.insert("upload-offset", HeaderValue::from(up.offset));
    Ok(res)
}

/// Appends the request's body at `offset` (the draft's errors as problems).
async fn append_at(
    state: &AppState,
    held: Option<UploadLock>,
    up: UploadRecord,
    offset: u64,
    h: &HeaderMap,
    body: Body,
) -> Result<UploadRecord, Response> {
    // A body past a declared length is inconsistent; with none, it is past the maximum.
    let declared = up.length.is_some();
    match append_stream(state, held, up, offset, h, body).await {
        Ok(up) => Ok(up),
        Err(AppendError::OffsetMismatch { current }) => Err(mismatching_offset(current, offset)),
        Err(AppendError::PastLength) if declared => Err(inconsistent_length(None)),
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

/// `POST /api/files` with `Upload-Complete`: the form upload made resumable (the draft's
/// upgrade). The body is the multipart request itself; once complete, it is processed as if
/// it had arrived in one piece.
pub async fn upgrade_form_upload(
    State(state): State<AppState>,
    AuthUser(user, limits): AuthUser,
    req: Request,
) -> Response {
    create_admitted(&state, &user, limits, req, true).await
}

async fn create_inner(
    state: &AppState,
    user: &User,
    limits: Limits,
    req: Request,
    form: bool,
) -> Result<Response, Response> {
    let api = |e: ApiError| e.into_response();
    let h = req.headers().clone();
    let done = upload_complete(&h).map_err(api)?.ok_or_else(|| {
        api(ApiError::bad_request(
            error_code::BAD_HEADER,
            "a resumable upload needs Upload-Complete",
        ))
    })?;
    let declared = sf_integer(&h, "upload-length").map_err(api)?;
    let content_length = super::headers::content_length(&h).map_err(api)?;
    // With Upload-Complete: ?1 the content is the whole file, so its length is the file's.
    let length = match (declared, done.then_some(content_length).flatten()) {
        (Some(d), Some(c)) if d != c => return Err(inconsistent_length(None)),
        (d, c) => d.or(c),
    };
    let settings = &state.engine.settings;
    if let (Some(max), Some(len)) = (limits.max_upload_size, length)
        && len > max
    {
        return Err(api(ApiError::too_large(
            error_code::TOO_LARGE,
            format!("the upload is over the {max}-byte limit"),
        )));
    }
    let content_type = media_type(&h);
    let name = file_name(&h);
    let expiry = settings.tus_upload_expiration.0.as_secs() as i64;
    let mut metadata = UploadMeta {
        interop: Some(INTEROP_VERSION.into()),
        ..Default::default()
    };
    if form {
        // Checked now, so that a client learns before sending gigabytes.
        let (ct, _) = super::headers::multipart_boundary(&h, "send files as multipart/form-data")
            .map_err(api)?;
        metadata.form_content_type = Some(ct);
    }
    let up = state
        .engine
        .create_upload(NewUpload {
            parts: &[],
            owner_id: user.id,
            protocol: PROTOCOL,
            name: &name,
            content_type: content_type.as_deref(),
            length,
            expires_at: Some(now_unix() + expiry),
            metadata,
            origin: origin(&state.engine, &h, req.extensions()),
            limits,
        })
        .await
        .map_err(|e| api(e.into()))?;
    let loc = location(&up);
    // The new upload is free: its lock is taken here, so the append reads nothing again.
    let held = state.engine.uploads.try_lock(&up.id).await;
    let up = append_at(state, held, up, 0, &h, req.into_body())
        .await
        .map_err(|mut r| {
            r.headers_mut().insert(header::LOCATION, loc.clone());
            r
        })?;
    let mut res = if done {
        finish_upload(state, user, up, StatusCode::CREATED).await?
    } else {
        (StatusCode::CREATED, state_headers(state, &up)).into_response()
    };
    res.headers_mut().insert(header::LOCATION, loc);
    Ok(res)
}

/// `POST /resumable/`: creation at the draft's own path.
#[utoipa::path(
    post,
    path = "/resumable/",
    tag = "resumable",
    summary = "Create an upload, with its first bytes (or all of them)",
    params(CreateHeaders),
    request_body(content = Option<crate::http::openapi::Binary>, content_type = "*/*", description = "The first bytes; `Content-Type` becomes the file's type"),
    responses(
        (status = 201, description = "Created at `Location`. With `Upload-Complete: ?1` and every byte, the body is the stored file's JSON (`File`); else there is none", headers(
            ("Location" = String, description = "The upload's URL, `/resumable/{id}`"),
            ("Upload-Offset" = u64), ("Upload-Complete" = String), ("Upload-Limit" = String),
        )),
        Conflicts,
        Errors,
    ),
    security(("token" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user, limits): AuthUser,
    req: Request,
) -> Response {
    create_admitted(&state, &user, limits, req, false).await
}

/// Creation, counted among the user's requests in flight (`form`: an upgraded form upload).
async fn create_admitted(
    state: &AppState,
    user: &User,
    limits: Limits,
    req: Request,
    form: bool,
) -> Response {
    let _admitted = match state.in_flight.admit(user.id) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    match create_inner(state, user, limits, req, form).await {
        Ok(r) | Err(r) => r,
    }
}

/// The caller's draft upload, or 404 (unknown, another user's) / 410 (expired).
async fn load(state: &AppState, user: &User, id: &str) -> ApiResult<UploadRecord> {
    super::resumable::load_protocol(state, user, PROTOCOL, id).await
}

/// `HEAD /resumable/{id}`: offset retrieval. A request still writing the upload is stale
/// once its client asks where it stands: it is ended and its bytes kept.
#[utoipa::path(
    head,
    path = "/resumable/{id}",
    tag = "resumable",
    summary = "Offset retrieval",
    params(("id" = String, Path, description = "The upload's id")),
    responses(
        (status = 204, description = "Where the upload stands", headers(
            ("Upload-Offset" = u64), ("Upload-Complete" = String), ("Upload-Length" = u64),
            ("Upload-Limit" = String), ("Cache-Control" = String),
        )),
        Errors,
    ),
    security(("token" = [])),
)]
pub async fn head(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let up = load(&state, &user, &id).await?;
    let up = super::resumable::settled(&state, up, || load(&state, &user, &id)).await?;
    Ok((StatusCode::NO_CONTENT, state_headers(&state, &up)).into_response())
}

/// `GET /resumable/{id}`: a finished upload's bytes; an unfinished one answers like HEAD.
#[utoipa::path(
    get,
    path = "/resumable/{id}",
    tag = "resumable",
    summary = "Download the finished upload (an unfinished one answers as HEAD)",
    params(("id" = String, Path, description = "The upload's id"), super::serve::DownloadHeaders),
    responses(
        (status = 204, description = "Not finished: as HEAD"),
        super::serve::Download,
        Errors,
    ),
    security(("token" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let up = load(&state, &user, &id).await?;
    match super::resumable::finished_file(&state, &up).await? {
        Some(f) => serve_file(&state, &f, &headers, "attachment").await,
        None => Ok((StatusCode::NO_CONTENT, state_headers(&state, &up)).into_response()),
    }
}

/// `PATCH /resumable/{id}`: append, and complete with `Upload-Complete: ?1`.
#[utoipa::path(
    patch,
    path = "/resumable/{id}",
    tag = "resumable",
    summary = "Append, and complete with `Upload-Complete: ?1`",
    params(("id" = String, Path, description = "The upload's id"), AppendHeaders),
    request_body(content = Option<crate::http::openapi::Binary>, content_type = "application/partial-upload"),
    responses(
        (status = 204, description = "Appended", headers(("Upload-Offset" = u64), ("Upload-Complete" = String))),
        (status = 200, description = "Appended and complete: the stored file", body = crate::meta::FileJson),
        Conflicts,
        Errors,
    ),
    security(("token" = [])),
)]
pub async fn patch(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let _admitted = match state.in_flight.admit(user.id) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    match patch_inner(&state, &user, &id, req).await {
        Ok(r) | Err(r) => r,
    }
}

async fn patch_inner(
    state: &AppState,
    user: &User,
    id: &str,
    req: Request,
) -> Result<Response, Response> {
    let api = |e: ApiError| e.into_response();
    let h = req.headers().clone();
    if media_type(&h).as_deref() != Some(PARTIAL_UPLOAD) {
        return Err(api(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            error_code::UNSUPPORTED_MEDIA_TYPE,
            "an append needs Content-Type: application/partial-upload",
        )));
    }
    let offset = sf_integer(&h, "upload-offset")
        .map_err(api)?
        .ok_or_else(|| {
            api(ApiError::bad_request(
                error_code::BAD_HEADER,
                "an append needs Upload-Offset",
            ))
        })?;
    let done = upload_complete(&h).map_err(api)?.ok_or_else(|| {
        api(ApiError::bad_request(
            error_code::BAD_HEADER,
            "an append needs Upload-Complete",
        ))
    })?;
    // The upload's lock first and its record read once under it, as for a tus PATCH; an
    // upload another request holds is owner-checked before that request is asked to let go.
    let (held, mut up) = match state
        .engine
        .lock_owned_upload(user.id, PROTOCOL, id)
        .await
        .map_err(|e| api(e.into()))?
    {
        Locked::Held(lock, up) => (Some(lock), live(up).map_err(api)?),
        Locked::Busy(_) => (None, load(state, user, id).await.map_err(api)?),
        Locked::NotFound => return Err(api(ApiError::not_found("upload"))),
    };
    // No Content-Length and no Transfer-Encoding: no content.
    let body_len = match super::headers::content_length(&h).map_err(api)? {
        None if !h.contains_key(header::TRANSFER_ENCODING) => Some(0),
        other => other,
    };
    if up.state != UploadState::Active {
        // A repeated final append with nothing new (its response was lost) gets it again.
        if done && offset == up.offset && body_len == Some(0) {
            return finished(state, &up, StatusCode::OK).await.map_err(api);
        }
        return Err(completed(up.offset));
    }
    if let Some(len) = sf_integer(&h, "upload-length").map_err(api)? {
        match up.length {
            Some(l) if l != len => return Err(inconsistent_length(Some(up.offset))),
            Some(_) => {}
            None => {
                if let Some(max) = super::resumable::upload_max(state, &up)
                    && len > max
                {
                    return Err(api(ApiError::too_large(
                        error_code::TOO_LARGE,
                        format!("the upload is over the {max}-byte limit"),
                    )));
                }
                if len < up.offset
                    || !state
                        .engine
                        .declare_length(&up, len)
                        .await
                        .map_err(|e| api(e.into()))?
                {
                    return Err(inconsistent_length(Some(up.offset)));
                }
                up.length = Some(len);
            }
        }
    }
    if done
        && let (Some(l), Some(b)) = (up.length, body_len)
        && offset.checked_add(b) != Some(l)
    {
        return Err(inconsistent_length(Some(up.offset)));
    }
    let up = append_at(state, held, up, offset, &h, req.into_body()).await?;
    if done {
        finish_upload(state, user, up, StatusCode::OK).await
    } else {
        Ok((StatusCode::NO_CONTENT, state_headers(state, &up)).into_response())
    }
}

/// `DELETE /resumable/{id}`: cancels the upload, ending a request still writing it.
#[utoipa::path(
    delete,
    path = "/resumable/{id}",
    tag = "resumable",
    summary = "Cancel the upload",
    params(("id" = String, Path, description = "The upload's id")),
    responses((status = 204, description = "Cancelled"), Errors),
    security(("token" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let up = load(&state, &user, &id).await?;
    super::resumable::terminate(&state, &user, &up).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn structured_fields_parse() {
        assert_eq!(
            upload_complete(&hm(&[("upload-complete", "?1")])).ok(),
            Some(Some(true))
        );
        assert_eq!(
            upload_complete(&hm(&[("upload-complete", "?0;x=1")])).ok(),
            Some(Some(false))
        );
        assert!(upload_complete(&hm(&[("upload-complete", "1")])).is_err());
        assert!(upload_complete(&hm(&[("upload-complete", "true")])).is_err());
        assert_eq!(upload_complete(&hm(&[])).ok(), Some(None));
        assert_eq!(
            sf_integer(&hm(&[("upload-offset", "42")]), "upload-offset").ok(),
            Some(Some(42))
        );
        assert!(sf_integer(&hm(&[("upload-offset", "-1")]), "upload-offset").is_err());
        assert!(sf_integer(&hm(&[("upload-offset", "1e3")]), "upload-offset").is_err());
        assert!(
            sf_integer(
                &hm(&[("upload-offset", "1234567890123456")]),
                "upload-offset"
            )
            .is_err()
        );
    }

    #[test]
    fn names_come_from_content_disposition_then_metadata() {
        let h = hm(&[(
            "content-disposition",
            "attachment; filename=\"a.txt\"; filename*=UTF-8''%C3%A9t%C3%A9.txt",
        )]);
        assert_eq!(file_name(&h), "été.txt");
        let h = hm(&[(
            "content-disposition",
            "attachment; filename=\"../../x.bin\"",
        )]);
        assert_eq!(file_name(&h), "x.bin");
        let h = hm(&[("upload-metadata", "filename bm90ZXMudHh0")]);
        assert_eq!(file_name(&h), "notes.txt");
        assert_eq!(file_name(&hm(&[])), "upload");
    }
}
