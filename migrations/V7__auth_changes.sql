-- Signed requests reuse the keypair they last read until something authentication reads
-- changes. These triggers count such changes, whoever makes them (this server, the CLI,
-- a restore); the server reads the count after each commit. Bookkeeping columns that
-- change on every request or session (last_used, num_queries, concurrency_used) are left
-- out on purpose.
CREATE TABLE auth_changes (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO auth_changes (id, n) VALUES (1, 0);

CREATE TRIGGER auth_changes_keypair_insert AFTER INSERT ON keypairs
BEGIN UPDATE auth_changes SET n = n + 1; END;
CREATE TRIGGER auth_changes_keypair_delete AFTER DELETE ON keypairs
BEGIN UPDATE auth_changes SET n = n + 1; END;
CREATE TRIGGER auth_changes_keypair_update
AFTER UPDATE OF access_key, secret_key, is_active, is_admin, rate_limit, "user", resource_policy
ON keypairs
BEGIN UPDATE auth_changes SET n = n + 1; END;

CREATE TRIGGER auth_changes_user_insert AFTER INSERT ON users
BEGIN UPDATE auth_changes SET n = n + 1; END;
CREATE TRIGGER auth_changes_user_delete AFTER DELETE ON users
BEGIN UPDATE auth_changes SET n = n + 1; END;
CREATE TRIGGER auth_changes_user_update
AFTER UPDATE OF uuid, email, role, is_active, domain_name ON users
BEGIN UPDATE auth_changes SET n = n + 1; END;

CREATE TRIGGER auth_changes_policy_insert AFTER INSERT ON keypair_resource_policies
BEGIN UPDATE auth_changes SET n = n + 1; END;
CREATE TRIGGER auth_changes_policy_delete AFTER DELETE ON keypair_resource_policies
BEGIN UPDATE auth_changes SET n = n + 1; END;
CREATE TRIGGER auth_changes_policy_update AFTER UPDATE ON keypair_resource_policies
BEGIN UPDATE auth_changes SET n = n + 1; END;
