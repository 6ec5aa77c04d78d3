//! The gatekeeper's one-line commands (PRODUCT.md, "Triage by email").
//!
//! A command is a line of its own in the new text of a reply (the quoted history already
//! removed); case does not matter, and a list marker before it is allowed (`#`, `/`, `-`,
//! `*`, `•`, Outlook's `·`, `o` and `§` bullets, `1.`), as is any kind of space before its colon.
//! Commands usually come first, but a command line ANYWHERE in the new text is a command:
//! a `note:` or `priority` written below the message for the requester is taken as such and
//! never reaches the requester. Every other line is the message for the requester.
//!
//! Telling a command from a sentence. Leading command lines (before any text) are read
//! generously, as they always were: `decline not GP work` is a decline, and a first line
//! that starts with a command word but does not fit it (`meeting next week`) is an error.
//! Elsewhere a line is a command only in the command's own shape:
//! - the command word alone on its line (`paper`, `meeting`; `decline` alone is an error, as
//!   it needs a reason), or followed by `:`;
//! - `meeting YYYY-MM-DD`, `duplicate GP-2026-0012`, `priority` with anything after it (one
//!   key a line: more is an error);
//! - `more-work:`, `decline:`, `redirect:`, `note:` with the colon.
//! - `circulate` (not a decision: it sends the requester's papers to the board, alone or with
//!   a decision) and `circulate again`.
//!
//! So "Paper copies will follow", "Message me if you need more" or "Note that the LMC
//! agrees" stay text for the requester, while "Note: the LMC agrees" is an internal note.
//! A line in a command's shape that does not parse (`duplicate: the March one`, `note:` with
//! nothing after it), or a second decision, refuses the whole reply with an error that says
//! why: never a guess.

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

/// `circulate`: send the request's papers to the board; `circulate again` sends them all
/// even when they went before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Circulate {
    /// The papers not yet sent.
    New,
    /// Every paper, sent before or not.
    Again,
}

/// Everything a reply said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub decision: Option<Command>,
    /// Send the papers to the board (not a decision: it may come with one, or alone).
    pub circulate: Option<Circulate>,
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
note: TEXT                internal note, never sent to the requester
circulate [again]         send the requester's paper(s) to the board";

enum Line {
    Decision(Command),
    Circulate(Circulate),
    Priority(String),
    Note(String),
}

/// Parses the new text of a reply (quoted history already removed): the commands wherever
/// they are, and the remaining lines as the message for the requester.
pub fn parse(text: &str) -> Result<Reply, TriageError> {
    let mut reply = Reply::default();
    let mut message: Vec<String> = Vec::new();
    let mut first_text: Option<String> = None;
    let mut commands = 0;
    for raw in text.lines() {
        let line = clean_line(raw);
        if line.is_empty() {
            if first_text.is_some() {
                message.push(String::new());
            }
            continue;
        }
        let parsed = match (first_text.is_some(), commands) {
            (true, _) => parse_after_text(&line)?,
            (false, 0) => parse_line(&line)?,
            // Below a leading command: generous, unless that would make a sentence an error.
            (false, _) => match parse_line(&line) {
                Ok(parsed) => parsed,
                Err(_) => parse_after_text(&line)?,
            },
        };
        match parsed {
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
            Some(Line::Circulate(c)) => {
                reply.circulate = Some(reply.circulate.map_or(c, |earlier| earlier.max(c)));
            }
            Some(Line::Note(n)) => reply.notes.push(n),
            None => {
                first_text.get_or_insert_with(|| line.clone());
                message.push(raw.replace('\u{a0}', " ").trim_end().to_string());
                continue;
            }
        }
        commands += 1;
    }
    if commands == 0 {
        return Err(match first_text {
            Some(line) => {
                let first = line.split_whitespace().next().unwrap_or_default();
                TriageError(format!("the first line should be a command, but it starts with {first:?}"))
            }
            None => TriageError("the reply has no command in it".into()),
        });
    }
    reply.message = join_paragraphs(&message);
    Ok(reply)
}

