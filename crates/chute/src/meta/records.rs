//! The catalog's records: users and tokens, files, resumable uploads (with their typed state,
//! protocol and metadata), upload sessions, and the limits checked with their changes.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub is_staff: bool,
    pub created_at: i64,
}

/// An API token as `chute token list` shows it: never the token, which is not stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: i64,
    pub user_id: i64,
    pub label: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A file as every protocol and event shows it (`FileRecord::to_json`); its schema is the
/// OpenAPI document's `File`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = File)]
pub struct FileJson {
    /// The file's id: `/api/files/{id}`.
    pub id: String,
    /// The file's name, made safe (no path, no control characters).
    pub name: String,
    /// Bytes, as uploaded (before any compression at rest).
    pub size: u64,
    /// The type the client declared.
    pub content_type: Option<String>,
    /// The type the file's first bytes show (the sniff handler), when it ran.
    pub detected_type: Option<String>,
    /// Hex digests, by algorithm (`file_upload_checksums`).
    pub checksums: std::collections::BTreeMap<&'static str, String>,
    /// Whether it is kept zstd-compressed (served decompressed).
    pub compressed: bool,
    /// Where to download it.
    pub url: String,
    /// When it was stored (RFC 3339).
    pub created_at: Option<String>,
}

impl From<&FileRecord> for FileJson {
    fn from(f: &FileRecord) -> Self {
        let checksums = [
            ("md5", &f.md5),
            ("sha1", &f.sha1),
            ("sha256", &f.sha256),
            ("blake3", &f.blake3),
        ]
        .into_iter()
        .filter_map(|(name, v)| Some((name, v.clone()?)))
        .collect();
        let created_at = time::OffsetDateTime::from_unix_timestamp(f.created_at)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            });
        FileJson {
            id: f.id.clone(),
            name: f.name.clone(),
            size: f.size,
            content_type: f.content_type.clone(),
            detected_type: f.detected_type.clone(),
            checksums,
            compressed: f.encoding.is_some(),
            url: format!("/api/files/{}", f.id),
            created_at,
        }
    }
}

/// One finished file in the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    pub id: String,
    pub owner_id: i64,
    pub name: String,
    pub size: u64,
    pub stored_size: u64,
    pub content_type: Option<String>,
    pub detected_type: Option<String>,
    pub encoding: Option<String>,
    pub storage_key: String,
    pub md5: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    pub blake3: Option<String>,
    pub created_at: i64,
}

impl FileRecord {
    /// The JSON of one file, as every protocol and event shows it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(FileJson::from(self)).unwrap_or_default()
    }

    /// Fills the checksum columns from (algorithm, hex) pairs.
    pub fn set_checksums<'a>(
        &mut self,
        digests: impl IntoIterator<Item = (crate::checksum::Algorithm, &'a String)>,
    ) {
        use crate::checksum::Algorithm;
        for (alg, hex) in digests {
            let slot = match alg {
                Algorithm::Md5 => &mut self.md5,
                Algorithm::Sha1 => &mut self.sha1,
                Algorithm::Sha256 => &mut self.sha256,
                Algorithm::Blake3 => &mut self.blake3,
            };
            *slot = Some(hex.clone());
        }
    }
}

/// What a protocol keeps about an upload beyond the catalog's columns, stored as JSON in
/// `uploads.metadata` (keys absent when unset; unknown keys are ignored when read).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadMeta {
    /// tus: the raw `Upload-Metadata` header, given back on HEAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_metadata: Option<String>,
    /// tus concatenation: `partial`, or `final;` and the partials' URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concat: Option<String>,
    /// The draft: the interop version the upload was created under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interop: Option<String>,
    /// The draft's upgrade of `POST /api/files`: the form's multipart Content-Type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_content_type: Option<String>,
    /// A size limit for this upload below the server's, set by the pre-create hook or by the
    /// credential it was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// A quota below the owner's, from the credential the upload was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<u64>,
}

impl UploadMeta {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    pub fn from_json(s: &str) -> Result<Self, sqlx::Error> {
        serde_json::from_str(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    }

    /// The tus metadata, decoded (values as text, invalid UTF-8 replaced), as the blocking
    /// hooks are told it.
    pub fn decoded_tus(&self) -> Option<std::collections::BTreeMap<String, String>> {
        let pairs = parse_tus_metadata(self.upload_metadata.as_deref()?)?;
        Some(
            pairs
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect(),
        )
    }
}

/// Parses `Upload-Metadata: key base64,key2 base64`: keys unique, ASCII, no spaces or commas;
/// values base64 and possibly empty. Returns (key, decoded value) pairs.
pub fn parse_tus_metadata(v: &str) -> Option<Vec<(String, Vec<u8>)>> {
    use base64::Engine as _;
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    if v.trim().is_empty() {
        return Some(out);
    }
    // Repeated keys are found in one pass (a header of thousands of keys costs linear time).
    let mut seen = std::collections::HashSet::new();
    for pair in v.split(',') {
        let mut it = pair.trim().split(' ');
        let key = it.next()?;
        let value = it.next().unwrap_or("");
        if it.next().is_some()
            || key.is_empty()
            || !key.bytes().all(|b| b.is_ascii_graphic())
            || !seen.insert(key)
        {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()?;
        out.push((key.to_string(), decoded));
    }
    Some(out)
}

/// Where a resumable upload stands; stored as `active` / `complete`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadState {
    /// Bytes may still come.
    Active,
    /// Finished: its file is in the catalog (or, for a tus partial, it was spent on its final).
    Complete,
}

/// The protocol an upload was created with (an upload is only found through its own);
/// stored as `chunked` / `tus` / `ietf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// django-chunked-upload.
    Chunked,
    /// tus 1.0.
    Tus,
    /// The IETF resumable-upload draft.
    Ietf,
}

