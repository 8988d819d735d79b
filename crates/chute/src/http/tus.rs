//! tus 1.0.0 at `/tus/` (creation URL) and `/tus/{id}` (uploads), on the engine's resumable
//! appends: the core protocol and every extension (creation, creation-with-upload,
//! creation-defer-length, expiration, checksum, checksum-trailer, termination, concatenation,
//! concatenation-unfinished).
//!
//! Concatenation: a partial upload keeps its bytes staged when full (it is not a file of its
//! own); a final upload is assembled once all its partials are finished (at creation, or when
//! the last partial finishes), its digests computed while the bytes are copied, and becomes
//! the catalog file. checksum-trailer: a PATCH announcing `Trailer: Upload-Checksum` is hashed
//! with every offered algorithm as it streams and checked when the trailer arrives.
//!
//! Every request but OPTIONS must carry `Tus-Resumable: 1.0.0` (else 412 with `Tus-Version`,
//! nothing processed) and every response but OPTIONS's carries it. `X-HTTP-Method-Override`
//! on a POST to an upload URL turns it into the PATCH, HEAD or DELETE it names.

use super::extract::Path;
use crate::upload::limits::Limits;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};
use super::error_code;
use super::headers::{header_u64, http_date, parse_metadata};
use super::openapi::{Errors, count, header_params, one_of, text};
use super::origin::origin;
use super::resumable::{
    append_stream, finished_file, live, load_protocol, lock_upload, settled, siblings_size,
    terminate, upload_max,
};
use super::serve::serve_file;
use crate::checksum::Algorithm;
use crate::meta::{Protocol, UploadMeta, UploadRecord, UploadState, User, now_unix};
use crate::names::sanitize_file_name;
use crate::upload::UploadError;
use crate::upload::hooks::Origin;
use crate::upload::resumable::{Locked, NewUpload, UploadLock};

mod concat;
pub(crate) use concat::final_parts;

use concat::{
    assemble_final, assemble_waiting_final, concat_of, create_final, final_headers, parts_of,
};

const PROTOCOL: Protocol = Protocol::Tus;
const VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,expiration,\
checksum,checksum-trailer,termination,concatenation,concatenation-unfinished";
const CHECKSUMS: &str = "sha1,md5,sha256";
const OFFSET_STREAM: &str = "application/offset+octet-stream";

header_params! {
    /// `Tus-Resumable`, on every tus request but OPTIONS and downloads.
    pub TusResumable {
        ("Tus-Resumable", true, one_of(&[VERSION]), "The protocol's version (else 412 `unsupported_version`)"),
    }
}

header_params! {
    /// A tus creation's headers.
    pub CreateHeaders {
        ("Tus-Resumable", true, one_of(&[VERSION]), "The protocol's version (else 412 `unsupported_version`)"),
        ("Upload-Length", false, count(), "The upload's size in bytes"),
        ("Upload-Defer-Length", false, one_of(&["1"]), "The size is not known yet (sent with a later PATCH)"),
        ("Upload-Metadata", false, text(), "`key base64value` pairs, comma separated; `filename` and `filetype` become the file's name and type"),
        ("Upload-Concat", false, text(), "`partial`, or `final;URL URL...` naming the partial uploads to join"),
        ("Upload-Checksum", false, text(), "`sha1|md5|sha256 BASE64DIGEST` of this request's body"),
    }
}

header_params! {
    /// The method a POST stands for.
    pub MethodOverride {
        ("X-HTTP-Method-Override", false, one_of(&["PATCH", "HEAD", "DELETE"]), "The method meant (needed: without it, 405)"),
    }
}

header_params! {
    /// An append's headers.
    pub PatchHeaders {
        ("Upload-Offset", true, count(), "Where the body goes: the upload's current offset (else 409 `offset_mismatch`)"),
        ("Upload-Length", false, count(), "The size of a deferred-length upload, once known"),
        ("Upload-Checksum", false, text(), "`sha1|md5|sha256 BASE64DIGEST` of the body (mismatch: 460, bytes discarded)"),
        ("X-Progress-ID", false, super::openapi::progress_id(), "Report this request's progress at `/api/progress/{id}`"),
    }
}

