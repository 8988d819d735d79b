-- Limits that hold under concurrency (issue 12): a partial upload of a tus concatenation
-- belongs to at most one final upload (claimed atomically when the final is created), and an
-- owner's open uploads are counted and summed for quotas.
ALTER TABLE uploads ADD COLUMN final_id TEXT;
CREATE INDEX uploads_final ON uploads(final_id);
CREATE INDEX uploads_owner_state ON uploads(owner_id, state);
