//! Turning a stored message into its effects: a new request with a reference, a follow-up on
//! an existing one, or just a logged message (automated mail, unparseable bytes).
//!
//! Everything one message causes — the request, its events, its thread, the message's
//! outcome and the inbox checkpoint — is written in one transaction, so a crash at any
//! point either applied all of it or none of it, and the message is simply processed again.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Datelike as _, Utc};
use rand::Rng as _;

use crate::classify::{self, Parsed};
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::{Classification, EmailAddress, Reference};
use crate::store::{MessageOutcome, NewRequest, RequestRow, SharedStore, Tx};

/// Where a message sits in the mailbox, so its checkpoint moves with its effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub mailbox: String,
    pub uidvalidity: u32,
    pub uid: u32,
}

/// How similar two approaches must be to be shown to the gatekeeper as probably the same.
const DUPLICATE_THRESHOLD: f64 = 0.6;
/// How far back a closed request still counts as "recent" for duplicate detection.
const DUPLICATE_LOOKBACK_DAYS: i64 = 180;

#[derive(Debug)]
pub struct Processor {
    config: Arc<Config>,
    store: SharedStore,
    clock: Arc<dyn Clock>,
    own_addresses: Vec<String>,
}

impl Processor {
    pub fn new(config: Arc<Config>, store: SharedStore, clock: Arc<dyn Clock>) -> Self {
        let mut own_addresses = vec![config.smtp.from.address.to_string()];
        if let Ok(a) = EmailAddress::parse(&config.imap.username)
            && !own_addresses.contains(&a.to_string())
        {
            own_addresses.push(a.to_string());
        }
        Self {
            config,
            store,
            clock,
            own_addresses,
        }
    }

    /// Moves the checkpoint past a message already processed (seen again after a restart or a
    /// UIDVALIDITY change).
    pub async fn advance(&self, checkpoint: &Checkpoint) -> anyhow::Result<()> {
        let mut tx = self.store.begin().await?;
        tx.set_checkpoint(
            &checkpoint.mailbox,
            checkpoint.uidvalidity,
            checkpoint.uid,
            self.clock.now(),
        )
        .await?;
        tx.commit().await
    }

    /// Records a message that could not be processed, so the inbox moves on without losing
    /// it (its raw bytes stay stored).
    pub async fn give_up(
        &self,
        id: i64,
        why: &str,
        checkpoint: Option<&Checkpoint>,
    ) -> anyhow::Result<()> {
        let outcome = MessageOutcome {
            classification: Classification::Unparseable,
            received_at: None,
            from_address: None,
            from_name: None,
            subject: None,
            attachments: None,
            detail: Some(format!("processing failed: {why}")),
            request_id: None,
        };
        let mut tx = self.store.begin().await?;
        tx.finish_message(id, &outcome, self.clock.now()).await?;
        if let Some(c) = checkpoint {
            tx.set_checkpoint(&c.mailbox, c.uidvalidity, c.uid, self.clock.now())
                .await?;
        }
        tx.commit().await
    }

