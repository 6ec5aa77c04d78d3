//! Turning a stored message into its effects: a new request with a reference, a follow-up on
//! an existing one, or just a logged message (automated mail, unparseable bytes).
//!
//! Everything one message causes — the request, its events, its thread, the message's
//! outcome and the inbox checkpoint — is written in one transaction, so a crash at any
//! point either applied all of it or none of it, and the message is simply processed again.

use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Datelike as _, Utc};
use rand::Rng as _;

use crate::classify::{self, Parsed};
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::{Classification, EmailAddress, Reference, requester_display};
use crate::outbox::recipients::{Allowance, Purpose, Recipients};
use crate::store::{
    self, EventKind, MessageId, MessageOutcome, NewRequest, RequestId, RequestRow, ThreadDirection, Tx,
};
use crate::templates::{AttachmentView, RequestView, Templates, human_size};
use crate::triage::{Actor, Attempt, Triage};
use replies::{Provenance, Replies, Thread};

pub mod duplicates;
#[cfg(feature = "fault-injection")]
pub mod fault_injection;
pub mod replies;

/// Where a message sits in the mailbox, so its checkpoint moves with its effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub mailbox: String,
    pub uidvalidity: u32,
    pub uid: u32,
}

/// What parsing made of a message.
pub type ParseResult = Result<Prepared, classify::ParseError>;

/// A group's raw messages handed back, each with what parsing made of it (`None`: over
/// `max_message_bytes`, not parsed).
pub type ParsedGroup = (Vec<Vec<u8>>, Vec<Option<ParseResult>>);

/// A parsed message, with the fingerprint a new request from it would be compared by
/// (duplicate detection) worked out on the parser's thread rather than on the path every
/// message waits on.
#[derive(Debug)]
pub struct Prepared {
    pub parsed: Parsed,
    /// Of the forwarded text for a forward, else of the body; none for automated mail.
    fingerprint: Option<classify::Fingerprint>,
    /// Reply keys quoted in the text (a gatekeeper's reply to a notification), scanned here
    /// rather than inside the store transaction.
    reply_keys: Vec<String>,
}

impl Prepared {
    fn new(parsed: Parsed) -> Self {
        let fingerprint = parsed.automated.is_none().then(|| {
            classify::Fingerprint::of(parsed.forwarded.as_ref().map_or(&parsed.body_text, |f| &f.body_text))
        });
        let reply_keys = crate::triage::reply_keys_in(&parsed.body_text, parsed.body_html.as_deref());
        Self { parsed, fingerprint, reply_keys }
    }
}

/// How far back a closed request still counts as "recent" for duplicate detection.
const DUPLICATE_LOOKBACK_DAYS: i64 = 180;

#[derive(Debug)]
pub struct Processor {
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    /// Whom automatic answers may go to.
    recipients: Recipients,
    replies: Replies,
    triage: Triage,
    duplicates: duplicates::Duplicates,
    /// Wakes the outbox sender as soon as something is queued.
    wake: Arc<tokio::sync::Notify>,
}

impl Processor {
    pub fn new(
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        templates: Arc<Templates>,
        wake: Arc<tokio::sync::Notify>,
    ) -> Self {
        let recipients = Recipients::new(config.clone());
        let replies = Replies::new(config.clone(), templates.clone());
        let triage = Triage::new(config.clone(), templates);
        Self { config, clock, recipients, replies, triage, duplicates: duplicates::Duplicates::new(), wake }
    }

    /// Moves the checkpoint past a message already processed (seen again after a restart or a
    /// UIDVALIDITY change).
    pub async fn advance(&self, tx: &mut dyn Tx, checkpoint: &Checkpoint) -> anyhow::Result<()> {
        Ok(tx
            .set_checkpoint(&checkpoint.mailbox, checkpoint.uidvalidity, checkpoint.uid, self.clock.now())
            .await?)
    }

