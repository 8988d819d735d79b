//! The one JSON error shape of the API: `{"error": "...", "code": "..."}` with the right
//! status. Internal causes are logged, never sent.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::http::error_code;
use crate::meta::MetaError;
use crate::upload::UploadError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Extra members of the JSON body (a protocol's `offset`, say).
    pub extra: Vec<(&'static str, serde_json::Value)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Adds a member to the JSON body.
    pub fn with(mut self, key: &'static str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.push((key, value.into()));
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            error_code::NOT_FOUND,
            format!("{what} not found"),
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::unauthorized_as(error_code::UNAUTHORIZED, message)
    }

    /// 401 with a code of its own (a signed token that expired or is not valid).
    pub fn unauthorized_as(code: &'static str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, code, message);
        e.headers
            .push((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        e
    }

    /// 423: another request holds the upload and did not let go in time.
    pub fn locked() -> Self {
        Self::new(
            StatusCode::LOCKED,
            error_code::LOCKED,
            "another request is writing this upload",
        )
    }

    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            error_code::INTERNAL,
            "internal server error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message, "code": self.code });
        for (k, v) in self.extra {
            body[k] = v;
        }
        let body = Json(body);
        let mut res = (self.status, body).into_response();
        for (k, v) in self.headers {
            res.headers_mut().insert(k, v);
        }
        // For the access log and `chute_http_errors_total` (http/access.rs).
        res.extensions_mut().insert(ErrorCode(self.code));
        res
    }
}

/// The `code` of a JSON error answer, kept in the response's extensions.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub &'static str);

/// Whether an I/O failure means the disk (or the user's filesystem quota) is full.
fn no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == std::io::ErrorKind::StorageFull
}

/// 507: the server has no room for the bytes. What was acknowledged before is kept, so a
/// resumable upload continues once there is room again.
fn insufficient_storage(cause: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %cause, "out of storage space");
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        error_code::INSUFFICIENT_STORAGE,
        "the server has no room for this upload now; try again later",
    )
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NotFound(what) => ApiError::not_found(&what),
            MetaError::QuotaExceeded { .. } => {
                ApiError::too_large(error_code::QUOTA_EXCEEDED, e.to_string())
            }
            MetaError::TooManyOpenUploads { max } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                error_code::TOO_MANY_OPEN_UPLOADS,
                format!(
                    "you already have {max} open uploads (max_open_uploads_per_user); finish or \
                     delete one first"
                ),
            ),
            MetaError::Conflict(what) => ApiError::new(
                StatusCode::CONFLICT,
                error_code::CONFLICT,
                format!("{what} already exists"),
            ),
            other => ApiError::internal(other),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        let msg = e.to_string();
        match e {
            UploadError::QuotaExceeded { .. } => {
                ApiError::too_large(error_code::QUOTA_EXCEEDED, msg)
            }
            UploadError::TooLarge { .. } => ApiError::too_large(error_code::TOO_LARGE, msg),
            UploadError::TypeMismatch { .. } => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                error_code::TYPE_MISMATCH,
                msg,
            ),
            UploadError::Rejected(_) => ApiError::bad_request(error_code::REJECTED, msg),
            UploadError::HookRejected { status, message } => ApiError::new(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                error_code::REJECTED,
                message,
            ),
            UploadError::HookFailed(why) => {
                // The receiver's address and error go to the log, not to the client.
                tracing::error!(error = %why, "a blocking hook failed; the upload is refused");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    error_code::HOOK_FAILED,
                    "the application's hook did not answer; nothing was stored, try again later",
                )
            }
            UploadError::Stopped => ApiError::bad_request(error_code::STOPPED, msg),
            UploadError::Interrupted => ApiError::bad_request(error_code::INTERRUPTED, msg),
            UploadError::OffsetMismatch { current } => {
                ApiError::new(StatusCode::CONFLICT, error_code::OFFSET_MISMATCH, msg)
                    .with("offset", current)
            }
            UploadError::NotFound => ApiError::not_found("upload"),
            UploadError::ChecksumMismatch { .. } => ApiError::new(
                StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
                error_code::CHECKSUM_MISMATCH,
                msg,
            ),
            UploadError::AlreadyComplete => {
                ApiError::bad_request(error_code::ALREADY_COMPLETE, msg)
            }
            UploadError::Invalid { error, verbose } => {
                ApiError::bad_request(error_code::INVALID_FILE, error).with("verboseError", verbose)
            }
            UploadError::ScannerUnavailable(_) => {
                // The scanner's address and the OS error go to the log, not to the client.
                tracing::error!(error = %msg, "malware scanner unavailable");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    error_code::SCANNER_UNAVAILABLE,
                    "the malware scanner is unavailable; the file was not stored",
                )
            }
            UploadError::Meta(m) => m.into(),
            UploadError::Io(ref io) if no_space(io) => insufficient_storage(&e),
            UploadError::Storage(crate::storage::StorageError::Io(ref io)) if no_space(io) => {
                insufficient_storage(&e)
            }
            other => ApiError::internal(other),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
