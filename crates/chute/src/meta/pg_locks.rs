//! Upload locks across the nodes that share one PostgreSQL catalog.
//!
//! - **Mutual exclusion**: a session-level advisory lock per upload
//!   (`pg_try_advisory_lock(hashtextextended(id, ..))`), all of a node's taken on one connection
//!   of its own, the *keeper*. Locks are released by the keeper, or by PostgreSQL itself when
//!   the node dies and its connection closes, so a crashed node never leaves an upload locked.
//! - **Asking a node to let go** (tusd's lock-release requests, the IETF draft's advice for a
//!   client that reconnects while its old request still holds the upload): `NOTIFY
//!   chute_release, '<id>'`; every node LISTENs and hands the ids to its in-memory registry,
//!   which ends the request holding that upload (keeping its durable bytes).
//!
//! The keeper runs commands in the order they were sent, so an unlock sent when a lock is
//! dropped always runs before a later lock of the same upload by this node (advisory locks are
//! reentrant within one connection; the node's registry never asks for one it holds). If the
//! keeper's connection breaks, PostgreSQL has dropped its locks: the keeper notices at its next
//! command or heartbeat (every second while it holds locks), reconnects and takes them again;
//! one it cannot get back (another node took it meanwhile) is announced as a release request,
//! so the local request holding it ends.
//! - **Fence after a restart**: between the break and the retake nobody holds those locks in
//!   PostgreSQL. So a keeper whose connection was cut takes no *new* lock for `FENCE` (three
//!   heartbeats) after it is back, answering "busy" (the client retries, as for any busy
//!   upload): every node that held locks has taken its own back by then. What remains is a
//!   node whose keeper first connects inside that window (one started just then).

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{ClusterLocks, MetaError};

/// The notification channel of release requests.
const CHANNEL: &str = "chute_release";
/// Seed of the id hash, so chute's advisory keys stay apart from other users of the database.
const KEY_SEED: i64 = 0x63_68_75_74_65; // "chute"
/// How often the keeper checks its connection while it holds locks.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a keeper back from a cut connection takes no new lock (see the module docs).
const FENCE: std::time::Duration = std::time::Duration::from_secs(3);

enum Cmd {
    Lock(String, oneshot::Sender<Result<bool, MetaError>>),
    Unlock(String),
}

pub struct PgLocks {
    cmds: mpsc::UnboundedSender<Cmd>,
    pool: PgPool,
    released: broadcast::Sender<String>,
    _stop_listener: oneshot::Sender<()>,
}

impl PgLocks {
    /// Opens the keeper's connection and the listener, and starts their tasks.
    pub async fn start(pool: PgPool) -> Result<Arc<Self>, MetaError> {
        let opts = pool.connect_options();
        let conn = PgConnection::connect_with(&opts).await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        let (cmds, rx) = mpsc::unbounded_channel();
        let (released, _) = broadcast::channel(1024);
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(
            Keeper {
                conn: Some(conn),
                opts,
                held: HashSet::new(),
                released: released.clone(),
                fenced_until: None,
            }
            .run(rx),
        );
        tokio::spawn(listen(listener, released.clone(), stopped));
        Ok(Arc::new(Self {
            cmds,
            pool,
            released,
            _stop_listener: stop,
        }))
    }
}

#[async_trait]
impl ClusterLocks for PgLocks {
    async fn try_lock(&self, id: &str) -> Result<bool, MetaError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Lock(id.to_string(), tx))
            .map_err(|_| MetaError::Unavailable("the lock keeper has stopped".into()))?;
        rx.await
            .map_err(|_| MetaError::Unavailable("the lock keeper has stopped".into()))?
    }

    fn unlock(&self, id: &str) {
        let _ = self.cmds.send(Cmd::Unlock(id.to_string()));
    }

    async fn ask_release(&self, id: &str) -> Result<(), MetaError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn release_requests(&self) -> broadcast::Receiver<String> {
        self.released.subscribe()
    }
}

