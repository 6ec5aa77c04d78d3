//! What every email's template sees: one context type per template (the README lists their
//! variables), with the views they share. The modules that send the emails fill them in;
//! they live here, with the words, so the templates (and their samples, in
//! [`super::samples`]) never need the modules that send them.

use serde::Serialize;

/// The service as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub name: String,
    /// The shared mailbox address.
    pub address: String,
    pub next_meeting: Option<String>,
    pub decisions: Vec<DecisionView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecisionView {
    pub command: String,
    pub meaning: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttachmentView {
    pub name: String,
    pub content_type: String,
    pub size: String,
}

/// A request as templates see it; every value from an email is plain text here and is
/// escaped by `.html` templates.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    pub reference: String,
    pub subject: String,
    pub requester: String,
    pub requester_name: Option<String>,
    /// "Jo Bloggs <jo@icb.test>" or the bare address.
    pub requester_display: String,
    pub organisation: Option<String>,
    pub via: Option<String>,
    /// "Monday 23 November 2026, 09:12" in the service timezone.
    pub received: String,
    pub status: String,
    pub decision: Option<String>,
    pub body: String,
    pub attachments: Vec<AttachmentView>,
    pub message_count: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EarlierView {
    pub reference: String,
    pub subject: String,
    pub status: String,
    pub decision: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkView {
    pub label: String,
    pub href: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PriorityView {
    pub key: String,
    pub description: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AcknowledgementContext {
    pub service: ServiceView,
    pub request: RequestView,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForwardConfirmationContext {
    pub service: ServiceView,
    pub request: RequestView,
    /// Whether the original sender was sent an acknowledgement.
    pub acknowledged: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotificationContext {
    pub service: ServiceView,
    pub request: RequestView,
    /// "new" or "follow_up".
    pub kind: String,
    /// The text to decide on: the approach, or the follow-up's new text.
    pub text: String,
    /// Who really wrote this message ("Name <address>"): for a follow-up, not necessarily
    /// the requester.
    pub sender: String,
    /// A follow-up from someone who is not the requester, the forwarder or of the same
    /// organisation: it changed nothing and nobody was answered.
    pub stranger: bool,
    /// A forward from someone not in `[members]`: the original sender is only as the
    /// forwarder wrote it, and only the forwarder was answered.
    pub unverified: bool,
    /// Lines the gatekeeper must read, e.g. why the requester was not acknowledged.
    pub warnings: Vec<String>,
    pub token: String,
    pub links: Vec<LinkView>,
    pub probable_duplicate: Option<EarlierView>,
    pub earlier: Vec<EarlierView>,
    pub priorities: Vec<PriorityView>,
}

/// The outcome email to the requester (`outcome_<decision>.txt`).
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeContext {
    pub service: ServiceView,
    pub request: RequestView,
    pub decision: String,
    /// The reason, destination or work needed.
    pub detail: Option<String>,
    /// "Thursday 3 December 2026" for meetings.
    pub meeting_date: Option<String>,
    /// The earlier request, named only when it came from the same requester or
    /// organisation; none otherwise (the template then must not name it).
    pub duplicate_of: Option<EarlierView>,
    /// The gatekeeper's words for the requester (may be empty).
    pub message: String,
    /// The decision this one replaces, if any.
    pub previous: Option<String>,
}

/// `outcome.html`: the outcome text as paragraphs.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeHtmlContext {
    pub request: RequestView,
    pub paragraphs: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TriageConfirmationContext {
    pub service: ServiceView,
    pub request: RequestView,
    /// "decided: meeting on Thursday 3 December 2026".
    pub summary: String,
    pub actor: String,
    pub requester_told: bool,
    /// For a `meeting` decision: what the board has been told of it.
    pub board: Option<BoardView>,
}

/// What the board has been told of a request decided `meeting` (the summary's agenda
/// module works it out).
#[derive(Debug, Clone, Serialize)]
pub struct BoardView {
    /// `agenda` (the board has it on the agenda), `update` (the agenda has gone: an agenda
    /// update tells the board), `pending` (it will be on the agenda, which has not gone),
    /// `too_late` (too late for the agenda: raise it at the meeting) or `unscheduled` (the
    /// date is not an upcoming one in `[meetings] dates`: no agenda goes for it).
    pub told: String,
    /// "Thursday 3 December 2026".
    pub meeting: String,
    /// When the agenda goes, for `pending`: "on Monday 30 November 2026 at 08:00" or
    /// "shortly".
    pub agenda_goes: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TriageErrorContext {
    pub service: ServiceView,
    pub reference: Option<String>,
    pub error: String,
    pub help: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReminderItem {
    pub reference: String,
    pub subject: String,
    pub requester_display: String,
    pub organisation: Option<String>,
    /// "3 working days".
    pub waiting: String,
    pub links: Vec<LinkView>,
}

/// A message filed as an automatic reply by its wording alone, listed in the daily digest
/// in case a person wrote it.
#[derive(Debug, Clone, Serialize)]
pub struct AutoReplyItem {
    /// The sender's address ("" when it had none).
    pub from: String,
    pub subject: String,
    /// Why it was taken for an auto-reply ("subject opens \"AUTO:\"").
    pub why: String,
    /// "Monday 30 November, 09:12" in the service timezone.
    pub received: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReminderContext {
    pub service: ServiceView,
    pub requests: Vec<ReminderItem>,
    pub auto_replies: Vec<AutoReplyItem>,
    /// "in the last day", or "since Friday 27 November, 10:00" after a weekend.
    pub auto_replies_period: String,
}

// The board's emails: the weekly summary, a meeting's agenda, an agenda update.

#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub reference: String,
    pub subject: String,
    /// The requester's name, with the address only when `[board] share_addresses` is set;
    /// empty when there is neither (the board can include outside members).
    pub requester: String,
    pub organisation: String,
    pub received: String,
    pub decision: Option<String>,
    pub detail: Option<String>,
    pub priorities: Vec<String>,
    /// "4 days", for what waits.
    pub waiting: String,
    /// The gatekeepers' internal notes; empty unless `[board] share_notes` is set.
    pub notes: Vec<String>,
    /// "Came via 3 doors: A, B, C" when several members forwarded the same approach.
    pub doors: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub name: String,
    pub count: usize,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Duplicate {
    pub item: Item,
    pub of_reference: String,
    /// "probably the same" or "decided duplicate".
    pub how: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PriorityCount {
    pub key: String,
    pub description: String,
    pub count: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrendBar {
    /// "16 Nov".
    pub label: String,
    pub count: usize,
    /// 0–100, for the bar's width.
    pub percent: usize,
    /// The bar in text: one `#` per 5 %.
    pub bar: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Meeting {
    pub date: String,
    pub items: Vec<Item>,
}

/// Everything the summary templates see.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryContext {
    pub service: ServiceView,
    /// "Monday 16 November 2026 to Sunday 22 November 2026".
    pub period: String,
    pub new_count: usize,
    pub decided_count: usize,
    pub awaiting_count: usize,
    pub waiting_on_requester_count: usize,
    pub new_by_organisation: Vec<Group>,
    pub decisions: Vec<Group>,
    /// The oldest `summary::LIST_LIMIT` only; `awaiting_more` says how many are not listed.
    pub awaiting: Vec<Item>,
    pub awaiting_more: usize,
    pub waiting_on_requester: Vec<Item>,
    pub waiting_on_requester_more: usize,
    pub next_meeting: Option<Meeting>,
    pub papers: Vec<Item>,
    pub messages: Vec<Item>,
    pub duplicates: Vec<Duplicate>,
    pub priorities: Vec<PriorityCount>,
    pub no_priority: usize,
    /// "1 day 4 hours", or none when nothing was decided.
    pub median_to_decision: Option<String>,
    pub trend: Vec<TrendBar>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgendaContext {
    pub service: ServiceView,
    pub meeting: Meeting,
}

/// A request the board had on the agenda and no longer does.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub item: Item,
    /// "moved to the meeting on Thursday 10 December 2026", "now decided paper".
    pub now: String,
}

/// Everything the agenda update templates see.
#[derive(Debug, Clone, Serialize)]
pub struct AgendaUpdateContext {
    pub service: ServiceView,
    /// The meeting, with the items the board now has on its agenda.
    pub meeting: Meeting,
    pub added: Vec<Item>,
    pub removed: Vec<Removed>,
}

// The operator's alerts (see `crate::mailings::alerts`). Their subjects are the code's; the
// templates write the body.

/// `alert_smtp_login.txt`: gatehouse cannot log in to the SMTP server.
#[derive(Debug, Clone, Serialize)]
pub struct SmtpLoginAlert {
    pub host: String,
    pub port: u16,
    /// The SMTP username, or "(none)".
    pub user: String,
    pub error: String,
    /// What to do about it ("check the SMTP username and password").
    pub fix: String,
}

/// `alert_outbox_failing.txt`: emails keep failing to go.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxFailingAlert {
    pub attempts: i64,
    pub host: String,
    pub port: u16,
    pub error: String,
}

/// `delivery_failure.txt`: an email given up (to the gatekeepers and the operator).
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryFailureAlert {
    /// Its recipients, comma-separated.
    pub to: String,
    pub subject: String,
    /// Its kind (`acknowledgement`, `outcome`…).
    pub what: String,
    pub error: String,
}

/// `alert_secret_expiry.txt`: an OAuth2 client secret about to lapse, or lapsed.
#[derive(Debug, Clone, Serialize)]
pub struct SecretExpiryAlert {
    /// "The OAuth2 client secret of app … expires on …".
    pub what: String,
    /// The shared mailbox.
    pub mailbox: String,
    pub client_id: String,
    /// The config section (`imap.oauth2`).
    pub section: String,
}

/// `alert_disk_low.txt` and `alert_disk_full.txt`: the data directory's disk.
#[derive(Debug, Clone, Serialize)]
pub struct DiskAlert {
    /// The data directory.
    pub dir: String,
    /// "120 MiB".
    pub available: String,
    pub total: String,
    /// The shared mailbox.
    pub mailbox: String,
}

/// `alert_resolved.txt`: a problem alerted about has cleared.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedAlert {
    /// The alert's subject.
    pub subject: String,
    /// "2026-11-30 09:12 GMT", in the service timezone.
    pub first_reported: String,
    pub cleared: String,
}
