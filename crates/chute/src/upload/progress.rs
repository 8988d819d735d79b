//! Upload progress, queryable while an upload runs (the nginx upload-progress module's model):
//! the client tags its upload with `X-Progress-ID` and polls `GET /api/progress/{id}`.
//! Entries are scoped to the user who started the upload and forgotten `retention` after the
//! upload ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    Uploading,
    Done,
    Error(u16),
}

#[derive(Debug)]
pub struct ProgressEntry {
    /// Bytes the client announced (Content-Length), when known.
    pub expected: Option<u64>,
    pub received: AtomicU64,
    state: Mutex<(ProgressState, Option<Instant>)>,
}

/// The JSON shape of nginx's upload-progress probe.
#[derive(Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[schema(as = Progress)]
pub struct ProgressReport {
    /// `starting` (not seen yet), `uploading`, `done` or `error`.
    #[schema(value_type = String, pattern = "^(starting|uploading|done|error)$")]
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

impl ProgressEntry {
    pub fn new(expected: Option<u64>) -> Self {
        Self {
            expected,
            received: AtomicU64::new(0),
            state: Mutex::new((ProgressState::Uploading, None)),
        }
    }

    pub fn finish(&self, state: ProgressState) {
        if let Ok(mut s) = self.state.lock() {
            *s = (state, Some(Instant::now()));
        }
    }

    fn ended_at(&self) -> Option<Instant> {
        self.state.lock().ok().and_then(|s| s.1)
    }

    pub fn report(&self) -> ProgressReport {
        let state = self
            .state
            .lock()
            .map(|s| s.0)
            .unwrap_or(ProgressState::Error(500));
        match state {
            ProgressState::Uploading => ProgressReport {
                state: "uploading",
                received: Some(self.received.load(Ordering::Relaxed)),
                size: self.expected,
                status: None,
            },
            ProgressState::Done => ProgressReport {
                state: "done",
                received: Some(self.received.load(Ordering::Relaxed)),
                size: self.expected,
                status: None,
            },
            ProgressState::Error(code) => ProgressReport {
                state: "error",
                received: None,
                size: None,
                status: Some(code),
            },
        }
    }
}

/// Most progress ids one user has at a time: past it, their oldest entry is forgotten (an
/// ended one first), so that no user can grow the registry without bound.
pub const PER_USER: usize = 64;

/// One user's progress entries by id, oldest first.
type UserEntries = Vec<(String, Arc<ProgressEntry>)>;

#[derive(Default)]
pub struct ProgressRegistry {
    /// Each user's entries (at most `PER_USER`).
    entries: Mutex<HashMap<i64, UserEntries>>,
    retention: Duration,
}

impl ProgressRegistry {
    pub fn new(retention: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            retention,
        }
    }

    /// Registers an upload under the user's progress id (replacing an earlier one). Costs
    /// the user's own entries, never the whole registry.
    pub fn start(&self, user_id: i64, id: &str, expected: Option<u64>) -> Arc<ProgressEntry> {
        let entry = Arc::new(ProgressEntry::new(expected));
        if let Ok(mut m) = self.entries.lock() {
            let retention = self.retention;
            let mine = m.entry(user_id).or_default();
            mine.retain(|(k, e)| k != id && e.ended_at().is_none_or(|t| t.elapsed() < retention));
            if mine.len() >= PER_USER {
                let oldest = mine
                    .iter()
                    .position(|(_, e)| e.ended_at().is_some())
                    .unwrap_or(0);
                mine.remove(oldest);
            }
            mine.push((id.to_string(), entry.clone()));
        }
        entry
    }

    /// The report for the user's id; an id not seen (yet) reads as "starting", as in nginx.
    pub fn report(&self, user_id: i64, id: &str) -> ProgressReport {
        let entry = self.entries.lock().ok().and_then(|m| {
            m.get(&user_id)?
                .iter()
                .find(|(k, _)| k == id)
                .map(|(_, e)| e.clone())
        });
        match entry {
            Some(e) if e.ended_at().is_none_or(|t| t.elapsed() < self.retention) => e.report(),
            _ => ProgressReport {
                state: "starting",
                received: None,
                size: None,
                status: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_the_upload_and_are_per_user() {
        let r = ProgressRegistry::new(Duration::from_secs(60));
        assert_eq!(r.report(1, "p").state, "starting");
        let e = r.start(1, "p", Some(100));
        e.received.fetch_add(40, Ordering::Relaxed);
        assert_eq!(
            r.report(1, "p"),
            ProgressReport {
                state: "uploading",
                received: Some(40),
                size: Some(100),
                status: None
            }
        );
        assert_eq!(
            r.report(2, "p").state,
            "starting",
            "another user's id is not visible"
        );
        e.finish(ProgressState::Error(413));
        assert_eq!(r.report(1, "p").status, Some(413));
        let r = ProgressRegistry::new(Duration::from_millis(0));
        r.start(1, "q", None).finish(ProgressState::Done);
        assert_eq!(
            r.report(1, "q").state,
            "starting",
            "forgotten after retention"
        );
    }

    #[test]
    fn a_user_holds_at_most_per_user_entries() {
        let r = ProgressRegistry::new(Duration::from_secs(60));
        let live = r.start(1, "live", None);
        for i in 0..10 * PER_USER {
            r.start(1, &format!("id{i}"), None)
                .finish(ProgressState::Done);
        }
        let held = r.entries.lock().map(|m| m[&1].len()).unwrap_or(0);
        assert_eq!(held, PER_USER);
        assert_eq!(
            r.report(1, "live").state,
            "uploading",
            "ended ones go first"
        );
        let last = format!("id{}", 10 * PER_USER - 1);
        assert_eq!(r.report(1, &last).state, "done");
        assert_eq!(r.report(1, "id0").state, "starting");
        drop(live);
        r.start(2, "other", None);
        assert_eq!(r.report(2, "other").state, "uploading");
    }
}
