//! S3-compatible object storage (AWS S3, Garage, MinIO, ...), for several stateless nodes that
//! share nothing but the catalog and the bucket (`storage_url = "s3://bucket/prefix"`).
//!
//! Layout under the prefix:
//! ```text
//! objects/<key>                      finished files
//! staging/<key>/<offset, 20 digits>  segments of an object being written, in order
//! ```
//! A staged object is a run of segments, each one PutObject of the bytes written since the
//! previous segment: at every `sync` (what the engine then records as the offset is durable
//! in the bucket), and whenever `SEGMENT_MAX` bytes have gathered (so that a node holds at
//! most that much of an upload in memory). Segments can be read back (to recompute digests
//! or to sniff), which the parts of an unfinished multipart upload cannot; resuming at an
//! offset drops the segments past it (bytes written but never acknowledged). Placing a staged
//! object assembles its segments into one object by a multipart upload of `PART_SIZE` parts
//! (S3's 5 MiB minimum), then deletes them. The trait is blocking (see `storage`), so each
//! call runs the SDK's future on the runtime it was opened in; callers are on blocking
//! threads.

use std::collections::VecDeque;
use std::io::{self, Read};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::io::ReaderStream;

use super::{ByteStream, Capabilities, Source, StagedWrite, Storage, StorageError, validate_key};

/// Most bytes of one upload gathered in memory before they are written as a segment.
const SEGMENT_MAX: usize = 8 << 20;
/// Part size of the multipart uploads that assemble staged objects and large files.
const PART_SIZE: usize = 8 << 20;
/// S3's smallest part (but the last) of a multipart upload.
const MIN_PART: usize = 5 << 20;
/// Parts of one assembly uploaded at the same time, and of those at most this many carrying
/// bytes from this node (`PART_SIZE` each in memory).
const PARTS_IN_FLIGHT: usize = 8;
const BYTES_IN_FLIGHT: usize = 2;

type PartResult = Result<CompletedPart, StorageError>;

/// Where and how to reach the bucket.
#[derive(Clone, Debug)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket ("" or ending in '/').
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style addressing (`endpoint/bucket/key`), which self-hosted servers want.
    pub path_style: bool,
}

#[derive(Clone)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    prefix: String,
    rt: Handle,
}

/// An SDK error as the service's code and message (the SDK's own Display of a service error
/// says only "service error"), else with its chain of causes.
fn s3_err<E>(e: E) -> StorageError
where
    E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata,
{
    match (e.code(), e.message()) {
        (Some(code), message) => s3_msg(format!("{code}: {}", message.unwrap_or(""))),
        _ => s3_msg(aws_sdk_s3::error::DisplayErrorContext(e)),
    }
}

fn s3_msg(e: impl std::fmt::Display) -> StorageError {
    StorageError::Io(io::Error::other(format!("S3: {e}")))
}

/// A GetObject failure: NotFound for a missing key, else an I/O error.
fn get_err<R>(e: SdkError<GetObjectError, R>, key: &str) -> StorageError
where
    SdkError<GetObjectError, R>: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata,
{
    if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
        StorageError::NotFound(key.to_string())
    } else {
        s3_err(e)
    }
}

