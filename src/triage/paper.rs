//! The `paper` decision carried through. The outcome asks the requester for the paper when
//! none came with the approach or its follow-ups, by a date the one rule here sets
//! ([`paper_due`]); the files that the requester (or the forwarder gatehouse answered) sends
//! are kept as the request's papers ([`speaks_for`] says whose count); `circulate` sends them
//! to the board in one email with the request's context — never a gatekeeper's note, never
//! the reply key.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc, Weekday};

use super::grammar::{Circulate, Reply, TriageError};
use super::{Actor, Triage};
use crate::domain::{Decision, EmailAddress};
use crate::mailings::Draft;
use crate::mailings::views::board_requester;
use crate::store::{self, EventKind, NewOutgoing, PaperRow, RequestRow, Tx};
use crate::templates::{AttachmentView, PaperCirculationContext, human_size, long_date, service_view};

/// The paper is asked for this many days before the meeting it is for.
pub const DAYS_BEFORE_MEETING: i64 = 7;

/// A meeting sooner than this many days is too close to ask a paper for: the next one is.
pub const MIN_NOTICE_DAYS: i64 = 10;

/// Without a meeting far enough ahead in `[meetings] dates`: this many working days
/// (Monday to Friday).
pub const WORKING_DAYS_WITHOUT_MEETINGS: u32 = 10;

/// By when a paper asked for today is due, and the meeting it is for (none when no meeting
/// is far enough ahead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaperDue {
    pub by: NaiveDate,
    pub meeting: Option<NaiveDate>,
}

impl PaperDue {
    /// The date with its reason, as the outcome says it.
    pub fn describe(&self) -> String {
        match self.meeting {
            Some(m) => format!("{}, a week before the board meets on {}", long_date(self.by), long_date(m)),
            None => format!("{} (in {WORKING_DAYS_WITHOUT_MEETINGS} working days)", long_date(self.by)),
        }
    }
}

/// The one rule for when a paper is due: [`DAYS_BEFORE_MEETING`] days before the first
/// meeting in `meetings` at least [`MIN_NOTICE_DAYS`] days after `today`; without one,
/// [`WORKING_DAYS_WITHOUT_MEETINGS`] working days after `today`.
pub fn paper_due(meetings: &[NaiveDate], today: NaiveDate) -> PaperDue {
    let far_enough = today + Duration::days(MIN_NOTICE_DAYS);
    if let Some(m) = meetings.iter().filter(|m| **m >= far_enough).min() {
        return PaperDue { by: *m - Duration::days(DAYS_BEFORE_MEETING), meeting: Some(*m) };
    }
    let mut by = today;
    let mut left = WORKING_DAYS_WITHOUT_MEETINGS;
    while left > 0 {
        by += Duration::days(1);
        if !matches!(by.weekday(), Weekday::Sat | Weekday::Sun) {
            left -= 1;
        }
    }
    PaperDue { by, meeting: None }
}

/// Whether mail from `from` speaks for `request`: its requester, or the forwarder gatehouse
/// answered for it. Only their follow-ups reopen a request waiting for more work, and only
/// their files count as its paper (a stranger on the thread is neither).
pub fn speaks_for(request: &RequestRow, from: &EmailAddress) -> bool {
    from.as_str() == request.requester || request.via.as_deref() == Some(from.as_str())
}

/// The board email `circulate` will send, and what it will record.
pub(super) struct Circulation {
    mail: NewOutgoing,
    /// The papers it carries or lists.
    ids: Vec<i64>,
    /// For the confirmation and the request's log.
    summary: String,
}

/// What a reply needs of papers, worked out before anything is written.
pub(super) struct PaperSteps {
    /// For a `paper` outcome: by when it asks for the paper (see [`Triage::paper_by`]).
    pub asked_by: Option<String>,
    /// `circulate`'s email, ready to send.
    pub circulation: Option<Circulation>,
}

