//! Malformed requests: each gets a 4xx JSON error and leaves nothing behind.

use crate::helpers::*;

async fn send(app: &TestApp, req: Vec<u8>) -> RawResponse {
    let addr = app.addr;
    blocking(move || raw_http(addr, &req)).await
}

fn request(token: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /api/files HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test]
async fn malformed_multipart_is_refused_with_json_and_nothing_is_kept() {
    let app = spawn_app(&[]).await;
    let good = multipart_body(&[file_part("file", "a.bin", &bytes(50_000, 7))]);
    let mp = format!("multipart/form-data; boundary={BOUNDARY}");
    let t = app.token.clone();

    let mut no_cd =
        format!("--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{BOUNDARY}--\r\n")
            .into_bytes();
    let mut huge_headers = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\nX-Pad: "
    )
    .into_bytes();
    huge_headers.extend(std::iter::repeat_n(b'p', 200_000));
    huge_headers.extend_from_slice(format!("\r\n\r\ndata\r\n--{BOUNDARY}--\r\n").as_bytes());
    let no_name = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; filename=\"x\"\r\n\r\nhello\r\n--{BOUNDARY}--\r\n").into_bytes();

    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "wrong boundary",
            request(&t, "multipart/form-data; boundary=other", &good),
            400,
        ),
        (
            "missing boundary",
            request(&t, "multipart/form-data", &good),
            400,
        ),
        (
            "truncated body",
            request(&t, &mp, &good[..good.len() / 2]),
            400,
        ),
        (
            "part without Content-Disposition",
            request(&t, &mp, &std::mem::take(&mut no_cd)),
            400,
        ),
        ("part without a name", request(&t, &mp, &no_name), 400),
        (
            "oversized part headers",
            request(&t, &mp, &huge_headers),
            400,
        ),
        (
            "not multipart",
            request(&t, "application/json", b"{\"a\":1}"),
            415,
        ),
        ("no content type", request(&t, "", b"abc"), 415),
        (
            "no file at all",
            request(&t, &mp, &multipart_body(&[text_part("title", "x")])),
            400,
        ),
        (
            "garbage",
            request(&t, &mp, b"\x00\x01\x02 not multipart at all"),
            400,
        ),
    ];
    for (what, req, status) in cases {
        // A truncated body with an honest Content-Length would make the server wait for the
        // rest; send a matching Content-Length and cut the multipart itself instead.
        let res = send(&app, req).await;
        assert_eq!(
            res.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&res.body)
        );
        assert_eq!(
            res.header("content-type"),
            Some("application/json"),
            "{what}"
        );
        let v = res.json();
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {v}"
        );
        assert!(v["code"].is_string(), "{what}");
    }
    let bad_len = format!(
        "POST /api/files HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {t}\r\nContent-Type: {mp}\r\nContent-Length: lots\r\n\r\n"
    );
    let res = send(&app, bad_len.into_bytes()).await;
    assert_eq!(res.status, 400);

    assert!(app.list(&app.token).await.is_empty());
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
    assert!(app.stored_objects().is_empty());
}

/// A query, path or JSON body axum cannot read is a JSON error like every other, not axum's
/// plain-text answer (schemathesis found `GET /api/files?limit=x` answering text/plain).
#[tokio::test]
async fn unreadable_query_path_and_json_get_json_errors() {
    let app = spawn_app(&[]).await;
    let t = app.token.clone();
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n")
            .into_bytes()
    };
    let link = |body: &str| {
        format!(
            "POST /api/files/x/link HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a limit that is not a number",
            get("/api/files?limit=x"),
            400,
            "bad_query",
        ),
        (
            "a negative limit",
            get("/api/files?limit=-1"),
            400,
            "bad_query",
        ),
        (
            "a path that is not UTF-8",
            get("/api/files/%FF"),
            400,
            "bad_path",
        ),
        (
            "a tus id that is not UTF-8",
            get("/tus/%C3%28"),
            400,
            "bad_path",
        ),
        (
            "a session name that is not UTF-8",
            get("/upload-session/abc/files/%FF/"),
            400,
            "bad_path",
        ),
        (
            "a link query with a bad escape",
            get("/dl/x?k=%FF"),
            403,
            "link_invalid",
        ),
        (
            "a repeated limit",
            get("/api/files?limit=1&limit=2"),
            400,
            "bad_query",
        ),
        (
            "a link body that is not JSON",
            link("{nope"),
            400,
            "bad_expiry",
        ),
        (
            "a link body of the wrong shape",
            link("[1,2]"),
            400,
            "bad_expiry",
        ),
    ];
    for (what, req, status, code) in cases {
        let r = send(&app, req).await;
        assert_eq!(
            r.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{what}: {:?}",
            r.header("content-type")
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(v["code"], code, "{what}: {v}");
    }
}