    /// Sets aside a message that could not be processed (it failed, or stopped gatehouse,
    /// too many times): classified `quarantined`, its raw bytes kept, and the gatekeepers
    /// and the operator told once, in the same transaction, with what is known of it and how
    /// to try it again. The caller moves the checkpoint past it, so the inbox goes on.
    pub async fn quarantine(
        &self,
        tx: &mut dyn Tx,
        id: MessageId,
        raw: &[u8],
        parsed: Option<&ParseResult>,
        why: &str,
    ) -> anyhow::Result<()> {
        let now = self.clock.now();
        let (from, from_address, subject) = match parsed {
            Some(Ok(p)) => {
                let from = p.parsed.from.as_ref();
                let shown = from.map(|m| match &m.name {
                    Some(name) => format!("{name} <{}>", m.address),
                    None => m.address.clone(),
                });
                let address = from.and_then(|m| EmailAddress::parse(&m.address).ok()).map(|a| a.to_string());
                (shown, address, Some(p.parsed.subject.clone()))
            }
            // Not parsed (or parsing is what failed): only what a plain header scan finds.
            _ => {
                let (from, address) = raw_from(raw);
                (from, address, crate::inbox::dedup::first_header(raw, "subject").map(|s| clean_line(&s)))
            }
        };
        tracing::error!("Message {id} is quarantined: {why}");
        let outcome = MessageOutcome {
            classification: Classification::Quarantined,
            received_at: None,
            from_address,
            from_name: None,
            subject: subject.clone(),
            attachments: None,
            detail: Some(why.to_string()),
            request_id: None,
        };
        let subject = subject.filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "(no subject)".into());
        let from = from.unwrap_or_else(|| "(unknown)".into());
        let draft = crate::outbox::Draft::system_alert(
            &self.config.alert_recipients(),
            format!("A message could not be processed and is set aside: {subject}"),
            format!(
                "gatehouse could not process a message that arrived in the shared mailbox, so it has set it aside (quarantined) and gone on with the mail after it. It has not been logged as a request, and its sender has not been answered.\n\nStored message: {id}\nFrom:    {from}\nSubject: {subject}\nWhy:     {why}\n\nIts exact bytes are kept in gatehouse's database, and it is still in the shared mailbox. Please read it there and, if it is an approach, log it by forwarding it to the shared mailbox.\n\nTo have gatehouse try it again (after an upgrade, say), whoever looks after gatehouse can run:\n\n    gatehouse messages retry {id}\n"
            ),
        );
        tx.finish_message(id, &outcome, now).await?;
        // One alert per message set aside, and once a day at most: a retry that sets it
        // aside again the same day tells nobody twice. Setting the message aside must not
        // fail with the alert: without it the message is still kept and listed as
        // quarantined (a failed write, though, fails the transaction, as it must).
        let composer = crate::outbox::Composer::new(self.config.clone());
        // Each message set aside is one alert, up to a cap a day: past it, a flood of poison
        // messages (anyone can send them) makes one "and more" alert a day, not one each.
        let told =
            tx.alerts_sent_since(QUARANTINE_KEY_PREFIX, now - crate::outbox::alerts::REPEAT_AFTER).await?;
        let (key, draft) = if told < QUARANTINE_ALERTS_PER_DAY {
            (format!("{QUARANTINE_KEY_PREFIX}{id}"), draft)
        } else {
            (format!("{QUARANTINE_KEY_PREFIX}more"), quarantine_digest(&self.config.alert_recipients()))
        };
        let step = tx.begin_step().await?;
        let raised = crate::outbox::alerts::raise_in(tx, &composer, now, &key, draft).await;
        match raised {
            Ok(_) => tx.end_step(step, true).await?,
            Err(e) if crate::store::is_storage_trouble(&e) => return Err(e),
            Err(e) => {
                tx.end_step(step, false).await?;
                tracing::error!("Cannot tell anyone that message {id} is quarantined: {e:#}");
            }
        }
        Ok(())
    }

    /// Parses a group of messages, on a thread of its own (CPU work, off the async workers;
    /// one thread for the group, since starting one per message cost more than parsing
    /// most of them). A message over `max_message_bytes` is not parsed: `None`.
    pub async fn parse_group(&self, raws: Vec<Vec<u8>>) -> ParsedGroup {
        let own = self.recipients.own_addresses();
        let domain = self.config.smtp.from.address.domain().to_string();
        let limit = self.config.imap.max_message_bytes;
        let attach_max = self.config.attach_max_bytes;
        let count = raws.len();
        let job = tokio::task::spawn_blocking(move || {
            let ctx = classify::Context { own_addresses: &own, own_message_id_domain: Some(&domain) };
            let wanted: Vec<&[u8]> = raws.iter().filter(|r| r.len() <= limit).map(Vec::as_slice).collect();
            let mut parsed =
                classify::parse_many(&wanted, &ctx, attach_max).into_iter().map(|p| p.map(Prepared::new));
            let results = raws.iter().map(|r| if r.len() <= limit { parsed.next() } else { None }).collect();
            (raws, results)
        });
        match job.await {
            Ok(done) => done,
            // The parser's own thread catches its panics; this is the blocking pool failing.
            Err(e) => {
                let why = format!("the mail parser could not run: {e}");
                (Vec::new(), (0..count).map(|_| Some(Err(classify::ParseError::new(why.clone())))).collect())
            }
        }
    }

    /// Processes the stored message `id` (whose bytes are `raw`, and `parsed` what
    /// [`Processor::parse_group`] made of them) inside `tx`, which the caller commits
    /// together with the checkpoint (the inbox commits several messages at a time); then
    /// call [`Processor::committed`]. `log_only` is set for the backlog found at first
    /// start: logged as requests, never answered.
    pub async fn process(
        &self,
        tx: &mut dyn Tx,
        id: MessageId,
        raw: &[u8],
        parsed: Option<&ParseResult>,
        log_only: bool,
        internal_date: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Classification> {
        #[cfg(feature = "fault-injection")]
        fault_injection::check(raw)?;
        let Some(parsed) = parsed else {
            return self.oversized(tx, id, raw, internal_date).await;
        };
        let now = self.clock.now();
        match parsed {
            Ok(prepared) => self.apply(tx, id, prepared, raw, log_only, internal_date.unwrap_or(now)).await,
            Err(e) => {
                self.unparseable(tx, id, raw, &e.to_string(), internal_date).await?;
                Ok(Classification::Unparseable)
            }
        }
    }

    /// Tells the outbox that a transaction holding new emails was committed.
    pub fn committed(&self) {
        self.wake.notify_one();
    }

    /// A message over `max_message_bytes`: kept raw and logged, not parsed, and the
    /// gatekeepers told so a person deals with it.
    async fn oversized(
        &self,
        tx: &mut dyn Tx,
        id: MessageId,
        raw: &[u8],
        received: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Classification> {
        let mb = |n: usize| format!("{:.1} MB", n as f64 / (1024.0 * 1024.0));
        let why = format!(
            "too large to process: {} (the limit, imap.max_message_bytes, is {}); kept as received",
            mb(raw.len()),
            mb(self.config.imap.max_message_bytes)
        );
        self.not_logged(
            tx,
            id,
            raw,
            received,
            &why,
            "A message too large to log automatically",
            "log it by forwarding the text without the large attachments",
        )
        .await?;
        Ok(Classification::Unparseable)
    }

    /// A message that cannot be logged as a request (not an email at all, or no From
    /// address gatehouse can read): kept raw and logged as unparseable, and the gatekeepers
    /// told, so that an approach from a broken client or server is never given up unseen.
    async fn unparseable(
        &self,
        tx: &mut dyn Tx,
        id: MessageId,
        raw: &[u8],
        why: &str,
        received: Option<DateTime<Utc>>,
    ) -> anyhow::Result<()> {
        self.not_logged(
            tx,
            id,
            raw,
            received,
            why,
            "A message that could not be logged as a request",
            "log it by forwarding it to the shared mailbox",
        )
        .await
    }

    /// Records message `id` as unparseable with `why`, and tells whoever gets alerts what
    /// is known of it (From and Subject as a plain header scan finds them) and what to do.
    #[allow(clippy::too_many_arguments)]
    async fn not_logged(
        &self,
        tx: &mut dyn Tx,
        id: MessageId,
        raw: &[u8],
        received: Option<DateTime<Utc>>,
        why: &str,
        headline: &str,
        advice: &str,
    ) -> anyhow::Result<()> {
        let now = self.clock.now();
        let (from, from_address) = raw_from(raw);
        let from = from.unwrap_or_else(|| "(unknown)".into());
        let subject =
            crate::inbox::dedup::first_header(raw, "subject").map(|s| clean_line(&s)).unwrap_or_default();
        tracing::warn!("Message {id} from {from} is not logged as a request: {why}");
        let outcome = MessageOutcome {
            classification: Classification::Unparseable,
            received_at: received,
            from_address,
            from_name: None,
            subject: Some(subject.clone()),
            attachments: None,
            detail: Some(why.to_string()),
            request_id: None,
        };
        let draft = crate::outbox::Draft::system_alert(
            &self.config.alert_recipients(),
            format!("{headline}: {subject}"),
            format!(
                "A message arrived in the shared mailbox that gatehouse did not log as a request: {why}.\n\nStored message: {id}\nFrom:    {from}\nSubject: {subject}\n\nNobody has been answered. It is still in the shared mailbox. Please read it there and, if it is an approach, {advice}.\n"
            ),
        );
        let mail = crate::outbox::Composer::new(self.config.clone()).compose(&draft)?;
        tx.finish_message(id, &outcome, now).await?;
        tx.enqueue(&mail, now).await?;
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut dyn Tx,
        id: MessageId,
        prepared: &Prepared,
        raw: &[u8],
        log_only: bool,
        received_at: DateTime<Utc>,
    ) -> anyhow::Result<Classification> {
        let parsed = &prepared.parsed;
        let now = self.clock.now();
        let from = parsed.from.as_ref().and_then(|m| EmailAddress::parse(&m.address).ok());
        let mut outcome = MessageOutcome {
            classification: Classification::New,
            received_at: Some(received_at),
            from_address: from.as_ref().map(ToString::to_string),
            from_name: parsed.from.as_ref().and_then(|m| m.name.clone()),
            subject: Some(parsed.subject.clone()),
            attachments: Some(serde_json::to_string(
                &parsed
                    .attachments
                    .iter()
                    .map(|a| serde_json::json!({"name": a.name, "content_type": a.content_type, "size": a.size}))
                    .collect::<Vec<_>>(),
            )?),
            detail: None,
            request_id: None,
        };

        if let Some(auto) = &parsed.automated {
            outcome.classification = Classification::Automated;
            outcome.detail = Some(auto.reason.clone());
            // A bounce of something we sent: link it to the outbox entry and its request.
            if let Some(report) = &parsed.report
                && let Some((outbox_id, request_id, kind)) =
                    tx.outbox_for_message_ids(&report.original_message_ids).await?
            {
                let failed = report.failed_recipients.join(", ");
                let why = report.diagnostic.clone().or_else(|| report.status.clone()).unwrap_or_default();
                let detail = format!("bounce of outbox #{outbox_id} ({kind} to {failed}): {why}");
                tx.mark_bounced(outbox_id, &detail).await?;
                if let Some(request_id) = request_id {
                    tx.add_event(request_id, now, store::Actor::Gatehouse, EventKind::Bounced, Some(&detail))
                        .await?;
                }
                outcome.detail = Some(format!("{}; {detail}", auto.reason));
            }
            tx.finish_message(id, &outcome, now).await?;
            return Ok(Classification::Automated);
        }

        let Some(from) = from else {
            // Found by an attack: a From written as an encoded word (a broken web form), or
            // none at all, was logged here and never shown to anyone.
            self.unparseable(tx, id, raw, "no usable From address", Some(received_at)).await?;
            return Ok(Classification::Unparseable);
        };

        // A gatekeeper's reply to a notification (or an attempt at one).
        match self.triage.authorise(tx, parsed, &prepared.reply_keys, raw, &from).await? {
            Attempt::NotTriage => {}
            Attempt::Authorised(request) => {
                outcome.request_id = Some(request.id);
                let result = match self.triage.read_reply(parsed, &request) {
                    Ok(reply) => {
                        self.triage
                            .decide(tx, &request, &reply, &Actor::Gatekeeper(from.clone()), now)
                            .await?
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
                        tx.add_event(
                            request.id,
                            now,
                            store::Actor::Address(from.clone()),
                            EventKind::TriageNotUnderstood,
                            Some(&e.to_string()),
                        )
                        .await?;
                        let mail = self.triage.error_reply(
                            std::slice::from_ref(&from),
                            Some(&request.reference),
                            &e.to_string(),
                            parsed.message_id.as_deref(),
                            now,
                        )?;
                        tx.enqueue(&mail, now).await?;
                    }
                }
                tx.finish_message(id, &outcome, now).await?;
                return Ok(outcome.classification);
            }
            Attempt::Refused { reason, request } => {
                tracing::warn!("Refused a triage reply from {from}: {reason}");
                outcome.classification = Classification::Rejected;
                outcome.detail = Some(format!("refused: {reason}"));
                outcome.request_id = request.as_ref().map(|r| r.id);
                if let Some(r) = &request {
                    tx.add_event(
                        r.id,
                        now,
                        store::Actor::Address(from.clone()),
                        EventKind::TriageRefused,
                        Some(&reason),
                    )
                    .await?;
                }
                // A gatekeeper hears why; anyone else's attempt is reported to the
                // gatekeepers rather than answered (the From may be forged).
                let to = if self.config.is_gatekeeper(&from) {
                    vec![from.clone()]
                } else {
                    self.config.gatekeepers.clone()
                };
                let error = if self.config.is_gatekeeper(&from) {
                    reason.clone()
                } else {
                    format!("a reply from {from} tried to decide it and was refused: {reason}")
                };
                let mail = self.triage.error_reply(
                    &to,
                    request.as_ref().map(|r| r.reference.as_str()),
                    &error,
                    parsed.message_id.as_deref(),
                    now,
                )?;
                tx.enqueue(&mail, now).await?;
                tx.finish_message(id, &outcome, now).await?;
                return Ok(Classification::Rejected);
            }
        }

        // Replies and follow-ups: the thread first, then a reference in the subject. Anyone
        // can quote a reference, so the follow-up is shown as its real sender's, and one from
        // a stranger changes nothing.
        if let Some(request) = self.thread_of(tx, parsed).await? {
            let stranger = !speaks_for(&self.config, &request, &from);
            if !stranger {
                self.triage.reopen_if_waiting(tx, &request, &from, now).await?;
            }
            let classification = Classification::FollowUp;
            outcome.classification = classification;
            outcome.request_id = Some(request.id);
            let sender =
                requester_display(parsed.from.as_ref().and_then(|m| m.name.as_deref()), from.as_str());
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
            if !log_only {
                let mut view = request_view(&self.config, &RequestFields::from_row(&request), parsed);
                view.message_count = request.message_count + 1;
                let text = classify::reply_text(&parsed.body_text, parsed.body_html.as_deref());
                let about = Provenance { sender, stranger, ..Provenance::default() };
                // A stranger's files are listed, not carried into the gatekeepers' inbox
                // under the request's name.
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
                tx.add_event(
                    request.id,
                    now,
                    store::Actor::Gatehouse,
                    EventKind::GatekeeperNotified,
                    Some("Follow-up sent to the gatekeeper"),
                )
                .await?;
            }
            tx.finish_message(id, &outcome, now).await?;
            return Ok(classification);
        }

        // A forward makes the original sender the requester and the forwarder `via`; not when
        // the From names several senders, one of which may be a member.
        let forwarded = parsed
            .forwarded
            .as_ref()
            .filter(|_| parsed.from_ambiguous.is_none())
            .and_then(|f| EmailAddress::parse(&f.from.address).ok().map(|a| (f, a)))
            .filter(|(_, original)| *original != from);
        let (requester, requester_name, via, subject, body, classification) = match &forwarded {
            Some((f, original)) => (
                original.clone(),
                f.from.name.clone(),
                Some(from.clone()),
                f.subject
                    .clone()
                    .filter(|s| !s.trim().is_empty())
                    .unwrap_or_else(|| strip_forward_prefix(&parsed.subject)),
                f.body_text.clone(),
                Classification::Forwarded,
            ),
            None => (
                from.clone(),
                parsed.from.as_ref().and_then(|m| m.name.clone()),
                None,
                parsed.subject.clone(),
                parsed.body_text.clone(),
                Classification::New,
            ),
        };
        // A member's forward speaks for its original sender only if the member really sent
        // it: with `[triage] authserv_id` set, the receiving server must vouch for the From,
        // as for a gatekeeper's decision, or anyone could forge a member's address to have
        // gatehouse write to whomever the forward names.
        let forward_doubt = match (&via, self.config.triage.authserv_id.as_deref()) {
            (Some(v), Some(server)) if self.config.is_member(v) => {
                crate::triage::auth::verdict(server, raw, v.domain()).refusal(server)
            }
            _ => None,
        };
        let unverified = !self.recipients.stands_behind_requester(via.as_ref()) || forward_doubt.is_some();
        let organisation = self.config.organisation_for(&requester).map(str::to_string);
        // Worked out while parsing, unless the forward turned out to be from the sender.
        let fingerprint = match &prepared.fingerprint {
            Some(f) if forwarded.is_some() == parsed.forwarded.is_some() => f.clone(),
            _ => classify::Fingerprint::of(&body),
        };
        let found = self
            .duplicates
            .find(
                tx,
                requester.as_str(),
                organisation.as_deref(),
                now - chrono::Duration::days(DUPLICATE_LOOKBACK_DAYS),
                &subject,
                &fingerprint,
                !log_only,
            )
            .await?;
        let probable = found.probable.as_ref();
        let subject = if subject.trim().is_empty() { "(no subject)".to_string() } else { subject };
        let token = new_token();

        let year = received_at.with_timezone(&self.config.service.timezone).year();
        let seq = tx.next_reference_seq(year).await?;
        let reference =
            Reference { prefix: self.config.service.reference_prefix.clone(), year, seq }.to_string();
        let request_id = tx
            .insert_request(
                &NewRequest {
                    reference: reference.clone(),
                    ref_year: year,
                    ref_seq: seq,
                    requester: requester.to_string(),
                    requester_name: requester_name.clone(),
                    organisation: organisation.clone(),
                    via: via.as_ref().map(ToString::to_string),
                    subject: subject.clone(),
                    body: body.clone(),
                    fingerprint: fingerprint.clone(),
                    received_at,
                    probable_duplicate_of: probable.map(|c| c.id),
                    token: token.clone(),
                    answer: !log_only,
                    requester_unverified: unverified,
                },
                now,
            )
            .await?;
        self.duplicates.remember(&token, &subject, fingerprint);
        let detail = match &via {
            Some(v) => format!("Approach from {requester}, forwarded by {v}"),
            None => format!("Approach from {requester}"),
        };
        tx.add_event(
            request_id,
            now,
            store::Actor::Address(from.clone()),
            EventKind::Received,
            Some(&detail),
        )
        .await?;
        if log_only {
            tx.add_event(
                request_id,
                now,
                store::Actor::Gatehouse,
                EventKind::Backlog,
                Some("Already in the mailbox at first start: logged, not answered"),
            )
            .await?;
        }
        if let Some(earlier) = probable {
            tx.add_event(
                request_id,
                now,
                store::Actor::Gatehouse,
                EventKind::ProbableDuplicate,
                Some(&format!("Looks like {}", earlier.reference)),
            )
            .await?;
        }
        if let Some(mid) = &parsed.message_id {
            tx.add_thread_id(mid, request_id, ThreadDirection::In).await?;
        }
        if let Some((f, _)) = &forwarded
            && let Some(mid) = &f.message_id
        {
            tx.add_thread_id(mid, request_id, ThreadDirection::In).await?;
        }
        if !log_only {
            let fields = RequestFields {
                reference: &reference,
                subject: &subject,
                requester: requester.as_str(),
                requester_name: requester_name.as_deref(),
                organisation: organisation.as_deref(),
                via: via.as_ref().map(EmailAddress::as_str),
                received_at,
                status: "awaiting_triage",
                decision: None,
                body: &body,
                message_count: 1,
            };
            let view = request_view(&self.config, &fields, parsed);
            let warnings = self
                .answer(
                    &mut *tx,
                    request_id,
                    &view,
                    parsed,
                    forwarded.as_ref().map(|(f, _)| *f),
                    &requester,
                    via.as_ref(),
                    forward_doubt.as_deref(),
                    now,
                )
                .await?;
            let about = Provenance {
                sender: requester_display(
                    parsed.from.as_ref().and_then(|m| m.name.as_deref()),
                    from.as_str(),
                ),
                stranger: false,
                unverified,
                warnings,
            };
            let mail = self.replies.notification(
                request_id,
                &view,
                &token,
                "new",
                &body,
                &about,
                probable,
                &found.earlier,
                parsed.attachment_bodies.clone(),
                now,
            )?;
            tx.enqueue(&mail, now).await?;
            tx.add_event(
                request_id,
                now,
                store::Actor::Gatehouse,
                EventKind::GatekeeperNotified,
                Some(&format!("Notification sent to {}", join(&self.config.gatekeepers))),
            )
            .await?;
        }
        outcome.classification = classification;
        outcome.request_id = Some(request_id);
        tx.finish_message(id, &outcome, now).await?;
        tracing::info!("{reference}: {} from {requester}", classification.as_str());
        Ok(classification)
    }

    /// The request this message replies to, by Message-ID thread, then by a reference in
    /// the subject.
    ///
    /// An anonymised (erased) request is nobody's thread: mail quoting its reference is a
    /// new approach, held, retained and erasable as its own, rather than personal data added
    /// back to a request that retention never looks at again.
    async fn thread_of(&self, tx: &mut dyn Tx, parsed: &Parsed) -> anyhow::Result<Option<RequestRow>> {
        let mut ids: Vec<String> = parsed.in_reply_to.clone();
        ids.extend(parsed.references.iter().cloned());
        let found = match tx.request_for_thread(&ids).await? {
            Some(request) => Some(request),
            None => match classify::find_reference(&parsed.subject, &self.config.service.reference_prefix) {
                Some(reference) => {
                    tx.find_request(&reference).await.context("Cannot look up the reference")?
                }
                None => None,
            },
        };
        Ok(found.filter(|r| !r.is_anonymised()))
    }

    /// The acknowledgement to the requester and, for a forward, the confirmation to the
    /// forwarder — each only where the recipient rule allows (see
    /// [`crate::outbox::recipients`]). Returns what the gatekeeper should be told about who
    /// was not answered, and why.
    #[allow(clippy::too_many_arguments)]
    async fn answer(
        &self,
        tx: &mut dyn Tx,
        request_id: RequestId,
        view: &RequestView,
        parsed: &Parsed,
        forwarded: Option<&classify::Forwarded>,
        requester: &EmailAddress,
        via: Option<&EmailAddress>,
        forward_doubt: Option<&str>,
        now: DateTime<Utc>,
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
        let mut acknowledged = false;
        let cleared = match via {
            Some(v) if !self.recipients.stands_behind_requester(Some(v)) => Err(format!(
                "forwarded by {v}, who is not in [members]: the original sender was not contacted"
            )),
            Some(v) if forward_doubt.is_some() => Err(format!(
                "forwarded from {v}, a member's address, but {}: the original sender was not contacted",
                forward_doubt.unwrap_or_default()
            )),
            Some(_) if !self.config.acknowledgements.acknowledge_forwarded => {
                Err("forwarded approaches are not acknowledged (config)".to_string())
            }
            _ => self.recipients.check(tx, requester, Purpose::Answer, &allowance, now).await?.inspect_err(
                |why| {
                    warnings.push(format!("{requester} was not sent an acknowledgement: {why}."));
                },
            ),
        };
        match cleared {
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
                tx.add_event(
                    request_id,
                    now,
                    store::Actor::Gatehouse,
                    EventKind::Acknowledged,
                    Some(&format!("Acknowledgement sent to {requester}")),
                )
                .await?;
                acknowledged = true;
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
            }
        }
        if let Some(forwarder) = via {
            match self.recipients.check(tx, forwarder, Purpose::Answer, &allowance, now).await? {
                Ok(cleared) => {
                    let thread = Thread {
                        message_id: parsed.message_id.clone(),
                        references: parsed.references.clone(),
                    };
                    let mail = self.replies.forward_confirmation(
                        request_id,
                        view,
                        forwarder.as_str(),
                        acknowledged,
                        &parsed.subject,
                        &thread,
                        now,
                    )?;
                    self.recipients.send(tx, cleared, &mail, &mut allowance, now).await?;
                    tx.add_event(
                        request_id,
                        now,
                        store::Actor::Gatehouse,
                        EventKind::ForwardConfirmed,
                        Some(&format!("Confirmation sent to {forwarder}")),
                    )
                    .await?;
                }
                Err(why) => {
                    warnings.push(format!("{forwarder} was not sent a confirmation: {why}."));
                    tx.add_event(
                        request_id,
                        now,
                        store::Actor::Gatehouse,
                        EventKind::ForwardNotConfirmed,
                        Some(&why),
                    )
                    .await?
                }
            }
        }
        Ok(warnings)
    }
}

