//! The django-chunked-upload protocol, so that jQuery-File-Upload's chunked mode and the
//! package's demo work unchanged:
//!
//! - `POST /api/chunked_upload/`: multipart with the chunk in field `file`
//!   (`chunked_upload_field_name`) and `Content-Range: bytes START-END/TOTAL`; `upload_id` as a
//!   form field (before the file part) or query argument on every chunk but the first. Answers
//!   200 `{"upload_id", "offset", "expires"}`.
//! - `POST /api/chunked_upload_complete/` with `upload_id` and `md5` (form-urlencoded or
//!   multipart): 200 with the stored file's JSON.
//! - `GET /api/chunked_upload/?upload_id=…`: the current offset, so a client that lost its
//!   state can resume (the package lacks this).
//!
//! Errors are JSON with `error`, `code` and, where it helps the client, the current `offset`:
//! 403 unauthenticated (the package's status), 404 unknown or another user's upload, 410
//! expired, 400 for everything the client can fix. Unlike the package, a second completion is
//! refused and md5 is computed while the chunks arrive, never by reading the file back.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::AuthUser;
use super::body::{BodyLimits, BodyState, GuardedBody};
use super::error::{ApiError, ApiResult};
use super::error_code;
use super::form::{body_error, multer_error};
use super::headers::{multipart_boundary, rfc3339};
use super::serve::file_json;
use crate::checksum::Algorithm;
use crate::meta::{Protocol, UploadRecord, UploadState, User, now_unix};
use crate::names::sanitize_file_name;
use crate::upload::UploadError;
use crate::upload::handler::FileInfo;
use crate::upload::resumable::{Locked, NewUpload, UploadLock};

const PROTOCOL: Protocol = Protocol::Chunked;
/// The form fields around a chunk are small; this bounds what is read of them.
const SMALL_FORM: usize = 64 * 1024;
const PART_HEADER_LIMIT: u64 = 16 * 1024;

/// `Content-Range: bytes START-END/TOTAL`, END inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    pub end: u64,
    pub total: u64,
}

impl ContentRange {
    pub fn chunk_len(&self) -> u64 {
        self.end - self.start + 1
    }
}

pub fn parse_content_range(v: &str) -> Option<ContentRange> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.trim().split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let r = ContentRange {
        start: num(start)?,
        end: num(end)?,
        total: num(total)?,
    };
    (r.start <= r.end && r.end < r.total).then_some(r)
}

/// The algorithms every chunked upload keeps: md5 for the protocol, and those of
/// `file_upload_checksums` (sha256 by default).
fn algorithms(state: &AppState) -> Vec<Algorithm> {
    state.engine.checksum_algorithms(&[Algorithm::Md5])
}

fn forbidden(e: ApiError) -> ApiError {
    // django-chunked-upload answers 403 to an unauthenticated request; keep its status.
    ApiError::new(StatusCode::FORBIDDEN, error_code::FORBIDDEN, e.message)
}

fn progress_json(up: &UploadRecord) -> Value {
    json!({
        "upload_id": up.id,
        "offset": up.offset,
        "expires": up.expires_at.and_then(rfc3339),
    })
}

/// The caller's upload, or the protocol's 404 / 410.
async fn load(state: &AppState, user: &User, id: &str) -> ApiResult<UploadRecord> {
    let Some(up) = state.engine.owned_upload(user.id, PROTOCOL, id).await? else {
        return Err(ApiError::not_found("upload"));
    };
    check_live(&up)?;
    Ok(up)
}

/// 410 for an expired upload.
fn check_live(up: &UploadRecord) -> ApiResult<()> {
    if up.expires_at.is_some_and(|t| t <= now_unix()) {
        return Err(ApiError::new(
            StatusCode::GONE,
            error_code::EXPIRED,
            "the upload has expired",
        )
        .with("upload_id", up.id.clone()));
    }
    Ok(())
}

fn offset_error(code: &'static str, msg: impl Into<String>, offset: u64) -> ApiError {
    ApiError::bad_request(code, msg).with("offset", offset)
}

#[derive(Deserialize)]
pub struct StatusQuery {
    upload_id: Option<String>,
}

