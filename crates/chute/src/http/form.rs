//! Receiving a multipart/form-data body, shared by every endpoint that takes one: the file API
//! (`multipart`), the chunked protocol's chunks (`chunked`) and upload sessions (`sessions`).
//! The body is parsed as it arrives (multer) behind the request's guards (`body`): each file
//! part streams through the given handler chain on the pipeline, and text fields are kept
//! within Django's limits. Parse failures become 400s with a JSON `error`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, header};
use futures::Stream;

use super::AppState;
use super::body::{BodyLimits, BodyState, GuardedBody};
use super::error::{ApiError, ApiResult};
use super::error_code;
use super::headers::content_length;
use crate::names::sanitize_file_name;
use crate::upload::UploadError;
use crate::upload::handler::{FileInfo, RawInput};
use crate::upload::pipeline::{Msg, Outcome, Pipeline};

/// Bytes a parser may read while looking for one part's headers, beyond one socket read.
const PART_HEADER_LIMIT: u64 = 16 * 1024;

/// After an error, read at most this much more of the body so the client sees the answer.
const DRAIN_BYTES: u64 = 64 << 20;

const DRAIN_TIME: Duration = Duration::from_secs(10);

/// What stopped the parse loop.
enum ParseStop {
    /// The pipeline ended early (a handler refused or stopped the upload).
    Pipeline,
    /// The request is at fault.
    Api(ApiError),
}

/// What a multipart request delivered: the chain's files and the text fields.
pub(crate) struct Received {
    pub outcome: Outcome,
    pub fields: Vec<(String, String)>,
}

/// Streams a multipart request (its boundary already checked) through `chain`, within the
/// body limits of the settings and the caller's largest upload, `limit`.
pub(crate) async fn receive_request(
    state: &AppState,
    req: Request,
    chain: crate::upload::handler::Chain,
    (content_type, boundary): (String, String),
    limit: Option<u64>,
) -> ApiResult<Received> {
    let settings = &state.engine.settings;
    let content_length = content_length(req.headers())?;
    let raw = RawInput {
        content_type,
        content_length,
        boundary: Some(boundary.clone()),
    };
    let (body, body_state) = GuardedBody::new(
        req.into_body().into_data_stream(),
        BodyLimits::new(
            settings,
            limit,
            PART_HEADER_LIMIT + settings.max_request_header_size.bytes(),
        ),
    );
    receive(state, chain, raw, body, body_state, boundary).await
}

async fn receive<S, E>(
    state: &AppState,
    chain: crate::upload::handler::Chain,
    raw: RawInput,
    body: GuardedBody<S>,
    body_state: std::sync::Arc<BodyState>,
    boundary: String,
) -> ApiResult<Received>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let settings = &state.engine.settings;
    let mut pipeline = Pipeline::start(chain, Some(&raw)).map_err(ApiError::from)?;

    // A handler that took the raw input gets the body as it is.
    if pipeline.is_raw() {
        let mut body = body;
        use futures::StreamExt;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => {
                    if !pipeline.send(Msg::Raw(c)).await {
                        break;
                    }
                }
                Err(_) => {
                    pipeline.abort().await;
                    return Err(body_error(&body_state));
                }
            }
        }
        let outcome = pipeline.finish().await.map_err(ApiError::from)?;
        let raw = outcome.raw.unwrap_or_default();
        let fields = raw.fields;
        let outcome = Outcome {
            files: raw.files,
            stopped: outcome.stopped,
            raw: None,
        };
        return Ok(Received { outcome, fields });
    }

    let mut multipart = multer::Multipart::new(body, boundary);
    let mut fields: Vec<(String, String)> = Vec::new();
    let stop = parse(
        &mut multipart,
        &mut pipeline,
        &body_state,
        settings,
        &mut fields,
    )
    .await;
    match stop {
        Ok(()) | Err(ParseStop::Pipeline) => {
            let outcome = pipeline.finish().await;
            finish_outcome(outcome, fields, multipart, &body_state).await
        }
        Err(ParseStop::Api(err)) => {
            pipeline.abort().await;
            let err = match body_state.failure() {
                Some(_) => body_error(&body_state),
                None => err,
            };
            if body_state.failure().is_none() {
                drain_multipart(multipart).await;
            }
            Err(err)
        }
    }
}

async fn finish_outcome(
    outcome: Result<Outcome, UploadError>,
    fields: Vec<(String, String)>,
    multipart: multer::Multipart<'static>,
    body_state: &BodyState,
) -> ApiResult<Received> {
    match outcome {
        Ok(outcome) => {
            if outcome.stopped == Some(false) {
                drain_multipart(multipart).await;
            }
            Ok(Received { outcome, fields })
        }
        Err(e) => {
            if body_state.failure().is_some() {
                return Err(body_error(body_state));
            }
            drain_multipart(multipart).await;
            Err(e.into())
        }
    }
}

async fn drain_multipart(mut multipart: multer::Multipart<'static>) {
    // multer owns the body stream; pulling fields until it ends drains what is left.
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0u64;
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(c)) = field.chunk().await {
                seen += c.len() as u64;
                if seen > DRAIN_BYTES {
                    return;
                }
            }
        }
    })
    .await;
}

