//! The gatekeeper's one-line commands (PRODUCT.md, "Triage by email").
//!
//! Commands sit on the first lines of a reply, before any quoted text; case does not
//! matter and a leading `#` or `/` is allowed. Text after the commands (up to the quoted
//! original or a signature) is the message for the requester. A reply that cannot be
//! understood is an error that says why, never a guess.

use std::fmt;

use chrono::NaiveDate;

use crate::domain::{Decision, Reference};

/// A decision with whatever it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Meeting(Option<NaiveDate>),
    Paper,
    Message,
    MoreWork(String),
    Decline(String),
    Redirect(String),
    Duplicate(Reference),
}

impl Command {
    pub fn decision(&self) -> Decision {
        match self {
            Command::Meeting(_) => Decision::Meeting,
            Command::Paper => Decision::Paper,
            Command::Message => Decision::Message,
            Command::MoreWork(_) => Decision::MoreWork,
            Command::Decline(_) => Decision::Decline,
            Command::Redirect(_) => Decision::Redirect,
            Command::Duplicate(_) => Decision::Duplicate,
        }
    }

    /// The reason, destination or work named with the decision.
    pub fn detail(&self) -> Option<String> {
        match self {
            Command::MoreWork(s) | Command::Decline(s) | Command::Redirect(s) => Some(s.clone()),
            Command::Duplicate(r) => Some(r.to_string()),
            Command::Meeting(_) | Command::Paper | Command::Message => None,
        }
    }

    /// Builds a command from the CLI's `DECISION [ARG]`.
    pub fn from_parts(decision: Decision, arg: Option<&str>) -> Result<Self, TriageError> {
        let line = match arg {
            Some(a) => format!("{}: {a}", decision.command()),
            None => decision.command().to_string(),
        };
        match parse_line(&line)? {
            Some(Line::Decision(c)) => Ok(c),
            _ => Err(TriageError(format!("{line:?} is not a decision"))),
        }
    }
}

/// Everything a reply said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub decision: Option<Command>,
    pub priorities: Vec<String>,
    pub notes: Vec<String>,
    /// Text for the requester (may be empty).
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriageError(pub String);

impl fmt::Display for TriageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TriageError {}

/// The commands, as shown in error replies.
pub const HELP: &str = "\
meeting [YYYY-MM-DD]      to the group's meeting (the next one when no date is given)
paper                     a paper to the board instead of a meeting slot
message                   a short message to the group's messaging channel
more-work: WHAT           more work is needed first (say what)
decline: REASON           general practice will not take it forward (say why)
redirect: WHERE           it belongs elsewhere (say where)
duplicate GP-2026-0012    the same as an earlier approach (name it)
priority KEY              tag with an agreed priority; may repeat
note: TEXT                internal note, never sent to the requester";

enum Line {
    Decision(Command),
    Priority(String),
    Note(String),
}

/// Parses the new text of a reply (quoted history already removed).
pub fn parse(text: &str) -> Result<Reply, TriageError> {
    let mut reply = Reply::default();
    let mut lines = text.lines().map(clean_line).skip_while(|l| l.is_empty()).peekable();
    let mut commands = 0;
    while let Some(line) = lines.peek() {
        if line.is_empty() {
            lines.next();
            continue;
        }
        match parse_line(line)? {
            Some(Line::Decision(c)) => {
                if let Some(earlier) = &reply.decision {
                    return Err(TriageError(format!(
                        "one decision per reply, but this one has both {} and {}",
                        earlier.decision().command(),
                        c.decision().command()
                    )));
                }
                reply.decision = Some(c);
            }
            Some(Line::Priority(p)) => reply.priorities.push(p),
            Some(Line::Note(n)) => reply.notes.push(n),
            None if commands == 0 => {
                let first = line.split_whitespace().next().unwrap_or_default();
                return Err(TriageError(format!(
                    "the first line should be a command, but it starts with {first:?}"
                )));
            }
            None => break,
        }
        commands += 1;
        lines.next();
    }
    if commands == 0 {
        return Err(TriageError("the reply has no command in it".into()));
    }
    reply.message = lines.collect::<Vec<_>>().join("\n").trim().to_string();
    Ok(reply)
}

/// Strips what mail clients and people put around a command: quoting, bullets, `#`, `/`,
/// non-breaking spaces.
fn clean_line(line: &str) -> String {
    let line = line.replace('\u{a0}', " ");
    line.trim()
        .trim_start_matches(['#', '/', '*', '-', '•'])
        .trim_start_matches(['#', '/'])
        .trim()
        .to_string()
}

