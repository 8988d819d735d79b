//! S3-compatible storage against a real Garage (started per test by scripts/garage-test.sh;
//! scripts/setup-e2e.sh builds Garage): the storage contract itself (staging, resume, reading
//! back, assembly, ranges), and two stateless nodes that share only a PostgreSQL catalog and
//! the bucket, each with its own data folder.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use chute::storage::s3::{S3Config, S3Storage};
use chute::storage::{Source, Storage};
use futures::StreamExt;
use reqwest::Method;

use crate::helpers::*;
use crate::postgres::Postgres;
use crate::servers::ScriptServer;
use crate::tus::{create, h, patch, req};

/// A single-node Garage started by `scripts/garage-test.sh`, with the bucket and key above.
pub(crate) struct Garage {
    pub s3_port: u16,
    server: ScriptServer,
}

fn config(s3_port: u16, prefix: &str) -> S3Config {
    S3Config {
        bucket: S3_BUCKET.into(),
        prefix: prefix.into(),
        endpoint: Some(format!("http://127.0.0.1:{s3_port}")),
        region: "garage".into(),
        access_key_id: S3_KEY_ID.into(),
        secret_access_key: S3_SECRET.into(),
        path_style: true,
    }
}

impl Garage {
    pub(crate) async fn start() -> Garage {
        let (s3_port, rpc, admin) = (free_port(), free_port(), free_port());
        let server = ScriptServer::spawn("Garage", "garage-test.sh", "TERM", |dir| {
            vec![
                dir.display().to_string(),
                s3_port.to_string(),
                rpc.to_string(),
                admin.to_string(),
            ]
        });
        let mut g = Garage { s3_port, server };
        g.wait_ready().await;
        g
    }

