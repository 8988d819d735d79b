//! The `chute` binary as a user runs it: user and token management, settings from env and
//! flags, the first start, serving, and a clean stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::*;

fn chute() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chute"));
    c.env_remove("CHUTE_CONFIG");
    c
}

#[test]
fn users_and_tokens_are_managed_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("fresh/data");
    let run = |args: &[&str]| {
        chute()
            .current_dir(dir.path())
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .expect("run chute")
    };
    let out = run(&["user", "add", "bob"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        data.join("chute.db").exists(),
        "the data dir and database are created"
    );
    let out = run(&["user", "add", "bob"]);
    assert!(!out.status.success(), "a second bob is refused");
    let out = run(&["user", "add", "../evil"]);
    assert!(!out.status.success());
    let out = run(&["user", "add", "carol", "--staff"]);
    assert!(out.status.success());

    let out = run(&["token", "create", "--user", "bob"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "the token alone on stdout: {stdout:?}");
    assert!(lines[0].starts_with("chute_") && lines[0].len() >= 6 + 32);
    let out = run(&["token", "create", "--user", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));
}

#[test]
fn help_and_example_config_document_every_setting() {
    let out = chute().args(["serve", "--help"]).output().expect("help");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf8");
    for d in chute::config::SETTINGS {
        assert!(
            help.contains(&format!("--{}", d.flag_name())),
            "{} missing from --help",
            d.name
        );
        assert!(
            help.contains(&d.env_name()),
            "{} env missing from --help",
            d.name
        );
    }
    let out = chute()
        .args(["config", "example"])
        .output()
        .expect("example");
    let printed = String::from_utf8(out.stdout).expect("utf8");
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/chute.example.toml"
    ))
    .expect("config/chute.example.toml is shipped");
    assert_eq!(
        printed, shipped,
        "config/chute.example.toml is out of date: run `chute config example`"
    );
    let out = chute()
        .args(["--max-upload-size", "lots", "user", "add", "x"])
        .output()
        .expect("bad");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_upload_size"));
}

/// Each command's help shows its own options; the 81 settings appear once, grouped by topic,
/// under `chute serve --help`, and are still taken by every command, before or after it.
#[test]
fn help_fits_each_command_and_settings_are_grouped_under_serve() {
    let help = |args: &[&str]| {
        let out = chute().args(args).output().expect("help");
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).expect("utf8")
    };
    for args in [
        &["--help"][..],
        &["user", "add", "--help"],
        &["token", "create", "--help"],
        &["gc", "--help"],
        &["upload", "--help"],
        &["download", "--help"],
        &["ls", "--help"],
        &["link", "--help"],
        &["login", "--help"],
        &["events", "list", "--help"],
    ] {
        let text = help(args);
        assert!(
            !text.contains("--max-upload-size"),
            "{args:?} lists the settings:\n{text}"
        );
        // `--help` gives each option its whole text; `-h` a line each.
        assert!(
            text.lines().count() < 80,
            "{args:?}: {} lines",
            text.lines().count()
        );
        let short: Vec<&str> = args
            .iter()
            .map(|a| if *a == "--help" { "-h" } else { a })
            .collect();
        let text = help(&short);
        assert!(
            text.lines().count() < 30,
            "{short:?}: {} lines",
            text.lines().count()
        );
    }
    assert!(
        help(&["--help"]).contains("chute serve --help"),
        "the top help says where they are"
    );
    // The client commands read no server settings, nor the server's config file; the server's
    // help names that file.
    for cmd in ["upload", "download", "ls", "rm", "link", "login", "logout"] {
        let text = help(&[cmd, "--help"]);
        assert!(!text.contains("--config"), "{cmd} --help:\n{text}");
    }
    for args in [&["serve", "-h"][..], &["serve", "--help"]] {
        assert!(help(args).contains("--config <FILE>"), "{args:?}");
    }

    for args in [&["serve", "-h"][..], &["serve", "--help"]] {
        let text = help(args);
        let mut at = 0;
        for (topic, names) in chute::config::TOPICS {
            let heading = format!("\n{topic}:\n");
            let found = text[at..].find(&heading).map(|i| i + at);
            let start = found.unwrap_or_else(|| panic!("{args:?}: no {topic} after byte {at}"));
            let end = chute::config::TOPICS
                .iter()
                .skip_while(|(t, _)| t != topic)
                .nth(1)
                .and_then(|(next, _)| text[start..].find(&format!("\n{next}:\n")))
                .map_or(text.len(), |i| i + start);
            for name in *names {
                let flag = format!("  --{} <VALUE>", name.replace('_', "-"));
                assert_eq!(text.matches(&flag).count(), 1, "{args:?}: {flag} once");
                assert!(
                    text[start..end].contains(&flag),
                    "{args:?}: {flag} under {topic}"
                );
            }
            at = start + 1;
        }
    }

    // Taken after the command too.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("after");
    let out = chute()
        .current_dir(dir.path())
        .args(["user", "add", "dora", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data.join("chute.db").exists());
}

