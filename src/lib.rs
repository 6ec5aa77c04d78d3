//! gatehouse: the single point of access for local general practice.
//!
//! The modules follow the path of an approach through the system:
//!
//! - [`inbox`] watches the shared mailbox (IMAP IDLE) and stores every message raw, once;
//! - [`classify`] works out what a message is (new, follow-up, forward, automated…);
//! - [`intake`] settles where each stored message goes ([`intake::route`], reading only) and
//!   then writes what that causes ([`intake::act`]): requests with references, follow-ups,
//!   a gatekeeper's decision ([`triage`]), an audit log;
//! - [`mailings`] builds every email gatehouse sends (drafts, whom it may write to, request
//!   views, the operator's alerts), in words from [`templates`]; [`outbox`] queues and
//!   delivers them; [`calendar`] writes the invitation a `meeting` decision sends, [`channel`]
//!   the text a `message` decision posts to the group's channel;
//! - [`mail`] speaks SMTP; [`oauth`] gets the OAuth2 tokens IMAP and SMTP log in with;
//! - [`schedule`] decides when time-driven mail is due; [`jobs`] is every schedule the daemon
//!   keeps, in one shape (summary, agendas, reminders, retention, a client secret's expiry);
//! - [`summary`] writes the board's weekly summary and agendas;
//! - [`store`] remembers everything (SQLite by default); [`retention`] says for how long;
//! - [`daemon`] runs those as tasks until told to stop, [`disk`] keeps room to report a full
//!   disk; [`cli`] is the command line;
//! - [`clock`], [`backoff`], [`domain`], [`config`], [`secret`], [`tls`], [`logging`],
//!   [`progress`] serve them all.

pub mod backoff;
pub mod calendar;
pub mod channel;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod disk;
pub mod domain;
pub mod inbox;
pub mod intake;
pub mod jobs;
pub mod logging;
pub mod mail;
pub mod mailings;
pub mod oauth;
pub mod outbox;
pub mod progress;
pub mod retention;
pub mod schedule;
pub mod secret;
pub mod store;
pub mod summary;
pub mod templates;
pub mod tls;
pub mod triage;
