-- The embedded shared-config store, used when no etcd is configured. Keys are the logical
-- etcd keys relative to /sorna/{namespace}/, so both backends share one layout.

CREATE TABLE shared_config (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;

-- Every change, in order, so watchers (in this process or another) can follow along.
-- A NULL value is a deletion. Old entries are pruned by the writer.
CREATE TABLE shared_config_events (
    rev       INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT
);
