//! SQLite metadata, the embedded default: one file `<data_dir>/chute.db`, created and migrated
//! on open. WAL mode with `synchronous=FULL`, so that a committed record survives power loss
//! (the catalog must never point at bytes that were not durable, nor forget ones that were).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::group_commit::GroupCommit;
use super::sql::is_unique_violation;
use super::token_cache::TokenCache;
use super::{
    FileRecord, MetaError, Protocol, SessionAddRefused, SessionLimits, SessionRecord,
    SessionStatus, UploadMeta, UploadRecord, UploadState, User, now_unix,
};

pub struct SqliteMeta {
    /// Readers (WAL lets them run beside the writer).
    pool: SqlitePool,
    /// The one writing connection: SQLite has one writer at a time, and writers that queue
    /// here wait their turn without the busy handler's sleeps (1-100 ms each), which several
    /// writing connections paid when many uploads committed at once.
    writer: SqlitePool,
    /// With fsync: the offset advances, committed together when several wait at once.
    advances: Option<GroupCommit>,
    /// Token lookups answered from memory, emptied by any process that removes a token.
    tokens: TokenCache,
}

impl SqliteMeta {
    /// Opens (creating when missing) the database at `path` and applies the migrations.
    pub async fn open(path: &Path) -> Result<Self, MetaError> {
        Self::open_with(path, true).await
    }

    /// `fsync` false: `synchronous=NORMAL` (in WAL mode a commit survives a crash of chute,
    /// not a power loss), for `upload_fsync = false`.
    pub async fn open_with(path: &Path, fsync: bool) -> Result<Self, MetaError> {
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if fsync {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = pool_options(1).connect_with(opts.clone()).await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let pool = pool_options(8).connect_with(opts).await?;
        // Without fsync a commit costs no sync, and an advance goes straight to the writer
        // (a hand-off to the committing task would only add to it).
        let advances = fsync.then(|| GroupCommit::start(writer.clone()));
        let tokens = TokenCache::open(path)
            .map_err(|e| MetaError::Unavailable(format!("the token cache's marker: {e}")))?;
        Ok(Self {
            pool,
            writer,
            advances,
            tokens,
        })
    }
}

/// A pool of up to `max` connections. Connections are not pinged before use (sqlx's default
/// is to): an in-process database has no peer to lose, and each ping was a round trip to the
/// connection's worker thread, as costly as the query after it (on a small PATCH, half of the
/// catalog's thread hand-offs, measured).
fn pool_options(max: u32) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(max)
        .test_before_acquire(false)
}

impl SqliteMeta {
    /// A session's or an owner's reads and writes must see no other writer: `BEGIN IMMEDIATE`
    /// takes the database's write lock at once (SQLite has one writer at a time).
    async fn begin_change(&self) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }

    fn reads(&self) -> &SqlitePool {
        &self.pool
    }

    fn writes(&self) -> &SqlitePool {
        &self.writer
    }

    async fn advance_offset(
        &self,
        id: &str,
        expected: u64,
        new_offset: u64,
    ) -> Result<bool, MetaError> {
        if let Some(commits) = &self.advances {
            return commits.advance(id, expected, new_offset).await;
        }
        Ok(Self::advance_on(self.writes(), id, expected, new_offset).await?)
    }

    fn token_cache(&self) -> Option<&TokenCache> {
        Some(&self.tokens)
    }

    fn credentials_removed(&self) -> Result<(), MetaError> {
        self.tokens.removed().map_err(|e| {
            MetaError::Unavailable(format!(
                "removed, but other chute processes may accept it for up to a minute: {e}"
            ))
        })
    }

    /// One node: its in-memory locks are all there is.
    fn shared_locks(&self) -> Option<std::sync::Arc<dyn super::ClusterLocks>> {
        None
    }

    const SESSION_STATUS_FOR_CHANGE: &'static str =
        "SELECT status FROM upload_sessions WHERE token = $1";

    /// The write lock taken by `begin_change` already serialises an owner's changes.
    const OWNER_FOR_CHANGE: &'static str = "SELECT id FROM users WHERE id = $1";
    /// Writers already take turns (one writing connection).
    const EVENTS_IN_ORDER: &'static str = "SELECT 1";
}

impl_meta_store!(SqliteMeta, sqlx::Sqlite);
