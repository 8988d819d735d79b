//! Upload sessions (the upload.views API) over real HTTP: the session life, every validation
//! refusal (nothing kept), access by owner / staff / others, expiry by gc and the sweeper,
//! and read-only mode.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

pub fn pdf(n: usize, seed: u64) -> Vec<u8> {
    let mut v = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    v.extend(bytes(n, seed));
    v
}

pub fn png(n: usize, seed: u64) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0".to_vec();
    v.extend(bytes(n, seed));
    v
}

pub async fn open_session(app: &TestApp, token: &str) -> String {
    let res = app
        .client
        .post(app.url("/upload-session/"))
        .bearer_auth(token)
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["status"], "CREATED");
    let t = v["uploadSessionToken"].as_str().expect("token").to_string();
    assert_eq!(t.len(), 32);
    assert!(t.bytes().all(|b| b.is_ascii_alphanumeric()), "{t}");
    t
}

/// POSTs one file part (field `field`) to a session; returns status and JSON.
pub async fn post_file_as(
    app: &TestApp,
    token: &str,
    session: &str,
    field: &str,
    name: &str,
    content: &[u8],
) -> (u16, Value) {
    let body = multipart_body(&[file_part(field, name, content)]);
    let res = app
        .client
        .post(app.url(&format!("/upload-session/{session}/files/")))
        .bearer_auth(token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("upload");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, v)
}

pub async fn post_file(app: &TestApp, session: &str, name: &str, content: &[u8]) -> (u16, Value) {
    post_file_as(app, &app.token, session, "file", name, content).await
}

async fn get(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("get")
}

async fn json_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")),
    )
}

async fn store(app: &TestApp, token: &str, session: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/upload-session/{session}/store/")))
        .bearer_auth(token)
        .send()
        .await
        .expect("store")
}

async fn delete(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.client
        .delete(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("delete")
}

#[tokio::test]
async fn a_session_collects_lists_serves_removes_and_stores_files() {
    let app = spawn_app(&[]).await;
    let s = open_session(&app, &app.token).await;
    let (st, v) = json_of(get(&app, &app.token, &format!("/upload-session/{s}/")).await).await;
    assert_eq!(st, 200);
    assert_eq!(v["status"], "CREATED");
    assert_eq!(v["fileCount"], 0);
    assert!(
        v["expiresAt"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{v}"
    );

    let report = pdf(300_000, 1);
    let (st, v) = post_file(&app, &s, "Annual report 2024 — été.pdf", &report).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["accepted"], true);
    assert_eq!(v["file"], "Annual report 2024 — été.pdf");
    assert_eq!(v["uploadSessionToken"], s.as_str());
    let url = v["url"].as_str().expect("url").to_string();
    let notes = b"first line\nsecond line\n".to_vec();
    let (st, v) = post_file(&app, &s, "notes.txt", &notes).await;
    assert_eq!(st, 200, "{v}");

    let (_, v) = json_of(get(&app, &app.token, &format!("/upload-session/{s}/")).await).await;
    assert_eq!(v["status"], "UPLOADING");
    assert_eq!(v["fileCount"], 2);
    assert_eq!(v["totalSize"], (report.len() + notes.len()) as u64);

    let (st, v) =
        json_of(get(&app, &app.token, &format!("/upload-session/{s}/files/")).await).await;
    assert_eq!(st, 200);
    let files = v["files"].as_array().expect("files");
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["name"], "Annual report 2024 — été.pdf");
    assert_eq!(files[0]["size"], report.len() as u64);
    assert_eq!(files[0]["url"], url.as_str());

    // The served bytes are the sent bytes; a PDF is shown inline, text is an attachment.
    let res = get(&app, &app.token, &url).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/pdf");
    let cd = res.headers()["content-disposition"]
        .to_str()
        .expect("cd")
        .to_string();
    assert!(cd.starts_with("inline"), "{cd}");
    assert!(cd.contains("filename*=UTF-8''"), "{cd}");
    assert_eq!(
        sha256_hex(&res.bytes().await.expect("bytes")),
        sha256_hex(&report)
    );
    let res = get(
        &app,
        &app.token,
        &format!("/upload-session/{s}/files/notes.txt/"),
    )
    .await;
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(res.bytes().await.expect("bytes").as_ref(), notes.as_slice());
    // Session files are not in the catalog before the session is stored.
    assert!(app.list(&app.token).await.is_empty());

    let res = delete(
        &app,
        &app.token,
        &format!("/upload-session/{s}/files/notes.txt/"),
    )
    .await;
    assert_eq!(res.status(), 204);
    let (st, v) = json_of(
        get(
            &app,
            &app.token,
            &format!("/upload-session/{s}/files/notes.txt/"),
        )
        .await,
    )
    .await;
    assert_eq!(st, 404);
    assert!(v["error"].is_string());
    let (st, _) = json_of(
        delete(
            &app,
            &app.token,
            &format!("/upload-session/{s}/files/notes.txt/"),
        )
        .await,
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(
        app.stored_objects().len(),
        1,
        "the removed file's bytes are gone"
    );

    let res = store(&app, &app.token, &s).await;
    let (st, v) = json_of(res).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "STORED");
    assert_eq!(v["expiresAt"], Value::Null);
    let catalog = app.list(&app.token).await;
    assert_eq!(catalog.len(), 1);
    assert_eq!(catalog[0]["name"], "Annual report 2024 — été.pdf");
    let id = catalog[0]["id"].as_str().expect("id").to_string();
    assert_eq!(sha256_hex(&app.download(&id).await), sha256_hex(&report));

    // Stored: no more uploads or deletes, reads still work.
    let (st, v) = post_file(&app, &s, "late.txt", b"late").await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].is_string());
    let (st, _) = json_of(delete(&app, &app.token, &url).await).await;
    assert_eq!(st, 400);
    assert_eq!(get(&app, &app.token, &url).await.status(), 200);
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
}