/// Checks `Tus-Resumable` on requests and sets it on responses (OPTIONS excepted).
pub async fn protocol_layer(req: Request, next: Next) -> Response {
    if req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    // A request of the IETF draft (it carries Upload-Complete, not Tus-Resumable) is not tus.
    if !req.headers().contains_key("tus-resumable") && super::speaks_draft(req.headers()) {
        return next.run(req).await;
    }
    // Downloads are plain GETs (a browser sends no Tus-Resumable); they still get the header.
    let exempt = req.method() == Method::GET;
    let version_ok = req
        .headers()
        .get("tus-resumable")
        .is_some_and(|v| v.as_bytes() == VERSION.as_bytes());
    let mut res = if version_ok || exempt {
        next.run(req).await
    } else {
        let mut r = ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            error_code::UNSUPPORTED_VERSION,
            "send Tus-Resumable: 1.0.0",
        )
        .into_response();
        r.headers_mut()
            .insert("tus-version", HeaderValue::from_static(VERSION));
        r
    };
    res.headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(VERSION));
    res
}

pub async fn options(State(state): State<AppState>) -> Response {
    let mut h = HeaderMap::new();
    h.insert("tus-version", HeaderValue::from_static(VERSION));
    h.insert("tus-extension", HeaderValue::from_static(EXTENSIONS));
    h.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static(CHECKSUMS),
    );
    if let Some(max) = state.engine.settings.max_upload_size {
        h.insert("tus-max-size", HeaderValue::from(max.bytes()));
    }
    (StatusCode::NO_CONTENT, h).into_response()
}

/// The raw `Upload-Metadata` header, and the safe file name and type it gives.
fn upload_metadata(h: &HeaderMap) -> ApiResult<(String, String, Option<String>)> {
    let raw = h
        .get("upload-metadata")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| {
            ApiError::bad_request(error_code::BAD_METADATA, "Upload-Metadata is not ASCII")
        })?
        .unwrap_or_default();
    let meta = parse_metadata(&raw).ok_or_else(|| {
        ApiError::bad_request(
            error_code::BAD_METADATA,
            "Upload-Metadata must be `key base64,...`",
        )
    })?;
    let get = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
    };
    let name = sanitize_file_name(&get("filename").unwrap_or_default());
    let content_type =
        get("filetype").filter(|t| t.len() < 200 && !t.chars().any(char::is_control));
    Ok((raw, name, content_type))
}

fn algorithms(state: &AppState) -> Vec<Algorithm> {
    state.engine.checksum_algorithms(&[])
}

/// The caller's tus upload, or 404 (unknown or another user's) / 410 (expired).
async fn load(state: &AppState, user: &User, id: &str) -> ApiResult<UploadRecord> {
    load_protocol(state, user, PROTOCOL, id).await
}

/// The upload's offset and expiry; once it is finished, `Content-Location`: its file in the
/// catalog (`/api/files/{id}`), which tus's 204 answers have no other way to name.
fn offset_headers(up: &UploadRecord) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("upload-offset", HeaderValue::from(up.offset));
    if let Some(url) = up
        .file_id
        .as_ref()
        .and_then(|id| HeaderValue::from_str(&format!("/api/files/{id}")).ok())
    {
        h.insert(header::CONTENT_LOCATION, url);
    }
    if let Some(t) = up
        .expires_at
        .filter(|_| up.state == UploadState::Active)
        .and_then(http_date)
    {
        h.insert("upload-expires", t);
    }
    h
}

