//! Wiring: opens the embedded stores from the settings, bootstraps the first user, and serves
//! the router over hyper with the connection-level limits (header size and time, graceful
//! shutdown) that axum's own `serve` does not expose.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::config::Settings;
use crate::hooks::Deliverer;
use crate::http::{AppState, router};
use crate::meta::MetaStore;
use crate::meta::postgres::PgMeta;
use crate::meta::sqlite::SqliteMeta;
use crate::storage::Storage;
use crate::storage::local::LocalStorage;
use crate::storage::s3::{S3Config, S3Storage};
use crate::upload::Engine;

/// Opens the metadata store: PostgreSQL when `database_url` is set, else SQLite in the data
/// directory (created when missing).
pub async fn open_meta(settings: &Settings) -> anyhow::Result<Arc<dyn MetaStore>> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
    if !settings.database_url.is_empty() {
        let max = u32::try_from(settings.database_max_connections).unwrap_or(u32::MAX);
        let meta = PgMeta::open(&settings.database_url, max, settings.upload_fsync)
            .await
            .context("opening the PostgreSQL database (database_url)")?;
        return Ok(Arc::new(meta));
    }
    let meta = SqliteMeta::open_with(&settings.database_path(), settings.upload_fsync)
        .await
        .with_context(|| format!("opening {}", settings.database_path().display()))?;
    Ok(Arc::new(meta))
}

/// The bucket's settings, when `storage_url` names one.
pub fn s3_config(settings: &Settings) -> Option<S3Config> {
    let crate::config::StorageUrl::S3 { bucket, prefix } = &settings.storage_url else {
        return None;
    };
    Some(S3Config {
        bucket: bucket.clone(),
        prefix: prefix.clone(),
        endpoint: (!settings.s3_endpoint.is_empty()).then(|| settings.s3_endpoint.clone()),
        region: settings.s3_region.clone(),
        access_key_id: settings.s3_access_key_id.clone(),
        secret_access_key: settings.s3_secret_access_key.clone(),
        path_style: settings.s3_path_style,
    })
}

/// Opens everything the server needs.
pub async fn open_state(settings: Settings) -> anyhow::Result<AppState> {
    let meta = open_meta(&settings).await?;
    std::fs::create_dir_all(settings.temp_dir())
        .with_context(|| format!("creating temp dir {}", settings.temp_dir().display()))?;
    if let Some(s3) = s3_config(&settings) {
        let storage: Arc<dyn Storage> = Arc::new(S3Storage::open(&s3));
        let engine = Engine::new(storage, meta, Arc::new(settings));
        return AppState::new(engine);
    }
    let mut local = LocalStorage::open(
        settings.files_dir(),
        settings.file_upload_permissions.0,
        settings.file_upload_directory_permissions.0,
    )
    .with_context(|| format!("opening storage {}", settings.files_dir().display()))?;
    if !settings.upload_fsync {
        local = local.without_fsync();
    }
    let storage: Arc<dyn Storage> = Arc::new(local);
    let engine = Engine::new(storage, meta, Arc::new(settings));
    AppState::new(engine)
}

/// On the first start (no users yet) creates the staff user `admin` and returns its token.
pub async fn bootstrap_admin(meta: &dyn MetaStore) -> anyhow::Result<Option<String>> {
    if meta.count_users().await? > 0 {
        return Ok(None);
    }
    let user = match meta.create_user("admin", true).await {
        Ok(u) => u,
        // Another node sharing the catalog made it first.
        Err(crate::meta::MetaError::Conflict(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let token = crate::auth::issue_token(meta, &user, "bootstrap").await?;
    Ok(Some(token))
}

/// Deletes expired uploads, expires idle upload sessions and prunes events past
/// `events_retention`, every `upload_sweep_interval` (as `chute gc` does).
fn spawn_sweeper(engine: Engine) -> Option<tokio::task::JoinHandle<()>> {
    let every = engine.settings.upload_sweep_interval.0;
    if every.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match engine.sweep_expired(false).await {
                Ok(gone) if !gone.is_empty() => {
                    tracing::info!(count = gone.len(), "deleted expired uploads")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sweeping expired uploads failed"),
            }
            match engine.sweep_sessions(false).await {
                Ok(gone) if !gone.is_empty() => {
                    tracing::info!(count = gone.len(), "expired idle upload sessions")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "expiring upload sessions failed"),
            }
            if let Err(e) = engine.prune_events().await {
                tracing::warn!(error = %e, "pruning old events failed");
            }
        }
    }))
}

/// Serves until `shutdown` resolves, then drains (see [`drain`]).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = router(state.clone());
    serve_app(listener, state, app, shutdown).await
}

/// hyper's read buffer: the most request-head bytes hyper takes in, and the largest body chunk.
/// 256 KiB against the former 32 KiB: 1.1-1.5x the throughput of one upload; 1 MiB was a bit
/// faster still but doubled the memory of 64 concurrent uploads (measured with bench_tus).
const HYPER_BUF: usize = 256 << 10;

/// An HTTP/2 stream's receive window. A stream sends at most its window per round trip:
/// hyper's default (1 MiB) holds one upload to 50 MB/s at 20 ms of round trip, 4 MiB to
/// 200 MB/s, as a TCP connection of HTTP/1.1 would do with today's kernel buffers. On
/// loopback it makes no difference (bench/h2.sh: 0.87-0.89x of HTTP/1.1 with either).
const H2_STREAM_WINDOW: u32 = 4 << 20;
/// The connection's window, shared by its streams (64 uploads of 1 MiB in flight).
const H2_CONNECTION_WINDOW: u32 = 64 << 20;

