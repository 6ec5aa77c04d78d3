//! What the board's emails show (the weekly summary, a meeting's agenda, an agenda update),
//! with a complete sample of each so [`super::Templates`] can prove the templates at start.
//! The summary module fills them in; they live here, with the words, so the templates never
//! need the module that sends them.

use serde::Serialize;

use super::ServiceView;

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

/// A complete sample, for proving the templates at start-up.
pub fn sample_context(service: ServiceView) -> SummaryContext {
    let item = Item {
        reference: "GP-2026-0001".into(),
        subject: "Sample <subject>".into(),
        requester: "Jo Bloggs <jo@example.org>".into(),
        organisation: "Anytown ICB".into(),
        received: "Mon 16 Nov 09:12".into(),
        decision: Some("paper".into()),
        detail: Some("Sample detail".into()),
        priorities: vec!["workforce".into()],
        waiting: "3 days".into(),
        notes: vec!["Sample note".into()],
        papers: vec![Paper {
            name: "GP-2026-0001 costings.xlsx".into(),
            size: "24 KB".into(),
            attached: false,
        }],
    };
    let group = Group { name: "Anytown ICB".into(), count: 1, items: vec![item.clone()] };
    SummaryContext {
        service,
        period: "Monday 16 November 2026 to Sunday 22 November 2026".into(),
        new_count: 1,
        decided_count: 1,
        awaiting_count: 1,
        waiting_on_requester_count: 1,
        new_by_organisation: vec![group.clone()],
        decisions: vec![group],
        awaiting: vec![item.clone()],
        awaiting_more: 1,
        waiting_on_requester: vec![item.clone()],
        waiting_on_requester_more: 1,
        next_meeting: Some(Meeting { date: "Thursday 3 December 2026".into(), items: vec![item.clone()] }),
        papers: vec![item.clone()],
        messages: vec![item.clone()],
        duplicates: vec![Duplicate {
            item,
            of_reference: "GP-2026-0000".into(),
            how: "probably the same as".into(),
        }],
        priorities: vec![PriorityCount {
            key: "workforce".into(),
            description: "Workforce".into(),
            count: 1,
        }],
        no_priority: 0,
        median_to_decision: Some("1 day 4 hours".into()),
        trend: vec![TrendBar { label: "16 Nov".into(), count: 1, percent: 100, bar: "#".repeat(20) }],
    }
}

/// A complete sample, for proving the agenda update templates at start-up.
pub fn sample_update_context(service: ServiceView, item: Item) -> AgendaUpdateContext {
    AgendaUpdateContext {
        service,
        meeting: Meeting { date: "Thursday 3 December 2026".into(), items: vec![item.clone()] },
        added: vec![item.clone()],
        removed: vec![Removed { item, now: "moved to the meeting on Thursday 7 January 2027".into() }],
    }
}
