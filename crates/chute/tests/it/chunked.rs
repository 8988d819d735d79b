//! The django-chunked-upload protocol over real HTTP: the happy path, every error the
//! protocol defines, expiry and gc, concurrent writers, and a chunk cut off mid-body.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::helpers::*;

pub(crate) fn md5_hex(data: &[u8]) -> String {
    chute::checksum::digest_hex(chute::checksum::Algorithm::Md5, data)
}

/// Sends bytes `data` as the chunk at `start` of a `total`-byte file.
pub(crate) async fn chunk(
    app: &TestApp,
    token: &str,
    upload_id: Option<&str>,
    start: u64,
    total: u64,
    data: &[u8],
) -> (u16, Value) {
    let end = start + data.len() as u64 - 1;
    chunk_with_range(
        app,
        token,
        upload_id,
        &format!("bytes {start}-{end}/{total}"),
        data,
    )
    .await
}

async fn chunk_with_range(
    app: &TestApp,
    token: &str,
    upload_id: Option<&str>,
    range: &str,
    data: &[u8],
) -> (u16, Value) {
    let mut form = Form::new();
    if let Some(id) = upload_id {
        form = form.text("upload_id", id.to_string());
    }
    form = form.part(
        "file",
        Part::bytes(data.to_vec())
            .file_name("movie.mp4")
            .mime_str("video/mp4")
            .expect("mime"),
    );
    let res = app
        .client
        .post(app.url("/api/chunked_upload/"))
        .bearer_auth(token)
        .header("Content-Range", range)
        .multipart(form)
        .send()
        .await
        .expect("chunk");
    let status = res.status().as_u16();
    (status, res.json().await.expect("json"))
}

pub(crate) async fn complete(
    app: &TestApp,
    token: &str,
    id: &str,
    md5: Option<&str>,
) -> (u16, Value) {
    let mut form = vec![("upload_id", id.to_string())];
    if let Some(m) = md5 {
        form.push(("md5", m.to_string()));
    }
    let res = app
        .client
        .post(app.url("/api/chunked_upload_complete/"))
        .bearer_auth(token)
        .form(&form)
        .send()
        .await
        .expect("complete");
    let status = res.status().as_u16();
    (status, res.json().await.expect("json"))
}

#[tokio::test]
async fn chunks_then_completion_store_the_exact_bytes() {
    let app = spawn_app(&[]).await;
    let data = bytes(5 * 1024 * 1024 + 123, 21);
    let first = &data[..1 << 20];
    let (status, v) = chunk(&app, &app.token, None, 0, data.len() as u64, first).await;
    assert_eq!(status, 200, "{v}");
    let id = v["upload_id"].as_str().expect("id").to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(v["offset"], 1 << 20);
    let expires = v["expires"].as_str().expect("expires");
    assert!(
        time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "{expires}"
    );

    let mut start = 1u64 << 20;
    for c in data[1 << 20..].chunks(1 << 20) {
        let (status, v) = chunk(&app, &app.token, Some(&id), start, data.len() as u64, c).await;
        assert_eq!(status, 200, "{v}");
        start += c.len() as u64;
        assert_eq!(v["offset"], start);
    }
    let res = app
        .auth(
            app.client
                .get(app.url(&format!("/api/chunked_upload?upload_id={id}"))),
        )
        .send()
        .await
        .expect("status");
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["offset"], data.len());
    assert_eq!(v["complete"], false);

    let (status, v) = complete(&app, &app.token, &id, Some(&md5_hex(&data))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["md5"], md5_hex(&data));
    assert_eq!(v["sha256"], sha256_hex(&data));
    assert_eq!(v["name"], "movie.mp4");
    assert_eq!(v["size"], data.len());
    let file_id = v["id"].as_str().expect("id");
    assert_eq!(v["url"], format!("/api/files/{file_id}"));
    assert_eq!(sha256_hex(&app.download(file_id).await), sha256_hex(&data));
    assert_eq!(
        app.list(&app.token).await.len(),
        1,
        "a finished chunked upload is an ordinary file"
    );

    // The package accepts a second completion; chute does not.
    let (status, v) = complete(&app, &app.token, &id, Some(&md5_hex(&data))).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("complete")));
    let (status, v) = chunk(&app, &app.token, Some(&id), 0, data.len() as u64, b"x").await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("complete")),
        "chunk after completion"
    );
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
}