/// Whether `sender` may speak for `request`: its requester or forwarder (any `+tag`), or
/// someone of the same organisation as `[organisations]` names it. Not merely the same
/// domain: on NHSmail every practice, trust and ICB shares `nhs.net`.
fn speaks_for(config: &Config, request: &RequestRow, sender: &EmailAddress) -> bool {
    let known: Vec<EmailAddress> = std::iter::once(request.requester.as_str())
        .chain(request.via.as_deref())
        .filter_map(|a| EmailAddress::parse(a).ok())
        .collect();
    let person = sender.person();
    if known.iter().any(|k| k.person() == person) {
        return true;
    }
    match config.organisation_for(sender) {
        Some(org) => {
            request.organisation.as_deref() == Some(org)
                || known.iter().any(|k| config.organisation_for(k) == Some(org))
        }
        None => false,
    }
}

/// What a request view is built from, whether the request is being created or already
/// exists.
struct RequestFields<'a> {
    reference: &'a str,
    subject: &'a str,
    requester: &'a str,
    requester_name: Option<&'a str>,
    organisation: Option<&'a str>,
    via: Option<&'a str>,
    received_at: DateTime<Utc>,
    status: &'a str,
    decision: Option<&'a str>,
    body: &'a str,
    message_count: i64,
}

