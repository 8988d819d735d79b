//! What every protocol answers about a stored file's bytes (`serve_file`: Range, ETag / If-None-Match, a safe
//! Content-Disposition), from whichever store holds it. (Its JSON is `FileRecord::to_json`.)

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio_util::io::{ReaderStream, StreamReader};

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::error_code;
use super::openapi::{header_params, text};
use crate::meta::FileRecord;
use crate::names::content_disposition;

header_params! {
    /// What a download may ask.
    pub DownloadHeaders {
        ("Range", false, text(), "One range, `bytes=START-END` (else the whole file; unsatisfiable: 416 `bad_range`)"),
        ("If-None-Match", false, text(), "An ETag seen before: 304 when the file is the same"),
    }
}

/// What a download answers (`serve_file`), for the handlers' annotations: the bytes (of the
/// file's own type, so with no schema), a range of them, or 304.
pub struct Download;

impl utoipa::IntoResponses for Download {
    fn responses()
    -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
        use utoipa::openapi::{ContentBuilder, ResponseBuilder};
        let bytes = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content("*/*", ContentBuilder::new().build())
                .header("ETag", Default::default())
                .header("Content-Disposition", Default::default())
                .build()
                .into()
        };
        [
            ("200".to_string(), bytes("The file's bytes")),
            (
                "206".to_string(),
                bytes("The range asked for (`Content-Range`)"),
            ),
            (
                "304".to_string(),
                ResponseBuilder::new()
                    .description("Not modified (`If-None-Match`)")
                    .build()
                    .into(),
            ),
        ]
        .into()
    }
}

/// Serves a catalog file's bytes: conditional requests, one byte range, transparent zstd.
pub async fn serve_file(
    state: &AppState,
    f: &FileRecord,
    req: &HeaderMap,
    disposition: &str,
) -> ApiResult<Response> {
    let etag = format!(
        "\"{}\"",
        f.sha256
            .clone()
            .or_else(|| f.blake3.clone())
            .unwrap_or_else(|| f.id.clone())
    );
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, header_value(&etag));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    let ctype = f
        .content_type
        .clone()
        .or_else(|| f.detected_type.clone())
        .unwrap_or_else(|| "application/octet-stream".into());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&ctype)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        header_value(&content_disposition(disposition, &f.name)),
    );

    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok())
        && etag_matches(inm, &etag)
    {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }

    let (status, start, len) = match req.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => (StatusCode::OK, 0, f.size),
        Some(r) => match parse_range(r, f.size) {
            RangeSpec::Ignore => (StatusCode::OK, 0, f.size),
            RangeSpec::Unsatisfiable => {
                h.insert(
                    header::CONTENT_RANGE,
                    header_value(&format!("bytes */{}", f.size)),
                );
                let mut res = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    error_code::BAD_RANGE,
                    format!("the range is outside the file's {} bytes", f.size),
                )
                .into_response();
                // The body is the JSON error: not the file's type, not an attachment.
                h.remove(header::CONTENT_TYPE);
                h.remove(header::CONTENT_DISPOSITION);
                res.headers_mut().extend(h);
                return Ok(res);
            }
            RangeSpec::Range(s, e) => {
                h.insert(
                    header::CONTENT_RANGE,
                    header_value(&format!("bytes {s}-{e}/{}", f.size)),
                );
                (StatusCode::PARTIAL_CONTENT, s, e - s + 1)
            }
        },
    };
    h.insert(header::CONTENT_LENGTH, header_value(&len.to_string()));

    let body = if len == 0 {
        Body::empty()
    } else if f.encoding.as_deref() == Some("zstd") {
        let raw = state
            .engine
            .storage
            .open(&f.storage_key, 0, f.stored_size)
            .await
            .map_err(ApiError::internal)?;
        let mut decoder =
            async_compression::tokio::bufread::ZstdDecoder::new(StreamReader::new(raw));
        if start > 0 {
            tokio::io::copy(&mut (&mut decoder).take(start), &mut tokio::io::sink())
                .await
                .map_err(ApiError::internal)?;
        }
        Body::from_stream(ReaderStream::with_capacity(decoder.take(len), 256 * 1024))
    } else {
        let stream = state
            .engine
            .storage
            .open(&f.storage_key, start, len)
            .await
            .map_err(ApiError::internal)?;
        Body::from_stream(stream.map(|r| r.map_err(std::io::Error::other)))
    };
    Ok((status, h, body).into_response())
}

pub(crate) fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

pub(crate) fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').any(|t| {
        let t = t.trim();
        t == "*" || t.trim_start_matches("W/") == etag
    })
}

#[derive(Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// No usable range: serve the whole file (RFC 9110 lets a server ignore Range).
    Ignore,
    Unsatisfiable,
    /// Inclusive first and last byte.
    Range(u64, u64),
}

/// Parses a single `bytes=` range; several ranges are answered with the whole file.
pub fn parse_range(value: &str, size: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // suffix: the last N bytes
        let Ok(n) = b.parse::<u64>() else {
            return RangeSpec::Ignore;
        };
        if n == 0 || size == 0 {
            return RangeSpec::Unsatisfiable;
        }
        return RangeSpec::Range(size.saturating_sub(n), size - 1);
    }
    let Ok(first) = a.parse::<u64>() else {
        return RangeSpec::Ignore;
    };
    let last = if b.is_empty() {
        size.saturating_sub(1)
    } else {
        match b.parse::<u64>() {
            Ok(l) if l >= first => l.min(size.saturating_sub(1)),
            _ => return RangeSpec::Ignore,
        }
    };
    if first >= size {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Range(first, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeSpec::Range(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeSpec::Range(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeSpec::Range(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), RangeSpec::Range(0, 99));
        assert_eq!(parse_range("bytes=50-1000", 100), RangeSpec::Range(50, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 100), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeSpec::Ignore);
        assert_eq!(parse_range("items=0-1", 100), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=x-1", 100), RangeSpec::Ignore);
    }

    #[test]
    fn etags() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("W/\"abc\", \"def\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }
}
