//! Removing a user (`chute user remove`): their files and open uploads go first, each as
//! when its owner deletes or terminates it (with its `file.deleted` or `upload.terminated`
//! event), then the user with their tokens and sessions, then the bytes of their session
//! files. Nothing is left in storage, and nothing they own is removed without its event.

use super::{Engine, UploadError};
use crate::events::EventType;
use crate::meta::{MetaError, User};

/// What removing a user took with them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub files: u64,
    pub uploads: u64,
    pub session_files: u64,
}

impl Engine {
    /// Removes `user`. Refused (`MetaError::Conflict`) while they have files or open uploads,
    /// unless `delete_files`.
    pub async fn remove_user(
        &self,
        user: &User,
        delete_files: bool,
    ) -> Result<Removed, UploadError> {
        let mut removed = Removed::default();
        if delete_files {
            loop {
                let page = self.meta.list_files(user.id, None, 500).await?;
                if page.is_empty() {
                    break;
                }
                for f in page {
                    if self.delete_file(user.id, &f.id).await?.is_some() {
                        removed.files += 1;
                    }
                }
            }
            for up in self.meta.open_uploads_of(user.id).await? {
                self.discard_upload(&up, Some(EventType::UploadTerminated))
                    .await?;
                removed.uploads += 1;
            }
        }
        let keys = match self.meta.delete_user(user.id).await? {
            Some(keys) => keys,
            None => return Err(MetaError::NotFound(format!("user `{}`", user.name)).into()),
        };
        removed.session_files = keys.len() as u64;
        for key in keys {
            self.delete_object(key).await;
        }
        Ok(removed)
    }
}
