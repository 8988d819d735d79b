//! Appending a request's bytes at an upload's offset: the append chain (the protocol's
//! handlers, the running digests, the staging writer) on the pipeline, and the job a
//! protocol feeds and then commits (the offset advances only to what is durable) or discards.

use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::checksum::{Algorithm, Hasher};
use crate::meta::{Quota, UploadRecord, UploadState};
use crate::storage::{StagedWrite, Storage};
use crate::upload::handler::{
    Chain, FileFacts, FileInfo, HandlerError, NewFile, UploadHandler, UploadedFile,
};
use crate::upload::hashing::HashSet;
use crate::upload::pipeline::{Msg, Pipeline};
use crate::upload::running_digests::{Feeding, RunningDigests};
use crate::upload::{Engine, UploadError};

/// Chunk size of the append chain: larger than the multipart default, since these chunks
/// only go to digests and the writer, and fewer hand-offs cost less.
const APPEND_CHUNK: usize = 256 * 1024;

/// A body up to this size is held and written in one blocking run at its end (see
/// [`Pipeline::start_held`]); a larger one streams through the pipeline (from its first
/// byte when its length is declared: [`AppendJob::expect_body`]).
const APPEND_HOLD: usize = 1 << 20;

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
    /// The upload as the append started on it.
    upload: UploadRecord,
    offset: u64,
    digests: Arc<RunningDigests>,
    quota: Option<Quota>,
}

/// An append that has ended; the adapter decides whether to keep it.
pub struct EndedAppend {
    job_engine: Engine,
    upload: UploadRecord,
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
    /// The body's declared length, when there is one: a body larger than `APPEND_HOLD`
    /// streams from its first byte instead of being held first.
    pub fn expect_body(&mut self, len: Option<u64>) {
        if len.is_some_and(|l| l > APPEND_HOLD as u64) {
            self.pipeline.start_now();
        }
    }

    /// Sends one chunk of the request body; false when the pipeline has ended (see `end`).
    pub async fn send(&mut self, chunk: Bytes) -> bool {
        self.pipeline.send(Msg::Data(chunk)).await
    }

    /// Ends the request's bytes. `complete` is true when the body ended normally; false when
    /// it broke off (the bytes that arrived are synced all the same).
    pub async fn end(mut self, complete: bool) -> Result<EndedAppend, UploadError> {
        let error = if complete {
            let _ = self.pipeline.send(Msg::EndFile).await;
            match self.pipeline.finish().await {
                Ok(_) => None,
                Err(e) => Some(
                    self.engine
                        .lost_stage_at(&self.upload.id, self.offset, e)
                        .await,
                ),
            }
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
            upload: self.upload,
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
            .advance_upload(&self.upload.id, self.offset, durable, self.quota)
            .await;
        let advanced = match advanced {
            Ok(a) => a,
            Err(e) => {
                // Not kept (over the quota, or the catalog failed): the digests saw bytes that
                // the offset does not cover.
                engine.uploads.forget(&self.upload.id);
                return Err(e.into());
            }
        };
        if !advanced {
            engine.uploads.forget(&self.upload.id);
            // Moved or removed by another writer (another process on this catalog, when the
            // record was kept from this node's last append).
            return Err(match engine.meta.get_upload(&self.upload.id).await? {
                Some(u) => UploadError::OffsetMismatch { current: u.offset },
                None => UploadError::NotFound,
            });
        }
        // The next append of this upload, on this node, starts from this record. Not for a
        // partial of a tus concatenation: a final upload can claim it while it is appended
        // to (concatenation-unfinished), and the partial's completion must then see that.
        let mut up = self.upload;
        up.offset = durable;
        let id = up.id.clone();
        if up.metadata.concat.is_none() {
            engine.uploads.keep_record(up);
        }
        if self.digests.fed() != Some(durable) {
            // The digests saw other bytes than were kept (a failed write): recompute them.
            engine.uploads.forget(&id);
        }
        Ok(durable)
    }

    /// Drops the bytes: the offset stays; the staged bytes past it are cut on the next resume.
    pub fn discard(self) {
        if self.digests.rollback().is_err() {
            self.job_engine.uploads.forget(&self.upload.id);
        }
    }
}

/// Reads the first `len` staged bytes of `key` through `set` (and into `sink`, if given);
/// fails when fewer bytes are staged than recorded.
pub(super) fn pump_staged(
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
        if up.state != UploadState::Active {
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
        let quota = match (self.quota_for(up), up.length) {
            (Some(q), None) => {
                let used = self.meta.usage_bytes(up.owner_id).await?;
                chain_handlers.push(Box::new(crate::upload::handlers::quota::QuotaHandler::new(
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
        let mut pipeline = Pipeline::start_held(chain, APPEND_HOLD);
        // Held: the staging object is opened with the first batch, or at the end. A failure
        // to open it (staged bytes lost) comes out of `end`.
        pipeline.send(Msg::NewFile(info)).await;
        Ok(AppendJob {
            engine: self.clone(),
            pipeline,
            slot,
            upload: up.clone(),
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
}
