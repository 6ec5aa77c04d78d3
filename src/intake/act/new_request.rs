//! The new-request routes (an approach from its sender, or forwarded on its sender's behalf):
//! compared with earlier requests for a probable duplicate, given the next reference,
//! inserted with its events and thread, and — unless it is backlog — acknowledged where the
//! recipient rule allows, the forwarder confirmed, and the gatekeepers notified.

use chrono::Datelike as _;
use rand::Rng as _;

use super::{Message, outcome, sender_display};
use crate::classify::{Fingerprint, Forwarded, Parsed};
use crate::domain::{Classification, EmailAddress, Reference};
use crate::intake::duplicates::Found;
use crate::intake::replies::{Provenance, Thread};
use crate::intake::route::Approach;
use crate::intake::{Intake, Prepared};
use crate::mailings::recipients::{Allowance, Purpose};
use crate::mailings::views::{RequestFacts, request_view};
use crate::store::{self, EventKind, NewRequest, RequestId, ThreadDirection, Tx};
use crate::templates::RequestView;

/// How far back a closed request still counts as "recent" for duplicate detection.
const DUPLICATE_LOOKBACK_DAYS: i64 = 180;

/// A request just inserted.
struct Inserted {
    id: RequestId,
    reference: String,
    token: String,
    subject: String,
    found: Found,
}

impl Intake {
    /// Logs `approach` as a new request and, unless `log_only`, answers and notifies.
    pub(super) async fn new_request(
        &self,
        tx: &mut dyn Tx,
        message: &Message<'_>,
        prepared: &Prepared,
        approach: &Approach,
        classification: Classification,
    ) -> anyhow::Result<Classification> {
        let (parsed, now) = (&prepared.parsed, message.now);
        let forwarded = parsed.forwarded.as_ref().filter(|_| approach.via.is_some());
        // Worked out while parsing, unless the forward turned out to be from the sender.
        let fingerprint = match &prepared.fingerprint {
            Some(f) if forwarded.is_some() == parsed.forwarded.is_some() => f.clone(),
            _ => Fingerprint::of(&approach.body),
        };
        let request = self.insert(tx, message, approach, fingerprint).await?;
        self.record_arrival(tx, message, parsed, forwarded, approach, &request).await?;
        if !message.log_only {
            self.notify_new(tx, message, parsed, forwarded, approach, &request).await?;
        }
        let mut outcome = outcome(parsed, message.received_at())?;
        outcome.classification = classification;
        outcome.request_id = Some(request.id);
        tx.finish_message(message.id, &outcome, now).await?;
        tracing::info!("{}: {} from {}", request.reference, classification.as_str(), approach.requester);
        Ok(classification)
    }

    /// Finds a probable duplicate, allocates the next reference and inserts the request.
    async fn insert(
        &self,
        tx: &mut dyn Tx,
        message: &Message<'_>,
        approach: &Approach,
        fingerprint: Fingerprint,
    ) -> anyhow::Result<Inserted> {
        let (received_at, log_only) = (message.received_at(), message.log_only);
        let organisation = self.config.organisation_for(&approach.requester).map(str::to_string);
        let since = message.now - chrono::Duration::days(DUPLICATE_LOOKBACK_DAYS);
        let (requester, subject) = (approach.requester.as_str(), approach.subject.as_str());
        let found = self
            .duplicates
            .find(tx, requester, organisation.as_deref(), since, subject, &fingerprint, !log_only)
            .await?;
        let subject =
            if subject.trim().is_empty() { "(no subject)".to_string() } else { subject.to_string() };
        let token = new_token();
        let year = received_at.with_timezone(&self.config.service.timezone).year();
        let seq = tx.next_reference_seq(year).await?;
        let reference =
            Reference { prefix: self.config.service.reference_prefix.clone(), year, seq }.to_string();
        let id = tx
            .insert_request(
                &NewRequest {
                    reference: reference.clone(),
                    ref_year: year,
                    ref_seq: seq,
                    requester: approach.requester.to_string(),
                    requester_name: approach.requester_name.clone(),
                    organisation,
                    via: approach.via.as_ref().map(ToString::to_string),
                    subject: subject.clone(),
                    body: approach.body.clone(),
                    fingerprint: fingerprint.clone(),
                    received_at,
                    probable_duplicate_of: found.probable.as_ref().map(|c| c.id),
                    token: token.clone(),
                    answer: !log_only,
                    requester_unverified: approach.unverified,
                },
                message.now,
            )
            .await?;
        self.duplicates.remember(&token, &subject, fingerprint);
        Ok(Inserted { id, reference, token, subject, found })
    }

