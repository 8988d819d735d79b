//! Integration tests: one binary, each test with its own server on port 0 and its own data dir.

mod browser;
pub(crate) mod chaos;
mod chunked;
mod clamav;
mod cli;
mod clients;
mod cors;
mod files_api;
mod handlers;
mod hardening;
mod helpers;
mod hooks;
mod ietf;
mod jwt;
mod limits;
mod links;
mod malformed;
mod nginx;
mod postgres;
mod s3;
mod servers;
mod sessions;
mod slow_clients;
mod slow_load;
mod tus;
mod ui;
