//! Malware scanning with ClamAV while the file arrives: each chunk goes to clamd over its
//! INSTREAM command (TCP or a unix socket) as it passes through the chain, so the verdict is
//! ready when the last byte is, without reading the file again.
//!
//! Fails closed: clamd unreachable, silent or confused refuses the upload as
//! [`UploadError::ScannerUnavailable`] (500); a detection, or a file over clamd's stream limit,
//! is [`UploadError::Invalid`] (400).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::metrics::Metrics;
use crate::upload::UploadError;
use crate::upload::handler::{FileInfo, HandlerError, NewFile, UploadHandler};

/// Where clamd listens: "host:port", or "unix:/path".
#[derive(Clone, Debug)]
pub enum ClamdAddress {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl ClamdAddress {
    pub fn parse(s: &str) -> Self {
        match s.strip_prefix("unix:") {
            Some(p) => ClamdAddress::Unix(p.into()),
            None => ClamdAddress::Tcp(s.to_string()),
        }
    }
}

trait Socket: Read + Write + Send {}
impl<T: Read + Write + Send> Socket for T {}

/// One clamd connection, scanning one stream.
pub struct Clamd {
    sock: Box<dyn Socket>,
}

/// What clamd said about a stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    Found(String),
    TooLarge,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> UploadError {
    UploadError::ScannerUnavailable(format!("{what}: {e}"))
}

impl Clamd {
    /// Connects and starts an INSTREAM scan.
    pub fn connect(addr: &ClamdAddress, timeout: Duration) -> Result<Self, UploadError> {
        let mut sock: Box<dyn Socket> = match addr {
            ClamdAddress::Tcp(a) => {
                use std::net::ToSocketAddrs;
                let target = a
                    .to_socket_addrs()
                    .map_err(|e| unavailable(a, e))?
                    .next()
                    .ok_or_else(|| unavailable(a, "no address"))?;
                let s =
                    TcpStream::connect_timeout(&target, timeout).map_err(|e| unavailable(a, e))?;
                s.set_read_timeout(Some(timeout))
                    .map_err(|e| unavailable(a, e))?;
                s.set_write_timeout(Some(timeout))
                    .map_err(|e| unavailable(a, e))?;
                s.set_nodelay(true).map_err(|e| unavailable(a, e))?;
                Box::new(s)
            }
            ClamdAddress::Unix(p) => {
                let shown = p.display().to_string();
                let s = UnixStream::connect(p).map_err(|e| unavailable(&shown, e))?;
                s.set_read_timeout(Some(timeout))
                    .map_err(|e| unavailable(&shown, e))?;
                s.set_write_timeout(Some(timeout))
                    .map_err(|e| unavailable(&shown, e))?;
                Box::new(s)
            }
        };
        sock.write_all(b"zINSTREAM\0")
            .map_err(|e| unavailable("clamd", e))?;
        Ok(Self { sock })
    }

    /// Sends one piece of the stream. Err(Some(verdict)) when clamd ended the stream early
    /// (its size limit) and said so.
    pub fn send(&mut self, data: &[u8]) -> Result<(), UploadError> {
        for piece in data.chunks(u32::MAX as usize) {
            let len = (piece.len() as u32).to_be_bytes();
            let sent = self
                .sock
                .write_all(&len)
                .and_then(|()| self.sock.write_all(piece));
            if let Err(e) = sent {
                // clamd closes the stream when it is over StreamMaxLength; its reply says so.
                return Err(match self.reply() {
                    Ok(Verdict::TooLarge) => too_large(),
                    _ => unavailable("clamd", e),
                });
            }
        }
        Ok(())
    }

    /// Ends the stream and reads the verdict.
    pub fn finish(mut self) -> Result<Verdict, UploadError> {
        if let Err(e) = self.sock.write_all(&[0, 0, 0, 0]) {
            return match self.reply() {
                Ok(v @ Verdict::TooLarge) => Ok(v),
                _ => Err(unavailable("clamd", e)),
            };
        }
        self.reply()
    }

