//! ClamAV scanning of upload-session files against a real clamd (Debian's clamav-daemon),
//! started by `scripts/clamd-test.sh` with a signature database of its own for the EICAR
//! test string. Over TCP and the unix socket; a detection, a file over clamd's stream limit
//! and an unreachable clamd each keep nothing.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::helpers::*;
use crate::servers::ScriptServer;
use crate::sessions::{open_session, pdf, post_file};

const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// A clamd started by `scripts/clamd-test.sh`.
struct Clamd {
    port: u16,
    socket: PathBuf,
    _server: ScriptServer,
}

fn ping(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut out = Vec::new();
    s.write_all(b"zPING\0").is_ok() && s.read_to_end(&mut out).is_ok() && out.starts_with(b"PONG")
}

async fn start_clamd(stream_max: &str) -> Clamd {
    let port = free_port();
    let stream_max = stream_max.to_string();
    let mut server = ScriptServer::spawn("clamd", "clamd-test.sh", "TERM", |dir| {
        vec![dir.display().to_string(), port.to_string(), stream_max]
    });
    let socket = server.dir().join("clamd.sock");
    let probe = socket.clone();
    server
        .wait_until(Duration::from_secs(60), || {
            let probe = probe.clone();
            blocking(move || ping(&probe))
        })
        .await;
    Clamd {
        port,
        socket,
        _server: server,
    }
}

#[tokio::test]
async fn clamd_refuses_malware_while_the_file_streams_and_fails_closed() {
    let clamd = start_clamd("1M").await;
    let tcp = format!("127.0.0.1:{}", clamd.port);
    let unix = format!("unix:{}", clamd.socket.display());
    for address in [tcp.as_str(), unix.as_str()] {
        let app = spawn_app(&[("clamav_enabled", "true"), ("clamav_address", address)]).await;
        let s = open_session(&app, &app.token).await;

        let clean = pdf(500_000, 21);
        let (st, v) = post_file(&app, &s, "clean.pdf", &clean).await;
        assert_eq!(st, 200, "{address}: {v}");

        // EICAR alone, and EICAR deep inside a larger text file (found mid-stream).
        let mut buried = b"notes\n".repeat(20_000);
        buried.extend_from_slice(EICAR);
        buried.extend_from_slice(b"\nmore notes\n");
        for (name, content) in [("eicar.txt", EICAR.to_vec()), ("buried.txt", buried)] {
            let (st, v) = post_file(&app, &s, name, &content).await;
            assert_eq!(st, 400, "{address} {name}: {v}");
            assert_eq!(v["accepted"], false);
            assert_eq!(v["error"], "Malware detected");
            let verbose = v["verboseError"].as_str().unwrap_or_default();
            assert!(verbose.contains("Chute-Test.EICAR"), "{verbose}");
        }

        // Over clamd's StreamMaxLength (1M here): cannot be scanned, so not kept.
        let (st, v) = post_file(&app, &s, "large.pdf", &pdf(12 << 20, 22)).await;
        assert_eq!(st, 400, "{address}: {v}");
        assert_eq!(v["error"], "File is too large to scan");

        let res = app
            .client
            .get(app.url(&format!("/upload-session/{s}/files/")))
            .bearer_auth(&app.token)
            .send()
            .await
            .expect("list");
        let v: serde_json::Value = res.json().await.expect("json");
        assert_eq!(v["files"].as_array().map(Vec::len), Some(1), "{v}");
        assert_eq!(app.stored_objects().len(), 1);
        assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
    }

    // The other upload paths scan too: /api/files while streaming, tus and the chunked
    // protocol once, whole, at completion (their bytes came over several requests).
    let app = spawn_app(&[("clamav_enabled", "true"), ("clamav_address", tcp.as_str())]).await;
    for (name, content, status) in [
        ("clean.bin", bytes(200_000, 24), 201),
        ("eicar.com", EICAR.to_vec(), 400),
    ] {
        let res = app
            .client
            .post(app.url("/api/files"))
            .bearer_auth(&app.token)
            .multipart(reqwest::multipart::Form::new().part(
                "file",
                reqwest::multipart::Part::bytes(content).file_name(name),
            ))
            .send()
            .await
            .expect("post");
        assert_eq!(res.status().as_u16(), status, "{name}");
    }
    let mut infected = bytes(300_000, 25);
    infected.extend_from_slice(EICAR);
    for content in [bytes(300_000, 26), infected] {
        let res = app
            .client
            .post(app.url("/tus/"))
            .bearer_auth(&app.token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", content.len().to_string())
            .send()
            .await
            .expect("create");
        let loc = res.headers()["location"].to_str().expect("loc").to_string();
        let mut status = 0;
        for (i, part) in content.chunks(100_000).enumerate() {
            let res = app
                .client
                .patch(app.url(&loc))
                .bearer_auth(&app.token)
                .header("Tus-Resumable", "1.0.0")
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", (i * 100_000).to_string())
                .body(part.to_vec())
                .send()
                .await
                .expect("patch");
            status = res.status().as_u16();
            if status != 204 {
                let v: serde_json::Value = res.json().await.expect("json");
                assert_eq!(v["error"], "Malware detected", "{v}");
                break;
            }
        }
        let clean = !content.ends_with(EICAR);
        assert_eq!(status, if clean { 204 } else { 400 });
        let res = app
            .client
            .head(app.url(&loc))
            .bearer_auth(&app.token)
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await
            .expect("head");
        assert_eq!(
            res.status().as_u16(),
            if clean { 200 } else { 404 },
            "a refused upload is gone"
        );
    }
    assert_eq!(
        app.list(&app.token).await.len(),
        2,
        "the clean multipart file and tus upload"
    );
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());

    // clamd stopped: both of its addresses now refuse connections.
    drop(clamd);
    for address in [tcp.as_str(), unix.as_str()] {
        let app = spawn_app(&[("clamav_enabled", "true"), ("clamav_address", address)]).await;
        let s = open_session(&app, &app.token).await;
        let (st, v) = post_file(&app, &s, "clean.pdf", &pdf(1000, 23)).await;
        assert_eq!(st, 500, "{address}: {v}");
        assert_eq!(v["code"], "scanner_unavailable");
        // Where the scanner listens, and why it failed, go to the log, not to the client.
        let text = v.to_string();
        let port = address.rsplit(':').next().unwrap_or("");
        assert!(
            !text.contains(address) && !text.contains(port) && !text.contains("os error"),
            "{text}"
        );
        assert!(app.stored_objects().is_empty());
        assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
    }
}
