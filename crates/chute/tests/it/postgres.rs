//! PostgreSQL: the catalog behaves as the SQLite one does (one scenario run on both), and
//! several nodes sharing a catalog and a data folder hand uploads to each other: locks across
//! nodes, a stale request on one node ended by a client's return to another, digests right
//! whichever node took which chunk. A real PostgreSQL server is started per test by
//! `scripts/postgres-test.sh` (Debian's postgresql, installed by scripts/setup-e2e.sh).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chute::meta::postgres::PgMeta;
use chute::meta::sqlite::SqliteMeta;
use chute::meta::{
    FileRecord, MetaError, MetaStore, Protocol, Quota, SessionAddRefused, SessionLimits,
    SessionStatus, UploadLimits, UploadRecord, UploadState,
};
use reqwest::Method;
use sqlx::Connection;

use crate::chunked::{chunk, complete, md5_hex};
use crate::helpers::*;
use crate::servers::ScriptServer;
use crate::tus::{create, h, patch, req, stale_patch};

/// A throwaway PostgreSQL server started by `scripts/postgres-test.sh`.
pub(crate) struct Postgres {
    port: u16,
    server: ScriptServer,
}

impl Postgres {
    pub(crate) async fn start() -> Postgres {
        let port = free_port();
        // SIGINT is PostgreSQL's fast shutdown: backends end, shared memory is released.
        let server = ScriptServer::spawn("PostgreSQL", "postgres-test.sh", "INT", |dir| {
            vec![dir.join("cluster").display().to_string(), port.to_string()]
        });
        let mut pg = Postgres { port, server };
        pg.wait_ready().await;
        pg
    }

