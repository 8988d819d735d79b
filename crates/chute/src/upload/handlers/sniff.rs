//! Type sniffing: reads the magic bytes of the first 8 KiB and records the detected type.
//! Optionally refuses a file whose content contradicts both its name's extension and its
//! declared type (a PNG named report.pdf, an executable named photo.jpg).

use bytes::Bytes;

use crate::upload::UploadError;
use crate::upload::handler::{
    FileFacts, FileInfo, HandlerError, NewFile, UploadHandler, UploadedFile,
};

const HEAD: usize = 8192;

/// A file's first 8 KiB, gathered across chunks for magic-byte detection and handed out once.
#[derive(Default)]
pub struct FileHead {
    bytes: Vec<u8>,
    taken: bool,
}

impl FileHead {
    /// Starts over for a new file.
    pub fn reset(&mut self) {
        self.bytes.clear();
        self.taken = false;
    }

    /// Gathers from `chunk`; Some(head) once 8 KiB are there (only the first time).
    pub fn gather(&mut self, chunk: &[u8]) -> Option<Vec<u8>> {
        if self.taken {
            return None;
        }
        let take = (HEAD - self.bytes.len()).min(chunk.len());
        self.bytes.extend_from_slice(&chunk[..take]);
        (self.bytes.len() >= HEAD).then(|| self.take()).flatten()
    }

    /// What was gathered, at the file's end, unless handed out already.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        if self.taken {
            return None;
        }
        self.taken = true;
        Some(std::mem::take(&mut self.bytes))
    }

    /// True when the file has shown no byte at all (and the head was not handed out).
    pub fn is_empty(&self) -> bool {
        !self.taken && self.bytes.is_empty()
    }
}

pub struct SniffHandler {
    reject_mismatch: bool,
    head: FileHead,
    detected: Option<String>,
    file: FileInfo,
}

impl SniffHandler {
    pub fn new(reject_mismatch: bool) -> Self {
        Self {
            reject_mismatch,
            head: FileHead::default(),
            detected: None,
            file: FileInfo::default(),
        }
    }

    fn decide(&mut self, head: &[u8]) -> Result<(), HandlerError> {
        self.detected = detect(head);
        if self.reject_mismatch
            && let Some(detected) = &self.detected
            && contradicts(detected, &self.file)
        {
            return Err(HandlerError::Failed(UploadError::TypeMismatch {
                name: self.file.file_name.clone(),
                detected: detected.clone(),
            }));
        }
        Ok(())
    }
}

/// The type the content's magic bytes show, if any.
pub fn detect(head: &[u8]) -> Option<String> {
    infer::get(head).map(|t| t.mime_type().to_string())
}

/// True when the detected type matches neither the extension nor a specific declared type.
pub fn contradicts(detected: &str, file: &FileInfo) -> bool {
    let mut expected: Vec<String> = mime_guess::from_path(&file.file_name)
        .iter()
        .map(|m| m.essence_str().to_string())
        .collect();
    if let Some(ct) = &file.content_type {
        let ct = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !ct.is_empty() && ct != "application/octet-stream" {
            expected.push(ct);
        }
    }
    if expected.is_empty() {
        return false; // nothing was claimed, so nothing is contradicted
    }
    !expected.iter().any(|e| same_type(e, detected))
}

fn same_type(a: &str, b: &str) -> bool {
    let norm = |t: &str| match t {
        "image/jpg" | "image/pjpeg" => "image/jpeg".to_string(),
        "audio/x-wav" | "audio/wave" => "audio/wav".to_string(),
        "application/x-zip-compressed" => "application/zip".to_string(),
        other => other.to_string(),
    };
    norm(a) == norm(b)
}

impl UploadHandler for SniffHandler {
    fn name(&self) -> &'static str {
        "sniff"
    }

    fn new_file(&mut self, file: &FileInfo) -> Result<NewFile, HandlerError> {
        self.head.reset();
        self.detected = None;
        self.file = file.clone();
        Ok(NewFile::Continue)
    }

    fn receive_chunk(&mut self, chunk: Bytes, _start: u64) -> Result<Option<Bytes>, HandlerError> {
        if let Some(head) = self.head.gather(&chunk) {
            self.decide(&head)?;
        }
        Ok(Some(chunk))
    }

    fn file_end(&mut self) -> Result<Option<Bytes>, HandlerError> {
        if let Some(head) = self.head.take() {
            self.decide(&head)?;
        }
        Ok(None)
    }

    fn file_complete(
        &mut self,
        _size: u64,
        facts: &mut FileFacts,
    ) -> Result<Option<UploadedFile>, HandlerError> {
        facts.detected_type = self.detected.take();
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::handlers::spill::tests::{info, run_file_with};

    pub const PNG: &[u8] =
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

    #[test]
    fn detects_and_records_the_type() {
        let mut h = SniffHandler::new(false);
        let facts = run_file_with(&mut h, &info("x.pdf"), PNG, 3).expect("ok");
        assert_eq!(facts.detected_type.as_deref(), Some("image/png"));
        let mut h = SniffHandler::new(false);
        let facts = run_file_with(&mut h, &info("notes.txt"), b"just text", 4).expect("ok");
        assert_eq!(facts.detected_type, None);
    }

    #[test]
    fn mismatch_is_refused_only_when_asked() {
        let mut h = SniffHandler::new(true);
        let err = run_file_with(&mut h, &info("report.pdf"), PNG, 5).unwrap_err();
        assert!(matches!(
            err,
            HandlerError::Failed(UploadError::TypeMismatch { .. })
        ));
        let mut h = SniffHandler::new(true);
        assert!(run_file_with(&mut h, &info("pic.png"), PNG, 5).is_ok());
        let mut exe = b"MZ\x90\0\x03\0\0\0".to_vec();
        exe.resize(9000, 0);
        let mut h = SniffHandler::new(true);
        assert!(run_file_with(&mut h, &info("photo.jpg"), &exe, 4096).is_err());
        // No name extension and a generic type: nothing claimed, nothing contradicted.
        let mut h = SniffHandler::new(true);
        assert!(run_file_with(&mut h, &info("blob"), PNG, 5).is_ok());
    }
}
