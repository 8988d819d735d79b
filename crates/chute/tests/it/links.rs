//! Download links: made by the owner, fetched by curl with no header (Range, ETag and the
//! file's name as ever), refused when changed, expired, rotated away or for a deleted file,
//! and valid on every node.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

async fn link(app: &TestApp, token: &str, id: &str, body: Option<Value>) -> (u16, Value) {
    let mut rb = app
        .client
        .post(app.url(&format!("/api/files/{id}/link")))
        .bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let res = rb.send().await.expect("link");
    let st = res.status().as_u16();
    (st, res.json().await.unwrap_or(Value::Null))
}

async fn upload(app: &TestApp, token: &str, name: &str, data: &[u8]) -> String {
    let (st, v) = form_upload_to(app.url("").trim_end_matches('/'), token, name, data).await;
    assert_eq!(st, 201, "{v}");
    v["files"][0]["id"].as_str().expect("id").to_string()
}

/// curl with no Authorization header: (status, headers, body).
async fn curl(url: String, extra: &[&str]) -> (u16, String, Vec<u8>) {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let (headers, body) = (dir.path().join("h"), dir.path().join("b"));
    let (h, b) = (headers.clone(), body.clone());
    let out = blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "-o"])
            .arg(&b)
            .arg("-D")
            .arg(&h)
            .args(["-w", "%{http_code}"])
            .args(&extra)
            .arg(url)
            .output()
            .expect("curl")
    })
    .await;
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("code");
    (
        code,
        std::fs::read_to_string(headers).unwrap_or_default(),
        std::fs::read(body).unwrap_or_default(),
    )
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn a_link_downloads_the_file_without_a_header_until_it_expires() {
    let app = spawn_app(&[("download_link_max_age", "1h")]).await;
    let data = bytes(1_000_000, 12);
    let id = upload(&app, &app.token, "année report.pdf", &data).await;
    let (st, v) = link(&app, &app.token, &id, Some(json!({"expires_in": 600}))).await;
    assert_eq!(st, 201, "{v}");
    let url = app.url(v["url"].as_str().expect("url"));
    let expires = time::OffsetDateTime::parse(
        v["expires_at"].as_str().expect("expires_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339");
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(
        left.whole_seconds() > 590 && left.whole_seconds() <= 600,
        "{left}"
    );

    // The whole file, its name, its ETag; a range; a conditional request.
    let (st, h, body) = curl(url.clone(), &[]).await;
    assert_eq!(st, 200, "{h}");
    assert_eq!(sha256_hex(&body), sha256_hex(&data));
    let cd = header(&h, "content-disposition").expect("content-disposition");
    assert!(
        cd.starts_with("attachment") && cd.contains("filename*=UTF-8''ann%C3%A9e%20report.pdf"),
        "{cd}"
    );
    let etag = header(&h, "etag").expect("etag").to_string();
    let (st, h, body) = curl(url.clone(), &["-r", "1000-1999"]).await;
    assert_eq!(st, 206, "{h}");
    assert_eq!(body, data[1000..2000]);
    let (st, _, _) = curl(url.clone(), &["-H", &format!("If-None-Match: {etag}")]).await;
    assert_eq!(st, 304);
    let (st, h, body) = curl(url.clone(), &["-I"]).await;
    assert_eq!(st, 200, "{h}");
    // (curl -I writes the head where the body would go: the head only, no bytes of the file.)
    assert!(
        body.starts_with(b"HTTP/") && body.len() < 4096,
        "{}",
        body.len()
    );

    // Changed in any part, it is refused, and says nothing of the file.
    let other = upload(&app, &app.token, "other.bin", b"other").await;
    let sig_at = url.find("&s=").expect("sig") + 3;
    let mut flipped = url.clone().into_bytes();
    flipped[sig_at] = if flipped[sig_at] == b'A' { b'B' } else { b'A' };
    let later = {
        let e: i64 = url
            .split("&e=")
            .nth(1)
            .and_then(|r| r.split('&').next())
            .expect("e")
            .parse()
            .expect("n");
        url.replace(&format!("&e={e}"), &format!("&e={}", e + 3600))
    };
    for (what, bad) in [
        ("another file's id", url.replace(&id, &other)),
        ("a deleted-looking id", url.replace(&id, "0000000000000000")),
        ("a later expiry", later),
        (
            "a changed signature",
            String::from_utf8(flipped).expect("utf8"),
        ),
        ("another key", url.replace("?k=1&", "?k=2&")),
        (
            "no signature",
            url.split("&s=").next().expect("head").to_string(),
        ),
        ("nothing", app.url(&format!("/dl/{id}"))),
    ] {
        let (st, _, body) = curl(bad, &[]).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(
            (st, v["code"].as_str()),
            (403, Some("link_invalid")),
            "{what}: {v}"
        );
    }

    // Bad requests for a link.
    for body in [
        None,
        Some(json!({})),
        Some(json!({"expires_in": 0})),
        Some(json!({"expires_in": 3601})),
        Some(json!({"expires_in": "soon"})),
    ] {
        let (st, v) = link(&app, &app.token, &id, body.clone()).await;
        assert!(st == 400 || st == 422, "{body:?}: {st} {v}");
        if st == 400 {
            assert_eq!(v["code"], "bad_expiry", "{v}");
        }
    }
    // Another user's file is not found, and neither is one that does not exist.
    let bob = app.user("bob").await;
    let (st, _) = link(&app, &bob, &id, Some(json!({"expires_in": 60}))).await;
    assert_eq!(st, 404);
    let (st, _) = link(&app, &app.token, "nope", Some(json!({"expires_in": 60}))).await;
    assert_eq!(st, 404);

    // Expired.
    let (_, v) = link(&app, &app.token, &id, Some(json!({"expires_in": 1}))).await;
    let short = app.url(v["url"].as_str().expect("url"));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (st, _, body) = curl(short, &[]).await;
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!((st, v["code"].as_str()), (403, Some("link_expired")), "{v}");

    // On another node of the deployment, the same link works.
    if let Some(db) = &app.database_url {
        let data_dir = app.data_dir().display().to_string();
        let node = spawn_node(&[("database_url", db), ("data_dir", &data_dir)], &app.token).await;
        let there = url.replace(&app.addr.to_string(), &node.addr.to_string());
        let (st, _, body) = curl(there, &[]).await;
        assert_eq!(st, 200);
        assert_eq!(sha256_hex(&body), sha256_hex(&data));
    }

    // Deleted: 404.
    let res = app
        .auth(app.client.delete(app.url(&format!("/api/files/{id}"))))
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);
    let (st, _, _) = curl(url.clone(), &[]).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn rotating_the_key_ends_every_older_link() {
    let app = spawn_app(&[]).await;
    let data = bytes(10_000, 3);
    let id = upload(&app, &app.token, "r.bin", &data).await;
    let (_, v) = link(&app, &app.token, &id, Some(json!({"expires_in": 600}))).await;
    let old = app.url(v["url"].as_str().expect("url"));
    assert_eq!(curl(old.clone(), &[]).await.0, 200);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chute"))
        .env_remove("CHUTE_CONFIG")
        .args(app.cli_args())
        .args(["links", "rotate"])
        .output()
        .expect("chute links rotate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The running server reads the keys again within seconds.
    let mut refused = false;
    for _ in 0..40 {
        let (st, _, body) = curl(old.clone(), &[]).await;
        if st == 403 {
            let v: Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(v["code"], "link_invalid");
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(refused, "the old link still works");
    let (_, v) = link(&app, &app.token, &id, Some(json!({"expires_in": 600}))).await;
    let new = app.url(v["url"].as_str().expect("url"));
    assert!(new.contains("?k=2&"), "{new}");
    let (st, _, body) = curl(new, &[]).await;
    assert_eq!(st, 200);
    assert_eq!(sha256_hex(&body), sha256_hex(&data));
}
