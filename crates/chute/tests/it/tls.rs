//! HTTPS and HTTP/2 without a proxy: every protocol driven by `curl --http2` over TLS (the
//! certificate made by Python's `cryptography`, e2e/tls_cert.py), h2c with prior knowledge,
//! the limits held per stream (nghttp shows the server's SETTINGS), and the certificate
//! reloaded when its files change, without a restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// Makes a self-signed certificate `NAME.pem` / `NAME.key` in `dir` for `common` name.
pub(crate) fn make_cert(dir: &Path, name: &str, common: &str) -> (PathBuf, PathBuf) {
    let out = Command::new(e2e_dir().join(".venv/bin/python"))
        .arg(e2e_dir().join("tls_cert.py"))
        .arg(dir)
        .args([name, common])
        .output()
        .expect("e2e/.venv (scripts/setup-e2e.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

/// What curl got: status, body, and the HTTP version it spoke.
struct Got {
    status: u16,
    body: Vec<u8>,
    version: String,
    headers: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Runs curl with `args` (and, with `ca`, trusting that certificate) and reads what it got.
async fn curl(ca: Option<&Path>, args: Vec<String>) -> Got {
    let dir = tempfile::tempdir().expect("tempdir");
    let (body, head) = (dir.path().join("body"), dir.path().join("head"));
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "20", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&head)
        .args(["-w", "%{http_code} %{http_version}"]);
    if let Some(ca) = ca {
        c.arg("--cacert").arg(ca);
    }
    c.args(&args);
    let out = blocking(move || c.output().expect("curl")).await;
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = String::from_utf8_lossy(&out.stdout).to_string();
    let (status, version) = w.split_once(' ').expect("curl -w");
    Got {
        status: status.parse().expect("status"),
        body: std::fs::read(&body).unwrap_or_default(),
        version: version.to_string(),
        headers: std::fs::read_to_string(&head).unwrap_or_default(),
    }
}

fn s(v: &str) -> String {
    v.to_string()
}

/// The value of a response header curl saved.
fn header(got: &Got, name: &str) -> String {
    got.headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {name} in {}", got.headers))
}

async fn tls_app(extra: &[(&str, &str)]) -> (TestApp, PathBuf, tempfile::TempDir) {
    let certs = tempfile::tempdir().expect("certs");
    let (cert, key) = make_cert(certs.path(), "server", "chute-test");
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let mut settings: Vec<(&str, &str)> = vec![("tls_cert", &c), ("tls_key", &k)];
    settings.extend_from_slice(extra);
    let app = spawn_app(&settings).await;
    (app, cert, certs)
}

/// `curl --http2` with the app's token, against paths of `base`.
struct Curl2<'a> {
    ca: &'a Path,
    auth: String,
    base: String,
}

impl Curl2<'_> {
    async fn run(&self, args: &[&str], path: &str) -> Got {
        let mut v = vec![s("--http2"), s("-H"), self.auth.clone()];
        v.extend(args.iter().map(|a| a.to_string()));
        v.push(format!("{}{path}", self.base));
        curl(Some(self.ca), v).await
    }

    /// As `run`; the answer must be `status`, over HTTP/2.
    async fn ok(&self, status: u16, args: &[&str], path: &str) -> Got {
        let got = self.run(args, path).await;
        assert_eq!(
            (got.status, got.version.as_str()),
            (status, "2"),
            "{path}: {}",
            String::from_utf8_lossy(&got.body)
        );
        got
    }
}

