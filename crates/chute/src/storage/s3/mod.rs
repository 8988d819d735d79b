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
//!
//! Here: the store itself (configuration, the client, `Storage`). `segments`: the staged
//! object's segments, written and read back. `assembly`: placing them as one object.

mod assembly;
mod segments;

use assembly::{Assembly, assembly_plan, read_part};
use segments::{S3Staged, SegmentReader};

use std::collections::VecDeque;
use std::io::{self, Read};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use bytes::Bytes;
use tokio::runtime::Handle;
use tokio_util::io::ReaderStream;

use super::{ByteStream, Capabilities, Source, StagedWrite, Storage, StorageError, validate_key};

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
}

#[async_trait]
impl Storage for S3Storage {
    fn backend(&self) -> &'static str {
        "s3"
    }

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
