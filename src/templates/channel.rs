//! What the `message` decision and the more-work nudge say: the text for the group's
//! channel, the gatekeeper's email carrying it, the requester's reminder, and the digest's
//! list of requests still waiting on their requester. Sample contexts for the start-up proof
//! live here beside them.

use serde::Serialize;

use super::{RequestView, ServiceView};

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

pub(super) fn sample_message() -> ChannelMessageContext {
    ChannelMessageContext {
        reference: "GP-2026-0001".into(),
        who: "Jo Bloggs, Anytown ICB".into(),
        what: "Sample subject".into(),
        by_when: Some("Friday 18 December 2026".into()),
        message: Some("Sample message".into()),
    }
}

pub(super) fn sample_draft(service: ServiceView) -> ChannelDraftContext {
    ChannelDraftContext {
        service,
        reference: "GP-2026-0001".into(),
        text: "GP-2026-0001: Jo Bloggs, Anytown ICB asks: Sample".into(),
        posted: true,
    }
}

pub(super) fn sample_nudge(service: ServiceView, request: RequestView) -> NudgeContext {
    NudgeContext {
        service,
        request,
        detail: Some("Sample work".into()),
        asked_on: "Monday 30 November 2026".into(),
    }
}

pub(super) fn sample_waiting() -> WaitingItem {
    WaitingItem {
        reference: "GP-2026-0002".into(),
        subject: "Sample".into(),
        requester_display: "Jo <jo@example.org>".into(),
        organisation: Some("Anytown ICB".into()),
        waiting: "6 working days".into(),
        nudged: true,
    }
}