#[tokio::test]
async fn every_protocol_works_over_http2_with_tls() {
    let (app, ca, _certs) = tls_app(&[]).await;
    let base = format!("https://127.0.0.1:{}", app.addr.port());
    let c = Curl2 {
        ca: &ca,
        auth: format!("Authorization: Bearer {}", app.token),
        base: base.clone(),
    };
    let dir = tempfile::tempdir().expect("files");
    let put = |name: &str, data: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, data).expect("write");
        p.display().to_string()
    };

    // A form upload.
    let form = bytes(300_000, 21);
    let f = format!("file=@{}", put("form.bin", &form));
    let got = c.ok(201, &["-F", &f], "/api/files").await;
    assert_eq!(
        got.json()["files"][0]["checksums"]["sha256"],
        sha256_hex(&form)
    );

    // tus: creation, two PATCHes, HEAD.
    let tus = bytes(500_000, 22);
    let tus_h = ["-H", "Tus-Resumable: 1.0.0"];
    let length = format!("Upload-Length: {}", tus.len());
    let meta = "Upload-Metadata: filename dHVzLmJpbg==";
    let got = c
        .ok(
            201,
            &[&tus_h[..], &["-X", "POST", "-H", &length, "-H", meta]].concat(),
            "/tus/",
        )
        .await;
    let location = header(&got, "location");
    for (from, to) in [(0, 200_000), (200_000, tus.len())] {
        let part = format!("@{}", put(&format!("tus-{from}"), &tus[from..to]));
        let offset = format!("Upload-Offset: {from}");
        let args = [
            &tus_h[..],
            &[
                "-X",
                "PATCH",
                "-H",
                &offset,
                "-H",
                "Content-Type: application/offset+octet-stream",
            ],
            &["--data-binary", &part],
        ]
        .concat();
        let got = c.ok(204, &args, &location).await;
        assert_eq!(header(&got, "upload-offset"), to.to_string());
    }
    let got = c.ok(200, &[&tus_h[..], &["-I"]].concat(), &location).await;
    assert_eq!(header(&got, "upload-offset"), tus.len().to_string());

    // The IETF draft: everything in its creation request.
    let draft = bytes(100_000, 23);
    let d = format!("@{}", put("draft.bin", &draft));
    let disposition = "Content-Disposition: attachment; filename=\"draft.bin\"";
    let got = c
        .run(
            &[
                "-H",
                "Upload-Complete: ?1",
                "-H",
                disposition,
                "--data-binary",
                &d,
            ],
            "/resumable/",
        )
        .await;
    assert!(
        matches!(got.status, 200 | 201),
        "{}: {}",
        got.status,
        String::from_utf8_lossy(&got.body)
    );
    assert_eq!(got.version, "2");

    // The chunked protocol: two chunks, then completion with the md5.
    let chunked = bytes(150_000, 24);
    let c1 = format!(
        "file=@{};filename=chunked.bin",
        put("c1", &chunked[..100_000])
    );
    let range = format!("Content-Range: bytes 0-99999/{}", chunked.len());
    let got = c
        .ok(200, &["-H", &range, "-F", &c1], "/api/chunked_upload/")
        .await;
    let id = got.json()["upload_id"]
        .as_str()
        .expect("upload_id")
        .to_string();
    let c2 = format!(
        "file=@{};filename=chunked.bin",
        put("c2", &chunked[100_000..])
    );
    let range = format!(
        "Content-Range: bytes 100000-{}/{}",
        chunked.len() - 1,
        chunked.len()
    );
    let uid = format!("upload_id={id}");
    c.ok(
        200,
        &["-H", &range, "-F", &uid, "-F", &c2],
        "/api/chunked_upload/",
    )
    .await;
    let md5 = {
        use md5::Digest as _;
        hex::encode(md5::Md5::digest(&chunked))
    };
    let done = format!("upload_id={id}&md5={md5}");
    c.ok(200, &["-d", &done], "/api/chunked_upload_complete/")
        .await;

    // An upload session: open, add a file, store.
    let got = c.ok(201, &["-X", "POST"], "/upload-session/").await;
    let token = got.json()["uploadSessionToken"]
        .as_str()
        .expect("token")
        .to_string();
    let txt = b"a note for the archivist\n".repeat(100);
    let t = format!("file=@{}", put("note.txt", &txt));
    c.ok(200, &["-F", &t], &format!("/upload-session/{token}/files/"))
        .await;
    c.ok(
        200,
        &["-X", "POST"],
        &format!("/upload-session/{token}/store/"),
    )
    .await;

    // Every byte, as stored.
    let stored: std::collections::BTreeSet<String> =
        stored_sha256(&app).await.into_values().collect();
    for (what, data) in [
        ("form", &form),
        ("tus", &tus),
        ("draft", &draft),
        ("chunked", &chunked),
        ("session", &txt),
    ] {
        assert!(
            stored.contains(&sha256_hex(data)),
            "{what} is not stored intact"
        );
    }
    // A client without the certificate is refused by its own check, as it should be.
    let url = format!("{base}/healthz");
    let out = blocking(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "20", "-o", "/dev/null", &url])
            .output()
            .expect("curl")
    })
    .await;
    assert!(!out.status.success());
}

