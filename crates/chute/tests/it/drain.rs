//! A node that drains: it stops taking connections, /readyz turns 503 at once, a form upload
//! that finishes within `shutdown_grace` still gets its 201, and a resumable upload still
//! writing past the grace ends with its durable bytes kept, for the next node to finish.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// GET `url` until `want` answers (the metrics address is bound as the server starts).
async fn wait_for_status(client: &reqwest::Client, url: &str, want: u16) -> reqwest::Response {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().as_u16() == want
        {
            return r;
        }
        assert!(Instant::now() < until, "{url} never answered {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stream_to(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(body).expect("body");
    s
}

#[tokio::test]
async fn a_form_upload_within_the_grace_gets_its_201_while_the_node_drains() {
    let port = free_port();
    let ops = format!("http://127.0.0.1:{port}");
    let mut app = spawn_app(&[
        ("shutdown_grace", "20s"),
        ("metrics_listen", &format!("127.0.0.1:{port}")),
    ])
    .await;
    let client = reqwest::Client::new();
    wait_for_status(&client, &format!("{ops}/readyz"), 200).await;
    assert_eq!(
        client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .status(),
        200
    );

    // Half a form upload, then the signal.
    let data = bytes(400_000, 11);
    let body = multipart_body(&[file_part("file", "drained.bin", &data)]);
    let head = format!(
        "POST /api/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        app.token,
        body.len()
    );
    let (first, rest) = body.split_at(body.len() / 2);
    let (addr, first) = (app.addr, first.to_vec());
    let mut s = blocking(move || stream_to(addr, &head, &first)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let began = Instant::now();
    app.begin_shutdown();

    // Not ready from the start of the drain (on the address that stays up), and no new
    // connection is taken.
    let res = wait_for_status(&client, &format!("{ops}/readyz"), 503).await;
    assert!(res.headers().contains_key("retry-after"));
    let v: serde_json::Value = res.json().await.expect("json");
    assert_eq!(v["code"], "draining");
    let until = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(app.addr).is_ok() {
        assert!(Instant::now() < until, "still accepting connections");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The upload in flight finishes, and is answered.
    let rest = rest.to_vec();
    let res = blocking(move || {
        s.write_all(&rest).expect("rest");
        read_response(&mut s)
    })
    .await;
    assert_eq!(res.status, 201, "{}", String::from_utf8_lossy(&res.body));
    let v = res.json();
    assert_eq!(v["files"][0]["checksums"]["sha256"], sha256_hex(&data));
    // With nothing left in flight the node stops at once, not at the end of the grace.
    app.stopped().await;
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    let files = app
        .state
        .engine
        .meta
        .list_files(1, None, 10)
        .await
        .expect("list");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].sha256.as_deref(), Some(sha256_hex(&data).as_str()));
}

#[tokio::test]
async fn past_the_grace_a_resumable_upload_ends_keeping_its_bytes_for_the_next_node() {
    let mut app = spawn_app(&[("shutdown_grace", "1s")]).await;
    let data = bytes(300_000, 12);
    let res = app
        .auth(app.client.post(app.url("/tus/")))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", data.len().to_string())
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();

    // A PATCH that sends a third of its body and then stalls, as a slow link does.
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        app.token,
        data.len()
    );
    let (addr, sent) = (app.addr, data[..100_000].to_vec());
    let mut s = blocking(move || stream_to(addr, &head, &sent)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let began = Instant::now();
    app.begin_shutdown();
    // Past the grace the PATCH is asked to end: it keeps what it received and answers 503
    // `draining` with the offset kept (a client retries a 503, elsewhere), and the node
    // stops soon after the grace.
    let answered = blocking(move || {
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).to_string()
    })
    .await;
    assert!(answered.starts_with("HTTP/1.1 503"), "{answered}");
    assert!(answered.contains("\"code\":\"draining\""), "{answered}");
    app.stopped().await;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "stopped before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "{took:?}: {answered}");

    // The next node on the same catalog and storage finds the durable bytes and finishes.
    let data_dir = app.data_dir().display().to_string();
    let mut settings: Vec<(&str, &str)> = vec![("data_dir", &data_dir)];
    let db = app.database_url.clone();
    if let Some(db) = &db {
        settings.push(("database_url", db));
    }
    let next = spawn_node(&settings, &app.token).await;
    let res = next
        .auth(next.client.head(next.url(&location)))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("head");
    assert_eq!(res.status(), 200);
    let offset: usize = res.headers()["upload-offset"]
        .to_str()
        .expect("offset")
        .parse()
        .expect("number");
    assert!(
        offset > 0 && offset <= 100_000,
        "kept {offset} of the 100000 bytes sent: {answered}"
    );
    let res = next
        .auth(next.client.patch(next.url(&location)))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(data[offset..].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 204);
    let files = next.list(&next.token).await;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["checksums"]["sha256"], sha256_hex(&data));
}

