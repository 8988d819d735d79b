//! The upload-handler contract (Django's `FileUploadHandler`, in Rust) and the [`Chain`] that
//! runs an ordered list of handlers over the files of one upload.
//!
//! Handlers are synchronous: the chain runs on the upload's pipeline thread, off the reactor,
//! so a handler may hash, compress or write to disk without stalling other connections, and
//! no future is boxed per chunk.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

use super::UploadError;
use crate::checksum::Algorithm;
use crate::storage::Storage;

/// What the client said about a file, before its first byte.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileInfo {
    pub field_name: String,
    /// The client's file name, already reduced to a safe display name (never a path).
    pub file_name: String,
    /// The name exactly as the client sent it, for validators; never use it as a path.
    pub raw_name: String,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    pub charset: Option<String>,
    pub content_type_extra: BTreeMap<String, String>,
}

/// How a handler changes the course of an upload (Django's exceptions).
#[derive(Debug)]
pub enum HandlerError {
    /// Skip the rest of this file; the upload goes on with the next one.
    SkipFile,
    /// Stop reading the upload. Files completed before are kept (Django's `StopUpload`);
    /// `connection_reset` asks the adapter to close the connection rather than drain the body.
    StopUpload { connection_reset: bool },
    /// Refuse the upload with an error; nothing of it is kept.
    Failed(UploadError),
}

impl From<UploadError> for HandlerError {
    fn from(e: UploadError) -> Self {
        HandlerError::Failed(e)
    }
}

impl From<io::Error> for HandlerError {
    fn from(e: io::Error) -> Self {
        HandlerError::Failed(UploadError::Io(e))
    }
}

/// What `new_file` decides for later handlers.
#[derive(Debug, PartialEq, Eq)]
pub enum NewFile {
    Continue,
    /// Later handlers neither see this file nor its chunks (Django's `StopFutureHandlers`).
    StopFutureHandlers,
}

/// Facts that handlers learn about a file while it streams, recorded in the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileFacts {
    pub checksums: BTreeMap<Algorithm, String>,
    pub detected_type: Option<String>,
    /// "zstd" when the stored bytes are compressed.
    pub encoding: Option<String>,
}

/// Where a finished file's bytes are, until the engine places them in storage.
pub enum FileBody {
    Memory(Bytes),
    Temp(tempfile::TempPath),
    Staged(StagedGuard),
}

impl std::fmt::Debug for FileBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileBody::Memory(b) => write!(f, "Memory({} bytes)", b.len()),
            FileBody::Temp(p) => write!(f, "Temp({})", p.display()),
            FileBody::Staged(g) => write!(f, "Staged({})", g.key),
        }
    }
}

/// A staged object that is aborted when dropped, unless the engine placed it.
pub struct StagedGuard {
    pub storage: Arc<dyn Storage>,
    pub key: String,
    pub armed: bool,
}

impl Drop for StagedGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (storage, key) = (self.storage.clone(), std::mem::take(&mut self.key));
        let abort = move || {
            if let Err(e) = storage.abort(&key) {
                tracing::warn!(key = %key, error = %e, "could not remove a staged upload");
            }
        };
        // Storage calls block (S3's run the SDK on the runtime), and a guard may be dropped
        // on an async task: the abort goes to the blocking pool when there is a runtime.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(abort);
            }
            Err(_) => abort(),
        }
    }
}

/// A file claimed by a handler's `file_complete`.
#[derive(Debug)]
pub struct UploadedFile {
    pub body: FileBody,
    /// Bytes at rest (after any transforming handler).
    pub stored_size: u64,
}

/// What a handler that takes over raw input hands back (Django's `(POST, FILES)` tuple).
#[derive(Debug, Default)]
pub struct RawOutcome {
    pub fields: Vec<(String, String)>,
    pub files: Vec<CompletedFile>,
}

/// The request as a whole, offered to `handle_raw_input` before any parsing.
#[derive(Clone, Debug)]
pub struct RawInput {
    pub content_type: String,
    pub content_length: Option<u64>,
    pub boundary: Option<String>,
}

/// Django's upload-handler contract. Every method has a default but `receive_chunk`.
pub trait UploadHandler: Send {
    /// A short name for logs and errors.
    fn name(&self) -> &'static str;

    /// The chunk size this handler wants; the chain uses the smallest any handler asks for.
    fn chunk_size(&self) -> Option<usize> {
        None
    }

    /// Called once, before parsing. Returning true takes the raw body over: the handler then
    /// gets every body chunk through `receive_raw` and returns the result from `raw_complete`.
    fn handle_raw_input(&mut self, _raw: &RawInput) -> Result<bool, HandlerError> {
        Ok(false)
    }