#[tokio::test]
async fn h2c_with_prior_knowledge_and_http1_share_the_plain_port() {
    let app = spawn_app(&[]).await;
    let dir = tempfile::tempdir().expect("files");
    let data = bytes(200_000, 25);
    let f = dir.path().join("h2c.bin");
    std::fs::write(&f, &data).expect("write");
    let auth = format!("Authorization: Bearer {}", app.token);
    let got = curl(
        None,
        vec![
            s("--http2-prior-knowledge"),
            s("-H"),
            auth.clone(),
            s("-F"),
            format!("file=@{}", f.display()),
            app.url("/api/files"),
        ],
    )
    .await;
    assert_eq!((got.status, got.version.as_str()), (201, "2"));
    assert_eq!(
        got.json()["files"][0]["checksums"]["sha256"],
        sha256_hex(&data)
    );
    let got = curl(
        None,
        vec![s("--http1.1"), s("-H"), auth, app.url("/api/files")],
    )
    .await;
    assert_eq!((got.status, got.version.as_str()), (200, "1.1"));
}

#[tokio::test]
async fn limits_hold_per_stream_and_streams_are_capped() {
    let (app, ca, _certs) = tls_app(&[
        ("http2_max_concurrent_streams", "7"),
        ("max_upload_size", "10000"),
    ])
    .await;
    let base = format!("https://127.0.0.1:{}", app.addr.port());
    // The server's SETTINGS, as nghttp2's client reads them.
    let url = format!("{base}/healthz");
    let out = blocking(move || {
        Command::new("nghttp")
            .args(["-nv", "-t", "20", &url])
            .output()
            .expect("nghttp (nghttp2-client, scripts/setup-e2e.sh)")
    })
    .await;
    let frames = String::from_utf8_lossy(&out.stdout);
    assert!(
        frames.contains("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):7"),
        "{frames}"
    );
    let c = Curl2 {
        ca: &ca,
        auth: format!("Authorization: Bearer {}", app.token),
        base,
    };
    // A body over max_upload_size, on a stream: 413 with JSON, as on HTTP/1.1.
    let dir = tempfile::tempdir().expect("files");
    let f = dir.path().join("big.bin");
    std::fs::write(&f, bytes(50_000, 26)).expect("write");
    let form = format!("file=@{}", f.display());
    let got = c.ok(413, &["-F", &form], "/api/files").await;
    assert_eq!(got.json()["code"], "too_large");
    // Headers over max_request_header_size (32 KiB): 431 with JSON.
    let big = format!("X-Big: {}", "a".repeat(40_000));
    let got = c.ok(431, &["-H", &big], "/api/files").await;
    assert_eq!(got.json()["code"], "headers_too_large");
    // The connection's other streams were not harmed.
    c.ok(200, &[], "/api/files").await;
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let certs = tempfile::tempdir().expect("certs");
    let (cert, key) = make_cert(certs.path(), "live", "first-cert");
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let app = spawn_app(&[("tls_cert", &c), ("tls_key", &k)]).await;
    let url = format!("https://127.0.0.1:{}/healthz", app.addr.port());
    let subject = |ca: PathBuf| {
        let url = url.clone();
        async move {
            let out = blocking(move || {
                Command::new("curl")
                    .args(["-sS", "-v", "-o", "/dev/null", "--cacert"])
                    .arg(&ca)
                    .arg(&url)
                    .output()
                    .expect("curl")
            })
            .await;
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        }
    };
    let (ok, log) = subject(cert.clone()).await;
    assert!(ok && log.contains("CN=first-cert"), "{log}");

    // The files are replaced (as certbot does): within a few seconds the new one is served.
    let fresh = tempfile::tempdir().expect("fresh");
    let (cert2, key2) = make_cert(fresh.path(), "live", "second-cert");
    std::fs::copy(&key2, &key).expect("key");
    std::fs::copy(&cert2, &cert).expect("cert");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, log) = subject(cert2.clone()).await;
        if ok && log.contains("CN=second-cert") {
            break;
        }
        assert!(Instant::now() < until, "still the old certificate: {log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A broken file is not taken: the renewed certificate stays in use.
    std::fs::write(&cert, "not a certificate").expect("break");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ok, log) = subject(cert2).await;
    assert!(ok && log.contains("CN=second-cert"), "{log}");
}

