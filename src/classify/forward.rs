//! Recognising a forwarded approach: a practice manager (or anyone) sends
//! on an email they received from a system partner, and the request must be
//! logged against the *original* sender, not the forwarder.
//!
//! Mail clients do not mark forwards in headers, so this reads the body the
//! way a person would: an explicit marker line ("---------- Forwarded
//! message ---------", "Begin forwarded message:", …) or Outlook's
//! separator and "From: / Sent: / To: / Subject:" block, followed by the
//! original message. Outlook uses the same block for *replies*, so the
//! Outlook forms only count when the subject says "FW:" or nothing but
//! white space precedes the block. An attached message (message/rfc822,
//! "forward as attachment") is read from its own headers.

use serde::{Deserialize, Serialize};

use super::Mailbox;
use super::mime::{Extracted, MAX_NESTING, clean_display_name};
use super::text::{
    CC_LABELS, DATE_LABELS, FROM_LABELS, ForwardMarker, SUBJECT_LABELS, TO_LABELS, forward_marker,
    is_attribution, is_header_block_start, is_original_message_line, is_underscore_line, normalise_line,
    scan_window, split_label, tidy_lines,
};

/// An approach found inside a forward: who originally wrote it, and what
/// they wrote. The original sender becomes the requester.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    /// The ORIGINAL sender. `address` is empty when the forward header gave
    /// only a display name (Exchange writes internal senders that way).
    pub from: Mailbox,
    /// The original subject, as written in the forwarded header block.
    pub subject: Option<String>,
    /// As written ("Monday, 16 November 2026 09:12"): forward headers use
    /// every date format under the sun, so no parse is attempted.
    pub date: Option<String>,
    /// The forwarded message's text (what follows the header block).
    pub body_text: String,
    /// When known (message/rfc822 attachments).
    pub message_id: Option<String>,
    /// The forwarder's own note above the forwarded block, if any.
    pub note: String,
    /// How the forward was recognised, for the audit trail.
    pub source: ForwardSource,
}

/// Which client convention revealed the forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardSource {
    /// "-----Original Message-----", the underscore separator, or a bare
    /// "From: / Sent:" block (Outlook desktop, Outlook on the web).
    Outlook,
    /// "---------- Forwarded message ---------".
    Gmail,
    /// "Begin forwarded message:".
    AppleMail,
    /// "-------- Forwarded Message --------".
    Thunderbird,
    /// An attached message/rfc822.
    Attachment,
}

/// The header fields a forwarded-header block can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    From,
    Date,
    To,
    Cc,
    Subject,
    Other,
}

/// The parsed forwarded-header block and where the original body starts.
#[derive(Debug, Default)]
struct Block {
    from: Option<String>,
    date: Option<String>,
    subject: Option<String>,
    seen: Vec<Field>,
    body_start: usize,
}

/// How many lines a header block may span (long To/Cc lists wrap).
const MAX_BLOCK_LINES: usize = 40;
/// Every line `parse_block` can look at before it decides whether there is
/// a block: up to 3 blank lines, [`MAX_BLOCK_LINES`], and its look-ahead of
/// 2 past a blank line, with room to spare.
const BLOCK_WINDOW: usize = MAX_BLOCK_LINES + 8;

/// Whether a subject announces a forward ("FW:", "Fwd:", "WG:", "TR:",
/// after any gateway tag such as "\[EXTERNAL\]"). "RE: FW:" is a reply.
pub(super) fn is_forward_subject(subject: &str) -> bool {
    let mut rest = subject.trim_start();
    // Gateway tags in front ("[EXTERNAL] FW: ...").
    for _ in 0..4 {
        match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
            Some((tag, after)) if tag.len() <= 40 => rest = after.trim_start(),
            _ => break,
        }
    }
    let word_end = rest.char_indices().find(|(_, c)| !c.is_alphabetic()).map_or(rest.len(), |(i, _)| i);
    let word = rest.get(..word_end).unwrap_or("").to_lowercase();
    let after = rest.get(word_end..).unwrap_or("").trim_start();
    matches!(word.as_str(), "fw" | "fwd" | "wg" | "tr" | "doorst") && after.starts_with(':')
}

