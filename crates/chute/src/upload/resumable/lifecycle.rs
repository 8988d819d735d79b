//! An upload from creation to its end: created (within the user's limits), found for its
//! owner and locked, its length declared, completed into a catalog file (crash-safe),
//! concatenated, discarded, or swept once expired.

use std::io::Read;

use super::append::pump_staged;
use super::locks::Locked;
use crate::checksum::{Algorithm, Hasher};
use crate::events::EventType;
use crate::meta::{
    FileRecord, Protocol, Quota, UploadLimits, UploadMeta, UploadRecord, UploadState, now_unix,
};
use crate::storage::storage_key_for;
use crate::upload::events;
use crate::upload::hashing::HashSet;
use crate::upload::hooks::{Creating, Finishing, Origin, encode_tus_metadata, valid_tus_key};
use crate::upload::limits::{Limits, lowest};
use crate::upload::{Engine, UploadError, new_file_id};

pub struct NewUpload<'a> {
    /// The partial uploads of a final upload (tus concatenation), claimed with its creation.
    pub parts: &'a [String],
    pub owner_id: i64,
    pub protocol: Protocol,
    pub name: &'a str,
    pub content_type: Option<&'a str>,
    pub length: Option<u64>,
    pub expires_at: Option<i64>,
    pub metadata: UploadMeta,
    /// Where the request came from (for the pre-create hook).
    pub origin: Origin,
    /// The caller's limits; kept with the upload where they are below the server's.
    pub limits: Limits,
}