    fn receive_raw(&mut self, _chunk: Bytes) -> Result<(), HandlerError> {
        Ok(())
    }

    fn raw_complete(&mut self) -> Result<RawOutcome, HandlerError> {
        Err(HandlerError::Failed(UploadError::Internal(format!(
            "handler {} took raw input but does not complete it",
            self.name()
        ))))
    }

    /// A new file is about to start: the handler may change what the chain records about it
    /// (its name, say), before any handler's `new_file`.
    fn shape_file(&mut self, _file: &mut FileInfo) -> Result<(), HandlerError> {
        Ok(())
    }

    /// A new file starts. May skip it, stop the upload, or hide it from later handlers.
    fn new_file(&mut self, _file: &FileInfo) -> Result<NewFile, HandlerError> {
        Ok(NewFile::Continue)
    }

    /// A chunk of the current file, `start` being how many bytes this handler saw of the file
    /// before. Return the bytes for later handlers (possibly transformed), or None to swallow.
    fn receive_chunk(&mut self, chunk: Bytes, start: u64) -> Result<Option<Bytes>, HandlerError>;

    /// The file's last byte has been received: a transforming handler may return trailing
    /// bytes (a compressor's final frame), passed on to later handlers like a chunk.
    fn file_end(&mut self) -> Result<Option<Bytes>, HandlerError> {
        Ok(None)
    }

    /// The file is complete; `size` is the bytes this handler saw. May record facts. The first
    /// handler returning a file wins and later handlers are not asked.
    fn file_complete(
        &mut self,
        _size: u64,
        _facts: &mut FileFacts,
    ) -> Result<Option<UploadedFile>, HandlerError> {
        Ok(None)
    }

    /// Every file of the upload has been received.
    fn upload_complete(&mut self) -> Result<(), HandlerError> {
        Ok(())
    }

    /// The upload ended early (client gone, refused, stopped): release what is held.
    fn upload_interrupted(&mut self) {}
}

/// A file the chain finished: what the client said, what the handlers learned, the bytes.
#[derive(Debug)]
pub struct CompletedFile {
    pub info: FileInfo,
    pub size: u64,
    pub facts: FileFacts,
    pub file: UploadedFile,
}

/// An ordered list of handlers and the per-file state Django's parser keeps.
pub struct Chain {
    handlers: Vec<Box<dyn UploadHandler>>,
    chunk_size: usize,
    /// How many handlers, from the first, see the current file.
    active: usize,
    counters: Vec<u64>,
    current: Option<FileInfo>,
    raw_taker: Option<usize>,
}

/// What the chain does with the current file after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum FileState {
    Receiving,
    Skipped,
}