#[tokio::test]
async fn while_draining_requests_get_503_draining_and_healthz_stays_up() {
    let app = spawn_app(&[]).await;
    // The state a drain sets (serve_app sets it on its signal, then stops accepting): here
    // the listener stays open, so that every kind of request can be tried against it.
    app.state.drain.start();
    for (method, path) in [
        ("GET", "/api/files"),
        ("POST", "/api/files"),
        ("POST", "/tus/"),
        ("PATCH", "/tus/abc"),
        ("POST", "/upload-session/"),
        ("GET", "/readyz"),
    ] {
        let res = app
            .auth(
                app.client
                    .request(method.parse().expect("method"), app.url(path)),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 503, "{method} {path}");
        assert_eq!(res.headers()["retry-after"], "5");
        assert_eq!(res.headers()["connection"], "close");
        let v: serde_json::Value = res.json().await.expect("json");
        assert_eq!(v["code"], "draining", "{method} {path}");
    }
    let res = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(res.status(), 200);
}

/// A rolling restart: two `chute serve` nodes on one PostgreSQL catalog and one data folder
/// behind a round-robin proxy (which passes over a node that refuses connections, as nginx's
/// `proxy_next_upstream error` does). Real tus-js-client uploads, with the client's own
/// default retry delays, are all running on node A when it gets SIGTERM: single-PATCH ones
/// are still sending past the grace, chunked ones finish their PATCH within it. Every upload
/// finishes with the right bytes, and A exits cleanly within its grace and the release wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_a_proxy_loses_no_tus_js_client_upload() {
    use crate::chaos::{Node, Proxy};
    let pg = crate::postgres::Postgres::start().await;
    let db = pg.database("rolling").await;
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let env = vec![
        ("CHUTE_DATABASE_URL".to_string(), db),
        ("CHUTE_SHUTDOWN_GRACE".to_string(), "2s".to_string()),
    ];
    let mut a = Node::at("a", data.clone(), &env).logging_to(root.path().join("a.log"));
    let mut b = Node::at("b", data.clone(), &env).logging_to(root.path().join("b.log"));
    let token = a.start().await.expect("the first start prints a token");
    // B is down at first: the proxy sends every upload to A.
    let proxy = Proxy::start(vec![a.addr(), b.addr()]).await;
    let endpoint = format!("http://{}/tus/", proxy.addr);

    let files = tempfile::tempdir().expect("files");
    let mut uploads = Vec::new();
    for i in 0..4u64 {
        // 0 and 2: one PATCH for the whole file; 1 and 3: 1 MiB PATCHes.
        let chunk = if i % 2 == 0 { 0 } else { 1 << 20 };
        let data = bytes((5 << 20) + i as usize * 4099, 300 + i);
        let name = format!("rolling-{i}.bin");
        let file = files.path().join(&name);
        std::fs::write(&file, &data).expect("write");
        let args = vec![
            endpoint.clone(),
            token.clone(),
            file.display().to_string(),
            chunk.to_string(),
            name.clone(),
        ];
        let run = tokio::spawn(crate::clients::run_env(
            "node",
            args,
            &[("TUS_RETRY", "default")],
        ));
        uploads.push((name, data, run));
    }
    // The proxy carries 4 MiB/s in all: 20 MiB take about 5 s. A restarts 1 s in, so the
    // single-PATCH uploads are still sending when its 2 s of grace run out.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    b.start().await;
    let began = Instant::now();
    assert!(
        a.terminate().await,
        "A exits cleanly on SIGTERM:\n{}",
        a.log()
    );
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(9),
        "A took {took:?} to drain:\n{}",
        a.log()
    );
    assert!(
        a.log().contains("resumable uploads are asked to end"),
        "uploads were still sending past the grace:\n{}",
        a.log()
    );
    a.start().await;

    for (name, data, run) in uploads {
        let out = run.await.expect("client task");
        assert!(out.contains("\"url\""), "{name}: {out}");
        let files: serde_json::Value = reqwest::Client::new()
            .get(format!("http://{}/api/files?limit=100", b.addr()))
            .bearer_auth(&token)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        let f = files["files"]
            .as_array()
            .expect("files")
            .iter()
            .find(|f| f["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} was lost: {files}"))
            .clone();
        assert_eq!(f["checksums"]["sha256"], sha256_hex(&data), "{name}");
    }
}
