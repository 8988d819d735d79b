//! File validation for upload sessions (upload.views' checks, in its order): size, the file
//! name's safety, the extension against `accepted_file_formats`, the content's magic bytes
//! against the extension, then the session's count, total size and unique names.
//!
//! Every refusal is an [`UploadError::Invalid`] with a short `error` and a `verbose` sentence
//! naming the file, refused as soon as the fact is known (a name before its first byte, an
//! oversized file at the byte that crosses the limit).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::sniff::FileHead;
use crate::config::FileFormats;
use crate::upload::UploadError;
use crate::upload::handler::{FileInfo, HandlerError, NewFile, UploadHandler};

/// What the session already holds when the request starts; the catalog re-checks atomically.
#[derive(Clone, Debug, Default)]
pub struct SessionUsage {
    pub count: u64,
    pub total: u64,
    pub names: BTreeSet<String>,
    pub max_count: u64,
    pub max_total: u64,
}

pub struct ValidateHandler {
    formats: FileFormats,
    max_size: u64,
    session: Option<SessionUsage>,
    name: String,
    ext: String,
    head: FileHead,
    files: u32,
    field: Option<String>,
    name_slot: Option<Arc<Mutex<Option<String>>>>,
}

fn invalid(error: &str, verbose: String) -> HandlerError {
    HandlerError::Failed(UploadError::Invalid {
        error: error.to_string(),
        verbose,
    })
}

/// Extensions without magic bytes: accepted when the content is not binary.
const TEXT_EXTENSIONS: [&str; 14] = [
    "txt", "csv", "tsv", "md", "json", "xml", "html", "htm", "log", "srt", "vtt", "yaml", "yml",
    "ini",
];

