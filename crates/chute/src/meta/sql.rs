//! The queries of the catalog, written once for both SQL backends, one macro per table:
//! `impl_users_store!` (users and tokens), `impl_files_store!`, `impl_uploads_store!` and
//! `impl_sessions_store!` and `impl_events_store!` (the outbox) each expand to that table's
//! store trait; `impl_meta_store!` expands
//! to the row readers and transaction helpers they share, all four, and `MetaStore` itself,
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
//!   connections would make them sleep in SQLite's busy handler).
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

/// `UserStore` for `$meta`: the queries of the users table and tokens.
macro_rules! impl_users_store {
    ($meta:ty, $db:ty) => {
        #[async_trait]
        impl $crate::meta::UserStore for $meta {
            async fn create_user(&self, name: &str, is_staff: bool) -> Result<User, MetaError> {
                if !crate::names::valid_user_name(name) {
                    return Err(MetaError::Invalid(crate::names::USER_NAME_RULE.into()));
                }
                let created_at = now_unix();
                let res: Result<i64, _> = sqlx::query_scalar(
                    "INSERT INTO users (name, is_staff, created_at) VALUES ($1, $2, $3) RETURNING id",
                )
                .bind(name)
                .bind(is_staff as i64)
                .bind(created_at)
                .fetch_one(self.writes())
                .await;
                match res {
                    Ok(id) => Ok(User {
                        id,
                        name: name.to_string(),
                        is_staff,
                        created_at,
                    }),
                    Err(e) if is_unique_violation(&e) => Err(MetaError::Conflict(format!("user `{name}`"))),
                    Err(e) => Err(e.into()),
                }
            }

            async fn user_by_name(&self, name: &str) -> Result<Option<User>, MetaError> {
                if !$crate::meta::sql::storable(name) {
                    return Ok(None);
                }
                let row = sqlx::query("SELECT id, name, is_staff, created_at FROM users WHERE name = $1")
                    .bind(name)
                    .fetch_optional(self.reads())
                    .await?;
                Ok(row.as_ref().map(user_from_row).transpose()?)
            }

            async fn user_by_id(&self, id: i64) -> Result<Option<User>, MetaError> {
                let row = sqlx::query("SELECT id, name, is_staff, created_at FROM users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(self.reads())
                    .await?;
                Ok(row.as_ref().map(user_from_row).transpose()?)
            }

            async fn count_users(&self) -> Result<u64, MetaError> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
                    .fetch_one(self.reads())
                    .await?;
                Ok(n as u64)
            }

            async fn add_token(
                &self,
                user_id: i64,
                token_hash: &str,
                label: &str,
            ) -> Result<(), MetaError> {
                sqlx::query(
                    "INSERT INTO tokens (user_id, token_hash, label, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(user_id)
                .bind(token_hash)
                .bind(label)
                .bind(now_unix())
                .execute(self.writes())
                .await?;
                Ok(())
            }

            async fn user_by_token_hash(&self, token_hash: &str) -> Result<Option<User>, MetaError> {
                if !$crate::meta::sql::storable(token_hash) {
                    return Ok(None);
                }
                let row = sqlx::query(
                    "SELECT u.id, u.name, u.is_staff, u.created_at FROM tokens t \
                     JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
                )
                .bind(token_hash)
                .fetch_optional(self.reads())
                .await?;
                Ok(row.as_ref().map(user_from_row).transpose()?)
            }
        }
    };
}

/// `FileStore` for `$meta`: the queries of the files table.
macro_rules! impl_files_store {
    ($meta:ty, $db:ty) => {
        #[async_trait]
        impl $crate::meta::FileStore for $meta {
            async fn insert_file(
                &self,
                f: &FileRecord,
                quota: Option<$crate::meta::Quota>,
                events: &[$crate::events::NewEvent],
            ) -> Result<(), MetaError> {
                if quota.is_none() && events.is_empty() {
                    insert_file_with(self.writes(), f).await?;
                    return Ok(());
                }
                let mut tx = self.begin_change().await?;
                if quota.is_some() {
                    lock_owner(&mut tx, f.owner_id).await?;
                }
                insert_file_with(&mut *tx, f).await?;
                check_quota(&mut tx, quota, f.size).await?;
                insert_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_file(&self, id: &str) -> Result<Option<FileRecord>, MetaError> {
                if !$crate::meta::sql::storable(id) {
                    return Ok(None);
                }
                let row = sqlx::query(concat!(
                    "SELECT ",
                    file_columns!(),
                    " FROM files WHERE id = $1 AND temporary = 0"
                ))
                .bind(id)
                .fetch_optional(self.reads())
                .await?;
                Ok(row.as_ref().map(file_from_row).transpose()?)
            }

            async fn list_files(
                &self,
                owner_id: i64,
                after: Option<&str>,
                limit: u32,
            ) -> Result<Vec<FileRecord>, MetaError> {
                if after.is_some_and(|a| !$crate::meta::sql::storable(a)) {
                    return Ok(Vec::new());
                }
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    file_columns!(),
                    " FROM files WHERE owner_id = $1 AND id > $2 AND temporary = 0 ORDER BY id LIMIT $3"
                ))
                .bind(owner_id)
                .bind(after.unwrap_or(""))
                .bind(limit as i64)
                .fetch_all(self.reads())
                .await?;
                Ok(rows.iter().map(file_from_row).collect::<Result<_, _>>()?)
            }

            async fn delete_file(
                &self,
                owner_id: i64,
                id: &str,
                events: &[$crate::events::NewEvent],
            ) -> Result<Option<FileRecord>, MetaError> {
                if !$crate::meta::sql::storable(id) {
                    return Ok(None);
                }
                let mut tx = self.writes().begin().await?;
                let row = sqlx::query(concat!(
                    "DELETE FROM files WHERE id = $1 AND owner_id = $2 AND temporary = 0 RETURNING ",
                    file_columns!()
                ))
                .bind(id)
                .bind(owner_id)
                .fetch_optional(&mut *tx)
                .await?;
                let rec = row.as_ref().map(file_from_row).transpose()?;
                if rec.is_some() {
                    insert_events(&mut tx, events).await?;
                }
                tx.commit().await?;
                Ok(rec)
            }

            async fn usage_bytes(&self, owner_id: i64) -> Result<u64, MetaError> {
                Ok(usage_in(self.reads(), owner_id).await?)
            }
        }
    };
}