impl<'a> RequestFields<'a> {
    fn from_row(r: &'a RequestRow) -> Self {
        Self {
            reference: &r.reference,
            subject: &r.subject,
            requester: &r.requester,
            requester_name: r.requester_name.as_deref(),
            organisation: r.organisation.as_deref(),
            via: r.via.as_deref(),
            received_at: r.received_at,
            status: r.status.as_str(),
            decision: r.decision.map(|d| d.as_str()),
            body: &r.body,
            message_count: r.message_count,
        }
    }
}

fn request_view(config: &Config, f: &RequestFields<'_>, parsed: &Parsed) -> RequestView {
    let requester_display = requester_display(f.requester_name, f.requester);
    RequestView {
        reference: f.reference.to_string(),
        subject: f.subject.to_string(),
        requester: f.requester.to_string(),
        requester_name: f.requester_name.map(str::to_string),
        requester_display,
        organisation: f.organisation.map(str::to_string),
        via: f.via.map(str::to_string),
        received: f
            .received_at
            .with_timezone(&config.service.timezone)
            .format("%A %-d %B %Y, %H:%M")
            .to_string(),
        status: f.status.to_string(),
        decision: f.decision.map(str::to_string),
        body: f.body.to_string(),
        attachments: parsed
            .attachments
            .iter()
            .map(|a| AttachmentView {
                name: a.name.clone().unwrap_or_else(|| "(unnamed)".into()),
                content_type: a.content_type.clone(),
                size: human_size(a.size),
            })
            .collect(),
        message_count: f.message_count,
    }
}