/// `POST /tus/`: creation (and creation-with-upload).
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user, limits): AuthUser,
    req: Request,
) -> ApiResult<Response> {
    let _admitted = state.in_flight.admit(user.id)?;
    let h = req.headers().clone();
    let concat = h
        .get("upload-concat")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| {
            ApiError::bad_request(error_code::BAD_CONCAT, "Upload-Concat is not readable")
        })?;
    if let Some(c) = concat.as_deref().filter(|c| c.starts_with("final;")) {
        return create_final(&state, &user, limits, c, &h).await;
    }
    if concat.as_deref().is_some_and(|c| c != "partial") {
        return Err(ApiError::bad_request(
            error_code::BAD_CONCAT,
            "Upload-Concat must be `partial` or `final;URL ...`",
        ));
    }
    let length = header_u64(&h, "upload-length")?;
    let deferred = match h.get("upload-defer-length") {
        None => false,
        Some(v) if v.as_bytes() == b"1" => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                error_code::BAD_HEADER,
                "Upload-Defer-Length must be 1",
            ));
        }
    };
    if length.is_some() == deferred {
        return Err(ApiError::bad_request(
            error_code::BAD_HEADER,
            "send either Upload-Length or Upload-Defer-Length: 1",
        ));
    }
    if let (Some(max), Some(len)) = (limits.max_upload_size, length)
        && len > max
    {
        return Err(ApiError::too_large(
            error_code::TOO_LARGE,
            format!("the upload is over the {max}-byte limit"),
        ));
    }
    // The quota and the count of open uploads are checked as the upload is created.
    let (raw_meta, name, content_type) = upload_metadata(&h)?;
    let meta = TusMeta {
        raw: &raw_meta,
        name: &name,
        content_type: content_type.as_deref(),
        concat: concat.as_deref(),
        origin: origin(&state.engine, &h, req.extensions()),
        limits,
    };
    let up = new_upload(&state, &user, length, meta, &[]).await?;
    let location = format!("/tus/{}", up.id);
    let with_body = h
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == OFFSET_STREAM.as_bytes());
    let up = if with_body {
        append(&state, None, up, 0, &h, req.into_body()).await?
    } else {
        finish_if_complete(&state, up).await?
    };
    let mut hm = offset_headers(&up);
    hm.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(ApiError::internal)?,
    );
    Ok((StatusCode::CREATED, hm).into_response())
}

struct TusMeta<'a> {
    raw: &'a str,
    name: &'a str,
    content_type: Option<&'a str>,
    concat: Option<&'a str>,
    /// Where the creation came from (for the pre-create hook).
    origin: Origin,
    /// The caller's limits.
    limits: Limits,
}

/// Creates a tus upload expiring `tus_upload_expiration` from now.
async fn new_upload(
    state: &AppState,
    user: &User,
    length: Option<u64>,
    m: TusMeta<'_>,
    parts: &[String],
) -> Result<UploadRecord, UploadError> {
    let expiry = state.engine.settings.tus_upload_expiration.0.as_secs() as i64;
    state
        .engine
        .create_upload(NewUpload {
            parts,
            owner_id: user.id,
            protocol: PROTOCOL,
            name: m.name,
            content_type: m.content_type,
            length,
            expires_at: Some(now_unix() + expiry),
            metadata: UploadMeta {
                upload_metadata: Some(m.raw.to_string()),
                concat: m.concat.map(str::to_string),
                ..Default::default()
            },
            origin: m.origin,
            limits: m.limits,
        })
        .await
}

/// Completes the upload when all its bytes are there (or it is empty). A partial upload of a
/// concatenation stays staged: it becomes part of a final upload, not a file.
async fn finish_if_complete(state: &AppState, up: UploadRecord) -> ApiResult<UploadRecord> {
    if up.state != UploadState::Active || up.length != Some(up.offset) {
        return Ok(up);
    }
    if concat_of(&up).as_deref() == Some("partial") {
        assemble_waiting_final(state, &up).await?;
        return Ok(up);
    }
    if concat_of(&up).is_some() {
        return Ok(up);
    }
    let digests = state.engine.upload_digests(&up, &algorithms(state)).await?;
    let file = state.engine.complete_upload(&up, &digests).await?;
    let mut up = up;
    up.state = UploadState::Complete;
    up.file_id = Some(file.id);
    Ok(up)
}

/// An upload whose bytes are all there but that is not a file yet: its completion was cut
/// short (a node killed, the catalog or the bucket down at that moment) after the last byte
/// was acknowledged. A tus client that finds offset = length sends nothing more, so asking
/// where the upload stands finishes it, under its lock. (A read-only node leaves it.)
async fn finish_received(
    state: &AppState,
    user: &User,
    up: UploadRecord,
) -> ApiResult<UploadRecord> {
    if !state.engine.settings.file_upload_enabled
        || up.state != UploadState::Active
        || up.length != Some(up.offset)
    {
        return Ok(up);
    }
    let _lock = lock_upload(state, &up.id).await?;
    let up = load(state, user, &up.id).await?;
    finish_if_complete(state, up).await
}

/// Streams `body` into the upload at `offset`, keeping what arrives (unless a checksum was
/// sent and does not match), and completes the upload when it is full.
async fn append(
    state: &AppState,
    held: Option<UploadLock>,
    up: UploadRecord,
    offset: u64,
    h: &HeaderMap,
    body: Body,
) -> ApiResult<UploadRecord> {
    let up = append_stream(state, held, up, offset, h, body).await?;
    finish_if_complete(state, up).await
}

