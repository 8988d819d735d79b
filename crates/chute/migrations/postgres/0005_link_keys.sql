-- The keys download links are signed with (hex), shared by every node. The newest signs;
-- `chute links rotate` adds one and drops the others, so older links stop working.
CREATE TABLE link_keys (
    id          BIGINT PRIMARY KEY,
    secret      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
