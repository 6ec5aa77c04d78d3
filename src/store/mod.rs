//! Everything gatehouse remembers, behind one interface.
//!
//! Callers use the [`Store`] trait (reads and single-statement writes) and [`Tx`] (several
//! writes that must land together, such as a message's effects and the inbox checkpoint),
//! never SQL, so a second database backend changes nothing outside this folder. SQLite is
//! the default backend ([`sqlite`]).

pub mod postgres;
pub mod retention;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::classify::Fingerprint;
use crate::config::Config;
use crate::domain::{Classification, Decision, EmailAddress, Status};
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

/// Whether `e` means the database could not be used at all (disk full, I/O error, locked,
/// gone) rather than that this particular write was wrong. Such failures are retried
/// indefinitely; nothing is given up on because of them.
pub fn is_storage_trouble(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        if let Some(rusqlite::Error::SqliteFailure(failure, _)) = cause.downcast_ref::<rusqlite::Error>() {
            use rusqlite::ErrorCode as C;
            return matches!(
                failure.code,
                C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::OutOfMemory
                    | C::ReadOnly
                    | C::SystemIoFailure
                    | C::DatabaseCorrupt
                    | C::DiskFull
                    | C::CannotOpen
                    | C::FileLockingProtocolFailed
            );
        }
        match cause.downcast_ref::<sqlx::Error>() {
            Some(
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                // A connection left in a transaction by a failed COMMIT: not the message's fault.
                | sqlx::Error::InvalidSavePointStatement,
            ) => true,
            // PostgreSQL: class 53 (insufficient resources), 57 (operator intervention), 08
            // (connection).
            Some(sqlx::Error::Database(db)) => {
                let code = db.code().map(|c| c.to_string()).unwrap_or_default();
                code.starts_with("53") || code.starts_with("57") || code.starts_with("08")
            }
            _ => false,
        }
    })
}

/// Whether `e` means a write failed for lack of space on the disk (SQLite's "database or
/// disk is full", ENOSPC, PostgreSQL's disk_full), as opposed to any other storage trouble.
pub fn is_out_of_space(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        if let Some(rusqlite::Error::SqliteFailure(failure, _)) = cause.downcast_ref::<rusqlite::Error>() {
            return failure.code == rusqlite::ErrorCode::DiskFull;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::StorageFull;
        }
        match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Io(io)) => io.kind() == std::io::ErrorKind::StorageFull,
            // SQLITE_FULL (13, and its extended codes), PostgreSQL 53100 disk_full.
            Some(sqlx::Error::Database(db)) => {
                let code = db.code().map(|c| c.to_string()).unwrap_or_default();
                code == "13" || code == "53100" || code.parse::<i32>().is_ok_and(|c| c & 0xff == 13)
            }
            _ => false,
        }
    })
}

/// One request as the CLI and templates see it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRow {
    pub id: i64,
    pub reference: String,
    pub status: Status,
    pub decision: Option<Decision>,
    pub decision_detail: Option<String>,
    pub requester: String,
    pub requester_name: Option<String>,
    pub organisation: Option<String>,
    pub via: Option<String>,
    pub subject: String,
    pub body: String,
    pub received_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub meeting_date: Option<NaiveDate>,
    pub priorities: Vec<String>,
    pub duplicate_of: Option<String>,
    pub probable_duplicate_of: Option<String>,
    pub message_count: i64,
    pub token: String,
    pub answer: bool,
    /// The intake could not stand behind the requester's address (an unverified forward):
    /// only the forwarder may be written to about this request.
    pub requester_unverified: bool,
}

impl RequestRow {
    /// Whether its personal data was removed (by retention or `gatehouse erase`): the
    /// requester is then empty, which it never is otherwise.
    pub fn is_anonymised(&self) -> bool {
        self.requester.is_empty()
    }
}

/// One message taken from the inbox, as `gatehouse messages list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub id: i64,
    pub message_id: Option<String>,
    pub received_at: Option<DateTime<Utc>>,
    pub from: Option<String>,
    pub subject: Option<String>,
    /// `None` while the message is stored but not yet processed.
    pub classification: Option<Classification>,
    pub reference: Option<String>,
    pub detail: Option<String>,
    /// Processing attempts counted so far (each counted before it starts).
    pub attempts: u32,
}

/// One entry in a request's audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub kind: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub status: Option<Status>,
}

