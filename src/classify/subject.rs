//! Subjects: the one list of reply and forward prefixes, how they are stripped, and the
//! subject of an answer gatehouse writes. Used for comparing approaches (duplicates), for
//! naming a forwarded request, and for every reply's subject, so all agree on what
//! "Re:", "Fwd:", "AW:" or "SV:" is.

/// Reply/forward prefix words in the languages our partners' clients use.
const PREFIXES: &[&str] = &["re", "fw", "fwd", "aw", "wg", "sv", "vs", "antw", "tr", "rv", "réf", "ref"];

/// The most characters of a sender's subject repeated in the subject of an email gatehouse
/// sends: enough to recognise it, too few to carry a message of the sender's own.
pub const MAX_SUBJECT_CHARS: usize = 120;

/// Removes one leading prefix word with its colon (`Re:`, `RE :`, `Re[2]:`, `AW(3):`);
/// None when the subject does not start with one.
pub fn strip_prefix_word(s: &str) -> Option<&str> {
    let word_end = s.char_indices().find(|(_, c)| !c.is_alphabetic()).map_or(s.len(), |(i, _)| i);
    let word = s.get(..word_end)?.to_lowercase();
    if !PREFIXES.contains(&word.as_str()) {
        return None;
    }
    let mut after = s.get(word_end..)?;
    if let Some(open) = after.strip_prefix(['[', '(']) {
        let close = open.find([']', ')'])?;
        if !open.get(..close)?.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        after = open.get(close + 1..)?;
    }
    after.trim_start().strip_prefix(':')
}

/// "RE: Fwd: Re: Subject" → "Subject": every leading prefix word stripped, trimmed (linear
/// however many there are: each pass looks only at the start of what is left).
pub fn strip_prefixes(subject: &str) -> &str {
    let mut s = subject.trim();
    while let Some(shorter) = strip_prefix_word(s) {
        s = shorter.trim_start();
    }
    s.trim_end()
}

/// A header value fit for one line: control characters (line breaks above all, which could
/// add headers) become spaces, and runs of white space one space.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A sender's subject as it may appear in one of ours: single line, cut to
/// [`MAX_SUBJECT_CHARS`].
pub fn capped(subject: &str) -> String {
    let line = one_line(subject);
    if line.chars().count() <= MAX_SUBJECT_CHARS {
        return line;
    }
    let cut: String = line.chars().take(MAX_SUBJECT_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

/// The subject of an answer to a requester or forwarder: "Re: SUBJECT [GP-2026-0042]", the
/// sender's subject without stacked prefixes and capped, so the reference (which threads
/// the reply) always survives.
pub fn reply_subject(original: &str, reference: &str) -> String {
    let stripped = strip_prefixes(original);
    let subject = if stripped.is_empty() { "(no subject)" } else { stripped };
    format!("Re: {} [{reference}]", capped(subject))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_subject_is_capped_and_keeps_the_reference() {
        let subject = reply_subject(&format!("RE: {}", "word ".repeat(200)), "GP-2026-0042");
        assert!(subject.ends_with("… [GP-2026-0042]"), "{subject}");
        assert!(subject.chars().count() <= MAX_SUBJECT_CHARS + 20, "{subject}");
        assert_eq!(
            reply_subject("Fwd: Rota\r\nBcc: x@y.z", "GP-2026-0001"),
            "Re: Rota Bcc: x@y.z [GP-2026-0001]"
        );
        assert_eq!(reply_subject("  ", "GP-2026-0001"), "Re: (no subject) [GP-2026-0001]");
    }

    #[test]
    fn prefixes_do_not_stack() {
        assert_eq!(strip_prefixes("RE: Fwd: re: Phlebotomy"), "Phlebotomy");
        assert_eq!(strip_prefixes("FW: Fwd: Phlebotomy"), "Phlebotomy");
        assert_eq!(strip_prefixes("RE : Re[2]: Sv: hello"), "hello");
        assert_eq!(strip_prefixes("Regarding phlebotomy"), "Regarding phlebotomy");
        assert_eq!(strip_prefixes(&("Re: ".repeat(10_000) + "x")), "x");
    }

    #[test]
    fn header_values_cannot_carry_new_lines() {
        assert_eq!(one_line("Hello\r\nBcc: victim@example.org"), "Hello Bcc: victim@example.org");
        assert_eq!(one_line("  a \t b  "), "a b");
    }
}