#[tokio::test]
async fn every_protocol_error_is_json_and_loses_nothing() {
    let app = spawn_app(&[("chunked_upload_max_bytes", "10MiB")]).await;
    let data = bytes(3000, 22);
    let total = data.len() as u64;

    // Unauthenticated: 403, as the package answers.
    let res = app
        .client
        .post(app.url("/api/chunked_upload"))
        .header("Content-Range", "bytes 0-9/10")
        .multipart(Form::new().part("file", Part::bytes(vec![0; 10]).file_name("x")))
        .send()
        .await
        .expect("anon");
    assert_eq!(res.status(), 403);
    assert!(res.json::<Value>().await.expect("json")["error"].is_string());

    // Content-Range missing or malformed.
    let form = Form::new().part("file", Part::bytes(data.clone()).file_name("x"));
    let res = app
        .auth(app.client.post(app.url("/api/chunked_upload")))
        .multipart(form)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.expect("json")["code"],
        "no_content_range"
    );
    for bad in [
        "bytes 0-999",
        "bytes 10-5/3000",
        "bytes 0-2999/2999",
        "items 0-1/2",
        "bytes x-y/z",
    ] {
        let (status, v) = chunk_with_range(&app, &app.token, None, bad, &data[..1000]).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (400, Some("bad_content_range")),
            "{bad}"
        );
    }
    // Over chunked_upload_max_bytes.
    let (status, v) = chunk_with_range(
        &app,
        &app.token,
        None,
        "bytes 0-999/20000000",
        &data[..1000],
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (400, Some("too_large")));
    // A new upload must start at 0.
    let (status, v) = chunk(&app, &app.token, None, 1000, total, &data[1000..2000]).await;
    assert_eq!((status, v["offset"].as_u64()), (400, Some(0)));

    let (status, v) = chunk(&app, &app.token, None, 0, total, &data[..1000]).await;
    assert_eq!(status, 200);
    let id = v["upload_id"].as_str().expect("id").to_string();

    // START not at the current offset: 400 with the offset.
    let (status, v) = chunk(&app, &app.token, Some(&id), 2000, total, &data[2000..]).await;
    assert_eq!(
        (status, v["code"].as_str(), v["offset"].as_u64()),
        (400, Some("offset_mismatch"), Some(1000))
    );
    // Chunk size not matching the range: nothing kept.
    let (status, v) = chunk_with_range(
        &app,
        &app.token,
        Some(&id),
        "bytes 1000-1999/3000",
        &data[1000..1500],
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str(), v["offset"].as_u64()),
        (400, Some("size_mismatch"), Some(1000))
    );
    let (status, v) = chunk_with_range(
        &app,
        &app.token,
        Some(&id),
        "bytes 1000-1499/3000",
        &data[1000..2000],
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str(), v["offset"].as_u64()),
        (400, Some("size_mismatch"), Some(1000))
    );
    // TOTAL changing between chunks.
    let (status, v) = chunk(&app, &app.token, Some(&id), 1000, 5000, &data[1000..2000]).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("total_changed")));
    // Unknown and foreign upload ids: 404 JSON.
    let (status, v) = chunk(
        &app,
        &app.token,
        Some("0123456789abcdef0123456789abcdef"),
        1000,
        total,
        &data[1000..2000],
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (404, Some("not_found")));
    let (status, _) = chunk(
        &app,
        &app.token,
        Some("../../etc"),
        1000,
        total,
        &data[1000..2000],
    )
    .await;
    assert_eq!(status, 404);
    let bob = app.user("bob").await;
    let (status, _) = chunk(&app, &bob, Some(&id), 1000, total, &data[1000..2000]).await;
    assert_eq!(status, 404);
    let (status, _) = complete(&app, &bob, &id, Some("00")).await;
    assert_eq!(status, 404);
    // No chunk in the field.
    let res = app
        .auth(app.client.post(app.url("/api/chunked_upload")))
        .header("Content-Range", "bytes 1000-1999/3000")
        .multipart(
            Form::new()
                .text("upload_id", id.clone())
                .part("other", Part::bytes(vec![1; 1000]).file_name("x")),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.expect("json")["code"], "no_chunk");
    // Completion without md5, and before all bytes arrived.
    let (status, v) = complete(&app, &app.token, &id, None).await;
    assert_eq!((status, v["code"].as_str()), (400, Some("missing_fields")));
    let (status, v) = complete(&app, &app.token, &id, Some(&md5_hex(&data))).await;
    assert_eq!(
        (status, v["code"].as_str(), v["offset"].as_u64()),
        (400, Some("incomplete"), Some(1000))
    );

    // The upload is intact after all that: finish it, with a wrong md5 first.
    let (status, _) = chunk(&app, &app.token, Some(&id), 1000, total, &data[1000..]).await;
    assert_eq!(status, 200);
    let (status, v) = complete(
        &app,
        &app.token,
        &id,
        Some("0123456789abcdef0123456789abcdef"),
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (400, Some("md5_mismatch")));
    let (status, v) = complete(&app, &app.token, &id, Some(&md5_hex(&data).to_uppercase())).await;
    assert_eq!(status, 200, "the upload stayed after a wrong md5: {v}");
    assert_eq!(
        sha256_hex(&app.download(v["id"].as_str().expect("id")).await),
        sha256_hex(&data)
    );
}