#[tokio::test]
async fn removing_the_last_file_returns_the_session_to_created() {
    let app = spawn_app(&[]).await;
    let s = open_session(&app, &app.token).await;
    let (st, _) = post_file(&app, &s, "a.txt", b"aaa").await;
    assert_eq!(st, 200);
    // Storing an empty session is refused; a non-empty one is not yet stored here.
    let res = delete(
        &app,
        &app.token,
        &format!("/upload-session/{s}/files/a.txt"),
    )
    .await;
    assert_eq!(res.status(), 204);
    let (_, v) = json_of(get(&app, &app.token, &format!("/upload-session/{s}")).await).await;
    assert_eq!(v["status"], "CREATED");
    assert_eq!(v["fileCount"], 0);
    let res = store(&app, &app.token, &s).await;
    let (st, v) = json_of(res).await;
    assert_eq!(st, 400, "{v}");
}

#[tokio::test]
async fn every_validation_refusal_is_explained_and_keeps_nothing() {
    let app = spawn_app(&[
        ("max_single_upload_size", "64KiB"),
        ("max_total_upload_size", "100KiB"),
        ("max_total_upload_count", "3"),
    ])
    .await;
    let s = open_session(&app, &app.token).await;
    // Over the single-file limit (checked before the session's total).
    let (st, v) = post_file(&app, &s, "big.pdf", &pdf(70_000, 3)).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("File is too large")),
        "{v}"
    );
    let (st, _) = post_file(&app, &s, "first.pdf", &pdf(40_000, 2)).await;
    assert_eq!(st, 200);
    let elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0\x01\0\0\0 lots of code".to_vec();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.txt", Vec::new(), "File is empty"),
        (
            "../../etc/passwd.txt",
            b"x".to_vec(),
            "File name contains a path",
        ),
        (
            "..%2f..%2fx.txt",
            b"x".to_vec(),
            "File name contains a path",
        ),
        ("..%252fx.txt", b"x".to_vec(), "File name contains a path"),
        ("/abs.txt", b"x".to_vec(), "File name is an absolute path"),
        ("C:evil.txt", b"x".to_vec(), "File name is an absolute path"),
        ("CON.txt", b"x".to_vec(), "File name is reserved"),
        ("lpt3.pdf", pdf(10, 4), "File name is reserved"),
        ("tool.exe", b"MZ".to_vec(), "File type is not accepted"),
        (
            "picture.pdf",
            png(100, 5),
            "File content does not match its type",
        ),
        (
            "program.pdf",
            elf.clone(),
            "File content does not match its type",
        ),
        ("script.txt", elf, "File content does not match its type"),
        ("first.pdf", pdf(10, 6), "Duplicate file name"),
        ("second.pdf", pdf(63_000, 7), "Session is too large"),
    ];
    for (name, content, expected) in cases {
        let (st, v) = post_file(&app, &s, name, &content).await;
        assert_eq!(st, 400, "{name}: {v}");
        assert_eq!(v["accepted"], false, "{name}: {v}");
        assert_eq!(v["error"], expected, "{name}: {v}");
        assert!(
            v["verboseError"].as_str().is_some_and(|e| !e.is_empty()),
            "{name}: {v}"
        );
        assert_eq!(v["uploadSessionToken"], s.as_str(), "{name}");
        assert_eq!(v["file"], name, "{name}");
    }
    // A name too long and a name with a control character (percent-encoded in the header).
    let long = format!("{}.txt", "n".repeat(260));
    let (st, v) = post_file(&app, &s, &long, b"x").await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("File name is too long"))
    );
    let (st, v) = post_file(&app, &s, "bell%07.txt", b"x").await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("File name contains control characters"))
    );

    let (st, _) = post_file(&app, &s, "second.txt", b"two").await;
    assert_eq!(st, 200);
    let (st, _) = post_file(&app, &s, "third.png", &png(100, 8)).await;
    assert_eq!(st, 200);
    let (st, v) = post_file(&app, &s, "fourth.txt", b"four").await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("Too many files")),
        "{v}"
    );

    let (_, v) = json_of(get(&app, &app.token, &format!("/upload-session/{s}/files/")).await).await;
    let names: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["first.pdf", "second.txt", "third.png"]);
    assert_eq!(app.stored_objects().len(), 3, "refused files left no bytes");
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
}

