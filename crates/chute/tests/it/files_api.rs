//! The file API end to end: curl uploads, listing, downloads, ownership, deletion.

use std::process::Command;

use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn curl_streams_two_files_and_a_field_and_bytes_survive_end_to_end() {
    let app = spawn_app(&[]).await;
    let big = bytes(3 * 1024 * 1024 + 17, 1); // over 2.5 MB: spills to a temp file
    let notes = b"notes of the day\n".to_vec();
    let big_path = app.dir.path().join("big.iso");
    let notes_path = app.dir.path().join("notes.txt");
    std::fs::write(&big_path, &big).expect("write");
    std::fs::write(&notes_path, &notes).expect("write");
    let url = app.url("/api/files");
    let token = app.token.clone();
    let out = blocking(move || {
        Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg("-F")
            .arg(format!("file=@{}", big_path.display()))
            .arg("-F")
            .arg(format!("file=@{};type=text/plain", notes_path.display()))
            .args(["-F", "title=x", &url])
            .output()
            .expect("curl must be installed")
    })
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let (body, code) = text.rsplit_once('\n').expect("code");
    assert_eq!(code, "201", "{body}");
    let v: Value = serde_json::from_str(body).expect("json");
    assert_eq!(v["fields"]["title"], serde_json::json!(["x"]));
    let files = v["files"].as_array().expect("files");
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["name"], "big.iso");
    assert_eq!(files[0]["size"], big.len());
    assert_eq!(files[0]["checksums"]["sha256"], sha256_hex(&big));
    assert_eq!(files[1]["name"], "notes.txt");
    assert_eq!(files[1]["content_type"], "text/plain");
    assert_eq!(files[1]["checksums"]["sha256"], sha256_hex(&notes));
    assert!(
        files[0]["url"]
            .as_str()
            .expect("url")
            .starts_with("/api/files/")
    );

    // What is stored is what was sent.
    for (f, data) in files.iter().zip([&big, &notes]) {
        let got = app.download(f["id"].as_str().expect("id")).await;
        assert_eq!(sha256_hex(&got), sha256_hex(data));
    }
    assert_eq!(app.list(&app.token).await.len(), 2);
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
}

