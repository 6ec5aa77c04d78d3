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

use super::text::{is_history_marker, is_signature_delimiter, normalise_line, truncate_at_char};

/// Only this much of each text is compared: enough to recognise a
/// duplicate, and it keeps the cost flat for huge bodies.
const MAX_BYTES: usize = 20 * 1024;

/// Words too common to say anything about what a message is about.
/// Kept sorted (a test checks), so a word is easy to find or add.
const STOPWORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "been", "before", "being", "below", "best", "between", "both", "but", "by", "can", "could", "dear",
    "did", "do", "does", "doing", "during", "each", "for", "from", "further", "had", "has", "have", "having",
    "he", "her", "here", "hers", "hi", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its",
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
    Fingerprint::of(a).similarity(&Fingerprint::of(b))
}

/// What [`similarity`] compares, worked out once per text: the hashed set
/// of its content words and adjacent word pairs. gatehouse stores one per
/// request, so a new approach is scored against hundreds of earlier ones
/// without reading and re-tokenising their bodies (which took ~80% of the
/// time to take in a 10,000-message backlog).
///
/// The hashes are 32-bit FNV-1a, stable across builds and platforms
/// because they are stored. Words and pairs hash apart (a pair's hash
/// covers the separator byte 0, which no word contains), so the set is
/// the union the Jaccard index is defined over; a collision can only
/// nudge a score by one element in thousands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint(Vec<u32>);

impl Fingerprint {
    /// The fingerprint of a text (its first `MAX_BYTES`).
    pub fn of(text: &str) -> Self {
        let mut hashes = Vec::new();
        // A pair's hash is FNV-1a over "first\0second", which carries on from the first
        // word's own hash: so each word is hashed once and no word is kept.
        let mut previous: Option<u32> = None;
        for_each_content_word(text, |word| {
            let hash = fnv1a(FNV_OFFSET, word.as_bytes());
            hashes.push(hash);
            if let Some(first) = previous {
                hashes.push(fnv1a(fnv1a(first, &[0]), word.as_bytes()));
            }
            previous = Some(hash);
        });
        hashes.sort_unstable();
        hashes.dedup();
        Self(hashes)
    }

    /// Jaccard index of the two sets: shared elements over all elements.
    pub fn similarity(&self, other: &Self) -> f64 {
        // A floor of 0 never stops the merge early; only an empty set gives `None`.
        self.similarity_from(other, 0.0).unwrap_or(0.0)
    }

    /// The Jaccard index if it is at least `floor`, else `None`. Exact like
    /// [`Fingerprint::similarity`], but the merge stops as soon as the overlap
    /// still possible falls short, which for unrelated texts is early: a new
    /// approach is compared with hundreds of earlier ones.
    pub fn similarity_from(&self, other: &Self, floor: f64) -> Option<f64> {
        let (a, b) = (&self.0, &other.0);
        if a.is_empty() || b.is_empty() || !self.may_reach(other, floor) {
            return None;
        }
        // shared / (|a| + |b| - shared) >= floor  ⟺  shared >= floor (|a| + |b|) / (1 + floor).
        // Rounded down a little, so float error can never drop a pair that qualifies.
        let need = (floor * (a.len() + b.len()) as f64 / (1.0 + floor) - 1e-6).ceil().max(0.0) as usize;
        let (mut i, mut j, mut shared) = (0, 0, 0usize);
        'merge: loop {
            for _ in 0..64 {
                if i >= a.len() || j >= b.len() {
                    break 'merge;
                }
                let (x, y) = (a[i], b[j]);
                shared += usize::from(x == y);
                i += usize::from(x <= y);
                j += usize::from(y <= x);
            }
            if shared + (a.len() - i).min(b.len() - j) < need {
                return None;
            }
        }
        let total = a.len() + b.len() - shared;
        let score = (shared as f64 / total as f64).clamp(0.0, 1.0);
        (score >= floor).then_some(score)
    }

    /// Whether the Jaccard index can reach `threshold` at all: the overlap is at most the
    /// smaller set and the union at least the larger, so sets of very different sizes
    /// cannot. Lets a caller skip most of a long list of candidates cheaply.
    pub fn may_reach(&self, other: &Self, threshold: f64) -> bool {
        let (x, y) = (self.0.len(), other.0.len());
        let (shorter, longer) = if x < y { (x, y) } else { (y, x) };
        // usize → f64 is exact for any realistic count (< 2^53).
        longer > 0 && shorter as f64 >= threshold * longer as f64
    }

    /// The stored form: the hashes as little-endian bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|h| h.to_le_bytes()).collect()
    }

    /// Reads the stored form back. Bytes that are not a whole number of
    /// hashes, or not in order, are from something else: `None`, and the
    /// caller works the fingerprint out from the text again.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if !bytes.len().is_multiple_of(4) {
            return None;
        }
        let hashes: Vec<u32> =
            bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        hashes.windows(2).all(|w| w[0] < w[1]).then_some(Self(hashes))
    }
}

