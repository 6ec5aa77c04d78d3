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

    /// Like [`EmailAddress::parse`], and refused unless mail can be sent to it (see
    /// [`EmailAddress::mailable`]): for the addresses in the config, which gatehouse writes to.
    pub fn parse_mailable(s: &str) -> anyhow::Result<Self> {
        let address = Self::parse(s)?;
        if let Err(why) = address.mailable() {
            bail!("{s:?} is not an address mail can be sent to ({why})");
        }
        Ok(address)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }

    /// Whether mail can be sent to this address, by the SMTP library's own rules (the one
    /// that builds every email gatehouse sends), and why not. [`EmailAddress::parse`] is
    /// looser on purpose: a sender whose address the library refuses (`jo..bloggs@x.org`,
    /// a 70-character local part) is still logged as a requester, just never written to.
    pub fn mailable(&self) -> Result<(), String> {
        self.0.parse::<lettre::Address>().map(drop).map_err(|e| format!("the mail library refuses it: {e}"))
    }

    /// The person behind the address, as the sending limits count them: the `+tag` of the
    /// part before the @ dropped, so `jo+1@x.org` and `jo+2@x.org` are both `jo@x.org`.
    pub fn person(&self) -> String {
        match self.0.rsplit_once('@') {
            Some((local, domain)) => {
                let local = local.split_once('+').map_or(local, |(base, _)| base);
                format!("{local}@{domain}")
            }
            None => self.0.clone(),
        }
    }

    /// The part before the @, `+tag` dropped.
    pub fn local_base(&self) -> &str {
        let local = self.0.rsplit_once('@').map_or(self.0.as_str(), |(l, _)| l);
        local.split_once('+').map_or(local, |(base, _)| base)
    }
}

/// Whether `c` can make text show other than it is written: bidirectional embeddings,
/// overrides, isolates and marks, and invisible characters (zero-width, soft hyphen, tags).
/// The one list every value from mail shown to a person is cleaned of.
pub fn hides_or_reorders(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2060}'..='\u{2064}'
            | '\u{061C}'
            | '\u{00AD}'
            | '\u{180E}'
            | '\u{FEFF}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// The longest attachment name gatehouse repeats from mail, in characters.
pub const MAX_FILE_NAME_CHARS: usize = 120;

/// An attachment's name from mail as gatehouse passes it on (to gatekeepers, to the board
/// with a paper): the one place a sender's file name is made safe. Control characters (NUL
/// above all, which cuts a name short in C and which PostgreSQL text cannot hold) and
/// characters that reorder or hide text go, so "report<RLO>fdp.exe" cannot show as
/// "reportexe.pdf"; path separators and quotes go, so a name cannot climb out of the folder
/// it is saved in; white space is collapsed, leading dots dropped, and the result cut to
/// [`MAX_FILE_NAME_CHARS`] keeping the extension. None when nothing is left.
pub fn file_name(raw: &str) -> Option<String> {
    let kept: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .filter(|c| !hides_or_reorders(*c))
        .collect();
    let kept = kept.replace(['/', '\\', '"'], " ");
    let joined = kept.split_whitespace().collect::<Vec<_>>().join(" ");
    let name = joined.trim_start_matches(['.', ' ']);
    if name.is_empty() {
        return None;
    }
    if name.chars().count() <= MAX_FILE_NAME_CHARS {
        return Some(name.to_string());
    }
    let ext: String = match name.rsplit_once('.') {
        Some((_, e)) if !e.is_empty() && e.chars().count() <= 10 => format!(".{e}"),
        _ => String::new(),
    };
    let stem: String = name.chars().take(MAX_FILE_NAME_CHARS - ext.chars().count()).collect();
    Some(format!("{}{ext}", stem.trim_end()))
}

/// The longest display name gatehouse repeats from mail, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;

