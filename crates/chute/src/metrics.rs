//! Prometheus metrics (`GET /metrics`, `http/metrics.rs`): what every layer counts and times,
//! in one recorder per server. The recorder is `metrics-exporter-prometheus`'s, used directly
//! rather than installed as the process's global one, so that two servers in one process (an
//! application mounting chute twice, or the tests) each count their own.
//!
//! Where the figures come from:
//! - requests, their durations, bytes in and out and error codes: `http/access.rs`, around
//!   every route;
//! - uploads created, finished, terminated, expired and failed, files stored, quota refusals:
//!   the engine, where each happens;
//! - storage and catalog latency: `storage/measured.rs` and `meta/measured.rs`, which wrap
//!   the stores the engine is given;
//! - lock waits and preemptions: the upload locks (`upload/resumable/locks.rs`);
//! - scans: the ClamAV handler; hook deliveries and the outbox: `hooks/delivery.rs`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Every series chute exports, its kind, unit and help text (also the README's table).
pub const SERIES: &[(&str, Kind, &str)] = &[
    (
        REQUESTS,
        Kind::Counter,
        "HTTP requests answered, by route template, method and status.",
    ),
    (
        REQUEST_SECONDS,
        Kind::Histogram,
        "Time from a request's arrival to the end of its response body, by route template and method.",
    ),
    (
        REQUESTS_IN_FLIGHT,
        Kind::Gauge,
        "HTTP requests being answered now.",
    ),
    (ERRORS, Kind::Counter, "JSON error answers, by error code."),
    (
        BYTES_RECEIVED,
        Kind::Counter,
        "Request body bytes received, by protocol.",
    ),
    (
        BYTES_SENT,
        Kind::Counter,
        "Response body bytes sent, by protocol.",
    ),
    (
        UPLOADS_CREATED,
        Kind::Counter,
        "Uploads begun, by protocol.",
    ),
    (
        UPLOADS_FINISHED,
        Kind::Counter,
        "Uploads whose file is in the catalog, by protocol.",
    ),
    (
        UPLOADS_TERMINATED,
        Kind::Counter,
        "Uploads a client or an administrator cancelled, by protocol.",
    ),
    (
        UPLOADS_EXPIRED,
        Kind::Counter,
        "Unfinished uploads that expiry removed, by protocol.",
    ),
    (
        UPLOADS_FAILED,
        Kind::Counter,
        "Uploads that received bytes and were then refused or cut, by protocol.",
    ),
    (
        UPLOADS_IN_FLIGHT,
        Kind::Gauge,
        "Upload requests receiving bytes now.",
    ),
    (
        FILES_STORED,
        Kind::Counter,
        "Files put in the catalog, by protocol.",
    ),
    (
        QUOTA_REFUSALS,
        Kind::Counter,
        "Requests refused because the caller's quota would be exceeded (code quota_exceeded), by protocol.",
    ),
    (
        SCANS,
        Kind::Counter,
        "ClamAV scans, by result (clean, infected, error).",
    ),
    (SCAN_SECONDS, Kind::Histogram, "Time of one ClamAV scan."),
    (
        STORAGE_SECONDS,
        Kind::Histogram,
        "Time of a storage operation, by backend and operation.",
    ),
    (
        STORAGE_ERRORS,
        Kind::Counter,
        "Storage operations that failed, by backend and operation.",
    ),
    (
        CATALOG_SECONDS,
        Kind::Histogram,
        "Time of a catalog call (one query or one transaction), by operation.",
    ),
    (
        CATALOG_ERRORS,
        Kind::Counter,
        "Catalog calls that failed, by operation.",
    ),
    (
        LOCK_WAITS,
        Kind::Counter,
        "Requests that found their upload locked by another request and waited for it.",
    ),
    (
        LOCK_WAIT_SECONDS,
        Kind::Histogram,
        "Time a request waited for an upload's lock.",
    ),
    (
        LOCK_PREEMPTIONS,
        Kind::Counter,
        "Waits that ended with the lock: the request holding it let go (ending with its bytes kept) for the newer one.",
    ),
    (
        HOOK_DELIVERIES,
        Kind::Counter,
        "Webhook delivery attempts, by result (delivered, failed).",
    ),
    (
        HOOK_OUTBOX,
        Kind::Gauge,
        "Events waiting in the outbox for delivery, as this node last counted.",
    ),
];

