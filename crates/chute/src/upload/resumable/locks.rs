//! One writer per upload: the node's lock registry (in-process locks, taken across nodes
//! through `ClusterLocks` when the catalog is shared), asking a stale holder to let go, and
//! what is kept between an upload's requests: its running digests, and on one node its
//! record as its last append left it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::checksum::Algorithm;
use crate::meta::{ClusterLocks, UploadRecord};
use crate::upload::running_digests::RunningDigests;

/// How long a new request waits for a stale one on the same upload to end.
pub const PREEMPT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// In-flight state of resumable uploads on this node.
#[derive(Default)]
pub struct UploadRegistry {
    /// Locked uploads, each with the signal that asks its holder to let go.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    digests: Mutex<HashMap<String, Arc<RunningDigests>>>,
    /// One node only: each upload's record as this node's last append committed it, so that
    /// the next append, under the lock, need not read it again (`Engine::lock_owned_upload`).
    /// Dropped by every change made elsewhere on this node (`forget`, `drop_record`); a
    /// change from outside (another process on the same catalog) is caught by the append's
    /// compare-and-set of the offset and state. Partials of a tus concatenation are not
    /// kept (a final upload claims them without their lock).
    records: Mutex<HashMap<String, UploadRecord>>,
    /// The locks shared with other nodes of the catalog, when there can be any.
    cluster: Option<Arc<dyn ClusterLocks>>,
}

/// Held while a request writes or completes an upload; released on drop.
pub struct UploadLock {
    registry: Arc<UploadRegistry>,
    id: String,
    release: Arc<tokio::sync::Notify>,
    /// Set once the cluster lock has been asked for, so that drop always releases it (even
    /// when the asking request was cancelled while waiting for the answer).
    cluster: Option<Arc<dyn ClusterLocks>>,
}

impl Drop for UploadLock {
    fn drop(&mut self) {
        // The cluster unlock is queued before the local entry goes, so a later lock of the
        // same upload on this node is queued after it.
        if let Some(c) = &self.cluster {
            c.unlock(&self.id);
        }
        if let Ok(mut l) = self.registry.locks.lock() {
            l.remove(&self.id);
        }
    }
}

impl UploadLock {
    /// Resolves when a newer request asks for the upload (tusd's lock-release requests, the
    /// IETF draft's recommendation): the holder should end, keeping what is durable.
    pub async fn release_requested(&self) {
        self.release.notified().await;
    }
}

/// How long a lock held on another node is retried before it counts as held (an unlock is
/// on its way when the other node's request has just answered).
const UNLOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// How often a request waiting for an upload held on another node repeats its release request.
const ASK_AGAIN: std::time::Duration = std::time::Duration::from_millis(250);

