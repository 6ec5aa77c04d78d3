-- Duplicate detection without re-reading bodies: each request keeps the fingerprint of its
-- text (classify::Fingerprint, sorted 32-bit hashes), written when it is created. Requests
-- from before this migration have none; their fingerprint is worked out from the body when
-- they are compared.
ALTER TABLE requests ADD COLUMN fingerprint BLOB;

-- The earlier approaches from the same requester, or the same organisation, newest first:
-- two index walks that stop at the candidate limit, instead of a scan of every request.
DROP INDEX requests_requester;
CREATE INDEX requests_requester_received ON requests (requester, received_at);
CREATE INDEX requests_organisation_received ON requests (organisation, received_at);
