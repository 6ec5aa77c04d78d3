//! Everything gatehouse remembers, behind one interface.
//!
//! Callers use the [`Store`] trait (reads and single-statement writes) and [`Tx`] (several
//! writes that must land together, such as a message's effects and the inbox checkpoint),
//! never SQL. Both are grouped by aggregate (requests, inbox state, outbox, ledger,
//! retention) and speak the domain: typed ids ([`RequestId`], [`MessageId`], [`OutboxId`]),
//! what the ledger records as enums ([`EventKind`], [`Actor`], [`ThreadDirection`]), the
//! rows in `rows.rs`, times passed in by the caller (the store reads no clock), and failures
//! as the store's own [`StoreError`] (`Unavailable`, with a full disk told apart,
//! `Conflict`, `NotFound`), never a driver's error. A step of a transaction that may be
//! undone alone is [`Tx::begin_step`]/[`Tx::end_step`]. So a second backend implements the
//! two traits needing nothing from SQLite. SQLite is the default backend ([`sqlite`]).

pub mod copy;
mod error;
mod ids;
mod kinds;
pub mod postgres;
pub mod retention;
mod rows;
pub mod sqlite;

pub use error::{StoreError, StoreResult, is_out_of_space, is_storage_trouble};
pub use ids::{MessageId, OutboxId, RequestId};
pub use kinds::{Actor, EventKind, ThreadDirection};
pub use rows::*;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::config::Config;
use crate::domain::{Decision, EmailAddress, Status};
use retention::{BackupDone, Cutoffs, Erased, PersonData, PurgeCounts, Reclaimed};

/// A shared handle to the store; cheap to clone.
pub type SharedStore = Arc<dyn Store>;

/// Opens the database the config names (SQLite in `data_dir` unless `database_url` says
/// otherwise) and brings its schema up to date.
pub async fn open(config: &Config) -> anyhow::Result<SharedStore> {
    match &config.service.database {
        None => {
            let store = sqlite::SqliteStore::open_in(&config.service.data_dir).await?;
            Ok(Arc::new(store))
        }
        Some(db) => Ok(Arc::new(postgres::PgStore::open(db).await?)),
    }
}

