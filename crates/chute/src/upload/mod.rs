//! The upload engine: every protocol adapter drives the same handler chain, storage and
//! catalog through it.
//!
//! - [`handler`]: Django's upload-handler contract and the [`handler::Chain`] that runs it.
//! - [`pipeline`]: the per-upload thread that runs a chain, fed by the adapter.
//! - [`handlers`]: the built-in handlers, one per file.
//! - [`resumable`]: append-at-offset uploads that survive restarts (for the chunked and tus
//!   protocols).

pub mod events;
pub mod handler;
pub mod handlers;
pub mod hashing;
pub mod hooks;
pub mod limits;
pub mod links;
pub mod pipeline;
pub mod progress;
pub mod resumable;
pub mod running_digests;
pub mod sessions;
pub mod users;

use std::sync::Arc;

use thiserror::Error;

use crate::config::Settings;
use crate::events::EventType;
use crate::meta::{FileRecord, MetaError, MetaStore, now_unix};
use crate::storage::{Source, Storage, StorageError};
use handler::{CompletedFile, FileBody};

#[derive(Debug, Error)]
pub enum UploadError {
    #[error("quota exceeded: the quota is {quota} bytes and {used} are already stored")]
    QuotaExceeded { quota: u64, used: u64 },
    #[error("the upload is larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("the content of `{name}` is {detected}, which its name and declared type do not say")]
    TypeMismatch { name: String, detected: String },
    #[error("{0}")]
    Rejected(String),
    /// The application's pre-create or pre-finish hook refused the file, with this status.
    #[error("{message}")]
    HookRejected { status: u16, message: String },
    /// A blocking hook could not be asked or gave no usable answer (fail closed).
    #[error("the application's hook failed: {0}")]
    HookFailed(String),
    /// A file refused by validation, with a short reason and a sentence for people.
    #[error("{error}: {verbose}")]
    Invalid { error: String, verbose: String },
    /// The malware scanner could not give a verdict (fail closed).
    #[error("the malware scanner is unavailable: {0}")]
    ScannerUnavailable(String),
    #[error("the upload was stopped by a handler")]
    Stopped,
    #[error("the client went away before the upload finished")]
    Interrupted,
    #[error("the upload is at offset {current}, not at the offset given")]
    OffsetMismatch { current: u64 },
    #[error("the {algorithm} checksum of the request's bytes does not match")]
    ChecksumMismatch { algorithm: &'static str },
    #[error("upload not found")]
    NotFound,
    #[error("the upload is already complete")]
    AlreadyComplete,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal: {0}")]
    Internal(String),
}

/// The engine: storage, catalog and settings, shared by every protocol adapter.
#[derive(Clone)]
pub struct Engine {
    pub storage: Arc<dyn Storage>,
    pub meta: Arc<dyn MetaStore>,
    pub settings: Arc<Settings>,
    /// Locks and running digests of resumable uploads on this node.
    pub uploads: Arc<resumable::UploadRegistry>,
    /// Which events are recorded, and news of committed ones.
    pub events: Arc<events::Events>,
    /// The blocking hooks, when pre-create or pre-finish is on.
    pub gate: Option<Arc<crate::hooks::Gate>>,
    /// The download links' keys, as this node last read them.
    pub links: Arc<links::LinkKeys>,
    /// What this server counts and times (`GET /metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

pub fn new_file_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

impl Engine {
    pub fn new(
        storage: Arc<dyn Storage>,
        meta: Arc<dyn MetaStore>,
        settings: Arc<Settings>,
    ) -> Self {
        // Every storage operation and catalog call is timed, whatever the backends.
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let storage = crate::storage::measured::MeasuredStorage::wrap(storage, metrics.clone());
        let meta = crate::meta::measured::MeasuredMeta::wrap(meta, metrics.clone());
        let uploads = match meta.cluster_locks() {
            Some(cluster) => resumable::UploadRegistry::with_cluster(cluster),
            None => Arc::default(),
        };
        Self {
            storage,
            meta,
            events: Arc::new(events::Events::new(&settings)),
            gate: crate::hooks::Gate::new(&settings).map(Arc::new),
            settings,
            uploads,
            links: Arc::default(),
            metrics,
        }
    }

