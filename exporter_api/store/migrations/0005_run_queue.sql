-- Durable execution: runs are claimed from the store by whichever instance is free, and the
-- per-database connection caps hold across every instance sharing the store.

-- runs.instance_id = '' means queued and claimed by nobody (a new run started on a draining
-- instance, or one handed over by a drain). `attempts` counts takeovers from an instance whose
-- heartbeat went stale (a hand-over by a drain is not one): beyond server.max_run_attempts
-- the run ends Failed.
ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_claimable ON runs (status, instance_id, heartbeat_at);

-- One row per connection slot of an export database (slot < databases.max_connections); a
-- variant holds one while its query runs. holder = '' is free; so is a slot whose instance's
-- heartbeat is older than server.takeover_after_s (a dead instance frees its slots that way).
CREATE TABLE run_slots (
    database_id  TEXT NOT NULL,
    slot         INTEGER NOT NULL,
    instance_id  TEXT NOT NULL DEFAULT '',
    holder       TEXT NOT NULL DEFAULT '',  -- a random token of the one lease
    run_id       TEXT,
    heartbeat_at TEXT NOT NULL,
    PRIMARY KEY (database_id, slot)
);
