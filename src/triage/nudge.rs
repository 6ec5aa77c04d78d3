//! The more-work nudge: a requester asked for more work (`more-work:`) who has not replied
//! after `[triage] more_work_nudge_days` working days gets one polite reminder, threaded on
//! the outcome (In-Reply-To and References, the reference in the subject) and sent to
//! whoever the outcome went to, so the rule that let the outcome go decides this one too.
//!
//! Once per request: the nudge is queued in a transaction that first checks the outbox for
//! an earlier one, so neither a restart nor a second more-work decision sends it again. A
//! reply from the requester puts the request back to the gatekeeper
//! ([`super::Triage::reopen_if_waiting`]), and only requests still waiting on their
//! requester are nudged.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::reminders::is_overdue;
use crate::classify::subject::reply_subject;
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::{Decision, EmailAddress, Status};
use crate::mailings::recipients::Recipients;
use crate::mailings::{Composer, Draft};
use crate::store::{Actor, EventKind, RequestId, RequestRow, SharedStore};
use crate::templates::NudgeContext;
use crate::templates::{Templates, long_date, service_view};

/// The outbox kind of the nudge (its event is [`EventKind::MoreWorkNudge`], the same text).
pub const KIND: &str = "more_work_nudge";

/// Requests looked at in one pass; more wait for the next minute.
const BATCH: i64 = 500;

/// Sends the nudges that are due.
#[derive(Debug, Clone)]
pub struct Nudges {
    config: Arc<Config>,
    store: SharedStore,
    clock: Arc<dyn Clock>,
    templates: Arc<Templates>,
    composer: Composer,
    recipients: Recipients,
}

impl Nudges {
    pub fn new(
        config: Arc<Config>,
        store: SharedStore,
        clock: Arc<dyn Clock>,
        templates: Arc<Templates>,
    ) -> Self {
        let composer = Composer::new(config.clone());
        let recipients = Recipients::new(config.clone());
        Self { config, store, clock, templates, composer, recipients }
    }

    /// Queues every nudge now due; returns how many.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let days = self.config.triage.more_work_nudge_days;
        if days == 0 {
            return Ok(0);
        }
        let now = self.clock.now();
        let tz = self.config.service.timezone;
        let (waiting, _) = self.store.with_status(Status::WaitingOnRequester, BATCH).await?;
        let due: Vec<RequestRow> = waiting
            .into_iter()
            .filter(|r| r.decision == Some(Decision::MoreWork) && r.answer)
            .filter(|r| r.decided_at.is_some_and(|at| is_overdue(at, now, days, tz)))
            .collect();
        let ids: Vec<RequestId> = due.iter().map(|r| r.id).collect();
        let nudged: Vec<RequestId> = self
            .store
            .events_of_kind(&ids, EventKind::MoreWorkNudge)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let mut sent = 0;
        for request in due.iter().filter(|r| !nudged.contains(&r.id)) {
            if self.nudge(request, now).await? {
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Queues `request`'s nudge unless one went already; whether it was queued.
    async fn nudge(&self, request: &RequestRow, now: DateTime<Utc>) -> anyhow::Result<bool> {
        let Some(decided) = request.decided_at else { return Ok(false) };
        // The outcome of this decision (not of an earlier one): none when it was not sent.
        let Some(outcome) = self.store.last_outgoing(request.id, "outcome").await? else {
            return Ok(false);
        };
        if outcome.created_at < decided || matches!(outcome.status.as_str(), "failed" | "bounced") {
            return Ok(false);
        }
        let to: Vec<EmailAddress> =
            outcome.recipients.iter().filter_map(|r| EmailAddress::parse(r).ok()).collect();
        if to.is_empty() || to.iter().any(|a| self.recipients.never(a).is_some()) {
            return Ok(false);
        }
        let mut view = crate::mailings::row_view(&self.config, request);
        // The outcome went to a forwarder: do not greet them by the requester's name.
        if !to.iter().any(|a| a.as_str().eq_ignore_ascii_case(&request.requester)) {
            view.requester_name = None;
        }
        let context = NudgeContext {
            service: service_view(
                &self.config,
                now.with_timezone(&self.config.service.timezone).date_naive(),
            ),
            request: view,
            detail: request.decision_detail.clone().filter(|d| !d.trim().is_empty()),
            asked_on: long_date(decided.with_timezone(&self.config.service.timezone).date_naive()),
        };
        let draft = Draft::to_all(
            KIND,
            &to,
            reply_subject(&request.subject, &request.reference),
            self.templates.render("more_work_nudge.txt", &context)?,
        )
        .about(Some(request.id))
        .threaded_on(outcome.message_id.clone());
        let mail = self.composer.compose(&draft)?;
        let mut tx = self.store.begin().await?;
        // The guard that makes it once per request, restarts and all: in the transaction
        // that queues it.
        if tx.has_outgoing(request.id, KIND).await? {
            return Ok(false);
        }
        tx.enqueue(&mail, now).await?;
        let whom = to.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        tx.add_event(
            request.id,
            now,
            Actor::Gatehouse,
            EventKind::MoreWorkNudge,
            Some(&format!("One reminder sent to {whom}")),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
