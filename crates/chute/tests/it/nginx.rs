//! nginx in front of chute in x-accel-redirect mode, with the server block chute ships
//! (config/nginx-chute.conf), started by `scripts/nginx-test.sh`: the bytes come through nginx,
//! the internal location is closed to direct requests, and access rules still hold.

use std::path::Path;
use std::time::Duration;

use crate::helpers::*;
use crate::servers::ScriptServer;
use crate::sessions::{open_session, pdf};

/// nginx started by `scripts/nginx-test.sh` in front of a chute.
struct Nginx {
    port: u16,
    _server: ScriptServer,
}

async fn start_nginx(chute: std::net::SocketAddr, objects: &Path) -> Nginx {
    start_nginx_with(chute, objects, "nginx-chute.conf").await
}

async fn start_nginx_with(chute: std::net::SocketAddr, objects: &Path, conf: &str) -> Nginx {
    let port = free_port();
    let mut server = ScriptServer::spawn("nginx", "nginx-test.sh", "TERM", |dir| {
        vec![
            dir.display().to_string(),
            format!("127.0.0.1:{port}"),
            chute.to_string(),
            objects.display().to_string(),
            conf.to_string(),
        ]
    });
    server.wait_for_port(port, Duration::from_secs(30)).await;
    Nginx {
        port,
        _server: server,
    }
}

#[tokio::test]
async fn nginx_serves_session_files_by_x_accel_redirect() {
    let app = spawn_app(&[
        ("serve_mode", "x-accel-redirect"),
        ("x_accel_prefix", "/protected/"),
    ])
    .await;
    let objects = app.data_dir().join("files/objects");
    std::fs::create_dir_all(&objects).expect("objects dir");
    let addr = app.addr;
    let nginx = start_nginx(addr, &objects).await;
    let via = |p: &str| format!("http://127.0.0.1:{}{p}", nginx.port);

    // Upload through nginx (streamed, unbuffered), then read it back through nginx.
    let s = open_session(&app, &app.token).await;
    let content = pdf(3 << 20, 31);
    let body = multipart_body(&[file_part("file", "scan été.pdf", &content)]);
    let res = app
        .client
        .post(via(&format!("/upload-session/{s}/files/")))
        .bearer_auth(&app.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("upload via nginx");
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.expect("json");
    let url = v["url"].as_str().expect("url").to_string();

    // chute alone answers headers and the redirect, no body.
    let res = app
        .client
        .get(app.url(&url))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("direct");
    assert_eq!(res.status(), 200);
    let target = res.headers()["x-accel-redirect"]
        .to_str()
        .expect("header")
        .to_string();
    assert!(target.starts_with("/protected/"), "{target}");
    assert!(res.bytes().await.expect("body").is_empty());

    let res = app
        .client
        .get(via(&url))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("via nginx");
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-accel-redirect").is_none());
    assert_eq!(res.headers()["content-type"], "application/pdf");
    let cd = res.headers()["content-disposition"]
        .to_str()
        .expect("cd")
        .to_string();
    assert!(
        cd.starts_with("inline") && cd.contains("filename*=UTF-8''scan%20%C3%A9t%C3%A9.pdf"),
        "{cd}"
    );
    assert_eq!(
        sha256_hex(&res.bytes().await.expect("bytes")),
        sha256_hex(&content)
    );

    // nginx serves ranges of the file itself.
    let res = app
        .client
        .get(via(&url))
        .bearer_auth(&app.token)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .expect("range");
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.bytes().await.expect("bytes").as_ref(),
        &content[1000..2000]
    );

    // The internal location is not reachable from outside, even with the exact path.
    for path in [target.as_str(), "/protected/", "/protected/../chute.db"] {
        let res = app.client.get(via(path)).send().await.expect("internal");
        assert_eq!(res.status(), 404, "{path}");
        let got = res.bytes().await.expect("body");
        assert!(!got.starts_with(b"%PDF"), "{path} leaked the file");
    }

    // A user without access gets chute's 404 through nginx, and no bytes.
    let mallory = app.user("mallory").await;
    let res = app
        .client
        .get(via(&url))
        .bearer_auth(&mallory)
        .send()
        .await
        .expect("mallory");
    assert_eq!(res.status(), 404);
    let v: serde_json::Value = res.json().await.expect("json error");
    assert!(v["error"].is_string());
    let res = app.client.get(via(&url)).send().await.expect("anonymous");
    assert_eq!(res.status(), 401);
    drop(nginx);
}

