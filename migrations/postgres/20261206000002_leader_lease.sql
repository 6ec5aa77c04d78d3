-- Active/standby nodes sharing one database (issue 16). Exactly one node leads: it holds
-- the lease row below until `expires_at`, renewing it well before then. Times here come from
-- the database's own clock (clock_timestamp()), never a node's, so nodes with skewed clocks
-- still agree on who leads.
--
-- `token` is the fencing token: it grows by one each time the lease changes hands (never on
-- a renewal), and a leader's writes that matter check it in their own transaction, so a node
-- that lost the lease without noticing (paused, cut off) cannot act after its successor.
CREATE TABLE leader_lease (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    holder     TEXT NOT NULL,
    token      BIGINT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- Every node that has run against this database, for `gatehouse status` (`nodes`).
CREATE TABLE nodes (
    node      TEXT PRIMARY KEY,
    role      TEXT NOT NULL CHECK (role IN ('leader', 'standby')),
    last_seen TIMESTAMPTZ NOT NULL
);
