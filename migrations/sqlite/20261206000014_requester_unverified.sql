-- Whether the intake could not stand behind the requester's address: the approach came as a
-- forward from someone outside [members], or from a member's address the receiving server
-- did not vouch for. A later decision's outcome then goes to the forwarder, never to the
-- address the forward named. Rows from before this column keep the membership rule alone.
ALTER TABLE requests ADD COLUMN requester_unverified INTEGER NOT NULL DEFAULT 0;
