-- SQLite: audit_log refuses UPDATE, and DELETE of any row not older than the cutoff that the
-- retention purge opens in its own transaction (audit_purge_gate.cutoff; '' = closed).
CREATE TABLE audit_purge_gate (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    cutoff TEXT NOT NULL
);
INSERT INTO audit_purge_gate (id, cutoff) VALUES (1, '');

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.at >= (SELECT cutoff FROM audit_purge_gate WHERE id = 1)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only (only the retention purge deletes)');
END;
