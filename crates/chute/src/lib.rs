//! chute: a file-upload server and library.
//!
//! # Layers
//! Each layer names only layers below it (`scripts/layers.sh` checks this in CI):
//! ```text
//! http/            the only place axum lives
//!   mod.rs           the router; chooses the protocol of a request (the draft's requests
//!                    carry Upload-Complete and may come to /tus/ and /api/files too)
//!   multipart.rs     POST /api/files: Django-style form uploads      } protocol adapters,
//!   chunked.rs, chunked/ django-chunked-upload (receive.rs: a chunk) } side by side; none
//!   tus.rs, tus/     tus 1.0 (tus/concat.rs: concatenation)          } names another but
//!   ietf.rs          the IETF resumable-upload draft                 } ietf -> multipart
//!   sessions.rs      upload sessions (upload.views)                  } (a replayed form)
//!   files.rs         the file API: list, download, delete            }
//!   events.rs        GET /api/events: the pull feed of events        }
//!   me.rs            GET /api/me: the caller as chute sees them      }
//!   links.rs         download links: POST /api/files/{id}/link, /dl/ }
//!   ui.rs            the upload page at / (ui/src, ui/vendor)       }
//!   cors.rs          CORS for pages on other origins, around every route
//!   proxies.rs       behind a proxy or a prefix: public URLs, the client's address
//!   resumable.rs     what tus and the draft share: load, lock, append (AppendError), settle,
//!                    terminate, the finished file
//!   form.rs          receiving multipart/form-data (multipart, chunked, sessions)
//!   headers.rs       header parsing; serve.rs: a stored file as JSON and as bytes
//!   body.rs          guarded request bodies (sizes, idle and slow clients, total time)
//!   auth.rs          who a request is (API token or signed token) and their limits
//!   admission.rs, progress.rs, health.rs, error.rs + error_code.rs
//!   origin.rs        a request's client address and forwarded headers (blocking hooks)
//!   access.rs        around every route: X-Request-Id, the access log line, request metrics
//!   metrics.rs       GET /metrics (metrics_token), and the router of metrics_listen
//! upload/          the engine, protocol-free
//!   mod.rs           Engine: storage + catalog + settings
//!   handler.rs       the upload-handler chain (Django's contract); handlers/: the built-ins
//!                    (progress, quota, sniff, checksum, compress, spill, store, validate,
//!                    clamav, verify; gate: the pre-create hook; progress_events)
//!   pipeline.rs      runs a chain on the blocking pool, fed by the request
//!   resumable/       locks.rs (one writer per upload, across nodes), append.rs (bytes at an
//!                    offset, committed only once durable), lifecycle.rs (create, complete,
//!                    concatenate, discard, expire); running_digests.rs, hashing.rs
//!   sessions.rs      upload-session states; progress.rs: X-Progress-ID's registry
//!   events.rs        which events are recorded and what each carries (built where the
//!                    change happens, committed with it by the catalog)
//!   hooks.rs         what pre-create and pre-finish are asked, and what their answers do
//!   limits.rs        a caller's size limits; users.rs: removing a user and all they own
//!   links.rs         signing and checking download links (keys kept in the catalog)
//! hooks/           talking to hooks_url: signing.rs (Standard Webhooks), delivery.rs (the
//!                  outbox's deliverer: leases, retries, order per subject), blocking.rs
//!                  (pre-create and pre-finish: asking, and reading the answer)
//! storage/         where bytes live: Storage (mod.rs, with the key scheme)
//!   local.rs         a folder (the default)
//!   s3.rs            an S3-compatible bucket (AWS S3, Garage, MinIO)
//!   measured.rs      times every operation of the storage it wraps (metrics)
//! meta/            the catalog: MetaStore (users, tokens, files, uploads, sessions, and
//!                  the events outbox, written in the same transactions)
//!   sqlite.rs        SQLite in data_dir (the default)
//!   postgres.rs      PostgreSQL, for several nodes; pg_locks.rs: locks across nodes
//!   sql/             the SQL both share, a file per table
//!   measured.rs      times every call of the catalog it wraps (metrics)
//! config/          every setting, declared once (table.rs), loaded and checked (mod.rs),
//!                  typed as it is read (values.rs)
//! checksum.rs, names.rs, events.rs   leaves: digests; safe file and user names; event
//!                  types and their wire body
//! metrics.rs       leaf: the Prometheus series, one recorder per server (Engine::metrics)
//! app.rs           wires storage, catalog and engine from the settings, and serves
//! auth/            API tokens (mod.rs); the application's signed tokens (jwt.rs)
//! ```
//!
//! # Where a PATCH's bytes go
//! `http::tus::patch` (or `ietf::patch`) checks the request's headers, takes the upload's
//! lock (`upload::resumable::locks`), and hands the body to `http::resumable::append_stream`.
//! There, behind `http::body`'s guards, the bytes run through an append chain
//! (`upload::resumable::append`: the protocol's handlers, the running digests, then the
//! staging writer) on `upload::pipeline`, into `Storage::resume` of `storage::local` (a file
//! under `staging/`) or `storage::s3` (segment objects); once synced, the catalog's offset
//! advances (`meta::MetaStore::advance_upload`, SQLite or PostgreSQL) and only then is the
//! PATCH answered. The last byte completes the upload (`upload::resumable::lifecycle`): the
//! staged bytes are placed as an object and the file enters the catalog in one transaction.
//! A form upload (`http::multipart`) runs its parts through the configured handler chain
//! (`upload::handlers`) instead, spilling to `file_upload_temp_dir` or straight to storage.
//!
//! `fuzzing` is the entry of the fuzz targets in `fuzz/`. To mount chute in your own axum
//! app: build an [`http::AppState`] with [`app::open_state`] and nest [`http::router`].

pub mod app;
pub mod auth;
pub mod checksum;
pub mod config;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod hooks;
pub mod http;
pub mod meta;
pub mod metrics;
pub mod names;
pub mod storage;
pub mod tls;
pub mod upload;
