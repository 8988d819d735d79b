//! The IETF resumable-upload draft (interop 8) over real HTTP: creation in one request and
//! the careful way, offset retrieval, appends, completion, cancellation, and the draft's
//! problem+json errors.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;

fn req(app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.client
        .request(method, app.url(path))
        .bearer_auth(&app.token)
        .header("Upload-Draft-Interop-Version", "8")
}

fn hv<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn append(
    app: &TestApp,
    loc: &str,
    offset: u64,
    done: bool,
    data: &[u8],
) -> reqwest::Response {
    req(app, Method::PATCH, loc)
        .header("Content-Type", "application/partial-upload")
        .header("Upload-Offset", offset.to_string())
        .header("Upload-Complete", if done { "?1" } else { "?0" })
        .body(data.to_vec())
        .send()
        .await
        .expect("patch")
}

async fn problem(res: reqwest::Response, kind: &str) -> Value {
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(hv(&res, "content-type"), Some("application/problem+json"));
    let v: Value = res.json().await.expect("json");
    assert_eq!(
        v["type"],
        format!("https://iana.org/assignments/http-problem-types#{kind}"),
        "{v}"
    );
    assert!(v["error"].is_string() && v["title"].is_string(), "{v}");
    v
}

#[tokio::test]
async fn a_whole_upload_in_one_request_becomes_a_file() {
    let app = spawn_app(&[]).await;
    let data = bytes(700_000, 91);
    let res = req(&app, Method::POST, "/tus/")
        .header("Upload-Complete", "?1")
        .header("Content-Type", "image/png")
        .header(
            "Content-Disposition",
            "attachment; filename=\"x.png\"; filename*=UTF-8''%C3%A9t%C3%A9.png",
        )
        .body(data.clone())
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    assert_eq!(hv(&res, "upload-complete"), Some("?1"));
    assert_eq!(hv(&res, "upload-offset"), Some("700000"));
    let loc = hv(&res, "location").expect("location").to_string();
    assert!(loc.starts_with("/resumable/"), "{loc}");
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["name"], "été.png");
    assert_eq!(v["content_type"], "image/png");
    assert_eq!(v["checksums"]["sha256"], sha256_hex(&data));
    let files = app.list(&app.token).await;
    assert_eq!(files.len(), 1);
    let res = req(&app, Method::GET, &loc).send().await.expect("get");
    assert_eq!(
        sha256_hex(&res.bytes().await.expect("bytes")),
        sha256_hex(&data)
    );
}

#[tokio::test]
async fn careful_creation_appends_and_completion() {
    let app = spawn_app(&[("max_upload_size", "10MiB")]).await;
    let data = bytes(300_000, 92);
    let res = req(&app, Method::POST, "/resumable/")
        .header("Upload-Complete", "?0")
        .header("Content-Disposition", "attachment; filename=\"report.bin\"")
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    assert_eq!(hv(&res, "upload-offset"), Some("0"));
    assert_eq!(hv(&res, "upload-complete"), Some("?0"));
    let limit = hv(&res, "upload-limit").expect("limit").to_string();
    assert!(
        limit.contains("max-size=10485760") && limit.contains("max-age="),
        "{limit}"
    );
    let loc = hv(&res, "location").expect("location").to_string();

    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(res.status(), 204);
    assert_eq!(hv(&res, "upload-offset"), Some("0"));
    assert_eq!(hv(&res, "upload-complete"), Some("?0"));
    assert_eq!(hv(&res, "cache-control"), Some("no-store"));
    assert_eq!(hv(&res, "upload-length"), None);

    let res = append(&app, &loc, 0, false, &data[..100_000]).await;
    assert_eq!(res.status(), 204);
    assert_eq!(hv(&res, "upload-offset"), Some("100000"));
    assert_eq!(hv(&res, "upload-complete"), Some("?0"));

    // Wrong offset: 409 problem with both offsets.
    let v = problem(
        append(&app, &loc, 50_000, false, &data[50_000..60_000]).await,
        "mismatching-upload-offset",
    )
    .await;
    assert_eq!(
        (v["expected-offset"].as_u64(), v["provided-offset"].as_u64()),
        (Some(100_000), Some(50_000))
    );
    // Wrong content type: 415 (a tus PATCH is not an append of the draft).
    let res = req(&app, Method::PATCH, &loc)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "100000")
        .header("Upload-Complete", "?0")
        .body(vec![1u8; 10])
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 415);
    // Missing or malformed fields: 400 JSON.
    for (name, value) in [("Upload-Offset", "abc"), ("Upload-Complete", "yes")] {
        let mut rb =
            req(&app, Method::PATCH, &loc).header("Content-Type", "application/partial-upload");
        if name != "Upload-Offset" {
            rb = rb.header("Upload-Offset", "100000");
        }
        if name != "Upload-Complete" {
            rb = rb.header("Upload-Complete", "?0");
        }
        let res = rb
            .header(name, value)
            .body(vec![1u8; 10])
            .send()
            .await
            .expect("patch");
        assert_eq!(res.status(), 400, "{name}");
        let v: Value = res.json().await.expect("json");
        assert!(v["error"].is_string());
    }

    let res = append(&app, &loc, 100_000, true, &data[100_000..]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(hv(&res, "upload-complete"), Some("?1"));
    assert_eq!(hv(&res, "upload-length"), Some("300000"));
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["name"], "report.bin");
    assert_eq!(v["checksums"]["sha256"], sha256_hex(&data));

    // After completion: HEAD says so; a non-empty append is a completed-upload problem.
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(hv(&res, "upload-complete"), Some("?1"));
    problem(
        append(&app, &loc, 300_000, true, b"more").await,
        "completed-upload",
    )
    .await;
    // The same empty final append again (its answer was lost) gets the file again.
    let res = append(&app, &loc, 300_000, true, b"").await;
    assert_eq!(res.status(), 200);

    let res = req(&app, Method::GET, &loc).send().await.expect("get");
    assert_eq!(
        sha256_hex(&res.bytes().await.expect("bytes")),
        sha256_hex(&data)
    );
    // Another user sees nothing.
    let other = app.user("other").await;
    let res = app
        .client
        .head(app.url(&loc))
        .bearer_auth(&other)
        .send()
        .await
        .expect("head");
    assert_eq!(res.status(), 404);
    // Cancellation removes the upload and its file.
    let res = req(&app, Method::DELETE, &loc)
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(res.status(), 404);
    assert!(app.list(&app.token).await.is_empty());
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
}

