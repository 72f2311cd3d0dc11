-- Live sessions are looked up by owner, group, domain and agent on every create and every
-- heartbeat. Ended sessions pile up without bound, so these indexes cover only the live
-- ones: a check's cost follows how many sessions run, not how many ever ran.
CREATE INDEX ix_kernels_live_access_key ON kernels (access_key, role, sess_id) WHERE status != 'TERMINATED';
CREATE INDEX ix_kernels_live_group ON kernels (group_id) WHERE status != 'TERMINATED';
CREATE INDEX ix_kernels_live_domain ON kernels (domain_name) WHERE status != 'TERMINATED';
CREATE INDEX ix_kernels_live_agent ON kernels (agent) WHERE status != 'TERMINATED';
