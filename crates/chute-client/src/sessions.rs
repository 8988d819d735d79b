//! Upload sessions (`/upload-session/`): open one, add files (each validated, perhaps scanned,
//! and refused with the server's reason), list and remove them, then store the lot.

use std::path::Path;

use reqwest::Method;
use serde::Deserialize;

use crate::files::form_part;
use crate::{Client, Error, Progress, check, json};

/// A session, as the server describes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Session {
    /// The session's token: it names the session in every later call.
    pub upload_session_token: String,
    /// CREATED, UPLOADING, COPYING_IN_PROGRESS, STORED, COPYING_FAILED or EXPIRED.
    pub status: String,
    pub file_count: u64,
    pub total_size: u64,
    pub expires_at: Option<String>,
    pub max_file_count: u64,
    pub max_total_size: u64,
    pub max_file_size: u64,
}

/// A file in a session.
#[derive(Clone, Debug, Deserialize)]
#[non_exhaustive]
pub struct SessionFile {
    pub name: String,
    pub size: u64,
    pub url: String,
}

/// A file the session accepted: its name there (made safe by the server).
#[derive(Clone, Debug, Deserialize)]
#[non_exhaustive]
pub struct Accepted {
    pub file: String,
    pub url: String,
}

impl Client {
    fn session_url(&self, token: &str, rest: &str) -> Result<String, Error> {
        if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::Usage(format!("`{token}` is not a session token")));
        }
        Ok(format!("{}/upload-session/{token}/{rest}", self.base))
    }

    /// Opens a new upload session.
    pub async fn open_session(&self) -> Result<Session, Error> {
        let url = format!("{}/upload-session/", self.base);
        json(check(self.request(Method::POST, &url).send().await?).await?).await
    }

    /// The session `token`: status, totals and limits.
    pub async fn session(&self, token: &str) -> Result<Session, Error> {
        let url = self.session_url(token, "")?;
        json(check(self.request(Method::GET, &url).send().await?).await?).await
    }

    /// Adds the file at `path` to the session, streamed from disk. A refused file is
    /// [`Error::Api`] with code `invalid_file`, and the server's reason in its `detail`.
    pub async fn add_to_session(
        &self,
        token: &str,
        path: &Path,
        progress: impl FnMut(Progress) + Send + 'static,
    ) -> Result<Accepted, Error> {
        let url = self.session_url(token, "files/")?;
        let form = reqwest::multipart::Form::new().part("file", form_part(path, progress).await?);
        let res = self
            .request(Method::POST, &url)
            .multipart(form)
            .send()
            .await?;
        json(check(res).await?).await
    }

    /// The session's files.
    pub async fn session_files(&self, token: &str) -> Result<Vec<SessionFile>, Error> {
        #[derive(Deserialize)]
        struct Files {
            files: Vec<SessionFile>,
        }
        let url = self.session_url(token, "files/")?;
        let files: Files =
            json(check(self.request(Method::GET, &url).send().await?).await?).await?;
        Ok(files.files)
    }

    /// Removes the file `name` from the session.
    pub async fn remove_from_session(&self, token: &str, name: &str) -> Result<(), Error> {
        let mut url = reqwest::Url::parse(&self.session_url(token, "files/")?)
            .map_err(|e| Error::Usage(e.to_string()))?;
        url.path_segments_mut()
            .map_err(|()| Error::Usage("not a base URL".into()))?
            .pop_if_empty()
            .push(name)
            .push("");
        check(self.request(Method::DELETE, url.as_str()).send().await?)
            .await
            .map(drop)
    }

    /// Keeps the session's files for good: they join the caller's files (`/api/files`).
    pub async fn store_session(&self, token: &str) -> Result<Session, Error> {
        let url = self.session_url(token, "store/")?;
        json(check(self.request(Method::POST, &url).send().await?).await?).await
    }
}
