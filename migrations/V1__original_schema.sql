-- The original manager's twelve tables (alembic head 3cf19d906e71), adapted to SQLite:
-- UUIDs are canonical lowercase text, JSONB columns are checked JSON text, Postgres
-- enums are CHECK constraints on the same spellings, timestamps are UTC RFC 3339 text.

CREATE TABLE domains (
    name                 TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    description          TEXT CHECK (description IS NULL OR length(description) <= 512),
    is_active            INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    modified_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    total_resource_slots TEXT NOT NULL DEFAULT '{}'
        CHECK (json_valid(total_resource_slots) AND json_type(total_resource_slots) = 'object'),
    integration_id       TEXT CHECK (integration_id IS NULL OR length(integration_id) <= 512)
);

CREATE TRIGGER domains_touch_modified_at AFTER UPDATE ON domains
FOR EACH ROW WHEN NEW.modified_at = OLD.modified_at
BEGIN
    UPDATE domains SET modified_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE name = NEW.name;
END;

CREATE TABLE groups (
    id                   TEXT PRIMARY KEY CHECK (length(id) = 36),
    name                 TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    description          TEXT CHECK (description IS NULL OR length(description) <= 512),
    is_active            INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    modified_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    integration_id       TEXT CHECK (integration_id IS NULL OR length(integration_id) <= 512),
    domain_name          TEXT NOT NULL
        REFERENCES domains (name) ON UPDATE CASCADE ON DELETE CASCADE,
    total_resource_slots TEXT NOT NULL DEFAULT '{}'
        CHECK (json_valid(total_resource_slots) AND json_type(total_resource_slots) = 'object'),
    CONSTRAINT uq_groups_name_domain_name UNIQUE (name, domain_name)
);
CREATE INDEX ix_groups_domain_name ON groups (domain_name);

CREATE TRIGGER groups_touch_modified_at AFTER UPDATE ON groups
FOR EACH ROW WHEN NEW.modified_at = OLD.modified_at
BEGIN
    UPDATE groups SET modified_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = NEW.id;
END;

CREATE TABLE users (
    uuid                 TEXT PRIMARY KEY CHECK (length(uuid) = 36),
    username             TEXT UNIQUE CHECK (username IS NULL OR length(username) <= 64),
    email                TEXT NOT NULL UNIQUE CHECK (length(email) BETWEEN 3 AND 64),
    password             TEXT,
    need_password_change INTEGER CHECK (need_password_change IN (0, 1)),
    full_name            TEXT CHECK (full_name IS NULL OR length(full_name) <= 64),
    description          TEXT CHECK (description IS NULL OR length(description) <= 500),
    is_active            INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    integration_id       TEXT CHECK (integration_id IS NULL OR length(integration_id) <= 512),
    domain_name          TEXT REFERENCES domains (name),
    role                 TEXT NOT NULL DEFAULT 'user'
        CHECK (role IN ('superadmin', 'admin', 'user', 'monitor'))
);
CREATE INDEX ix_users_domain_name ON users (domain_name);

CREATE TABLE association_groups_users (
    user_id  TEXT NOT NULL REFERENCES users (uuid) ON UPDATE CASCADE ON DELETE CASCADE,
    group_id TEXT NOT NULL REFERENCES groups (id) ON UPDATE CASCADE ON DELETE CASCADE,
    CONSTRAINT uq_association_user_id_group_id UNIQUE (user_id, group_id)
);
CREATE INDEX ix_association_groups_users_group_id ON association_groups_users (group_id);