    /// Processes the stored message `id` (whose bytes are `raw`). `log_only` is set for the
    /// backlog found at first start: logged as requests, never answered.
    pub async fn process(
        &self,
        id: i64,
        raw: &[u8],
        log_only: bool,
        internal_date: Option<DateTime<Utc>>,
        checkpoint: Option<&Checkpoint>,
    ) -> anyhow::Result<Classification> {
        let now = self.clock.now();
        let own: Vec<String> = self.own_addresses.clone();
        let ctx = classify::Context {
            own_addresses: &own,
            own_message_id_domain: Some(self.config.smtp.from.address.domain()),
        };
        // mail-parser is not supposed to panic, but a panic here must not take the inbox down.
        let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| classify::parse(raw, &ctx)));
        let mut tx = self.store.begin().await?;
        let classification = match parsed {
            Ok(Ok(parsed)) => {
                self.apply(
                    &mut *tx,
                    id,
                    &parsed,
                    log_only,
                    internal_date.unwrap_or(now),
                )
                .await?
            }
            Ok(Err(e)) => {
                self.unparseable(&mut *tx, id, &e.to_string(), internal_date)
                    .await?;
                Classification::Unparseable
            }
            Err(_) => {
                tracing::error!(
                    "The mail parser panicked on message {id}; it is kept raw and logged as unparseable"
                );
                self.unparseable(
                    &mut *tx,
                    id,
                    "the mail parser crashed on this message",
                    internal_date,
                )
                .await?;
                Classification::Unparseable
            }
        };
        if let Some(c) = checkpoint {
            tx.set_checkpoint(&c.mailbox, c.uidvalidity, c.uid, now)
                .await?;
        }
        tx.commit().await?;
        Ok(classification)
    }

    async fn unparseable(
        &self,
        tx: &mut dyn Tx,
        id: i64,
        why: &str,
        received: Option<DateTime<Utc>>,
    ) -> anyhow::Result<()> {
        tracing::warn!("Message {id} could not be parsed ({why}); kept raw");
        let outcome = MessageOutcome {
            classification: Classification::Unparseable,
            received_at: received,
            from_address: None,
            from_name: None,
            subject: None,
            attachments: None,
            detail: Some(why.to_string()),
            request_id: None,
        };
        tx.finish_message(id, &outcome, self.clock.now()).await
    }

    async fn apply(
        &self,
        tx: &mut dyn Tx,
        id: i64,
        parsed: &Parsed,
        log_only: bool,
        received_at: DateTime<Utc>,
    ) -> anyhow::Result<Classification> {
        let now = self.clock.now();
        let from = parsed
            .from
            .as_ref()
            .and_then(|m| EmailAddress::parse(&m.address).ok());
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
            tx.finish_message(id, &outcome, now).await?;
            return Ok(Classification::Automated);
        }

        let Some(from) = from else {
            outcome.classification = Classification::Unparseable;
            outcome.detail = Some("no usable From address".into());
            tx.finish_message(id, &outcome, now).await?;
            return Ok(Classification::Unparseable);
        };

        // Replies and follow-ups: the thread first, then a reference in the subject.
        if let Some(request) = self.thread_of(parsed).await? {
            let classification = Classification::FollowUp;
            outcome.classification = classification;
            outcome.request_id = Some(request.id);
            tx.add_event(
                request.id,
                now,
                from.as_str(),
                "follow_up",
                Some(&format!("Message from {from}: {}", parsed.subject)),
            )
            .await?;
            if let Some(mid) = &parsed.message_id {
                tx.add_thread_id(mid, request.id, "in").await?;
            }
            tx.finish_message(id, &outcome, now).await?;
            return Ok(classification);
        }

        // A forward makes the original sender the requester and the forwarder `via`.
        let forwarded = parsed
            .forwarded
            .as_ref()
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
        let organisation = self.config.organisation_for(&requester).map(str::to_string);
        let probable = self
            .probable_duplicate(&requester, organisation.as_deref(), &subject, &body, now)
            .await?;

        let year = received_at
            .with_timezone(&self.config.service.timezone)
            .year();
        let seq = tx.next_reference_seq(year).await?;
        let reference = Reference {
            prefix: self.config.service.reference_prefix.clone(),
            year,
            seq,
        }
        .to_string();
        let request_id = tx
            .insert_request(&NewRequest {
                reference: reference.clone(),
                ref_year: year,
                ref_seq: seq,
                requester: requester.to_string(),
                requester_name,
                organisation,
                via: via.as_ref().map(ToString::to_string),
                subject: if subject.trim().is_empty() {
                    "(no subject)".into()
                } else {
                    subject
                },
                body,
                received_at,
                probable_duplicate_of: probable.as_ref().map(|(id, _)| *id),
                token: new_token(),
                answer: !log_only,
            })
            .await?;
        let detail = match &via {
            Some(v) => format!("Approach from {requester}, forwarded by {v}"),
            None => format!("Approach from {requester}"),
        };
        tx.add_event(request_id, now, from.as_str(), "received", Some(&detail))
            .await?;
        if log_only {
            tx.add_event(
                request_id,
                now,
                "gatehouse",
                "backlog",
                Some("Already in the mailbox at first start: logged, not answered"),
            )
            .await?;
        }
        if let Some((_, earlier)) = &probable {
            tx.add_event(
                request_id,
                now,
                "gatehouse",
                "probable_duplicate",
                Some(&format!("Looks like {earlier}")),
            )
            .await?;
        }
        if let Some(mid) = &parsed.message_id {
            tx.add_thread_id(mid, request_id, "in").await?;
        }
        if let Some((f, _)) = &forwarded
            && let Some(mid) = &f.message_id
        {
            tx.add_thread_id(mid, request_id, "in").await?;
        }
        outcome.classification = classification;
        outcome.request_id = Some(request_id);
        tx.finish_message(id, &outcome, now).await?;
        tracing::info!("{reference}: {} from {requester}", classification.as_str());
        Ok(classification)
    }

    /// The request this message replies to, by Message-ID thread, then by a reference in
    /// the subject.
    async fn thread_of(&self, parsed: &Parsed) -> anyhow::Result<Option<RequestRow>> {
        let mut ids: Vec<String> = parsed.in_reply_to.clone();
        ids.extend(parsed.references.iter().cloned());
        if let Some(request) = self.store.request_for_thread(&ids).await? {
            return Ok(Some(request));
        }
        match classify::find_reference(&parsed.subject, &self.config.service.reference_prefix) {
            Some(reference) => self
                .store
                .find_request(&reference)
                .await
                .context("Cannot look up the reference"),
            None => Ok(None),
        }
    }

    /// An open or recent request from the same requester or organisation that reads much the
    /// same. The decision stays the gatekeeper's; this only points at it.
    async fn probable_duplicate(
        &self,
        requester: &EmailAddress,
        organisation: Option<&str>,
        subject: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<(i64, String)>> {
        let since = now - chrono::Duration::days(DUPLICATE_LOOKBACK_DAYS);
        let candidates = self
            .store
            .duplicate_candidates(requester.as_str(), organisation, since)
            .await?;
        let subject_key = classify::normalise_subject(subject);
        let mut best: Option<(f64, i64, String)> = None;
        for c in candidates {
            let same_subject =
                !subject_key.is_empty() && classify::normalise_subject(&c.subject) == subject_key;
            let score = if same_subject {
                1.0
            } else {
                classify::similarity(body, &c.body)
            };
            if score >= DUPLICATE_THRESHOLD && best.as_ref().is_none_or(|(s, _, _)| score > *s) {
                best = Some((score, c.id, c.reference));
            }
        }
        Ok(best.map(|(_, id, reference)| (id, reference)))
    }
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
        let cut = ["fwd:", "fw:", "fwd :", "fw :"]
            .iter()
            .find(|p| lower.starts_with(*p))
            .map(|p| p.len());
        match cut {
            Some(n) => s = s.get(n..).unwrap_or_default().trim_start(),
            None => return s.to_string(),
        }
    }
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
