//! chute: a file-upload server and library.
//!
//! # Layout
//! ```text
//! HTTP request
//!   -> http::*            axum routes; one module per protocol adapter (multipart, files, ...)
//!   -> upload::Engine     the handler chain (upload::handler), run on a pipeline thread
//!                         (upload::pipeline) by every protocol; built-in handlers in
//!                         upload::handlers::*; append-at-offset in upload::resumable
//!   -> storage::Storage   bytes (storage::local)
//!   -> meta::MetaStore    users, tokens, catalog, uploads (meta::sqlite)
//! ```
//! `config` holds every setting; `app` wires the parts and serves; `auth` makes and checks
//! API tokens; `names` makes client file names safe; `fuzzing` is the entry of the fuzz
//! targets in `fuzz/`.
//!
//! To mount chute in your own axum app: build an [`http::AppState`] with
//! [`app::open_state`] and nest [`http::router`].

pub mod app;
pub mod auth;
pub mod checksum;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod meta;
pub mod names;
pub mod storage;
pub mod upload;
