//! The SQLite catalog's cache of token lookups: every API request looks its token up, and on
//! SQLite each lookup is a round trip to sqlx's connection thread, about a sixth of a small
//! PATCH's server time (measured: issue 18, bench/README).
//!
//! Revocation stays immediate, across processes too. `chute token revoke` and `chute user
//! remove` run in a process of their own on the same database file, so a change must reach
//! the server's cache without the database being asked. Beside the database lies a marker
//! file (`chute.db.revoked`), replaced (a new file renamed over it) after every commit that
//! removes a token or a user, by whichever process made it. Each lookup first reads the
//! marker's identity (one `stat`, no thread hop): when it differs from the one the cache was
//! filled under, the cache is emptied before it is used. A lookup that fills the cache keeps
//! its answer only if the marker did not change while it asked the database.
//!
//! What no chute process makes (a token deleted with the `sqlite3` shell) is seen within
//! `MAX_AGE`. Unknown tokens are not cached: each is a database lookup, as before. PostgreSQL
//! has no such cache (another node can revoke).

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{TokenInfo, User};

/// The longest a cached lookup is used.
const MAX_AGE: Duration = Duration::from_secs(60);
/// The most tokens kept; the cache is emptied when it is full.
const MAX_ENTRIES: usize = 4096;

/// The marker file's identity: inode and modification time (a replacement is a new inode).
type Stamp = (u64, i64, i64);

pub(super) struct TokenCache {
    marker: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The marker the entries were filled under.
    stamp: Option<Stamp>,
    entries: HashMap<String, (User, TokenInfo, Instant)>,
}

/// What a lookup found in the cache.
pub(super) enum Cached {
    Hit(User, TokenInfo),
    /// Not cached: ask the database, then `put` the answer with this stamp. None: the marker
    /// cannot be read, and nothing is cached.
    Miss(Option<Stamp>),
}

impl TokenCache {
    /// The cache for the database at `db`, creating its marker when missing.
    pub(super) fn open(db: &Path) -> io::Result<Self> {
        let mut name = db.as_os_str().to_owned();
        name.push(".revoked");
        let cache = Self {
            marker: PathBuf::from(name),
            inner: Mutex::default(),
        };
        if !cache.marker.exists() {
            cache.replace_marker()?;
        }
        Ok(cache)
    }

    fn stamp(&self) -> Option<Stamp> {
        let m = std::fs::metadata(&self.marker).ok()?;
        Some((m.ino(), m.mtime(), m.mtime_nsec()))
    }

    pub(super) fn get(&self, token_hash: &str) -> Cached {
        let stamp = self.stamp();
        let Ok(mut inner) = self.inner.lock() else {
            return Cached::Miss(None);
        };
        if inner.stamp != stamp || stamp.is_none() {
            inner.entries.clear();
            inner.stamp = stamp;
            return Cached::Miss(stamp);
        }
        match inner.entries.get(token_hash) {
            Some((user, token, at)) if at.elapsed() < MAX_AGE => {
                Cached::Hit(user.clone(), token.clone())
            }
            _ => Cached::Miss(stamp),
        }
    }

    /// Keeps a lookup's answer, unless a token or user was removed since `stamp` was read.
    pub(super) fn put(
        &self,
        token_hash: &str,
        user: &User,
        token: &TokenInfo,
        stamp: Option<Stamp>,
    ) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if stamp.is_none() || inner.stamp != stamp || self.stamp() != stamp {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.clear();
        }
        inner.entries.insert(
            token_hash.to_string(),
            (user.clone(), token.clone(), Instant::now()),
        );
    }

    /// A token's use was recorded at `now`: the cached copy says so too (else each request
    /// would record it again).
    pub(super) fn touched(&self, token_id: i64, now: i64) {
        if let Ok(mut inner) = self.inner.lock() {
            for (_, t, _) in inner.entries.values_mut() {
                if t.id == token_id {
                    t.last_used_at = Some(now);
                }
            }
        }
    }

    /// A token or user was removed (committed): every process's cache is emptied before its
    /// next lookup.
    pub(super) fn removed(&self) -> io::Result<()> {
        if let Ok(mut inner) = self.inner.lock() {
            inner.entries.clear();
            inner.stamp = None;
        }
        self.replace_marker()
    }

    /// Writes a new marker beside the old one and renames it over it: a new inode, which no
    /// reader can mistake for the old marker.
    fn replace_marker(&self) -> io::Result<()> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tmp = self.marker.as_os_str().to_owned();
        tmp.push(format!(".{}.{n}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, b"replaced after a token or user is removed\n")?;
        std::fs::rename(&tmp, &self.marker)
    }
}

