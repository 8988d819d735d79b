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

/// `out` exited with `code`, and its stderr says `needle`.
fn fails_saying(out: &Output, code: i32, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(needle), "no `{needle}` in: {err}");
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
    fails_saying(&out, 1, "unauthorized");

    // One file missing among two: the other is uploaded, exit 1.
    let mut c = chute(&state, &app.url(""), &app.token);
    c.arg("upload").arg(dir.path().join("missing")).arg(&good);
    let out = run(c).await;
    fails_saying(&out, 1, "missing");
    assert!(text(&out.stdout).contains("good.txt"));

    // Not chute at that address.
    let mut c = chute(&state, "http://127.0.0.1:9", &app.token);
    c.arg("upload").arg(&good).env("CHUTE_URL", "ftp://nowhere");
    let out = run(c).await;
    fails_saying(&out, 1, "not an http");

    // No path: a usage error, exit 2.
    let mut c = chute(&state, &app.url(""), &app.token);
    c.arg("upload");
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(2));
}

const METRICS_TOKEN: &str = "client-cli-metrics-secret-51d2";

/// The bytes the server read of resumable uploads' bodies (tus and the draft), from its
/// own metrics.
async fn resumable_bytes_received(app: &TestApp) -> u64 {
    let text = app.metrics(METRICS_TOKEN).await;
    text.lines()
        .filter(|l| {
            l.starts_with("chute_bytes_received_total{")
                && (l.contains("protocol=\"tus\"") || l.contains("protocol=\"ietf\""))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `chute upload` (with `args`) stopped by `signal` (KILL, or INT as Ctrl-C sends it) mid-way
/// through a 4 MiB/s proxy, then run again: it resumes at the server's offset, finishes with
/// the right bytes, leaves no state behind, and the server's own count of bytes read shows at
/// most `resent` sent twice.
async fn stop_and_run_again(signal: &str, args: &[&str], resent: u64, seed: u64) {
    let app = spawn_app(&[("metrics_token", METRICS_TOKEN)]).await;
    let proxy = Proxy::start(vec![app.addr]).await;
    let server = format!("http://{}", proxy.addr);
    let dir = tempfile::tempdir().expect("dir");
    // 12 MiB take three seconds through the proxy.
    let data = bytes(12 << 20, seed);
    let file = dir.path().join("big.iso");
    std::fs::write(&file, &data).expect("write");
    let state = dir.path().join("state");

    let mut c = chute(&state, &server, &app.token);
    c.arg("upload")
        .args(args)
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().expect("spawn");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-s", signal, &pid])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill -s {signal}");
    let status = blocking(move || child.wait()).await.expect("wait");
    {
        use std::os::unix::process::ExitStatusExt as _;
        match signal {
            // Ctrl-C is handled: 130, as a shell reports SIGINT, whatever the disposition
            // the client inherited (a background job of a script has SIGINT ignored).
            "INT" => assert_eq!(status.code(), Some(130), "{status:?}"),
            _ => assert_eq!(status.signal(), Some(9), "{status:?}"),
        }
    }
    let kept = std::fs::read_to_string(state.join("uploads.json")).expect("the state file");
    assert!(
        kept.contains("/tus/") || kept.contains("/resumable/"),
        "{kept}"
    );
    assert!(app.list(&app.token).await.is_empty(), "not finished yet");
    let first = resumable_bytes_received(&app).await;
    assert!(first > 0 && first < data.len() as u64, "{first}");

    let mut c = chute(&state, &server, &app.token);
    c.arg("upload").args(args).arg(&file);
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
        !kept.contains("/tus/") && !kept.contains("/resumable/"),
        "a finished upload leaves no entry: {kept}"
    );
    let total = resumable_bytes_received(&app).await;
    assert!(
        total <= data.len() as u64 + resent,
        "the server read {total} bytes for a file of {} ({args:?})",
        data.len()
    );
}

#[tokio::test]
async fn kill_9_mid_upload_and_the_same_command_resumes_without_sending_twice() {
    // One streaming PATCH: what the server read before the kill, it kept.
    stop_and_run_again("KILL", &[], 0, 9).await;
}

#[tokio::test]
async fn a_draft_upload_killed_resumes_the_same_way() {
    stop_and_run_again("KILL", &["--draft"], 0, 10).await;
}

#[tokio::test]
async fn a_resume_after_kill_9_sends_at_most_one_chunk_more_than_the_rest() {
    stop_and_run_again("KILL", &["--chunk-size", "1MiB", "--checksum"], 1 << 20, 21).await;
}

#[tokio::test]
async fn ctrl_c_mid_upload_leaves_it_resumable_and_the_same_command_finishes_it() {
    // SIGINT, as a terminal's Ctrl-C sends it to the client.
    stop_and_run_again("INT", &[], 0, 11).await;
}

#[tokio::test]
async fn a_server_killed_and_restarted_mid_upload_is_waited_for_and_resumed() {
    use crate::chaos::Node;
    let dir = tempfile::tempdir().expect("dir");
    let mut node = Node::at("restarted", dir.path().join("node"), &[]);
    let token = node.start().await.expect("the first user's token");
    let proxy = Proxy::start(vec![node.addr()]).await;
    let data = bytes(16 << 20, 22);
    let file = dir.path().join("through-a-restart.bin");
    std::fs::write(&file, &data).expect("write");
    let state = dir.path().join("state");

    let mut c = chute(&state, &format!("http://{}", proxy.addr), &token);
    c.args(["upload", "--json"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().expect("spawn");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.start().await;
    let out = blocking(move || child.wait_with_output().expect("wait")).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        node.log()
    );
    let line: Value = serde_json::from_str(text(&out.stdout).trim()).expect("a JSON line");
    assert_eq!(line["size"], data.len());
    // The stored bytes, read back by curl and hashed here.
    let url = line["url"].as_str().expect("url").to_string();
    let got = blocking(move || {
        Command::new("curl")
            .args(["-sf", "-H", &format!("Authorization: Bearer {token}")])
            .arg(url)
            .output()
            .expect("curl")
    })
    .await;
    assert!(got.status.success());
    assert_eq!(sha256_hex(&got.stdout), sha256_hex(&data));
}

#[tokio::test]
async fn a_session_upload_reports_each_refused_file_and_stores_the_rest() {
    let app = spawn_app(&[]).await;
    let dir = tempfile::tempdir().expect("dir");
    let report = dir.path().join("report.txt");
    let tool = dir.path().join("tool.exe");
    std::fs::write(&report, b"quarterly figures\n").expect("write");
    std::fs::write(&tool, b"MZ not wanted").expect("write");

    let mut c = chute(&dir.path().join("state"), &app.url(""), &app.token);
    c.args(["upload", "--session", "--json"])
        .arg(&report)
        .arg(&tool);
    let out = run(c).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let refusal = err
        .lines()
        .find(|l| l.contains("tool.exe"))
        .unwrap_or_else(|| panic!("no refusal in: {err}"));
    assert!(refusal.contains("refused"), "{refusal}");
    assert!(err.contains("STORED"), "{err}");
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0]["path"]
            .as_str()
            .expect("path")
            .ends_with("report.txt")
    );
    let got = stored(&app).await;
    assert_eq!(
        got.get("report.txt"),
        Some(&sha256_hex(b"quarterly figures\n"))
    );
    assert!(!got.contains_key("tool.exe"), "{got:?}");
}

