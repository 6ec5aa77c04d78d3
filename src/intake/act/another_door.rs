//! A further copy of an approach already logged, forwarded by another member (see
//! [`crate::intake::doors`]): recorded on the request as "also received via", its message
//! linked there, and its forwarder confirmed with the existing reference. The original
//! sender is not acknowledged again, and the gatekeepers are not mailed again: the doors
//! are counted in the weekly summary, so ten practices forwarding one email is one
//! request and one notification.

use anyhow::Context as _;

use super::new_request::Confirm;
use super::{Message, outcome};
use crate::classify::Parsed;
use crate::domain::{Classification, EmailAddress};
use crate::intake::Intake;
use crate::intake::route::Approach;
use crate::mailings::recipients::Allowance;
use crate::mailings::views::{RequestFacts, request_view};
use crate::store::{self, EventKind, RequestRow, ThreadDirection, Tx};

impl Intake {
    /// Adds `approach` (a member's forward) to `request` as one more door it came through.
    pub(super) async fn another_door(
        &self,
        tx: &mut dyn Tx,
        message: &Message<'_>,
        parsed: &Parsed,
        request: &RequestRow,
        approach: &Approach,
    ) -> anyhow::Result<Classification> {
        let now = message.now;
        let forwarder = approach.via.as_ref().context("Another door without a forwarder")?;
        let detail = format!("Also received via {forwarder}");
        tx.add_event(
            request.id,
            now,
            store::Actor::Address(forwarder.clone()),
            EventKind::AlsoReceived,
            Some(&detail),
        )
        .await?;
        // So the forwarder's replies to their confirmation, and a later attached copy of
        // the same original, find this request.
        let forwarded_id = parsed.forwarded.as_ref().and_then(|f| f.message_id.as_ref());
        for id in parsed.message_id.iter().chain(forwarded_id) {
            tx.add_thread_id(id, request.id, ThreadDirection::In).await?;
        }
        if !message.log_only {
            self.confirm_door(tx, message, parsed, request, approach, forwarder).await?;
        }
        let mut outcome = outcome(parsed, message.received_at())?;
        outcome.classification = Classification::Forwarded;
        outcome.detail = Some(format!("Another door of {}", request.reference));
        outcome.request_id = Some(request.id);
        tx.finish_message(message.id, &outcome, now).await?;
        tracing::info!("{}: also received via {forwarder}", request.reference);
        Ok(Classification::Forwarded)
    }

    /// The forwarder's confirmation, naming the existing reference. Everything else in it
    /// comes from the forwarder's own copy (the sender and subject as they forwarded them),
    /// never from the stored request, so a copy can learn nothing it did not bring.
    async fn confirm_door(
        &self,
        tx: &mut dyn Tx,
        message: &Message<'_>,
        parsed: &Parsed,
        request: &RequestRow,
        approach: &Approach,
        forwarder: &EmailAddress,
    ) -> anyhow::Result<()> {
        let own = RequestFacts {
            reference: &request.reference,
            subject: &approach.subject,
            requester: approach.requester.as_str(),
            requester_name: approach.requester_name.as_deref(),
            organisation: self.config.organisation_for(&approach.requester),
            via: Some(forwarder.as_str()),
            received_at: message.received_at(),
            status: request.status.as_str(),
            decision: None,
            body: &approach.body,
            message_count: 1,
        };
        let view = request_view(&self.config, &own, &parsed.attachments);
        let acknowledged = tx.has_outgoing(request.id, "acknowledgement").await?;
        let confirm = Confirm { request_id: request.id, view: &view, parsed, forwarder, acknowledged };
        let mut warnings = Vec::new();
        self.confirm_forward(tx, &confirm, &mut Allowance::per_message(), &mut warnings, message.now).await
    }
}