#[tokio::test]
async fn malformed_session_requests_get_json_errors() {
    let app = spawn_app(&[]).await;
    let s = open_session(&app, &app.token).await;
    // No file part at all.
    let body = multipart_body(&[text_part("note", "hello")]);
    let res = app
        .client
        .post(app.url(&format!("/upload-session/{s}/files/")))
        .bearer_auth(&app.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("post");
    let (st, v) = json_of(res).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["uploadSessionToken"], s.as_str());
    // A file in another field is not taken.
    let (st, _) = post_file_as(&app, &app.token, &s, "other", "x.txt", b"x").await;
    assert_eq!(st, 400);
    // Not multipart.
    let res = app
        .client
        .post(app.url(&format!("/upload-session/{s}/files/")))
        .bearer_auth(&app.token)
        .body("raw")
        .send()
        .await
        .expect("post");
    let (st, v) = json_of(res).await;
    assert_eq!(st, 415, "{v}");
    // Unauthenticated.
    let res = app
        .client
        .post(app.url("/upload-session/"))
        .send()
        .await
        .expect("post");
    let (st, v) = json_of(res).await;
    assert_eq!(st, 401, "{v}");
    // Bad tokens: malformed, unknown.
    for bad in ["short", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "a%20b"] {
        let (st, v) = post_file(&app, bad, "x.txt", b"x").await;
        assert_eq!(st, 400, "{bad}: {v}");
        assert_eq!(v["error"], "Invalid upload session token");
        let (st, _) =
            json_of(get(&app, &app.token, &format!("/upload-session/{bad}/files/")).await).await;
        assert_eq!(st, 404, "{bad}");
    }
    // A part header with a raw control character in the file name: refused with the same
    // shape as every other refusal.
    let body = multipart_body(&[file_part("file", "bell\u{7}.txt", b"x")]);
    let res = app
        .client
        .post(app.url(&format!("/upload-session/{s}/files/")))
        .bearer_auth(&app.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("post");
    let (st, v) = json_of(res).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["accepted"], false, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    assert!(
        v["verboseError"].as_str().is_some_and(|e| !e.is_empty()),
        "{v}"
    );
    assert!(v["file"].is_string(), "{v}");
    assert_eq!(v["uploadSessionToken"], s.as_str());
    // A multipart body cut short keeps nothing.
    let mut body = multipart_body(&[file_part("file", "cut.txt", &bytes(50_000, 9))]);
    body.truncate(30_000);
    let res = app
        .client
        .post(app.url(&format!("/upload-session/{s}/files/")))
        .bearer_auth(&app.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("post");
    let (st, _) = json_of(res).await;
    assert_eq!(st, 400);
    let (_, v) = json_of(get(&app, &app.token, &format!("/upload-session/{s}/")).await).await;
    assert_eq!(v["fileCount"], 0);
    assert!(app.stored_objects().is_empty());
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
}

#[tokio::test]
async fn other_users_see_nothing_and_staff_read_without_changing() {
    let app = spawn_app(&[]).await;
    let s = open_session(&app, &app.token).await;
    let content = pdf(5000, 10);
    let (st, _) = post_file(&app, &s, "mine.pdf", &content).await;
    assert_eq!(st, 200);
    let url = format!("/upload-session/{s}/files/mine.pdf/");

    let mallory = app.user("mallory").await;
    let (st, v) = post_file_as(&app, &mallory, &s, "file", "x.txt", b"x").await;
    assert_eq!(st, 400);
    assert_eq!(v["error"], "Invalid upload session token");
    for path in [
        format!("/upload-session/{s}/"),
        format!("/upload-session/{s}/files/"),
        url.clone(),
    ] {
        let (st, v) = json_of(get(&app, &mallory, &path).await).await;
        assert_eq!(st, 404, "{path}");
        assert!(
            v.get("files").is_none() && v.get("fileCount").is_none(),
            "{v}"
        );
    }
    let (st, _) = json_of(delete(&app, &mallory, &url).await).await;
    assert_eq!(st, 404);
    // Names in URLs are catalog lookups, never paths: traversal finds nothing.
    for name in [
        "..%2F..%2Fchute.db",
        "%252E%252E%252Fchute.db",
        "mine.pdf%00",
        "..%5Cmine.pdf",
    ] {
        let (st, _) = json_of(
            get(
                &app,
                &app.token,
                &format!("/upload-session/{s}/files/{name}/"),
            )
            .await,
        )
        .await;
        assert_eq!(st, 404, "{name}");
    }

    let meta = app.state.engine.meta.as_ref();
    let staff = meta.create_user("archivist", true).await.expect("staff");
    let staff = chute::auth::issue_token(meta, &staff, "t")
        .await
        .expect("token");
    let res = get(&app, &staff, &url).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), content.as_slice());
    let (st, v) = json_of(get(&app, &staff, &format!("/upload-session/{s}/files/")).await).await;
    assert_eq!((st, v["files"].as_array().map(Vec::len)), (200, Some(1)));
    let (st, _) = json_of(delete(&app, &staff, &url).await).await;
    assert_eq!(st, 403);
    let (st, _) = post_file_as(&app, &staff, &s, "file", "y.txt", b"y").await;
    assert_eq!(st, 400);
    let res = store(&app, &staff, &s).await;
    assert_eq!(res.status(), 403);
    // Still the owner's, untouched.
    let (_, v) = json_of(get(&app, &app.token, &format!("/upload-session/{s}/")).await).await;
    assert_eq!(
        (v["status"].as_str(), v["fileCount"].as_u64()),
        (Some("UPLOADING"), Some(1))
    );
}

