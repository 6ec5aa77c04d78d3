//! Text as PostgreSQL can hold it. A `text` value cannot contain NUL (U+0000): the server
//! refuses the whole statement, where SQLite keeps it. Mail can carry a NUL anywhere a
//! decoder puts one (`=00` in quoted-printable, an encoded word, an RFC 2231 file name, a
//! Message-ID as it came), so every string bound from mail goes through [`text`] here: the
//! one place that rule lives. A NUL becomes U+FFFD (the replacement character), so the value
//! still shows that something was there; the raw bytes (`bytea`) keep the original. Look-ups
//! (a Message-ID, a dedup key) go through the same mapping, so they find what was stored.

use std::borrow::Cow;

/// `s` with every NUL replaced by U+FFFD; borrowed when there is none (nearly always).
pub(crate) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') { Cow::Owned(s.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(s) }
}

/// [`text`] for an optional value.
pub(super) fn opt_text<S: AsRef<str> + ?Sized>(s: Option<&S>) -> Option<Cow<'_, str>> {
    s.map(|s| text(s.as_ref()))
}

/// [`text`] for each of a list (thread ids, tokens).
pub(super) fn text_list<S: AsRef<str>>(list: &[S]) -> Vec<String> {
    list.iter().map(|s| text(s.as_ref()).into_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_becomes_the_replacement_character_and_the_rest_is_untouched() {
        assert!(matches!(text("plain"), Cow::Borrowed("plain")));
        assert_eq!(text("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(opt_text(Some("x\0")).as_deref(), Some("x\u{FFFD}"));
        assert_eq!(text_list(&["<a\0@b>", "<c@d>"]), ["<a\u{FFFD}@b>", "<c@d>"]);
    }
}
