//! The catalog's queries of the files table, for both SQL backends (see `super`).

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