/// Looks for a forwarded message in a body text. `forward_subject` says
/// whether the subject announced a forward, which is what lets Outlook's
/// reply-or-forward block count as a forward when a note precedes it.
///
/// Markers are looked for in the first `MAX_SCAN_BYTES` (see
/// `text::scan_window`); the forwarded body found may run on past them.
pub(super) fn detect_in_text(text: &str, forward_subject: bool) -> Option<Forwarded> {
    let (head, tail) = scan_window(text);
    let raw_lines: Vec<&str> = head.lines().collect();
    let lines: Vec<String> = raw_lines.iter().map(|l| normalise_line(l)).collect();

    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() || line.starts_with('>') {
            continue;
        }
        if is_attribution(&lines, i) {
            // "On … wrote:" comes first: this is a reply with history.
            return None;
        }
        if let Some(marker) = forward_marker(line) {
            let source = match marker {
                ForwardMarker::Gmail => ForwardSource::Gmail,
                ForwardMarker::AppleMail => ForwardSource::AppleMail,
                ForwardMarker::Thunderbird => ForwardSource::Thunderbird,
            };
            if let Some(block) = parse_block(&lines, i + 1) {
                return Some(build(&raw_lines, tail, i, block, source));
            }
            // Some clients quote the whole forwarded message with "> ".
            // Only the lines `parse_block` can read are dequoted to look
            // for the block; dequoting all the rest for every marker line
            // made a mail of many marker lines quadratic (minutes for 1 MB).
            let after = raw_lines.get(i + 1..).unwrap_or(&[]);
            let window: Vec<String> =
                after.iter().take(BLOCK_WINDOW).map(|l| normalise_line(dequote(l))).collect();
            if parse_block(&window, 0).is_none() {
                continue;
            }
            let unquoted: Vec<&str> = after.iter().map(|l| dequote(l)).collect();
            let unquoted_norm: Vec<String> = unquoted.iter().map(|l| normalise_line(l)).collect();
            if let Some(mut block) = parse_block(&unquoted_norm, 0) {
                let mut all: Vec<&str> = raw_lines.get(..=i).unwrap_or(&[]).to_vec();
                all.extend(unquoted);
                block.body_start += i + 1;
                let tail: String = tail.lines().map(dequote).collect::<Vec<_>>().join("\n");
                return Some(build(&all, &tail, i, block, source));
            }
            continue;
        }
        let outlook_start = if is_original_message_line(line) || is_underscore_line(line) {
            Some(i + 1)
        } else if is_header_block_start(&lines, i) {
            Some(i)
        } else {
            None
        };
        if let Some(start) = outlook_start {
            let Some(block) = parse_block(&lines, start) else {
                // A decorative line of underscores, not a header block.
                continue;
            };
            if forward_subject || lines.get(..i).unwrap_or(&[]).iter().all(String::is_empty) {
                return Some(build(&raw_lines, tail, i, block, ForwardSource::Outlook));
            }
            // The same block under a reply: quoted history, not a forward.
            return None;
        }
    }
    None
}

/// One level of "> " quoting removed.
fn dequote(line: &str) -> &str {
    let trimmed = line.trim_start();
    match trimmed.strip_prefix('>') {
        Some(rest) => rest.strip_prefix(' ').unwrap_or(rest),
        None => line,
    }
}

/// A forward made by attaching the original message.
pub(super) fn from_attachment(nested: &Extracted, note: &str) -> Option<Forwarded> {
    let from = nested.from.clone().or_else(|| nested.sender.clone())?;
    Some(Forwarded {
        from,
        subject: (!nested.subject.is_empty()).then(|| nested.subject.clone()),
        date: nested.date_raw.clone(),
        body_text: nested.body_text.clone(),
        message_id: nested.message_id.clone(),
        note: note.trim().to_string(),
        source: ForwardSource::Attachment,
    })
}

