//! The pipeline: one blocking thread per upload runs the handler chain, fed by the protocol
//! adapter through a small bounded channel.
//!
//! The adapter's task reads the socket and parses; the pipeline thread re-chunks to the
//! chain's chunk size, hashes, compresses and writes. The two overlap, so hashing never runs
//! on the thread that reads the socket, and the bounded channel keeps memory per upload at
//! `CHANNEL_DEPTH` chunks whatever the file size.

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::UploadError;
use super::handler::{
    Chain, CompletedFile, FileInfo, FileState, HandlerError, RawInput, RawOutcome,
};

/// Messages in flight between the socket task and the pipeline thread.
const CHANNEL_DEPTH: usize = 4;
/// Body pieces are handed over in batches of about this many bytes: one hand-off (and one
/// thread wake-up) per batch instead of per socket read, which profiling showed to cost a
/// quarter of the CPU of an upload.
const BATCH_BYTES: usize = 256 * 1024;

pub enum Msg {
    NewFile(FileInfo),
    Data(Bytes),
    /// Several consecutive `Data` pieces.
    Batch(Vec<Bytes>),
    EndFile,
    /// A raw body chunk, for a handler that took the raw input over.
    Raw(Bytes),
    /// The body ended normally.
    Finish,
}

/// What a finished pipeline produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub files: Vec<CompletedFile>,
    /// Set when a handler stopped the upload; the value is its `connection_reset`.
    pub stopped: Option<bool>,
    pub raw: Option<RawOutcome>,
}

pub struct Pipeline {
    tx: mpsc::Sender<Msg>,
    join: JoinHandle<Result<Outcome, UploadError>>,
    raw: bool,
    batch: Vec<Bytes>,
    batched: usize,
}

impl Pipeline {
    /// Starts the pipeline thread. The chain is first offered the raw input; `is_raw()` tells
    /// whether a handler took it (then send `Msg::Raw` chunks instead of parsed files).
    pub fn start(mut chain: Chain, raw_input: Option<&RawInput>) -> Result<Self, UploadError> {
        let raw = match raw_input {
            Some(r) => chain.handle_raw_input(r).map_err(handler_error)?,
            None => false,
        };
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let join = tokio::task::spawn_blocking(move || run(chain, rx));
        Ok(Self {
            tx,
            join,
            raw,
            batch: Vec::new(),
            batched: 0,
        })
    }

    pub fn is_raw(&self) -> bool {
        self.raw
    }

    /// Sends a message (data is batched); false when the pipeline has already ended
    /// (refused or stopped): call [`Pipeline::finish`] to learn why.
    pub async fn send(&mut self, msg: Msg) -> bool {
        if let Msg::Data(b) = msg {
            self.batched += b.len();
            self.batch.push(b);
            if self.batched < BATCH_BYTES {
                return !self.tx.is_closed();
            }
            return self.flush().await;
        }
        self.flush().await && self.tx.send(msg).await.is_ok()
    }

    async fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        self.batched = 0;
        let batch = std::mem::take(&mut self.batch);
        self.tx.send(Msg::Batch(batch)).await.is_ok()
    }

    /// Tells the pipeline the body ended and waits for its outcome.
    pub async fn finish(mut self) -> Result<Outcome, UploadError> {
        let _ = self.flush().await;
        let _ = self.tx.send(Msg::Finish).await;
        drop(self.tx);
        join(self.join).await
    }

    /// Ends the pipeline as interrupted (the client went away or the adapter refused the
    /// request) and waits until handlers have cleaned up. Data already sent still reaches
    /// the handlers (a resumable append keeps it).
    pub async fn abort(mut self) {
        let _ = self.flush().await;
        drop(self.tx);
        let _ = join(self.join).await;
    }
}

async fn join(h: JoinHandle<Result<Outcome, UploadError>>) -> Result<Outcome, UploadError> {
    match h.await {
        Ok(r) => r,
        Err(e) => Err(UploadError::Internal(format!(
            "upload pipeline failed: {e}"
        ))),
    }
}

fn handler_error(e: HandlerError) -> UploadError {
    match e {
        HandlerError::Failed(e) => e,
        HandlerError::SkipFile => UploadError::Internal("SkipFile outside a file".into()),
        HandlerError::StopUpload { .. } => UploadError::Stopped,
    }
}

fn run(mut chain: Chain, mut rx: mpsc::Receiver<Msg>) -> Result<Outcome, UploadError> {
    let mut out = Outcome::default();
    match drive(&mut chain, &mut rx, &mut out) {
        Ok(true) => Ok(out),
        Ok(false) => {
            chain.upload_interrupted();
            Err(UploadError::Interrupted)
        }
        Err(HandlerError::StopUpload { connection_reset }) => {
            // Django's StopUpload: files completed before are kept.
            out.stopped = Some(connection_reset);
            chain.upload_interrupted();
            Ok(out)
        }
        Err(e) => {
            chain.upload_interrupted();
            Err(handler_error(e))
        }
    }
}

