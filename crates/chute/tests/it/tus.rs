//! tus 1.0 over real HTTP: core, creation, creation-with-upload, defer-length, expiration,
//! checksum, termination, method override, and every status the protocol defines.

use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub(crate) fn req(app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.client
        .request(method, app.url(path))
        .bearer_auth(&app.token)
        .header("Tus-Resumable", "1.0.0")
}

pub(crate) async fn create(app: &TestApp, length: u64, meta: &str) -> String {
    let res = req(app, Method::POST, "/tus/")
        .header("Upload-Length", length.to_string())
        .header("Upload-Metadata", meta)
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    res.headers()["location"]
        .to_str()
        .expect("location")
        .to_string()
}

pub(crate) async fn patch(app: &TestApp, loc: &str, offset: u64, data: &[u8]) -> reqwest::Response {
    req(app, Method::PATCH, loc)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset.to_string())
        .body(data.to_vec())
        .send()
        .await
        .expect("patch")
}

pub(crate) fn h<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn options_and_version_negotiation() {
    let app = spawn_app(&[("max_upload_size", "1GiB")]).await;
    let res = app
        .client
        .request(Method::OPTIONS, app.url("/tus/"))
        .send()
        .await
        .expect("options");
    assert_eq!(res.status(), 204);
    assert_eq!(h(&res, "tus-version"), Some("1.0.0"));
    let ext = h(&res, "tus-extension").expect("extensions");
    for e in [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "expiration",
        "checksum",
        "termination",
    ] {
        assert!(ext.split(',').any(|x| x == e), "{e} in {ext}");
    }
    assert_eq!(h(&res, "tus-max-size"), Some("1073741824"));
    assert!(
        h(&res, "tus-checksum-algorithm")
            .expect("algorithms")
            .contains("sha1")
    );

    for version in [None, Some("0.2.2")] {
        let mut r = app
            .client
            .post(app.url("/tus/"))
            .bearer_auth(&app.token)
            .header("Upload-Length", "5");
        if let Some(v) = version {
            r = r.header("Tus-Resumable", v);
        }
        let res = r.send().await.expect("post");
        assert_eq!(res.status(), 412);
        assert_eq!(h(&res, "tus-version"), Some("1.0.0"));
        assert_eq!(h(&res, "tus-resumable"), Some("1.0.0"));
    }
    let listed = app
        .state
        .engine
        .meta
        .expired_uploads(i64::MAX, 10)
        .await
        .expect("uploads");
    assert!(listed.is_empty(), "a refused version processed nothing");
}

#[tokio::test]
async fn upload_in_patches_and_it_becomes_an_ordinary_file() {
    let app = spawn_app(&[]).await;
    let data = bytes(3 * 1024 * 1024 + 5, 41);
    let name = "relevé été.bin";
    let meta = format!(
        "filename {},filetype {},empty",
        b64(name.as_bytes()),
        b64(b"application/x-test")
    );
    let loc = create(&app, data.len() as u64, &meta).await;
    assert!(loc.starts_with("/tus/"), "{loc}");

    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(res.status(), 200);
    assert_eq!(h(&res, "upload-offset"), Some("0"));
    assert_eq!(
        h(&res, "upload-length"),
        Some(data.len().to_string().as_str())
    );
    assert_eq!(
        h(&res, "upload-metadata"),
        Some(meta.as_str()),
        "metadata, empty values included"
    );
    assert_eq!(h(&res, "cache-control"), Some("no-store"));
    assert_eq!(h(&res, "tus-resumable"), Some("1.0.0"));

    let mut offset = 0u64;
    let mut file_url = None;
    for c in data.chunks(1 << 20) {
        let res = patch(&app, &loc, offset, c).await;
        assert_eq!(res.status(), 204);
        offset += c.len() as u64;
        assert_eq!(h(&res, "upload-offset"), Some(offset.to_string().as_str()));
        if offset < data.len() as u64 {
            assert!(h(&res, "upload-expires").is_some_and(|e| e.ends_with(" GMT")));
            assert!(h(&res, "content-location").is_none(), "no file yet");
        } else {
            // The PATCH that finishes the upload says where its file is.
            file_url = h(&res, "content-location").map(str::to_string);
        }
    }
    let files = app.list(&app.token).await;
    assert_eq!(files.len(), 1);
    assert_eq!(file_url, files[0]["url"].as_str().map(str::to_string));
    assert_eq!(files[0]["name"], name);
    assert_eq!(files[0]["content_type"], "application/x-test");
    assert_eq!(files[0]["checksums"]["sha256"], sha256_hex(&data));
    let res = req(&app, Method::GET, &loc).send().await.expect("get");
    assert_eq!(res.status(), 200);
    let cd = h(&res, "content-disposition").expect("cd").to_string();
    assert!(
        cd.contains("filename*=UTF-8''relev%C3%A9%20%C3%A9t%C3%A9.bin"),
        "{cd}"
    );
    assert_eq!(
        sha256_hex(&res.bytes().await.expect("body")),
        sha256_hex(&data)
    );
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(
        h(&res, "upload-offset"),
        Some(data.len().to_string().as_str())
    );
    assert_eq!(
        h(&res, "content-location").map(str::to_string),
        file_url,
        "HEAD too"
    );
    let res = patch(&app, &loc, data.len() as u64, b"more").await;
    assert_eq!(res.status(), 400, "a finished upload takes no more bytes");
}

