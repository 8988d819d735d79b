//! The catalog's queries of the events outbox, for both SQL backends (see `super`).

/// `EventStore` for `$meta`: the outbox.
macro_rules! impl_events_store {
    ($meta:ty, $db:ty) => {
        #[async_trait]
        impl $crate::meta::EventStore for $meta {
            async fn record_events(
                &self,
                events: &[$crate::events::NewEvent],
            ) -> Result<(), MetaError> {
                if events.is_empty() {
                    return Ok(());
                }
                let mut tx = self.writes().begin().await?;
                insert_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn outbox_depth(&self) -> Result<u64, MetaError> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM events WHERE state = 'pending'",
                )
                .fetch_one(self.reads())
                .await?;
                Ok(n.max(0) as u64)
            }

            async fn events_after(
                &self,
                after: i64,
                limit: u32,
            ) -> Result<Vec<$crate::events::EventRecord>, MetaError> {
                let rows = sqlx::query("SELECT * FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(after)
                    .bind(limit as i64)
                    .fetch_all(self.reads())
                    .await?;
                Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
            }

            async fn claim_events(
                &self,
                now: i64,
                lease_until: i64,
                limit: u32,
            ) -> Result<Vec<$crate::events::EventRecord>, MetaError> {
                // The outer conditions are checked again on each row as it is updated, so of
                // two nodes that pick the same event one leases it.
                let rows = sqlx::query(
                    "UPDATE events SET lease_until = $2, attempts = attempts + 1 \
                     WHERE seq IN (SELECT e.seq FROM events e WHERE e.state = 'pending' \
                       AND e.next_attempt_at <= $1 \
                       AND (e.lease_until IS NULL OR e.lease_until < $1) \
                       AND NOT EXISTS (SELECT 1 FROM events p WHERE p.subject = e.subject \
                         AND p.seq < e.seq AND p.state = 'pending') \
                       ORDER BY e.seq LIMIT $3) \
                     AND state = 'pending' AND (lease_until IS NULL OR lease_until < $1) \
                     RETURNING *",
                )
                .bind(now)
                .bind(lease_until)
                .bind(limit as i64)
                .fetch_all(self.writes())
                .await?;
                let mut out: Vec<_> = rows.iter().map(event_from_row).collect::<Result<_, _>>()?;
                out.sort_by_key(|e| e.seq);
                Ok(out)
            }

            async fn settle_events(
                &self,
                outcomes: &[(i64, $crate::meta::Delivery)],
            ) -> Result<(), MetaError> {
                use $crate::meta::Delivery;
                if outcomes.is_empty() {
                    return Ok(());
                }
                let mut tx = self.writes().begin().await?;
                for (seq, outcome) in outcomes {
                    let (state, at, error) = match outcome {
                        Delivery::Delivered => ("delivered", 0, None),
                        Delivery::Retry { at, error } => ("pending", *at, Some(error.as_str())),
                        Delivery::Failed { error } => ("failed", 0, Some(error.as_str())),
                    };
                    sqlx::query(
                        "UPDATE events SET state = $2, lease_until = NULL, last_error = $4, \
                         next_attempt_at = CASE WHEN $3 > 0 THEN $3 ELSE next_attempt_at END \
                         WHERE seq = $1 AND state = 'pending'",
                    )
                    .bind(seq)
                    .bind(state)
                    .bind(at)
                    .bind(error)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn list_events(
                &self,
                state: Option<$crate::events::DeliveryState>,
                limit: u32,
            ) -> Result<Vec<$crate::events::EventRecord>, MetaError> {
                let rows = sqlx::query(
                    "SELECT * FROM events WHERE ($1 = '' OR state = $1) ORDER BY seq DESC LIMIT $2",
                )
                .bind(state.map(|s| s.as_str()).unwrap_or(""))
                .bind(limit as i64)
                .fetch_all(self.reads())
                .await?;
                Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
            }

            async fn retry_events(&self, id: Option<&str>, now: i64) -> Result<u64, MetaError> {
                if id.is_some_and(|i| !$crate::meta::sql::storable(i)) {
                    return Ok(0);
                }
                let r = sqlx::query(
                    "UPDATE events SET state = 'pending', next_attempt_at = $2, retry_since = $2, \
                     lease_until = NULL WHERE state = 'failed' AND ($1 = '' OR id = $1)",
                )
                .bind(id.unwrap_or(""))
                .bind(now)
                .execute(self.writes())
                .await?;
                Ok(r.rows_affected())
            }

            async fn prune_events(&self, before: i64) -> Result<u64, MetaError> {
                let r = sqlx::query(
                    "DELETE FROM events WHERE state IN ('delivered', 'kept') AND created_at < $1",
                )
                .bind(before)
                .execute(self.writes())
                .await?;
                Ok(r.rows_affected())
            }
        }
    };
}