#[tokio::test]
async fn inconsistent_lengths_are_problems_and_lose_nothing() {
    let app = spawn_app(&[("max_upload_size", "1MiB")]).await;
    // Upload-Length disagrees with a complete creation's Content-Length.
    let res = req(&app, Method::POST, "/tus/")
        .header("Upload-Complete", "?1")
        .header("Upload-Length", "99")
        .body(vec![7u8; 50])
        .send()
        .await
        .expect("create");
    problem(res, "inconsistent-upload-length").await;
    // Over the limit: 413.
    let res = req(&app, Method::POST, "/tus/")
        .header("Upload-Complete", "?0")
        .header("Upload-Length", (2u64 << 20).to_string())
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 413);

    let data = bytes(1000, 93);
    let res = req(&app, Method::POST, "/resumable/")
        .header("Upload-Complete", "?0")
        .header("Upload-Length", "1000")
        .body(data[..400].to_vec())
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    assert_eq!(hv(&res, "upload-offset"), Some("400"));
    let loc = hv(&res, "location").expect("location").to_string();
    // Completing short of the length, or running past it: problems; the offset stays.
    problem(
        append(&app, &loc, 400, true, &data[400..900]).await,
        "inconsistent-upload-length",
    )
    .await;
    problem(
        append(&app, &loc, 400, false, &bytes(700, 94)).await,
        "inconsistent-upload-length",
    )
    .await;
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(hv(&res, "upload-offset"), Some("400"));
    assert_eq!(hv(&res, "upload-length"), Some("1000"));
    let res = append(&app, &loc, 400, true, &data[400..]).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["checksums"]["sha256"], sha256_hex(&data));
    // tus clients are unaffected: OPTIONS advertises the draft's limits beside tus's.
    let res = app
        .client
        .request(Method::OPTIONS, app.url("/tus/"))
        .send()
        .await
        .expect("options");
    assert!(hv(&res, "upload-limit").is_some_and(|l| l.contains("max-size=1048576")));
    assert_eq!(hv(&res, "tus-version"), Some("1.0.0"));
}

