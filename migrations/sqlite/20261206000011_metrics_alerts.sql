-- The SMTP side of `gatehouse status`: when the outbox last delivered an email, and the
-- last error it met (with when), written by the sender as it works.
ALTER TABLE daemon_status ADD COLUMN smtp_last_sent INTEGER;
ALTER TABLE daemon_status ADD COLUMN smtp_last_error TEXT;
ALTER TABLE daemon_status ADD COLUMN smtp_last_error_at INTEGER;

-- Technical problems the operator has been told about (`outbox::alerts`): one row per
-- problem, so that a restart neither repeats an alert within the day nor forgets to say
-- that the problem has cleared.
CREATE TABLE alerts (
    key          TEXT PRIMARY KEY,
    subject      TEXT NOT NULL,
    first_raised INTEGER NOT NULL,
    last_sent    INTEGER NOT NULL,
    -- NULL while the problem lasts.
    resolved_at  INTEGER
);
CREATE INDEX alerts_open ON alerts (key) WHERE resolved_at IS NULL;
