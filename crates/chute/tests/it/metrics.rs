//! `GET /metrics` and request ids: the counters move by exactly what a known sequence of
//! uploads did, Prometheus's own `promtool check metrics` accepts the text, and the endpoint
//! opens only to its own token or on its own address.

use std::collections::HashMap;
use std::process::{Command, Stdio};

use crate::helpers::*;

const METRICS_TOKEN: &str = "metrics-scrape-secret-7f3a9c";

async fn scrape(app: &TestApp) -> String {
    app.metrics(METRICS_TOKEN).await
}

/// Every sample of the text, by its series (name and labels as written).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

/// Runs `promtool check metrics` (Debian's prometheus package) on the text.
fn promtool_check(text: &str) {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package, installed by scripts/setup-e2e.sh)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn tus_create(app: &TestApp, len: u64) -> reqwest::Response {
    app.auth(app.client.post(app.url("/tus/")))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", len.to_string())
        .send()
        .await
        .expect("create")
}

async fn tus_patch(app: &TestApp, url: &str, offset: u64, body: Vec<u8>) -> reqwest::Response {
    app.auth(app.client.patch(url))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(body)
        .send()
        .await
        .expect("patch")
}

/// The catalog calls of a tus PATCH, counted from the server's own histogram: the token looked
/// up once and the offset written once. The upload is read once under its lock on one node by
/// the first PATCH, and not at all by the next (the record the first one committed is kept);
/// with locks shared across nodes, whose owner check comes before the lock, twice each time.
#[tokio::test]
async fn a_patch_reads_its_upload_once_on_one_node() {
    let app = spawn_app(&[("metrics_token", METRICS_TOKEN)]).await;
    let res = tus_create(&app, 3000).await;
    assert_eq!(res.status(), 201);
    let url = app.url(res.headers()["location"].to_str().expect("location"));
    let shared = app.state.engine.uploads.is_shared();
    for (offset, reads) in [(0, 1.0), (1000, 0.0)] {
        let before = samples(&scrape(&app).await);
        let res = tus_patch(&app, &url, offset, vec![5; 1000]).await;
        assert_eq!(res.status(), 204);
        let after = samples(&scrape(&app).await);
        let calls = |op: &str| {
            delta(
                &before,
                &after,
                &format!(r#"chute_catalog_query_duration_seconds_count{{op="{op}"}}"#),
            )
        };
        let reads = if shared { 2.0 } else { reads };
        assert_eq!(calls("get_upload"), reads, "PATCH at {offset}");
        assert_eq!(calls("user_by_token_hash"), 1.0);
        assert_eq!(calls("advance_upload"), 1.0);
    }

    // A partial of a concatenation is read every time: a final upload can claim it without
    // its lock, and its completion must see that.
    let res = app
        .auth(app.client.post(app.url("/tus/")))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "3000")
        .header("Upload-Concat", "partial")
        .send()
        .await
        .expect("partial");
    assert_eq!(res.status(), 201);
    let url = app.url(res.headers()["location"].to_str().expect("location"));
    assert_eq!(tus_patch(&app, &url, 0, vec![5; 1000]).await.status(), 204);
    let before = samples(&scrape(&app).await);
    assert_eq!(
        tus_patch(&app, &url, 1000, vec![5; 1000]).await.status(),
        204
    );
    let after = samples(&scrape(&app).await);
    let reads = delta(
        &before,
        &after,
        r#"chute_catalog_query_duration_seconds_count{op="get_upload"}"#,
    );
    assert_eq!(reads, if shared { 2.0 } else { 1.0 });
}

