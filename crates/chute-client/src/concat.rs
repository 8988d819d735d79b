//! Parallel parts (tus's concatenation extension): the file is cut in ranges, each range is
//! sent at once to a partial upload of its own, then one final upload joins them into the
//! file. Worth it where one connection is held back (a long, fat network; a per-connection
//! limit on the way); on a local link one streaming PATCH is as fast.

use std::cell::RefCell;
use std::path::Path;

use crate::transfer::{Running, file_name, io, metadata};
use crate::{Client, Error, Progress, UploadOptions, Uploaded};

impl Client {
    /// Uploads the file at `path` in `parts` ranges sent at once, then joins them. Each part
    /// retries and resumes as [`resume_file`](Self::resume_file) does; `progress` hears of
    /// the bytes the server has of all of them. A file smaller than `parts` bytes, or
    /// `parts` of 1, goes as [`upload_file`](Self::upload_file) sends it.
    pub async fn upload_file_in_parts(
        &self,
        path: &Path,
        parts: u16,
        opts: &UploadOptions,
        progress: impl FnMut(Progress),
    ) -> Result<Uploaded, Error> {
        let total = tokio::fs::metadata(path).await.map_err(io(path))?.len();
        let n = u64::from(parts).min(total);
        if n <= 1 {
            return self.upload_file(path, opts, progress).await;
        }
        let per = total.div_ceil(n);
        let ranges: Vec<(u64, u64)> = (0..n)
            .map(|i| (i * per, per.min(total.saturating_sub(i * per))))
            .filter(|&(_, len)| len > 0)
            .collect();
        let mut urls = Vec::with_capacity(ranges.len());
        for (_, len) in &ranges {
            let partial = [
                ("Upload-Concat", "partial".to_string()),
                ("Upload-Length", len.to_string()),
            ];
            let (url, _) = self.retrying(|| self.post_creation(&partial)).await?;
            urls.push(url);
        }
        // The parts run on this task, one at a time between awaits: the tally needs no lock.
        let tally = RefCell::new((vec![0u64; ranges.len()], progress));
        let sends = ranges
            .iter()
            .zip(&urls)
            .enumerate()
            .map(|(i, (&(start, len), url))| {
                let tally = &tally;
                let tell = move |p: Progress| {
                    let (sent, progress) = &mut *tally.borrow_mut();
                    sent[i] = p.sent;
                    progress(Progress {
                        sent: sent.iter().sum(),
                        total,
                    });
                };
                async move {
                    // No digest of the parts: the joined file is checked by reading it.
                    let running = Running::default();
                    self.resume_range(url, path, (start, len), opts, &running, tell)
                        .await
                }
            });
        futures::future::try_join_all(sends).await?;

        let name = opts.name.clone().unwrap_or_else(|| file_name(path));
        let joined = [
            ("Upload-Concat", format!("final;{}", urls.join(" "))),
            ("Upload-Metadata", metadata(&name, opts)),
        ];
        let (url, mut file_url) = self.retrying(|| self.post_creation(&joined)).await?;
        if file_url.is_none() {
            file_url = self.offset(&url).await?.1;
        }
        Ok(Uploaded {
            upload_url: url,
            file_url,
            size: total,
            sha256: None,
        })
    }
}
