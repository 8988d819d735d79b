//! spawn_app() and raw-HTTP helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chute::config::Settings;
use chute::http::AppState;
use sha2::{Digest, Sha256};

pub struct TestApp {
    pub addr: SocketAddr,
    pub token: String,
    pub dir: tempfile::TempDir,
    /// The data folder (inside `dir` unless the test gave one, as nodes sharing storage do).
    pub data: PathBuf,
    /// The PostgreSQL catalog, when the app runs on one (else SQLite in the data folder).
    pub database_url: Option<String>,
    /// The S3 endpoint and key prefix, when the app stores into the test bucket.
    pub s3: Option<(String, String)>,
    pub state: AppState,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestApp {
    /// Sends the server its shutdown signal, as SIGTERM does to `chute serve`: it drains.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits until the server has drained and stopped.
    pub async fn stopped(&mut self) {
        if let Some(h) = self.served.take() {
            h.await.expect("the server task");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.clone()
    }

    /// The arguments that point the `chute` binary at this app's data folder and catalog, as
    /// an operator on the same machine runs it beside the server.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = vec![
            "--data-dir".to_string(),
            self.data_dir().display().to_string(),
        ];
        if let Some(url) = &self.database_url {
            args.extend(["--database-url".to_string(), url.clone()]);
        }
        if let Some((endpoint, prefix)) = &self.s3 {
            for (flag, value) in s3_settings(endpoint, prefix) {
                args.extend([format!("--{}", flag.replace('_', "-")), value]);
            }
        }
        args
    }

    /// `cli_args` as `CHUTE_*` variables, with the data folder left out (for `chute serve`
    /// processes on this app's catalog and storage).
    pub fn cli_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(url) = &self.database_url {
            env.push(("CHUTE_DATABASE_URL".to_string(), url.clone()));
        }
        if let Some((endpoint, prefix)) = &self.s3 {
            for (name, value) in s3_settings(endpoint, prefix) {
                env.push((format!("CHUTE_{}", name.to_ascii_uppercase()), value));
            }
        }
        env
    }

    /// Creates another user and returns a token of theirs.
    pub async fn user(&self, name: &str) -> String {
        let meta = self.state.engine.meta.as_ref();
        let u = meta.create_user(name, false).await.expect("user");
        chute::auth::issue_token(meta, &u, "test")
            .await
            .expect("token")
    }

    pub fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        rb.bearer_auth(&self.token)
    }

    pub async fn list(&self, token: &str) -> Vec<serde_json::Value> {
        let res = self
            .client
            .get(self.url("/api/files?limit=1000"))
            .bearer_auth(token)
            .send()
            .await
            .expect("list");
        assert_eq!(res.status(), 200);
        let v: serde_json::Value = res.json().await.expect("json");
        v["files"].as_array().cloned().unwrap_or_default()
    }

    /// The text of `GET /metrics`, scraped with `token` (the server's `metrics_token`), after
    /// checking that it answered 200 with Prometheus's text format.
    pub async fn metrics(&self, token: &str) -> String {
        let res = self
            .client
            .get(self.url("/metrics"))
            .bearer_auth(token)
            .send()
            .await
            .expect("scrape");
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        res.text().await.expect("text")
    }

    pub async fn download(&self, id: &str) -> Vec<u8> {
        let res = self
            .auth(self.client.get(self.url(&format!("/api/files/{id}"))))
            .send()
            .await
            .expect("download");
        assert_eq!(res.status(), 200);
        res.bytes().await.expect("bytes").to_vec()
    }

    /// Files left in temp and staging folders, and staged segments left in the bucket when
    /// the app stores there (there should be none between uploads).
    pub fn leftovers(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in ["tmp", "files/staging"] {
            walk(&self.data_dir().join(d), &mut out);
        }
        if let Some((endpoint, prefix)) = &self.s3 {
            let staged = list_bucket(endpoint, &format!("{prefix}staging/"));
            out.extend(staged.into_iter().map(|(key, _)| key));
        }
        out
    }

    /// The stored files' objects (in the data folder, or in the bucket).
    pub fn stored_objects(&self) -> Vec<PathBuf> {
        self.stored_sizes().into_iter().map(|(p, _)| p).collect()
    }

    /// The stored files' objects with their sizes in bytes.
    pub fn stored_sizes(&self) -> Vec<(PathBuf, u64)> {
        if let Some((endpoint, prefix)) = &self.s3 {
            return list_bucket(endpoint, &format!("{prefix}objects/"));
        }
        let mut out = Vec::new();
        walk(&self.data_dir().join("files/objects"), &mut out);
        out.into_iter()
            .map(|p| {
                let len = std::fs::metadata(&p).expect("stored object").len();
                (p, len)
            })
            .collect()
    }
}