/// Forwards of forwards, outermost first: the forward found in the
/// message, then any forward found inside that forward's text, and so on,
/// at most eight deep. The caller decides whose approach it is
/// (e.g. the innermost sender when the outer forwarders are practices).
pub fn forwarded_chain(parsed: &super::Parsed) -> Vec<Forwarded> {
    let mut chain: Vec<Forwarded> = parsed.forwarded.iter().cloned().collect();
    while chain.len() < MAX_NESTING {
        let Some(last) = chain.last() else {
            break;
        };
        let gate = last.subject.as_deref().is_some_and(is_forward_subject);
        match detect_in_text(&last.body_text, gate) {
            Some(next) => chain.push(next),
            None => break,
        }
    }
    chain
}

/// The forward whose marker is `raw_lines[marker]`; `tail` is the text
/// after the scanned lines, which belongs to the forwarded body.
fn build(raw_lines: &[&str], tail: &str, marker: usize, block: Block, source: ForwardSource) -> Forwarded {
    let note = raw_lines.get(..marker).unwrap_or(&[]).join("\n");
    let mut body = raw_lines.get(block.body_start..).unwrap_or(&[]).join("\n");
    if !tail.is_empty() {
        body.push('\n');
        body.push_str(tail);
    }
    Forwarded {
        from: parse_mailbox(block.from.as_deref().unwrap_or("")),
        subject: block.subject.filter(|s| !s.is_empty()),
        date: block.date.filter(|s| !s.is_empty()),
        body_text: tidy_lines(&body),
        message_id: None,
        note: tidy_lines(&note),
        source,
    }
}

/// Reads the "Label: value" lines of a forwarded-header block starting at
/// `start`. None unless it has a From line and at least one other field.
fn parse_block(lines: &[String], start: usize) -> Option<Block> {
    let mut i = start;
    // Apple Mail and Gmail leave a blank line after the marker.
    while lines.get(i).is_some_and(String::is_empty) && i < start + 3 {
        i += 1;
    }
    let first_line = i;
    let mut block = Block::default();
    let mut last: Option<Field> = None;

    while let Some(line) = lines.get(i) {
        if i >= first_line + MAX_BLOCK_LINES {
            break;
        }
        if line.is_empty() {
            // Apple Mail separates the header lines with blank lines; carry
            // on only if a field we have not seen yet follows.
            let next =
                (i + 1..(i + 3).min(lines.len())).find(|&j| lines.get(j).is_some_and(|l| !l.is_empty()));
            let continues = next
                .and_then(|j| lines.get(j))
                .and_then(|l| field_of(l))
                .is_some_and(|(f, _)| f != Field::Other && !block.seen.contains(&f));
            match next {
                Some(j) if continues => {
                    i = j;
                    continue;
                }
                _ => break,
            }
        }
        match field_of(line) {
            Some((field, value)) => {
                let value = value.to_string();
                match field {
                    Field::From if block.from.is_none() => block.from = Some(value),
                    Field::Date if block.date.is_none() => block.date = Some(value),
                    Field::Subject if block.subject.is_none() => block.subject = Some(value),
                    _ => {}
                }
                block.seen.push(field);
                last = Some(field);
            }
            // Outlook wraps long To/Cc lists onto lines without a label.
            None if matches!(last, Some(Field::To | Field::Cc))
                && (line.contains('@') || line.contains(';')) => {}
            None => break,
        }
        i += 1;
    }

    if block.from.is_none() || block.seen.len() < 2 {
        return None;
    }
    while lines.get(i).is_some_and(String::is_empty) {
        i += 1;
    }
    block.body_start = i;
    Some(block)
}

