//! The deliverer: one task per node that sends the outbox's events to `hooks_url`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::signing::{self, Signer};
use crate::config::Settings;
use crate::events::{EventRecord, NewEvent, now_ms};
use crate::meta::{Delivery, MetaStore};

/// Most events leased at once (of distinct subjects: one subject's events go one by one).
const BATCH: u32 = 32;
/// How often the outbox is looked at when nothing woke the deliverer: other nodes' events and
/// retries that fall due are found this way.
const POLL: Duration = Duration::from_secs(1);
/// How often the outbox's depth is counted for `chute_hook_outbox_depth`.
const DEPTH_EVERY: Duration = Duration::from_secs(5);
/// How long the deliverer gathers news of committed events before it leases them.
const GATHER: Duration = Duration::from_millis(20);
/// A lease outlives the delivery's timeout (which bounds the POST) by this much, for recording
/// the outcome, before another node may send the event: a node that died mid-delivery delays
/// its events by `hooks_timeout` + this at most.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// The longest a receiver's answer is recorded (in `last_error`).
const ERROR_MAX: usize = 300;

pub struct Deliverer {
    meta: Arc<dyn MetaStore>,
    metrics: Arc<crate::metrics::Metrics>,
    client: reqwest::Client,
    url: String,
    signer: Signer,
    timeout: Duration,
    max_interval: Duration,
    retry_for: Duration,
}

impl Deliverer {
    /// None when hooks are off (no `hooks_url`).
    pub fn new(
        meta: Arc<dyn MetaStore>,
        settings: &Settings,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Option<Self>> {
        if settings.hooks_url.is_empty() {
            return Ok(None);
        }
        let signer = Signer::new(&settings.hooks_secret)
            .ok_or_else(|| anyhow::anyhow!("hooks_secret is not a whsec_ secret"))?;
        let client = signing::client(settings.hooks_timeout.0)?;
        Ok(Some(Self {
            meta,
            metrics,
            client,
            url: settings.hooks_url.clone(),
            signer,
            timeout: settings.hooks_timeout.0,
            max_interval: settings.hooks_retry_max_interval.0,
            retry_for: settings.hooks_retry_for.0,
        }))
    }

    /// Delivers until the process ends. `wake` moves when this node commits events;
    /// `progress` brings the best-effort events (sent once each, never stored).
    pub async fn run(
        self,
        mut wake: tokio::sync::watch::Receiver<u64>,
        progress: Option<tokio::sync::mpsc::Receiver<NewEvent>>,
    ) {
        let this = std::sync::Arc::new(self);
        if let Some(rx) = progress {
            tokio::spawn(this.clone().send_progress(rx));
        }
        let depth = this.metrics.gauge(crate::metrics::HOOK_OUTBOX, &[]);
        let mut counted: Option<tokio::time::Instant> = None;
        loop {
            // The outbox's depth, counted at most every few seconds.
            if counted.is_none_or(|t| t.elapsed() >= DEPTH_EVERY) {
                counted = Some(tokio::time::Instant::now());
                match this.meta.outbox_depth().await {
                    Ok(n) => depth.set(n as f64),
                    Err(e) => tracing::debug!(error = %e, "could not count the outbox"),
                }
            }
            let sent = match this.round().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the event outbox");
                    0
                }
            };
            if sent == 0 {
                // Nothing due: wait for news of this node's events, or poll. News is taken in
                // after a short pause, so that uploads finishing together share one lease
                // and one settling commit instead of two commits each.
                if let Ok(Ok(())) = tokio::time::timeout(POLL, wake.changed()).await {
                    tokio::time::sleep(GATHER).await;
                }
            }
        }
    }

    /// One lease of due events, delivered side by side. Returns how many were tried.
    pub async fn round(&self) -> Result<usize, crate::meta::MetaError> {
        let now = now_ms();
        let lease = now + (self.timeout + LEASE_MARGIN).as_millis() as i64;
        let due = self.meta.claim_events(now, lease, BATCH).await?;
        let n = due.len();
        let outcomes: Vec<(i64, Delivery)> = futures::stream::iter(due)
            .map(|e| async move {
                let outcome = self.deliver(&e).await;
                (e.seq, outcome)
            })
            .buffer_unordered(BATCH as usize)
            .collect()
            .await;
        for (seq, outcome) in &outcomes {
            self.metrics
                .hook_delivery(matches!(outcome, Delivery::Delivered));
            if let Delivery::Failed { error } | Delivery::Retry { error, .. } = outcome {
                tracing::warn!(seq, error = %error, "webhook delivery failed");
            }
        }
        self.meta.settle_events(&outcomes).await?;
        Ok(n)
    }

    /// Sends best-effort events as they come, a few at a time; a failure is logged and
    /// forgotten.
    async fn send_progress(self: std::sync::Arc<Self>, rx: tokio::sync::mpsc::Receiver<NewEvent>) {
        const AT_ONCE: usize = 8;
        tokio_stream_of(rx)
            .for_each_concurrent(AT_ONCE, |e| {
                let this = self.clone();
                async move {
                    let sent = this.post(&e.id, &e.body).await;
                    this.metrics.hook_delivery(sent.is_ok());
                    if let Err(err) = sent {
                        tracing::debug!(error = %err, "a progress event was not delivered");
                    }
                }
            })
            .await;
    }

    /// One signed POST.
    async fn post(&self, id: &str, body: &str) -> reqwest::Result<reqwest::Response> {
        let res = signing::post_signed(&self.client, &self.url, &self.signer, id, body.into());
        res.await?.error_for_status()
    }

    /// One POST of one event, and what to do next.
    async fn deliver(&self, e: &EventRecord) -> Delivery {
        let res = self.post(&e.id, &e.body).await;
        let error = match res {
            Ok(_) => return Delivery::Delivered,
            Err(err) => {
                let mut msg = err.to_string();
                msg.truncate(floor_char_boundary(&msg, ERROR_MAX));
                msg
            }
        };
        self.next_try(e, error)
    }

    /// Retry after a wait that doubles with each attempt (1 s, 2 s, 4 s, ...) up to
    /// `hooks_retry_max_interval`, less a random tenth so that many failures spread out;
    /// failed once the next try would be past `hooks_retry_for`.
    fn next_try(&self, e: &EventRecord, error: String) -> Delivery {
        let doubling = 1u64 << e.attempts.clamp(1, 40).saturating_sub(1);
        let wait = Duration::from_secs(doubling).min(self.max_interval);
        let jitter = wait.as_millis() as u64 / 10 * u64::from(random_byte()) / 255;
        let at = now_ms() + wait.as_millis() as i64 - jitter as i64;
        if at - e.retry_since > self.retry_for.as_millis() as i64 {
            return Delivery::Failed { error };
        }
        Delivery::Retry { at, error }
    }
}

fn random_byte() -> u8 {
    let mut b = [0u8; 1];
    let _ = getrandom::fill(&mut b);
    b[0]
}

/// The largest index at most `max` that is on a character boundary of `s`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    (0..=max.min(s.len()))
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0)
}

/// A channel's receiver as a stream.
fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