/// `UploadStore` for `$meta`: the queries of the uploads table.
macro_rules! impl_uploads_store {
    ($meta:ty, $db:ty) => {
        #[async_trait]
        impl $crate::meta::UploadStore for $meta {
            async fn create_upload(
                &self,
                u: &UploadRecord,
                parts: &[String],
                limits: $crate::meta::UploadLimits,
                events: &[$crate::events::NewEvent],
            ) -> Result<(), MetaError> {
                let mut tx = self.begin_change().await?;
                let quota = limits.quota.map(|bytes| $crate::meta::Quota {
                    owner_id: u.owner_id,
                    bytes,
                });
                if quota.is_some() || limits.max_open.is_some() {
                    lock_owner(&mut tx, u.owner_id).await?;
                }
                if let Some(max) = limits.max_open {
                    // Expired uploads wait for the sweeper; they do not hold a place.
                    let open: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM uploads WHERE owner_id = $1 AND state = 'active' \
                         AND (expires_at IS NULL OR expires_at > $2)",
                    )
                    .bind(u.owner_id)
                    .bind(u.created_at)
                    .fetch_one(&mut *tx)
                    .await?;
                    if open as u64 >= max {
                        return Err(MetaError::TooManyOpenUploads { max });
                    }
                }
                sqlx::query(
                    "INSERT INTO uploads (id, owner_id, protocol, staging_key, name, content_type, \"offset\", \
                     length, state, expires_at, metadata, hash_state, file_id, created_at) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
                )
                .bind(&u.id)
                .bind(u.owner_id)
                .bind(u.protocol.as_str())
                .bind(&u.staging_key)
                .bind(&u.name)
                .bind(&u.content_type)
                .bind(u.offset as i64)
                .bind(u.length.map(|l| l as i64))
                .bind(u.state.as_str())
                .bind(u.expires_at)
                .bind(u.metadata.to_json())
                .bind(&u.hash_state)
                .bind(&u.file_id)
                .bind(u.created_at)
                .execute(&mut *tx)
                .await?;
                for part in parts {
                    let claimed = sqlx::query(
                        "UPDATE uploads SET final_id = $1 WHERE id = $2 AND owner_id = $3 \
                         AND final_id IS NULL AND id <> $1",
                    )
                    .bind(&u.id)
                    .bind(part)
                    .bind(u.owner_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if claimed != 1 {
                        return Err(MetaError::Conflict(format!(
                            "partial upload `{part}` in another final upload"
                        )));
                    }
                }
                check_quota(&mut tx, quota, u.length.unwrap_or(0)).await?;
                insert_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn set_upload_file(&self, id: &str, file_id: &str) -> Result<bool, MetaError> {
                let r = sqlx::query(
                    "UPDATE uploads SET file_id = $1 WHERE id = $2 AND state = 'active'",
                )
                .bind(file_id)
                .bind(id)
                .execute(self.writes())
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn final_parts(&self, final_id: &str) -> Result<Vec<UploadRecord>, MetaError> {
                let rows = sqlx::query("SELECT * FROM uploads WHERE final_id = $1")
                    .bind(final_id)
                    .fetch_all(self.reads())
                    .await?;
                Ok(rows.iter().map(upload_from_row).collect::<Result<_, _>>()?)
            }

            async fn get_upload(&self, id: &str) -> Result<Option<UploadRecord>, MetaError> {
                if !$crate::meta::sql::storable(id) {
                    return Ok(None);
                }
                let row = sqlx::query("SELECT * FROM uploads WHERE id = $1")
                    .bind(id)
                    .fetch_optional(self.reads())
                    .await?;
                Ok(row.as_ref().map(upload_from_row).transpose()?)
            }

            async fn advance_upload(
                &self,
                id: &str,
                expected: u64,
                new_offset: u64,
                quota: Option<$crate::meta::Quota>,
            ) -> Result<bool, MetaError> {
                const ADVANCE: &str = "UPDATE uploads SET \"offset\" = $1 \
                     WHERE id = $2 AND \"offset\" = $3 AND state = 'active'";
                let Some(q) = quota else {
                    let r = sqlx::query(ADVANCE)
                        .bind(new_offset as i64)
                        .bind(id)
                        .bind(expected as i64)
                        .execute(self.writes())
                        .await?;
                    return Ok(r.rows_affected() == 1);
                };
                let mut tx = self.begin_change().await?;
                lock_owner(&mut tx, q.owner_id).await?;
                let r = sqlx::query(ADVANCE)
                    .bind(new_offset as i64)
                    .bind(id)
                    .bind(expected as i64)
                    .execute(&mut *tx)
                    .await?;
                if r.rows_affected() != 1 {
                    return Ok(false);
                }
                check_quota(&mut tx, quota, new_offset.saturating_sub(expected)).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn complete_upload(
                &self,
                id: &str,
                file: &FileRecord,
                quota: Option<$crate::meta::Quota>,
                events: &[$crate::events::NewEvent],
            ) -> Result<(), MetaError> {
                let mut tx = self.begin_change().await?;
                if let Some(q) = quota {
                    lock_owner(&mut tx, q.owner_id).await?;
                }
                let r = sqlx::query(
                    "UPDATE uploads SET state = 'complete', file_id = $1, \"offset\" = $3, length = $3 \
                     WHERE id = $2 AND state = 'active'",
                )
                .bind(&file.id)
                .bind(id)
                .bind(file.size as i64)
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() != 1 {
                    return Err(MetaError::NotFound(format!("active upload `{id}`")));
                }
                // A final upload's partials are spent: they hold nothing more for the quota.
                sqlx::query("UPDATE uploads SET state = 'complete' WHERE final_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                insert_file_with(&mut *tx, file).await?;
                check_quota(&mut tx, quota, 0).await?;
                insert_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn expired_uploads(&self, now: i64, limit: u32) -> Result<Vec<UploadRecord>, MetaError> {
                let rows = sqlx::query(
                    "SELECT * FROM uploads WHERE expires_at IS NOT NULL AND expires_at < $1 \
                     ORDER BY expires_at LIMIT $2",
                )
                .bind(now)
                .bind(limit as i64)
                .fetch_all(self.reads())
                .await?;
                Ok(rows.iter().map(upload_from_row).collect::<Result<_, _>>()?)
            }

            async fn active_uploads(
                &self,
                owner_id: i64,
                protocol: Protocol,
            ) -> Result<Vec<UploadRecord>, MetaError> {
                let rows = sqlx::query(
                    "SELECT * FROM uploads WHERE owner_id = $1 AND protocol = $2 AND state = 'active' \
                     ORDER BY created_at, id",
                )
                .bind(owner_id)
                .bind(protocol.as_str())
                .fetch_all(self.reads())
                .await?;
                Ok(rows.iter().map(upload_from_row).collect::<Result<_, _>>()?)
            }

            async fn set_upload_length(
                &self,
                id: &str,
                length: u64,
                quota: Option<$crate::meta::Quota>,
            ) -> Result<bool, MetaError> {
                let mut tx = self.begin_change().await?;
                if let Some(q) = quota {
                    lock_owner(&mut tx, q.owner_id).await?;
                }
                let r = sqlx::query("UPDATE uploads SET length = $1 WHERE id = $2 AND length IS NULL")
                    .bind(length as i64)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                if r.rows_affected() != 1 {
                    return Ok(false);
                }
                check_quota(&mut tx, quota, 0).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn delete_upload(
                &self,
                id: &str,
                events: &[$crate::events::NewEvent],
            ) -> Result<(), MetaError> {
                // A final upload that goes unassembled lets its partials go: they may join
                // another final.
                let mut tx = self.writes().begin().await?;
                sqlx::query("UPDATE uploads SET final_id = NULL WHERE final_id = $1 AND state = 'active'")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let gone = sqlx::query("DELETE FROM uploads WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if gone == 1 {
                    insert_events(&mut tx, events).await?;
                }
                tx.commit().await?;
                Ok(())
            }
        }
    };
}

/// `SessionStore` for `$meta`: the queries of the sessions table.
macro_rules! impl_sessions_store {
    ($meta:ty, $db:ty) => {
        #[async_trait]
        impl $crate::meta::SessionStore for $meta {
            async fn create_session(&self, token: &str, owner_id: i64, now: i64) -> Result<(), MetaError> {
                sqlx::query(
                    "INSERT INTO upload_sessions (token, owner_id, status, last_activity, created_at) \
                     VALUES ($1, $2, $3, $4, $4)",
                )
                .bind(token)
                .bind(owner_id)
                .bind(SessionStatus::Created.as_str())
                .bind(now)
                .execute(self.writes())
                .await
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        MetaError::Conflict("upload session".into())
                    } else {
                        e.into()
                    }
                })?;
                Ok(())
            }

            async fn get_session(&self, token: &str) -> Result<Option<SessionRecord>, MetaError> {
                if !$crate::meta::sql::storable(token) {
                    return Ok(None);
                }
                let row = sqlx::query(
                    "SELECT s.token, s.owner_id, s.status, s.last_activity, s.created_at, \
                     (SELECT COUNT(*) FROM files f WHERE f.session_token = s.token) AS n, \
                     (SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM files f \
                     WHERE f.session_token = s.token) AS total \
                     FROM upload_sessions s WHERE s.token = $1",
                )
                .bind(token)
                .fetch_optional(self.reads())
                .await?;
                let Some(r) = row else { return Ok(None) };
                let status: String = r.try_get("status")?;
                Ok(Some(SessionRecord {
                    token: r.try_get("token")?,
                    owner_id: r.try_get("owner_id")?,
                    status: SessionStatus::parse(&status)
                        .ok_or_else(|| MetaError::NotFound(format!("session status {status}")))?,
                    last_activity: r.try_get("last_activity")?,
                    created_at: r.try_get("created_at")?,
                    file_count: r.try_get::<i64, _>("n")? as u64,
                    total_size: r.try_get::<i64, _>("total")? as u64,
                }))
            }

            async fn touch_session(&self, token: &str, now: i64) -> Result<(), MetaError> {
                sqlx::query(
                    "UPDATE upload_sessions SET last_activity = \
                     CASE WHEN last_activity < $2 THEN $2 ELSE last_activity END \
                     WHERE token = $1 AND status IN ('CREATED', 'UPLOADING')",
                )
                .bind(token)
                .bind(now)
                .execute(self.writes())
                .await?;
                Ok(())
            }

            async fn set_session_status(
                &self,
                token: &str,
                from: &[SessionStatus],
                to: SessionStatus,
                events: &[$crate::events::NewEvent],
            ) -> Result<bool, MetaError> {
                // A fixed IN list as long as the set of statuses, padded with the first one,
                // keeps the statement static.
                let Some(first) = from.first() else {
                    return Ok(false);
                };
                let mut q = sqlx::query(
                    "UPDATE upload_sessions SET status = $2 WHERE token = $1 \
                     AND status IN ($3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(token)
                .bind(to.as_str());
                for i in 0..SessionStatus::ALL.len() {
                    q = q.bind(from.get(i).unwrap_or(first).as_str());
                }
                let mut tx = self.writes().begin().await?;
                let n = q.execute(&mut *tx).await?.rows_affected();
                if n == 1 {
                    insert_events(&mut tx, events).await?;
                }
                tx.commit().await?;
                Ok(n == 1)
            }

            async fn session_files(&self, token: &str) -> Result<Vec<FileRecord>, MetaError> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    file_columns!(),
                    " FROM files WHERE session_token = $1 ORDER BY id"
                ))
                .bind(token)
                .fetch_all(self.reads())
                .await?;
                Ok(rows.iter().map(file_from_row).collect::<Result<_, _>>()?)
            }

            async fn session_file(&self, token: &str, name: &str) -> Result<Option<FileRecord>, MetaError> {
                if !$crate::meta::sql::storable(token) || !$crate::meta::sql::storable(name) {
                    return Ok(None);
                }
                let row = sqlx::query(concat!(
                    "SELECT ",
                    file_columns!(),
                    " FROM files WHERE session_token = $1 AND name = $2"
                ))
                .bind(token)
                .bind(name)
                .fetch_optional(self.reads())
                .await?;
                Ok(row.as_ref().map(file_from_row).transpose()?)
            }

            async fn add_session_file(
                &self,
                token: &str,
                f: &FileRecord,
                limits: SessionLimits,
                now: i64,
                quota: Option<$crate::meta::Quota>,
                events: &[$crate::events::NewEvent],
            ) -> Result<Result<(), SessionAddRefused>, MetaError> {
                // The checks and the insert see no other writer of the session (or, with a
                // quota, of the owner) in between (see `begin_change`). A dropped transaction
                // rolls back, also when the request is cancelled.
                let mut tx = self.begin_change().await?;
                let res = add_session_file_in(&mut tx, token, f, limits, now).await?;
                if res.is_ok() {
                    if let Some(q) = quota {
                        lock_owner(&mut tx, q.owner_id).await?;
                    }
                    check_quota(&mut tx, quota, f.size).await?;
                    insert_events(&mut tx, events).await?;
                    tx.commit().await?;
                }
                Ok(res)
            }

            async fn remove_session_file(
                &self,
                token: &str,
                name: &str,
                now: i64,
            ) -> Result<Result<Option<FileRecord>, SessionStatus>, MetaError> {
                if !$crate::meta::sql::storable(token) || !$crate::meta::sql::storable(name) {
                    return Ok(Ok(None));
                }
                let mut tx = self.begin_change().await?;
                let status: Option<String> =
                    sqlx::query_scalar(<$meta>::SESSION_STATUS_FOR_CHANGE)
                        .bind(token)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(status) = status.as_deref().and_then(SessionStatus::parse) else {
                    return Ok(Ok(None));
                };
                if !status.accepts_changes() {
                    return Ok(Err(status));
                }
                let row = sqlx::query(concat!(
                    "DELETE FROM files WHERE session_token = $1 AND name = $2 AND temporary = 1 RETURNING ",
                    file_columns!()
                ))
                .bind(token)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
                let removed = row.as_ref().map(file_from_row).transpose()?;
                if removed.is_some() {
                    sqlx::query(
                        "UPDATE upload_sessions SET last_activity = $2, status = CASE WHEN \
                         (SELECT COUNT(*) FROM files WHERE session_token = $1) = 0 THEN 'CREATED' \
                         ELSE status END WHERE token = $1",
                    )
                    .bind(token)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(Ok(removed))
            }

            async fn store_session(
                &self,
                token: &str,
                events: &[$crate::events::NewEvent],
            ) -> Result<Option<u64>, MetaError> {
                let mut tx = self.writes().begin().await?;
                let moved = sqlx::query(
                    "UPDATE upload_sessions SET status = 'STORED' \
                     WHERE token = $1 AND status = 'COPYING_IN_PROGRESS'",
                )
                .bind(token)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if moved != 1 {
                    return Ok(None);
                }
                let n = sqlx::query("UPDATE files SET temporary = 0 WHERE session_token = $1")
                    .bind(token)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                insert_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(Some(n))
            }

            async fn stale_sessions(&self, before: i64, limit: u32) -> Result<Vec<String>, MetaError> {
                Ok(sqlx::query_scalar(
                    "SELECT token FROM upload_sessions WHERE status IN ('CREATED', 'UPLOADING') \
                     AND last_activity < $1 ORDER BY last_activity LIMIT $2",
                )
                .bind(before)
                .bind(limit as i64)
                .fetch_all(self.reads())
                .await?)
            }

            async fn take_temporary_files(&self, token: &str) -> Result<Vec<FileRecord>, MetaError> {
                let rows = sqlx::query(concat!(
                    "DELETE FROM files WHERE session_token = $1 AND temporary = 1 RETURNING ",
                    file_columns!()
                ))
                .bind(token)
                .fetch_all(self.writes())
                .await?;
                Ok(rows.iter().map(file_from_row).collect::<Result<_, _>>()?)
            }
        }
    };
}

/// `EventStore` for `$meta`: the outbox.
macro_rules! impl_events_store {
    ($meta:ty, $db:ty) => {
        #[async_trait]
        impl $crate::meta::EventStore for $meta {
            async fn record_events(
                &self,
                events: &[$crate::events::NewEvent],
            ) -> Result<(), MetaError> {
                if events.is_empty() {
                    return Ok(());
                }
                let mut tx = self.writes().begin().await?;
                insert_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn events_after(
                &self,
                after: i64,
                limit: u32,
            ) -> Result<Vec<$crate::events::EventRecord>, MetaError> {
                let rows = sqlx::query("SELECT * FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(after)
                    .bind(limit as i64)
                    .fetch_all(self.reads())
                    .await?;
                Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
            }

            async fn claim_events(
                &self,
                now: i64,
                lease_until: i64,
                limit: u32,
            ) -> Result<Vec<$crate::events::EventRecord>, MetaError> {
                // The outer conditions are checked again on each row as it is updated, so of
                // two nodes that pick the same event one leases it.
                let rows = sqlx::query(
                    "UPDATE events SET lease_until = $2, attempts = attempts + 1 \
                     WHERE seq IN (SELECT e.seq FROM events e WHERE e.state = 'pending' \
                       AND e.next_attempt_at <= $1 \
                       AND (e.lease_until IS NULL OR e.lease_until < $1) \
                       AND NOT EXISTS (SELECT 1 FROM events p WHERE p.subject = e.subject \
                         AND p.seq < e.seq AND p.state = 'pending') \
                       ORDER BY e.seq LIMIT $3) \
                     AND state = 'pending' AND (lease_until IS NULL OR lease_until < $1) \
                     RETURNING *",
                )
                .bind(now)
                .bind(lease_until)
                .bind(limit as i64)
                .fetch_all(self.writes())
                .await?;
                let mut out: Vec<_> = rows.iter().map(event_from_row).collect::<Result<_, _>>()?;
                out.sort_by_key(|e| e.seq);
                Ok(out)
            }

            async fn settle_events(
                &self,
                outcomes: &[(i64, $crate::meta::Delivery)],
            ) -> Result<(), MetaError> {
                use $crate::meta::Delivery;
                if outcomes.is_empty() {
                    return Ok(());
                }
                let mut tx = self.writes().begin().await?;
                for (seq, outcome) in outcomes {
                    let (state, at, error) = match outcome {
                        Delivery::Delivered => ("delivered", 0, None),
                        Delivery::Retry { at, error } => ("pending", *at, Some(error.as_str())),
                        Delivery::Failed { error } => ("failed", 0, Some(error.as_str())),
                    };
                    sqlx::query(
                        "UPDATE events SET state = $2, lease_until = NULL, last_error = $4, \
                         next_attempt_at = CASE WHEN $3 > 0 THEN $3 ELSE next_attempt_at END \
                         WHERE seq = $1 AND state = 'pending'",
                    )
                    .bind(seq)
                    .bind(state)
                    .bind(at)
                    .bind(error)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn list_events(
                &self,
                state: Option<$crate::events::DeliveryState>,
                limit: u32,
            ) -> Result<Vec<$crate::events::EventRecord>, MetaError> {
                let rows = sqlx::query(
                    "SELECT * FROM events WHERE ($1 = '' OR state = $1) ORDER BY seq DESC LIMIT $2",
                )
                .bind(state.map(|s| s.as_str()).unwrap_or(""))
                .bind(limit as i64)
                .fetch_all(self.reads())
                .await?;
                Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
            }

            async fn retry_events(&self, id: Option<&str>, now: i64) -> Result<u64, MetaError> {
                if id.is_some_and(|i| !$crate::meta::sql::storable(i)) {
                    return Ok(0);
                }
                let r = sqlx::query(
                    "UPDATE events SET state = 'pending', next_attempt_at = $2, retry_since = $2, \
                     lease_until = NULL WHERE state = 'failed' AND ($1 = '' OR id = $1)",
                )
                .bind(id.unwrap_or(""))
                .bind(now)
                .execute(self.writes())
                .await?;
                Ok(r.rows_affected())
            }

            async fn prune_events(&self, before: i64) -> Result<u64, MetaError> {
                let r = sqlx::query(
                    "DELETE FROM events WHERE state IN ('delivered', 'kept') AND created_at < $1",
                )
                .bind(before)
                .execute(self.writes())
                .await?;
                Ok(r.rows_affected())
            }
        }
    };
}

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
