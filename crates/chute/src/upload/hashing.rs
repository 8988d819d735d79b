//! Running digests that can leave the pipeline thread: a [`HashSet`] hashes inline, or, once
//! `offload` is called, on one helper thread per algorithm, fed the same reference-counted
//! chunks through small bounded queues. `finish` hands the running (unfinalised) hashers back,
//! so a resumable upload can keep them between requests.

use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use bytes::Bytes;

use super::UploadError;
use crate::checksum::Hasher;

/// Chunks queued per helper thread.
const QUEUE_DEPTH: usize = 8;

pub struct Worker {
    tx: SyncSender<Bytes>,
    join: JoinHandle<Hasher>,
}

pub enum HashSet {
    Inline(Vec<Hasher>),
    /// The first hasher may stay inline (`Some`), the others run on their threads.
    Threaded(Option<Box<Hasher>>, Vec<Worker>),
}

impl HashSet {
    pub fn new(hashers: Vec<Hasher>) -> Self {
        HashSet::Inline(hashers)
    }

    pub fn is_threaded(&self) -> bool {
        matches!(self, HashSet::Threaded(..))
    }

    /// Moves each hasher to a thread of its own; with `keep_first`, the first stays on the
    /// calling thread (for callers whose own thread has nothing else to do).
    pub fn offload(&mut self, keep_first: bool) -> Result<(), UploadError> {
        let HashSet::Inline(hashers) = self else {
            return Ok(());
        };
        let mut all = std::mem::take(hashers).into_iter();
        let first = if keep_first {
            all.next().map(Box::new)
        } else {
            None
        };
        let mut workers = Vec::new();
        for mut h in all {
            let (tx, rx) = sync_channel::<Bytes>(QUEUE_DEPTH);
            let join = std::thread::Builder::new()
                .name(format!("chute-{}", h.algorithm().name()))
                .spawn(move || {
                    while let Ok(chunk) = rx.recv() {
                        h.update(&chunk);
                    }
                    h
                })
                .map_err(UploadError::Io)?;
            workers.push(Worker { tx, join });
        }
        *self = HashSet::Threaded(first, workers);
        Ok(())
    }

    pub fn update(&mut self, chunk: &Bytes) -> Result<(), UploadError> {
        match self {
            HashSet::Inline(hashers) => hashers.iter_mut().for_each(|h| h.update(chunk)),
            HashSet::Threaded(first, workers) => {
                if let Some(h) = first {
                    h.update(chunk);
                }
                for w in workers {
                    w.tx.send(chunk.clone()).map_err(|_| {
                        UploadError::Internal("a hashing thread ended early".into())
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Waits for the helper threads and returns the running hashers, in the original order.
    pub fn finish(self) -> Result<Vec<Hasher>, UploadError> {
        match self {
            HashSet::Inline(h) => Ok(h),
            HashSet::Threaded(first, workers) => {
                let mut out: Vec<Hasher> = first.map(|h| *h).into_iter().collect();
                for w in workers {
                    drop(w.tx);
                    out.push(
                        w.join.join().map_err(|_| {
                            UploadError::Internal("a hashing thread panicked".into())
                        })?,
                    );
                }
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{Algorithm, digest_hex};

    #[test]
    fn threaded_and_inline_hashing_agree_and_can_continue() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 239) as u8).collect();
        let (a, b) = data.split_at(1_234_567);
        let mut set = HashSet::new(vec![
            Hasher::new(Algorithm::Md5),
            Hasher::new(Algorithm::Sha256),
        ]);
        set.update(&Bytes::copy_from_slice(a)).expect("update");
        set.offload(true).expect("offload");
        assert!(set.is_threaded());
        for c in b.chunks(65536) {
            set.update(&Bytes::copy_from_slice(c)).expect("update");
        }
        let hashers = set.finish().expect("finish");
        // The running state is handed back: it can be continued later, then finalised.
        let mut more = HashSet::new(hashers);
        more.offload(false).expect("offload");
        more.update(&Bytes::from_static(b"tail")).expect("update");
        let out: Vec<String> = more
            .finish()
            .expect("finish")
            .into_iter()
            .map(|h| h.finish_hex())
            .collect();
        let mut all = data.clone();
        all.extend_from_slice(b"tail");
        assert_eq!(
            out,
            vec![
                digest_hex(Algorithm::Md5, &all),
                digest_hex(Algorithm::Sha256, &all)
            ]
        );
    }
}