#[tokio::test]
async fn expired_uploads_answer_410_and_are_collected() {
    let app = spawn_app(&[
        ("chunked_upload_expiration_delta", "1s"),
        ("upload_sweep_interval", "0s"),
    ])
    .await;
    let data = bytes(2000, 23);
    let (_, v) = chunk(&app, &app.token, None, 0, 2000, &data[..1000]).await;
    let id = v["upload_id"].as_str().expect("id").to_string();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, v) = chunk(&app, &app.token, Some(&id), 1000, 2000, &data[1000..]).await;
    assert_eq!((status, v["code"].as_str()), (410, Some("expired")));
    let res = app
        .auth(
            app.client
                .get(app.url(&format!("/api/chunked_upload/?upload_id={id}"))),
        )
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 410);
    let (status, _) = complete(&app, &app.token, &id, Some(&md5_hex(&data))).await;
    assert_eq!(status, 410);

    // `chute gc --dry-run` lists it and deletes nothing; `chute gc` deletes it.
    let cli = app.cli_args();
    let gc = move |dry: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_chute"));
        c.args(&cli).arg("gc");
        if dry {
            c.arg("--dry-run");
        }
        c.output().expect("chute gc")
    };
    let out = blocking({
        let gc = gc.clone();
        move || gc(true)
    })
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    assert!(
        !app.leftovers().is_empty(),
        "dry run keeps the staged bytes"
    );
    let out = blocking(move || gc(false)).await;
    assert!(out.status.success());
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
    let res = app
        .auth(
            app.client
                .get(app.url(&format!("/api/chunked_upload/?upload_id={id}"))),
        )
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn the_server_sweeps_expired_uploads_by_itself() {
    let app = spawn_app(&[
        ("chunked_upload_expiration_delta", "1s"),
        ("upload_sweep_interval", "1s"),
    ])
    .await;
    let (_, v) = chunk(&app, &app.token, None, 0, 2000, &bytes(1000, 24)).await;
    let id = v["upload_id"].as_str().expect("id").to_string();
    let mut gone = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if app
            .state
            .engine
            .meta
            .get_upload(&id)
            .await
            .expect("get")
            .is_none()
        {
            gone = true;
            break;
        }
    }
    assert!(gone, "swept within a few seconds");
    assert!(app.leftovers().is_empty());
}