#[tokio::test]
async fn chromium_uploads_through_the_page_over_http2() {
    let (app, _ca, _certs) = tls_app(&[]).await;
    let base = format!("https://127.0.0.1:{}", app.addr.port());
    let file = app.dir.path().join("browser-h2.bin");
    let data = bytes(3_000_000, 27);
    std::fs::write(&file, &data).expect("write");
    let (b, token, f) = (base.clone(), app.token.clone(), file.clone());
    let out = blocking(move || {
        Command::new("node")
            .current_dir(e2e_dir())
            .arg("h2-browser.mjs")
            .args([b, token])
            .arg(f)
            .output()
            .expect("node (scripts/setup-e2e.sh)")
    })
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    assert_eq!(v["uploaded"], serde_json::json!(["browser-h2.bin"]), "{v}");
    assert_eq!(v["form"], 201, "{v}");
    // The page, its script and the tus requests all went over HTTP/2.
    let protocols = v["protocols"].as_object().expect("protocols");
    assert!(protocols.keys().any(|p| p.starts_with("/tus/")), "{v}");
    for (path, p) in protocols {
        assert_eq!(p, "h2", "{path} in {v}");
    }
    assert_eq!(
        stored_sha256(&app).await.get("browser-h2.bin"),
        Some(&sha256_hex(&data))
    );
}

/// The admin's files, name to sha256, read from the catalog (the app speaks only HTTPS).
async fn stored_sha256(app: &TestApp) -> std::collections::BTreeMap<String, String> {
    let files = app
        .state
        .engine
        .meta
        .list_files(1, None, 100)
        .await
        .expect("list");
    files
        .into_iter()
        .filter_map(|f| Some((f.name, f.sha256?)))
        .collect()
}

#[tokio::test]
async fn garbage_and_plain_http_on_the_tls_port_harm_no_one() {
    use std::io::{Read, Write};
    let (app, ca, _certs) = tls_app(&[]).await;
    let addr = app.addr;
    // Plain HTTP, random bytes, and a connection that never finishes its handshake.
    let stalled = blocking(move || {
        let mut plain = std::net::TcpStream::connect(addr).expect("connect");
        plain
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        plain
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut buf = Vec::new();
        let _ = plain.read_to_end(&mut buf);
        assert!(!buf.starts_with(b"HTTP/1.1 200"), "plain HTTP was served");
        let mut noise = std::net::TcpStream::connect(addr).expect("connect");
        let _ = noise.write_all(&bytes(4096, 28));
        std::net::TcpStream::connect(addr).expect("connect")
    })
    .await;
    // Meanwhile a real client is served.
    let c = Curl2 {
        ca: &ca,
        auth: format!("Authorization: Bearer {}", app.token),
        base: format!("https://127.0.0.1:{}", addr.port()),
    };
    c.ok(200, &[], "/api/files").await;
    drop(stalled);
}

