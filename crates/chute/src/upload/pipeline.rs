//! The pipeline: the handler chain of one upload, run on the blocking pool while there are
//! bytes to process, fed by the protocol adapter through a small bounded channel.
//!
//! The adapter's task reads the socket and parses; the pipeline re-chunks to the chain's
//! chunk size, hashes, compresses and writes on a blocking thread. The two overlap, so
//! hashing never runs on the thread that reads the socket, and the bounded channel keeps
//! memory per upload at `CHANNEL_DEPTH` chunks whatever the file size.
//!
//! Waiting for a client holds no thread. A small async task owns the chain between runs: it
//! awaits the next message, then hands the chain to the blocking pool, which processes every
//! message that is ready and gives the chain back when none is. After a full batch (or the
//! start of a file) it lingers `LINGER` for the next one, so a fast upload keeps its thread
//! and pays no hand-off per batch. A slow client's upload therefore takes a thread only while its bytes are being
//! processed: before, each upload held one for its whole life, and 600 uploads trickling a
//! byte every 2 s filled the 512 threads of the pool that downloads, storage calls and
//! `/healthz` also need. At most `RUNS` runs go at once (a permit is awaited without a
//! thread), so thousands of slow uploads whose bytes arrive together take a few threads, not
//! one each.

use std::time::Duration;

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
/// Pieces under this size are copied into a batch buffer of the pipeline's own instead of
/// being held as they came: a small piece shares (and pins) the socket read buffer it was cut
/// from, and a slow client's batch of hundreds of them held a few KiB each. Measured with
/// 2,000 uploads at 1 KiB/s each: RSS grew by 16 MiB a second before.
const SMALL_PIECE: usize = 8 * 1024;
/// The longest bytes wait in a batch: a slow client's bytes go on to the chain (and its
/// memory is freed) at least this often, even before a batch is full.
const BATCH_AGE: Duration = Duration::from_secs(1);
/// The longest a held pipeline (see [`Pipeline::start_held`]) holds bytes: a body that takes
/// longer to arrive streams, so that its progress is seen as it arrives. 1 MiB takes 8 ms at
/// a gigabit.
const HOLD_AGE: Duration = Duration::from_millis(20);
/// Pipeline runs at once, across all uploads: four per core, at least 16 (a run may wait on
/// a disk sync or on clamd).
fn runs() -> &'static tokio::sync::Semaphore {
    static RUNS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    RUNS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new((4 * cores).max(16))
    })
}
/// How long a run that has just processed a full batch waits for the next message before it
/// gives its thread back.
const LINGER: Duration = Duration::from_millis(2);

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
    drive: Drive,
    raw: bool,
    batch: Vec<Bytes>,
    batched: usize,
    /// Small pieces copied together (see `SMALL_PIECE`), not yet in `batch`.
    small: BytesMut,
    /// When the oldest byte of the batch arrived.
    batch_since: Option<std::time::Instant>,
}

/// Where the pipeline's messages go.
enum Drive {
    /// Not started yet (see [`Pipeline::start_held`]): the chain, and the messages for it.
    Held(Box<Held>),
    /// The task that owns the chain, and its channel.
    Running {
        tx: mpsc::Sender<Msg>,
        join: JoinHandle<Result<Outcome, UploadError>>,
    },
    /// Only while `Held` turns into `Running`.
    Switching,
}

struct Held {
    chain: Chain,
    msgs: Vec<Msg>,
    /// Data bytes in `msgs`.
    bytes: usize,
    /// The most data bytes held before the pipeline starts.
    hold: usize,
    /// When the first data byte arrived.
    since: Option<std::time::Instant>,
}

impl Pipeline {
    /// Starts the pipeline thread. The chain is first offered the raw input; `is_raw()` tells
    /// whether a handler took it (then send `Msg::Raw` chunks instead of parsed files).
    pub fn start(mut chain: Chain, raw_input: Option<&RawInput>) -> Result<Self, UploadError> {
        let raw = match raw_input {
            Some(r) => chain.handle_raw_input(r).map_err(handler_error)?,
            None => false,
        };
        Ok(Self::with(Drive::running(chain, Vec::new()), raw))
    }