CREATE TABLE keypair_resource_policies (
    name                       TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 256),
    created_at                 TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    default_for_unspecified    TEXT NOT NULL DEFAULT 'LIMITED'
        CHECK (default_for_unspecified IN ('LIMITED', 'UNLIMITED')),
    total_resource_slots       TEXT NOT NULL
        CHECK (json_valid(total_resource_slots) AND json_type(total_resource_slots) = 'object'),
    max_concurrent_sessions    INTEGER NOT NULL CHECK (max_concurrent_sessions >= 0),
    max_containers_per_session INTEGER NOT NULL CHECK (max_containers_per_session >= 0),
    max_vfolder_count          INTEGER NOT NULL CHECK (max_vfolder_count >= 0),
    max_vfolder_size           INTEGER NOT NULL CHECK (max_vfolder_size >= 0),
    idle_timeout               INTEGER NOT NULL CHECK (idle_timeout >= 0),
    allowed_vfolder_hosts      TEXT NOT NULL DEFAULT '[]'
        CHECK (json_valid(allowed_vfolder_hosts) AND json_type(allowed_vfolder_hosts) = 'array')
);

CREATE TABLE keypairs (
    user_id          TEXT CHECK (user_id IS NULL OR length(user_id) <= 256),
    access_key       TEXT PRIMARY KEY CHECK (length(access_key) BETWEEN 1 AND 20),
    secret_key       TEXT NOT NULL CHECK (length(secret_key) BETWEEN 1 AND 40),
    is_active        INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    is_admin         INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_used        TEXT,
    concurrency_used INTEGER NOT NULL DEFAULT 0 CHECK (concurrency_used >= 0),
    rate_limit       INTEGER NOT NULL DEFAULT 1000 CHECK (rate_limit >= 0),
    num_queries      INTEGER NOT NULL DEFAULT 0,
    "user"           TEXT NOT NULL REFERENCES users (uuid),
    resource_policy  TEXT NOT NULL REFERENCES keypair_resource_policies (name)
);
CREATE INDEX ix_keypairs_user_id ON keypairs (user_id);
CREATE INDEX ix_keypairs_user ON keypairs ("user");
CREATE INDEX ix_keypairs_is_active ON keypairs (is_active);
CREATE INDEX ix_keypairs_is_admin ON keypairs (is_admin);

CREATE TABLE resource_presets (
    name           TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 256),
    resource_slots TEXT NOT NULL
        CHECK (json_valid(resource_slots) AND json_type(resource_slots) = 'object')
);

CREATE TABLE agents (
    id              TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
    status          TEXT NOT NULL DEFAULT 'ALIVE'
        CHECK (status IN ('ALIVE', 'LOST', 'RESTARTING', 'TERMINATED')),
    region          TEXT NOT NULL CHECK (length(region) <= 64),
    available_slots TEXT NOT NULL CHECK (json_valid(available_slots)),
    occupied_slots  TEXT NOT NULL CHECK (json_valid(occupied_slots)),
    addr            TEXT NOT NULL CHECK (length(addr) <= 128),
    first_contact   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    lost_at         TEXT,
    version         TEXT NOT NULL CHECK (length(version) <= 64),
    compute_plugins TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(compute_plugins))
);
CREATE INDEX ix_agents_status ON agents (status);
CREATE INDEX ix_agents_region ON agents (region);

