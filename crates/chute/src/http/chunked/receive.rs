//! `POST /api/chunked_upload/`: one chunk. The form is read as it arrives: `upload_id` may
//! come before or after the chunk (a page appends fields in its own order), so a chunk whose
//! upload is not known yet is spooled to a temporary file until the form says which upload it
//! belongs to; otherwise it streams straight into the upload at its offset.

use crate::http::origin::origin;
use crate::upload::hooks::Origin;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;

use super::{
    ContentRange, PART_HEADER_LIMIT, PROTOCOL, SMALL_FORM, algorithms, check_live, forbidden,
    offset_error, parse_content_range, progress_json,
};
use crate::http::AppState;
use crate::http::auth::AuthUser;
use crate::http::body::{BodyLimits, BodyState, GuardedBody};
use crate::http::error::{ApiError, ApiResult};
use crate::http::error_code;
use crate::http::form::{body_error, multer_error};
use crate::http::headers::multipart_boundary;
use crate::http::openapi::Errors;
use crate::meta::{UploadRecord, UploadState, User, now_unix};
use crate::names::sanitize_file_name;
use crate::upload::UploadError;
use crate::upload::handler::FileInfo;
use crate::upload::limits::Limits;
use crate::upload::resumable::{Locked, NewUpload, UploadLock};

/// `POST /api/chunked_upload/`: one chunk.
#[utoipa::path(
    post,
    path = "/api/chunked_upload/",
    tag = "chunked",
    summary = "Send one chunk",
    params(("Content-Range" = String, Header, pattern = "^bytes [0-9]{1,15}-[0-9]{1,15}/[0-9]{1,15}$", description = "`bytes START-END/TOTAL`, START <= END < TOTAL")),
    request_body(content = super::ChunkBody, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Received", body = super::ChunkedJson, links(
            ("status" = (operation_id = "chunked.status", parameters(("upload_id" = "$response.body#/upload_id")))),
        )),
        Errors,
    ),
    security(("token" = [])),
)]
pub async fn chunk(
    State(state): State<AppState>,
    auth: Result<AuthUser, ApiError>,
    req: Request,
) -> ApiResult<Response> {
    let AuthUser(user, limits) = auth.map_err(forbidden)?;
    let _admitted = state.in_flight.admit(user.id)?;
    let settings = state.engine.settings.clone();
    let headers = req.headers().clone();
    let caller = Caller {
        origin: origin(&state.engine, &headers, req.extensions()),
        user,
        limits,
    };
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
            caller.limits.max_upload_size,
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
            let res =
                receive_chunk(&state, &caller, upload_id.as_deref(), range, info, chunk).await;
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
        let res = receive_chunk(&state, &caller, upload_id.as_deref(), range, info, chunk).await;
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

/// Who sent a chunk: the user, their limits, and where the request came from.
struct Caller {
    user: User,
    limits: Limits,
    origin: Origin,
}

async fn receive_chunk(
    state: &AppState,
    caller: &Caller,
    upload_id: Option<&str>,
    range: ContentRange,
    info: FileInfo,
    field: ChunkStream,
) -> ApiResult<Response> {
    let engine = &state.engine;
    let user = &caller.user;
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
                    origin: caller.origin.clone(),
                    limits: caller.limits,
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

/// Bytes of a chunk as the adapter reads them (from the request, or from a spooled copy).
type ChunkStream = futures::stream::BoxStream<'static, Result<Bytes, ApiError>>;