/// `GET /api/chunked_upload/?upload_id=…`
pub async fn status(
    State(state): State<AppState>,
    auth: Result<AuthUser, ApiError>,
    Query(q): Query<StatusQuery>,
) -> ApiResult<Response> {
    let AuthUser(user) = auth.map_err(forbidden)?;
    let Some(id) = q.upload_id else {
        return Err(ApiError::bad_request(
            error_code::NO_UPLOAD_ID,
            "give the upload_id to look up",
        ));
    };
    let up = load(&state, &user, &id).await?;
    let mut body = progress_json(&up);
    body["length"] = json!(up.length);
    body["complete"] = json!(up.state == UploadState::Complete);
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// `POST /api/chunked_upload/`: one chunk.
pub async fn chunk(
    State(state): State<AppState>,
    auth: Result<AuthUser, ApiError>,
    req: Request,
) -> ApiResult<Response> {
    let AuthUser(user) = auth.map_err(forbidden)?;
    let _admitted = state.in_flight.admit(user.id)?;
    let settings = state.engine.settings.clone();
    let headers = req.headers().clone();
    let (_, boundary) = multipart_boundary(&headers, "send each chunk as multipart/form-data")?;
    let range = match headers.get(header::CONTENT_RANGE) {
        None => {
            return Err(ApiError::bad_request(
                error_code::NO_CONTENT_RANGE,
                "each chunk needs a Content-Range: bytes START-END/TOTAL header",
            ));
        }
        Some(v) => v
            .to_str()
            .ok()
            .and_then(parse_content_range)
            .ok_or_else(|| {
                ApiError::bad_request(
                    error_code::BAD_CONTENT_RANGE,
                    "Content-Range must be `bytes START-END/TOTAL` with START <= END < TOTAL",
                )
            })?,
    };
    if let Some(max) = settings.chunked_upload_max_bytes
        && range.total > max.bytes()
    {
        return Err(ApiError::bad_request(
            error_code::TOO_LARGE,
            format!("the file is over the {}-byte limit", max.bytes()),
        ));
    }
    let query_id = req.uri().query().and_then(|q| {
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == "upload_id").then(|| v.to_string())
        })
    });
    let (body, body_state) = GuardedBody::new(
        req.into_body().into_data_stream(),
        BodyLimits::new(
            &settings,
            settings.max_upload_size.map(|s| s.bytes()),
            PART_HEADER_LIMIT + settings.max_request_header_size.bytes(),
        ),
    );
    let mut multipart = multer::Multipart::new(body, boundary);
    let mut upload_id = query_id;
    // A chunk that came before its upload_id (a page may append the fields in any order),
    // kept in a temporary file until the upload_id is read.
    let mut early: Option<(FileInfo, tempfile::NamedTempFile)> = None;
    let (mut n_fields, mut field_bytes) = (0u64, 0usize);
    loop {
        body_state.set_header_phase(true);
        let next = multipart.next_field().await;
        body_state.set_header_phase(false);
        let field = match next {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(body_or(&body_state, multer_error(e))),
        };
        n_fields += 1;
        if n_fields > settings.data_upload_max_number_fields {
            return Err(ApiError::too_large(
                error_code::TOO_MANY_FIELDS,
                "too many form fields",
            ));
        }
        let name = field.name().unwrap_or("").to_string();
        if name == settings.chunked_upload_field_name {
            if early.is_some() {
                return Err(ApiError::bad_request(
                    error_code::TWO_CHUNKS,
                    "a request carries one chunk",
                ));
            }
            let file_name = sanitize_file_name(field.file_name().unwrap_or("unnamed"));
            let content_type = field.content_type().map(|m| m.essence_str().to_string());
            let info = FileInfo {
                field_name: name,
                file_name,
                content_type,
                ..Default::default()
            };
            // A chunk past the start with no upload_id yet: its upload_id may follow.
            if upload_id.is_none() && range.start > 0 {
                early = Some((info, spool(&state, field, &range, &body_state).await?));
                continue;
            }
            let bs = body_state.clone();
            let chunk = field
                .map(move |r| r.map_err(|e| body_or(&bs, multer_error(e))))
                .boxed();
            let res = receive_chunk(&state, &user, upload_id.as_deref(), range, info, chunk).await;
            // What follows the chunk (other fields) does not matter; let the body finish.
            drain(multipart).await;
            return res;
        }
        let mut field = field;
        let mut value = Vec::new();
        loop {
            match field.chunk().await {
                Ok(Some(c)) => {
                    field_bytes += c.len();
                    if field_bytes > SMALL_FORM {
                        return Err(ApiError::too_large(
                            error_code::FIELDS_TOO_LARGE,
                            "form fields are too large",
                        ));
                    }
                    value.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => return Err(body_or(&body_state, multer_error(e))),
            }
        }
        if name == "upload_id" {
            upload_id = Some(String::from_utf8_lossy(&value).trim().to_string());
        }
    }
    if let Some((info, file)) = early {
        let reader = tokio::fs::File::from_std(file.reopen().map_err(ApiError::internal)?);
        let chunk = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024)
            .map(|r| r.map_err(ApiError::internal))
            .boxed();
        let res = receive_chunk(&state, &user, upload_id.as_deref(), range, info, chunk).await;
        drop(file);
        return res;
    }
    Err(ApiError::bad_request(
        error_code::NO_CHUNK,
        format!(
            "no chunk in the `{}` field",
            settings.chunked_upload_field_name
        ),
    ))
}

