//! `chute upload` and `chute download`, the command-line client, as a user runs them against
//! a real server: a tree of files with non-ASCII names, a `kill -9` mid-upload and the same
//! command again, errors and exit codes.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::chaos::Proxy;
use crate::helpers::*;

fn chute(state: &Path, server: &str, token: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chute"));
    c.env_remove("CHUTE_CONFIG")
        .env("CHUTE_STATE_DIR", state)
        .env("CHUTE_URL", server)
        .env("CHUTE_TOKEN", token);
    c
}

async fn run(mut c: Command) -> Output {
    blocking(move || c.output().expect("run chute")).await
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The stored sha256 of each listed file, by name.
async fn stored(app: &TestApp) -> std::collections::BTreeMap<String, String> {
    app.list(&app.token)
        .await
        .iter()
        .map(|f| {
            (
                f["name"].as_str().expect("name").to_string(),
                f["checksums"]["sha256"].as_str().expect("sha").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn chute_upload_sends_a_tree_and_chute_download_brings_a_file_back() {
    let app = spawn_app(&[]).await;
    let dir = tempfile::tempdir().expect("dir");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sous-dossier")).expect("mkdir");
    let files = [
        ("a.txt", bytes(1, 1)),
        ("vide", Vec::new()),
        ("sous-dossier/été ü.bin", bytes(3 << 20, 2)),
    ];
    for (name, data) in &files {
        std::fs::write(tree.join(name), data).expect("write");
    }
    let state = dir.path().join("state");
    let mut c = chute(&state, &app.url(""), &app.token);
    c.args(["upload", "--json", "--chunk-size", "1MiB", "--checksum"])
        .arg(&tree);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let got = stored(&app).await;
    for (name, data) in &files {
        let base = Path::new(name).file_name().expect("name").to_string_lossy();
        assert_eq!(got.get(base.as_ref()), Some(&sha256_hex(data)), "{name}");
    }

    // Back down, by the id the upload printed.
    let big = lines
        .iter()
        .find(|l| l["size"] == 3 << 20)
        .expect("the big file");
    let id = big["url"]
        .as_str()
        .expect("url")
        .rsplit('/')
        .next()
        .expect("id")
        .to_string();
    let back = dir.path().join("back.bin");
    let mut c = chute(&state, &app.url(""), &app.token);
    c.args(["download", &id, "-o"]).arg(&back);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        sha256_hex(&std::fs::read(&back).expect("read")),
        sha256_hex(&files[2].1)
    );
}

#[tokio::test]
async fn kill_9_mid_upload_and_the_same_command_resumes_without_sending_twice() {
    let app = spawn_app(&[]).await;
    // Through a proxy that passes 4 MiB/s, 12 MiB take three seconds.
    let proxy = Proxy::start(vec![app.addr]).await;
    let server = format!("http://{}", proxy.addr);
    let dir = tempfile::tempdir().expect("dir");
    let data = bytes(12 << 20, 9);
    let file = dir.path().join("big.iso");
    std::fs::write(&file, &data).expect("write");
    let state = dir.path().join("state");

    let mut c = chute(&state, &server, &app.token);
    c.arg("upload")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().expect("spawn");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().expect("kill -9");
    let _ = blocking(move || child.wait()).await;
    let kept = std::fs::read_to_string(state.join("uploads.json")).expect("the state file");
    assert!(kept.contains("/tus/"), "{kept}");
    assert!(app.list(&app.token).await.is_empty(), "not finished yet");

    let mut c = chute(&state, &server, &app.token);
    c.arg("upload").arg(&file);
    let out = run(c).await;
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let at: u64 = err
        .lines()
        .find_map(|l| l.split("resuming at byte ").nth(1))
        .unwrap_or_else(|| panic!("no resume in: {err}"))
        .trim()
        .parse()
        .expect("offset");
    assert!(at > 0 && at < data.len() as u64, "resumed at {at}");
    assert_eq!(stored(&app).await.get("big.iso"), Some(&sha256_hex(&data)));
    let kept = std::fs::read_to_string(state.join("uploads.json")).expect("the state file");
    assert!(
        !kept.contains("/tus/"),
        "a finished upload leaves no entry: {kept}"
    );
}

#[tokio::test]
async fn the_client_commands_exit_with_the_servers_reason() {
    let app = spawn_app(&[]).await;
    let dir = tempfile::tempdir().expect("dir");
    let state = dir.path().join("state");
    let good = dir.path().join("good.txt");
    std::fs::write(&good, b"hello").expect("write");

    // A bad token: the server's message, exit 1.
    let mut c = chute(&state, &app.url(""), "chute_wrong");
    c.arg("upload").arg(&good);
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unauthorized"),
        "{}",
        text(&out.stderr)
    );

    // One file missing among two: the other is uploaded, exit 1.
    let mut c = chute(&state, &app.url(""), &app.token);
    c.arg("upload").arg(dir.path().join("missing")).arg(&good);
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("missing"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("good.txt"));

    // Not chute at that address.
    let mut c = chute(&state, "http://127.0.0.1:9", &app.token);
    c.arg("upload").arg(&good).env("CHUTE_URL", "ftp://nowhere");
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not an http"),
        "{}",
        text(&out.stderr)
    );

    // No path: a usage error, exit 2.
    let mut c = chute(&state, &app.url(""), &app.token);
    c.arg("upload");
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(2));
}
