//! Resumable uploads: bytes appended at an offset, across requests and restarts, for the
//! django-chunked-upload and tus adapters.
//!
//! Write-ahead rule: each request's bytes run through a handler chain (the protocol's own
//! handlers, then the running digests, then the staging writer) on the pipeline thread; they
//! are synced, and only then does the recorded offset advance, by compare-and-set, to the
//! length actually persisted, even when the body broke off midway. After a crash, bytes past
//! the recorded offset were never acknowledged and are dropped by `Storage::resume`.
//!
//! Running digests: kept in memory between requests, keyed by upload and offset, so completion
//! never re-reads the file, and hashed behind the requests ([`RunningDigests`]), so a client
//! does not wait for the hashing of its request's tail. When they are missing (after a restart,
//! or on another node) they are recomputed once from the staged bytes, the only case that reads
//! data back. (RustCrypto's hashers could be serialised into the database instead, but the
//! assembly backends chosen for speed cannot; one re-read after a restart is the cheaper trade.)

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::handler::{
    Chain, FileFacts, FileInfo, HandlerError, NewFile, UploadHandler, UploadedFile,
};
use super::hashing::HashSet;
use super::pipeline::{Msg, Pipeline};
use super::running_digests::{Feeding, RunningDigests};
use super::{Engine, UploadError, new_file_id};
use crate::checksum::{Algorithm, Hasher};
use crate::meta::{ClusterLocks, FileRecord, Quota, UploadLimits, UploadRecord, now_unix};
use crate::storage::storage_key_for;
use crate::storage::{StagedWrite, Storage};

/// How long a new request waits for a stale one on the same upload to end.
pub const PREEMPT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Chunk size of the append chain: larger than the multipart default, since these chunks
/// only go to digests and the writer, and fewer hand-offs cost less.
const APPEND_CHUNK: usize = 256 * 1024;

/// In-flight state of resumable uploads on this node.
#[derive(Default)]
pub struct UploadRegistry {
    /// Locked uploads, each with the signal that asks its holder to let go.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    digests: Mutex<HashMap<String, Arc<RunningDigests>>>,
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
    ) -> Option<UploadLock> {
        let start = tokio::time::Instant::now();
        let mut asked: Option<tokio::time::Instant> = None;
        loop {
            if let Some(l) = self.try_lock(id).await {
                return Some(l);
            }
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
        }
    }

    /// The upload's running digests, if they are of `algorithms` and cover `offset` bytes.
    fn digests_at(
        &self,
        id: &str,
        offset: u64,
        algorithms: &[Algorithm],
    ) -> Option<Arc<RunningDigests>> {
        let d = self.digests.lock().ok()?.get(id).cloned()?;
        (d.fed() == Some(offset) && d.algorithms() == algorithms).then_some(d)
    }

    fn put_digests(&self, id: &str, digests: Arc<RunningDigests>) {
        if let Ok(mut d) = self.digests.lock()
            && let Some(old) = d.insert(id.to_string(), digests)
        {
            old.cancel();
        }
    }

    /// Drops the upload's running digests (they are recomputed if needed again).
    pub fn forget(&self, id: &str) {
        let old = self.digests.lock().ok().and_then(|mut d| d.remove(id));
        if let Some(old) = old {
            old.cancel();
        }
    }
}

/// What [`Engine::lock_owned_upload`] found.
pub enum Locked {
    Held(UploadLock, UploadRecord),
    Busy(UploadRecord),
    NotFound,
}

pub struct NewUpload<'a> {
    /// The partial uploads of a final upload (tus concatenation), claimed with its creation.
    pub parts: &'a [String],
    pub owner_id: i64,
    pub protocol: &'a str,
    pub name: &'a str,
    pub content_type: Option<&'a str>,
    pub length: Option<u64>,
    pub expires_at: Option<i64>,
    pub metadata: &'a str,
}

/// What the append handler leaves behind for the engine.
#[derive(Default)]
struct AppendSlot {
    durable: Option<u64>,
    error: Option<UploadError>,
}

type Slot = Arc<Mutex<AppendSlot>>;

fn with_slot(slot: &Slot, f: impl FnOnce(&mut AppendSlot)) {
    if let Ok(mut s) = slot.lock() {
        f(&mut s);
    }
}

/// Continues the upload's running digests over the request's bytes (hashed behind it).
struct ResumeHashHandler {
    digests: Arc<RunningDigests>,
    _feeding: Feeding,
}

impl UploadHandler for ResumeHashHandler {
    fn name(&self) -> &'static str {
        "resume-hash"
    }

    fn receive_chunk(&mut self, chunk: Bytes, _start: u64) -> Result<Option<Bytes>, HandlerError> {
        self.digests.feed(chunk.clone())?;
        Ok(Some(chunk))
    }
}

/// Appends to the staging object at the recorded offset, on the pipeline thread, starting the
/// disk's write-back every `WRITEBACK_EVERY` bytes without waiting for it: the write-back then
/// overlaps with receiving instead of all happening at the end of the request, when the client
/// waits, and the request still costs one sync (a sync every 1 MiB did the overlapping too, but
/// each paid a journal commit). The handler syncs at the end, and also when the upload is
/// interrupted, so that what arrived is durable and can be kept. (A writer thread of its own paid off while the
/// pipeline thread also hashed; with the digests hashed behind the request, writing here is
/// faster: one thread and two hand-offs per chunk fewer.)
struct AppendHandler {
    storage: Arc<dyn Storage>,
    key: String,
    offset: u64,
    writer: Option<Box<dyn StagedWrite>>,
    /// Bytes written and not yet synced (the final sync is skipped when there are none).
    unsynced: u64,
    since_writeback: u64,
    len: u64,
    slot: Slot,
}

