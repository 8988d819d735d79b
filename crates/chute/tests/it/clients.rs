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

pub(crate) async fn run(cmd: &'static str, args: Vec<String>) -> String {
    run_env(cmd, args, &[]).await
}

pub(crate) async fn run_env(cmd: &'static str, args: Vec<String>, env: &[(&str, &str)]) -> String {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
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
        c.envs(env);
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
pub(crate) async fn stored(app: &TestApp, name: &str) -> Value {
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
        (100 << 20, 8 << 20, "hundred.bin", None),
        // Cut mid-PATCH. tus-js-client reports progress at most every 100 ms, and a fast
        // server takes 100 MiB in about that: the upload could finish before the client saw
        // 40 MiB go out (a flake seen once). 256 MiB keeps the abort well inside the PATCH.
        (256 << 20, 0, "one-patch-256.bin", Some(40 << 20)),
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
        (100 << 20, 16 << 20, "hundred-py.bin", Some(3)),
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
    let out = run_env("node", args, &[("TUS_PARALLEL", "3")]).await;
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

fn node_args(
    app: &TestApp,
    endpoint: &str,
    file: &std::path::Path,
    chunk: usize,
    name: &str,
) -> Vec<String> {
    vec![
        endpoint.to_string(),
        app.token.clone(),
        file.display().to_string(),
        chunk.to_string(),
        name.to_string(),
    ]
}

#[tokio::test]
async fn tus_js_client_defers_the_length_and_terminates() {
    let app = spawn_app(&[]).await;
    let data = bytes((5 << 20) + 12345, 91);
    let file = app.dir.path().join("stream.bin");
    std::fs::write(&file, &data).expect("write");
    let endpoint = app.url("/tus/");
    let out = run_env(
        "node",
        node_args(&app, &endpoint, &file, 1 << 20, "streamed.bin"),
        &[("TUS_DEFER", "1")],
    )
    .await;
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["terminated"], false);
    let f = stored(&app, "streamed.bin").await;
    assert_eq!(f["size"], data.len());
    assert_eq!(f["checksums"]["sha256"], sha256_hex(&data));

    // Terminated after finishing: the upload and its file are gone.
    let out = run_env(
        "node",
        node_args(&app, &endpoint, &file, 2 << 20, "terminated.bin"),
        &[("TUS_TERMINATE", "1")],
    )
    .await;
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["terminated"], true);
    let url = v["url"].as_str().expect("url");
    let res = app
        .client
        .head(url)
        .bearer_auth(&app.token)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("head");
    assert_eq!(res.status(), 404);
    let names: Vec<Value> = app
        .list(&app.token)
        .await
        .into_iter()
        .map(|f| f["name"].clone())
        .collect();
    assert_eq!(names, vec![Value::from("streamed.bin")]);
}

/// A TCP proxy that cuts the first connection whose client-to-server bytes pass `cut_after`
/// (once), and counts all bytes clients sent. At the cut it ends the server's side first and
/// waits (30 s at most) until the server has closed it, so the server has settled every byte
/// that reached it before the client learns of the cut and asks where the upload stands. (A
/// HEAD preempts a PATCH still writing, so otherwise the kernel's buffers decide how much a
/// slow machine resends.)
async fn cutting_proxy(
    upstream: std::net::SocketAddr,
    cut_after: u64,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let total = Arc::new(AtomicU64::new(0));
    let cut = Arc::new(AtomicBool::new(false));
    let (t, k) = (total.clone(), cut.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let (t, k) = (t.clone(), k.clone());
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut mine = 0u64;
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => n,
                        };
                        mine += n as u64;
                        t.fetch_add(n as u64, Ordering::Relaxed);
                        if mine > cut_after && !k.swap(true, Ordering::Relaxed) {
                            return true; // cut mid-body
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return false;
                        }
                    }
                };
                let down = tokio::io::copy(&mut sr, &mut cw);
                let was_cut = tokio::select! {
                    c = up => c,
                    _ = down => false,
                };
                if was_cut {
                    let _ = sw.shutdown().await;
                    let drain = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        while matches!(sr.read(&mut buf).await, Ok(n) if n > 0) {}
                    };
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), drain).await;
                }
                // Dropping both halves of both sides closes the client's connection.
            });
        }
    });
    (addr, total, cut)
}

#[tokio::test]
async fn tus_js_client_resumes_after_a_connection_cut_mid_patch() {
    let app = spawn_app(&[]).await;
    let size = 16 << 20;
    let data = bytes(size, 92);
    let file = app.dir.path().join("cut.bin");
    std::fs::write(&file, &data).expect("write");
    let cut_after = 6u64 << 20;
    let (proxy, total, cut) = cutting_proxy(app.addr, cut_after).await;
    let endpoint = format!("http://{proxy}/tus/");
    // One PATCH for the whole file; the proxy cuts it after 6 MiB; the client retries.
    let out = run_env(
        "node",
        node_args(&app, &endpoint, &file, 0, "cut.bin"),
        &[("TUS_RETRY", "1")],
    )
    .await;
    let v: Value = serde_json::from_str(&out).expect("json");
    assert!(v["url"].is_string(), "{v}");
    assert!(
        cut.load(std::sync::atomic::Ordering::Relaxed),
        "the proxy cut a PATCH"
    );
    let f = stored(&app, "cut.bin").await;
    assert_eq!(f["checksums"]["sha256"], sha256_hex(&data));
    // The retry resumed where the server stood: the client did not send the file twice.
    let sent = total.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < size as u64 + cut_after / 2,
        "sent {sent} bytes for a {size}-byte file"
    );
}
