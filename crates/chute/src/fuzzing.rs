//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz): each takes arbitrary bytes,
//! drives one of chute's parsers of client input with them, and panics when a property that
//! must hold does not (a parse that does not round-trip, a range outside its file, a name that
//! escapes). Not part of the API; the parsers themselves stay private to their modules.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine as _;
use bytes::Bytes;

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// `Content-Range: bytes START-END/TOTAL` (the chunked protocol).
pub fn content_range(data: &[u8]) {
    if let Some(r) = crate::http::chunked::parse_content_range(&text(data)) {
        assert!(r.start <= r.end && r.end < r.total, "{r:?}");
        assert_eq!(r.chunk_len(), r.end - r.start + 1);
        let again = format!("bytes {}-{}/{}", r.start, r.end, r.total);
        assert_eq!(crate::http::chunked::parse_content_range(&again), Some(r));
    }
}

/// `Range: bytes=...` against a file whose size is the first 8 bytes.
pub fn range(data: &[u8]) {
    use crate::http::serve::{RangeSpec, parse_range};
    let (size, rest) = match data.split_first_chunk::<8>() {
        Some((n, rest)) => (u64::from_le_bytes(*n) >> (n[0] % 64), rest),
        None => (0, data),
    };
    if let RangeSpec::Range(a, b) = parse_range(&text(rest), size) {
        assert!(a <= b && b < size, "{a}-{b} of {size}");
        assert!(matches!(
            parse_range(&format!("bytes={a}-{b}"), size),
            RangeSpec::Range(x, y) if (x, y) == (a, b)
        ));
    }
}

/// tus's `Upload-Metadata`, `Upload-Concat` and `Upload-Checksum`, one per line.
pub fn tus_headers(data: &[u8]) {
    let t = text(data);
    let mut lines = t.splitn(3, '\n');
    let (meta, concat, checksum) = (
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
    );
    if let Some(pairs) = crate::http::headers::parse_metadata(meta) {
        let b64 = base64::engine::general_purpose::STANDARD;
        let again: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k} {}", b64.encode(v)))
            .collect();
        assert_eq!(
            crate::http::headers::parse_metadata(&again.join(",")),
            Some(pairs),
            "metadata round trip"
        );
    }
    if let Some(ids) = crate::http::tus::final_parts(concat) {
        assert!(!ids.is_empty());
        assert!(ids.iter().all(|id| !id.contains('/') && !id.contains(' ')));
    }
    if let Ok((alg, digest)) = crate::http::headers::parse_checksum(checksum) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&digest);
        let again = crate::http::headers::parse_checksum(&format!("{} {b64}", alg.name()));
        assert!(matches!(again, Ok((a, d)) if a == alg && d == digest));
    }
}

/// The IETF draft's Structured Field headers, Content-Type and Content-Disposition: one header
/// value per line, in that order.
pub fn ietf_headers(data: &[u8]) {
    let names = [
        "upload-complete",
        "upload-offset",
        "upload-length",
        "content-type",
        "content-disposition",
        "upload-metadata",
    ];
    let mut h = HeaderMap::new();
    for (name, line) in names.iter().zip(data.split(|b| *b == b'\n')) {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    let _ = crate::http::headers::upload_complete(&h);
    for n in ["upload-offset", "upload-length"] {
        if let Ok(Some(v)) = crate::http::headers::sf_integer(&h, n) {
            assert!(v < 10u64.pow(15), "{n} = {v}");
        }
    }
    if let Some(t) = crate::http::headers::media_type(&h) {
        assert!(!t.is_empty() && !t.contains(';'));
    }
    safe_name(&crate::http::headers::file_name(&h));
}

/// What every stored name must be.
fn safe_name(n: &str) {
    assert!(!n.is_empty(), "empty name");
    assert!(n.chars().count() <= 255, "{n:?}");
    assert!(!n.contains('/') && !n.contains('\\'), "{n:?}");
    assert!(!n.chars().any(char::is_control), "{n:?}");
    assert!(n != "." && n != "..", "{n:?}");
}

/// Client file names: made safe, idempotently; the session checks; Content-Disposition.
pub fn names(data: &[u8]) {
    let raw = text(data);
    let clean = crate::names::sanitize_file_name(&raw);
    safe_name(&clean);
    assert_eq!(
        crate::names::sanitize_file_name(&clean),
        clean,
        "idempotent"
    );
    static FORMATS: std::sync::OnceLock<crate::config::FileFormats> = std::sync::OnceLock::new();
    let formats = FORMATS.get_or_init(|| crate::config::Settings::defaults().accepted_file_formats);
    if let Ok(accepted) = crate::upload::handlers::validate::check_name(&raw, formats) {
        safe_name(&accepted);
    }
    let cd = crate::names::content_disposition("attachment", &clean);
    assert!(HeaderValue::from_str(&cd).is_ok(), "{cd:?}");
}

/// The settings: a TOML file's text, then `name=value` flags after a line `---`.
pub fn settings(data: &[u8]) {
    let t = text(data);
    let (toml, flags) = t.split_once("\n---\n").unwrap_or((&t, ""));
    let flags: BTreeMap<String, String> = flags
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let file = Some((std::path::PathBuf::from("fuzz.toml"), toml.to_string()));
    if let Ok(s) = crate::config::Settings::load_text(file, Vec::new(), flags) {
        assert!(s.validate().is_ok());
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the fuzz target");
}

/// A multipart body through chute's guarded body (size limit, part-header cap) and multer,
/// fields read to the end as the adapters read them. The first byte cuts the body into pieces
/// of 1 to 256 bytes, as a network might deliver it.
pub fn multipart(data: &[u8]) {
    use crate::http::body::{BodyLimits, GuardedBody};
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let piece = usize::from(cut).max(1);
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(piece)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let limits = BodyLimits {
        idle: std::time::Duration::from_secs(60),
        min_rate: 0,
        limit: Some(64 * 1024),
        header_limit: 2048,
        max_duration: None,
    };
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let (guarded, state) = GuardedBody::new(futures::stream::iter(chunks), limits);
            let mut mp = multer::Multipart::new(guarded, "X");
            let mut seen = 0usize;
            loop {
                state.set_header_phase(true);
                let next = mp.next_field().await;
                state.set_header_phase(false);
                let Ok(Some(mut field)) = next else { break };
                if let Some(name) = field.file_name() {
                    safe_name(&crate::names::sanitize_file_name(name));
                }
                while let Ok(Some(c)) = field.chunk().await {
                    seen += c.len();
                }
            }
            let received = state.received.load(std::sync::atomic::Ordering::Relaxed);
            assert!(seen as u64 <= received, "{seen} of {received}");
            if state.failure().is_none() {
                assert!(received <= 64 * 1024);
            }
        });
    });
}
