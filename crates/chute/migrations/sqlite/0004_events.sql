-- The outbox (issue 14): every durable event, written in the same transaction as the change it
-- reports. `seq` is commit order (SQLite has one writer at a time), the feed's cursor.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    retry_since BIGINT NOT NULL,
    lease_until BIGINT,
    last_error TEXT
);
CREATE INDEX events_due ON events(state, next_attempt_at);
CREATE INDEX events_subject ON events(subject, seq);
