//! The running digests of one resumable upload, hashed *behind* its requests.
//!
//! A request's bytes must be durable before it is answered; its digests need not be: they are
//! only read at completion (and can be recomputed from the staged bytes after a restart). So a
//! request hands its chunks to the upload's [`RunningDigests`] and returns as soon as the
//! writer has synced, while a drain thread hashes what is queued. The hashing of one request's
//! tail then overlaps the next request's round trip, instead of the client waiting for it:
//! with 1 MiB chunks the MD5 of a chunk takes about as long as everything else a request does.
//!
//! Memory stays bounded: at most `QUEUE_LIMIT` bytes wait per upload, and once `TOTAL_LIMIT`
//! bytes wait across all uploads, an upload with bytes of its own queued hashes in step. A
//! request that gets further ahead waits for its drain, so an upload is never faster than its
//! slowest digest. When more requests feed digests than there are cores, the CPU is the limit
//! and the overlap gains nothing: chunks are then hashed on the feeding thread, as they arrive,
//! rather than by a drain thread per upload (which cost 64 concurrent uploads 40-70 MiB more).
//!
//! A request that is refused after its bytes were queued (checksum mismatch, wrong size) is
//! undone: `begin` queues a checkpoint of the hashers, `rollback` queues a return to it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;

use super::UploadError;
use super::hashing::HashSet;
use crate::checksum::{Algorithm, Hasher};

/// Bytes that may wait to be hashed, per upload: about one client round trip's worth of
/// hashing, which is all the overlap there is to win.
const QUEUE_LIMIT: usize = 2 << 20;
/// Bytes that may wait to be hashed across all uploads.
const TOTAL_LIMIT: usize = 4 << 20;
static QUEUED_TOTAL: AtomicUsize = AtomicUsize::new(0);
/// Requests feeding digests right now, across all uploads.
static FEEDING: AtomicUsize = AtomicUsize::new(0);

/// True when more requests feed digests than there are cores.
fn crowded() -> bool {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    FEEDING.load(Ordering::Relaxed) > cores
}

fn queued_total_sub(n: usize) {
    let _ = QUEUED_TOTAL.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}
/// A drain that has hashed this much moves its second and later digests to threads of their
/// own (short drains are not worth the threads).
const OFFLOAD_AFTER: u64 = 256 * 1024;

enum Job {
    Data(Bytes),
    Checkpoint,
    Rollback,
}

struct State {
    /// The hashers, while no drain holds them.
    hashers: Option<Vec<Hasher>>,
    /// The hashers as they were at the last checkpoint.
    checkpoint: Option<Vec<Hasher>>,
    queue: VecDeque<Job>,
    queued_bytes: usize,
    draining: bool,
    /// Bytes the digests cover once the queue is drained.
    fed: u64,
    /// `fed` at the last `begin`, restored by `rollback`.
    begun_at: u64,
    /// Set when a drain failed; the digests are then unusable.
    failed: Option<String>,
    /// Set by `cancel`: queued work is dropped.
    cancelled: bool,
}

/// Takes the hashers for a drain (on this thread or another), marking the digests as draining.
fn claim(s: &mut State) -> Result<Vec<Hasher>, UploadError> {
    let hashers = s
        .hashers
        .take()
        .ok_or_else(|| UploadError::Internal("running digests missing".into()))?;
    s.draining = true;
    Ok(hashers)
}

/// A request feeding digests (see [`RunningDigests::begin`]).
pub struct Feeding(());

