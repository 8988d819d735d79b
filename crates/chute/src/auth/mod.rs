//! Who a request is: chute's own API tokens (here) and the application's signed tokens
//! ([`jwt`]).
//!
//! API tokens: 256 random bits, shown once, stored only as their SHA-256. A slow password hash is not needed: tokens are random and long, so a leaked hash cannot be
//! brute-forced, and a fast hash keeps per-request authentication cheap.

pub mod jwt;

use crate::checksum::{Algorithm, digest_hex};
use crate::meta::{MetaError, MetaStore, User};

const PREFIX: &str = "chute_";

/// A new random token (`chute_` + 64 hex digits).
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{PREFIX}{}", hex::encode(bytes)))
}

pub fn hash_token(token: &str) -> String {
    digest_hex(Algorithm::Sha256, token.as_bytes())
}

/// Creates a token for `user` and returns it; only its hash is stored.
pub async fn issue_token(
    meta: &dyn MetaStore,
    user: &User,
    label: &str,
) -> Result<String, MetaError> {
    let token = generate_token()
        .map_err(|e| MetaError::Db(sqlx::Error::Protocol(format!("no randomness: {e}"))))?;
    meta.add_token(user.id, &hash_token(&token), label).await?;
    Ok(token)
}

/// How stale a token's `last_used_at` may be before a request writes it again: a write per
/// token a minute, not one per request.
pub const LAST_USED_GRAIN: i64 = 60;

/// The user a token belongs to, if any. Notes when the token was used (at most once a
/// minute; a failure to note it is logged, not the request's).
pub async fn authenticate(meta: &dyn MetaStore, token: &str) -> Result<Option<User>, MetaError> {
    if !token.starts_with(PREFIX) || token.len() > 128 {
        return Ok(None);
    }
    let Some((user, t)) = meta.user_by_token_hash(&hash_token(token)).await? else {
        return Ok(None);
    };
    let now = crate::meta::now_unix();
    if t.last_used_at.is_none_or(|at| now - at >= LAST_USED_GRAIN)
        && let Err(e) = meta.touch_token(t.id, now).await
    {
        tracing::warn!(error = %e, token = t.id, "could not note the token's use");
    }
    Ok(Some(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_long() {
        let a = generate_token().expect("token");
        let b = generate_token().expect("token");
        assert_ne!(a, b);
        assert_eq!(a.len(), PREFIX.len() + 64);
        assert_ne!(hash_token(&a), a);
        assert_eq!(hash_token(&a).len(), 64);
    }
}
