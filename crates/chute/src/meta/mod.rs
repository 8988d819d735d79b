//! Metadata: users, tokens, the file catalog and resumable uploads, behind [`MetaStore`].
//! `meta::sqlite` is the embedded default; `meta::postgres` serves several nodes. Both run the
//! same queries (`meta::sql`).

#[macro_use]
pub mod sql;
pub mod pg_locks;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use thiserror::Error;

use crate::events::{DeliveryState, EventRecord, NewEvent};

#[derive(Debug, Error)]
pub enum MetaError {
    #[error("{0} already exists")]
    Conflict(String),
    /// A value the catalog does not take (a user name outside the rule, say).
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The change would take the owner past their quota (nothing was changed).
    #[error("quota exceeded: the quota is {quota} bytes and {used} are already stored")]
    QuotaExceeded { quota: u64, used: u64 },
    /// The owner already has the most open uploads allowed (nothing was changed).
    #[error("there are already {max} open uploads, the most allowed")]
    TooManyOpenUploads { max: u64 },
}

impl MetaError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, MetaError::NotFound(_))
    }
}

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
        let f = self;
        let mut checksums = serde_json::Map::new();
        for (name, value) in [
            ("md5", &f.md5),
            ("sha1", &f.sha1),
            ("sha256", &f.sha256),
            ("blake3", &f.blake3),
        ] {
            if let Some(v) = value {
                checksums.insert(name.into(), serde_json::Value::String(v.clone()));
            }
        }
        let created = time::OffsetDateTime::from_unix_timestamp(f.created_at)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            });
        serde_json::json!({
            "id": f.id,
            "name": f.name,
            "size": f.size,
            "content_type": f.content_type,
            "detected_type": f.detected_type,
            "checksums": checksums,
            "compressed": f.encoding.is_some(),
            "url": format!("/api/files/{}", f.id),
            "created_at": created,
        })
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

/// Upload locks shared by the nodes of one catalog (PostgreSQL: `pg_locks.rs`). Each node also
/// keeps its own locks in memory (`upload::resumable::UploadRegistry`), which is all a single
/// node (SQLite) needs.
#[async_trait]
pub trait ClusterLocks: Send + Sync + 'static {
    /// Takes the lock of upload `id` for this node: false when another node holds it.
    async fn try_lock(&self, id: &str) -> Result<bool, MetaError>;
    /// Lets go of `id` (queued behind earlier lock calls, so it can be called from `Drop`).
    /// A no-op when this node does not hold it.
    fn unlock(&self, id: &str);
    /// Asks every node to end the request that holds `id`.
    async fn ask_release(&self, id: &str) -> Result<(), MetaError>;
    /// The ids that this node has been asked to let go of.
    fn release_requests(&self) -> tokio::sync::broadcast::Receiver<String>;
}

/// Users and their API tokens.
#[async_trait]
pub trait UserStore: Send + Sync {
    async fn create_user(&self, name: &str, is_staff: bool) -> Result<User, MetaError>;
    async fn user_by_name(&self, name: &str) -> Result<Option<User>, MetaError>;
    async fn user_by_id(&self, id: i64) -> Result<Option<User>, MetaError>;
    async fn count_users(&self) -> Result<u64, MetaError>;
    /// Stores a token by its hash; the token itself is never stored.
    async fn add_token(&self, user_id: i64, token_hash: &str, label: &str)
    -> Result<(), MetaError>;
    /// The user a token belongs to, and the token.
    async fn user_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<(User, TokenInfo)>, MetaError>;
    /// Every user, by name.
    async fn list_users(&self) -> Result<Vec<User>, MetaError>;
    /// Removes a user with their tokens, upload sessions and finished upload records, and
    /// returns the storage keys of their session files, removed with them, for the caller
    /// to delete. Refused (`Conflict`) while the user has files or open uploads: those go
    /// first, each with its event. None when there is no such user.
    async fn delete_user(&self, id: i64) -> Result<Option<Vec<String>>, MetaError>;
    /// A user's tokens, oldest first.
    async fn list_tokens(&self, user_id: i64) -> Result<Vec<TokenInfo>, MetaError>;
    /// Removes a token; false when there was none. Refused at once on every node, as every
    /// request looks its token up.
    async fn revoke_token(&self, id: i64) -> Result<bool, MetaError>;
    /// Records that a token was used at `now`.
    async fn touch_token(&self, id: i64, now: i64) -> Result<(), MetaError>;
}

