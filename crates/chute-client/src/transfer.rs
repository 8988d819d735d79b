//! tus uploads with resume, and downloads with Range resume and a checked digest.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt as _;
use reqwest::Method;
use reqwest::header::{CONTENT_LOCATION, HeaderMap};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

use crate::{Client, Error, Tries, check};

pub(crate) const TUS: &str = "1.0.0";
/// Chunks when a checksum is asked for and no chunk size given: each is read into memory to
/// be hashed before it is sent.
const CHECKSUM_CHUNK: u64 = 8 << 20;
/// How often a streaming request reports progress.
const TICK: Duration = Duration::from_millis(200);

/// How to upload.
#[derive(Clone, Debug, Default)]
pub struct UploadOptions {
    /// Bytes per PATCH; `None`: the whole file in one streaming PATCH (fastest).
    pub chunk_size: Option<u64>,
    /// Send each PATCH's digest (`Upload-Checksum`): the server keeps none of a PATCH whose
    /// bytes differ. Each chunk is read into memory first (8 MiB when no chunk size is set).
    pub checksum: Option<Checksum>,
    /// The file's name on the server (default: the path's file name).
    pub name: Option<String>,
    /// The file's type (`filetype`).
    pub content_type: Option<String>,
    /// More tus metadata.
    pub metadata: Vec<(String, String)>,
    /// tus, or the IETF draft.
    pub protocol: Protocol,
    /// Do not hash the bytes as they are sent ([`Uploaded::sha256`] stays `None`): for a
    /// caller that will not check the upload, it saves a sha256 of the file's CPU.
    pub skip_digest: bool,
}

/// Where a PATCH starts: the upload holds the file's bytes from `file_start`, `total` of
/// them, and has `offset` already.
#[derive(Clone, Copy)]
struct Range {
    file_start: u64,
    offset: u64,
    total: u64,
}

/// The resumable protocol an upload speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// tus 1.0 (`/tus/`): every server of chute's, and checksums per PATCH.
    #[default]
    Tus,
    /// The IETF resumable-upload draft (`/resumable/`, interop version 8): the protocol
    /// HTTP clients are growing; no checksums per request.
    Draft,
}

/// The draft's interop version that chute speaks.
const DRAFT_INTEROP: &str = "8";

impl Protocol {
    /// The protocol of an upload's URL, as the server named it.
    pub fn of(url: &str) -> Protocol {
        if url.contains("/resumable/") {
            Protocol::Draft
        } else {
            Protocol::Tus
        }
    }

    /// Marks a request as this protocol's.
    fn mark(self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Protocol::Tus => req.header("Tus-Resumable", TUS),
            Protocol::Draft => req.header("Upload-Draft-Interop-Version", DRAFT_INTEROP),
        }
    }

    /// An answer must say it is this protocol's: else the server is not chute.
    fn check_answer(self, res: &reqwest::Response) -> Result<(), Error> {
        let (header, name) = match self {
            Protocol::Tus => ("tus-resumable", "Tus-Resumable"),
            Protocol::Draft => (
                "upload-draft-interop-version",
                "Upload-Draft-Interop-Version",
            ),
        };
        if res.headers().contains_key(header) {
            Ok(())
        } else {
            Err(Error::NotChute(format!(
                "{} answered {} without {name}",
                res.url(),
                res.status()
            )))
        }
    }
}

/// The file's sha256 as its bytes go out, hashed on a thread of its own so that hashing
/// overlaps sending. It is `None` at the end if a byte was skipped (a resumed upload).
#[derive(Clone, Default)]
pub(crate) struct Running(Option<Arc<RunningInner>>);

type Hashed = Option<(String, u64)>;

struct RunningInner {
    tx: std::sync::Mutex<Option<std::sync::mpsc::SyncSender<(u64, bytes::Bytes)>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<Hashed>>>,
}