    /// A pipeline that holds up to `hold` bytes (for at most `HOLD_AGE`) before it starts:
    /// a body that ends within them goes through the chain in one blocking run, from the
    /// request's own task, with no task, channel or linger of its own. Small appends (a tus
    /// client's 256 KiB PATCHes) paid more for those hand-offs than for their bytes: 36
    /// context switches per request, measured. A larger or slower body starts the pipeline
    /// and streams as `start`'s does; memory stays within the same bound (`hold` is about the
    /// channel's depth of batches).
    pub fn start_held(chain: Chain, hold: usize) -> Self {
        Self::with(
            Drive::Held(Box::new(Held {
                chain,
                msgs: Vec::new(),
                bytes: 0,
                hold,
                since: None,
            })),
            false,
        )
    }

    fn with(drive: Drive, raw: bool) -> Self {
        Self {
            drive,
            raw,
            batch: Vec::new(),
            batched: 0,
            small: BytesMut::new(),
            batch_since: None,
        }
    }

    /// Starts a held pipeline now (a body known to be larger than its hold would only
    /// delay streaming by being held first).
    pub fn start_now(&mut self) {
        if matches!(self.drive, Drive::Held(_))
            && let Drive::Held(h) = std::mem::replace(&mut self.drive, Drive::Switching)
        {
            self.drive = Drive::running(h.chain, h.msgs);
        }
    }

    pub fn is_raw(&self) -> bool {
        self.raw
    }

    /// Sends a message (data is batched); false when the pipeline has already ended
    /// (refused or stopped): call [`Pipeline::finish`] to learn why.
    pub async fn send(&mut self, msg: Msg) -> bool {
        if let Msg::Data(b) = msg {
            let since = *self.batch_since.get_or_insert_with(std::time::Instant::now);
            self.batched += b.len();
            if b.len() < SMALL_PIECE {
                self.small.extend_from_slice(&b);
            } else {
                if !self.small.is_empty() {
                    self.batch.push(self.small.split().freeze());
                }
                self.batch.push(b);
            }
            // A held body that is not arriving fast is not held longer: its bytes go on to
            // the chain (progress reports) as a streamed body's do.
            let slow = match &mut self.drive {
                Drive::Held(h) => h.since.get_or_insert(since).elapsed() >= HOLD_AGE,
                _ => false,
            };
            if self.batched < BATCH_BYTES && since.elapsed() < BATCH_AGE && !slow {
                return match &self.drive {
                    Drive::Held(_) => true,
                    Drive::Running { tx, .. } => !tx.is_closed(),
                    Drive::Switching => false,
                };
            }
            return self.flush().await;
        }
        self.flush().await && self.deliver(msg).await
    }

    async fn flush(&mut self) -> bool {
        if !self.small.is_empty() {
            self.batch.push(self.small.split().freeze());
        }
        self.batch_since = None;
        if self.batch.is_empty() {
            return true;
        }
        self.batched = 0;
        let batch = std::mem::take(&mut self.batch);
        self.deliver(Msg::Batch(batch)).await
    }

    /// Hands a message to the chain's task, or holds it while the pipeline may still run
    /// whole at the end; starts the task once the held bytes pass `hold` or `HOLD_AGE`.
    async fn deliver(&mut self, msg: Msg) -> bool {
        if let Drive::Held(h) = &mut self.drive {
            // (`since` was set by the data this batch came from.)
            if let Msg::Batch(pieces) = &msg {
                h.bytes += pieces.iter().map(Bytes::len).sum::<usize>();
            }
            let keep = h.bytes <= h.hold && h.since.is_none_or(|t| t.elapsed() < HOLD_AGE);
            h.msgs.push(msg);
            if !keep {
                self.start_now();
            }
            return true;
        }
        match &self.drive {
            Drive::Running { tx, .. } => tx.send(msg).await.is_ok(),
            Drive::Held(_) | Drive::Switching => false,
        }
    }

    /// Tells the pipeline the body ended and waits for its outcome.
    pub async fn finish(mut self) -> Result<Outcome, UploadError> {
        let _ = self.flush().await;
        match self.drive {
            Drive::Held(mut h) => {
                h.msgs.push(Msg::Finish);
                drive_whole(h.chain, h.msgs).await
            }
            Drive::Running { tx, join } => {
                let _ = tx.send(Msg::Finish).await;
                drop(tx);
                self::join(join).await
            }
            Drive::Switching => Err(UploadError::Internal("upload pipeline lost".into())),
        }
    }

    /// Ends the pipeline as interrupted (the client went away or the adapter refused the
    /// request) and waits until handlers have cleaned up. Data already sent still reaches
    /// the handlers (a resumable append keeps it).
    pub async fn abort(mut self) {
        let _ = self.flush().await;
        match self.drive {
            Drive::Held(h) => {
                let _ = drive_whole(h.chain, h.msgs).await;
            }
            Drive::Running { tx, join } => {
                drop(tx);
                let _ = self::join(join).await;
            }
            Drive::Switching => {}
        }
    }
}

