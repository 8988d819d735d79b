//! What the resumable protocols share, below them: tus (`tus`, `tus_concat`) and the IETF
//! draft (`ietf`) each parse their own headers and shape their own answers, and call here to
//! load the caller's upload of their protocol, lock it, append a request body to it, settle
//! it for a client asking where it stands, terminate it, and find the file it became. (The
//! django-chunked-upload protocol takes its chunks from a form, through `form`, and keeps its
//! own answers; it shares the engine below, `upload::resumable`.)
//!
//! An append streams the body through the upload's handler chain (checksum, quota, progress)
//! into staging, and commits what arrived. Its failures are an `AppendError`, which each
//! protocol turns into its own answer: `From<AppendError> for ApiError` for tus, problem
//! documents in `ietf`.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::AppState;
use super::body::{BodyFailure, BodyLimits, GuardedBody, with_trailers};
use super::error::{ApiError, ApiResult};
use super::error_code;
use super::headers::{announces_checksum_trailer, parse_checksum};
use crate::events::EventType;
use crate::meta::{Protocol, UploadRecord, UploadState, User, now_unix};
use crate::upload::handler::{FileInfo, UploadHandler};
use crate::upload::handlers::progress::ProgressHandler;
use crate::upload::handlers::progress_events::{ProgressEventHandler, ProgressEvents};
use crate::upload::handlers::verify::{TrailerDigest, VerifyHandler};
use crate::upload::resumable::{PREEMPT_WAIT, UploadLock};

/// How an append failed. Each protocol answers it its own way: tus (and what shares its
/// shapes) through `From<AppendError> for ApiError`, the draft with problem documents.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The client's offset is not the upload's.
    OffsetMismatch { current: u64 },
    /// The body runs past the upload's declared length (or, with none, past the most it may
    /// hold); nothing of it is kept.
    PastLength,
    /// The body broke off. What arrived is kept: the upload is now at `kept`.
    Interrupted { kept: u64 },
    /// The body broke off before its checksum could be checked; nothing of it is kept.
    Unverified,
    /// Anything else, already the answer it deserves (a bad header, 423, 408, a quota, a
    /// checksum mismatch, a storage failure).
    Api(ApiError),
}

impl From<ApiError> for AppendError {
    fn from(e: ApiError) -> Self {
        AppendError::Api(e)
    }
}

impl From<crate::upload::UploadError> for AppendError {
    fn from(e: crate::upload::UploadError) -> Self {
        match e {
            crate::upload::UploadError::OffsetMismatch { current } => {
                AppendError::OffsetMismatch { current }
            }
            e => AppendError::Api(e.into()),
        }
    }
}

impl From<crate::meta::MetaError> for AppendError {
    fn from(e: crate::meta::MetaError) -> Self {
        AppendError::Api(e.into())
    }
}

impl AppendError {
    fn status(&self) -> StatusCode {
        match self {
            AppendError::OffsetMismatch { .. } => StatusCode::CONFLICT,
            AppendError::PastLength => StatusCode::PAYLOAD_TOO_LARGE,
            AppendError::Interrupted { .. } | AppendError::Unverified => StatusCode::BAD_REQUEST,
            AppendError::Api(e) => e.status,
        }
    }
}

/// tus's answers (JSON errors), which chunked-style clients read too.
impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::OffsetMismatch { current } => ApiError::new(
                StatusCode::CONFLICT,
                error_code::OFFSET_MISMATCH,
                "Upload-Offset does not match the upload's offset",
            )
            .with("offset", current),
            AppendError::PastLength => {
                ApiError::too_large(error_code::TOO_LARGE, "the body runs past Upload-Length")
            }
            AppendError::Interrupted { kept } => ApiError::bad_request(
                error_code::INTERRUPTED,
                "the body broke off; what arrived is kept",
            )
            .with("offset", kept),
            AppendError::Unverified => ApiError::bad_request(
                error_code::INTERRUPTED,
                "the body broke off before its checksum could be checked",
            ),
            AppendError::Api(e) => e,
        }
    }
}

/// The caller's upload of `protocol`, or 404 (unknown or another user's) / 410 (expired).
pub(crate) async fn load_protocol(
    state: &AppState,
    user: &User,
    protocol: Protocol,
    id: &str,
) -> ApiResult<UploadRecord> {
    let Some(up) = state.engine.owned_upload(user.id, protocol, id).await? else {
        return Err(ApiError::not_found("upload"));
    };
    live(up)
}

/// The upload, or 410 when it expired unfinished.
pub(crate) fn live(up: UploadRecord) -> ApiResult<UploadRecord> {
    if up.state == UploadState::Active && up.expires_at.is_some_and(|t| t <= now_unix()) {
        return Err(ApiError::new(
            StatusCode::GONE,
            error_code::EXPIRED,
            "the upload has expired",
        ));
    }
    Ok(up)
}

