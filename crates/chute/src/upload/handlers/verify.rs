//! Verify: checks the bytes of one request against a digest the client sent with it (tus's
//! `Upload-Checksum`, as a header or, with checksum-trailer, as a trailer after the body); a
//! mismatch refuses the request, so its bytes are not kept.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::checksum::{Algorithm, Hasher};
use crate::upload::UploadError;
use crate::upload::handler::{
    FileFacts, FileInfo, HandlerError, NewFile, UploadHandler, UploadedFile,
};

/// A digest that arrives after the body: the algorithm and bytes, or why they are unusable.
pub type TrailerDigest = Arc<Mutex<Option<Result<(Algorithm, Vec<u8>), String>>>>;

/// Algorithms a trailer may name; all are computed, as the trailer comes last.
pub const TRAILER_ALGORITHMS: [Algorithm; 3] = [Algorithm::Md5, Algorithm::Sha1, Algorithm::Sha256];

enum Expected {
    Now(Algorithm, Vec<u8>),
    Trailer(TrailerDigest),
}

pub struct VerifyHandler {
    expected: Expected,
    hashers: Vec<Hasher>,
}

impl VerifyHandler {
    pub fn new(algorithm: Algorithm, expected: Vec<u8>) -> Self {
        Self {
            expected: Expected::Now(algorithm, expected),
            hashers: Vec::new(),
        }
    }

    /// Checks against a digest that the adapter fills in once the body's trailer is read.
    pub fn from_trailer(slot: TrailerDigest) -> Self {
        Self {
            expected: Expected::Trailer(slot),
            hashers: Vec::new(),
        }
    }

    fn algorithms(&self) -> Vec<Algorithm> {
        match &self.expected {
            Expected::Now(a, _) => vec![*a],
            Expected::Trailer(_) => TRAILER_ALGORITHMS.to_vec(),
        }
    }
}

impl UploadHandler for VerifyHandler {
    fn name(&self) -> &'static str {
        "verify"
    }

    fn new_file(&mut self, _file: &FileInfo) -> Result<NewFile, HandlerError> {
        self.hashers = self.algorithms().into_iter().map(Hasher::new).collect();
        Ok(NewFile::Continue)
    }

    fn receive_chunk(&mut self, chunk: Bytes, _start: u64) -> Result<Option<Bytes>, HandlerError> {
        for h in &mut self.hashers {
            h.update(&chunk);
        }
        Ok(Some(chunk))
    }

    fn file_complete(
        &mut self,
        _size: u64,
        _facts: &mut FileFacts,
    ) -> Result<Option<UploadedFile>, HandlerError> {
        let (algorithm, expected) = match &self.expected {
            Expected::Now(a, e) => (*a, e.clone()),
            Expected::Trailer(slot) => match slot.lock().ok().and_then(|s| s.clone()) {
                Some(Ok(pair)) => pair,
                Some(Err(why)) => return Err(UploadError::Rejected(why).into()),
                None => {
                    return Err(UploadError::Rejected(
                        "the Upload-Checksum trailer announced did not arrive".into(),
                    )
                    .into());
                }
            },
        };
        let got = std::mem::take(&mut self.hashers)
            .into_iter()
            .find(|h| h.algorithm() == algorithm)
            .map(Hasher::finish_bytes)
            .unwrap_or_default();
        if got != expected {
            return Err(UploadError::ChecksumMismatch {
                algorithm: algorithm.name(),
            }
            .into());
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::digest_hex;
    use crate::upload::handlers::spill::tests::run_file;

    #[test]
    fn accepts_the_right_digest_and_refuses_another() {
        let data = b"some bytes of a PATCH";
        let good = hex::decode(digest_hex(Algorithm::Sha1, data)).expect("hex");
        let mut h = VerifyHandler::new(Algorithm::Sha1, good);
        run_file(&mut h, data, 4);
        let mut h = VerifyHandler::new(Algorithm::Sha1, vec![0; 20]);
        let err = crate::upload::handlers::spill::tests::run_file_with(
            &mut h,
            &crate::upload::handlers::spill::tests::info("x"),
            data,
            4,
        );
        assert!(matches!(
            err,
            Err(HandlerError::Failed(UploadError::ChecksumMismatch {
                algorithm: "sha1"
            }))
        ));
    }
}