    /// The request's first events and the Message-IDs that thread later mail onto it.
    async fn record_arrival(
        &self,
        tx: &mut dyn Tx,
        message: &Message<'_>,
        parsed: &Parsed,
        forwarded: Option<&Forwarded>,
        approach: &Approach,
        request: &Inserted,
    ) -> anyhow::Result<()> {
        let (id, now) = (request.id, message.now);
        let detail = match &approach.via {
            Some(v) => format!("Approach from {}, forwarded by {v}", approach.requester),
            None => format!("Approach from {}", approach.requester),
        };
        tx.add_event(
            id,
            now,
            store::Actor::Address(approach.from.clone()),
            EventKind::Received,
            Some(&detail),
        )
        .await?;
        if message.log_only {
            let detail = "Already in the mailbox at first start: logged, not answered";
            tx.add_event(id, now, store::Actor::Gatehouse, EventKind::Backlog, Some(detail)).await?;
        }
        if let Some(earlier) = &request.found.probable {
            let detail = format!("Looks like {}", earlier.reference);
            tx.add_event(id, now, store::Actor::Gatehouse, EventKind::ProbableDuplicate, Some(&detail))
                .await?;
        }
        for mid in parsed.message_id.iter().chain(forwarded.and_then(|f| f.message_id.as_ref())) {
            tx.add_thread_id(mid, id, ThreadDirection::In).await?;
        }
        // The approach's own files are its paper, should the gatekeeper decide `paper`.
        crate::triage::paper::keep_approach_papers(
            tx,
            id,
            &approach.from,
            message.id,
            &parsed.attachment_bodies,
            now,
        )
        .await?;
        Ok(())
    }

    /// Answers the requester and forwarder where allowed, then notifies the gatekeepers,
    /// telling them who was not answered and why.
    async fn notify_new(
        &self,
        tx: &mut dyn Tx,
        message: &Message<'_>,
        parsed: &Parsed,
        forwarded: Option<&Forwarded>,
        approach: &Approach,
        request: &Inserted,
    ) -> anyhow::Result<()> {
        let now = message.now;
        let organisation = self.config.organisation_for(&approach.requester);
        let fields = RequestFacts {
            reference: &request.reference,
            subject: &request.subject,
            requester: approach.requester.as_str(),
            requester_name: approach.requester_name.as_deref(),
            organisation,
            via: approach.via.as_ref().map(EmailAddress::as_str),
            received_at: message.received_at(),
            status: "awaiting_triage",
            decision: None,
            body: &approach.body,
            message_count: 1,
        };
        let view = request_view(&self.config, &fields, &parsed.attachments);
        let warnings = self.answer(tx, request.id, &view, parsed, forwarded, approach, now).await?;
        let sender = sender_display(parsed, &approach.from);
        let about = Provenance { sender, unverified: approach.unverified, warnings, ..Provenance::default() };
        let mail = self.replies.notification(
            request.id,
            &view,
            &request.token,
            "new",
            &approach.body,
            &about,
            request.found.probable.as_ref(),
            &request.found.earlier,
            parsed.attachment_bodies.clone(),
            now,
        )?;
        tx.enqueue(&mail, now).await?;
        let detail = format!("Notification sent to {}", join(&self.config.gatekeepers));
        Ok(tx
            .add_event(request.id, now, store::Actor::Gatehouse, EventKind::GatekeeperNotified, Some(&detail))
            .await?)
    }

