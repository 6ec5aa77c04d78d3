//! What the ledger records, in words of the domain: the kinds of event, who did it, and
//! which way a message of a request's thread went. Each has one text form, which is what
//! the database holds and what `gatehouse show` prints.

use std::fmt;

use crate::domain::EmailAddress;

macro_rules! kinds {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// The text the database holds.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// The kind this text names, if any.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, text: &&str) -> bool {
                self.as_str() == *text
            }
        }
    };
}

kinds!(
    /// What a line of a request's audit log, or of the housekeeping log, records.
    EventKind {
        /// An approach logged as a new request.
        Received = "received",
        /// Logged from the backlog found at first start (not answered).
        Backlog = "backlog",
        /// Looks like an earlier request.
        ProbableDuplicate = "probable_duplicate",
        Acknowledged = "acknowledged",
        NotAcknowledged = "not_acknowledged",
        ForwardConfirmed = "forward_confirmed",
        ForwardNotConfirmed = "forward_not_confirmed",
        /// A further forward of the same approach, by another door (a practice or PCN).
        AlsoReceived = "also_received",
        GatekeeperNotified = "gatekeeper_notified",
        FollowUp = "follow_up",
        /// An email about the request bounced.
        Bounced = "bounced",
        Decision = "decision",
        Priority = "priority",
        /// A gatekeeper's internal note (never shown to the requester).
        Note = "note",
        OutcomeSent = "outcome_sent",
        OutcomeNotSent = "outcome_not_sent",
        Reopened = "reopened",
        Reminder = "reminder",
        /// The one more-work reminder to a requester who has not replied.
        MoreWorkNudge = "more_work_nudge",
        /// A `message` decision's text, emailed to the gatekeepers for the group's channel.
        ChannelDraft = "channel_draft",
        /// A `message` decision's text, queued for the channel's webhook.
        ChannelPost = "channel_post",
        TriageRefused = "triage_refused",
        TriageNotUnderstood = "triage_not_understood",
        /// The requester sent files with the request (kept as its papers, for `circulate`).
        PaperReceived = "paper_received",
        /// `circulate`: the request's papers went to the board.
        PaperCirculated = "paper_circulated",
        /// Retention removed the personal data of a closed request.
        Anonymised = "anonymised",
        /// `gatehouse erase` removed the request's personal data.
        Erased = "erased",
        /// Housekeeping: a purge, with its counts.
        Purge = "purge",
        /// Housekeeping: a subject access export.
        Export = "export",
        /// Housekeeping: a backup.
        Backup = "backup",
    }
);

/// Who an event is by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// gatehouse itself.
    Gatehouse,
    /// gatehouse's daily retention purge.
    Retention,
    /// Someone by their email address: a requester, a forwarder, a gatekeeper.
    Address(EmailAddress),
    /// The operator at the command line, with the login name when known.
    Operator(Option<String>),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Gatehouse => f.write_str("gatehouse"),
            Actor::Retention => f.write_str("gatehouse (daily retention)"),
            Actor::Address(a) => write!(f, "{a}"),
            Actor::Operator(None) => f.write_str("operator"),
            Actor::Operator(Some(user)) => write!(f, "operator ({user})"),
        }
    }
}

/// Which way a message of a request's thread went: its Message-ID links later mail to the
/// request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadDirection {
    /// Received (the approach, a follow-up).
    In,
    /// Sent by gatehouse, as an outbox entry of this kind (`notification`, …).
    Out(String),
}

impl fmt::Display for ThreadDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThreadDirection::In => f.write_str("in"),
            ThreadDirection::Out(kind) => write!(f, "out:{kind}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_kind_reads_back_as_itself_and_actors_read_as_before() {
        for kind in [EventKind::Received, EventKind::FollowUp, EventKind::Note, EventKind::Backup] {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("no_such_kind"), None);
        assert_eq!(Actor::Gatehouse.to_string(), "gatehouse");
        assert_eq!(Actor::Retention.to_string(), "gatehouse (daily retention)");
        assert_eq!(Actor::Operator(Some("ops".into())).to_string(), "operator (ops)");
        let a = EmailAddress::parse("Jo@Example.org").unwrap();
        assert_eq!(Actor::Address(a.clone()).to_string(), a.to_string());
        assert_eq!(ThreadDirection::Out("notification".into()).to_string(), "out:notification");
    }
}
