//! Issue 12: no upload can walk around a limit. Concatenation, undeclared lengths,
//! concurrency and the count of open uploads, on every protocol that stages bytes.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;
use crate::tus::{h, patch, req};

const MIB: usize = 1 << 20;

async fn create_partial(app: &TestApp, length: Option<usize>) -> String {
    let mut r = req(app, Method::POST, "/tus/").header("Upload-Concat", "partial");
    r = match length {
        Some(l) => r.header("Upload-Length", l.to_string()),
        None => r.header("Upload-Defer-Length", "1"),
    };
    let res = r.send().await.expect("partial");
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    h(&res, "location").expect("location").to_string()
}

async fn create_final(app: &TestApp, parts: &[&str]) -> reqwest::Response {
    req(app, Method::POST, "/tus/")
        .header("Upload-Concat", format!("final;{}", parts.join(" ")))
        .send()
        .await
        .expect("final")
}

async fn code_of(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    (status, v["code"].as_str().unwrap_or("").to_string())
}

/// Bytes the user holds in finished files and in the uploads they can still see.
async fn stored_total(app: &TestApp) -> u64 {
    app.list(&app.token)
        .await
        .iter()
        .map(|f| f["size"].as_u64().expect("size"))
        .sum()
}

#[tokio::test]
async fn a_partial_upload_belongs_to_one_final_and_finals_are_bounded() {
    let app = spawn_app(&[("max_upload_size", "8MiB"), ("user_quota", "8MiB")]).await;
    let data = bytes(4 * MIB, 1201);
    let part = create_partial(&app, Some(data.len())).await;
    assert_eq!(patch(&app, &part, 0, &data).await.status(), 204);

    // The same partial named in five finals: one file of 4 MiB, the other four refused.
    let mut made = 0;
    for _ in 0..5 {
        let res = create_final(&app, &[&part]).await;
        match res.status() {
            StatusCode::CREATED => made += 1,
            s => {
                let (_, code) = code_of(res).await;
                assert_eq!((s.as_u16(), code.as_str()), (400, "bad_concat"));
            }
        }
    }
    assert_eq!(made, 1);
    let files = app.list(&app.token).await;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["checksums"]["sha256"], sha256_hex(&data));
    assert_eq!(app.stored_objects().len(), 1);

    // A final may not name one partial twice.
    let a = create_partial(&app, Some(10)).await;
    assert_eq!(patch(&app, &a, 0, &bytes(10, 2)).await.status(), 204);
    let (st, code) = code_of(create_final(&app, &[&a, &a]).await).await;
    assert_eq!((st, code.as_str()), (400, "bad_concat"));

    // Nor more than tus_max_concat_parts (128) partials.
    let mut many = Vec::new();
    for _ in 0..129 {
        many.push(create_partial(&app, Some(0)).await);
    }
    let names: Vec<&str> = many.iter().map(String::as_str).collect();
    let (st, code) = code_of(create_final(&app, &names).await).await;
    assert_eq!((st, code.as_str()), (400, "too_many_parts"));
    // 128 are fine, and the partial refused above is still free for a final of its own.
    let res = create_final(&app, &names[..128]).await;
    assert_eq!(res.status(), 201);
    // A final that is terminated before it is assembled lets its partials go.
    let c = create_partial(&app, Some(10)).await;
    let res = create_final(&app, &[&a, &c]).await;
    assert_eq!(res.status(), 201);
    let waiting = h(&res, "location").expect("location").to_string();
    let (st, code) = code_of(create_final(&app, &[&a]).await).await;
    assert_eq!(
        (st, code.as_str()),
        (400, "bad_concat"),
        "taken while the final waits"
    );
    let res = req(&app, Method::DELETE, &waiting)
        .send()
        .await
        .expect("terminate");
    assert_eq!(res.status(), 204);
    let res = create_final(&app, &[&a]).await;
    assert_eq!(res.status(), 201, "free again");
    let joined = h(&res, "location").expect("location").to_string();
    let res = req(&app, Method::HEAD, &joined).send().await.expect("head");
    assert_eq!(h(&res, "upload-length"), Some("10"));
}

