-- PostgreSQL: audit_log refuses UPDATE and TRUNCATE, and DELETE of any row not older than the
-- cutoff that audit_purge(cutoff) sets for its own transaction. A role that owns the table can
-- still drop the triggers: give the service a role that does not own it (docs/OPERATIONS.md).
CREATE FUNCTION audit_log_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.at < current_setting('exporter_api.audit_purge_before', true) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only (only audit_purge() deletes)'
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_guard();

CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_guard();

-- The retention purge: deletes the records older than `cutoff` (ISO-8601 UTC text).
CREATE FUNCTION audit_purge(cutoff TEXT) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    purged BIGINT;
BEGIN
    PERFORM set_config('exporter_api.audit_purge_before', cutoff, true);
    DELETE FROM audit_log WHERE at < cutoff;
    GET DIAGNOSTICS purged = ROW_COUNT;
    PERFORM set_config('exporter_api.audit_purge_before', '', true);
    RETURN purged;
END
$$;
