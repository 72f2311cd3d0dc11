-- Every session insert and status change updates each index of kernels (sixteen of them
-- before this). These four are prefixes of wider indexes that serve the same lookups:
--   ix_kernels_sess_id     (sess_id)          by ix_kernels_sess_id_role (sess_id, role)
--   ix_kernels_status      (status)           by ix_kernels_status_created_at
--   ix_kernels_access_key  (access_key)       by ix_kernels_access_key_created_at
--   ix_kernels_pending     (created_at) WHERE status = 'PENDING'
--                                             by ix_kernels_status_created_at
DROP INDEX ix_kernels_sess_id;
DROP INDEX ix_kernels_status;
DROP INDEX ix_kernels_access_key;
DROP INDEX ix_kernels_pending;