const FNV_OFFSET: u32 = 0x811c_9dc5;

/// 32-bit FNV-1a of `bytes`, carrying on from `hash` (`FNV_OFFSET` to start afresh).
fn fnv1a(mut hash: u32, bytes: &[u8]) -> u32 {
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The longest stop word: anything longer is not one, without a search.
const LONGEST_STOPWORD: usize = 7;

/// A word of up to `LONGEST_STOPWORD` bytes as one integer (no word contains a zero byte,
/// so the padding cannot make two words equal): the stop-word search then compares
/// integers, where comparing strings called `memcmp` for every step (~5 % of a backlog).
fn packed(word: &str) -> Option<u64> {
    let bytes = word.as_bytes();
    (bytes.len() <= LONGEST_STOPWORD).then(|| bytes.iter().fold(0u64, |key, b| (key << 8) | u64::from(*b)))
}

/// `STOPWORDS`, packed and sorted.
static STOPWORD_KEYS: std::sync::LazyLock<Vec<u64>> = std::sync::LazyLock::new(|| {
    let mut keys: Vec<u64> = STOPWORDS.iter().filter_map(|w| packed(w)).collect();
    keys.sort_unstable();
    keys
});

fn is_stopword(word: &str) -> bool {
    packed(word).is_some_and(|key| STOPWORD_KEYS.binary_search(&key).is_ok())
}

/// Calls `f` with each lower-cased word of the text, in order, leaving out quoted lines,
/// signature blocks and stop words. One buffer is reused for every word.
fn for_each_content_word(text: &str, mut f: impl FnMut(&str)) {
    let text = truncate_at_char(text, MAX_BYTES);
    let raw_lines: Vec<&str> = text.lines().collect();
    let lines: Vec<String> = raw_lines.iter().map(|l| normalise_line(l)).collect();
    let mut lower = String::new();
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
            let mut chars = word.chars();
            if chars.next().is_none() || chars.next().is_none() {
                continue;
            }
            lower.clear();
            if word.is_ascii() {
                lower.push_str(word);
                lower.make_ascii_lowercase();
            } else {
                // Not char by char: `str::to_lowercase` knows a final sigma (Σ → ς).
                lower.push_str(&word.to_lowercase());
            }
            if !is_stopword(&lower) {
                f(&lower);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPROACH: &str = "Anytown ICB is inviting practices to host a phlebotomy service \
        for housebound patients from January. Funding of £12 per draw is available. \
        Expressions of interest by 30 November.";

    #[test]
    fn the_bounded_score_is_the_exact_score_or_none_below_the_floor() {
        let texts = [
            APPROACH.to_string(),
            APPROACH.replace("January", "February"),
            format!("Hi team, see below.\n\n{APPROACH}\n\nThe deadline has moved to 7 December."),
            "The flu clinic on Saturday is cancelled because of the weather warning.".to_string(),
            format!("{APPROACH} {}", "Extra words about premises, staffing and rotas. ".repeat(20)),
        ];
        let prints: Vec<Fingerprint> = texts.iter().map(|t| Fingerprint::of(t)).collect();
        for a in &prints {
            for b in &prints {
                let exact = a.similarity(b);
                for floor in [0.0, 0.3, 0.6, 0.8, exact, 1.0] {
                    let bounded = a.similarity_from(b, floor);
                    if exact >= floor {
                        assert_eq!(bounded, Some(exact), "floor {floor}");
                    } else {
                        assert_eq!(bounded, None, "floor {floor}, exact {exact}");
                    }
                }
            }
        }
        // Long unrelated sets stop early and still say None.
        let long_a = Fingerprint((0..5000).map(|i| i * 2).collect());
        let long_b = Fingerprint((0..5000).map(|i| i * 2 + 1).collect());
        assert_eq!(long_a.similarity_from(&long_b, 0.6), None);
        assert_eq!(long_a.similarity_from(&long_a, 0.6), Some(1.0));
    }

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
    fn stopwords_are_sorted() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(is_stopword("the") && is_stopword("yours") && !is_stopword("phlebotomy"));
        assert_eq!(STOPWORDS.iter().map(|w| w.len()).max(), Some(LONGEST_STOPWORD));
        assert_eq!(STOPWORD_KEYS.len(), STOPWORDS.len());
        assert!(STOPWORDS.iter().all(|w| is_stopword(w)));
        // Prefixes and extensions of stop words are not stop words.
        assert!(!is_stopword("th") && !is_stopword("thee") && !is_stopword("ab") && !is_stopword("aboutx"));
    }

    #[test]
    fn fingerprints_survive_storage_and_score_like_the_texts() {
        let a = Fingerprint::of(APPROACH);
        let b = Fingerprint::of(&APPROACH.replace("January", "February"));
        assert_eq!(Fingerprint::from_bytes(&a.to_bytes()).as_ref(), Some(&a));
        let stored = Fingerprint::from_bytes(&b.to_bytes()).expect("round trip");
        assert!(
            (a.similarity(&stored) - similarity(APPROACH, &APPROACH.replace("January", "February"))).abs()
                < 1e-9
        );
        // 19 words and 18 pairs each; one word and its two pairs differ: 34 shared of 40.
        assert!((a.similarity(&b) - 34.0 / 40.0).abs() < 1e-9, "{}", a.similarity(&b));
        assert_eq!(Fingerprint::from_bytes(&[1, 2, 3]), None);
        assert_eq!(Fingerprint::from_bytes(&[0, 0, 0, 2, 0, 0, 0, 1]), None);
        assert_eq!(Fingerprint::of("").similarity(&a), 0.0);
        // The size bound never rules out a pair that reaches the threshold.
        assert!(a.may_reach(&b, 0.6));
        let extra: Vec<String> = (0..60).map(|i| format!("topic{i}")).collect();
        let long = Fingerprint::of(&format!("{APPROACH} {}", extra.join(" ")));
        assert!(!a.may_reach(&long, 0.6) && a.similarity(&long) < 0.6);
        assert!(!a.may_reach(&Fingerprint::default(), 0.6));
    }

    /// Fingerprints are stored, so the hashes of a text must never change between versions:
    /// an approach logged last year is compared with one arriving today.
    #[test]
    fn fingerprints_are_stable_across_versions() {
        let text = "Dear colleagues,\r\n\r\nThe ÉCOLE Médicale and Anytown ICB\u{a0}invite\tyou to \
            a Phlebotomy pilot: 30 Nov, £12/draw. 東京 医療 x y Straße İstanbul ΣΊΣΥΦΟΣ.\r\n\
            > quoted line we ignore\r\n\u{200b}Zero\u{feff}width here\r\n\
            Kind regards,\r\n-- \r\nJo Bloggs\r\nPractice Manager\r\n\r\n\
            ---------- Forwarded message ---------\r\nFrom: x <x@icb.test>\r\n\r\nOriginal text here.";
        let bytes = Fingerprint::of(text).to_bytes();
        let digest = bytes.iter().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)));
        assert_eq!((bytes.len(), digest), (184, 689_992_797_973_203_006));
    }

    #[test]
    fn huge_inputs_are_capped() {
        let big = "word ".repeat(1_000_000) + "é";
        let s = similarity(&big, &big);
        assert!((s - 1.0).abs() < 1e-9);
    }
}
