//! Intake: one stored message, from its bytes to its effects. The pipeline reads in order:
//! the inbox stores the raw bytes, [`Intake::parse_group`] classifies them (on a thread of
//! its own), [`route`] settles where the message goes — a new request, a follow-up, a
//! forward, a gatekeeper's reply, a bounce of our mail, automated or unreadable mail —
//! reading the store but writing nothing, and [`act`] writes what that route causes. The
//! emails an arrival causes are drafted by [`replies`]; probable duplicates are found by
//! [`duplicates`].
//!
//! Everything one message causes — the request, its events, its thread, the message's
//! outcome and the inbox checkpoint — is written in one transaction, so a crash at any
//! point either applied all of it or none of it, and the message is simply processed again.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::classify::{self, Parsed};
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::Classification;
use crate::mailings::recipients::Recipients;
use crate::store::{MessageId, Tx};
use crate::templates::Templates;
use crate::triage::Triage;
use replies::Replies;

pub mod act;
pub mod doors;
pub mod duplicates;
#[cfg(feature = "fault-injection")]
pub mod fault_injection;
pub mod replies;
pub mod route;

pub use act::quarantine::QUARANTINE_ALERTS_PER_DAY;

/// Where a message sits in the mailbox, so its checkpoint moves with its effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub mailbox: String,
    pub uidvalidity: u32,
    pub uid: u32,
}

/// What parsing made of a message.
pub type ParseResult = Result<Prepared, classify::ParseError>;

/// A group's raw messages handed back, each with what parsing made of it (`None`: over
/// `max_message_bytes`, not parsed).
pub type ParsedGroup = (Vec<Vec<u8>>, Vec<Option<ParseResult>>);

/// A parsed message, with the fingerprint a new request from it would be compared by
/// (duplicate detection) worked out on the parser's thread rather than on the path every
/// message waits on.
#[derive(Debug)]
pub struct Prepared {
    pub parsed: Parsed,
    /// Of the forwarded text for a forward, else of the body; none for automated mail.
    fingerprint: Option<classify::Fingerprint>,
    /// Reply keys quoted in the text (a gatekeeper's reply to a notification), scanned here
    /// rather than inside the store transaction.
    reply_keys: Vec<String>,
}

impl Prepared {
    fn new(parsed: Parsed) -> Self {
        let fingerprint = parsed.automated.is_none().then(|| {
            classify::Fingerprint::of(parsed.forwarded.as_ref().map_or(&parsed.body_text, |f| &f.body_text))
        });
        let reply_keys = crate::triage::reply_keys_in(&parsed.body_text, parsed.body_html.as_deref());
        Self { parsed, fingerprint, reply_keys }
    }
}

/// Handles the messages the inbox stores: parses them, routes each, and writes its effects.
#[derive(Debug)]
pub struct Intake {
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    /// Whom automatic answers may go to.
    recipients: Recipients,
    replies: Replies,
    triage: Triage,
    duplicates: duplicates::Duplicates,
    /// The words of the alerts written here (a message set aside or not logged).
    templates: Arc<Templates>,
    /// Wakes the outbox sender as soon as something is queued.
    wake: Arc<tokio::sync::Notify>,
}

impl Intake {
    pub fn new(
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        templates: Arc<Templates>,
        wake: Arc<tokio::sync::Notify>,
    ) -> Self {
        let recipients = Recipients::new(config.clone());
        let replies = Replies::new(config.clone(), templates.clone());
        let triage = Triage::new(config.clone(), templates.clone());
        let duplicates = duplicates::Duplicates::new();
        Self { config, clock, recipients, replies, triage, duplicates, templates, wake }
    }

    /// Moves the checkpoint past a message already processed (seen again after a restart or a
    /// UIDVALIDITY change).
    pub async fn advance(&self, tx: &mut dyn Tx, checkpoint: &Checkpoint) -> anyhow::Result<()> {
        Ok(tx
            .set_checkpoint(&checkpoint.mailbox, checkpoint.uidvalidity, checkpoint.uid, self.clock.now())
            .await?)
    }

    /// Parses a group of messages, on a thread of its own (CPU work, off the async workers;
    /// one thread for the group, since starting one per message cost more than parsing
    /// most of them). A message over `max_message_bytes` is not parsed: `None`.
    pub async fn parse_group(&self, raws: Vec<Vec<u8>>) -> ParsedGroup {
        let own = self.recipients.own_addresses();
        let domain = self.config.smtp.from.address.domain().to_string();
        let limit = self.config.imap.max_message_bytes;
        let attach_max = self.config.attach_max_bytes;
        let count = raws.len();
        let job = tokio::task::spawn_blocking(move || {
            let ctx = classify::Context { own_addresses: &own, own_message_id_domain: Some(&domain) };
            let wanted: Vec<&[u8]> = raws.iter().filter(|r| r.len() <= limit).map(Vec::as_slice).collect();
            let mut parsed =
                classify::parse_many(&wanted, &ctx, attach_max).into_iter().map(|p| p.map(Prepared::new));
            let results = raws.iter().map(|r| if r.len() <= limit { parsed.next() } else { None }).collect();
            (raws, results)
        });
        match job.await {
            Ok(done) => done,
            // The parser's own thread catches its panics; this is the blocking pool failing.
            Err(e) => {
                let why = format!("the mail parser could not run: {e}");
                (Vec::new(), (0..count).map(|_| Some(Err(classify::ParseError::new(why.clone())))).collect())
            }
        }
    }

    /// Processes the stored message `id` (whose bytes are `raw`, and `parsed` what
    /// [`Intake::parse_group`] made of them) inside `tx`, which the caller commits
    /// together with the checkpoint (the inbox commits several messages at a time); then
    /// call [`Intake::committed`]. `log_only` is set for the backlog found at first
    /// start: logged as requests, never answered.
    ///
    /// Where the message goes is settled first ([`route`], reading the store only), then
    /// that route's handler ([`act`]) writes its effects.
    pub async fn process(
        &self,
        tx: &mut dyn Tx,
        id: MessageId,
        raw: &[u8],
        parsed: Option<&ParseResult>,
        log_only: bool,
        internal_date: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Classification> {
        #[cfg(feature = "fault-injection")]
        fault_injection::check(raw)?;
        let message = act::Message { id, raw, log_only, internal_date, now: self.clock.now() };
        let route = match parsed {
            None => route::Route::Unlogged(route::Unlogged::TooLarge),
            Some(Err(e)) => route::Route::Unlogged(route::Unlogged::Unreadable(e.to_string())),
            Some(Ok(prepared)) => {
                let known =
                    route::look_up(tx, &self.config, &self.triage, prepared, raw, message.now).await?;
                route::decide(&self.config, &self.recipients, prepared, raw, known)
            }
        };
        let prepared = parsed.and_then(|p| p.as_ref().ok());
        self.act(tx, &message, prepared, route).await
    }

    /// Tells the outbox that a transaction holding new emails was committed.
    pub fn committed(&self) {
        self.wake.notify_one();
    }
}
