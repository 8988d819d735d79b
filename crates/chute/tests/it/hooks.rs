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

/// Every durable event (upload.progress is tested on its own: it would change the counts).
const DURABLE: &str = "upload.created,upload.finished,upload.terminated,upload.expired,\
                       file.deleted,session.stored,session.expired";

fn hook_settings(r: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("hooks_url", r.hook_url()),
        ("hooks_secret", SECRET.to_string()),
        ("hooks_retry_max_interval", "1s".to_string()),
        ("hooks_events", DURABLE.to_string()),
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
    let all = rcv.wait_for("every event", |acked| acked.len() >= 18).await;
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
            ("upload.created".to_string(), 7),
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
    let session_began = about(&acked, "upload.created", "session", &kept);
    assert_eq!(session_began[0]["data"]["name"], "kept.txt");
    assert!(session_began[0]["timestamp"].as_str() <= session_done[0]["timestamp"].as_str());
    // One session's events arrive in order: created, finished, stored.
    let of_kept: Vec<&str> = all
        .iter()
        .filter(|d| d["data"]["session"] == kept.as_str())
        .filter_map(|d| d["type"].as_str())
        .collect();
    assert_eq!(
        of_kept,
        ["upload.created", "upload.finished", "session.stored"]
    );
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
    // A slow receiver (1 s an answer: 32 deliveries a second at most, fewer than the clients
    // make on any backend), so that the deliverer is always busy and kills land mid-delivery.
    let rcv = Receiver::start_slow(0, 1000);
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
        ("CHUTE_HOOKS_TIMEOUT".to_string(), "3s".to_string()),
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
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

impl Receiver {
    /// How the receiver answers blocking hooks (see e2e/webhook_receiver.py).
    async fn rules(&self, rules: Value) {
        let res = self
            .client
            .post(format!("http://127.0.0.1:{}/rules", self.port))
            .body(rules.to_string())
            .send()
            .await
            .expect("rules");
        assert_eq!(res.status(), 204);
    }

    /// The blocking hooks asked so far, of `kind`, in order.
    async fn asked(&self, kind: &str) -> Vec<Value> {
        let (all, invalid) = self.deliveries().await;
        assert!(invalid.is_empty(), "signatures that failed: {invalid:?}");
        all.into_iter().filter(|d| d["type"] == kind).collect()
    }
}

async fn gated_app(rcv: &Receiver, extra: &[(&'static str, &str)]) -> TestApp {
    let mut s = hook_settings(rcv);
    s.retain(|(k, _)| *k != "hooks_events");
    s.push(("hooks_events", "all,pre-create,pre-finish".into()));
    s.push(("hooks_forward_headers", "X-Request-Id".into()));
    s.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    spawn_with(&s).await
}

async fn post_form(app: &TestApp, parts: &[(String, Vec<u8>)]) -> (u16, Value) {
    let res = app
        .auth(app.client.post(app.url("/api/files")))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("x-request-id", "req-42")
        .body(multipart_body(parts))
        .send()
        .await
        .expect("form upload");
    let status = res.status().as_u16();
    (status, res.json().await.expect("json"))
}

async fn tus_create(app: &TestApp, length: Option<u64>, meta: &str) -> reqwest::Response {
    let rb = req(app, Method::POST, "/tus/")
        .header("Upload-Metadata", meta)
        .header("x-request-id", "req-43");
    let rb = match length {
        Some(l) => rb.header("Upload-Length", l.to_string()),
        None => rb.header("Upload-Defer-Length", "1"),
    };
    rb.send().await.expect("create")
}

/// Nothing of a refused upload is anywhere: no file, no staged or temporary bytes.
async fn nothing_kept(app: &TestApp) {
    assert_eq!(app.list(&app.token).await, Vec::<Value>::new());
    assert_eq!(app.leftovers(), Vec::<std::path::PathBuf>::new());
    assert_eq!(app.stored_objects(), Vec::<std::path::PathBuf>::new());
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn pre_create_refuses_or_reshapes_a_file_before_any_byte_is_stored_on_every_protocol() {
    let rcv = Receiver::start(0);
    rcv.rules(json!([
        {"type": "pre-create", "match": "forbidden", "status": 200,
         "body": r#"{"reject": {"status": 403, "message": "not here"}}"#},
        {"type": "pre-create", "match": "\"protocol\":\"chunked\"", "status": 200,
         "body": r#"{"reject": {"status": 451, "message": "no chunks"}}"#},
        {"type": "pre-create", "match": "rename-me", "status": 200,
         "body": r#"{"filename": "../renamed.txt", "metadata": {"filename": "renamed.txt", "owner": "app"}}"#},
        {"type": "pre-create", "match": "small-", "status": 200, "body": r#"{"max_size": 10}"#},
    ]))
    .await;
    let app = gated_app(&rcv, &[]).await;
    let refused = |st: u16, v: &Value, status: u16, message: &str| {
        assert_eq!((st, v["code"].as_str()), (status, Some("rejected")), "{v}");
        assert_eq!(v["error"], message);
    };
    // Form uploads: one refused file refuses the request, files before it included.
    let (st, v) = post_form(&app, &[file_part("file", "forbidden.bin", b"x")]).await;
    refused(st, &v, 403, "not here");
    let (st, v) = post_form(
        &app,
        &[
            file_part("file", "fine.bin", &bytes(3000, 1)),
            file_part("file", "forbidden.bin", &bytes(3000, 2)),
        ],
    )
    .await;
    refused(st, &v, 403, "not here");
    let (st, v) = post_form(&app, &[file_part("file", "small-form.bin", &bytes(11, 3))]).await;
    assert_eq!((st, v["code"].as_str()), (413, Some("too_large")), "{v}");
    // tus, the draft, chunked and sessions.
    let res = tus_create(&app, Some(5), &format!("filename {}", b64("forbidden.bin"))).await;
    assert_eq!(res.status(), 403);
    let res = tus_create(
        &app,
        Some(100),
        &format!("filename {}", b64("small-tus.bin")),
    )
    .await;
    assert_eq!(res.status(), 413);
    let res = app
        .auth(app.client.post(app.url("/resumable/")))
        .header("Upload-Complete", "?1")
        .header(
            "Content-Disposition",
            "attachment; filename=\"forbidden.bin\"",
        )
        .body(bytes(100, 4))
        .send()
        .await
        .expect("draft");
    assert_eq!(res.status(), 403);
    let (st, v) = crate::chunked::chunk(&app, &app.token, None, 0, 10, &bytes(10, 5)).await;
    assert_eq!((st, v["code"].as_str()), (451, Some("rejected")), "{v}");
    let session = crate::sessions::open_session(&app, &app.token).await;
    let (st, v) = crate::sessions::post_file(&app, &session, "forbidden.txt", b"no").await;
    assert_eq!((st, v["code"].as_str()), (403, Some("rejected")), "{v}");
    nothing_kept(&app).await;

    // A deferred-length upload under the hook's limit stops at it as it streams.
    let res = tus_create(
        &app,
        None,
        &format!("filename {}", b64("small-deferred.bin")),
    )
    .await;
    assert_eq!(res.status(), 201);
    let loc = res.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    assert_eq!(patch(&app, &loc, 0, &bytes(20, 6)).await.status(), 413);

    // Renamed: the file's name and the tus metadata are the application's.
    let data = bytes(5000, 7);
    let (st, v) = post_form(&app, &[file_part("file", "rename-me.bin", &data)]).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["files"][0]["name"], "renamed.txt");
    let res = tus_create(
        &app,
        Some(data.len() as u64),
        &format!("filename {}", b64("rename-me.bin")),
    )
    .await;
    let loc = res.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    assert_eq!(patch(&app, &loc, 0, &data).await.status(), 204);
    let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
    let meta = res.headers()["upload-metadata"]
        .to_str()
        .expect("meta")
        .to_string();
    assert!(meta.contains(&format!("owner {}", b64("app"))), "{meta}");
    let names: Vec<Value> = app
        .list(&app.token)
        .await
        .iter()
        .map(|f| f["name"].clone())
        .collect();
    assert_eq!(names, [json!("renamed.txt"), json!("renamed.txt")]);

    // What the application was told.
    let asked = rcv.asked("pre-create").await;
    let tus_ask = asked
        .iter()
        .find(|d| d["data"]["protocol"] == "tus" && d["data"]["filename"] == "rename-me.bin")
        .expect("tus pre-create");
    let d = &tus_ask["data"];
    assert_eq!(d["user"], "admin");
    assert_eq!(d["length"], data.len());
    assert_eq!(d["metadata"]["filename"], "rename-me.bin");
    assert_eq!(d["client"], "127.0.0.1");
    assert_eq!(d["headers"], json!({"x-request-id": "req-43"}));
    let form_ask = asked
        .iter()
        .find(|d| d["data"]["protocol"] == "multipart" && d["data"]["filename"] == "fine.bin")
        .expect("form pre-create");
    assert_eq!(
        form_ask["data"]["headers"],
        json!({"x-request-id": "req-42"})
    );
    let session_ask = asked
        .iter()
        .find(|d| d["data"]["protocol"] == "session")
        .expect("session pre-create");
    assert_eq!(session_ask["data"]["session"], session.as_str());
}

#[tokio::test]
async fn pre_finish_refusals_discard_the_bytes_on_every_protocol() {
    let rcv = Receiver::start(0);
    rcv.rules(json!([
        {"type": "pre-finish", "match": "reject-at-end", "status": 200,
         "body": r#"{"reject": {"status": 422, "message": "checked and refused"}}"#},
        {"type": "pre-finish", "match": "\"protocol\":\"chunked\"", "status": 200,
         "body": r#"{"reject": {"status": 422, "message": "checked and refused"}}"#},
    ]))
    .await;
    let app = gated_app(&rcv, &[]).await;
    let data = bytes(40_000, 8);
    let (st, v) = post_form(&app, &[file_part("file", "reject-at-end.bin", &data)]).await;
    assert_eq!((st, v["code"].as_str()), (422, Some("rejected")), "{v}");
    let res = tus_create(
        &app,
        Some(data.len() as u64),
        &format!("filename {}", b64("reject-at-end.bin")),
    )
    .await;
    let loc = res.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let res = patch(&app, &loc, 0, &data).await;
    assert_eq!(res.status(), 422);
    assert_eq!(
        req(&app, Method::HEAD, &loc)
            .send()
            .await
            .expect("head")
            .status(),
        404
    );
    let res = app
        .auth(app.client.post(app.url("/resumable/")))
        .header("Upload-Complete", "?1")
        .header(
            "Content-Disposition",
            "attachment; filename=\"reject-at-end.bin\"",
        )
        .body(data.clone())
        .send()
        .await
        .expect("draft");
    assert_eq!(res.status(), 422);
    let (st, v) = crate::chunked::chunk(&app, &app.token, None, 0, data.len() as u64, &data).await;
    assert_eq!(st, 200, "{v}");
    let id = v["upload_id"].as_str().expect("id").to_string();
    let md5 = crate::chunked::md5_hex(&data);
    let (st, v) = crate::chunked::complete(&app, &app.token, &id, Some(&md5)).await;
    assert_eq!((st, v["code"].as_str()), (422, Some("rejected")), "{v}");
    let session = crate::sessions::open_session(&app, &app.token).await;
    let (st, v) = crate::sessions::post_file(&app, &session, "reject-at-end.txt", b"bytes").await;
    assert_eq!((st, v["code"].as_str()), (422, Some("rejected")), "{v}");
    nothing_kept(&app).await;
    // The application saw each file whole: its size and the checksum of what was sent.
    let asked = rcv.asked("pre-finish").await;
    assert_eq!(asked.len(), 5, "{asked:#?}");
    for a in asked
        .iter()
        .filter(|a| a["data"]["name"] == "reject-at-end.bin")
    {
        assert_eq!(a["data"]["size"], data.len());
        assert_eq!(a["data"]["checksums"]["sha256"], sha256_hex(&data));
        assert_eq!(a["data"]["user"], "admin");
    }
    // Every protocol tells the same keys (null where unknown); tus metadata comes decoded,
    // as pre-create tells it.
    let keys = |a: &Value| {
        let mut k: Vec<String> = a["data"]
            .as_object()
            .expect("data")
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    for a in &asked {
        assert_eq!(keys(a), keys(&asked[0]), "{a:#}");
    }
    let tus = asked
        .iter()
        .find(|a| a["data"]["protocol"] == "tus")
        .expect("tus");
    assert_eq!(
        tus["data"]["metadata"]["filename"], "reject-at-end.bin",
        "{tus:#}"
    );
    // Files it accepts are stored as ever.
    let (st, _) = post_form(&app, &[file_part("file", "welcome.bin", &data)]).await;
    assert_eq!(st, 201);
}

#[tokio::test]
async fn a_hook_that_fails_or_answers_nonsense_fails_closed() {
    let rcv = Receiver::start(0);
    let app = gated_app(&rcv, &[("hooks_timeout", "1s")]).await;
    for (rule, what) in [
        (json!({"type": "pre-create", "status": 500}), "a 500"),
        (
            json!({"type": "pre-create", "status": 200, "body": "<html>oops</html>"}),
            "garbage",
        ),
        (
            json!({"type": "pre-create", "status": 200, "body": r#"{"reject": {"status": 302}}"#}),
            "a reject outside 4xx",
        ),
        (
            json!({"type": "pre-create", "status": 200, "delay_ms": 2500}),
            "a timeout",
        ),
        (
            json!({"type": "pre-finish", "status": 503}),
            "a pre-finish 503",
        ),
    ] {
        rcv.rules(json!([rule])).await;
        let (st, v) = post_form(&app, &[file_part("file", "a.bin", &bytes(1000, 9))]).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (503, Some("hook_failed")),
            "{what}: {v}"
        );
        let res = tus_create(&app, Some(3), &format!("filename {}", b64("b.bin"))).await;
        if what.starts_with("a pre-finish") {
            // Created; the bytes stay staged and unfinished, for the client's next try.
            let loc = res.headers()["location"]
                .to_str()
                .expect("location")
                .to_string();
            assert_eq!(patch(&app, &loc, 0, b"abc").await.status(), 503, "{what}");
            rcv.rules(json!([])).await;
            let res = req(&app, Method::HEAD, &loc).send().await.expect("head");
            assert_eq!(res.status(), 200, "the next try finishes it");
            assert_eq!(res.headers()["upload-offset"], "3");
            assert_eq!(app.list(&app.token).await.len(), 1);
        } else {
            assert_eq!(res.status(), 503, "{what}");
            nothing_kept(&app).await;
        }
    }
    // A receiver that is not there at all.
    drop(rcv);
    let (st, v) = post_form(&app, &[file_part("file", "c.bin", b"c")]).await;
    assert_eq!((st, v["code"].as_str()), (503, Some("hook_failed")), "{v}");
}

#[tokio::test]
async fn progress_is_reported_as_bytes_arrive_and_never_stored() {
    let rcv = Receiver::start(0);
    let mut s = hook_settings(&rcv);
    s.retain(|(k, _)| *k != "hooks_events");
    s.push(("hooks_progress_interval", "100ms".into()));
    let app = spawn_with(&s).await;
    // One PATCH whose body comes in 16 pieces over ~1.6 s.
    let data = bytes(16 << 16, 10);
    let loc = create(&app, data.len() as u64, "filename cHJvZ3Jlc3MuYmlu").await;
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(1 << 16).map(|c| Ok(c.to_vec())).collect();
    let body = futures::StreamExt::then(futures::stream::iter(pieces), |p| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        p
    });
    let res = req(&app, Method::PATCH, &loc)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Content-Length", data.len().to_string())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 204);
    let id = id_of(&loc);
    let all = rcv
        .wait_for("upload.finished", |acked| {
            about(acked, "upload.finished", "upload_id", &id).len() == 1
        })
        .await;
    let offsets: Vec<u64> = all
        .iter()
        .filter(|d| d["type"] == "upload.progress" && d["data"]["upload_id"] == id.as_str())
        .map(|d| d["data"]["offset"].as_u64().expect("offset"))
        .collect();
    assert!(offsets.len() >= 3, "{offsets:?}");
    assert!(offsets.len() <= 17, "at most one per interval: {offsets:?}");
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    assert!(offsets.iter().all(|o| *o <= data.len() as u64));
    let p = all
        .iter()
        .find(|d| d["type"] == "upload.progress")
        .expect("progress");
    assert_eq!(p["data"]["length"], data.len());
    assert_eq!(p["data"]["protocol"], "tus");
    assert_eq!(p["data"]["user"], "admin");
    // Progress is best effort: not in the outbox, so not in the feed.
    let (_, v) = feed(&app, &app.token, "?limit=1000").await;
    let types: Vec<&str> = v["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(types, ["upload.created", "upload.finished"]);
}
