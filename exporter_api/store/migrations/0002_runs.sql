-- Runs, their groups / scripts / variants and the files they produced.
-- Portable subset (SQLite and PostgreSQL): TEXT, INTEGER, BIGINT; times are ISO-8601 UTC TEXT.

CREATE TABLE runs (
    run_id       TEXT PRIMARY KEY,          -- ULID: sorts by creation time
    login        TEXT NOT NULL,
    database_id  TEXT NOT NULL,
    manager_id   TEXT NOT NULL,
    stream_id    TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    mode         TEXT NOT NULL,
    status       TEXT NOT NULL,
    error        TEXT,
    instance_id  TEXT NOT NULL,             -- the process running it
    heartbeat_at TEXT NOT NULL,             -- refreshed while it runs; stale => interrupted
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT
);
CREATE INDEX runs_owner ON runs (login, database_id, manager_id, stream_id, run_id);
CREATE INDEX runs_status ON runs (status);

CREATE TABLE run_groups (
    run_id       TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    group_id     TEXT NOT NULL,
    position     INTEGER NOT NULL,
    display_name TEXT NOT NULL,
    status       TEXT NOT NULL,
    PRIMARY KEY (run_id, group_id)
);

CREATE TABLE run_scripts (
    run_id         TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    group_id       TEXT NOT NULL,
    script_id      TEXT NOT NULL,
    position       INTEGER NOT NULL,
    display_name   TEXT NOT NULL,
    execution_lane INTEGER NOT NULL,
    export_mode    TEXT NOT NULL,
    column_ids     TEXT,                    -- JSON list of exported column item ids
    status         TEXT NOT NULL,
    message        TEXT,
    rows_exported  BIGINT NOT NULL DEFAULT 0,
    bytes_written  BIGINT NOT NULL DEFAULT 0,
    started_at     TEXT,
    finished_at    TEXT,
    error          TEXT,
    PRIMARY KEY (run_id, script_id)
);

CREATE TABLE run_variants (
    run_id        TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    script_id     TEXT NOT NULL,
    variant       INTEGER NOT NULL,
    status        TEXT NOT NULL,
    message       TEXT,
    rows_exported BIGINT NOT NULL DEFAULT 0,
    bytes_written BIGINT NOT NULL DEFAULT 0,
    started_at    TEXT,
    finished_at   TEXT,
    error         TEXT,
    file_id       TEXT,
    PRIMARY KEY (run_id, script_id, variant)
);

CREATE TABLE run_files (
    file_id     TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    group_id    TEXT NOT NULL,
    script_id   TEXT NOT NULL,
    variant     INTEGER NOT NULL,
    name        TEXT NOT NULL,
    size_bytes  BIGINT NOT NULL,
    rows        BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX run_files_run ON run_files (run_id);
