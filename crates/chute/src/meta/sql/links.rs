//! The catalog's queries of the download links' signing keys, for both SQL backends (see
//! `super`).

/// `LinkKeyStore` for `$meta`: the link_keys table.
macro_rules! impl_link_keys_store {
    ($meta:ty, $db:ty) => {
        #[async_trait]
        impl $crate::meta::LinkKeyStore for $meta {
            async fn link_keys(&self) -> Result<Vec<(i64, String)>, MetaError> {
                let rows: Vec<(i64, String)> =
                    sqlx::query_as("SELECT id, secret FROM link_keys ORDER BY id DESC")
                        .fetch_all(self.reads())
                        .await?;
                Ok(rows)
            }

            async fn ensure_link_key(&self, secret: &str) -> Result<(), MetaError> {
                let res = sqlx::query(
                    "INSERT INTO link_keys (id, secret, created_at) \
                     SELECT 1, $1, $2 WHERE NOT EXISTS (SELECT 1 FROM link_keys)",
                )
                .bind(secret)
                .bind(now_unix())
                .execute(self.writes())
                .await;
                match res {
                    // Another node made the first key at the same moment: it is the key.
                    Err(e) if is_unique_violation(&e) => Ok(()),
                    other => other.map(drop).map_err(Into::into),
                }
            }

            async fn rotate_link_key(&self, secret: &str) -> Result<i64, MetaError> {
                let mut tx = self.writes().begin().await?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO link_keys (id, secret, created_at) \
                     SELECT COALESCE(MAX(id), 0) + 1, $1, $2 FROM link_keys RETURNING id",
                )
                .bind(secret)
                .bind(now_unix())
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM link_keys WHERE id < $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(id)
            }
        }
    };
}