/// Names Windows reserves for devices, whatever the extension.
fn windows_reserved(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("").trim_end();
    let upper = stem.to_ascii_uppercase();
    matches!(upper.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((upper.starts_with("COM") || upper.starts_with("LPT"))
            && upper.len() == 4
            && matches!(upper.as_bytes()[3], b'1'..=b'9'))
}

fn percent_decoded(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Checks a client's file name as sent; returns the extension (lower case) when it is safe.
pub fn check_name(name: &str, formats: &FileFormats) -> Result<String, HandlerError> {
    let shown = name
        .chars()
        .take(80)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if name.trim().is_empty() {
        return Err(invalid(
            "File name is empty",
            "The file has no name; give it a name and upload it again.".into(),
        ));
    }
    if name.chars().count() > 255 {
        return Err(invalid(
            "File name is too long",
            format!("The file name \"{shown}…\" is longer than 255 characters."),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(
            "File name contains control characters",
            format!("The file name \"{shown}\" contains control characters."),
        ));
    }
    let bytes = name.as_bytes();
    if name.starts_with('/')
        || name.starts_with('\\')
        || (bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':')
    {
        return Err(invalid(
            "File name is an absolute path",
            format!("The file name \"{shown}\" is an absolute path; send the file's name only."),
        ));
    }
    let once = percent_decoded(name);
    let twice = percent_decoded(&once);
    for form in [name, once.as_str(), twice.as_str()] {
        if form.contains("..") || form.contains('/') || form.contains('\\') {
            return Err(invalid(
                "File name contains a path",
                format!(
                    "The file name \"{shown}\" contains a path or \"..\"; send the file's name only."
                ),
            ));
        }
        if form.chars().any(char::is_control) {
            return Err(invalid(
                "File name contains control characters",
                format!("The file name \"{shown}\" contains encoded control characters."),
            ));
        }
    }
    if windows_reserved(name) {
        return Err(invalid(
            "File name is reserved",
            format!("\"{shown}\" is a device name reserved by Windows; rename the file."),
        ));
    }
    let ext = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() => ext.to_ascii_lowercase(),
        _ => String::new(),
    };
    if ext.is_empty() || formats.group_of(&ext).is_none() {
        return Err(invalid(
            "File type is not accepted",
            format!(
                "The file \"{shown}\" has {} extension; accepted: {}.",
                if ext.is_empty() {
                    "no".to_string()
                } else {
                    format!("the .{ext}")
                },
                formats.extensions().join(", ")
            ),
        ));
    }
    Ok(ext)
}

fn canonical_ext(e: &str) -> &str {
    match e {
        "jpeg" | "jpe" => "jpg",
        "tiff" => "tif",
        "htm" => "html",
        "oga" | "opus" => "ogg",
        "qt" => "mov",
        "m4v" => "mp4",
        other => other,
    }
}

/// Extensions whose files are zip containers, which a detector may see only as zip.
const ZIP_CONTAINERS: [&str; 8] = ["docx", "xlsx", "pptx", "odt", "ods", "odp", "epub", "zip"];

/// True when the content's start agrees with the extension. `None` when it does, else the
/// type the content shows (or "unrecognised data").
pub fn content_mismatch(head: &[u8], ext: &str) -> Option<String> {
    let detected = infer::get(head);
    let ext_mimes: Vec<String> = mime_guess::from_ext(ext)
        .iter()
        .map(|m| m.essence_str().to_string())
        .collect();
    match detected {
        Some(t) => {
            let same = canonical_ext(t.extension()) == canonical_ext(ext)
                || ext_mimes.iter().any(|m| m == t.mime_type())
                || (t.extension() == "zip" && ZIP_CONTAINERS.contains(&ext));
            let text_ok =
                TEXT_EXTENSIONS.contains(&ext) && t.matcher_type() == infer::MatcherType::Text;
            (!(same || text_ok)).then(|| t.mime_type().to_string())
        }
        None => {
            let has_magic = ext_mimes.iter().any(|m| infer::is_mime_supported(m))
                && !TEXT_EXTENSIONS.contains(&ext);
            if has_magic {
                Some("unrecognised data".into())
            } else if head.contains(&0) {
                Some("binary data".into())
            } else {
                None
            }
        }
    }
}

impl ValidateHandler {
    pub fn new(formats: FileFormats, max_size: u64, session: Option<SessionUsage>) -> Self {
        Self {
            formats,
            max_size,
            session,
            name: String::new(),
            ext: String::new(),
            head: FileHead::default(),
            files: 0,
            field: None,
            name_slot: None,
        }
    }

    /// Only files of this form field are validated and kept; files of other fields are skipped.
    pub fn only_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_string());
        self
    }

    /// Where the name of the file being validated is shown to the caller (for its errors).
    pub fn with_name_slot(mut self, slot: Arc<Mutex<Option<String>>>) -> Self {
        self.name_slot = Some(slot);
        self
    }

    fn decide(&mut self, head: &[u8]) -> Result<(), HandlerError> {
        if let Some(found) = content_mismatch(head, &self.ext) {
            return Err(invalid(
                "File content does not match its type",
                format!(
                    "The file \"{}\" is named .{} but its content is {found}.",
                    self.name, self.ext
                ),
            ));
        }
        Ok(())
    }
}

