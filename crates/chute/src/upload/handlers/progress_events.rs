//! `upload.progress` events: reports the bytes of a file as they arrive, at most once per
//! `hooks_progress_interval` per upload (`upload::events::Events::progress`). Best effort:
//! never stored, never retried. Resumable uploads report their offset under their upload id;
//! form and session files report the bytes of the file so far under the request's id.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use crate::upload::events::Events;
use crate::upload::handler::{FileInfo, HandlerError, NewFile, UploadHandler};

/// What each progress event says besides the bytes.
#[derive(Clone)]
pub struct ProgressEvents {
    pub events: Arc<Events>,
    /// The upload id (resumable) or request id (forms): what the events are about.
    pub subject: String,
    /// An upload id, for resumable uploads.
    pub upload_id: Option<String>,
    pub protocol: &'static str,
    pub user: String,
    /// Where the counting starts (a resumable upload's offset).
    pub start: u64,
    /// The declared length, when known.
    pub length: Option<u64>,
    pub session: Option<String>,
}

impl ProgressEvents {
    /// For the files of one form or session request of `user`: None when progress is not
    /// reported.
    pub fn for_request(
        events: &Arc<Events>,
        protocol: &'static str,
        user: &str,
        session: Option<String>,
    ) -> Option<Self> {
        events.reports_progress().then(|| Self {
            events: events.clone(),
            subject: format!("req_{}", uuid::Uuid::new_v4().simple()),
            upload_id: None,
            protocol,
            user: user.to_string(),
            start: 0,
            length: None,
            session,
        })
    }
}

pub struct ProgressEventHandler {
    p: ProgressEvents,
    name: String,
    seen: u64,
    file_length: Option<u64>,
}

impl ProgressEventHandler {
    pub fn new(p: ProgressEvents) -> Self {
        Self {
            file_length: p.length,
            p,
            name: String::new(),
            seen: 0,
        }
    }
}

/// A form or session request's clock goes with its handler, however the request ended (a
/// resumable upload's goes when the upload completes or is discarded, in the engine).
impl Drop for ProgressEventHandler {
    fn drop(&mut self) {
        if self.p.upload_id.is_none() {
            self.p.events.forget_progress(&self.p.subject);
        }
    }
}

impl UploadHandler for ProgressEventHandler {
    fn name(&self) -> &'static str {
        "progress-events"
    }

    fn new_file(&mut self, file: &FileInfo) -> Result<NewFile, HandlerError> {
        self.name = file.file_name.clone();
        self.seen = 0;
        if self.p.upload_id.is_none() {
            self.file_length = file.content_length;
        }
        Ok(NewFile::Continue)
    }

    fn receive_chunk(&mut self, chunk: Bytes, _start: u64) -> Result<Option<Bytes>, HandlerError> {
        self.seen += chunk.len() as u64;
        let p = &self.p;
        p.events.progress(&p.subject, || {
            json!({
                "upload_id": p.upload_id,
                "request_id": p.upload_id.is_none().then_some(&p.subject),
                "protocol": p.protocol,
                "user": p.user,
                "name": self.name,
                "offset": p.start + self.seen,
                "length": self.file_length,
                "session": p.session,
            })
        });
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn events() -> Arc<Events> {
        let mut settings = Settings::defaults();
        settings.hooks_url = "http://127.0.0.1:9/".into();
        settings.hooks_progress_interval = crate::config::Dur(std::time::Duration::from_secs(3600));
        Arc::new(Events::new(&settings))
    }

    #[test]
    fn a_form_requests_progress_clock_goes_when_the_request_ends() {
        let events = events();
        let file = FileInfo {
            field_name: "file".into(),
            file_name: "a.bin".into(),
            raw_name: "a.bin".into(),
            content_type: None,
            content_length: Some(8),
            charset: None,
            content_type_extra: Default::default(),
        };
        for ended in ["completed", "interrupted", "dropped"] {
            let p = ProgressEvents::for_request(&events, "multipart", "alice", None).expect("on");
            let mut h = ProgressEventHandler::new(p);
            h.new_file(&file).expect("file");
            h.receive_chunk(Bytes::from_static(b"12345678"), 0)
                .expect("chunk");
            assert_eq!(
                events.progress_clocks(),
                1,
                "{ended}: one clock while it runs"
            );
            match ended {
                "completed" => h.upload_complete().expect("complete"),
                "interrupted" => h.upload_interrupted(),
                _ => {}
            }
            drop(h);
            assert_eq!(
                events.progress_clocks(),
                0,
                "{ended}: the request's clock is gone"
            );
        }
    }
}
