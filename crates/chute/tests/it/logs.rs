//! The logs of `chute serve` as an operator reads them: one JSON object per line (or plain
//! text without colour codes when stderr is a file), one access line per request with its
//! request id, and no token, signed token, link signature or metrics token anywhere.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::helpers::*;

const METRICS_TOKEN: &str = "metrics-token-for-the-log-test-5d1e";

/// Starts `chute serve` on a free port with `env`, its stderr into `log`; returns the child,
/// its address and the first token it printed.
fn serve(data: &Path, log: &Path, env: &[(&str, &str)]) -> (Child, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chute"));
    c.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"));
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("spawn chute serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut token = String::new();
    let addr = loop {
        let mut l = String::new();
        assert!(
            out.read_line(&mut l).expect("read") > 0,
            "serve ended early"
        );
        let l = l.trim();
        if l.starts_with("chute_") {
            token = l.to_string();
        }
        if let Some(a) = l.strip_prefix("chute listening on http://") {
            break a.to_string();
        }
    };
    (child, addr, token)
}

async fn stop(mut child: Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = blocking(move || child.wait()).await;
}

#[tokio::test]
async fn json_logs_have_one_access_line_per_request_and_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("chute.log");
    let (child, addr, token) = serve(
        &dir.path().join("data"),
        &log,
        &[
            ("CHUTE_LOG_FORMAT", "json"),
            ("CHUTE_AUTH_JWT_SECRET", crate::jwt::SECRET),
            ("CHUTE_METRICS_TOKEN", METRICS_TOKEN),
        ],
    );
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let data = bytes(5000, 9);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(data.clone()).file_name("logged.bin"),
    );
    let res = client
        .post(format!("{base}/api/files"))
        .bearer_auth(&token)
        .header("X-Request-Id", "log-test-upload")
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["x-request-id"], "log-test-upload");
    let v: Value = res.json().await.expect("json");
    let id = v["files"][0]["id"].as_str().expect("id").to_string();

    // A signed token (PyJWT), a download link and a scrape: each carries a secret.
    let jwt = crate::jwt::mint(
        &json!([{"alg": "HS256", "key": crate::jwt::SECRET, "exp_in": 300,
                 "claims": {"sub": "alice"}}]),
        false,
    )
    .remove(0);
    let res = client
        .get(format!("{base}/api/me"))
        .bearer_auth(&jwt)
        .header("X-Request-Id", "log-test-jwt")
        .send()
        .await
        .expect("me");
    assert_eq!(res.status(), 200);
    let res = client
        .post(format!("{base}/api/files/{id}/link"))
        .bearer_auth(&token)
        .json(&json!({"expires_in": 600}))
        .send()
        .await
        .expect("link");
    assert_eq!(res.status(), 201);
    let link: Value = res.json().await.expect("json");
    let link = link["url"].as_str().expect("url").to_string();
    let signature = link.rsplit_once("s=").expect("signature").1.to_string();
    let res = client
        .get(format!("{base}{link}"))
        .header("X-Request-Id", "log-test-link")
        .send()
        .await
        .expect("dl");
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.expect("bytes").to_vec(), data);
    let res = client
        .get(format!("{base}/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("metrics");
    assert_eq!(res.status(), 200);
    let res = client
        .get(format!("{base}/api/files?token={token}"))
        .send()
        .await
        .expect("401");
    assert_eq!(res.status(), 401);
    stop(child).await;

    let text = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "chute::access")
        .collect();
    assert_eq!(access.len(), 6, "one line per request: {access:#?}");
    let by_id = |rid: &str| {
        *access
            .iter()
            .find(|l| l["request_id"] == rid)
            .unwrap_or_else(|| panic!("no access line for {rid}"))
    };
    let up = by_id("log-test-upload");
    assert_eq!(up["method"], "POST");
    assert_eq!(up["route"], "/api/files");
    assert_eq!(up["status"], 201);
    assert_eq!(up["user"], "admin");
    assert!(up["bytes_in"].as_u64().expect("bytes_in") > 5000, "{up}");
    assert!(up["bytes_out"].as_u64().expect("bytes_out") > 100, "{up}");
    assert!(up["duration_ms"].as_f64().expect("duration") > 0.0);
    assert_eq!(by_id("log-test-jwt")["user"], "alice");
    let dl = by_id("log-test-link");
    assert_eq!(dl["route"], "/dl/{id}");
    assert_eq!(dl["upload_id"], id.as_str());
    assert_eq!(dl["bytes_out"], 5000);

    for (what, secret) in [
        ("the API token", token.as_str()),
        ("the signed token", jwt.as_str()),
        ("the JWT secret", crate::jwt::SECRET),
        ("the link signature", signature.as_str()),
        ("the metrics token", METRICS_TOKEN),
    ] {
        assert!(!text.contains(secret), "{what} is in the log:\n{text}");
    }
}

#[tokio::test]
async fn text_logs_to_a_file_carry_no_colour_codes_and_sighup_keeps_it_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("chute.log");
    let (child, addr, _token) = serve(&dir.path().join("data"), &log, &[]);
    let res = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .expect("health");
    assert_eq!(res.status(), 200);
    // SIGHUP (an operator's "reload") leaves the server running.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let res = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .expect("still serving after SIGHUP");
    assert_eq!(res.status(), 200);
    stop(child).await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("SIGHUP"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("chute::access") && l.contains("route=/healthz status=200")),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "escape sequences in a file:\n{text}"
    );
}