/// Serves HTTP/1.1 and HTTP/2 on one port: HTTP/2 by ALPN over TLS, or by its preface in
/// clear text (h2c with prior knowledge). The same limits apply to a request either way:
/// header time and size, and on HTTP/2 at most `http2_max_concurrent_streams` at once.
fn connection_builder(
    settings: &Settings,
) -> hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor> {
    let mut http =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let header_bytes = settings.max_request_header_size.bytes() as usize;
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.request_header_timeout.0)
        // hyper's read buffer also carries bodies: a small one means many small body chunks.
        // Headers up to HYPER_BUF are measured by chute itself (431 with a JSON error, see
        // http::header_limit_layer); only beyond that does hyper answer 431 on its own.
        .max_buf_size(HYPER_BUF.max(header_bytes))
        .keep_alive(true);
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(
            u32::try_from(settings.http2_max_concurrent_streams).unwrap_or(u32::MAX),
        )
        // chute measures headers itself up to HYPER_BUF (431 with JSON), as on HTTP/1.1.
        .max_header_list_size(u32::try_from(HYPER_BUF.max(header_bytes)).unwrap_or(u32::MAX))
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW);
    http
}

/// How long resumable uploads still writing after `shutdown_grace` have to end once asked
/// (they sync what they received, record it and answer), before their connections are cut.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// The drain (see `http::drain`): no new connection, 503 to new requests, `shutdown_grace`
/// for those in flight; then resumable uploads still writing are asked to end, keeping their
/// durable bytes and releasing their locks (other nodes take them over), and whatever is
/// left is cut.
async fn drain(
    state: &AppState,
    listener: TcpListener,
    graceful: GracefulShutdown,
    mut conns: tokio::task::JoinSet<()>,
) {
    state.drain.start();
    drop(listener);
    let grace = state.engine.settings.shutdown_grace.0;
    tracing::info!(
        connections = conns.len(),
        grace_s = grace.as_secs_f64(),
        "draining: no new connections, 503 to new requests"
    );
    // Idle keep-alive connections close now; busy ones after their request.
    let all_closed = graceful.shutdown();
    tokio::pin!(all_closed);
    let finished = tokio::time::timeout(grace, &mut all_closed).await.is_ok();
    if !finished {
        let asked = state.engine.uploads.release_all();
        tracing::warn!(
            uploads = asked,
            "requests still running after shutdown_grace: resumable uploads are asked to end, \
             keeping their bytes"
        );
        if tokio::time::timeout(RELEASE_WAIT, &mut all_closed)
            .await
            .is_err()
        {
            tracing::warn!(connections = conns.len(), "cutting the connections left");
        }
    }
    conns.shutdown().await;
}

/// Like [`serve`], for an app that mounts chute's router among routes of its own.
pub async fn serve_app(
    listener: TcpListener,
    state: AppState,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let settings = state.engine.settings.clone();
    let sweeper = spawn_sweeper(state.engine.clone());
    let deliverer = match Deliverer::new(
        state.engine.meta.clone(),
        &settings,
        state.engine.metrics.clone(),
    ) {
        Ok(Some(d)) => {
            let events = &state.engine.events;
            Some(tokio::spawn(
                d.run(events.subscribe(), events.take_progress()),
            ))
        }
        Ok(None) => None,
        Err(e) => return Err(std::io::Error::other(format!("hooks: {e}"))),
    };
    let metrics_server = if settings.metrics_listen.is_empty() {
        None
    } else {
        let l = TcpListener::bind(&settings.metrics_listen)
            .await
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("metrics_listen {}: {e}", settings.metrics_listen),
                )
            })?;
        tracing::info!(addr = %l.local_addr()?, "metrics served at /metrics");
        let app = crate::http::metrics::router(state.clone());
        Some(tokio::spawn(async move { axum::serve(l, app).await }))
    };
    let http = connection_builder(&settings);
    let tls = crate::tls::Tls::from_settings(&settings).map_err(std::io::Error::other)?;
    let tls_watcher = tls.as_ref().map(crate::tls::Tls::spawn_watcher);
    let graceful = GracefulShutdown::new();
    // The connections' tasks, so that those left after the drain can be cut.
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not die.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // The peer's address, for handlers that report it (the blocking hooks).
                let peer = stream.peer_addr().ok();
                let svc = TowerToHyperService::new(app.clone().map_request(
                    move |mut r: hyper::Request<hyper::body::Incoming>| {
                        if let Some(p) = peer {
                            r.extensions_mut().insert(axum::extract::ConnectInfo(p));
                        }
                        r
                    },
                ));
                let (http, tls, watcher) = (http.clone(), tls.clone(), graceful.watcher());
                let handshake = settings.request_header_timeout.0;
                conns.spawn(async move {
                    let served = match tls {
                        None => {
                            let conn = http.serve_connection(TokioIo::new(stream), svc);
                            watcher.watch(conn.into_owned()).await
                        }
                        Some(tls) => {
                            // A client gets as long for its handshake as for its headers.
                            let accepted =
                                tokio::time::timeout(handshake, tls.acceptor().accept(stream));
                            let stream = match accepted.await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => return,
                            };
                            let conn = http.serve_connection(TokioIo::new(stream), svc);
                            watcher.watch(conn.into_owned()).await
                        }
                    };
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            // Finished connections leave the set.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drain(&state, listener, graceful, conns).await;
    if let Some(s) = sweeper {
        s.abort();
    }
    if let Some(d) = deliverer {
        // Events not yet acknowledged stay in the outbox: the next start sends them.
        d.abort();
    }
    if let Some(w) = tls_watcher {
        w.abort();
    }
    // Last: it answered /readyz (503) through the drain.
    if let Some(m) = metrics_server {
        m.abort();
    }
    Ok(())
}
