//! Group commit of offset advances, for the SQLite catalog when it syncs its commits
//! (`upload_fsync = true`, the default).
//!
//! An acknowledged append waits for two syncs: its staged file's, then the catalog commit
//! that records the new offset. SQLite has one writer, and in WAL mode with
//! `synchronous=FULL` each commit waits for its own fsync of the WAL, so concurrent uploads'
//! advances queued behind each other, one sync each. Here they share them: one task takes
//! every advance waiting at that moment, writes them in one transaction, commits it with one
//! sync, and answers each. An advance that arrives while a commit is in flight waits for the
//! next one, with the others that arrived meanwhile.
//!
//! Nothing is acknowledged before its commit: each caller gets its answer only after the
//! transaction holding its update committed, as it would alone. A batch that fails (the
//! database busy past its timeout, the disk full) is tried again one advance at a time, so
//! that one advance's failure is that advance's answer only.
//!
//! PostgreSQL needs none of this: its commits already share WAL flushes.

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::MetaError;
use super::sqlite::SqliteMeta;

/// The most advances one commit takes. A batch's updates are a few microseconds each; the
/// bound keeps any one transaction, and the wait of the advance that comes after it, short.
const MAX_BATCH: usize = 256;

struct Advance {
    id: String,
    expected: u64,
    new_offset: u64,
    answer: oneshot::Sender<Result<bool, MetaError>>,
}

/// The queue in front of the committing task; the task ends when this is dropped.
pub(super) struct GroupCommit {
    queue: mpsc::UnboundedSender<Advance>,
}

impl GroupCommit {
    /// Starts the committing task on the current runtime, writing through `writer`.
    pub(super) fn start(writer: SqlitePool) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(commit_batches(writer, waiting));
        Self { queue }
    }

    /// Advances `id` from `expected` to `new_offset` (false when its offset was not
    /// `expected`), answered once the commit that holds it is durable.
    pub(super) async fn advance(
        &self,
        id: &str,
        expected: u64,
        new_offset: u64,
    ) -> Result<bool, MetaError> {
        let (answer, answered) = oneshot::channel();
        let stopped = || MetaError::Unavailable("the catalog's commit task has stopped".into());
        self.queue
            .send(Advance {
                id: id.to_string(),
                expected,
                new_offset,
                answer,
            })
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

async fn commit_batches(writer: SqlitePool, mut waiting: mpsc::UnboundedReceiver<Advance>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if batch.len() > 1
            && let Ok(moved) = commit_together(&writer, &batch).await
        {
            for (a, moved) in batch.drain(..).zip(moved) {
                let _ = a.answer.send(Ok(moved));
            }
            continue;
        }
        // One advance, or a batch that failed (and was rolled back): each on its own, so
        // that a failure is the answer of the advance that caused it only.
        for a in batch.drain(..) {
            let moved = advance_alone(&writer, &a).await;
            let _ = a.answer.send(moved);
        }
    }
}

/// The batch in one transaction: whether each advance moved its upload.
async fn commit_together(writer: &SqlitePool, batch: &[Advance]) -> Result<Vec<bool>, MetaError> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let mut moved = Vec::with_capacity(batch.len());
    for a in batch {
        moved.push(SqliteMeta::advance_on(&mut *tx, &a.id, a.expected, a.new_offset).await?);
    }
    tx.commit().await?;
    Ok(moved)
}

