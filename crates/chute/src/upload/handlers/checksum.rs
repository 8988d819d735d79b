//! Computes the configured digests while the bytes pass; records them as file facts.
//!
//! Small files are hashed inline. Once a file passes `OFFLOAD_AFTER` bytes its hashers move to
//! a thread of their own, fed the same (reference-counted) chunks through a small bounded
//! channel, so hashing overlaps with parsing and writing instead of adding to them: hashing
//! is the most expensive step of an upload (SHA-256 runs at 180-320 MiB/s on a CPU without SHA
//! extensions).

use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use bytes::Bytes;

use crate::upload::UploadError;
use crate::upload::checksum::{Algorithm, Hasher};
use crate::upload::handler::{
    FileFacts, FileInfo, HandlerError, NewFile, UploadHandler, UploadedFile,
};

/// Files up to this size are hashed inline; larger ones on a helper thread.
const OFFLOAD_AFTER: u64 = 1 << 20;
/// Chunks queued for the helper thread (each shared with the write path, not copied).
const QUEUE_DEPTH: usize = 8;

type Digests = Vec<(Algorithm, String)>;

enum State {
    Inline(Vec<Hasher>),
    Offloaded {
        tx: SyncSender<Bytes>,
        join: JoinHandle<Digests>,
    },
    Idle,
}

pub struct ChecksumHandler {
    algorithms: Vec<Algorithm>,
    state: State,
    seen: u64,
}

impl ChecksumHandler {
    pub fn new(algorithms: Vec<Algorithm>) -> Self {
        Self {
            algorithms,
            state: State::Idle,
            seen: 0,
        }
    }

    fn offload(&mut self) -> Result<(), HandlerError> {
        let State::Inline(mut hashers) = std::mem::replace(&mut self.state, State::Idle) else {
            return Ok(());
        };
        let (tx, rx) = sync_channel::<Bytes>(QUEUE_DEPTH);
        let join = std::thread::Builder::new()
            .name("chute-hash".into())
            .spawn(move || {
                while let Ok(chunk) = rx.recv() {
                    for h in &mut hashers {
                        h.update(&chunk);
                    }
                }
                hashers
                    .into_iter()
                    .map(|h| (h.algorithm(), h.finish_hex()))
                    .collect()
            })
            .map_err(UploadError::Io)?;
        self.state = State::Offloaded { tx, join };
        Ok(())
    }
}

impl UploadHandler for ChecksumHandler {
    fn name(&self) -> &'static str {
        "checksum"
    }

    fn new_file(&mut self, _file: &FileInfo) -> Result<NewFile, HandlerError> {
        self.state = State::Inline(self.algorithms.iter().map(|a| Hasher::new(*a)).collect());
        self.seen = 0;
        Ok(NewFile::Continue)
    }

    fn receive_chunk(&mut self, chunk: Bytes, _start: u64) -> Result<Option<Bytes>, HandlerError> {
        self.seen += chunk.len() as u64;
        if self.seen > OFFLOAD_AFTER && matches!(self.state, State::Inline(_)) {
            self.offload()?;
        }
        match &mut self.state {
            State::Inline(hashers) => hashers.iter_mut().for_each(|h| h.update(&chunk)),
            State::Offloaded { tx, .. } => tx
                .send(chunk.clone())
                .map_err(|_| UploadError::Internal("the hashing thread ended early".into()))?,
            State::Idle => {}
        }
        Ok(Some(chunk))
    }

    fn file_complete(
        &mut self,
        _size: u64,
        facts: &mut FileFacts,
    ) -> Result<Option<UploadedFile>, HandlerError> {
        let digests: Digests = match std::mem::replace(&mut self.state, State::Idle) {
            State::Inline(hashers) => hashers
                .into_iter()
                .map(|h| (h.algorithm(), h.finish_hex()))
                .collect(),
            State::Offloaded { tx, join } => {
                drop(tx);
                join.join()
                    .map_err(|_| UploadError::Internal("the hashing thread panicked".into()))?
            }
            State::Idle => Vec::new(),
        };
        facts.checksums.extend(digests);
        Ok(None)
    }

    fn upload_interrupted(&mut self) {
        // Dropping the sender ends the helper thread; it is not waited for.
        self.state = State::Idle;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::checksum::digest_hex;
    use crate::upload::handlers::spill::tests::run_file;

    #[test]
    fn digests_match_one_shot_hashes_whatever_the_chunking() {
        let data: Vec<u8> = (0..2_300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for chunk in [7usize, 4096, 65536, 1 << 20] {
            // 2.3 MB: past OFFLOAD_AFTER, so both the inline and the threaded paths run.
            let mut h = ChecksumHandler::new(Algorithm::ALL.to_vec());
            let facts = run_file(&mut h, &data, chunk);
            for a in Algorithm::ALL {
                assert_eq!(
                    facts.checksums[&a],
                    digest_hex(a, &data),
                    "{a:?} at {chunk}"
                );
            }
        }
    }
}
