//! Whom gatehouse writes to on its own, and why not: the one rule every automatic email to
//! someone outside passes — the acknowledgement, the forward confirmation and the outcome.
//!
//! Anyone can send the shared mailbox anything, so what gatehouse sends in answer must not
//! become a way to mail third parties from an NHS address. The rule:
//!
//! - gatehouse writes about a request only to an address it can stand behind: the sender of
//!   the message as received, or the original sender of a forward when the forwarder is a
//!   member (`[members]`); a forward from anyone else is answered to the forwarder alone;
//! - never to gatehouse's own addresses, to robots (no-reply, bounce addresses), or to an
//!   address the SMTP library would refuse;
//! - answers to incoming mail are capped per person (`+tags` folded), per recipient domain
//!   and per hour in all (`[acknowledgements]`), and one incoming message causes at most
//!   [`PER_MESSAGE`] emails to anyone outside.
//!
//! Mail to the gatekeepers, the board and the operator does not come through here: it
//! answers nobody outside.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::domain::EmailAddress;
use crate::store::{NewOutgoing, OutboxId, Tx};

/// The most emails to anyone but the gatekeepers that one incoming message may cause (an
/// acknowledgement and a forward confirmation).
pub const PER_MESSAGE: usize = 2;

/// What an automatic email to someone outside is, for the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// An acknowledgement or forward confirmation: caused by incoming mail, which anyone can
    /// send, so counted and capped.
    Answer,
    /// The outcome of a gatekeeper's decision: a person chose to send it, so it is neither
    /// capped nor counted.
    Outcome,
}

/// What one incoming message (or one decision at the command line) may still cause in
/// emails to anyone outside.
#[derive(Debug)]
pub struct Allowance {
    left: usize,
}

impl Allowance {
    /// The allowance of one incoming message: [`PER_MESSAGE`].
    pub fn per_message() -> Self {
        Self { left: PER_MESSAGE }
    }
}

/// Leave to send one automatic email to one address, from [`Recipients::check`]; spent by
/// [`Recipients::send`].
#[derive(Debug)]
#[must_use]
pub struct Cleared {
    to: EmailAddress,
    purpose: Purpose,
}

impl Cleared {
    pub fn to(&self) -> &EmailAddress {
        &self.to
    }
}

/// The rule, with what it needs from the config.
#[derive(Debug, Clone)]
pub struct Recipients {
    config: Arc<Config>,
    own: Vec<EmailAddress>,
}

impl Recipients {
    pub fn new(config: Arc<Config>) -> Self {
        let mut own = vec![config.smtp.from.address.clone()];
        if let Ok(a) = EmailAddress::parse(&config.imap.username)
            && !own.contains(&a)
        {
            own.push(a);
        }
        Self { config, own }
    }

    /// gatehouse's own addresses (the From it sends as, the mailbox it reads).
    pub fn own_addresses(&self) -> Vec<String> {
        self.own.iter().map(ToString::to_string).collect()
    }

    /// Whether gatehouse can stand behind writing to the requester of a request that came
    /// `via` a forwarder: yes when the requester wrote to us themselves, or a member
    /// forwarded their approach. Otherwise only the forwarder may be written to: the
    /// original sender is whoever the forwarder typed into the forwarded block.
    pub fn stands_behind_requester(&self, via: Option<&EmailAddress>) -> bool {
        via.is_none_or(|v| self.config.is_member(v))
    }

    /// Why nothing automatic may ever go to `to`, whatever the counts: gatehouse's own
    /// address, a robot's, or one the SMTP library refuses.
    pub fn never(&self, to: &EmailAddress) -> Option<String> {
        let person = to.person();
        if self.own.iter().any(|a| a.person() == person) {
            return Some(format!("{to} is gatehouse's own address"));
        }
        if is_robot(to) {
            return Some(format!("{to} is a no-reply address"));
        }
        if let Err(why) = to.mailable() {
            return Some(format!("{to} cannot be mailed: {why}"));
        }
        None
    }

    /// Whether an automatic email for `purpose` may go to `to` now, and if not, why not (in
    /// words for the request's history).
    pub async fn check(
        &self,
        tx: &mut dyn Tx,
        to: &EmailAddress,
        purpose: Purpose,
        allowance: &Allowance,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<Cleared, String>> {
        if let Some(why) = self.never(to) {
            return Ok(Err(why));
        }
        if allowance.left == 0 {
            return Ok(Err(format!(
                "one message causes at most {PER_MESSAGE} emails to anyone but the gatekeepers"
            )));
        }
        if purpose == Purpose::Answer {
            let limits = &self.config.acknowledgements;
            let counts = tx
                .answered_counts(
                    &to.person(),
                    to.domain(),
                    now - chrono::Duration::hours(24),
                    now - chrono::Duration::hours(1),
                )
                .await?;
            let over = [
                (
                    counts.person,
                    limits.rate_limit_per_day,
                    format!("to {}", to.person()),
                    "the last 24 hours",
                ),
                (
                    counts.domain,
                    limits.domain_limit_per_day,
                    format!("to @{}", to.domain()),
                    "the last 24 hours",
                ),
                (counts.hour, limits.limit_per_hour, "in all".to_string(), "the last hour"),
            ]
            .into_iter()
            .find(|(sent, limit, _, _)| *sent >= i64::from(*limit));
            if let Some((sent, limit, whom, window)) = over {
                tracing::warn!(
                    "Not answering {to}: {sent} automatic answers {whom} in {window} (limit {limit})"
                );
                return Ok(Err(format!(
                    "rate limit: {sent} automatic answers {whom} in {window} (limit {limit})"
                )));
            }
        }
        Ok(Ok(Cleared { to: to.clone(), purpose }))
    }

    /// Queues `mail`, which must go to the cleared address alone, and counts it.
    pub async fn send(
        &self,
        tx: &mut dyn Tx,
        cleared: Cleared,
        mail: &NewOutgoing,
        allowance: &mut Allowance,
        now: DateTime<Utc>,
    ) -> anyhow::Result<OutboxId> {
        anyhow::ensure!(
            mail.recipients.len() == 1
                && mail.recipients.iter().all(|r| r.eq_ignore_ascii_case(cleared.to.as_str())),
            "An automatic email was cleared for {} but addressed to {:?}",
            cleared.to,
            mail.recipients
        );
        anyhow::ensure!(allowance.left > 0, "An automatic email past the per-message allowance");
        let id = tx.enqueue(mail, now).await?;
        if cleared.purpose == Purpose::Answer {
            tx.record_answered(id, &cleared.to.person(), cleared.to.domain(), now).await?;
        }
        allowance.left -= 1;
        Ok(id)
    }
}

/// A machine's address: the one rule, [`crate::classify::robot`].
fn is_robot(address: &EmailAddress) -> bool {
    crate::classify::robot(address.as_str()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn robot(a: &str) -> bool {
        is_robot(&EmailAddress::parse(a).unwrap())
    }

    #[test]
    fn robots_are_known_by_the_local_part_whatever_the_tag() {
        for a in [
            "noreply@x.org",
            "No-Reply@x.org",
            "do_not_reply@x.org",
            "noreply+ticket-5@x.org",
            "bounces-list@x.org",
            "ops.noreply@x.org",
            "mailer-daemon@x.org",
            "postmaster@x.org",
        ] {
            assert!(robot(a), "{a} not a robot");
        }
        for a in ["jo.bloggs@x.org", "noreplying@x.org", "bouncer@x.org", "jo+noreply@x.org"] {
            assert!(!robot(a), "{a} called a robot");
        }
    }
}
