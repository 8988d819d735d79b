//! Real tus clients against chute: tus-js-client under Node and tuspy (installed by
//! scripts/setup-e2e.sh). Each upload is checked end to end: the stored file's sha256 and
//! name against what was sent.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::helpers::*;

fn e2e() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../e2e"))
}

async fn run(cmd: &'static str, args: Vec<String>) -> String {
    run_env(cmd, args, None).await
}

async fn run_env(cmd: &'static str, args: Vec<String>, parallel: Option<u32>) -> String {
    let shown = args.clone();
    let out = blocking(move || {
        let mut c = if cmd == "node" {
            let mut c = Command::new("node");
            c.arg("tus-js.mjs");
            c
        } else {
            let mut c = Command::new(e2e().join(".venv/bin/python"));
            c.arg("tuspy_client.py");
            c
        };
        if let Some(p) = parallel {
            c.env("TUS_PARALLEL", p.to_string());
        }
        c.current_dir(e2e())
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{cmd} must be installed (scripts/setup-e2e.sh): {e}"))
    })
    .await;
    assert!(
        out.status.success(),
        "{cmd} {shown:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The file the finished upload became, found by name.
async fn stored(app: &TestApp, name: &str) -> Value {
    let files = app.list(&app.token).await;
    files
        .into_iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no file named {name}"))
}

#[tokio::test]
async fn tus_js_client_uploads_resumes_and_keeps_metadata() {
    let app = spawn_app(&[]).await;
    let endpoint = app.url("/tus/");
    let cases: Vec<(usize, usize, &str, Option<usize>)> = vec![
        (0, 0, "empty.bin", None),
        (1, 0, "one.bin", None),
        (5 << 20, 1 << 20, "ünïcødé 5 MiB.bin", None),
        (5 << 20, 0, "single-patch.bin", None),
        (5 << 20, 256 << 10, "resumed.bin", Some(2 << 20)),
    ];
    for (i, (size, chunk, name, abort)) in cases.into_iter().enumerate() {
        let data = bytes(size, 50 + i as u64);
        let file = app.dir.path().join(format!("js-{i}.bin"));
        std::fs::write(&file, &data).expect("write");
        let mut args = vec![
            endpoint.clone(),
            app.token.clone(),
            file.display().to_string(),
            chunk.to_string(),
            name.to_string(),
        ];
        if let Some(a) = abort {
            args.push(a.to_string());
        }
        let out = run("node", args).await;
        let v: Value = serde_json::from_str(&out).expect("json");
        assert!(
            v["url"].as_str().is_some_and(|u| u.contains("/tus/")),
            "{v}"
        );
        assert_eq!(v["resumed"], abort.is_some(), "{name}");
        let f = stored(&app, name).await;
        assert_eq!(f["size"], size, "{name}");
        assert_eq!(f["checksums"]["sha256"], sha256_hex(&data), "{name}");
    }
}

#[tokio::test]
async fn tuspy_uploads_with_checksums_and_resumes_with_a_fresh_client() {
    let app = spawn_app(&[]).await;
    let endpoint = app.url("/tus/");
    let cases: Vec<(usize, usize, &str, Option<usize>)> = vec![
        (1, 1024, "uno.bin", None),
        (5 << 20, 1 << 20, "naïve résumé.pdf", None),
        (3 << 20, 512 << 10, "resumed-py.bin", Some(2)),
    ];
    for (i, (size, chunk, name, stop)) in cases.into_iter().enumerate() {
        let data = bytes(size, 70 + i as u64);
        let file = app.dir.path().join(format!("py-{i}.bin"));
        std::fs::write(&file, &data).expect("write");
        let mut args = vec![
            endpoint.clone(),
            app.token.clone(),
            file.display().to_string(),
            chunk.to_string(),
            name.to_string(),
        ];
        if let Some(s) = stop {
            args.push(s.to_string());
        }
        let url = run("python", args).await;
        assert!(url.contains("/tus/"), "{url}");
        let f = stored(&app, name).await;
        assert_eq!(f["size"], size, "{name}");
        assert_eq!(f["checksums"]["sha256"], sha256_hex(&data), "{name}");
    }
}

#[tokio::test]
async fn tus_js_client_parallel_uploads_are_concatenated() {
    let app = spawn_app(&[]).await;
    let data = bytes(6 << 20, 90);
    let file = app.dir.path().join("parallel.bin");
    std::fs::write(&file, &data).expect("write");
    let args = vec![
        app.url("/tus/"),
        app.token.clone(),
        file.display().to_string(),
        (1 << 20).to_string(),
        "parallel.bin".to_string(),
    ];
    let out = run_env("node", args, Some(3)).await;
    let v: Value = serde_json::from_str(&out).expect("json");
    assert!(
        v["url"].as_str().is_some_and(|u| u.contains("/tus/")),
        "{v}"
    );
    let files = app.list(&app.token).await;
    assert_eq!(
        files.len(),
        1,
        "the partials are not files of their own: {files:?}"
    );
    assert_eq!(files[0]["name"], "parallel.bin");
    assert_eq!(files[0]["checksums"]["sha256"], sha256_hex(&data));
}
