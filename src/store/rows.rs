//! The rows the store takes and gives: requests, messages, events, outbox entries and the
//! figures read from them, in domain types (no backend's notions).

use chrono::{DateTime, NaiveDate, Utc};

use super::{EventKind, MessageId, OutboxId, RequestId};
use crate::classify::Fingerprint;
use crate::domain::{Classification, Decision, Status};

/// One request as the CLI and templates see it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRow {
    pub id: RequestId,
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
    pub id: MessageId,
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
    /// As written: an [`Actor`](super::Actor)'s text (emptied when the request's personal
    /// data was removed).
    pub actor: String,
    pub kind: EventKind,
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
    pub id: MessageId,
    pub uid: u32,
    /// Part of the backlog found at first start (logged, not answered).
    pub backlog: bool,
    pub fetched_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawSaved {
    /// Stored under this id; process it.
    New(MessageId),
    /// Already stored (the same Message-ID and the same message, or the same bytes) under
    /// this id. `processed` says whether its effects were applied; if not, a crash came in
    /// between and it must be processed now.
    Known { id: MessageId, processed: bool },
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
    pub request_id: Option<RequestId>,
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
    pub fingerprint: Fingerprint,
    pub received_at: DateTime<Utc>,
    pub probable_duplicate_of: Option<RequestId>,
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
    pub id: RequestId,
    pub reference: String,
    pub requester: String,
    pub organisation: Option<String>,
    pub subject: String,
    pub status: Status,
    pub decision: Option<Decision>,
}

/// The latest email of one kind about a request: whom it went to and its Message-ID, so a
/// later email can thread on it and go to the same people.
#[derive(Debug, Clone)]
pub struct LastOutgoing {
    /// Without angle brackets.
    pub message_id: String,
    pub recipients: Vec<String>,
    /// `pending`, `sent`, `failed`, `bounced`, …
    pub status: String,
    pub created_at: DateTime<Utc>,
}

/// An email about to be put in the outbox: fully rendered, its Message-ID fixed.
#[derive(Debug, Clone)]
pub struct NewOutgoing {
    /// acknowledgement, forward_confirmation, notification, delivery_failure, …
    pub kind: String,
    pub request_id: Option<RequestId>,
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
    pub id: OutboxId,
    pub kind: String,
    pub request_id: Option<RequestId>,
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

/// One technical problem the operator was told about (`mailings::alerts`).
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

/// A file a request's requester (or the forwarder gatehouse answered) sent with it, kept for
/// `circulate` (see `migrations/sqlite/20261207000004_papers.sql`).
#[derive(Debug, Clone, PartialEq)]
pub struct PaperRow {
    /// Its own id, for [`super::Tx::mark_papers_circulated`].
    pub id: i64,
    /// The stored message that brought it.
    pub message_id: MessageId,
    /// The cleaned file name, as the gatekeeper's notification named it.
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
    pub received_at: DateTime<Utc>,
    /// When it last went to the board, if ever.
    pub circulated_at: Option<DateTime<Utc>>,
}

/// The weekly summary's paper figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PaperCounts {
    /// Requests whose papers went to the board in the period.
    pub circulated: usize,
    /// Requests decided `paper`, still scheduled, for which no paper has come.
    pub awaited: usize,
}