/// Returns Ok(true) on a normal finish, Ok(false) when the sender went away without one.
fn drive(
    chain: &mut Chain,
    rx: &mut mpsc::Receiver<Msg>,
    out: &mut Outcome,
) -> Result<bool, HandlerError> {
    let size = chain.chunk_size();
    let mut buf = BytesMut::new();
    let mut skipping = false;
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::NewFile(info) => {
                buf.clear();
                skipping = chain.new_file(info)? == FileState::Skipped;
            }
            Msg::Data(data) => {
                if !skipping {
                    skipping = feed(chain, &mut buf, size, data)?;
                }
            }
            Msg::Batch(pieces) => {
                for data in pieces {
                    if skipping {
                        break;
                    }
                    skipping = feed(chain, &mut buf, size, data)?;
                }
            }
            Msg::EndFile => {
                if !skipping && !buf.is_empty() {
                    let chunk = buf.split().freeze();
                    skipping = chain.receive_chunk(chunk)? == FileState::Skipped;
                }
                buf.clear();
                if !skipping && let Some(done) = chain.end_file()? {
                    out.files.push(done);
                }
                skipping = false;
            }
            Msg::Raw(data) => chain.receive_raw(data)?,
            Msg::Finish => return finish(chain, out),
        }
    }
    // The sender went away mid-upload. Bytes already received still reach the handlers, so
    // that a resumable append can keep everything that arrived.
    if !skipping && !buf.is_empty() {
        chain.receive_chunk(buf.split().freeze())?;
    }
    Ok(false)
}

/// Re-chunks for the chain: no chunk is larger than `size` (Django's chunk size is a most,
/// and a handler may rely on it), and pieces are passed on as they came, without copying,
/// unless they are small: those (under a quarter of `size`, such as what a parser leaves
/// around a boundary) are gathered in `buf`, and topped up from the next piece, so handlers
/// are not called per few bytes.
/// Gathering everything into exact `size` chunks copied almost every byte, since the
/// socket's pieces are seldom a multiple of it. Returns true when a handler skipped the file.
fn feed(
    chain: &mut Chain,
    buf: &mut BytesMut,
    size: usize,
    mut data: Bytes,
) -> Result<bool, HandlerError> {
    let small = (size / 4).max(1);
    if !buf.is_empty() {
        if data.len() < small && buf.len() + data.len() <= size {
            buf.extend_from_slice(&data);
            if buf.len() < small {
                return Ok(false);
            }
            return Ok(chain.receive_chunk(buf.split().freeze())? == FileState::Skipped);
        }
        // Top the gathered bytes up to a chunk worth a call (copying less than `small`).
        let take = small.saturating_sub(buf.len()).min(data.len());
        buf.extend_from_slice(&data.split_to(take));
        if chain.receive_chunk(buf.split().freeze())? == FileState::Skipped {
            return Ok(true);
        }
    }
    while data.len() > size {
        let chunk = data.split_to(size);
        if chain.receive_chunk(chunk)? == FileState::Skipped {
            return Ok(true);
        }
    }
    if data.len() >= small {
        return Ok(chain.receive_chunk(data)? == FileState::Skipped);
    }
    if !data.is_empty() {
        buf.extend_from_slice(&data);
    }
    Ok(false)
}

fn finish(chain: &mut Chain, out: &mut Outcome) -> Result<bool, HandlerError> {
    if chain.has_raw_taker() {
        out.raw = Some(chain.raw_complete()?);
    }
    chain.upload_complete()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::upload::handler::{FileInfo, UploadHandler};

    struct Record(Arc<Mutex<Vec<Bytes>>>);

    impl UploadHandler for Record {
        fn name(&self) -> &'static str {
            "record"
        }
        fn receive_chunk(
            &mut self,
            chunk: Bytes,
            _start: u64,
        ) -> Result<Option<Bytes>, HandlerError> {
            self.0.lock().expect("log").push(chunk);
            Ok(None)
        }
    }

    #[test]
    fn pieces_pass_whole_small_ones_gathered_none_over_the_chunk_size() {
        let size = 1000;
        // Pieces of every kind: tiny, small runs, exactly the size, between, several times it.
        let lens = [
            3, 1, 249, 250, 999, 1000, 1001, 7, 7, 7, 2500, 10, 600, 400, 1, 0, 3000,
        ];
        let data: Vec<u8> = (0..lens.iter().sum::<usize>())
            .map(|i| (i % 251) as u8)
            .collect();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut chain = Chain::new(vec![Box::new(Record(log.clone()))], size);
        chain.new_file(FileInfo::default()).expect("new file");
        let mut buf = BytesMut::new();
        let all = Bytes::from(data.clone());
        let mut at = 0;
        for n in lens {
            assert!(!feed(&mut chain, &mut buf, size, all.slice(at..at + n)).expect("feed"));
            at += n;
        }
        // What EndFile does: the gathered rest goes out last.
        if !buf.is_empty() {
            chain.receive_chunk(buf.split().freeze()).expect("rest");
        }
        let chunks = log.lock().expect("log").clone();
        assert_eq!(chunks.concat(), data, "every byte once, in order");
        assert!(chunks.iter().all(|c| c.len() <= size), "none over the size");
        let last = chunks.len() - 1;
        assert!(
            chunks[..last].iter().all(|c| c.len() >= size / 4),
            "small pieces are gathered: {:?}",
            chunks.iter().map(Bytes::len).collect::<Vec<_>>()
        );
        // The 999-byte piece went through as it came (same memory: not copied).
        let start999 = 3 + 1 + 249 + 250;
        assert!(
            chunks
                .iter()
                .any(|c| c.as_ptr() == all[start999..].as_ptr() && c.len() == 999)
        );
    }
}
