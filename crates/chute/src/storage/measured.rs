//! A [`Storage`] that times every operation of the one it wraps, for
//! `chute_storage_operation_duration_seconds{backend, op}` and `chute_storage_errors_total`.
//! The engine wraps the storage it is given (`Engine::new`), so every backend is measured the
//! same way, including an application's own.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{ByteStream, Capabilities, Source, StagedWrite, Storage, StorageError};
use crate::metrics::Metrics;

pub struct MeasuredStorage {
    inner: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
}

impl MeasuredStorage {
    pub fn wrap(inner: Arc<dyn Storage>, metrics: Arc<Metrics>) -> Arc<dyn Storage> {
        Arc::new(Self { inner, metrics })
    }

    fn time<T, E>(&self, op: &'static str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        measure(&self.metrics, self.inner.backend(), op, f)
    }

    fn staged(&self, w: Box<dyn StagedWrite>) -> Box<dyn StagedWrite> {
        Box::new(MeasuredWrite {
            inner: w,
            metrics: self.metrics.clone(),
            backend: self.inner.backend(),
        })
    }
}

fn measure<T, E>(
    metrics: &Metrics,
    backend: &'static str,
    op: &'static str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let t = Instant::now();
    let r = f();
    metrics.call(backend, op, t.elapsed(), r.is_err());
    r
}

struct MeasuredWrite {
    inner: Box<dyn StagedWrite>,
    metrics: Arc<Metrics>,
    backend: &'static str,
}

impl StagedWrite for MeasuredWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        measure(&self.metrics, self.backend, "write", || {
            self.inner.write(buf)
        })
    }

    fn sync(&mut self) -> io::Result<u64> {
        measure(&self.metrics, self.backend, "sync", || self.inner.sync())
    }

    fn start_writeback(&mut self) -> io::Result<()> {
        self.inner.start_writeback()
    }
}

#[async_trait]
impl Storage for MeasuredStorage {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn begin(&self, key: &str) -> Result<Box<dyn StagedWrite>, StorageError> {
        self.time("begin", || self.inner.begin(key))
            .map(|w| self.staged(w))
    }

    fn resume(&self, key: &str, offset: u64) -> Result<Box<dyn StagedWrite>, StorageError> {
        self.time("resume", || self.inner.resume(key, offset))
            .map(|w| self.staged(w))
    }

    fn read_staged(&self, key: &str) -> Result<Box<dyn io::Read + Send>, StorageError> {
        self.time("read_staged", || self.inner.read_staged(key))
    }

    fn abort(&self, key: &str) -> Result<(), StorageError> {
        self.time("abort", || self.inner.abort(key))
    }

    fn put(&self, key: &str, source: Source<'_>) -> Result<(), StorageError> {
        self.time("put", || self.inner.put(key, source))
    }

    fn len(&self, key: &str) -> Result<u64, StorageError> {
        self.time("len", || self.inner.len(key))
    }

    async fn open(&self, key: &str, start: u64, len: u64) -> Result<ByteStream, StorageError> {
        self.metrics
            .timed(
                self.inner.backend(),
                "open",
                self.inner.open(key, start, len),
            )
            .await
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.time("delete", || self.inner.delete(key))
    }

    fn check(&self) -> Result<(), StorageError> {
        self.time("check", || self.inner.check())
    }
}
