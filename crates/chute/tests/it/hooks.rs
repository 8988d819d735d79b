//! Events and hooks: every protocol's events reach a real receiver whose `standardwebhooks`
//! package (PyPI, the reference implementation) verifies each signature; failed deliveries are
//! retried with the same id until acknowledged, also across a receiver that is down; the pull
//! feed serves the same events in commit order, long-polls, and refuses bad input.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::tus::{create, patch, req};

/// A Standard Webhooks secret (base64 of 32 bytes).
const SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// `e2e/webhook_receiver.py`, run by the project's pinned Python (scripts/setup-e2e.sh).
struct Receiver {
    child: std::process::Child,
    port: u16,
    client: reqwest::Client,
}

impl Receiver {
    fn start(port: u16) -> Self {
        Self::start_slow(port, 0)
    }

    /// A receiver that answers each delivery `delay_ms` after it arrived.
    fn start_slow(port: u16, delay_ms: u64) -> Self {
        let python = e2e_dir().join(".venv/bin/python");
        let mut child = std::process::Command::new(&python)
            .arg(e2e_dir().join("webhook_receiver.py"))
            .arg(SECRET)
            .arg(port.to_string())
            .arg(delay_ms.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} cannot run ({e}): run scripts/setup-e2e.sh",
                    python.display()
                )
            });
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("receiver's port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the receiver did not start: {line:?}"));
        Self {
            child,
            port,
            client: reqwest::Client::new(),
        }
    }

    fn hook_url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    async fn deliveries(&self) -> (Vec<Value>, Vec<Value>) {
        let v: Value = self
            .client
            .get(format!("http://127.0.0.1:{}/deliveries", self.port))
            .send()
            .await
            .expect("deliveries")
            .json()
            .await
            .expect("json");
        let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
        (list("deliveries"), list("invalid"))
    }

    async fn fail_next(&self, n: u32) {
        let res = self
            .client
            .post(format!("http://127.0.0.1:{}/fail", self.port))
            .body(n.to_string())
            .send()
            .await
            .expect("fail");
        assert_eq!(res.status(), 204);
    }

    /// Deliveries once `done` holds for the acknowledged ones (30 s at most), with every
    /// delivery checked to have verified.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (all, invalid) = self.deliveries().await;
            assert!(invalid.is_empty(), "signatures that failed: {invalid:?}");
            let acked: Vec<Value> = all.iter().filter(|d| d["status"] == 204).cloned().collect();
            if done(&acked) {
                return all;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not delivered in 30 s; got {all:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hook_settings(r: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("hooks_url", r.hook_url()),
        ("hooks_secret", SECRET.to_string()),
        ("hooks_retry_max_interval", "1s".to_string()),
    ]
}

async fn spawn_with(settings: &[(&'static str, String)]) -> TestApp {
    let s: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_app(&s).await
}

async fn form_upload(app: &TestApp, name: &str, data: &[u8]) -> Value {
    let res = app
        .auth(app.client.post(app.url("/api/files")))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(multipart_body(&[file_part("file", name, data)]))
        .send()
        .await
        .expect("form upload");
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.expect("json");
    v["files"][0].clone()
}

fn id_of(loc: &str) -> String {
    loc.rsplit('/').next().expect("id").to_string()
}

/// The acknowledged deliveries of one type about one subject.
fn about<'a>(acked: &'a [Value], kind: &str, key: &str, value: &str) -> Vec<&'a Value> {
    acked
        .iter()
        .filter(|d| d["type"] == kind && d["data"][key] == value)
        .collect()
}

#[tokio::test]
async fn every_protocol_reports_its_uploads_to_a_verified_webhook() {
    let rcv = Receiver::start(0);
    let mut settings = hook_settings(&rcv);
    settings.push(("tus_upload_expiration", "3s".into()));
    let app = spawn_with(&settings).await;
    let expiring = create(&app, 10, "filename ZXhwaXJlcw==").await;
    let expires_from = tokio::time::Instant::now();

    // A form upload.
    let form_data = bytes(70_000, 1);
    let form = form_upload(&app, "form.bin", &form_data).await;
    let form_id = form["id"].as_str().expect("id").to_string();
    // tus: finished, and terminated.
    let tus_data = bytes(200_000, 2);
    let tus = create(&app, tus_data.len() as u64, "filename dHVzLmJpbg==").await;
    assert_eq!(patch(&app, &tus, 0, &tus_data).await.status(), 204);
    let cancelled = create(&app, 100, "filename Y2FuY2VsLmJpbg==").await;
    let res = req(&app, Method::DELETE, &cancelled)
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);
    // django-chunked-upload.
    let chunked_data = bytes(90_000, 3);
    let (st, v) = crate::chunked::chunk(
        &app,
        &app.token,
        None,
        0,
        chunked_data.len() as u64,
        &chunked_data,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let chunked_id = v["upload_id"].as_str().expect("upload id").to_string();
    let md5 = crate::chunked::md5_hex(&chunked_data);
    let (st, v) = crate::chunked::complete(&app, &app.token, &chunked_id, Some(&md5)).await;
    assert_eq!(st, 200, "{v}");
    // The IETF draft, in one request.
    let ietf_data = bytes(50_000, 4);
    let res = app
        .auth(app.client.post(app.url("/resumable/")))
        .header("Upload-Complete", "?1")
        .header("Content-Disposition", "attachment; filename=\"draft.bin\"")
        .body(ietf_data.clone())
        .send()
        .await
        .expect("draft");
    assert_eq!(res.status(), 201);
    let ietf_id = id_of(res.headers()["location"].to_str().expect("location"));
    // A deleted file.
    let res = app
        .auth(app.client.delete(app.url(&format!("/api/files/{form_id}"))))
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);
    // Upload sessions: one stored, one expired.
    let kept = crate::sessions::open_session(&app, &app.token).await;
    let (st, _) = crate::sessions::post_file(&app, &kept, "kept.txt", b"kept bytes").await;
    assert_eq!(st, 200);
    let res = app
        .auth(
            app.client
                .post(app.url(&format!("/upload-session/{kept}/store/"))),
        )
        .send()
        .await
        .expect("store");
    assert_eq!(res.status(), 200);
    let lapsed = crate::sessions::open_session(&app, &app.token).await;
    let (st, _) = crate::sessions::post_file(&app, &lapsed, "lapsed.txt", b"lapsed").await;
    assert_eq!(st, 200);
    assert!(
        app.state
            .engine
            .expire_session(&lapsed)
            .await
            .expect("expire")
    );
    // The expiring tus upload, swept (as the server's sweeper does) once it expired.
    tokio::time::sleep_until(expires_from + Duration::from_secs(4)).await;
    // (Finished uploads' records go too: they report nothing, their files stay.)
    let swept = app.state.engine.sweep_expired(false).await.expect("sweep");
    assert!(swept.iter().any(|u| u.id == id_of(&expiring)), "{swept:?}");

    let (tus_id, cancelled_id, expiring_id) = (id_of(&tus), id_of(&cancelled), id_of(&expiring));
    let all = rcv.wait_for("every event", |acked| acked.len() >= 16).await;
    let acked: Vec<Value> = all.iter().filter(|d| d["status"] == 204).cloned().collect();
    let types: BTreeMap<String, usize> = acked.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d["type"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        m
    });
    assert_eq!(
        types,
        BTreeMap::from([
            ("file.deleted".to_string(), 1),
            ("session.expired".to_string(), 1),
            ("session.stored".to_string(), 1),
            ("upload.created".to_string(), 5),
            ("upload.expired".to_string(), 1),
            ("upload.finished".to_string(), 6),
            ("upload.terminated".to_string(), 1),
        ]),
        "{acked:#?}"
    );
    let ids: BTreeSet<&str> = acked.iter().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(ids.len(), acked.len(), "each event acknowledged once");

    // What each carries: the finished file's JSON as /api/files shows it, plus who and how.
    let files = app.list(&app.token).await;
    let listed = |name: &str| {
        files
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {files:?}"))
            .clone()
    };
    for (protocol, upload_id, name, data) in [
        ("tus", Some(tus_id.as_str()), "tus.bin", &tus_data),
        (
            "chunked",
            Some(chunked_id.as_str()),
            "movie.mp4",
            &chunked_data,
        ),
        ("ietf", Some(ietf_id.as_str()), "draft.bin", &ietf_data),
    ] {
        let done = about(&acked, "upload.finished", "name", name);
        assert_eq!(done.len(), 1, "{name}: {done:?}");
        let d = &done[0]["data"];
        assert_eq!(d["checksums"]["sha256"], sha256_hex(data), "{name}");
        assert_eq!(d["protocol"], protocol);
        assert_eq!(d["upload_id"], json!(upload_id));
        assert_eq!(d["user"], "admin");
        assert_eq!(d["session"], Value::Null);
        let mut shown = d.clone();
        for k in ["protocol", "upload_id", "user", "session"] {
            shown.as_object_mut().expect("object").remove(k);
        }
        assert_eq!(
            shown,
            listed(name),
            "{name}: the file as /api/files shows it"
        );
        // Created before finished: one upload's events arrive in order.
        let pos = |kind: &str| {
            all.iter()
                .position(|x| x["type"] == kind && x["data"]["upload_id"] == json!(upload_id))
                .unwrap_or_else(|| panic!("{kind} of {name}"))
        };
        assert!(pos("upload.created") < pos("upload.finished"), "{name}");
    }
    let form_done = about(&acked, "upload.finished", "name", "form.bin");
    assert_eq!(form_done[0]["data"]["protocol"], "multipart");
    assert_eq!(
        form_done[0]["data"]["checksums"]["sha256"],
        sha256_hex(&form_data)
    );
    let gone = about(&acked, "file.deleted", "id", &form_id);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0]["data"]["name"], "form.bin");
    let t = about(&acked, "upload.terminated", "upload_id", &cancelled_id);
    assert_eq!(t[0]["data"]["name"], "cancel.bin");
    let e = about(&acked, "upload.expired", "upload_id", &expiring_id);
    assert_eq!(e[0]["data"]["name"], "expires");
    let created = about(&acked, "upload.created", "upload_id", &tus_id);
    assert_eq!(created[0]["data"]["length"], tus_data.len());
    assert_eq!(created[0]["data"]["protocol"], "tus");
    let session_done = about(&acked, "upload.finished", "session", &kept);
    assert_eq!(session_done[0]["data"]["protocol"], "session");
    assert_eq!(session_done[0]["data"]["name"], "kept.txt");
    let stored = about(&acked, "session.stored", "session", &kept);
    assert_eq!(stored[0]["data"]["file_count"], 1);
    assert_eq!(stored[0]["data"]["files"][0]["name"], "kept.txt");
    let expired = about(&acked, "session.expired", "session", &lapsed);
    assert_eq!(expired[0]["data"]["files"][0]["name"], "lapsed.txt");

    // The feed has the same events, ids and bodies, in commit order.
    let res = app
        .auth(app.client.get(app.url("/api/events?limit=1000")))
        .send()
        .await
        .expect("feed");
    assert_eq!(res.status(), 200);
    let feed: Value = res.json().await.expect("json");
    let events = feed["events"].as_array().expect("events");
    assert_eq!(events.len(), acked.len());
    for ev in events {
        let d = acked
            .iter()
            .find(|d| d["id"] == ev["id"])
            .unwrap_or_else(|| panic!("{ev} was not delivered"));
        assert_eq!(
            (&d["type"], &d["timestamp"], &d["data"]),
            (&ev["type"], &ev["timestamp"], &ev["data"])
        );
    }
    let order: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    let first = |t: &str| order.iter().position(|x| *x == t).expect(t);
    assert!(first("upload.created") < first("upload.finished"));
    assert!(first("session.stored") < first("session.expired"));
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_the_same_id_and_outlast_a_receiver_that_is_down() {
    let rcv = Receiver::start(0);
    let app = spawn_with(&hook_settings(&rcv)).await;
    // Five 500s, then 204.
    rcv.fail_next(5).await;
    let f = form_upload(&app, "retried.bin", &bytes(10_000, 5)).await;
    let all = rcv
        .wait_for("the retried event", |acked| !acked.is_empty())
        .await;
    let tries: Vec<&Value> = all.iter().filter(|d| d["data"]["id"] == f["id"]).collect();
    assert_eq!(tries.len(), 6, "{tries:#?}");
    assert!(tries[..5].iter().all(|d| d["status"] == 500));
    assert_eq!(tries[5]["status"], 204);
    assert!(
        tries.iter().all(|d| d["id"] == tries[0]["id"]),
        "one webhook-id across retries"
    );

    // The receiver goes away for 20 s; what happens meanwhile is delivered once it is back.
    let port = rcv.port;
    drop(rcv);
    let data = bytes(30_000, 6);
    let loc = create(&app, data.len() as u64, "filename bGF0ZS5iaW4=").await;
    assert_eq!(patch(&app, &loc, 0, &data).await.status(), 204);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let rcv = Receiver::start(port);
    let id = id_of(&loc);
    let all = rcv
        .wait_for("events from while the receiver was down", |acked| {
            about(acked, "upload.finished", "upload_id", &id).len() == 1
        })
        .await;
    let mine: Vec<&str> = all
        .iter()
        .filter(|d| d["data"]["upload_id"] == id.as_str() && d["status"] == 204)
        .filter_map(|d| d["type"].as_str())
        .collect();
    assert_eq!(mine, ["upload.created", "upload.finished"]);
}