#[tokio::test]
async fn login_then_upload_ls_link_rm_and_logout_without_a_token_in_sight() {
    let app = spawn_app(&[]).await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("config");
    let user = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_chute"));
        c.env_remove("CHUTE_CONFIG")
            .env_remove("CHUTE_URL")
            .env_remove("CHUTE_TOKEN")
            .env("XDG_CONFIG_HOME", &config)
            .env("CHUTE_STATE_DIR", dir.path().join("state"))
            .args(args);
        c
    };

    // A wrong token is refused and not saved.
    let mut c = user(&["login", "--server", &app.url(""), "--token", "chute_nope"]);
    c.stdin(Stdio::null());
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(!config.join("chute/login.json").exists());

    // The token on stdin, as a person pastes it.
    let mut c = user(&["login", "--server", &app.url("")]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{}", app.token).expect("type the token");
    }
    let out = blocking(move || child.wait_with_output().expect("wait")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let saved = config.join("chute/login.json");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&saved)
            .expect("saved")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the login file is the user's alone: {mode:o}"
        );
    }

    let data = bytes(300_000, 23);
    let file = dir.path().join("shared.bin");
    std::fs::write(&file, &data).expect("write");
    let out = run({
        let mut c = user(&["upload"]);
        c.arg(&file);
        c
    })
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = run(user(&["ls"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    let row: Vec<&str> = listing
        .lines()
        .find(|l| l.ends_with("\tshared.bin"))
        .unwrap_or_else(|| panic!("not listed: {listing}"))
        .split('\t')
        .collect();
    let id = row[0].to_string();
    assert_eq!(row[1], data.len().to_string());

    // A link opens the file to curl, with no token.
    let out = run(user(&["link", &id, "--expires", "10m"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let link = text(&out.stdout).trim().to_string();
    let got = blocking(move || {
        Command::new("curl")
            .args(["-sf", &link])
            .output()
            .expect("curl")
    })
    .await;
    assert!(got.status.success());
    assert_eq!(sha256_hex(&got.stdout), sha256_hex(&data));
    let out = run(user(&["link", &id, "--expires", "soon"])).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad duration is a usage error"
    );

    let out = run(user(&["rm", &id, "0000000000000000000000000000dead"])).await;
    // One of the two was not there.
    fails_saying(&out, 1, "not_found");
    let out = run(user(&["ls"])).await;
    assert!(!text(&out.stdout).contains("shared.bin"));

    let out = run(user(&["logout"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(user(&["ls", "--server", &app.url("")])).await;
    fails_saying(&out, 1, "unauthorized");
}

#[tokio::test]
async fn parallel_uploads_with_metadata_and_md5_checksums_arrive_whole() {
    let app = spawn_app(&[]).await;
    let dir = tempfile::tempdir().expect("dir");
    let tree = dir.path().join("batch");
    std::fs::create_dir_all(&tree).expect("mkdir");
    let files: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            (
                format!("part-{i}.bin"),
                bytes(200_000 + i * 70_001, 30 + i as u64),
            )
        })
        .collect();
    for (name, data) in &files {
        std::fs::write(tree.join(name), data).expect("write");
    }
    let mut c = chute(&dir.path().join("state"), &app.url(""), &app.token);
    c.args([
        "upload",
        "--json",
        "--parallel",
        "4",
        "--checksum=md5",
        "--chunk-size",
        "64KiB",
        "--metadata",
        "project=été 2026",
    ])
    .arg(&tree);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), files.len());
    let got = stored(&app).await;
    for (name, data) in &files {
        assert_eq!(got.get(name), Some(&sha256_hex(data)), "{name}");
        // Each was checked after its upload: the stored digest is the local file's.
        let line = lines
            .iter()
            .find(|l| {
                l["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(name.as_str()))
            })
            .expect("its line");
        assert_eq!(line["verified"].as_str(), Some(sha256_hex(data).as_str()));
    }
    // The metadata went with each upload: curl asks the tus upload for it.
    let upload = lines[0]["upload"].as_str().expect("upload url").to_string();
    let token = app.token.clone();
    let head = blocking(move || {
        Command::new("curl")
            .args(["-sfI", "-H", "Tus-Resumable: 1.0.0", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(&upload)
            .output()
            .expect("curl")
    })
    .await;
    let head = text(&head.stdout).to_ascii_lowercase();
    let meta = head
        .lines()
        .find(|l| l.starts_with("upload-metadata:"))
        .unwrap_or_else(|| panic!("no Upload-Metadata in {head}"));
    use base64::Engine as _;
    let value = base64::engine::general_purpose::STANDARD
        .encode("été 2026")
        .to_ascii_lowercase();
    assert!(meta.contains(&format!("project {value}")), "{meta}");

    // Bad metadata is a usage error.
    let mut c = chute(&dir.path().join("state"), &app.url(""), &app.token);
    c.args(["upload", "--metadata", "no-equals-sign"])
        .arg(&tree);
    assert_eq!(run(c).await.status.code(), Some(2));
}

#[tokio::test]
async fn a_server_that_is_not_chute_is_named_as_such() {
    // An HTTP server that answers every request with a web page.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for conn in listener.incoming().take(16) {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let page = "<html><body>It works!</body></html>";
            let _ = write!(
                conn,
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("f.txt");
    std::fs::write(&file, b"x").expect("write");
    for args in [vec!["upload", file.to_str().expect("utf-8")], vec!["ls"]] {
        let mut c = chute(&dir.path().join("state"), &format!("http://{addr}"), "t");
        c.args(&args);
        let out = run(c).await;
        fails_saying(&out, 1, "not a chute server");
    }
}

/// Runs `script` in a detached tmux session of its own (socket `sock`), in a 160x24 pane.
fn tmux(sock: &str, args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(["-L", sock])
        .args(args)
        .output()
        .expect("tmux (Debian's tmux package; scripts/setup-e2e.sh installs it)");
    text(&out.stdout)
}

#[tokio::test]
async fn progress_shows_bars_in_a_terminal_and_plain_lines_in_a_pipe() {
    let app = spawn_app(&[]).await;
    // 4 MiB/s: 12 MiB take three seconds, time enough to look at the bars.
    let proxy = Proxy::start(vec![app.addr]).await;
    let server = format!("http://{}", proxy.addr);
    let dir = tempfile::tempdir().expect("dir");
    let data = bytes(12 << 20, 40);
    let file = dir.path().join("watched.iso");
    std::fs::write(&file, &data).expect("write");

    // In a terminal: tmux runs the command in a pane, and the pane is read as a person sees it.
    let script = dir.path().join("run.sh");
    std::fs::write(
        &script,
        format!(
            "export CHUTE_URL='{server}' CHUTE_TOKEN='{}' CHUTE_STATE_DIR='{}'\n\
             unset CHUTE_CONFIG\n'{}' upload '{}'\necho \"EXIT=$?\"\nsleep 60\n",
            app.token,
            dir.path().join("state").display(),
            env!("CARGO_BIN_EXE_chute"),
            file.display(),
        ),
    )
    .expect("script");
    let sock = format!("chute-test-{}", std::process::id());
    let session = "progress";
    let script_arg = format!("sh {}", script.display());
    let new = [
        "new-session",
        "-d",
        "-s",
        session,
        "-x",
        "160",
        "-y",
        "24",
        &script_arg,
    ];
    let sock2 = sock.clone();
    let new: Vec<String> = new.iter().map(|s| s.to_string()).collect();
    blocking(move || {
        let args: Vec<&str> = new.iter().map(String::as_str).collect();
        tmux(&sock2, &args)
    })
    .await;
    let mut mid = None;
    let mut last = String::new();
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = sock.clone();
        last = blocking(move || tmux(&s, &["capture-pane", "-p", "-t", "progress"])).await;
        if mid.is_none() && last.contains("total") && last.contains("watched.iso") {
            mid = Some(last.clone());
        }
        if last.contains("EXIT=") {
            break;
        }
    }
    let s = sock.clone();
    blocking(move || tmux(&s, &["kill-server"])).await;
    let mid = mid.unwrap_or_else(|| panic!("no bars seen; the pane was:\n{last}"));
    let bars: Vec<&str> = mid.lines().filter(|l| l.contains('[')).collect();
    assert!(
        bars.len() >= 2,
        "a bar for the file and one for the total:\n{mid}"
    );
    let file_bar = bars
        .iter()
        .find(|l| l.contains("watched.iso"))
        .unwrap_or_else(|| panic!("no file bar:\n{mid}"));
    assert!(
        file_bar.contains("MiB") && file_bar.contains("/s"),
        "{file_bar}"
    );
    let total = bars
        .iter()
        .find(|l| l.contains("total"))
        .unwrap_or_else(|| panic!("no total bar:\n{mid}"));
    assert!(
        total.contains("eta") && total.contains("0/1 files"),
        "{total}"
    );
    assert!(last.contains("EXIT=0"), "{last}");
    assert!(
        last.contains("1/1 files"),
        "the total stays, finished:\n{last}"
    );
    assert!(
        last.lines()
            .any(|l| l.contains("watched.iso") && l.contains("/api/files/")),
        "the result line:\n{last}"
    );
    assert_eq!(
        stored(&app).await.get("watched.iso"),
        Some(&sha256_hex(&data))
    );

    // In a pipe: plain lines, no escape codes.
    let file2 = dir.path().join("piped.iso");
    std::fs::write(&file2, bytes(12 << 20, 41)).expect("write");
    let mut c = chute(&dir.path().join("state"), &server, &app.token);
    c.arg("upload").arg(&file2);
    let out = run(c).await;
    assert!(out.status.success());
    let err = text(&out.stderr);
    assert!(!err.contains('\x1b'), "escape codes in a pipe: {err:?}");
    let line = err
        .lines()
        .find(|l| l.contains("piped.iso:") && l.contains("bytes ("))
        .unwrap_or_else(|| panic!("no progress line: {err}"));
    assert!(line.contains("%), ") && line.ends_with("MiB/s"), "{line}");
}

#[tokio::test]
async fn unreadable_files_and_folders_are_reported_and_the_rest_sent() {
    use std::os::unix::fs::PermissionsExt as _;
    let app = spawn_app(&[]).await;
    let dir = tempfile::tempdir().expect("dir");
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    // The tests run as root, who reads everything: the client runs as `nobody` (setpriv,
    // util-linux), in folders open to it.
    mode(dir.path(), 0o777);
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("locked")).expect("mkdir");
    std::fs::write(tree.join("open.txt"), b"anyone may read this").expect("write");
    std::fs::write(tree.join("sealed.txt"), b"no one may").expect("write");
    std::fs::write(tree.join("locked/inside.txt"), b"behind a locked door").expect("write");
    mode(&tree, 0o755);
    mode(&tree.join("open.txt"), 0o644);
    mode(&tree.join("sealed.txt"), 0o000);
    mode(&tree.join("locked"), 0o000);
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    mode(&state, 0o777);

    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_chute"))
        .arg("upload")
        .arg(&tree)
        .env_remove("CHUTE_CONFIG")
        .env("HOME", dir.path())
        .env("CHUTE_STATE_DIR", &state)
        .env("CHUTE_URL", app.url(""))
        .env("CHUTE_TOKEN", &app.token);
    let out = run(c).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for name in ["locked", "sealed.txt"] {
        let line = err
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} is not reported: {err}"));
        // The cause once: it was printed twice, as the message and again as its source.
        assert_eq!(line.matches("Permission denied").count(), 1, "{line}");
    }
    assert!(err.contains("2 of 3"), "{err}");
    let got = stored(&app).await;
    assert_eq!(
        got.get("open.txt"),
        Some(&sha256_hex(b"anyone may read this"))
    );
    assert_eq!(got.len(), 1, "{got:?}");
}

/// What a [`fault_proxy`] does to the bytes it passes.
#[derive(Clone, Copy)]
enum Fault {
    /// Flips the byte this far into what the client sends, on the first connection that
    /// carries that many bytes up.
    FlipUp(usize),
    /// Cuts the first connection that has passed this many bytes to the client.
    CutDown(usize),
}

/// A TCP proxy to `upstream` that does `fault` once; answers its address and a count of the
/// bytes it passed to clients, over every connection.
async fn fault_proxy(
    upstream: std::net::SocketAddr,
    fault: Fault,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let down_total = std::sync::Arc::new(AtomicU64::new(0));
    let counted = down_total.clone();
    // The fault happens once, on whichever connection gets that far first: a client's pool
    // may open a second connection before it has its first one back, so "the first
    // connection" need not be the one that carries the body.
    let fired = std::sync::Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let counted = counted.clone();
            let fired = fired.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let mut buf_up = vec![0u8; 16 << 10];
                let mut buf_down = vec![0u8; 16 << 10];
                let up = async {
                    let mut seen = 0usize;
                    while let Ok(n) = cr.read(&mut buf_up).await {
                        if n == 0 {
                            break;
                        }
                        if let Fault::FlipUp(at) = fault
                            && (seen..seen + n).contains(&at)
                            && !fired.swap(true, Ordering::SeqCst)
                        {
                            buf_up[at - seen] ^= 0x5a;
                        }
                        seen += n;
                        if sw.write_all(&buf_up[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async {
                    let mut seen = 0usize;
                    while let Ok(n) = sr.read(&mut buf_down).await {
                        if n == 0 {
                            break;
                        }
                        let cut = match fault {
                            Fault::CutDown(at)
                                if seen + n >= at && !fired.swap(true, Ordering::SeqCst) =>
                            {
                                Some(at - seen)
                            }
                            _ => None,
                        };
                        let n = cut.unwrap_or(n);
                        if cw.write_all(&buf_down[..n]).await.is_err() {
                            break;
                        }
                        seen += n;
                        counted.fetch_add(n as u64, Ordering::Relaxed);
                        if cut.is_some() {
                            break;
                        }
                    }
                    let _ = cw.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (addr, down_total)
}

#[tokio::test]
async fn a_byte_changed_on_the_way_is_caught_by_the_check_after_the_upload() {
    let app = spawn_app(&[]).await;
    // 300000 bytes into what the client sends: inside the PATCH's body, which the server
    // stores as it came.
    let (proxy, _) = fault_proxy(app.addr, Fault::FlipUp(300_000)).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("fragile.bin");
    std::fs::write(&file, bytes(1 << 20, 70)).expect("write");
    let mut c = chute(
        &dir.path().join("state"),
        &format!("http://{proxy}"),
        &app.token,
    );
    c.arg("upload").arg(&file);
    let out = run(c).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("fragile.bin") && err.contains("sha256") && err.contains("deleted"),
        "{err}"
    );
    // The copy that is not the file does not stay as if it were.
    assert!(stored(&app).await.is_empty());

    // Without the check, the same fault goes unnoticed: the stored copy differs.
    let (proxy, _) = fault_proxy(app.addr, Fault::FlipUp(300_000)).await;
    let mut c = chute(
        &dir.path().join("state2"),
        &format!("http://{proxy}"),
        &app.token,
    );
    c.args(["upload", "--no-verify"]).arg(&file);
    assert!(run(c).await.status.success());
    let kept = stored(&app).await;
    let local = sha256_hex(&std::fs::read(&file).expect("read"));
    assert_ne!(
        kept.get("fragile.bin"),
        Some(&local),
        "the fault hit the body"
    );
    assert!(kept.contains_key("fragile.bin"));
}

#[tokio::test]
async fn a_300_mib_file_goes_up_checked_and_comes_down_through_a_cut() {
    use sha2::Digest as _;
    use std::io::Write as _;
    let app = spawn_app(&[]).await;
    let dir = tempfile::tempdir().expect("dir");
    // Written a MiB at a time, and hashed as written: the test never holds it whole.
    let file = dir.path().join("large.img");
    let mut sha = sha2::Sha256::new();
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("create"));
        for i in 0..300u64 {
            let piece = bytes(1 << 20, 1000 + i);
            sha.update(&piece);
            out.write_all(&piece).expect("write");
        }
        out.flush().expect("flush");
    }
    let want = hex::encode(sha.finalize());

    let mut c = chute(&dir.path().join("state"), &app.url(""), &app.token);
    c.args(["upload", "--json"]).arg(&file);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line: Value = serde_json::from_str(text(&out.stdout).trim()).expect("a JSON line");
    assert_eq!(line["size"], 300u64 << 20);
    assert_eq!(line["verified"].as_str(), Some(want.as_str()));
    assert_eq!(stored(&app).await.get("large.img"), Some(&want));

    // Down again through a proxy that cuts the first connection 100 MiB in: the client
    // continues with a Range, so the proxy passes the file about once, not once and a third.
    let (proxy, passed) = fault_proxy(app.addr, Fault::CutDown(100 << 20)).await;
    let id = line["url"]
        .as_str()
        .expect("url")
        .rsplit('/')
        .next()
        .expect("id")
        .to_string();
    let back = dir.path().join("back.img");
    let mut c = chute(
        &dir.path().join("state"),
        &format!("http://{proxy}"),
        &app.token,
    );
    c.args(["download", &id, "-o"]).arg(&back);
    let out = run(c).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&want), "{}", text(&out.stdout));
    let got = blocking(move || {
        use std::io::Read as _;
        let mut f = std::fs::File::open(&back).expect("open");
        let mut sha = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
        }
        hex::encode(sha.finalize())
    })
    .await;
    assert_eq!(got, want);
    let passed = passed.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        passed < (300 << 20) + (1 << 20),
        "the proxy passed {passed} bytes: the download started again from 0"
    );
}