impl S3Storage {
    /// A client for the bucket; must be called inside a tokio runtime (whose handle runs the
    /// blocking calls later).
    pub fn open(c: &S3Config) -> Self {
        let creds = Credentials::new(&c.access_key_id, &c.secret_access_key, None, None, "chute");
        let mut b = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(c.region.clone()))
            .credentials_provider(creds)
            .force_path_style(c.path_style);
        if let Some(e) = &c.endpoint {
            b = b.endpoint_url(e);
        }
        Self {
            client: Client::from_conf(b.build()),
            bucket: c.bucket.clone(),
            prefix: c.prefix.clone(),
            rt: Handle::current(),
        }
    }

    fn object(&self, key: &str) -> Result<String, StorageError> {
        validate_key(key)?;
        Ok(format!("{}objects/{key}", self.prefix))
    }

    fn segments_prefix(&self, key: &str) -> Result<String, StorageError> {
        validate_key(key)?;
        Ok(format!("{}staging/{key}/", self.prefix))
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn put_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.block(
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(name)
                .body(S3Body::from(bytes))
                .send(),
        )
        .map_err(s3_err)?;
        Ok(())
    }

    fn get_bytes(&self, name: &str) -> Result<Bytes, StorageError> {
        self.block(async {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(name)
                .send()
                .await
                .map_err(|e| get_err(e, name))?;
            Ok(out.body.collect().await.map_err(s3_msg)?.into_bytes())
        })
    }

    fn delete_name(&self, name: &str) -> Result<(), StorageError> {
        self.block(
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(name)
                .send(),
        )
        .map_err(s3_err)?;
        Ok(())
    }

    /// Deletes objects, up to 1000 per request (DeleteObjects).
    fn delete_names(&self, names: &[String]) -> Result<(), StorageError> {
        if let [one] = names {
            return self.delete_name(one);
        }
        for batch in names.chunks(1000) {
            let objects = batch
                .iter()
                .map(|n| ObjectIdentifier::builder().key(n).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(s3_msg)?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(s3_msg)?;
            let out = self
                .block(
                    self.client
                        .delete_objects()
                        .bucket(&self.bucket)
                        .delete(delete)
                        .send(),
                )
                .map_err(s3_err)?;
            if let Some(e) = out.errors().first() {
                return Err(s3_msg(format!(
                    "deleting {}: {} {}",
                    e.key().unwrap_or("?"),
                    e.code().unwrap_or(""),
                    e.message().unwrap_or("")
                )));
            }
        }
        Ok(())
    }

    /// The segments of a staged object: (name, start offset, size), in order.
    fn segments(&self, key: &str) -> Result<Vec<(String, u64, u64)>, StorageError> {
        let prefix = self.segments_prefix(key)?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .block(
                    self.client
                        .list_objects_v2()
                        .bucket(&self.bucket)
                        .prefix(&prefix)
                        .set_continuation_token(token.clone())
                        .send(),
                )
                .map_err(s3_err)?;
            for o in page.contents() {
                let (Some(name), Some(size)) = (o.key(), o.size()) else {
                    continue;
                };
                let Some(start) = name
                    .strip_prefix(&prefix)
                    .and_then(|s| s.parse::<u64>().ok())
                else {
                    continue;
                };
                out.push((name.to_string(), start, size.max(0) as u64));
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by_key(|s| s.1);
        Ok(out)
    }

    /// Copies object `from` to `to` inside the bucket (the server copies, no bytes here).
    fn copy_name(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.block(
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(self.copy_source(from))
                .send(),
        )
        .map_err(s3_err)?;
        Ok(())
    }

    /// `bucket/key` as CopyObject and UploadPartCopy want it (URL-encoded).
    fn copy_source(&self, name: &str) -> String {
        const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'/')
            .remove(b'-')
            .remove(b'_')
            .remove(b'.')
            .remove(b'~');
        format!(
            "{}/{}",
            self.bucket,
            percent_encoding::utf8_percent_encode(name, KEEP)
        )
    }

    /// Uploads one part of multipart upload `upload_id` (a task on the runtime).
    fn send_part(
        &self,
        name: &str,
        upload_id: &str,
        n: i32,
        piece: Piece,
    ) -> impl std::future::Future<Output = PartResult> + Send + 'static {
        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        let (name, upload_id) = (name.to_string(), upload_id.to_string());
        // The copy source is named here, where the bucket is known.
        let piece = match piece {
            Piece::Copy(from) => Piece::Copy(self.copy_source(&from)),
            bytes => bytes,
        };
        async move {
            let e_tag = match piece {
                Piece::Copy(source) => client
                    .upload_part_copy()
                    .bucket(bucket)
                    .key(name)
                    .upload_id(upload_id)
                    .part_number(n)
                    .copy_source(source)
                    .send()
                    .await
                    .map_err(s3_err)?
                    .copy_part_result()
                    .and_then(|r| r.e_tag())
                    .map(str::to_string),
                Piece::Bytes(body) => client
                    .upload_part()
                    .bucket(bucket)
                    .key(name)
                    .upload_id(upload_id)
                    .part_number(n)
                    .body(S3Body::from(body))
                    .send()
                    .await
                    .map_err(s3_err)?
                    .e_tag()
                    .map(str::to_string),
            };
            Ok(CompletedPart::builder()
                .set_e_tag(e_tag)
                .part_number(n)
                .build())
        }
    }

    fn join_part(&self, task: JoinHandle<PartResult>) -> PartResult {
        self.block(task)
            .map_err(|e| s3_msg(format!("part upload task: {e}")))?
    }

    /// Writes `next` pieces as one object, by a multipart upload when there is more than one:
    /// every piece but the last at least S3's 5 MiB part minimum.
    fn put_parts(
        &self,
        name: &str,
        mut next: impl FnMut() -> Result<Option<Piece>, StorageError>,
    ) -> Result<(), StorageError> {
        let Some(first) = next()? else {
            return self.put_bytes(name, Vec::new());
        };
        let Some(second) = next()? else {
            return match first {
                Piece::Bytes(b) => self.put_bytes(name, b),
                Piece::Copy(from) => self.copy_name(&from, name),
            };
        };
        let created = self
            .block(
                self.client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(name)
                    .send(),
            )
            .map_err(s3_err)?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| s3_msg("no multipart upload id"))?
            .to_string();
        let mut in_flight: VecDeque<(JoinHandle<PartResult>, bool)> = VecDeque::new();
        let result = (|| {
            let mut parts = Vec::new();
            let mut pending = VecDeque::from([first, second]);
            let mut n = 1i32;
            loop {
                let piece = match pending.pop_front() {
                    Some(p) => p,
                    None => match next()? {
                        Some(p) => p,
                        None => break,
                    },
                };
                // Parts go up concurrently (a copy costs the bucket time, not this node
                // memory); at most BYTES_IN_FLIGHT of them carry bytes from here.
                let bytes = matches!(piece, Piece::Bytes(_));
                while in_flight.len() >= PARTS_IN_FLIGHT
                    || (bytes && in_flight.iter().filter(|p| p.1).count() >= BYTES_IN_FLIGHT)
                {
                    let Some((oldest, _)) = in_flight.pop_front() else {
                        break;
                    };
                    parts.push(self.join_part(oldest)?);
                }
                let task = self.send_part(name, &upload_id, n, piece);
                in_flight.push_back((self.rt.spawn(task), bytes));
                n += 1;
            }
            while let Some((oldest, _)) = in_flight.pop_front() {
                parts.push(self.join_part(oldest)?);
            }
            self.block(
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(name)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send(),
            )
            .map_err(s3_err)?;
            Ok(())
        })();
        for (task, _) in in_flight {
            // A part failed: the others are not waited for (the upload is aborted below).
            task.abort();
        }
        if result.is_err() {
            let _ = self.block(
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(name)
                    .upload_id(&upload_id)
                    .send(),
            );
        }
        result
    }
}

