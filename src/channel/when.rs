//! "By when", when the requester said: a date after "by", "before", "until" or "deadline"
//! in the subject or the opening of the text, as they wrote it ("18 December", "Friday 18
//! December 2026", "2026-12-18"). Nothing is guessed: no date word, no "by when".

/// How far into the text a deadline is looked for: the ask is near the top.
const LOOK_CHARS: usize = 1500;

const MONTHS: &[&str] = &[
    "jan",
    "january",
    "feb",
    "february",
    "mar",
    "march",
    "apr",
    "april",
    "may",
    "jun",
    "june",
    "jul",
    "july",
    "aug",
    "august",
    "sep",
    "sept",
    "september",
    "oct",
    "october",
    "nov",
    "november",
    "dec",
    "december",
];

const WEEKDAYS: &[&str] = &[
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "mon",
    "tue",
    "tues",
    "wed",
    "thu",
    "thur",
    "thurs",
    "fri",
];

const CUES: &[&str] = &["by", "before", "until", "deadline", "deadline:"];

/// The deadline the requester wrote, if any: subject first, then the text's opening.
pub fn by_when(subject: &str, body: &str) -> Option<String> {
    let opening: String = body.chars().take(LOOK_CHARS).collect();
    find(subject).or_else(|| find(&opening))
}

fn find(text: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        if !CUES.contains(&bare(w).as_str()) && !CUES.contains(&w.to_lowercase().as_str()) {
            continue;
        }
        let after = &words[i + 1..words.len().min(i + 5)];
        if let Some(date) = date_at(after) {
            return Some(date);
        }
    }
    None
}

/// The word lower-cased without surrounding punctuation.
fn bare(w: &str) -> String {
    w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase()
}

/// A date at the start of `words`, as written: an ISO date, or an optional weekday then a
/// day and a month in either order, then an optional year.
fn date_at(words: &[&str]) -> Option<String> {
    let first = words.first()?;
    if is_iso_date(bare_keep_dash(first).as_str()) {
        return Some(bare_keep_dash(first));
    }
    let mut taken = 0;
    if words.first().is_some_and(|w| WEEKDAYS.contains(&bare(w).as_str())) {
        taken = 1;
    }
    let day = |w: &str| {
        let b = bare(w);
        let digits = b.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let suffix = &b[digits.len()..];
        !digits.is_empty()
            && digits.parse::<u32>().is_ok_and(|d| (1..=31).contains(&d))
            && ["", "st", "nd", "rd", "th"].contains(&suffix)
    };
    let month = |w: &str| MONTHS.contains(&bare(w).as_str());
    let pair = matches!(
        (words.get(taken), words.get(taken + 1)),
        (Some(a), Some(b)) if (day(a) && month(b)) || (month(a) && day(b))
    );
    let mut end = if pair {
        taken + 2
    } else if taken == 1 {
        // "by Friday" alone is a deadline too.
        1
    } else {
        return None;
    };
    if words.get(end).is_some_and(|y| {
        let y = bare(y);
        y.len() == 4 && y.parse::<u32>().is_ok_and(|y| (2000..2100).contains(&y))
    }) {
        end += 1;
    }
    let phrase = words[..end].join(" ");
    Some(phrase.trim_matches(|c: char| !c.is_alphanumeric()).to_string())
}

fn bare_keep_dash(w: &str) -> String {
    w.trim_matches(|c: char| !c.is_alphanumeric()).to_string()
}

fn is_iso_date(s: &str) -> bool {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_found_only_when_written() {
        assert_eq!(by_when("Views needed by 18 December", "").as_deref(), Some("18 December"));
        assert_eq!(
            by_when("Survey", "Please reply before Friday 18th December 2026, thanks").as_deref(),
            Some("Friday 18th December 2026")
        );
        assert_eq!(by_when("Deadline: 2026-12-18", "").as_deref(), Some("2026-12-18"));
        assert_eq!(by_when("Reply by Friday.", "").as_deref(), Some("Friday"));
        assert_eq!(by_when("Stand by me", "Written by the ICB team"), None);
        assert_eq!(by_when("Phlebotomy", "Could the group discuss this?"), None);
    }
}
