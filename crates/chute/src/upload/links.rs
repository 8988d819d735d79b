//! Download links: a URL that downloads one file, with no header, until it expires, on any
//! node. A link is `/dl/{id}?k={key id}&e={expiry, unix seconds}&s={signature}`, the
//! signature an HMAC-SHA256 (ring) of the file id and the expiry under a key kept in the
//! catalog (`LinkKeyStore`): made once by the first node that needs it, shared by all.
//! `chute links rotate` replaces it; every node notices within `KEYS_FRESH`, and links
//! signed with an older key stop working.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ring::hmac;

use super::{Engine, UploadError};

/// How long a node trusts the keys it read from the catalog.
pub const KEYS_FRESH: Duration = Duration::from_secs(5);

/// Keys by id, newest first.
type Keys = Vec<(i64, hmac::Key)>;

/// The keys a node read from the catalog, and when.
#[derive(Default)]
pub struct LinkKeys {
    read: Mutex<Option<(Instant, Keys)>>,
}

/// Why a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefused {
    /// Not made by chute for this file and expiry (or its key was rotated away).
    Invalid,
    Expired,
}

/// A new random key, as hex.
pub fn new_link_secret() -> Result<String, UploadError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| UploadError::Internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(bytes))
}

fn message(id: &str, expires: i64) -> Vec<u8> {
    format!("chute-link\n{id}\n{expires}").into_bytes()
}

impl Engine {
    /// The path and query of a link to file `id` valid until `expires` (unix seconds).
    pub async fn link_path(&self, id: &str, expires: i64) -> Result<String, UploadError> {
        let (kid, key) = match self.link_keys(None).await?.into_iter().next() {
            Some(k) => k,
            None => {
                self.meta.ensure_link_key(&new_link_secret()?).await?;
                self.forget_link_keys();
                self.link_keys(None)
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| UploadError::Internal("no link key".into()))?
            }
        };
        let tag = hmac::sign(&key, &message(id, expires));
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref());
        Ok(format!("/dl/{id}?k={kid}&e={expires}&s={sig}"))
    }

    /// Checks a link's key id, expiry and signature for file `id`.
    pub async fn check_link(
        &self,
        id: &str,
        kid: i64,
        expires: i64,
        sig: &str,
    ) -> Result<Result<(), LinkRefused>, UploadError> {
        let Ok(sig) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else {
            return Ok(Err(LinkRefused::Invalid));
        };
        let keys = self.link_keys(Some(kid)).await?;
        let Some((_, key)) = keys.iter().find(|(k, _)| *k == kid) else {
            return Ok(Err(LinkRefused::Invalid));
        };
        // The signature first: an expiry or a file is only spoken of for a genuine link.
        if hmac::verify(key, &message(id, expires), &sig).is_err() {
            return Ok(Err(LinkRefused::Invalid));
        }
        if expires <= crate::meta::now_unix() {
            return Ok(Err(LinkRefused::Expired));
        }
        Ok(Ok(()))
    }

    /// The keys, read again when older than `KEYS_FRESH` (or, at most once a second, when
    /// `want` is not among them: a key another node just made).
    async fn link_keys(&self, want: Option<i64>) -> Result<Keys, UploadError> {
        if let Ok(read) = self.links.read.lock()
            && let Some((at, keys)) = read.as_ref()
        {
            let age = at.elapsed();
            let missing = want.is_some_and(|w| !keys.iter().any(|(k, _)| *k == w));
            if age < KEYS_FRESH && !(missing && age >= Duration::from_secs(1)) {
                return Ok(keys.clone());
            }
        }
        let keys: Keys = self
            .meta
            .link_keys()
            .await?
            .into_iter()
            .filter_map(|(id, secret)| {
                let bytes = hex::decode(secret).ok()?;
                Some((id, hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
            })
            .collect();
        if let Ok(mut read) = self.links.read.lock() {
            *read = Some((Instant::now(), keys.clone()));
        }
        Ok(keys)
    }

    fn forget_link_keys(&self) {
        if let Ok(mut read) = self.links.read.lock() {
            *read = None;
        }
    }
}