    /// The acknowledgement to the requester and, for a forward, the confirmation to the
    /// forwarder — each only where the recipient rule allows (see
    /// [`crate::mailings::recipients`]). Returns what the gatekeeper should be told about who
    /// was not answered, and why.
    #[allow(clippy::too_many_arguments)]
    async fn answer(
        &self,
        tx: &mut dyn Tx,
        request_id: RequestId,
        view: &RequestView,
        parsed: &Parsed,
        forwarded: Option<&Forwarded>,
        approach: &Approach,
        now: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<Vec<String>> {
        let mut warnings = Vec::new();
        if let Some(why) = &parsed.from_ambiguous {
            let why = format!("{why}, so gatehouse cannot tell who sent it: nobody was answered");
            warnings.push(format!("Not answered: {why}."));
            tx.add_event(request_id, now, store::Actor::Gatehouse, EventKind::NotAcknowledged, Some(&why))
                .await?;
            return Ok(warnings);
        }
        let mut allowance = Allowance::per_message();
        let requester = &approach.requester;
        let acknowledged = match self.may_acknowledge(tx, approach, &allowance, &mut warnings, now).await? {
            Ok(cleared) => {
                let thread = match forwarded {
                    Some(f) => Thread { message_id: f.message_id.clone(), references: Vec::new() },
                    None => Thread {
                        message_id: parsed.message_id.clone(),
                        references: parsed.references.clone(),
                    },
                };
                let original_subject =
                    forwarded.and_then(|f| f.subject.clone()).unwrap_or_else(|| view.subject.clone());
                let mail = self.replies.acknowledgement(request_id, view, &original_subject, &thread, now)?;
                self.recipients.send(tx, cleared, &mail, &mut allowance, now).await?;
                let detail = format!("Acknowledgement sent to {requester}");
                tx.add_event(
                    request_id,
                    now,
                    store::Actor::Gatehouse,
                    EventKind::Acknowledged,
                    Some(&detail),
                )
                .await?;
                true
            }
            Err(why) => {
                tx.add_event(
                    request_id,
                    now,
                    store::Actor::Gatehouse,
                    EventKind::NotAcknowledged,
                    Some(&why),
                )
                .await?;
                false
            }
        };
        if let Some(forwarder) = &approach.via {
            let confirm = Confirm { request_id, view, parsed, forwarder, acknowledged };
            self.confirm_forward(tx, &confirm, &mut allowance, &mut warnings, now).await?;
        }
        Ok(warnings)
    }

    /// Whether the requester may be acknowledged (`Err`: why not). A forward's original
    /// sender only when a member really forwarded it and the config acknowledges forwards.
    async fn may_acknowledge(
        &self,
        tx: &mut dyn Tx,
        approach: &Approach,
        allowance: &Allowance,
        warnings: &mut Vec<String>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<Result<crate::mailings::recipients::Cleared, String>> {
        let requester = &approach.requester;
        Ok(match &approach.via {
            Some(v) if !self.recipients.stands_behind_requester(Some(v)) => Err(format!(
                "forwarded by {v}, who is not in [members]: the original sender was not contacted"
            )),
            Some(v) if approach.forward_doubt.is_some() => Err(format!(
                "forwarded from {v}, a member's address, but {}: the original sender was not contacted",
                approach.forward_doubt.as_deref().unwrap_or_default()
            )),
            Some(_) if !self.config.acknowledgements.acknowledge_forwarded => {
                Err("forwarded approaches are not acknowledged (config)".to_string())
            }
            _ => self.recipients.check(tx, requester, Purpose::Answer, allowance, now).await?.inspect_err(
                |why| {
                    warnings.push(format!("{requester} was not sent an acknowledgement: {why}."));
                },
            ),
        })
    }

    /// The confirmation to the member (or anyone) who forwarded an approach, where allowed.
    pub(super) async fn confirm_forward(
        &self,
        tx: &mut dyn Tx,
        c: &Confirm<'_>,
        allowance: &mut Allowance,
        warnings: &mut Vec<String>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<()> {
        let (request_id, forwarder) = (c.request_id, c.forwarder);
        match self.recipients.check(tx, forwarder, Purpose::Answer, allowance, now).await? {
            Ok(cleared) => {
                let thread = Thread {
                    message_id: c.parsed.message_id.clone(),
                    references: c.parsed.references.clone(),
                };
                let mail = self.replies.forward_confirmation(
                    request_id,
                    c.view,
                    forwarder.as_str(),
                    c.acknowledged,
                    &c.parsed.subject,
                    &thread,
                    now,
                )?;
                self.recipients.send(tx, cleared, &mail, allowance, now).await?;
                let detail = format!("Confirmation sent to {forwarder}");
                Ok(tx
                    .add_event(
                        request_id,
                        now,
                        store::Actor::Gatehouse,
                        EventKind::ForwardConfirmed,
                        Some(&detail),
                    )
                    .await?)
            }
            Err(why) => {
                warnings.push(format!("{forwarder} was not sent a confirmation: {why}."));
                Ok(tx
                    .add_event(
                        request_id,
                        now,
                        store::Actor::Gatehouse,
                        EventKind::ForwardNotConfirmed,
                        Some(&why),
                    )
                    .await?)
            }
        }
    }
}

/// What a forward confirmation is about.
pub(super) struct Confirm<'a> {
    pub(super) request_id: RequestId,
    pub(super) view: &'a RequestView,
    pub(super) parsed: &'a Parsed,
    pub(super) forwarder: &'a EmailAddress,
    /// Whether the original sender was acknowledged (the confirmation says so).
    pub(super) acknowledged: bool,
}

fn join(addresses: &[EmailAddress]) -> String {
    addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// 128 random bits, hex: the secret a gatekeeper's reply must carry.
fn new_token() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_128_bit_and_distinct() {
        let a = new_token();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_token());
    }
}