/// One sample of a scrape.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Eight tus uploads of 1000 bytes made over `h2`, and their PATCHes sent at once on the same
/// connection, each body stalling after 10 bytes until `go` turns true. Answers each PATCH's
/// status and `code`, in the order they arrive.
async fn stalled_patches(
    app: &TestApp,
    h2: &reqwest::Client,
    go: tokio::sync::watch::Receiver<bool>,
) -> tokio::sync::mpsc::Receiver<(u16, Value, reqwest::Version)> {
    // Made first: a creation is an upload request too, counted among the user's.
    let mut locations = Vec::new();
    for _ in 0..8 {
        let res = h2
            .post(app.url("/tus/"))
            .bearer_auth(&app.token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", "1000")
            .send()
            .await
            .expect("create");
        assert_eq!(
            (res.status().as_u16(), res.version()),
            (201, reqwest::Version::HTTP_2)
        );
        let loc = res.headers()["location"]
            .to_str()
            .expect("location")
            .to_string();
        locations.push(loc);
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    for loc in locations {
        let mut go = go.clone();
        use futures::StreamExt as _;
        let body = futures::stream::once(async { Ok::<_, std::io::Error>(vec![7u8; 10]) }).chain(
            futures::stream::once(async move {
                let _ = go.wait_for(|g| *g).await;
                Ok(vec![7u8; 990])
            }),
        );
        let req = h2
            .patch(app.url(&loc))
            .bearer_auth(&app.token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Content-Length", "1000")
            .body(reqwest::Body::wrap_stream(body));
        let tx = tx.clone();
        tokio::spawn(async move {
            let res = req.send().await.expect("patch");
            let (status, version) = (res.status().as_u16(), res.version());
            let body = res.json().await.unwrap_or(Value::Null);
            let _ = tx.send((status, body, version)).await;
        });
    }
    rx
}

/// Per-user limits count requests, not connections: the streams of one HTTP/2 connection
/// carry no more upload requests at once than `max_concurrent_uploads_per_user`, and the
/// server runs no more of them than `http2_max_concurrent_streams`, the rest waiting.
#[tokio::test]
async fn per_user_limits_and_the_stream_cap_hold_on_one_http2_connection() {
    const SCRAPE: &str = "h2-limits-scrape-token";
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("h2c client");

    // Three uploads at once per user: of eight PATCHes on one connection, five are refused.
    let app = spawn_app(&[
        ("max_concurrent_uploads_per_user", "3"),
        ("metrics_token", SCRAPE),
    ])
    .await;
    let (go, wait) = tokio::sync::watch::channel(false);
    let mut answers = stalled_patches(&app, &h2, wait).await;
    for _ in 0..5 {
        let (status, body, version) = tokio::time::timeout(Duration::from_secs(10), answers.recv())
            .await
            .expect("five refusals while three stall")
            .expect("an answer");
        assert_eq!((status, version), (429, reqwest::Version::HTTP_2), "{body}");
        assert_eq!(body["code"], "too_many_uploads");
    }
    let text = app.metrics(SCRAPE).await;
    assert_eq!(gauge(&text, "chute_uploads_in_flight"), Some(3.0), "{text}");
    go.send(true).expect("go");
    for _ in 0..3 {
        let (status, _, _) = answers.recv().await.expect("an answer");
        assert_eq!(status, 204, "the three admitted finish");
    }

    // Streams capped at five, uploads not: five run, three wait for a stream, all finish.
    let app = spawn_app(&[
        ("max_concurrent_uploads_per_user", "16"),
        ("http2_max_concurrent_streams", "5"),
        ("metrics_token", SCRAPE),
    ])
    .await;
    let (go, wait) = tokio::sync::watch::channel(false);
    let mut answers = stalled_patches(&app, &h2, wait).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut running = 0.0;
    while Instant::now() < deadline && running < 5.0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        running = gauge(&app.metrics(SCRAPE).await, "chute_uploads_in_flight").unwrap_or(0.0);
    }
    assert_eq!(running, 5.0, "five streams run");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = app.metrics(SCRAPE).await;
    assert_eq!(
        gauge(&text, "chute_uploads_in_flight"),
        Some(5.0),
        "no sixth: {text}"
    );
    assert!(
        answers.try_recv().is_err(),
        "nothing answered while they stall"
    );
    go.send(true).expect("go");
    for _ in 0..8 {
        let (status, body, _) = tokio::time::timeout(Duration::from_secs(10), answers.recv())
            .await
            .expect("all finish")
            .expect("an answer");
        assert_eq!(status, 204, "{body}");
    }
    let listed = app.list(&app.token).await;
    assert_eq!(listed.len(), 8, "eight files of 1000 bytes");
    assert!(listed.iter().all(|f| f["size"] == 1000));
}
