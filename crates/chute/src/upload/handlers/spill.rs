//! Spill: keeps a file in memory up to `file_upload_max_memory_size`, then moves it to a
//! temporary file in `file_upload_temp_dir` and streams the rest there (Django's memory and
//! temporary-file handlers in one). As in Django, a request whose Content-Length (or a part
//! whose own length) is over the limit goes to disk from its first byte, so that many
//! concurrent large uploads do not each hold 2.5 MB in memory. Unlike Django, the limit also
//! holds for the request as a whole: once the files kept in memory add up to it, the next
//! ones go to disk, so a request of a hundred 2 MB files holds at most 2.5 MB of them.
//! Claims every file it sees. The temp file is removed when the upload is interrupted or the
//! file dropped; the engine moves it into storage when the upload succeeds.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};

use crate::upload::handler::{
    FileBody, FileFacts, FileInfo, HandlerError, NewFile, UploadHandler, UploadedFile,
};

pub struct SpillHandler {
    max_memory: usize,
    request_length: Option<u64>,
    temp_dir: PathBuf,
    mode: u32,
    memory: BytesMut,
    file: Option<std::io::BufWriter<tempfile::NamedTempFile>>,
    written: u64,
    /// Bytes of this request's earlier files that are kept in memory.
    held: usize,
}

impl SpillHandler {
    pub fn new(max_memory: usize, temp_dir: PathBuf, mode: u32) -> Self {
        Self {
            max_memory,
            request_length: None,
            temp_dir,
            mode,
            memory: BytesMut::new(),
            file: None,
            written: 0,
            held: 0,
        }
    }

    /// The request's Content-Length, when known: over `max_memory`, files go straight to disk.
    pub fn with_request_length(mut self, len: Option<u64>) -> Self {
        self.request_length = len;
        self
    }

    fn spill(&mut self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.temp_dir)?;
        let tmp = tempfile::Builder::new()
            .prefix("chute-")
            .suffix(".upload")
            .tempfile_in(&self.temp_dir)?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(self.mode))?;
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, tmp);
        w.write_all(&self.memory)?;
        self.memory = BytesMut::new();
        self.file = Some(w);
        Ok(())
    }
}

