-- A cancel asked through an instance that does not drive the run (several instances sharing a
-- PostgreSQL state store): the driving instance polls this flag with its heartbeat and cancels.
ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