#[tokio::test]
async fn protocol_errors_have_the_right_status() {
    let app = spawn_app(&[("max_upload_size", "10MiB")]).await;
    let loc = create(&app, 100, "").await;
    let res = req(&app, Method::PATCH, &loc)
        .header("Content-Type", "application/octet-stream")
        .header("Upload-Offset", "0")
        .body(vec![1u8; 10])
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let res = patch(&app, &loc, 5, &[1u8; 10]).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(res.json::<Value>().await.expect("json")["offset"], 0);
    let res = req(&app, Method::PATCH, &loc)
        .header("Content-Type", "application/offset+octet-stream")
        .send()
        .await
        .expect("no offset");
    assert_eq!(res.status(), 400);
    // Past the declared length: refused, nothing kept.
    let res = patch(&app, &loc, 0, &[1u8; 150]).await;
    assert_eq!(res.status(), 413);
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(h(&res, "upload-offset"), Some("0"));

    for (hdrs, status) in [
        (vec![("Upload-Length", "20000000")], 413u16),
        (vec![], 400),
        (
            vec![("Upload-Length", "5"), ("Upload-Defer-Length", "1")],
            400,
        ),
        (vec![("Upload-Defer-Length", "2")], 400),
        (vec![("Upload-Length", "-5")], 400),
        (
            vec![
                ("Upload-Length", "5"),
                ("Upload-Metadata", "name !!notbase64"),
            ],
            400,
        ),
        (
            vec![("Upload-Length", "5"), ("Upload-Metadata", "a YQ==,a YQ==")],
            400,
        ),
    ] {
        let mut r = req(&app, Method::POST, "/tus/");
        for (k, v) in &hdrs {
            r = r.header(*k, *v);
        }
        let res = r.send().await.expect("post");
        assert_eq!(res.status().as_u16(), status, "{hdrs:?}");
        assert!(res.json::<Value>().await.expect("json")["error"].is_string());
    }
    let unknown = "/tus/0123456789abcdef0123456789abcdef";
    assert_eq!(
        req(&app, Method::HEAD, unknown)
            .send()
            .await
            .expect("head")
            .status(),
        404
    );
    assert_eq!(patch(&app, unknown, 0, b"x").await.status(), 404);
    assert_eq!(
        req(&app, Method::HEAD, "/tus/..%2F..%2Fetc")
            .send()
            .await
            .expect("head")
            .status(),
        404
    );

    // Another user gets 404 on every method.
    let bob = app.user("bob").await;
    for m in [Method::HEAD, Method::PATCH, Method::DELETE, Method::GET] {
        let res = app
            .client
            .request(m.clone(), app.url(&loc))
            .bearer_auth(&bob)
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", "0")
            .body("x")
            .send()
            .await
            .expect("bob");
        assert_eq!(res.status(), 404, "{m}");
    }
    let res = app
        .client
        .head(app.url(&loc))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("anon");
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn creation_with_upload_defer_length_and_empty_uploads() {
    let app = spawn_app(&[]).await;
    let res = req(&app, Method::POST, "/tus/")
        .header("Upload-Length", "11")
        .header("Content-Type", "application/offset+octet-stream")
        .body("hello world")
        .send()
        .await
        .expect("create with upload");
    assert_eq!(res.status(), 201);
    assert_eq!(h(&res, "upload-offset"), Some("11"));
    assert_eq!(app.list(&app.token).await.len(), 1, "complete at once");

    let res = req(&app, Method::POST, "/tus/")
        .header("Upload-Defer-Length", "1")
        .send()
        .await
        .expect("defer");
    assert_eq!(res.status(), 201);
    let loc = h(&res, "location").expect("location").to_string();
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(h(&res, "upload-defer-length"), Some("1"));
    assert!(h(&res, "upload-length").is_none());
    assert_eq!(patch(&app, &loc, 0, b"abc").await.status(), 204);
    let res = req(&app, Method::PATCH, &loc)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "3")
        .header("Upload-Length", "6")
        .body("def")
        .send()
        .await
        .expect("last");
    assert_eq!(res.status(), 204);
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(h(&res, "upload-length"), Some("6"));
    assert_eq!(app.list(&app.token).await.len(), 2);

    let loc = create(&app, 0, "").await;
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(
        (h(&res, "upload-offset"), h(&res, "upload-length")),
        (Some("0"), Some("0"))
    );
    assert_eq!(
        app.list(&app.token).await.len(),
        3,
        "an empty upload is complete at creation"
    );
}

