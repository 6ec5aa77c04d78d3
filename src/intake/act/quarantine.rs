//! Setting aside a message that could not be processed (it failed, or stopped gatehouse, too
//! many times): not a route — the inbox calls it when acting on a route keeps failing — but
//! an act on the message all the same, written in the transaction that moves past it.

use super::logged::{clean_line, raw_from};
use crate::classify::headers;
use crate::domain::{Classification, EmailAddress};
use crate::intake::{Intake, ParseResult};
use crate::mailings::{Composer, Draft, alerts};
use crate::store::{MessageId, MessageOutcome, Tx};
use crate::templates::{QuarantinedAlert, QuarantinedMoreAlert};

impl Intake {
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
                (from, address, headers::first(raw, "subject").map(|s| clean_line(&s)))
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
        let alert = QuarantinedAlert { id: id.to_string(), from, subject, why: why.to_string() };
        tx.finish_message(id, &outcome, now).await?;
        // One alert per message set aside, and once a day at most: a retry that sets it
        // aside again the same day tells nobody twice. Setting the message aside must not
        // fail with the alert: without it the message is still kept and listed as
        // quarantined (a failed write, though, fails the transaction, as it must).
        let composer = Composer::new(self.config.clone());
        // Each message set aside is one alert, up to a cap a day: past it, a flood of poison
        // messages (anyone can send them) makes one "and more" alert a day, not one each.
        let told = tx.alerts_sent_since(QUARANTINE_KEY_PREFIX, now - alerts::REPEAT_AFTER).await?;
        let (key, draft) = if told < QUARANTINE_ALERTS_PER_DAY {
            (format!("{QUARANTINE_KEY_PREFIX}{id}"), self.quarantine_alert(&alert))
        } else {
            (format!("{QUARANTINE_KEY_PREFIX}more"), self.quarantine_digest())
        };
        let step = tx.begin_step().await?;
        let raised = match draft {
            Ok(draft) => alerts::raise_in(tx, &composer, &self.templates, now, &key, draft).await,
            Err(e) => Err(e),
        };
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
}

/// Where the keys of quarantine alerts start (`quarantined:ID`, `quarantined:more`).
const QUARANTINE_KEY_PREFIX: &str = "quarantined:";

/// Messages set aside that are each told in an alert of their own within a day.
pub const QUARANTINE_ALERTS_PER_DAY: i64 = 5;

impl Intake {
    /// The alert for one message set aside.
    fn quarantine_alert(&self, alert: &QuarantinedAlert) -> anyhow::Result<Draft> {
        Ok(Draft::system_alert(
            &self.config.alert_recipients(),
            format!("A message could not be processed and is set aside: {}", alert.subject),
            self.templates.render("alert_quarantined.txt", alert)?,
        ))
    }

    /// The one alert a day for the messages set aside past [`QUARANTINE_ALERTS_PER_DAY`]: it
    /// names none of them (their senders' words stay out of it) and says where they are
    /// listed.
    fn quarantine_digest(&self) -> anyhow::Result<Draft> {
        let alert = QuarantinedMoreAlert { per_day: QUARANTINE_ALERTS_PER_DAY };
        Ok(Draft::system_alert(
            &self.config.alert_recipients(),
            "More messages could not be processed and are set aside".into(),
            self.templates.render("alert_quarantined_more.txt", &alert)?,
        ))
    }
}
