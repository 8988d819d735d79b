//! Real front ends in headless Chromium: the django-chunked-upload demo's jQuery-File-Upload
//! page (chunked mode, 1 MiB chunks, spark-md5) uploads a 20 MiB file into chute unchanged.
//! Needs Debian's chromium, node and the npm packages in e2e/ (scripts/setup-e2e.sh installs
//! them); a missing one fails the test.

use std::path::PathBuf;
use std::process::Command;

use tower_http::services::ServeDir;

use crate::helpers::*;

fn e2e_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../e2e"))
}

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
    let out = blocking(move || {
        Command::new("node")
            .current_dir(e2e_dir())
            .args(["drive.mjs", &url, "#chunked_upload"])
            .arg(&file)
            .output()
            .expect("node must be installed")
    })
    .await;
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
