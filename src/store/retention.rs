//! What the store answers for retention, subject access, erasure and backup: the types the
//! [`super::Store`] methods for them take and return, whatever the backend.

use chrono::{DateTime, Utc};

use super::{EventRow, MessageRow, RequestRow};

/// The instants before which each kind of personal data goes (see `records::Policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Raw bytes (attachments included) of messages taken in before this.
    pub raw_messages: DateTime<Utc>,
    /// The bytes and recipients of emails sent before this, and the log of whom gatehouse
    /// answered automatically.
    pub sent_mail: DateTime<Utc>,
    /// Requests closed (last changed) before this are anonymised.
    pub closed_requests: DateTime<Utc>,
}

/// How many items of one kind a purge takes (or would take), and the oldest and newest of
/// them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Affected {
    pub count: i64,
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
}

/// What a purge takes, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    /// Stored incoming messages whose raw bytes (and attachments) go; a message that belongs
    /// to no request also loses its sender, subject and attachment names.
    pub raw_messages: Affected,
    /// Sent (or given up) emails whose bytes, subject and recipients go.
    pub sent_mail: Affected,
    /// Records of automatic answers (person and domain), kept for the sending limits.
    pub answer_records: Affected,
    /// Closed requests anonymised.
    pub closed_requests: Affected,
}

impl PurgeCounts {
    /// Whether the purge takes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.raw_messages.count == 0
            && self.sent_mail.count == 0
            && self.answer_records.count == 0
            && self.closed_requests.count == 0
    }
}

/// The database's size on disk around a space reclaim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reclaimed {
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// How the space was given back: "incremental", "vacuum" or "none".
    pub how: &'static str,
}

/// One email gatehouse sent (or queued), as a subject access export shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMail {
    pub id: i64,
    pub kind: String,
    pub message_id: String,
    pub reference: Option<String>,
    pub recipients: Vec<String>,
    pub subject: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// Empty once retention or an erasure removed the bytes.
    pub raw: Vec<u8>,
}

/// One incoming message, with its bytes while they are held.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldMessage {
    pub row: MessageRow,
    pub fetched_at: DateTime<Utc>,
    pub raw: Option<Vec<u8>>,
}

/// One request with its audit log, as a subject access export shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldRequest {
    pub request: RequestRow,
    pub events: Vec<EventRow>,
    pub anonymised_at: Option<DateTime<Utc>>,
}

/// Everything held about one person (`EmailAddress::person`: any `+tag` folded).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PersonData {
    /// Requests where they are the requester or the forwarder (`via`).
    pub requests: Vec<HeldRequest>,
    /// Messages from them, and every message of their requests.
    pub incoming: Vec<HeldMessage>,
    /// Emails gatehouse sent (or queued) to them.
    pub sent: Vec<SentMail>,
}

/// What `gatehouse erase REF` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    /// Incoming messages of the request whose bytes (and attachments) went.
    pub raw_messages: i64,
    /// Emails about the request whose bytes and recipients went.
    pub sent_mail: i64,
    /// Emails about it not yet sent, cancelled.
    pub cancelled_mail: i64,
    /// Emails about it in the middle of being sent, left alone (their bytes go at the next
    /// purge).
    pub in_flight_mail: i64,
}

/// A backup written and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupDone {
    pub bytes: u64,
    pub pages: i64,
}
