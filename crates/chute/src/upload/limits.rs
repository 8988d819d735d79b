//! The size limits one caller's uploads are held to: the server's (`max_upload_size`,
//! `user_quota`), narrowed by what the caller's credential allows (a signed token's
//! `max_upload_size` and `quota` claims). A credential can only lower a limit, never raise it.
//! A resumable upload keeps the limits it was created under (`UploadMeta`), so every later
//! request on it is held to them whichever credential it comes with.

use crate::config::Settings;

/// The largest length an upload may declare, whatever the settings: the largest
/// structured-field integer (RFC 8941, 15 digits, about 1 PB), which the draft's headers can
/// carry anyway. It keeps every length, and the sums the quota takes of a user's uploads,
/// well inside the catalog's signed 64-bit integers.
pub const MAX_DECLARED_LENGTH: u64 = 999_999_999_999_999;

/// `Err(TooLarge)` for a declared length past [`MAX_DECLARED_LENGTH`].
pub fn check_declared(length: u64) -> Result<(), crate::upload::UploadError> {
    if length > MAX_DECLARED_LENGTH {
        return Err(crate::upload::UploadError::TooLarge {
            limit: MAX_DECLARED_LENGTH,
        });
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// The largest upload, in bytes.
    pub max_upload_size: Option<u64>,
    /// The most the user may store in all, in bytes.
    pub quota: Option<u64>,
}

impl Limits {
    /// The server's own limits.
    pub fn of(settings: &Settings) -> Self {
        Self {
            max_upload_size: settings.max_upload_size.map(|s| s.bytes()),
            quota: settings.user_quota.map(|s| s.bytes()),
        }
    }

    /// These limits, lowered to `max_upload_size` and `quota` where those are lower.
    pub fn narrowed(self, max_upload_size: Option<u64>, quota: Option<u64>) -> Self {
        Self {
            max_upload_size: lowest(self.max_upload_size, max_upload_size),
            quota: lowest(self.quota, quota),
        }
    }
}

/// The lower of two optional limits (None is no limit).
pub fn lowest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_only_lowers_a_limit() {
        let server = Limits {
            max_upload_size: Some(100),
            quota: None,
        };
        assert_eq!(
            server.narrowed(Some(500), Some(7)),
            Limits {
                max_upload_size: Some(100),
                quota: Some(7)
            }
        );
        assert_eq!(server.narrowed(Some(5), None).max_upload_size, Some(5));
        assert_eq!(server.narrowed(None, None), server);
    }
}