/// Maps a header-block label (in the languages `text` lists) to the field it names.
fn field_of(line: &str) -> Option<(Field, &str)> {
    let (label, value) = split_label(line)?;
    let label = label.as_str();
    let field = if FROM_LABELS.contains(&label) {
        Field::From
    } else if DATE_LABELS.contains(&label) {
        Field::Date
    } else if TO_LABELS.contains(&label) {
        Field::To
    } else if CC_LABELS.contains(&label) {
        Field::Cc
    } else if SUBJECT_LABELS.contains(&label) {
        Field::Subject
    } else if ["bcc", "reply-to", "importance", "priority", "attachments", "anlagen", "pièces jointes"]
        .contains(&label)
    {
        Field::Other
    } else {
        return None;
    };
    Some((field, value))
}

/// Reads the sender out of a forwarded "From:" value, in any of the forms
/// clients write: `Name <addr>`, `Name [mailto:addr]`, `"Doe, Jane"
/// <addr>`, a bare address, or a bare name (then the address is empty).
pub(super) fn parse_mailbox(value: &str) -> Mailbox {
    let value = value.replace('*', "");
    let value = value.trim();

    if let Some((name, address)) = bracketed(value, '<', '>').or_else(|| bracketed(value, '[', ']')) {
        return Mailbox { name: display_name(name, &address), address };
    }
    if let Some((start, end)) = find_address(value) {
        let address = value.get(start..end).unwrap_or("").to_lowercase();
        let name = format!("{} {}", value.get(..start).unwrap_or(""), value.get(end..).unwrap_or(""));
        // Whatever wrapped the address ("(jo@x)", "<jo@x>") is left empty.
        let name = name.replace("()", "").replace("<>", "").replace("[]", "");
        return Mailbox { name: display_name(&name, &address), address };
    }
    Mailbox { address: String::new(), name: clean_display_name(value) }
}

/// `Name <addr>` / `Name [mailto:addr]`: the name before the bracket and
/// the address inside, if the inside holds an address.
fn bracketed(value: &str, open: char, close: char) -> Option<(&str, String)> {
    let start = value.rfind(open)?;
    let inner = value.get(start + open.len_utf8()..)?;
    let end = inner.find(close)?;
    let inner = inner.get(..end)?.trim();
    let inner = inner
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("mailto:"))
        .and_then(|_| inner.get(7..))
        .unwrap_or(inner)
        .trim();
    if !inner.contains('@') || inner.contains(char::is_whitespace) {
        return None;
    }
    Some((value.get(..start)?, inner.to_lowercase()))
}

fn display_name(name: &str, address: &str) -> Option<String> {
    clean_display_name(name).filter(|n| !n.eq_ignore_ascii_case(address))
}

