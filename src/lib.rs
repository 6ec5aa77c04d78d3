//! gatehouse: the single point of access for local general practice.
//!
//! The modules follow the path of an approach through the system:
//!
//! - [`inbox`] watches the shared mailbox (IMAP IDLE) and stores every message raw, once;
//! - [`classify`] works out what a message is (new, follow-up, forward, automated…);
//! - [`requests`] turns messages into requests with references and an audit log;
//! - [`mail`] speaks SMTP; [`oauth`] gets the OAuth2 tokens IMAP and SMTP log in with;
//! - [`schedule`] decides when time-driven mail is due; [`jobs`] are the daily checks apart
//!   from the pipeline (a client secret about to lapse);
//! - [`store`] remembers everything (SQLite by default); [`retention`] says for how long;
//! - [`daemon`] runs those as tasks until told to stop, [`disk`] keeps room to report a full
//!   disk; [`cli`] is the command line.

pub mod channel;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod disk;
pub mod domain;
pub mod inbox;
pub mod jobs;
pub mod logging;
pub mod mail;
pub mod oauth;
pub mod outbox;
pub mod progress;
pub mod requests;
pub mod retention;
pub mod schedule;
pub mod secret;
pub mod store;
pub mod summary;
pub mod templates;
pub mod tls;
pub mod triage;