/// Bytes of a chunk as the adapter reads them (from the request, or from a spooled copy).
type ChunkStream = futures::stream::BoxStream<'static, Result<Bytes, ApiError>>;

/// Copies a chunk into a temporary file, refusing more bytes than its Content-Range says
/// (the bound on what is held before the upload is known).
async fn spool(
    state: &AppState,
    mut field: multer::Field<'static>,
    range: &ContentRange,
    body_state: &BodyState,
) -> ApiResult<tempfile::NamedTempFile> {
    use tokio::io::AsyncWriteExt;
    let dir = state.engine.settings.temp_dir();
    let tmp = tokio::task::spawn_blocking(move || tempfile::NamedTempFile::new_in(dir))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::from(crate::upload::UploadError::Io(e)))?;
    let mut out = tokio::fs::File::from_std(tmp.reopen().map_err(ApiError::internal)?);
    let mut got = 0u64;
    loop {
        match field.chunk().await {
            Ok(Some(c)) => {
                got += c.len() as u64;
                if got > range.chunk_len() {
                    return Err(offset_error(
                        error_code::SIZE_MISMATCH,
                        format!(
                            "the chunk holds more than the {} bytes its Content-Range says",
                            range.chunk_len()
                        ),
                        range.start,
                    ));
                }
                out.write_all(&c)
                    .await
                    .map_err(|e| ApiError::from(crate::upload::UploadError::Io(e)))?;
            }
            Ok(None) => break,
            Err(e) => return Err(body_or(body_state, multer_error(e))),
        }
    }
    out.flush()
        .await
        .map_err(|e| ApiError::from(crate::upload::UploadError::Io(e)))?;
    Ok(tmp)
}

fn body_or(state: &BodyState, fallback: ApiError) -> ApiError {
    if state.failure().is_some() {
        body_error(state)
    } else {
        fallback
    }
}

async fn drain(mut multipart: multer::Multipart<'static>) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(Some(mut f)) = multipart.next_field().await {
            while let Ok(Some(_)) = f.chunk().await {}
        }
    })
    .await;
}

