//! Placing a staged object: its segments become one object by a multipart upload. The plan
//! (`assembly_plan`) has the bucket copy segments of 5 MiB and more (UploadPartCopy) and
//! gathers smaller ones into `PART_SIZE` parts sent from here, up to `PARTS_IN_FLIGHT` at
//! once.

use std::collections::VecDeque;
use std::io::Read;

use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::task::JoinHandle;

use super::{S3Storage, s3_err, s3_msg};
use crate::storage::StorageError;

/// Part size of the multipart uploads that assemble staged objects and large files.
pub(super) const PART_SIZE: usize = 8 << 20;

/// S3's smallest part (but the last) of a multipart upload.
pub(super) const MIN_PART: usize = 5 << 20;

/// Parts of one assembly uploaded at the same time, and of those at most this many carrying
/// bytes from this node (`PART_SIZE` each in memory).
pub(super) const PARTS_IN_FLIGHT: usize = 8;

pub(super) const BYTES_IN_FLIGHT: usize = 2;

pub(super) type PartResult = Result<CompletedPart, StorageError>;

/// One part of an object being assembled.
pub(super) enum Piece {
    /// Bytes sent from here.
    Bytes(Vec<u8>),
    /// A whole object of the bucket, copied by the server (UploadPartCopy).
    Copy(String),
}

/// Reads `PART_SIZE` pieces from a reader.
pub(super) fn read_part(r: &mut dyn Read) -> Result<Option<Piece>, StorageError> {
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
pub(super) enum Step {
    Copy,
    Read,
}

pub(super) fn assembly_plan(sizes: &[u64]) -> Vec<Step> {
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
pub(super) struct Assembly {
    pub(super) store: S3Storage,
    pub(super) segments: VecDeque<(String, Step)>,
    pub(super) gathered: Vec<u8>,
    pub(super) ready: VecDeque<Piece>,
}

impl Assembly {
    pub(super) fn next(&mut self) -> Result<Option<Piece>, StorageError> {
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

impl S3Storage {
    /// Copies object `from` to `to` inside the bucket (the server copies, no bytes here).
    pub(super) fn copy_name(&self, from: &str, to: &str) -> Result<(), StorageError> {
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
    pub(super) fn copy_source(&self, name: &str) -> String {
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
    pub(super) fn send_part(
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

    pub(super) fn join_part(&self, task: JoinHandle<PartResult>) -> PartResult {
        self.block(task)
            .map_err(|e| s3_msg(format!("part upload task: {e}")))?
    }

    /// Writes `next` pieces as one object, by a multipart upload when there is more than one:
    /// every piece but the last at least S3's 5 MiB part minimum.
    pub(super) fn put_parts(
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
