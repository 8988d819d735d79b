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
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use tokio::runtime::Handle;
use tokio_util::io::ReaderStream;

use super::{ByteStream, Capabilities, Source, StagedWrite, Storage, StorageError, validate_key};

/// Most bytes of one upload gathered in memory before they are written as a segment.
const SEGMENT_MAX: usize = 8 << 20;
/// Part size of the multipart uploads that assemble staged objects and large files.
const PART_SIZE: usize = 8 << 20;

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

impl S3Config {
    /// Parses `s3://bucket[/prefix]`.
    pub fn bucket_and_prefix(url: &str) -> Option<(String, String)> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return None;
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Some((bucket.to_string(), prefix))
    }
}

#[derive(Clone)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    prefix: String,
    rt: Handle,
}

fn s3_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Io(io::Error::other(format!("S3: {e}")))
}

/// A GetObject failure: NotFound for a missing key, else an I/O error.
fn get_err<R>(e: SdkError<GetObjectError, R>, key: &str) -> StorageError
where
    SdkError<GetObjectError, R>: std::fmt::Display,
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
            Ok(out.body.collect().await.map_err(s3_err)?.into_bytes())
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

    /// Writes `next` pieces (each at most `PART_SIZE`, the last may be shorter) as one object,
    /// by a multipart upload when there is more than one part.
    fn put_parts(
        &self,
        name: &str,
        mut next: impl FnMut() -> Result<Option<Vec<u8>>, StorageError>,
    ) -> Result<(), StorageError> {
        let Some(first) = next()? else {
            return self.put_bytes(name, Vec::new());
        };
        let Some(second) = next()? else {
            return self.put_bytes(name, first);
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
            .ok_or_else(|| s3_err("no multipart upload id"))?
            .to_string();
        let result = (|| {
            let mut parts = Vec::new();
            let mut pending = vec![first, second];
            let mut n = 1i32;
            loop {
                for body in pending.drain(..) {
                    let out = self
                        .block(
                            self.client
                                .upload_part()
                                .bucket(&self.bucket)
                                .key(name)
                                .upload_id(&upload_id)
                                .part_number(n)
                                .body(S3Body::from(body))
                                .send(),
                        )
                        .map_err(s3_err)?;
                    parts.push(
                        CompletedPart::builder()
                            .set_e_tag(out.e_tag().map(str::to_string))
                            .part_number(n)
                            .build(),
                    );
                    n += 1;
                }
                match next()? {
                    Some(b) => pending.push(b),
                    None => break,
                }
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

/// Reads `PART_SIZE` pieces from a reader.
fn read_part(r: &mut dyn Read) -> Result<Option<Vec<u8>>, StorageError> {
    let mut buf = Vec::with_capacity(PART_SIZE);
    r.take(PART_SIZE as u64).read_to_end(&mut buf)?;
    Ok((!buf.is_empty()).then_some(buf))
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

/// Reads a staged object segment by segment (one in memory at a time).
struct SegmentReader {
    store: S3Storage,
    names: VecDeque<String>,
    current: Bytes,
}

impl Read for SegmentReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            let Some(name) = self.names.pop_front() else {
                return Ok(0);
            };
            self.current = self.store.get_bytes(&name).map_err(io::Error::other)?;
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
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
            current: Bytes::new(),
        }))
    }

    fn abort(&self, key: &str) -> Result<(), StorageError> {
        for (name, _, _) in self.segments(key)? {
            self.delete_name(&name)?;
        }
        Ok(())
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
                let mut r = self.read_staged(staged)?;
                self.put_parts(&name, || read_part(&mut r))?;
                self.abort(staged)
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
