-- The audit trail: who logged in, ran, downloaded, cancelled, logged out; when, from where.
-- Append-only (the backend file of this migration adds the triggers that refuse UPDATE and
-- DELETE); kept `[audit] retention_days`, independently of the runs: no foreign key to `runs`,
-- so deleting a run (retention) never deletes its records. Nothing secret is ever stored here.

CREATE TABLE audit_log (
    event_id    TEXT PRIMARY KEY,           -- ULID: sorts by time
    at          TEXT NOT NULL,              -- ISO-8601 UTC, milliseconds
    action      TEXT NOT NULL,              -- login.succeeded, run.started, download.file, ...
    login       TEXT NOT NULL,              -- '' when unknown (a logout without a session)
    database_id TEXT NOT NULL,
    client      TEXT NOT NULL,              -- the client address ('' for the engine's events)
    run_id      TEXT,
    details     TEXT NOT NULL               -- JSON object, action-specific
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_login ON audit_log (login, at);