impl Engine {
    pub async fn create_upload(&self, n: NewUpload<'_>) -> Result<UploadRecord, UploadError> {
        if let Some(len) = n.length {
            crate::upload::limits::check_declared(len)?;
        }
        let mut metadata = n.metadata;
        let mut name = n.name.to_string();
        // The application agrees (and may reshape the upload) before anything is staged. A
        // final upload of a concatenation stores nothing new: its partials were asked.
        if n.parts.is_empty() && self.asks(EventType::PreCreate) {
            let tus = metadata.decoded_tus();
            let shape = self
                .pre_create(&Creating {
                    owner_id: n.owner_id,
                    protocol: n.protocol.as_str(),
                    filename: &name,
                    content_type: n.content_type,
                    length: n.length,
                    metadata: tus.as_ref(),
                    session: None,
                    origin: &n.origin,
                })
                .await?;
            if let Some(f) = shape.filename {
                name = crate::names::sanitize_file_name(&f);
            }
            if let Some(m) = shape.metadata {
                if !m.keys().all(|k| valid_tus_key(k)) {
                    return Err(UploadError::HookFailed(
                        "pre-create hook: a metadata key that tus cannot carry".into(),
                    ));
                }
                metadata.upload_metadata = Some(encode_tus_metadata(&m));
            }
            metadata.max_size = shape.max_size;
        }
        // A credential's narrower limits stay with the upload, whoever continues it.
        // (`Limits::default()`, no limits, narrows nothing.)
        let server = Limits::of(&self.settings);
        let below = |caller: Option<u64>, server: Option<u64>| {
            caller.filter(|c| server.is_none_or(|s| *c < s))
        };
        if let Some(max) = below(n.limits.max_upload_size, server.max_upload_size) {
            metadata.max_size = lowest(metadata.max_size, Some(max));
        }
        metadata.quota = below(n.limits.quota, server.quota);
        if let (Some(max), Some(len)) =
            (lowest(server.max_upload_size, metadata.max_size), n.length)
            && len > max
        {
            return Err(UploadError::TooLarge { limit: max });
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let record = UploadRecord {
            staging_key: format!("uploads/{id}"),
            id,
            owner_id: n.owner_id,
            protocol: n.protocol,
            name,
            content_type: n.content_type.map(str::to_string),
            offset: 0,
            length: n.length,
            state: UploadState::Active,
            expires_at: n.expires_at,
            metadata,
            hash_state: None,
            file_id: None,
            created_at: now_unix(),
            final_id: None,
        };
        let storage = self.storage.clone();
        let key = record.staging_key.clone();
        tokio::task::spawn_blocking(move || storage.begin(&key).map(drop))
            .await
            .map_err(|e| UploadError::Internal(e.to_string()))??;
        let events = self
            .event(
                EventType::UploadCreated,
                &record.id,
                record.owner_id,
                |user| events::upload_data(&record, user),
            )
            .await;
        if let Err(e) = self
            .meta
            .create_upload(&record, n.parts, self.upload_limits(&record), &events)
            .await
        {
            self.abort_staged(record.staging_key.clone()).await;
            return Err(e.into());
        }
        self.events.announce(&events);
        self.metrics
            .upload(crate::metrics::Outcome::Created, record.protocol.as_str());
        Ok(record)
    }

    /// The limits a new upload is created within.
    fn upload_limits(&self, up: &UploadRecord) -> UploadLimits {
        UploadLimits {
            quota: self.quota_for(up).map(|q| q.bytes),
            max_open: Some(self.settings.max_open_uploads_per_user),
        }
    }

    /// The quota of `owner_id` for the catalog to check with a change: the server's, or the
    /// caller's `quota` when that is lower.
    pub fn quota_of(&self, owner_id: i64, quota: Option<u64>) -> Option<Quota> {
        lowest(self.settings.user_quota.map(|q| q.bytes()), quota)
            .map(|bytes| Quota { owner_id, bytes })
    }

    /// The quota a resumable upload is held to: its owner's, or the lower one of the
    /// credential it was created with.
    pub fn quota_for(&self, up: &UploadRecord) -> Option<Quota> {
        self.quota_of(up.owner_id, up.metadata.quota)
    }

    /// Sets a deferred length, once, within the owner's quota: false when it was set already.
    pub async fn declare_length(
        &self,
        up: &UploadRecord,
        length: u64,
    ) -> Result<bool, UploadError> {
        crate::upload::limits::check_declared(length)?;
        self.uploads.drop_record(&up.id);
        Ok(self
            .meta
            .set_upload_length(&up.id, length, self.quota_for(up))
            .await?)
    }

    /// Removes a staged object (best effort, logged), off the reactor.
    async fn abort_staged(&self, key: String) {
        let storage = self.storage.clone();
        let res = tokio::task::spawn_blocking(move || storage.abort(&key)).await;
        if let Ok(Err(e)) = res {
            tracing::warn!(error = %e, "could not remove a staged object");
        }
    }

    /// The owner's upload of `protocol` by id; None for a malformed id, an unknown upload, or
    /// another user's or protocol's (all of which the adapters answer with 404).
    pub async fn owned_upload(
        &self,
        owner_id: i64,
        protocol: Protocol,
        id: &str,
    ) -> Result<Option<UploadRecord>, UploadError> {
        if !is_upload_id(id) {
            return Ok(None);
        }
        Ok(self
            .meta
            .get_upload(id)
            .await?
            .filter(|u| owned_by(u, owner_id, protocol)))
    }

    /// Locks the owner's upload of `protocol` and reads its record under the lock (so the
    /// record is current; on one node it can be kept from this node's last append of it, see
    /// below). Another user's request, a malformed id or an unknown upload is `NotFound`. An
    /// upload another request holds is `Busy` (with its record; the caller has not been let
    /// in).
    ///
    /// With locks shared across nodes, the owner is checked first, so that another user's
    /// request never takes a cluster lock (a round trip, and it could hold up the owner's
    /// requests on another node): two catalog reads. On one node the lock is this process's
    /// own, so it is taken first and the record read once, under it: a request that is not
    /// the owner's holds the lock only for that read, and an owner's request that meets it
    /// waits one preemption step (10 ms) at most. One read fewer is a quarter of a small
    /// PATCH's catalog round trips.
    ///
    /// On one node the record is not read at all when this node's last append of the upload
    /// left it (`UploadRegistry::record`): every other change this node makes drops it, and a
    /// change by another process on the same catalog (`chute gc`, a user removed) is caught
    /// when the append commits, by the compare-and-set of its offset and state.
    pub async fn lock_owned_upload(
        &self,
        owner_id: i64,
        protocol: Protocol,
        id: &str,
    ) -> Result<Locked, UploadError> {
        if !self.uploads.is_shared() {
            if !is_upload_id(id) {
                return Ok(Locked::NotFound);
            }
            let Some(lock) = self.uploads.try_lock(id).await else {
                return Ok(match self.owned_upload(owner_id, protocol, id).await? {
                    Some(up) => Locked::Busy(up),
                    None => Locked::NotFound,
                });
            };
            let up = match self.uploads.record(id) {
                Some(kept) => Some(kept),
                None => self.meta.get_upload(id).await?,
            };
            return Ok(match up.filter(|u| owned_by(u, owner_id, protocol)) {
                Some(up) => Locked::Held(lock, up),
                None => Locked::NotFound,
            });
        }
        let Some(up) = self.owned_upload(owner_id, protocol, id).await? else {
            return Ok(Locked::NotFound);
        };
        let Some(lock) = self.uploads.try_lock(id).await else {
            return Ok(Locked::Busy(up));
        };
        Ok(match self.meta.get_upload(id).await? {
            Some(up) => Locked::Held(lock, up),
            None => Locked::NotFound,
        })
    }

    /// Turns a fully received upload into a catalog entry, with the given digests.
    ///
    /// Crash-safe in three steps: the file's id is recorded on the upload first, then its
    /// bytes are placed under that id's key (the staged object stays), then the catalog entry
    /// and the upload's completion are one transaction, and only then does the staged object
    /// go. A crash anywhere leaves an active upload whose staged bytes are whole: completing
    /// it again places them under the same key, so nothing is lost and nothing is stranded.
    pub async fn complete_upload(
        &self,
        up: &UploadRecord,
        digests: &[(Algorithm, String)],
    ) -> Result<FileRecord, UploadError> {
        // From here the record changes (its file id first): a retry reads it again.
        self.uploads.drop_record(&up.id);
        if up.state != UploadState::Active {
            return Err(UploadError::AlreadyComplete);
        }
        if let Some(len) = up.length
            && up.offset != len
        {
            return Err(UploadError::OffsetMismatch { current: up.offset });
        }
        // The application's last word: a refusal discards the upload; a hook that fails
        // leaves it whole and unfinished, for the client's next try.
        if self.asks(EventType::PreFinish) {
            let tus = up.metadata.decoded_tus();
            let data = Finishing {
                protocol: up.protocol.as_str(),
                upload_id: Some(&up.id),
                session: None,
                name: &up.name,
                size: up.offset,
                content_type: up.content_type.as_deref(),
                detected_type: None,
                checksums: digests
                    .iter()
                    .map(|(a, h)| (a.name(), h.as_str()))
                    .collect(),
                metadata: tus.as_ref(),
            };
            if let Err(e) = self.pre_finish(up.owner_id, &data).await {
                if matches!(e, UploadError::HookRejected { .. }) {
                    self.discard_upload(up, None).await?;
                    self.metrics
                        .upload(crate::metrics::Outcome::Failed, up.protocol.as_str());
                }
                return Err(e);
            }
        }
        let file_id = match &up.file_id {
            Some(id) => id.clone(),
            None => {
                let id = new_file_id();
                if !self.meta.set_upload_file(&up.id, &id).await? {
                    return Err(UploadError::AlreadyComplete);
                }
                id
            }
        };
        let key = storage_key_for(&file_id);
        let storage = self.storage.clone();
        let (k, staged) = (key.clone(), up.staging_key.clone());
        let scanner = self.scanner_address();
        let (timeout, len) = (self.settings.clamav_timeout.0, up.offset);
        let metrics = self.metrics.clone();
        let done = tokio::task::spawn_blocking(move || -> Result<Option<String>, UploadError> {
            let mut head = Vec::with_capacity(8192);
            storage
                .read_staged(&staged)?
                .take(8192)
                .read_to_end(&mut head)?;
            if let Some(addr) = scanner {
                // The bytes came over several requests: scan them once, whole, from staging.
                crate::upload::handlers::clamav::scan_reader(
                    &addr,
                    timeout,
                    storage.read_staged(&staged)?.take(len),
                    &metrics,
                )?;
            }
            storage.put(&k, crate::storage::Source::Staged(&staged))?;
            Ok(crate::upload::handlers::sniff::detect(&head))
        })
        .await
        .map_err(|e| UploadError::Internal(e.to_string()))?;
        let detected = match done {
            Ok(d) => d,
            Err(e @ UploadError::Invalid { .. }) => {
                // Malware (or unscannable): the upload is refused for good, its bytes go.
                self.discard_upload(up, None).await?;
                self.metrics
                    .upload(crate::metrics::Outcome::Failed, up.protocol.as_str());
                return Err(e);
            }
            Err(e) => return Err(self.lost_stage(up, e).await),
        };
        let mut record = FileRecord {
            id: file_id,
            owner_id: up.owner_id,
            name: up.name.clone(),
            size: up.offset,
            stored_size: up.offset,
            content_type: up.content_type.clone(),
            detected_type: detected,
            encoding: None,
            storage_key: key.clone(),
            md5: None,
            sha1: None,
            sha256: None,
            blake3: None,
            created_at: now_unix(),
        };
        record.set_checksums(digests.iter().map(|(a, h)| (*a, h)));
        let events = self
            .event(EventType::UploadFinished, &up.id, up.owner_id, |user| {
                let protocol = up.protocol.as_str();
                events::finished_data(&record, protocol, Some(&up.id), user, None)
            })
            .await;
        if let Err(e) = self
            .meta
            .complete_upload(&up.id, &record, self.quota_for(up), &events)
            .await
        {
            // The upload stays active with its staged bytes (over the quota, it completes once
            // there is room); the placed copy goes.
            self.delete_object(key).await;
            return Err(e.into());
        }
        self.events.announce(&events);
        let protocol = up.protocol.as_str();
        self.metrics
            .upload(crate::metrics::Outcome::Finished, protocol);
        self.metrics.file_stored(protocol);
        self.abort_staged(up.staging_key.clone()).await;
        self.uploads.forget(&up.id);
        self.events.forget_progress(&up.id);
        Ok(record)
    }

    /// What a failure to read an upload's staged bytes means. When they are gone or shorter
    /// than recorded (a backend that lost them, or a deployment that fsyncs nothing and lost
    /// power), waiting cannot bring them back: the upload starts again at offset 0, which the
    /// client is told (a 409 with the offset), instead of a 500 on every try.
    pub(crate) async fn lost_stage(&self, up: &UploadRecord, e: UploadError) -> UploadError {
        self.lost_stage_at(&up.id, up.offset, e).await
    }

    /// [`Engine::lost_stage`] for the upload `id` recorded at `offset`.
    pub(crate) async fn lost_stage_at(&self, id: &str, offset: u64, e: UploadError) -> UploadError {
        let lost = matches!(
            &e,
            UploadError::Storage(
                crate::storage::StorageError::NotFound(_)
                    | crate::storage::StorageError::ShortStage { .. }
            )
        );
        if !lost || offset == 0 {
            return e;
        }
        tracing::error!(upload = %id, error = %e, "staged bytes lost; the upload starts over");
        self.uploads.forget(id);
        match self.meta.advance_upload(id, offset, 0, None).await {
            Ok(true) => UploadError::OffsetMismatch { current: 0 },
            Ok(false) => e,
            Err(m) => m.into(),
        }
    }

    /// Fills `dest` (new, empty) with the staged bytes of `parts` in order, hashing them on
    /// the way. Returns the length and digests of the whole; the caller completes `dest` with
    /// them (its offset is not recorded before: while open, a final upload holds nothing for
    /// the quota, its partials do). The copy runs on a blocking thread through the storage's
    /// own reads and writes, so it works for every backend.
    pub async fn concatenate(
        &self,
        dest: &UploadRecord,
        parts: &[UploadRecord],
        algorithms: &[Algorithm],
    ) -> Result<(u64, Vec<(Algorithm, String)>), UploadError> {
        let storage = self.storage.clone();
        let dest_key = dest.staging_key.clone();
        let sources: Vec<(String, u64)> = parts
            .iter()
            .map(|p| (p.staging_key.clone(), p.offset))
            .collect();
        let algs = algorithms.to_vec();
        let (total, hashers) =
            tokio::task::spawn_blocking(move || -> Result<(u64, Vec<Hasher>), UploadError> {
                let mut set = HashSet::new(algs.iter().map(|a| Hasher::new(*a)).collect());
                let mut w = storage.begin(&dest_key)?;
                for (key, len) in sources {
                    pump_staged(storage.as_ref(), &key, len, &mut set, Some(w.as_mut()))?;
                }
                Ok((w.sync()?, set.finish()?))
            })
            .await
            .map_err(|e| UploadError::Internal(e.to_string()))??;
        let digests = hashers
            .into_iter()
            .map(|h| (h.algorithm(), h.finish_hex()))
            .collect();
        Ok((total, digests))
    }

    /// Deletes an upload: its staged bytes, then its record and running digests. `why`: the
    /// event that reports it (`upload.terminated` or `upload.expired`), if any.
    pub async fn discard_upload(
        &self,
        up: &UploadRecord,
        why: Option<EventType>,
    ) -> Result<(), UploadError> {
        let storage = self.storage.clone();
        let key = up.staging_key.clone();
        // An active upload with a file id crashed while completing: a copy of its bytes may
        // have been placed under that id's key already.
        let placed = match (&up.file_id, up.state) {
            (Some(fid), UploadState::Active) => Some(storage_key_for(fid)),
            _ => None,
        };
        tokio::task::spawn_blocking(move || {
            if let Some(k) = placed {
                storage.delete(&k)?;
            }
            storage.abort(&key)
        })
        .await
        .map_err(|e| UploadError::Internal(e.to_string()))??;
        let events = match why {
            Some(kind) => {
                self.event(kind, &up.id, up.owner_id, |user| {
                    events::upload_data(up, user)
                })
                .await
            }
            None => Vec::new(),
        };
        self.meta.delete_upload(&up.id, &events).await?;
        self.events.announce(&events);
        let outcome = match why {
            Some(EventType::UploadTerminated) => Some(crate::metrics::Outcome::Terminated),
            Some(EventType::UploadExpired) => Some(crate::metrics::Outcome::Expired),
            _ => None,
        };
        if let Some(o) = outcome {
            self.metrics.upload(o, up.protocol.as_str());
        }
        self.uploads.forget(&up.id);
        self.events.forget_progress(&up.id);
        Ok(())
    }

    /// Where clamd listens, when scanning is on.
    pub fn scanner_address(&self) -> Option<crate::upload::handlers::clamav::ClamdAddress> {
        self.settings.clamav_enabled.then(|| {
            crate::upload::handlers::clamav::ClamdAddress::parse(&self.settings.clamav_address)
        })
    }

    /// Deletes uploads whose expiry has passed (their staged bytes and records), skipping any
    /// a request is writing. Returns the ones deleted (or, with `dry_run`, that would be).
    ///
    /// It works in batches of `SWEEP_BATCH` until none is left (or a batch frees nothing: all
    /// of it being written), so one sweep keeps up with any rate of creation.
    pub async fn sweep_expired(&self, dry_run: bool) -> Result<Vec<UploadRecord>, UploadError> {
        const SWEEP_BATCH: u32 = 1000;
        let now = now_unix();
        if dry_run {
            return Ok(self.meta.expired_uploads(now, SWEEP_BATCH).await?);
        }
        let mut done = Vec::new();
        loop {
            let expired = self.meta.expired_uploads(now, SWEEP_BATCH).await?;
            let full = expired.len() == SWEEP_BATCH as usize;
            let before = done.len();
            for up in expired {
                let Some(_lock) = self.uploads.try_lock(&up.id).await else {
                    continue;
                };
                // A finished upload's record only outlived its file's creation: nothing expired.
                let why = (up.state == UploadState::Active).then_some(EventType::UploadExpired);
                self.discard_upload(&up, why).await?;
                done.push(up);
            }
            if !full || done.len() == before {
                return Ok(done);
            }
        }
    }
}

/// Whether `up` is `owner_id`'s upload of `protocol`.
fn owned_by(up: &UploadRecord, owner_id: i64, protocol: Protocol) -> bool {
    up.owner_id == owner_id && up.protocol == protocol
}

/// Whether `id` has the shape of an upload's id (32 hex digits).
fn is_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}