#[tokio::test]
async fn checksums_termination_expiration_and_method_override() {
    let app = spawn_app(&[
        ("tus_upload_expiration", "4s"),
        ("upload_sweep_interval", "0s"),
    ])
    .await;
    let loc = create(&app, 8, "").await;
    let sha1 = |d: &[u8]| {
        b64(&hex::decode(chute::checksum::digest_hex(
            chute::checksum::Algorithm::Sha1,
            d,
        ))
        .expect("hex"))
    };
    let send = |offset: u64, data: &'static [u8], checksum: String| {
        req(&app, Method::PATCH, &loc)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string())
            .header("Upload-Checksum", checksum)
            .body(data)
            .send()
    };
    let res = send(0, b"abcd", format!("sha1 {}", sha1(b"abcX")))
        .await
        .expect("bad sum");
    assert_eq!(res.status().as_u16(), 460);
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(
        h(&res, "upload-offset"),
        Some("0"),
        "a mismatching chunk is discarded"
    );
    let res = send(0, b"abcd", format!("crc99 {}", sha1(b"abcd")))
        .await
        .expect("unknown alg");
    assert_eq!(res.status(), 400);
    let res = send(0, b"abcd", format!("sha1 {}", sha1(b"abcd")))
        .await
        .expect("good sum");
    assert_eq!(res.status(), 204);
    assert_eq!(h(&res, "upload-offset"), Some("4"));

    // X-HTTP-Method-Override turns a POST into the PATCH it names.
    let res = req(&app, Method::POST, &loc)
        .header("X-HTTP-Method-Override", "PATCH")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "4")
        .body("ef")
        .send()
        .await
        .expect("override");
    assert_eq!(res.status(), 204);
    assert_eq!(h(&res, "upload-offset"), Some("6"));

    tokio::time::sleep(Duration::from_millis(5000)).await;
    let res = patch(&app, &loc, 6, b"gh").await;
    assert_eq!(res.status(), 410);

    let loc2 = create(&app, 8, "").await;
    let res = req(&app, Method::DELETE, &loc2)
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);
    assert_eq!(
        req(&app, Method::HEAD, &loc2)
            .send()
            .await
            .expect("head")
            .status(),
        404
    );
    assert_eq!(patch(&app, &loc2, 0, b"x").await.status(), 404);
}