/// A display name from mail as gatehouse repeats it (to gatekeepers, the board, back to
/// senders): the one place a sender's chosen name is made safe. Control characters and line
/// breaks become spaces; bidirectional overrides and invisible characters go (they can show
/// text in another order than it is written); quotes and angle brackets go, and `@` becomes
/// " at ", so a name cannot pass for an address (`"ceo@nhs.net" <attacker@x.org>`); a name
/// that is nothing but an address is dropped; white space is collapsed and the result cut to
/// [`MAX_DISPLAY_NAME_CHARS`]. None when nothing is left.
pub fn display_name(raw: &str) -> Option<String> {
    let mut cleaned = String::with_capacity(raw.len().min(256));
    for c in raw.chars() {
        match c {
            '@' | '\u{FF20}' | '\u{FE6B}' => cleaned.push_str(" at "),
            '"' | '<' | '>' | '`' | '\u{FF1C}' | '\u{FF1E}' | '\u{FE64}' | '\u{FE65}' | '\u{2039}'
            | '\u{203A}' | '\u{3008}' | '\u{3009}' | '\u{27E8}' | '\u{27E9}' | '\u{FF02}' => {
                cleaned.push(' ')
            }
            c if hides_or_reorders(c) => {}
            c if c.is_control() => cleaned.push(' '),
            c => cleaned.push(c),
        }
    }
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    // Nothing but an address ("jo@x.org" became "jo at x.org"): it adds nothing to the
    // address shown beside it, and may be a different one.
    if raw.contains(['@', '\u{FF20}', '\u{FE6B}']) && !raw.trim().contains(char::is_whitespace) {
        return None;
    }
    let joined = words.join(" ");
    let trimmed = joined.trim_matches(|c: char| c == '\'' || c.is_whitespace());
    if trimmed.is_empty() {
        return None;
    }
    if trimmed.chars().count() <= MAX_DISPLAY_NAME_CHARS {
        return Some(trimmed.to_string());
    }
    let cut: String = trimmed.chars().take(MAX_DISPLAY_NAME_CHARS - 1).collect();
    Some(format!("{}…", cut.trim_end()))
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
    fn mailable_follows_the_mail_library_and_parse_stays_looser() {
        let ok = EmailAddress::parse_mailable("Jo.Bloggs+rota@nhs.net").unwrap();
        assert_eq!(ok.person(), "jo.bloggs@nhs.net");
        assert_eq!(ok.local_base(), "jo.bloggs");
        for refused in ["jo..bloggs@nhs.net", ".jo@nhs.net", "jo.@nhs.net", "jo@-nhs.net"] {
            let seen = EmailAddress::parse(refused).unwrap();
            assert!(seen.mailable().is_err(), "{refused} called mailable");
            assert!(EmailAddress::parse_mailable(refused).is_err(), "{refused}");
        }
        let long = format!("{}@nhs.net", "a".repeat(70));
        assert!(EmailAddress::parse(&long).unwrap().mailable().is_err());
    }

    #[test]
    fn file_names_cannot_reorder_climb_out_or_carry_nul() {
        assert_eq!(file_name("report\u{202E}fdp.exe").as_deref(), Some("reportfdp.exe"));
        assert_eq!(file_name("../../etc/cron.d/evil").as_deref(), Some("etc cron.d evil"));
        assert_eq!(file_name("minutes.pdf\0.exe").as_deref(), Some("minutes.pdf .exe"));
        assert_eq!(file_name("\u{200B}\u{2066}").as_deref(), None);
        let long = file_name(&format!("{}.pdf", "a".repeat(500))).unwrap();
        assert_eq!((long.chars().count(), long.ends_with(".pdf")), (MAX_FILE_NAME_CHARS, true));
        assert_eq!(file_name("Costing paper v2.pdf").as_deref(), Some("Costing paper v2.pdf"));
    }

    #[test]
    fn display_names_cannot_pass_for_addresses_or_reorder_text() {
        assert_eq!(display_name("  \"Bloggs,   Jo\"  ").as_deref(), Some("Bloggs, Jo"));
        assert_eq!(display_name("Pat O\u{2019}Neill").as_deref(), Some("Pat O\u{2019}Neill"));
        assert_eq!(display_name("'Jo'").as_deref(), Some("Jo"));
        assert_eq!(display_name("ceo@nhs.net"), None);
        assert_eq!(display_name("IT Desk <it@nhs.net>").as_deref(), Some("IT Desk it at nhs.net"));
        assert_eq!(display_name("Jo\r\nBcc: x@y.z").as_deref(), Some("Jo Bcc: x at y.z"));
        assert_eq!(display_name("Jo \u{202E}fdp.exe").as_deref(), Some("Jo fdp.exe"));
        assert_eq!(display_name("\u{200B}\u{2066}"), None);
        let long = display_name(&"x".repeat(500)).unwrap();
        assert_eq!(long.chars().count(), MAX_DISPLAY_NAME_CHARS);
        assert!(long.ends_with('…'));
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
