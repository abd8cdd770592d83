-- Sessions, refresh tokens, encrypted database credentials and login throttling.

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    login          TEXT NOT NULL,
    database_id    TEXT NOT NULL,
    manager_id     TEXT NOT NULL,
    stream_id      TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    revoked_at     TEXT,
    revoked_reason TEXT
);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- The user's database password, AES-GCM encrypted (nonce || ciphertext, base64) with the
-- session id as associated data. Deleted when the session is revoked or expires.
CREATE TABLE session_credentials (
    session_id TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    username   TEXT NOT NULL,
    secret     TEXT NOT NULL
);

-- Only SHA-256 hashes of refresh tokens are stored. A token is used once: presenting a used one
-- again revokes its session (reuse detection).
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE login_throttle (
    throttle_key  TEXT PRIMARY KEY,
    failures      INTEGER NOT NULL,
    window_start  TEXT NOT NULL,
    locked_until  TEXT
);
