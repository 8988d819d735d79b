//! The built-in upload handlers, one per file, and the factory that builds a route's chain
//! from names (the `file_upload_handlers` setting).

pub mod checksum;
pub mod clamav;
pub mod compress;
pub mod progress;
pub mod quota;
pub mod sniff;
pub mod spill;
pub mod store;
pub mod validate;
pub mod verify;

use std::sync::Arc;

use super::handler::{Chain, UploadHandler};
use super::progress::ProgressEntry;
use crate::checksum::Algorithm;
use crate::config::Settings;
use crate::storage::Storage;

pub const BUILT_IN: [&str; 7] = [
    "progress", "quota", "sniff", "checksum", "compress", "spill", "store",
];

/// Checks a chain given by names: known names, no repeats, one terminal (spill or store) at
/// the end, and nothing that must see original bytes after `compress`.
pub fn validate_chain(names: &[String]) -> Result<(), String> {
    for n in names {
        if !BUILT_IN.contains(&n.as_str()) {
            return Err(format!(
                "unknown handler `{n}` (built in: {})",
                BUILT_IN.join(", ")
            ));
        }
    }
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(format!("handler `{n}` is listed twice"));
        }
    }
    match names.last().map(String::as_str) {
        Some("spill") | Some("store") => {}
        _ => return Err("the last handler must be `spill` or `store`".into()),
    }
    if names
        .iter()
        .filter(|n| matches!(n.as_str(), "spill" | "store"))
        .count()
        != 1
    {
        return Err("use one of `spill` and `store`, not both".into());
    }
    if let Some(c) = names.iter().position(|n| n == "compress") {
        for must_precede in ["sniff", "checksum", "quota"] {
            if let Some(p) = names.iter().position(|n| n == must_precede)
                && p > c
            {
                return Err(format!(
                    "`{must_precede}` must come before `compress`: it needs the original bytes"
                ));
            }
        }
    }
    Ok(())
}

/// Everything a route knows when it builds the chain for one request.
pub struct ChainContext {
    pub storage: Arc<dyn Storage>,
    pub settings: Arc<Settings>,
    /// Bytes the user already stores, for the quota handler.
    pub used_bytes: u64,
    pub progress: Option<Arc<ProgressEntry>>,
    /// Checksums a protocol needs on top of the configured ones.
    pub extra_checksums: Vec<Algorithm>,
    /// The request's Content-Length, when known.
    pub request_length: Option<u64>,
}

/// The malware scanner when `clamav_enabled` (put it before anything that transforms bytes).
pub fn scanner(settings: &Settings) -> Option<Box<dyn UploadHandler>> {
    settings.clamav_enabled.then(|| {
        Box::new(clamav::ClamavHandler::new(
            clamav::ClamdAddress::parse(&settings.clamav_address),
            settings.clamav_timeout.0,
        )) as Box<dyn UploadHandler>
    })
}

/// Builds the chain named by `names` (already validated), after the scanner when enabled.
pub fn build_chain(names: &[String], ctx: &ChainContext) -> Chain {
    let mut handlers: Vec<Box<dyn UploadHandler>> = scanner(&ctx.settings).into_iter().collect();
    handlers.extend(build_handlers(names, ctx));
    Chain::new(
        handlers,
        ctx.settings.file_upload_chunk_size.bytes() as usize,
    )
}

/// The built-in handlers named by `names`, to combine with handlers of your own.
pub fn build_handlers(names: &[String], ctx: &ChainContext) -> Vec<Box<dyn UploadHandler>> {
    let s = &ctx.settings;
    let mut handlers: Vec<Box<dyn UploadHandler>> = Vec::with_capacity(names.len());
    for name in names {
        match name.as_str() {
            "progress" => {
                if let Some(p) = &ctx.progress {
                    handlers.push(Box::new(progress::ProgressHandler::new(p.clone())));
                }
            }
            "quota" => {
                if let Some(q) = s.user_quota {
                    handlers.push(Box::new(quota::QuotaHandler::new(
                        q.bytes(),
                        ctx.used_bytes,
                    )));
                }
            }
            "sniff" => handlers.push(Box::new(sniff::SniffHandler::new(
                s.file_upload_reject_type_mismatch,
            ))),
            "checksum" => {
                let mut algs: Vec<Algorithm> = s
                    .file_upload_checksums
                    .iter()
                    .filter_map(|n| Algorithm::parse(n))
                    .chain(ctx.extra_checksums.iter().copied())
                    .collect();
                algs.sort();
                algs.dedup();
                handlers.push(Box::new(checksum::ChecksumHandler::new(algs)));
            }
            "compress" => handlers.push(Box::new(compress::CompressHandler::new(
                s.file_upload_compression_level,
            ))),
            "spill" => handlers.push(Box::new(
                spill::SpillHandler::new(
                    s.file_upload_max_memory_size.bytes() as usize,
                    s.temp_dir(),
                    s.file_upload_permissions.0,
                )
                .with_request_length(ctx.request_length),
            )),
            "store" => handlers.push(Box::new(store::StoreHandler::new(ctx.storage.clone()))),
            _ => {}
        }
    }
    handlers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<String> {
        s.split(',').map(str::to_string).collect()
    }

    #[test]
    fn chain_names_are_checked() {
        assert!(validate_chain(&names("progress,quota,sniff,checksum,spill")).is_ok());
        assert!(validate_chain(&names("checksum,compress,store")).is_ok());
        assert!(validate_chain(&names("checksum")).is_err());
        assert!(validate_chain(&names("spill,checksum")).is_err());
        assert!(validate_chain(&names("checksum,checksum,spill")).is_err());
        assert!(validate_chain(&names("compress,checksum,spill")).is_err());
        assert!(validate_chain(&names("magic,spill")).is_err());
        assert!(validate_chain(&names("spill,store")).is_err());
    }
}
