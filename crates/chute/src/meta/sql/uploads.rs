//! The catalog's queries of the uploads table (resumable uploads, concatenation, quota reservations), for both SQL backends (see `super`).

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
                let Some(q) = quota else {
                    return self.advance_offset(id, expected, new_offset).await;
                };
                let mut tx = self.begin_change().await?;
                lock_owner(&mut tx, q.owner_id).await?;
                if !Self::advance_on(&mut *tx, id, expected, new_offset).await? {
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

            async fn open_uploads_of(&self, owner_id: i64) -> Result<Vec<UploadRecord>, MetaError> {
                let rows = sqlx::query(
                    "SELECT * FROM uploads WHERE owner_id = $1 AND state = 'active' ORDER BY created_at, id",
                )
                .bind(owner_id)
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

        impl $meta {
            /// `ADVANCE` on `on` (a pool or a transaction): whether the upload moved.
            pub(super) async fn advance_on<'e>(
                on: impl sqlx::Executor<'e, Database = $db>,
                id: &str,
                expected: u64,
                new_offset: u64,
            ) -> Result<bool, sqlx::Error> {
                let r = sqlx::query($crate::meta::sql::ADVANCE)
                    .bind(new_offset as i64)
                    .bind(id)
                    .bind(expected as i64)
                    .execute(on)
                    .await?;
                Ok(r.rows_affected() == 1)
            }
        }
    };
}