/// Where the inbox watcher has got to in one mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxState {
    pub uidvalidity: u32,
    pub last_uid: u32,
    pub backlog_below_uid: u32,
}

/// The exact bytes of a message just fetched, with where they came from.
#[derive(Debug, Clone)]
pub struct NewRawMessage<'a> {
    pub mailbox: &'a str,
    pub uidvalidity: u32,
    pub uid: u32,
    pub dedup_key: String,
    pub message_id: Option<&'a str>,
    pub content_hash: &'a str,
    /// `inbox::dedup::core_hash`: tells a message seen again from another one that reuses
    /// its Message-ID.
    pub core_hash: &'a str,
    pub raw: &'a [u8],
    pub backlog: bool,
    pub fetched_at: DateTime<Utc>,
}

/// What `gatehouse messages retry ID` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryRequest {
    /// The message's attempts are reset; the daemon processes it again.
    Requested,
    /// No stored message has this id.
    Missing,
    /// The message is not quarantined (it was processed, or is waiting to be).
    NotQuarantined(Option<Classification>),
}

/// A message whose retry was asked for, to be taken from the database rather than the
/// mailbox (the inbox checkpoint has moved past it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryMessage {
    pub id: i64,
    pub uid: u32,
    /// Part of the backlog found at first start (logged, not answered).
    pub backlog: bool,
    pub fetched_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawSaved {
    /// Stored under this id; process it.
    New(i64),
    /// Already stored (the same Message-ID and the same message, or the same bytes) under
    /// this id. `processed` says whether its effects were applied; if not, a crash came in
    /// between and it must be processed now.
    Known { id: i64, processed: bool },
}

/// What processing made of one message.
#[derive(Debug, Clone)]
pub struct MessageOutcome {
    pub classification: Classification,
    pub received_at: Option<DateTime<Utc>>,
    pub from_address: Option<String>,
    pub from_name: Option<String>,
    pub subject: Option<String>,
    /// JSON list of attachments (name, content_type, size).
    pub attachments: Option<String>,
    pub detail: Option<String>,
    pub request_id: Option<i64>,
}

/// A request about to be created.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub reference: String,
    pub ref_year: i32,
    pub ref_seq: i64,
    pub requester: String,
    pub requester_name: Option<String>,
    pub organisation: Option<String>,
    pub via: Option<String>,
    pub subject: String,
    pub body: String,
    /// `classify::Fingerprint` of the body, for later duplicate detection.
    pub fingerprint: Vec<u8>,
    pub received_at: DateTime<Utc>,
    pub probable_duplicate_of: Option<i64>,
    pub token: String,
    pub answer: bool,
    /// See [`RequestRow::requester_unverified`].
    pub requester_unverified: bool,
}

/// What a request is compared by for duplicate detection; never changes once written, so
/// it can be kept in memory under the request's token (unique, never reused).
#[derive(Debug, Clone)]
pub struct RequestText {
    pub token: String,
    pub subject: String,
    pub fingerprint: Fingerprint,
}

/// A request that may be the same as a new one (for duplicate detection).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: i64,
    pub reference: String,
    pub requester: String,
    pub organisation: Option<String>,
    pub subject: String,
    pub status: Status,
    pub decision: Option<Decision>,
}

/// An email about to be put in the outbox: fully rendered, its Message-ID fixed.
#[derive(Debug, Clone)]
pub struct NewOutgoing {
    /// acknowledgement, forward_confirmation, notification, delivery_failure, …
    pub kind: String,
    pub request_id: Option<i64>,
    /// Without angle brackets.
    pub message_id: String,
    pub envelope_from: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub raw: Vec<u8>,
}

/// An outbox entry claimed for delivery.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub kind: String,
    pub request_id: Option<i64>,
    pub message_id: String,
    pub envelope_from: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub raw: Vec<u8>,
    /// Attempts including the one about to be made.
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
}

/// What `gatehouse status` reads.
#[derive(Debug, Clone)]
pub struct DaemonStatus {
    pub imap: String,
    pub imap_detail: Option<String>,
    pub last_seen: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub pid: Option<i64>,
    /// When the outbox last handed an email to the SMTP server.
    pub smtp_last_sent: Option<DateTime<Utc>>,
    /// The last error the outbox met sending, and when.
    pub smtp_last_error: Option<(String, DateTime<Utc>)>,
}

