//! Upload to and download from a [chute](https://github.com/) server from Rust.
//!
//! - **Uploads** speak tus 1.0: the file is created with its length and name, then sent in
//!   one streaming PATCH or in chunks (with a sha256 `Upload-Checksum` each, if asked). A
//!   network failure, a 5xx, a 423 or a 409 is retried with backoff and jitter: the client
//!   asks the server for its offset (HEAD) and goes on from there, so no byte the server kept
//!   is sent twice. An upload's URL can be kept and resumed later, by another process.
//! - **Downloads** resume a partial file with `Range` (and `If-Range`, so a file changed
//!   since is fetched whole), and check the bytes' sha256 against the server's `ETag`.
//! - **The IETF resumable-upload draft** instead of tus, when asked ([`Protocol::Draft`]).
//! - **Parallel parts** joined by tus concatenation ([`Client::upload_file_in_parts`]),
//!   **streams of unknown length** ([`Client::upload_stream`]), and **readers of known
//!   length** ([`Client::upload_reader`]).
//! - **Form uploads, upload sessions and the file API**: [`Client::upload_form`],
//!   [`Client::open_session`] and the calls after it, [`Client::list_files`],
//!   [`Client::delete_file`], [`Client::create_link`].
//! - **Errors** carry the server's `code` as an [`ErrorCode`].
//!
//! ```no_run
//! # async fn run() -> Result<(), chute_client::Error> {
//! let client = chute_client::Client::new("http://127.0.0.1:8080")?.token("chute_...");
//! let up = client
//!     .upload_file("big.iso".as_ref(), &Default::default(), |p| {
//!         eprintln!("{} of {} bytes", p.sent, p.total)
//!     })
//!     .await?;
//! println!("stored at {}", up.file_url.unwrap_or_default());
//! # Ok(()) }
//! ```

mod concat;
mod error;
mod files;
mod sessions;
mod stream;
mod transfer;

use std::time::Duration;

pub use error::{Error, ErrorCode};
pub use files::{File, Link};
pub use sessions::{Accepted, Session, SessionFile};
pub use transfer::{Checksum, Downloaded, Progress, Protocol, UploadOptions, Uploaded};

/// How requests are retried: each failure waits longer (doubling from `first_delay` up to
/// `max_delay`, with jitter), and `attempts` failures in a row without progress end it.
#[derive(Clone, Debug)]
pub struct Retry {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 8,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl Retry {
    /// The wait before try number `n` (from 1): exponential, with up to half of it random.
    fn delay(&self, n: u32) -> Duration {
        let exp = self
            .first_delay
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(self.max_delay);
        let mut b = [0u8; 2];
        let jitter = if getrandom::fill(&mut b).is_ok() {
            f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
        } else {
            0.5
        };
        exp.mul_f64(0.5 + 0.5 * jitter)
    }
}

/// The failures in a row of one transfer: each retryable one waits as [`Retry`] says, until
/// `attempts` of them in a row end it.
pub(crate) struct Tries<'a> {
    retry: &'a Retry,
    failures: u32,
}

impl<'a> Tries<'a> {
    pub(crate) fn new(retry: &'a Retry) -> Self {
        Self { retry, failures: 0 }
    }

    /// The transfer moved on: the count starts again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// After the failure `e`: waits and answers `Ok` to try again, or answers what to end
    /// with (`e` itself when trying again cannot help, else [`Error::GaveUp`]).
    pub(crate) async fn after(&mut self, e: Error) -> Result<(), Error> {
        if !e.retryable() {
            return Err(e);
        }
        if self.failures + 1 >= self.retry.attempts {
            return Err(Error::GaveUp {
                attempts: self.failures + 1,
                last: Box::new(e),
            });
        }
        self.failures += 1;
        tokio::time::sleep(self.retry.delay(self.failures)).await;
        Ok(())
    }
}

/// A chute server, and the token to use with it.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    retry: Retry,
}

impl Client {
    /// A client of the server at `base` (`http://host:port`, with any path prefix chute is
    /// served under).
    pub fn new(base: &str) -> Result<Self, Error> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Usage(format!(
                "`{base}` is not an http:// or https:// URL"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            base,
            token: None,
            retry: Retry::default(),
        })
    }

    /// Sends `token` (an API token, or the application's JWT) as the bearer token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Retries as `retry` says.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// An absolute URL for a path or URL the server gave (`/tus/ID`, `/api/files/ID`).
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            return path_or_url.to_string();
        }
        // The server's own paths are already under its prefix: join at the origin.
        let origin_end = self
            .base
            .find("://")
            .and_then(|i| self.base[i + 3..].find('/').map(|j| i + 3 + j))
            .unwrap_or(self.base.len());
        format!("{}{path_or_url}", &self.base[..origin_end])
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, self.url(url));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// `GET /api/me`: who the token is, as the server sees them.
    pub async fn me(&self) -> Result<serde_json::Value, Error> {
        let res = self
            .request(reqwest::Method::GET, &format!("{}/api/me", self.base))
            .send()
            .await?;
        json(check(res).await?).await
    }

    /// The server's base URL, as given (without a trailing slash).
    pub fn base(&self) -> &str {
        &self.base
    }
}

/// A successful answer's JSON body, as `T`; a body that is not is no chute's.
pub(crate) async fn json<T: serde::de::DeserializeOwned>(
    res: reqwest::Response,
) -> Result<T, Error> {
    let url = res.url().clone();
    let bytes = res.bytes().await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::NotChute(format!(
            "{url} answered a body that is not what chute sends: {e}"
        ))
    })
}

/// `res` if it succeeded, else its JSON error (or `NotChute`, when it is not chute's).
pub(crate) async fn check(res: reqwest::Response) -> Result<reqwest::Response, Error> {
    let status = res.status();
    if status.is_success() || status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(res);
    }
    let head_only = res.content_length() == Some(0);
    let text = res.text().await.unwrap_or_default();
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) if v["code"].is_string() => Err(Error::Api {
            status: status.as_u16(),
            code: ErrorCode::parse(v["code"].as_str().unwrap_or_default()),
            message: v["error"].as_str().unwrap_or_default().to_string(),
            detail: v["verboseError"].as_str().map(str::to_string),
            offset: v["offset"].as_u64(),
        }),
        // A HEAD's error has no body to read: the status is all there is.
        _ if head_only || text.is_empty() => Err(Error::Api {
            status: status.as_u16(),
            code: ErrorCode::Other(String::new()),
            message: status.to_string(),
            detail: None,
            offset: None,
        }),
        _ => Err(Error::NotChute(format!(
            "{status} with a body that is not chute's JSON error: {}",
            text.chars().take(120).collect::<String>()
        ))),
    }
}