/// The most bytes `up` may hold: the server's maximum, or a lower one the upload was created
/// under (the pre-create hook's, or its creator's credential's).
pub(crate) fn upload_max(state: &AppState, up: &UploadRecord) -> Option<u64> {
    crate::upload::limits::lowest(
        state.engine.settings.max_upload_size.map(|m| m.bytes()),
        up.metadata.max_size,
    )
}

/// The most bytes `up` may still take from its offset: up to its declared length, else up
/// to the maximum upload size, less what the other partials of its final upload hold or
/// declared. None: no bound.
pub(crate) async fn room(state: &AppState, up: &UploadRecord) -> ApiResult<Option<u64>> {
    if let Some(l) = up.length {
        return Ok(Some(l.saturating_sub(up.offset)));
    }
    let Some(max) = upload_max(state, up) else {
        return Ok(None);
    };
    let others = siblings_size(state, up).await?;
    Ok(Some(max.saturating_sub(others).saturating_sub(up.offset)))
}

/// What the other partials of `up`'s final upload hold or declared (0 when it has none).
pub(crate) async fn siblings_size(state: &AppState, up: &UploadRecord) -> ApiResult<u64> {
    let Some(fin) = &up.final_id else {
        return Ok(0);
    };
    Ok(state
        .engine
        .meta
        .final_parts(fin)
        .await?
        .iter()
        .filter(|p| p.id != up.id)
        .fold(0u64, |n, p| n.saturating_add(p.length.unwrap_or(p.offset))))
}

/// Streams `body` into the upload at `offset` (checksum, quota, progress on the way) and
/// commits what arrived; completing the upload is the caller's business. `held`: the upload's
/// lock, when the caller took it and read `up` under it; otherwise it is taken here (asking a
/// request that holds it to let go) and `up` read again.
pub(crate) async fn append_stream(
    state: &AppState,
    held: Option<UploadLock>,
    up: UploadRecord,
    offset: u64,
    h: &HeaderMap,
    body: Body,
) -> Result<UploadRecord, AppendError> {
    // `X-Progress-ID` on a PATCH: its progress at /api/progress/{id}, as for form uploads.
    let progress = super::progress::progress_id(h, None)?.map(|id| {
        let expected = super::headers::content_length(h).ok().flatten();
        state.progress.start(up.owner_id, &id, expected)
    });
    let mut handlers: Vec<Box<dyn UploadHandler>> = Vec::new();
    if let Some(p) = &progress {
        handlers.push(Box::new(ProgressHandler::new(p.clone())));
    }
    let events = &state.engine.events;
    if events.reports_progress() {
        handlers.push(Box::new(ProgressEventHandler::new(ProgressEvents {
            events: events.clone(),
            subject: up.id.clone(),
            upload_id: Some(up.id.clone()),
            protocol: up.protocol.as_str(),
            user: state.engine.user_name(up.owner_id).await,
            start: offset,
            length: up.length,
            session: None,
        })));
    }
    let result = append_body(state, held, up, offset, h, body, handlers).await;
    let failed = result.as_ref().err().map(|e| e.status().as_u16());
    super::progress::finish_status(progress.as_deref(), failed);
    result
}

