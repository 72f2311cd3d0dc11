-- Paged session lists (newest first, optionally by status or owner) stay fast with
-- hundreds of thousands of rows.
CREATE INDEX ix_kernels_role_created_at ON kernels (role, created_at);
CREATE INDEX ix_kernels_status_created_at ON kernels (status, created_at);
CREATE INDEX ix_kernels_access_key_created_at ON kernels (access_key, created_at);