/// The message lines with the runs of blank lines that removed command lines leave behind
/// folded into one.
fn join_paragraphs(lines: &[String]) -> String {
    let mut out: Vec<&str> = Vec::with_capacity(lines.len());
    for line in lines {
        if line.is_empty() && out.last().is_none_or(|l| l.is_empty()) {
            continue;
        }
        out.push(line);
    }
    out.join("\n").trim().to_string()
}

/// Whether `line`, standing below the text for the requester, would be read as a command
/// (or refuse the reply as a malformed one): the rule the fuzzer holds the message to.
pub fn is_command_line(line: &str) -> bool {
    !matches!(parse_after_text(&clean_line(line)), Ok(None))
}

/// A line after the message for the requester has begun: a command only in the command's
/// own shape (see the module documentation), so that a sentence starting with a command word
/// stays text.
fn parse_after_text(line: &str) -> Result<Option<Line>, TriageError> {
    let Some((word, rest)) = command_word(line) else {
        return Ok(None);
    };
    let rest = rest.trim_start_matches([' ', '\t']);
    let colon = rest.starts_with(':');
    let arg = rest.trim_start_matches(':').trim();
    let first = arg.split_whitespace().next().unwrap_or_default();
    let shaped = colon
        || arg.is_empty()
        || match word {
            "meeting" => is_date(first),
            "duplicate" => Reference::parse(first).is_ok(),
            // Anything after "priority" is meant as keys: a gatekeeper listing two on one line
            // is told how to write them, never has them mailed to the requester.
            "priority" => !arg.is_empty(),
            "circulate" => arg.eq_ignore_ascii_case("again"),
            _ => false,
        };
    if shaped { parse_line(line) } else { Ok(None) }
}

/// The canonical command word a line starts with, and the rest of the line; `None` when it
/// starts with no command word ("more work" written with a space counts as one).
fn command_word(line: &str) -> Option<(&'static str, &str)> {
    const WORDS: &[(&str, &str)] = &[
        ("meeting", "meeting"),
        ("paper", "paper"),
        ("message", "message"),
        ("more-work", "more-work"),
        ("more_work", "more-work"),
        ("morework", "more-work"),
        ("decline", "decline"),
        ("redirect", "redirect"),
        ("duplicate", "duplicate"),
        ("priority", "priority"),
        ("note", "note"),
        ("notes", "note"),
        ("circulate", "circulate"),
    ];
    let split = line.find([':', ' ', '\t']).unwrap_or(line.len());
    let (word, rest) = line.split_at(split);
    // Emphasis as plain text writes it: `*Note*:`, `_note_:`.
    let word = word.trim_matches(['*', '_']);
    if word.eq_ignore_ascii_case("more") {
        let after = rest.trim_start_matches([' ', '\t']);
        let work = after.get(..4).filter(|w| w.eq_ignore_ascii_case("work"))?;
        let rest = after.get(work.len()..)?;
        return rest
            .chars()
            .next()
            .is_none_or(|c| matches!(c, ':' | ' ' | '\t'))
            .then_some(("more-work", rest));
    }
    WORDS.iter().find(|(w, _)| word.eq_ignore_ascii_case(w)).map(|(_, canonical)| (*canonical, rest))
}

