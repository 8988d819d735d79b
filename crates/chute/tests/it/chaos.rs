//! Issue 12, faults across nodes: two `chute serve` processes on one PostgreSQL catalog and one
//! Garage bucket, a round-robin proxy in front, and 20 resumable uploads by real clients
//! (tus-js-client and tuspy, resuming by themselves) that keep running while the test, over
//! and over, kills a node with SIGKILL, restarts PostgreSQL, restarts Garage, cuts connections
//! in the middle of PATCHes and fills a node's disk. Every upload must finish with the right
//! sha256, no client may ever be told less than it was acknowledged, and once `chute gc` has
//! run nothing may be left in the bucket but the catalog's files.
//!
//! It takes a minute or two and starts its own PostgreSQL and Garage (it restarts them), so it
//! runs once, on its own, from scripts/test.sh (`--ignored chaos`), not in each of the three
//! passes of the suite.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;
use crate::postgres::Postgres;
use crate::s3::Garage;

/// Bytes a second the proxy lets through towards the nodes, all connections together: slow
/// enough that the uploads are still running when the last fault comes.
const RATE: f64 = 4.0 * 1024.0 * 1024.0;
/// How long each client may take, faults included.
const CLIENT_LIMIT_SECS: u64 = 300;

/// A `chute serve` process of the deployment, restarted on the same port and data folder.
pub(crate) struct Node {
    name: &'static str,
    port: u16,
    data: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    fn new(name: &'static str, root: &Path, env: &[(String, String)]) -> Node {
        Self::at(name, root.join(name), env)
    }

    /// A node on the data folder `data`, with settings in `env` (`CHUTE_*`).
    pub(crate) fn at(name: &'static str, data: PathBuf, env: &[(String, String)]) -> Node {
        Node {
            name,
            port: free_port(),
            log: data.with_extension("log"),
            data,
            env: env.to_vec(),
            child: None,
        }
    }

    /// Logs into `log` (nodes sharing one data folder each need their own).
    pub(crate) fn logging_to(mut self, log: PathBuf) -> Node {
        self.log = log;
        self
    }

