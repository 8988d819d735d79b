//! Limits: sizes, counts, quotas, slow and vanishing clients, oversized headers. Each refused
//! request leaves nothing behind: no listed file, no temp or staged file.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::helpers::*;

async fn assert_nothing_kept(app: &TestApp) {
    assert!(app.list(&app.token).await.is_empty(), "nothing listed");
    // The pipeline thread cleans up right after the response; give it a moment.
    for _ in 0..50 {
        if app.leftovers().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
    assert!(
        app.stored_objects().is_empty(),
        "{:?}",
        app.stored_objects()
    );
}

#[tokio::test]
async fn max_upload_size_is_refused_before_the_body_when_content_length_tells() {
    let app = spawn_app(&[("max_upload_size", "1MiB")]).await;
    // Expect: 100-continue lets us see that the server answers before any body byte is sent.
    let addr = app.addr;
    let token = app.token.clone();
    let res = blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let head = format!(
            "POST /api/files HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n"
        );
        s.write_all(head.as_bytes()).expect("write");
        read_response(&mut s)
    })
    .await;
    assert_eq!(res.status, 413);
    assert_eq!(res.json()["code"], "too_large");

    // Without Content-Length (chunked), the limit trips as soon as it is crossed.
    let stream = futures::stream::iter(
        (0..40).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 64 * 1024]))),
    );
    let mut head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big\"\r\n\r\n"
    )
    .into_bytes();
    head.extend_from_slice(b"start");
    let body = futures::StreamExt::chain(
        futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(head))]),
        stream,
    );
    let res = app
        .auth(app.client.post(app.url("/api/files")))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 413);
    assert_eq!(
        res.json::<Value>().await.expect("json")["code"],
        "too_large"
    );
    assert_nothing_kept(&app).await;
}

async fn post_raw(app: &TestApp, parts: &[(String, Vec<u8>)]) -> RawResponse {
    let body = multipart_body(parts);
    let req = post_multipart("/api/files", &app.token, &body, "");
    let addr = app.addr;
    blocking(move || raw_http(addr, &req)).await
}

#[tokio::test]
async fn django_data_limits_are_enforced() {
    let app = spawn_app(&[
        ("data_upload_max_number_fields", "4"),
        ("data_upload_max_number_files", "2"),
        ("data_upload_max_memory_size", "1000"),
    ])
    .await;
    let f = |n: &str| file_part("file", n, &bytes(3000, 9));
    let t = |n: &str| text_part(n, "v");

    let ok = post_raw(&app, &[f("a"), f("b"), t("x"), t("y")]).await;
    assert_eq!(ok.status, 201, "{}", String::from_utf8_lossy(&ok.body));
    for f in ok.json()["files"].as_array().expect("files") {
        let id = f["id"].as_str().expect("id");
        app.auth(app.client.delete(app.url(&format!("/api/files/{id}"))))
            .send()
            .await
            .expect("delete");
    }

    let res = post_raw(&app, &[f("a"), f("b"), f("c")]).await;
    assert_eq!(
        (res.status, res.json()["code"].as_str()),
        (413, Some("too_many_files"))
    );
    let res = post_raw(&app, &[t("1"), t("2"), t("3"), t("4"), f("a")]).await;
    assert_eq!(
        (res.status, res.json()["code"].as_str()),
        (413, Some("too_many_fields"))
    );
    let res = post_raw(&app, &[text_part("big", &"z".repeat(1200)), f("a")]).await;
    assert_eq!(
        (res.status, res.json()["code"].as_str()),
        (413, Some("fields_too_large"))
    );
    assert_nothing_kept(&app).await;
}

#[tokio::test]
async fn quota_refuses_the_upload_that_would_pass_it() {
    let app = spawn_app(&[("user_quota", "1MiB")]).await;
    let up = |name: &str| {
        let form = Form::new().part(
            "file",
            Part::bytes(bytes(600 * 1024, 3)).file_name(name.to_string()),
        );
        app.auth(app.client.post(app.url("/api/files")))
            .multipart(form)
            .send()
    };
    assert_eq!(up("one").await.expect("first").status(), 201);
    let res = up("two").await.expect("second");
    assert_eq!(res.status(), 413);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["code"], "quota_exceeded");
    assert_eq!(app.list(&app.token).await.len(), 1);
    assert!(app.leftovers().is_empty());
    // Another user has a quota of their own.
    let bob = app.user("bob").await;
    let form = Form::new().part("file", Part::bytes(bytes(600 * 1024, 3)).file_name("b"));
    let res = app
        .client
        .post(app.url("/api/files"))
        .bearer_auth(&bob)
        .multipart(form)
        .send()
        .await
        .expect("bob");
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn a_client_that_vanishes_mid_body_leaves_nothing() {
    let app = spawn_app(&[("file_upload_max_memory_size", "64KiB")]).await;
    let addr = app.addr;
    let token = app.token.clone();
    blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        let head = format!(
            "POST /api/files HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 10000000\r\n\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.bin\"\r\n\r\n"
        );
        s.write_all(head.as_bytes()).expect("write");
        s.write_all(&bytes(1_000_000, 4)).expect("write body");
        std::thread::sleep(Duration::from_millis(300));
        // A spilled temp file exists while the upload runs ...
        drop(s); // ... and the client is gone.
    })
    .await;
    assert_nothing_kept(&app).await;
}