#[tokio::test]
async fn counters_move_by_what_a_known_sequence_of_uploads_did() {
    let app = spawn_app(&[("metrics_token", METRICS_TOKEN), ("user_quota", "100KiB")]).await;
    let before = samples(&scrape(&app).await);

    // A form upload of two files.
    let body = multipart_body(&[
        file_part("file", "a.bin", &bytes(1000, 1)),
        file_part("file", "b.bin", &bytes(2000, 2)),
    ]);
    let form_len = body.len() as u64;
    let res = app
        .auth(app.client.post(app.url("/api/files")))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("form");
    assert_eq!(res.status(), 201);

    // A tus upload in two PATCHes, finished.
    let res = tus_create(&app, 3000).await;
    assert_eq!(res.status(), 201);
    let url = app.url(res.headers()["location"].to_str().expect("location"));
    let data = bytes(3000, 3);
    assert_eq!(
        tus_patch(&app, &url, 0, data[..1000].to_vec())
            .await
            .status(),
        204
    );
    // A PATCH at a wrong offset is refused (409), and counted as such.
    assert_eq!(tus_patch(&app, &url, 5, vec![0; 10]).await.status(), 409);
    assert_eq!(
        tus_patch(&app, &url, 1000, data[1000..].to_vec())
            .await
            .status(),
        204
    );

    // A tus upload created, then terminated.
    let res = tus_create(&app, 500).await;
    assert_eq!(res.status(), 201);
    let gone = app.url(res.headers()["location"].to_str().expect("location"));
    let res = app
        .auth(app.client.delete(&gone))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);

    // One over the quota.
    let res = tus_create(&app, 200 * 1024).await;
    assert_eq!(res.status(), 413);
    let v: serde_json::Value = res.json().await.expect("json");
    assert_eq!(v["code"], "quota_exceeded");

    let text = scrape(&app).await;
    promtool_check(&text);
    let after = samples(&text);
    let d = |s: &str| delta(&before, &after, s);
    let backend = if app.s3.is_some() { "s3" } else { "local" };

    assert_eq!(
        d(r#"chute_uploads_created_total{protocol="multipart"}"#),
        1.0
    );
    assert_eq!(
        d(r#"chute_uploads_finished_total{protocol="multipart"}"#),
        1.0
    );
    assert_eq!(d(r#"chute_files_stored_total{protocol="multipart"}"#), 2.0);
    assert_eq!(
        d(r#"chute_bytes_received_total{protocol="multipart"}"#),
        form_len as f64
    );
    assert_eq!(d(r#"chute_uploads_created_total{protocol="tus"}"#), 2.0);
    assert_eq!(d(r#"chute_uploads_finished_total{protocol="tus"}"#), 1.0);
    assert_eq!(d(r#"chute_uploads_terminated_total{protocol="tus"}"#), 1.0);
    assert_eq!(d(r#"chute_files_stored_total{protocol="tus"}"#), 1.0);
    assert_eq!(d(r#"chute_uploads_failed_total{protocol="tus"}"#), 0.0);
    // The two PATCHes' bodies: creations carry none, and the refused PATCH's body is never
    // read (bytes received are bytes read).
    assert_eq!(d(r#"chute_bytes_received_total{protocol="tus"}"#), 3000.0);
    assert_eq!(d(r#"chute_quota_refusals_total{protocol="tus"}"#), 1.0);
    assert_eq!(
        d(r#"chute_http_requests_total{route="/tus/{id}",method="PATCH",status="204"}"#),
        2.0
    );
    assert_eq!(
        d(r#"chute_http_requests_total{route="/tus/{id}",method="PATCH",status="409"}"#),
        1.0
    );
    assert_eq!(
        d(r#"chute_http_requests_total{route="/tus/",method="POST",status="201"}"#),
        2.0
    );
    assert_eq!(d(r#"chute_http_errors_total{code="quota_exceeded"}"#), 1.0);
    assert_eq!(
        d(r#"chute_http_request_duration_seconds_count{route="/tus/{id}",method="PATCH"}"#),
        3.0
    );
    assert_eq!(
        d(r#"chute_catalog_query_duration_seconds_count{op="complete_upload"}"#),
        1.0
    );
    // Three files placed: the form's two and the finished tus upload.
    assert_eq!(
        d(&format!(
            r#"chute_storage_operation_duration_seconds_count{{backend="{backend}",op="put"}}"#
        )),
        3.0
    );
    assert_eq!(after.get("chute_uploads_in_flight"), Some(&0.0));
    // Only the scrape itself is in flight.
    assert_eq!(after.get("chute_http_requests_in_flight"), Some(&1.0));
    // Every response body byte of the form upload was counted under its protocol.
    assert!(d(r#"chute_bytes_sent_total{protocol="multipart"}"#) > 100.0);
}

#[tokio::test]
async fn metrics_open_only_to_their_token_or_on_their_own_address() {
    let app = spawn_app(&[("metrics_token", METRICS_TOKEN)]).await;
    let get = |token: Option<&str>| {
        let rb = app.client.get(app.url("/metrics"));
        let rb = match token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        };
        async move { rb.send().await.expect("get") }
    };
    let res = get(None).await;
    assert_eq!(res.status(), 401);
    let v: serde_json::Value = res.json().await.expect("json");
    assert_eq!(v["code"], "unauthorized");
    // A user's API token, even the staff admin's, does not open it.
    assert_eq!(get(Some(&app.token)).await.status(), 401);
    assert_eq!(get(Some("metrics-scrape-secret-7f3a9")).await.status(), 401);
    assert_eq!(get(Some(METRICS_TOKEN)).await.status(), 200);

    // Without the setting there is nothing at /metrics.
    let off = spawn_app(&[]).await;
    let res = off
        .auth(off.client.get(off.url("/metrics")))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 404);

    // On metrics_listen it is served without a token, and not on the main address.
    let port = free_port();
    let own = spawn_app(&[("metrics_listen", &format!("127.0.0.1:{port}"))]).await;
    // The address is bound as the server starts, beside the main one: wait for it.
    let mut tries = 0;
    let res = loop {
        match own
            .client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        {
            Ok(r) => break r,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("metrics_listen: {e}"),
        }
    };
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("text");
    assert!(
        text.contains("# TYPE chute_http_requests_in_flight gauge"),
        "{text}"
    );
    let res = own
        .client
        .get(own.url("/metrics"))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn every_answer_carries_a_request_id_kept_from_the_client_when_it_is_safe() {
    let app = spawn_app(&[]).await;
    let id_of = |res: &reqwest::Response| {
        res.headers()
            .get("x-request-id")
            .expect("x-request-id")
            .to_str()
            .expect("ascii")
            .to_string()
    };
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("X-Request-Id", "trace-abc.123")
        .send()
        .await
        .expect("get");
    assert_eq!(id_of(&res), "trace-abc.123");
    // Made when absent, on errors too (401, 404), and different each time.
    let a = app
        .client
        .get(app.url("/api/files"))
        .send()
        .await
        .expect("get");
    assert_eq!(a.status(), 401);
    let b = app
        .client
        .get(app.url("/nowhere"))
        .send()
        .await
        .expect("get");
    assert_eq!(b.status(), 404);
    let (a, b) = (id_of(&a), id_of(&b));
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
    // One that could forge a log line or run long is replaced.
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("X-Request-Id", "x\" injected=1")
        .send()
        .await
        .expect("get");
    assert_eq!(id_of(&res).len(), 32);
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("X-Request-Id", "r".repeat(200))
        .send()
        .await
        .expect("get");
    assert_eq!(id_of(&res).len(), 32);
}