#[tokio::test]
async fn a_form_upload_to_the_file_api_becomes_resumable() {
    let app = spawn_app(&[]).await;
    let a = bytes(400_000, 95);
    let b = bytes(150_000, 96);
    let body = multipart_body(&[
        file_part("file", "a.bin", &a),
        text_part("title", "two files"),
        file_part("file", "b.bin", &b),
    ]);
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let cut = 250_000;
    // The first part of the request, then the connection is "lost"; the client resumes.
    let res = req(&app, Method::POST, "/api/files")
        .header("Upload-Complete", "?0")
        .header("Content-Type", &ct)
        .body(body[..cut].to_vec())
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    assert_eq!(hv(&res, "upload-offset"), Some(cut.to_string().as_str()));
    let loc = hv(&res, "location").expect("location").to_string();
    assert!(
        app.list(&app.token).await.is_empty(),
        "nothing is a file before completion"
    );
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(hv(&res, "upload-offset"), Some(cut.to_string().as_str()));
    let res = append(&app, &loc, cut as u64, true, &body[cut..]).await;
    let st = res.status();
    if st != 201 {
        panic!("{st}: {:?}", res.text().await);
    }
    assert_eq!(hv(&res, "upload-complete"), Some("?1"));
    let v: Value = res.json().await.expect("json");
    let files = v["files"].as_array().expect("files");
    assert_eq!(files.len(), 2, "{v}");
    assert_eq!(files[0]["checksums"]["sha256"], sha256_hex(&a));
    assert_eq!(files[1]["checksums"]["sha256"], sha256_hex(&b));
    assert_eq!(v["fields"]["title"][0], "two files");
    assert_eq!(app.list(&app.token).await.len(), 2);
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());

    // In one request with ?1: the same answer at once.
    let res = req(&app, Method::POST, "/api/files")
        .header("Upload-Complete", "?1")
        .header("Content-Type", &ct)
        .body(body.clone())
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["files"].as_array().map(Vec::len), Some(2));
    // Not a form: refused before anything is staged.
    let res = req(&app, Method::POST, "/api/files")
        .header("Upload-Complete", "?0")
        .header("Content-Type", "application/octet-stream")
        .body(vec![1u8; 10])
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 415);
    // A completed body that is not valid multipart: the file API's 400, nothing kept.
    let res = req(&app, Method::POST, "/api/files")
        .header("Upload-Complete", "?1")
        .header("Content-Type", &ct)
        .body(b"garbage, not multipart".to_vec())
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 400);
    assert_eq!(app.list(&app.token).await.len(), 4);
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
}

#[tokio::test]
async fn hostile_and_foreign_requests_touch_nothing() {
    let app = spawn_app(&[]).await;
    let data = bytes(200_000, 97);
    let res = req(&app, Method::POST, "/resumable/")
        .header("Upload-Complete", "?0")
        .body(data[..100_000].to_vec())
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    let loc = hv(&res, "location").expect("location").to_string();

    // Another user: 404 on every method, and the upload is unchanged.
    let other = app.user("mallory").await;
    for m in [Method::HEAD, Method::GET, Method::DELETE] {
        let res = app
            .client
            .request(m.clone(), app.url(&loc))
            .bearer_auth(&other)
            .send()
            .await
            .expect("foreign");
        assert_eq!(res.status(), 404, "{m}");
    }
    let res = app
        .client
        .patch(app.url(&loc))
        .bearer_auth(&other)
        .header("Content-Type", "application/partial-upload")
        .header("Upload-Offset", "100000")
        .header("Upload-Complete", "?1")
        .body(vec![0u8; 10])
        .send()
        .await
        .expect("foreign patch");
    assert_eq!(res.status(), 404);
    let v: Value = res.json().await.expect("json");
    assert!(v["error"].is_string());
    // Unauthenticated: 401 JSON.
    let res = app.client.head(app.url(&loc)).send().await.expect("anon");
    assert_eq!(res.status(), 401);
    let res = app
        .client
        .post(app.url("/resumable/"))
        .header("Upload-Complete", "?1")
        .body("x")
        .send()
        .await
        .expect("anon");
    assert_eq!(res.status(), 401);
    // Malformed creation fields: 400 JSON, nothing created.
    for (name, value) in [
        ("Upload-Complete", "maybe"),
        ("Upload-Length", "-5"),
        ("Upload-Length", "12abc"),
    ] {
        let mut rb = req(&app, Method::POST, "/resumable/");
        if name != "Upload-Complete" {
            rb = rb.header("Upload-Complete", "?0");
        }
        let res = rb.header(name, value).send().await.expect("create");
        assert_eq!(res.status(), 400, "{name}: {value}");
        let v: Value = res.json().await.expect("json");
        assert!(v["error"].is_string());
    }
    // An append without Upload-Offset, and an unknown upload id.
    let res = req(&app, Method::PATCH, &loc)
        .header("Content-Type", "application/partial-upload")
        .header("Upload-Complete", "?0")
        .body(vec![1u8; 10])
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 400);
    let res = req(
        &app,
        Method::HEAD,
        "/resumable/0123456789abcdef0123456789abcdef",
    )
    .send()
    .await
    .expect("head");
    assert_eq!(res.status(), 404);

    // The owner's upload is where it was, and completes with the right bytes.
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(hv(&res, "upload-offset"), Some("100000"));
    let res = append(&app, &loc, 100_000, true, &data[100_000..]).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["checksums"]["sha256"], sha256_hex(&data));
    assert!(
        app.list(&other).await.is_empty(),
        "nothing reached the other user"
    );
}
