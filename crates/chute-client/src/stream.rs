//! Uploads of a length not known in advance (tus's `Upload-Defer-Length`): a pipe, a
//! generated archive, a socket. The bytes go in chunks; the chunk in flight is kept in memory
//! until the server has it, so a failed PATCH is retried from the server's offset without
//! reading the source again. The last PATCH declares the length.

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
        mut reader: impl AsyncRead + Unpin,
        name: &str,
        opts: &UploadOptions,
        mut progress: impl FnMut(Progress),
    ) -> Result<Uploaded, Error> {
        let chunk = usize::try_from(opts.chunk_size.unwrap_or(STREAM_CHUNK).max(1))
            .map_err(|_| Error::Usage("the chunk size does not fit in memory".into()))?;
        let creation = [
            ("Upload-Defer-Length", "1".to_string()),
            ("Upload-Metadata", metadata(name, opts)),
        ];
        let (url, _) = self.retrying(|| self.post_creation(&creation)).await?;
        let mut start = 0u64;
        loop {
            let mut buf = Vec::with_capacity(chunk);
            let read = (&mut reader)
                .take(chunk as u64)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| Error::Usage(format!("reading the stream: {e}")))?;
            // A short chunk is the last; a full one may be followed by nothing, which an
            // empty PATCH then says.
            let end = (read < chunk).then_some(start + read as u64);
            let file_url = self
                .send_held(&url, start, bytes::Bytes::from(buf), end, opts)
                .await?;
            start += read as u64;
            progress(Progress {
                sent: start,
                total: end.unwrap_or(0),
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
    /// after a retryable failure, from the offset the server says. `end` declares the length.
    async fn send_held(
        &self,
        url: &str,
        start: u64,
        buf: bytes::Bytes,
        end: Option<u64>,
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
            if let Some(len) = end {
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