impl Triage {
    /// The paper side of `reply` on `request`: by when a `paper` outcome asks for the paper,
    /// and `circulate`'s email. A `TriageError` (nothing may be written) when `circulate`
    /// cannot go.
    pub(super) async fn prepare_paper(
        &self,
        tx: &mut dyn Tx,
        request: &RequestRow,
        reply: &Reply,
        today: NaiveDate,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<PaperSteps, TriageError>> {
        let asked_by = match &reply.decision {
            Some(command) => self.paper_by(tx, request, command.decision(), today).await?,
            None => None,
        };
        let circulation = match reply.circulate {
            Some(how) => match self.prepare_circulation(tx, request, how, &reply.message, now).await? {
                Ok(circulation) => Some(circulation),
                Err(e) => return Ok(Err(e)),
            },
            None => None,
        };
        Ok(Ok(PaperSteps { asked_by, circulation }))
    }

    /// For a `paper` decision: by when the outcome asks for the paper, with its reason; none
    /// when a paper already came with the approach or a follow-up.
    async fn paper_by(
        &self,
        tx: &mut dyn Tx,
        request: &RequestRow,
        decision: Decision,
        today: NaiveDate,
    ) -> anyhow::Result<Option<String>> {
        if decision != Decision::Paper || !tx.papers(request.id).await?.is_empty() {
            return Ok(None);
        }
        Ok(Some(paper_due(&self.config.meetings.dates, today).describe()))
    }

    /// Drafts `circulate` for `request` without writing anything: a `TriageError` (nothing
    /// circulated) when there is no paper, when every paper already went (unless `again`),
    /// or when no board address is configured.
    async fn prepare_circulation(
        &self,
        tx: &mut dyn Tx,
        request: &RequestRow,
        how: Circulate,
        message: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<Circulation, TriageError>> {
        let reference = &request.reference;
        if self.config.board.addresses.is_empty() {
            return Ok(Err(TriageError(format!(
                "nothing was circulated: [board] addresses is empty, so there is no one to send {reference}'s paper to"
            ))));
        }
        let papers = tx.papers(request.id).await?;
        if papers.is_empty() {
            return Ok(Err(TriageError(format!(
                "nothing was circulated: no paper has come from the requester of {reference} (only files the requester or the forwarder sent count); when it comes you will get it with a circulate line"
            ))));
        }
        let papers: Vec<PaperRow> = match how {
            Circulate::Again => papers,
            Circulate::New => {
                let last = papers.iter().filter_map(|p| p.circulated_at).max();
                let new: Vec<PaperRow> = papers.into_iter().filter(|p| p.circulated_at.is_none()).collect();
                if let (true, Some(last)) = (new.is_empty(), last) {
                    let when =
                        last.with_timezone(&self.config.service.timezone).format("%A %-d %B %Y, %H:%M");
                    return Ok(Err(TriageError(format!(
                        "nothing was circulated: {reference}'s paper already went to the board on {when}; reply \"circulate again\" to send it again"
                    ))));
                }
                new
            }
        };
        // Attached in order while they fit the notification's budget; the rest are named.
        let budget = self.config.attach_max_bytes;
        let (mut used, mut files, mut attached, mut listed) = (0usize, Vec::new(), Vec::new(), Vec::new());
        for p in &papers {
            let view = AttachmentView {
                name: p.name.clone(),
                content_type: p.content_type.clone(),
                size: human_size(p.bytes.len()),
            };
            if used.saturating_add(p.bytes.len()) <= budget {
                used += p.bytes.len();
                files.push(crate::classify::AttachmentBody {
                    name: p.name.clone(),
                    content_type: p.content_type.clone(),
                    bytes: p.bytes.clone(),
                });
                attached.push(view);
            } else {
                listed.push(view);
            }
        }
        let tz = self.config.service.timezone;
        let context = PaperCirculationContext {
            service: service_view(&self.config, now.with_timezone(&tz).date_naive()),
            reference: reference.clone(),
            subject: request.subject.clone(),
            requester: board_requester(&self.config, request.requester_name.as_deref(), &request.requester),
            organisation: request.organisation.clone(),
            received: request.received_at.with_timezone(&tz).format("%A %-d %B %Y, %H:%M").to_string(),
            message: message.to_string(),
            attached,
            listed,
        };
        let text = self.templates.render("paper_circulation.txt", &context)?;
        // The board may include outside members: a reply key there would let them decide.
        if let Some(what) = self.internal_text_in(&text, request) {
            return Ok(Err(TriageError(format!(
                "nothing was circulated: the email to the board would contain {what}, which is for the gatekeepers only; reply again with only circulate and the words meant for the board"
            ))));
        }
        let html = self.templates.render("paper_circulation.html", &context)?;
        let draft = Draft::to_all(
            "paper_circulation",
            &self.config.board.addresses,
            format!("[{reference}] Paper for the board: {}", request.subject),
            text,
        )
        .about(Some(request.id))
        .with_html(html)
        .with_attachments(files);
        let names: Vec<&str> = papers.iter().map(|p| p.name.as_str()).collect();
        let summary = format!(
            "paper circulated to the board ({} file{}: {})",
            papers.len(),
            if papers.len() == 1 { "" } else { "s" },
            names.join(", ")
        );
        Ok(Ok(Circulation {
            mail: self.composer.compose(&draft)?,
            ids: papers.iter().map(|p| p.id).collect(),
            summary,
        }))
    }

    /// Sends a prepared circulation: the board email, the papers marked, the event. Returns
    /// the line for the gatekeepers' confirmation.
    pub(super) async fn circulate(
        &self,
        tx: &mut dyn Tx,
        request: &RequestRow,
        circulation: Circulation,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> anyhow::Result<String> {
        tx.enqueue(&circulation.mail, now).await?;
        tx.mark_papers_circulated(&circulation.ids, now).await?;
        let to: Vec<String> = self.config.board.addresses.iter().map(ToString::to_string).collect();
        let detail = format!("{}, to {}", circulation.summary, to.join(", "));
        tx.add_event(request.id, now, actor.author(), EventKind::PaperCirculated, Some(&detail)).await?;
        Ok(circulation.summary)
    }
}

/// Keeps the files `from` sent with request `request` (in stored message `message_id`) as
/// its papers, when `from` speaks for it ([`speaks_for`]). Returns how many were kept.
pub async fn keep_papers(
    tx: &mut dyn Tx,
    request: &RequestRow,
    from: &EmailAddress,
    message_id: store::MessageId,
    files: &[crate::classify::AttachmentBody],
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    if !speaks_for(request, from) {
        return Ok(0);
    }
    keep_approach_papers(tx, request.id, from, message_id, files, now).await
}

/// Keeps the files of the message that made request `request_id` (sent by `from`, the
/// requester or the forwarder, who speak for it by definition) as its papers.
pub async fn keep_approach_papers(
    tx: &mut dyn Tx,
    request_id: store::RequestId,
    from: &EmailAddress,
    message_id: store::MessageId,
    files: &[crate::classify::AttachmentBody],
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    if files.is_empty() {
        return Ok(0);
    }
    for file in files {
        tx.add_paper(request_id, message_id, file, now).await?;
    }
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    let detail = format!("Kept as the request's paper: {}", names.join(", "));
    tx.add_event(
        request_id,
        now,
        store::Actor::Address(from.clone()),
        EventKind::PaperReceived,
        Some(&detail),
    )
    .await?;
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_paper_is_due_a_week_before_the_first_meeting_far_enough_ahead() {
        let meetings = [day("2026-12-10"), day("2027-01-07"), day("2027-02-04")];
        // 10 December is four days away: too close; 7 January is the one.
        let due = paper_due(&meetings, day("2026-12-06"));
        assert_eq!(due, PaperDue { by: day("2026-12-31"), meeting: Some(day("2027-01-07")) });
        assert_eq!(
            due.describe(),
            "Thursday 31 December 2026, a week before the board meets on Thursday 7 January 2027"
        );
        // Exactly ten days ahead is far enough.
        assert_eq!(paper_due(&meetings, day("2026-11-30")).meeting, Some(day("2026-12-10")));
    }

    #[test]
    fn without_a_meeting_ahead_a_paper_is_due_in_working_days() {
        // Sunday 6 December + 10 working days = Friday 18 December.
        let due = paper_due(&[day("2026-12-03")], day("2026-12-06"));
        assert_eq!(due, PaperDue { by: day("2026-12-18"), meeting: None });
        assert!(due.describe().contains("10 working days"), "{}", due.describe());
        assert_eq!(paper_due(&[], day("2026-12-11")).by, day("2026-12-25"));
    }
}