/// The catalog's files.
#[async_trait]
pub trait FileStore: Send + Sync {
    /// Adds a file to the catalog; with a quota, refused when the owner would pass it.
    /// `events` are written in the same transaction (as with every method that takes them).
    async fn insert_file(
        &self,
        file: &FileRecord,
        quota: Option<Quota>,
        events: &[NewEvent],
    ) -> Result<(), MetaError>;
    async fn get_file(&self, id: &str) -> Result<Option<FileRecord>, MetaError>;
    /// The owner's files in id (creation) order, after `after` when given.
    async fn list_files(
        &self,
        owner_id: i64,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<FileRecord>, MetaError>;
    /// Removes the owner's file from the catalog and returns it; None when there is none (and
    /// then `events` are not written either).
    async fn delete_file(
        &self,
        owner_id: i64,
        id: &str,
        events: &[NewEvent],
    ) -> Result<Option<FileRecord>, MetaError>;
    /// Bytes the owner uses, for quotas: their files (as uploaded, session files included),
    /// plus, for each open upload, its declared length or, while that is deferred, what it
    /// holds. A final upload of a concatenation counts nothing while open (its partials do).
    async fn usage_bytes(&self, owner_id: i64) -> Result<u64, MetaError>;
}

/// Resumable uploads in progress (and finished ones, until they go).
#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Creates an upload within `limits` (open uploads, quota), atomically. A final upload of
    /// a concatenation names its partials in `parts`: each must be the owner's and belong to
    /// no other final, else nothing is created and the answer is `Conflict`.
    async fn create_upload(
        &self,
        upload: &UploadRecord,
        parts: &[String],
        limits: UploadLimits,
        events: &[NewEvent],
    ) -> Result<(), MetaError>;
    /// Records the id an active upload's file will have, before its bytes are placed (so that
    /// a completion cut short by a crash is finished under the same id). False when the upload
    /// is not active.
    async fn set_upload_file(&self, id: &str, file_id: &str) -> Result<bool, MetaError>;
    /// The partial uploads that belong to a final upload.
    async fn final_parts(&self, final_id: &str) -> Result<Vec<UploadRecord>, MetaError>;
    async fn get_upload(&self, id: &str) -> Result<Option<UploadRecord>, MetaError>;
    /// Compare-and-set: advances the offset only if it is still `expected`. Returns false
    /// when another writer moved it first. With a quota (for an upload whose length is
    /// deferred, the only kind that can grow past its reservation), refused when the owner
    /// would pass it.
    async fn advance_upload(
        &self,
        id: &str,
        expected: u64,
        new_offset: u64,
        quota: Option<Quota>,
    ) -> Result<bool, MetaError>;
    /// Marks an upload complete (its offset and length the file's size) and links it to its
    /// catalog entry, inserting that entry in the same transaction; the partials of a final
    /// upload are marked complete with it. With a quota, refused when the owner would pass it.
    async fn complete_upload(
        &self,
        id: &str,
        file: &FileRecord,
        quota: Option<Quota>,
        events: &[NewEvent],
    ) -> Result<(), MetaError>;
    /// Deletes an upload; the open partials of a final upload are released with it.
    async fn delete_upload(&self, id: &str, events: &[NewEvent]) -> Result<(), MetaError>;
    /// Sets a deferred length, once: false when it was already set. With a quota, refused
    /// when the owner would pass it.
    async fn set_upload_length(
        &self,
        id: &str,
        length: u64,
        quota: Option<Quota>,
    ) -> Result<bool, MetaError>;
    /// The owner's unfinished uploads of a protocol, oldest first.
    async fn active_uploads(
        &self,
        owner_id: i64,
        protocol: Protocol,
    ) -> Result<Vec<UploadRecord>, MetaError>;
    /// The owner's unfinished uploads of every protocol, oldest first.
    async fn open_uploads_of(&self, owner_id: i64) -> Result<Vec<UploadRecord>, MetaError>;
    /// Uploads whose expiry is before `now`, oldest first.
    async fn expired_uploads(&self, now: i64, limit: u32) -> Result<Vec<UploadRecord>, MetaError>;
}