/// One part of an object being assembled.
enum Piece {
    /// Bytes sent from here.
    Bytes(Vec<u8>),
    /// A whole object of the bucket, copied by the server (UploadPartCopy).
    Copy(String),
}

/// Reads `PART_SIZE` pieces from a reader.
fn read_part(r: &mut dyn Read) -> Result<Option<Piece>, StorageError> {
    let mut buf = Vec::with_capacity(PART_SIZE);
    r.take(PART_SIZE as u64).read_to_end(&mut buf)?;
    Ok((!buf.is_empty()).then_some(Piece::Bytes(buf)))
}

/// How a staged object's segments become parts: a segment of at least `MIN_PART` bytes that
/// starts a part is copied by the bucket itself, without its bytes coming
/// back through this node; the others are read and gathered into `PART_SIZE` parts. So an
/// upload sent in large requests (one PATCH, 8 MiB chunks) is assembled server-side, and one
/// sent in small requests as before. Every part but the last is at least `MIN_PART`.
#[derive(Debug, PartialEq)]
enum Step {
    Copy,
    Read,
}

fn assembly_plan(sizes: &[u64]) -> Vec<Step> {
    if let [size] = sizes
        && *size > 0
    {
        // One segment is the whole object: CopyObject, which has no minimum size.
        return vec![Step::Copy];
    }
    let mut plan = Vec::with_capacity(sizes.len());
    let mut gathered = 0u64;
    for &size in sizes {
        // Not a short last segment either: Garage refuses to copy a source under 5 MiB even
        // as the last part (AWS documents the same minimum for copied parts).
        if gathered == 0 && size >= MIN_PART as u64 {
            plan.push(Step::Copy);
        } else {
            plan.push(Step::Read);
            gathered = (gathered + size) % PART_SIZE as u64;
        }
    }
    plan
}

