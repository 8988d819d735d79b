//! Straight-to-storage: writes each chunk to a staging object of the storage backend as it
//! arrives, with no temporary copy; the engine then places the staged object under its final
//! key. Claims every file it sees. A staged object is removed if the upload fails.

use std::sync::Arc;

use bytes::Bytes;

use crate::storage::{StagedWrite, Storage};
use crate::upload::UploadError;
use crate::upload::handler::{
    FileBody, FileFacts, FileInfo, HandlerError, NewFile, StagedGuard, UploadHandler, UploadedFile,
};

pub struct StoreHandler {
    storage: Arc<dyn Storage>,
    current: Option<(StagedGuard, Box<dyn StagedWrite>)>,
}

impl StoreHandler {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self {
            storage,
            current: None,
        }
    }
}

impl UploadHandler for StoreHandler {
    fn name(&self) -> &'static str {
        "store"
    }

    fn new_file(&mut self, _file: &FileInfo) -> Result<NewFile, HandlerError> {
        let key = format!("incoming/{}", uuid::Uuid::new_v4().simple());
        let writer = self.storage.begin(&key).map_err(UploadError::from)?;
        let guard = StagedGuard {
            storage: self.storage.clone(),
            key,
            armed: true,
        };
        self.current = Some((guard, writer));
        Ok(NewFile::Continue)
    }

    fn receive_chunk(&mut self, chunk: Bytes, _start: u64) -> Result<Option<Bytes>, HandlerError> {
        if let Some((_, w)) = self.current.as_mut() {
            w.write(&chunk)?;
        }
        Ok(None)
    }

    fn file_complete(
        &mut self,
        _size: u64,
        _facts: &mut FileFacts,
    ) -> Result<Option<UploadedFile>, HandlerError> {
        let Some((guard, mut writer)) = self.current.take() else {
            return Ok(None);
        };
        let stored_size = writer.sync()?;
        Ok(Some(UploadedFile {
            body: FileBody::Staged(guard),
            stored_size,
        }))
    }

    fn upload_interrupted(&mut self) {
        self.current = None; // the guard aborts the staged object
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalStorage;
    use crate::upload::handler::Chain;
    use crate::upload::handlers::spill::tests::info;

    #[test]
    fn writes_to_staging_and_cleans_up_on_interrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> =
            Arc::new(LocalStorage::open(dir.path(), 0o644, 0o755).expect("storage"));
        let staging = dir.path().join("staging/incoming");
        let mut chain = Chain::new(vec![Box::new(StoreHandler::new(storage.clone()))], 4);
        chain.new_file(info("a")).expect("new");
        chain
            .receive_chunk(Bytes::from_static(b"hello"))
            .expect("chunk");
        let done = chain.end_file().expect("end").expect("claimed");
        assert_eq!(done.file.stored_size, 5);
        let FileBody::Staged(guard) = &done.file.body else {
            panic!("staged")
        };
        let path = staging.join(format!(
            "{}.part",
            guard.key.trim_start_matches("incoming/")
        ));
        assert_eq!(std::fs::read(&path).expect("staged bytes"), b"hello");
        drop(done);
        assert!(!path.exists(), "an unplaced staged object is aborted");

        chain.new_file(info("b")).expect("new");
        chain
            .receive_chunk(Bytes::from_static(b"partial"))
            .expect("chunk");
        assert_eq!(std::fs::read_dir(&staging).expect("ls").count(), 1);
        chain.upload_interrupted();
        assert_eq!(std::fs::read_dir(&staging).expect("ls").count(), 0);
    }
}