/// A tus PATCH at offset 0, declaring the upload's length with it when given.
async fn patch_at_0(
    app: &TestApp,
    loc: &str,
    length: Option<u64>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut r = req(app, Method::PATCH, loc)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0");
    if let Some(l) = length {
        r = r.header("Upload-Length", l.to_string());
    }
    r.body(body).send().await.expect("patch")
}

#[tokio::test]
async fn deferred_partials_count_as_they_grow() {
    let app = spawn_app(&[("max_upload_size", "8MiB")]).await;
    let a = create_partial(&app, None).await;
    let b = create_partial(&app, None).await;
    let res = create_final(&app, &[&a, &b]).await;
    assert_eq!(res.status(), 201);
    let fin = h(&res, "location").expect("location").to_string();
    let five = bytes(5 * MIB, 1202);
    let declared = Some(five.len() as u64);
    let res = patch_at_0(&app, &a, declared, five.clone()).await;
    assert_eq!(res.status(), 204);
    // The second partial would take the final past 8 MiB: refused, as it streams or as it
    // declares its length.
    assert_eq!(patch_at_0(&app, &b, None, five.clone()).await.status(), 413);
    assert_eq!(
        patch_at_0(&app, &b, declared, Vec::new()).await.status(),
        413
    );
    let res = req(&app, Method::HEAD, &b).send().await.expect("head b");
    let held: u64 = h(&res, "upload-offset")
        .expect("offset")
        .parse()
        .expect("n");
    assert!(held <= 3 * MIB as u64, "b holds {held} bytes");
    let res = req(&app, Method::HEAD, &fin)
        .send()
        .await
        .expect("head final");
    assert_eq!(h(&res, "upload-offset"), None, "never assembled");
    for f in app.stored_sizes() {
        assert!(f.1 <= 8 * MIB as u64, "{f:?}");
    }
    assert!(app.list(&app.token).await.is_empty());
}