impl Drive {
    /// Starts the chain's task, with `first` already queued for it.
    fn running(chain: Chain, first: Vec<Msg>) -> Self {
        let (tx, rx) = queued(first);
        let join = tokio::spawn(drive_async(chain, rx));
        Drive::Running { tx, join }
    }
}

/// A channel with `msgs` already in it, at least `CHANNEL_DEPTH` deep (deeper when there are
/// more: they are held already, so this adds no memory).
fn queued(msgs: Vec<Msg>) -> (mpsc::Sender<Msg>, mpsc::Receiver<Msg>) {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH.max(msgs.len()));
    for m in msgs {
        // Room for every one: the channel was made as deep.
        let _ = tx.try_send(m);
    }
    (tx, rx)
}

/// Runs the chain over every held message in one blocking run, from the caller's task.
async fn drive_whole(chain: Chain, msgs: Vec<Msg>) -> Result<Outcome, UploadError> {
    let (_, rx) = queued(msgs);
    drive_async(chain, rx).await
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

/// The chain and what it has produced so far, between runs on the blocking pool.
struct Worker {
    chain: Chain,
    rx: mpsc::Receiver<Msg>,
    out: Outcome,
    /// Small pieces gathered for the next chunk (see `feed`).
    buf: BytesMut,
    skipping: bool,
}

/// Where a run left the upload.
enum Step {
    /// No message came within the linger: the chain waits for more without a thread.
    Idle,
    /// The upload ended: Ok(true) finished, Ok(false) the sender went away without finishing.
    Ended(Result<bool, HandlerError>),
}

/// What a run hands back: the worker, to wait for more, or the pipeline's outcome.
enum RunEnd {
    Idle(Box<Worker>),
    Done(Result<Outcome, UploadError>),
}

/// Owns the chain between runs; returns the pipeline's outcome.
async fn drive_async(chain: Chain, rx: mpsc::Receiver<Msg>) -> Result<Outcome, UploadError> {
    let mut w = Worker {
        chain,
        rx,
        out: Outcome::default(),
        buf: BytesMut::new(),
        skipping: false,
    };
    loop {
        let first = w.rx.recv().await;
        let permit = runs()
            .acquire()
            .await
            .map_err(|e| UploadError::Internal(format!("upload pipeline: {e}")))?;
        let rt = tokio::runtime::Handle::current();
        // The ending runs on the blocking thread too: handlers clean up there (an append
        // syncs what arrived).
        let run = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match w.run(first, &rt) {
                Step::Idle => RunEnd::Idle(Box::new(w)),
                Step::Ended(r) => RunEnd::Done(w.conclude(r)),
            }
        });
        match run.await {
            Ok(RunEnd::Done(outcome)) => return outcome,
            Ok(RunEnd::Idle(idle)) => w = *idle,
            Err(e) => {
                return Err(UploadError::Internal(format!(
                    "upload pipeline failed: {e}"
                )));
            }
        }
    }
}

