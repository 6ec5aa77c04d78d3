-- gatehouse schema, SQLite flavour. Times are INTEGER milliseconds since the Unix epoch
-- (UTC); calendar dates are TEXT 'YYYY-MM-DD'. The PostgreSQL flavour mirrors this file.

-- Small facts about this installation, e.g. when it first watched the mailbox.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Where the inbox watcher has got to in each mailbox. last_uid only moves forward in the
-- same transaction as the effects of the message it covers.
CREATE TABLE mailbox_state (
    mailbox           TEXT PRIMARY KEY,
    uidvalidity       INTEGER NOT NULL,
    last_uid          INTEGER NOT NULL,
    -- UIDs below this (in this uidvalidity) were already in the mailbox at first start.
    backlog_below_uid INTEGER NOT NULL DEFAULT 0,
    updated_at        INTEGER NOT NULL
);

-- Per-year counters behind references like GP-2026-0042.
CREATE TABLE reference_counters (
    year     INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL
);

CREATE TABLE requests (
    id                    INTEGER PRIMARY KEY,
    reference             TEXT NOT NULL UNIQUE,
    ref_year              INTEGER NOT NULL,
    ref_seq               INTEGER NOT NULL,
    status                TEXT NOT NULL,
    decision              TEXT,
    decision_detail       TEXT,
    requester             TEXT NOT NULL,
    requester_name        TEXT,
    organisation          TEXT,
    via                   TEXT,
    subject               TEXT NOT NULL,
    body                  TEXT NOT NULL,
    received_at           INTEGER NOT NULL,
    decided_at            INTEGER,
    meeting_date          TEXT,
    duplicate_of          INTEGER REFERENCES requests (id),
    probable_duplicate_of INTEGER REFERENCES requests (id),
    -- Secret that a gatekeeper's reply must carry for a decision to count.
    token                 TEXT NOT NULL,
    -- 0 for backlog found at first start (logged, not answered).
    answer                INTEGER NOT NULL DEFAULT 1,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    UNIQUE (ref_year, ref_seq)
);
CREATE INDEX requests_status ON requests (status);
CREATE INDEX requests_received ON requests (received_at);
CREATE INDEX requests_requester ON requests (requester);

CREATE TABLE request_priorities (
    request_id INTEGER NOT NULL REFERENCES requests (id),
    priority   TEXT NOT NULL,
    PRIMARY KEY (request_id, priority)
);

-- The audit log: everything that happens to a request, who did it and when.
CREATE TABLE request_events (
    id         INTEGER PRIMARY KEY,
    request_id INTEGER NOT NULL REFERENCES requests (id),
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    kind       TEXT NOT NULL,
    detail     TEXT
);
CREATE INDEX request_events_request ON request_events (request_id, at);

-- Every message taken from the inbox: the exact bytes first, the outcome of processing
-- filled in afterwards. dedup_key is the Message-ID, or the content hash without one, so
-- a message seen again under a new UIDVALIDITY is recognised.
CREATE TABLE messages (
    id             INTEGER PRIMARY KEY,
    mailbox        TEXT NOT NULL,
    uidvalidity    INTEGER NOT NULL,
    uid            INTEGER NOT NULL,
    dedup_key      TEXT NOT NULL UNIQUE,
    message_id     TEXT,
    content_hash   TEXT NOT NULL,
    size           INTEGER NOT NULL,
    raw            BLOB NOT NULL,
    fetched_at     INTEGER NOT NULL,
    backlog        INTEGER NOT NULL DEFAULT 0,
    received_at    INTEGER,
    from_address   TEXT,
    from_name      TEXT,
    subject        TEXT,
    attachments    TEXT,
    classification TEXT,
    detail         TEXT,
    request_id     INTEGER REFERENCES requests (id),
    processed_at   INTEGER
);
CREATE INDEX messages_request ON messages (request_id);
CREATE INDEX messages_unprocessed ON messages (processed_at) WHERE processed_at IS NULL;

-- Message-IDs that belong to a request's thread, received or sent, so replies thread.
CREATE TABLE thread_message_ids (
    message_id TEXT PRIMARY KEY,
    request_id INTEGER NOT NULL REFERENCES requests (id),
    direction  TEXT NOT NULL
);

-- Every email gatehouse sends, written in the same transaction as its cause and delivered
-- from here, so an SMTP outage or a crash loses nothing.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    message_id      TEXT NOT NULL UNIQUE,
    request_id      INTEGER REFERENCES requests (id),
    kind            TEXT NOT NULL,
    envelope_from   TEXT NOT NULL,
    recipients      TEXT NOT NULL,
    subject         TEXT NOT NULL,
    raw             BLOB NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);

-- Weekly summaries and meeting agendas already sent, so each goes once.
CREATE TABLE summaries (
    kind       TEXT NOT NULL,
    period     TEXT NOT NULL,
    covers_from INTEGER NOT NULL,
    covers_to  INTEGER NOT NULL,
    sent_at    INTEGER NOT NULL,
    outbox_id  INTEGER REFERENCES outbox (id),
    PRIMARY KEY (kind, period)
);

-- What the running daemon is doing, for `gatehouse status`.
CREATE TABLE daemon_status (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    imap        TEXT NOT NULL,
    imap_detail TEXT,
    last_seen   INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    pid         INTEGER
);
