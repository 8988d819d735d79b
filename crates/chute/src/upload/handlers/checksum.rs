//! Computes the configured digests while the bytes pass; records them as file facts.

use bytes::Bytes;

use crate::upload::checksum::{Algorithm, Hasher};
use crate::upload::handler::{
    FileFacts, FileInfo, HandlerError, NewFile, UploadHandler, UploadedFile,
};

pub struct ChecksumHandler {
    algorithms: Vec<Algorithm>,
    hashers: Vec<Hasher>,
}

impl ChecksumHandler {
    pub fn new(algorithms: Vec<Algorithm>) -> Self {
        Self {
            algorithms,
            hashers: Vec::new(),
        }
    }
}

impl UploadHandler for ChecksumHandler {
    fn name(&self) -> &'static str {
        "checksum"
    }

    fn new_file(&mut self, _file: &FileInfo) -> Result<NewFile, HandlerError> {
        self.hashers = self.algorithms.iter().map(|a| Hasher::new(*a)).collect();
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
        facts: &mut FileFacts,
    ) -> Result<Option<UploadedFile>, HandlerError> {
        for h in self.hashers.drain(..) {
            facts.checksums.insert(h.algorithm(), h.finish_hex());
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
    fn digests_match_one_shot_hashes_whatever_the_chunking() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for chunk in [1usize, 7, 4096, 65536, 1 << 20] {
            let mut h = ChecksumHandler::new(Algorithm::ALL.to_vec());
            let facts = run_file(&mut h, &data, chunk);
            for a in Algorithm::ALL {
                assert_eq!(
                    facts.checksums[&a],
                    digest_hex(a, &data),
                    "{a:?} at {chunk}"
                );
            }
        }
    }
}