/// Bytes written between two write-back starts of the staging object.
const WRITEBACK_EVERY: u64 = 1 << 20;

impl AppendHandler {
    fn sync(&mut self) -> Result<(), UploadError> {
        if let Some(mut w) = self.writer.take() {
            if self.unsynced > 0 {
                w.sync()?;
            }
            let len = self.len;
            with_slot(&self.slot, |s| s.durable = Some(len));
        }
        Ok(())
    }
}

impl UploadHandler for AppendHandler {
    fn name(&self) -> &'static str {
        "append"
    }

    fn new_file(&mut self, _file: &FileInfo) -> Result<NewFile, HandlerError> {
        let w = self
            .storage
            .resume(&self.key, self.offset)
            .map_err(UploadError::from)?;
        self.writer = Some(w);
        self.len = self.offset;
        with_slot(&self.slot, |s| s.durable = Some(self.offset));
        Ok(NewFile::Continue)
    }

    fn receive_chunk(&mut self, chunk: Bytes, _start: u64) -> Result<Option<Bytes>, HandlerError> {
        if let Some(w) = self.writer.as_mut() {
            w.write(&chunk).map_err(UploadError::Io)?;
            self.len += chunk.len() as u64;
            self.unsynced += chunk.len() as u64;
            self.since_writeback += chunk.len() as u64;
            if self.since_writeback >= WRITEBACK_EVERY {
                w.start_writeback().map_err(UploadError::Io)?;
                self.since_writeback = 0;
            }
        }
        Ok(None)
    }

    fn file_complete(
        &mut self,
        _size: u64,
        _facts: &mut FileFacts,
    ) -> Result<Option<UploadedFile>, HandlerError> {
        self.sync()?;
        Ok(None)
    }

    fn upload_interrupted(&mut self) {
        if let Err(e) = self.sync() {
            with_slot(&self.slot, |s| s.error = Some(e));
        }
    }
}

/// One request's append to an upload, running on a pipeline thread.
pub struct AppendJob {
    engine: Engine,
    pipeline: Pipeline,
    slot: Slot,
    upload_id: String,
    offset: u64,
    digests: Arc<RunningDigests>,
    quota: Option<Quota>,
}

/// An append that has ended; the adapter decides whether to keep it.
pub struct EndedAppend {
    job_engine: Engine,
    upload_id: String,
    offset: u64,
    digests: Arc<RunningDigests>,
    /// The owner's quota, checked when the bytes are kept (uploads of deferred length).
    quota: Option<Quota>,
    /// Bytes made durable by this request.
    pub written: u64,
    /// Why the chain refused the bytes, if it did.
    pub error: Option<UploadError>,
}

impl AppendJob {
    /// Sends one chunk of the request body; false when the pipeline has ended (see `end`).
    pub async fn send(&mut self, chunk: Bytes) -> bool {
        self.pipeline.send(Msg::Data(chunk)).await
    }

    /// Ends the request's bytes. `complete` is true when the body ended normally; false when
    /// it broke off (the bytes that arrived are synced all the same).
    pub async fn end(mut self, complete: bool) -> Result<EndedAppend, UploadError> {
        let error = if complete {
            let _ = self.pipeline.send(Msg::EndFile).await;
            self.pipeline.finish().await.err()
        } else {
            self.pipeline.abort().await;
            None
        };
        let slot = self
            .slot
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .map_err(|_| UploadError::Internal("append state poisoned".into()))?;
        if let Some(e) = slot.error {
            return Err(e);
        }
        let durable = slot.durable.unwrap_or(self.offset);
        Ok(EndedAppend {
            job_engine: self.engine,
            written: durable.saturating_sub(self.offset),
            upload_id: self.upload_id,
            offset: self.offset,
            digests: self.digests,
            quota: self.quota,
            error,
        })
    }
}

impl EndedAppend {
    /// Keeps the bytes: advances the recorded offset (compare-and-set) and the digests.
    pub async fn commit(self) -> Result<u64, UploadError> {
        let durable = self.offset + self.written;
        let engine = self.job_engine;
        let advanced = engine
            .meta
            .advance_upload(&self.upload_id, self.offset, durable, self.quota)
            .await;
        let advanced = match advanced {
            Ok(a) => a,
            Err(e) => {
                // Not kept (over the quota, or the catalog failed): the digests saw bytes that
                // the offset does not cover.
                engine.uploads.forget(&self.upload_id);
                return Err(e.into());
            }
        };
        if !advanced {
            engine.uploads.forget(&self.upload_id);
            let current = engine
                .meta
                .get_upload(&self.upload_id)
                .await?
                .map(|u| u.offset)
                .unwrap_or(0);
            return Err(UploadError::OffsetMismatch { current });
        }
        if self.digests.fed() != Some(durable) {
            // The digests saw other bytes than were kept (a failed write): recompute them.
            engine.uploads.forget(&self.upload_id);
        }
        Ok(durable)
    }

    /// Drops the bytes: the offset stays; the staged bytes past it are cut on the next resume.
    pub fn discard(self) {
        if self.digests.rollback().is_err() {
            self.job_engine.uploads.forget(&self.upload_id);
        }
    }
}

