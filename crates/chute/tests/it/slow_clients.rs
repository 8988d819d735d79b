//! Issue 12: no slow client can starve the server. Hundreds of uploads that trickle a byte
//! every two seconds and a thousand idle keep-alive connections, against the real `chute
//! serve` process: meanwhile `/healthz` answers, and another user's upload and download
//! finish whole. (The full counts, 2,000 and 10,000, run in bench/slow_clients.sh.)

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::slow_load::*;

/// `chute serve` on a free port; its address, first token and process.
fn serve(data: &std::path::Path, extra: &[&str]) -> (SocketAddr, String, Server) {
    let child = Command::new(env!("CARGO_BIN_EXE_chute"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .env("CHUTE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chute serve");
    let mut server = Server(child);
    let mut out = BufReader::new(server.0.stdout.take().expect("stdout"));
    let mut token = None;
    loop {
        let mut l = String::new();
        assert!(
            out.read_line(&mut l).expect("read") > 0,
            "serve ended early"
        );
        let l = l.trim();
        if l.starts_with("chute_") {
            token = Some(l.to_string());
        }
        if let Some(a) = l.strip_prefix("chute listening on http://") {
            let addr = a.parse().expect("address");
            return (addr, token.expect("a first token"), server);
        }
    }
}

/// Kills the server when the test ends, however it ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_and_idle_connections_starve_no_one() {
    // This process holds the clients' ends of about 1,700 connections.
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("raise the open files limit");
    assert!(limit >= 4096, "the open files limit is {limit}");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // One user may hold many uploads in flight here: the test is about threads, not about
    // the per-user admission (tested elsewhere).
    let (addr, token, server) = serve(&data, &["--max-concurrent-uploads-per-user", "100000"]);
    let out = Command::new(env!("CARGO_BIN_EXE_chute"))
        .args(["--data-dir"])
        .arg(&data)
        .args(["user", "add", "normal"])
        .output()
        .expect("user add");
    assert!(out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_chute"))
        .args(["--data-dir"])
        .arg(&data)
        .args(["token", "create", "--user", "normal"])
        .output()
        .expect("token");
    let normal = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string();

    let result = blocking(move || {
        let mut trickles = Trickles::start(addr, &token, 600, 1 << 20).expect("trickling PATCHes");
        let idle = idle_connections(addr, 1000).expect("idle connections");
        let big = bytes(64 << 20, 1210);
        let started = Instant::now();
        let mut worst = Duration::ZERO;
        let mut transfer = None;
        let mut next_trickle = Instant::now();
        while started.elapsed() < Duration::from_secs(12) {
            if Instant::now() >= next_trickle {
                assert_eq!(
                    trickles.trickle(1),
                    trickles.len(),
                    "every PATCH is still open"
                );
                next_trickle += Duration::from_secs(2);
            }
            let took = healthz(addr, Duration::from_secs(5)).expect("healthz answers within 5 s");
            worst = worst.max(took);
            if transfer.is_none() {
                transfer = Some(upload_and_download(addr, &normal, &big).expect("64 MiB"));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        drop(idle);
        (worst, transfer, trickles.len())
    })
    .await;
    let (worst, transfer, trickling) = result;
    let (up, down, same) = transfer.expect("the transfer ran");
    assert!(
        same,
        "the 64 MiB came back with the sha256 it was sent with"
    );
    let rss = peak_rss_mib(server.0.id()).expect("the server's peak RSS");
    eprintln!(
        "{trickling} trickling PATCHes, 1000 idle connections: healthz worst {worst:?}, \
         64 MiB up {up:?}, down {down:?}, server peak RSS {rss} MiB"
    );
    assert!(rss < 512, "peak RSS {rss} MiB");
}

/// Issue 12: the in-memory part of form uploads is bounded per request. Twenty chunked-encoded
/// requests (no Content-Length, so no file goes to disk up front) of 100 files of 128 KiB,
/// at once: each request keeps at most `file_upload_max_memory_size` of its files in memory.
/// Before, each kept all of its small files (12.5 MiB a request, 250 MiB in all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_files_per_request_stay_within_the_memory_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (addr, token, server) = serve(&data, &["--max-concurrent-uploads-per-user", "100"]);
    let client = reqwest::Client::new();
    let file = bytes(128 << 10, 1211);
    let mut body = Vec::new();
    for i in 0..100 {
        let (h, c) = file_part("file", &format!("f{i}.bin"), &file);
        body.extend_from_slice(format!("--{BOUNDARY}\r\n{h}\r\n\r\n").as_bytes());
        body.extend_from_slice(&c);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    let mut requests = Vec::new();
    for _ in 0..20 {
        // Pieces from a stream: reqwest sends them chunk-encoded, with no length.
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
        requests.push(
            client
                .post(format!("http://{addr}/api/files"))
                .bearer_auth(&token)
                .header(
                    "Content-Type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
                .send(),
        );
    }
    for res in futures::future::join_all(requests).await {
        let res = res.expect("upload");
        assert_eq!(res.status(), 201);
        let v: serde_json::Value = res.json().await.expect("json");
        let files = v["files"].as_array().expect("files");
        assert_eq!(files.len(), 100);
        assert!(
            files
                .iter()
                .all(|f| f["checksums"]["sha256"] == sha256_hex(&file))
        );
    }
    let rss = peak_rss_mib(server.0.id()).expect("peak RSS");
    eprintln!("20 requests x 100 files x 128 KiB at once: server peak RSS {rss} MiB");
    assert!(rss < 128, "peak RSS {rss} MiB");
}
