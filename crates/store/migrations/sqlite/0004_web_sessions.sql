-- Browser sessions of the web UI. Only an HMAC of the session id (the cookie's value) is stored, so
-- a copy of the database cannot be used to log in. Rows go at logout, at expiry (purged by the
-- server), when an admin resets the user's password, and with the user.
CREATE TABLE web_sessions (
    id_hash    BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX web_sessions_by_user ON web_sessions (user_id);
CREATE INDEX web_sessions_by_expiry ON web_sessions (expires_at);