/// The bucket and key of scripts/garage-test.sh's Garage.
pub const S3_BUCKET: &str = "chute-test";
pub const S3_KEY_ID: &str = "GK0123456789abcdef01234567";
pub const S3_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The keys under `prefix` in the test bucket, with their sizes. Listed on a thread with a
/// runtime of its own, so that synchronous test helpers can call it from a test's runtime.
pub fn list_bucket(endpoint: &str, prefix: &str) -> Vec<(PathBuf, u64)> {
    let (endpoint, prefix) = (endpoint.to_string(), prefix.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
            let conf = aws_sdk_s3::config::Builder::new()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("garage"))
                .credentials_provider(Credentials::new(S3_KEY_ID, S3_SECRET, None, None, "t"))
                .force_path_style(true)
                .endpoint_url(endpoint)
                .build();
            let client = aws_sdk_s3::Client::from_conf(conf);
            let mut out = Vec::new();
            let mut pages = client
                .list_objects_v2()
                .bucket(S3_BUCKET)
                .prefix(&prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for o in page.expect("list the test bucket").contents() {
                    if let Some(key) = o.key() {
                        out.push((PathBuf::from(key), o.size().unwrap_or(0).max(0) as u64));
                    }
                }
            }
            out
        })
    })
    .join()
    .expect("listing thread")
}

/// With `CHUTE_TEST_S3` set (the S3 endpoint of a Garage started by scripts/garage-test.sh,
/// as scripts/test.sh sets it for its third pass), every app stores into the test bucket
/// under a prefix of its own, shared by nodes that share a data folder: the whole suite then
/// runs on S3 storage. An app that chose its storage keeps it, and so does one serving by
/// X-Accel-Redirect (local files only, by design).
fn test_storage(flags: &mut BTreeMap<String, String>, data: &Path) -> Option<(String, String)> {
    let endpoint = std::env::var("CHUTE_TEST_S3").ok()?;
    if flags.contains_key("storage_url")
        || flags.get("serve_mode").map(String::as_str) == Some("x-accel-redirect")
    {
        return None;
    }
    let prefix = format!(
        "t{}/",
        &sha256_hex(data.display().to_string().as_bytes())[..24]
    );
    for (k, v) in s3_settings(&endpoint, &prefix) {
        flags.insert(k.into(), v);
    }
    Some((endpoint, prefix))
}

/// The settings that store into the test bucket under `prefix`.
pub fn s3_settings(endpoint: &str, prefix: &str) -> [(&'static str, String); 6] {
    [
        ("storage_url", format!("s3://{S3_BUCKET}/{prefix}")),
        ("s3_endpoint", endpoint.to_string()),
        ("s3_region", "garage".into()),
        ("s3_access_key_id", S3_KEY_ID.into()),
        ("s3_secret_access_key", S3_SECRET.into()),
        ("s3_path_style", "true".into()),
    ]
}

pub fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if !p.ends_with(".healthz") {
            out.push(p);
        }
    }
}

/// Starts chute in-process on 127.0.0.1:0 with the given settings (name -> value).
pub async fn spawn_app(settings: &[(&str, &str)]) -> TestApp {
    spawn_app_with(settings, |s| s).await
}

pub async fn spawn_app_with(
    settings: &[(&str, &str)],
    customize: impl FnOnce(AppState) -> AppState,
) -> TestApp {
    spawn_app_full(settings, customize, None).await
}

/// Starts chute with routes of the test's own merged in (pages for browser tests).
pub async fn spawn_app_full(
    settings: &[(&str, &str)],
    customize: impl FnOnce(AppState) -> AppState,
    extra: Option<axum::Router>,
) -> TestApp {
    start(settings, customize, extra, None).await
}

/// Starts one more node of a deployment: the same `database_url` and `data_dir` settings as
/// the first node (whose token, made on the first start, is given) mean a shared catalog and
/// storage.
pub async fn spawn_node(settings: &[(&str, &str)], token: &str) -> TestApp {
    start(settings, |s| s, None, Some(token)).await
}

/// With `CHUTE_TEST_LOG` set (scripts/test.sh sets it for each pass), every in-process
/// server of the suite logs into that file as JSON, chute's own lines down to debug, and
/// scripts/check-logs.sh then searches the whole pass's log for secrets.
fn init_suite_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(path) = std::env::var("CHUTE_TEST_LOG") else {
            return;
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("CHUTE_TEST_LOG must name a writable file");
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,chute=debug"))
            .with_writer(std::sync::Mutex::new(file))
            .init();
    });
}

