-- Upload sessions (the upload.views model): a user groups files in a session, and the app
-- later stores them for good. A session's files are ordinary catalog rows marked temporary
-- until the session is stored; the partial unique index makes duplicate names impossible.
CREATE TABLE upload_sessions (
    token          TEXT PRIMARY KEY,          -- 32 random [A-Za-z0-9]
    owner_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    status         TEXT NOT NULL,             -- CREATED | UPLOADING | COPYING_IN_PROGRESS | STORED
                                              -- | EXPIRED | COPYING_FAILED | REMOVING_IN_PROGRESS
    last_activity  BIGINT NOT NULL,           -- unix seconds of the last upload interaction
    created_at     BIGINT NOT NULL
);
CREATE INDEX upload_sessions_activity ON upload_sessions(status, last_activity);

ALTER TABLE files ADD COLUMN session_token TEXT REFERENCES upload_sessions(token) ON DELETE CASCADE;
ALTER TABLE files ADD COLUMN temporary INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX files_session_name ON files(session_token, name) WHERE session_token IS NOT NULL;
