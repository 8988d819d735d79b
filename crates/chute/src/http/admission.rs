//! Admission: how many upload requests one user may have in flight on this node
//! (`max_concurrent_uploads_per_user`). Past it a request is answered 429 with `Retry-After`
//! before its body is read, so that one user cannot take the memory, threads and connections
//! that every other user shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderValue, StatusCode, header};

use super::error::ApiError;
use super::error_code;

/// Upload requests in flight, by user.
#[derive(Debug)]
pub struct InFlight {
    max: u64,
    counts: Mutex<HashMap<i64, u64>>,
    /// `chute_uploads_in_flight`.
    gauge: metrics::Gauge,
}

/// One admitted request; it leaves when dropped.
#[derive(Debug)]
pub struct Admitted {
    registry: Arc<InFlight>,
    user: i64,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.registry.gauge.decrement(1.0);
        if let Ok(mut c) = self.registry.counts.lock()
            && let Some(n) = c.get_mut(&self.user)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(&self.user);
            }
        }
    }
}

impl InFlight {
    pub fn new(max: u64, gauge: metrics::Gauge) -> Arc<Self> {
        Arc::new(Self {
            max,
            counts: Mutex::new(HashMap::new()),
            gauge,
        })
    }

    /// Admits one more upload request of `user`, or answers 429.
    pub fn admit(self: &Arc<Self>, user: i64) -> Result<Admitted, ApiError> {
        let mut c = self
            .counts
            .lock()
            .map_err(|_| ApiError::internal("admission registry poisoned"))?;
        let n = c.entry(user).or_insert(0);
        if *n >= self.max {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                error_code::TOO_MANY_UPLOADS,
                format!(
                    "you already have {} uploads in flight (max_concurrent_uploads_per_user); \
                     try again when one has finished",
                    self.max
                ),
            );
            e.headers
                .push((header::RETRY_AFTER, HeaderValue::from_static("1")));
            return Err(e);
        }
        *n += 1;
        self.gauge.increment(1.0);
        Ok(Admitted {
            registry: self.clone(),
            user,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_held_to_the_limit_and_others_are_not() {
        let r = InFlight::new(2, metrics::Gauge::noop());
        let a = r.admit(1).expect("first");
        let _b = r.admit(1).expect("second");
        let e = r.admit(1).expect_err("third");
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(e.headers.iter().any(|(k, _)| k == header::RETRY_AFTER));
        let _other = r.admit(2).expect("another user");
        drop(a);
        let _c = r.admit(1).expect("a place was freed");
    }
}