async fn upload_one(app: &TestApp, token: &str, name: &str, data: Vec<u8>) -> Value {
    let form = Form::new().part("file", Part::bytes(data).file_name(name.to_string()));
    let res = app
        .client
        .post(app.url("/api/files"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.expect("json");
    v["files"][0].clone()
}

#[tokio::test]
async fn downloads_honour_range_etag_head_and_quote_names_safely() {
    let app = spawn_app(&[]).await;
    let data = bytes(100_000, 2);
    let f = upload_one(&app, &app.token, "résumé «final».pdf", data.clone()).await;
    let url = app.url(&format!("/api/files/{}", f["id"].as_str().expect("id")));

    let res = app.auth(app.client.get(&url)).send().await.expect("get");
    assert_eq!(res.status(), 200);
    let etag = res.headers()["etag"].to_str().expect("etag").to_string();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&data)));
    let cd = res.headers()["content-disposition"]
        .to_str()
        .expect("cd")
        .to_string();
    assert!(cd.starts_with("attachment; filename=\""), "{cd}");
    assert!(
        cd.contains("filename*=UTF-8''r%C3%A9sum%C3%A9%20%C2%ABfinal%C2%BB.pdf"),
        "{cd}"
    );
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");

    let res = app
        .auth(app.client.get(&url))
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .expect("range");
    assert_eq!(res.status(), 206);
    assert_eq!(res.headers()["content-range"], "bytes 1000-1999/100000");
    assert_eq!(res.bytes().await.expect("body").as_ref(), &data[1000..2000]);

    let res = app
        .auth(app.client.get(&url))
        .header("Range", "bytes=-10")
        .send()
        .await
        .expect("suffix");
    assert_eq!(res.bytes().await.expect("body").as_ref(), &data[99_990..]);

    let res = app
        .auth(app.client.get(&url))
        .header("Range", "bytes=100000-")
        .send()
        .await
        .expect("416");
    assert_eq!(res.status(), 416);
    assert_eq!(res.headers()["content-range"], "bytes */100000");
    // The body is a JSON error, and says so: not labelled with the file's own type, nor
    // offered as an attachment named like the file (schemathesis found both).
    assert_eq!(res.headers()["content-type"], "application/json");
    assert!(res.headers().get("content-disposition").is_none());
    let err: serde_json::Value = res.json().await.expect("a JSON error");
    assert_eq!(err["code"], "bad_range");

    let res = app
        .auth(app.client.get(&url))
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("304");
    assert_eq!(res.status(), 304);
    assert!(res.bytes().await.expect("body").is_empty());

    let res = app.auth(app.client.head(&url)).send().await.expect("head");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], "100000");
    assert!(res.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn tokens_are_required_and_other_users_files_are_invisible() {
    let app = spawn_app(&[]).await;
    let f = upload_one(&app, &app.token, "mine.txt", b"private".to_vec()).await;
    let id = f["id"].as_str().expect("id").to_string();
    let url = app.url(&format!("/api/files/{id}"));

    let res = app
        .client
        .get(app.url("/api/files"))
        .send()
        .await
        .expect("anon");
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["code"], "unauthorized");
    for bad in ["chute_0000", "nonsense", ""] {
        let res = app
            .client
            .get(&url)
            .bearer_auth(bad)
            .send()
            .await
            .expect("bad");
        assert_eq!(res.status(), 401, "token {bad:?}");
        assert!(res.json::<Value>().await.expect("json")["error"].is_string());
    }
    let res = app
        .client
        .get(&url)
        .header("Authorization", "Basic YTpi")
        .send()
        .await
        .expect("basic");
    assert_eq!(res.status(), 401);

    let bob = app.user("bob").await;
    assert!(app.list(&bob).await.is_empty());
    for req in [
        app.client.get(&url),
        app.client.head(&url),
        app.client.delete(&url),
    ] {
        let res = req.bearer_auth(&bob).send().await.expect("bob");
        assert_eq!(res.status(), 404);
    }
    assert_eq!(
        app.download(&id).await,
        b"private",
        "bob's delete did nothing"
    );

    let res = app
        .auth(app.client.delete(&url))
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);
    let res = app.auth(app.client.get(&url)).send().await.expect("gone");
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.expect("json")["code"],
        "not_found"
    );
    let res = app
        .auth(app.client.delete(&url))
        .send()
        .await
        .expect("again");
    assert_eq!(res.status(), 404);
    assert!(app.stored_objects().is_empty(), "the bytes are gone too");
}

