//! Every `code` the API answers with in its JSON errors, in one place: clients match on these,
//! and README's error table lists them. (The draft's problem documents carry their own `type`
//! URIs, in `ietf`.)

/// Defines each code as a constant, and `ALL` as the list of them.
macro_rules! codes {
    ($($name:ident = $code:literal,)*) => {
        $(pub const $name: &str = $code;)*
        /// Every code, for checks that none is left undocumented.
        pub const ALL: &[&str] = &[$($code),*];
    };
}

codes! {
    ALREADY_COMPLETE = "already_complete",
    BAD_BOUNDARY = "bad_boundary",
    BAD_CHECKSUM = "bad_checksum",
    BAD_CHECKSUM_ALGORITHM = "bad_checksum_algorithm",
    BAD_CONCAT = "bad_concat",
    BAD_CONTENT_LENGTH = "bad_content_length",
    BAD_CONTENT_RANGE = "bad_content_range",
    BAD_CURSOR = "bad_cursor",
    BAD_EXPIRY = "bad_expiry",
    BAD_FIELD = "bad_field",
    BAD_FORM = "bad_form",
    BAD_HEADER = "bad_header",
    BAD_LENGTH = "bad_length",
    BAD_LIMIT = "bad_limit",
    BAD_METADATA = "bad_metadata",
    BAD_PATH = "bad_path",
    BAD_PROGRESS_ID = "bad_progress_id",
    BAD_QUERY = "bad_query",
    BAD_RANGE = "bad_range",
    BAD_WAIT = "bad_wait",
    BODY_TIMEOUT = "body_timeout",
    BODY_TOO_LONG = "body_too_long",
    BODY_TOO_SLOW = "body_too_slow",
    BUSY = "busy",
    CHECKSUM_MISMATCH = "checksum_mismatch",
    COMPLETE = "complete",
    CONFLICT = "conflict",
    DRAINING = "draining",
    EMPTY_SESSION = "empty_session",
    EXPIRED = "expired",
    FIELDS_TOO_LARGE = "fields_too_large",
    FINAL_UPLOAD = "final_upload",
    FORBIDDEN = "forbidden",
    HEADERS_TOO_LARGE = "headers_too_large",
    HOOK_FAILED = "hook_failed",
    INCOMPLETE = "incomplete",
    INSUFFICIENT_STORAGE = "insufficient_storage",
    INTERNAL = "internal",
    INTERRUPTED = "interrupted",
    INVALID_FILE = "invalid_file",
    INVALID_SESSION = "invalid_session",
    LENGTH_CHANGED = "length_changed",
    LINK_EXPIRED = "link_expired",
    LINK_INVALID = "link_invalid",
    LOCKED = "locked",
    MALFORMED_MULTIPART = "malformed_multipart",
    METHOD_NOT_ALLOWED = "method_not_allowed",
    MISSING_FIELDS = "missing_fields",
    NOT_FOUND = "not_found",
    NO_CHUNK = "no_chunk",
    NO_CONTENT_RANGE = "no_content_range",
    NO_FILE = "no_file",
    NO_UPLOAD_ID = "no_upload_id",
    OFFSET_MISMATCH = "offset_mismatch",
    PART_HEADERS_TOO_LARGE = "part_headers_too_large",
    QUOTA_EXCEEDED = "quota_exceeded",
    READ_ONLY = "read_only",
    READ_ONLY_ACCESS = "read_only_access",
    REJECTED = "rejected",
    SCANNER_UNAVAILABLE = "scanner_unavailable",
    SESSION_CLOSED = "session_closed",
    SIZE_MISMATCH = "size_mismatch",
    STOPPED = "stopped",
    TOKEN_EXPIRED = "token_expired",
    TOKEN_INVALID = "token_invalid",
    TOO_LARGE = "too_large",
    TOO_MANY_FIELDS = "too_many_fields",
    TOO_MANY_FILES = "too_many_files",
    TOO_MANY_OPEN_UPLOADS = "too_many_open_uploads",
    TOO_MANY_PARTS = "too_many_parts",
    TOO_MANY_UPLOADS = "too_many_uploads",
    TOTAL_CHANGED = "total_changed",
    TWO_CHUNKS = "two_chunks",
    TYPE_MISMATCH = "type_mismatch",
    UNAUTHORIZED = "unauthorized",
    UNAVAILABLE = "unavailable",
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type",
    UNSUPPORTED_VERSION = "unsupported_version",
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_readme_names_every_code() {
        let readme = include_str!("../../../../README.md");
        let missing: Vec<&str> = super::ALL
            .iter()
            .copied()
            .filter(|c| !readme.contains(&format!("`{c}`")))
            .collect();
        assert!(missing.is_empty(), "README.md does not name {missing:?}");
    }
}
