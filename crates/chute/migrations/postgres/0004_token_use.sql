-- When each API token was last used (written at most once a minute per token), for
-- `chute token list`.
ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;
CREATE INDEX tokens_user ON tokens(user_id, id);