impl Worker {
    /// Processes `first` and every message that is ready, and, after a full batch or the
    /// start of a file, every message that follows within `LINGER`.
    fn run(&mut self, first: Option<Msg>, rt: &tokio::runtime::Handle) -> Step {
        let mut next = first;
        loop {
            let Some(msg) = next else {
                return Step::Ended(self.sender_gone());
            };
            // Worth waiting for more after a full batch or the start of a file; not after a
            // batch the sender flushed because it had waited (a slow client's).
            let full = match &msg {
                Msg::Batch(pieces) => pieces.iter().map(Bytes::len).sum::<usize>() >= BATCH_BYTES,
                _ => true,
            };
            match self.handle(msg) {
                Ok(None) => {}
                Ok(Some(finished)) => return Step::Ended(Ok(finished)),
                Err(e) => return Step::Ended(Err(e)),
            }
            next = match self.rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) if !full => return Step::Idle,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match rt.block_on(tokio::time::timeout(LINGER, self.rx.recv())) {
                        Ok(m) => m,
                        Err(_) => return Step::Idle,
                    }
                }
            };
        }
    }

    /// One message. Ok(Some(true)) when the upload finished.
    fn handle(&mut self, msg: Msg) -> Result<Option<bool>, HandlerError> {
        let chain = &mut self.chain;
        let size = chain.chunk_size();
        match msg {
            Msg::NewFile(info) => {
                self.buf.clear();
                self.skipping = chain.new_file(info)? == FileState::Skipped;
            }
            Msg::Data(data) => {
                if !self.skipping {
                    self.skipping = feed(chain, &mut self.buf, size, data)?;
                }
            }
            Msg::Batch(pieces) => {
                for data in pieces {
                    if self.skipping {
                        break;
                    }
                    self.skipping = feed(chain, &mut self.buf, size, data)?;
                }
            }
            Msg::EndFile => {
                if !self.skipping && !self.buf.is_empty() {
                    let chunk = self.buf.split().freeze();
                    self.skipping = chain.receive_chunk(chunk)? == FileState::Skipped;
                }
                self.buf.clear();
                if !self.skipping
                    && let Some(done) = chain.end_file()?
                {
                    self.out.files.push(done);
                }
                self.skipping = false;
            }
            Msg::Raw(data) => chain.receive_raw(data)?,
            Msg::Finish => return finish(chain, &mut self.out).map(Some),
        }
        Ok(None)
    }

    /// The sender went away mid-upload. Bytes already received still reach the handlers, so
    /// that a resumable append can keep everything that arrived.
    fn sender_gone(&mut self) -> Result<bool, HandlerError> {
        if !self.skipping && !self.buf.is_empty() {
            self.chain.receive_chunk(self.buf.split().freeze())?;
        }
        Ok(false)
    }

    /// The outcome of an ended upload; handlers are told when it did not finish.
    fn conclude(mut self, r: Result<bool, HandlerError>) -> Result<Outcome, UploadError> {
        match r {
            Ok(true) => Ok(self.out),
            Ok(false) => {
                self.chain.upload_interrupted();
                Err(UploadError::Interrupted)
            }
            Err(HandlerError::StopUpload { connection_reset }) => {
                // Django's StopUpload: files completed before are kept.
                self.out.stopped = Some(connection_reset);
                self.chain.upload_interrupted();
                Ok(self.out)
            }
            Err(e) => {
                self.chain.upload_interrupted();
                Err(handler_error(e))
            }
        }
    }
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

    fn seen(log: &Arc<Mutex<Vec<Bytes>>>) -> Vec<u8> {
        log.lock().expect("log").concat()
    }

    /// A held pipeline: a body within `hold` that arrives fast reaches the chain only at its
    /// end, whole and in order; a larger or slower one, or one started at once, streams
    /// before its end; an aborted one still hands over what arrived (a resumable append
    /// keeps it).
    #[tokio::test]
    async fn a_held_pipeline_runs_small_bodies_whole_and_streams_larger_ones() {
        let data: Vec<u8> = (0..1_200_000u32).map(|i| (i % 251) as u8).collect();
        let body = Bytes::from(data.clone());
        // (body length, hold, whether it ends normally, pause between pieces, started at once)
        for (len, hold, complete, pause, now) in [
            (300_000, 1 << 20, true, 0, false),
            (1_200_000, 256 * 1024, true, 0, false),
            (300_000, 1 << 20, false, 0, false),
            (300_000, 1 << 20, true, 30, false),
            (300_000, 1 << 20, true, 0, true),
        ] {
            let streams = len > hold || pause > 0 || now;
            let log = Arc::new(Mutex::new(Vec::new()));
            let chain = Chain::new(vec![Box::new(Record(log.clone()))], 64 * 1024);
            let mut p = Pipeline::start_held(chain, hold);
            assert!(p.send(Msg::NewFile(FileInfo::default())).await);
            if now {
                p.start_now();
            }
            for at in (0..len).step_by(40_000) {
                assert!(
                    p.send(Msg::Data(body.slice(at..(at + 40_000).min(len))))
                        .await
                );
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            // Give a started pipeline time to process what it was sent (up to 2 s; 50 ms
            // where nothing should come).
            let mut waited = 0;
            while seen(&log).is_empty() && waited < if streams { 200 } else { 5 } {
                tokio::time::sleep(Duration::from_millis(10)).await;
                waited += 1;
            }
            let before_end = seen(&log).len();
            if streams {
                assert!(before_end > 0, "streamed before the end");
            } else {
                assert_eq!(before_end, 0, "held: nothing before the end");
            }
            if complete {
                assert!(p.send(Msg::EndFile).await);
                p.finish().await.expect("finish");
            } else {
                p.abort().await;
            }
            assert_eq!(seen(&log), data[..len], "every byte once, in order");
        }
    }
}
