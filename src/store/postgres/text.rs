//! Text as PostgreSQL will take it. It refuses NUL in a text value (SQLite keeps one), and
//! mail can carry a NUL anywhere a client puts text: a raw byte, quoted-printable `=00`, an
//! RFC 2047 word in a subject or a name, an RFC 2231 file name, a Message-ID. Bound as it
//! is, such a message fails every time, even its quarantine (whose outcome repeats the
//! subject), and the inbox stops behind it. So every text that can come from mail is bound
//! through [`text`], each NUL replaced by U+FFFD (the mark for "a character that could not
//! be kept"); lookups go through it too, so they find what was stored.

use std::borrow::Cow;

/// `s` without NULs (each one U+FFFD); borrowed when it has none, as nearly all text has.
pub(super) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') { Cow::Owned(s.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(s) }
}

/// [`text`] for an optional value.
pub(super) fn opt_text(s: Option<&str>) -> Option<Cow<'_, str>> {
    s.map(text)
}

/// [`text`] for each of a list (a bound array of Message-IDs).
pub(super) fn text_list(list: &[String]) -> Vec<Cow<'_, str>> {
    list.iter().map(|s| text(s)).collect()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn nuls_are_marked_and_other_text_is_left_alone() {
        assert_eq!(text("Room\0 booking\0"), "Room\u{FFFD} booking\u{FFFD}");
        assert!(matches!(text("Room booking"), Cow::Borrowed("Room booking")));
        assert_eq!(opt_text(Some("a\0")).as_deref(), Some("a\u{FFFD}"));
        assert_eq!(text_list(&["<a\0@x>".into(), "<b@x>".into()]), ["<a\u{FFFD}@x>", "<b@x>"]);
    }
}
