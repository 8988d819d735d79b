//! The benchmark's physical-limit probe: an HTTP server on loopback that reads every request
//! body and throws it away, so a client streaming into it measures what loopback HTTP can
//! carry on this machine. Usage: `bench_sink 127.0.0.1:0` (prints the address).

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use futures::StreamExt;

async fn discard(body: Body) -> String {
    let mut stream = body.into_data_stream();
    let mut n = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        n += chunk.len() as u64;
    }
    format!("{n}\n")
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("sink listening on http://{}", listener.local_addr()?);
    let app = Router::new().fallback(post(discard));
    axum::serve(listener, app).await
}