impl Running {
    /// A hash from `start`, the first byte this call may send.
    pub(crate) fn starting_at(start: u64) -> Self {
        // At most 8 pieces (2 MiB) wait for the hasher; then the sender waits for it.
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, bytes::Bytes)>(8);
        let thread = std::thread::Builder::new()
            .name("chute-client-sha256".into())
            .spawn(move || {
                let (mut h, mut at, mut whole) = (sha2::Sha256::new(), start, true);
                for (pos, b) in rx {
                    let end = pos + b.len() as u64;
                    if at < pos {
                        whole = false;
                    } else if whole && end > at {
                        h.update(&b[(at - pos) as usize..]);
                        at = end;
                    }
                }
                whole.then(|| (hex::encode(h.finalize()), at))
            });
        match thread {
            Ok(t) => Running(Some(Arc::new(RunningInner {
                tx: std::sync::Mutex::new(Some(tx)),
                thread: std::sync::Mutex::new(Some(t)),
            }))),
            Err(_) => Running(None),
        }
    }

    /// `bytes`, the file's from `pos`, are going out.
    fn feed(&self, pos: u64, bytes: &bytes::Bytes) {
        let Some(inner) = &self.0 else { return };
        let tx = inner.tx.lock().ok().and_then(|g| g.clone());
        if let Some(tx) = tx {
            let _ = tx.send((pos, bytes.clone()));
        }
    }

    /// The hex sha256, if every byte up to `end` was hashed.
    async fn finish(&self, end: u64) -> Option<String> {
        let inner = self.0.as_ref()?;
        inner.tx.lock().ok()?.take();
        let thread = inner.thread.lock().ok()?.take()?;
        let (hex, at) = tokio::task::spawn_blocking(move || thread.join().ok().flatten())
            .await
            .ok()
            .flatten()?;
        (at == end).then_some(hex)
    }
}

/// A chunk read and hashed, ready to send.
pub(crate) struct Checked {
    body: bytes::Bytes,
    /// `Upload-Checksum`'s value.
    header: String,
}

/// The next chunk being read and hashed: its place in the file, its length, the task.
type Prefetch = Option<(u64, u64, tokio::task::JoinHandle<Result<Checked, Error>>)>;

/// Reads `len` bytes of the file at `path` from `at` and hashes them, on the blocking pool.
async fn read_checked(
    path: PathBuf,
    at: u64,
    len: u64,
    algorithm: Checksum,
) -> Result<Checked, Error> {
    tokio::task::spawn_blocking(move || read_checked_blocking(&path, at, len, algorithm))
        .await
        .map_err(|e| Error::Usage(e.to_string()))?
}

fn read_checked_blocking(
    path: &Path,
    at: u64,
    len: u64,
    algorithm: Checksum,
) -> Result<Checked, Error> {
    use std::io::{Read as _, Seek as _};
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let len = usize::try_from(len).map_err(|_| Error::Usage("chunk too large".into()))?;
    let mut buf = vec![0u8; len];
    file.seek(std::io::SeekFrom::Start(at))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(io(path))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(algorithm.digest(&buf));
    Ok(Checked {
        header: format!("{} {b64}", algorithm.name()),
        body: bytes::Bytes::from(buf),
    })
}

/// A digest for tus's `Upload-Checksum`, among those chute takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    Sha256,
    Sha1,
    Md5,
}

impl Checksum {
    /// The name tus uses.
    pub fn name(self) -> &'static str {
        match self {
            Checksum::Sha256 => "sha256",
            Checksum::Sha1 => "sha1",
            Checksum::Md5 => "md5",
        }
    }

    pub(crate) fn digest(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Checksum::Sha256 => sha2::Sha256::digest(bytes).to_vec(),
            Checksum::Sha1 => sha1::Sha1::digest(bytes).to_vec(),
            Checksum::Md5 => md5::Md5::digest(bytes).to_vec(),
        }
    }
}

impl std::str::FromStr for Checksum {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "sha256" => Ok(Checksum::Sha256),
            "sha1" => Ok(Checksum::Sha1),
            "md5" => Ok(Checksum::Md5),
            _ => Err(Error::Usage(format!(
                "`{s}` is not a checksum chute takes: sha256, sha1 or md5"
            ))),
        }
    }
}

