//! How alike two message texts are, for flagging a "probable duplicate":
//! the same approach sent to two addresses, sent again a day later, or
//! forwarded by two practices with different notes on top.
//!
//! Jaccard similarity over the set of content words plus the set of
//! adjacent word pairs: the words make it tolerant of re-wrapping and small
//! edits, the pairs stop two unrelated mails about the same topic (which
//! share vocabulary) from scoring as duplicates. Quoted lines, signature
//! blocks and very common words are ignored because they are shared by
//! unrelated mail. Linear in the input, which is capped.

use std::collections::HashSet;

use super::text::{is_history_marker, is_signature_delimiter, normalise_line, truncate_at_char};

/// Only this much of each text is compared: enough to recognise a
/// duplicate, and it keeps the cost flat for huge bodies.
const MAX_BYTES: usize = 20 * 1024;

/// Words too common to say anything about what a message is about.
const STOPWORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "been", "before", "being", "below", "best", "between", "both", "but", "by", "can", "could", "dear",
    "did", "do", "does", "doing", "during", "each", "for", "from", "further", "had", "has", "have", "having",
    "he", "her", "here", "hers", "him", "his", "hi", "how", "i", "if", "in", "into", "is", "it", "its",
    "just", "kind", "many", "me", "more", "most", "my", "no", "nor", "not", "of", "off", "on", "once",
    "only", "or", "other", "our", "ours", "out", "over", "own", "please", "regards", "same", "she", "should",
    "so", "some", "such", "than", "thank", "thanks", "that", "the", "their", "them", "then", "there",
    "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "us", "very", "was",
    "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would",
    "you", "your", "yours",
];

/// 0.0..=1.0 similarity of two texts for "probable duplicate" detection.
/// Two texts with no content words at all score 0.0: an empty body is no
/// evidence that two messages are the same. Callers comparing replies
/// should pass `strip_quoted` text, and for forwards the forwarded body.
pub fn similarity(a: &str, b: &str) -> f64 {
    let stop: HashSet<&str> = STOPWORDS.iter().copied().collect();
    let words_a = content_words(a, &stop);
    let words_b = content_words(b, &stop);
    if words_a.is_empty() || words_b.is_empty() {
        return 0.0;
    }
    let (uni_a, pairs_a) = shingles(&words_a);
    let (uni_b, pairs_b) = shingles(&words_b);
    let shared = uni_a.intersection(&uni_b).count() + pairs_a.intersection(&pairs_b).count();
    let total = uni_a.union(&uni_b).count() + pairs_a.union(&pairs_b).count();
    if total == 0 {
        return 0.0;
    }
    // usize → f64 is exact for any realistic count (< 2^53).
    (shared as f64 / total as f64).clamp(0.0, 1.0)
}

fn shingles(words: &[String]) -> (HashSet<&str>, HashSet<(&str, &str)>) {
    let unigrams = words.iter().map(String::as_str).collect();
    let pairs = words
        .windows(2)
        .filter_map(|w| match w {
            [x, y] => Some((x.as_str(), y.as_str())),
            _ => None,
        })
        .collect();
    (unigrams, pairs)
}

/// Lower-cased words of the text, without quoted lines, signature blocks
/// and stop words.
fn content_words(text: &str, stop: &HashSet<&str>) -> Vec<String> {
    let text = truncate_at_char(text, MAX_BYTES);
    let raw_lines: Vec<&str> = text.lines().collect();
    let lines: Vec<String> = raw_lines.iter().map(|l| normalise_line(l)).collect();
    let mut words = Vec::new();
    let mut in_signature = false;
    for (i, (raw, line)) in raw_lines.iter().zip(&lines).enumerate() {
        if is_signature_delimiter(raw) {
            in_signature = true;
            continue;
        }
        // A signature runs until the next quoted or forwarded block (Gmail
        // puts the sender's signature *above* the forwarded message).
        if in_signature && !is_history_marker(&lines, i) {
            continue;
        }
        in_signature = false;
        if line.starts_with('>') {
            continue;
        }
        for word in line.split(|c: char| !c.is_alphanumeric()) {
            if word.chars().count() < 2 {
                continue;
            }
            let word = word.to_lowercase();
            if !stop.contains(word.as_str()) {
                words.push(word);
            }
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPROACH: &str = "Anytown ICB is inviting practices to host a phlebotomy service \
        for housebound patients from January. Funding of £12 per draw is available. \
        Expressions of interest by 30 November.";

    #[test]
    fn identical_texts_score_one() {
        assert!((similarity(APPROACH, APPROACH) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn unrelated_texts_score_low() {
        let other = "The flu clinic on Saturday is cancelled because of the weather warning.";
        assert!(similarity(APPROACH, other) < 0.1);
    }

    #[test]
    fn small_edits_and_notes_still_score_high() {
        let forwarded = format!(
            "Hi team, see below - can we discuss?\n\n{}\n\n-- \nJo Bloggs\nPractice Manager",
            APPROACH.replace("January", "February")
        );
        assert!(similarity(APPROACH, &forwarded) > 0.6);
    }

    #[test]
    fn quoted_lines_are_ignored() {
        let reply = format!("Yes.\n> {APPROACH}");
        assert!(similarity(APPROACH, &reply) < 0.1);
    }

    #[test]
    fn empty_and_stopword_only() {
        assert_eq!(similarity("", ""), 0.0);
        assert_eq!(similarity("the and of", "the and of"), 0.0);
        assert_eq!(similarity(APPROACH, ""), 0.0);
    }

    #[test]
    fn signature_above_forward_is_skipped_not_the_forward() {
        let a = format!(
            "FYI\n-- \nJo\n\n---------- Forwarded message ---------\nFrom: x <x@icb.test>\n\n{APPROACH}"
        );
        assert!(similarity(APPROACH, &a) > 0.6);
    }

    #[test]
    fn huge_inputs_are_capped() {
        let big = "word ".repeat(1_000_000) + "é";
        let s = similarity(&big, &big);
        assert!((s - 1.0).abs() < 1e-9);
    }
}
