-- Every automatic answer to someone outside (acknowledgement, forward confirmation), keyed
-- as the sending limits count it: the person (address with any +tag dropped) and the
-- recipient domain. The limits are counted from here by index, so checking them costs the
-- same however large the outbox grows.
CREATE TABLE answered (
    outbox_id  INTEGER NOT NULL REFERENCES outbox (id),
    person     TEXT NOT NULL,
    domain     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX answered_person ON answered (person, created_at);
CREATE INDEX answered_domain ON answered (domain, created_at);
CREATE INDEX answered_time ON answered (created_at);

-- The last day's answers, so the limits hold across the upgrade. Keyed by the whole
-- address: +tags in them are not folded, which can only let one person have their day's
-- allowance again once.
INSERT INTO answered (outbox_id, person, domain, created_at)
SELECT o.id, r.value, substr(r.value, instr(r.value, '@') + 1), o.created_at
FROM outbox o, json_each(o.recipients) r
WHERE o.kind IN ('acknowledgement', 'forward_confirmation')
  AND o.created_at >= (CAST(strftime('%s', 'now') AS INTEGER) - 86400) * 1000;
