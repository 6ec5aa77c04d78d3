-- How many times the daemon stopped while this email was in the middle of its SMTP
-- exchange. The first time it is sent again (it may go twice); after a second such
-- interruption it is assumed delivered rather than risk a third copy.
ALTER TABLE outbox ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
