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

use super::extract::Query;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::AuthUser;
use super::body::{BodyLimits, GuardedBody};
use super::error::{ApiError, ApiResult};
use super::error_code;
use super::form::{body_error, multer_error};
use super::headers::rfc3339;
use super::openapi::Errors;
use crate::checksum::Algorithm;
use crate::meta::{Protocol, UploadRecord, UploadState, User, now_unix};

mod receive;
pub use receive::{__path_chunk, chunk};

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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// The upload's id (else 400 `no_upload_id`).
    #[param(required = true)]
    upload_id: Option<String>,
}

/// Where a chunked upload stands.
#[derive(utoipa::ToSchema)]
#[schema(as = ChunkedUpload)]
#[allow(dead_code)] // Only described: `progress_json` builds it.
pub struct ChunkedJson {
    upload_id: String,
    /// Bytes received.
    offset: u64,
    /// When the unfinished upload expires (RFC 3339).
    expires: Option<String>,
    /// The total from `Content-Range` (status only).
    length: Option<u64>,
    /// Whether it was completed (status only).
    complete: Option<bool>,
}

/// One chunk: multipart with the chunk in `file`, `upload_id` after the first.
#[derive(utoipa::ToSchema)]
#[schema(as = Chunk)]
#[allow(dead_code)] // Only described: the body is streamed.
pub struct ChunkBody {
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    upload_id: Option<String>,
}

/// The completion form.
#[derive(utoipa::ToSchema)]
#[schema(as = ChunkedCompletion)]
#[allow(dead_code)] // Only described: `small_form` reads it.
pub struct CompleteBody {
    upload_id: String,
    /// The whole file's md5, hex.
    md5: String,
}

/// `GET /api/chunked_upload/?upload_id=…`
#[utoipa::path(
    get,
    path = "/api/chunked_upload/",
    tag = "chunked",
    summary = "Where a chunked upload stands",
    params(StatusQuery),
    responses((status = 200, description = "Its offset, length and state", body = ChunkedJson), Errors),
    security(("token" = [])),
)]
pub async fn status(
    State(state): State<AppState>,
    auth: Result<AuthUser, ApiError>,
    Query(q): Query<StatusQuery>,
) -> ApiResult<Response> {
    let AuthUser(user, ..) = auth.map_err(forbidden)?;
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

/// `POST /api/chunked_upload_complete/` with `upload_id` and `md5`.
#[utoipa::path(
    post,
    path = "/api/chunked_upload_complete/",
    tag = "chunked",
    summary = "Complete a chunked upload, checking its md5",
    request_body(content = CompleteBody, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The stored file, with `md5`, `sha256` and `upload_id`", body = crate::meta::FileJson),
        Errors,
    ),
    security(("token" = [])),
)]
pub async fn complete(
    State(state): State<AppState>,
    auth: Result<AuthUser, ApiError>,
    req: Request,
) -> ApiResult<Response> {
    let AuthUser(user, ..) = auth.map_err(forbidden)?;
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
    let mut body = file.to_json();
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