async fn feed(app: &TestApp, token: &str, query: &str) -> (u16, Value) {
    let res = app
        .client
        .get(app.url(&format!("/api/events{query}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("feed");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, v)
}

#[tokio::test]
async fn the_pull_feed_pages_long_polls_and_refuses_bad_input() {
    let app = spawn_app(&[("events_feed", "true")]).await;
    let user = app.user("feeder").await;
    let (st, v) = feed(&app, &user, "").await;
    assert_eq!((st, v["code"].as_str()), (403, Some("forbidden")));
    for (query, code) in [
        ("?limit=0", "bad_limit"),
        ("?limit=1000000000", "bad_limit"),
        ("?limit=ten", "bad_limit"),
        ("?after=abc", "bad_cursor"),
        ("?after=-1", "bad_cursor"),
        ("?wait=61", "bad_wait"),
        ("?wait=-1", "bad_wait"),
        ("?after=%zz", "bad_cursor"),
    ] {
        let (st, v) = feed(&app, &app.token, query).await;
        assert_eq!((st, v["code"].as_str()), (400, Some(code)), "{query}: {v}");
        assert!(v["error"].is_string());
    }
    let (st, v) = feed(&app, &app.token, "").await;
    assert_eq!(st, 200);
    assert_eq!(v["events"], json!([]));
    let start = v["next"].as_str().expect("next").to_string();

    // A long poll is answered by the event that arrives while it waits.
    let waiting = {
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!("/api/events?after={start}&wait=30")),
            app.token.clone(),
        );
        tokio::spawn(async move {
            let res = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("poll");
            res.json::<Value>().await.expect("json")
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the poll waits while there is nothing"
    );
    let f = form_upload(&app, "polled.bin", &bytes(1000, 7)).await;
    let got = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the poll returned before its wait ran out")
        .expect("join");
    assert_eq!(got["events"][0]["type"], "upload.finished");
    assert_eq!(got["events"][0]["data"]["id"], f["id"]);

    // Paging one by one gives what one page gives, in the same order, without repeats.
    for i in 0..4 {
        form_upload(&app, &format!("more{i}.bin"), &bytes(100, i)).await;
    }
    let (_, whole) = feed(&app, &app.token, &format!("?after={start}")).await;
    let whole: Vec<Value> = whole["events"].as_array().expect("events").clone();
    assert_eq!(whole.len(), 5);
    let mut cursor = start;
    let mut paged = Vec::new();
    loop {
        let (st, v) = feed(&app, &app.token, &format!("?after={cursor}&limit=1")).await;
        assert_eq!(st, 200);
        let page = v["events"].as_array().expect("events").clone();
        if page.is_empty() {
            assert_eq!(
                v["next"].as_str(),
                Some(cursor.as_str()),
                "an empty page keeps the cursor"
            );
            break;
        }
        paged.extend(page);
        cursor = v["next"].as_str().expect("next").to_string();
    }
    assert_eq!(paged, whole);
}

#[tokio::test]
async fn with_hooks_and_the_feed_off_no_event_is_recorded() {
    let app = spawn_app(&[]).await;
    form_upload(&app, "quiet.bin", &bytes(1000, 8)).await;
    let loc = create(&app, 3, "filename cS5iaW4=").await;
    assert_eq!(patch(&app, &loc, 0, b"abc").await.status(), 204);
    let (st, v) = feed(&app, &app.token, "").await;
    assert_eq!((st, &v["events"]), (200, &json!([])));
}

/// `chute events ...` beside a server, on the same catalog.
fn events_cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chute"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .arg("events")
        .args(args)
        .args(app.cli_args())
        .output()
        .expect("chute events");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn events_given_up_on_are_kept_as_failed_and_sent_again_by_the_cli() {
    let port = free_port();
    let app = spawn_with(&[
        ("hooks_url", format!("http://127.0.0.1:{port}/hook")),
        ("hooks_secret", SECRET.to_string()),
        ("hooks_retry_max_interval", "1s".to_string()),
        ("hooks_retry_for", "2s".to_string()),
    ])
    .await;
    let f = form_upload(&app, "unheard.bin", &bytes(500, 9)).await;
    // Nobody listens: after 2 s of tries the event is kept as failed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let line = loop {
        let (ok, out, err) = events_cli(&app, &["list", "--failed"]);
        assert!(ok, "{err}");
        if let Some(l) = out.lines().find(|l| l.contains("upload.finished")) {
            break l.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never failed: {out}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let cols: Vec<&str> = line.split('\t').collect();
    assert_eq!(cols[3], "failed", "{line}");
    assert!(cols[4].parse::<u32>().expect("tries") >= 2, "{line}");
    assert!(!cols[6].is_empty(), "the last error is shown: {line}");
    let id = cols[1].to_string();

    let (ok, _, err) = events_cli(&app, &["retry", "evt_nonesuch"]);
    assert!(!ok && err.contains("no failed event"), "{err}");
    let (ok, _, err) = events_cli(&app, &["retry"]);
    assert!(!ok, "{err}");
    // The receiver is up now; a retry by hand sends the event, the same id.
    let rcv = Receiver::start(port);
    let (ok, _, err) = events_cli(&app, &["retry", &id]);
    assert!(ok && err.contains("1 event(s)"), "{err}");
    let all = rcv
        .wait_for("the retried event", |acked| !acked.is_empty())
        .await;
    assert_eq!(all[0]["id"], id.as_str());
    assert_eq!(all[0]["data"]["id"], f["id"]);
    let (_, out, _) = events_cli(&app, &["list", "--failed"]);
    assert!(!out.contains(&id), "{out}");

    // A new secret is a Standard Webhooks secret: whsec_ and base64 of 32 random bytes.
    use base64::Engine as _;
    let (ok, out, _) = events_cli(&app, &["secret"]);
    assert!(ok);
    let key = out.trim().strip_prefix("whsec_").expect("whsec_");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key)
        .expect("base64");
    assert_eq!(raw.len(), 32);
    assert_ne!(out, events_cli(&app, &["secret"]).1);
}

/// One tus upload in one PATCH: the upload's id once the PATCH was acknowledged (204), else
/// None (the server was down or went down mid-way).
async fn acknowledged_upload(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    data: &[u8],
) -> Option<String> {
    let res = client
        .post(format!("{base}/tus/"))
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", data.len().to_string())
        .header("Upload-Metadata", "filename Y3Jhc2guYmlu")
        .send()
        .await
        .ok()?;
    let loc = res.headers().get("location")?.to_str().ok()?.to_string();
    let res = client
        .patch(format!("{base}{loc}"))
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body(data.to_vec())
        .send()
        .await
        .ok()?;
    (res.status() == 204).then(|| id_of(&loc))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_upload_is_reported_through_six_kill_9s() {
    // A slow receiver (300 ms an answer: about the rate the clients make events at), so that
    // the deliverer is always busy and kills land mid-delivery.
    let rcv = Receiver::start_slow(0, 300);
    // The in-process app sets up the catalog and storage of this pass (SQLite, PostgreSQL,
    // S3) and its first token; it has no hooks. The node under test is a `chute serve`
    // process on the same catalog, killed with SIGKILL six times while 20 clients upload.
    let app = spawn_app(&[]).await;
    let mut env = app.cli_env();
    env.extend([
        ("CHUTE_HOOKS_URL".to_string(), rcv.hook_url()),
        ("CHUTE_HOOKS_SECRET".to_string(), SECRET.to_string()),
        (
            "CHUTE_HOOKS_RETRY_MAX_INTERVAL".to_string(),
            "1s".to_string(),
        ),
        (
            "CHUTE_HOOKS_EVENTS".to_string(),
            "upload.finished".to_string(),
        ),
    ]);
    let mut node = crate::chaos::Node::at("hooked", app.data_dir(), &env);
    node.start().await;
    let mut bases = vec![format!("http://{}", node.addr())];
    // On PostgreSQL, a second node shares the catalog and the outbox, and is never killed:
    // it takes over what the killed node had leased once the leases run out. (Each node keeps
    // its own data folder: a client's upload stays on one node.)
    let mut twin = None;
    if app.database_url.is_some() {
        let mut b = crate::chaos::Node::at("twin", app.data_dir().join("twin"), &env);
        b.start().await;
        bases.push(format!("http://{}", b.addr()));
        twin = Some(b);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..20u64)
        .map(|i| {
            let base = bases[i as usize % bases.len()].clone();
            let (token, stop) = (app.token.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                let mut acked = Vec::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let data = bytes(64 << 10, i * 1000 + n);
                    match acknowledged_upload(&client, &base, &token, &data).await {
                        Some(id) => acked.push(id),
                        None => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                acked
            })
        })
        .collect();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        node.kill9();
        tokio::time::sleep(Duration::from_millis(200)).await;
        node.start().await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = BTreeSet::new();
    for c in clients {
        acked.extend(c.await.expect("client"));
    }
    assert!(
        acked.len() >= 40,
        "only {} uploads were acknowledged",
        acked.len()
    );
    let missing = |delivered: &[Value]| -> Vec<String> {
        let got: BTreeSet<&str> = delivered
            .iter()
            .filter_map(|d| d["data"]["upload_id"].as_str())
            .collect();
        acked
            .iter()
            .filter(|id| !got.contains(id.as_str()))
            .cloned()
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (all, invalid) = rcv.deliveries().await;
        assert!(invalid.is_empty(), "{invalid:?}");
        let acked_deliveries: Vec<Value> =
            all.iter().filter(|d| d["status"] == 204).cloned().collect();
        let left = missing(&acked_deliveries);
        if left.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let (_, listed, _) = events_cli(&app, &["list", "--limit", "100000"]);
            let rows: Vec<&str> = listed
                .lines()
                .filter(|l| left.iter().any(|id| l.contains(id.as_str())))
                .collect();
            panic!(
                "{} of {} acknowledged uploads were not reported: {left:?}; their events: {rows:#?}\nnode log: {}",
                left.len(),
                acked.len(),
                node.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Deliveries a kill cut short are sent again once their lease runs out: wait until none
    // is pending.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, listed, err) = events_cli(&app, &["list", "--limit", "100000"]);
        assert!(ok, "{err}");
        if !listed.contains("\tpending\t") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events still pending"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (all, _) = rcv.deliveries().await;
    // A delivery cut short by a kill is sent again with the same webhook-id, and one upload
    // has one event whatever the number of tries.
    let mut ids: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for d in &all {
        let upload = d["data"]["upload_id"].as_str().expect("upload id");
        ids.entry(upload)
            .or_default()
            .insert(d["id"].as_str().expect("id"));
    }
    assert!(ids.values().all(|s| s.len() == 1), "{ids:?}");
    drop(twin);
    let repeats = all.len() - ids.len();
    assert!(
        repeats > 0,
        "no kill landed mid-delivery: the test proved less than it says"
    );
    eprintln!(
        "{} uploads acknowledged, {} events delivered, {} of them more than once",
        acked.len(),
        ids.len(),
        repeats
    );
}
