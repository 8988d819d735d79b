//! The engine's side of the blocking hooks (`hooks::blocking`): what `pre-create` and
//! `pre-finish` are told, and what their answers mean for an upload. Every protocol asks
//! through these two methods: resumable uploads in `create_upload` and `complete_upload`,
//! form and session files in the handler chain (`handlers::gate`) and before they are placed.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::handler::CompletedFile;
use super::{Engine, UploadError};
use crate::events::EventType;
use crate::hooks::{Shape, Verdict};

/// What `pre-finish` is told of a file whose bytes all arrived (with `user`), the same keys
/// for every protocol: unknown ones are null.
#[derive(serde::Serialize)]
pub struct Finishing<'a> {
    pub protocol: &'a str,
    pub upload_id: Option<&'a str>,
    pub session: Option<&'a str>,
    pub name: &'a str,
    pub size: u64,
    pub content_type: Option<&'a str>,
    pub detected_type: Option<&'a str>,
    /// Algorithm name to hex digest.
    pub checksums: BTreeMap<&'a str, &'a str>,
    /// tus metadata, decoded.
    pub metadata: Option<&'a BTreeMap<String, String>>,
}

/// Where a request came from, as the blocking hooks are told: the client's address and the
/// request headers named in `hooks_forward_headers`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub client: Option<String>,
    pub headers: BTreeMap<String, String>,
}

/// What `pre-create` is asked about a file that is about to begin.
pub struct Creating<'a> {
    pub owner_id: i64,
    /// `multipart`, `chunked`, `tus`, `ietf` or `session`.
    pub protocol: &'a str,
    pub filename: &'a str,
    pub content_type: Option<&'a str>,
    /// The declared length (none when deferred or unknown).
    pub length: Option<u64>,
    /// tus metadata, decoded.
    pub metadata: Option<&'a BTreeMap<String, String>>,
    pub session: Option<&'a str>,
    pub origin: &'a Origin,
}

impl Engine {
    /// Whether `kind` (pre-create or pre-finish) is asked.
    pub fn asks(&self, kind: EventType) -> bool {
        self.gate.as_ref().is_some_and(|g| g.asks(kind))
    }

    /// Whether the blocking hooks want header `name` (lower-case).
    pub fn forwards_header(&self, name: &str) -> bool {
        self.gate.as_ref().is_some_and(|g| g.forwards(name))
    }

    /// Asks `pre-create` (when it is on) about a file before its first byte is stored: the
    /// changes it asks for, a refusal (`HookRejected`), or `HookFailed` (fail closed).
    pub async fn pre_create(&self, c: &Creating<'_>) -> Result<Shape, UploadError> {
        let Some(gate) = self.gate.as_ref().filter(|g| g.asks(EventType::PreCreate)) else {
            return Ok(Shape::default());
        };
        let user = self.user_name(c.owner_id).await;
        let data = json!({
            "user": user,
            "protocol": c.protocol,
            "filename": c.filename,
            "content_type": c.content_type,
            "length": c.length,
            "metadata": c.metadata,
            "session": c.session,
            "client": c.origin.client,
            "headers": c.origin.headers,
        });
        let shape = match gate.ask(EventType::PreCreate, data).await {
            Ok(Verdict::Proceed(shape)) => shape,
            Ok(Verdict::Reject { status, message }) => {
                return Err(UploadError::HookRejected { status, message });
            }
            Err(why) => return Err(UploadError::HookFailed(why)),
        };
        if let (Some(max), Some(len)) = (shape.max_size, c.length)
            && len > max
        {
            return Err(UploadError::TooLarge { limit: max });
        }
        Ok(shape)
    }

    /// Asks `pre-finish` (when it is on) about a file whose bytes all arrived, before it is
    /// committed.
    pub async fn pre_finish(&self, owner_id: i64, f: &Finishing<'_>) -> Result<(), UploadError> {
        let Some(gate) = self.gate.as_ref().filter(|g| g.asks(EventType::PreFinish)) else {
            return Ok(());
        };
        let mut data = json!(f);
        if let Value::Object(m) = &mut data {
            m.insert("user".into(), json!(self.user_name(owner_id).await));
        }
        match gate.ask(EventType::PreFinish, data).await {
            Ok(Verdict::Proceed(_)) => Ok(()),
            Ok(Verdict::Reject { status, message }) => {
                Err(UploadError::HookRejected { status, message })
            }
            Err(why) => Err(UploadError::HookFailed(why)),
        }
    }

    /// `pre-finish` for a form or session file, from what its handlers learnt.
    pub async fn pre_finish_file(
        &self,
        owner_id: i64,
        done: &CompletedFile,
        protocol: &str,
        session: Option<&str>,
    ) -> Result<(), UploadError> {
        if !self.asks(EventType::PreFinish) {
            return Ok(());
        }
        let f = Finishing {
            protocol,
            upload_id: None,
            session,
            name: &done.info.file_name,
            size: done.size,
            content_type: done.info.content_type.as_deref(),
            detected_type: done.facts.detected_type.as_deref(),
            checksums: (done.facts.checksums.iter())
                .map(|(a, h)| (a.name(), h.as_str()))
                .collect(),
            metadata: None,
        };
        self.pre_finish(owner_id, &f).await
    }
}

/// Whether `k` can be a tus metadata key: ASCII, no spaces or commas.
pub fn valid_tus_key(k: &str) -> bool {
    !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// tus `Upload-Metadata` for `pairs` (values base64, keys as given).
pub fn encode_tus_metadata(pairs: &BTreeMap<String, String>) -> String {
    use base64::Engine as _;
    pairs
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!(
                    "{k} {}",
                    base64::engine::general_purpose::STANDARD.encode(v)
                )
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}