    fn reply(&mut self) -> Result<Verdict, UploadError> {
        let mut buf = Vec::with_capacity(128);
        let mut byte = [0u8; 256];
        loop {
            match self.sock.read(&mut byte) {
                Ok(0) => break,
                Ok(n) => {
                    buf.extend_from_slice(&byte[..n]);
                    if buf.contains(&0) || buf.len() > 4096 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(unavailable("clamd reply", e)),
            }
        }
        let text = String::from_utf8_lossy(&buf);
        parse_reply(text.trim_end_matches(['\0', '\n']))
    }
}

/// Reads clamd's answer to a stream: "stream: OK", `stream: <signature> FOUND`,
/// "INSTREAM size limit exceeded. ERROR", or another "... ERROR".
pub fn parse_reply(reply: &str) -> Result<Verdict, UploadError> {
    let body = reply.strip_prefix("stream: ").unwrap_or(reply).trim();
    if body == "OK" {
        return Ok(Verdict::Clean);
    }
    if let Some(sig) = body.strip_suffix(" FOUND") {
        return Ok(Verdict::Found(sig.trim().to_string()));
    }
    if body.contains("size limit exceeded") {
        return Ok(Verdict::TooLarge);
    }
    Err(UploadError::ScannerUnavailable(format!(
        "clamd answered {:?}",
        if body.is_empty() { "nothing" } else { body }
    )))
}

fn too_large() -> UploadError {
    UploadError::Invalid {
        error: "File is too large to scan".into(),
        verbose: "The file is larger than the malware scanner accepts, so it cannot be checked."
            .into(),
    }
}

/// Scans everything `reader` yields (a file already on disk, such as a resumable upload's
/// staged bytes): Ok when clean, [`UploadError::Invalid`] for malware or a file too large.
pub fn scan_reader(
    addr: &ClamdAddress,
    timeout: Duration,
    mut reader: impl Read,
    metrics: &Metrics,
) -> Result<(), UploadError> {
    let started = Instant::now();
    let scanned = (|| {
        let mut scan = Clamd::connect(addr, timeout)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(UploadError::Io(e)),
            };
            scan.send(&buf[..n])?;
        }
        scan.finish()
    })();
    counted(metrics, scanned, started, "the upload")
}

/// Counts a scan (`chute_scans_total{result}`, `chute_scan_duration_seconds`) and reads its
/// verdict.
fn counted(
    metrics: &Metrics,
    scanned: Result<Verdict, UploadError>,
    started: Instant,
    name: &str,
) -> Result<(), UploadError> {
    let result = match &scanned {
        Ok(Verdict::Clean) => "clean",
        Ok(Verdict::Found(_)) => "infected",
        Ok(Verdict::TooLarge) | Err(_) => "error",
    };
    metrics.scan(result, started.elapsed());
    verdict(scanned?, name)
}

fn verdict(v: Verdict, name: &str) -> Result<(), UploadError> {
    match v {
        Verdict::Clean => Ok(()),
        Verdict::TooLarge => Err(too_large()),
        Verdict::Found(sig) => Err(UploadError::Invalid {
            error: "Malware detected".into(),
            verbose: format!("The file \"{name}\" contains malware ({sig}) and was not kept."),
        }),
    }
}

/// The handler: one clamd stream per file, fed as chunks pass; chunks go on unchanged.
pub struct ClamavHandler {
    address: ClamdAddress,
    timeout: Duration,
    scan: Option<Clamd>,
    name: String,
    metrics: Arc<Metrics>,
}

impl ClamavHandler {
    pub fn new(address: ClamdAddress, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            address,
            timeout,
            scan: None,
            name: String::new(),
            metrics,
        }
    }
}

impl UploadHandler for ClamavHandler {
    fn name(&self) -> &'static str {
        "clamav"
    }

    fn new_file(&mut self, file: &FileInfo) -> Result<NewFile, HandlerError> {
        self.name = file.file_name.clone();
        self.scan = Some(Clamd::connect(&self.address, self.timeout)?);
        Ok(NewFile::Continue)
    }

    fn receive_chunk(&mut self, chunk: Bytes, _start: u64) -> Result<Option<Bytes>, HandlerError> {
        if let Some(scan) = &mut self.scan
            && let Err(e) = scan.send(&chunk)
        {
            self.scan = None;
            return Err(HandlerError::Failed(e));
        }
        Ok(Some(chunk))
    }

    fn file_end(&mut self) -> Result<Option<Bytes>, HandlerError> {
        let Some(scan) = self.scan.take() else {
            return Err(HandlerError::Failed(UploadError::ScannerUnavailable(
                "no scan in progress".into(),
            )));
        };
        // The file streamed to clamd as it arrived: what the scan adds is the wait for the
        // verdict after the last byte.
        let started = Instant::now();
        counted(&self.metrics, scan.finish(), started, &self.name)?;
        Ok(None)
    }

    fn upload_interrupted(&mut self) {
        self.scan = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        assert_eq!(parse_reply("stream: OK").ok(), Some(Verdict::Clean));
        assert_eq!(
            parse_reply("stream: Eicar-Test-Signature FOUND").ok(),
            Some(Verdict::Found("Eicar-Test-Signature".into()))
        );
        assert_eq!(
            parse_reply("INSTREAM size limit exceeded. ERROR").ok(),
            Some(Verdict::TooLarge)
        );
        assert!(parse_reply("").is_err());
        assert!(parse_reply("UNKNOWN COMMAND").is_err());
    }
}