/// A stored string that is none of an enum's values.
fn unknown(what: &str, s: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unknown {what} `{s}` in the catalog").into())
}

impl UploadState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Complete => "complete",
        }
    }

    pub fn parse(s: &str) -> Result<Self, sqlx::Error> {
        match s {
            "active" => Ok(Self::Active),
            "complete" => Ok(Self::Complete),
            other => Err(unknown("upload state", other)),
        }
    }
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chunked => "chunked",
            Self::Tus => "tus",
            Self::Ietf => "ietf",
        }
    }

    pub fn parse(s: &str) -> Result<Self, sqlx::Error> {
        match s {
            "chunked" => Ok(Self::Chunked),
            "tus" => Ok(Self::Tus),
            "ietf" => Ok(Self::Ietf),
            other => Err(unknown("protocol", other)),
        }
    }
}

/// A resumable upload in progress (or finished, with `file_id` set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: String,
    pub owner_id: i64,
    pub protocol: Protocol,
    pub staging_key: String,
    pub name: String,
    pub content_type: Option<String>,
    pub offset: u64,
    pub length: Option<u64>,
    pub state: UploadState,
    pub expires_at: Option<i64>,
    pub metadata: UploadMeta,
    pub hash_state: Option<Vec<u8>>,
    pub file_id: Option<String>,
    pub created_at: i64,
    /// For a partial upload of a tus concatenation: the final upload it belongs to.
    pub final_id: Option<String>,
}

/// A user's storage quota, checked in the same transaction as the change that uses it: the
/// owner's finished files plus what their open uploads hold or declared (see
/// [`FileStore::usage_bytes`]) must stay within `bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub owner_id: i64,
    pub bytes: u64,
}

/// Limits checked atomically when an upload is created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadLimits {
    /// The owner's quota in bytes.
    pub quota: Option<u64>,
    /// Most uploads the owner may have open (active) at once.
    pub max_open: Option<u64>,
}

/// The life of an upload session (the states of the upload.views model).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionStatus {
    Created,
    Uploading,
    CopyingInProgress,
    Stored,
    Expired,
    CopyingFailed,
    RemovingInProgress,
}

impl SessionStatus {
    pub const ALL: [SessionStatus; 7] = [
        Self::Created,
        Self::Uploading,
        Self::CopyingInProgress,
        Self::Stored,
        Self::Expired,
        Self::CopyingFailed,
        Self::RemovingInProgress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Uploading => "UPLOADING",
            Self::CopyingInProgress => "COPYING_IN_PROGRESS",
            Self::Stored => "STORED",
            Self::Expired => "EXPIRED",
            Self::CopyingFailed => "COPYING_FAILED",
            Self::RemovingInProgress => "REMOVING_IN_PROGRESS",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Files may be added or removed only in these states.
    pub fn accepts_changes(self) -> bool {
        matches!(self, Self::Created | Self::Uploading)
    }
}

/// An upload session: its files are catalog rows marked temporary until it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub token: String,
    pub owner_id: i64,
    pub status: SessionStatus,
    pub last_activity: i64,
    pub created_at: i64,
    /// Number and total size of the session's files.
    pub file_count: u64,
    pub total_size: u64,
}

/// Limits checked atomically when a file joins a session.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    pub max_count: u64,
    pub max_total: u64,
}

/// Why a file could not join a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionAddRefused {
    /// The session no longer takes files (stored, expired, ...).
    NotWritable(SessionStatus),
    NotFound,
    TooMany {
        max: u64,
    },
    TooLarge {
        max: u64,
        total: u64,
    },
    Duplicate,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows written before these types existed read back the same: tus wrote a null concat,
    /// the draft its interop version as a string.
    #[test]
    fn stored_metadata_and_states_read_back() {
        let m = UploadMeta::from_json(r#"{"upload_metadata":"filename eA==","concat":null}"#)
            .expect("tus row");
        assert_eq!(m.upload_metadata.as_deref(), Some("filename eA=="));
        assert_eq!(m.concat, None);
        let m = UploadMeta::from_json(
            r#"{"interop":"8","form_content_type":"multipart/form-data; boundary=x"}"#,
        )
        .expect("draft row");
        assert_eq!(m.interop.as_deref(), Some("8"));
        assert_eq!(
            UploadMeta::from_json("{}").expect("chunked row"),
            UploadMeta::default()
        );
        assert_eq!(UploadMeta::default().to_json(), "{}");
        assert!(UploadMeta::from_json("not json").is_err());
        for s in [UploadState::Active, UploadState::Complete] {
            assert_eq!(UploadState::parse(s.as_str()).expect("state"), s);
        }
        for p in [Protocol::Chunked, Protocol::Tus, Protocol::Ietf] {
            assert_eq!(Protocol::parse(p.as_str()).expect("protocol"), p);
        }
        assert!(UploadState::parse("done").is_err() && Protocol::parse("ftp").is_err());
    }
}