impl UploadHandler for SpillHandler {
    fn name(&self) -> &'static str {
        "spill"
    }

    fn new_file(&mut self, file: &FileInfo) -> Result<NewFile, HandlerError> {
        self.memory.clear();
        self.file = None;
        self.written = 0;
        let max = self.max_memory as u64;
        if self.request_length.is_some_and(|l| l > max)
            || file.content_length.is_some_and(|l| l > max)
        {
            self.spill()?;
        }
        Ok(NewFile::Continue)
    }

    fn receive_chunk(&mut self, chunk: Bytes, _start: u64) -> Result<Option<Bytes>, HandlerError> {
        self.written += chunk.len() as u64;
        let in_memory = self.held + self.memory.len() + chunk.len();
        if self.file.is_none() && in_memory > self.max_memory {
            self.spill()?;
        }
        match self.file.as_mut() {
            Some(w) => w.write_all(&chunk)?,
            None => self.memory.extend_from_slice(&chunk),
        }
        Ok(None)
    }

    fn file_complete(
        &mut self,
        _size: u64,
        _facts: &mut FileFacts,
    ) -> Result<Option<UploadedFile>, HandlerError> {
        let body = match self.file.take() {
            Some(w) => {
                let tmp = w.into_inner().map_err(|e| e.into_error())?;
                tmp.as_file().sync_data()?;
                FileBody::Temp(tmp.into_temp_path())
            }
            None => {
                self.held += self.memory.len();
                FileBody::Memory(std::mem::take(&mut self.memory).freeze())
            }
        };
        Ok(Some(UploadedFile {
            body,
            stored_size: self.written,
        }))
    }

    fn upload_interrupted(&mut self) {
        self.file = None; // NamedTempFile removes itself when dropped
        self.memory = BytesMut::new();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::upload::handler::Chain;

    pub fn info(name: &str) -> FileInfo {
        FileInfo {
            field_name: "file".into(),
            file_name: name.into(),
            ..Default::default()
        }
    }

    /// Drives one file through a single handler in `chunk`-sized pieces; returns its facts.
    pub fn run_file_with(
        h: &mut dyn UploadHandler,
        file: &FileInfo,
        data: &[u8],
        chunk: usize,
    ) -> Result<FileFacts, HandlerError> {
        h.new_file(file)?;
        let mut start = 0;
        for c in data.chunks(chunk) {
            h.receive_chunk(Bytes::copy_from_slice(c), start)?;
            start += c.len() as u64;
        }
        h.file_end()?;
        let mut facts = FileFacts::default();
        h.file_complete(data.len() as u64, &mut facts)?;
        Ok(facts)
    }

    pub fn run_file(h: &mut dyn UploadHandler, data: &[u8], chunk: usize) -> FileFacts {
        run_file_with(h, &info("f.bin"), data, chunk).expect("handler accepts the file")
    }

    fn spill_chain(dir: &std::path::Path, max: usize) -> Chain {
        Chain::new(
            vec![Box::new(SpillHandler::new(max, dir.to_path_buf(), 0o600))],
            1000,
        )
    }

    #[test]
    fn small_files_stay_in_memory_large_ones_spill_to_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut chain = spill_chain(dir.path(), 2500);
        chain.new_file(info("small")).expect("new");
        chain
            .receive_chunk(Bytes::from(vec![1; 1000]))
            .expect("chunk");
        chain
            .receive_chunk(Bytes::from(vec![2; 1500]))
            .expect("chunk");
        let small = chain.end_file().expect("end").expect("claimed");
        assert!(matches!(&small.file.body, FileBody::Memory(b) if b.len() == 2500));

        chain.new_file(info("large")).expect("new");
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        for c in data.chunks(1000) {
            chain
                .receive_chunk(Bytes::copy_from_slice(c))
                .expect("chunk");
        }
        let large = chain.end_file().expect("end").expect("claimed");
        let FileBody::Temp(path) = &large.file.body else {
            panic!("large file spills")
        };
        assert!(path.starts_with(dir.path()));
        assert_eq!(std::fs::read(path).expect("read"), data);
        let mode = std::fs::metadata(path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let p = path.to_path_buf();
        drop(large);
        assert!(!p.exists(), "a dropped temp file is removed");
    }

    #[test]
    fn a_large_request_goes_to_disk_from_the_first_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = SpillHandler::new(1000, dir.path().to_path_buf(), 0o600)
            .with_request_length(Some(5000));
        let mut chain = Chain::new(vec![Box::new(h)], 100);
        chain.new_file(info("a")).expect("new");
        chain
            .receive_chunk(Bytes::from_static(b"tiny"))
            .expect("chunk");
        let f = chain.end_file().expect("end").expect("claimed");
        assert!(matches!(f.file.body, FileBody::Temp(_)));
    }

    #[test]
    fn a_request_keeps_at_most_the_limit_in_memory_whatever_its_files() {
        // Ten files of 800 bytes under a 2000-byte limit, in a request of unknown length.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut chain = spill_chain(dir.path(), 2000);
        let mut in_memory = 0;
        let mut kept = Vec::new();
        for i in 0..10u8 {
            chain.new_file(info(&format!("f{i}"))).expect("new");
            chain
                .receive_chunk(Bytes::from(vec![i; 800]))
                .expect("chunk");
            let f = chain.end_file().expect("end").expect("claimed");
            if let FileBody::Memory(b) = &f.file.body {
                in_memory += b.len();
            }
            kept.push(f);
        }
        assert_eq!(
            in_memory, 1600,
            "two files in memory, the other eight on disk"
        );
        let on_disk = kept
            .iter()
            .filter(|f| matches!(f.file.body, FileBody::Temp(_)))
            .count();
        assert_eq!(on_disk, 8);
    }

    #[test]
    fn interrupted_upload_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut chain = spill_chain(dir.path(), 10);
        chain.new_file(info("big")).expect("new");
        chain
            .receive_chunk(Bytes::from(vec![0; 5000]))
            .expect("chunk");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
        chain.upload_interrupted();
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }
}
