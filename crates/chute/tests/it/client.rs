//! chute-client, the Rust client library, against a real server: every size up and down with
//! its digest checked on both sides, resume through a proxy that cuts the connection, a
//! partial download resumed and a corrupt one caught, and typed errors.

use std::path::Path;
use std::time::Duration;

use chute_client::{Client, Error, ErrorCode, Progress, Retry, UploadOptions};

use crate::chaos::Proxy;
use crate::helpers::*;

fn client(app: &TestApp, base: &str) -> Client {
    Client::new(base)
        .expect("client")
        .token(app.token.clone())
        .retry(Retry {
            attempts: 8,
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
        })
}

/// The stored file's sha256, by its URL (`/api/files/ID`, as the client was told).
async fn stored_sha256(app: &TestApp, file_url: &str) -> String {
    let files = app.list(&app.token).await;
    let f = files
        .iter()
        .find(|f| file_url.ends_with(f["url"].as_str().expect("url")))
        .unwrap_or_else(|| panic!("{file_url} is not listed: {files:?}"));
    f["checksums"]["sha256"]
        .as_str()
        .expect("sha256")
        .to_string()
}

#[tokio::test]
async fn the_client_uploads_and_downloads_every_size_and_checks_both_ends() {
    let app = spawn_app(&[]).await;
    let c = client(&app, &app.url(""));
    let dir = tempfile::tempdir().expect("dir");
    let chunked = UploadOptions {
        chunk_size: Some(1 << 20),
        checksum: Some(chute_client::Checksum::Sha256),
        ..Default::default()
    };
    for (i, (size, opts)) in [
        (0usize, UploadOptions::default()),
        (1, UploadOptions::default()),
        (5 << 20, UploadOptions::default()),
        (5 << 20, chunked.clone()),
        (1, chunked.clone()),
    ]
    .into_iter()
    .enumerate()
    {
        let data = bytes(size, 100 + i as u64);
        let path = dir.path().join(format!("f{i} é.bin"));
        std::fs::write(&path, &data).expect("write");
        let mut seen: Vec<Progress> = Vec::new();
        let up = c
            .upload_file(&path, &opts, |p| seen.push(p))
            .await
            .unwrap_or_else(|e| panic!("{size} bytes, {opts:?}: {e}"));
        assert_eq!(up.size, size as u64);
        let file_url = up.file_url.expect("the file's URL");
        assert!(file_url.starts_with(&app.url("/api/files/")), "{file_url}");
        assert_eq!(stored_sha256(&app, &file_url).await, sha256_hex(&data));
        if size > 0 {
            assert_eq!(
                seen.last(),
                Some(&Progress {
                    sent: size as u64,
                    total: size as u64
                })
            );
            assert!(seen.windows(2).all(|w| w[0].sent <= w[1].sent), "{seen:?}");
        }

        let back = dir.path().join(format!("back{i}"));
        let got = c
            .download(&file_url, &back, |_| {})
            .await
            .expect("download");
        assert_eq!((got.size, got.resumed_from), (size as u64, 0));
        assert_eq!(got.digest, sha256_hex(&data));
        assert_eq!(
            sha256_hex(&std::fs::read(&back).expect("read")),
            sha256_hex(&data)
        );
    }
    let names: Vec<String> = app
        .list(&app.token)
        .await
        .iter()
        .map(|f| f["name"].as_str().expect("name").to_string())
        .collect();
    assert!(names.contains(&"f2 é.bin".to_string()), "{names:?}");
}