#[cfg(test)]
mod tests {
    use crate::meta::UserStore;
    use crate::meta::sqlite::SqliteMeta;

    /// Two catalogs on one file: the server, and a `chute token revoke` beside it.
    async fn two_processes() -> (tempfile::TempDir, SqliteMeta, SqliteMeta) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chute.db");
        let server = SqliteMeta::open(&path).await.expect("server");
        let cli = SqliteMeta::open(&path).await.expect("cli");
        (dir, server, cli)
    }

    #[tokio::test]
    async fn lookups_are_answered_from_memory_until_a_removal_anywhere() {
        let (dir, server, cli) = two_processes().await;
        let ann = server.create_user("ann", false).await.expect("user");
        server.add_token(ann.id, "h1", "one").await.expect("token");
        server.add_token(ann.id, "h2", "two").await.expect("token");
        let (user, t1) = server
            .user_by_token_hash("h1")
            .await
            .expect("ok")
            .expect("found");
        assert_eq!(user, ann);
        assert!(server.user_by_token_hash("h2").await.expect("ok").is_some());

        // Deleted behind every chute process's back (the sqlite3 shell): still answered,
        // which shows the answer comes from memory.
        let raw = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("chute.db")),
        )
        .await
        .expect("raw");
        sqlx::query("DELETE FROM tokens WHERE token_hash = 'h2'")
            .execute(&raw)
            .await
            .expect("delete");
        assert!(server.user_by_token_hash("h2").await.expect("ok").is_some());

        // Another process revokes a token: refused at the next lookup, and every cached
        // answer is asked again (h2 is found gone).
        assert!(cli.revoke_token(t1.id).await.expect("revoke"));
        assert!(server.user_by_token_hash("h1").await.expect("ok").is_none());
        assert!(server.user_by_token_hash("h2").await.expect("ok").is_none());

        // A user removed by another process: their tokens are refused at once.
        let bob = server.create_user("bob", false).await.expect("user");
        server.add_token(bob.id, "h3", "b").await.expect("token");
        assert!(server.user_by_token_hash("h3").await.expect("ok").is_some());
        assert!(cli.delete_user(bob.id).await.expect("remove").is_some());
        assert!(server.user_by_token_hash("h3").await.expect("ok").is_none());

        // And a revocation in the process itself.
        server.add_token(ann.id, "h4", "four").await.expect("token");
        let (_, t4) = server
            .user_by_token_hash("h4")
            .await
            .expect("ok")
            .expect("found");
        assert!(server.revoke_token(t4.id).await.expect("revoke"));
        assert!(server.user_by_token_hash("h4").await.expect("ok").is_none());
    }

    #[tokio::test]
    async fn a_recorded_use_shows_in_the_cached_answer() {
        let (_dir, server, _cli) = two_processes().await;
        let ann = server.create_user("ann", false).await.expect("user");
        server.add_token(ann.id, "h1", "one").await.expect("token");
        let (_, t) = server
            .user_by_token_hash("h1")
            .await
            .expect("ok")
            .expect("found");
        assert_eq!(t.last_used_at, None);
        server.touch_token(t.id, 1234).await.expect("touch");
        let (_, t) = server
            .user_by_token_hash("h1")
            .await
            .expect("ok")
            .expect("found");
        assert_eq!(t.last_used_at, Some(1234));
    }
}
