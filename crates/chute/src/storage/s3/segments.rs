//! A staged object in the bucket: a run of segment objects (`staging/<key>/<offset>`), one
//! per sync and at most `SEGMENT_MAX` bytes each, written by `S3Staged` and read back in
//! order by `SegmentReader`.

use std::collections::VecDeque;
use std::io::{self, Read};

use super::{S3Storage, get_err, s3_err};
use crate::storage::{StagedWrite, StorageError};

/// Most bytes of one upload gathered in memory before they are written as a segment.
pub(super) const SEGMENT_MAX: usize = 8 << 20;

pub(super) struct S3Staged {
    pub(super) store: S3Storage,
    pub(super) prefix: String,
    /// Bytes staged in all (segments written plus `buf`).
    pub(super) len: u64,
    /// Bytes gathered since the last segment, which starts at `len - buf.len()`.
    pub(super) buf: Vec<u8>,
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
pub(super) struct SegmentReader {
    pub(super) store: S3Storage,
    pub(super) names: VecDeque<String>,
    pub(super) current: Option<std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>>,
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

impl S3Storage {
    /// The segments of a staged object: (name, start offset, size), in order.
    pub(super) fn segments(&self, key: &str) -> Result<Vec<(String, u64, u64)>, StorageError> {
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
}
