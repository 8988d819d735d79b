//! `POST /api/files`: Django-style streaming multipart uploads (`request.FILES`).
//!
//! The body is parsed as it arrives (multer); each file part streams through the route's
//! handler chain on the pipeline thread; text fields are kept (within Django's limits) and
//! echoed back. Files appear in the catalog only when the whole request succeeded.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::auth::AuthUser;
use super::error::{ApiError, ApiResult};
use super::error_code;
use super::form::receive_request;
use super::headers::{content_length, multipart_boundary};
use super::openapi::header_params;
use super::origin::form_hooks;
use super::progress::progress_id;
use crate::meta::FileRecord;
use crate::upload::UploadError;
use crate::upload::events::MULTIPART;
use crate::upload::handlers::ChainContext;
use crate::upload::limits::Limits;
use crate::upload::pipeline::Outcome;

header_params! {
    /// A form upload's headers.
    pub FormParams {
        ("X-Progress-ID", false, super::openapi::progress_id(), "Report this upload's progress at `/api/progress/{id}` (also as a query argument)"),
    }
}

/// A form: files in any fields, and text fields.
#[derive(utoipa::ToSchema)]
#[schema(as = Form)]
#[allow(dead_code)] // Only described: the body is streamed, never built into this.
pub struct FormBody {
    /// A file (any field name may carry files).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// What a form upload stored.
#[derive(utoipa::ToSchema)]
#[schema(as = FormUploaded)]
#[allow(dead_code)] // Only described: the answer is built as JSON in `respond`.
pub struct FormAnswer {
    files: Vec<crate::meta::FileJson>,
    /// The text fields, by name (a name may repeat).
    fields: BTreeMap<String, Vec<String>>,
    /// Present and true when a handler stopped the upload early (what it kept is stored).
    stopped: Option<bool>,
}

pub async fn upload(
    State(state): State<AppState>,
    AuthUser(user, limits): AuthUser,
    req: Request,
) -> ApiResult<Response> {
    let _admitted = state.in_flight.admit(user.id)?;
    upload_form(&state, &user, limits, req).await
}

/// A form upload of `user`, already admitted (the draft's replay of an upgraded upload comes
/// here too; a request that asks for the upgrade was sent to the draft by `http::mod`).
pub(super) async fn upload_form(
    state: &AppState,
    user: &crate::meta::User,
    limits: Limits,
    req: Request,
) -> ApiResult<Response> {
    let state = state.clone();
    let settings = state.engine.settings.clone();
    let headers = req.headers().clone();
    let (content_type, boundary) =
        multipart_boundary(&headers, "send files as multipart/form-data")?;
    let content_length = content_length(&headers)?;
    let limit = limits.max_upload_size;
    if let (Some(limit), Some(cl)) = (limit, content_length)
        && cl > limit
    {
        return Err(ApiError::too_large(
            error_code::TOO_LARGE,
            format!("the request body of {cl} bytes is over the {limit}-byte limit"),
        ));
    }
    let used_bytes = match limits.quota {
        Some(q) => {
            let used = state.engine.meta.usage_bytes(user.id).await?;
            if used >= q && content_length.unwrap_or(1) > 0 {
                return Err(UploadError::QuotaExceeded { quota: q, used }.into());
            }
            used
        }
        None => 0,
    };
    let progress_id = progress_id(&headers, req.uri().query())?;
    let progress = progress_id
        .as_deref()
        .map(|id| state.progress.start(user.id, id, content_length));

    let (gate, progress_events) = form_hooks(
        &state.engine,
        user,
        MULTIPART,
        None,
        &headers,
        req.extensions(),
    );
    let ctx = ChainContext {
        storage: state.engine.storage.clone(),
        settings: settings.clone(),
        used_bytes,
        limits,
        progress: progress.clone(),
        extra_checksums: Vec::new(),
        request_length: content_length,
        gate,
        progress_events,
        metrics: state.engine.metrics.clone(),
    };
    let chain = (state.files_chain)(&ctx);
    let counted = state.engine.metrics.form_upload(MULTIPART);
    let result = match receive_request(&state, req, chain, (content_type, boundary), limit).await {
        Ok(got) => respond(&state, user.id, limits, got.outcome, got.fields).await,
        Err(e) => Err(e),
    };
    if result.is_ok() {
        counted.finished();
    }
    super::progress::finish(progress.as_deref(), &result);
    result
}

async fn respond(
    state: &AppState,
    owner_id: i64,
    limits: Limits,
    outcome: Outcome,
    fields: Vec<(String, String)>,
) -> ApiResult<Response> {
    if outcome.files.is_empty() && outcome.stopped.is_none() {
        return Err(ApiError::bad_request(
            error_code::NO_FILE,
            "the request has no file part",
        ));
    }
    let mut saved: Vec<FileRecord> = Vec::with_capacity(outcome.files.len());
    for done in outcome.files {
        match state.engine.persist(owner_id, limits.quota, done).await {
            Ok(rec) => saved.push(rec),
            Err(e) => {
                // All or nothing: undo the files of this request already recorded.
                for rec in &saved {
                    let _ = state.engine.delete_file(owner_id, &rec.id).await;
                }
                return Err(e.into());
            }
        }
    }
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in fields {
        by_name.entry(k).or_default().push(v);
    }
    let mut body = json!({
        "files": saved.iter().map(FileRecord::to_json).collect::<Vec<Value>>(),
        "fields": by_name,
    });
    if outcome.stopped.is_some() {
        body["stopped"] = Value::Bool(true);
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