async fn start(
    settings: &[(&str, &str)],
    customize: impl FnOnce(AppState) -> AppState,
    extra: Option<axum::Router>,
    token: Option<&str>,
) -> TestApp {
    init_suite_log();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut flags: BTreeMap<String, String> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let data = PathBuf::from(
        flags
            .entry("data_dir".into())
            .or_insert_with(|| dir.path().join("data").display().to_string())
            .clone(),
    );
    if !flags.contains_key("database_url")
        && let Some(url) = test_database().await
    {
        flags.insert("database_url".into(), url);
    }
    let database_url = flags.get("database_url").cloned();
    let s3 = test_storage(&mut flags, &data);
    let missing = dir.path().join("no-config.toml");
    std::fs::write(&missing, "").expect("config");
    let s = Settings::load(Some(&missing), Vec::new(), flags).expect("settings");
    let state = customize(chute::app::open_state(s).await.expect("state"));
    let made = chute::app::bootstrap_admin(state.engine.meta.as_ref())
        .await
        .expect("bootstrap");
    let token = match token {
        Some(t) => {
            assert!(made.is_none(), "a later node finds the users of the first");
            t.to_string()
        }
        None => made.expect("first start makes a token"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    let mut router = chute::http::router(state.clone());
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    let served = tokio::spawn(async move {
        chute::app::serve_app(listener, st, router, async {
            let _ = rx.await;
        })
        .await
        .expect("serve");
    });
    TestApp {
        addr,
        token,
        dir,
        data,
        database_url,
        s3,
        state,
        client: reqwest::Client::new(),
        shutdown: Some(tx),
        served: Some(served),
    }
}

/// With `CHUTE_TEST_POSTGRES` set (a server URL without a database, as scripts/test.sh sets
/// it for its second pass), every app gets a new database on that server: the whole suite
/// then runs on the PostgreSQL catalog.
async fn test_database() -> Option<String> {
    use sqlx::Connection;
    let base = std::env::var("CHUTE_TEST_POSTGRES").ok()?;
    let base = base.trim_end_matches('/');
    let mut c = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .expect("CHUTE_TEST_POSTGRES must reach a PostgreSQL server");
    let name = format!("t{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await
        .expect("create a test database");
    Some(format!("{base}/{name}"))
}

/// A port free on loopback right now, for a server the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One of the project's scripts (they start the real components the tests use).
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic pseudo-random bytes.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub const BOUNDARY: &str = "----chutetestboundary7MA4YWxk";

/// A multipart body from parts given as (headers, content).
pub fn multipart_body(parts: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (headers, content) in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n{headers}\r\n\r\n").as_bytes());
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

pub fn file_part(field: &str, filename: &str, content: &[u8]) -> (String, Vec<u8>) {
    (
        format!(
            "Content-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream"
        ),
        content.to_vec(),
    )
}

pub fn text_part(field: &str, value: &str) -> (String, Vec<u8>) {
    (
        format!("Content-Disposition: form-data; name=\"{field}\""),
        value.as_bytes().to_vec(),
    )
}

/// A raw HTTP/1.1 response: status, headers (lower-case names), body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends raw bytes and reads the response until the server closes or Content-Length is read.
pub fn raw_http(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let _ = s.write_all(request);
    read_response(&mut s)
}

pub fn read_response(s: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    let head_end;
    loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            head_end = i + 4;
            break;
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => panic!(
                "connection ended before a response: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: Option<usize> = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok());
    let mut body = buf[head_end..].to_vec();
    loop {
        if let Some(l) = len
            && body.len() >= l
        {
            body.truncate(l);
            break;
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&tmp[..n]),
        }
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// A POST of a multipart body with the test boundary.
pub fn post_multipart(path: &str, token: &str, body: &[u8], extra_headers: &str) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// Runs a blocking raw-HTTP exchange off the test's runtime threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// A tmpfs mounted for one test (the tests run as root, as CI does; a failed mount fails the
/// test), unmounted when dropped.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    pub fn mount(path: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            ok.success(),
            "mounting a tmpfs at {} failed",
            path.display()
        );
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A second server on `app`'s catalog and storage in read-only mode (`file_upload_enabled`
/// off), until the sender is dropped.
pub async fn read_only_twin(app: &TestApp) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let mut settings = (*app.state.engine.settings).clone();
    settings.file_upload_enabled = false;
    let mut state = app.state.clone();
    state.engine.settings = std::sync::Arc::new(settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(chute::app::serve(listener, state, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// The folder of the third-party clients and tools the tests drive (scripts/setup-e2e.sh).
pub fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e")
}

/// A form upload of one file (field `file`) to `base` (`http://host:port[/prefix]`) with
/// `token`: the status and the JSON answer.
pub async fn form_upload_to(
    base: &str,
    token: &str,
    name: &str,
    data: &[u8],
) -> (u16, serde_json::Value) {
    let res = reqwest::Client::new()
        .post(format!("{base}/api/files"))
        .bearer_auth(token)
        .multipart(reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(data.to_vec()).file_name(name.to_string()),
        ))
        .send()
        .await
        .expect("form upload");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

/// The body of a GET of `url` with `token`.
pub async fn get_bytes(url: &str, token: &str) -> Vec<u8> {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes")
        .to_vec()
}

/// Drives a page in headless Chromium with `e2e/drive.mjs` (a file set in `selector`, then
/// the page's `#status`): the process's output.
pub async fn drive_page(
    url: String,
    selector: &'static str,
    file: PathBuf,
    timeout_ms: u64,
) -> std::process::Output {
    blocking(move || {
        std::process::Command::new("node")
            .current_dir(e2e_dir())
            .args(["drive.mjs", &url, selector])
            .arg(&file)
            .arg(timeout_ms.to_string())
            .output()
            .expect("node must be installed (scripts/setup-e2e.sh)")
    })
    .await
}
