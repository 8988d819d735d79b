//! Per-user quota: refuses the upload (413) as soon as the user's stored bytes plus what this
//! request has sent would pass the quota, before any more is stored.

use bytes::Bytes;

use crate::upload::UploadError;
use crate::upload::handler::{FileInfo, HandlerError, NewFile, UploadHandler};

pub struct QuotaHandler {
    quota: u64,
    used: u64,
    received: u64,
}

impl QuotaHandler {
    pub fn new(quota: u64, used: u64) -> Self {
        Self {
            quota,
            used,
            received: 0,
        }
    }

    fn exceeded(&self) -> HandlerError {
        HandlerError::Failed(UploadError::QuotaExceeded {
            quota: self.quota,
            used: self.used,
        })
    }
}

impl UploadHandler for QuotaHandler {
    fn name(&self) -> &'static str {
        "quota"
    }

    fn new_file(&mut self, file: &FileInfo) -> Result<NewFile, HandlerError> {
        // Checked sums: a client's declared length can be anything up to u64::MAX.
        let declared = file.content_length.unwrap_or(0);
        let would = self
            .used
            .checked_add(self.received)
            .and_then(|n| n.checked_add(declared));
        if would.is_none_or(|n| n > self.quota) {
            return Err(self.exceeded());
        }
        Ok(NewFile::Continue)
    }

    fn receive_chunk(&mut self, chunk: Bytes, _start: u64) -> Result<Option<Bytes>, HandlerError> {
        self.received = self.received.saturating_add(chunk.len() as u64);
        if self.used.saturating_add(self.received) > self.quota {
            return Err(self.exceeded());
        }
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::handlers::spill::tests::info;

    #[test]
    fn refuses_the_chunk_that_crosses_the_quota() {
        let mut q = QuotaHandler::new(100, 60);
        q.new_file(&info("a")).expect("new");
        assert!(q.receive_chunk(Bytes::from(vec![0; 30]), 0).is_ok());
        assert!(q.receive_chunk(Bytes::from(vec![0; 10]), 30).is_ok()); // exactly at quota
        let err = q.receive_chunk(Bytes::from(vec![0; 1]), 40).unwrap_err();
        assert!(matches!(
            err,
            HandlerError::Failed(UploadError::QuotaExceeded { quota: 100, .. })
        ));
        // Counts across the files of one request, and a declared length is checked up front.
        let mut q = QuotaHandler::new(100, 0);
        q.new_file(&info("a")).expect("new");
        q.receive_chunk(Bytes::from(vec![0; 90]), 0).expect("fits");
        let mut big = info("b");
        big.content_length = Some(20);
        assert!(q.new_file(&big).is_err());
        // A declared length that would wrap the sum is refused, not waved through.
        let mut q = QuotaHandler::new(100, 60);
        let mut huge = info("c");
        huge.content_length = Some(u64::MAX - 10);
        assert!(q.new_file(&huge).is_err());
    }
}