/// Byte range of the first thing shaped like an email address.
fn find_address(value: &str) -> Option<(usize, usize)> {
    let at = value.find('@')?;
    let is_local = |c: char| c.is_alphanumeric() || "._%+-'!#$&*/=?^`{|}~".contains(c);
    let is_domain = |c: char| c.is_alphanumeric() || c == '.' || c == '-';
    let start =
        value.get(..at)?.char_indices().rev().take_while(|(_, c)| is_local(*c)).last().map(|(i, _)| i)?;
    let after = value.get(at + 1..)?;
    let len =
        after.char_indices().take_while(|(_, c)| is_domain(*c)).last().map(|(i, c)| i + c.len_utf8())?;
    let domain = after.get(..len)?.trim_end_matches('.');
    if !domain.contains('.') {
        return None;
    }
    Some((start, at + 1 + domain.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(address: &str, name: Option<&str>) -> Mailbox {
        Mailbox { address: address.to_string(), name: name.map(str::to_string) }
    }

    #[test]
    fn mailbox_forms() {
        assert_eq!(
            parse_mailbox("Jo Bloggs <Jo.Bloggs@icb.test>"),
            mailbox("jo.bloggs@icb.test", Some("Jo Bloggs"))
        );
        assert_eq!(
            parse_mailbox("Bloggs, Jo [mailto:jo.bloggs@icb.test]"),
            mailbox("jo.bloggs@icb.test", Some("Bloggs, Jo"))
        );
        assert_eq!(
            parse_mailbox("\"Doe, Jane\" <jane.doe@icb.test>"),
            mailbox("jane.doe@icb.test", Some("Doe, Jane"))
        );
        assert_eq!(
            parse_mailbox("*Jo Bloggs* <jo.bloggs@icb.test>"),
            mailbox("jo.bloggs@icb.test", Some("Jo Bloggs"))
        );
        assert_eq!(parse_mailbox("jo.bloggs@icb.test"), mailbox("jo.bloggs@icb.test", None));
        assert_eq!(
            parse_mailbox("BLOGGS, Jo (NHS ANYTOWN ICB) jo.bloggs@icb.test"),
            mailbox("jo.bloggs@icb.test", Some("BLOGGS, Jo (NHS ANYTOWN ICB)"))
        );
        assert_eq!(
            parse_mailbox("BLOGGS, Jo (NHS ANYTOWN ICB)"),
            mailbox("", Some("BLOGGS, Jo (NHS ANYTOWN ICB)"))
        );
        assert_eq!(parse_mailbox(""), mailbox("", None));
        // Nothing but something shaped like an address is no name (see domain::display_name).
        assert_eq!(parse_mailbox("@"), mailbox("", None));
        assert_eq!(parse_mailbox("é@é"), mailbox("", None));
    }

    #[test]
    fn forward_subjects() {
        assert!(is_forward_subject("FW: Phlebotomy"));
        assert!(is_forward_subject("Fwd: Phlebotomy"));
        assert!(is_forward_subject("[EXTERNAL] Fw : Phlebotomy"));
        assert!(is_forward_subject("WG: Phlebotomy"));
        assert!(!is_forward_subject("RE: FW: Phlebotomy"));
        assert!(!is_forward_subject("Forward planning"));
        assert!(!is_forward_subject(""));
    }

    #[test]
    fn outlook_block_under_reply_is_not_a_forward() {
        let text = "Thanks Jo, we'll discuss.\n\nFrom: Jo Bloggs <jo.bloggs@icb.test>\nSent: Monday, November 16, 2026 9:12 AM\nTo: Practice <practice.manager@nhs.test>\nSubject: Phlebotomy\n\nOriginal text";
        assert_eq!(detect_in_text(text, false), None);
        let fwd = detect_in_text(text, true);
        assert_eq!(fwd.as_ref().map(|f| f.from.address.as_str()), Some("jo.bloggs@icb.test"));
        assert_eq!(fwd.as_ref().map(|f| f.note.as_str()), Some("Thanks Jo, we'll discuss."));
        assert_eq!(fwd.map(|f| f.body_text), Some("Original text".to_string()));
    }

    #[test]
    fn block_at_top_needs_no_subject() {
        let text = "\n\nFrom: Jo Bloggs <jo.bloggs@icb.test>\nSent: Monday, November 16, 2026 9:12 AM\nSubject: Phlebotomy\n\nBody";
        let fwd = detect_in_text(text, false);
        assert_eq!(fwd.map(|f| f.source), Some(ForwardSource::Outlook));
    }

    #[test]
    fn wrapped_to_list_and_cc() {
        let text = "-----Original Message-----\nFrom: Jo Bloggs <jo.bloggs@icb.test>\nSent: 16 November 2026 09:12\nTo: a@nhs.test; b@nhs.test;\n c@nhs.test\nCc: d@nhs.test\nSubject: Phlebotomy\n\nBody here";
        let fwd = detect_in_text(text, true);
        assert_eq!(fwd.as_ref().and_then(|f| f.subject.as_deref()), Some("Phlebotomy"));
        assert_eq!(fwd.map(|f| f.body_text), Some("Body here".to_string()));
    }

    #[test]
    fn reply_attribution_stops_detection() {
        let text = "Sounds good\n\nOn Mon, 16 Nov 2026 at 09:12, Jo <jo@icb.test> wrote:\n> ---------- Forwarded message ---------\n> From: x <x@y.test>";
        assert_eq!(detect_in_text(text, true), None);
    }

    #[test]
    fn underscores_without_block_are_ignored() {
        let text = "Note\n__________\nJust a line\n\n---------- Forwarded message ---------\nFrom: Jo <jo@icb.test>\nDate: Mon, 16 Nov 2026\n\nBody";
        let fwd = detect_in_text(text, false);
        assert_eq!(fwd.map(|f| f.source), Some(ForwardSource::Gmail));
    }

    #[test]
    fn quoted_forward_after_marker() {
        let text = "FYI\n\nBegin forwarded message:\n\n> From: Jo Bloggs <jo@icb.test>\n> Subject: Phlebotomy\n> Date: 16 November 2026\n>\n> The body\n> more";
        let fwd = detect_in_text(text, false);
        assert_eq!(fwd.as_ref().map(|f| f.from.address.as_str()), Some("jo@icb.test"));
        assert_eq!(fwd.as_ref().map(|f| f.body_text.as_str()), Some("The body\nmore"));
        assert_eq!(fwd.map(|f| f.note), Some("FYI".to_string()));
    }

    #[test]
    fn many_marker_lines_stay_linear() {
        // Found by deploy/local/fuzz --pathological: each marker line with no
        // header block under it used to dequote every line after it, so 1 MB
        // of "Begin forwarded message:" lines took minutes.
        for marker in ["Begin forwarded message:", "---------- Forwarded message ---------"] {
            let many = format!("{marker}\n").repeat(20_000);
            assert_eq!(detect_in_text(&many, true), None);
            // A real quoted forward after them is still found.
            let text = format!(
                "{many}{marker}\n\n> From: Jo Bloggs <jo@icb.test>\n> Subject: Phlebotomy\n> Date: 16 November 2026\n>\n> The body"
            );
            let fwd = detect_in_text(&text, false);
            assert_eq!(fwd.as_ref().map(|f| f.from.address.as_str()), Some("jo@icb.test"));
            assert_eq!(fwd.map(|f| f.body_text), Some("The body".to_string()));
        }
    }

    #[test]
    fn long_forwarded_body_is_kept_whole() {
        // The scan for markers stops after MAX_SCAN_BYTES (40 MB bodies of
        // short lines took gigabytes); the forwarded text does not.
        let long = "line\n".repeat(super::super::text::MAX_SCAN_BYTES / 4);
        let text = format!(
            "FYI\n---------- Forwarded message ---------\nFrom: Jo <jo@icb.test>\nDate: Mon\n\n{long}end"
        );
        let fwd = detect_in_text(&text, false);
        assert_eq!(fwd.as_ref().map(|f| f.body_text.len()), Some(long.len() + 3));
        assert_eq!(fwd.map(|f| f.note), Some("FYI".to_string()));
        let quoted = format!(
            "Begin forwarded message:\n\n> From: Jo <jo@icb.test>\n> Subject: S\n>\n{}> end",
            long.replace("line", "> line")
        );
        let fwd = detect_in_text(&quoted, false);
        assert_eq!(fwd.as_ref().map(|f| f.body_text.len()), Some(long.len() + 3));
        // A marker past the first megabyte is not looked for.
        let late =
            format!("{long}---------- Forwarded message ---------\nFrom: Jo <jo@icb.test>\nDate: Mon\n\nx");
        assert_eq!(detect_in_text(&late, true), None);
    }

    #[test]
    fn german_outlook_forward() {
        let text = "-----Ursprüngliche Nachricht-----\nVon: Jo Bloggs <jo.bloggs@icb.test>\nGesendet: Montag, 16. November 2026 09:12\nAn: praxis@nhs.test\nBetreff: Blutabnahme\n\nText";
        let fwd = detect_in_text(text, false);
        assert_eq!(fwd.as_ref().and_then(|f| f.subject.as_deref()), Some("Blutabnahme"));
        assert_eq!(fwd.map(|f| f.from.address), Some("jo.bloggs@icb.test".to_string()));
    }
}
