//! Resumable uploads: bytes appended at an offset, across requests and restarts.
//!
//! Write-ahead rule: bytes go to the staging object first and are synced; only then does the
//! recorded offset advance, by compare-and-set, to the length actually persisted, even when
//! the body broke off midway. After a crash, bytes past the recorded offset were never
//! acknowledged and are dropped by `Storage::resume`. The protocol adapters for
//! django-chunked-upload and tus build on this.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::{Engine, UploadError, new_file_id, storage_key_for};
use crate::meta::{FileRecord, UploadRecord, now_unix};

/// What an append achieved: the durable offset, and why it stopped early if it did.
#[derive(Debug)]
pub struct Appended {
    pub offset: u64,
    pub interrupted: Option<String>,
}

pub struct NewUpload<'a> {
    pub owner_id: i64,
    pub protocol: &'a str,
    pub name: &'a str,
    pub content_type: Option<&'a str>,
    pub length: Option<u64>,
    pub expires_at: Option<i64>,
    pub metadata: &'a str,
}

impl Engine {
    pub async fn create_upload(&self, n: NewUpload<'_>) -> Result<UploadRecord, UploadError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let record = UploadRecord {
            staging_key: format!("uploads/{id}"),
            id,
            owner_id: n.owner_id,
            protocol: n.protocol.to_string(),
            name: n.name.to_string(),
            content_type: n.content_type.map(str::to_string),
            offset: 0,
            length: n.length,
            state: "active".into(),
            expires_at: n.expires_at,
            metadata: n.metadata.to_string(),
            hash_state: None,
            file_id: None,
            created_at: now_unix(),
        };
        let storage = self.storage.clone();
        let key = record.staging_key.clone();
        tokio::task::spawn_blocking(move || storage.begin(&key).map(drop))
            .await
            .map_err(|e| UploadError::Internal(e.to_string()))??;
        self.meta.create_upload(&record).await?;
        Ok(record)
    }

    /// Appends `body` at `offset`, which must be the upload's recorded offset. Returns the new
    /// durable offset; a body that fails midway keeps what arrived.
    pub async fn append<S, E>(
        &self,
        id: &str,
        offset: u64,
        body: S,
    ) -> Result<Appended, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let up = self
            .meta
            .get_upload(id)
            .await?
            .ok_or(UploadError::NotFound)?;
        if up.state != "active" {
            return Err(UploadError::AlreadyComplete);
        }
        if up.offset != offset {
            return Err(UploadError::OffsetMismatch { current: up.offset });
        }
        let limit = up.length;
        let storage = self.storage.clone();
        let key = up.staging_key.clone();
        let (tx, mut rx) = mpsc::channel::<Bytes>(8);
        let writer = tokio::task::spawn_blocking(move || -> Result<u64, UploadError> {
            let mut w = storage.resume(&key, offset)?;
            while let Some(chunk) = rx.blocking_recv() {
                w.write(&chunk)?;
            }
            Ok(w.sync()?)
        });
        let mut body = body;
        let mut at = offset;
        let mut interrupted = None;
        while let Some(item) = body.next().await {
            match item {
                Ok(mut chunk) => {
                    if let Some(len) = limit
                        && at + chunk.len() as u64 > len
                    {
                        chunk.truncate((len - at) as usize);
                        interrupted = Some(format!("body goes past the upload length {len}"));
                    }
                    at += chunk.len() as u64;
                    if tx.send(chunk).await.is_err() || interrupted.is_some() {
                        break;
                    }
                }
                Err(e) => {
                    interrupted = Some(e.to_string());
                    break;
                }
            }
        }
        drop(tx);
        let durable = writer
            .await
            .map_err(|e| UploadError::Internal(e.to_string()))??;
        if !self.meta.advance_upload(id, offset, durable, None).await? {
            let current = self
                .meta
                .get_upload(id)
                .await?
                .map(|u| u.offset)
                .unwrap_or(0);
            return Err(UploadError::OffsetMismatch { current });
        }
        Ok(Appended {
            offset: durable,
            interrupted,
        })
    }

    /// Turns a fully received upload into a catalog entry.
    pub async fn complete_upload(&self, id: &str) -> Result<FileRecord, UploadError> {
        let up = self
            .meta
            .get_upload(id)
            .await?
            .ok_or(UploadError::NotFound)?;
        if up.state != "active" {
            return Err(UploadError::AlreadyComplete);
        }
        if let Some(len) = up.length
            && up.offset != len
        {
            return Err(UploadError::OffsetMismatch { current: up.offset });
        }
        let file_id = new_file_id();
        let key = storage_key_for(&file_id);
        let storage = self.storage.clone();
        let (k, staged) = (key.clone(), up.staging_key.clone());
        tokio::task::spawn_blocking(move || {
            storage.put(&k, crate::storage::Source::Staged(&staged))
        })
        .await
        .map_err(|e| UploadError::Internal(e.to_string()))??;
        let record = FileRecord {
            id: file_id,
            owner_id: up.owner_id,
            name: up.name.clone(),
            size: up.offset,
            stored_size: up.offset,
            content_type: up.content_type.clone(),
            detected_type: None,
            encoding: None,
            storage_key: key,
            md5: None,
            sha1: None,
            sha256: None,
            blake3: None,
            created_at: now_unix(),
        };
        self.meta.complete_upload(id, &record).await?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::meta::MetaStore;
    use crate::meta::sqlite::SqliteMeta;
    use crate::storage::Storage;
    use crate::storage::local::LocalStorage;
    use crate::upload::checksum::{Algorithm, digest_hex};
    use std::sync::Arc;

    async fn engine(dir: &std::path::Path) -> Engine {
        let storage: Arc<dyn Storage> =
            Arc::new(LocalStorage::open(dir.join("files"), 0o644, 0o755).expect("storage"));
        let meta: Arc<dyn MetaStore> =
            Arc::new(SqliteMeta::open(&dir.join("chute.db")).await.expect("meta"));
        Engine {
            storage,
            meta,
            settings: Arc::new(Settings::defaults()),
        }
    }

    fn pieces(data: &[u8]) -> impl Stream<Item = Result<Bytes, String>> + Send + Unpin + use<> {
        let v: Vec<Result<Bytes, String>> = data
            .chunks(1000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(v)
    }

    #[tokio::test]
    async fn append_in_pieces_resume_after_crash_and_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        let e = engine(dir.path()).await;
        let user = e.meta.create_user("u", false).await.expect("user");
        let up = e
            .create_upload(NewUpload {
                owner_id: user.id,
                protocol: "test",
                name: "data.bin",
                content_type: None,
                length: Some(data.len() as u64),
                expires_at: None,
                metadata: "{}",
            })
            .await
            .expect("create");

        let a = e
            .append(&up.id, 0, pieces(&data[..20_000]))
            .await
            .expect("append 1");
        assert_eq!(a.offset, 20_000);
        assert!(a.interrupted.is_none());

        // A body that breaks off midway keeps what arrived.
        let mut broken: Vec<Result<Bytes, String>> = data[20_000..25_000]
            .chunks(1000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        broken.push(Err("connection reset".into()));
        let a = e
            .append(&up.id, 20_000, futures::stream::iter(broken))
            .await
            .expect("append 2");
        assert_eq!(a.offset, 25_000);
        assert_eq!(a.interrupted.as_deref(), Some("connection reset"));

        // A stale offset is refused and reports the current one.
        match e.append(&up.id, 20_000, pieces(b"xx")).await {
            Err(UploadError::OffsetMismatch { current }) => assert_eq!(current, 25_000),
            other => panic!("expected a mismatch, got {other:?}"),
        }

        // Simulated crash: bytes reach the staging file but the process dies before the
        // offset is recorded. A new engine on the same data dir resumes from the record.
        {
            let mut w = e.storage.resume(&up.staging_key, 25_000).expect("resume");
            w.write(b"GARBAGE NEVER ACKNOWLEDGED").expect("write");
        }
        drop(e);
        let e = engine(dir.path()).await;
        let rec = e
            .meta
            .get_upload(&up.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(rec.offset, 25_000);
        let a = e
            .append(&up.id, 25_000, pieces(&data[25_000..]))
            .await
            .expect("append 3");
        assert_eq!(a.offset, data.len() as u64);

        let file = e.complete_upload(&up.id).await.expect("complete");
        assert_eq!(file.size, data.len() as u64);
        let mut stream = e
            .storage
            .open(&file.storage_key, 0, file.size)
            .await
            .expect("open");
        let mut stored = Vec::new();
        while let Some(c) = stream.next().await {
            stored.extend_from_slice(&c.expect("chunk"));
        }
        assert_eq!(
            digest_hex(Algorithm::Sha256, &stored),
            digest_hex(Algorithm::Sha256, &data)
        );
        assert!(matches!(
            e.complete_upload(&up.id).await,
            Err(UploadError::AlreadyComplete)
        ));
        assert!(matches!(
            e.append(&up.id, file.size, pieces(b"x")).await,
            Err(UploadError::AlreadyComplete)
        ));
        let listed = e.meta.list_files(user.id, None, 10).await.expect("list");
        assert_eq!(listed.len(), 1);
    }

    #[tokio::test]
    async fn body_past_the_length_is_cut_at_the_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path()).await;
        let user = e.meta.create_user("u", false).await.expect("user");
        let up = e
            .create_upload(NewUpload {
                owner_id: user.id,
                protocol: "test",
                name: "x",
                content_type: None,
                length: Some(1500),
                expires_at: None,
                metadata: "{}",
            })
            .await
            .expect("create");
        let a = e
            .append(&up.id, 0, pieces(&[7u8; 3000]))
            .await
            .expect("append");
        assert_eq!(a.offset, 1500);
        assert!(a.interrupted.is_some());
    }
}