/// Moves a session's last activity into the past, as if it had been idle.
async fn age_session(app: &TestApp, token: &str, seconds: i64) {
    const AGE: &str =
        "UPDATE upload_sessions SET last_activity = last_activity - $1 WHERE token = $2";
    if let Some(url) = &app.database_url {
        let pool = sqlx::PgPool::connect(url).await.expect("db");
        let q = sqlx::query(AGE).bind(seconds).bind(token);
        q.execute(&pool).await.expect("age");
        pool.close().await;
        return;
    }
    let db = app.data_dir().join("chute.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("db");
    let q = sqlx::query(AGE).bind(seconds).bind(token);
    q.execute(&pool).await.expect("age");
    pool.close().await;
}

#[tokio::test]
async fn idle_sessions_expire_by_gc_and_their_files_go() {
    let app = spawn_app(&[("upload_session_expire_after_inactive_minutes", "5")]).await;
    let idle = open_session(&app, &app.token).await;
    let busy = open_session(&app, &app.token).await;
    for s in [&idle, &busy] {
        let (st, _) = post_file(&app, s, "a.txt", b"some text").await;
        assert_eq!(st, 200);
    }
    let stored = open_session(&app, &app.token).await;
    post_file(&app, &stored, "keep.txt", b"kept").await;
    let res = store(&app, &app.token, &stored).await;
    assert_eq!(res.status(), 200);
    age_session(&app, &idle, 301).await;
    age_session(&app, &stored, 3600).await;

    // `chute gc` from the command line, beside the running server, as an operator runs it.
    let cli = app.cli_args();
    let gc = move |dry: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_chute"));
        c.env_remove("CHUTE_CONFIG").args(&cli).args([
            "--upload-session-expire-after-inactive-minutes",
            "5",
            "gc",
        ]);
        if dry {
            c.arg("--dry-run");
        }
        let out = c.output().expect("run chute gc");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    };
    let g = gc.clone();
    let out = blocking(move || g(true)).await;
    assert_eq!(out.trim(), format!("session\t{idle}"));
    assert_eq!(app.stored_objects().len(), 3, "a dry run deletes nothing");
    let out = blocking(move || gc(false)).await;
    assert_eq!(out.trim(), format!("session\t{idle}"));
    assert_eq!(app.stored_objects().len(), 2);
    let (_, v) = json_of(get(&app, &app.token, &format!("/upload-session/{idle}/")).await).await;
    assert_eq!(v["status"], "EXPIRED");
    assert_eq!(v["fileCount"], 0);
    assert_eq!(v["expiresAt"], Value::Null);
    let (st, v) = post_file(&app, &idle, "b.txt", b"b").await;
    assert_eq!(st, 400, "{v}");
    let (_, v) = json_of(get(&app, &app.token, &format!("/upload-session/{busy}/")).await).await;
    assert_eq!(v["status"], "UPLOADING");
    let (_, v) = json_of(get(&app, &app.token, &format!("/upload-session/{stored}/")).await).await;
    assert_eq!(v["status"], "STORED", "stored sessions never expire");

    // A session seen after its expiry, before any sweep, is expired on the spot.
    age_session(&app, &busy, 400).await;
    let (st, v) = post_file(&app, &busy, "c.txt", b"c").await;
    assert_eq!(st, 400, "{v}");
    let (_, v) = json_of(get(&app, &app.token, &format!("/upload-session/{busy}/")).await).await;
    assert_eq!(v["status"], "EXPIRED");
    assert_eq!(app.stored_objects().len(), 1);
}

