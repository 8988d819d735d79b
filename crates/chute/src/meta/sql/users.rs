//! The catalog's queries of the users table and their API tokens, for both SQL backends (see `super`).

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