/// Where a transfer stands: bytes the server has (uploads) or written here (downloads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub sent: u64,
    pub total: u64,
}

/// A finished upload.
#[derive(Clone, Debug)]
pub struct Uploaded {
    /// The tus upload (`/tus/ID`), absolute.
    pub upload_url: String,
    /// Its file in the catalog (`/api/files/ID`), absolute.
    pub file_url: Option<String>,
    pub size: u64,
    /// The hex sha256 of the file's bytes, hashed as they were sent, when this call sent them
    /// all (a resumed upload's earlier bytes were not); see
    /// [`verify_upload`](Client::verify_upload).
    pub sha256: Option<String>,
}

/// A finished download.
#[derive(Clone, Debug)]
pub struct Downloaded {
    pub size: u64,
    /// Bytes that were already there and not fetched again.
    pub resumed_from: u64,
    /// The digest the server's ETag was checked against (hex); the sha256 when the ETag is
    /// no digest (a server keeping neither sha256 nor blake3 tags files by id).
    pub digest: String,
}

/// The `Upload-Metadata` of a file named `name`: its name, type and the caller's pairs.
pub(crate) fn metadata(name: &str, opts: &UploadOptions) -> String {
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let mut meta = vec![format!("filename {}", b64(name))];
    if let Some(t) = &opts.content_type {
        meta.push(format!("filetype {}", b64(t)));
    }
    meta.extend(opts.metadata.iter().map(|(k, v)| format!("{k} {}", b64(v))));
    meta.join(",")
}

/// The `url` of a file's JSON in `res`'s body (the draft's finished upload), if there is one.
async fn file_of(res: reqwest::Response) -> Result<Option<String>, Error> {
    let body: serde_json::Value = crate::json(res).await?;
    Ok(body["url"].as_str().map(str::to_string))
}

/// The name a file is uploaded under: its path's last part.
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The file at `path` as a streamed request body, and its length; `progress` hears of the
/// bytes handed to the connection (every 200 ms, and at the end).
pub(crate) async fn counted_file(
    path: &Path,
    mut progress: impl FnMut(Progress) + Send + 'static,
) -> Result<(reqwest::Body, u64), Error> {
    let file = tokio::fs::File::open(path).await.map_err(io(path))?;
    let total = file.metadata().await.map_err(io(path))?.len();
    let mut sent = 0;
    let mut last = std::time::Instant::now();
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(total), 256 << 10).inspect(
        move |r| {
            if let Ok(b) = r {
                sent += b.len() as u64;
                if last.elapsed() >= TICK || sent == total {
                    last = std::time::Instant::now();
                    progress(Progress { sent, total });
                }
            }
        },
    );
    Ok((reqwest::Body::wrap_stream(stream), total))
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |error| Error::Io {
        path: path.to_path_buf(),
        error,
    }
}

pub(crate) fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

/// A tus answer must say it is tus's: else the server is not chute (nor any tus server).
pub(crate) fn tus_answer(res: &reqwest::Response) -> Result<(), Error> {
    Protocol::Tus.check_answer(res)
}

impl Client {
    /// Creates a tus upload for the file at `path` and answers its URL (and, for an empty
    /// file, finished at once, its file's URL).
    /// Network failures and 5xx are retried (see [`crate::Retry`]).
    pub async fn create_upload(
        &self,
        path: &Path,
        opts: &UploadOptions,
    ) -> Result<(String, Option<String>), Error> {
        self.retrying(|| self.create_once(path, opts)).await
    }

    async fn create_once(
        &self,
        path: &Path,
        opts: &UploadOptions,
    ) -> Result<(String, Option<String>), Error> {
        let size = tokio::fs::metadata(path).await.map_err(io(path))?.len();
        let name = opts.name.clone().unwrap_or_else(|| file_name(path));
        if opts.protocol == Protocol::Draft {
            return self.create_draft(size, &metadata(&name, opts), opts).await;
        }
        self.post_creation(&[
            ("Upload-Length", size.to_string()),
            ("Upload-Metadata", metadata(&name, opts)),
        ])
        .await
    }

