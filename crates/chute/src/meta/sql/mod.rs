//! The queries of the catalog, written once for both SQL backends, one macro per table, each
//! in the file of its table: `impl_users_store!` (users.rs: users and tokens),
//! `impl_files_store!` (files.rs), `impl_uploads_store!` (uploads.rs), `impl_sessions_store!`
//! (sessions.rs), `impl_events_store!` (events.rs: the outbox) and `impl_link_keys_store!`
//! (links.rs: download links' keys) each expand to that table's
//! store trait. `impl_meta_store!` (here) expands to the row readers and transaction helpers
//! they share, to all five, and to `MetaStore` itself,
//! for a backend type that has a `pool` field and provides what the backends do differently:
//!
//! - `begin_change(&self)`: a transaction for checks and changes that must see no other
//!   writer of the same session or owner (SQLite: `BEGIN IMMEDIATE`, the database's one write
//!   lock; PostgreSQL: a plain transaction, made exclusive by the row locks below);
//! - `SESSION_STATUS_FOR_CHANGE`: the query that reads the session's status at its start;
//! - `OWNER_FOR_CHANGE`: the query that serialises an owner's quota checks (PostgreSQL locks
//!   the user's row; SQLite's write lock already does);
//! - `shared_locks(&self)`: the upload locks across nodes, if several nodes can share it;
//! - `EVENTS_IN_ORDER`: run just before a transaction writes events, so that events commit in
//!   the order of their `seq` (PostgreSQL: one advisory lock held to the commit; SQLite's
//!   writers already take turns);
//! - `reads(&self)` and `writes(&self)`: the pools for reading and for changing (SQLite has
//!   one writer at a time: a pool of one connection queues its writers, where several
//!   connections would make them sleep in SQLite's busy handler);
//! - `token_cache(&self)`: token lookups kept in memory (SQLite: `meta/token_cache.rs`;
//!   PostgreSQL: none), and `credentials_removed(&self)`, called after a token or a user is
//!   removed, which empties every process's cache;
//! - `advance_offset(&self, id, expected, new_offset)`: an upload's offset advance without a
//!   quota to check, the commit of every acknowledged append (`ADVANCE`; SQLite with fsync
//!   shares one commit among the advances waiting at once: `meta/group_commit.rs`).
//!
//! Everything else is portable SQL: `$n` placeholders, `RETURNING`, `CAST(SUM(..) AS BIGINT)`
//! (PostgreSQL sums BIGINT into NUMERIC), CASE instead of two-argument MAX, and columns of
//! types both share (BIGINT, TEXT, BLOB/BYTEA).

/// Whether a client's key can be in the catalog at all: PostgreSQL's text cannot hold NUL (it
/// refuses such a parameter with an error), and chute never stores one (names are cleaned of
/// control characters), so a lookup by such a key finds nothing on either backend.
pub fn storable(s: &str) -> bool {
    !s.contains('\0')
}

/// An upload's offset advance, a compare-and-set: it moves only from `$3`, only while active.
pub(super) const ADVANCE: &str = "UPDATE uploads SET \"offset\" = $1 \
     WHERE id = $2 AND \"offset\" = $3 AND state = 'active'";

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// An owner's usage: their files, plus each open upload's declared length or, while that is
/// deferred, its offset; a final upload of a concatenation counts nothing while open (its
/// partials, which carry its `final_id`, hold its bytes).
pub(super) const USAGE: &str = "SELECT CAST(\
     COALESCE((SELECT SUM(size) FROM files WHERE owner_id = $1), 0) + \
     COALESCE((SELECT SUM(COALESCE(length, \"offset\")) FROM uploads u WHERE u.owner_id = $1 \
     AND u.state = 'active' AND NOT EXISTS (SELECT 1 FROM uploads p WHERE p.final_id = u.id)), 0) \
     AS BIGINT)";

macro_rules! file_columns {
    () => {
        "id, owner_id, name, size, stored_size, content_type, detected_type, \
         encoding, storage_key, md5, sha1, sha256, blake3, created_at"
    };
}

#[macro_use]
mod users;
#[macro_use]
mod files;
#[macro_use]
mod uploads;
#[macro_use]
mod sessions;
#[macro_use]
mod events;
#[macro_use]
mod links;

