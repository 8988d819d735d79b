//! tus concatenation (`Upload-Concat`, with concatenation-unfinished): partial uploads, each
//! claimed by one final upload when the final is created (at most `tus_max_concat_parts`,
//! their total held to `max_upload_size` at creation, as deferred partials grow, and at
//! assembly), and the final's assembly into one file once every partial is whole, whether
//! its last partial finished or a client asked about the final.

use crate::upload::limits::Limits;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{PROTOCOL, TusMeta, algorithms, load, new_upload, offset_headers, upload_metadata};
use crate::http::AppState;
use crate::http::error::{ApiError, ApiResult};
use crate::http::error_code;
use crate::http::resumable::upload_max;
use crate::meta::{MetaError, UploadRecord, UploadState, User};
use crate::upload::UploadError;

/// The upload's `Upload-Concat` value ("partial" or "final;..."), if any.
pub(super) fn concat_of(up: &UploadRecord) -> Option<String> {
    up.metadata.concat.clone()
}

/// The upload ids named by `final;/tus/a http://host/tus/b`.
pub(crate) fn final_parts(v: &str) -> Option<Vec<String>> {
    let list = v.strip_prefix("final;")?;
    let ids: Vec<String> = list
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(|u| {
            u.trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    (!ids.is_empty()).then_some(ids)
}

/// `POST /tus/` with `Upload-Concat: final;...`: assembles finished partial uploads.
pub(super) async fn create_final(
    state: &AppState,
    user: &User,
    limits: Limits,
    concat: &str,
    h: &HeaderMap,
) -> ApiResult<Response> {
    if h.contains_key("upload-length") || h.contains_key("upload-defer-length") {
        return Err(ApiError::bad_request(
            error_code::BAD_CONCAT,
            "a final upload takes no Upload-Length",
        ));
    }
    let ids = final_parts(concat).ok_or_else(|| {
        ApiError::bad_request(
            error_code::BAD_CONCAT,
            "Upload-Concat: final; needs upload URLs",
        )
    })?;
    let settings = &state.engine.settings;
    if ids.len() as u64 > settings.tus_max_concat_parts {
        return Err(ApiError::bad_request(
            error_code::TOO_MANY_PARTS,
            format!(
                "a final upload names at most {} partial uploads (tus_max_concat_parts)",
                settings.tus_max_concat_parts
            ),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    if let Some(twice) = ids.iter().find(|id| !seen.insert(id.as_str())) {
        return Err(ApiError::bad_request(
            error_code::BAD_CONCAT,
            format!("`{twice}` is named twice"),
        ));
    }
    let mut parts = Vec::with_capacity(ids.len());
    for id in &ids {
        let p = load(state, user, id).await.map_err(|_| {
            ApiError::bad_request(
                error_code::BAD_CONCAT,
                format!("`{id}` is not a partial upload of yours"),
            )
        })?;
        if concat_of(&p).as_deref() != Some("partial") {
            return Err(ApiError::bad_request(
                error_code::BAD_CONCAT,
                format!("`{id}` is not a partial upload"),
            ));
        }
        if p.final_id.is_some() {
            return Err(taken(id));
        }
        parts.push(p);
    }
    // What the partials hold or declared; a deferred one counts again as it grows.
    let known = parts
        .iter()
        .try_fold(0u64, |n, p| n.checked_add(p.length.unwrap_or(p.offset)));
    if let Some(max) = limits
        .max_upload_size
        .filter(|m| known.is_none_or(|k| k > *m))
    {
        return Err(ApiError::too_large(
            error_code::TOO_LARGE,
            format!("the upload is over the {max}-byte limit"),
        ));
    }
    let (raw_meta, name, content_type) = upload_metadata(h)?;
    let meta = TusMeta {
        raw: &raw_meta,
        name: &name,
        content_type: content_type.as_deref(),
        concat: Some(concat),
        // A final upload stores nothing new; its partials were asked at their creation.
        origin: Default::default(),
        limits,
    };
    // concatenation-unfinished: the final upload may name partials still in progress; it is
    // assembled when the last of them finishes (or when it is next asked about). The partials
    // are claimed with its creation, so that no other final can name them.
    let up = match new_upload(state, user, None, meta, &ids).await {
        Err(UploadError::Meta(MetaError::Conflict(_))) => return Err(taken("a partial upload")),
        other => other?,
    };
    let up = assemble_final(state, up).await?;
    let mut hm = final_headers(&up, &parts);
    hm.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/tus/{}", up.id)).map_err(ApiError::internal)?,
    );
    Ok((StatusCode::CREATED, hm).into_response())
}

/// A partial upload that another final upload names already.
pub(super) fn taken(id: &str) -> ApiError {
    ApiError::bad_request(
        error_code::BAD_CONCAT,
        format!("`{id}` is already part of another final upload"),
    )
}

/// Offset headers of a final upload: no Upload-Offset until it is assembled (the
/// concatenation-unfinished rule), its length once every partial's length is known.
pub(super) fn final_headers(up: &UploadRecord, parts: &[UploadRecord]) -> HeaderMap {
    if up.state != UploadState::Active {
        let mut h = offset_headers(up);
        if let Some(l) = up.length {
            h.insert("upload-length", HeaderValue::from(l));
        }
        return h;
    }
    let mut h = offset_headers(up);
    h.remove("upload-offset");
    let total = parts
        .iter()
        .try_fold(0u64, |n, p| p.length.and_then(|l| n.checked_add(l)));
    if let Some(total) = total {
        h.insert("upload-length", HeaderValue::from(total));
    }
    h
}

/// The partial uploads a final upload names, as they are now (None if one is gone).
pub(super) async fn parts_of(
    state: &AppState,
    fin: &UploadRecord,
) -> ApiResult<Option<Vec<UploadRecord>>> {
    let ids = concat_of(fin)
        .as_deref()
        .and_then(final_parts)
        .unwrap_or_default();
    let mut parts = Vec::with_capacity(ids.len());
    for id in &ids {
        match state
            .engine
            .owned_upload(fin.owner_id, PROTOCOL, id)
            .await?
        {
            Some(p) => parts.push(p),
            None => return Ok(None),
        }
    }
    Ok(Some(parts))
}

/// Assembles a final upload once all its partials are finished: one pass that copies and
/// hashes their staged bytes, then the file joins the catalog. Returns the upload as it is
/// after (still active when a partial is unfinished, or another request is assembling it).
pub(super) async fn assemble_final(state: &AppState, fin: UploadRecord) -> ApiResult<UploadRecord> {
    if fin.state != UploadState::Active {
        return Ok(fin);
    }
    let engine = &state.engine;
    let Some(_lock) = engine.uploads.try_lock(&fin.id).await else {
        return Ok(fin);
    };
    // Read under the lock: a partial that finished meanwhile is seen finished.
    let fin = engine
        .meta
        .get_upload(&fin.id)
        .await?
        .ok_or_else(|| ApiError::not_found("upload"))?;
    if fin.state != UploadState::Active {
        return Ok(fin);
    }
    let Some(parts) = parts_of(state, &fin).await? else {
        return Ok(fin);
    };
    if parts.iter().any(|p| p.length != Some(p.offset)) {
        return Ok(fin);
    }
    let total = parts.iter().try_fold(0u64, |n, p| n.checked_add(p.offset));
    if let Some(max) = upload_max(state, &fin).filter(|m| total.is_none_or(|t| t > *m)) {
        return Err(ApiError::too_large(
            error_code::TOO_LARGE,
            format!("the partial uploads hold more than the {max}-byte limit"),
        ));
    }
    let (total, digests) = engine.concatenate(&fin, &parts, &algorithms(state)).await?;
    let mut fin = fin;
    fin.offset = total;
    fin.length = Some(total);
    let file = engine.complete_upload(&fin, &digests).await?;
    // The partials are spent (marked complete with the final): their staged bytes go.
    for p in &parts {
        let storage = engine.storage.clone();
        let key = p.staging_key.clone();
        let _ = tokio::task::spawn_blocking(move || storage.abort(&key)).await;
    }
    fin.state = UploadState::Complete;
    fin.file_id = Some(file.id);
    Ok(fin)
}

/// After a partial upload finishes: assembles the final upload waiting for it, if any.
pub(super) async fn assemble_waiting_final(
    state: &AppState,
    partial: &UploadRecord,
) -> ApiResult<()> {
    let Some(fin) = &partial.final_id else {
        return Ok(());
    };
    if let Some(up) = state.engine.meta.get_upload(fin).await? {
        assemble_final(state, up).await?;
    }
    Ok(())
}
