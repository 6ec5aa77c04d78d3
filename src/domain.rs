//! The words of the single point of access, as types: references, addresses, decisions,
//! statuses and message classifications.
//!
//! Each type parses once at the edge (config, CLI, mail) so the rest of the code cannot hold
//! a malformed value. Their string forms are part of the interface contract in PRODUCT.md.

use std::fmt;
use std::str::FromStr;

use anyhow::{Context as _, bail};

/// A bare, lower-cased email address. Requesters, gatekeepers and board members are compared
/// by this form, so `Jane.Doe@NHS.net` and `jane.doe@nhs.net` are the same person.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Accepts `local@domain` with no spaces, angle brackets or second `@`; the domain must
    /// have a dot (or be `localhost`) so typos like `jane@nhs` are caught in the config.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let s = s.trim();
        let Some((local, domain)) = s.rsplit_once('@') else {
            bail!("{s:?} is not an email address (no @)");
        };
        let bad = |c: char| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\".contains(c);
        if local.is_empty() || local.contains('@') || local.chars().any(bad) {
            bail!("{s:?} is not an email address (bad part before the @)");
        }
        if domain.is_empty()
            || domain.chars().any(bad)
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
            || !(domain.contains('.') || domain.eq_ignore_ascii_case("localhost"))
        {
            bail!("{s:?} is not an email address (bad domain after the @)");
        }
        Ok(Self(s.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A request's reference, e.g. `GP-2026-0042`: prefix, year of receipt (service timezone)
/// and a per-year counter padded to four digits that keeps growing past 9999.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub prefix: String,
    pub year: i32,
    pub seq: i64,
}

impl Reference {
    /// Parses `PREFIX-YYYY-NNNN` whatever the prefix, case-insensitively.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let s = s.trim();
        let mut parts = s.rsplitn(3, '-');
        let (Some(seq), Some(year), Some(prefix)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("{s:?} is not a reference like GP-2026-0042");
        };
        let valid_prefix = !prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_alphanumeric());
        if !valid_prefix || year.len() != 4 || seq.len() < 4 {
            bail!("{s:?} is not a reference like GP-2026-0042");
        }
        Ok(Self {
            prefix: prefix.to_ascii_uppercase(),
            year: year.parse().with_context(|| format!("Bad year in reference {s:?}"))?,
            seq: seq.parse().with_context(|| format!("Bad number in reference {s:?}"))?,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:04}-{:04}", self.prefix, self.year, self.seq)
    }
}

/// Where a request stands. Derived from the decision (see [`Decision::status`]) except for
/// requests nobody has decided yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    AwaitingTriage,
    WaitingOnRequester,
    Scheduled,
    Closed,
}

impl Status {
    pub const ALL: [Status; 4] =
        [Status::AwaitingTriage, Status::WaitingOnRequester, Status::Scheduled, Status::Closed];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::AwaitingTriage => "awaiting_triage",
            Status::WaitingOnRequester => "waiting_on_requester",
            Status::Scheduled => "scheduled",
            Status::Closed => "closed",
        }
    }
}

impl FromStr for Status {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        Status::ALL.into_iter().find(|st| st.as_str() == wanted).with_context(|| {
            format!(
                "Unknown status {s:?}: use one of awaiting_triage, waiting_on_requester, scheduled, closed"
            )
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The gatekeeper's decision on an approach (PRODUCT.md, step 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Meeting,
    Paper,
    Message,
    MoreWork,
    Decline,
    Redirect,
    Duplicate,
}

impl Decision {
    pub const ALL: [Decision; 7] = [
        Decision::Meeting,
        Decision::Paper,
        Decision::Message,
        Decision::MoreWork,
        Decision::Decline,
        Decision::Redirect,
        Decision::Duplicate,
    ];

    /// The stored and JSON form (`more_work`).
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Meeting => "meeting",
            Decision::Paper => "paper",
            Decision::Message => "message",
            Decision::MoreWork => "more_work",
            Decision::Decline => "decline",
            Decision::Redirect => "redirect",
            Decision::Duplicate => "duplicate",
        }
    }

    /// The form a gatekeeper types (`more-work`).
    pub fn command(self) -> &'static str {
        match self {
            Decision::MoreWork => "more-work",
            other => other.as_str(),
        }
    }

    pub fn status(self) -> Status {
        match self {
            Decision::Meeting | Decision::Paper | Decision::Message => Status::Scheduled,
            Decision::MoreWork => Status::WaitingOnRequester,
            Decision::Decline | Decision::Redirect | Decision::Duplicate => Status::Closed,
        }
    }
}

impl FromStr for Decision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        Decision::ALL
            .into_iter()
            .find(|d| d.as_str() == wanted)
            .with_context(|| {
                format!(
                    "Unknown decision {s:?}: use one of meeting, paper, message, more-work, decline, redirect, duplicate"
                )
            })
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one message taken from the inbox turned out to be. Every message gets exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    New,
    FollowUp,
    Forwarded,
    Triage,
    Automated,
    Rejected,
    Unparseable,
    /// Set aside after repeated failed attempts to process it (its bytes kept); processed
    /// again only when `gatehouse messages retry` asks.
    Quarantined,
}

impl Classification {
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::New => "new",
            Classification::FollowUp => "follow_up",
            Classification::Forwarded => "forwarded",
            Classification::Triage => "triage",
            Classification::Automated => "automated",
            Classification::Rejected => "rejected",
            Classification::Unparseable => "unparseable",
            Classification::Quarantined => "quarantined",
        }
    }
}

impl FromStr for Classification {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        use Classification::*;
        [New, FollowUp, Forwarded, Triage, Automated, Rejected, Unparseable, Quarantined]
            .into_iter()
            .find(|c| c.as_str() == s)
            .with_context(|| format!("Unknown classification {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_pads_to_four_digits_and_grows_past_them() {
        let r = Reference { prefix: "GP".into(), year: 2026, seq: 42 };
        assert_eq!(r.to_string(), "GP-2026-0042");
        let r = Reference { prefix: "GP".into(), year: 2026, seq: 12345 };
        assert_eq!(r.to_string(), "GP-2026-12345");
        assert_eq!(Reference::parse("gp-2026-12345").unwrap(), r);
        assert!(Reference::parse("GP-26-0001").is_err());
        assert!(Reference::parse("GP-2026-01").is_err());
        assert!(Reference::parse("2026-0001").is_err());
    }

    #[test]
    fn addresses_are_lower_cased_and_checked() {
        assert_eq!(EmailAddress::parse(" Jane.Doe@NHS.net ").unwrap().as_str(), "jane.doe@nhs.net");
        for bad in [
            "jane",
            "jane@",
            "@nhs.net",
            "jane@nhs",
            "ja ne@nhs.net",
            "<jane@nhs.net>",
            "a@b@c.d",
            "jane@nhs..net",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn decisions_map_to_statuses_per_contract() {
        assert_eq!("more-work".parse::<Decision>().unwrap(), Decision::MoreWork);
        assert_eq!(Decision::MoreWork.as_str(), "more_work");
        assert_eq!(Decision::Paper.status(), Status::Scheduled);
        assert_eq!(Decision::MoreWork.status(), Status::WaitingOnRequester);
        assert_eq!(Decision::Duplicate.status(), Status::Closed);
        assert!("maybe".parse::<Decision>().is_err());
    }
}