    /// The draft's careful creation: an empty body, then appends. An empty file is complete
    /// at once, and its answer is the file.
    async fn create_draft(
        &self,
        size: u64,
        metadata: &str,
        opts: &UploadOptions,
    ) -> Result<(String, Option<String>), Error> {
        if opts.checksum.is_some() {
            return Err(Error::Usage(
                "the IETF draft has no checksum per request: use tus".into(),
            ));
        }
        let req = self
            .request(Method::POST, &format!("{}/resumable/", self.base))
            .header("Upload-Complete", if size == 0 { "?1" } else { "?0" })
            .header("Upload-Length", size)
            .header("Upload-Metadata", metadata)
            .body(Vec::new());
        let res = check(Protocol::Draft.mark(req).send().await?).await?;
        Protocol::Draft.check_answer(&res)?;
        let location = res
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| self.url(l))
            .ok_or_else(|| Error::NotChute("a draft creation without Location".into()))?;
        let file = if size == 0 {
            file_of(res).await?.map(|f| self.url(&f))
        } else {
            None
        };
        Ok((location, file))
    }

    /// `POST /tus/` with `headers`: answers the upload's URL, and its file's when the upload
    /// is finished at once (an empty file, a concatenation).
    pub(crate) async fn post_creation(
        &self,
        headers: &[(&str, String)],
    ) -> Result<(String, Option<String>), Error> {
        let mut req = self
            .request(Method::POST, &format!("{}/tus/", self.base))
            .header("Tus-Resumable", TUS);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let res = check(req.send().await?).await?;
        tus_answer(&res)?;
        let location = res
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::NotChute("a tus creation without Location".into()))?;
        let file = res
            .headers()
            .get(CONTENT_LOCATION)
            .and_then(|v| v.to_str().ok());
        Ok((self.url(location), file.map(|f| self.url(f))))
    }

    /// Uploads the file at `path`: creates the upload, then sends it as
    /// [`resume_file`](Self::resume_file) does.
    pub async fn upload_file(
        &self,
        path: &Path,
        opts: &UploadOptions,
        progress: impl FnMut(Progress),
    ) -> Result<Uploaded, Error> {
        let (url, file) = self.create_upload(path, opts).await?;
        if let Some(file_url) = file {
            return Ok(Uploaded {
                upload_url: url,
                file_url: Some(file_url),
                size: 0,
                sha256: Some(hex::encode(sha2::Sha256::digest(b""))),
            });
        }
        self.resume_file(&url, path, opts, progress).await
    }

    /// Where the upload at `url` stands: the server's offset, and its file once finished.
    /// Network failures and 5xx are retried (see [`crate::Retry`]).
    pub async fn offset(&self, url: &str) -> Result<(u64, Option<String>), Error> {
        self.retrying(|| self.offset_once(url)).await
    }

    async fn offset_once(&self, url: &str) -> Result<(u64, Option<String>), Error> {
        let protocol = Protocol::of(url);
        let res = protocol
            .mark(self.request(Method::HEAD, url))
            .send()
            .await?;
        self.position(check(res).await?, protocol, "HEAD").await
    }

    /// An answer's `Upload-Offset`, and the file it names once the upload is finished (tus:
    /// `Content-Location`; the draft: the file's JSON, in a finishing PATCH's body).
    pub(crate) async fn position(
        &self,
        res: reqwest::Response,
        protocol: Protocol,
        method: &str,
    ) -> Result<(u64, Option<String>), Error> {
        protocol.check_answer(&res)?;
        let offset = header_u64(res.headers(), "upload-offset")
            .ok_or_else(|| Error::NotChute(format!("a {method} without Upload-Offset")))?;
        let file = match res.headers().get(CONTENT_LOCATION) {
            Some(f) => f.to_str().ok().map(|f| self.url(f)),
            None if protocol == Protocol::Draft && res.status() == reqwest::StatusCode::OK => {
                file_of(res).await?.map(|f| self.url(&f))
            }
            None => None,
        };
        Ok((offset, file))
    }

    /// Terminates the upload at `url` (its bytes go).
    pub async fn terminate(&self, url: &str) -> Result<(), Error> {
        let req = Protocol::of(url).mark(self.request(Method::DELETE, url));
        check(req.send().await?).await.map(drop)
    }

    /// Sends what the server does not have yet of the file at `path` to the upload at `url`:
    /// asks its offset, then PATCHes from there. A retryable failure (see [`crate::Retry`])
    /// asks the offset again and goes on; `progress` hears of the bytes the server has.
    pub async fn resume_file(
        &self,
        url: &str,
        path: &Path,
        opts: &UploadOptions,
        progress: impl FnMut(Progress),
    ) -> Result<Uploaded, Error> {
        let total = tokio::fs::metadata(path).await.map_err(io(path))?.len();
        let running = if opts.skip_digest {
            Running::default()
        } else {
            Running::starting_at(0)
        };
        let mut file_url = self
            .resume_range(url, path, (0, total), opts, &running, progress)
            .await?;
        if file_url.is_none() {
            file_url = self.offset(url).await?.1;
        }
        Ok(Uploaded {
            upload_url: url.to_string(),
            file_url,
            size: total,
            sha256: running.finish(total).await,
        })
    }

    /// Sends the `len` bytes of the file at `path` from `start` to the upload at `url`, from
    /// the server's offset on, retrying; answers the file's URL when the server named it.
    pub(crate) async fn resume_range(
        &self,
        url: &str,
        path: &Path,
        (start, len): (u64, u64),
        opts: &UploadOptions,
        running: &Running,
        mut progress: impl FnMut(Progress),
    ) -> Result<Option<String>, Error> {
        let (mut offset, mut file_url) = self.offset(url).await?;
        let mut tries = Tries::new(&self.retry);
        let mut prefetch = None;
        while offset < len {
            progress(Progress {
                sent: offset,
                total: len,
            });
            let range = Range {
                file_start: start,
                offset,
                total: len,
            };
            match self
                .patch_from(
                    url,
                    path,
                    range,
                    opts,
                    (&mut prefetch, running),
                    &mut progress,
                )
                .await
            {
                Ok((now, file)) => {
                    if now > offset {
                        tries.reset();
                    }
                    (offset, file_url) = (now, file);
                }
                Err(e) => {
                    tries.after(e).await?;
                    (offset, file_url) = self.offset(url).await?;
                }
            }
        }
        if offset > len {
            return Err(Error::Usage(format!(
                "the upload has {offset} bytes, more than {} has ({len})",
                path.display()
            )));
        }
        progress(Progress {
            sent: len,
            total: len,
        });
        Ok(file_url)
    }

    /// One PATCH from `offset`: the rest of the file, or a chunk of it. Answers the new
    /// offset and, once the upload is finished, its file's URL.
    async fn patch_from(
        &self,
        url: &str,
        path: &Path,
        Range {
            file_start,
            offset,
            total,
        }: Range,
        opts: &UploadOptions,
        (prefetch, running): (&mut Prefetch, &Running),
        progress: &mut impl FnMut(Progress),
    ) -> Result<(u64, Option<String>), Error> {
        let chunk = match (opts.chunk_size, opts.checksum) {
            (Some(c), _) => c.max(1),
            (None, Some(_)) => CHECKSUM_CHUNK,
            (None, None) => total,
        };
        let len = chunk.min(total - offset);
        let sent = Arc::new(AtomicU64::new(0));
        let protocol = Protocol::of(url);
        let mut req = protocol
            .mark(self.request(Method::PATCH, url))
            .header("Upload-Offset", offset)
            .header("Content-Length", len);
        req = match protocol {
            Protocol::Tus => req.header("Content-Type", "application/offset+octet-stream"),
            Protocol::Draft => req
                .header("Content-Type", "application/partial-upload")
                .header(
                    "Upload-Complete",
                    if offset + len == total { "?1" } else { "?0" },
                ),
        };
        if let Some(algorithm) = opts.checksum {
            // This chunk, read and hashed while the last one was on its way (or now); and
            // the next one started, to be ready when this one is sent.
            let at = file_start + offset;
            let checked = match prefetch.take() {
                Some((a, l, h)) if (a, l) == (at, len) => {
                    h.await.map_err(|e| Error::Usage(e.to_string()))??
                }
                _ => read_checked(path.to_path_buf(), at, len, algorithm).await?,
            };
            let next = offset + len;
            if next < total {
                let (a, l) = (file_start + next, chunk.min(total - next));
                let task = tokio::task::spawn_blocking({
                    let path = path.to_path_buf();
                    move || read_checked_blocking(&path, a, l, algorithm)
                });
                *prefetch = Some((a, l, task));
            }
            running.feed(at, &checked.body);
            req = req
                .header("Upload-Checksum", checked.header)
                .body(checked.body);
        } else {
            let mut file = tokio::fs::File::open(path).await.map_err(io(path))?;
            file.seek(std::io::SeekFrom::Start(file_start + offset))
                .await
                .map_err(io(path))?;
            let counter = sent.clone();
            let running = running.clone();
            let mut pos = file_start + offset;
            let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 << 10)
                .inspect(move |r| {
                    if let Ok(b) = r {
                        counter.fetch_add(b.len() as u64, Ordering::Relaxed);
                        running.feed(pos, b);
                        pos += b.len() as u64;
                    }
                });
            req = req.body(reqwest::Body::wrap_stream(stream));
        }
        let send = req.send();
        tokio::pin!(send);
        let res = loop {
            tokio::select! {
                r = &mut send => break r?,
                _ = tokio::time::sleep(TICK) => progress(Progress {
                    sent: offset + sent.load(Ordering::Relaxed),
                    total,
                }),
            }
        };
        self.position(check(res).await?, protocol, "PATCH").await
    }

    /// Runs `f` until it succeeds, fails for good, or fails `retry.attempts` times in a row.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut f: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut tries = Tries::new(&self.retry);
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) => tries.after(e).await?,
            }
        }
    }

    /// Downloads `url` (a file's `/api/files/ID`, a `/tus/ID`, a download link) to `dest`.
    /// Bytes already in `dest` are kept when the server's file is still the same (`If-Range`
    /// with its ETag) and only the rest is fetched; a cut is resumed the same way. The whole
    /// file's digest must be the server's ETag (sha256, or blake3 on a server that keeps
    /// only that), else [`Error::Integrity`].
    pub async fn download(
        &self,
        url: &str,
        dest: &Path,
        mut progress: impl FnMut(Progress),
    ) -> Result<Downloaded, Error> {
        let mut tries = Tries::new(&self.retry);
        let mut resumed_from = None;
        loop {
            match self.download_once(url, dest, &mut progress).await {
                Ok((total, have, etag)) => {
                    let digest = verify(dest, &etag).await?;
                    return Ok(Downloaded {
                        size: total,
                        resumed_from: resumed_from.unwrap_or(have),
                        digest,
                    });
                }
                Err((e, have)) => {
                    tries.after(e).await?;
                    resumed_from.get_or_insert(have);
                }
            }
        }
    }

    /// Checks the stored file at `file_url` (`/api/files/ID`) against the local file at
    /// `path`: its digest must be the server's ETag (sha256, or blake3), else
    /// [`Error::Integrity`]. Answers the digest. Costs one read of the local file.
    /// With `sent` (an [`Uploaded`]'s `sha256`), a server's sha256 ETag is checked against
    /// it, without reading the file again.
    pub async fn verify_upload(
        &self,
        file_url: &str,
        path: &Path,
        sent: Option<&str>,
    ) -> Result<String, Error> {
        let etag = self.retrying(|| self.etag(file_url)).await?;
        let tag = etag.trim_start_matches("W/").trim_matches('"');
        match sent {
            Some(sha) if tag.eq_ignore_ascii_case(sha) => Ok(sha.to_string()),
            _ => verify(path, &etag).await,
        }
    }

    async fn etag(&self, url: &str) -> Result<String, Error> {
        let res = check(self.request(Method::HEAD, url).send().await?).await?;
        Ok(res
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string())
    }

    /// One try: answers (the file's size, bytes kept from before, the ETag the bytes were
    /// fetched under), or the failure and the bytes there were before this try.
    async fn download_once(
        &self,
        url: &str,
        dest: &Path,
        progress: &mut impl FnMut(Progress),
    ) -> Result<(u64, u64, String), (Error, u64)> {
        let have = tokio::fs::metadata(dest).await.map_or(0, |m| m.len());
        let fail = |e: Error| (e, have);
        let etag = self.etag(url).await.map_err(fail)?;
        let mut req = self.request(Method::GET, url);
        if have > 0 && !etag.is_empty() {
            req = req
                .header(reqwest::header::RANGE, format!("bytes={have}-"))
                .header(reqwest::header::IF_RANGE, &etag);
        }
        let res = req.send().await.map_err(|e| fail(e.into()))?;
        if res.status() == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
            // Nothing past what is here: the file is whole, or longer than the server's.
            let total = res
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit('/').next()?.parse::<u64>().ok());
            if total == Some(have) {
                return Ok((have, have, etag));
            }
            tokio::fs::remove_file(dest)
                .await
                .map_err(|e| fail(io(dest)(e)))?;
            return Err(fail(Error::Api {
                status: 416,
                code: crate::ErrorCode::BadRange,
                message: "the local file was longer than the server's: removed".into(),
                detail: None,
                offset: None,
            }));
        }
        let res = check(res).await.map_err(fail)?;
        let partial = res.status() == reqwest::StatusCode::PARTIAL_CONTENT;
        let start = if partial { have } else { 0 };
        let total = start + res.content_length().unwrap_or(0);
        let mut out = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(!partial)
            .append(partial)
            .open(dest)
            .await
            .map_err(|e| fail(io(dest)(e)))?;
        let mut written = start;
        let mut body = res.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| fail(e.into()))?;
            out.write_all(&chunk).await.map_err(|e| fail(io(dest)(e)))?;
            written += chunk.len() as u64;
            progress(Progress {
                sent: written,
                total,
            });
        }
        out.flush().await.map_err(|e| fail(io(dest)(e)))?;
        Ok((written, start, etag))
    }
}