    /// Stops the server (fast shutdown: every connection is cut) and starts it again on the
    /// same cluster and port.
    pub(crate) async fn restart(&mut self) {
        self.server.restart();
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let url = self.url("postgres");
        self.server
            .wait_until(Duration::from_secs(60), || {
                let url = url.clone();
                async move { sqlx::PgConnection::connect(&url).await.is_ok() }
            })
            .await;
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new empty database, by URL.
    pub(crate) async fn database(&self, name: &str) -> String {
        let mut c = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .expect("create database");
        self.url(name)
    }
}

fn file(id: &str, owner: i64, name: &str, size: u64) -> FileRecord {
    FileRecord {
        id: id.into(),
        owner_id: owner,
        name: name.into(),
        size,
        stored_size: size,
        content_type: Some("text/plain".into()),
        detected_type: None,
        encoding: None,
        storage_key: format!("objects/{id}"),
        md5: Some("m".into()),
        sha1: None,
        sha256: Some("s".into()),
        blake3: None,
        created_at: 1_700_000_000,
    }
}

/// Every MetaStore operation, with the answers the rest of chute relies on. Run on both
/// backends, so PostgreSQL is held to what SQLite does.
/// Quotas and open-upload counts, checked atomically by the catalog (issue 12): declared
/// lengths are reserved, deferred ones count what they hold, partials belong to one final,
/// and concurrent changes cannot pass the quota together.
async fn quota_scenario(meta: &dyn MetaStore, user: &chute::meta::User) {
    let upload = |id: &str, length: Option<u64>| UploadRecord {
        id: id.into(),
        owner_id: user.id,
        protocol: Protocol::Tus,
        staging_key: format!("staging/{id}"),
        name: "q".into(),
        content_type: None,
        offset: 0,
        length,
        state: UploadState::Active,
        expires_at: None,
        metadata: Default::default(),
        hash_state: None,
        file_id: None,
        created_at: 1,
        final_id: None,
    };
    let base = meta.usage_bytes(user.id).await.expect("usage");
    let limits = UploadLimits {
        quota: Some(base + 100),
        max_open: Some(3),
    };
    let quota = Some(Quota {
        owner_id: user.id,
        bytes: base + 100,
    });
    meta.create_upload(&upload("q1", Some(60)), &[], limits, &[])
        .await
        .expect("q1");
    assert_eq!(meta.usage_bytes(user.id).await.expect("usage"), base + 60);
    assert!(matches!(
        meta.create_upload(&upload("q2", Some(41)), &[], limits, &[])
            .await,
        Err(MetaError::QuotaExceeded { .. })
    ));
    assert_eq!(
        meta.get_upload("q2").await.expect("get"),
        None,
        "not created"
    );
    meta.create_upload(&upload("q3", None), &[], limits, &[])
        .await
        .expect("deferred");
    assert!(matches!(
        meta.advance_upload("q3", 0, 41, quota).await,
        Err(MetaError::QuotaExceeded { .. })
    ));
    assert_eq!(
        meta.get_upload("q3").await.expect("get").map(|u| u.offset),
        Some(0),
        "a refused advance changes nothing"
    );
    assert!(meta.advance_upload("q3", 0, 40, quota).await.expect("fits"));
    assert!(matches!(
        meta.set_upload_length("q3", 41, quota).await,
        Err(MetaError::QuotaExceeded { .. })
    ));
    assert!(meta.set_upload_length("q3", 40, quota).await.expect("fits"));
    meta.create_upload(&upload("q4", Some(0)), &[], limits, &[])
        .await
        .expect("third open upload");
    assert!(matches!(
        meta.create_upload(&upload("q5", Some(0)), &[], limits, &[])
            .await,
        Err(MetaError::TooManyOpenUploads { max: 3 })
    ));
    // A final claims its partials once; while open it holds nothing of its own.
    let roomy = UploadLimits::default();
    meta.create_upload(
        &upload("fin", None),
        &["q1".into(), "q3".into()],
        roomy,
        &[],
    )
    .await
    .expect("final");
    assert_eq!(meta.usage_bytes(user.id).await.expect("usage"), base + 100);
    assert!(matches!(
        meta.create_upload(&upload("fin2", None), &["q3".into()], roomy, &[])
            .await,
        Err(MetaError::Conflict(_))
    ));
    assert_eq!(meta.get_upload("fin2").await.expect("get"), None);
    let mut parts = meta.final_parts("fin").await.expect("parts");
    parts.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        parts.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["q1", "q3"]
    );
    assert!(meta.set_upload_file("fin", "qf").await.expect("intent"));
    meta.complete_upload("fin", &file("qf", user.id, "joined", 100), quota, &[])
        .await
        .expect("complete the final");
    assert_eq!(meta.usage_bytes(user.id).await.expect("usage"), base + 100);
    let q1 = meta.get_upload("q1").await.expect("get").expect("q1");
    assert_eq!(
        q1.state,
        UploadState::Complete,
        "partials are spent with their final"
    );
    // Ten files committed at once under a quota with room for two.
    let quota = Some(Quota {
        owner_id: user.id,
        bytes: base + 120,
    });
    let files: Vec<FileRecord> = (0..10)
        .map(|i| file(&format!("qc{i}"), user.id, "c", 10))
        .collect();
    let adds = files.iter().map(|f| meta.insert_file(f, quota, &[]));
    let ok = futures::future::join_all(adds)
        .await
        .into_iter()
        .filter(|r| r.is_ok())
        .count();
    assert_eq!(ok, 2);
    assert_eq!(meta.usage_bytes(user.id).await.expect("usage"), base + 120);
}

