//! Hooks: events delivered to the application's `hooks_url` as Standard Webhooks.
//!
//! - [`signing`]: the wire format's signature (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature`), HMAC-SHA256 with the `whsec_` secret.
//! - [`blocking`]: `pre-create` and `pre-finish`, asked synchronously; their answers refuse
//!   or reshape an upload, and a receiver that fails them fails the upload (closed).
//! - [`delivery`]: the outbox's deliverer. Each node runs one: it leases due events from the
//!   catalog (`meta::EventStore::claim_events`: one node per event, one subject's events in
//!   order), POSTs them, and records the outcome; a failure is retried with doubling waits up
//!   to `hooks_retry_max_interval`, for `hooks_retry_for`, then kept as failed. A node that
//!   dies mid-delivery lets its lease run out and another node (or itself, restarted) sends
//!   the event again, with the same id: delivery is at least once.
//!
//! Events are built by the engine (`upload::events`) and committed with the change they report
//! (`meta`); this layer only sends them.

pub mod blocking;
pub mod delivery;
pub mod signing;

pub use blocking::{Gate, Shape, Verdict};
pub use delivery::Deliverer;