/// Runs one of the e2e clients and returns its stdout (it must succeed).
async fn client(
    cmd: &'static str,
    script: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
) -> String {
    let out = blocking(move || {
        let program = if cmd == "node" {
            "node".into()
        } else {
            e2e_dir().join(".venv/bin/python").display().to_string()
        };
        std::process::Command::new(program)
            .current_dir(e2e_dir())
            .arg(script)
            .args(&args)
            .envs(env)
            .output()
            .unwrap_or_else(|e| panic!("{cmd}: {e} (scripts/setup-e2e.sh)"))
    })
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim().to_string()
}

#[tokio::test]
async fn every_protocol_and_client_works_under_a_path_prefix_behind_nginx() {
    let (page_port, pages) = crate::browser::page_server().await;
    let page_origin = format!("http://127.0.0.1:{page_port}");
    let app = spawn_app(&[
        ("trusted_proxies", "127.0.0.1, ::1"),
        ("cors_allowed_origins", &page_origin),
        ("auth_jwt_secret", crate::jwt::SECRET),
    ])
    .await;
    let objects = app.data_dir().join("files/objects");
    let nginx = start_nginx_with(app.addr, &objects, "nginx-chute-prefix.conf").await;
    let public = format!("http://127.0.0.1:{}/uploads", nginx.port);
    let via = |p: &str| format!("{public}{p}");
    let token = app.token.clone();
    let mut sent: Vec<(String, Vec<u8>)> = Vec::new();

    // tus-js-client: one upload in 1 MiB PATCHes, one in two parallel partials joined by
    // concatenation (the final names its partials by their public URLs).
    for (name, parallel) in [("js.bin", "1"), ("js-parallel.bin", "2")] {
        let data = bytes(3 << 20, name.len() as u64);
        let file = app.dir.path().join(name);
        std::fs::write(&file, &data).expect("write");
        let out = client(
            "node",
            "tus-js.mjs",
            vec![
                via("/tus/"),
                token.clone(),
                file.display().to_string(),
                (1 << 20).to_string(),
                name.to_string(),
            ],
            vec![("TUS_PARALLEL", parallel)],
        )
        .await;
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert!(
            v["url"]
                .as_str()
                .is_some_and(|u| u.starts_with(&via("/tus/"))),
            "{name}: {v}"
        );
        sent.push((name.to_string(), data));
    }
    // tuspy, resumed by a second client that knows only the URL.
    let data = bytes(2 << 20, 5);
    let file = app.dir.path().join("py.bin");
    std::fs::write(&file, &data).expect("write");
    let url = client(
        "python",
        "tuspy_client.py",
        vec![
            via("/tus/"),
            token.clone(),
            file.display().to_string(),
            (512 << 10).to_string(),
            "py.bin".into(),
            "2".into(),
        ],
        vec![],
    )
    .await;
    assert!(url.starts_with(&via("/tus/")), "{url}");
    sent.push(("py.bin".into(), data));

    // The draft: Location is public, and the append goes to it.
    let data = bytes(700_000, 6);
    let res = app
        .client
        .post(via("/resumable/"))
        .bearer_auth(&token)
        .header("Upload-Complete", "?0")
        .header("Content-Disposition", "attachment; filename=\"draft.bin\"")
        .send()
        .await
        .expect("draft");
    assert_eq!(res.status(), 201);
    let loc = res.headers()["location"].to_str().expect("loc").to_string();
    assert!(loc.starts_with(&via("/resumable/")), "{loc}");
    let res = app
        .client
        .patch(&loc)
        .bearer_auth(&token)
        .header("Upload-Complete", "?1")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/partial-upload")
        .body(data.clone())
        .send()
        .await
        .expect("append");
    assert!(res.status().is_success(), "{}", res.status());
    sent.push(("draft.bin".into(), data));

    // A form upload (curl) answers with public URLs, which download the file.
    let data = bytes(400_000, 8);
    let file = app.dir.path().join("form.bin");
    std::fs::write(&file, &data).expect("write");
    let out = blocking({
        let (url, token, file) = (via("/api/files"), token.clone(), file.clone());
        move || {
            std::process::Command::new("curl")
                .args(["-sS", "-H", &format!("Authorization: Bearer {token}"), "-F"])
                .arg(format!("file=@{}", file.display()))
                .arg(url)
                .output()
                .expect("curl")
        }
    })
    .await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let url = v["files"][0]["url"].as_str().expect("url").to_string();
    assert!(url.starts_with(&via("/api/files/")), "{v}");
    assert_eq!(
        sha256_hex(&get_bytes(&url, &token).await),
        sha256_hex(&data)
    );
    sent.push(("form.bin".into(), data));

    // Chunked (django-chunked-upload), then an upload session's file URL.
    let data = bytes(300_000, 9);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(data.clone()).file_name("chunked.bin"),
    );
    let res = app
        .client
        .post(via("/api/chunked_upload/"))
        .bearer_auth(&token)
        .header(
            "Content-Range",
            format!("bytes 0-{}/{}", data.len() - 1, data.len()),
        )
        .multipart(form)
        .send()
        .await
        .expect("chunk");
    let v: serde_json::Value = res.json().await.expect("json");
    let id = v["upload_id"].as_str().expect("id").to_string();
    let res = app
        .client
        .post(via("/api/chunked_upload_complete/"))
        .bearer_auth(&token)
        .form(&[("upload_id", id), ("md5", crate::chunked::md5_hex(&data))])
        .send()
        .await
        .expect("complete");
    let v: serde_json::Value = res.json().await.expect("json");
    assert!(
        v["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&via("/api/files/"))),
        "{v}"
    );
    sent.push(("chunked.bin".into(), data));
    let res = app
        .client
        .post(via("/upload-session/"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("session");
    let s: serde_json::Value = res.json().await.expect("json");
    let session = s["uploadSessionToken"].as_str().expect("token").to_string();
    let content = crate::sessions::pdf(50_000, 3);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(content.clone()).file_name("scan.pdf"),
    );
    let res = app
        .client
        .post(via(&format!("/upload-session/{session}/files/")))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .expect("session file");
    let v: serde_json::Value = res.json().await.expect("json");
    let url = v["url"].as_str().expect("url").to_string();
    assert!(url.starts_with(&via("/upload-session/")), "{v}");
    assert_eq!(
        sha256_hex(&get_bytes(&url, &token).await),
        sha256_hex(&content)
    );

    // In Chromium, a page of another origin, through nginx: tus-js-client and Uppy with a
    // signed token; the upload URLs they were given are public.
    let jwt = crate::jwt::mint(
        &serde_json::json!([{"alg": "HS256", "key": crate::jwt::SECRET, "exp_in": 600,
                             "claims": {"sub": "admin"}}]),
        false,
    )
    .remove(0);
    for browser_client in ["tus", "uppy"] {
        let name = format!("browser-{browser_client}.bin");
        let data = bytes(5 << 20, browser_client.len() as u64 + 40);
        let file = app.dir.path().join(&name);
        std::fs::write(&file, &data).expect("write");
        let url = format!(
            "{page_origin}/cross-origin.html?chute={public}&token={jwt}&client={browser_client}"
        );
        let out = drive_page(url, "#file", file, 60_000).await;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let v: serde_json::Value = serde_json::from_str(
            stdout
                .trim()
                .strip_prefix("done ")
                .unwrap_or_else(|| panic!("{browser_client}: {stdout}")),
        )
        .expect("json");
        assert!(
            v["url"]
                .as_str()
                .is_some_and(|u| u.starts_with(&via("/tus/"))),
            "{browser_client}: {v}"
        );
        assert_eq!(v["offset"], data.len().to_string(), "{v}");
        sent.push((name, data));
    }
    pages.abort();

    // Every file arrived whole, and every listed URL is public.
    let files = app.list(&token).await;
    for (name, data) in &sent {
        let f = files
            .iter()
            .find(|f| f["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(f["checksums"]["sha256"], sha256_hex(data), "{name}");
    }
    let res = app
        .client
        .get(via("/api/files"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list");
    let v: serde_json::Value = res.json().await.expect("json");
    for f in v["files"].as_array().expect("files") {
        assert!(
            f["url"]
                .as_str()
                .is_some_and(|u| u.starts_with(&via("/api/files/"))),
            "{f}"
        );
    }
    // Straight to chute (not through nginx), the same headers from an untrusted peer would be
    // ignored; from the trusted loopback they are believed, so a direct request without them
    // gets chute's own paths.
    let res = app
        .auth(app.client.get(app.url("/api/files")))
        .send()
        .await
        .expect("direct");
    let v: serde_json::Value = res.json().await.expect("json");
    assert!(
        v["files"][0]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("/api/files/"))
    );
}