impl Chain {
    /// `default_chunk` applies when no handler asks for a chunk size.
    pub fn new(handlers: Vec<Box<dyn UploadHandler>>, default_chunk: usize) -> Self {
        let chunk_size = handlers
            .iter()
            .filter_map(|h| h.chunk_size())
            .min()
            .unwrap_or(default_chunk)
            .max(1);
        let n = handlers.len();
        Self {
            handlers,
            chunk_size,
            active: 0,
            counters: vec![0; n],
            current: None,
            raw_taker: None,
        }
    }

    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    pub fn handler_names(&self) -> Vec<&'static str> {
        self.handlers.iter().map(|h| h.name()).collect()
    }

    /// Offers the raw request to each handler in order; the first to take it wins.
    pub fn handle_raw_input(&mut self, raw: &RawInput) -> Result<bool, HandlerError> {
        for (i, h) in self.handlers.iter_mut().enumerate() {
            if h.handle_raw_input(raw)? {
                self.raw_taker = Some(i);
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub fn has_raw_taker(&self) -> bool {
        self.raw_taker.is_some()
    }

    pub fn receive_raw(&mut self, chunk: Bytes) -> Result<(), HandlerError> {
        match self.raw_taker {
            Some(i) => self.handlers[i].receive_raw(chunk),
            None => Err(HandlerError::Failed(UploadError::Internal(
                "raw chunk without a raw handler".into(),
            ))),
        }
    }

    pub fn raw_complete(&mut self) -> Result<RawOutcome, HandlerError> {
        match self.raw_taker {
            Some(i) => self.handlers[i].raw_complete(),
            None => Err(HandlerError::Failed(UploadError::Internal(
                "raw completion without a raw handler".into(),
            ))),
        }
    }

    /// Starts a file. `Ok(FileState::Skipped)` when a handler skipped it.
    pub fn new_file(&mut self, mut info: FileInfo) -> Result<FileState, HandlerError> {
        self.counters.iter_mut().for_each(|c| *c = 0);
        self.active = self.handlers.len();
        self.current = None;
        for h in self.handlers.iter_mut() {
            h.shape_file(&mut info)?;
        }
        for i in 0..self.handlers.len() {
            match self.handlers[i].new_file(&info) {
                Ok(NewFile::Continue) => {}
                Ok(NewFile::StopFutureHandlers) => {
                    self.active = i + 1;
                    break;
                }
                Err(HandlerError::SkipFile) => return Ok(FileState::Skipped),
                Err(e) => return Err(e),
            }
        }
        self.current = Some(info);
        Ok(FileState::Receiving)
    }

    /// Feeds one chunk of the current file through the active handlers.
    pub fn receive_chunk(&mut self, chunk: Bytes) -> Result<FileState, HandlerError> {
        self.feed(0, chunk)
    }

    fn feed(&mut self, from: usize, mut chunk: Bytes) -> Result<FileState, HandlerError> {
        if self.current.is_none() {
            return Ok(FileState::Skipped);
        }
        for i in from..self.active {
            let len = chunk.len() as u64;
            let start = self.counters[i];
            self.counters[i] += len;
            match self.handlers[i].receive_chunk(chunk, start) {
                Ok(Some(next)) => chunk = next,
                Ok(None) => break,
                Err(HandlerError::SkipFile) => {
                    self.current = None;
                    return Ok(FileState::Skipped);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(FileState::Receiving)
    }

    /// Ends the current file: trailing bytes are passed on, then `file_complete` is asked in
    /// order until a handler claims the file. None when the file was skipped or unclaimed.
    pub fn end_file(&mut self) -> Result<Option<CompletedFile>, HandlerError> {
        if self.current.is_none() {
            return Ok(None);
        }
        for i in 0..self.active {
            match self.handlers[i].file_end() {
                Ok(Some(trailer)) if !trailer.is_empty() => {
                    if self.feed(i + 1, trailer)? == FileState::Skipped {
                        return Ok(None);
                    }
                }
                Ok(_) => {}
                Err(HandlerError::SkipFile) => {
                    self.current = None;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        let mut facts = FileFacts::default();
        let size = self.counters.first().copied().unwrap_or(0);
        for i in 0..self.active {
            match self.handlers[i].file_complete(self.counters[i], &mut facts) {
                Ok(Some(file)) => {
                    let info = self.current.take().unwrap_or_default();
                    return Ok(Some(CompletedFile {
                        info,
                        size,
                        facts,
                        file,
                    }));
                }
                Ok(None) => {}
                Err(HandlerError::SkipFile) => {
                    self.current = None;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        self.current = None;
        Ok(None)
    }

    pub fn upload_complete(&mut self) -> Result<(), HandlerError> {
        for h in &mut self.handlers {
            h.upload_complete()?;
        }
        Ok(())
    }

    pub fn upload_interrupted(&mut self) {
        self.current = None;
        for h in &mut self.handlers {
            h.upload_interrupted();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records every call, optionally transforming or swallowing chunks.
    struct Probe {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        upper: bool,
        swallow: bool,
        stop_future: bool,
        skip_named: Option<&'static str>,
        claim: bool,
        chunk: Option<usize>,
        seen: Vec<u8>,
    }

    impl Probe {
        fn new(name: &'static str, log: &Arc<Mutex<Vec<String>>>) -> Self {
            Self {
                name,
                log: log.clone(),
                upper: false,
                swallow: false,
                stop_future: false,
                skip_named: None,
                claim: false,
                chunk: None,
                seen: Vec::new(),
            }
        }
        fn log(&self, s: String) {
            self.log
                .lock()
                .expect("log")
                .push(format!("{}:{s}", self.name));
        }
    }

    impl UploadHandler for Probe {
        fn name(&self) -> &'static str {
            self.name
        }
        fn chunk_size(&self) -> Option<usize> {
            self.chunk
        }
        fn new_file(&mut self, f: &FileInfo) -> Result<NewFile, HandlerError> {
            self.log(format!("new {}", f.file_name));
            self.seen.clear();
            if self.skip_named == Some(f.file_name.as_str()) {
                return Err(HandlerError::SkipFile);
            }
            Ok(if self.stop_future {
                NewFile::StopFutureHandlers
            } else {
                NewFile::Continue
            })
        }
        fn receive_chunk(&mut self, c: Bytes, start: u64) -> Result<Option<Bytes>, HandlerError> {
            self.log(format!("chunk {start}+{}", c.len()));
            self.seen.extend_from_slice(&c);
            if self.swallow {
                return Ok(None);
            }
            Ok(Some(if self.upper {
                Bytes::from(c.to_ascii_uppercase())
            } else {
                c
            }))
        }
        fn file_complete(
            &mut self,
            size: u64,
            _facts: &mut FileFacts,
        ) -> Result<Option<UploadedFile>, HandlerError> {
            self.log(format!("complete {size}"));
            Ok(self.claim.then(|| UploadedFile {
                body: FileBody::Memory(Bytes::from(self.seen.clone())),
                stored_size: self.seen.len() as u64,
            }))
        }
        fn upload_complete(&mut self) -> Result<(), HandlerError> {
            self.log("upload_complete".into());
            Ok(())
        }
        fn upload_interrupted(&mut self) {
            self.log("interrupted".into());
        }
    }

    fn info(name: &str) -> FileInfo {
        FileInfo {
            field_name: "file".into(),
            file_name: name.into(),
            ..Default::default()
        }
    }

    fn body(f: &CompletedFile) -> Vec<u8> {
        match &f.file.body {
            FileBody::Memory(b) => b.to_vec(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn transform_passes_on_and_first_claim_wins() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut a = Probe::new("a", &log);
        a.upper = true;
        let mut b = Probe::new("b", &log);
        b.claim = true;
        let mut c = Probe::new("c", &log);
        c.claim = true;
        let mut chain = Chain::new(vec![Box::new(a), Box::new(b), Box::new(c)], 4);
        chain.new_file(info("x.txt")).expect("new");
        chain
            .receive_chunk(Bytes::from_static(b"abc"))
            .expect("chunk");
        chain
            .receive_chunk(Bytes::from_static(b"de"))
            .expect("chunk");
        let done = chain.end_file().expect("end").expect("claimed");
        assert_eq!(body(&done), b"ABCDE");
        assert_eq!(done.size, 5);
        chain.upload_complete().expect("complete");
        let log = log.lock().expect("log").clone();
        assert!(log.contains(&"b:complete 5".to_string()));
        assert!(!log.iter().any(|l| l == "c:complete 5"), "{log:?}");
        assert!(log.contains(&"c:chunk 3+2".to_string()));
        assert!(log.contains(&"c:upload_complete".to_string()));
    }

    #[test]
    fn swallow_and_stop_future_handlers_hide_data() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut a = Probe::new("a", &log);
        a.swallow = true;
        a.claim = true;
        let b = Probe::new("b", &log);
        let mut chain = Chain::new(vec![Box::new(a), Box::new(b)], 4);
        chain.new_file(info("x")).expect("new");
        chain
            .receive_chunk(Bytes::from_static(b"abc"))
            .expect("chunk");
        chain.end_file().expect("end");
        let l = log.lock().expect("log").clone();
        assert!(!l.iter().any(|x| x.starts_with("b:chunk")), "{l:?}");

        let log = Arc::new(Mutex::new(Vec::new()));
        let mut a = Probe::new("a", &log);
        a.stop_future = true;
        let mut b = Probe::new("b", &log);
        b.claim = true;
        let mut chain = Chain::new(vec![Box::new(a), Box::new(b)], 4);
        chain.new_file(info("x")).expect("new");
        chain
            .receive_chunk(Bytes::from_static(b"abc"))
            .expect("chunk");
        assert!(
            chain.end_file().expect("end").is_none(),
            "b never saw the file"
        );
        let l = log.lock().expect("log").clone();
        assert!(!l.iter().any(|x| x.starts_with("b:")), "{l:?}");
    }

    #[test]
    fn skip_file_drops_one_file_and_keeps_the_next() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut a = Probe::new("a", &log);
        a.skip_named = Some("bad.exe");
        let mut b = Probe::new("b", &log);
        b.claim = true;
        let mut chain = Chain::new(vec![Box::new(a), Box::new(b)], 4);
        assert_eq!(
            chain.new_file(info("bad.exe")).expect("new"),
            FileState::Skipped
        );
        assert_eq!(
            chain
                .receive_chunk(Bytes::from_static(b"MZ"))
                .expect("chunk"),
            FileState::Skipped
        );
        assert!(chain.end_file().expect("end").is_none());
        chain.new_file(info("good.txt")).expect("new");
        chain
            .receive_chunk(Bytes::from_static(b"ok"))
            .expect("chunk");
        let f = chain.end_file().expect("end").expect("claimed");
        assert_eq!(f.info.file_name, "good.txt");
        assert_eq!(body(&f), b"ok");
    }

    #[test]
    fn chunk_size_is_the_smallest_asked() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut a = Probe::new("a", &log);
        a.chunk = Some(1024);
        let mut b = Probe::new("b", &log);
        b.chunk = Some(256);
        let c = Probe::new("c", &log);
        assert_eq!(
            Chain::new(vec![Box::new(a), Box::new(b), Box::new(c)], 65536).chunk_size(),
            256
        );
        assert_eq!(
            Chain::new(vec![Box::new(Probe::new("d", &log))], 65536).chunk_size(),
            65536
        );
    }
}
