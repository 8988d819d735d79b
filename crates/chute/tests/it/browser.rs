//! Real front ends in headless Chromium: the django-chunked-upload demo's jQuery-File-Upload
//! page (chunked mode, 1 MiB chunks, spark-md5) uploads a 20 MiB file into chute unchanged.
//! Needs Debian's chromium, node and the npm packages in e2e/ (scripts/setup-e2e.sh installs
//! them); a missing one fails the test.

use tower_http::services::ServeDir;

use crate::helpers::*;

#[tokio::test]
async fn jquery_file_upload_chunked_mode_works_unchanged() {
    let dir = e2e_dir();
    assert!(
        dir.join("node_modules/blueimp-file-upload").is_dir(),
        "e2e/node_modules is missing: run scripts/setup-e2e.sh"
    );
    let pages = axum::Router::new().nest_service("/e2e", ServeDir::new(&dir));
    let app = spawn_app_full(&[], |s| s, Some(pages)).await;
    let data = bytes(20 * 1024 * 1024, 31);
    let file = app.dir.path().join("archive.bin");
    std::fs::write(&file, &data).expect("write");
    let url = app.url(&format!("/e2e/jquery-chunked.html?token={}", app.token));
    let out = drive_page(url, "#chunked_upload", file, 180_000).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "browser run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = stdout.trim();
    assert!(status.starts_with("done "), "{status}");
    let json = status
        .trim_start_matches("done ")
        .rsplit_once(" chunks=")
        .expect("chunk count");
    let v: serde_json::Value = serde_json::from_str(json.0).expect("json");
    assert_eq!(json.1, "20", "20 chunks of 1 MiB");
    assert_eq!(v["name"], "archive.bin");
    assert_eq!(v["size"], data.len());
    assert_eq!(v["sha256"], sha256_hex(&data));
    let stored = app.download(v["id"].as_str().expect("id")).await;
    assert_eq!(
        sha256_hex(&stored),
        sha256_hex(&data),
        "the stored bytes are the sent bytes"
    );
}

/// Serves e2e/ at `/` on a port of its own: a page of another origin than chute's.
pub(crate) async fn page_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let pages = axum::Router::new().fallback_service(ServeDir::new(e2e_dir()));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, pages).await;
    });
    (port, task)
}

#[tokio::test]
async fn a_page_on_another_origin_uploads_with_tus_js_client_and_uppy_using_a_signed_token() {
    assert!(
        e2e_dir()
            .join("node_modules/uppy/dist/uppy.min.js")
            .is_file(),
        "e2e/node_modules is missing: run scripts/setup-e2e.sh"
    );
    let (port, pages) = page_server().await;
    let origin = format!("http://127.0.0.1:{port}");
    let app = spawn_app(&[
        ("auth_jwt_secret", crate::jwt::SECRET),
        ("cors_allowed_origins", &origin),
    ])
    .await;
    let token = crate::jwt::mint(
        &serde_json::json!([{"alg": "HS256", "key": crate::jwt::SECRET, "exp_in": 600,
                             "claims": {"sub": "browser-user"}}]),
        false,
    )
    .remove(0);
    let data = bytes(9 * 1024 * 1024 + 123, 77);
    let file = app.dir.path().join("cross-origin.bin");
    std::fs::write(&file, &data).expect("write");
    let drive = |page_origin: String, client: &'static str| {
        let url = format!(
            "{page_origin}/cross-origin.html?chute=http://{}&token={token}&client={client}",
            app.addr
        );
        drive_page(url, "#file", file.clone(), 60_000)
    };
    for client in ["tus", "uppy"] {
        let out = drive(origin.clone(), client).await;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{client}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status = stdout.trim();
        let v: serde_json::Value = serde_json::from_str(
            status
                .strip_prefix("done ")
                .unwrap_or_else(|| panic!("{client}: {status}")),
        )
        .expect("json");
        // The page read what chute exposes to it, and /api/me named the token's user.
        assert_eq!(v["user"], "browser-user", "{client}: {v}");
        assert_eq!(v["offset"], data.len().to_string(), "{client}: {v}");
        assert_eq!(v["length"], data.len().to_string(), "{client}: {v}");
        assert!(
            v["url"]
                .as_str()
                .is_some_and(|u| u.starts_with(&format!("http://{}/tus/", app.addr))),
            "{client}: {v}"
        );
    }
    // Both files are the user's, whole.
    let user = app
        .state
        .engine
        .meta
        .user_by_name("browser-user")
        .await
        .expect("lookup")
        .expect("created on first sight");
    let files = app
        .state
        .engine
        .meta
        .list_files(user.id, None, 10)
        .await
        .expect("files");
    assert_eq!(files.len(), 2);
    for f in &files {
        assert_eq!(f.name, "cross-origin.bin");
        assert_eq!(f.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
        let got = get_bytes(&app.url(&format!("/api/files/{}", f.id)), &token).await;
        assert_eq!(sha256_hex(&got), sha256_hex(&data));
    }
    // The same page from an origin chute does not allow (localhost is another origin than
    // 127.0.0.1): Chromium refuses it, and nothing is stored.
    let out = drive(format!("http://localhost:{port}"), "tus").await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.trim().starts_with("fail "), "{stdout}");
    let files = app
        .state
        .engine
        .meta
        .list_files(user.id, None, 10)
        .await
        .expect("files");
    assert_eq!(files.len(), 2, "the refused origin stored nothing");
    pages.abort();
}
