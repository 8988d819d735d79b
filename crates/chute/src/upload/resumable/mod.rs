//! Resumable uploads: bytes appended at an offset, across requests, restarts and nodes, for
//! the chunked, tus and IETF draft adapters.
//!
//! Write-ahead rule: each request's bytes run through a handler chain (the protocol's own
//! handlers, then the running digests, then the staging writer) on the pipeline thread; they
//! are synced, and only then does the recorded offset advance, by compare-and-set, to the
//! length actually persisted, even when the body broke off midway. After a crash, bytes past
//! the recorded offset were never acknowledged and are dropped by `Storage::resume`.
//!
//! Running digests: kept in memory between requests, keyed by upload and offset, so completion
//! never re-reads the file, and hashed behind the requests (`RunningDigests`), so a client
//! does not wait for the hashing of its request's tail. When they are missing (after a restart,
//! or on another node) they are recomputed once from the staged bytes, the only case that reads
//! data back. (RustCrypto's hashers could be serialised into the database instead, but the
//! assembly backends chosen for speed cannot; one re-read after a restart is the cheaper trade.)
//!
//! - `locks`: one writer per upload, across nodes.
//! - `append`: a request's bytes at the offset, committed or discarded.
//! - `lifecycle`: creation, completion, concatenation, discarding, expiry.

mod append;
mod lifecycle;
mod locks;