#[tokio::test]
async fn serve_prints_a_first_token_once_and_honours_env_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let start = || {
        chute()
            .current_dir(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("CHUTE_MAX_UPLOAD_SIZE", "2000")
            .env("CHUTE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chute serve")
    };
    let mut child = start();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    let addr = loop {
        let mut l = String::new();
        assert!(
            out.read_line(&mut l).expect("read") > 0,
            "serve ended early: {lines:?}"
        );
        if let Some(a) = l.trim().strip_prefix("chute listening on http://") {
            break a.to_string();
        }
        lines.push(l.trim().to_string());
    };
    let token = lines
        .iter()
        .find(|l| l.starts_with("chute_"))
        .expect("a first token")
        .clone();

    let client = reqwest::Client::new();
    let url = format!("http://{addr}/api/files");
    let ok = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![1u8; 100]).file_name("s"),
    );
    let res = client
        .post(&url)
        .bearer_auth(&token)
        .multipart(ok)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 201);
    let big = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![1u8; 5000]).file_name("b"),
    );
    let res = client
        .post(&url)
        .bearer_auth(&token)
        .multipart(big)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 413, "CHUTE_MAX_UPLOAD_SIZE applies");

    // Tokens made while the server runs work at once.
    let out2 = chute()
        .arg("--data-dir")
        .arg(&data)
        .args(["token", "create", "--user", "admin"])
        .output()
        .expect("token");
    let t2 = String::from_utf8(out2.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    let res = client
        .get(&url)
        .bearer_auth(&t2)
        .send()
        .await
        .expect("list");
    assert_eq!(res.status(), 200);

    // SIGTERM stops it cleanly; a second start prints no new token.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = blocking(move || child.wait()).await.expect("wait");
    assert!(status.success(), "{status:?}");
    let mut child = start();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("read");
    assert!(
        first.starts_with("chute listening on"),
        "no second token: {first:?}"
    );
    child.kill().expect("kill");
    let _ = child.wait();
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// `chute` beside a running app, on its catalog and storage: stdout, stderr, success.
fn beside(app: &TestApp, args: &[&str]) -> (String, String, bool) {
    let out = chute()
        .args(app.cli_args())
        .args(args)
        .output()
        .expect("run chute");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

async fn me(app: &TestApp, addr: std::net::SocketAddr, token: &str) -> u16 {
    app.client
        .get(format!("http://{addr}/api/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("me")
        .status()
        .as_u16()
}

#[tokio::test]
async fn tokens_are_listed_and_revoked_and_users_removed_with_everything_they_own() {
    let app = spawn_app(&[]).await;
    // A second node on the same catalog, when there is one to share.
    let node = match &app.database_url {
        Some(url) => {
            let data = app.data_dir().display().to_string();
            Some(spawn_node(&[("database_url", url), ("data_dir", &data)], &app.token).await)
        }
        None => None,
    };
    let token = app.user("keeper").await;
    // What keeper owns: a file, an open tus upload with staged bytes, a session file.
    let data = bytes(200_000, 7);
    let res = app
        .client
        .post(app.url("/api/files"))
        .bearer_auth(&token)
        .multipart(reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(data.clone()).file_name("kept.bin"),
        ))
        .send()
        .await
        .expect("upload");
    assert_eq!(res.status(), 201);
    let tus = |m: reqwest::Method, url: String| {
        app.client
            .request(m, url)
            .bearer_auth(&token)
            .header("Tus-Resumable", "1.0.0")
    };
    let res = tus(reqwest::Method::POST, app.url("/tus/"))
        .header("Upload-Length", "100000")
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    let loc = res.headers()["location"].to_str().expect("loc").to_string();
    let res = tus(reqwest::Method::PATCH, app.url(&loc))
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body(data[..50_000].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 204);
    let session = crate::sessions::open_session(&app, &token).await;
    let (st, v) =
        crate::sessions::post_file_as(&app, &token, &session, "file", "a.pdf", b"%PDF-1.4 x").await;
    assert_eq!(st, 200, "{v}");

    let (out, err, ok) = beside(&app, &["user", "list"]);
    assert!(ok, "{err}");
    let keeper = out
        .lines()
        .find(|l| l.starts_with("keeper\t"))
        .unwrap_or_else(|| panic!("{out}"));
    // Usage: the file, the open upload's declared length, the session file.
    assert!(
        keeper.ends_with(&format!("\t{}", 200_000 + 100_000 + 10)),
        "{keeper}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("admin\tstaff\t")),
        "{out}"
    );

    // Tokens: listed with when they were last used, never with the secret.
    let (out, err, ok) = beside(
        &app,
        &["token", "create", "--user", "keeper", "--label", "second"],
    );
    assert!(ok, "{err}");
    let second = out.trim().to_string();
    assert_eq!(me(&app, app.addr, &second).await, 200);
    let (out, err, ok) = beside(&app, &["token", "list", "--user", "keeper"]);
    assert!(ok, "{err}");
    assert!(!out.contains("chute_"), "a secret is shown: {out}");
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(rows[1][1], "second");
    assert!(
        rows.iter().all(|r| r[3] != "never"),
        "both were used: {out}"
    );
    // Revoked: refused at once, here and on the other node.
    let (_, err, ok) = beside(&app, &["token", "revoke", rows[1][0]]);
    assert!(ok, "{err}");
    assert_eq!(me(&app, app.addr, &second).await, 401);
    if let Some(n) = &node {
        assert_eq!(me(&app, n.addr, &second).await, 401);
        assert_eq!(me(&app, n.addr, &token).await, 200);
    }
    let (_, _, ok) = beside(&app, &["token", "revoke", rows[1][0]]);
    assert!(!ok, "a second revoke finds nothing");

    // Removal is refused while keeper owns something, and then nothing is touched.
    let (_, err, ok) = beside(&app, &["user", "remove", "keeper"]);
    assert!(!ok && err.contains("--delete-files"), "{err}");
    assert_eq!(me(&app, app.addr, &token).await, 200);
    assert_eq!(app.stored_objects().len(), 2);
    let (_, err, ok) = beside(&app, &["user", "remove", "keeper", "--delete-files"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("1 file(s), 1 open upload(s) and 1 session file(s)"),
        "{err}"
    );
    assert_eq!(me(&app, app.addr, &token).await, 401);
    assert!(
        app.stored_objects().is_empty(),
        "{:?}",
        app.stored_objects()
    );
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
    let (out, _, _) = beside(&app, &["user", "list"]);
    assert!(!out.contains("keeper"), "{out}");
    let (_, err, ok) = beside(&app, &["user", "remove", "keeper"]);
    assert!(!ok && err.contains("no user named"), "{err}");
}
