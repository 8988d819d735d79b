//! The benchmark's tus client: uploads files to any tus 1.0 server (chute, rustus, @tus/server)
//! the same way, and prints the MB/s of the whole run (creation to last PATCH answered).
//!
//! Usage: `bench_tus ENDPOINT TOKEN CHUNK_BYTES FILE...` — each FILE is one upload, all run
//! concurrently; CHUNK_BYTES 0 sends each file in one PATCH. TOKEN "-" sends no Authorization.
//! Prints `<bytes> <seconds> <MB/s>`.
//! BENCH_TUS_HTTP=1 speaks only HTTP/1.1 (a connection per concurrent request); =2 speaks
//! only HTTP/2 (one connection, a stream per request; h2c with prior knowledge on http://).
//! BENCH_TUS_INSECURE=1 accepts any certificate (the bench's self-signed one).

use std::time::Instant;

use bytes::Bytes;

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn upload(
    client: reqwest::Client,
    endpoint: String,
    token: String,
    chunk: usize,
    data: Bytes,
    t0: Instant,
) -> Result<(f64, f64), Error> {
    let auth = |rb: reqwest::RequestBuilder| {
        let rb = rb.header("Tus-Resumable", "1.0.0");
        if token == "-" {
            rb
        } else {
            rb.bearer_auth(&token)
        }
    };
    let res = auth(client.post(&endpoint))
        .header("Upload-Length", data.len().to_string())
        .header("Upload-Metadata", "filename YmVuY2guYmlu")
        .send()
        .await?;
    if res.status().as_u16() != 201 {
        return Err(format!("creation answered {}", res.status()).into());
    }
    let loc = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Location")?
        .to_string();
    let created = t0.elapsed().as_secs_f64();
    let url = reqwest::Url::parse(&endpoint)?.join(&loc)?;
    let step = if chunk == 0 { data.len().max(1) } else { chunk };
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + step).min(data.len());
        let res = auth(client.patch(url.clone()))
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string())
            .body(data.slice(offset..end))
            .send()
            .await?;
        if res.status().as_u16() != 204 {
            return Err(format!("PATCH at {offset} answered {}", res.status()).into());
        }
        offset = end;
    }
    Ok((created, t0.elapsed().as_secs_f64()))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        return Err("usage: bench_tus ENDPOINT TOKEN CHUNK_BYTES FILE...".into());
    }
    let (endpoint, token, chunk) = (args[0].clone(), args[1].clone(), args[2].parse()?);
    let mut files = Vec::new();
    for f in &args[3..] {
        files.push(Bytes::from(std::fs::read(f)?));
    }
    let total: usize = files.iter().map(Bytes::len).sum();
    let mut client = reqwest::Client::builder().pool_max_idle_per_host(64);
    match std::env::var("BENCH_TUS_HTTP").as_deref() {
        Ok("1") => client = client.http1_only(),
        Ok("2") => client = client.http2_prior_knowledge(),
        _ => {}
    }
    if std::env::var_os("BENCH_TUS_INSECURE").is_some() {
        client = client.tls_danger_accept_invalid_certs(true);
    }
    let client = client.build()?;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for data in files {
        tasks.push(tokio::spawn(upload(
            client.clone(),
            endpoint.clone(),
            token.clone(),
            chunk,
            data,
            t0,
        )));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.push(t.await??);
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("{total} {secs:.3} {:.0}", total as f64 / secs / 1e6);
    if std::env::var_os("BENCH_TUS_TIMES").is_some() {
        // When each upload was created and finished (ms from the start): where the time goes.
        let ms = |v: f64| (v * 1000.0).round() as u64;
        let mut created: Vec<u64> = times.iter().map(|t| ms(t.0)).collect();
        let mut done: Vec<u64> = times.iter().map(|t| ms(t.1)).collect();
        created.sort_unstable();
        done.sort_unstable();
        let q = |v: &[u64]| format!("min {} med {} max {}", v[0], v[v.len() / 2], v[v.len() - 1]);
        eprintln!("created (ms): {}; done (ms): {}", q(&created), q(&done));
    }
    Ok(())
}