async fn advance_alone(writer: &SqlitePool, a: &Advance) -> Result<bool, MetaError> {
    Ok(SqliteMeta::advance_on(writer, &a.id, a.expected, a.new_offset).await?)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use futures::future::join_all;
    use sqlx::Row;

    use super::*;
    use crate::meta::{Protocol, UploadLimits, UploadRecord, UploadState, UploadStore, UserStore};

    const UPLOADS: usize = 64;

    /// A catalog at `path` with `UPLOADS` active uploads (`u0`..), all at offset 0, and a
    /// connection of the test's own beside chute's.
    async fn catalog(path: &Path, fsync: bool) -> (SqliteMeta, SqlitePool) {
        let meta = SqliteMeta::open_with(path, fsync).await.expect("open");
        let user = meta.create_user("ann", false).await.expect("user");
        for i in 0..UPLOADS {
            let id = format!("u{i}");
            let up = UploadRecord {
                staging_key: format!("staging/{id}"),
                id,
                owner_id: user.id,
                protocol: Protocol::Tus,
                name: "n".into(),
                content_type: None,
                offset: 0,
                length: Some(100),
                state: UploadState::Active,
                expires_at: None,
                metadata: Default::default(),
                hash_state: None,
                file_id: None,
                created_at: 1,
                final_id: None,
            };
            let limits = UploadLimits::default();
            meta.create_upload(&up, &[], limits, &[])
                .await
                .expect("create");
        }
        let own =
            SqlitePool::connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(path))
                .await
                .expect("second connection");
        (meta, own)
    }

    /// Frames in the WAL after emptying it and running `work`: SQLite's own count of what was
    /// written (each commit appends at least one frame, so n commits write at least n).
    async fn wal_frames<F: Future<Output = ()>>(own: &SqlitePool, work: F) -> i64 {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(own)
            .await
            .expect("checkpoint");
        work.await;
        let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(own)
            .await
            .expect("wal");
        row.get::<i64, _>(1)
    }

    async fn advance_all(meta: &SqliteMeta, from: u64, to: u64) -> Vec<Result<bool, MetaError>> {
        join_all((0..UPLOADS).map(|i| {
            let id = format!("u{i}");
            async move { meta.advance_upload(&id, from, to, None).await }
        }))
        .await
    }

    async fn offsets(meta: &SqliteMeta) -> Vec<u64> {
        let mut v = Vec::new();
        for i in 0..UPLOADS {
            let up = meta.get_upload(&format!("u{i}")).await.expect("read");
            v.push(up.expect("upload").offset);
        }
        v
    }

    #[tokio::test]
    async fn concurrent_advances_share_commits_and_each_gets_its_own_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (meta, own) = catalog(&dir.path().join("c.db"), true).await;
        let mut answers = Vec::new();
        let frames = wal_frames(&own, async {
            answers = advance_all(&meta, 0, 10).await;
        })
        .await;
        assert!(answers.iter().all(|a| matches!(a, Ok(true))), "{answers:?}");
        assert_eq!(offsets(&meta).await, vec![10; UPLOADS]);
        assert!(
            frames < (UPLOADS / 4) as i64,
            "{UPLOADS} concurrent advances wrote {frames} WAL frames: they did not share commits"
        );

        // A compare-and-set that finds another offset answers false, beside ones that move.
        let mut stale = join_all([
            meta.advance_upload("u0", 0, 20, None),
            meta.advance_upload("u1", 10, 20, None),
        ])
        .await
        .into_iter();
        assert!(matches!(stale.next(), Some(Ok(false))));
        assert!(matches!(stale.next(), Some(Ok(true))));
        assert_eq!(offsets(&meta).await[..2], [10, 20]);
    }

    /// The control: without fsync each advance commits alone, and the same count of WAL
    /// frames shows it (the measurement above can tell the two apart).
    #[tokio::test]
    async fn without_fsync_each_advance_commits_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (meta, own) = catalog(&dir.path().join("c.db"), false).await;
        let frames = wal_frames(&own, async {
            let answers = advance_all(&meta, 0, 10).await;
            assert!(answers.iter().all(|a| matches!(a, Ok(true))), "{answers:?}");
        })
        .await;
        assert!(frames >= UPLOADS as i64, "{frames} frames");
    }

    /// One advance that fails takes the batch's transaction down; the others are then
    /// committed one by one, and only the failing one answers with the error.
    #[tokio::test]
    async fn a_failing_advance_fails_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (meta, own) = catalog(&dir.path().join("c.db"), true).await;
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE UPDATE OF \"offset\" ON uploads WHEN NEW.id = 'u7' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        .execute(&own)
        .await
        .expect("trigger");
        let answers = advance_all(&meta, 0, 10).await;
        for (i, a) in answers.iter().enumerate() {
            match (i, a) {
                (7, Err(e)) => assert!(e.to_string().contains("refused by the test"), "{e}"),
                (7, other) => panic!("u7 answered {other:?}"),
                (_, a) => assert!(matches!(a, Ok(true)), "u{i}: {a:?}"),
            }
        }
        let mut want = vec![10; UPLOADS];
        want[7] = 0;
        assert_eq!(offsets(&meta).await, want);
    }
}