fn is_date(s: &str) -> bool {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

/// Single characters written before a command as a list marker: `#`, `/` and the bullets
/// and dashes clients draw, Outlook's among them (its HTML lists carry a Symbol-font `·`,
/// Courier `o` and Wingdings `§`, and its plain text the private-use forms of those glyphs).
const MARKERS: &[char] = &[
    '#', '/', '*', '-', '•', '·', '‣', '◦', '⁃', '∙', '▪', '▫', '■', '□', '●', '○', '◆', '➢', '→', '–', '—',
    '\u{F0B7}', '\u{F0A7}', '\u{F076}', '\u{F0D8}', '\u{F0FC}',
];

/// Strips what mail clients and people put around a command: list markers ([`MARKERS`],
/// Outlook's `o` and `§` sub-bullets, `1.`, `a)`), and white space of every kind (the
/// no-break or narrow no-break space French puts before a colon, tabs after a bullet);
/// zero-width characters go and a full-width colon counts as one. Found by an attack: each
/// of these made a `note:` line text, which went to the requester.
fn clean_line(line: &str) -> String {
    let line: String = line
        .chars()
        .filter_map(|c| match c {
            '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' => None,
            '\u{FF1A}' => Some(':'),
            c if c.is_whitespace() => Some(' '),
            c => Some(c),
        })
        .collect();
    let mut rest = line.trim();
    loop {
        let stripped = rest.trim_start_matches(MARKERS).trim_start();
        let stripped = list_label(stripped).unwrap_or(stripped);
        if stripped.len() == rest.len() {
            return rest.to_string();
        }
        rest = stripped;
    }
}

/// What follows a list label that is a word of its own: Outlook's `o` or `§` sub-bullet, or
/// an enumerator of up to two digits or one letter with `.` or `)` (`1.`, `12)`, `a.`).
fn list_label(line: &str) -> Option<&str> {
    let (label, rest) = line.split_once(' ')?;
    let enumerator = label.strip_suffix(['.', ')']).is_some_and(|n| {
        let number = (1..=2).contains(&n.len()) && n.chars().all(|c| c.is_ascii_digit());
        let letter = n.len() == 1 && n.chars().all(|c| c.is_ascii_alphabetic());
        number || letter
    });
    (label == "o" || label == "§" || enumerator).then(|| rest.trim_start())
}

fn parse_line(line: &str) -> Result<Option<Line>, TriageError> {
    let line = clean_line(line);
    let Some((word, rest)) = command_word(&line) else {
        return Ok(None);
    };
    let arg = rest.trim_start_matches([':', ' ', '\t', '*', '_']).trim();
    let arg = (!arg.is_empty()).then(|| arg.to_string());
    let needs = |what: &str| TriageError(format!("{word} needs {what}, e.g. \"{word}: …\""));
    let parsed = match word {
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
        "more-work" => Line::Decision(Command::MoreWork(arg.ok_or_else(|| needs("what is needed"))?)),
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
            let key = key.trim_end_matches(['.', ',']);
            if key.contains(char::is_whitespace) {
                return Err(TriageError(format!(
                    "priority takes one key per line, not {key:?}: write \"priority KEY\" once for each"
                )));
            }
            Line::Priority(key.to_ascii_lowercase())
        }
        "note" => Line::Note(arg.ok_or_else(|| needs("some text"))?),
        "circulate" => match arg.as_deref() {
            None => Line::Circulate(Circulate::New),
            Some(a) if a.eq_ignore_ascii_case("again") => Line::Circulate(Circulate::Again),
            Some(_) => {
                return Err(TriageError(
                    "circulate takes nothing after it, or \"again\" to send papers that went before; put any words for the board on the lines below".into(),
                ));
            }
        },
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
    fn commands_after_the_text_are_commands_and_leave_the_message() {
        // Found by an outside test: the note below the text went to the requester.
        let r = ok(
            "decline: hospital work\nSorry, this belongs to the trust.\n\nnote: told the LMC chair\npriority shift\n\nBest wishes,\nJane",
        );
        assert_eq!(r.decision, Some(Command::Decline("hospital work".into())));
        assert_eq!(r.notes, ["told the LMC chair"]);
        assert_eq!(r.priorities, ["shift"]);
        assert_eq!(r.message, "Sorry, this belongs to the trust.\n\nBest wishes,\nJane");
        // A decision below a greeting counts too, and the greeting is the message.
        let r = ok("Hi Jo,\n- decline: not GP work\n  * Note: spoke to Sam");
        assert_eq!(r.decision, Some(Command::Decline("not GP work".into())));
        assert_eq!((r.notes.as_slice(), r.message.as_str()), (&["spoke to Sam".to_string()][..], "Hi Jo,"));
        let r = ok("Thanks.\nMeeting 2026-12-03");
        assert_eq!(r.decision, Some(Command::Meeting(NaiveDate::from_ymd_opt(2026, 12, 3))));
        assert_eq!(r.message, "Thanks.");
    }

    #[test]
    fn notes_in_lists_emphasis_and_foreign_spacing_stay_internal() {
        // Found by an attack: each of these `note` lines was text, and went to the requester.
        for line in [
            "\u{b7}        Note: told the LMC chair", // Outlook's HTML list, made text
            "\u{F0B7}\tnote: told the LMC chair",     // Outlook's plain text list
            "o   note: told the LMC chair",           // Outlook's second level
            "\u{a7}  note: told the LMC chair",       // Outlook's third level
            "1.  note: told the LMC chair",
            "b) note: told the LMC chair",
            "\u{2013} note: told the LMC chair",
            "Note\u{202f}: told the LMC chair", // French typography's narrow no-break space
            "Note\u{2009}: told the LMC chair",
            "*Note*: told the LMC chair", // bold, as plain text writes it
            "_note_: told the LMC chair",
            "Notes: told the LMC chair",
            "\u{200b}note: told the LMC chair",
            "note\u{ff1a} told the LMC chair",
        ] {
            let r = ok(&format!("decline: not GP work\nSorry, this belongs to the trust.\n{line}\nJane"));
            assert_eq!(r.notes, ["told the LMC chair"], "{line:?}");
            assert_eq!(r.message, "Sorry, this belongs to the trust.\nJane", "{line:?}");
        }
        // Ordinary text that merely starts like a list item stays text.
        let text = "paper\no dear, not this one.\n1. Paper copies will follow.\nA. N. Other";
        let r = ok(text);
        assert!(r.notes.is_empty(), "{r:?}");
        assert_eq!(r.message, text.split_once('\n').unwrap().1);
    }

    #[test]
    fn sentences_that_start_with_a_command_word_stay_text() {
        let text = "paper\nPaper copies will follow by post.\nMessage me if you need more.\nNote that the LMC agrees.\nMeeting rooms are booked.\nDecline rates are falling.\nDuplicate forms are not needed.\nMore work than we hoped.";
        let r = ok(text);
        assert_eq!(r.decision, Some(Command::Paper));
        assert!(r.notes.is_empty() && r.priorities.is_empty());
        assert_eq!(r.message, text.split_once('\n').unwrap().1);
    }

    #[test]
    fn a_malformed_command_or_a_second_decision_anywhere_refuses_the_reply() {
        for (text, why) in [
            ("paper\nThanks.\nnote:", "note needs some text"),
            ("paper\nThanks.\nduplicate: the one from March", "reference"),
            ("paper\nThanks.\nmeeting: next week", "YYYY-MM-DD"),
            ("paper\nThanks.\ndecline: not ours", "one decision"),
            ("paper\nThanks.\nmeeting", "one decision"),
            ("paper\nThanks.\nduplicate GP-2026-0001", "one decision"),
            ("paper\nThanks.\nmessage: see below", "takes nothing"),
            ("paper\nThanks.\nDecline", "needs a reason"),
            ("paper\ndecline\nThanks.", "needs a reason"),
            // Found by fuzzing: two keys on one line below the text went to the requester.
            ("paper\nThanks.\npriority workforce shift", "one key per line"),
            ("priority workforce, shift\npaper", "one key per line"),
            ("Thanks, all fine.", "should be a command"),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn circulate_alone_or_with_a_decision_and_again() {
        let r = ok("circulate\nFor Thursday's papers, please.");
        assert_eq!((r.decision, r.circulate), (None, Some(Circulate::New)));
        assert_eq!(r.message, "For Thursday's papers, please.");
        let r = ok("paper\nCirculate again");
        assert_eq!((r.decision, r.circulate), (Some(Command::Paper), Some(Circulate::Again)));
        let r = ok("Thanks.\ncirculate\nnote: chased twice");
        assert_eq!((r.circulate, r.notes.len()), (Some(Circulate::New), 1));
        // A sentence stays text; a malformed command line refuses the reply.
        let r = ok("paper\nCirculate it to the practices as well.");
        assert_eq!(r.circulate, None);
        assert!(parse("circulate it now").unwrap_err().to_string().contains("again"));
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