/// What the outbox's sender met on its last attempt, for `gatehouse status`.
#[derive(Debug, Clone, Copy)]
pub enum SmtpOutcome<'a> {
    Sent,
    Failed(&'a str),
}

/// Figures for `/metrics`, read from the database when it is scraped.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Messages taken in, by classification (processed ones only).
    pub messages: Vec<(String, i64)>,
    pub requests_by_status: Vec<(String, i64)>,
    /// Requests by the decision they carry now.
    pub decisions: Vec<(String, i64)>,
    pub outbox: OutboxCounts,
    /// When the oldest email still waiting to go was queued.
    pub outbox_oldest_pending: Option<DateTime<Utc>>,
    /// Emails waiting to go that have failed at least the number of attempts asked for.
    pub outbox_failing: i64,
    /// Seconds from each request's arrival to its acknowledgement leaving.
    pub ack_seconds: Vec<f64>,
}

/// One technical problem the operator was told about (`outbox::alerts`).
#[derive(Debug, Clone)]
pub struct AlertRow {
    pub key: String,
    pub subject: String,
    pub first_raised: DateTime<Utc>,
    pub last_sent: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// Automatic answers already on their way, as the sending limits count them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnsweredCounts {
    /// To the one person (any `+tag` of the address) since the day's start of the window.
    pub person: i64,
    /// To the one recipient domain in the same window.
    pub domain: i64,
    /// To anyone in the last hour.
    pub hour: i64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct OutboxCounts {
    pub pending: i64,
    pub failed: i64,
}

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Applies any migrations not yet applied; returns how many were.
    async fn migrate(&self) -> anyhow::Result<usize>;
    /// A cheap round trip, proving the database answers.
    async fn ping(&self) -> anyhow::Result<()>;
    /// Where the database lives, for messages.
    fn describe(&self) -> String;