#[tokio::test]
async fn undeclared_lengths_stop_at_the_maximum() {
    let app = spawn_app(&[("max_upload_size", "8MiB")]).await;
    let ten = bytes(10 * MIB, 1203);
    // tus, deferred length: the PATCH is cut at the maximum.
    let res = req(&app, Method::POST, "/tus/")
        .header("Upload-Defer-Length", "1")
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    let loc = h(&res, "location").expect("location").to_string();
    let res = patch(&app, &loc, 0, &ten).await;
    assert_eq!(res.status(), 413);
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    let held: u64 = h(&res, "upload-offset")
        .expect("offset")
        .parse()
        .expect("n");
    assert!(held <= 8 * MIB as u64, "staged {held}");

    // The draft: Upload-Complete: ?1 and a chunked body (no length anywhere).
    let stream = futures::stream::iter(
        ten.chunks(MIB)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let res = app
        .client
        .post(app.url("/resumable/"))
        .bearer_auth(&app.token)
        .header("Upload-Complete", "?1")
        .header("Upload-Draft-Interop-Version", "8")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("draft");
    assert_eq!(res.status(), 413);
    assert!(app.list(&app.token).await.is_empty());
    for f in app.stored_sizes() {
        assert!(f.1 <= 8 * MIB as u64, "{f:?}");
    }
}

#[tokio::test]
async fn undeclared_lengths_stop_at_the_quota() {
    let app = spawn_app(&[("user_quota", "8MiB")]).await;
    let ten = bytes(10 * MIB, 1204);
    let res = req(&app, Method::POST, "/tus/")
        .header("Upload-Defer-Length", "1")
        .send()
        .await
        .expect("create");
    let loc = h(&res, "location").expect("location").to_string();
    let res = patch(&app, &loc, 0, &ten).await;
    assert_eq!(code_of(res).await, (413, "quota_exceeded".into()));
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    let held: u64 = h(&res, "upload-offset")
        .expect("offset")
        .parse()
        .expect("n");
    assert!(held <= 8 * MIB as u64, "staged {held}");
}

/// `n` requests that each send all but the last 4 KiB of `body`, wait until all have, then
/// finish. Returns their statuses.
async fn held_together(
    n: usize,
    make: impl Fn(usize, reqwest::Body) -> reqwest::RequestBuilder,
    body: &[u8],
) -> Vec<u16> {
    let barrier = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let request = make(i, reqwest::Body::wrap_stream(stream));
        let send = tokio::spawn(async move { request.send().await });
        let head = body[..body.len() - 4096].to_vec();
        let tail = body[body.len() - 4096..].to_vec();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            for c in head.chunks(256 * 1024) {
                let _ = tx.send(Ok(c.to_vec())).await;
            }
            barrier.wait().await;
            let _ = tx.send(Ok(tail)).await;
            drop(tx);
            send.await
                .expect("task")
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    // Give the servers time to take in what was sent before the last bytes go.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    barrier.wait().await;
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn the_quota_holds_under_concurrency() {
    let app = spawn_app(&[("user_quota", "8MiB")]).await;
    let size = 4 * MIB + 800 * 1024;
    let quota = 8 * MIB as u64;

    // Form uploads, each held at its last 4 KiB until all are there.
    let file = bytes(size, 1205);
    let body = multipart_body(&[file_part("file", "f.bin", &file)]);
    let statuses = held_together(
        10,
        |_, b| {
            app.auth(app.client.post(app.url("/api/files")))
                .header(
                    "Content-Type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(b)
        },
        &body,
    )
    .await;
    assert!(
        statuses.iter().filter(|s| **s == 201).count() <= 1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 413),
        "{statuses:?}"
    );
    assert!(stored_total(&app).await <= quota);

    // tus uploads created at once: the declared lengths are reserved.
    let mut creations = Vec::new();
    for _ in 0..10 {
        creations.push(
            req(&app, Method::POST, "/tus/")
                .header("Upload-Length", size.to_string())
                .send(),
        );
    }
    let created: Vec<_> = futures::future::join_all(creations)
        .await
        .into_iter()
        .map(|r| r.expect("create").status().as_u16())
        .collect();
    let used = stored_total(&app).await;
    let room = (quota - used) / size as u64;
    assert!(
        created.iter().filter(|s| **s == 201).count() as u64 <= room,
        "{created:?} with {used} bytes stored"
    );
    assert!(
        created.iter().all(|s| *s == 201 || *s == 413),
        "{created:?}"
    );

    // Deferred-length tus uploads streaming at once: what is kept stays within the quota.
    let app = spawn_app(&[("user_quota", "8MiB")]).await;
    let mut locs = Vec::new();
    for _ in 0..10 {
        let res = req(&app, Method::POST, "/tus/")
            .header("Upload-Defer-Length", "1")
            .send()
            .await
            .expect("create");
        assert_eq!(res.status(), 201);
        locs.push(h(&res, "location").expect("location").to_string());
    }
    let statuses = held_together(
        10,
        |i, b| {
            req(&app, Method::PATCH, &locs[i])
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", "0")
                .body(b)
        },
        &file,
    )
    .await;
    assert!(
        statuses.iter().all(|s| *s == 204 || *s == 413),
        "{statuses:?}"
    );
    let mut held = 0u64;
    for loc in &locs {
        let res = req(&app, Method::HEAD, loc).send().await.expect("head");
        held += h(&res, "upload-offset")
            .expect("offset")
            .parse::<u64>()
            .expect("n");
    }
    assert!(
        held <= quota,
        "{held} bytes staged under an {quota}-byte quota"
    );
}

#[tokio::test]
async fn open_uploads_per_user_are_bounded() {
    let app = spawn_app(&[("max_open_uploads_per_user", "3")]).await;
    let mut locs = Vec::new();
    for _ in 0..3 {
        locs.push(crate::tus::create(&app, 10, "").await);
    }
    let res = req(&app, Method::POST, "/tus/")
        .header("Upload-Length", "10")
        .send()
        .await
        .expect("fourth");
    assert_eq!(code_of(res).await, (429, "too_many_open_uploads".into()));
    let res = app
        .client
        .post(app.url("/resumable/"))
        .bearer_auth(&app.token)
        .header("Upload-Complete", "?0")
        .header("Upload-Draft-Interop-Version", "8")
        .send()
        .await
        .expect("draft");
    assert_eq!(code_of(res).await, (429, "too_many_open_uploads".into()));
    let (st, v) = crate::chunked::chunk(&app, &app.token, None, 0, 20, &[1u8; 10]).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (429, Some("too_many_open_uploads"))
    );
    // Another user is not held back, and finishing one upload frees a place.
    let bob = app.user("bob").await;
    let res = app
        .client
        .post(app.url("/tus/"))
        .bearer_auth(&bob)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "10")
        .send()
        .await
        .expect("bob");
    assert_eq!(res.status(), 201);
    assert_eq!(patch(&app, &locs[0], 0, &[7u8; 10]).await.status(), 204);
    assert_eq!(
        req(&app, Method::DELETE, &locs[1])
            .send()
            .await
            .expect("delete")
            .status(),
        204
    );
    for _ in 0..2 {
        crate::tus::create(&app, 10, "").await;
    }
}

