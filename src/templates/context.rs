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
    /// A follow-up that brought files from the requester on a request decided `paper`: the
    /// notification offers `circulate`.
    pub paper: bool,
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
    /// "13:00 to 14:30" for a meeting whose time is configured.
    pub meeting_time: Option<String>,
    /// Where the meeting is held (`[meetings] place`), if configured.
    pub meeting_place: Option<String>,
    /// The earlier request, named only when it came from the same requester or
    /// organisation; none otherwise (the template then must not name it).
    pub duplicate_of: Option<EarlierView>,
    /// The gatekeeper's words for the requester (may be empty).
    pub message: String,
    /// The decision this one replaces, if any.
    pub previous: Option<String>,
    /// For `paper` when no paper came with the approach: by when to send it, with the rule's
    /// reason ("Thursday 24 December 2026, a week before the board meets on …"); see
    /// `triage::paper::paper_due`.
    pub paper_by: Option<String>,
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
    /// Requests decided `more-work` still waiting on their requester, longest first.
    pub waiting_on_requester: Vec<WaitingItem>,
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
    /// The files that came with the approach and the requester's later emails; filled for
    /// the agenda only.
    pub papers: Vec<Paper>,
}

/// One of an agenda item's papers: attached to the agenda email, or listed by name and
/// size when it would take the email over `[meetings] agenda_attachments_max_mb`.
#[derive(Debug, Clone, Serialize)]
pub struct Paper {
    /// The file's name as attached: the item's reference, then its own name.
    pub name: String,
    /// "240 KB".
    pub size: String,
    pub attached: bool,
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
    /// Requests whose papers went to the board in the period.
    pub papers_circulated: usize,
    /// Requests decided `paper` for which no paper has come yet.
    pub papers_awaited: usize,
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

/// `alert_imap_login.txt`: gatehouse cannot log in to the shared mailbox.
#[derive(Debug, Clone, Serialize)]
pub struct ImapLoginAlert {
    /// The IMAP username (the shared mailbox).
    pub mailbox: String,
    pub host: String,
    pub port: u16,
    pub error: String,
    /// What to check ("Please check the mailbox password.", or how OAuth2 signs in).
    pub fix: String,
}

/// `alert_quarantined.txt`: one message set aside (to the gatekeepers and the operator).
#[derive(Debug, Clone, Serialize)]
pub struct QuarantinedAlert {
    /// The stored message's id (for `gatehouse messages retry`).
    pub id: String,
    /// Its sender as far as known, or "(unknown)".
    pub from: String,
    /// Its subject, or "(no subject)".
    pub subject: String,
    /// Why it could not be processed.
    pub why: String,
}

/// `alert_quarantined_more.txt`: the one alert a day once more messages are set aside than
/// are alerted one by one. It names none of them.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantinedMoreAlert {
    /// How many are alerted one by one in a day.
    pub per_day: i64,
}

/// `alert_unlogged.txt`: a message that was not logged as a request (not an email
/// gatehouse can read, or one it would not answer), to the gatekeepers and the operator.
#[derive(Debug, Clone, Serialize)]
pub struct UnloggedAlert {
    /// Why it was not logged.
    pub why: String,
    /// The stored message's id.
    pub id: String,
    /// Its sender as far as a header scan finds, or "(unknown)".
    pub from: String,
    pub subject: String,
    /// What to do if it is an approach ("log it by forwarding it to the shared mailbox").
    pub advice: String,
}

/// `alert_repeated.txt`: the lines added to an alert repeated because its problem has
/// not cleared.
#[derive(Debug, Clone, Serialize)]
pub struct RepeatedAlert {
    /// "2026-11-30 09:12 GMT", in the service timezone.
    pub first_reported: String,
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

// The `message` decision's channel text, and the more-work reminder to a silent requester.

/// `channel_message.txt`: the short text for the group's channel. Every value is already
/// made safe by [`crate::channel`] (one line each, no mentions, cut to fit), and the
/// rendered text is cleaned and capped again whatever an override writes.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelMessageContext {
    pub reference: String,
    /// "Jo Bloggs, Anytown ICB".
    pub who: String,
    /// The requester's subject (or first line), cleaned.
    pub what: String,
    /// "Friday 18 December 2026" when the requester named a date.
    pub by_when: Option<String>,
    /// The decision's words for the requester, if any (never the gatekeepers' notes).
    pub message: Option<String>,
}

/// `channel_draft.txt`: the gatekeeper's email with the text ready to paste.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelDraftContext {
    pub service: ServiceView,
    pub reference: String,
    /// The channel text as it is to be pasted.
    pub text: String,
    /// Whether the same text is also posted to the channel's webhook.
    pub posted: bool,
}

/// `more_work_nudge.txt`: the one reminder to a requester asked for more work.
#[derive(Debug, Clone, Serialize)]
pub struct NudgeContext {
    pub service: ServiceView,
    pub request: RequestView,
    /// What the gatekeeper asked for (as the outcome already told the requester).
    pub detail: Option<String>,
    /// "Monday 30 November 2026": when the outcome went.
    pub asked_on: String,
}

/// A request waiting on its requester, in the gatekeepers' daily digest.
#[derive(Debug, Clone, Serialize)]
pub struct WaitingItem {
    pub reference: String,
    pub subject: String,
    pub requester_display: String,
    pub organisation: Option<String>,
    /// "6 working days" since the more-work decision.
    pub waiting: String,
    /// Whether the requester has had the reminder.
    pub nudged: bool,
}

/// `paper_circulation.txt`/`.html`: the papers a request brought, sent to the board by
/// `circulate`. Only what the board may see: never the gatekeepers' notes, the reply key or
/// (unless `[board] share_addresses`) the requester's address.
#[derive(Debug, Clone, Serialize)]
pub struct PaperCirculationContext {
    pub service: ServiceView,
    pub reference: String,
    pub subject: String,
    /// The requester as the board's mail names them (`mailings::views::board_requester`:
    /// the address only with `[board] share_addresses`; may be empty).
    pub requester: String,
    pub organisation: Option<String>,
    /// "Monday 23 November 2026, 09:12".
    pub received: String,
    /// The gatekeeper's words written with `circulate` (may be empty).
    pub message: String,
    /// The papers attached to this email.
    pub attached: Vec<AttachmentView>,
    /// Papers too large to attach within `[notifications] attach_max_bytes`: named only.
    pub listed: Vec<AttachmentView>,
}
