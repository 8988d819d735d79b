//! Progress: counts the bytes received into a shared entry that `GET /api/progress/{id}`
//! reads while the upload runs (the nginx upload-progress module's model).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::upload::handler::{HandlerError, UploadHandler};
use crate::upload::progress::ProgressEntry;

pub struct ProgressHandler {
    entry: Arc<ProgressEntry>,
}

impl ProgressHandler {
    pub fn new(entry: Arc<ProgressEntry>) -> Self {
        Self { entry }
    }
}

impl UploadHandler for ProgressHandler {
    fn name(&self) -> &'static str {
        "progress"
    }

    fn receive_chunk(&mut self, chunk: Bytes, _start: u64) -> Result<Option<Bytes>, HandlerError> {
        self.entry
            .received
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::handlers::spill::tests::run_file;

    #[test]
    fn counts_every_byte() {
        let entry = Arc::new(ProgressEntry::new(Some(1000)));
        let mut h = ProgressHandler::new(entry.clone());
        run_file(&mut h, &[1u8; 1000], 64);
        assert_eq!(entry.received.load(Ordering::Relaxed), 1000);
    }
}