#[tokio::test]
async fn a_stalled_body_times_out_with_408() {
    let app = spawn_app(&[("request_body_idle_timeout", "1s")]).await;
    let addr = app.addr;
    let token = app.token.clone();
    let (res, waited) = blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        let head = format!(
            "POST /api/files HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 100000\r\n\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow\"\r\n\r\nsome bytes"
        );
        s.write_all(head.as_bytes()).expect("write");
        let t = Instant::now();
        let res = read_response(&mut s);
        (res, t.elapsed())
    })
    .await;
    assert_eq!(res.status, 408);
    assert_eq!(res.json()["code"], "body_timeout");
    assert!(
        waited < Duration::from_secs(10),
        "cut off by the idle timeout, not the client"
    );
    assert_nothing_kept(&app).await;
}

/// Sends `head`, then 200 bytes every 100 ms (2000 B/s, never idle for long) until the server
/// answers; returns the answer and when it came.
fn trickle(addr: std::net::SocketAddr, head: String) -> (RawResponse, Duration) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(head.as_bytes()).expect("write");
    let mut w = s.try_clone().expect("clone");
    let t = Instant::now();
    let writer = std::thread::spawn(move || {
        while t.elapsed() < Duration::from_secs(15) && w.write_all(&[b'x'; 200]).is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let res = read_response(&mut s);
    let waited = t.elapsed();
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    (res, waited)
}

#[tokio::test]
async fn a_trickling_body_is_cut_off_and_a_resumable_one_keeps_what_came() {
    let app = spawn_app(&[
        ("request_body_idle_timeout", "1s"),
        ("request_body_min_rate", "10KiB"),
    ])
    .await;
    let (addr, token) = (app.addr, app.token.clone());
    let head = format!(
        "POST /api/files HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 1000000\r\n\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow\"\r\n\r\n"
    );
    let (res, waited) = blocking(move || trickle(addr, head)).await;
    assert_eq!(res.status, 408);
    assert_eq!(res.json()["code"], "body_too_slow");
    assert!(waited < Duration::from_secs(10), "cut off by the server");
    assert_nothing_kept(&app).await;

    // A tus PATCH trickling the same way: 408 too, and what arrived is the upload's offset.
    let loc = crate::tus::create(&app, 1_000_000, "filename c2xvdw==").await;
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: 1000000\r\n\r\n"
    );
    let (res, _) = blocking(move || trickle(addr, head)).await;
    assert_eq!(res.status, 408);
    assert_eq!(res.json()["code"], "body_too_slow");
    let res = crate::tus::req(&app, reqwest::Method::HEAD, &loc)
        .send()
        .await
        .expect("head");
    let offset: u64 = crate::tus::h(&res, "upload-offset")
        .and_then(|v| v.parse().ok())
        .expect("Upload-Offset");
    assert!(
        (1000..=5000).contains(&offset),
        "about a second's trickle kept: {offset}"
    );
}