/// Upload sessions and their files.
#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn create_session(&self, token: &str, owner_id: i64, now: i64) -> Result<(), MetaError>;
    /// The session with its file count and total size.
    async fn get_session(&self, token: &str) -> Result<Option<SessionRecord>, MetaError>;
    /// Records an upload interaction (the model's `touch()`), while the session takes files.
    async fn touch_session(&self, token: &str, now: i64) -> Result<(), MetaError>;
    /// Moves a session from one of `from` to `to`; false when it was in none of them.
    async fn set_session_status(
        &self,
        token: &str,
        from: &[SessionStatus],
        to: SessionStatus,
        events: &[NewEvent],
    ) -> Result<bool, MetaError>;
    /// The session's files in upload order (temporary or stored).
    async fn session_files(&self, token: &str) -> Result<Vec<FileRecord>, MetaError>;
    async fn session_file(&self, token: &str, name: &str) -> Result<Option<FileRecord>, MetaError>;
    /// Adds a file to a session in one transaction: the session must take files, and the count,
    /// total size and unique-name rules must still hold with the file in. The session becomes
    /// UPLOADING and is touched.
    async fn add_session_file(
        &self,
        token: &str,
        file: &FileRecord,
        limits: SessionLimits,
        now: i64,
        quota: Option<Quota>,
        events: &[NewEvent],
    ) -> Result<Result<(), SessionAddRefused>, MetaError>;
    /// Removes one file of a session that takes changes; the last one out returns the session
    /// to CREATED. Ok(None) when there is no such file; Err(status) when the session is not
    /// writable.
    async fn remove_session_file(
        &self,
        token: &str,
        name: &str,
        now: i64,
    ) -> Result<Result<Option<FileRecord>, SessionStatus>, MetaError>;
    /// Makes a session's files permanent (visible in the file catalog) and the session STORED;
    /// the session must be COPYING_IN_PROGRESS. Returns the number of files.
    async fn store_session(
        &self,
        token: &str,
        events: &[NewEvent],
    ) -> Result<Option<u64>, MetaError>;
    /// Sessions that take files and whose last activity is before `before`.
    async fn stale_sessions(&self, before: i64, limit: u32) -> Result<Vec<String>, MetaError>;
    /// Removes the temporary files of a session from the catalog and returns them, so that
    /// their bytes can be deleted.
    async fn take_temporary_files(&self, token: &str) -> Result<Vec<FileRecord>, MetaError>;
}

/// How one delivery of an event ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// Try again at `at` (unix ms).
    Retry {
        at: i64,
        error: String,
    },
    /// Given up: kept as failed.
    Failed {
        error: String,
    },
}

/// The outbox: durable events, in commit order, and their delivery. Events are written by the
/// changes they report (the methods above that take `events`), or by `record_events` for
/// those that report no catalog change.
#[async_trait]
pub trait EventStore: Send + Sync {
    async fn record_events(&self, events: &[NewEvent]) -> Result<(), MetaError>;
    /// Events after `after` (a `seq`) in commit order, at most `limit`.
    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>, MetaError>;
    /// Leases up to `limit` pending events that are due at `now` (unix ms) until
    /// `lease_until`, for this node to deliver: of each subject only its oldest pending event,
    /// so that one subject's events go out in order. An event another node leased is skipped
    /// until its lease runs out (the node may have died).
    async fn claim_events(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, MetaError>;
    /// Records how the deliveries of claimed events ended (their leases go), in one
    /// transaction: a round of deliveries costs one commit, not one per event.
    async fn settle_events(&self, outcomes: &[(i64, Delivery)]) -> Result<(), MetaError>;
    /// The newest events, newest first; only those in `state` when given.
    async fn list_events(
        &self,
        state: Option<DeliveryState>,
        limit: u32,
    ) -> Result<Vec<EventRecord>, MetaError>;
    /// Makes failed events pending again, due now: the one with `id`, or every failed one.
    /// Returns how many.
    async fn retry_events(&self, id: Option<&str>, now: i64) -> Result<u64, MetaError>;
    /// Removes delivered and feed-only events created before `before` (unix ms).
    async fn prune_events(&self, before: i64) -> Result<u64, MetaError>;
}

/// Metadata storage. Implementations must be safe to share between requests and nodes:
/// every method is one atomic operation.
/// It is every table's store at once (`UserStore`, `FileStore`, `UploadStore`,
/// `SessionStore`, `EventStore`), so that one `Arc<dyn MetaStore>` serves the whole engine.
#[async_trait]
pub trait MetaStore:
    UserStore
    + FileStore
    + UploadStore
    + SessionStore
    + EventStore
    + LinkKeyStore
    + Send
    + Sync
    + 'static
{
    /// Readiness probe.
    async fn ping(&self) -> Result<(), MetaError>;
    /// Locks across nodes, when several nodes can share this catalog.
    fn cluster_locks(&self) -> Option<Arc<dyn ClusterLocks>>;
}

/// The keys download links are signed with, shared by every node through the catalog.
#[async_trait]
pub trait LinkKeyStore: Send + Sync {
    /// Every key (id, hex secret), newest first.
    async fn link_keys(&self) -> Result<Vec<(i64, String)>, MetaError>;
    /// Stores `secret` as the first key, unless there is a key already.
    async fn ensure_link_key(&self, secret: &str) -> Result<(), MetaError>;
    /// Makes `secret` the newest key and drops every other; returns its id.
    async fn rotate_link_key(&self, secret: &str) -> Result<i64, MetaError>;
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod record_tests {
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
