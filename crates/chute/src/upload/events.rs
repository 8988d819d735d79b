//! The engine's side of events (`crate::events`): which ones are recorded, what each carries,
//! and telling this node's deliverer and feed readers that new ones committed. The engine
//! builds an event where the change happens and hands it to the catalog method that makes the
//! change, so both commit together; the protocol adapters emit nothing themselves.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Engine;
use crate::config::{EventTypes, Settings};
use crate::events::{EventType, NewEvent};
use crate::meta::{FileRecord, UploadRecord};

/// What the engine needs to emit events: the settings that decide which are recorded, the
/// names of users seen (names never change), and a counter that moves when events commit.
pub struct Events {
    /// Events are recorded at all: there is a `hooks_url` or the feed is on.
    record: bool,
    /// Recorded events go to `hooks_url`.
    deliver: bool,
    types: EventTypes,
    names: Mutex<HashMap<i64, String>>,
    committed: tokio::sync::watch::Sender<u64>,
    progress: Option<ProgressFeed>,
}

/// `upload.progress`: best effort, never stored. Events go to the deliverer through a bounded
/// channel (dropped when it is full), at most one per `hooks_progress_interval` per upload.
struct ProgressFeed {
    tx: tokio::sync::mpsc::Sender<NewEvent>,
    rx: Mutex<Option<tokio::sync::mpsc::Receiver<NewEvent>>>,
    interval: Duration,
    /// When each upload last reported (entries go when the upload ends).
    last: Mutex<HashMap<String, Instant>>,
}

/// Progress events waiting for the deliverer, at most.
const PROGRESS_QUEUE: usize = 1024;

impl Events {
    pub fn new(settings: &Settings) -> Self {
        let deliver = !settings.hooks_url.is_empty();
        let progress =
            (deliver && settings.hooks_events.contains(EventType::UploadProgress)).then(|| {
                let (tx, rx) = tokio::sync::mpsc::channel(PROGRESS_QUEUE);
                ProgressFeed {
                    tx,
                    rx: Mutex::new(Some(rx)),
                    interval: settings.hooks_progress_interval.0,
                    last: Mutex::default(),
                }
            });
        Self {
            record: deliver || settings.events_feed,
            deliver,
            types: settings.hooks_events.clone(),
            names: Mutex::default(),
            committed: tokio::sync::watch::channel(0).0,
            progress,
        }
    }

    /// Whether `upload.progress` is sent.
    pub fn reports_progress(&self) -> bool {
        self.progress.is_some()
    }

    /// The progress events for the deliverer to send (once).
    pub fn take_progress(&self) -> Option<tokio::sync::mpsc::Receiver<NewEvent>> {
        self.progress.as_ref()?.rx.lock().ok()?.take()
    }

    /// Sends `upload.progress` about `subject` if none went out within the interval; `data`
    /// is built only then.
    pub fn progress(&self, subject: &str, data: impl FnOnce() -> Value) {
        let Some(p) = &self.progress else { return };
        let now = Instant::now();
        {
            let Ok(mut last) = p.last.lock() else { return };
            match last.get_mut(subject) {
                Some(t) if now.duration_since(*t) < p.interval => return,
                Some(t) => *t = now,
                None => {
                    last.insert(subject.to_string(), now);
                }
            }
        }
        // Best effort: a full queue drops the event (the next one says more anyway).
        let _ =
            p.tx.try_send(NewEvent::new(EventType::UploadProgress, subject, data()));
    }

    /// An upload ended: its progress clock goes.
    pub fn forget_progress(&self, subject: &str) {
        if let Some(p) = &self.progress
            && let Ok(mut last) = p.last.lock()
        {
            last.remove(subject);
        }
    }

    /// How many uploads and requests have a progress clock (for tests of its bounds).
    #[cfg(test)]
    pub fn progress_clocks(&self) -> usize {
        self.progress
            .as_ref()
            .and_then(|p| p.last.lock().ok().map(|l| l.len()))
            .unwrap_or(0)
    }

    /// Whether events of `kind` are written to the outbox.
    pub fn records(&self, kind: EventType) -> bool {
        self.record && kind.is_durable() && self.types.contains(kind)
    }

