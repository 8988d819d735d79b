//! Metadata: users, tokens, the file catalog and resumable uploads, behind [`MetaStore`].
//! `meta::sqlite` is the embedded default; `meta::postgres` serves several nodes. Both run the
//! same queries (`meta::sql`).

#[macro_use]
pub mod sql;
mod group_commit;
pub mod measured;
pub mod pg_locks;
pub mod postgres;
mod records;
pub mod sqlite;
mod token_cache;

pub use records::*;

use std::sync::Arc;

use async_trait::async_trait;
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
    /// Events waiting for delivery (for `chute_hook_outbox_depth`).
    async fn outbox_depth(&self) -> Result<u64, MetaError>;
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