/// The body's sender and the response of a PATCH from offset 0 that announces all of `data`,
/// sends its first `sent` bytes, and then goes quiet (a client whose connection dropped
/// unnoticed). Returns once the server has had time to take the bytes in.
pub(crate) async fn stale_patch(
    app: &TestApp,
    loc: &str,
    data: &[u8],
    sent: usize,
) -> (
    tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let r = req(app, Method::PATCH, loc)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Content-Length", data.len().to_string())
        .body(reqwest::Body::wrap_stream(futures::stream::poll_fn(
            move |cx| rx.poll_recv(cx),
        )));
    let stale = tokio::spawn(async move { r.send().await });
    tx.send(Ok(bytes::Bytes::copy_from_slice(&data[..sent])))
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(500)).await;
    (tx, stale)
}

#[tokio::test]
async fn a_new_request_ends_a_stale_patch_and_keeps_its_bytes() {
    let app = spawn_app(&[]).await;
    let data = bytes(600_000, 61);
    let loc = create(&app, data.len() as u64, "").await;
    // A PATCH whose client went quiet mid-body (a dropped connection the server has not
    // noticed yet): it holds the upload.
    let (tx, stale) = stale_patch(&app, &loc, &data, 250_000).await;

    // The client comes back and asks where the upload stands: the stale request is ended
    // within a second and what it received is kept.
    let t = std::time::Instant::now();
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    // The target is well under a second; the bound leaves room for a loaded CI machine.
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(res.status(), 200);
    let offset: u64 = h(&res, "upload-offset")
        .expect("offset")
        .parse()
        .expect("number");
    assert_eq!(
        offset, 250_000,
        "every byte that arrived is durable and counted"
    );
    let stale_res = stale.await.expect("task");
    assert!(
        stale_res.map(|r| r.status() != 204).unwrap_or(true),
        "the stale PATCH did not succeed"
    );
    drop(tx);

    let res = patch(&app, &loc, offset, &data[offset as usize..]).await;
    assert_eq!(res.status(), 204);
    let files = app.list(&app.token).await;
    assert_eq!(
        files[0]["checksums"]["sha256"],
        sha256_hex(&data),
        "no byte lost or doubled"
    );
}

