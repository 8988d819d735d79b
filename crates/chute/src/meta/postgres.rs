//! PostgreSQL metadata, for several chute nodes sharing one catalog (`database_url =
//! "postgres://..."`). The queries are the SQLite backend's (`meta/sql/`); what is its own:
//! the connection pool, its migrations, row locks for session changes, and the cross-node
//! upload locks (`pg_locks.rs` beside this file: advisory locks plus LISTEN/NOTIFY for asking
//! another node to let go of an upload).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool, Row};

use super::pg_locks::PgLocks;
use super::sql::is_unique_violation;
use super::{
    FileRecord, MetaError, Protocol, SessionAddRefused, SessionLimits, SessionRecord,
    SessionStatus, UploadMeta, UploadRecord, UploadState, User, now_unix,
};

pub struct PgMeta {
    pool: PgPool,
    locks: Arc<PgLocks>,
}

impl PgMeta {
    /// Connects to `url` and applies the migrations (concurrent starts of several nodes are
    /// safe: sqlx's migrator takes an advisory lock). `fsync` false sets
    /// `synchronous_commit = off` on chute's connections (`upload_fsync = false`).
    pub async fn open(url: &str, max_connections: u32, fsync: bool) -> Result<Self, MetaError> {
        let opts = PgConnectOptions::from_str(url)?.application_name("chute");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if !fsync {
                        conn.execute("SET synchronous_commit = off").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let locks = PgLocks::start(pool.clone()).await?;
        Ok(Self { pool, locks })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Session and quota changes run in a plain transaction whose queries lock the session's
    /// row (`SESSION_STATUS_FOR_CHANGE`) or the owner's (`OWNER_FOR_CHANGE`), so changes of one
    /// session or owner are serialised and others' run alongside.
    async fn begin_change(&self) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    fn reads(&self) -> &PgPool {
        &self.pool
    }

    fn writes(&self) -> &PgPool {
        &self.pool
    }

    /// Every lookup asks the catalog: another node can remove a token at any time.
    fn token_cache(&self) -> Option<&super::token_cache::TokenCache> {
        None
    }

    fn credentials_removed(&self) -> Result<(), MetaError> {
        Ok(())
    }

    /// Concurrent commits already share PostgreSQL's WAL flushes.
    async fn advance_offset(
        &self,
        id: &str,
        expected: u64,
        new_offset: u64,
    ) -> Result<bool, MetaError> {
        Ok(Self::advance_on(self.writes(), id, expected, new_offset).await?)
    }

    fn shared_locks(&self) -> Option<Arc<dyn super::ClusterLocks>> {
        Some(self.locks.clone())
    }

    const SESSION_STATUS_FOR_CHANGE: &'static str =
        "SELECT status FROM upload_sessions WHERE token = $1 FOR UPDATE";

    /// An owner's quota checks are serialised by a lock on their row: two uploads that commit
    /// at once cannot both see the usage without the other.
    const OWNER_FOR_CHANGE: &'static str = "SELECT id FROM users WHERE id = $1 FOR UPDATE";
    /// Events commit in the order of their `seq`: the lock is taken just before they are
    /// inserted and held to the commit (by then nothing else is waited for), so a reader of
    /// the feed never sees a later `seq` before an earlier one.
    const EVENTS_IN_ORDER: &'static str = "SELECT pg_advisory_xact_lock(5786334201906931)";
}

impl_meta_store!(PgMeta, sqlx::Postgres);