/// Yields the parts of a staged object by its plan: copies as they are, reads gathered into
/// `PART_SIZE` parts. In memory at once: one segment, the part being gathered and one ready,
/// besides the `BYTES_IN_FLIGHT` parts `put_parts` is sending.
struct Assembly {
    store: S3Storage,
    segments: VecDeque<(String, Step)>,
    gathered: Vec<u8>,
    ready: VecDeque<Piece>,
}

impl Assembly {
    fn next(&mut self) -> Result<Option<Piece>, StorageError> {
        loop {
            if let Some(p) = self.ready.pop_front() {
                return Ok(Some(p));
            }
            let Some((name, step)) = self.segments.pop_front() else {
                let rest = std::mem::take(&mut self.gathered);
                return Ok((!rest.is_empty()).then_some(Piece::Bytes(rest)));
            };
            match step {
                Step::Copy => self.ready.push_back(Piece::Copy(name)),
                Step::Read => {
                    let mut bytes = self.store.get_bytes(&name)?;
                    while !bytes.is_empty() {
                        let take = (PART_SIZE - self.gathered.len()).min(bytes.len());
                        self.gathered.extend_from_slice(&bytes.split_to(take));
                        if self.gathered.len() == PART_SIZE {
                            let full = std::mem::replace(
                                &mut self.gathered,
                                Vec::with_capacity(PART_SIZE),
                            );
                            self.ready.push_back(Piece::Bytes(full));
                        }
                    }
                }
            }
        }
    }
}

struct S3Staged {
    store: S3Storage,
    prefix: String,
    /// Bytes staged in all (segments written plus `buf`).
    len: u64,
    /// Bytes gathered since the last segment, which starts at `len - buf.len()`.
    buf: Vec<u8>,
}

impl S3Staged {
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let start = self.len - self.buf.len() as u64;
        let body = std::mem::take(&mut self.buf);
        self.store
            .put_bytes(&format!("{}{start:020}", self.prefix), body)
            .map_err(io::Error::other)
    }
}