/// The `MetaStore` implementation for `$meta`, a struct with a `pool: sqlx::Pool<$db>`.
macro_rules! impl_meta_store {
    ($meta:ty, $db:ty) => {
        fn file_from_row(r: &<$db as sqlx::Database>::Row) -> Result<FileRecord, sqlx::Error> {
            Ok(FileRecord {
                id: r.try_get("id")?,
                owner_id: r.try_get("owner_id")?,
                name: r.try_get("name")?,
                size: r.try_get::<i64, _>("size")? as u64,
                stored_size: r.try_get::<i64, _>("stored_size")? as u64,
                content_type: r.try_get("content_type")?,
                detected_type: r.try_get("detected_type")?,
                encoding: r.try_get("encoding")?,
                storage_key: r.try_get("storage_key")?,
                md5: r.try_get("md5")?,
                sha1: r.try_get("sha1")?,
                sha256: r.try_get("sha256")?,
                blake3: r.try_get("blake3")?,
                created_at: r.try_get("created_at")?,
            })
        }

        fn user_from_row(r: &<$db as sqlx::Database>::Row) -> Result<User, sqlx::Error> {
            Ok(User {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                is_staff: r.try_get::<i64, _>("is_staff")? != 0,
                created_at: r.try_get("created_at")?,
            })
        }

        fn upload_from_row(r: &<$db as sqlx::Database>::Row) -> Result<UploadRecord, sqlx::Error> {
            Ok(UploadRecord {
                id: r.try_get("id")?,
                owner_id: r.try_get("owner_id")?,
                protocol: Protocol::parse(&r.try_get::<String, _>("protocol")?)?,
                staging_key: r.try_get("staging_key")?,
                name: r.try_get("name")?,
                content_type: r.try_get("content_type")?,
                offset: r.try_get::<i64, _>("offset")? as u64,
                length: r.try_get::<Option<i64>, _>("length")?.map(|l| l as u64),
                state: UploadState::parse(&r.try_get::<String, _>("state")?)?,
                expires_at: r.try_get("expires_at")?,
                metadata: UploadMeta::from_json(&r.try_get::<String, _>("metadata")?)?,
                hash_state: r.try_get("hash_state")?,
                file_id: r.try_get("file_id")?,
                created_at: r.try_get("created_at")?,
                final_id: r.try_get("final_id")?,
            })
        }

        /// Locks the owner for a quota check (see `OWNER_FOR_CHANGE`).
        async fn lock_owner(
            conn: &mut <$db as sqlx::Database>::Connection,
            owner_id: i64,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(<$meta>::OWNER_FOR_CHANGE)
                .bind(owner_id)
                .fetch_optional(&mut *conn)
                .await?;
            Ok(())
        }

        /// The owner's usage (`MetaStore::usage_bytes`), as this connection sees it.
        async fn usage_in<'e, E>(exec: E, owner_id: i64) -> Result<u64, sqlx::Error>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            let n: i64 = sqlx::query_scalar($crate::meta::sql::USAGE)
                .bind(owner_id)
                .fetch_one(exec)
                .await?;
            Ok(n.max(0) as u64)
        }

        /// Fails with `QuotaExceeded` when the owner's usage, with the transaction's changes
        /// in, is over the quota (the caller then drops the transaction: nothing changes).
        async fn check_quota(
            conn: &mut <$db as sqlx::Database>::Connection,
            quota: Option<$crate::meta::Quota>,
            added: u64,
        ) -> Result<(), MetaError> {
            let Some(q) = quota else { return Ok(()) };
            let used = usage_in(&mut *conn, q.owner_id).await?;
            if used > q.bytes {
                return Err(MetaError::QuotaExceeded {
                    quota: q.bytes,
                    used: used.saturating_sub(added),
                });
            }
            Ok(())
        }

        async fn insert_file_with<'e, E>(exec: E, f: &FileRecord) -> Result<(), sqlx::Error>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            sqlx::query(concat!(
                "INSERT INTO files (",
                file_columns!(),
                ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)"
            ))
            .bind(&f.id)
            .bind(f.owner_id)
            .bind(&f.name)
            .bind(f.size as i64)
            .bind(f.stored_size as i64)
            .bind(&f.content_type)
            .bind(&f.detected_type)
            .bind(&f.encoding)
            .bind(&f.storage_key)
            .bind(&f.md5)
            .bind(&f.sha1)
            .bind(&f.sha256)
            .bind(&f.blake3)
            .bind(f.created_at)
            .execute(exec)
            .await?;
            Ok(())
        }

        /// Writes `events` in the caller's transaction, in commit order (`EVENTS_IN_ORDER`).
        async fn insert_events(
            conn: &mut <$db as sqlx::Database>::Connection,
            events: &[$crate::events::NewEvent],
        ) -> Result<(), sqlx::Error> {
            use $crate::events::DeliveryState;
            if events.is_empty() {
                return Ok(());
            }
            sqlx::query(<$meta>::EVENTS_IN_ORDER).execute(&mut *conn).await?;
            for e in events {
                let state = if e.deliver { DeliveryState::Pending } else { DeliveryState::Kept };
                sqlx::query(
                    "INSERT INTO events (id, type, subject, body, created_at, state, \
                     next_attempt_at, retry_since) VALUES ($1, $2, $3, $4, $5, $6, $5, $5)",
                )
                .bind(&e.id)
                .bind(e.kind.as_str())
                .bind(&e.subject)
                .bind(&e.body)
                .bind(e.created_at)
                .bind(state.as_str())
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        fn event_from_row(
            r: &<$db as sqlx::Database>::Row,
        ) -> Result<$crate::events::EventRecord, sqlx::Error> {
            let state: String = r.try_get("state")?;
            Ok($crate::events::EventRecord {
                seq: r.try_get("seq")?,
                id: r.try_get("id")?,
                kind: r.try_get("type")?,
                subject: r.try_get("subject")?,
                body: r.try_get("body")?,
                created_at: r.try_get("created_at")?,
                state: $crate::events::DeliveryState::parse(&state).ok_or_else(|| {
                    sqlx::Error::Decode(format!("unknown event state `{state}`").into())
                })?,
                attempts: r.try_get("attempts")?,
                retry_since: r.try_get("retry_since")?,
                last_error: r.try_get("last_error")?,
            })
        }

        #[async_trait]
        impl $crate::meta::MetaStore for $meta {
            fn cluster_locks(
                &self,
            ) -> Option<std::sync::Arc<dyn $crate::meta::ClusterLocks>> {
                self.shared_locks()
            }

            async fn ping(&self) -> Result<(), MetaError> {
                sqlx::query("SELECT 1").execute(self.reads()).await?;
                Ok(())
            }
        }

        impl_users_store!($meta, $db);
        impl_files_store!($meta, $db);
        impl_uploads_store!($meta, $db);
        impl_sessions_store!($meta, $db);
        impl_events_store!($meta, $db);
        impl_link_keys_store!($meta, $db);

        async fn add_session_file_in(
            conn: &mut <$db as sqlx::Database>::Connection,
            token: &str,
            f: &FileRecord,
            limits: SessionLimits,
            now: i64,
        ) -> Result<Result<(), SessionAddRefused>, MetaError> {
            let status: Option<String> = sqlx::query_scalar(<$meta>::SESSION_STATUS_FOR_CHANGE)
                .bind(token)
                .fetch_optional(&mut *conn)
                .await?;
            let Some(status) = status.as_deref().and_then(SessionStatus::parse) else {
                return Ok(Err(SessionAddRefused::NotFound));
            };
            if !status.accepts_changes() {
                return Ok(Err(SessionAddRefused::NotWritable(status)));
            }
            let (n, total, dup): (i64, i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN name = $2 THEN 1 ELSE 0 END), 0) AS BIGINT) \
                 FROM files WHERE session_token = $1",
            )
            .bind(token)
            .bind(&f.name)
            .fetch_one(&mut *conn)
            .await?;
            if dup > 0 {
                return Ok(Err(SessionAddRefused::Duplicate));
            }
            if n as u64 >= limits.max_count {
                return Ok(Err(SessionAddRefused::TooMany {
                    max: limits.max_count,
                }));
            }
            if total as u64 + f.size > limits.max_total {
                return Ok(Err(SessionAddRefused::TooLarge {
                    max: limits.max_total,
                    total: total as u64,
                }));
            }
            insert_file_with(&mut *conn, f).await?;
            sqlx::query("UPDATE files SET session_token = $1, temporary = 1 WHERE id = $2")
                .bind(token)
                .bind(&f.id)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "UPDATE upload_sessions SET status = 'UPLOADING', last_activity = $2 WHERE token = $1",
            )
            .bind(token)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            Ok(Ok(()))
        }
    };
}