async fn meta_scenario(meta: Arc<dyn MetaStore>) {
    // Users and tokens.
    let ann = meta.create_user("ann", false).await.expect("ann");
    let bob = meta.create_user("bob", true).await.expect("bob");
    assert_ne!(ann.id, bob.id);
    assert!(
        meta.create_user("ann", false).await.is_err(),
        "names are unique"
    );
    assert_eq!(meta.count_users().await.expect("count"), 2);
    meta.add_token(ann.id, "h-ann", "t").await.expect("token");
    let (who, token) = meta
        .user_by_token_hash("h-ann")
        .await
        .expect("by token")
        .expect("ann's");
    assert_eq!(
        (who, token.label.as_str(), token.last_used_at),
        (ann.clone(), "t", None)
    );
    assert_eq!(meta.user_by_token_hash("nope").await.expect("none"), None);
    meta.touch_token(token.id, 1234).await.expect("touch");
    meta.add_token(ann.id, "h-ann-2", "second")
        .await
        .expect("token");
    let listed = meta.list_tokens(ann.id).await.expect("tokens");
    assert_eq!(
        listed
            .iter()
            .map(|t| (t.label.as_str(), t.last_used_at))
            .collect::<Vec<_>>(),
        [("t", Some(1234)), ("second", None)]
    );
    assert!(meta.revoke_token(listed[1].id).await.expect("revoke"));
    assert!(!meta.revoke_token(listed[1].id).await.expect("again"));
    assert_eq!(
        meta.user_by_token_hash("h-ann-2").await.expect("gone"),
        None
    );
    assert_eq!(
        meta.list_users()
            .await
            .expect("users")
            .iter()
            .map(|u| u.name.as_str())
            .collect::<Vec<_>>(),
        ["ann", "bob"]
    );
    // A user with nothing is removed with their tokens; a second time finds none.
    let gone = meta.create_user("gone", false).await.expect("gone");
    meta.add_token(gone.id, "h-gone", "").await.expect("token");
    assert_eq!(
        meta.delete_user(gone.id).await.expect("delete"),
        Some(vec![])
    );
    assert_eq!(meta.delete_user(gone.id).await.expect("again"), None);
    assert_eq!(meta.user_by_token_hash("h-gone").await.expect("none"), None);
    assert!(
        meta.user_by_name("bob")
            .await
            .expect("bob")
            .expect("bob")
            .is_staff
    );

    // The file catalog: ordered pages, usage, another owner's file untouchable.
    for (i, size) in [10u64, 20, 30].into_iter().enumerate() {
        meta.insert_file(&file(&format!("f{i}"), ann.id, "a.txt", size), None, &[])
            .await
            .expect("insert");
    }
    assert!(
        meta.insert_file(&file("f0", ann.id, "x", 1), None, &[])
            .await
            .is_err()
    );
    let page = meta.list_files(ann.id, Some("f0"), 1).await.expect("page");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0], file("f1", ann.id, "a.txt", 20));
    assert_eq!(meta.usage_bytes(ann.id).await.expect("usage"), 60);
    // A user with files is not removed.
    assert!(matches!(
        meta.delete_user(ann.id).await,
        Err(chute::meta::MetaError::Conflict(_))
    ));
    assert_eq!(
        meta.delete_file(bob.id, "f2", &[]).await.expect("del"),
        None
    );
    assert_eq!(
        meta.delete_file(ann.id, "f2", &[])
            .await
            .expect("del")
            .map(|f| f.size),
        Some(30)
    );
    assert_eq!(meta.get_file("f2").await.expect("get"), None);

    // Resumable uploads: compare-and-set offsets, a length set once, completion.
    let up = UploadRecord {
        id: "u1".into(),
        owner_id: ann.id,
        protocol: Protocol::Tus,
        staging_key: "staging/u1".into(),
        name: "n".into(),
        content_type: None,
        offset: 0,
        length: None,
        state: UploadState::Active,
        expires_at: Some(100),
        // Stored as JSON text and read back whole, on both backends.
        metadata: chute::meta::UploadMeta {
            upload_metadata: Some("filename eC5iaW4=".into()),
            concat: Some("partial".into()),
            ..Default::default()
        },
        hash_state: Some(vec![0, 1, 255]),
        file_id: None,
        created_at: 5,
        final_id: None,
    };
    meta.create_upload(&up, &[], UploadLimits::default(), &[])
        .await
        .expect("upload");
    assert_eq!(meta.get_upload("u1").await.expect("get"), Some(up.clone()));
    assert!(meta.advance_upload("u1", 0, 7, None).await.expect("cas"));
    assert!(!meta.advance_upload("u1", 0, 9, None).await.expect("cas"));
    assert!(meta.set_upload_length("u1", 7, None).await.expect("len"));
    assert!(!meta.set_upload_length("u1", 8, None).await.expect("len"));
    assert_eq!(
        meta.active_uploads(ann.id, Protocol::Tus)
            .await
            .expect("active")
            .len(),
        1
    );
    assert_eq!(meta.expired_uploads(101, 10).await.expect("exp").len(), 1);
    assert!(meta.expired_uploads(99, 10).await.expect("exp").is_empty());
    meta.complete_upload("u1", &file("f9", ann.id, "n", 7), None, &[])
        .await
        .expect("complete");
    let done = meta.get_upload("u1").await.expect("get").expect("u1");
    assert_eq!((done.state.as_str(), done.offset), ("complete", 7));
    assert_eq!(done.file_id.as_deref(), Some("f9"));
    assert!(
        meta.complete_upload("u1", &file("f10", ann.id, "n", 7), None, &[])
            .await
            .is_err(),
        "an upload completes once"
    );
    assert!(!meta.advance_upload("u1", 7, 8, None).await.expect("cas"));
    meta.delete_upload("u1", &[]).await.expect("delete");
    assert_eq!(meta.get_upload("u1").await.expect("get"), None);

    quota_scenario(meta.as_ref(), &bob).await;

    // Sessions: limits hold under concurrent adds, status moves, store, stale and expiry.
    meta.create_session("s1", ann.id, 1000)
        .await
        .expect("session");
    let limits = SessionLimits {
        max_count: 3,
        max_total: 1000,
    };
    let adds = (0..8).map(|i| {
        let meta = meta.clone();
        tokio::spawn(async move {
            meta.add_session_file(
                "s1",
                &file(&format!("s1-{i}"), ann.id, &format!("{i}.txt"), 10),
                limits,
                1001,
                None,
                &[],
            )
            .await
            .expect("add")
        })
    });
    let results = futures::future::join_all(adds).await;
    let accepted = results.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
    assert_eq!(accepted, 3, "{results:?}");
    let s = meta.get_session("s1").await.expect("get").expect("s1");
    assert_eq!((s.file_count, s.total_size), (3, 30));
    assert_eq!(s.status, SessionStatus::Uploading);
    let taken = meta.session_files("s1").await.expect("files");
    let name = taken[0].name.clone();
    assert_eq!(
        meta.add_session_file(
            "s1",
            &file("dup", ann.id, &name, 1),
            limits,
            1002,
            None,
            &[]
        )
        .await
        .expect("dup"),
        Err(SessionAddRefused::Duplicate)
    );
    let big = SessionLimits {
        max_count: 10,
        max_total: 35,
    };
    assert!(matches!(
        meta.add_session_file("s1", &file("big", ann.id, "big", 6), big, 1002, None, &[])
            .await
            .expect("big"),
        Err(SessionAddRefused::TooLarge { max: 35, total: 30 })
    ));
    assert!(
        meta.get_file(&taken[0].id).await.expect("get").is_none(),
        "a session's files are not in the catalog before it is stored"
    );
    meta.touch_session("s1", 900).await.expect("touch");
    assert_eq!(
        meta.get_session("s1")
            .await
            .expect("get")
            .expect("s1")
            .last_activity,
        1001,
        "activity never goes back"
    );
    assert_eq!(
        meta.stale_sessions(2000, 10).await.expect("stale"),
        vec!["s1".to_string()]
    );
    for f in &taken {
        assert!(
            meta.remove_session_file("s1", &f.name, 1003)
                .await
                .expect("remove")
                .expect("writable")
                .is_some()
        );
    }
    assert_eq!(
        meta.get_session("s1")
            .await
            .expect("get")
            .expect("s1")
            .status,
        SessionStatus::Created,
        "the last file out returns the session to CREATED"
    );
    meta.add_session_file(
        "s1",
        &file("keep", ann.id, "keep.txt", 4),
        limits,
        1004,
        None,
        &[],
    )
    .await
    .expect("add")
    .expect("accepted");
    assert!(
        !meta
            .set_session_status("s1", &[SessionStatus::Stored], SessionStatus::Expired, &[])
            .await
            .expect("status")
    );
    assert!(
        meta.set_session_status(
            "s1",
            &[SessionStatus::Created, SessionStatus::Uploading],
            SessionStatus::CopyingInProgress,
            &[]
        )
        .await
        .expect("status")
    );
    assert_eq!(meta.store_session("s1", &[]).await.expect("store"), Some(1));
    assert_eq!(meta.store_session("s1", &[]).await.expect("store"), None);
    assert!(meta.get_file("keep").await.expect("get").is_some());
    assert_eq!(
        meta.remove_session_file("s1", "keep.txt", 1005)
            .await
            .expect("remove"),
        Err(SessionStatus::Stored)
    );

    meta.create_session("s2", bob.id, 10)
        .await
        .expect("session");
    meta.add_session_file(
        "s2",
        &file("tmp", bob.id, "t.txt", 3),
        limits,
        11,
        None,
        &[],
    )
    .await
    .expect("add")
    .expect("accepted");
    let gone = meta.take_temporary_files("s2").await.expect("take");
    assert_eq!(gone.len(), 1);
    assert!(
        meta.session_file("s2", "t.txt")
            .await
            .expect("get")
            .is_none()
    );
    assert!(meta.create_session("s2", bob.id, 12).await.is_err());
    // Keys from clients with a NUL (PostgreSQL text cannot hold one) find nothing, on both.
    assert_eq!(meta.get_file("f0\0").await.expect("nul"), None);
    assert_eq!(meta.get_upload("u\0").await.expect("nul"), None);
    assert_eq!(meta.get_session("s\0").await.expect("nul"), None);
    assert_eq!(meta.session_file("s1", "keep\0").await.expect("nul"), None);
    assert_eq!(meta.user_by_name("ann\0").await.expect("nul"), None);
    assert!(
        meta.list_files(ann.id, Some("\0"), 10)
            .await
            .expect("nul")
            .is_empty()
    );
    meta.ping().await.expect("ping");
}