#[tokio::test]
async fn oversized_request_headers_get_431_and_harm_no_one_else() {
    let app = spawn_app(&[]).await;
    let addr = app.addr;
    let token = app.token.clone();
    // A slow, honest upload on another connection runs meanwhile.
    let honest = {
        let client = app.client.clone();
        let url = app.url("/api/files");
        let token = token.clone();
        tokio::spawn(async move {
            let data = bytes(2_000_000, 5);
            let form = Form::new().part("file", Part::bytes(data.clone()).file_name("ok"));
            let res = client
                .post(url)
                .bearer_auth(token)
                .multipart(form)
                .send()
                .await
                .expect("post");
            (
                res.status().as_u16(),
                sha256_hex(&data),
                res.json::<Value>().await.expect("json"),
            )
        })
    };
    let res = blocking(move || {
        let big = "a".repeat(64 * 1024);
        let req = format!("GET /api/files HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nX-Big: {big}\r\n\r\n");
        raw_http(addr, req.as_bytes())
    })
    .await;
    assert_eq!(res.status, 431);
    assert_eq!(res.json()["code"], "headers_too_large");
    let (status, sum, v) = honest.await.expect("honest");
    assert_eq!(status, 201);
    assert_eq!(v["files"][0]["checksums"]["sha256"], sum);
    let res = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("health");
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn progress_is_reported_while_an_upload_runs() {
    let app = spawn_app(&[]).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.bin\"\r\n\r\n"
    );
    let data = bytes(1_000_000, 6);
    let mut body = head.into_bytes();
    body.extend_from_slice(&data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let total = body.len();
    let upload = {
        let req = app
            .auth(app.client.post(app.url("/api/files?X-Progress-ID=job-42")))
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .header("Content-Length", total.to_string())
            .body(reqwest::Body::wrap_stream(tokio_stream(rx)));
        tokio::spawn(async move { req.send().await })
    };
    let (first, rest) = body.split_at(600_000);
    tx.send(Ok(bytes::Bytes::copy_from_slice(first)))
        .await
        .expect("send");
    let progress_url = app.url("/api/progress/job-42");
    let mut report = Value::Null;
    for _ in 0..100 {
        report = app
            .auth(app.client.get(&progress_url))
            .send()
            .await
            .expect("poll")
            .json()
            .await
            .expect("json");
        if report["state"] == "uploading" && report["received"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(report["state"], "uploading", "{report}");
    assert_eq!(report["size"], total);
    let received = report["received"].as_u64().expect("received");
    assert!(received > 0 && received < data.len() as u64, "{report}");
    // Another user cannot see it.
    let bob = app.user("bob").await;
    let v: Value = app
        .client
        .get(&progress_url)
        .bearer_auth(&bob)
        .send()
        .await
        .expect("bob")
        .json()
        .await
        .expect("json");
    assert_eq!(v["state"], "starting");

    tx.send(Ok(bytes::Bytes::copy_from_slice(rest)))
        .await
        .expect("send");
    drop(tx);
    let res = upload.await.expect("task").expect("upload");
    assert_eq!(res.status(), 201);
    let v: Value = app
        .auth(app.client.get(&progress_url))
        .send()
        .await
        .expect("poll")
        .json()
        .await
        .expect("json");
    assert_eq!(v["state"], "done");
    assert_eq!(v["received"], data.len());
    let res = app
        .auth(app.client.get(app.url("/api/progress/bad%20id")))
        .send()
        .await
        .expect("bad");
    assert_eq!(res.status(), 400);
}

fn tokio_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A declared length is held to what the catalog can count, with no `max_upload_size` set:
/// 2^64 - 1 was stored as -1 (and 2^63 as i64::MIN), which lowered the user's usage and made
/// `/api/me` fail with 500 (schemathesis found it). Every protocol's declaration is checked:
/// tus's at creation and when a deferred length is given, chunked's Content-Range total; the
/// draft's structured integers cannot exceed it.
#[tokio::test]
async fn a_declared_length_past_what_can_be_counted_is_413() {
    let app = spawn_app(&[]).await;
    let tus = |headers: &[(&str, &str)]| {
        let mut r = app
            .auth(app.client.post(app.url("/tus/")))
            .header("Tus-Resumable", "1.0.0");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send()
    };
    for huge in [
        "18446744073709551615",
        "9223372036854775808",
        "9223372036854775807",
        "1000000000000000",
    ] {
        let res = tus(&[("Upload-Length", huge)]).await.expect("create");
        assert_eq!(res.status(), 413, "Upload-Length: {huge}");
        let err: Value = res.json().await.expect("json");
        assert_eq!(err["code"], "too_large", "{err}");
    }
    // The largest that can be declared (15 digits, the draft's own bound) is taken.
    let res = tus(&[("Upload-Length", "999999999999999")])
        .await
        .expect("create");
    assert_eq!(res.status(), 201);

    // Declared later, on a deferred-length upload.
    let res = tus(&[("Upload-Defer-Length", "1")]).await.expect("create");
    assert_eq!(res.status(), 201);
    let loc = res.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let res = app
        .auth(app.client.patch(app.url(&loc)))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Upload-Length", "18446744073709551615")
        .header("Content-Type", "application/offset+octet-stream")
        .body("abc")
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 413);

    // chunked: the total of Content-Range.
    let form = Form::new().part("file", Part::bytes(b"abc".to_vec()).file_name("a.bin"));
    let res = app
        .auth(app.client.post(app.url("/api/chunked_upload/")))
        .header("Content-Range", "bytes 0-2/18446744073709551615")
        .multipart(form)
        .send()
        .await
        .expect("chunk");
    assert_eq!(res.status(), 413, "{:?}", res.text().await);

    // What the user holds is still counted, and answered.
    let res = app
        .auth(app.client.get(app.url("/api/me")))
        .send()
        .await
        .expect("me");
    assert_eq!(res.status(), 200);
    let me: Value = res.json().await.expect("json");
    assert_eq!(me["usage"], 999_999_999_999_999_u64, "{me}");
}