#[tokio::test]
async fn concurrent_writers_never_interleave() {
    let app = spawn_app(&[]).await;
    let data = bytes(400_000, 25);
    let (_, v) = chunk(
        &app,
        &app.token,
        None,
        0,
        data.len() as u64,
        &data[..100_000],
    )
    .await;
    let id = v["upload_id"].as_str().expect("id").to_string();

    // Writer A holds the upload with a slow body; writer B tries the same offset meanwhile.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let mut head = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"upload_id\"\r\n\r\n{id}\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"movie.mp4\"\r\n\r\n").into_bytes();
    head.extend_from_slice(&data[100_000..150_000]);
    let tail = {
        let mut t = data[150_000..200_000].to_vec();
        t.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        t
    };
    let a = {
        let req = app
            .auth(app.client.post(app.url("/api/chunked_upload/")))
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .header(
                "Content-Range",
                format!("bytes 100000-199999/{}", data.len()),
            )
            .body(reqwest::Body::wrap_stream(futures::stream::poll_fn(
                move |cx| rx.poll_recv(cx),
            )));
        tokio::spawn(async move { req.send().await })
    };
    tx.send(Ok(head.into())).await.expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, v) = chunk(
        &app,
        &app.token,
        Some(&id),
        100_000,
        data.len() as u64,
        &bytes(100_000, 99),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["offset"], 100_000);
    tx.send(Ok(tail.into())).await.expect("send");
    drop(tx);
    let res = a.await.expect("task").expect("a");
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.expect("json")["offset"], 200_000);

    let (status, _) = chunk(
        &app,
        &app.token,
        Some(&id),
        200_000,
        data.len() as u64,
        &data[200_000..],
    )
    .await;
    assert_eq!(status, 200);
    let (status, v) = complete(&app, &app.token, &id, Some(&md5_hex(&data))).await;
    assert_eq!(status, 200, "only writer A's bytes are in the file: {v}");
    assert_eq!(
        sha256_hex(&app.download(v["id"].as_str().expect("id")).await),
        sha256_hex(&data)
    );
}

#[tokio::test]
async fn a_chunk_cut_off_mid_body_keeps_what_arrived() {
    let app = spawn_app(&[]).await;
    let data = bytes(3_000_000, 26);
    let total = data.len();
    let (_, v) = chunk(&app, &app.token, None, 0, total as u64, &data[..1_000_000]).await;
    let id = v["upload_id"].as_str().expect("id").to_string();

    // Send a 2 MB chunk, but only 1.5 MB of it, then drop the connection.
    let addr = app.addr;
    let token = app.token.clone();
    let part = data[1_000_000..2_500_000].to_vec();
    let id2 = id.clone();
    blocking(move || {
        let mut body = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"upload_id\"\r\n\r\n{id2}\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"movie.mp4\"\r\n\r\n").into_bytes();
        let full_len = body.len() + 2_000_000 + BOUNDARY.len() + 8;
        body.extend_from_slice(&part);
        let head = format!(
            "POST /api/chunked_upload/ HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Range: bytes 1000000-2999999/{total}\r\nContent-Length: {full_len}\r\n\r\n"
        );
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(head.as_bytes()).expect("head");
        s.write_all(&body).expect("body");
        std::thread::sleep(Duration::from_millis(300));
    })
    .await;
    let mut offset = 1_000_000u64;
    for _ in 0..50 {
        let v: Value = app
            .auth(
                app.client
                    .get(app.url(&format!("/api/chunked_upload/?upload_id={id}"))),
            )
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        offset = v["offset"].as_u64().expect("offset");
        if offset > 1_000_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        offset > 1_400_000 && offset <= 2_500_000,
        "kept what arrived: {offset}"
    );
    // The client resumes from the reported offset and the file comes out whole.
    let (status, v) = chunk(
        &app,
        &app.token,
        Some(&id),
        offset,
        total as u64,
        &data[offset as usize..],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = complete(&app, &app.token, &id, Some(&md5_hex(&data))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        sha256_hex(&app.download(v["id"].as_str().expect("id")).await),
        sha256_hex(&data)
    );
}