#[tokio::test]
async fn concatenation_of_partial_uploads() {
    let app = spawn_app(&[]).await;
    let data = bytes(300_000, 62);
    let mut urls = Vec::new();
    for part in data.chunks(100_000) {
        let res = req(&app, Method::POST, "/tus/")
            .header("Upload-Concat", "partial")
            .header("Upload-Length", part.len().to_string())
            .send()
            .await
            .expect("partial");
        assert_eq!(res.status(), 201);
        let loc = h(&res, "location").expect("location").to_string();
        assert_eq!(patch(&app, &loc, 0, part).await.status(), 204);
        let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
        assert_eq!(h(&res, "upload-concat"), Some("partial"));
        urls.push(loc);
    }
    assert!(
        app.list(&app.token).await.is_empty(),
        "partials are not files"
    );

    // concatenation-unfinished: a final upload may name a partial still in progress; it has
    // no offset until the partial finishes, and is assembled then.
    let tail = bytes(10, 63);
    let res = req(&app, Method::POST, "/tus/")
        .header("Upload-Concat", "partial")
        .header("Upload-Length", "10")
        .send()
        .await
        .expect("partial");
    let unfinished = h(&res, "location").expect("location").to_string();
    // A partial belongs to one final upload: this one gets a copy of the first part.
    let res = req(&app, Method::POST, "/tus/")
        .header("Upload-Concat", "partial")
        .header("Upload-Length", "100000")
        .send()
        .await
        .expect("partial");
    let head = h(&res, "location").expect("location").to_string();
    assert_eq!(patch(&app, &head, 0, &data[..100_000]).await.status(), 204);
    let res = req(&app, Method::POST, "/tus/")
        .header("Upload-Concat", format!("final;{head} {unfinished}"))
        .send()
        .await
        .expect("final");
    assert_eq!(res.status(), 201);
    assert_eq!(h(&res, "upload-offset"), None, "no offset while unfinished");
    let pending = h(&res, "location").expect("location").to_string();
    let res = req(&app, Method::HEAD, &pending)
        .send()
        .await
        .expect("head");
    assert_eq!(res.status(), 200);
    assert_eq!(h(&res, "upload-offset"), None);
    assert_eq!(h(&res, "upload-length"), Some("100010"));
    assert_eq!(patch(&app, &unfinished, 0, &tail[..4]).await.status(), 204);
    let res = req(&app, Method::HEAD, &pending)
        .send()
        .await
        .expect("head");
    assert_eq!(
        h(&res, "upload-offset"),
        None,
        "one partial still unfinished"
    );
    assert_eq!(patch(&app, &unfinished, 4, &tail[4..]).await.status(), 204);
    let res = req(&app, Method::HEAD, &pending)
        .send()
        .await
        .expect("head");
    assert_eq!(
        h(&res, "upload-offset"),
        Some("100010"),
        "assembled when the partial finished"
    );
    let res = req(&app, Method::GET, &pending).send().await.expect("get");
    assert_eq!(res.status(), 200);
    let mut expected = data[..100_000].to_vec();
    expected.extend_from_slice(&tail);
    assert_eq!(
        sha256_hex(&res.bytes().await.expect("bytes")),
        sha256_hex(&expected)
    );
    // A final upload naming a partial whose length is deferred has no length yet.
    let res = req(&app, Method::POST, "/tus/")
        .header("Upload-Concat", "partial")
        .header("Upload-Defer-Length", "1")
        .send()
        .await
        .expect("deferred partial");
    let deferred = h(&res, "location").expect("location").to_string();
    let res = req(&app, Method::POST, "/tus/")
        .header("Upload-Concat", format!("final;{deferred}"))
        .send()
        .await
        .expect("final");
    let waiting = h(&res, "location").expect("location").to_string();
    let res = req(&app, Method::HEAD, &waiting)
        .send()
        .await
        .expect("head");
    assert_eq!(
        (h(&res, "upload-offset"), h(&res, "upload-length")),
        (None, None)
    );
    // A partial of another user cannot be named.
    let other = app.user("other").await;
    let res = app
        .client
        .post(app.url("/tus/"))
        .bearer_auth(&other)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Concat", format!("final;{}", urls[0]))
        .send()
        .await
        .expect("foreign final");
    assert_eq!(res.status(), 400);

    let res = req(&app, Method::POST, "/tus/")
        .header("Upload-Concat", format!("final;{}", urls[0]))
        .header("Upload-Length", "100000")
        .send()
        .await
        .expect("final with length");
    assert_eq!(res.status(), 400);

    let absolute = format!("http://{}{}", app.addr, urls[1]);
    let meta = format!("filename {}", b64(b"joined.bin"));
    let res = req(&app, Method::POST, "/tus/")
        .header(
            "Upload-Concat",
            format!("final;{} {absolute} {}", urls[0], urls[2]),
        )
        .header("Upload-Metadata", meta)
        .send()
        .await
        .expect("final");
    assert_eq!(res.status(), 201);
    let fin = h(&res, "location").expect("location").to_string();
    let res = req(&app, Method::HEAD, &fin).send().await.expect("head");
    assert_eq!(h(&res, "upload-offset"), Some("300000"));
    assert!(h(&res, "upload-concat").is_some_and(|c| c.starts_with("final;")));
    let res = patch(&app, &fin, 300_000, b"x").await;
    assert_eq!(res.status(), 403, "{:?}", res.text().await);
    let files = app.list(&app.token).await;
    assert_eq!(files.len(), 2);
    let files: Vec<&Value> = files.iter().filter(|f| f["name"] == "joined.bin").collect();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["checksums"]["sha256"], sha256_hex(&data));
}