/// Reads the first `len` staged bytes of `key` through `set` (and into `sink`, if given);
/// fails when fewer bytes are staged than recorded.
fn pump_staged(
    storage: &dyn Storage,
    key: &str,
    len: u64,
    set: &mut HashSet,
    mut sink: Option<&mut dyn StagedWrite>,
) -> Result<(), UploadError> {
    let mut r = storage.read_staged(key)?.take(len);
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
        set.update(&Bytes::copy_from_slice(&buf[..n]))?;
        if let Some(w) = sink.as_mut() {
            w.write(&buf[..n])?;
        }
    }
    if got != len {
        return Err(crate::storage::StorageError::ShortStage {
            key: key.to_string(),
            expected: len,
            actual: got,
        }
        .into());
    }
    Ok(())
}

impl Engine {
    pub async fn create_upload(&self, n: NewUpload<'_>) -> Result<UploadRecord, UploadError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let record = UploadRecord {
            staging_key: format!("uploads/{id}"),
            id,
            owner_id: n.owner_id,
            protocol: n.protocol.to_string(),
            name: n.name.to_string(),
            content_type: n.content_type.map(str::to_string),
            offset: 0,
            length: n.length,
            state: "active".into(),
            expires_at: n.expires_at,
            metadata: n.metadata.to_string(),
            hash_state: None,
            file_id: None,
            created_at: now_unix(),
            final_id: None,
        };
        let storage = self.storage.clone();
        let key = record.staging_key.clone();
        tokio::task::spawn_blocking(move || storage.begin(&key).map(drop))
            .await
            .map_err(|e| UploadError::Internal(e.to_string()))??;
        if let Err(e) = self
            .meta
            .create_upload(&record, n.parts, self.upload_limits())
            .await
        {
            self.abort_staged(record.staging_key.clone()).await;
            return Err(e.into());
        }
        Ok(record)
    }

    /// The limits every new upload is created within.
    fn upload_limits(&self) -> UploadLimits {
        UploadLimits {
            quota: self.settings.user_quota.map(|q| q.bytes()),
            max_open: Some(self.settings.max_open_uploads_per_user),
        }
    }

    /// The owner's quota, when there is one, for the catalog to check with a change.
    pub fn quota_of(&self, owner_id: i64) -> Option<Quota> {
        self.settings.user_quota.map(|q| Quota {
            owner_id,
            bytes: q.bytes(),
        })
    }

    /// Sets a deferred length, once, within the owner's quota: false when it was set already.
    pub async fn declare_length(
        &self,
        up: &UploadRecord,
        length: u64,
    ) -> Result<bool, UploadError> {
        Ok(self
            .meta
            .set_upload_length(&up.id, length, self.quota_of(up.owner_id))
            .await?)
    }

    /// Removes a staged object (best effort, logged), off the reactor.
    async fn abort_staged(&self, key: String) {
        let storage = self.storage.clone();
        let res = tokio::task::spawn_blocking(move || storage.abort(&key)).await;
        if let Ok(Err(e)) = res {
            tracing::warn!(error = %e, "could not remove a staged object");
        }
    }

    /// The owner's upload of `protocol` by id; None for a malformed id, an unknown upload, or
    /// another user's or protocol's (all of which the adapters answer with 404).
    pub async fn owned_upload(
        &self,
        owner_id: i64,
        protocol: &str,
        id: &str,
    ) -> Result<Option<UploadRecord>, UploadError> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        Ok(self
            .meta
            .get_upload(id)
            .await?
            .filter(|u| u.owner_id == owner_id && u.protocol == protocol))
    }

    /// Locks the owner's upload of `protocol` and reads its record under the lock (so the
    /// record is current). The owner is checked first: another user's request, a malformed id
    /// or an unknown upload is `NotFound` and never takes the lock, so it cannot hold up the
    /// owner's requests. An upload another request holds is `Busy` (with its record; the
    /// caller has not been let in). Costs two catalog reads (ownership, then the record under
    /// the lock).
    pub async fn lock_owned_upload(
        &self,
        owner_id: i64,
        protocol: &str,
        id: &str,
    ) -> Result<Locked, UploadError> {
        let Some(up) = self.owned_upload(owner_id, protocol, id).await? else {
            return Ok(Locked::NotFound);
        };
        let Some(lock) = self.uploads.try_lock(id).await else {
            return Ok(Locked::Busy(up));
        };
        Ok(match self.meta.get_upload(id).await? {
            Some(up) => Locked::Held(lock, up),
            None => Locked::NotFound,
        })
    }

    /// The running digests of `up` at its recorded offset: from memory, else recomputed from
    /// the staged bytes.
    async fn running_digests(
        &self,
        up: &UploadRecord,
        algorithms: &[Algorithm],
    ) -> Result<Arc<RunningDigests>, UploadError> {
        if let Some(d) = self.uploads.digests_at(&up.id, up.offset, algorithms) {
            return Ok(d);
        }
        let fresh = || {
            algorithms
                .iter()
                .map(|a| Hasher::new(*a))
                .collect::<Vec<_>>()
        };
        let hashers = if up.offset == 0 || algorithms.is_empty() {
            // Nothing staged to read back: no trip to a blocking thread.
            fresh()
        } else {
            let storage = self.storage.clone();
            let key = up.staging_key.clone();
            let offset = up.offset;
            let hashers = fresh();
            let read = tokio::task::spawn_blocking(move || -> Result<Vec<Hasher>, UploadError> {
                let mut set = HashSet::new(hashers);
                pump_staged(storage.as_ref(), &key, offset, &mut set, None)?;
                set.finish()
            })
            .await
            .map_err(|e| UploadError::Internal(e.to_string()))?;
            match read {
                Ok(h) => h,
                Err(e) => return Err(self.lost_stage(up, e).await),
            }
        };
        let digests = RunningDigests::new(hashers, up.offset);
        self.uploads.put_digests(&up.id, digests.clone());
        Ok(digests)
    }

    /// Starts appending to `up` at its recorded offset (`offset` must equal it). `handlers`
    /// run first (quota, progress, ...), then the running digests, then the staging writer.
    pub async fn start_append(
        &self,
        up: &UploadRecord,
        offset: u64,
        algorithms: &[Algorithm],
        handlers: Vec<Box<dyn UploadHandler>>,
        info: FileInfo,
    ) -> Result<AppendJob, UploadError> {
        if up.state != "active" {
            return Err(UploadError::AlreadyComplete);
        }
        if up.offset != offset {
            return Err(UploadError::OffsetMismatch { current: up.offset });
        }
        let digests = self.running_digests(up, algorithms).await?;
        let feeding = digests.begin()?;
        let slot: Slot = Arc::default();
        let mut chain_handlers = handlers;
        // An upload of declared length reserved it against the quota when it was created; one
        // whose length is deferred is held to the quota as it grows: here as its bytes stream
        // (the usage counts what it holds already), and atomically when they are kept.
        let quota = match (self.quota_of(up.owner_id), up.length) {
            (Some(q), None) => {
                let used = self.meta.usage_bytes(up.owner_id).await?;
                chain_handlers.push(Box::new(super::handlers::quota::QuotaHandler::new(
                    q.bytes, used,
                )));
                Some(q)
            }
            _ => None,
        };
        chain_handlers.push(Box::new(ResumeHashHandler {
            digests: digests.clone(),
            _feeding: feeding,
        }));
        chain_handlers.push(Box::new(AppendHandler {
            storage: self.storage.clone(),
            key: up.staging_key.clone(),
            offset,
            writer: None,
            unsynced: 0,
            since_writeback: 0,
            len: 0,
            slot: slot.clone(),
        }));
        let chain = Chain::new(chain_handlers, APPEND_CHUNK);
        let mut pipeline = Pipeline::start(chain, None)?;
        if !pipeline.send(Msg::NewFile(info)).await {
            let e = pipeline
                .finish()
                .await
                .err()
                .unwrap_or_else(|| UploadError::Internal("append pipeline ended".into()));
            return Err(self.lost_stage(up, e).await);
        }
        Ok(AppendJob {
            engine: self.clone(),
            pipeline,
            slot,
            upload_id: up.id.clone(),
            offset,
            digests,
            quota,
        })
    }

    /// The finished digests of a fully received upload, without consuming them.
    pub async fn upload_digests(
        &self,
        up: &UploadRecord,
        algorithms: &[Algorithm],
    ) -> Result<Vec<(Algorithm, String)>, UploadError> {
        let digests = self.running_digests(up, algorithms).await?;
        let (covered, hashers) = match digests.snapshot_if_idle()? {
            Some(done) => done,
            None => tokio::task::spawn_blocking(move || digests.snapshot())
                .await
                .map_err(|e| UploadError::Internal(e.to_string()))??,
        };
        if covered != up.offset {
            self.uploads.forget(&up.id);
            return Err(UploadError::Internal(format!(
                "the digests cover {covered} bytes, the upload holds {}",
                up.offset
            )));
        }
        Ok(hashers
            .into_iter()
            .map(|h| (h.algorithm(), h.finish_hex()))
            .collect())
    }

    /// Turns a fully received upload into a catalog entry, with the given digests.
    ///
    /// Crash-safe in three steps: the file's id is recorded on the upload first, then its
    /// bytes are placed under that id's key (the staged object stays), then the catalog entry
    /// and the upload's completion are one transaction, and only then does the staged object
    /// go. A crash anywhere leaves an active upload whose staged bytes are whole: completing
    /// it again places them under the same key, so nothing is lost and nothing is stranded.
    pub async fn complete_upload(
        &self,
        up: &UploadRecord,
        digests: &[(Algorithm, String)],
    ) -> Result<FileRecord, UploadError> {
        if up.state != "active" {
            return Err(UploadError::AlreadyComplete);
        }
        if let Some(len) = up.length
            && up.offset != len
        {
            return Err(UploadError::OffsetMismatch { current: up.offset });
        }
        let file_id = match &up.file_id {
            Some(id) => id.clone(),
            None => {
                let id = new_file_id();
                if !self.meta.set_upload_file(&up.id, &id).await? {
                    return Err(UploadError::AlreadyComplete);
                }
                id
            }
        };
        let key = storage_key_for(&file_id);
        let storage = self.storage.clone();
        let (k, staged) = (key.clone(), up.staging_key.clone());
        let scanner = self.scanner_address();
        let (timeout, len) = (self.settings.clamav_timeout.0, up.offset);
        let done = tokio::task::spawn_blocking(move || -> Result<Option<String>, UploadError> {
            let mut head = Vec::with_capacity(8192);
            storage
                .read_staged(&staged)?
                .take(8192)
                .read_to_end(&mut head)?;
            if let Some(addr) = scanner {
                // The bytes came over several requests: scan them once, whole, from staging.
                super::handlers::clamav::scan_reader(
                    &addr,
                    timeout,
                    storage.read_staged(&staged)?.take(len),
                )?;
            }
            storage.put(&k, crate::storage::Source::Staged(&staged))?;
            Ok(super::handlers::sniff::detect(&head))
        })
        .await
        .map_err(|e| UploadError::Internal(e.to_string()))?;
        let detected = match done {
            Ok(d) => d,
            Err(e @ UploadError::Invalid { .. }) => {
                // Malware (or unscannable): the upload is refused for good, its bytes go.
                self.discard_upload(up).await?;
                return Err(e);
            }
            Err(e) => return Err(self.lost_stage(up, e).await),
        };
        let mut record = FileRecord {
            id: file_id,
            owner_id: up.owner_id,
            name: up.name.clone(),
            size: up.offset,
            stored_size: up.offset,
            content_type: up.content_type.clone(),
            detected_type: detected,
            encoding: None,
            storage_key: key.clone(),
            md5: None,
            sha1: None,
            sha256: None,
            blake3: None,
            created_at: now_unix(),
        };
        record.set_checksums(digests.iter().map(|(a, h)| (*a, h)));
        if let Err(e) = self
            .meta
            .complete_upload(&up.id, &record, self.quota_of(up.owner_id))
            .await
        {
            // The upload stays active with its staged bytes (over the quota, it completes once
            // there is room); the placed copy goes.
            self.delete_object(key).await;
            return Err(e.into());
        }
        self.abort_staged(up.staging_key.clone()).await;
        self.uploads.forget(&up.id);
        Ok(record)
    }

    /// What a failure to read an upload's staged bytes means. When they are gone or shorter
    /// than recorded (a backend that lost them, or a deployment that fsyncs nothing and lost
    /// power), waiting cannot bring them back: the upload starts again at offset 0, which the
    /// client is told (a 409 with the offset), instead of a 500 on every try.
    pub(crate) async fn lost_stage(&self, up: &UploadRecord, e: UploadError) -> UploadError {
        let lost = matches!(
            &e,
            UploadError::Storage(
                crate::storage::StorageError::NotFound(_)
                    | crate::storage::StorageError::ShortStage { .. }
            )
        );
        if !lost || up.offset == 0 {
            return e;
        }
        tracing::error!(upload = %up.id, error = %e, "staged bytes lost; the upload starts over");
        self.uploads.forget(&up.id);
        match self.meta.advance_upload(&up.id, up.offset, 0, None).await {
            Ok(true) => UploadError::OffsetMismatch { current: 0 },
            Ok(false) => e,
            Err(m) => m.into(),
        }
    }

    /// Fills `dest` (new, empty) with the staged bytes of `parts` in order, hashing them on
    /// the way. Returns the length and digests of the whole; the caller completes `dest` with
    /// them (its offset is not recorded before: while open, a final upload holds nothing for
    /// the quota, its partials do). The copy runs on a blocking thread through the storage's
    /// own reads and writes, so it works for every backend.
    pub async fn concatenate(
        &self,
        dest: &UploadRecord,
        parts: &[UploadRecord],
        algorithms: &[Algorithm],
    ) -> Result<(u64, Vec<(Algorithm, String)>), UploadError> {
        let storage = self.storage.clone();
        let dest_key = dest.staging_key.clone();
        let sources: Vec<(String, u64)> = parts
            .iter()
            .map(|p| (p.staging_key.clone(), p.offset))
            .collect();
        let algs = algorithms.to_vec();
        let (total, hashers) =
            tokio::task::spawn_blocking(move || -> Result<(u64, Vec<Hasher>), UploadError> {
                let mut set = HashSet::new(algs.iter().map(|a| Hasher::new(*a)).collect());
                let mut w = storage.begin(&dest_key)?;
                for (key, len) in sources {
                    pump_staged(storage.as_ref(), &key, len, &mut set, Some(w.as_mut()))?;
                }
                Ok((w.sync()?, set.finish()?))
            })
            .await
            .map_err(|e| UploadError::Internal(e.to_string()))??;
        let digests = hashers
            .into_iter()
            .map(|h| (h.algorithm(), h.finish_hex()))
            .collect();
        Ok((total, digests))
    }

    /// Deletes an upload: its staged bytes, then its record and running digests.
    pub async fn discard_upload(&self, up: &UploadRecord) -> Result<(), UploadError> {
        let storage = self.storage.clone();
        let key = up.staging_key.clone();
        // An active upload with a file id crashed while completing: a copy of its bytes may
        // have been placed under that id's key already.
        let placed = match (&up.file_id, up.state.as_str()) {
            (Some(fid), "active") => Some(storage_key_for(fid)),
            _ => None,
        };
        tokio::task::spawn_blocking(move || {
            if let Some(k) = placed {
                storage.delete(&k)?;
            }
            storage.abort(&key)
        })
        .await
        .map_err(|e| UploadError::Internal(e.to_string()))??;
        self.meta.delete_upload(&up.id).await?;
        self.uploads.forget(&up.id);
        Ok(())
    }

    /// Where clamd listens, when scanning is on.
    pub fn scanner_address(&self) -> Option<super::handlers::clamav::ClamdAddress> {
        self.settings
            .clamav_enabled
            .then(|| super::handlers::clamav::ClamdAddress::parse(&self.settings.clamav_address))
    }

    /// Deletes uploads whose expiry has passed (their staged bytes and records), skipping any
    /// a request is writing. Returns the ones deleted (or, with `dry_run`, that would be).
    ///
    /// It works in batches of `SWEEP_BATCH` until none is left (or a batch frees nothing: all
    /// of it being written), so one sweep keeps up with any rate of creation.
    pub async fn sweep_expired(&self, dry_run: bool) -> Result<Vec<UploadRecord>, UploadError> {
        const SWEEP_BATCH: u32 = 1000;
        let now = now_unix();
        if dry_run {
            return Ok(self.meta.expired_uploads(now, SWEEP_BATCH).await?);
        }
        let mut done = Vec::new();
        loop {
            let expired = self.meta.expired_uploads(now, SWEEP_BATCH).await?;
            let full = expired.len() == SWEEP_BATCH as usize;
            let before = done.len();
            for up in expired {
                let Some(_lock) = self.uploads.try_lock(&up.id).await else {
                    continue;
                };
                self.discard_upload(&up).await?;
                done.push(up);
            }
            if !full || done.len() == before {
                return Ok(done);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::digest_hex;
    use crate::config::Settings;
    use crate::meta::MetaStore;
    use crate::meta::sqlite::SqliteMeta;
    use crate::storage::local::LocalStorage;
    use futures::StreamExt;

    const ALGS: [Algorithm; 2] = [Algorithm::Md5, Algorithm::Sha256];

    async fn engine(dir: &std::path::Path) -> Engine {
        let storage: Arc<dyn Storage> =
            Arc::new(LocalStorage::open(dir.join("files"), 0o644, 0o755).expect("storage"));
        let meta: Arc<dyn MetaStore> =
            Arc::new(SqliteMeta::open(&dir.join("chute.db")).await.expect("meta"));
        Engine::new(storage, meta, Arc::new(Settings::defaults()))
    }

    fn info() -> FileInfo {
        FileInfo {
            file_name: "data.bin".into(),
            ..Default::default()
        }
    }

    async fn new_upload(e: &Engine, owner_id: i64, len: usize) -> UploadRecord {
        e.create_upload(NewUpload {
            parts: &[],
            owner_id,
            protocol: "test",
            name: "data.bin",
            content_type: None,
            length: Some(len as u64),
            expires_at: None,
            metadata: "{}",
        })
        .await
        .expect("create")
    }

    async fn append(e: &Engine, id: &str, offset: u64, data: &[u8], complete: bool) -> EndedAppend {
        let up = e.meta.get_upload(id).await.expect("get").expect("exists");
        let mut job = e
            .start_append(&up, offset, &ALGS, Vec::new(), info())
            .await
            .expect("start");
        for c in data.chunks(1000) {
            assert!(job.send(Bytes::copy_from_slice(c)).await);
        }
        job.end(complete).await.expect("end")
    }

    #[tokio::test]
    async fn append_in_pieces_resume_after_crash_and_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..500_000u32).map(|i| (i % 253) as u8).collect();
        let e = engine(dir.path()).await;
        let user = e.meta.create_user("u", false).await.expect("user");
        let up = new_upload(&e, user.id, data.len()).await;

        let a = append(&e, &up.id, 0, &data[..200_000], true).await;
        assert_eq!(a.written, 200_000);
        assert_eq!(a.commit().await.expect("commit"), 200_000);

        // A body that breaks off midway keeps what arrived (the adapter commits it).
        let a = append(&e, &up.id, 200_000, &data[200_000..250_000], false).await;
        assert!(a.written > 0 && a.written <= 50_000, "{}", a.written);
        let at = a.commit().await.expect("commit");

        // A refused request keeps nothing.
        let a = append(&e, &up.id, at, b"refused bytes", true).await;
        a.discard();
        assert_eq!(
            e.meta
                .get_upload(&up.id)
                .await
                .expect("get")
                .expect("up")
                .offset,
            at
        );

        // A stale offset is refused and reports the current one.
        let fresh = e.meta.get_upload(&up.id).await.expect("get").expect("up");
        match e.start_append(&fresh, 1, &ALGS, Vec::new(), info()).await {
            Err(UploadError::OffsetMismatch { current }) => assert_eq!(current, at),
            Err(other) => panic!("expected a mismatch, got {other:?}"),
            Ok(_) => panic!("expected a mismatch"),
        }

        // Simulated crash: bytes reach the staging file but the process dies before the
        // offset is recorded. A new engine (no digests in memory) resumes from the record and
        // recomputes the digests from the staged bytes.
        {
            let mut w = e.storage.resume(&up.staging_key, at).expect("resume");
            w.write(b"GARBAGE NEVER ACKNOWLEDGED").expect("write");
        }
        drop(e);
        let e = engine(dir.path()).await;
        let a = append(&e, &up.id, at, &data[at as usize..], true).await;
        assert_eq!(a.commit().await.expect("commit"), data.len() as u64);

        let up = e.meta.get_upload(&up.id).await.expect("get").expect("up");
        let digests = e.upload_digests(&up, &ALGS).await.expect("digests");
        assert_eq!(digests[0].1, digest_hex(Algorithm::Md5, &data));
        assert_eq!(digests[1].1, digest_hex(Algorithm::Sha256, &data));
        let file = e.complete_upload(&up, &digests).await.expect("complete");
        assert_eq!(file.size, data.len() as u64);
        assert_eq!(
            file.md5.as_deref(),
            Some(digest_hex(Algorithm::Md5, &data).as_str())
        );
        let mut stream = e
            .storage
            .open(&file.storage_key, 0, file.size)
            .await
            .expect("open");
        let mut stored = Vec::new();
        while let Some(c) = stream.next().await {
            stored.extend_from_slice(&c.expect("chunk"));
        }
        assert_eq!(
            digest_hex(Algorithm::Sha256, &stored),
            digest_hex(Algorithm::Sha256, &data)
        );
        let up = e.meta.get_upload(&up.id).await.expect("get").expect("up");
        assert!(matches!(
            e.complete_upload(&up, &digests).await,
            Err(UploadError::AlreadyComplete)
        ));
        assert_eq!(
            e.meta
                .list_files(user.id, None, 10)
                .await
                .expect("list")
                .len(),
            1
        );
    }

    /// One sweep clears every expired upload, past one batch; expired uploads hold no place
    /// among the owner's open ones.
    #[tokio::test]
    async fn one_sweep_keeps_up_and_expired_uploads_hold_no_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path()).await;
        let user = e.meta.create_user("u", false).await.expect("user");
        let n = 1_050; // more than a sweep's batch, and than max_open_uploads_per_user
        for _ in 0..n {
            e.create_upload(NewUpload {
                parts: &[],
                owner_id: user.id,
                protocol: "test",
                name: "x",
                content_type: None,
                length: Some(1),
                expires_at: Some(now_unix() - 5),
                metadata: "{}",
            })
            .await
            .expect("an expired upload holds no place");
        }
        let gone = e.sweep_expired(false).await.expect("sweep");
        assert_eq!(gone.len(), n);
        assert!(
            e.meta
                .expired_uploads(now_unix(), 10)
                .await
                .expect("left")
                .is_empty()
        );
        let staged = std::fs::read_dir(dir.path().join("files/staging/uploads"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(staged, 0, "their staged objects are gone too");
    }

    /// Cluster locks that count the locks asked for.
    #[derive(Default)]
    struct CountingLocks {
        taken: std::sync::atomic::AtomicUsize,
        release: std::sync::OnceLock<tokio::sync::broadcast::Sender<String>>,
    }

    #[async_trait::async_trait]
    impl ClusterLocks for CountingLocks {
        async fn try_lock(&self, _id: &str) -> Result<bool, crate::meta::MetaError> {
            self.taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(true)
        }
        fn unlock(&self, _id: &str) {}
        async fn ask_release(&self, _id: &str) -> Result<(), crate::meta::MetaError> {
            Ok(())
        }
        fn release_requests(&self) -> tokio::sync::broadcast::Receiver<String> {
            self.release
                .get_or_init(|| tokio::sync::broadcast::channel(4).0)
                .subscribe()
        }
    }

    /// Another user's request for an upload never takes its lock (it could hold up the
    /// owner's requests, or, across nodes, cost a lock round trip each time).
    #[tokio::test]
    async fn the_lock_is_taken_after_the_owner_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = engine(dir.path()).await;
        let locks = Arc::new(CountingLocks::default());
        e.uploads = UploadRegistry::with_cluster(locks.clone());
        let owner = e.meta.create_user("owner", false).await.expect("user");
        let other = e.meta.create_user("other", false).await.expect("user");
        let up = new_upload(&e, owner.id, 10).await;
        let seen = || locks.taken.load(std::sync::atomic::Ordering::SeqCst);
        for (who, protocol) in [(other.id, "test"), (owner.id, "tus")] {
            assert!(matches!(
                e.lock_owned_upload(who, protocol, &up.id).await,
                Ok(Locked::NotFound)
            ));
        }
        assert_eq!(seen(), 0, "no lock for a request that is not the owner's");
        let held = e.lock_owned_upload(owner.id, "test", &up.id).await;
        assert!(matches!(held, Ok(Locked::Held(..))));
        assert_eq!(seen(), 1);
    }

    /// A crash while completing: the file's id was recorded and its bytes placed, but the
    /// catalog entry not made. Completing again (a new process) finishes under the same id:
    /// the bytes are right and no second copy is left anywhere.
    #[tokio::test]
    async fn a_completion_cut_short_by_a_crash_completes_again_under_the_same_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let e = engine(dir.path()).await;
        let user = e.meta.create_user("u", false).await.expect("user");
        let up = new_upload(&e, user.id, data.len()).await;
        let a = append(&e, &up.id, 0, &data, true).await;
        a.commit().await.expect("commit");
        // The first two steps of `complete_upload`, then the process dies.
        let fid = new_file_id();
        assert!(e.meta.set_upload_file(&up.id, &fid).await.expect("intent"));
        e.storage
            .put(
                &storage_key_for(&fid),
                crate::storage::Source::Staged(&up.staging_key),
            )
            .expect("place");
        drop(e);
        let e = engine(dir.path()).await;
        let up = e.meta.get_upload(&up.id).await.expect("get").expect("up");
        assert_eq!(
            (up.state.as_str(), up.file_id.as_deref()),
            ("active", Some(fid.as_str()))
        );
        let digests = e.upload_digests(&up, &ALGS).await.expect("digests");
        let file = e.complete_upload(&up, &digests).await.expect("complete");
        assert_eq!(file.id, fid, "the recorded id is used");
        assert_eq!(
            file.sha256.as_deref(),
            Some(digest_hex(Algorithm::Sha256, &data).as_str())
        );
        assert_eq!(
            file.md5.as_deref(),
            Some(digest_hex(Algorithm::Md5, &data).as_str())
        );
        let objects = dir.path().join("files/objects");
        let count = std::fs::read_dir(&objects)
            .expect("objects")
            .flatten()
            .map(|d| std::fs::read_dir(d.path()).map(|r| r.count()).unwrap_or(0))
            .sum::<usize>();
        assert_eq!(count, 1, "one object, no stranded copy");
        assert!(
            e.storage.read_staged(&up.staging_key).is_err(),
            "the staged bytes are gone once recorded"
        );
        let staged: Vec<_> = std::fs::read_dir(dir.path().join("files/staging/uploads"))
            .expect("staging")
            .flatten()
            .map(|d| d.path())
            .collect();
        assert!(staged.is_empty(), "nothing left in staging: {staged:?}");
    }

    /// Staged bytes that are gone (a backend that lost them) cannot come back: the upload
    /// starts over at offset 0 and says so, instead of failing the same way on every try.
    #[tokio::test]
    async fn an_upload_whose_staged_bytes_are_lost_starts_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = vec![7u8; 50_000];
        let e = engine(dir.path()).await;
        let user = e.meta.create_user("u", false).await.expect("user");
        let up = new_upload(&e, user.id, data.len()).await;
        append(&e, &up.id, 0, &data, true)
            .await
            .commit()
            .await
            .expect("commit");
        e.storage.abort(&up.staging_key).expect("lose the bytes");
        drop(e);
        let e = engine(dir.path()).await;
        let up = e.meta.get_upload(&up.id).await.expect("get").expect("up");
        match e.upload_digests(&up, &ALGS).await {
            Err(UploadError::OffsetMismatch { current: 0 }) => {}
            other => panic!("expected a restart at 0, got {:?}", other.map(|_| ())),
        }
        let up = e.meta.get_upload(&up.id).await.expect("get").expect("up");
        assert_eq!(up.offset, 0);
        let a = append(&e, &up.id, 0, &data, true).await;
        assert_eq!(a.commit().await.expect("commit"), data.len() as u64);
    }

    /// More uploads feeding digests at once than there are cores: they hash in step on their
    /// own threads instead of behind the requests, and every digest still comes out right,
    /// including after a refused request in the middle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_appends_keep_their_digests_right() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path()).await;
        let user = e.meta.create_user("u", false).await.expect("user");
        let mut tasks = Vec::new();
        for n in 0..12u32 {
            let e = e.clone();
            let owner_id = user.id;
            tasks.push(tokio::spawn(async move {
                let data: Vec<u8> = (0..1_500_000u32)
                    .map(|i| (i * (n + 3) % 251) as u8)
                    .collect();
                let up = new_upload(&e, owner_id, data.len()).await;
                let mut at = 0usize;
                for (i, piece) in data.chunks(400_000).enumerate() {
                    if i == 1 {
                        // A request that is refused after its bytes were hashed.
                        append(&e, &up.id, at as u64, &piece[..300_000], true)
                            .await
                            .discard();
                    }
                    let ended = append(&e, &up.id, at as u64, piece, true).await;
                    at = ended.commit().await.expect("commit") as usize;
                    tokio::task::yield_now().await;
                }
                let up = e.meta.get_upload(&up.id).await.expect("get").expect("up");
                let digests = e.upload_digests(&up, &ALGS).await.expect("digests");
                assert_eq!(
                    digests[0].1,
                    digest_hex(Algorithm::Md5, &data),
                    "upload {n}"
                );
                assert_eq!(
                    digests[1].1,
                    digest_hex(Algorithm::Sha256, &data),
                    "upload {n}"
                );
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    }

    #[tokio::test]
    async fn one_writer_at_a_time_and_expired_uploads_are_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path()).await;
        let user = e.meta.create_user("u", false).await.expect("user");
        let new = |expires_at| NewUpload {
            parts: &[],
            owner_id: user.id,
            protocol: "test",
            name: "x",
            content_type: None,
            length: Some(10),
            expires_at,
            metadata: "{}",
        };
        let old = e
            .create_upload(new(Some(now_unix() - 10)))
            .await
            .expect("old");
        let live = e
            .create_upload(new(Some(now_unix() + 3600)))
            .await
            .expect("live");
        let lock = e.uploads.try_lock(&live.id).await.expect("lock");
        assert!(
            e.uploads.try_lock(&live.id).await.is_none(),
            "a second writer is refused"
        );
        drop(lock);
        assert!(e.uploads.try_lock(&live.id).await.is_some());

        let would = e.sweep_expired(true).await.expect("dry run");
        assert_eq!(
            would.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
            vec![old.id.as_str()]
        );
        assert!(
            e.meta.get_upload(&old.id).await.expect("get").is_some(),
            "dry run deletes nothing"
        );
        let gone = e.sweep_expired(false).await.expect("sweep");
        assert_eq!(gone.len(), 1);
        assert!(e.meta.get_upload(&old.id).await.expect("get").is_none());
        assert!(
            e.storage.read_staged(&old.staging_key).is_err(),
            "staged bytes removed"
        );
        assert!(e.meta.get_upload(&live.id).await.expect("get").is_some());
    }
}