#[tokio::test]
async fn the_client_resumes_an_upload_through_cuts_and_a_download_from_a_partial_file() {
    let app = spawn_app(&[]).await;
    // The proxy passes 4 MiB/s: a 6 MiB upload is cut twice while its body is on the way.
    let proxy = Proxy::start(vec![app.addr]).await;
    let c = client(&app, &format!("http://{}", proxy.addr));
    let dir = tempfile::tempdir().expect("dir");
    let data = bytes(6 << 20, 7);
    let path = dir.path().join("cut.bin");
    std::fs::write(&path, &data).expect("write");
    let cutter = tokio::spawn(async move {
        let mut cuts = 0;
        for wait in [400, 600] {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            cuts += proxy.cut_sending();
        }
        cuts
    });
    let up = c
        .upload_file(&path, &UploadOptions::default(), |_| {})
        .await
        .expect("the client gets there by itself");
    assert_eq!(cutter.await.expect("cutter"), 2, "both cuts hit the upload");
    let file_url = up.file_url.expect("file");
    assert_eq!(stored_sha256(&app, &file_url).await, sha256_hex(&data));

    // A download with its first half already here fetches only the rest.
    let c = client(&app, &app.url(""));
    let back = dir.path().join("back.bin");
    std::fs::write(&back, &data[..3 << 20]).expect("half");
    let got = c.download(&file_url, &back, |_| {}).await.expect("resume");
    assert_eq!(got.resumed_from, 3 << 20);
    assert_eq!(std::fs::read(&back).expect("read"), data);
    // Whole already: nothing fetched, still checked.
    let got = c.download(&file_url, &back, |_| {}).await.expect("again");
    assert_eq!(got.resumed_from, 6 << 20);

    // A partial file whose bytes differ from the server's: the digest check catches it.
    let mut bad = data[..1 << 20].to_vec();
    bad[10] ^= 0xff;
    std::fs::write(&back, &bad).expect("bad half");
    let err = c
        .download(&file_url, &back, |_| {})
        .await
        .expect_err("corrupt");
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
}

/// A server that answers every request with a web page: not chute.
async fn not_chute() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let page = "<html>hello</html>";
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                            page.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_clients_errors_are_typed() {
    let app = spawn_app(&[("max_upload_size", "1000")]).await;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("a.bin");
    std::fs::write(&path, bytes(5000, 1)).expect("write");
    let opts = UploadOptions::default();

    let err = client(&app, &app.url(""))
        .upload_file(&path, &opts, |_| {})
        .await
        .expect_err("too large");
    assert_too_large(&err);

    let c = Client::new(&app.url(""))
        .expect("client")
        .token("chute_not_a_token");
    let err = c
        .upload_file(&path, &opts, |_| {})
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), Some(&ErrorCode::Unauthorized), "{err}");
    let err = c.me().await.expect_err("bad token");
    assert!(matches!(&err, Error::Api { status: 401, .. }), "{err}");

    let err = client(&app, &app.url(""))
        .upload_file(Path::new("/nonexistent/file"), &opts, |_| {})
        .await
        .expect_err("no file");
    assert!(matches!(&err, Error::Io { .. }), "{err}");

    let other = not_chute().await;
    let err = client(&app, &format!("http://{other}"))
        .upload_file(&path, &opts, |_| {})
        .await
        .expect_err("not chute");
    assert!(matches!(&err, Error::NotChute(_)), "{err}");

    assert!(matches!(Client::new("ftp://x"), Err(Error::Usage(_))));

    // Nothing listens: the client tries `attempts` times, then says so.
    let gone = free_port();
    let err = client(&app, &format!("http://127.0.0.1:{gone}"))
        .upload_file(&path, &opts, |_| {})
        .await
        .expect_err("nobody there");
    assert!(matches!(&err, Error::GaveUp { attempts: 8, .. }), "{err}");
}

/// The client's error codes are the server's: no code the server answers with is unknown to
/// it, nor the other way round.
#[test]
fn the_client_knows_every_code_the_server_answers_with() {
    let mut client: Vec<&str> = ErrorCode::KNOWN.to_vec();
    let mut server: Vec<&str> = chute::http::error_code::ALL.to_vec();
    client.sort_unstable();
    server.sort_unstable();
    assert_eq!(client, server);
    for code in server {
        assert_eq!(ErrorCode::parse(code).as_str(), code);
        assert!(
            !matches!(ErrorCode::parse(code), ErrorCode::Other(_)),
            "{code}"
        );
    }
}