    /// SIGTERM, as an orchestrator stops a node: it drains. Waits for it to exit and returns
    /// whether it exited cleanly.
    pub(crate) async fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let pid = c.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        blocking(move || c.wait())
            .await
            .map(|s| s.success())
            .unwrap_or(false)
    }

    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the node and waits until it listens. Returns the token it printed, if it
    /// created the first user.
    pub(crate) async fn start(&mut self) -> Option<String> {
        let before = self.log().matches("chute listening on").count();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("node log");
        let child = Command::new(env!("CARGO_BIN_EXE_chute"))
            .args(["serve", "--listen", &self.addr().to_string(), "--data-dir"])
            .arg(&self.data)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("CHUTE_LOG", "warn")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn chute serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            if log.matches("chute listening on").count() > before {
                return log
                    .lines()
                    .find(|l| l.starts_with("chute_"))
                    .map(str::to_string);
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("node {} exited on start ({status}):\n{log}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not start:\n{log}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown of any kind.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Spreads a global byte rate over every connection: each piece waits for its turn.
pub(crate) struct Limiter {
    start: Instant,
    next: Mutex<Duration>,
}

impl Limiter {
    async fn take(&self, n: usize) {
        let at = {
            let mut next = self.next.lock().expect("limiter");
            let t = (*next).max(self.start.elapsed());
            *next = t + Duration::from_secs_f64(n as f64 / RATE);
            t
        };
        tokio::time::sleep_until((self.start + at).into()).await;
    }
}

/// A proxied connection: how to drop it, and when (ms after the proxy's start) it last sent
/// client bytes on.
type Conn = (tokio::task::AbortHandle, Arc<AtomicU64>);

/// A round-robin TCP proxy in front of the nodes: a new connection goes to the next node that
/// accepts it (a dead node is passed over), client bytes flow at `RATE` in all, and
/// `cut_sending` drops every connection that is in the middle of sending a body.
pub(crate) struct Proxy {
    pub(crate) addr: std::net::SocketAddr,
    conns: Arc<Mutex<HashMap<u64, Conn>>>,
    start: Instant,
}

impl Proxy {
    pub(crate) async fn start(nodes: Vec<std::net::SocketAddr>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let start = Instant::now();
        let conns: Arc<Mutex<HashMap<_, _>>> = Arc::default();
        let limiter = Arc::new(Limiter {
            start,
            next: Mutex::new(Duration::ZERO),
        });
        let registry = conns.clone();
        tokio::spawn(async move {
            let mut next = 0usize;
            let mut id = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                let mut server = None;
                for i in 0..nodes.len() {
                    let n = nodes[(next + i) % nodes.len()];
                    let c = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(n));
                    if let Ok(Ok(s)) = c.await {
                        server = Some(s);
                        break;
                    }
                }
                next += 1;
                let Some(server) = server else { continue };
                id += 1;
                let last = Arc::new(AtomicU64::new(0));
                let task = tokio::spawn(pump(client, server, limiter.clone(), last.clone()));
                let mut r = registry.lock().expect("registry");
                r.retain(|_, (h, _): &mut Conn| !h.is_finished());
                r.insert(id, (task.abort_handle(), last));
            }
        });
        Proxy { addr, conns, start }
    }

    /// Drops the connections that sent body bytes in the last 200 ms. Returns how many.
    pub(crate) fn cut_sending(&self) -> usize {
        let now = self.start.elapsed().as_millis() as u64;
        let mut r = self.conns.lock().expect("registry");
        let mut cut = 0;
        r.retain(|_, (h, last)| {
            let sending = now.saturating_sub(last.load(Ordering::Relaxed)) < 200;
            if sending && !h.is_finished() {
                h.abort();
                cut += 1;
            }
            !sending
        });
        cut
    }
}

async fn pump(client: TcpStream, server: TcpStream, limiter: Arc<Limiter>, last: Arc<AtomicU64>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            limiter.take(n).await;
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            last.store(
                limiter.start.elapsed().as_millis() as u64,
                Ordering::Relaxed,
            );
        }
        let _ = sw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

/// Runs `chute` (the CLI) against the deployment's catalog and bucket.
fn cli(env: &[(String, String)], data: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_chute"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run chute");
    assert!(
        out.status.success(),
        "chute {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One upload: who sends it, as whom, and what.
struct Upload {
    client: &'static str,
    user: usize,
    name: String,
    data: Vec<u8>,
    chunk: usize,
}

fn e2e() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../e2e"))
}

fn spawn_client(u: &Upload, endpoint: &str, token: &str, file: &Path) -> tokio::process::Child {
    let mut c = if u.client == "node" {
        let mut c = tokio::process::Command::new("node");
        c.arg("chaos-tus-js.mjs");
        c
    } else {
        let mut c = tokio::process::Command::new(e2e().join(".venv/bin/python"));
        c.arg("chaos_tuspy.py");
        c
    };
    c.current_dir(e2e())
        .args([endpoint, token])
        .arg(file)
        .args([
            u.chunk.to_string(),
            u.name.clone(),
            CLIENT_LIMIT_SECS.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{} must be installed (scripts/setup-e2e.sh): {e}", u.client))
}

/// Fills the file system under `dir` (a tmpfs) to the last byte; returns the filler.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let block = vec![0u8; 1 << 20];
    while f.write_all(&block).is_ok() {}
    let mut small = [0u8; 4096];
    while f.write_all(&small[..]).is_ok() {}
    small[0] = 1;
    let _ = f.write_all(&small[..1]);
    let _ = f.sync_all();
    path
}

async fn post_form(
    node: std::net::SocketAddr,
    token: &str,
    name: &str,
    data: &[u8],
) -> (u16, Value) {
    form_upload_to(&format!("http://{node}"), token, name, data).await
}

/// A full disk on a node: a form upload through it (spilled to its temp folder) is refused
/// with 507 `insufficient_storage` and leaves nothing; once there is room again the same
/// upload succeeds. Returns the stored form's name and bytes.
async fn full_disk(node: &Node, token: &str, round: usize) -> (String, Vec<u8>) {
    let filler = fill(&node.data);
    let data = bytes(4 << 20, 500 + round as u64);
    let name = format!("form-{round}.bin");
    let (status, v) = post_form(node.addr(), token, &name, &data).await;
    assert_eq!(status, 507, "a full disk on node {}: {v}", node.name);
    assert_eq!(v["code"], "insufficient_storage", "{v}");
    std::fs::remove_file(&filler).expect("free the disk");
    let (status, v) = post_form(node.addr(), token, &name, &data).await;
    assert_eq!(status, 201, "room again on node {}: {v}", node.name);
    (name, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "scripts/test.sh runs it once, on its own: cargo test --test it -- --ignored chaos"]
async fn uploads_survive_killed_nodes_restarted_servers_cut_connections_and_full_disks() {
    let mut pg = Postgres::start().await;
    let mut garage = Garage::start().await;
    let db = pg.database("chaos").await;
    let mut env: Vec<(String, String)> = s3_settings(&garage.endpoint(), "chaos/")
        .iter()
        .map(|(k, v)| (format!("CHUTE_{}", k.to_ascii_uppercase()), v.clone()))
        .collect();
    env.push(("CHUTE_DATABASE_URL".into(), db.clone()));
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes = [
        Node::new("a", root.path(), &env),
        Node::new("b", root.path(), &env),
    ];
    // Each node's data folder (its temp files: spilled form uploads) is a disk of its own.
    let _disks: Vec<Tmpfs> = nodes.iter().map(|n| Tmpfs::mount(&n.data, "48m")).collect();
    nodes[0]
        .start()
        .await
        .expect("the first start prints a token");
    assert!(nodes[1].start().await.is_none(), "one first user");

    // Four users, five uploads each (per-user limits are per node: after a node dies, one
    // node carries everyone).
    let tokens: Vec<String> = (0..4)
        .map(|i| {
            let name = format!("user{i}");
            cli(&env, &nodes[0].data, &["user", "add", &name]);
            cli(&env, &nodes[0].data, &["token", "create", "--user", &name])
        })
        .collect();
    let files = tempfile::tempdir().expect("files");
    let uploads: Vec<Upload> = (0..20)
        .map(|i| {
            let (client, chunk) = match i % 4 {
                0 => ("node", 1 << 20),
                1 => ("python", 512 << 10),
                2 => ("node", 0), // one PATCH for the whole file
                _ => ("python", 2 << 20),
            };
            let size = (6 << 20) + (i % 5) * (1 << 20) + i * 7919;
            Upload {
                client,
                user: i % 4,
                name: format!("chaos-{i}.bin"),
                data: bytes(size, 1000 + i as u64),
                chunk,
            }
        })
        .collect();
    let total: usize = uploads.iter().map(|u| u.data.len()).sum();

    let proxy = Proxy::start(nodes.iter().map(Node::addr).collect()).await;
    let endpoint = format!("http://{}/tus/", proxy.addr);
    let running = Arc::new(AtomicUsize::new(uploads.len()));
    let mut outcomes = Vec::new();
    for u in &uploads {
        let file = files.path().join(&u.name);
        std::fs::write(&file, &u.data).expect("write");
        let child = spawn_client(u, &endpoint, &tokens[u.user], &file);
        let running = running.clone();
        outcomes.push(tokio::spawn(async move {
            let out = child.wait_with_output().await.expect("client");
            running.fetch_sub(1, Ordering::SeqCst);
            out
        }));
    }
    eprintln!(
        "chaos: {} uploads, {} MiB at most {} MiB/s through the proxy",
        uploads.len(),
        total >> 20,
        RATE as usize >> 20
    );

    // The faults, one after another, each while uploads are running.
    let t0 = Instant::now();
    let mut forms = Vec::new();
    let mut cuts = 0;
    let schedule = [
        "cut", "kill a", "postgres", "disk b", "garage", "kill b", "cut", "postgres", "kill a",
        "garage", "disk a", "cut", "kill b",
    ];
    for (round, fault) in schedule.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let left = running.load(Ordering::SeqCst);
        assert!(
            left > 0,
            "every upload finished before fault {round} ({fault}): the faults must come while \
             uploads run (lower RATE)"
        );
        eprintln!(
            "chaos: {:>5.1}s {fault} ({left} uploads running)",
            t0.elapsed().as_secs_f64()
        );
        match *fault {
            "cut" => {
                let n = proxy.cut_sending();
                assert!(n > 0, "a cut found connections sending");
                cuts += n;
            }
            "kill a" | "kill b" => {
                let node = &mut nodes[usize::from(*fault == "kill b")];
                node.kill9();
                tokio::time::sleep(Duration::from_millis(1500)).await;
                node.start().await;
            }
            "postgres" => pg.restart().await,
            "garage" => garage.restart().await,
            "disk a" | "disk b" => {
                let node = &nodes[usize::from(*fault == "disk b")];
                forms.push(full_disk(node, &tokens[0], round).await);
            }
            _ => unreachable!(),
        }
    }
    eprintln!(
        "chaos: faults done at {:.1}s ({cuts} connections cut); waiting for the uploads",
        t0.elapsed().as_secs_f64()
    );

    // Every client finished by itself, and was never told less than it had been acknowledged.
    let mut retries = 0;
    for (u, o) in uploads.iter().zip(outcomes) {
        let out = o.await.expect("client task");
        assert!(
            out.status.success(),
            "{} ({}) failed: {}{}",
            u.name,
            u.client,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("client JSON");
        assert_eq!(v["violations"], serde_json::json!([]), "{}: {v}", u.name);
        retries += v["retries"].as_u64().unwrap_or(0);
    }
    eprintln!(
        "chaos: all uploads finished at {:.1}s, after {retries} client retries",
        t0.elapsed().as_secs_f64()
    );

    // Each is one file with the right bytes, read back through the proxy (either node).
    let http = reqwest::Client::new();
    let list = |token: String| {
        let http = http.clone();
        let url = format!("http://{}/api/files?limit=1000", proxy.addr);
        async move {
            let res = http.get(url).bearer_auth(token).send().await.expect("list");
            assert_eq!(res.status(), 200);
            let v: Value = res.json().await.expect("json");
            v["files"].as_array().cloned().unwrap_or_default()
        }
    };
    let mut want: BTreeMap<(usize, String), &[u8]> = uploads
        .iter()
        .map(|u| ((u.user, u.name.clone()), u.data.as_slice()))
        .collect();
    for (name, data) in &forms {
        want.insert((0, name.clone()), data);
    }
    let mut ids = BTreeSet::new();
    for (user, token) in tokens.iter().enumerate() {
        let listed = list(token.clone()).await;
        let names: Vec<&str> = listed.iter().filter_map(|f| f["name"].as_str()).collect();
        let expected: Vec<&str> = want
            .keys()
            .filter(|(u, _)| *u == user)
            .map(|(_, n)| n.as_str())
            .collect();
        assert_eq!(
            names.iter().copied().collect::<BTreeSet<_>>(),
            expected.iter().copied().collect::<BTreeSet<_>>(),
            "user{user}'s files"
        );
        assert_eq!(
            names.len(),
            expected.len(),
            "one file per upload: {names:?}"
        );
        for f in &listed {
            let name = f["name"].as_str().expect("name");
            let data = want[&(user, name.to_string())];
            assert_eq!(f["size"], data.len(), "{name}");
            assert_eq!(f["checksums"]["sha256"], sha256_hex(data), "{name}");
            let id = f["id"].as_str().expect("id");
            let res = http
                .get(format!("http://{}/api/files/{id}", proxy.addr))
                .bearer_auth(token)
                .send()
                .await
                .expect("download");
            assert_eq!(res.status(), 200);
            let got = res.bytes().await.expect("bytes");
            assert_eq!(sha256_hex(&got), sha256_hex(data), "{name} read back");
            ids.insert(id.to_string());
        }
    }

    // `chute gc`, then nothing stranded: the bucket holds the catalog's files and the staged
    // bytes of uploads still open (a creation whose answer a fault cut off: the client made
    // another), and no temp file is left on either node.
    cli(&env, &nodes[0].data, &["gc"]);
    let mut c = sqlx::PgConnection::connect(&db).await.expect("catalog");
    let keys: Vec<(String,)> = sqlx::query_as("SELECT storage_key FROM files")
        .fetch_all(&mut c)
        .await
        .expect("files");
    let open: Vec<(String, i64)> =
        sqlx::query_as("SELECT staging_key, \"offset\" FROM uploads WHERE state = 'active'")
            .fetch_all(&mut c)
            .await
            .expect("uploads");
    assert_eq!(keys.len(), want.len(), "one catalog file per upload");
    let objects: BTreeSet<String> = list_bucket(&garage.endpoint(), "chaos/objects/")
        .into_iter()
        .map(|(k, _)| k.display().to_string())
        .collect();
    let catalog: BTreeSet<String> = keys
        .iter()
        .map(|(k,)| format!("chaos/objects/{k}"))
        .collect();
    assert_eq!(
        objects, catalog,
        "the bucket's objects are the catalog's files"
    );
    let staged = list_bucket(&garage.endpoint(), "chaos/staging/");
    for (key, _) in &staged {
        let k = key.display().to_string();
        assert!(
            open.iter()
                .any(|(s, _)| k.starts_with(&format!("chaos/staging/{s}/"))),
            "{k} belongs to no open upload (open: {open:?})"
        );
    }
    eprintln!(
        "chaos: {} files, {} open upload(s) left by lost creation answers ({} staged segments)",
        keys.len(),
        open.len(),
        staged.len()
    );
    for n in &nodes {
        let mut left = Vec::new();
        walk(&n.data, &mut left);
        assert!(left.is_empty(), "node {} left {left:?}", n.name);
    }
    assert_eq!(ids.len(), want.len(), "a file id per upload");
}