#[tokio::test]
async fn a_patch_cut_off_mid_body_keeps_what_arrived() {
    let app = spawn_app(&[]).await;
    let data = bytes(2_000_000, 63);
    let loc = create(&app, data.len() as u64, "").await;
    let addr = app.addr;
    let token = app.token.clone();
    let path = loc.clone();
    let part = data[..1_200_000].to_vec();
    blocking(move || {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: 2000000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).expect("head");
        s.write_all(&part).expect("body");
        std::thread::sleep(Duration::from_millis(500));
        // The connection drops with 800,000 bytes unsent.
    })
    .await;
    let mut offset = 0u64;
    for _ in 0..50 {
        let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
        offset = h(&res, "upload-offset")
            .expect("offset")
            .parse()
            .expect("number");
        if offset > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(offset, 1_200_000, "every byte that arrived is kept");
    let res = patch(&app, &loc, offset, &data[offset as usize..]).await;
    assert_eq!(res.status(), 204);
    let files = app.list(&app.token).await;
    assert_eq!(files[0]["checksums"]["sha256"], sha256_hex(&data));
}

/// A PATCH with a chunked body whose `Upload-Checksum` comes as a trailer, over raw HTTP.
fn trailer_patch(
    app: &TestApp,
    loc: &str,
    offset: u64,
    data: &[u8],
    trailer: Option<&str>,
) -> RawResponse {
    let mut req = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n\
         Transfer-Encoding: chunked\r\nTrailer: Upload-Checksum\r\nConnection: close\r\n\r\n",
        app.token
    )
    .into_bytes();
    for c in data.chunks(7000) {
        req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        req.extend_from_slice(c);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n");
    if let Some(t) = trailer {
        req.extend_from_slice(format!("Upload-Checksum: {t}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    raw_http(app.addr, &req)
}

#[tokio::test]
async fn checksum_trailer_verifies_the_patch_after_its_body() {
    use sha1::Digest as _;
    let app = spawn_app(&[]).await;
    let data = bytes(50_000, 71);
    let loc = create(&app, data.len() as u64, "").await;
    let (a, b) = data.split_at(20_000);
    let sha1 = |d: &[u8]| b64(&sha1::Sha1::digest(d));
    let md5 = |d: &[u8]| b64(&md5::Md5::digest(d));

    let offset_now = |app: &TestApp, loc: &str| {
        let r = raw_http(
            app.addr,
            format!(
                "HEAD {loc} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nTus-Resumable: 1.0.0\r\nConnection: close\r\n\r\n",
                app.token
            )
            .as_bytes(),
        );
        r.header("upload-offset").map(str::to_string)
    };
    let (app2, loc2) = (std::sync::Arc::new(app), loc.clone());
    let app = app2.clone();
    let a = a.to_vec();
    let b = b.to_vec();
    blocking(move || {
        let app = &*app2;
        // Wrong digest: 460, nothing counted.
        let r = trailer_patch(app, &loc2, 0, &a, Some(&format!("sha1 {}", sha1(b"other"))));
        assert_eq!(r.status, 460, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(offset_now(app, &loc2).as_deref(), Some("0"));
        // Announced but never sent: 400, nothing counted.
        let r = trailer_patch(app, &loc2, 0, &a, None);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(offset_now(app, &loc2).as_deref(), Some("0"));
        // An algorithm the server does not offer: 400.
        let r = trailer_patch(app, &loc2, 0, &a, Some("crc32 AAAA"));
        assert_eq!(r.status, 400);
        assert_eq!(offset_now(app, &loc2).as_deref(), Some("0"));
        // Right digests (sha1, then md5): kept.
        let r = trailer_patch(app, &loc2, 0, &a, Some(&format!("sha1 {}", sha1(&a))));
        assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("upload-offset"), Some("20000"));
        let r = trailer_patch(app, &loc2, 20_000, &b, Some(&format!("md5 {}", md5(&b))));
        assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    })
    .await;
    let res = req(&app, Method::OPTIONS, "/tus/")
        .send()
        .await
        .expect("options");
    assert!(
        h(&res, "tus-extension").is_some_and(|e| e.split(',').any(|x| x == "checksum-trailer"))
    );
    let files = app.list(&app.token).await;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["checksums"]["sha256"], sha256_hex(&data));
}

#[tokio::test]
async fn patches_stream_through_quota_and_progress() {
    let app = spawn_app(&[("user_quota", "100KiB")]).await;
    let res = req(&app, Method::POST, "/tus/")
        .header("Upload-Defer-Length", "1")
        .send()
        .await
        .expect("create");
    let loc = h(&res, "location").expect("location").to_string();
    // The length is unknown at creation, so the quota is enforced while the PATCH streams.
    let res = patch(&app, &loc, 0, &bytes(150_000, 81)).await;
    assert_eq!(res.status(), 413);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["code"], "quota_exceeded");
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(
        h(&res, "upload-offset"),
        Some("0"),
        "nothing of the refused PATCH is kept"
    );

    let data = bytes(60_000, 82);
    let res = req(&app, Method::PATCH, &loc)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("X-Progress-ID", "tus-patch-1")
        .body(data.clone())
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 204);
    let res = app
        .auth(app.client.get(app.url("/api/progress/tus-patch-1")))
        .send()
        .await
        .expect("progress");
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["state"], "done", "{v}");
    assert_eq!(v["received"], 60_000, "{v}");
    // Staged bytes count against the quota too: 60 KB staged + 50 KB more is over 100 KiB.
    let res = patch(&app, &loc, 60_000, &bytes(50_000, 83)).await;
    assert_eq!(res.status(), 413);
}

