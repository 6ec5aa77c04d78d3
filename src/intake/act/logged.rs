//! Routes that log a message without a request: machine mail (and a bounce of ours, told to
//! its outbox entry and request), and mail that cannot be logged as a request, of which the
//! gatekeepers are told so that an approach from a broken client is never given up unseen.

use super::{Message, outcome};
use crate::classify::{Parsed, headers};
use crate::domain::{Classification, EmailAddress};
use crate::intake::Intake;
use crate::intake::route::{Bounce, Unlogged};
use crate::store::{self, EventKind, MessageOutcome, Tx};

impl Intake {
    /// Machine mail: logged as automated with `reason`. A bounce of something we sent also
    /// marks its outbox entry bounced and tells its request.
    pub(super) async fn automated(
        &self,
        tx: &mut dyn Tx,
        message: &Message<'_>,
        parsed: &Parsed,
        reason: String,
        bounce: Option<Bounce>,
    ) -> anyhow::Result<Classification> {
        let now = message.now;
        let mut outcome = outcome(parsed, message.received_at())?;
        outcome.classification = Classification::Automated;
        outcome.detail = Some(reason.clone());
        if let (Some(bounce), Some(report)) = (bounce, &parsed.report) {
            let failed = report.failed_recipients.join(", ");
            let why = report.diagnostic.clone().or_else(|| report.status.clone()).unwrap_or_default();
            let detail =
                format!("bounce of outbox #{} ({} to {failed}): {why}", bounce.outbox_id, bounce.kind);
            tx.mark_bounced(bounce.outbox_id, &detail).await?;
            if let Some(request_id) = bounce.request_id {
                tx.add_event(request_id, now, store::Actor::Gatehouse, EventKind::Bounced, Some(&detail))
                    .await?;
            }
            outcome.detail = Some(format!("{reason}; {detail}"));
        }
        tx.finish_message(message.id, &outcome, now).await?;
        Ok(Classification::Automated)
    }

    /// A message that cannot be logged as a request: kept raw and logged as unparseable, and
    /// whoever gets alerts told what is known of it and what to do.
    pub(super) async fn unlogged(
        &self,
        tx: &mut dyn Tx,
        message: &Message<'_>,
        why: &Unlogged,
    ) -> anyhow::Result<Classification> {
        let (why, headline, advice, received) = match why {
            Unlogged::TooLarge => {
                let mb = |n: usize| format!("{:.1} MB", n as f64 / (1024.0 * 1024.0));
                let why = format!(
                    "too large to process: {} (the limit, imap.max_message_bytes, is {}); kept as received",
                    mb(message.raw.len()),
                    mb(self.config.imap.max_message_bytes)
                );
                let advice = "log it by forwarding the text without the large attachments";
                (why, "A message too large to log automatically", advice, message.internal_date)
            }
            Unlogged::Unreadable(why) => (why.clone(), UNLOGGED, FORWARD_IT, message.internal_date),
            Unlogged::NoFrom => {
                ("no usable From address".to_string(), UNLOGGED, FORWARD_IT, Some(message.received_at()))
            }
        };
        self.not_logged(tx, message, received, &why, headline, advice).await?;
        Ok(Classification::Unparseable)
    }

    /// Records the message as unparseable with `why`, and tells whoever gets alerts what is
    /// known of it (From and Subject as a plain header scan finds them) and what to do.
    async fn not_logged(
        &self,
        tx: &mut dyn Tx,
        message: &Message<'_>,
        received: Option<chrono::DateTime<chrono::Utc>>,
        why: &str,
        headline: &str,
        advice: &str,
    ) -> anyhow::Result<()> {
        let (now, id) = (message.now, message.id);
        let (from, from_address) = raw_from(message.raw);
        let from = from.unwrap_or_else(|| "(unknown)".into());
        let subject = headers::first(message.raw, "subject").map(|s| clean_line(&s)).unwrap_or_default();
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
        let alert = crate::templates::UnloggedAlert {
            why: why.to_string(),
            id: id.to_string(),
            from,
            subject: subject.clone(),
            advice: advice.to_string(),
        };
        let draft = crate::mailings::Draft::system_alert(
            &self.config.alert_recipients(),
            format!("{headline}: {subject}"),
            self.templates.render("alert_unlogged.txt", &alert)?,
        );
        let mail = crate::mailings::Composer::new(self.config.clone()).compose(&draft)?;
        tx.finish_message(id, &outcome, now).await?;
        tx.enqueue(&mail, now).await?;
        Ok(())
    }
}

/// The alert's headline for mail that is not an email gatehouse can log.
const UNLOGGED: &str = "A message that could not be logged as a request";
/// What the gatekeepers are asked to do with it.
const FORWARD_IT: &str = "log it by forwarding it to the shared mailbox";

/// The From header as written (cleaned) and its address, read without parsing the message:
/// for messages too large to parse, or whose parsing is what failed.
pub(super) fn raw_from(raw: &[u8]) -> (Option<String>, Option<String>) {
    let Some(from) = headers::first(raw, "from").map(|f| clean_line(&f)) else {
        return (None, None);
    };
    let inner = from.rsplit_once('<').and_then(|(_, a)| a.split_once('>')).map_or(from.as_str(), |(a, _)| a);
    let address = EmailAddress::parse(inner).ok().map(|a| a.to_string());
    (Some(from), address)
}

/// A header value from raw bytes made fit for one line of an alert: no control characters,
/// at most 200 characters.
pub(super) fn clean_line(value: &str) -> String {
    crate::classify::subject::one_line(value).chars().take(200).collect()
}
