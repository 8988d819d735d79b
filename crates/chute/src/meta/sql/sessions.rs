//! The catalog's queries of the upload sessions and their files, for both SQL backends (see `super`).

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
