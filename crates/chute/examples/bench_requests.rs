//! The per-request benchmark's client: sends N small requests over keep-alive connections,
//! CONCURRENCY at a time, and prints the rate and the latency percentiles. It measures what a
//! request costs chute beside its bytes: authentication (an API token, or a signed token to
//! verify), CORS, and the proxy layer's rewriting of the answer's URLs.
//!
//! Usage: `bench_requests URL TOKEN N CONCURRENCY [NAME:VALUE]...` (extra request headers).
//! Every answer must be 2xx. Prints `<requests/s> <p50 µs> <p99 µs>`.

use std::sync::Arc;
use std::time::Instant;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, token, n, conc, headers @ ..] = args.as_slice() else {
        return Err("usage: bench_requests URL TOKEN N CONCURRENCY [NAME:VALUE]...".into());
    };
    let (n, conc): (usize, usize) = (n.parse()?, conc.parse()?);
    let mut extra = reqwest::header::HeaderMap::new();
    for h in headers {
        let (k, v) = h.split_once(':').ok_or("a header is NAME:VALUE")?;
        extra.insert(
            reqwest::header::HeaderName::from_bytes(k.trim().as_bytes())?,
            v.trim().parse()?,
        );
    }
    let client = reqwest::Client::builder().default_headers(extra).build()?;
    let (url, token) = (Arc::new(url.clone()), Arc::new(token.clone()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Warm the connections and the server's caches first.
    for _ in 0..conc.min(n) {
        client
            .get(url.as_str())
            .bearer_auth(token.as_str())
            .send()
            .await?
            .error_for_status()?;
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (client, url, token, next) = (client.clone(), url.clone(), token.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let t = Instant::now();
                let res = client
                    .get(url.as_str())
                    .bearer_auth(token.as_str())
                    .send()
                    .await?;
                let st = res.status();
                res.bytes().await?;
                if !st.is_success() {
                    return Err::<Vec<u128>, Error>(format!("answered {st}").into());
                }
                lat.push(t.elapsed().as_micros());
            }
            Ok(lat)
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.extend(t.await??);
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!("{:.0} {} {}", lat.len() as f64 / secs, pct(0.5), pct(0.99));
    Ok(())
}
