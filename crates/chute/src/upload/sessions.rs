//! Upload sessions on the engine (the upload.views model): the files of a session are
//! catalog rows marked temporary until the session is stored; an idle session expires and
//! its temporary files are removed.

use super::events::{self, SESSION};
use super::{Engine, UploadError};
use crate::events::EventType;
use crate::meta::{
    FileRecord, SessionAddRefused, SessionLimits, SessionRecord, SessionStatus, now_unix,
};

/// 32 random characters from [A-Za-z0-9], as the model's token.
pub fn new_session_token() -> Result<String, getrandom::Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(32);
    let mut buf = [0u8; 64];
    while out.len() < 32 {
        getrandom::fill(&mut buf)?;
        // 248 = 4 × 62: rejecting larger bytes keeps every character equally likely.
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() == 32 {
                break;
            }
            out.push(ALPHABET[(*b % 62) as usize] as char);
        }
    }
    Ok(out)
}

pub fn valid_session_token(t: &str) -> bool {
    t.len() == 32 && t.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Engine {
    /// Seconds of inactivity after which a session expires; None when sessions never do.
    pub fn session_ttl(&self) -> Option<i64> {
        let m = self.settings.upload_session_expire_after_inactive_minutes;
        (m >= 0).then_some(m * 60)
    }

    /// When the session expires if nothing happens, for sessions that can still expire.
    pub fn session_expires_at(&self, s: &SessionRecord) -> Option<i64> {
        let ttl = self.session_ttl()?;
        s.status.accepts_changes().then_some(s.last_activity + ttl)
    }

    pub fn session_is_stale(&self, s: &SessionRecord, now: i64) -> bool {
        self.session_expires_at(s).is_some_and(|t| t <= now)
    }

    /// Expires one session that takes files: REMOVING_IN_PROGRESS while its temporary files
    /// go, then EXPIRED. False when the session was not in a state that expires.
    pub async fn expire_session(&self, token: &str) -> Result<bool, UploadError> {
        let from = [SessionStatus::Created, SessionStatus::Uploading];
        if !self
            .meta
            .set_session_status(token, &from, SessionStatus::RemovingInProgress, &[])
            .await?
        {
            return Ok(false);
        }
        let files = self.meta.take_temporary_files(token).await?;
        for f in &files {
            self.delete_object(f.storage_key.clone()).await;
        }
        let events = match self.meta.get_session(token).await? {
            Some(s) => {
                self.event(EventType::SessionExpired, token, s.owner_id, |user| {
                    events::session_data(token, user, &files)
                })
                .await
            }
            None => Vec::new(),
        };
        self.meta
            .set_session_status(
                token,
                &[SessionStatus::RemovingInProgress],
                SessionStatus::Expired,
                &events,
            )
            .await?;
        self.events.announce(&events);
        Ok(true)
    }

    /// Adds a placed file to a session (see `SessionStore::add_session_file`), with its
    /// `upload.created` (stamped `began`, when the request started) and `upload.finished`: a
    /// session file that is refused never began as far as the application is told.
    pub async fn add_session_file(
        &self,
        token: &str,
        record: &FileRecord,
        limits: SessionLimits,
        quota: Option<u64>,
        began: time::OffsetDateTime,
    ) -> Result<Result<(), SessionAddRefused>, UploadError> {
        let owner = record.owner_id;
        let mut events = self
            .event(EventType::UploadCreated, token, owner, |user| {
                events::session_file_data(record, user, token)
            })
            .await;
        for e in &mut events {
            e.restamp(began);
        }
        events.extend(
            self.event(EventType::UploadFinished, token, owner, |user| {
                events::finished_data(record, SESSION, None, user, Some(token))
            })
            .await,
        );
        let added = self
            .meta
            .add_session_file(
                token,
                record,
                limits,
                now_unix(),
                self.quota_of(owner, quota),
                &events,
            )
            .await?;
        if added.is_ok() {
            self.events.announce(&events);
            self.metrics.file_stored(SESSION);
        }
        Ok(added)
    }

    /// Keeps a session's files for good (the session must be COPYING_IN_PROGRESS), with its
    /// `session.stored`. The number of files; None when the session was not being stored.
    pub async fn store_session(
        &self,
        token: &str,
        owner_id: i64,
    ) -> Result<Option<u64>, UploadError> {
        let events = match self.events.records(EventType::SessionStored) {
            true => {
                // COPYING_IN_PROGRESS takes no changes: these are the files being stored.
                let files = self.meta.session_files(token).await?;
                self.event(EventType::SessionStored, token, owner_id, |user| {
                    events::session_data(token, user, &files)
                })
                .await
            }
            false => Vec::new(),
        };
        let n = self.meta.store_session(token, &events).await?;
        if n.is_some() {
            self.events.announce(&events);
        }
        Ok(n)
    }

    /// Sessions idle past their expiry; with `dry_run` false they are expired. Also finishes
    /// sessions a crash left in REMOVING_IN_PROGRESS.
    pub async fn sweep_sessions(&self, dry_run: bool) -> Result<Vec<String>, UploadError> {
        let Some(ttl) = self.session_ttl() else {
            return Ok(Vec::new());
        };
        let stale = self.meta.stale_sessions(now_unix() - ttl + 1, 1000).await?;
        if dry_run {
            return Ok(stale);
        }
        let mut done = Vec::with_capacity(stale.len());
        for token in stale {
            if self.expire_session(&token).await? {
                done.push(token);
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_alphanumerics_and_differ() {
        let a = new_session_token().unwrap();
        let b = new_session_token().unwrap();
        assert!(valid_session_token(&a), "{a}");
        assert_ne!(a, b);
        assert!(!valid_session_token("short"));
        assert!(!valid_session_token(&format!("{}-", &a[..31])));
    }
}