#[tokio::test]
async fn the_client_sends_a_form_drives_a_session_and_reads_the_refusal() {
    let app = spawn_app(&[]).await;
    let c = client(&app, &app.url(""));
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, data: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, data).expect("write");
        p
    };
    let notes = write("notes.txt", b"a form upload, streamed from disk\n");
    let minutes = write("minutes.txt", b"the session's first file\n");
    let draft = write("draft.txt", b"added, then taken out\n");
    let tool = write("tool.exe", b"MZ refused by type");

    // A plain form upload: the stored digest is the server's, the bytes this test's.
    let f = c.upload_form(&notes, |_| {}).await.expect("form upload");
    assert_eq!((f.name.as_str(), f.size), ("notes.txt", 34));
    assert_eq!(
        f.checksums.get("sha256"),
        Some(&sha256_hex(b"a form upload, streamed from disk\n"))
    );

    // A session: two files in, one out, one refused with the server's reason, then stored.
    let s = c.open_session().await.expect("open");
    let token = s.upload_session_token.clone();
    assert_eq!(s.status, "CREATED");
    c.add_to_session(&token, &minutes, |_| {})
        .await
        .expect("add");
    c.add_to_session(&token, &draft, |_| {}).await.expect("add");
    match c.add_to_session(&token, &tool, |_| {}).await {
        Err(Error::Api {
            status: 400,
            code: ErrorCode::InvalidFile,
            message,
            detail: Some(detail),
            ..
        }) => {
            assert_eq!(message, "File type is not accepted");
            assert!(!detail.is_empty());
        }
        other => panic!("not refused: {other:?}"),
    }
    c.remove_from_session(&token, "draft.txt")
        .await
        .expect("remove");
    let files = c.session_files(&token).await.expect("files");
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["minutes.txt"]);
    let stored = c.store_session(&token).await.expect("store");
    assert_eq!((stored.status.as_str(), stored.file_count), ("STORED", 1));

    // Both are the caller's files now; deleting one leaves the other.
    let all = c.list_files().await.expect("list");
    let mut names: Vec<&str> = all.iter().map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["minutes.txt", "notes.txt"]);
    c.delete_file(&f.id).await.expect("delete");
    let left = c.list_files().await.expect("list");
    assert_eq!(left.len(), 1);
    assert!(matches!(
        c.delete_file(&f.id).await,
        Err(Error::Api { status: 404, .. })
    ));
    assert!(matches!(c.delete_file("../x").await, Err(Error::Usage(_))));
}

#[tokio::test]
async fn parallel_parts_are_joined_into_one_file_through_cuts() {
    let app = spawn_app(&[]).await;
    let proxy = Proxy::start(vec![app.addr]).await;
    let c = client(&app, &format!("http://{}", proxy.addr));
    let dir = tempfile::tempdir().expect("dir");
    let data = bytes((5 << 20) + 3, 50);
    let path = dir.path().join("in-parts.bin");
    std::fs::write(&path, &data).expect("write");
    let cutter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.cut_sending()
    });
    let mut last = None;
    let up = c
        .upload_file_in_parts(&path, 4, &UploadOptions::default(), |p| last = Some(p))
        .await
        .expect("joined");
    assert!(cutter.await.expect("cutter") >= 1, "the cut hit a part");
    assert_eq!(
        last,
        Some(Progress {
            sent: data.len() as u64,
            total: data.len() as u64
        })
    );
    assert_eq!(up.size, data.len() as u64);
    let file_url = up.file_url.expect("the joined file");
    assert_eq!(stored_sha256(&app, &file_url).await, sha256_hex(&data));
    // The parts are not files of their own.
    let files = app.list(&app.token).await;
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["name"], "in-parts.bin");
}

#[tokio::test]
async fn a_stream_of_unknown_length_is_sent_in_held_chunks_through_a_cut() {
    let app = spawn_app(&[]).await;
    let proxy = Proxy::start(vec![app.addr]).await;
    let c = client(&app, &format!("http://{}", proxy.addr));
    let cutter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        proxy.cut_sending()
    });
    // Read in uneven pieces, as a pipe gives them; then a length that is a whole number of
    // chunks, which only an empty last PATCH can declare.
    for (len, name) in [((3 << 20) + 5, "piped.tar"), (2 << 20, "exact.tar")] {
        let data = bytes(len, len as u64);
        let reader = tokio_util::io::StreamReader::new(futures::stream::iter(
            data.chunks(100_003)
                .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        ));
        let opts = UploadOptions {
            chunk_size: Some(1 << 20),
            checksum: Some(chute_client::Checksum::Sha1),
            ..Default::default()
        };
        let up = c
            .upload_stream(reader, name, &opts, |_| {})
            .await
            .expect("streamed");
        assert_eq!(up.size, len as u64, "{name}");
        let file_url = up.file_url.expect("file");
        assert_eq!(
            stored_sha256(&app, &file_url).await,
            sha256_hex(&data),
            "{name}"
        );
    }
    assert!(cutter.await.expect("cutter") >= 1, "the cut hit the stream");
}

