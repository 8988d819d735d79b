//! Uploads from a reader rather than a file: of a length not known in advance (tus's
//! `Upload-Defer-Length`: a pipe, a generated archive, a socket), or of a length known up
//! front (declared at creation, so that a server refuses an upload too large for it before
//! any byte goes). The bytes go in chunks; the chunk in flight is kept in memory until the
//! server has it, so a failed PATCH is retried from the server's offset without reading the
//! source again. With a deferred length, the last PATCH declares it.

use base64::Engine as _;
use reqwest::Method;
use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::transfer::{TUS, metadata};
use crate::{Client, Error, Progress, UploadOptions, Uploaded, check};

/// Bytes per PATCH when the caller sets none: held in memory until the server has them.
const STREAM_CHUNK: u64 = 8 << 20;

impl Client {
    /// Uploads everything `reader` gives, as a file named `name`. Memory: one chunk
    /// (`opts.chunk_size`, 8 MiB by default). `progress` hears of the bytes the server has;
    /// its `total` is 0 until the end is known.
    pub async fn upload_stream(
        &self,
        reader: impl AsyncRead + Unpin,
        name: &str,
        opts: &UploadOptions,
        progress: impl FnMut(Progress),
    ) -> Result<Uploaded, Error> {
        self.upload_from(reader, None, name, opts, progress).await
    }

    /// Uploads exactly `length` bytes from `reader`, as a file named `name`. The length is
    /// declared when the upload is created, so a server that cannot take that much says so
    /// before any byte is read. A reader that ends sooner is [`Error::Usage`], and the
    /// unfinished upload is terminated; bytes past `length` are not read. Memory: one chunk.
    pub async fn upload_reader(
        &self,
        reader: impl AsyncRead + Unpin,
        length: u64,
        name: &str,
        opts: &UploadOptions,
        progress: impl FnMut(Progress),
    ) -> Result<Uploaded, Error> {
        self.upload_from(reader, Some(length), name, opts, progress)
            .await
    }

    async fn upload_from(
        &self,
        mut reader: impl AsyncRead + Unpin,
        length: Option<u64>,
        name: &str,
        opts: &UploadOptions,
        mut progress: impl FnMut(Progress),
    ) -> Result<Uploaded, Error> {
        let chunk = usize::try_from(opts.chunk_size.unwrap_or(STREAM_CHUNK).max(1))
            .map_err(|_| Error::Usage("the chunk size does not fit in memory".into()))?;
        let creation = [
            match length {
                Some(len) => ("Upload-Length", len.to_string()),
                None => ("Upload-Defer-Length", "1".to_string()),
            },
            ("Upload-Metadata", metadata(name, opts)),
        ];
        let (url, file) = self.retrying(|| self.post_creation(&creation)).await?;
        if let Some(file_url) = file {
            // An empty upload of declared length is a file at its creation.
            return Ok(Uploaded {
                upload_url: url,
                file_url: Some(file_url),
                size: 0,
                sha256: None,
            });
        }
        let mut start = 0u64;
        loop {
            let want = length.map_or(chunk as u64, |len| (chunk as u64).min(len - start));
            let mut buf = Vec::with_capacity(want as usize);
            let read = (&mut reader)
                .take(want)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| Error::Usage(format!("reading the stream: {e}")))?;
            let end = match length {
                // Short of the declared length: the upload cannot finish.
                Some(len) if (read as u64) < want => {
                    let at = start + read as u64;
                    let _ = self.terminate(&url).await;
                    return Err(Error::Usage(format!(
                        "the reader ended after {at} of the {len} bytes declared; the upload was terminated"
                    )));
                }
                Some(len) => (start + want == len).then_some(len),
                // A short chunk is the last; a full one may be followed by nothing, which an
                // empty PATCH then says.
                None => (read < chunk).then_some(start + read as u64),
            };
            let declare = if length.is_none() { end } else { None };
            let file_url = self
                .send_held(&url, start, bytes::Bytes::from(buf), declare, opts)
                .await?;
            start += read as u64;
            progress(Progress {
                sent: start,
                total: length.or(end).unwrap_or(0),
            });
            if let Some(size) = end {
                let file_url = match file_url {
                    Some(f) => Some(f),
                    None => self.offset(&url).await?.1,
                };
                return Ok(Uploaded {
                    upload_url: url,
                    file_url,
                    size,
                    sha256: None,
                });
            }
        }
    }

    /// PATCHes `buf`, the upload's bytes from `start`, until the server has them all:
    /// after a retryable failure, from the offset the server says. `declare` sends a
    /// deferred length.
    async fn send_held(
        &self,
        url: &str,
        start: u64,
        buf: bytes::Bytes,
        declare: Option<u64>,
        opts: &UploadOptions,
    ) -> Result<Option<String>, Error> {
        let mut offset = start;
        let mut tries = crate::Tries::new(&self.retry);
        loop {
            let at = offset.checked_sub(start).map(|at| at as usize);
            let Some(rest) = at.filter(|&at| at <= buf.len()).map(|at| buf.slice(at..)) else {
                return Err(Error::Usage(format!(
                    "the server's offset {offset} is outside the bytes held ({start} to {})",
                    start + buf.len() as u64
                )));
            };
            let mut req = self
                .request(Method::PATCH, url)
                .header("Tus-Resumable", TUS)
                .header("Upload-Offset", offset)
                .header("Content-Type", "application/offset+octet-stream");
            if let Some(len) = declare {
                req = req.header("Upload-Length", len);
            }
            if let Some(algorithm) = opts.checksum {
                let b64 = base64::engine::general_purpose::STANDARD.encode(algorithm.digest(&rest));
                req = req.header("Upload-Checksum", format!("{} {b64}", algorithm.name()));
            }
            let sent = async {
                let res = check(req.body(rest).send().await?).await?;
                self.position(res, crate::transfer::Protocol::Tus, "PATCH")
                    .await
            };
            match sent.await {
                Ok((now, file)) if now == start + buf.len() as u64 => return Ok(file),
                Ok((now, _)) if now > offset => offset = now,
                Ok((now, _)) => {
                    return Err(Error::NotChute(format!(
                        "the server took none of a PATCH at {offset} (its offset: {now})"
                    )));
                }
                Err(e) => {
                    tries.after(e).await?;
                    offset = self.offset(url).await?.0;
                }
            }
        }
    }
}