async fn receive_chunk(
    state: &AppState,
    user: &User,
    upload_id: Option<&str>,
    range: ContentRange,
    info: FileInfo,
    field: ChunkStream,
) -> ApiResult<Response> {
    let engine = &state.engine;
    let (lock, up) = match upload_id.filter(|s| !s.is_empty()) {
        Some(id) => {
            let (lock, up) = match engine.lock_owned_upload(user.id, PROTOCOL, id).await? {
                Locked::Held(lock, up) => (lock, up),
                Locked::NotFound => return Err(ApiError::not_found("upload")),
                Locked::Busy(up) => {
                    check_live(&up)?;
                    return Err(offset_error(
                        error_code::BUSY,
                        "another request is writing this upload",
                        up.offset,
                    )
                    .with("upload_id", up.id));
                }
            };
            check_live(&up)?;
            if up.state != UploadState::Active {
                return Err(offset_error(
                    error_code::COMPLETE,
                    "the upload is already complete",
                    up.offset,
                ));
            }
            if up.length != Some(range.total) {
                return Err(offset_error(
                    error_code::TOTAL_CHANGED,
                    format!(
                        "the total size changed from {} to {}",
                        up.length.unwrap_or(0),
                        range.total
                    ),
                    up.offset,
                ));
            }
            (lock, up)
        }
        None => {
            if range.start != 0 {
                return Err(offset_error(
                    error_code::OFFSET_MISMATCH,
                    "a new upload starts at offset 0 (send upload_id to continue one)",
                    0,
                ));
            }
            // The quota and the count of open uploads are checked as the upload is created.
            let expires =
                now_unix() + engine.settings.chunked_upload_expiration_delta.0.as_secs() as i64;
            let up = engine
                .create_upload(NewUpload {
                    parts: &[],
                    owner_id: user.id,
                    protocol: PROTOCOL,
                    name: &info.file_name,
                    content_type: info.content_type.as_deref(),
                    length: Some(range.total),
                    expires_at: Some(expires),
                    metadata: Default::default(),
                })
                .await?;
            let lock = engine
                .uploads
                .try_lock(&up.id)
                .await
                .ok_or_else(|| ApiError::internal("a new upload is locked"))?;
            (lock, up)
        }
    };
    let id = up.id.clone();
    // Every answer from here on names the upload, so a client whose first chunk failed can
    // still resume the upload it created.
    append_chunk(state, lock, up, range, info, field)
        .await
        .map_err(|e| e.with("upload_id", id))
}