/// The From header as written (cleaned) and its address, read without parsing the message:
/// for messages too large to parse, or whose parsing is what failed.
fn raw_from(raw: &[u8]) -> (Option<String>, Option<String>) {
    let Some(from) = crate::inbox::dedup::first_header(raw, "from").map(|f| clean_line(&f)) else {
        return (None, None);
    };
    let inner = from.rsplit_once('<').and_then(|(_, a)| a.split_once('>')).map_or(from.as_str(), |(a, _)| a);
    let address = EmailAddress::parse(inner).ok().map(|a| a.to_string());
    (Some(from), address)
}

/// A header value from raw bytes made fit for one line of an alert: no control characters,
/// at most 200 characters.
fn clean_line(value: &str) -> String {
    let line: String = value.chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect();
    line.trim().to_string()
}

fn join(addresses: &[EmailAddress]) -> String {
    addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// 128 random bits, hex: the secret a gatekeeper's reply must carry.
fn new_token() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

fn strip_forward_prefix(subject: &str) -> String {
    let mut s = subject.trim();
    loop {
        let lower = s.to_ascii_lowercase();
        let cut = ["fwd:", "fw:", "fwd :", "fw :"].iter().find(|p| lower.starts_with(*p)).map(|p| p.len());
        match cut {
            Some(n) => s = s.get(n..).unwrap_or_default().trim_start(),
            None => return s.to_string(),
        }
    }
}

/// Where the keys of quarantine alerts start (`quarantined:ID`, `quarantined:more`).
const QUARANTINE_KEY_PREFIX: &str = "quarantined:";

/// Messages set aside that are each told in an alert of their own within a day.
pub const QUARANTINE_ALERTS_PER_DAY: i64 = 5;

/// The one alert a day for the messages set aside past [`QUARANTINE_ALERTS_PER_DAY`]: it
/// names none of them (their senders' words stay out of it) and says where they are listed.
fn quarantine_digest(recipients: &[crate::domain::EmailAddress]) -> crate::outbox::Draft {
    crate::outbox::Draft::system_alert(
        recipients,
        "More messages could not be processed and are set aside".into(),
        format!(
            "gatehouse has set aside (quarantined) more than {QUARANTINE_ALERTS_PER_DAY} messages in a day, so it no longer sends an alert for each: a flood of mail it cannot process may be deliberate. None of them has been logged as a request or answered, and they are still in the shared mailbox.\n\nWhoever looks after gatehouse can list them all with:\n\n    gatehouse messages list --format json\n\n(classification \"quarantined\"), and try one again with `gatehouse messages retry ID`. Messages set aside after this are not alerted one by one until a day has passed.\n"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_prefixes_are_stripped() {
        assert_eq!(strip_forward_prefix("FW: Fwd: Phlebotomy"), "Phlebotomy");
        assert_eq!(strip_forward_prefix("Phlebotomy"), "Phlebotomy");
    }

    #[test]
    fn tokens_are_128_bit_and_distinct() {
        let a = new_token();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_token());
    }
}
