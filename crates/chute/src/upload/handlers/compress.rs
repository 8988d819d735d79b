//! On-the-fly zstd compression: chunks are compressed as they pass and later handlers store
//! the compressed bytes; the catalog records `encoding = zstd` and downloads decompress
//! transparently. Handlers that need the original bytes (sniff, checksum, quota) go before it.

use bytes::Bytes;
use std::io::Write;

use crate::upload::handler::{
    FileFacts, FileInfo, HandlerError, NewFile, UploadHandler, UploadedFile,
};

pub struct CompressHandler {
    level: i32,
    encoder: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
}

impl CompressHandler {
    pub fn new(level: i32) -> Self {
        Self {
            level,
            encoder: None,
        }
    }
}

impl UploadHandler for CompressHandler {
    fn name(&self) -> &'static str {
        "compress"
    }

    fn new_file(&mut self, _file: &FileInfo) -> Result<NewFile, HandlerError> {
        self.encoder = Some(zstd::stream::write::Encoder::new(Vec::new(), self.level)?);
        Ok(NewFile::Continue)
    }

    fn receive_chunk(&mut self, chunk: Bytes, _start: u64) -> Result<Option<Bytes>, HandlerError> {
        let Some(enc) = self.encoder.as_mut() else {
            return Ok(Some(chunk));
        };
        enc.write_all(&chunk)?;
        let out = std::mem::take(enc.get_mut());
        Ok((!out.is_empty()).then(|| Bytes::from(out)))
    }

    fn file_end(&mut self) -> Result<Option<Bytes>, HandlerError> {
        match self.encoder.take() {
            Some(enc) => Ok(Some(Bytes::from(enc.finish()?))),
            None => Ok(None),
        }
    }

    fn file_complete(
        &mut self,
        _size: u64,
        facts: &mut FileFacts,
    ) -> Result<Option<UploadedFile>, HandlerError> {
        facts.encoding = Some("zstd".into());
        Ok(None)
    }

    fn upload_interrupted(&mut self) {
        self.encoder = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::handler::{Chain, FileBody};
    use crate::upload::handlers::spill::{SpillHandler, tests::info};

    #[test]
    fn compressed_bytes_round_trip_and_are_smaller() {
        let data: Vec<u8> = b"the quick brown fox jumps over the lazy dog. "
            .iter()
            .cycle()
            .take(300_000)
            .copied()
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut chain = Chain::new(
            vec![
                Box::new(CompressHandler::new(3)),
                Box::new(SpillHandler::new(1 << 20, dir.path().to_path_buf(), 0o600)),
            ],
            4096,
        );
        chain.new_file(info("log.txt")).expect("new");
        for c in data.chunks(4096) {
            chain
                .receive_chunk(Bytes::copy_from_slice(c))
                .expect("chunk");
        }
        let done = chain.end_file().expect("end").expect("claimed");
        assert_eq!(done.size, data.len() as u64);
        assert_eq!(done.facts.encoding.as_deref(), Some("zstd"));
        let FileBody::Memory(stored) = &done.file.body else {
            panic!("small compressed file stays in memory")
        };
        assert!(stored.len() < data.len() / 10, "{} bytes", stored.len());
        assert_eq!(done.file.stored_size, stored.len() as u64);
        assert_eq!(zstd::decode_all(&stored[..]).expect("decode"), data);
    }
}