fn parse_line(line: &str) -> Result<Option<Line>, TriageError> {
    let line = clean_line(line);
    // The command word ends at a colon or a space.
    let split = line.find([':', ' ', '\t']).unwrap_or(line.len());
    let (word, rest) = line.split_at(split);
    let word = word.to_ascii_lowercase();
    let arg = rest.trim_start_matches([':', ' ', '\t']).trim();
    let arg = (!arg.is_empty()).then(|| arg.to_string());
    let needs = |what: &str| TriageError(format!("{word} needs {what}, e.g. \"{word}: …\""));
    let parsed = match word.as_str() {
        "meeting" => {
            let date = match &arg {
                None => None,
                Some(a) => {
                    let first = a.split_whitespace().next().unwrap_or_default();
                    Some(NaiveDate::parse_from_str(first, "%Y-%m-%d").map_err(|_| {
                        TriageError(format!("meeting takes a date written YYYY-MM-DD, not {first:?}"))
                    })?)
                }
            };
            Line::Decision(Command::Meeting(date))
        }
        "paper" | "message" if arg.is_some() => {
            return Err(TriageError(format!(
                "{word} takes nothing after it on its line; put your message for the requester on the lines below"
            )));
        }
        "paper" => Line::Decision(Command::Paper),
        "message" => Line::Decision(Command::Message),
        "more-work" | "more_work" | "morework" => {
            Line::Decision(Command::MoreWork(arg.ok_or_else(|| needs("what is needed"))?))
        }
        "decline" => Line::Decision(Command::Decline(arg.ok_or_else(|| needs("a reason"))?)),
        "redirect" => Line::Decision(Command::Redirect(arg.ok_or_else(|| needs("where it belongs"))?)),
        "duplicate" => {
            let a = arg.ok_or_else(|| {
                TriageError("duplicate needs the earlier reference, e.g. \"duplicate GP-2026-0012\"".into())
            })?;
            let first = a.split_whitespace().next().unwrap_or_default();
            let reference = Reference::parse(first).map_err(|_| {
                TriageError(format!("duplicate needs a reference like GP-2026-0012, not {first:?}"))
            })?;
            Line::Decision(Command::Duplicate(reference))
        }
        "priority" => {
            let key =
                arg.ok_or_else(|| TriageError("priority needs a key, e.g. \"priority workforce\"".into()))?;
            Line::Priority(key.trim_end_matches(['.', ',']).to_ascii_lowercase())
        }
        "note" => Line::Note(arg.ok_or_else(|| needs("some text"))?),
        // "more work: …" written with a space.
        "more" if arg.as_deref().is_some_and(|a| a.to_ascii_lowercase().starts_with("work")) => {
            let rest = arg.as_deref().unwrap_or_default().get(4..).unwrap_or_default();
            return parse_line(&format!("more-work{rest}"));
        }
        _ => return Ok(None),
    };
    Ok(Some(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Reply {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn each_decision_parses() {
        assert_eq!(ok("meeting").decision, Some(Command::Meeting(None)));
        assert_eq!(
            ok("Meeting 2026-12-03").decision,
            Some(Command::Meeting(NaiveDate::from_ymd_opt(2026, 12, 3)))
        );
        assert_eq!(ok("PAPER").decision, Some(Command::Paper));
        assert_eq!(ok("/message").decision, Some(Command::Message));
        assert_eq!(
            ok("#more-work: costings please").decision,
            Some(Command::MoreWork("costings please".into()))
        );
        assert_eq!(ok("more work: costings").decision, Some(Command::MoreWork("costings".into())));
        assert_eq!(ok("decline: not GP work").decision, Some(Command::Decline("not GP work".into())));
        assert_eq!(ok("redirect: the LMC").decision, Some(Command::Redirect("the LMC".into())));
        assert_eq!(
            ok("duplicate gp-2026-0012").decision,
            Some(Command::Duplicate(Reference::parse("GP-2026-0012").unwrap()))
        );
    }

    #[test]
    fn priorities_notes_and_the_message_for_the_requester() {
        let r = ok(
            "\n  meeting\npriority Workforce\npriority shift\nnote: talk to Sam first\n\nThanks, we will discuss this on the 3rd.\nJane",
        );
        assert_eq!(r.decision, Some(Command::Meeting(None)));
        assert_eq!(r.priorities, ["workforce", "shift"]);
        assert_eq!(r.notes, ["talk to Sam first"]);
        assert_eq!(r.message, "Thanks, we will discuss this on the 3rd.\nJane");
        let tags_only = ok("priority workforce");
        assert_eq!(tags_only.decision, None);
    }

    #[test]
    fn what_is_not_understood_says_why() {
        for (text, why) in [
            ("", "no command"),
            ("Thanks, will look at this", "\"Thanks,\""),
            ("maybe", "\"maybe\""),
            ("decline", "reason"),
            ("meeting next week", "YYYY-MM-DD"),
            ("duplicate the one from March", "reference"),
            ("paper\nmeeting", "one decision"),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_cli_builds_the_same_commands() {
        assert_eq!(
            Command::from_parts(Decision::Decline, Some("no")).unwrap(),
            Command::Decline("no".into())
        );
        assert_eq!(Command::from_parts(Decision::Paper, None).unwrap(), Command::Paper);
        assert!(Command::from_parts(Decision::Redirect, None).is_err());
    }
}
