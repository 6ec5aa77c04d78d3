-- The gatekeepers' daily digest lists the auto-replies filed since the last one (those
-- recognised by their wording alone): found by the time they were processed, from an index
-- that holds automated mail only, so the busy inbox path pays nothing for it.
CREATE INDEX messages_automated_processed ON messages (processed_at) WHERE classification = 'automated';