    /// Stops Garage (TERM) and starts it again on the same data and ports.
    pub(crate) async fn restart(&mut self) {
        self.server.restart();
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let probe = Arc::new(S3Storage::open(&config(self.s3_port, "ready/")));
        self.server
            .wait_until(Duration::from_secs(60), || {
                let probe = probe.clone();
                async move { blocking(move || probe.check()).await.is_ok() }
            })
            .await;
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    fn config(&self, prefix: &str) -> S3Config {
        config(self.s3_port, prefix)
    }

    fn storage(&self, prefix: &str) -> Arc<S3Storage> {
        Arc::new(S3Storage::open(&self.config(prefix)))
    }

    /// Settings of a chute node that keeps its files under `prefix` in the bucket.
    pub(crate) fn settings(&self, prefix: &str) -> Vec<(&'static str, String)> {
        s3_settings(&self.endpoint(), prefix).to_vec()
    }
}

async fn read_object(s: &S3Storage, key: &str, start: u64, len: u64) -> Vec<u8> {
    let mut stream = s.open(key, start, len).await.expect("open");
    let mut out = Vec::new();
    while let Some(c) = stream.next().await {
        out.extend_from_slice(&c.expect("chunk"));
    }
    out
}

#[tokio::test]
async fn the_storage_contract_holds_on_garage() {
    let g = Garage::start().await;
    let s = g.storage("contract/");
    // 20 MiB + a bit: several segments while staging, several parts when placed.
    let data = bytes(20 * 1024 * 1024 + 333, 90);
    let d = data.clone();
    let st = s.clone();
    blocking(move || {
        // Stage in two requests; the second breaks off after writing but before syncing.
        let mut w = st.begin("up/1").expect("begin");
        w.write(&d[..3_000_000]).expect("write");
        assert_eq!(w.sync().expect("sync"), 3_000_000);
        drop(w);
        let mut w = st.resume("up/1", 3_000_000).expect("resume");
        w.write(&d[3_000_000..12_000_000])
            .expect("write past a segment");
        drop(w); // never synced: the 8 MiB segment written on the way is not acknowledged
        // The client resumes at the acknowledged offset; what came after it is dropped.
        let mut w = st.resume("up/1", 3_000_000).expect("resume again");
        w.write(&d[3_000_000..]).expect("write");
        assert_eq!(w.sync().expect("sync"), d.len() as u64);
        drop(w);
        assert!(
            matches!(
                st.resume("up/1", d.len() as u64 + 1),
                Err(chute::storage::StorageError::ShortStage { .. })
            ),
            "a stage shorter than recorded is refused"
        );
        let mut back = Vec::new();
        st.read_staged("up/1")
            .expect("read")
            .read_to_end(&mut back)
            .expect("bytes");
        assert_eq!(sha256_hex(&back), sha256_hex(&d), "staged bytes read back");
        st.put("ab/file1", Source::Staged("up/1")).expect("place");
        // The segments stay until the caller aborts them (after recording the file), so a
        // crash in between can place them again, under the same key.
        let mut again = Vec::new();
        st.read_staged("up/1")
            .expect("read")
            .read_to_end(&mut again)
            .expect("bytes");
        assert_eq!(
            sha256_hex(&again),
            sha256_hex(&d),
            "still staged after placing"
        );
        st.put("ab/file1", Source::Staged("up/1"))
            .expect("place again");
        st.abort("up/1").expect("abort");
        let mut rest = Vec::new();
        st.read_staged("up/1")
            .expect("read")
            .read_to_end(&mut rest)
            .expect("bytes");
        assert!(rest.is_empty(), "the segments are gone once aborted");
        assert_eq!(st.len("ab/file1").expect("len"), d.len() as u64);
        st.put("ab/small", Source::Bytes(b"tiny")).expect("small");
    })
    .await;
    let whole = read_object(&s, "ab/file1", 0, data.len() as u64).await;
    assert_eq!(sha256_hex(&whole), sha256_hex(&data));
    let mid = read_object(&s, "ab/file1", 9_000_000, 1000).await;
    assert_eq!(mid, &data[9_000_000..9_001_000], "ranges are served by S3");
    assert_eq!(read_object(&s, "ab/small", 1, 2).await, b"in");

    // Staged in large requests, the segments are copied by the bucket itself (UploadPartCopy;
    // CopyObject for a single segment, whatever its size); 4 MiB requests are gathered into a
    // part first, and the next large segment is copied again; short tails are sent. The bytes
    // come out the same every way.
    let shapes: [&[usize]; 4] = [
        &[8 << 20, 8 << 20, 777],
        &[6 << 20],
        &[3 << 20],
        &[4 << 20, 4 << 20, 6 << 20, 100],
    ];
    for (i, sizes) in shapes.into_iter().enumerate() {
        let data = bytes(sizes.iter().sum(), 91 + i as u64);
        let (d, st, sizes) = (data.clone(), s.clone(), sizes.to_vec());
        blocking(move || {
            let mut w = st.begin(&format!("up/copy{i}")).expect("begin");
            let mut at = 0;
            for n in sizes {
                w.write(&d[at..at + n]).expect("write");
                at += n;
                assert_eq!(w.sync().expect("sync"), at as u64);
            }
            drop(w);
            st.put(
                &format!("ab/copy{i}"),
                Source::Staged(&format!("up/copy{i}")),
            )
            .expect("place");
        })
        .await;
        let got = read_object(&s, &format!("ab/copy{i}"), 0, data.len() as u64).await;
        assert_eq!(sha256_hex(&got), sha256_hex(&data), "shape {i}");
    }
    let st = s.clone();
    blocking(move || {
        st.delete("ab/file1").expect("delete");
        st.delete("ab/file1").expect("absent is not an error");
        assert!(st.len("ab/file1").is_err());
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        std::fs::write(tmp.path(), vec![5u8; 9 << 20]).expect("write");
        let path = tmp.into_temp_path();
        st.put("ab/fromtemp", Source::TempFile(&path))
            .expect("put temp");
        assert_eq!(st.len("ab/fromtemp").expect("len"), 9 << 20);
    })
    .await;
}

#[tokio::test]
async fn stateless_nodes_share_only_the_catalog_and_the_bucket() {
    let pg = Postgres::start().await;
    let g = Garage::start().await;
    let url = pg.database("s3_nodes").await;
    let mut settings: Vec<(&str, String)> = g.settings("nodes/");
    settings.push(("database_url", url));
    let refs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Each node has a data folder of its own (temporary files only).
    let a = spawn_app(&refs).await;
    let b = spawn_node(&refs, &a.token).await;
    assert_ne!(a.data_dir(), b.data_dir());

    // A tus upload begun on one node and finished on the other.
    let data = bytes(12 * 1024 * 1024 + 5, 91);
    let loc = create(&a, data.len() as u64, "filename czMuYmlu").await;
    let res = patch(&a, &loc, 0, &data[..5_000_000]).await;
    assert_eq!(res.status(), 204);
    let res = req(&b, Method::HEAD, &loc).send().await.expect("head");
    assert_eq!(h(&res, "upload-offset"), Some("5000000"));
    let res = patch(&b, &loc, 5_000_000, &data[5_000_000..]).await;
    assert_eq!(res.status(), 204);

    // A form upload on node b (spilled to b's own temp folder, then put in the bucket).
    let form = bytes(3 * 1024 * 1024, 92);
    let res = b
        .auth(b.client.post(b.url("/api/files")))
        .multipart(reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(form.clone()).file_name("form.bin"),
        ))
        .send()
        .await
        .expect("form");
    assert_eq!(res.status(), 201);

    let files = a.list(&a.token).await;
    assert_eq!(files.len(), 2);
    for f in &files {
        let want = if f["name"] == "s3.bin" { &data } else { &form };
        assert_eq!(f["checksums"]["sha256"], sha256_hex(want), "{f}");
        let id = f["id"].as_str().expect("id");
        assert_eq!(sha256_hex(&a.download(id).await), sha256_hex(want));
        assert_eq!(sha256_hex(&b.download(id).await), sha256_hex(want));
    }
    let id = files
        .iter()
        .find(|f| f["name"] == "s3.bin")
        .and_then(|f| f["id"].as_str())
        .expect("tus file");
    let res = a
        .auth(a.client.get(a.url(&format!("/api/files/{id}"))))
        .header("Range", "bytes=10000000-10000099")
        .send()
        .await
        .expect("range");
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.bytes().await.expect("bytes").as_ref(),
        &data[10_000_000..10_000_100]
    );
    let res = b
        .auth(b.client.delete(b.url(&format!("/api/files/{id}"))))
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);
    let res = a
        .auth(a.client.get(a.url(&format!("/api/files/{id}"))))
        .send()
        .await
        .expect("gone");
    assert_eq!(res.status(), 404);
    let health = a
        .client
        .get(a.url("/healthz"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200, "the bucket is the node's storage");
    assert!(a.leftovers().is_empty() && b.leftovers().is_empty());
}
