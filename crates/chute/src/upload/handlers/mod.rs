//! The built-in upload handlers, one per file, and the factory that builds a route's chain
//! from the `file_upload_handlers` setting (its names are checked as the setting is read).

pub mod checksum;
pub mod clamav;
pub mod compress;
pub mod gate;
pub mod progress;
pub mod progress_events;
pub mod quota;
pub mod sniff;
pub mod spill;
pub mod store;
pub mod validate;
pub mod verify;

use std::sync::Arc;

use crate::upload::limits::Limits;

use super::handler::{Chain, UploadHandler};
use super::progress::ProgressEntry;
use crate::checksum::Algorithm;
use crate::config::{HandlerName, Settings};
use crate::storage::Storage;

/// Everything a route knows when it builds the chain for one request.
pub struct ChainContext {
    pub storage: Arc<dyn Storage>,
    pub settings: Arc<Settings>,
    /// Bytes the user already stores, for the quota handler.
    pub used_bytes: u64,
    /// The caller's limits (the quota handler holds the file to `limits.quota`).
    pub limits: Limits,
    pub progress: Option<Arc<ProgressEntry>>,
    /// Checksums a protocol needs on top of the configured ones.
    pub extra_checksums: Vec<Algorithm>,
    /// The request's Content-Length, when known.
    pub request_length: Option<u64>,
    /// The application's pre-create hook, when it is on.
    pub gate: Option<gate::GateContext>,
    /// `upload.progress` events, when they are on.
    pub progress_events: Option<progress_events::ProgressEvents>,
    /// The server's metrics (the scanner counts its scans).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The malware scanner when `clamav_enabled` (put it before anything that transforms bytes).
pub fn scanner(ctx: &ChainContext) -> Option<Box<dyn UploadHandler>> {
    let settings = &ctx.settings;
    settings.clamav_enabled.then(|| {
        Box::new(clamav::ClamavHandler::new(
            clamav::ClamdAddress::parse(&settings.clamav_address),
            settings.clamav_timeout.0,
            ctx.metrics.clone(),
        )) as Box<dyn UploadHandler>
    })
}

/// The pre-create hook's handler, when the hook is on (it goes first: nothing is stored
/// before the application agreed).
pub fn gate_of(ctx: &ChainContext) -> Option<Box<dyn UploadHandler>> {
    ctx.gate
        .clone()
        .map(|g| Box::new(gate::GateHandler::new(g)) as Box<dyn UploadHandler>)
}

/// The handlers every form chain starts with, when they are on: the pre-create hook, then
/// `upload.progress` events.
pub fn integrations(ctx: &ChainContext) -> Vec<Box<dyn UploadHandler>> {
    let mut handlers: Vec<Box<dyn UploadHandler>> = gate_of(ctx).into_iter().collect();
    if let Some(p) = ctx.progress_events.clone() {
        handlers.push(Box::new(progress_events::ProgressEventHandler::new(p)));
    }
    handlers
}

/// Builds the chain named by `names` (already validated), after the scanner when enabled.
pub fn build_chain(names: &[HandlerName], ctx: &ChainContext) -> Chain {
    let mut handlers = integrations(ctx);
    handlers.extend(scanner(ctx));
    handlers.extend(build_handlers(names, ctx));
    Chain::new(
        handlers,
        ctx.settings.file_upload_chunk_size.bytes() as usize,
    )
}

/// The built-in handlers named by `names`, to combine with handlers of your own.
pub fn build_handlers(names: &[HandlerName], ctx: &ChainContext) -> Vec<Box<dyn UploadHandler>> {
    let s = &ctx.settings;
    let mut handlers: Vec<Box<dyn UploadHandler>> = Vec::with_capacity(names.len());
    for name in names {
        match name {
            HandlerName::Progress => {
                if let Some(p) = &ctx.progress {
                    handlers.push(Box::new(progress::ProgressHandler::new(p.clone())));
                }
            }
            HandlerName::Quota => {
                if let Some(q) = ctx.limits.quota {
                    handlers.push(Box::new(quota::QuotaHandler::new(q, ctx.used_bytes)));
                }
            }
            HandlerName::Sniff => handlers.push(Box::new(sniff::SniffHandler::new(
                s.file_upload_reject_type_mismatch,
            ))),
            HandlerName::Checksum => {
                let algs = s.file_upload_checksums.with(&ctx.extra_checksums);
                handlers.push(Box::new(checksum::ChecksumHandler::new(algs)));
            }
            HandlerName::Compress => handlers.push(Box::new(compress::CompressHandler::new(
                s.file_upload_compression_level,
            ))),
            HandlerName::Spill => handlers.push(Box::new(
                spill::SpillHandler::new(
                    s.file_upload_max_memory_size.bytes() as usize,
                    s.temp_dir(),
                    s.file_upload_permissions.0,
                )
                .with_request_length(ctx.request_length),
            )),
            HandlerName::Store => {
                handlers.push(Box::new(store::StoreHandler::new(ctx.storage.clone())))
            }
        }
    }
    handlers
}
