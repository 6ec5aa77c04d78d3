-- Raw messages in a table of their own, written once. As a column of `messages` the bytes
-- were written again when processing filled in the row (SQLite rewrites a changed row whole,
-- overflow pages included): 2.5 times the mail's size went to disk during a backlog.
CREATE TABLE raw_messages (
    id  INTEGER PRIMARY KEY REFERENCES messages (id),
    raw BLOB NOT NULL
);
INSERT INTO raw_messages (id, raw) SELECT id, raw FROM messages;
ALTER TABLE messages DROP COLUMN raw;

-- Duplicate detection's candidate lists come from the index alone, newest (highest id)
-- first without a sort: the request's token sits after its body in the row, and reaching
-- it walked the body's overflow pages.
DROP INDEX requests_requester_received;
DROP INDEX requests_organisation_received;
CREATE INDEX requests_requester_recent ON requests (requester, id, status, received_at, token);
CREATE INDEX requests_organisation_recent ON requests (organisation, id, status, received_at, token);