pub const REQUESTS: &str = "chute_http_requests_total";
pub const REQUEST_SECONDS: &str = "chute_http_request_duration_seconds";
pub const REQUESTS_IN_FLIGHT: &str = "chute_http_requests_in_flight";
pub const ERRORS: &str = "chute_http_errors_total";
pub const BYTES_RECEIVED: &str = "chute_bytes_received_total";
pub const BYTES_SENT: &str = "chute_bytes_sent_total";
pub const UPLOADS_CREATED: &str = "chute_uploads_created_total";
pub const UPLOADS_FINISHED: &str = "chute_uploads_finished_total";
pub const UPLOADS_TERMINATED: &str = "chute_uploads_terminated_total";
pub const UPLOADS_EXPIRED: &str = "chute_uploads_expired_total";
pub const UPLOADS_FAILED: &str = "chute_uploads_failed_total";
pub const UPLOADS_IN_FLIGHT: &str = "chute_uploads_in_flight";
pub const FILES_STORED: &str = "chute_files_stored_total";
pub const QUOTA_REFUSALS: &str = "chute_quota_refusals_total";
pub const SCANS: &str = "chute_scans_total";
pub const SCAN_SECONDS: &str = "chute_scan_duration_seconds";
pub const STORAGE_SECONDS: &str = "chute_storage_operation_duration_seconds";
pub const STORAGE_ERRORS: &str = "chute_storage_errors_total";
pub const CATALOG_SECONDS: &str = "chute_catalog_query_duration_seconds";
pub const CATALOG_ERRORS: &str = "chute_catalog_errors_total";
pub const LOCK_WAITS: &str = "chute_lock_waits_total";
pub const LOCK_WAIT_SECONDS: &str = "chute_lock_wait_duration_seconds";
pub const LOCK_PREEMPTIONS: &str = "chute_lock_preemptions_total";
pub const HOOK_DELIVERIES: &str = "chute_hook_deliveries_total";
pub const HOOK_OUTBOX: &str = "chute_hook_outbox_depth";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// What became of an upload, for the `chute_uploads_*_total` series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Finished,
    Terminated,
    Expired,
    Failed,
}

impl Outcome {
    fn series(self) -> &'static str {
        match self {
            Self::Created => UPLOADS_CREATED,
            Self::Finished => UPLOADS_FINISHED,
            Self::Terminated => UPLOADS_TERMINATED,
            Self::Expired => UPLOADS_EXPIRED,
            Self::Failed => UPLOADS_FAILED,
        }
    }
}

/// Latency buckets, in seconds: 100 µs (a cached catalog read) to 5 minutes (a large upload).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Histogram samples wait in the recorder until a render or an upkeep folds them into the
/// buckets; without a scrape they would pile up, so any observation runs the upkeep itself
/// when the last one is this old.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// One server's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    started: Instant,
    /// Milliseconds after `started` of the last upkeep.
    last_upkeep: AtomicU64,
    /// Handles of the series every request or call touches, found again without building
    /// their keys (a key's labels are allocated strings): the hot path pays a map lookup.
    hot: Hot,
    in_flight: Gauge,
}

/// (backend, or "" for the catalog; operation).
type CallKey = (&'static str, &'static str);

#[derive(Default)]
struct Hot {
    /// By (backend or "", operation): a storage or catalog call's histogram and error counter.
    calls: Mutex<HashMap<CallKey, (Histogram, Counter)>>,
    /// By protocol: bytes received and sent.
    bytes: Mutex<HashMap<&'static str, (Counter, Counter)>>,
    /// By route template: the duration histogram of each method, the counter of each
    /// method and status.
    routes: Mutex<HashMap<String, RouteHandles>>,
}