#[tokio::test]
async fn a_finished_final_upload_tells_its_length() {
    let app = spawn_app(&[]).await;
    let a = create_partial(&app, Some(3)).await;
    let b = create_partial(&app, Some(4)).await;
    assert_eq!(patch(&app, &a, 0, b"abc").await.status(), 204);
    assert_eq!(patch(&app, &b, 0, b"defg").await.status(), 204);
    let res = create_final(&app, &[&a, &b]).await;
    assert_eq!(res.status(), 201);
    let fin = h(&res, "location").expect("location").to_string();
    let res = req(&app, Method::HEAD, &fin).send().await.expect("head");
    assert_eq!(
        (h(&res, "upload-offset"), h(&res, "upload-length")),
        (Some("7"), Some("7"))
    );
}

#[tokio::test]
async fn a_chunk_may_come_before_its_upload_id() {
    let app = spawn_app(&[]).await;
    let data = bytes(300_000, 1206);
    let (st, v) = crate::chunked::chunk(&app, &app.token, None, 0, 300_000, &data[..100_000]).await;
    assert_eq!(st, 200, "{v}");
    let id = v["upload_id"].as_str().expect("id").to_string();
    for start in [100_000usize, 200_000] {
        // The file part first, then upload_id, as a page that appended them in that order.
        let body = multipart_body(&[
            file_part("file", "movie.mp4", &data[start..start + 100_000]),
            text_part("upload_id", &id),
        ]);
        let res = app
            .auth(app.client.post(app.url("/api/chunked_upload/")))
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .header(
                "Content-Range",
                format!("bytes {start}-{}/300000", start + 99_999),
            )
            .body(body)
            .send()
            .await
            .expect("chunk");
        let status = res.status();
        let v: Value = res.json().await.expect("json");
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["upload_id"], id.as_str());
        assert_eq!(v["offset"], start + 100_000);
    }
    let md5 = crate::chunked::md5_hex(&data);
    let (st, v) = crate::chunked::complete(&app, &app.token, &id, Some(&md5)).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["sha256"], sha256_hex(&data));
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
}

#[tokio::test]
async fn a_full_disk_answers_507_and_uploads_resume_once_there_is_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let files = data.join("files");
    let _disk = Tmpfs::mount(&files, "12m");
    let tmp = files.join("tmp");
    let app = spawn_app(&[
        ("data_dir", data.to_str().expect("path")),
        // Local storage on the small disk even in the suite's S3 pass, and spilled form
        // uploads there too.
        ("storage_url", ""),
        ("file_upload_temp_dir", tmp.to_str().expect("path")),
    ])
    .await;
    let seven = bytes(7 * MIB, 1207);
    let first = crate::tus::create(&app, seven.len() as u64, "").await;
    assert_eq!(patch(&app, &first, 0, &seven).await.status(), 204);

    // tus: the PATCH that fills the disk is 507, and the upload stays where it was.
    let other = bytes(7 * MIB, 1208);
    let second = crate::tus::create(&app, other.len() as u64, "").await;
    let res = patch(&app, &second, 0, &other).await;
    assert_eq!(code_of(res).await, (507, "insufficient_storage".into()));
    let res = req(&app, Method::HEAD, &second).send().await.expect("head");
    assert_eq!(h(&res, "upload-offset"), Some("0"));

    // A form upload, a chunk, and the draft: 507 each, nothing left behind.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(other.clone()).file_name("f.bin"),
    );
    let res = app
        .auth(app.client.post(app.url("/api/files")))
        .multipart(form)
        .send()
        .await
        .expect("form");
    assert_eq!(code_of(res).await, (507, "insufficient_storage".into()));
    let (st, v) =
        crate::chunked::chunk(&app, &app.token, None, 0, other.len() as u64, &other).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (507, Some("insufficient_storage")),
        "{v}"
    );
    let res = app
        .client
        .post(app.url("/resumable/"))
        .bearer_auth(&app.token)
        .header("Upload-Complete", "?1")
        .header("Upload-Draft-Interop-Version", "8")
        .body(other.clone())
        .send()
        .await
        .expect("draft");
    assert_eq!(code_of(res).await, (507, "insufficient_storage".into()));
    assert_eq!(app.list(&app.token).await.len(), 1);
    let spilled = std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
    assert_eq!(spilled, 0, "no temp file left");

    // Room again: the tus upload resumes and completes with the right bytes.
    let files_now = app.list(&app.token).await;
    let id = files_now[0]["id"].as_str().expect("id");
    let res = app
        .auth(app.client.delete(app.url(&format!("/api/files/{id}"))))
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);
    assert_eq!(patch(&app, &second, 0, &other).await.status(), 204);
    let files_now = app.list(&app.token).await;
    assert_eq!(files_now.len(), 1);
    assert_eq!(files_now[0]["checksums"]["sha256"], sha256_hex(&other));
    let id = files_now[0]["id"].as_str().expect("id");
    assert_eq!(sha256_hex(&app.download(id).await), sha256_hex(&other));
}

