-- Users, API tokens (stored as sha256 of the token), the file catalog, and resumable uploads.
-- Portable types only (INTEGER/BIGINT, TEXT, BLOB) so that the PostgreSQL backend can mirror it.
CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    is_staff    INTEGER NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash  TEXT NOT NULL UNIQUE,
    label       TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);

CREATE TABLE files (
    id            TEXT PRIMARY KEY,          -- UUIDv7: sorts by creation time
    owner_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    size          BIGINT NOT NULL,           -- bytes as uploaded
    stored_size   BIGINT NOT NULL,           -- bytes at rest (differs when compressed)
    content_type  TEXT,                      -- as declared by the client
    detected_type TEXT,                      -- from magic bytes
    encoding      TEXT,                      -- 'zstd' when compressed at rest
    storage_key   TEXT NOT NULL,
    md5           TEXT,
    sha1          TEXT,
    sha256        TEXT,
    blake3        TEXT,
    created_at    BIGINT NOT NULL
);
CREATE INDEX files_owner ON files(owner_id, id);

CREATE TABLE uploads (
    id           TEXT PRIMARY KEY,
    owner_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    protocol     TEXT NOT NULL,
    staging_key  TEXT NOT NULL,
    name         TEXT NOT NULL DEFAULT '',
    content_type TEXT,
    "offset"     BIGINT NOT NULL DEFAULT 0,  -- bytes durable in staging
    length       BIGINT,                     -- NULL while deferred
    state        TEXT NOT NULL,              -- 'active' | 'complete'
    expires_at   BIGINT,
    metadata     TEXT NOT NULL DEFAULT '{}',
    hash_state   BLOB,                       -- serialised running digests at "offset"
    file_id      TEXT,                       -- the catalog entry once complete
    created_at   BIGINT NOT NULL
);
CREATE INDEX uploads_expiry ON uploads(expires_at);