    /// The configured checksums (`file_upload_checksums`) plus those a protocol needs,
    /// sorted and without repeats.
    pub fn checksum_algorithms(
        &self,
        extra: &[crate::checksum::Algorithm],
    ) -> Vec<crate::checksum::Algorithm> {
        self.settings.file_upload_checksums.with(extra)
    }

    /// Places a completed file in storage (durably) and then records it in the catalog, so
    /// that the catalog never lists bytes that could still be lost.
    pub async fn persist(
        &self,
        owner_id: i64,
        quota: Option<u64>,
        done: CompletedFile,
    ) -> Result<FileRecord, UploadError> {
        self.pre_finish_file(owner_id, &done, events::MULTIPART, None)
            .await?;
        let record = self.place(owner_id, done).await?;
        let events = self
            .event(EventType::UploadFinished, &record.id, owner_id, |user| {
                events::finished_data(&record, events::MULTIPART, None, user, None)
            })
            .await;
        // The quota is checked again as the file joins the catalog, atomically: uploads that
        // streamed side by side cannot all pass it.
        if let Err(e) = self
            .meta
            .insert_file(&record, self.quota_of(owner_id, quota), &events)
            .await
        {
            self.delete_object(record.storage_key.clone()).await;
            return Err(e.into());
        }
        self.events.announce(&events);
        self.metrics.file_stored(events::MULTIPART);
        Ok(record)
    }

    /// Places a completed file in storage, durably, and returns its catalog record, not yet
    /// inserted: the caller records it (or deletes the object if it cannot).
    pub async fn place(
        &self,
        owner_id: i64,
        done: CompletedFile,
    ) -> Result<FileRecord, UploadError> {
        let id = new_file_id();
        let key = crate::storage::storage_key_for(&id);
        let storage = self.storage.clone();
        let k = key.clone();
        let CompletedFile {
            info,
            size,
            facts,
            file,
        } = done;
        let stored_size = file.stored_size;
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            match file.body {
                FileBody::Memory(bytes) => storage.put(&k, Source::Bytes(&bytes)),
                FileBody::Temp(path) => storage.put(&k, Source::TempFile(&path)),
                // The guard removes the staged object once it is placed (dropped here).
                FileBody::Staged(guard) => storage.put(&k, Source::Staged(&guard.key)),
            }
        })
        .await
        .map_err(|e| UploadError::Internal(e.to_string()))??;
        let mut record = FileRecord {
            id,
            owner_id,
            name: info.file_name,
            size,
            stored_size,
            content_type: info.content_type,
            detected_type: facts.detected_type.clone(),
            encoding: facts.encoding.clone(),
            storage_key: key.clone(),
            md5: None,
            sha1: None,
            sha256: None,
            blake3: None,
            created_at: now_unix(),
        };
        record.set_checksums(facts.checksums.iter().map(|(a, h)| (*a, h)));
        Ok(record)
    }

    /// Removes a file from the catalog, then its bytes. None when the owner has no such file.
    pub async fn delete_file(
        &self,
        owner_id: i64,
        id: &str,
    ) -> Result<Option<FileRecord>, UploadError> {
        let events = match self.events.records(EventType::FileDeleted) {
            true => match self.meta.get_file(id).await? {
                Some(f) if f.owner_id == owner_id => {
                    self.event(EventType::FileDeleted, id, owner_id, |user| {
                        events::deleted_data(&f, user)
                    })
                    .await
                }
                _ => Vec::new(),
            },
            false => Vec::new(),
        };
        let Some(rec) = self.meta.delete_file(owner_id, id, &events).await? else {
            return Ok(None);
        };
        self.events.announce(&events);
        self.delete_object(rec.storage_key.clone()).await;
        Ok(Some(rec))
    }

    pub(crate) async fn delete_object(&self, key: String) {
        let storage = self.storage.clone();
        let res = tokio::task::spawn_blocking(move || storage.delete(&key)).await;
        if let Ok(Err(e)) = res {
            tracing::warn!(error = %e, "could not delete stored object");
        }
    }
}
