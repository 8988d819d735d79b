//! The handler chain through the real server: built-in chains chosen by settings, and chains
//! of one's own (Django's per-view upload handlers) given through the library.

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chute::config::HandlerName;
use chute::upload::handler::{
    Chain, CompletedFile, FileBody, FileFacts, FileInfo, HandlerError, NewFile, RawInput,
    RawOutcome, UploadHandler, UploadedFile,
};
use chute::upload::handlers::{ChainContext, build_handlers};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::helpers::*;

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\0\x01\0\0\x05\0\x01\r\n-\xb4\0\0\0\0IEND\xaeB`\x82";

async fn upload(app: &TestApp, files: Vec<(&str, Vec<u8>)>) -> reqwest::Response {
    let mut form = Form::new();
    for (name, data) in files {
        form = form.part("file", Part::bytes(data).file_name(name.to_string()));
    }
    app.auth(app.client.post(app.url("/api/files")))
        .multipart(form)
        .send()
        .await
        .expect("upload")
}

#[tokio::test]
async fn sniffing_records_types_and_refuses_mismatches_when_asked() {
    let app = spawn_app(&[("file_upload_reject_type_mismatch", "true")]).await;
    let res = upload(&app, vec![("pixel.png", PNG.to_vec())]).await;
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["files"][0]["detected_type"], "image/png");

    let res = upload(&app, vec![("report.pdf", PNG.to_vec())]).await;
    assert_eq!(res.status(), 415);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["code"], "type_mismatch");
    let mut exe = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".to_vec();
    exe.extend(bytes(20_000, 1));
    let res = upload(
        &app,
        vec![("ok.txt", b"fine".to_vec()), ("holiday.jpg", exe)],
    )
    .await;
    assert_eq!(res.status(), 415, "one bad file refuses the request");
    assert_eq!(app.list(&app.token).await.len(), 1);
    assert!(app.leftovers().is_empty());

    // Off by default: the type is only recorded.
    let app = spawn_app(&[]).await;
    let res = upload(&app, vec![("report.pdf", PNG.to_vec())]).await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.json::<Value>().await.expect("json")["files"][0]["detected_type"],
        "image/png"
    );
}

#[tokio::test]
async fn compression_at_rest_is_transparent_on_download() {
    let app = spawn_app(&[(
        "file_upload_handlers",
        "progress,quota,sniff,checksum,compress,spill",
    )])
    .await;
    let text: Vec<u8> = b"All work and no play makes Jack a dull boy.\n"
        .iter()
        .cycle()
        .take(4_000_000)
        .copied()
        .collect();
    let res = upload(&app, vec![("jack.txt", text.clone())]).await;
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.expect("json");
    let f = &v["files"][0];
    assert_eq!(f["compressed"], true);
    assert_eq!(f["size"], text.len());
    assert_eq!(
        f["checksums"]["sha256"],
        sha256_hex(&text),
        "checksum of the original bytes"
    );
    let stored: u64 = app.stored_sizes().iter().map(|(_, len)| len).sum();
    assert!(stored < text.len() as u64 / 50, "stored {stored} bytes");
    let id = f["id"].as_str().expect("id");
    assert_eq!(sha256_hex(&app.download(id).await), sha256_hex(&text));
    let res = app
        .auth(app.client.get(app.url(&format!("/api/files/{id}"))))
        .header("Range", "bytes=2000000-2000099")
        .send()
        .await
        .expect("range");
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.bytes().await.expect("body").as_ref(),
        &text[2_000_000..2_000_100]
    );
}

#[tokio::test]
async fn straight_to_storage_keeps_no_temp_copy() {
    let app = spawn_app(&[
        ("file_upload_handlers", "checksum,store"),
        ("file_upload_checksums", "md5,sha1,sha256,blake3"),
    ])
    .await;
    let data = bytes(6_000_000, 11);
    let res = upload(
        &app,
        vec![("direct.bin", data.clone()), ("tiny", b"t".to_vec())],
    )
    .await;
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.expect("json");
    let f = &v["files"][0];
    assert_eq!(f["checksums"]["sha256"], sha256_hex(&data));
    assert_eq!(f["checksums"]["md5"].as_str().map(str::len), Some(32));
    assert_eq!(f["checksums"]["sha1"].as_str().map(str::len), Some(40));
    assert_eq!(f["checksums"]["blake3"].as_str().map(str::len), Some(64));
    assert_eq!(
        sha256_hex(&app.download(f["id"].as_str().expect("id")).await),
        sha256_hex(&data)
    );
    let tmp = app.data_dir().join("tmp");
    assert_eq!(
        std::fs::read_dir(tmp).expect("tmp").count(),
        0,
        "no temp file was ever made"
    );
    assert!(app.leftovers().is_empty());
}

/// A handler of one's own: logs calls, skips `.exe` files, stops the upload at a file named
/// `stop`, and upper-cases text.
struct Custom {
    log: Arc<Mutex<Vec<String>>>,
}

impl UploadHandler for Custom {
    fn name(&self) -> &'static str {
        "custom"
    }
    fn chunk_size(&self) -> Option<usize> {
        Some(1000)
    }
    fn new_file(&mut self, f: &FileInfo) -> Result<NewFile, HandlerError> {
        self.log
            .lock()
            .expect("log")
            .push(format!("new {}", f.file_name));
        if f.file_name.ends_with(".exe") {
            return Err(HandlerError::SkipFile);
        }
        if f.file_name == "stop" {
            return Err(HandlerError::StopUpload {
                connection_reset: false,
            });
        }
        Ok(NewFile::Continue)
    }
    fn receive_chunk(&mut self, chunk: Bytes, _start: u64) -> Result<Option<Bytes>, HandlerError> {
        assert!(
            chunk.len() <= 1000,
            "the chain honours the smallest chunk size"
        );
        Ok(Some(Bytes::from(chunk.to_ascii_uppercase())))
    }
    fn upload_complete(&mut self) -> Result<(), HandlerError> {
        self.log.lock().expect("log").push("complete".into());
        Ok(())
    }
    fn upload_interrupted(&mut self) {
        self.log.lock().expect("log").push("interrupted".into());
    }
}

async fn custom_app(log: &Arc<Mutex<Vec<String>>>) -> TestApp {
    let log = log.clone();
    spawn_app_with(
        &[("file_upload_max_memory_size", "16KiB")],
        move |mut state| {
            let names = [HandlerName::Checksum, HandlerName::Spill];
            state.files_chain = Arc::new(move |ctx: &ChainContext| {
                let mut handlers: Vec<Box<dyn UploadHandler>> =
                    vec![Box::new(Custom { log: log.clone() })];
                handlers.extend(build_handlers(&names, ctx));
                Chain::new(handlers, 64 * 1024)
            });
            state
        },
    )
    .await
}

#[tokio::test]
async fn a_route_chain_of_ones_own_transforms_skips_and_stops() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let app = custom_app(&log).await;
    let res = upload(
        &app,
        vec![
            ("a.txt", b"hello world".to_vec()),
            ("virus.exe", b"MZ".to_vec()),
            ("b.txt", b"bee".to_vec()),
        ],
    )
    .await;
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.expect("json");
    let files = v["files"].as_array().expect("files");
    assert_eq!(files.len(), 2, "the .exe was skipped: {v}");
    assert_eq!(
        app.download(files[0]["id"].as_str().expect("id")).await,
        b"HELLO WORLD"
    );
    assert_eq!(files[0]["checksums"]["sha256"], sha256_hex(b"HELLO WORLD"));
    assert!(log.lock().expect("log").contains(&"complete".to_string()));

    // StopUpload: files completed before it are kept, the rest is not read.
    let res = upload(
        &app,
        vec![
            ("c.txt", b"kept".to_vec()),
            ("stop", b"x".to_vec()),
            ("d.txt", b"never".to_vec()),
        ],
    )
    .await;
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["stopped"], true);
    assert_eq!(v["files"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["files"][0]["name"], "c.txt");
    assert_eq!(app.list(&app.token).await.len(), 3);
}

#[tokio::test]
async fn upload_interrupted_runs_when_the_client_disconnects() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let app = custom_app(&log).await;
    let addr = app.addr;
    let token = app.token.clone();
    blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        let head = format!(
            "POST /api/files HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 5000000\r\n\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"gone.txt\"\r\n\r\n"
        );
        s.write_all(head.as_bytes()).expect("write");
        s.write_all(&vec![b'a'; 200_000]).expect("write");
        std::thread::sleep(Duration::from_millis(300));
    })
    .await;
    let mut seen = false;
    for _ in 0..100 {
        if log
            .lock()
            .expect("log")
            .contains(&"interrupted".to_string())
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "{:?}", log.lock().expect("log"));
    assert!(app.list(&app.token).await.is_empty());
    assert!(app.leftovers().is_empty(), "{:?}", app.leftovers());
}

/// Takes the raw body over when the boundary asks for it (Django's `handle_raw_input`) and
/// keeps it whole as one file.
struct RawTaker {
    body: Vec<u8>,
}

impl UploadHandler for RawTaker {
    fn name(&self) -> &'static str {
        "raw-taker"
    }
    fn handle_raw_input(&mut self, raw: &RawInput) -> Result<bool, HandlerError> {
        Ok(raw.boundary.as_deref() == Some("take-it-raw"))
    }
    fn receive_raw(&mut self, chunk: Bytes) -> Result<(), HandlerError> {
        self.body.extend_from_slice(&chunk);
        Ok(())
    }
    fn raw_complete(&mut self) -> Result<RawOutcome, HandlerError> {
        let body = std::mem::take(&mut self.body);
        let file = CompletedFile {
            info: FileInfo {
                field_name: "raw".into(),
                file_name: "raw.bin".into(),
                ..Default::default()
            },
            size: body.len() as u64,
            facts: FileFacts::default(),
            file: UploadedFile {
                stored_size: body.len() as u64,
                body: FileBody::Memory(Bytes::from(body)),
            },
        };
        Ok(RawOutcome {
            fields: vec![("taken".into(), "raw".into())],
            files: vec![file],
        })
    }
    fn receive_chunk(&mut self, chunk: Bytes, _start: u64) -> Result<Option<Bytes>, HandlerError> {
        Ok(Some(chunk))
    }
}

#[tokio::test]
async fn handle_raw_input_lets_a_handler_take_the_body_over() {
    let app = spawn_app_with(&[], |mut state| {
        state.files_chain = Arc::new(|ctx: &ChainContext| {
            let names = [HandlerName::Checksum, HandlerName::Spill];
            let mut handlers: Vec<Box<dyn UploadHandler>> =
                vec![Box::new(RawTaker { body: Vec::new() })];
            handlers.extend(build_handlers(&names, ctx));
            Chain::new(handlers, 64 * 1024)
        });
        state
    })
    .await;
    let body = b"not even multipart, taken as it is".to_vec();
    let res = app
        .auth(app.client.post(app.url("/api/files")))
        .header("Content-Type", "multipart/form-data; boundary=take-it-raw")
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["fields"]["taken"], serde_json::json!(["raw"]));
    assert_eq!(
        app.download(v["files"][0]["id"].as_str().expect("id"))
            .await,
        body
    );

    // Other requests are parsed as usual by the same chain.
    let res = upload(&app, vec![("normal.txt", b"normal".to_vec())]).await;
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["files"][0]["checksums"]["sha256"], sha256_hex(b"normal"));
}
