//! Errors: the server's JSON `code` as an enum, network and file failures.

/// Declares the codes chute answers with: `ErrorCode`, its `as_str` and its parsing.
macro_rules! codes {
    ($($variant:ident = $code:literal,)*) => {
        /// The `code` of a chute JSON error (README's error table). A code this version does
        /// not know is kept as [`ErrorCode::Other`].
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $(#[doc = concat!("`", $code, "`")] $variant,)*
            /// A code this client does not know.
            Other(String),
        }

        impl ErrorCode {
            /// Every code this client knows.
            pub const KNOWN: &[&str] = &[$($code),*];

            /// The code as the server writes it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $code,)*
                    Self::Other(s) => s,
                }
            }

            /// The variant of a code the server wrote.
            pub fn parse(code: &str) -> Self {
                match code {
                    $($code => Self::$variant,)*
                    other => Self::Other(other.to_string()),
                }
            }
        }
    };
}

codes! {
    AlreadyComplete = "already_complete",
    BadBoundary = "bad_boundary",
    BadChecksum = "bad_checksum",
    BadChecksumAlgorithm = "bad_checksum_algorithm",
    BadConcat = "bad_concat",
    BadContentLength = "bad_content_length",
    BadContentRange = "bad_content_range",
    BadCursor = "bad_cursor",
    BadExpiry = "bad_expiry",
    BadField = "bad_field",
    BadForm = "bad_form",
    BadHeader = "bad_header",
    BadLength = "bad_length",
    BadLimit = "bad_limit",
    BadMetadata = "bad_metadata",
    BadPath = "bad_path",
    BadProgressId = "bad_progress_id",
    BadQuery = "bad_query",
    BadRange = "bad_range",
    BadWait = "bad_wait",
    BodyTimeout = "body_timeout",
    BodyTooLong = "body_too_long",
    BodyTooSlow = "body_too_slow",
    Busy = "busy",
    ChecksumMismatch = "checksum_mismatch",
    Complete = "complete",
    Conflict = "conflict",
    Draining = "draining",
    EmptySession = "empty_session",
    Expired = "expired",
    FieldsTooLarge = "fields_too_large",
    FinalUpload = "final_upload",
    Forbidden = "forbidden",
    HeadersTooLarge = "headers_too_large",
    HookFailed = "hook_failed",
    Incomplete = "incomplete",
    InsufficientStorage = "insufficient_storage",
    Internal = "internal",
    Interrupted = "interrupted",
    InvalidFile = "invalid_file",
    InvalidSession = "invalid_session",
    LengthChanged = "length_changed",
    LinkExpired = "link_expired",
    LinkInvalid = "link_invalid",
    Locked = "locked",
    MalformedMultipart = "malformed_multipart",
    MethodNotAllowed = "method_not_allowed",
    MissingFields = "missing_fields",
    NotFound = "not_found",
    NoChunk = "no_chunk",
    NoContentRange = "no_content_range",
    NoFile = "no_file",
    NoUploadId = "no_upload_id",
    OffsetMismatch = "offset_mismatch",
    PartHeadersTooLarge = "part_headers_too_large",
    QuotaExceeded = "quota_exceeded",
    ReadOnly = "read_only",
    ReadOnlyAccess = "read_only_access",
    Rejected = "rejected",
    ScannerUnavailable = "scanner_unavailable",
    SessionClosed = "session_closed",
    SizeMismatch = "size_mismatch",
    Stopped = "stopped",
    TokenExpired = "token_expired",
    TokenInvalid = "token_invalid",
    TooLarge = "too_large",
    TooManyFields = "too_many_fields",
    TooManyFiles = "too_many_files",
    TooManyOpenUploads = "too_many_open_uploads",
    TooManyParts = "too_many_parts",
    TooManyUploads = "too_many_uploads",
    TotalChanged = "total_changed",
    TwoChunks = "two_chunks",
    TypeMismatch = "type_mismatch",
    Unauthorized = "unauthorized",
    Unavailable = "unavailable",
    UnsupportedMediaType = "unsupported_media_type",
    UnsupportedVersion = "unsupported_version",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// chute refused the request: its status, `code` and message.
    #[error("{status} {code}: {message}{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        /// The server's longer explanation, when it gives one (a session's refused file:
        /// `verboseError`).
        detail: Option<String>,
        /// The upload's offset, when the answer carries one.
        offset: Option<u64>,
    },
    /// The server answered, but not as chute does (another server at that address?).
    #[error("not a chute server: {0}")]
    NotChute(String),
    /// The connection failed, or timed out. Its message carries every cause (reqwest's
    /// own message names only the request).
    #[error("network: {}", chain(.0))]
    Network(reqwest::Error),
    /// A local file could not be read or written.
    // The cause is in the message, not also a `source`: printed as a chain, it said twice.
    #[error("{path}: {error}")]
    Io {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    /// A downloaded file's sha256 is not the one the server gave (its ETag).
    #[error("the downloaded bytes' sha256 is {got}, the server's is {expected}")]
    Integrity { expected: String, got: String },
    /// Retries ran out: the last failure.
    #[error("gave up after {attempts} tries: {last}")]
    GaveUp { attempts: u32, last: Box<Error> },
    /// A bad argument: a URL that is not one, say.
    #[error("{0}")]
    Usage(String),
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        Error::Network(e)
    }
}

/// An error's message with its causes', each once: reqwest's repeats the URL in its causes.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let m = c.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cause = c.source();
    }
    out
}

impl Error {
    /// The server's code, when the server refused.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Error::Api { code, .. } => Some(code),
            Error::GaveUp { last, .. } => last.code(),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: the network, the server busy or restarting
    /// (5xx, 408, 429 `too_many_uploads`), another request holding the upload (423), an offset
    /// to learn again (409).
    pub(crate) fn retryable(&self) -> bool {
        match self {
            Error::Network(_) => true,
            Error::Api { status, code, .. } => {
                *status >= 500
                    || matches!(status, 408 | 409 | 423)
                    || *code == ErrorCode::TooManyUploads
            }
            _ => false,
        }
    }
}
