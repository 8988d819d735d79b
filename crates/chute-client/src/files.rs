//! The file API (`/api/files`): list, delete, download links, and the plain form upload.

use std::path::Path;

use reqwest::Method;
use serde::Deserialize;

use crate::transfer::{counted_file, file_name};
use crate::{Client, Error, Progress, check, json};

/// A stored file, as `/api/files` describes it.
#[derive(Clone, Debug, Deserialize)]
#[non_exhaustive]
pub struct File {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub content_type: Option<String>,
    /// Hex digests by algorithm (`sha256`, `blake3`...), as the server keeps them.
    #[serde(default)]
    pub checksums: std::collections::BTreeMap<String, String>,
    /// Where to download it (a path on the server).
    pub url: String,
    /// When it was stored (RFC 3339).
    pub created_at: Option<String>,
}

#[derive(Deserialize)]
struct Page {
    files: Vec<File>,
    next: Option<String>,
}

/// A download link: anyone holding it may download the file until it expires.
#[derive(Clone, Debug, Deserialize)]
#[non_exhaustive]
pub struct Link {
    /// Absolute.
    pub url: String,
    pub expires_at: Option<String>,
}

impl Client {
    /// All the caller's files, in upload order (every page of `GET /api/files`).
    pub async fn list_files(&self) -> Result<Vec<File>, Error> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{}/api/files?limit=1000", self.base);
            if let Some(a) = &after {
                url.push_str("&after=");
                url.push_str(a);
            }
            let res = check(self.request(Method::GET, &url).send().await?).await?;
            let page: Page = json(res).await?;
            out.extend(page.files);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// Deletes the caller's file `id` and its bytes.
    pub async fn delete_file(&self, id: &str) -> Result<(), Error> {
        let url = format!("{}/api/files/{}", self.base, path_segment(id)?);
        check(self.request(Method::DELETE, &url).send().await?)
            .await
            .map(drop)
    }

    /// A link to the caller's file `id` that needs no token, valid for `expires_in` seconds.
    pub async fn create_link(&self, id: &str, expires_in: u64) -> Result<Link, Error> {
        let url = format!("{}/api/files/{}/link", self.base, path_segment(id)?);
        let res = self
            .request(Method::POST, &url)
            .json(&serde_json::json!({ "expires_in": expires_in }))
            .send()
            .await?;
        let mut link: Link = json(check(res).await?).await?;
        link.url = self.url(&link.url);
        Ok(link)
    }

    /// Uploads the file at `path` in one multipart form (`POST /api/files`, field `file`),
    /// streamed from disk. Not resumable: for big files use
    /// [`upload_file`](Self::upload_file).
    pub async fn upload_form(
        &self,
        path: &Path,
        progress: impl FnMut(Progress) + Send + 'static,
    ) -> Result<File, Error> {
        let url = format!("{}/api/files", self.base);
        let part = form_part(path, progress).await?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let res = self
            .request(Method::POST, &url)
            .multipart(form)
            .send()
            .await?;
        #[derive(Deserialize)]
        struct Stored {
            files: Vec<File>,
        }
        let stored: Stored = json(check(res).await?).await?;
        stored
            .files
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotChute("a form upload answered no file".into()))
    }
}

/// The file at `path` as a streamed multipart part, named as the file is.
pub(crate) async fn form_part(
    path: &Path,
    progress: impl FnMut(Progress) + Send + 'static,
) -> Result<reqwest::multipart::Part, Error> {
    let (body, len) = counted_file(path, progress).await?;
    Ok(reqwest::multipart::Part::stream_with_length(body, len)
        .file_name(file_name(path))
        .mime_str("application/octet-stream")?)
}

/// `id` as one path segment: ids are chute's own, so anything else is the caller's mistake.
fn path_segment(id: &str) -> Result<&str, Error> {
    if !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(id)
    } else {
        Err(Error::Usage(format!("`{id}` is not a file id")))
    }
}