CREATE TABLE kernels (
    id              TEXT PRIMARY KEY CHECK (length(id) = 36),
    sess_id         TEXT NOT NULL CHECK (length(sess_id) <= 64),
    role            TEXT NOT NULL DEFAULT 'master' CHECK (role IN ('master', 'worker')),
    agent           TEXT REFERENCES agents (id),
    agent_addr      TEXT NOT NULL DEFAULT '' CHECK (length(agent_addr) <= 128),
    domain_name     TEXT NOT NULL REFERENCES domains (name),
    group_id        TEXT NOT NULL REFERENCES groups (id),
    user_uuid       TEXT NOT NULL REFERENCES users (uuid),
    access_key      TEXT REFERENCES keypairs (access_key),
    image           TEXT CHECK (image IS NULL OR length(image) <= 512),
    registry        TEXT CHECK (registry IS NULL OR length(registry) <= 512),
    tag             TEXT CHECK (tag IS NULL OR length(tag) <= 64),
    container_id    TEXT,
    occupied_slots  TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(occupied_slots)),
    occupied_shares TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(occupied_shares)),
    environ         TEXT CHECK (environ IS NULL OR (json_valid(environ) AND json_type(environ) = 'array')),
    kernel_host     TEXT CHECK (kernel_host IS NULL OR length(kernel_host) <= 128),
    repl_in_port    INTEGER NOT NULL DEFAULT 0,
    repl_out_port   INTEGER NOT NULL DEFAULT 0,
    stdin_port      INTEGER NOT NULL DEFAULT 0,
    stdout_port     INTEGER NOT NULL DEFAULT 0,
    service_ports   TEXT CHECK (service_ports IS NULL OR json_valid(service_ports)),
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    terminated_at   TEXT,
    status          TEXT NOT NULL DEFAULT 'PREPARING' CHECK (status IN (
        'PENDING', 'PREPARING', 'BUILDING', 'PULLING', 'RUNNING', 'RESTARTING', 'RESIZING',
        'SUSPENDED', 'TERMINATING', 'TERMINATED', 'ERROR')),
    status_info     TEXT,
    num_queries     INTEGER NOT NULL DEFAULT 0,
    last_stat       TEXT CHECK (last_stat IS NULL OR json_valid(last_stat))
);
CREATE INDEX ix_kernels_sess_id ON kernels (sess_id);
CREATE INDEX ix_kernels_sess_id_role ON kernels (sess_id, role);
CREATE INDEX ix_kernels_created_at ON kernels (created_at);
CREATE INDEX ix_kernels_terminated_at ON kernels (terminated_at);
CREATE INDEX ix_kernels_status ON kernels (status);
CREATE INDEX ix_kernels_access_key ON kernels (access_key);
CREATE INDEX ix_kernels_agent ON kernels (agent);
-- One live session per client token per keypair.
CREATE UNIQUE INDEX ix_kernels_unique_sess_token ON kernels (access_key, sess_id)
    WHERE status != 'TERMINATED' AND role = 'master';

CREATE TABLE vfolders (
    id         TEXT PRIMARY KEY CHECK (length(id) = 36),
    host       TEXT NOT NULL CHECK (length(host) BETWEEN 1 AND 128),
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    max_files  INTEGER NOT NULL DEFAULT 1000,
    max_size   INTEGER NOT NULL DEFAULT 1048576,
    num_files  INTEGER NOT NULL DEFAULT 0,
    cur_size   INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_used  TEXT,
    "user"     TEXT REFERENCES users (uuid),
    "group"    TEXT REFERENCES groups (id),
    -- A folder belongs to exactly one user or one group.
    CHECK (("user" IS NULL) != ("group" IS NULL))
);
CREATE INDEX ix_vfolders_user ON vfolders ("user");
CREATE INDEX ix_vfolders_group ON vfolders ("group");

CREATE TABLE vfolder_invitations (
    id         TEXT PRIMARY KEY CHECK (length(id) = 36),
    permission TEXT NOT NULL DEFAULT 'rw' CHECK (permission IN ('ro', 'rw', 'wd')),
    inviter    TEXT CHECK (inviter IS NULL OR length(inviter) <= 256),
    invitee    TEXT NOT NULL CHECK (length(invitee) <= 256),
    state      TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'accepted', 'rejected')),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    vfolder    TEXT NOT NULL REFERENCES vfolders (id) ON UPDATE CASCADE ON DELETE CASCADE
);
CREATE INDEX ix_vfolder_invitations_invitee ON vfolder_invitations (invitee);

CREATE TABLE vfolder_permissions (
    permission TEXT NOT NULL DEFAULT 'rw' CHECK (permission IN ('ro', 'rw', 'wd')),
    vfolder    TEXT NOT NULL REFERENCES vfolders (id) ON UPDATE CASCADE ON DELETE CASCADE,
    "user"     TEXT NOT NULL REFERENCES users (uuid) ON DELETE CASCADE,
    -- The original has no key here; one permission per user per folder is what it means.
    CONSTRAINT uq_vfolder_permissions_vfolder_user UNIQUE (vfolder, "user")
);