#[derive(Default)]
struct RouteHandles {
    durations: Vec<(String, Histogram)>,
    counts: Vec<(String, u16, Counter)>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .map(|b| b.build_recorder())
            // Only an empty bucket list is refused, and BUCKETS is not empty.
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        for (name, kind, help) in SERIES {
            let key = KeyName::from_const_str(name);
            let unit = name.ends_with("_seconds").then_some(Unit::Seconds);
            match kind {
                Kind::Counter => recorder.describe_counter(key, unit, (*help).into()),
                Kind::Gauge => recorder.describe_gauge(key, unit, (*help).into()),
                Kind::Histogram => recorder.describe_histogram(key, unit, (*help).into()),
            }
        }
        let handle = recorder.handle();
        let mut m = Self {
            recorder,
            handle,
            started: Instant::now(),
            last_upkeep: AtomicU64::new(0),
            hot: Hot::default(),
            in_flight: Gauge::noop(),
        };
        m.in_flight = m.gauge(REQUESTS_IN_FLIGHT, &[]);
        // The gauges and the unlabelled counters show from the first scrape, at zero.
        for name in [
            REQUESTS_IN_FLIGHT,
            UPLOADS_IN_FLIGHT,
            HOOK_OUTBOX,
            LOCK_WAITS,
            LOCK_PREEMPTIONS,
        ] {
            if name.ends_with("_total") {
                m.counter(name, &[]).absolute(0);
            } else {
                m.gauge(name, &[]).set(0.0);
            }
        }
        m
    }

    /// The Prometheus text format (version 0.0.4) of everything counted so far.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.to_string()))
            .collect();
        Key::from_parts(name, labels)
    }

    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.recorder
            .register_counter(&Self::key(name, labels), &METADATA)
    }

    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.recorder
            .register_gauge(&Self::key(name, labels), &METADATA)
    }

    fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        self.recorder
            .register_histogram(&Self::key(name, labels), &METADATA)
    }

    /// Records `took` in a histogram, and folds waiting samples in now and then.
    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], took: Duration) {
        self.histogram(name, labels).record(took.as_secs_f64());
        self.upkeep_now_and_then();
    }

    fn upkeep_now_and_then(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_upkeep.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= UPKEEP_EVERY.as_millis() as u64
            && self
                .last_upkeep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.handle.run_upkeep();
        }
    }

    /// A storage (`backend` set) or catalog (`backend` empty) call that took `took`.
    pub fn call(&self, backend: &'static str, op: &'static str, took: Duration, failed: bool) {
        let handles = self.hot.calls.lock().ok().map(|mut m| {
            m.entry((backend, op))
                .or_insert_with(|| {
                    if backend.is_empty() {
                        let l = [("op", op)];
                        (
                            self.histogram(CATALOG_SECONDS, &l),
                            self.counter(CATALOG_ERRORS, &l),
                        )
                    } else {
                        let l = [("backend", backend), ("op", op)];
                        (
                            self.histogram(STORAGE_SECONDS, &l),
                            self.counter(STORAGE_ERRORS, &l),
                        )
                    }
                })
                .clone()
        });
        let Some((histogram, errors)) = handles else {
            return;
        };
        histogram.record(took.as_secs_f64());
        if failed {
            errors.increment(1);
        }
        self.upkeep_now_and_then();
    }

    /// `chute_http_requests_in_flight`.
    pub fn requests_in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// The counters of bytes received and sent under `protocol`.
    pub fn bytes(&self, protocol: &'static str) -> (Counter, Counter) {
        let made = || {
            let l = [("protocol", protocol)];
            (
                self.counter(BYTES_RECEIVED, &l),
                self.counter(BYTES_SENT, &l),
            )
        };
        match self.hot.bytes.lock() {
            Ok(mut m) => m.entry(protocol).or_insert_with(made).clone(),
            Err(_) => made(),
        }
    }

    /// A request answered: its count by route, method and status, its duration.
    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let handles = self.hot.routes.lock().ok().map(|mut m| {
            if !m.contains_key(route) {
                m.insert(route.to_string(), RouteHandles::default());
            }
            let r = m.get_mut(route)?;
            let d = match r.durations.iter().find(|(m, _)| m == method) {
                Some((_, h)) => h.clone(),
                None => {
                    let h =
                        self.histogram(REQUEST_SECONDS, &[("route", route), ("method", method)]);
                    r.durations.push((method.to_string(), h.clone()));
                    h
                }
            };
            let c = match r
                .counts
                .iter()
                .find(|(m, s, _)| m == method && *s == status)
            {
                Some((_, _, c)) => c.clone(),
                None => {
                    let st = status.to_string();
                    let c = self.counter(
                        REQUESTS,
                        &[("route", route), ("method", method), ("status", &st)],
                    );
                    r.counts.push((method.to_string(), status, c.clone()));
                    c
                }
            };
            Some((d, c))
        });
        if let Some(Some((duration, count))) = handles {
            count.increment(1);
            duration.record(took.as_secs_f64());
            self.upkeep_now_and_then();
        }
    }

    /// An upload's fate, by protocol.
    pub fn upload(&self, outcome: Outcome, protocol: &str) {
        self.counter(outcome.series(), &[("protocol", protocol)])
            .increment(1);
    }

    /// A form upload (one request, its files all or none) begins: counted as created now,
    /// and as failed when the guard goes without [`FormUpload::finished`].
    pub fn form_upload(self: &std::sync::Arc<Self>, protocol: &'static str) -> FormUpload {
        self.upload(Outcome::Created, protocol);
        FormUpload {
            metrics: self.clone(),
            protocol,
            done: false,
        }
    }

    /// A file put in the catalog.
    pub fn file_stored(&self, protocol: &str) {
        self.counter(FILES_STORED, &[("protocol", protocol)])
            .increment(1);
    }

    /// An upload refused for the caller's quota or maximum size.
    pub fn quota_refused(&self, protocol: &str) {
        self.counter(QUOTA_REFUSALS, &[("protocol", protocol)])
            .increment(1);
    }

    /// A ClamAV scan: `result` is clean, infected or error.
    pub fn scan(&self, result: &'static str, took: Duration) {
        self.counter(SCANS, &[("result", result)]).increment(1);
        self.observe(SCAN_SECONDS, &[], took);
    }

    /// A request waited `took` for an upload's lock.
    pub fn lock_waited(&self, took: Duration) {
        self.counter(LOCK_WAITS, &[]).increment(1);
        self.observe(LOCK_WAIT_SECONDS, &[], took);
    }

    /// A request asked another to let go of an upload.
    pub fn lock_preempted(&self) {
        self.counter(LOCK_PREEMPTIONS, &[]).increment(1);
    }

    /// One webhook delivery attempt.
    pub fn hook_delivery(&self, delivered: bool) {
        let result = if delivered { "delivered" } else { "failed" };
        self.counter(HOOK_DELIVERIES, &[("result", result)])
            .increment(1);
    }

    /// Times `f`'s future as a storage (`backend` set) or catalog (`backend` empty) call.
    pub async fn timed<T, E, F>(
        &self,
        backend: &'static str,
        op: &'static str,
        f: F,
    ) -> Result<T, E>
    where
        F: std::future::Future<Output = Result<T, E>>,
    {
        let t = Instant::now();
        let r = f.await;
        self.call(backend, op, t.elapsed(), r.is_err());
        r
    }
}

