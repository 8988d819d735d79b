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

            async fn user_by_token_hash(
                &self,
                token_hash: &str,
            ) -> Result<Option<(User, $crate::meta::TokenInfo)>, MetaError> {
                if !$crate::meta::sql::storable(token_hash) {
                    return Ok(None);
                }
                let stamp = match self.token_cache().map(|c| c.get(token_hash)) {
                    Some($crate::meta::token_cache::Cached::Hit(user, token)) => {
                        return Ok(Some((user, token)));
                    }
                    Some($crate::meta::token_cache::Cached::Miss(stamp)) => stamp,
                    None => None,
                };
                let row = sqlx::query(
                    "SELECT u.id, u.name, u.is_staff, u.created_at, t.id AS token_id, t.label, \
                     t.created_at AS token_created_at, t.last_used_at FROM tokens t \
                     JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
                )
                .bind(token_hash)
                .fetch_optional(self.reads())
                .await?;
                let Some(r) = row else { return Ok(None) };
                let user = user_from_row(&r)?;
                let token = $crate::meta::TokenInfo {
                    id: r.try_get("token_id")?,
                    user_id: user.id,
                    label: r.try_get("label")?,
                    created_at: r.try_get("token_created_at")?,
                    last_used_at: r.try_get("last_used_at")?,
                };
                if let Some(cache) = self.token_cache() {
                    cache.put(token_hash, &user, &token, stamp);
                }
                Ok(Some((user, token)))
            }

            async fn list_users(&self) -> Result<Vec<User>, MetaError> {
                let rows = sqlx::query("SELECT id, name, is_staff, created_at FROM users ORDER BY name")
                    .fetch_all(self.reads())
                    .await?;
                Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
            }

            async fn delete_user(&self, id: i64) -> Result<Option<Vec<String>>, MetaError> {
                let mut tx = self.begin_change().await?;
                // The owner's row is locked (PostgreSQL) or the database is (SQLite): no file
                // or upload of theirs can appear until the commit.
                let found: Option<i64> = sqlx::query_scalar(Self::OWNER_FOR_CHANGE)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if found.is_none() {
                    return Ok(None);
                }
                let files: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM files WHERE owner_id = $1 AND temporary = 0",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                let open: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM uploads WHERE owner_id = $1 AND state = 'active'",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                if files > 0 || open > 0 {
                    return Err(MetaError::Conflict(format!(
                        "the user has {files} file(s) and {open} open upload(s)"
                    )));
                }
                let keys: Vec<String> = sqlx::query_scalar(
                    "DELETE FROM files WHERE owner_id = $1 RETURNING storage_key",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                self.credentials_removed()?;
                Ok(Some(keys))
            }

            async fn list_tokens(&self, user_id: i64) -> Result<Vec<$crate::meta::TokenInfo>, MetaError> {
                let rows = sqlx::query(
                    "SELECT id, user_id, label, created_at, last_used_at FROM tokens \
                     WHERE user_id = $1 ORDER BY id",
                )
                .bind(user_id)
                .fetch_all(self.reads())
                .await?;
                let token = |r: &<$db as sqlx::Database>::Row| -> Result<$crate::meta::TokenInfo, sqlx::Error> {
                    Ok($crate::meta::TokenInfo {
                        id: r.try_get("id")?,
                        user_id: r.try_get("user_id")?,
                        label: r.try_get("label")?,
                        created_at: r.try_get("created_at")?,
                        last_used_at: r.try_get("last_used_at")?,
                    })
                };
                Ok(rows.iter().map(token).collect::<Result<_, _>>()?)
            }

            async fn revoke_token(&self, id: i64) -> Result<bool, MetaError> {
                let done = sqlx::query("DELETE FROM tokens WHERE id = $1")
                    .bind(id)
                    .execute(self.writes())
                    .await?;
                if done.rows_affected() > 0 {
                    self.credentials_removed()?;
                }
                Ok(done.rows_affected() > 0)
            }

            async fn touch_token(&self, id: i64, now: i64) -> Result<(), MetaError> {
                sqlx::query("UPDATE tokens SET last_used_at = $2 WHERE id = $1")
                    .bind(id)
                    .bind(now)
                    .execute(self.writes())
                    .await?;
                if let Some(cache) = self.token_cache() {
                    cache.touched(id, now);
                }
                Ok(())
            }
        }
    };
}