/// Appends the chunk to `up`, which `_lock` holds and whose record was read under it.
async fn append_chunk(
    state: &AppState,
    _lock: UploadLock,
    up: UploadRecord,
    range: ContentRange,
    info: FileInfo,
    mut field: ChunkStream,
) -> ApiResult<Response> {
    let engine = &state.engine;
    if range.start != up.offset {
        return Err(offset_error(
            error_code::OFFSET_MISMATCH,
            format!(
                "the chunk starts at {}, the upload is at {}",
                range.start, up.offset
            ),
            up.offset,
        ));
    }
    let mut job = engine
        .start_append(&up, up.offset, &algorithms(state), Vec::new(), info)
        .await?;
    let want = range.chunk_len();
    let mut got = 0u64;
    let mut too_long = false;
    let mut broke: Option<ApiError> = None;
    loop {
        match field.next().await {
            Some(Ok(mut c)) => {
                if got + c.len() as u64 > want {
                    c.truncate((want - got) as usize);
                    too_long = true;
                }
                got += c.len() as u64;
                if !c.is_empty() && !job.send(Bytes::clone(&c)).await {
                    break;
                }
                if too_long {
                    break;
                }
            }
            None => break,
            Some(Err(e)) => {
                broke = Some(e);
                break;
            }
        }
    }
    if let Some(err) = broke {
        // The body broke off: keep what arrived, durably, as the new offset.
        let ended = job.end(false).await?;
        let offset = ended.commit().await.map_err(ApiError::from)?;
        return Err(err.with("offset", offset));
    }
    let mut ended = job.end(true).await?;
    if let Some(e) = ended.error.take() {
        ended.discard();
        let err: ApiError = e.into();
        return Err(err.with("offset", up.offset));
    }
    if too_long || got != want {
        ended.discard();
        let held = if too_long {
            format!("more than {want}")
        } else {
            got.to_string()
        };
        return Err(offset_error(
            error_code::SIZE_MISMATCH,
            format!("the chunk holds {held} bytes, its Content-Range says {want}"),
            up.offset,
        ));
    }
    let offset = match ended.commit().await {
        Ok(o) => o,
        Err(UploadError::OffsetMismatch { current }) => {
            return Err(offset_error(
                error_code::OFFSET_MISMATCH,
                "another request moved the upload",
                current,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let mut up = up;
    up.offset = offset;
    Ok(Json(progress_json(&up)).into_response())
}

/// `POST /api/chunked_upload_complete/` with `upload_id` and `md5`.
pub async fn complete(
    State(state): State<AppState>,
    auth: Result<AuthUser, ApiError>,
    req: Request,
) -> ApiResult<Response> {
    let AuthUser(user) = auth.map_err(forbidden)?;
    let form = small_form(&state, req).await?;
    let (Some(id), Some(md5)) = (form.get("upload_id"), form.get("md5")) else {
        return Err(ApiError::bad_request(
            error_code::MISSING_FIELDS,
            "completion needs the upload_id and md5 fields",
        ));
    };
    let md5 = md5.trim().to_ascii_lowercase();
    let up = load(&state, &user, id.trim()).await?;
    if up.state != UploadState::Active {
        return Err(offset_error(
            error_code::COMPLETE,
            "the upload is already complete",
            up.offset,
        ));
    }
    let Some(_lock) = state.engine.uploads.try_lock(&up.id).await else {
        return Err(offset_error(
            error_code::BUSY,
            "another request is writing this upload",
            up.offset,
        ));
    };
    let up = state
        .engine
        .meta
        .get_upload(&up.id)
        .await?
        .ok_or_else(|| ApiError::not_found("upload"))?;
    if up.state != UploadState::Active {
        return Err(offset_error(
            error_code::COMPLETE,
            "the upload is already complete",
            up.offset,
        ));
    }
    if Some(up.offset) != up.length {
        return Err(offset_error(
            error_code::INCOMPLETE,
            format!(
                "only {} of {} bytes have arrived",
                up.offset,
                up.length.unwrap_or(0)
            ),
            up.offset,
        ));
    }
    let digests = state
        .engine
        .upload_digests(&up, &algorithms(&state))
        .await?;
    let have = digests
        .iter()
        .find(|(a, _)| *a == Algorithm::Md5)
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if have != md5 {
        return Err(offset_error(
            "md5_mismatch",
            "the md5 does not match the bytes received; the upload is kept, complete it again with the right md5",
            up.offset,
        ));
    }
    let file = state.engine.complete_upload(&up, &digests).await?;
    let mut body = file_json(&file);
    body["upload_id"] = json!(up.id);
    body["md5"] = json!(file.md5);
    body["sha256"] = json!(file.sha256);
    Ok(Json(body).into_response())
}

/// Reads a small form body, urlencoded or multipart, into name -> value.
/// The body has the same guards as every other (idle timeout, minimum rate, size).
async fn small_form(state: &AppState, req: Request) -> ApiResult<HashMap<String, String>> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (mut body, body_state) = GuardedBody::new(
        req.into_body().into_data_stream(),
        BodyLimits::new(&state.engine.settings, Some(SMALL_FORM as u64), 0),
    );
    let mut buf = Vec::new();
    while let Some(c) = body.next().await {
        match c {
            Ok(c) => buf.extend_from_slice(&c),
            Err(_) => return Err(body_error(&body_state)),
        }
    }
    let bytes = Bytes::from(buf);
    if ct.starts_with("multipart/form-data") {
        let boundary = multer::parse_boundary(&ct).map_err(|_| {
            ApiError::bad_request(
                error_code::BAD_BOUNDARY,
                "the multipart Content-Type has no valid boundary",
            )
        })?;
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
        let mut mp = multer::Multipart::new(stream, boundary);
        let mut out = HashMap::new();
        while let Some(f) = mp.next_field().await.map_err(multer_error)? {
            let name = f.name().unwrap_or("").to_string();
            let text = f.text().await.map_err(multer_error)?;
            out.insert(name, text);
        }
        Ok(out)
    } else {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
            .map(|v| v.into_iter().collect())
            .map_err(|_| ApiError::bad_request(error_code::BAD_FORM, "the form body is not valid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 0-999/5000"),
            Some(ContentRange {
                start: 0,
                end: 999,
                total: 5000
            })
        );
        assert_eq!(
            parse_content_range("bytes 4000-4999/5000").map(|r| r.chunk_len()),
            Some(1000)
        );
        for bad in [
            "bytes 0-999/999",
            "bytes 5-4/10",
            "bytes -1-4/10",
            "bytes 0-4/*",
            "items 0-4/10",
            "bytes 0-4",
            "bytes a-b/c",
            "",
            "bytes +1-4/10",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }
}