#[tokio::test]
async fn an_upgraded_form_upload_is_replayed_once_when_final_appends_race() {
    let app = spawn_app(&[]).await;
    let file = bytes(24 * MIB, 1209);
    let body = multipart_body(&[file_part("file", "big.bin", &file)]);
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let cut = body.len() - 1000;
    let res = req(&app, Method::POST, "/api/files")
        .header("Upload-Complete", "?0")
        .header("Content-Type", &ct)
        .body(body[..cut].to_vec())
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    let loc = h(&res, "location").expect("location").to_string();
    let append = |offset: usize, part: Vec<u8>| {
        app.client
            .patch(app.url(&loc))
            .bearer_auth(&app.token)
            .header("Content-Type", "application/partial-upload")
            .header("Upload-Offset", offset.to_string())
            .header("Upload-Complete", "?1")
            .header("Upload-Draft-Interop-Version", "8")
            .body(part)
            .send()
    };
    // The last bytes, and meanwhile final appends with nothing new (a client that lost the
    // first answer and asks again). A repeat that comes while the bytes still stream ends
    // that request (a new request for an upload means the old one is stale; it keeps what
    // arrived), and the client sends the rest again from the offset HEAD gives; one that
    // comes during the replay must not replay a second time.
    let mut repeats = Vec::new();
    let mut finals = Vec::new();
    for _ in 0..5 {
        let head = req(&app, Method::HEAD, &loc).send().await.expect("head");
        let Some(at) = h(&head, "upload-offset").and_then(|o| o.parse::<usize>().ok()) else {
            break; // replayed: the upload is gone
        };
        let last = tokio::spawn(append(at, body[at..].to_vec()));
        while !last.is_finished() {
            repeats.push(
                append(body.len(), Vec::new())
                    .await
                    .expect("repeat")
                    .status()
                    .as_u16(),
            );
        }
        let status = last.await.expect("task").expect("last").status().as_u16();
        finals.push(status);
        if status == 201 || repeats.contains(&201) {
            break;
        }
    }
    let files = app.list(&app.token).await;
    assert_eq!(
        files.len(),
        1,
        "replayed once; finals {finals:?}, repeats answered {repeats:?}"
    );
    assert_eq!(files[0]["checksums"]["sha256"], sha256_hex(&file));
}