struct Keeper {
    conn: Option<PgConnection>,
    opts: Arc<PgConnectOptions>,
    /// Uploads this node holds (to take again after a reconnect).
    held: HashSet<String>,
    released: broadcast::Sender<String>,
    /// Set when the connection came back after a cut: no new locks until then.
    fenced_until: Option<tokio::time::Instant>,
}

impl Keeper {
    fn fenced(&self) -> bool {
        self.fenced_until
            .is_some_and(|t| tokio::time::Instant::now() < t)
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let cmd = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => cmd,
                    None => return,
                },
                _ = beat.tick() => {
                    if !self.held.is_empty() {
                        self.heartbeat().await;
                    }
                    continue;
                }
            };
            match cmd {
                Cmd::Lock(id, reply) => {
                    let res = self.lock(&id).await;
                    if matches!(res, Ok(true)) {
                        // Kept even if the asker has gone: its lock's drop sends the unlock.
                        self.held.insert(id);
                    }
                    let _ = reply.send(res);
                }
                Cmd::Unlock(id) => {
                    if self.held.remove(&id)
                        && let Err(e) = self
                            .query("SELECT pg_advisory_unlock(hashtextextended($1, $2))", &id)
                            .await
                    {
                        tracing::warn!(upload = %id, error = %e, "releasing an upload lock");
                    }
                }
            }
        }
    }

    /// Notices a lost connection (a restarted server) while locks are held, and takes them
    /// back, rather than at the next lock command.
    async fn heartbeat(&mut self) {
        let alive = match self.conn.as_mut() {
            Some(conn) => conn.ping().await.is_ok(),
            None => false,
        };
        if !alive {
            self.conn = None;
            if let Err(e) = self.reconnect().await {
                tracing::warn!(error = %e, "reconnecting the lock keeper");
            }
        }
    }

    async fn lock(&mut self, id: &str) -> Result<bool, MetaError> {
        if !self.fenced() {
            match self
                .query("SELECT pg_try_advisory_lock(hashtextextended($1, $2))", id)
                .await
            {
                // The connection was found cut and is back: the fence has just begun.
                Err(_) if self.fenced() => {}
                res => return res,
            }
        }
        Ok(false)
    }

    /// Runs a lock query on the keeper's connection, reconnecting (and retaking what it held)
    /// when the connection is gone.
    async fn query(&mut self, sql: &'static str, id: &str) -> Result<bool, MetaError> {
        if self.conn.is_none() {
            self.reconnect().await?;
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(MetaError::Unavailable("no lock connection".into()));
        };
        let res = sqlx::query_scalar::<_, bool>(sql)
            .bind(id)
            .bind(KEY_SEED)
            .fetch_one(&mut *conn)
            .await;
        if res.is_err() {
            // The lock queries fail only when the connection does (or the server ends it, as
            // a restart does): its locks are gone with it, so get them back at once.
            self.conn = None;
            if let Err(e) = self.reconnect().await {
                tracing::warn!(error = %e, "reconnecting the lock keeper");
            }
        }
        Ok(res?)
    }

    async fn reconnect(&mut self) -> Result<(), MetaError> {
        let mut conn = PgConnection::connect_with(&self.opts).await?;
        let mut lost = Vec::new();
        for id in &self.held {
            let again: Result<bool, _> =
                sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, $2))")
                    .bind(id)
                    .bind(KEY_SEED)
                    .fetch_one(&mut conn)
                    .await;
            if !matches!(again, Ok(true)) {
                lost.push(id.clone());
            }
        }
        for id in lost {
            tracing::warn!(upload = %id, "upload lock lost with the lock connection");
            self.held.remove(&id);
            let _ = self.released.send(id);
        }
        self.conn = Some(conn);
        self.fenced_until = Some(tokio::time::Instant::now() + FENCE);
        Ok(())
    }
}

/// Passes release requests from other nodes (and this one) to the node's registry.
async fn listen(
    mut listener: PgListener,
    released: broadcast::Sender<String>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            n = listener.recv() => match n {
                Ok(n) => {
                    let _ = released.send(n.payload().to_string());
                }
                Err(e) => {
                    // PgListener reconnects on the next recv; do not spin while it cannot.
                    tracing::warn!(error = %e, "listening for upload release requests");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            },
        }
    }
}
