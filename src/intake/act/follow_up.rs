//! The follow-up route: more mail on an existing request. It is logged on the request as its
//! real sender's; from someone who speaks for the request it reopens a request waiting for
//! more work, from a stranger it changes nothing and its files stay out of the gatekeepers'
//! inbox.

use super::{Message, outcome, sender_display};
use crate::classify::{self, Parsed};
use crate::domain::{Classification, Decision, EmailAddress};
use crate::intake::Intake;
use crate::intake::replies::Provenance;
use crate::mailings::views::{RequestFacts, request_view};
use crate::store::{self, EventKind, RequestRow, ThreadDirection, Tx};
use crate::triage::paper;

impl Intake {
    /// Logs `parsed` as a follow-up on `request` and, unless `log_only`, tells the
    /// gatekeepers.
    pub(super) async fn follow_up(
        &self,
        tx: &mut dyn Tx,
        message: &Message<'_>,
        parsed: &Parsed,
        request: &RequestRow,
        from: &EmailAddress,
        stranger: bool,
    ) -> anyhow::Result<Classification> {
        let now = message.now;
        if !stranger {
            self.triage.reopen_if_waiting(tx, request, from, now).await?;
        }
        let mut outcome = outcome(parsed, message.received_at())?;
        outcome.classification = Classification::FollowUp;
        outcome.request_id = Some(request.id);
        let detail = if stranger {
            format!(
                "Message from {from}, who is not the requester, the forwarder or of the same organisation (request not changed): {}",
                parsed.subject
            )
        } else {
            format!("Message from {from}: {}", parsed.subject)
        };
        tx.add_event(
            request.id,
            now,
            store::Actor::Address(from.clone()),
            EventKind::FollowUp,
            Some(&detail),
        )
        .await?;
        if let Some(mid) = &parsed.message_id {
            tx.add_thread_id(mid, request.id, ThreadDirection::In).await?;
        }
        // A stranger's files never count as the requester's paper, whoever they claim to be.
        let kept = match stranger {
            true => 0,
            false => {
                paper::keep_papers(tx, request, from, message.id, &parsed.attachment_bodies, now).await?
            }
        };
        let paper = kept > 0 && request.decision == Some(Decision::Paper);
        if !message.log_only {
            self.notify_follow_up(tx, message, parsed, request, from, stranger, paper).await?;
        }
        tx.finish_message(message.id, &outcome, now).await?;
        Ok(Classification::FollowUp)
    }

    /// The gatekeepers' notification of a follow-up; `paper` when it brought the paper a
    /// `paper` decision asked for (the notification then offers `circulate`).
    #[allow(clippy::too_many_arguments)]
    async fn notify_follow_up(
        &self,
        tx: &mut dyn Tx,
        message: &Message<'_>,
        parsed: &Parsed,
        request: &RequestRow,
        from: &EmailAddress,
        stranger: bool,
        paper: bool,
    ) -> anyhow::Result<()> {
        let now = message.now;
        let mut view = request_view(&self.config, &RequestFacts::from_row(request), &parsed.attachments);
        view.message_count = request.message_count + 1;
        let text = classify::reply_text(&parsed.body_text, parsed.body_html.as_deref());
        let about =
            Provenance { sender: sender_display(parsed, from), stranger, paper, ..Provenance::default() };
        // A stranger's files are listed, not carried into the gatekeepers' inbox under the
        // request's name.
        let attachments = if stranger { Vec::new() } else { parsed.attachment_bodies.clone() };
        let mail = self.replies.notification(
            request.id,
            &view,
            &request.token,
            "follow_up",
            &text,
            &about,
            None,
            &[],
            attachments,
            now,
        )?;
        tx.enqueue(&mail, now).await?;
        let detail = Some("Follow-up sent to the gatekeeper");
        Ok(tx
            .add_event(request.id, now, store::Actor::Gatehouse, EventKind::GatekeeperNotified, detail)
            .await?)
    }
}