#[tokio::test]
async fn sizes_that_would_overflow_are_refused_not_wrapped() {
    let app = spawn_app(&[("user_quota", "1MiB")]).await;
    let res = app
        .client
        .post(app.url("/resumable/"))
        .bearer_auth(&app.token)
        .header("Upload-Complete", "?0")
        .header("Upload-Length", "10")
        .header("Upload-Draft-Interop-Version", "8")
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    let loc = h(&res, "location").expect("location").to_string();
    // An offset near 10^15 plus a Content-Length near 2^64: the sum would wrap.
    let (addr, token) = (app.addr, app.token.clone());
    let res = blocking(move || {
        raw_http(
            addr,
            format!(
                "PATCH {loc} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/partial-upload\r\nUpload-Offset: 999999999999999\r\n\
                 Upload-Complete: ?1\r\nUpload-Draft-Interop-Version: 8\r\n\
                 Content-Length: 18446744073709550615\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
    })
    .await;
    assert_eq!(
        res.status,
        409,
        "{:?} {}",
        res.headers,
        String::from_utf8_lossy(&res.body)
    );
    // A form part that declares a length near 2^64 under a quota.
    let body = multipart_body(&[(
        "Content-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\n\
         Content-Length: 18446744073709551600"
            .to_string(),
        b"tiny".to_vec(),
    )]);
    let token = app.token.clone();
    let res =
        blocking(move || raw_http(addr, &post_multipart("/api/files", &token, &body, ""))).await;
    assert_eq!(res.status, 413, "{}", String::from_utf8_lossy(&res.body));
    assert!(app.list(&app.token).await.is_empty());
}

/// Appends `data` to the upload behind the tus URL `loc` straight through the engine, as a
/// PATCH would, and keeps it (offset moves), but does not complete the upload: what a node
/// leaves behind when it dies (or the catalog or the bucket fails) between the last
/// acknowledged byte and the catalog entry.
async fn received_but_not_completed(app: &TestApp, loc: &str, data: &[u8]) -> String {
    let id = loc.rsplit('/').next().expect("id").to_string();
    let engine = &app.state.engine;
    let up = engine.meta.get_upload(&id).await.expect("get").expect("up");
    let mut job = engine
        .start_append(&up, 0, &[], Vec::new(), Default::default())
        .await
        .expect("start");
    for c in data.chunks(64 << 10) {
        assert!(job.send(bytes::Bytes::copy_from_slice(c)).await);
    }
    let ended = job.end(true).await.expect("end");
    assert_eq!(ended.commit().await.expect("commit"), data.len() as u64);
    id
}

/// A tus client that finds all its bytes there (HEAD: offset = length) is done: it sends
/// nothing more. So an upload whose completion was cut short (a node killed, PostgreSQL or
/// the bucket down at that moment) must become its file when a client asks where it stands,
/// not stay an active upload until expiry deletes it.
#[tokio::test]
async fn a_fully_received_tus_upload_completes_when_its_client_asks_where_it_stands() {
    let app = spawn_app(&[]).await;
    let data = bytes(700_000, 120);
    let loc = crate::tus::create(&app, data.len() as u64, "filename Y3V0LmJpbg==").await;
    received_but_not_completed(&app, &loc, &data).await;
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(res.status(), 200);
    assert_eq!(h(&res, "upload-offset"), Some("700000"));
    let files = app.list(&app.token).await;
    assert_eq!(files.len(), 1, "the upload became its file: {files:?}");
    assert_eq!(files[0]["name"], "cut.bin");
    assert_eq!(files[0]["checksums"]["sha256"], sha256_hex(&data));
    let id = files[0]["id"].as_str().expect("id");
    assert_eq!(sha256_hex(&app.download(id).await), sha256_hex(&data));
    // And the finished upload answers as one: a second HEAD changes nothing.
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(res.status(), 200);
    assert_eq!(app.list(&app.token).await.len(), 1);

    // Cut short further on: the file's id recorded and its bytes placed, no catalog entry.
    let data = bytes(300_000, 121);
    let loc = crate::tus::create(&app, data.len() as u64, "filename Y3V0Mi5iaW4=").await;
    let id = received_but_not_completed(&app, &loc, &data).await;
    let engine = &app.state.engine;
    let fid = chute::upload::new_file_id();
    assert!(
        engine
            .meta
            .set_upload_file(&id, &fid)
            .await
            .expect("intent")
    );
    let up = engine.meta.get_upload(&id).await.expect("get").expect("up");
    let (storage, key) = (
        engine.storage.clone(),
        chute::storage::storage_key_for(&fid),
    );
    blocking(move || {
        storage
            .put(&key, chute::storage::Source::Staged(&up.staging_key))
            .expect("place")
    })
    .await;
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(res.status(), 200);
    let files = app.list(&app.token).await;
    let f = files
        .iter()
        .find(|f| f["name"] == "cut2.bin")
        .expect("the second upload became its file");
    assert_eq!(f["id"], fid, "under the id recorded before the crash");
    assert_eq!(sha256_hex(&app.download(&fid).await), sha256_hex(&data));
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
}

/// A read-only node changes nothing: asked where a fully received upload stands, it answers
/// and leaves the finishing to a node that writes. (The same holds for a final upload of a
/// concatenation, which such a node does not assemble.)
#[tokio::test]
async fn a_read_only_node_reports_a_fully_received_upload_without_finishing_it() {
    let app = spawn_app(&[]).await;
    let data = bytes(50_000, 122);
    let loc = crate::tus::create(&app, data.len() as u64, "filename cm8uYmlu").await;
    received_but_not_completed(&app, &loc, &data).await;
    let a = create_partial(&app, Some(3)).await;
    let b = create_partial(&app, Some(4)).await;
    assert_eq!(patch(&app, &a, 0, b"abc").await.status(), 204);
    let res = create_final(&app, &[&a, &b]).await;
    assert_eq!(res.status(), 201);
    let fin = h(&res, "location").expect("location").to_string();
    // Both partials are there once b's bytes are, but the final is assembled only when asked.
    let b_id = b.rsplit('/').next().expect("id");
    let up = app
        .state
        .engine
        .meta
        .get_upload(b_id)
        .await
        .expect("get")
        .expect("b");
    let mut job = app
        .state
        .engine
        .start_append(&up, 0, &[], Vec::new(), Default::default())
        .await
        .expect("start");
    assert!(job.send(bytes::Bytes::from_static(b"defg")).await);
    job.end(true)
        .await
        .expect("end")
        .commit()
        .await
        .expect("commit");

    let (ro, _stop) = read_only_twin(&app).await;
    for path in [&loc, &fin] {
        let res = app
            .client
            .head(format!("http://{ro}{path}"))
            .bearer_auth(&app.token)
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await
            .expect("head");
        assert_eq!(res.status(), 200, "{path}");
    }
    assert!(
        app.list(&app.token).await.is_empty(),
        "the read-only node finished nothing"
    );
    for path in [&loc, &fin] {
        assert_eq!(
            req(&app, Method::HEAD, path)
                .send()
                .await
                .expect("head")
                .status(),
            200
        );
    }
    let files = app.list(&app.token).await;
    assert_eq!(
        files.len(),
        2,
        "a node that writes finishes both: {files:?}"
    );
    let ro_file = files
        .iter()
        .find(|f| f["name"] == "ro.bin")
        .expect("ro.bin");
    assert_eq!(ro_file["checksums"]["sha256"], sha256_hex(&data));
}

/// Finishing on HEAD is the owner's: another user's HEAD is 404 and finishes nothing; and
/// two HEADs at once make one file (the second finds the upload finished under the lock).
#[tokio::test]
async fn only_the_owner_finishes_a_fully_received_upload_and_only_once() {
    let app = spawn_app(&[]).await;
    let data = bytes(400_000, 123);
    let loc = crate::tus::create(&app, data.len() as u64, "filename b25jZS5iaW4=").await;
    received_but_not_completed(&app, &loc, &data).await;
    let other = app.user("mallory").await;
    let res = app
        .client
        .head(app.url(&loc))
        .bearer_auth(&other)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("head");
    assert_eq!(res.status(), 404);
    assert!(
        app.list(&app.token).await.is_empty(),
        "another user finished nothing"
    );
    assert!(app.list(&other).await.is_empty());

    let (a, b) = tokio::join!(
        req(&app, Method::HEAD, &loc).send(),
        req(&app, Method::HEAD, &loc).send()
    );
    assert_eq!(a.expect("head").status(), 200);
    assert_eq!(b.expect("head").status(), 200);
    let files = app.list(&app.token).await;
    assert_eq!(files.len(), 1, "one file: {files:?}");
    assert_eq!(files[0]["checksums"]["sha256"], sha256_hex(&data));
    assert_eq!(app.stored_objects().len(), 1, "one object");
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
}
