-- Logins of the web UI. The browser holds a random token in an HttpOnly cookie; only its
-- SHA-256 is stored, with the CSRF token the page must echo on changing requests.
CREATE TABLE ui_sessions (
    token_hash  TEXT PRIMARY KEY,
    access_key  TEXT NOT NULL REFERENCES keypairs (access_key) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    expires_at  TEXT NOT NULL
);
CREATE INDEX ix_ui_sessions_expires ON ui_sessions (expires_at);
CREATE INDEX ix_ui_sessions_access_key ON ui_sessions (access_key);
