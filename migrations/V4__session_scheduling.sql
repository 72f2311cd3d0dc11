-- What the scheduler and the session lifecycle need beyond the original's columns:
-- the resolved creation config of a session (mounts, environ, image details) so a
-- pending session survives a manager restart, and when its status last changed.
ALTER TABLE kernels ADD COLUMN creation_config TEXT
    CHECK (creation_config IS NULL OR json_valid(creation_config));
ALTER TABLE kernels ADD COLUMN status_changed TEXT;
-- The pending queue is read in arrival order on every scheduling pass.
CREATE INDEX ix_kernels_pending ON kernels (created_at) WHERE status = 'PENDING';