    async fn list_requests(&self, filter: &RequestFilter) -> anyhow::Result<Vec<RequestRow>>;
    async fn find_request(&self, reference: &str) -> anyhow::Result<Option<RequestRow>>;
    async fn request_messages(&self, request_id: i64) -> anyhow::Result<Vec<MessageRow>>;
    async fn request_events(&self, request_id: i64) -> anyhow::Result<Vec<EventRow>>;
    async fn list_messages(&self) -> anyhow::Result<Vec<MessageRow>>;
    /// Messages filed in [from, to) as auto-replies recognised by their wording alone
    /// (`classify::BY_WORDING`), oldest first: the daily digest lists them in case a person
    /// wrote one.
    async fn auto_replies_by_wording(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<Vec<MessageRow>>;

    async fn get_meta(&self, key: &str) -> anyhow::Result<Option<String>>;
    /// Sets `key` only if it has no value yet; returns the value now held.
    async fn init_meta(&self, key: &str, value: &str) -> anyhow::Result<String>;

    async fn mailbox_state(&self, mailbox: &str) -> anyhow::Result<Option<MailboxState>>;
    /// Records a mailbox seen for the first time (or under a new UIDVALIDITY) without
    /// touching its messages.
    async fn reset_mailbox_state(&self, mailbox: &str, state: MailboxState) -> anyhow::Result<()>;

    async fn raw_message(&self, id: i64) -> anyhow::Result<Vec<u8>>;

    /// Counts one more attempt at processing the stored message `id` and commits it at once,
    /// before the attempt starts, so that an attempt which kills the process still counts.
    /// Returns the count, this attempt included.
    async fn count_attempt(&self, id: i64) -> anyhow::Result<u32>;
    /// The attempts counted so far for the stored message `id`.
    async fn attempts(&self, id: i64) -> anyhow::Result<u32>;
    /// `gatehouse messages retry ID`: a quarantined message's attempts go back to none and it
    /// is marked for the daemon to process again.
    async fn request_retry(&self, id: i64, at: DateTime<Utc>) -> anyhow::Result<RetryRequest>;
    /// Messages whose retry was asked for and that are not yet processed, oldest first.
    async fn retries_requested(&self) -> anyhow::Result<Vec<RetryMessage>>;

    /// Requests awaiting triage, oldest first (for reminders).
    async fn awaiting_triage(&self) -> anyhow::Result<Vec<RequestRow>>;
    /// Requests received in [from, to), oldest first.
    async fn received_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<Vec<RequestRow>>;
    /// Requests decided in [from, to), oldest decision first.
    async fn decided_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<Vec<RequestRow>>;
    /// Requests with this status, oldest first: at most `limit`, and how many there are.
    async fn with_status(&self, status: Status, limit: i64) -> anyhow::Result<(Vec<RequestRow>, usize)>;
    /// Requests decided `meeting` for this date.
    async fn agenda_for(&self, date: NaiveDate) -> anyhow::Result<Vec<RequestRow>>;
    /// Arrival times of every request received since `since` (for the trend chart).
    async fn arrivals_since(&self, since: DateTime<Utc>) -> anyhow::Result<Vec<DateTime<Utc>>>;
    /// The `kind` events (e.g. notes) of these requests, by request id.
    async fn events_of_kind(&self, request_ids: &[i64], kind: &str) -> anyhow::Result<Vec<(i64, EventRow)>>;
    /// When the last mailing of `kind` ended its period, if any.
    async fn last_covered(&self, kind: &str) -> anyhow::Result<Option<DateTime<Utc>>>;
    /// Whether a once-only mailing (`kind`, `period`) went already.
    async fn summary_sent(&self, kind: &str, period: &str) -> anyhow::Result<bool>;
    /// What the board has been told is on the agenda for `date`: `None` until that agenda
    /// has gone, then the requests it and any updates listed (as they are now, perhaps
    /// decided otherwise since), in the order they were told.
    async fn agenda_told(&self, date: NaiveDate) -> anyhow::Result<Option<Vec<RequestRow>>>;

    async fn set_daemon_status(
        &self,
        imap: &str,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()>;
    async fn daemon_status(&self) -> anyhow::Result<Option<DaemonStatus>>;
    /// Records the outcome of an SMTP attempt on the daemon's status row.
    async fn set_smtp_status(&self, outcome: SmtpOutcome<'_>, at: DateTime<Utc>) -> anyhow::Result<()>;
    async fn outbox_counts(&self) -> anyhow::Result<OutboxCounts>;
    /// Figures for `/metrics`; `failing_after` is the attempts after which a waiting email
    /// counts as failing.
    async fn metrics(&self, failing_after: i64) -> anyhow::Result<Metrics>;
    /// Emails waiting to be sent that have failed at least `failing_after` attempts.
    async fn outbox_failing(&self, failing_after: i64) -> anyhow::Result<i64>;
    /// The problems raised and not yet resolved: their keys and when each was last sent.
    async fn open_alerts(&self) -> anyhow::Result<Vec<(String, DateTime<Utc>)>>;
    async fn last_summary(&self) -> anyhow::Result<Option<DateTime<Utc>>>;

    /// Puts entries left `sending` by a crash back in the queue (they may go twice: at most
    /// once more).
    async fn requeue_interrupted(&self) -> anyhow::Result<u64>;
    /// Claims up to `limit` entries due at `now`, marking them `claimed`.
    async fn claim_due(&self, now: DateTime<Utc>, limit: i64) -> anyhow::Result<Vec<OutboxItem>>;
    /// Marks a claimed entry as handed to SMTP (so a crash now may mean it went).
    async fn mark_in_flight(&self, id: i64) -> anyhow::Result<()>;
    async fn mark_sent(&self, id: i64, at: DateTime<Utc>) -> anyhow::Result<()>;
    async fn mark_retry(&self, id: i64, next_attempt_at: DateTime<Utc>, error: &str) -> anyhow::Result<()>;
    async fn mark_failed(&self, id: i64, error: &str) -> anyhow::Result<()>;

    /// What a purge with these cutoffs would take, without taking it (`purge --dry-run`).
    async fn purge_preview(&self, cutoffs: Cutoffs) -> anyhow::Result<PurgeCounts>;
    /// Removes the personal data older than the cutoffs, in one transaction, and records the
    /// counts as a `purge` service event by `actor`. Never what is still needed: messages not
    /// yet processed or waiting for a retry, messages of requests still open, mail not yet
    /// sent, requests still open.
    async fn purge(&self, cutoffs: Cutoffs, actor: &str, at: DateTime<Utc>) -> anyhow::Result<PurgeCounts>;
    /// Gives the space freed by a purge back to the file system when there is enough of it.
    async fn reclaim_space(&self) -> anyhow::Result<Reclaimed>;
    /// Everything held about one person (case and any `+tag` folded, as
    /// [`EmailAddress::person`] does): for a subject access request.
    async fn person_data(&self, person: &EmailAddress) -> anyhow::Result<PersonData>;
    /// Removes one request's personal data (as retention anonymises a closed request, plus its
    /// messages' bytes and the mail about it, and cancels mail about it not yet sent),
    /// recorded as an `erased` event by `actor`. None when no request has this reference.
    async fn erase_request(
        &self,
        reference: &str,
        actor: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<Option<Erased>>;
    /// Records housekeeping that concerns no single request (an export, a backup): counts,
    /// never content.
    async fn add_service_event(
        &self,
        at: DateTime<Utc>,
        actor: &str,
        kind: &str,
        detail: &str,
    ) -> anyhow::Result<()>;
    /// The housekeeping log, oldest first.
    async fn service_events(&self) -> anyhow::Result<Vec<EventRow>>;
    /// Writes a consistent copy of the whole database into `dest` (an empty file the caller
    /// created) while the daemon may be writing, and checks the copy.
    async fn backup_to(&self, dest: &Path) -> anyhow::Result<BackupDone>;

    /// Starts a write transaction. Only one runs at a time, so a read-then-write inside it
    /// (e.g. the next reference number) cannot race another writer.
    async fn begin(&self) -> anyhow::Result<Box<dyn Tx>>;
}

/// Writes that land together or not at all. Dropping it without [`Tx::commit`] rolls back.
#[async_trait]
pub trait Tx: Send {
    // Reads as this transaction sees them (its own writes included): the inbox processes
    // several messages per transaction, and a follow-up must find the request created by
    // the message before it.
    /// Stores a message's bytes before anything can fail on them. A message stored for the first time has its first
    /// processing attempt counted in the same write (see [`Store::count_attempt`]): the
    /// caller processes it next.
    async fn save_raw(&mut self, message: &NewRawMessage<'_>) -> anyhow::Result<RawSaved>;
    async fn find_request(&mut self, reference: &str) -> anyhow::Result<Option<RequestRow>>;
    /// Requests one of whose thread Message-IDs is in `ids`, most recent first.
    async fn request_for_thread(&mut self, ids: &[String]) -> anyhow::Result<Option<RequestRow>>;
    /// The request whose reply token is `token`.
    async fn request_by_token(&mut self, token: &str) -> anyhow::Result<Option<RequestRow>>;
    /// The request a gatekeeper notification with one of these Message-IDs was about.
    async fn request_for_notification(&mut self, ids: &[String]) -> anyhow::Result<Option<RequestRow>>;
    /// Open or recent requests from this requester or organisation, most recently logged
    /// first, for duplicate detection: (id, token).
    async fn recent_requests(
        &mut self,
        requester: &str,
        organisation: Option<&str>,
        since: DateTime<Utc>,
    ) -> anyhow::Result<Vec<(i64, String)>>;
    /// What the requests with these tokens are compared by.
    async fn request_texts(&mut self, tokens: &[String]) -> anyhow::Result<Vec<RequestText>>;
    /// The requests with these ids as the gatekeeper sees them, newest first.
    async fn candidates(&mut self, ids: &[i64]) -> anyhow::Result<Vec<Candidate>>;
    /// The outbox entry that sent the message with one of these Message-IDs (to link a
    /// bounce to what bounced): (outbox id, request id, kind).
    async fn outbox_for_message_ids(
        &mut self,
        ids: &[String],
    ) -> anyhow::Result<Option<(i64, Option<i64>, String)>>;
    /// One message's work inside a larger transaction: undone alone if it fails.
    async fn savepoint(&mut self) -> anyhow::Result<()>;
    async fn release_savepoint(&mut self) -> anyhow::Result<()>;
    async fn rollback_to_savepoint(&mut self) -> anyhow::Result<()>;

    /// The next counter for `year`'s references (1, 2, …), never repeated.
    async fn next_reference_seq(&mut self, year: i32) -> anyhow::Result<i64>;
    async fn insert_request(&mut self, request: &NewRequest) -> anyhow::Result<i64>;
    async fn add_event(
        &mut self,
        request_id: i64,
        at: DateTime<Utc>,
        actor: &str,
        kind: &str,
        detail: Option<&str>,
    ) -> anyhow::Result<()>;
    async fn add_thread_id(
        &mut self,
        message_id: &str,
        request_id: i64,
        direction: &str,
    ) -> anyhow::Result<()>;
    async fn finish_message(
        &mut self,
        id: i64,
        outcome: &MessageOutcome,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()>;
    async fn set_checkpoint(
        &mut self,
        mailbox: &str,
        uidvalidity: u32,
        last_uid: u32,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()>;
    /// Writes an email to the outbox, together with whatever caused it.
    async fn enqueue(&mut self, mail: &NewOutgoing, at: DateTime<Utc>) -> anyhow::Result<i64>;
    /// Records that outbox entry `outbox_id` is an automatic answer to someone outside,
    /// keyed as the sending limits count it (see [`crate::outbox::recipients`]).
    async fn record_answered(
        &mut self,
        outbox_id: i64,
        person: &str,
        domain: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()>;
    /// The automatic answers recorded to `person` and to `domain` since `day`, and in all
    /// since `hour`: what the sending limits are checked against.
    async fn answered_counts(
        &mut self,
        person: &str,
        domain: &str,
        day: DateTime<Utc>,
        hour: DateTime<Utc>,
    ) -> anyhow::Result<AnsweredCounts>;
    /// Whether the request already has an email of `kind` (at most one acknowledgement).
    async fn has_outgoing(&mut self, request_id: i64, kind: &str) -> anyhow::Result<bool>;
    async fn mark_bounced(&mut self, outbox_id: i64, detail: &str) -> anyhow::Result<()>;
    /// Records a decision: status follows from it (PRODUCT.md), replacing any earlier one.
    #[allow(clippy::too_many_arguments)]
    async fn record_decision(
        &mut self,
        request_id: i64,
        decision: Decision,
        detail: Option<&str>,
        meeting_date: Option<NaiveDate>,
        duplicate_of: Option<i64>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()>;
    async fn add_priority(&mut self, request_id: i64, key: &str) -> anyhow::Result<()>;
    /// Sets `key` whatever it held (e.g. when a daily warning last went, written in the
    /// same transaction as the warning itself).
    async fn set_meta(&mut self, key: &str, value: &str) -> anyhow::Result<()>;
    /// The problem `key`, if it was ever raised.
    async fn alert(&mut self, key: &str) -> anyhow::Result<Option<AlertRow>>;
    /// Writes the problem `alert.key` whatever it held.
    async fn put_alert(&mut self, alert: &AlertRow) -> anyhow::Result<()>;
    /// How many problems whose key starts with `prefix` were emailed at or after `since`
    /// (resolved or not): for a cap on alerts an attacker's mail can cause.
    async fn alerts_sent_since(&mut self, prefix: &str, since: DateTime<Utc>) -> anyhow::Result<i64>;
    async fn set_status(&mut self, request_id: i64, status: Status, at: DateTime<Utc>) -> anyhow::Result<()>;
    /// Records a once-only mailing; false if it was already recorded (nothing written).
    async fn record_summary(
        &mut self,
        kind: &str,
        period: &str,
        covers: (DateTime<Utc>, DateTime<Utc>),
        outbox_id: Option<i64>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<bool>;
    /// As [`Store::agenda_told`], as this transaction sees it: the request ids only.
    async fn agenda_told_ids(&mut self, date: NaiveDate) -> anyhow::Result<Option<Vec<i64>>>;
    /// Records what the board has just been told about the agenda for `date` (the agenda or
    /// an update, outbox entry `outbox_id`): the `on` requests are on it, the `off` ones no
    /// longer. Written with the outbox entry, so the next update is the difference from
    /// exactly what went.
    async fn record_agenda_told(
        &mut self,
        date: NaiveDate,
        on: &[i64],
        off: &[i64],
        outbox_id: Option<i64>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()>;
    async fn commit(self: Box<Self>) -> anyhow::Result<()>;
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_connection_stuck_in_a_transaction_is_storage_trouble_not_the_messages_fault() {
        let stuck =
            anyhow::Error::new(sqlx::Error::InvalidSavePointStatement).context("Cannot start a transaction");
        assert!(super::is_storage_trouble(&stuck));
        let full = anyhow::Error::new(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        ))
        .context("Cannot commit");
        assert!(super::is_storage_trouble(&full));
        let constraint = anyhow::Error::new(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            None,
        ));
        assert!(!super::is_storage_trouble(&constraint));
        assert!(!super::is_storage_trouble(&anyhow::anyhow!("Bad recipient")));
        assert!(super::is_out_of_space(&full));
        assert!(!super::is_out_of_space(&constraint));
        let enospc = anyhow::Error::new(std::io::Error::from_raw_os_error(28)).context("Cannot write");
        assert!(super::is_out_of_space(&enospc));
    }
}