impl UploadRegistry {
    /// A registry whose locks are also taken in `cluster`, and which ends its requests that
    /// other nodes ask to let go of (the task stops with the registry).
    pub fn with_cluster(cluster: Arc<dyn ClusterLocks>) -> Arc<Self> {
        let mut requests = cluster.release_requests();
        let registry = Arc::new(Self {
            cluster: Some(cluster),
            ..Self::default()
        });
        let weak = Arc::downgrade(&registry);
        tokio::spawn(async move {
            loop {
                let id = match requests.recv().await {
                    Ok(id) => id,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Some(registry) = weak.upgrade() else {
                    return;
                };
                registry.ask_holder(&id);
            }
        });
        registry
    }

    /// Whether the locks are shared with other nodes (else they are this process's alone).
    pub fn is_shared(&self) -> bool {
        self.cluster.is_some()
    }

    /// Asks every request of this node that holds an upload to let go, keeping what is
    /// durable (a draining node past its grace). Returns how many were asked.
    pub fn release_all(&self) -> usize {
        let holders: Vec<_> = match self.locks.lock() {
            Ok(l) => l.values().cloned().collect(),
            Err(_) => return 0,
        };
        for h in &holders {
            h.notify_one();
        }
        holders.len()
    }

    /// Asks the request of this node that holds `id`, if any, to let go.
    fn ask_holder(&self, id: &str) {
        let holder = self.locks.lock().ok().and_then(|l| l.get(id).cloned());
        if let Some(h) = holder {
            h.notify_one();
        }
    }

    /// Locks an upload for one request; None when another request (of this node or, with a
    /// shared catalog, of another) holds it.
    pub async fn try_lock(self: &Arc<Self>, id: &str) -> Option<UploadLock> {
        let mut lock = {
            let mut l = self.locks.lock().ok()?;
            if l.contains_key(id) {
                return None;
            }
            let release = Arc::new(tokio::sync::Notify::new());
            l.insert(id.to_string(), release.clone());
            UploadLock {
                registry: self.clone(),
                id: id.to_string(),
                release,
                cluster: None,
            }
        };
        if let Some(cluster) = &self.cluster {
            lock.cluster = Some(cluster.clone());
            // A request that just ended on another node answered its client before its
            // unlock reached PostgreSQL (unlocks are queued from `Drop`): a client that sends
            // its next request at once, through another node, is not told "busy" for that.
            let deadline = tokio::time::Instant::now() + UNLOCK_GRACE;
            loop {
                match cluster.try_lock(id).await {
                    Ok(true) => break,
                    Ok(false) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    Ok(false) => return None,
                    Err(e) => {
                        tracing::warn!(upload = %id, error = %e, "taking an upload's cluster lock");
                        return None;
                    }
                }
            }
        }
        Some(lock)
    }

    /// Locks an upload, asking a request that holds it (here or on another node) to end first,
    /// and waiting up to `wait` for it to do so. None when it did not let go in time.
    pub async fn lock_preempting(
        self: &Arc<Self>,
        id: &str,
        wait: std::time::Duration,
        metrics: &crate::metrics::Metrics,
    ) -> Option<UploadLock> {
        if let Some(l) = self.try_lock(id).await {
            return Some(l);
        }
        // Held: the holder is asked to let go; the wait is counted, and whether it did.
        let start = tokio::time::Instant::now();
        let got = self.preempt(id, wait).await;
        metrics.lock_waited(start.elapsed());
        if got.is_some() {
            metrics.lock_preempted();
        }
        got
    }

    async fn preempt(self: &Arc<Self>, id: &str, wait: std::time::Duration) -> Option<UploadLock> {
        let start = tokio::time::Instant::now();
        let mut asked: Option<tokio::time::Instant> = None;
        loop {
            let local = self.locks.lock().ok().and_then(|l| l.get(id).cloned());
            match (local, &self.cluster) {
                (Some(h), _) => h.notify_one(),
                (None, Some(cluster)) if asked.is_none_or(|t| t.elapsed() >= ASK_AGAIN) => {
                    asked = Some(tokio::time::Instant::now());
                    if let Err(e) = cluster.ask_release(id).await {
                        tracing::warn!(upload = %id, error = %e, "asking nodes to release an upload");
                    }
                }
                _ => {}
            }
            if start.elapsed() >= wait {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            if let Some(l) = self.try_lock(id).await {
                return Some(l);
            }
        }
    }

    /// The upload's running digests, if they are of `algorithms` and cover `offset` bytes.
    pub(super) fn digests_at(
        &self,
        id: &str,
        offset: u64,
        algorithms: &[Algorithm],
    ) -> Option<Arc<RunningDigests>> {
        let d = self.digests.lock().ok()?.get(id).cloned()?;
        (d.fed() == Some(offset) && d.algorithms() == algorithms).then_some(d)
    }

    pub(super) fn put_digests(&self, id: &str, digests: Arc<RunningDigests>) {
        if let Ok(mut d) = self.digests.lock()
            && let Some(old) = d.insert(id.to_string(), digests)
        {
            old.cancel();
        }
    }

    /// Drops the upload's running digests (they are recomputed if needed again) and its
    /// kept record.
    pub fn forget(&self, id: &str) {
        self.drop_record(id);
        let old = self.digests.lock().ok().and_then(|mut d| d.remove(id));
        if let Some(old) = old {
            old.cancel();
        }
    }

    /// The upload's record as this node's last append committed it, if it is kept.
    pub(super) fn record(&self, id: &str) -> Option<UploadRecord> {
        self.records.lock().ok()?.get(id).cloned()
    }

    /// Keeps `up` as the upload's current record, on one node (a shared catalog has other
    /// writers; nothing is kept).
    pub(super) fn keep_record(&self, up: UploadRecord) {
        if !self.is_shared()
            && let Ok(mut r) = self.records.lock()
        {
            r.insert(up.id.clone(), up);
        }
    }

    /// Drops the upload's kept record: the next append reads it from the catalog.
    pub(super) fn drop_record(&self, id: &str) {
        if let Ok(mut r) = self.records.lock() {
            r.remove(id);
        }
    }
}

/// What [`Engine::lock_owned_upload`](crate::upload::Engine::lock_owned_upload) found.
pub enum Locked {
    Held(UploadLock, UploadRecord),
    Busy(UploadRecord),
    NotFound,
}