#[tokio::test]
async fn without_fsync_uploads_still_arrive_whole() {
    // upload_fsync = false trades power-loss durability for speed; the bytes are the same.
    let app = spawn_app(&[("upload_fsync", "false")]).await;
    let data = bytes(3_000_000, 101);
    let loc = create(&app, data.len() as u64, "").await;
    for (i, part) in data.chunks(1_000_000).enumerate() {
        assert_eq!(
            patch(&app, &loc, (i * 1_000_000) as u64, part)
                .await
                .status(),
            204
        );
    }
    let res = app
        .auth(app.client.post(app.url("/api/files")))
        .multipart(reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(data.clone()).file_name("form.bin"),
        ))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 201);
    let files = app.list(&app.token).await;
    assert_eq!(files.len(), 2);
    for f in files {
        assert_eq!(f["checksums"]["sha256"], sha256_hex(&data));
        let id = f["id"].as_str().expect("id");
        assert_eq!(sha256_hex(&app.download(id).await), sha256_hex(&data));
    }
}

/// A PATCH after another one on the same node starts from the record the first one committed
/// (not read again). A change made to the upload's record from outside this node's engine (another
/// process on the same catalog, here the catalog called directly) is still caught: the append
/// is not acknowledged, the client learns the recorded offset, and resuming from it stores
/// exactly the bytes sent. An upload removed from outside answers 404.
#[tokio::test]
async fn a_change_to_the_record_from_outside_is_caught_by_the_next_patch() {
    let app = spawn_app(&[]).await;
    let data = bytes(3000, 41);
    let loc = create(&app, 3000, "").await;
    let id = loc.rsplit('/').next().expect("id").to_string();
    assert_eq!(patch(&app, &loc, 0, &data[..1000]).await.status(), 204);
    assert_eq!(
        patch(&app, &loc, 1000, &data[1000..2000]).await.status(),
        204
    );
    // Another writer moves the offset back to 1000 (the bytes past it are then not promised).
    let meta = &app.state.engine.meta;
    assert!(
        meta.advance_upload(&id, 2000, 1000, None)
            .await
            .expect("cas")
    );
    let res = patch(&app, &loc, 2000, &data[2000..]).await;
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["offset"], 1000, "{body}");
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(h(&res, "upload-offset"), Some("1000"));
    assert_eq!(patch(&app, &loc, 1000, &data[1000..]).await.status(), 204);
    let files = app.list(&app.token).await;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["checksums"]["sha256"], sha256_hex(&data));

    // Removed from outside between two PATCHes: 404, and nothing kept.
    let loc = create(&app, 3000, "").await;
    let id = loc.rsplit('/').next().expect("id").to_string();
    assert_eq!(patch(&app, &loc, 0, &data[..1000]).await.status(), 204);
    meta.delete_upload(&id, &[]).await.expect("delete");
    assert_eq!(
        patch(&app, &loc, 1000, &data[1000..2000]).await.status(),
        404
    );
    assert!(meta.get_upload(&id).await.expect("read").is_none());
    assert_eq!(app.list(&app.token).await.len(), 1);
}
