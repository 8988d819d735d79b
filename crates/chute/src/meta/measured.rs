//! A [`MetaStore`] that times every call of the one it wraps, for
//! `chute_catalog_query_duration_seconds{op}` and `chute_catalog_errors_total{op}`: `op` is
//! the method's name, one query or one transaction. The engine wraps the catalog it is given
//! (`Engine::new`), so both backends, and an application's own, are measured alike.

use std::sync::Arc;

use async_trait::async_trait;

use super::*;
use crate::events::NewEvent;
use crate::metrics::Metrics;

pub struct MeasuredMeta {
    inner: Arc<dyn MetaStore>,
    metrics: Arc<Metrics>,
}

impl MeasuredMeta {
    pub fn wrap(inner: Arc<dyn MetaStore>, metrics: Arc<Metrics>) -> Arc<dyn MetaStore> {
        Arc::new(Self { inner, metrics })
    }
}

/// Implements `$store` by timing each call of the inner store's method of the same name.
macro_rules! measured {
    ($store:ident { $(fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty;)* }) => {
        #[async_trait]
        impl $store for MeasuredMeta {
            $(async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, MetaError> {
                self.metrics
                    .timed("", stringify!($name), self.inner.$name($($arg),*))
                    .await
            })*
        }
    };
}

measured!(UserStore {
    fn create_user(&self, name: &str, is_staff: bool) -> User;
    fn user_by_name(&self, name: &str) -> Option<User>;
    fn user_by_id(&self, id: i64) -> Option<User>;
    fn count_users(&self) -> u64;
    fn add_token(&self, user_id: i64, token_hash: &str, label: &str) -> ();
    fn user_by_token_hash(&self, token_hash: &str) -> Option<(User, TokenInfo)>;
    fn list_users(&self) -> Vec<User>;
    fn delete_user(&self, id: i64) -> Option<Vec<String>>;
    fn list_tokens(&self, user_id: i64) -> Vec<TokenInfo>;
    fn revoke_token(&self, id: i64) -> bool;
    fn touch_token(&self, id: i64, now: i64) -> ();
});

measured!(FileStore {
    fn insert_file(&self, file: &FileRecord, quota: Option<Quota>, events: &[NewEvent]) -> ();
    fn get_file(&self, id: &str) -> Option<FileRecord>;
    fn list_files(&self, owner_id: i64, after: Option<&str>, limit: u32) -> Vec<FileRecord>;
    fn delete_file(&self, owner_id: i64, id: &str, events: &[NewEvent]) -> Option<FileRecord>;
    fn usage_bytes(&self, owner_id: i64) -> u64;
});

measured!(UploadStore {
    fn create_upload(
        &self,
        upload: &UploadRecord,
        parts: &[String],
        limits: UploadLimits,
        events: &[NewEvent]
    ) -> ();
    fn set_upload_file(&self, id: &str, file_id: &str) -> bool;
    fn final_parts(&self, final_id: &str) -> Vec<UploadRecord>;
    fn get_upload(&self, id: &str) -> Option<UploadRecord>;
    fn advance_upload(&self, id: &str, expected: u64, new_offset: u64, quota: Option<Quota>) -> bool;
    fn complete_upload(
        &self,
        id: &str,
        file: &FileRecord,
        quota: Option<Quota>,
        events: &[NewEvent]
    ) -> ();
    fn delete_upload(&self, id: &str, events: &[NewEvent]) -> ();
    fn set_upload_length(&self, id: &str, length: u64, quota: Option<Quota>) -> bool;
    fn active_uploads(&self, owner_id: i64, protocol: Protocol) -> Vec<UploadRecord>;
    fn open_uploads_of(&self, owner_id: i64) -> Vec<UploadRecord>;
    fn expired_uploads(&self, now: i64, limit: u32) -> Vec<UploadRecord>;
});

measured!(SessionStore {
    fn create_session(&self, token: &str, owner_id: i64, now: i64) -> ();
    fn get_session(&self, token: &str) -> Option<SessionRecord>;
    fn touch_session(&self, token: &str, now: i64) -> ();
    fn set_session_status(
        &self,
        token: &str,
        from: &[SessionStatus],
        to: SessionStatus,
        events: &[NewEvent]
    ) -> bool;
    fn session_files(&self, token: &str) -> Vec<FileRecord>;
    fn session_file(&self, token: &str, name: &str) -> Option<FileRecord>;
    fn add_session_file(
        &self,
        token: &str,
        file: &FileRecord,
        limits: SessionLimits,
        now: i64,
        quota: Option<Quota>,
        events: &[NewEvent]
    ) -> Result<(), SessionAddRefused>;
    fn remove_session_file(
        &self,
        token: &str,
        name: &str,
        now: i64
    ) -> Result<Option<FileRecord>, SessionStatus>;
    fn store_session(&self, token: &str, events: &[NewEvent]) -> Option<u64>;
    fn stale_sessions(&self, before: i64, limit: u32) -> Vec<String>;
    fn take_temporary_files(&self, token: &str) -> Vec<FileRecord>;
});

measured!(EventStore {
    fn record_events(&self, events: &[NewEvent]) -> ();
    fn outbox_depth(&self) -> u64;
    fn events_after(&self, after: i64, limit: u32) -> Vec<EventRecord>;
    fn claim_events(&self, now: i64, lease_until: i64, limit: u32) -> Vec<EventRecord>;
    fn settle_events(&self, outcomes: &[(i64, Delivery)]) -> ();
    fn list_events(&self, state: Option<DeliveryState>, limit: u32) -> Vec<EventRecord>;
    fn retry_events(&self, id: Option<&str>, now: i64) -> u64;
    fn prune_events(&self, before: i64) -> u64;
});

measured!(LinkKeyStore {
    fn link_keys(&self) -> Vec<(i64, String)>;
    fn ensure_link_key(&self, secret: &str) -> ();
    fn rotate_link_key(&self, secret: &str) -> i64;
});

#[async_trait]
impl MetaStore for MeasuredMeta {
    async fn ping(&self) -> Result<(), MetaError> {
        self.metrics.timed("", "ping", self.inner.ping()).await
    }

    fn cluster_locks(&self) -> Option<Arc<dyn ClusterLocks>> {
        self.inner.cluster_locks()
    }
}
