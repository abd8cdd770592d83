-- Login attempts in flight: a reservation is taken (atomically with the count of failures and
-- of other reservations for the same throttle key) before the database is asked for a login, so
-- parallel attempts cannot exceed login_max_failures. A 401 turns it into a failure, anything
-- else releases it; a crashed process's reservations expire at expires_at.
CREATE TABLE login_attempts (
    attempt_id   TEXT PRIMARY KEY,
    throttle_key TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);
CREATE INDEX login_attempts_key ON login_attempts (throttle_key, expires_at);
