-- The files a requester (or the forwarder gatehouse answered) sent with a request: the paper
-- a `paper` decision asks for, which `circulate` sends to the board. The bytes are the ones
-- the notification already carried (within attach_max_bytes), kept with the message that
-- brought them: when retention or `gatehouse erase` removes that message's bytes, its papers
-- go with them (ON DELETE CASCADE), so papers never outlive the mail they came in.
CREATE TABLE papers (
    id            INTEGER PRIMARY KEY,
    request_id    INTEGER NOT NULL REFERENCES requests (id),
    message_id    INTEGER NOT NULL REFERENCES raw_messages (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    bytes         BLOB NOT NULL,
    received_at   INTEGER NOT NULL,
    circulated_at INTEGER
);
CREATE INDEX papers_request ON papers (request_id);
CREATE INDEX papers_circulated ON papers (circulated_at) WHERE circulated_at IS NOT NULL;
