//! Events: what chute tells an application about uploads (a leaf: it names nothing of the
//! crate). The engine builds them (`upload::events`), the catalog keeps the durable ones in the
//! same transaction as the change they report (`meta::EventStore`, the outbox), `hooks`
//! delivers them as Standard Webhooks, and `GET /api/events` (`http::events`) serves them to
//! applications that poll.
//!
//! An event's body is built once, when it happens, and stored as sent: every delivery and the
//! feed carry the same bytes, id and timestamp.

use serde_json::{Value, json};

/// Every kind of event, by its wire name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    /// A resumable upload or a session file begins.
    UploadCreated,
    /// Bytes arrived (best effort, at most every `hooks_progress_interval` per upload; not
    /// stored).
    UploadProgress,
    /// The file is in the catalog.
    UploadFinished,
    /// A client cancelled an upload.
    UploadTerminated,
    /// Expiry removed an unfinished upload.
    UploadExpired,
    /// A catalog file was deleted.
    FileDeleted,
    /// An upload session was stored for good.
    SessionStored,
    /// An upload session expired and its files were removed.
    SessionExpired,
    /// Blocking: asked before the first byte of a file is stored.
    PreCreate,
    /// Blocking: asked when all bytes arrived, before the file is committed.
    PreFinish,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        Self::UploadCreated,
        Self::UploadProgress,
        Self::UploadFinished,
        Self::UploadTerminated,
        Self::UploadExpired,
        Self::FileDeleted,
        Self::SessionStored,
        Self::SessionExpired,
        Self::PreCreate,
        Self::PreFinish,
    ];

    /// What `hooks_events` means by default: every notification, no blocking hook.
    pub const NOTIFICATIONS: [EventType; 8] = [
        Self::UploadCreated,
        Self::UploadProgress,
        Self::UploadFinished,
        Self::UploadTerminated,
        Self::UploadExpired,
        Self::FileDeleted,
        Self::SessionStored,
        Self::SessionExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UploadCreated => "upload.created",
            Self::UploadProgress => "upload.progress",
            Self::UploadFinished => "upload.finished",
            Self::UploadTerminated => "upload.terminated",
            Self::UploadExpired => "upload.expired",
            Self::FileDeleted => "file.deleted",
            Self::SessionStored => "session.stored",
            Self::SessionExpired => "session.expired",
            Self::PreCreate => "pre-create",
            Self::PreFinish => "pre-finish",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Written to the catalog with the change it reports and delivered until acknowledged.
    pub fn is_durable(self) -> bool {
        !matches!(
            self,
            Self::UploadProgress | Self::PreCreate | Self::PreFinish
        )
    }

    /// Asked synchronously; its answer decides the request.
    pub fn is_blocking(self) -> bool {
        matches!(self, Self::PreCreate | Self::PreFinish)
    }
}

/// Now, in unix milliseconds (the unit of the outbox's times).
pub fn now_ms() -> i64 {
    unix_ms(time::OffsetDateTime::now_utc())
}

fn unix_ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// An event as it happened: its id (stable across retries), type, what it is about (the
/// upload, file or session: events about one subject are delivered in order), and the JSON
/// body every delivery sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub id: String,
    pub kind: EventType,
    pub subject: String,
    /// `{"type", "timestamp", "data"}`, serialised once.
    pub body: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Whether it goes to `hooks_url` (false: recorded for the feed only).
    pub deliver: bool,
}

impl NewEvent {
    /// A new event with a fresh id (`evt_` and a time-ordered UUID), stamped now.
    pub fn new(kind: EventType, subject: impl Into<String>, data: Value) -> Self {
        let now = time::OffsetDateTime::now_utc();
        let timestamp = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let body = json!({"type": kind.as_str(), "timestamp": timestamp, "data": data});
        Self {
            id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
            kind,
            subject: subject.into(),
            body: body.to_string(),
            created_at: unix_ms(now),
            deliver: true,
        }
    }
}

impl NewEvent {
    /// Dates the event at `at` instead of its creation (for events reported later than
    /// they happened).
    pub fn restamp(&mut self, at: time::OffsetDateTime) {
        if let Ok(mut v) = serde_json::from_str::<Value>(&self.body) {
            let stamp = at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            v["timestamp"] = Value::String(stamp);
            self.body = v.to_string();
            self.created_at = unix_ms(at);
        }
    }
}

/// A stored event: a [`NewEvent`] with its place in commit order (`seq`, the feed's cursor)
/// and its delivery state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub subject: String,
    pub body: String,
    pub created_at: i64,
    pub state: DeliveryState,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// When retrying began (unix ms): its creation, or its last retry by hand; it is given up
    /// `hooks_retry_for` after.
    pub retry_since: i64,
    pub last_error: Option<String>,
}

/// Where a stored event's delivery stands; stored as these strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// To be delivered to `hooks_url` (or being delivered, under a lease).
    Pending,
    /// The receiver acknowledged it.
    Delivered,
    /// Retried for `hooks_retry_for` without success; kept until retried by hand.
    Failed,
    /// Recorded for the feed only (no `hooks_url` when it happened).
    Kept,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Kept => "kept",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed, Self::Kept]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// The signing key of a Standard Webhooks secret (`whsec_` and base64 of 24-64 bytes); None
/// when `secret` is not one.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let b64 = secret.strip_prefix("whsec_")?;
    let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

/// A new random secret for `hooks_secret`.
pub fn new_secret() -> Result<String, getrandom::Error> {
    use base64::Engine as _;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bodies_carry_type_timestamp_and_data() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("upload.done"), None);
        assert!(EventType::UploadFinished.is_durable());
        assert!(!EventType::UploadProgress.is_durable());
        assert!(EventType::PreFinish.is_blocking() && !EventType::PreFinish.is_durable());
        let e = NewEvent::new(EventType::FileDeleted, "f1", json!({"id": "f1"}));
        let v: Value = serde_json::from_str(&e.body).expect("json");
        assert_eq!(v["type"], "file.deleted");
        assert_eq!(v["data"]["id"], "f1");
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(e.id.starts_with("evt_") && e.id.len() == 36);
        let f = NewEvent::new(EventType::FileDeleted, "f1", json!({}));
        assert_ne!(e.id, f.id);
    }

    #[test]
    fn secrets_are_whsec_and_24_to_64_bytes() {
        let s = new_secret().expect("random");
        assert_eq!(secret_key(&s).map(|k| k.len()), Some(32));
        assert_eq!(secret_key("whsec_c2hvcnQ="), None, "5 bytes");
        assert_eq!(secret_key(&s[6..]), None, "no prefix");
        assert_eq!(secret_key("whsec_!!!"), None);
    }
}
