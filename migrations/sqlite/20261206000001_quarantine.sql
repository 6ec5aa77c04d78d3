-- Processing attempts, counted in the database before each attempt and committed before it
-- starts, so an attempt that kills the process (a stack overflow, an abort) still counts. A
-- message that has used up its attempts is classified 'quarantined' (kept, not processed).
-- Rows stored before this migration were either processed or are about to be taken for the
-- first time: 0 is right for both.
ALTER TABLE messages ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
-- Set by `gatehouse messages retry ID`; the daemon takes such messages from the database
-- (the inbox checkpoint has moved past them) and clears it when it has processed them.
ALTER TABLE messages ADD COLUMN retry_requested_at INTEGER;
CREATE INDEX messages_retry_requested ON messages (id) WHERE retry_requested_at IS NOT NULL;
