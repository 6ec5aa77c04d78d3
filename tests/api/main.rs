//! Integration tests: one binary, run against the real local mail stack
//! (`deploy/local/mailstack`, Dovecot + Postfix on loopback) and a fresh SQLite database per
//! test. `helpers` starts the stack once and gives each test its own mail users.

mod agenda;
mod attack;
mod attack2;
mod attack3;
mod bench;
mod channel;
mod classify;
mod cli;
mod db_copy;
mod doors;
mod failover;
mod faults;
mod helpers;
mod hostile;
mod inbox;
mod meetings;
mod monitoring;
mod oauth;
mod outbox;
mod paper;
mod quarantine;
mod recipients;
mod retention;
mod security;
mod summary;
mod triage;
