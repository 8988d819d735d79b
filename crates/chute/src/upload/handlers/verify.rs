//! Verify: checks the bytes of one request against a digest the client sent with it (tus's
//! `Upload-Checksum`); a mismatch refuses the request, so its bytes are not kept.

use bytes::Bytes;

use crate::upload::UploadError;
use crate::upload::checksum::{Algorithm, Hasher};
use crate::upload::handler::{
    FileFacts, FileInfo, HandlerError, NewFile, UploadHandler, UploadedFile,
};

pub struct VerifyHandler {
    algorithm: Algorithm,
    expected: Vec<u8>,
    hasher: Option<Hasher>,
}

impl VerifyHandler {
    pub fn new(algorithm: Algorithm, expected: Vec<u8>) -> Self {
        Self {
            algorithm,
            expected,
            hasher: None,
        }
    }
}

impl UploadHandler for VerifyHandler {
    fn name(&self) -> &'static str {
        "verify"
    }

    fn new_file(&mut self, _file: &FileInfo) -> Result<NewFile, HandlerError> {
        self.hasher = Some(Hasher::new(self.algorithm));
        Ok(NewFile::Continue)
    }

    fn receive_chunk(&mut self, chunk: Bytes, _start: u64) -> Result<Option<Bytes>, HandlerError> {
        if let Some(h) = self.hasher.as_mut() {
            h.update(&chunk);
        }
        Ok(Some(chunk))
    }

    fn file_complete(
        &mut self,
        _size: u64,
        _facts: &mut FileFacts,
    ) -> Result<Option<UploadedFile>, HandlerError> {
        let got = self
            .hasher
            .take()
            .map(Hasher::finish_bytes)
            .unwrap_or_default();
        if got != self.expected {
            return Err(UploadError::ChecksumMismatch {
                algorithm: self.algorithm.name(),
            }
            .into());
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::checksum::digest_hex;
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