impl StagedWrite for S3Staged {
    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let take = (SEGMENT_MAX - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            self.len += take as u64;
            data = &data[take..];
            if self.buf.len() >= SEGMENT_MAX {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<u64> {
        self.flush()?;
        Ok(self.len)
    }
}

/// Reads a staged object segment by segment, streaming each GetObject body: a reader that
/// stops early (the sniffer wants the first 8 KiB) fetches no more than it reads, and no
/// whole segment sits in memory.
struct SegmentReader {
    store: S3Storage,
    names: VecDeque<String>,
    current: Option<std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>>,
}

impl Read for SegmentReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        use tokio::io::AsyncReadExt;
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(body) = self.current.as_mut() {
                let n = self.store.block(body.read(out))?;
                if n > 0 {
                    return Ok(n);
                }
                self.current = None;
            }
            let Some(name) = self.names.pop_front() else {
                return Ok(0);
            };
            let body = self.store.block(async {
                let out = self
                    .store
                    .client
                    .get_object()
                    .bucket(&self.store.bucket)
                    .key(&name)
                    .send()
                    .await
                    .map_err(|e| get_err(e, &name))?;
                Ok::<_, StorageError>(out.body.into_async_read())
            });
            self.current = Some(Box::pin(body.map_err(io::Error::other)?));
        }
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            resume: true,
            concatenation: false,
            range_reads: true,
        }
    }

    fn begin(&self, key: &str) -> Result<Box<dyn StagedWrite>, StorageError> {
        self.abort(key)?;
        Ok(Box::new(S3Staged {
            store: self.clone(),
            prefix: self.segments_prefix(key)?,
            len: 0,
            buf: Vec::new(),
        }))
    }

    fn resume(&self, key: &str, offset: u64) -> Result<Box<dyn StagedWrite>, StorageError> {
        let prefix = self.segments_prefix(key)?;
        let mut len = 0u64;
        let mut keep_tail: Option<Vec<u8>> = None;
        for (name, start, size) in self.segments(key)? {
            if start >= offset || start != len {
                // Past the acknowledged offset (or not contiguous): never promised.
                self.delete_name(&name)?;
                continue;
            }
            if start + size > offset {
                // A segment running past the offset: keep its acknowledged head.
                let bytes = self.get_bytes(&name)?;
                keep_tail = Some(bytes[..(offset - start) as usize].to_vec());
                self.delete_name(&name)?;
                len = offset;
                continue;
            }
            len = start + size;
        }
        if let Some(head) = keep_tail {
            let start = offset - head.len() as u64;
            self.put_bytes(&format!("{prefix}{start:020}"), head)?;
        }
        if len < offset {
            return Err(StorageError::ShortStage {
                key: key.to_string(),
                expected: offset,
                actual: len,
            });
        }
        Ok(Box::new(S3Staged {
            store: self.clone(),
            prefix,
            len: offset,
            buf: Vec::new(),
        }))
    }

    fn read_staged(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        let names = self.segments(key)?.into_iter().map(|s| s.0).collect();
        Ok(Box::new(SegmentReader {
            store: self.clone(),
            names,
            current: None,
        }))
    }

    fn abort(&self, key: &str) -> Result<(), StorageError> {
        let names: Vec<String> = self.segments(key)?.into_iter().map(|s| s.0).collect();
        self.delete_names(&names)
    }

    fn put(&self, key: &str, source: Source<'_>) -> Result<(), StorageError> {
        let name = self.object(key)?;
        match source {
            Source::Bytes(b) => self.put_bytes(&name, b.to_vec()),
            Source::TempFile(path) => {
                let mut f = std::fs::File::open(path)?;
                self.put_parts(&name, || read_part(&mut f))?;
                let _ = std::fs::remove_file(path);
                Ok(())
            }
            Source::Staged(staged) => {
                let segments = self.segments(staged)?;
                let mut at = 0u64;
                for (name, start, size) in &segments {
                    if *start != at {
                        return Err(s3_msg(format!(
                            "staged object {staged}: segment {name} starts at {start}, not {at}"
                        )));
                    }
                    at += size;
                }
                let sizes: Vec<u64> = segments.iter().map(|s| s.2).collect();
                let plan = assembly_plan(&sizes);
                let mut parts = Assembly {
                    store: self.clone(),
                    segments: segments.into_iter().map(|s| s.0).zip(plan).collect(),
                    gathered: Vec::new(),
                    ready: VecDeque::new(),
                };
                // The segments stay until the caller aborts them, after recording the file: a
                // crash before that finds them and places the object again.
                self.put_parts(&name, || parts.next())
            }
        }
    }

    fn len(&self, key: &str) -> Result<u64, StorageError> {
        let name = self.object(key)?;
        let out = self
            .block(
                self.client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(&name)
                    .send(),
            )
            .map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_not_found()) {
                    StorageError::NotFound(key.to_string())
                } else {
                    s3_err(e)
                }
            })?;
        Ok(out.content_length().unwrap_or(0).max(0) as u64)
    }

    async fn open(&self, key: &str, start: u64, len: u64) -> Result<ByteStream, StorageError> {
        let name = self.object(key)?;
        if len == 0 {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&name)
            .range(format!("bytes={start}-{}", start + len - 1))
            .send()
            .await
            .map_err(|e| get_err(e, key))?;
        let reader = out.body.into_async_read();
        Ok(Box::pin(ReaderStream::new(reader)))
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let name = self.object(key)?;
        self.delete_name(&name)
    }

    fn check(&self) -> Result<(), StorageError> {
        self.block(self.client.head_bucket().bucket(&self.bucket).send())
            .map_err(s3_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// The parts a plan makes: (bytes, copied), checked against S3's rule.
    fn parts(sizes: &[u64]) -> Vec<(u64, bool)> {
        let mut out = Vec::new();
        let mut gathered = 0u64;
        for (size, step) in sizes.iter().zip(assembly_plan(sizes)) {
            match step {
                Step::Copy => {
                    assert_eq!(gathered, 0, "a copy never follows bytes still gathering");
                    out.push((*size, true));
                }
                Step::Read => {
                    gathered += size;
                    while gathered >= PART_SIZE as u64 {
                        out.push((PART_SIZE as u64, false));
                        gathered -= PART_SIZE as u64;
                    }
                }
            }
        }
        if gathered > 0 {
            out.push((gathered, false));
        }
        let n = out.len();
        for (i, (len, copied)) in out.iter().enumerate() {
            assert!(
                i + 1 == n || *len >= MIN_PART as u64,
                "{sizes:?}: part {i} is {len}"
            );
            assert!(
                n == 1 || !copied || *len >= MIN_PART as u64,
                "{sizes:?}: a copied part of {len}"
            );
        }
        assert_eq!(
            out.iter().map(|p| p.0).sum::<u64>(),
            sizes.iter().sum::<u64>()
        );
        out
    }

    #[test]
    fn large_segments_are_copied_by_the_bucket_small_ones_gathered() {
        // One PATCH or 8 MiB PATCHes: segments of 8 MiB copied, a short tail sent.
        assert_eq!(
            parts(&[8 * MIB, 8 * MIB, 3 * MIB]),
            vec![(8 * MIB, true), (8 * MIB, true), (3 * MIB, false)]
        );
        // 1 MiB PATCHes: gathered into 8 MiB parts and a tail.
        assert_eq!(
            parts(&[MIB; 19]),
            vec![(8 * MIB, false), (8 * MIB, false), (3 * MIB, false)]
        );
        // Small then large: once bytes gather, the rest is gathered too (parts stay valid).
        let p = parts(&[2 * MIB, 8 * MIB, 8 * MIB, 6 * MIB]);
        assert!(p.iter().all(|p| !p.1));
        // Exactly 8 MiB gathered: the next large segment is copied again.
        let p = parts(&[4 * MIB, 4 * MIB, 6 * MIB, MIB]);
        assert_eq!(p, vec![(8 * MIB, false), (6 * MIB, true), (MIB, false)]);
        // One segment of any size is copied whole (CopyObject, no minimum).
        assert_eq!(parts(&[MIB]), vec![(MIB, true)]);
        // Empty segments never become parts of their own.
        assert_eq!(parts(&[0, 6 * MIB]), vec![(6 * MIB, true)]);
        assert_eq!(parts(&[]), vec![]);
    }
}
