//! Header parsing that several protocols share: lengths and integers, the draft's structured
//! fields (RFC 8941 items), media types and multipart boundaries, file names from
//! Content-Disposition or tus metadata, and dates (HTTP-date and RFC 3339). Each parser takes
//! the request's headers and answers a value or a 400 with a JSON `error`; none panics on any
//! input (fuzzed: `tus_headers`, `ietf_headers`).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use base64::Engine as _;

use super::error::{ApiError, ApiResult};
use super::error_code;
use crate::checksum::Algorithm;
use crate::names::sanitize_file_name;

/// A header that must be a non-negative decimal integer, if present.
pub(crate) fn header_u64(h: &HeaderMap, name: &str) -> ApiResult<Option<u64>> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    error_code::BAD_HEADER,
                    format!("{name} must be a non-negative integer"),
                )
            }),
    }
}

/// tus `Upload-Metadata` (see [`crate::meta::parse_tus_metadata`]).
pub use crate::meta::parse_tus_metadata as parse_metadata;

/// A Unix time as an HTTP-date (`Sun, 06 Dec 2026 22:10:34 GMT`).
pub(crate) fn http_date(t: i64) -> Option<HeaderValue> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let s = time::OffsetDateTime::from_unix_timestamp(t)
        .ok()?
        .format(&fmt)
        .ok()?;
    HeaderValue::from_str(&s).ok()
}

/// The Content-Type and boundary of a multipart/form-data request; 415 for another type
/// (`hint` says what to send), 400 for a missing or bad boundary.
pub(crate) fn multipart_boundary(headers: &HeaderMap, hint: &str) -> ApiResult<(String, String)> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !ct
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            error_code::UNSUPPORTED_MEDIA_TYPE,
            hint,
        ));
    }
    let boundary = multer::parse_boundary(&ct).map_err(|_| {
        ApiError::bad_request(
            error_code::BAD_BOUNDARY,
            "the multipart Content-Type has no valid boundary",
        )
    })?;
    Ok((ct, boundary))
}

pub(crate) fn content_length(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    error_code::BAD_CONTENT_LENGTH,
                    "Content-Length is not a number",
                )
            }),
    }
}

/// The request's media type, lower case, without parameters (None when absent or empty).
pub(crate) fn media_type(h: &HeaderMap) -> Option<String> {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|s| !s.is_empty())
}

/// A Structured Field item's bare value (its parameters dropped), if the header is there.
pub(crate) fn sf_item<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).map(|v| {
        v.to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
    })
}

/// `Upload-Complete`: a Structured Field Boolean (parameters ignored).
pub(crate) fn upload_complete(h: &HeaderMap) -> ApiResult<Option<bool>> {
    let Some(item) = sf_item(h, "upload-complete") else {
        return Ok(None);
    };
    match item {
        "?1" => Ok(Some(true)),
        "?0" => Ok(Some(false)),
        _ => Err(ApiError::bad_request(
            error_code::BAD_HEADER,
            "Upload-Complete must be ?1 or ?0",
        )),
    }
}

/// A Structured Field Integer header that must be non-negative.
pub(crate) fn sf_integer(h: &HeaderMap, name: &str) -> ApiResult<Option<u64>> {
    let Some(item) = sf_item(h, name) else {
        return Ok(None);
    };
    if item.is_empty() || item.len() > 15 || !item.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            error_code::BAD_HEADER,
            format!("{name} must be a non-negative integer"),
        ));
    }
    item.parse().map(Some).map_err(|_| {
        ApiError::bad_request(error_code::BAD_HEADER, format!("{name} is out of range"))
    })
}

/// The file's name: `Content-Disposition`'s filename*, then filename, then tus metadata.
pub(crate) fn file_name(h: &HeaderMap) -> String {
    let cd = h
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut plain = None;
    for p in cd.split(';').map(str::trim) {
        if let Some(v) = p.strip_prefix("filename*=") {
            let enc = v.splitn(3, '\'').nth(2).unwrap_or("");
            let name = percent_encoding::percent_decode_str(enc).decode_utf8_lossy();
            if !name.is_empty() {
                return sanitize_file_name(&name);
            }
        } else if let Some(v) = p.strip_prefix("filename=") {
            plain = Some(v.trim_matches('"').to_string());
        }
    }
    if let Some(n) = plain.filter(|n| !n.is_empty()) {
        return sanitize_file_name(&n);
    }
    h.get("upload-metadata")
        .and_then(|v| v.to_str().ok())
        .and_then(super::headers::parse_metadata)
        .and_then(|m| m.into_iter().find(|(k, _)| k == "filename"))
        .and_then(|(_, v)| String::from_utf8(v).ok())
        .map(|n| sanitize_file_name(&n))
        .unwrap_or_else(|| "upload".into())
}

/// A Unix time as RFC 3339 (`2026-12-06T22:10:34Z`), as JSON bodies give times.
pub(crate) fn rfc3339(t: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// `Upload-Checksum: ALGORITHM BASE64` (sha1, md5 or sha256).
pub(crate) fn parse_checksum(v: &str) -> ApiResult<(Algorithm, Vec<u8>)> {
    let (alg, b64) = v.trim().split_once(' ').unwrap_or((v, ""));
    let alg = Algorithm::parse(alg)
        .filter(|a| *a != Algorithm::Blake3)
        .ok_or_else(|| {
            ApiError::bad_request(
                error_code::BAD_CHECKSUM_ALGORITHM,
                "Upload-Checksum: use sha1, md5 or sha256",
            )
        })?;
    let expected = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| {
            ApiError::bad_request(
                error_code::BAD_CHECKSUM,
                "the Upload-Checksum value is not base64",
            )
        })?;
    Ok((alg, expected))
}

/// True when the request announces an `Upload-Checksum` trailer (`Trailer: Upload-Checksum`).
pub(crate) fn announces_checksum_trailer(h: &HeaderMap) -> bool {
    h.get_all(header::TRAILER).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|f| f.trim().eq_ignore_ascii_case("upload-checksum"))
        })
    })
}