/// A form upload under way (see [`Metrics::form_upload`]).
pub struct FormUpload {
    metrics: std::sync::Arc<Metrics>,
    protocol: &'static str,
    done: bool,
}

impl FormUpload {
    pub fn finished(mut self) {
        self.done = true;
        self.metrics.upload(Outcome::Finished, self.protocol);
    }
}

impl Drop for FormUpload {
    fn drop(&mut self) {
        if !self.done {
            self.metrics.upload(Outcome::Failed, self.protocol);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn renders_labelled_counters_and_histograms_with_help() {
        let m = Metrics::new();
        m.upload(Outcome::Finished, "tus");
        m.upload(Outcome::Finished, "tus");
        m.observe(
            CATALOG_SECONDS,
            &[("op", "get_upload")],
            Duration::from_millis(2),
        );
        let text = m.render();
        assert_eq!(
            value(&text, "chute_uploads_finished_total{protocol=\"tus\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "chute_catalog_query_duration_seconds_bucket{op=\"get_upload\",le=\"0.0025\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "chute_catalog_query_duration_seconds_bucket{op=\"get_upload\",le=\"0.001\"}"
            ),
            Some(0.0)
        );
        assert!(text.contains("# HELP chute_uploads_finished_total Uploads whose file"));
        assert_eq!(value(&text, "chute_http_requests_in_flight"), Some(0.0));
    }

    #[test]
    fn two_servers_count_apart() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.quota_refused("multipart");
        assert!(
            a.render()
                .contains("chute_quota_refusals_total{protocol=\"multipart\"} 1")
        );
        assert!(!b.render().contains("chute_quota_refusals_total"));
    }

    #[test]
    fn every_series_is_in_the_readme() {
        let readme = include_str!("../../../README.md");
        let missing: Vec<&str> = SERIES
            .iter()
            .map(|(n, _, _)| *n)
            .filter(|n| {
                // `…_finished_total` style shorthand names a family's siblings.
                let short = n.trim_start_matches("chute_uploads");
                !readme.contains(&format!("`{n}`")) && !readme.contains(&format!("`…{short}`"))
            })
            .collect();
        assert!(missing.is_empty(), "README.md does not name {missing:?}");
    }

    #[test]
    fn every_series_is_named_in_prometheus_style() {
        for (name, kind, _) in SERIES {
            assert!(name.starts_with("chute_"), "{name}");
            assert_eq!(name.ends_with("_total"), *kind == Kind::Counter, "{name}");
        }
    }
}
