-- Retention, subject access and erasure (issue 17).
--
-- When a request's personal data was removed: by retention once it had been closed for
-- [retention] closed_requests_months, or by `gatehouse erase`. The row then keeps only its
-- reference, status, dates, organisation, decision, meeting date and priorities, so the
-- board's statistics still add up; NULL while the request still holds everything.
ALTER TABLE requests ADD COLUMN anonymised_at INTEGER;

-- Housekeeping that concerns no single request (purges, exports, backups), for the audit
-- trail: who, when, what kind and how many; never the content or the person.
CREATE TABLE service_events (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    kind   TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX service_events_at ON service_events (at);

-- The daily purge finds what is old by index instead of reading every row.
CREATE INDEX messages_fetched ON messages (fetched_at);
CREATE INDEX outbox_created ON outbox (created_at);
CREATE INDEX requests_closed_kept ON requests (updated_at) WHERE status = 'closed' AND anonymised_at IS NULL;
