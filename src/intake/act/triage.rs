//! The triage routes: a gatekeeper's authorised reply has its decision read and applied
//! (or the gatekeeper is told why it was not understood); a refused attempt changes nothing
//! and is reported — to the gatekeeper who sent it, or to the gatekeepers when anyone else
//! tried (the From may be forged).

use super::{Message, outcome};
use crate::classify::Parsed;
use crate::domain::{Classification, EmailAddress};
use crate::intake::Intake;
use crate::store::{self, EventKind, RequestRow, Tx};
use crate::triage::Actor;

impl Intake {
    /// A gatekeeper's reply authorised for `request`: its decision is applied, or, not
    /// understood, the gatekeeper is told why.
    pub(super) async fn triage_reply(
        &self,
        tx: &mut dyn Tx,
        message: &Message<'_>,
        parsed: &Parsed,
        request: &RequestRow,
        from: &EmailAddress,
    ) -> anyhow::Result<Classification> {
        let now = message.now;
        let mut outcome = outcome(parsed, message.received_at())?;
        outcome.request_id = Some(request.id);
        let result = match self.triage.read_reply(parsed, request) {
            Ok(reply) => {
                self.triage.decide(tx, request, &reply, &Actor::Gatekeeper(from.clone()), now).await?
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(summary) => {
                outcome.classification = Classification::Triage;
                outcome.detail = Some(summary);
            }
            Err(e) => {
                outcome.classification = Classification::Rejected;
                outcome.detail = Some(format!("not understood: {e}"));
                let e = e.to_string();
                tx.add_event(
                    request.id,
                    now,
                    store::Actor::Address(from.clone()),
                    EventKind::TriageNotUnderstood,
                    Some(&e),
                )
                .await?;
                let mail = self.triage.error_reply(
                    std::slice::from_ref(from),
                    Some(&request.reference),
                    &e,
                    parsed.message_id.as_deref(),
                    now,
                )?;
                tx.enqueue(&mail, now).await?;
            }
        }
        tx.finish_message(message.id, &outcome, now).await?;
        Ok(outcome.classification)
    }

    /// An attempt at a gatekeeper's reply that was refused for `reason`: nothing changes.
    pub(super) async fn triage_refused(
        &self,
        tx: &mut dyn Tx,
        message: &Message<'_>,
        parsed: &Parsed,
        reason: &str,
        request: Option<&RequestRow>,
        from: &EmailAddress,
    ) -> anyhow::Result<Classification> {
        let now = message.now;
        tracing::warn!("Refused a triage reply from {from}: {reason}");
        let mut outcome = outcome(parsed, message.received_at())?;
        outcome.classification = Classification::Rejected;
        outcome.detail = Some(format!("refused: {reason}"));
        outcome.request_id = request.map(|r| r.id);
        if let Some(r) = request {
            tx.add_event(
                r.id,
                now,
                store::Actor::Address(from.clone()),
                EventKind::TriageRefused,
                Some(reason),
            )
            .await?;
        }
        let (to, error) = if self.config.is_gatekeeper(from) {
            (vec![from.clone()], reason.to_string())
        } else {
            let error = format!("a reply from {from} tried to decide it and was refused: {reason}");
            (self.config.gatekeepers.clone(), error)
        };
        let reference = request.map(|r| r.reference.as_str());
        let mail = self.triage.error_reply(&to, reference, &error, parsed.message_id.as_deref(), now)?;
        tx.enqueue(&mail, now).await?;
        tx.finish_message(message.id, &outcome, now).await?;
        Ok(Classification::Rejected)
    }
}