/// `PATCH /tus/{id}`
#[utoipa::path(
    patch,
    path = "/tus/{id}",
    tag = "tus",
    summary = "Append bytes at the upload's offset",
    params(("id" = String, Path, description = "The upload's id"), TusResumable, PatchHeaders),
    request_body(content = Option<crate::http::openapi::Binary>, content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "Appended; the upload finishes when its length is reached", headers(
            ("Upload-Offset" = u64, description = "Bytes received"),
            ("Upload-Expires" = String, description = "When the unfinished upload expires (HTTP date)"),
            ("Content-Location" = String, description = "Once finished: its file, `/api/files/{id}`"),
        )),
        Errors,
    ),
    security(("token" = [])),
)]
pub async fn patch(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let _admitted = state.in_flight.admit(user.id)?;
    let h = req.headers().clone();
    if h.get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes() != OFFSET_STREAM.as_bytes())
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            error_code::UNSUPPORTED_MEDIA_TYPE,
            "PATCH needs Content-Type: application/offset+octet-stream",
        ));
    }
    let Some(offset) = header_u64(&h, "upload-offset")? else {
        return Err(ApiError::bad_request(
            error_code::BAD_HEADER,
            "PATCH needs Upload-Offset",
        ));
    };
    // The upload's lock first, and its record read once under it; an upload another request
    // holds is loaded (owner checked) before that request is asked to let go.
    let (held, mut up) = match state
        .engine
        .lock_owned_upload(user.id, PROTOCOL, &id)
        .await?
    {
        Locked::Held(lock, up) => (Some(lock), live(up)?),
        Locked::Busy(_) => (None, load(&state, &user, &id).await?),
        Locked::NotFound => return Err(ApiError::not_found("upload")),
    };
    let concat = concat_of(&up);
    if concat.as_deref().is_some_and(|c| c.starts_with("final")) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            error_code::FINAL_UPLOAD,
            "a final upload takes no PATCH",
        ));
    }
    if up.state != UploadState::Active || (concat.is_some() && up.length == Some(up.offset)) {
        return Err(ApiError::bad_request(
            error_code::COMPLETE,
            "the upload is already complete",
        ));
    }
    if let Some(len) = header_u64(&h, "upload-length")? {
        match up.length {
            Some(l) if l != len => {
                return Err(ApiError::bad_request(
                    error_code::LENGTH_CHANGED,
                    "Upload-Length cannot change",
                ));
            }
            Some(_) => {}
            None => {
                let others = siblings_size(&state, &up).await?;
                if let Some(max) = upload_max(&state, &up)
                    && len.saturating_add(others) > max
                {
                    return Err(ApiError::too_large(
                        error_code::TOO_LARGE,
                        "the upload is over the limit",
                    ));
                }
                if len < up.offset || !state.engine.declare_length(&up, len).await? {
                    return Err(ApiError::bad_request(
                        error_code::BAD_LENGTH,
                        "Upload-Length is below the offset or already set",
                    ));
                }
                up.length = Some(len);
            }
        }
    }
    let up = append(&state, held, up, offset, &h, req.into_body()).await?;
    Ok((StatusCode::NO_CONTENT, offset_headers(&up)).into_response())
}