impl Drop for Feeding {
    fn drop(&mut self) {
        FEEDING.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct RunningDigests {
    algorithms: Vec<Algorithm>,
    state: Mutex<State>,
    /// Signalled whenever the drain makes progress or ends.
    progress: Condvar,
}

impl RunningDigests {
    /// Digests that already cover `offset` bytes.
    pub fn new(hashers: Vec<Hasher>, offset: u64) -> Arc<Self> {
        Arc::new(Self {
            algorithms: hashers.iter().map(|h| h.algorithm()).collect(),
            state: Mutex::new(State {
                hashers: Some(hashers),
                checkpoint: None,
                queue: VecDeque::new(),
                queued_bytes: 0,
                draining: false,
                fed: offset,
                begun_at: offset,
                failed: None,
                cancelled: false,
            }),
            progress: Condvar::new(),
        })
    }

    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, UploadError> {
        self.state
            .lock()
            .map_err(|_| UploadError::Internal("running digests poisoned".into()))
    }

    /// Bytes covered once everything queued is hashed; None when the digests failed.
    pub fn fed(&self) -> Option<u64> {
        self.lock()
            .ok()
            .filter(|s| s.failed.is_none() && !s.cancelled)
            .map(|s| s.fed)
    }

    /// Marks the start of a request, so that `rollback` can undo it. The request is counted
    /// as feeding until the returned guard is dropped.
    pub fn begin(&self) -> Result<Feeding, UploadError> {
        let mut s = self.lock()?;
        s.begun_at = s.fed;
        if !self.algorithms.is_empty() {
            s.queue.push_back(Job::Checkpoint);
        }
        FEEDING.fetch_add(1, Ordering::Relaxed);
        Ok(Feeding(()))
    }

    /// Undoes everything fed since `begin`.
    pub fn rollback(self: &Arc<Self>) -> Result<(), UploadError> {
        let mut s = self.lock()?;
        s.fed = s.begun_at;
        if self.algorithms.is_empty() {
            // Nothing is hashed (file_upload_checksums = ""): only the count goes back.
            return Ok(());
        }
        s.queue.push_back(Job::Rollback);
        self.ensure_drain(s)
    }

    /// Queues a chunk, first waiting (blocking) while the queue is full.
    pub fn feed(self: &Arc<Self>, chunk: Bytes) -> Result<(), UploadError> {
        let mut s = self.lock()?;
        while (s.queued_bytes >= QUEUE_LIMIT
            || (s.queued_bytes > 0 && QUEUED_TOTAL.load(Ordering::Relaxed) >= TOTAL_LIMIT))
            && s.failed.is_none()
            && !s.cancelled
        {
            s = self
                .progress
                .wait(s)
                .map_err(|_| UploadError::Internal("running digests poisoned".into()))?;
        }
        if let Some(e) = &s.failed {
            return Err(UploadError::Internal(format!("hashing failed: {e}")));
        }
        if s.cancelled {
            return Ok(());
        }
        s.fed += chunk.len() as u64;
        if self.algorithms.is_empty() {
            // Nothing to hash: counting the bytes is all, no queue, no drain thread.
            return Ok(());
        }
        s.queued_bytes += chunk.len();
        QUEUED_TOTAL.fetch_add(chunk.len(), Ordering::Relaxed);
        s.queue.push_back(Job::Data(chunk));
        if !s.draining && crowded() {
            // Hash here and now (the queue holds only this request's chunk and checkpoint).
            let hashers = claim(&mut s)?;
            drop(s);
            self.drain(hashers);
            return match &self.lock()?.failed {
                Some(e) => Err(UploadError::Internal(format!("hashing failed: {e}"))),
                None => Ok(()),
            };
        }
        self.ensure_drain(s)
    }

    /// The hashers and the bytes they cover when nothing waits to be hashed (no blocking);
    /// None while a drain runs or work is queued (then use [`RunningDigests::snapshot`]).
    pub fn snapshot_if_idle(&self) -> Result<Option<(u64, Vec<Hasher>)>, UploadError> {
        let s = self.lock()?;
        if let Some(e) = &s.failed {
            return Err(UploadError::Internal(format!("hashing failed: {e}")));
        }
        if s.cancelled {
            return Err(UploadError::Internal("running digests dropped".into()));
        }
        if s.draining || !s.queue.is_empty() {
            return Ok(None);
        }
        Ok(s.hashers.clone().map(|h| (s.fed, h)))
    }

    /// Waits (blocking) until everything queued is hashed, and returns a copy of the hashers
    /// with the number of bytes they cover.
    pub fn snapshot(self: &Arc<Self>) -> Result<(u64, Vec<Hasher>), UploadError> {
        let mut s = self.lock()?;
        loop {
            if let Some(e) = &s.failed {
                return Err(UploadError::Internal(format!("hashing failed: {e}")));
            }
            if s.cancelled {
                return Err(UploadError::Internal("running digests dropped".into()));
            }
            if !s.draining && !s.queue.is_empty() {
                // Only checkpoints are queued (a request without bytes): drain them too.
                self.ensure_drain(s)?;
                s = self.lock()?;
                continue;
            }
            if !s.draining {
                let h = s
                    .hashers
                    .clone()
                    .ok_or_else(|| UploadError::Internal("running digests missing".into()))?;
                return Ok((s.fed, h));
            }
            s = self
                .progress
                .wait(s)
                .map_err(|_| UploadError::Internal("running digests poisoned".into()))?;
        }
    }

    /// Drops queued work; a drain in progress stops at its next chunk.
    pub fn cancel(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.cancelled = true;
            s.queue.clear();
            queued_total_sub(s.queued_bytes);
            s.queued_bytes = 0;
        }
        self.progress.notify_all();
    }

    fn ensure_drain(self: &Arc<Self>, mut s: MutexGuard<'_, State>) -> Result<(), UploadError> {
        if s.draining || s.queue.is_empty() {
            return Ok(());
        }
        let hashers = claim(&mut s)?;
        drop(s);
        let me = self.clone();
        let work = move || me.drain(hashers);
        // The runtime's blocking pool reuses threads; outside a runtime, a thread of its own.
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(work)),
            Err(_) => drop(
                std::thread::Builder::new()
                    .name("chute-digests".into())
                    .spawn(work)
                    .map_err(UploadError::Io)?,
            ),
        }
        Ok(())
    }

    /// Hashes queued chunks until the queue is empty, then puts the hashers back.
    fn drain(&self, hashers: Vec<Hasher>) {
        let mut hashers = hashers;
        loop {
            let finished = self.drain_queue(hashers);
            let Ok(mut s) = self.state.lock() else { return };
            match finished {
                Ok(h) => s.hashers = Some(h),
                Err(e) => s.failed = Some(e.to_string()),
            }
            // Checked under the lock: a chunk queued after the last pop, whose feeder saw this
            // drain still running, is drained here.
            let more = !s.queue.is_empty() && s.failed.is_none() && !s.cancelled;
            match s.hashers.take() {
                Some(h) if more => hashers = h,
                h => {
                    s.hashers = h;
                    s.draining = false;
                    drop(s);
                    self.progress.notify_all();
                    return;
                }
            }
        }
    }

    fn drain_queue(&self, hashers: Vec<Hasher>) -> Result<Vec<Hasher>, UploadError> {
        let mut set = HashSet::new(hashers);
        let mut hashed = 0u64;
        loop {
            let job = match self.state.lock() {
                Ok(mut s) if !s.cancelled => s.queue.pop_front(),
                _ => None,
            };
            let Some(job) = job else { break };
            match job {
                Job::Data(chunk) => {
                    hashed += chunk.len() as u64;
                    if hashed > OFFLOAD_AFTER && !set.is_threaded() {
                        set.offload(true)?;
                    }
                    set.update(&chunk)?;
                    if let Ok(mut s) = self.state.lock()
                        && !s.cancelled
                    {
                        s.queued_bytes = s.queued_bytes.saturating_sub(chunk.len());
                        queued_total_sub(chunk.len());
                    }
                    self.progress.notify_all();
                }
                Job::Checkpoint => {
                    let h = std::mem::replace(&mut set, HashSet::new(Vec::new())).finish()?;
                    if let Ok(mut s) = self.state.lock() {
                        s.checkpoint = Some(h.clone());
                    }
                    set = HashSet::new(h);
                    hashed = 0;
                }
                Job::Rollback => {
                    // Waits for the helper threads, then starts over from the checkpoint.
                    std::mem::replace(&mut set, HashSet::new(Vec::new())).finish()?;
                    let back = self.lock()?.checkpoint.take().ok_or_else(|| {
                        UploadError::Internal("rollback without a checkpoint".into())
                    })?;
                    set = HashSet::new(back);
                    hashed = 0;
                }
            }
        }
        set.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::digest_hex;

    fn hashers() -> Vec<Hasher> {
        vec![Hasher::new(Algorithm::Md5), Hasher::new(Algorithm::Sha256)]
    }

    fn hex(h: Vec<Hasher>) -> Vec<String> {
        h.into_iter().map(Hasher::finish_hex).collect()
    }

    #[test]
    fn hashes_behind_the_feeder_and_rolls_back_a_refused_request() {
        let data: Vec<u8> = (0..6_000_000u32).map(|i| (i % 251) as u8).collect();
        let d = RunningDigests::new(hashers(), 0);
        d.begin().expect("begin");
        for c in data[..4_000_000].chunks(100_000) {
            d.feed(Bytes::copy_from_slice(c)).expect("feed");
        }
        // A refused request: its bytes are undone.
        d.begin().expect("begin");
        for c in [b"refused".as_slice(), b" bytes"] {
            d.feed(Bytes::copy_from_slice(c)).expect("feed");
        }
        d.rollback().expect("rollback");
        assert_eq!(d.fed(), Some(4_000_000));
        d.begin().expect("begin");
        for c in data[4_000_000..].chunks(70_000) {
            d.feed(Bytes::copy_from_slice(c)).expect("feed");
        }
        let (len, h) = d.snapshot().expect("snapshot");
        assert_eq!(len, data.len() as u64);
        assert_eq!(
            hex(h),
            vec![
                digest_hex(Algorithm::Md5, &data),
                digest_hex(Algorithm::Sha256, &data)
            ]
        );
        // The snapshot is a copy: the digests go on.
        d.begin().expect("begin");
        d.feed(Bytes::from_static(b"more")).expect("feed");
        let mut all = data.clone();
        all.extend_from_slice(b"more");
        let (_, h) = d.snapshot().expect("snapshot");
        assert_eq!(hex(h)[0], digest_hex(Algorithm::Md5, &all));
    }

    #[test]
    fn a_request_without_bytes_leaves_the_digests_as_they_were() {
        let d = RunningDigests::new(hashers(), 0);
        d.begin().expect("begin");
        let (len, h) = d.snapshot().expect("snapshot");
        assert_eq!(len, 0);
        assert_eq!(hex(h)[0], digest_hex(Algorithm::Md5, b""));
        d.begin().expect("begin");
        d.rollback().expect("rollback");
        assert_eq!(
            hex(d.snapshot().expect("snapshot").1)[0],
            digest_hex(Algorithm::Md5, b"")
        );
    }

    #[test]
    fn without_algorithms_only_the_count_moves_and_nothing_waits() {
        let d = RunningDigests::new(Vec::new(), 10);
        d.begin().expect("begin");
        d.feed(Bytes::from_static(b"abcd")).expect("feed");
        assert_eq!(d.fed(), Some(14));
        // Idle at once: no drain was started for bytes nobody hashes.
        let (len, h) = d.snapshot_if_idle().expect("snapshot").expect("idle");
        assert_eq!((len, h.len()), (14, 0));
        d.rollback().expect("rollback");
        assert_eq!(d.fed(), Some(10));
        assert_eq!(d.snapshot().expect("snapshot").0, 10);
    }

    #[test]
    fn busy_digests_are_not_snapshot_without_waiting() {
        let d = RunningDigests::new(hashers(), 0);
        d.begin().expect("begin");
        // The checkpoint is queued: only the blocking snapshot may be used now.
        assert!(d.snapshot_if_idle().expect("snapshot").is_none());
        d.feed(Bytes::from_static(b"abc")).expect("feed");
        let (len, h) = d.snapshot().expect("snapshot");
        assert_eq!(len, 3);
        assert_eq!(hex(h)[0], digest_hex(Algorithm::Md5, b"abc"));
        let (len, _) = d.snapshot_if_idle().expect("snapshot").expect("idle");
        assert_eq!(len, 3);
    }

    #[test]
    fn cancelled_digests_refuse_snapshots() {
        let d = RunningDigests::new(hashers(), 0);
        d.feed(Bytes::from_static(b"abc")).expect("feed");
        d.cancel();
        assert!(d.snapshot().is_err());
        assert_eq!(d.fed(), None);
    }
}