/// Opens a SQLite database file directly (tests and tools).
pub async fn open_sqlite_file(path: &Path) -> anyhow::Result<SharedStore> {
    Ok(Arc::new(sqlite::SqliteStore::open_file(path).await.context("Cannot open the database")?))
}

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    // The database itself.

    /// Applies any migrations not yet applied; returns how many were.
    async fn migrate(&self) -> StoreResult<usize>;

    /// A cheap round trip, proving the database answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Where the database lives, for messages.
    fn describe(&self) -> String;

    /// Starts a write transaction. Only one runs at a time, so a read-then-write inside it
    /// (e.g. the next reference number) cannot race another writer.
    async fn begin(&self) -> StoreResult<Box<dyn Tx>>;

    // Requests.

    async fn list_requests(&self, filter: &RequestFilter) -> StoreResult<Vec<RequestRow>>;

    async fn find_request(&self, reference: &str) -> StoreResult<Option<RequestRow>>;

    /// Requests awaiting triage, oldest first (for reminders).
    async fn awaiting_triage(&self) -> StoreResult<Vec<RequestRow>>;

    /// Requests received in [from, to), oldest first.
    async fn received_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<RequestRow>>;

    /// Requests decided in [from, to), oldest decision first.
    async fn decided_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<RequestRow>>;

    /// Requests with this status, oldest first: at most `limit`, and how many there are.
    async fn with_status(&self, status: Status, limit: i64) -> StoreResult<(Vec<RequestRow>, usize)>;

    /// Requests decided `meeting` for this date.
    async fn agenda_for(&self, date: NaiveDate) -> StoreResult<Vec<RequestRow>>;

    /// Arrival times of every request received since `since` (for the trend chart).
    async fn arrivals_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<DateTime<Utc>>>;

    // Inbox state: stored messages, checkpoints, attempts, retries and quarantine.

    async fn list_messages(&self) -> StoreResult<Vec<MessageRow>>;

    async fn request_messages(&self, request_id: RequestId) -> StoreResult<Vec<MessageRow>>;

    /// Messages filed in [from, to) as auto-replies recognised by their wording alone
    /// (`classify::BY_WORDING`), oldest first: the daily digest lists them in case a person
    /// wrote one.
    async fn auto_replies_by_wording(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<MessageRow>>;

    async fn mailbox_state(&self, mailbox: &str) -> StoreResult<Option<MailboxState>>;

    /// Records a mailbox seen for the first time (or under a new UIDVALIDITY) without
    /// touching its messages.
    async fn reset_mailbox_state(
        &self,
        mailbox: &str,
        state: MailboxState,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    async fn raw_message(&self, id: MessageId) -> StoreResult<Vec<u8>>;

    /// Counts one more attempt at processing the stored message `id` and commits it at once,
    /// before the attempt starts, so that an attempt which kills the process still counts.
    /// Returns the count, this attempt included.
    async fn count_attempt(&self, id: MessageId) -> StoreResult<u32>;

    /// The attempts counted so far for the stored message `id`.
    async fn attempts(&self, id: MessageId) -> StoreResult<u32>;

    /// `gatehouse messages retry ID`: a quarantined message's attempts go back to none and it
    /// is marked for the daemon to process again.
    async fn request_retry(&self, id: MessageId, at: DateTime<Utc>) -> StoreResult<RetryRequest>;

    /// Messages whose retry was asked for and that are not yet processed, oldest first.
    async fn retries_requested(&self) -> StoreResult<Vec<RetryMessage>>;

    // Outbox.

    /// Puts entries left `sending` by a crash back in the queue (they may go twice: at most
    /// once more).
    async fn requeue_interrupted(&self) -> StoreResult<u64>;

    /// Claims up to `limit` entries due at `now`, marking them `claimed`.
    async fn claim_due(&self, now: DateTime<Utc>, limit: i64) -> StoreResult<Vec<OutboxItem>>;

    /// Marks a claimed entry as handed to SMTP (so a crash now may mean it went).
    async fn mark_in_flight(&self, id: OutboxId) -> StoreResult<()>;

    async fn mark_sent(&self, id: OutboxId, at: DateTime<Utc>) -> StoreResult<()>;

    async fn mark_retry(&self, id: OutboxId, next_attempt_at: DateTime<Utc>, error: &str) -> StoreResult<()>;

    async fn mark_failed(&self, id: OutboxId, error: &str) -> StoreResult<()>;

    async fn outbox_counts(&self) -> StoreResult<OutboxCounts>;

    /// Emails waiting to be sent that have failed at least `failing_after` attempts.
    async fn outbox_failing(&self, failing_after: i64) -> StoreResult<i64>;

    /// The latest email of `kind` about a request (what a follow-up threads on), if any.
    async fn last_outgoing(&self, request_id: RequestId, kind: &str) -> StoreResult<Option<LastOutgoing>>;

    // Ledger: events, meta values, the daemon's status, alerts, figures, mailings sent.

    async fn request_events(&self, request_id: RequestId) -> StoreResult<Vec<EventRow>>;

    /// The `kind` events (e.g. notes) of these requests, by request id.
    async fn events_of_kind(
        &self,
        request_ids: &[RequestId],
        kind: EventKind,
    ) -> StoreResult<Vec<(RequestId, EventRow)>>;

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>>;

    /// Sets `key` only if it has no value yet; returns the value now held.
    async fn init_meta(&self, key: &str, value: &str) -> StoreResult<String>;

    async fn set_daemon_status(
        &self,
        imap: &str,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    async fn daemon_status(&self) -> StoreResult<Option<DaemonStatus>>;

    /// Records the outcome of an SMTP attempt on the daemon's status row.
    async fn set_smtp_status(&self, outcome: SmtpOutcome<'_>, at: DateTime<Utc>) -> StoreResult<()>;

    /// Figures for `/metrics`; `failing_after` is the attempts after which a waiting email
    /// counts as failing.
    async fn metrics(&self, failing_after: i64) -> StoreResult<Metrics>;

    /// The problems raised and not yet resolved: their keys and when each was last sent.
    async fn open_alerts(&self) -> StoreResult<Vec<(String, DateTime<Utc>)>>;

    async fn last_summary(&self) -> StoreResult<Option<DateTime<Utc>>>;

    /// When the last mailing of `kind` ended its period, if any.
    async fn last_covered(&self, kind: &str) -> StoreResult<Option<DateTime<Utc>>>;

    /// Whether a once-only mailing (`kind`, `period`) went already.
    async fn summary_sent(&self, kind: &str, period: &str) -> StoreResult<bool>;

    /// What the board has been told is on the agenda for `date`: `None` until that agenda
    /// has gone, then the requests it and any updates listed (as they are now, perhaps
    /// decided otherwise since), in the order they were told.
    async fn agenda_told(&self, date: NaiveDate) -> StoreResult<Option<Vec<RequestRow>>>;

    // Retention, subject access, erasure and backup.

    /// What a purge with these cutoffs would take, without taking it (`purge --dry-run`).
    async fn purge_preview(&self, cutoffs: Cutoffs) -> StoreResult<PurgeCounts>;

    /// Removes the personal data older than the cutoffs, in one transaction, and records the
    /// counts as a `purge` service event by `actor`. Never what is still needed: messages not
    /// yet processed or waiting for a retry, messages of requests still open, mail not yet
    /// sent, requests still open.
    async fn purge(&self, cutoffs: Cutoffs, actor: Actor, at: DateTime<Utc>) -> StoreResult<PurgeCounts>;

    /// Gives the space freed by a purge back to the file system when there is enough of it.
    async fn reclaim_space(&self) -> StoreResult<Reclaimed>;

    /// Everything held about one person (case and any `+tag` folded, as
    /// [`EmailAddress::person`] does): for a subject access request.
    async fn person_data(&self, person: &EmailAddress) -> StoreResult<PersonData>;

    /// Removes one request's personal data (as retention anonymises a closed request, plus its
    /// messages' bytes and the mail about it, and cancels mail about it not yet sent),
    /// recorded as an `erased` event by `actor`. None when no request has this reference.
    async fn erase_request(
        &self,
        reference: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<Erased>>;

    /// Records housekeeping that concerns no single request (an export, a backup): counts,
    /// never content.
    async fn add_service_event(
        &self,
        at: DateTime<Utc>,
        actor: Actor,
        kind: EventKind,
        detail: &str,
    ) -> StoreResult<()>;

    /// The housekeeping log, oldest first.
    async fn service_events(&self) -> StoreResult<Vec<EventRow>>;

    /// Writes a consistent copy of the whole database into `dest` (an empty file the caller
    /// created) while the daemon may be writing, and checks the copy.
    async fn backup_to(&self, dest: &Path) -> StoreResult<BackupDone>;

    // Papers (the `paper` decision and `circulate`).

    /// Papers circulated in [from, to) (counted by request) and papers still awaited now.
    async fn paper_counts(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<PaperCounts>;
}

/// Writes that land together or not at all. Dropping it without [`Tx::commit`] rolls back.
///
/// Its reads see the transaction's own writes: the inbox processes several messages per
/// transaction, and a follow-up must find the request created by the message before it.
#[async_trait]
pub trait Tx: Send {
    // Steps and the end of the transaction.

    /// Opens a step of this transaction (one message's work inside a larger transaction)
    /// that can be undone alone; steps do not nest.
    async fn begin_step(&mut self) -> StoreResult<Step>;

    /// Ends `step`: keeps its writes, or undoes them and only them (`keep` false), and the
    /// transaction goes on either way.
    async fn end_step(&mut self, step: Step, keep: bool) -> StoreResult<()>;

    /// Makes the writes durable together; if it fails, none of them is.
    async fn commit(self: Box<Self>) -> StoreResult<()>;

    // Requests.

    /// The next counter for `year`'s references (1, 2, …), never repeated.
    async fn next_reference_seq(&mut self, year: i32) -> StoreResult<i64>;

    /// Creates the request, logged at `at`.
    async fn insert_request(&mut self, request: &NewRequest, at: DateTime<Utc>) -> StoreResult<RequestId>;

    async fn find_request(&mut self, reference: &str) -> StoreResult<Option<RequestRow>>;

    /// Requests one of whose thread Message-IDs is in `ids`, most recent first.
    async fn request_for_thread(&mut self, ids: &[String]) -> StoreResult<Option<RequestRow>>;

    /// The request whose reply token is `token`.
    async fn request_by_token(&mut self, token: &str) -> StoreResult<Option<RequestRow>>;

    /// The request a gatekeeper notification with one of these Message-IDs was about.
    async fn request_for_notification(&mut self, ids: &[String]) -> StoreResult<Option<RequestRow>>;

    /// Open or recent requests from this requester or organisation, most recently logged
    /// first, for duplicate detection: (id, token).
    async fn recent_requests(
        &mut self,
        requester: &str,
        organisation: Option<&str>,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<(RequestId, String)>>;

    /// What the requests with these tokens are compared by.
    async fn request_texts(&mut self, tokens: &[String]) -> StoreResult<Vec<RequestText>>;

    /// The requests with these ids as the gatekeeper sees them, newest first.
    async fn candidates(&mut self, ids: &[RequestId]) -> StoreResult<Vec<Candidate>>;

    /// Records a decision: status follows from it (PRODUCT.md), replacing any earlier one.
    #[allow(clippy::too_many_arguments)]
    async fn record_decision(
        &mut self,
        request_id: RequestId,
        decision: Decision,
        detail: Option<&str>,
        meeting_date: Option<NaiveDate>,
        duplicate_of: Option<RequestId>,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    async fn add_priority(&mut self, request_id: RequestId, key: &str) -> StoreResult<()>;

    async fn set_status(
        &mut self,
        request_id: RequestId,
        status: Status,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    async fn add_thread_id(
        &mut self,
        message_id: &str,
        request_id: RequestId,
        direction: ThreadDirection,
    ) -> StoreResult<()>;

    // Inbox state.

    /// Stores a message's bytes before anything can fail on them. A message stored for the first time has its first
    /// processing attempt counted in the same write (see [`Store::count_attempt`]): the
    /// caller processes it next.
    async fn save_raw(&mut self, message: &NewRawMessage<'_>) -> StoreResult<RawSaved>;

    async fn finish_message(
        &mut self,
        id: MessageId,
        outcome: &MessageOutcome,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    async fn set_checkpoint(
        &mut self,
        mailbox: &str,
        uidvalidity: u32,
        last_uid: u32,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    // Outbox.

    /// Writes an email to the outbox, together with whatever caused it.
    async fn enqueue(&mut self, mail: &NewOutgoing, at: DateTime<Utc>) -> StoreResult<OutboxId>;
    /// Gives outbox entry `id` up as failed, together with the notice that says so.
    async fn mark_failed(&mut self, id: OutboxId, error: &str) -> StoreResult<()>;

    /// Records that outbox entry `outbox_id` is an automatic answer to someone outside,
    /// keyed as the sending limits count it (see [`crate::mailings::recipients`]).
    async fn record_answered(
        &mut self,
        outbox_id: OutboxId,
        person: &str,
        domain: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// The automatic answers recorded to `person` and to `domain` since `day`, and in all
    /// since `hour`: what the sending limits are checked against.
    async fn answered_counts(
        &mut self,
        person: &str,
        domain: &str,
        day: DateTime<Utc>,
        hour: DateTime<Utc>,
    ) -> StoreResult<AnsweredCounts>;

    /// Whether the request already has an email of `kind` (at most one acknowledgement).
    async fn has_outgoing(&mut self, request_id: RequestId, kind: &str) -> StoreResult<bool>;

    async fn mark_bounced(&mut self, outbox_id: OutboxId, detail: &str) -> StoreResult<()>;

    /// The outbox entry that sent the message with one of these Message-IDs (to link a
    /// bounce to what bounced): (outbox id, request id, kind).
    async fn outbox_for_message_ids(
        &mut self,
        ids: &[String],
    ) -> StoreResult<Option<(OutboxId, Option<RequestId>, String)>>;

    // Ledger.

    async fn add_event(
        &mut self,
        request_id: RequestId,
        at: DateTime<Utc>,
        actor: Actor,
        kind: EventKind,
        detail: Option<&str>,
    ) -> StoreResult<()>;

    /// Sets `key` whatever it held (e.g. when a daily warning last went, written in the
    /// same transaction as the warning itself).
    async fn set_meta(&mut self, key: &str, value: &str) -> StoreResult<()>;

    /// The problem `key`, if it was ever raised.
    async fn alert(&mut self, key: &str) -> StoreResult<Option<AlertRow>>;

    /// Writes the problem `alert.key` whatever it held.
    async fn put_alert(&mut self, alert: &AlertRow) -> StoreResult<()>;

    /// How many problems whose key starts with `prefix` were emailed at or after `since`
    /// (resolved or not): for a cap on alerts an attacker's mail can cause.
    async fn alerts_sent_since(&mut self, prefix: &str, since: DateTime<Utc>) -> StoreResult<i64>;

    /// Records a once-only mailing; false if it was already recorded (nothing written).
    async fn record_summary(
        &mut self,
        kind: &str,
        period: &str,
        covers: (DateTime<Utc>, DateTime<Utc>),
        outbox_id: Option<OutboxId>,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// As [`Store::agenda_told`], as this transaction sees it: the request ids only.
    async fn agenda_told_ids(&mut self, date: NaiveDate) -> StoreResult<Option<Vec<RequestId>>>;

    /// Records what the board has just been told about the agenda for `date` (the agenda or
    /// an update, outbox entry `outbox_id`): the `on` requests are on it, the `off` ones no
    /// longer. Written with the outbox entry, so the next update is the difference from
    /// exactly what went.
    async fn record_agenda_told(
        &mut self,
        date: NaiveDate,
        on: &[RequestId],
        off: &[RequestId],
        outbox_id: Option<OutboxId>,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    // Papers (the `paper` decision and `circulate`).

    /// Keeps `file`, sent with request `request_id` in stored message `message_id`, as one of
    /// its papers (gone with the message's bytes).
    async fn add_paper(
        &mut self,
        request_id: RequestId,
        message_id: MessageId,
        file: &crate::classify::AttachmentBody,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// The request's papers, oldest first.
    async fn papers(&mut self, request_id: RequestId) -> StoreResult<Vec<PaperRow>>;

    /// Records that the papers with these ids went to the board at `at`.
    async fn mark_papers_circulated(&mut self, ids: &[i64], at: DateTime<Utc>) -> StoreResult<()>;
}

/// A step of a transaction, opened by [`Tx::begin_step`]: hand it back to [`Tx::end_step`]
/// to keep or undo it. Only the store can make one.
#[must_use = "a step must be ended with Tx::end_step"]
#[derive(Debug)]
pub struct Step(());

impl Step {
    /// For the backends: the step they just opened.
    fn opened() -> Self {
        Step(())
    }
}