#[tokio::test]
async fn the_catalog_behaves_the_same_on_sqlite_and_postgresql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteMeta::open(&dir.path().join("c.db"))
        .await
        .expect("sqlite");
    assert!(sqlite.cluster_locks().is_none(), "SQLite is one node");
    meta_scenario(Arc::new(sqlite)).await;

    let pg = Postgres::start().await;
    let url = pg.database("scenario").await;
    let meta = PgMeta::open(&url, 8, true).await.expect("postgres");
    assert!(
        meta.cluster_locks().is_some(),
        "PostgreSQL locks across nodes"
    );
    meta_scenario(Arc::new(meta)).await;
    // Migrations run once, however many nodes start.
    PgMeta::open(&url, 2, true).await.expect("second open");
}

#[tokio::test]
async fn cluster_locks_exclude_other_nodes_and_die_with_their_node() {
    let mut pg = Postgres::start().await;
    let url = pg.database("locks").await;
    let a = PgMeta::open(&url, 2, true).await.expect("a");
    let b = PgMeta::open(&url, 2, true).await.expect("b");
    let (la, lb) = (
        a.cluster_locks().expect("locks"),
        b.cluster_locks().expect("locks"),
    );
    assert!(la.try_lock("x").await.expect("lock"));
    assert!(!lb.try_lock("x").await.expect("lock"), "one node at a time");
    assert!(
        lb.try_lock("y").await.expect("lock"),
        "other uploads are free"
    );

    // A release request reaches the holder's node.
    let mut asked = la.release_requests();
    lb.ask_release("x").await.expect("ask");
    let id = tokio::time::timeout(Duration::from_secs(5), asked.recv())
        .await
        .expect("in time")
        .expect("request");
    assert_eq!(id, "x");

    la.unlock("x");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lb.try_lock("x").await.expect("lock") {
        assert!(Instant::now() < deadline, "the unlock reached PostgreSQL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Node b dies: PostgreSQL drops its locks with its connections.
    drop(lb);
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !la.try_lock("y").await.expect("lock") {
        assert!(Instant::now() < deadline, "a dead node's locks are freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The database restarts, cutting every connection: node a notices (heartbeat), takes its
    // locks back, and keeps working. Node d, alive through the restart, finds its connection
    // cut at its next lock and takes no new lock for a moment (the fence), so it cannot slip
    // in before a has taken y back: "busy", never an error, never y.
    let d = PgMeta::open(&url, 2, true).await.expect("d");
    let ld = d.cluster_locks().expect("locks");
    assert!(!ld.try_lock("y").await.expect("lock"), "y is a's");
    pg.restart().await;
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(2500) {
        let got = ld.try_lock("y").await.expect("a busy answer, not an error");
        assert!(!got, "d took y {:?} after the restart", t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!ld.try_lock("y").await.expect("lock"), "a holds y again");
    assert!(
        ld.try_lock("w").await.expect("lock"),
        "d locks again after the fence"
    );
    drop(ld);
    drop(d);
    let c = PgMeta::open(&url, 2, true).await.expect("c");
    let lc = c.cluster_locks().expect("locks");
    assert!(!lc.try_lock("y").await.expect("lock"), "y is a's again");
    assert!(lc.try_lock("x").await.expect("lock"), "x was nobody's");
    a.ping().await.expect("a's pool reconnects");
    la.unlock("y");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lc.try_lock("y").await.expect("lock") {
        assert!(
            Instant::now() < deadline,
            "a's keeper works after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two nodes of one deployment: a PostgreSQL catalog and one data folder.
async fn two_nodes(pg: &Postgres, db: &str) -> (TestApp, TestApp, tempfile::TempDir) {
    let url = pg.database(db).await;
    let shared = tempfile::tempdir().expect("shared");
    let data = shared.path().join("data").display().to_string();
    let settings = [("database_url", url.as_str()), ("data_dir", data.as_str())];
    let a = spawn_app(&settings).await;
    let b = spawn_node(&settings, &a.token).await;
    (a, b, shared)
}

#[tokio::test]
async fn nodes_hand_a_tus_upload_to_each_other_and_never_write_it_at_once() {
    let pg = Postgres::start().await;
    let (a, b, _shared) = two_nodes(&pg, "tus_nodes").await;
    let data = bytes(3_000_000, 71);
    let loc = create(&a, data.len() as u64, "filename bm9kZXMuYmlu").await;

    // A PATCH on node A whose client went quiet mid-body: it holds the upload.
    let (tx, stale) = stale_patch(&a, &loc, &data, 400_000).await;

    // The client comes back through node B: B cannot take the upload while A holds it, asks
    // A (through PostgreSQL) to let go, and answers with what A made durable.
    let t = Instant::now();
    let res = req(&b, Method::HEAD, &loc).send().await.expect("head");
    // The target is well under a second; the bound leaves room for a loaded CI machine.
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(res.status(), 200);
    assert_eq!(h(&res, "upload-offset"), Some("400000"));
    let stale_res = stale.await.expect("task");
    assert!(
        stale_res.map(|r| r.status() != 204).unwrap_or(true),
        "the stale PATCH did not succeed"
    );
    drop(tx);

    // Two live PATCHes at the same offset, one per node: never both written. The later one
    // either waits for the earlier to finish (and then finds the offset moved: 409) or ends
    // it (which keeps its durable bytes and answers 400 `interrupted`) and writes.
    let (ra, rb) = tokio::join!(
        patch(&a, &loc, 400_000, &data[400_000..1_400_000]),
        patch(&b, &loc, 400_000, &data[400_000..1_400_000]),
    );
    let statuses = [ra.status().as_u16(), rb.status().as_u16()];
    let res = req(&a, Method::HEAD, &loc).send().await.expect("head");
    let offset: u64 = h(&res, "upload-offset")
        .expect("offset")
        .parse()
        .expect("number");
    assert!(
        statuses.contains(&204) || offset < 1_400_000,
        "at most one whole write: {statuses:?} at {offset}"
    );
    assert!(
        statuses.iter().all(|s| [204, 400, 409, 423].contains(s)),
        "{statuses:?}"
    );
    assert!(
        (400_000..=1_400_000).contains(&offset),
        "bytes counted once: {offset}"
    );

    // The rest through node B; the file is then an ordinary file on both nodes.
    let res = patch(&b, &loc, offset, &data[offset as usize..]).await;
    assert_eq!(res.status(), 204);
    let files = a.list(&a.token).await;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["name"], "nodes.bin");
    assert_eq!(
        files[0]["checksums"]["sha256"],
        sha256_hex(&data),
        "no byte lost, doubled or interleaved"
    );
    let id = files[0]["id"].as_str().expect("id");
    assert_eq!(sha256_hex(&a.download(id).await), sha256_hex(&data));
    assert_eq!(sha256_hex(&b.download(id).await), sha256_hex(&data));
    assert!(b.leftovers().is_empty(), "{:?}", b.leftovers());
}

#[tokio::test]
async fn chunks_through_alternating_nodes_complete_with_the_right_md5() {
    let pg = Postgres::start().await;
    let (a, b, _shared) = two_nodes(&pg, "chunked_nodes").await;
    let data = bytes(4 * 1024 * 1024 + 77, 72);
    let total = data.len() as u64;
    let mut id: Option<String> = None;
    let mut start = 0u64;
    for (i, c) in data.chunks(1 << 20).enumerate() {
        // Each node keeps running digests of the chunks it took; the other node's chunks
        // make them stale, and completion must notice.
        let node = if i % 2 == 0 { &a } else { &b };
        let (status, v) = chunk(node, &a.token, id.as_deref(), start, total, c).await;
        assert_eq!(status, 200, "{v}");
        id = Some(v["upload_id"].as_str().expect("id").to_string());
        start += c.len() as u64;
        assert_eq!(v["offset"], start);
    }
    let id = id.expect("id");
    // Node A took the first chunk and has digests of it: they are not the file's.
    let (status, v) = complete(&a, &a.token, &id, Some(&md5_hex(&data))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["checksums"]["sha256"], sha256_hex(&data));
    let (status, v) = complete(&b, &a.token, &id, Some(&md5_hex(&data))).await;
    assert_eq!(status, 400, "completed once, whichever node is asked: {v}");
    let listed = b.list(&b.token).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        sha256_hex(&b.download(listed[0]["id"].as_str().expect("id")).await),
        sha256_hex(&data)
    );
}

/// A load balancer in front of several nodes: each new connection goes to the next node.
/// Returns its address and how many connections each node got.
async fn round_robin(
    nodes: Vec<std::net::SocketAddr>,
) -> (std::net::SocketAddr, Arc<Vec<std::sync::atomic::AtomicU64>>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counts: Arc<Vec<AtomicU64>> = Arc::new(nodes.iter().map(|_| AtomicU64::new(0)).collect());
    let c = counts.clone();
    tokio::spawn(async move {
        let mut next = 0usize;
        while let Ok((mut client, _)) = listener.accept().await {
            let i = next % nodes.len();
            next += 1;
            c[i].fetch_add(1, Ordering::Relaxed);
            let Ok(mut server) = tokio::net::TcpStream::connect(nodes[i]).await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (addr, counts)
}

#[tokio::test]
async fn real_tus_clients_upload_through_a_load_balancer_over_two_nodes() {
    use std::sync::atomic::Ordering;
    let pg = Postgres::start().await;
    let (a, b, shared) = two_nodes(&pg, "balanced").await;
    let (lb, counts) = round_robin(vec![a.addr, b.addr]).await;
    let endpoint = format!("http://{lb}/tus/");
    // tuspy opens a connection per request, so its PATCHes alternate between the nodes; the
    // resumed case hands the upload to a fresh client that only knows its URL.
    let cases: Vec<(&str, usize, usize, Option<usize>)> = vec![
        ("python", 5 << 20, 512 << 10, Some(3)),
        ("python", 3 << 20, 1 << 20, None),
        ("node", 6 << 20, 1 << 20, Some(2 << 20)),
    ];
    for (i, (client, size, chunk, stop)) in cases.into_iter().enumerate() {
        let data = bytes(size, 80 + i as u64);
        let name = format!("balanced-{i}.bin");
        let file = shared.path().join(&name);
        std::fs::write(&file, &data).expect("write");
        let mut args = vec![
            endpoint.clone(),
            a.token.clone(),
            file.display().to_string(),
            chunk.to_string(),
            name.clone(),
        ];
        if let Some(s) = stop {
            args.push(s.to_string());
        }
        crate::clients::run(client, args).await;
        let f = crate::clients::stored(&b, &name).await;
        assert_eq!(f["size"], size, "{name}");
        assert_eq!(f["checksums"]["sha256"], sha256_hex(&data), "{name}");
    }
    let served: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert!(
        served.iter().all(|&n| n >= 3),
        "both nodes served the clients: {served:?}"
    );
    assert!(a.leftovers().is_empty(), "{:?}", a.leftovers());
}