/// The answer to a body that failed, or to a malformed multipart body.
pub(crate) fn body_error(state: &BodyState) -> ApiError {
    match state.failure() {
        Some(f) => f.into(),
        None => ApiError::bad_request(
            error_code::MALFORMED_MULTIPART,
            "the multipart body is malformed",
        ),
    }
}

pub(crate) fn multer_error(e: multer::Error) -> ApiError {
    use multer::Error as M;
    match e {
        M::IncompleteStream | M::IncompleteFieldData { .. } | M::IncompleteHeaders => {
            ApiError::bad_request(
                error_code::MALFORMED_MULTIPART,
                "the body ended before the multipart data did",
            )
        }
        M::ReadHeaderFailed(_) | M::DecodeHeaderName { .. } | M::DecodeHeaderValue { .. } => {
            ApiError::bad_request(
                error_code::MALFORMED_MULTIPART,
                "a multipart part has malformed headers",
            )
        }
        other => ApiError::bad_request(
            error_code::MALFORMED_MULTIPART,
            format!("malformed multipart body: {other}"),
        ),
    }
}

async fn parse(
    multipart: &mut multer::Multipart<'static>,
    pipeline: &mut Pipeline,
    body_state: &BodyState,
    settings: &crate::config::Settings,
    fields: &mut Vec<(String, String)>,
) -> Result<(), ParseStop> {
    let max_fields = settings.data_upload_max_number_fields;
    let max_files = settings.data_upload_max_number_files;
    let max_field_bytes = settings.data_upload_max_memory_size.bytes();
    let (mut n_parts, mut n_files, mut field_bytes) = (0u64, 0u64, 0u64);
    loop {
        body_state.set_header_phase(true);
        let next = multipart.next_field().await;
        body_state.set_header_phase(false);
        let mut field = match next {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(e) => return Err(ParseStop::Api(multer_error(e))),
        };
        n_parts += 1;
        if n_parts > max_fields {
            return Err(ParseStop::Api(ApiError::too_large(
                error_code::TOO_MANY_FIELDS,
                format!("more than {max_fields} form fields (data_upload_max_number_fields)"),
            )));
        }
        if field.headers().get(header::CONTENT_DISPOSITION).is_none() {
            return Err(ParseStop::Api(ApiError::bad_request(
                error_code::MALFORMED_MULTIPART,
                "a multipart part has no Content-Disposition",
            )));
        }
        let Some(name) = field.name().map(str::to_string) else {
            return Err(ParseStop::Api(ApiError::bad_request(
                error_code::MALFORMED_MULTIPART,
                "a multipart part has no field name",
            )));
        };
        match field.file_name().map(str::to_string) {
            // An empty file input: the browser sends a part with filename="" (Django skips it).
            Some(raw_name) if raw_name.is_empty() => while let Ok(Some(_)) = field.chunk().await {},
            Some(raw_name) => {
                n_files += 1;
                if n_files > max_files {
                    return Err(ParseStop::Api(ApiError::too_large(
                        error_code::TOO_MANY_FILES,
                        format!("more than {max_files} files (data_upload_max_number_files)"),
                    )));
                }
                let info = file_info(&name, &raw_name, field.headers());
                if !pipeline.send(Msg::NewFile(info)).await {
                    return Err(ParseStop::Pipeline);
                }
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => {
                            if !pipeline.send(Msg::Data(chunk)).await {
                                return Err(ParseStop::Pipeline);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return Err(ParseStop::Api(multer_error(e))),
                    }
                }
                if !pipeline.send(Msg::EndFile).await {
                    return Err(ParseStop::Pipeline);
                }
            }
            None => {
                let mut value = Vec::new();
                field_bytes += name.len() as u64;
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => {
                            field_bytes += chunk.len() as u64;
                            if field_bytes > max_field_bytes {
                                return Err(ParseStop::Api(ApiError::too_large(
                                    error_code::FIELDS_TOO_LARGE,
                                    format!(
                                        "form fields are over {max_field_bytes} bytes (data_upload_max_memory_size)"
                                    ),
                                )));
                            }
                            value.extend_from_slice(&chunk);
                        }
                        Ok(None) => break,
                        Err(e) => return Err(ParseStop::Api(multer_error(e))),
                    }
                }
                let value = String::from_utf8(value).map_err(|_| {
                    ParseStop::Api(ApiError::bad_request(
                        error_code::BAD_FIELD,
                        format!("form field `{name}` is not UTF-8 text"),
                    ))
                })?;
                fields.push((name, value));
            }
        }
    }
}

fn file_info(field: &str, raw_name: &str, headers: &HeaderMap) -> FileInfo {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let mut content_type = None;
    let mut charset = None;
    let mut extra = BTreeMap::new();
    if let Some(ct) = ct {
        let mut parts = ct.split(';');
        content_type = parts
            .next()
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty());
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                let k = k.trim().to_ascii_lowercase();
                let v = v.trim().trim_matches('"').to_string();
                if k == "charset" {
                    charset = Some(v);
                } else {
                    extra.insert(k, v);
                }
            }
        }
    }
    FileInfo {
        field_name: field.to_string(),
        file_name: sanitize_file_name(raw_name),
        raw_name: raw_name.to_string(),
        content_type,
        content_length: headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()),
        charset,
        content_type_extra: extra,
    }
}
