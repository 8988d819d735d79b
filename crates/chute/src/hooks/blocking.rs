//! Blocking hooks: `pre-create` and `pre-finish`, asked synchronously at `hooks_url` (same
//! signing as the notifications) when `hooks_events` names them. The answer decides the
//! request: a 2xx with an empty body or a JSON object goes on (possibly reshaping the upload),
//! `{"reject": {"status": 400-499, "message": "..."}}` refuses it with that status, and
//! anything else (an error, a timeout, another status, a body that is not such JSON) fails
//! closed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::signing::{self, Signer};
use crate::config::Settings;
use crate::events::{EventType, NewEvent};

/// The most of an answer that is read.
const ANSWER_MAX: usize = 64 << 10;

/// What a `pre-create` answer may change for the upload it was asked about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// The file's name instead of the client's (cleaned like a client's name).
    pub filename: Option<String>,
    /// tus metadata instead of the client's (keys and plain-text values).
    pub metadata: Option<BTreeMap<String, String>>,
    /// A size limit for this upload, lower than the server's.
    pub max_size: Option<u64>,
}

/// What the application decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Proceed(Shape),
    Reject { status: u16, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    #[serde(default)]
    reject: Option<Rejection>,
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    max_size: Option<u64>,
}

#[derive(Deserialize)]
struct Rejection {
    status: u16,
    #[serde(default)]
    message: Option<String>,
}

/// Asks the application at `hooks_url`.
pub struct Gate {
    client: Option<reqwest::Client>,
    url: String,
    signer: Option<Signer>,
    pre_create: bool,
    pre_finish: bool,
    forward_headers: Vec<String>,
}

impl Gate {
    /// None when no blocking hook is asked for (both need `hooks_url` and their name in
    /// `hooks_events`).
    pub fn new(settings: &Settings) -> Option<Self> {
        let named = |t| settings.hooks_events.contains(t);
        let (pre_create, pre_finish) = (named(EventType::PreCreate), named(EventType::PreFinish));
        if settings.hooks_url.is_empty() || !(pre_create || pre_finish) {
            return None;
        }
        let timeout: Duration = settings.hooks_timeout.0;
        // A client that cannot be built (no TLS roots, say) leaves `client` empty: every
        // question then fails, closed.
        let client = signing::client(timeout).ok();
        Some(Self {
            client,
            url: settings.hooks_url.clone(),
            signer: Signer::new(&settings.hooks_secret),
            pre_create,
            pre_finish,
            forward_headers: settings
                .hooks_forward_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        })
    }

    /// Whether `kind` (pre-create or pre-finish) is asked.
    pub fn asks(&self, kind: EventType) -> bool {
        match kind {
            EventType::PreCreate => self.pre_create,
            EventType::PreFinish => self.pre_finish,
            _ => false,
        }
    }

    /// The request headers named in `hooks_forward_headers`, lower-cased.
    pub fn forwards(&self, name: &str) -> bool {
        self.forward_headers.iter().any(|h| h == name)
    }

    /// Asks; Err is a failure to get a usable answer (the caller refuses with 503).
    pub async fn ask(&self, kind: EventType, data: Value) -> Result<Verdict, String> {
        let (Some(client), Some(signer)) = (&self.client, &self.signer) else {
            return Err("the hooks client could not start".into());
        };
        let e = NewEvent::new(kind, "", data);
        let res = signing::post_signed(client, &self.url, signer, &e.id, e.body)
            .await
            .map_err(|err| format!("{} hook: {err}", kind.as_str()))?;
        let status = res.status();
        if !status.is_success() {
            return Err(format!("{} hook answered {status}", kind.as_str()));
        }
        let body = read_capped(res)
            .await
            .map_err(|err| format!("{} hook: {err}", kind.as_str()))?;
        parse_answer(&body).map_err(|why| format!("{} hook: {why}", kind.as_str()))
    }
}

async fn read_capped(mut res: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > ANSWER_MAX {
            return Err(format!("an answer over {ANSWER_MAX} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A hook's answer: empty, or a JSON object with `reject` or the fields of [`Shape`].
pub fn parse_answer(body: &[u8]) -> Result<Verdict, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Verdict::Proceed(Shape::default()));
    }
    // An object only: serde would also read a struct from a JSON array.
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("an answer that is not JSON: {e}"))?;
    if !v.is_object() {
        return Err("an answer that is not a JSON object".into());
    }
    let a: Answer =
        serde_json::from_value(v).map_err(|e| format!("an answer that is not valid: {e}"))?;
    if let Some(r) = a.reject {
        if !(400..=499).contains(&r.status) {
            return Err(format!("a reject status {} outside 400-499", r.status));
        }
        return Ok(Verdict::Reject {
            status: r.status,
            message: r
                .message
                .unwrap_or_else(|| "refused by the application".into()),
        });
    }
    Ok(Verdict::Proceed(Shape {
        filename: a.filename,
        metadata: a.metadata,
        max_size: a.max_size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_reshape_reject_or_fail() {
        assert_eq!(parse_answer(b""), Ok(Verdict::Proceed(Shape::default())));
        assert_eq!(parse_answer(b"{}"), Ok(Verdict::Proceed(Shape::default())));
        assert_eq!(
            parse_answer(br#"{"filename": "a.txt", "max_size": 10, "metadata": {"k": "v"}}"#),
            Ok(Verdict::Proceed(Shape {
                filename: Some("a.txt".into()),
                metadata: Some(BTreeMap::from([("k".into(), "v".into())])),
                max_size: Some(10),
            }))
        );
        assert_eq!(
            parse_answer(br#"{"reject": {"status": 403, "message": "no"}}"#),
            Ok(Verdict::Reject {
                status: 403,
                message: "no".into()
            })
        );
        for bad in [
            &br#"{"reject": {"status": 500}}"#[..],
            br#"{"reject": {"status": 200}}"#,
            br#"{"filename": 3}"#,
            br#"{"max_size": -1}"#,
            br#"{"surprise": true}"#,
            b"[]",
            b"<html>",
            b"\"ok\"",
        ] {
            assert!(
                parse_answer(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