#[tokio::test]
async fn the_periodic_sweep_expires_idle_sessions() {
    let app = spawn_app(&[
        ("upload_session_expire_after_inactive_minutes", "1"),
        ("upload_sweep_interval", "1s"),
    ])
    .await;
    let s = open_session(&app, &app.token).await;
    post_file(&app, &s, "a.txt", b"text").await;
    age_session(&app, &s, 120).await;
    let meta = app.state.engine.meta.clone();
    let mut status = None;
    for _ in 0..100 {
        status = meta
            .get_session(&s)
            .await
            .expect("get")
            .map(|r| r.status.as_str());
        if status == Some("EXPIRED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, Some("EXPIRED"));
    assert!(app.stored_objects().is_empty());
}

#[tokio::test]
async fn read_only_mode_serves_only_single_files() {
    let app = spawn_app(&[]).await;
    let s = open_session(&app, &app.token).await;
    let content = png(2000, 11);
    post_file(&app, &s, "photo.png", &content).await;

    // The same data, served by a second server in read-only mode.
    let (addr, tx) = read_only_twin(&app).await;
    let url = |p: &str| format!("http://{addr}{p}");
    let c = &app.client;
    let res = c
        .get(url(&format!("/upload-session/{s}/files/photo.png/")))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("inline")
    );
    assert_eq!(res.bytes().await.unwrap().as_ref(), content.as_slice());
    let refused = [
        c.post(url("/upload-session/")),
        c.post(url(&format!("/upload-session/{s}/files/"))),
        c.get(url(&format!("/upload-session/{s}/files/"))),
        c.delete(url(&format!("/upload-session/{s}/files/photo.png/"))),
        c.post(url(&format!("/upload-session/{s}/store/"))),
        c.post(url("/api/files")),
        c.post(url("/api/chunked_upload/")),
        c.post(url("/tus/")).header("tus-resumable", "1.0.0"),
    ];
    for rb in refused {
        let (st, v) = json_of(rb.bearer_auth(&app.token).send().await.unwrap()).await;
        assert_eq!(st, 405, "{v}");
        assert_eq!(v["code"], "read_only");
    }
    let _ = tx.send(());
}