#[tokio::test]
async fn listing_is_paginated_in_upload_order() {
    let app = spawn_app(&[]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let f = upload_one(
            &app,
            &app.token,
            &format!("f{i}.txt"),
            vec![b'a' + i as u8; 10],
        )
        .await;
        ids.push(f["id"].as_str().expect("id").to_string());
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = app.url("/api/files?limit=2");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let v: Value = app
            .auth(app.client.get(&url))
            .send()
            .await
            .expect("page")
            .json()
            .await
            .expect("json");
        let page = v["files"].as_array().expect("files").clone();
        assert!(page.len() <= 2);
        seen.extend(
            page.iter()
                .map(|f| f["id"].as_str().expect("id").to_string()),
        );
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    for bad in ["limit=0", "limit=5000", "limit=x"] {
        let res = app
            .auth(app.client.get(app.url(&format!("/api/files?{bad}"))))
            .send()
            .await
            .expect("bad");
        assert_eq!(res.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn health_and_unknown_routes_answer_json() {
    let app = spawn_app(&[]).await;
    let res = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("health");
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.expect("json")["status"], "ok");
    let res = app.client.get(app.url("/nope")).send().await.expect("404");
    assert_eq!(res.status(), 404);
    assert!(res.json::<Value>().await.expect("json")["error"].is_string());
    let res = app
        .client
        .put(app.url("/api/files"))
        .send()
        .await
        .expect("405");
    assert_eq!(res.status(), 405);
    assert!(res.json::<Value>().await.expect("json")["error"].is_string());
}

#[tokio::test]
async fn hostile_file_names_are_stored_and_returned_safely() {
    let app = spawn_app(&[]).await;
    let long = format!("{}.txt", "x".repeat(10_000));
    let cases: Vec<(String, &str)> = vec![
        ("../../../../etc/passwd".into(), "passwd"),
        ("/absolute/evil.sh".into(), "evil.sh"),
        ("C:\\\\Windows\\\\system.ini".into(), "system.ini"),
        ("..".into(), "unnamed"),
        ("tab\there.txt".into(), "tabhere.txt"),
    ];
    for (raw, expected) in &cases {
        let body = multipart_body(&[file_part("file", raw, b"content")]);
        let req = post_multipart("/api/files", &app.token, &body, "");
        let addr = app.addr;
        let res = blocking(move || raw_http(addr, &req)).await;
        assert_eq!(
            res.status,
            201,
            "{raw}: {}",
            String::from_utf8_lossy(&res.body)
        );
        assert_eq!(res.json()["files"][0]["name"], *expected, "{raw}");
    }
    // A NUL or other control byte inside a part header is not valid HTTP header syntax: the
    // request is refused as malformed, with JSON, and nothing is stored.
    for bad in ["a\0b.txt", "a\x07b.txt"] {
        let mut body = Vec::new();
        body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{bad}\"\r\n\r\nx\r\n--{BOUNDARY}--\r\n").as_bytes());
        let req = post_multipart("/api/files", &app.token, &body, "");
        let addr = app.addr;
        let res = blocking(move || raw_http(addr, &req)).await;
        assert_eq!(res.status, 400, "{}", String::from_utf8_lossy(&res.body));
        assert_eq!(res.json()["code"], "malformed_multipart");
    }

    let f = upload_one(&app, &app.token, &long, b"long".to_vec()).await;
    let name = f["name"].as_str().expect("name");
    assert_eq!(name.chars().count(), 255);
    assert!(name.ends_with(".txt"));
    let res = app
        .auth(
            app.client
                .get(app.url(&format!("/api/files/{}", f["id"].as_str().expect("id")))),
        )
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);

    // Every stored object sits under a generated key inside the storage folder.
    let objects = app.stored_objects();
    assert_eq!(objects.len(), cases.len() + 1);
    for p in objects {
        let name = p.file_name().expect("name").to_string_lossy().to_string();
        assert!(
            name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit()),
            "{p:?}"
        );
    }
}

#[tokio::test]
async fn many_concurrent_uploads_all_land_intact() {
    let app = spawn_app(&[]).await;
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let client = app.client.clone();
        let url = app.url("/api/files");
        let token = app.token.clone();
        tasks.push(tokio::spawn(async move {
            let data = bytes(200_000 + i as usize * 50_000, i + 100);
            let form =
                Form::new().part("file", Part::bytes(data.clone()).file_name(format!("c{i}")));
            let res = client
                .post(url)
                .bearer_auth(token)
                .multipart(form)
                .send()
                .await
                .expect("post");
            assert_eq!(res.status(), 201);
            let v: Value = res.json().await.expect("json");
            (
                v["files"][0]["id"].as_str().expect("id").to_string(),
                sha256_hex(&data),
            )
        }));
    }
    for t in tasks {
        let (id, sum) = t.await.expect("task");
        assert_eq!(sha256_hex(&app.download(&id).await), sum);
    }
    assert_eq!(app.list(&app.token).await.len(), 16);
}
