-- A message's author-side content (From, Subject, Date and the body, not the headers
-- servers add on the way), hashed. Two messages with one Message-ID are the same message
-- seen again only if this (or the whole content) matches; otherwise a sender reused the
-- Message-ID for a different message, and that one must be logged too, not dropped.
-- NULL for messages stored before this migration: they are taken as the same, as before.
ALTER TABLE messages ADD COLUMN core_hash TEXT;