#[tokio::test]
async fn the_client_speaks_the_ietf_draft_when_asked_through_a_cut() {
    let app = spawn_app(&[]).await;
    let proxy = Proxy::start(vec![app.addr]).await;
    let c = client(&app, &format!("http://{}", proxy.addr));
    let dir = tempfile::tempdir().expect("dir");
    let cutter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        proxy.cut_sending()
    });
    for (len, chunk) in [
        (0, None),
        ((3 << 20) + 1, None),
        ((2 << 20) + 7, Some(1 << 20)),
    ] {
        let data = bytes(len, len as u64 + 60);
        let path = dir.path().join(format!("draft-{len}.bin"));
        std::fs::write(&path, &data).expect("write");
        let opts = UploadOptions {
            protocol: chute_client::Protocol::Draft,
            chunk_size: chunk,
            ..Default::default()
        };
        let up = c
            .upload_file(&path, &opts, |_| {})
            .await
            .unwrap_or_else(|e| panic!("{len}: {e}"));
        assert!(up.upload_url.contains("/resumable/"), "{}", up.upload_url);
        let file_url = up.file_url.expect("the file");
        assert_eq!(
            stored_sha256(&app, &file_url).await,
            sha256_hex(&data),
            "{len}"
        );
    }
    assert!(cutter.await.expect("cutter") >= 1, "the cut hit an append");
    // No checksum per request in the draft: said before anything is sent.
    let opts = UploadOptions {
        protocol: chute_client::Protocol::Draft,
        checksum: Some(chute_client::Checksum::Sha256),
        ..Default::default()
    };
    let path = dir.path().join("draft-0.bin");
    assert!(matches!(
        c.upload_file(&path, &opts, |_| {}).await,
        Err(Error::Usage(_))
    ));
}

#[tokio::test]
async fn a_reader_of_known_length_declares_it_first_and_must_give_it_all() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let metrics = "client-reader-metrics-secret-7c1e";
    let app = spawn_app(&[("max_upload_size", "4MiB"), ("metrics_token", metrics)]).await;
    let opts = UploadOptions {
        chunk_size: Some(1 << 20),
        ..Default::default()
    };

    // Whole through a cut; the reader has more than was declared, and the rest is not sent.
    let proxy = Proxy::start(vec![app.addr]).await;
    let c = client(&app, &format!("http://{}", proxy.addr));
    let cutter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        proxy.cut_sending()
    });
    let data = bytes((3 << 20) + 5, 77);
    let mut longer = data.clone();
    longer.extend_from_slice(b"past the declared length");
    let up = c
        .upload_reader(
            std::io::Cursor::new(longer),
            data.len() as u64,
            "known.bin",
            &opts,
            |_| {},
        )
        .await
        .expect("uploaded");
    assert_eq!(up.size, data.len() as u64);
    let file_url = up.file_url.expect("file");
    assert_eq!(stored_sha256(&app, &file_url).await, sha256_hex(&data));
    assert!(cutter.await.expect("cutter") >= 1, "the cut hit the upload");

    // Too large for the server: refused at the creation, before the reader is asked for a byte.
    let c = client(&app, &app.url(""));
    let touched = Arc::new(AtomicBool::new(false));
    let reader = tokio_util::io::StreamReader::new(futures::stream::poll_fn({
        let touched = touched.clone();
        move |_| {
            touched.store(true, Ordering::SeqCst);
            std::task::Poll::<Option<std::io::Result<bytes::Bytes>>>::Ready(None)
        }
    }));
    let err = c
        .upload_reader(reader, 5 << 20, "big.bin", &opts, |_| {})
        .await
        .expect_err("too large");
    assert_too_large(&err);
    assert!(!touched.load(Ordering::SeqCst), "no byte was read");

    // A reader that ends short: an error that says so, nothing stored, the upload terminated.
    let err = c
        .upload_reader(
            std::io::Cursor::new(bytes(3 << 19, 78)),
            2 << 20,
            "short.bin",
            &opts,
            |_| {},
        )
        .await
        .expect_err("short");
    assert!(
        matches!(&err, Error::Usage(m) if m.contains("after 1572864 of the 2097152 bytes")),
        "{err}"
    );
    let names: Vec<_> = app.list(&app.token).await;
    assert!(names.iter().all(|f| f["name"] != "short.bin"), "{names:?}");
    let scraped = app.metrics(metrics).await;
    assert!(
        scraped
            .lines()
            .any(|l| l == "chute_uploads_terminated_total{protocol=\"tus\"} 1"),
        "{scraped}"
    );
}

/// The server's typed 413 `too_large`, as the client reports it.
fn assert_too_large(err: &Error) {
    assert!(
        matches!(
            err,
            Error::Api {
                status: 413,
                code: ErrorCode::TooLarge,
                ..
            }
        ),
        "{err}"
    );
}
