//! The benchmark's physical-limit probe: an HTTP server on loopback that reads every request
//! body and throws it away, so a client streaming into it measures what loopback HTTP can
//! carry on this machine. Usage: `bench_sink 127.0.0.1:0` (prints the address).
//!
//! It also answers just enough of tus for the tus benchmark's client: a POST carrying
//! `Tus-Resumable` gets 201 and a Location, a PATCH is read, thrown away and answered 204 with
//! the offset it reached. Nothing is checked: the ceiling of any tus server driven by the same
//! client on this machine. Given a folder (`bench_sink 127.0.0.1:0 DIR`), it also stores: each
//! tus upload is a file there, PATCH bodies appended as they arrive with plain blocking writes
//! on the runtime's threads (no catalog, no fsync, no hand-off): the ceiling of a tus server
//! that keeps the bytes.

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static STORE: OnceLock<PathBuf> = OnceLock::new();

async fn read_all(body: Body, mut file: Option<std::fs::File>) -> std::io::Result<u64> {
    let mut stream = body.into_data_stream();
    let mut n = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        n += chunk.len() as u64;
        if let Some(f) = file.as_mut() {
            f.write_all(&chunk)?;
        }
    }
    Ok(n)
}

fn stored(id: &str, create: bool) -> std::io::Result<Option<std::fs::File>> {
    let Some(dir) = STORE.get() else {
        return Ok(None);
    };
    let path = dir.join(id.trim_start_matches("/sink/"));
    let file = if create {
        std::fs::File::create(path)?
    } else {
        std::fs::OpenOptions::new().append(true).open(path)?
    };
    Ok(Some(file))
}

async fn sink(method: Method, uri: axum::http::Uri, headers: HeaderMap, body: Body) -> Response {
    let tus = headers.contains_key("tus-resumable");
    let file = match method {
        Method::PATCH => stored(uri.path(), false),
        _ => Ok(None),
    };
    let n = match file {
        Ok(file) => read_all(body, file).await,
        Err(e) => Err(e),
    };
    let n = match n {
        Ok(n) => n,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let offset = |name: &str| -> u64 {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    match method {
        Method::POST if tus => {
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let location = format!("/sink/{id}");
            if let Err(e) = stored(&location, true) {
                return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
            }
            (
                StatusCode::CREATED,
                [("Location", location), ("Tus-Resumable", "1.0.0".into())],
            )
                .into_response()
        }
        Method::OPTIONS => StatusCode::NO_CONTENT.into_response(),
        Method::PATCH => {
            let reached = (offset("upload-offset") + n).to_string();
            (
                StatusCode::NO_CONTENT,
                [
                    ("Upload-Offset", reached),
                    ("Tus-Resumable", "1.0.0".into()),
                ],
            )
                .into_response()
        }
        _ => format!("{n}\n").into_response(),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    if let Some(dir) = std::env::args().nth(2) {
        let _ = STORE.set(PathBuf::from(dir));
    }
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("sink listening on http://{}", listener.local_addr()?);
    let app = Router::new().fallback(sink);
    axum::serve(listener, app).await
}