/// `HEAD /tus/{id}`
#[utoipa::path(
    head,
    path = "/tus/{id}",
    tag = "tus",
    summary = "Where the upload stands",
    params(("id" = String, Path, description = "The upload's id"), TusResumable),
    responses(
        (status = 200, description = "The upload's offset, length, metadata and concatenation", headers(
            ("Upload-Offset" = u64), ("Upload-Length" = u64), ("Upload-Defer-Length" = String),
            ("Upload-Metadata" = String), ("Upload-Concat" = String), ("Upload-Expires" = String),
            ("Content-Location" = String, description = "Once finished: its file, `/api/files/{id}`"),
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
    // (The lock is let go before a final upload is assembled: that takes the same lock.)
    let up = settled(&state, up, || load(&state, &user, &id)).await?;
    let is_final = concat_of(&up).is_some_and(|c| c.starts_with("final;"));
    let up = if is_final {
        up
    } else {
        finish_received(&state, &user, up).await?
    };
    let mut h = if is_final {
        // A read-only node changes nothing, so it does not assemble either.
        let up = if state.engine.settings.file_upload_enabled {
            assemble_final(&state, up.clone()).await?
        } else {
            up.clone()
        };
        let parts = parts_of(&state, &up).await?.unwrap_or_default();
        final_headers(&up, &parts)
    } else {
        let mut h = offset_headers(&up);
        match up.length {
            Some(l) => h.insert("upload-length", HeaderValue::from(l)),
            None => h.insert("upload-defer-length", HeaderValue::from_static("1")),
        };
        h
    };
    let raw = up.metadata.upload_metadata.clone().unwrap_or_default();
    if !raw.is_empty()
        && let Ok(v) = HeaderValue::from_str(&raw)
    {
        h.insert("upload-metadata", v);
    }
    if let Some(c) = concat_of(&up).and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert("upload-concat", c);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((StatusCode::OK, h).into_response())
}

/// `DELETE /tus/{id}`: termination. A finished upload's file goes too.
#[utoipa::path(
    delete,
    path = "/tus/{id}",
    tag = "tus",
    summary = "Terminate the upload (its file too, if finished)",
    params(("id" = String, Path, description = "The upload's id"), TusResumable),
    responses((status = 204, description = "Terminated"), Errors),
    security(("token" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(user, ..): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let up = load(&state, &user, &id).await?;
    terminate(&state, &user, &up).await
}

/// `GET /tus/{id}`: the finished upload's bytes.
#[utoipa::path(
    get,
    path = "/tus/{id}",
    tag = "tus",
    summary = "Download the finished upload",
    description = "As `GET /api/files/{id}`: `Range`, `ETag`, `If-None-Match`.",
    params(("id" = String, Path, description = "The upload's id"), super::serve::DownloadHeaders),
    responses(
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
    let Some(file) = finished_file(&state, &up).await? else {
        return Err(ApiError::not_found("finished upload"));
    };
    serve_file(&state, &file, &headers, "attachment").await
}

/// `POST /tus/{id}` with `X-HTTP-Method-Override`.
#[utoipa::path(
    post,
    path = "/tus/{id}",
    tag = "tus",
    summary = "PATCH, HEAD or DELETE for clients that can only POST",
    params(
        ("id" = String, Path, description = "The upload's id"),
        TusResumable,
        MethodOverride,
    ),
    request_body(content = Option<crate::http::openapi::Binary>, content_type = "application/offset+octet-stream", description = "A PATCH's body"),
    responses(
        (status = 200, description = "As HEAD"),
        (status = 204, description = "As PATCH or DELETE"),
        Errors,
    ),
    security(("token" = [])),
)]
pub async fn method_override(
    state: State<AppState>,
    user: AuthUser,
    id: Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let m = req
        .headers()
        .get("x-http-method-override")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_uppercase();
    match m.as_str() {
        "PATCH" => patch(state, user, id, req).await,
        "HEAD" => head(state, user, id).await,
        "DELETE" => delete(state, user, id).await,
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            error_code::METHOD_NOT_ALLOWED,
            "POST to an upload needs X-HTTP-Method-Override: PATCH, HEAD or DELETE",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata() {
        let m = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
            .expect("valid");
        assert_eq!(
            m[0],
            ("filename".into(), b"world_domination_plan.pdf".to_vec())
        );
        assert_eq!(m[1], ("is_confidential".into(), Vec::new()));
        assert!(parse_metadata("a YQ==,a Yg==").is_none(), "duplicate key");
        let many: Vec<String> = (0..5000).map(|i| format!("k{i} YQ==")).collect();
        assert_eq!(parse_metadata(&many.join(",")).map(|m| m.len()), Some(5000));
        let last_repeats = format!("{},k0 Yg==", many.join(","));
        assert!(parse_metadata(&last_repeats).is_none(), "a repeat far down");
        assert!(parse_metadata("a !!!").is_none(), "not base64");
        assert!(parse_metadata("a YQ== extra").is_none());
        assert_eq!(parse_metadata("").map(|v| v.len()), Some(0));
        assert_eq!(
            http_date(784111777).map(|h| h.to_str().map(str::to_string).unwrap_or_default()),
            Some("Sun, 06 Nov 1994 08:49:37 GMT".to_string())
        );
    }
}
