-- The live-session indexes (V6) and the one-live-session-per-token index named `status` in
-- their WHERE. SQLite rewrites a partial index whenever an UPDATE sets a column its WHERE
-- names, so every status change of a live session (PENDING -> PREPARING -> RUNNING, ...)
-- deleted and re-inserted five index entries whose contents did not change. They now
-- name `terminated_at`, which is set once, when the session ends.
--
-- `terminated_at` is set exactly when a session is TERMINATED: the server sets both in one
-- statement (and nothing else ends a session), fixtures are refused otherwise, and rows
-- that broke the rule before are mended here. (Triggers keeping the rule cost more than
-- the index work this saves.)
UPDATE kernels SET terminated_at = coalesce(status_changed, created_at)
 WHERE status = 'TERMINATED' AND terminated_at IS NULL;
UPDATE kernels SET terminated_at = NULL
 WHERE status != 'TERMINATED' AND terminated_at IS NOT NULL;

DROP INDEX ix_kernels_live_access_key;
DROP INDEX ix_kernels_live_group;
DROP INDEX ix_kernels_live_domain;
DROP INDEX ix_kernels_live_agent;
DROP INDEX ix_kernels_unique_sess_token;
CREATE INDEX ix_kernels_live_access_key ON kernels (access_key, role, sess_id) WHERE terminated_at IS NULL;
CREATE INDEX ix_kernels_live_group ON kernels (group_id) WHERE terminated_at IS NULL;
CREATE INDEX ix_kernels_live_domain ON kernels (domain_name) WHERE terminated_at IS NULL;
CREATE INDEX ix_kernels_live_agent ON kernels (agent) WHERE terminated_at IS NULL;
CREATE UNIQUE INDEX ix_kernels_unique_sess_token ON kernels (access_key, sess_id)
    WHERE terminated_at IS NULL AND role = 'master';