async fn append_body(
    state: &AppState,
    held: Option<UploadLock>,
    up: UploadRecord,
    offset: u64,
    h: &HeaderMap,
    body: Body,
    mut handlers: Vec<Box<dyn UploadHandler>>,
) -> Result<UploadRecord, AppendError> {
    let engine = &state.engine;
    // checksum-trailer: the digest comes after the body, announced by `Trailer`.
    let mut trailer_digest: Option<TrailerDigest> = None;
    let verified = match h.get("upload-checksum") {
        Some(v) => {
            let (alg, expected) = parse_checksum(v.to_str().unwrap_or(""))?;
            handlers.push(Box::new(VerifyHandler::new(alg, expected)));
            true
        }
        None if announces_checksum_trailer(h) => {
            let slot = TrailerDigest::default();
            handlers.push(Box::new(VerifyHandler::from_trailer(slot.clone())));
            trailer_digest = Some(slot);
            true
        }
        None => false,
    };
    let (lock, up) = match held {
        Some(lock) => (lock, up),
        None => {
            let lock = lock_upload(state, &up.id).await?;
            // Read again under the lock: the request that held it may have moved the offset.
            let up = engine
                .meta
                .get_upload(&up.id)
                .await?
                .ok_or_else(|| ApiError::not_found("upload"))?;
            (lock, up)
        }
    };
    if up.offset != offset {
        return Err(AppendError::OffsetMismatch { current: up.offset });
    }
    // Up to the declared length; with none, up to the maximum upload size.
    let limit = room(state, &up).await?;
    let info = FileInfo {
        file_name: up.name.clone(),
        content_type: up.content_type.clone(),
        ..Default::default()
    };
    let mut job = engine
        .start_append(
            &up,
            offset,
            &state.engine.checksum_algorithms(&[]),
            handlers,
            info,
        )
        .await?;
    job.expect_body(super::headers::content_length(h).ok().flatten());
    let (data, trailers) = with_trailers(body);
    let (mut stream, body_state) =
        GuardedBody::new(data, BodyLimits::new(&engine.settings, limit, u64::MAX));
    let mut broke = false;
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            () = lock.release_requested() => {
                // A newer request for this upload (a client that reconnected) asks for it:
                // end here, keeping what is durable.
                broke = true;
                break;
            }
        };
        match item {
            Some(Ok(c)) => {
                if !job.send(c).await {
                    break;
                }
            }
            Some(Err(_)) => {
                broke = true;
                break;
            }
            None => break,
        }
    }
    let too_large = matches!(body_state.failure(), Some(BodyFailure::TooLarge { .. }));
    if let Some(slot) = &trailer_digest {
        let sent = trailers
            .lock()
            .ok()
            .and_then(|mut t| t.take())
            .and_then(|t| t.get("upload-checksum").cloned());
        let digest =
            sent.map(|v| parse_checksum(v.to_str().unwrap_or("")).map_err(|e| e.message.clone()));
        if let Ok(mut s) = slot.lock() {
            *s = digest;
        }
    }
    let mut ended = job.end(!broke).await?;
    if let Some(e) = ended.error.take() {
        ended.discard();
        return Err(e.into());
    }
    if broke && (verified || too_large) {
        // Bytes that cannot be verified, or that run past the length, are not kept.
        ended.discard();
        return Err(if too_large {
            AppendError::PastLength
        } else {
            AppendError::Unverified
        });
    }
    let new_offset = ended.commit().await?;
    if let Some(
        f @ (BodyFailure::IdleTimeout | BodyFailure::TooSlow { .. } | BodyFailure::TooLong { .. }),
    ) = body_state.failure()
    {
        // A client that stopped or trickled: 408, what arrived is kept (HEAD tells how much).
        return Err(ApiError::from(f).into());
    }
    if broke && state.drain.is_draining() {
        // Ended by this node's drain: a retryable 503 (the client goes on elsewhere), with
        // what was kept.
        return Err(super::drain::draining_error()
            .with("offset", new_offset)
            .into());
    }
    if broke {
        return Err(AppendError::Interrupted { kept: new_offset });
    }
    let mut up = up;
    up.offset = new_offset;
    Ok(up)
}

/// Ends an upload for good (tus termination, the draft's cancellation): a request still
/// writing it is ended first; a finished upload's file goes too.
/// The upload's lock, asking a request that holds it to let go (`PREEMPT_WAIT`); 423 when it
/// does not.
pub(crate) async fn lock_upload(state: &AppState, id: &str) -> ApiResult<UploadLock> {
    state
        .engine
        .uploads
        .lock_preempting(id, PREEMPT_WAIT, &state.engine.metrics)
        .await
        .ok_or_else(ApiError::locked)
}

pub(crate) async fn terminate(
    state: &AppState,
    user: &User,
    up: &UploadRecord,
) -> ApiResult<Response> {
    let _lock = lock_upload(state, &up.id).await?;
    if let Some(fid) = &up.file_id {
        state.engine.delete_file(user.id, fid).await?;
    }
    // A finished upload's termination deleted its file (`file.deleted`); an open one's is
    // `upload.terminated`.
    let why = (up.state == UploadState::Active).then_some(EventType::UploadTerminated);
    state.engine.discard_upload(up, why).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Where an upload stands for a client asking (HEAD): a request still writing it is stale
/// once its client asks, so it is ended (its bytes kept) and the upload read afresh.
pub(crate) async fn settled<F, Fut>(
    state: &AppState,
    up: UploadRecord,
    reload: F,
) -> ApiResult<UploadRecord>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ApiResult<UploadRecord>>,
{
    let lock = state
        .engine
        .uploads
        .lock_preempting(&up.id, PREEMPT_WAIT, &state.engine.metrics)
        .await;
    match lock {
        Some(_) => reload().await,
        None => Ok(up),
    }
}

/// The catalog file a finished upload became, if it is finished.
pub(crate) async fn finished_file(
    state: &AppState,
    up: &UploadRecord,
) -> ApiResult<Option<crate::meta::FileRecord>> {
    Ok(match &up.file_id {
        Some(fid) => state.engine.meta.get_file(fid).await?,
        None => None,
    })
}