impl UploadHandler for ValidateHandler {
    fn name(&self) -> &'static str {
        "validate"
    }

    fn new_file(&mut self, file: &FileInfo) -> Result<NewFile, HandlerError> {
        if self.field.as_ref().is_some_and(|f| *f != file.field_name) {
            return Err(HandlerError::SkipFile);
        }
        self.files += 1;
        if self.files > 1 {
            return Err(invalid(
                "One file per request",
                "Send each file of the session in its own request.".into(),
            ));
        }
        if let Some(slot) = &self.name_slot
            && let Ok(mut n) = slot.lock()
        {
            *n = Some(file.raw_name.clone());
        }
        self.ext = check_name(&file.raw_name, &self.formats)?;
        self.name = file.raw_name.clone();
        self.head.reset();
        if let Some(s) = &self.session {
            if s.names.contains(&self.name) {
                return Err(invalid(
                    "Duplicate file name",
                    format!(
                        "A file named \"{}\" is already in this session; remove it first or rename the file.",
                        self.name
                    ),
                ));
            }
            if s.count >= s.max_count {
                return Err(invalid(
                    "Too many files",
                    format!(
                        "The session already holds the most files allowed ({}).",
                        s.max_count
                    ),
                ));
            }
        }
        Ok(NewFile::Continue)
    }

    fn receive_chunk(&mut self, chunk: Bytes, start: u64) -> Result<Option<Bytes>, HandlerError> {
        let seen = start + chunk.len() as u64;
        if seen > self.max_size {
            return Err(invalid(
                "File is too large",
                format!(
                    "The file \"{}\" is larger than the {} bytes allowed for one file.",
                    self.name, self.max_size
                ),
            ));
        }
        if let Some(s) = &self.session
            && s.total + seen > s.max_total
        {
            return Err(invalid(
                "Session is too large",
                format!(
                    "With \"{}\" the session would hold more than the {} bytes allowed.",
                    self.name, s.max_total
                ),
            ));
        }
        if let Some(head) = self.head.gather(&chunk) {
            self.decide(&head)?;
        }
        Ok(Some(chunk))
    }

    fn file_end(&mut self) -> Result<Option<Bytes>, HandlerError> {
        if self.head.is_empty() {
            return Err(invalid(
                "File is empty",
                format!("The file \"{}\" is empty.", self.name),
            ));
        }
        if let Some(head) = self.head.take() {
            self.decide(&head)?;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SettingValue;

    fn formats() -> FileFormats {
        FileFormats::parse_str("Document=pdf,docx,txt;Image=png,jpg,jpeg").unwrap()
    }

    fn refused(name: &str) -> String {
        match check_name(name, &formats()) {
            Err(HandlerError::Failed(UploadError::Invalid { error, .. })) => error,
            other => panic!("{name:?} was not refused: {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn unsafe_names_are_refused() {
        assert_eq!(refused(""), "File name is empty");
        assert_eq!(refused("   "), "File name is empty");
        assert_eq!(
            refused(&format!("{}.pdf", "a".repeat(252))),
            "File name is too long"
        );
        assert_eq!(
            refused("a\u{0}b.pdf"),
            "File name contains control characters"
        );
        assert_eq!(refused("a\tb.pdf"), "File name contains control characters");
        assert_eq!(refused("/etc/x.pdf"), "File name is an absolute path");
        assert_eq!(refused("\\x.pdf"), "File name is an absolute path");
        assert_eq!(refused("C:x.pdf"), "File name is an absolute path");
        assert_eq!(refused("../x.pdf"), "File name contains a path");
        assert_eq!(refused("a/b.pdf"), "File name contains a path");
        assert_eq!(refused("a\\b.pdf"), "File name contains a path");
        assert_eq!(refused("%2e%2e%2fx.pdf"), "File name contains a path");
        assert_eq!(refused("%252e%252e%252fx.pdf"), "File name contains a path");
        assert_eq!(refused("a%2fb.pdf"), "File name contains a path");
        assert_eq!(refused("x%00.pdf"), "File name contains control characters");
        for r in [
            "CON",
            "con.pdf",
            "NUL.txt",
            "com1.pdf",
            "LPT9.png",
            "aux.tar.pdf",
        ] {
            assert_eq!(refused(r), "File name is reserved", "{r}");
        }
        assert_eq!(refused("x.exe"), "File type is not accepted");
        assert_eq!(refused("noext"), "File type is not accepted");
        assert_eq!(refused(".pdf"), "File type is not accepted");
    }

    #[test]
    fn safe_names_pass_with_their_extension() {
        let f = formats();
        assert_eq!(check_name("report.PDF", &f).ok(), Some("pdf".into()));
        assert_eq!(
            check_name("été 2024 — notes.txt", &f).ok(),
            Some("txt".into())
        );
        assert_eq!(check_name("console.pdf", &f).ok(), Some("pdf".into()));
        assert_eq!(check_name("COM10.pdf", &f).ok(), Some("pdf".into()));
        assert_eq!(check_name("a.b.c.jpeg", &f).ok(), Some("jpeg".into()));
    }

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";
    const PDF: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n";
    const ELF: &[u8] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0\x01\0\0\0";
    const JPG: &[u8] = b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0";

    #[test]
    fn content_must_agree_with_the_extension() {
        assert_eq!(content_mismatch(PDF, "pdf"), None);
        assert_eq!(content_mismatch(PNG, "png"), None);
        assert_eq!(content_mismatch(JPG, "jpeg"), None);
        assert_eq!(content_mismatch(JPG, "jpg"), None);
        assert_eq!(content_mismatch(PNG, "pdf").as_deref(), Some("image/png"));
        assert!(content_mismatch(ELF, "pdf").is_some());
        assert!(content_mismatch(ELF, "txt").is_some());
        assert_eq!(
            content_mismatch(b"just words", "pdf").as_deref(),
            Some("unrecognised data")
        );
        assert_eq!(content_mismatch(b"a,b\n1,2\n", "csv"), None);
        assert_eq!(content_mismatch(b"plain text\n", "txt"), None);
        assert_eq!(
            content_mismatch(b"ab\0cd", "txt").as_deref(),
            Some("binary data")
        );
    }

    fn run(h: &mut ValidateHandler, name: &str, chunks: &[&[u8]]) -> Result<(), String> {
        let info = FileInfo {
            field_name: "file".into(),
            file_name: name.into(),
            raw_name: name.into(),
            ..FileInfo::default()
        };
        let err = |e: HandlerError| match e {
            HandlerError::Failed(UploadError::Invalid { error, .. }) => error,
            other => format!("{other:?}"),
        };
        h.new_file(&info).map_err(err)?;
        let mut start = 0;
        for c in chunks {
            h.receive_chunk(Bytes::copy_from_slice(c), start)
                .map_err(err)?;
            start += c.len() as u64;
        }
        h.file_end().map_err(err)?;
        Ok(())
    }

    #[test]
    fn size_and_session_limits() {
        let mut h = ValidateHandler::new(formats(), 10, None);
        assert_eq!(
            run(&mut h, "a.txt", &[b"hello", b" world"]),
            Err("File is too large".into())
        );
        let mut h = ValidateHandler::new(formats(), 10, None);
        assert_eq!(run(&mut h, "a.txt", &[]), Err("File is empty".into()));
        let mut h = ValidateHandler::new(formats(), 100, None);
        assert_eq!(
            run(&mut h, "a.png", &[PDF]),
            Err("File content does not match its type".into())
        );
        let usage = SessionUsage {
            count: 2,
            total: 90,
            names: ["taken.txt".to_string()].into(),
            max_count: 3,
            max_total: 100,
        };
        let mut h = ValidateHandler::new(formats(), 100, Some(usage.clone()));
        assert_eq!(
            run(&mut h, "taken.txt", &[b"x"]),
            Err("Duplicate file name".into())
        );
        let mut h = ValidateHandler::new(formats(), 100, Some(usage.clone()));
        assert_eq!(
            run(&mut h, "new.txt", &[b"0123456789", b"x"]),
            Err("Session is too large".into())
        );
        let mut h = ValidateHandler::new(formats(), 100, Some(usage.clone()));
        assert_eq!(run(&mut h, "new.txt", &[b"0123456789"]), Ok(()));
        let full = SessionUsage { count: 3, ..usage };
        let mut h = ValidateHandler::new(formats(), 100, Some(full));
        assert_eq!(
            run(&mut h, "new.txt", &[b"x"]),
            Err("Too many files".into())
        );
    }
}