    /// Moves when this node commits events (the deliverer and long polls wait on it; other
    /// nodes' events are found by polling).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// Called once events are committed.
    pub fn announce(&self, events: &[NewEvent]) {
        if !events.is_empty() {
            self.committed.send_modify(|n| *n += 1);
        }
    }
}

/// The protocol name events carry for a form upload (`POST /api/files`).
pub const MULTIPART: &str = "multipart";
/// The protocol name events carry for a file of an upload session.
pub const SESSION: &str = "session";

impl Engine {
    /// The event of `kind` about `subject`, when such events are recorded (else none: the
    /// payload is not even built). `data` gets the owner's name.
    pub async fn event(
        &self,
        kind: EventType,
        subject: &str,
        owner_id: i64,
        data: impl FnOnce(&str) -> Value,
    ) -> Vec<NewEvent> {
        if !self.events.records(kind) {
            return Vec::new();
        }
        let user = self.user_name(owner_id).await;
        let mut e = NewEvent::new(kind, subject, data(&user));
        e.deliver = self.events.deliver;
        vec![e]
    }

    /// Removes delivered and feed-only events older than `events_retention`.
    pub async fn prune_events(&self) -> Result<u64, crate::meta::MetaError> {
        let keep = self.settings.events_retention.0.as_millis() as i64;
        self.meta.prune_events(crate::events::now_ms() - keep).await
    }

    /// A user's name, for events (cached: names never change). A user the catalog cannot find
    /// right now is named by id.
    pub(crate) async fn user_name(&self, owner_id: i64) -> String {
        if let Some(n) = self
            .events
            .names
            .lock()
            .ok()
            .and_then(|m| m.get(&owner_id).cloned())
        {
            return n;
        }
        match self.meta.user_by_id(owner_id).await {
            Ok(Some(u)) => {
                if let Ok(mut m) = self.events.names.lock() {
                    m.insert(owner_id, u.name.clone());
                }
                u.name
            }
            _ => format!("#{owner_id}"),
        }
    }
}

/// What `upload.created`, `upload.terminated` and `upload.expired` carry about an upload.
pub fn upload_data(up: &UploadRecord, user: &str) -> Value {
    json!({
        "upload_id": up.id,
        "protocol": up.protocol.as_str(),
        "user": user,
        "name": up.name,
        "content_type": up.content_type,
        "length": up.length,
        "offset": up.offset,
        "metadata": up.metadata.upload_metadata,
        "session": Value::Null,
    })
}

/// What `upload.created` carries for a session file (as for a resumable upload, without an
/// upload id).
pub fn session_file_data(file: &FileRecord, user: &str, session: &str) -> Value {
    json!({
        "upload_id": Value::Null,
        "protocol": SESSION,
        "user": user,
        "name": file.name,
        "content_type": file.content_type,
        "length": Value::Null,
        "offset": 0,
        "metadata": Value::Null,
        "session": session,
    })
}

/// What `upload.finished` carries: the file's JSON as `/api/files` shows it, plus the
/// protocol, the upload's id (none for a form upload or a session file), the user and the
/// session's token where there is one.
pub fn finished_data(
    file: &FileRecord,
    protocol: &str,
    upload_id: Option<&str>,
    user: &str,
    session: Option<&str>,
) -> Value {
    let mut v = file.to_json();
    if let Value::Object(m) = &mut v {
        m.insert("protocol".into(), json!(protocol));
        m.insert("upload_id".into(), json!(upload_id));
        m.insert("user".into(), json!(user));
        m.insert("session".into(), json!(session));
    }
    v
}

/// What `file.deleted` carries: the file's JSON and its owner.
pub fn deleted_data(file: &FileRecord, user: &str) -> Value {
    let mut v = file.to_json();
    if let Value::Object(m) = &mut v {
        m.insert("user".into(), json!(user));
    }
    v
}

/// What `session.stored` and `session.expired` carry.
pub fn session_data(token: &str, user: &str, files: &[FileRecord]) -> Value {
    json!({
        "session": token,
        "user": user,
        "file_count": files.len(),
        "total_size": files.iter().map(|f| f.size).sum::<u64>(),
        "files": files.iter().map(FileRecord::to_json).collect::<Vec<_>>(),
    })
}
