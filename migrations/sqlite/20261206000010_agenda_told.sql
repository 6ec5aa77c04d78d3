-- What the board has been told is on each meeting's agenda: the agenda itself, then each
-- agenda update. An update is the difference between a meeting's requests decided
-- `meeting` and these rows, and is written in the same transaction as the update's outbox
-- entry, so a restart neither repeats nor loses one.
CREATE TABLE agenda_told (
    meeting_date TEXT NOT NULL,
    request_id   INTEGER NOT NULL REFERENCES requests (id),
    outbox_id    INTEGER REFERENCES outbox (id),
    told_at      INTEGER NOT NULL,
    PRIMARY KEY (meeting_date, request_id)
);

-- Agendas already sent listed what had been decided for their meeting when they went.
INSERT INTO agenda_told (meeting_date, request_id, outbox_id, told_at)
SELECT s.period, r.id, s.outbox_id, s.sent_at
FROM summaries s
JOIN requests r ON r.decision = 'meeting' AND r.meeting_date = s.period AND r.decided_at <= s.sent_at
WHERE s.kind = 'agenda';