pub use append::{AppendJob, EndedAppend};
pub use lifecycle::NewUpload;
pub use locks::{Locked, PREEMPT_WAIT, UploadLock, UploadRegistry};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::Algorithm;
    use crate::checksum::digest_hex;
    use crate::config::Settings;
    use crate::meta::sqlite::SqliteMeta;
    use crate::meta::{ClusterLocks, MetaStore, Protocol, UploadRecord, UploadState, now_unix};
    use crate::storage::Storage;
    use crate::storage::local::LocalStorage;
    use crate::storage::storage_key_for;
    use crate::upload::handler::FileInfo;
    use crate::upload::{Engine, UploadError, new_file_id};
    use bytes::Bytes;
    use futures::StreamExt;
    use std::sync::Arc;

    const ALGS: [Algorithm; 2] = [Algorithm::Md5, Algorithm::Sha256];

    async fn engine(dir: &std::path::Path) -> Engine {
        let storage: Arc<dyn Storage> =
            Arc::new(LocalStorage::open(dir.join("files"), 0o644, 0o755).expect("storage"));
        let meta: Arc<dyn MetaStore> =
            Arc::new(SqliteMeta::open(&dir.join("chute.db")).await.expect("meta"));
        Engine::new(storage, meta, Arc::new(Settings::defaults()))
    }

    fn info() -> FileInfo {
        FileInfo {
            file_name: "data.bin".into(),
            ..Default::default()
        }
    }

    async fn new_upload(e: &Engine, owner_id: i64, len: usize) -> UploadRecord {
        e.create_upload(NewUpload {
            parts: &[],
            owner_id,
            protocol: Protocol::Chunked,
            name: "data.bin",
            content_type: None,
            length: Some(len as u64),
            expires_at: None,
            metadata: Default::default(),
            origin: Default::default(),
            limits: Default::default(),
        })
        .await
        .expect("create")
    }

    async fn append(e: &Engine, id: &str, offset: u64, data: &[u8], complete: bool) -> EndedAppend {
        let up = e.meta.get_upload(id).await.expect("get").expect("exists");
        let mut job = e
            .start_append(&up, offset, &ALGS, Vec::new(), info())
            .await
            .expect("start");
        for c in data.chunks(1000) {
            assert!(job.send(Bytes::copy_from_slice(c)).await);
        }
        job.end(complete).await.expect("end")
    }

    #[tokio::test]
    async fn append_in_pieces_resume_after_crash_and_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..500_000u32).map(|i| (i % 253) as u8).collect();
        let e = engine(dir.path()).await;
        let user = e.meta.create_user("u", false).await.expect("user");
        let up = new_upload(&e, user.id, data.len()).await;

        let a = append(&e, &up.id, 0, &data[..200_000], true).await;
        assert_eq!(a.written, 200_000);
        assert_eq!(a.commit().await.expect("commit"), 200_000);

        // A body that breaks off midway keeps what arrived (the adapter commits it).
        let a = append(&e, &up.id, 200_000, &data[200_000..250_000], false).await;
        assert!(a.written > 0 && a.written <= 50_000, "{}", a.written);
        let at = a.commit().await.expect("commit");

        // A refused request keeps nothing.
        let a = append(&e, &up.id, at, b"refused bytes", true).await;
        a.discard();
        assert_eq!(
            e.meta
                .get_upload(&up.id)
                .await
                .expect("get")
                .expect("up")
                .offset,
            at
        );

        // A stale offset is refused and reports the current one.
        let fresh = e.meta.get_upload(&up.id).await.expect("get").expect("up");
        match e.start_append(&fresh, 1, &ALGS, Vec::new(), info()).await {
            Err(UploadError::OffsetMismatch { current }) => assert_eq!(current, at),
            Err(other) => panic!("expected a mismatch, got {other:?}"),
            Ok(_) => panic!("expected a mismatch"),
        }

        // Simulated crash: bytes reach the staging file but the process dies before the
        // offset is recorded. A new engine (no digests in memory) resumes from the record and
        // recomputes the digests from the staged bytes.
        {
            let mut w = e.storage.resume(&up.staging_key, at).expect("resume");
            w.write(b"GARBAGE NEVER ACKNOWLEDGED").expect("write");
        }
        drop(e);
        let e = engine(dir.path()).await;
        let a = append(&e, &up.id, at, &data[at as usize..], true).await;
        assert_eq!(a.commit().await.expect("commit"), data.len() as u64);

        let up = e.meta.get_upload(&up.id).await.expect("get").expect("up");
        let digests = e.upload_digests(&up, &ALGS).await.expect("digests");
        assert_eq!(digests[0].1, digest_hex(Algorithm::Md5, &data));
        assert_eq!(digests[1].1, digest_hex(Algorithm::Sha256, &data));
        let file = e.complete_upload(&up, &digests).await.expect("complete");
        assert_eq!(file.size, data.len() as u64);
        assert_eq!(
            file.md5.as_deref(),
            Some(digest_hex(Algorithm::Md5, &data).as_str())
        );
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
        let up = e.meta.get_upload(&up.id).await.expect("get").expect("up");
        assert!(matches!(
            e.complete_upload(&up, &digests).await,
            Err(UploadError::AlreadyComplete)
        ));
        assert_eq!(
            e.meta
                .list_files(user.id, None, 10)
                .await
                .expect("list")
                .len(),
            1
        );
    }

    /// One sweep clears every expired upload, past one batch; expired uploads hold no place
    /// among the owner's open ones.
    #[tokio::test]
    async fn one_sweep_keeps_up_and_expired_uploads_hold_no_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path()).await;
        let user = e.meta.create_user("u", false).await.expect("user");
        let n = 1_050; // more than a sweep's batch, and than max_open_uploads_per_user
        for _ in 0..n {
            e.create_upload(NewUpload {
                parts: &[],
                owner_id: user.id,
                protocol: Protocol::Chunked,
                name: "x",
                content_type: None,
                length: Some(1),
                expires_at: Some(now_unix() - 5),
                metadata: Default::default(),
                origin: Default::default(),
                limits: Default::default(),
            })
            .await
            .expect("an expired upload holds no place");
        }
        let gone = e.sweep_expired(false).await.expect("sweep");
        assert_eq!(gone.len(), n);
        assert!(
            e.meta
                .expired_uploads(now_unix(), 10)
                .await
                .expect("left")
                .is_empty()
        );
        let staged = std::fs::read_dir(dir.path().join("files/staging/uploads"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(staged, 0, "their staged objects are gone too");
    }

    /// Cluster locks that count the locks asked for.
    #[derive(Default)]
    struct CountingLocks {
        taken: std::sync::atomic::AtomicUsize,
        release: std::sync::OnceLock<tokio::sync::broadcast::Sender<String>>,
    }

    #[async_trait::async_trait]
    impl ClusterLocks for CountingLocks {
        async fn try_lock(&self, _id: &str) -> Result<bool, crate::meta::MetaError> {
            self.taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(true)
        }
        fn unlock(&self, _id: &str) {}
        async fn ask_release(&self, _id: &str) -> Result<(), crate::meta::MetaError> {
            Ok(())
        }
        fn release_requests(&self) -> tokio::sync::broadcast::Receiver<String> {
            self.release
                .get_or_init(|| tokio::sync::broadcast::channel(4).0)
                .subscribe()
        }
    }

    /// Another user's request for an upload never takes its lock (it could hold up the
    /// owner's requests, or, across nodes, cost a lock round trip each time).
    #[tokio::test]
    async fn the_lock_is_taken_after_the_owner_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = engine(dir.path()).await;
        let locks = Arc::new(CountingLocks::default());
        e.uploads = UploadRegistry::with_cluster(locks.clone());
        let owner = e.meta.create_user("owner", false).await.expect("user");
        let other = e.meta.create_user("other", false).await.expect("user");
        let up = new_upload(&e, owner.id, 10).await;
        let seen = || locks.taken.load(std::sync::atomic::Ordering::SeqCst);
        for (who, protocol) in [(other.id, Protocol::Chunked), (owner.id, Protocol::Tus)] {
            assert!(matches!(
                e.lock_owned_upload(who, protocol, &up.id).await,
                Ok(Locked::NotFound)
            ));
        }
        assert_eq!(seen(), 0, "no lock for a request that is not the owner's");
        let held = e
            .lock_owned_upload(owner.id, Protocol::Chunked, &up.id)
            .await;
        assert!(matches!(held, Ok(Locked::Held(..))));
        assert_eq!(seen(), 1);
    }

    /// On one node (locks of this process only) the lock comes first and the record is read
    /// once under it: another user's request, or one for another protocol, is `NotFound` and
    /// leaves the lock free; the owner's gets it, with a current record; a second request of
    /// the owner's while it is held is `Busy`, with the record.
    #[tokio::test]
    async fn on_one_node_the_record_is_read_once_under_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path()).await;
        assert!(!e.uploads.is_shared());
        let owner = e.meta.create_user("owner", false).await.expect("user");
        let other = e.meta.create_user("other", false).await.expect("user");
        let up = new_upload(&e, owner.id, 10).await;
        for (who, protocol, id) in [
            (other.id, Protocol::Chunked, up.id.as_str()),
            (owner.id, Protocol::Tus, up.id.as_str()),
            (owner.id, Protocol::Chunked, "not-an-upload-id"),
            (
                owner.id,
                Protocol::Chunked,
                "0123456789abcdef0123456789abcdef",
            ),
        ] {
            assert!(matches!(
                e.lock_owned_upload(who, protocol, id).await,
                Ok(Locked::NotFound)
            ));
            assert!(e.uploads.try_lock(&up.id).await.is_some(), "left free");
        }
        e.meta
            .advance_upload(&up.id, 0, 4, None)
            .await
            .expect("advance");
        let Ok(Locked::Held(lock, current)) = e
            .lock_owned_upload(owner.id, Protocol::Chunked, &up.id)
            .await
        else {
            panic!("the owner's request takes the lock");
        };
        assert_eq!(current.offset, 4, "the record is current");
        assert!(matches!(
            e.lock_owned_upload(owner.id, Protocol::Chunked, &up.id).await,
            Ok(Locked::Busy(b)) if b.id == up.id
        ));
        assert!(matches!(
            e.lock_owned_upload(other.id, Protocol::Chunked, &up.id)
                .await,
            Ok(Locked::NotFound)
        ));
        drop(lock);
    }

    /// A crash while completing: the file's id was recorded and its bytes placed, but the
    /// catalog entry not made. Completing again (a new process) finishes under the same id:
    /// the bytes are right and no second copy is left anywhere.
    #[tokio::test]
    async fn a_completion_cut_short_by_a_crash_completes_again_under_the_same_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let e = engine(dir.path()).await;
        let user = e.meta.create_user("u", false).await.expect("user");
        let up = new_upload(&e, user.id, data.len()).await;
        let a = append(&e, &up.id, 0, &data, true).await;
        a.commit().await.expect("commit");
        // The first two steps of `complete_upload`, then the process dies.
        let fid = new_file_id();
        assert!(e.meta.set_upload_file(&up.id, &fid).await.expect("intent"));
        e.storage
            .put(
                &storage_key_for(&fid),
                crate::storage::Source::Staged(&up.staging_key),
            )
            .expect("place");
        drop(e);
        let e = engine(dir.path()).await;
        let up = e.meta.get_upload(&up.id).await.expect("get").expect("up");
        assert_eq!(
            (up.state, up.file_id.as_deref()),
            (UploadState::Active, Some(fid.as_str()))
        );
        let digests = e.upload_digests(&up, &ALGS).await.expect("digests");
        let file = e.complete_upload(&up, &digests).await.expect("complete");
        assert_eq!(file.id, fid, "the recorded id is used");
        assert_eq!(
            file.sha256.as_deref(),
            Some(digest_hex(Algorithm::Sha256, &data).as_str())
        );
        assert_eq!(
            file.md5.as_deref(),
            Some(digest_hex(Algorithm::Md5, &data).as_str())
        );
        let objects = dir.path().join("files/objects");
        let count = std::fs::read_dir(&objects)
            .expect("objects")
            .flatten()
            .map(|d| std::fs::read_dir(d.path()).map(|r| r.count()).unwrap_or(0))
            .sum::<usize>();
        assert_eq!(count, 1, "one object, no stranded copy");
        assert!(
            e.storage.read_staged(&up.staging_key).is_err(),
            "the staged bytes are gone once recorded"
        );
        let staged: Vec<_> = std::fs::read_dir(dir.path().join("files/staging/uploads"))
            .expect("staging")
            .flatten()
            .map(|d| d.path())
            .collect();
        assert!(staged.is_empty(), "nothing left in staging: {staged:?}");
    }

    /// Staged bytes that are gone (a backend that lost them) cannot come back: the upload
    /// starts over at offset 0 and says so, instead of failing the same way on every try.
    #[tokio::test]
    async fn an_upload_whose_staged_bytes_are_lost_starts_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = vec![7u8; 50_000];
        let e = engine(dir.path()).await;
        let user = e.meta.create_user("u", false).await.expect("user");
        let up = new_upload(&e, user.id, data.len()).await;
        append(&e, &up.id, 0, &data, true)
            .await
            .commit()
            .await
            .expect("commit");
        e.storage.abort(&up.staging_key).expect("lose the bytes");
        drop(e);
        let e = engine(dir.path()).await;
        let up = e.meta.get_upload(&up.id).await.expect("get").expect("up");
        match e.upload_digests(&up, &ALGS).await {
            Err(UploadError::OffsetMismatch { current: 0 }) => {}
            other => panic!("expected a restart at 0, got {:?}", other.map(|_| ())),
        }
        let up = e.meta.get_upload(&up.id).await.expect("get").expect("up");
        assert_eq!(up.offset, 0);
        let a = append(&e, &up.id, 0, &data, true).await;
        assert_eq!(a.commit().await.expect("commit"), data.len() as u64);
    }

    /// The same with no digests kept (`file_upload_checksums = []`): nothing reads the stage
    /// before the append, so the loss shows when the request's bytes go to it, and the
    /// upload starts over at 0 just the same, its offset recorded as 0.
    #[tokio::test]
    async fn lost_staged_bytes_start_over_when_no_digest_reads_them_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = vec![7u8; 50_000];
        let e = engine(dir.path()).await;
        let user = e.meta.create_user("u", false).await.expect("user");
        let up = new_upload(&e, user.id, 2 * data.len()).await;
        let append_bare = |offset: u64| {
            let (e, id, data) = (&e, up.id.clone(), data.clone());
            async move {
                let up = e.meta.get_upload(&id).await.expect("get").expect("up");
                let mut job = e
                    .start_append(&up, offset, &[], Vec::new(), info())
                    .await
                    .expect("start");
                assert!(job.send(Bytes::from(data)).await);
                job.end(true).await
            }
        };
        let kept = append_bare(0).await.expect("end");
        assert_eq!(kept.commit().await.expect("commit"), 50_000);
        e.storage.abort(&up.staging_key).expect("lose the bytes");
        let refused = append_bare(50_000).await.expect("end");
        match &refused.error {
            Some(UploadError::OffsetMismatch { current: 0 }) => {}
            other => panic!("expected a restart at 0, got {other:?}"),
        }
        refused.discard();
        let up = e.meta.get_upload(&up.id).await.expect("get").expect("up");
        assert_eq!(up.offset, 0);
        let again = append_bare(0).await.expect("end");
        assert_eq!(again.commit().await.expect("commit"), 50_000);
    }

    /// More uploads feeding digests at once than there are cores: they hash in step on their
    /// own threads instead of behind the requests, and every digest still comes out right,
    /// including after a refused request in the middle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_appends_keep_their_digests_right() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path()).await;
        let user = e.meta.create_user("u", false).await.expect("user");
        let mut tasks = Vec::new();
        for n in 0..12u32 {
            let e = e.clone();
            let owner_id = user.id;
            tasks.push(tokio::spawn(async move {
                let data: Vec<u8> = (0..1_500_000u32)
                    .map(|i| (i * (n + 3) % 251) as u8)
                    .collect();
                let up = new_upload(&e, owner_id, data.len()).await;
                let mut at = 0usize;
                for (i, piece) in data.chunks(400_000).enumerate() {
                    if i == 1 {
                        // A request that is refused after its bytes were hashed.
                        append(&e, &up.id, at as u64, &piece[..300_000], true)
                            .await
                            .discard();
                    }
                    let ended = append(&e, &up.id, at as u64, piece, true).await;
                    at = ended.commit().await.expect("commit") as usize;
                    tokio::task::yield_now().await;
                }
                let up = e.meta.get_upload(&up.id).await.expect("get").expect("up");
                let digests = e.upload_digests(&up, &ALGS).await.expect("digests");
                assert_eq!(
                    digests[0].1,
                    digest_hex(Algorithm::Md5, &data),
                    "upload {n}"
                );
                assert_eq!(
                    digests[1].1,
                    digest_hex(Algorithm::Sha256, &data),
                    "upload {n}"
                );
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    }

    #[tokio::test]
    async fn one_writer_at_a_time_and_expired_uploads_are_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path()).await;
        let user = e.meta.create_user("u", false).await.expect("user");
        let new = |expires_at| NewUpload {
            parts: &[],
            owner_id: user.id,
            protocol: Protocol::Chunked,
            name: "x",
            content_type: None,
            length: Some(10),
            expires_at,
            metadata: Default::default(),
            origin: Default::default(),
            limits: Default::default(),
        };
        let old = e
            .create_upload(new(Some(now_unix() - 10)))
            .await
            .expect("old");
        let live = e
            .create_upload(new(Some(now_unix() + 3600)))
            .await
            .expect("live");
        let lock = e.uploads.try_lock(&live.id).await.expect("lock");
        assert!(
            e.uploads.try_lock(&live.id).await.is_none(),
            "a second writer is refused"
        );
        drop(lock);
        assert!(e.uploads.try_lock(&live.id).await.is_some());

        let would = e.sweep_expired(true).await.expect("dry run");
        assert_eq!(
            would.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
            vec![old.id.as_str()]
        );
        assert!(
            e.meta.get_upload(&old.id).await.expect("get").is_some(),
            "dry run deletes nothing"
        );
        let gone = e.sweep_expired(false).await.expect("sweep");
        assert_eq!(gone.len(), 1);
        assert!(e.meta.get_upload(&old.id).await.expect("get").is_none());
        assert!(
            e.storage.read_staged(&old.staging_key).is_err(),
            "staged bytes removed"
        );
        assert!(e.meta.get_upload(&live.id).await.expect("get").is_some());
    }
}