/// Checks the file at `path` against `etag` (a quoted hex digest: sha256, or blake3), and
/// answers the digest that matched. One pass for sha256; a second for blake3 only when the
/// first does not match.
async fn verify(path: &Path, etag: &str) -> Result<String, Error> {
    let expected = etag
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_ascii_lowercase();
    let sha = hash_file(path, false).await?;
    // A server that keeps neither digest tags files with their id: nothing to check.
    let is_digest = expected.len() == 64 && expected.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_digest {
        return Ok(sha);
    }
    if expected == sha || expected == hash_file(path, true).await? {
        Ok(expected)
    } else {
        Err(Error::Integrity { expected, got: sha })
    }
}

/// The hex sha256 (or blake3) of the file at `path`, read on the blocking pool.
async fn hash_file(path: &Path, blake3: bool) -> Result<String, Error> {
    let owned: PathBuf = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut f = std::fs::File::open(&owned)?;
        let mut sha = sha2::Sha256::new();
        let mut b3 = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf)?;
            if n == 0 {
                break;
            }
            if blake3 {
                b3.update(&buf[..n]);
            } else {
                sha.update(&buf[..n]);
            }
        }
        Ok(if blake3 {
            b3.finalize().to_hex().to_string()
        } else {
            hex::encode(sha.finalize())
        })
    })
    .await
    .map_err(|e| Error::Usage(e.to_string()))?
    .map_err(io(path))
}
