//! Headers read straight from raw bytes, without parsing the message: the one reader for
//! everything that must know a header before (or instead of) the parse — the Message-ID
//! and core hash the inbox de-duplicates by, the From and Subject of a message too large or
//! too broken to parse, the trusted server's `Authentication-Results`, the test fault
//! header. It cannot fail and reads only the header section (up to the first empty line).

/// The first `name:` header's value (unfolded, undecoded, lossy UTF-8, trimmed).
pub fn first(raw: &[u8], name: &str) -> Option<String> {
    all(raw, name).next()
}

/// Every `name:` header's value, topmost first (unfolded as RFC 5322 says: the line break
/// before a continuation line is removed, its white space kept; undecoded, lossy UTF-8,
/// trimmed).
pub fn all<'a>(raw: &'a [u8], name: &'a str) -> impl Iterator<Item = String> + 'a {
    let mut lines = raw
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
        .peekable();
    std::iter::from_fn(move || {
        while let Some(line) = lines.next() {
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let (found, value) = line.split_at(colon);
            if !found.trim_ascii().eq_ignore_ascii_case(name.as_bytes()) {
                continue;
            }
            let mut value = value.get(1..).unwrap_or_default().to_vec();
            while let Some(next) = lines.next_if(|l| l.first().is_some_and(|b| *b == b' ' || *b == b'\t')) {
                value.extend_from_slice(next);
            }
            return Some(String::from_utf8_lossy(&value).trim().to_string());
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_unfolded_and_only_the_header_section_is_read() {
        let raw = b"Authentication-Results: mx.nhs.net;\r\n dmarc=fail header.from=nhs.net\r\nSubject: x\r\nauthentication-results: second\r\n\r\nAuthentication-Results: body";
        assert_eq!(
            all(raw, "authentication-results").collect::<Vec<_>>(),
            ["mx.nhs.net; dmarc=fail header.from=nhs.net", "second"]
        );
        assert_eq!(first(raw, "subject").as_deref(), Some("x"));
        assert_eq!(first(raw, "from"), None);
        assert_eq!(first(b"Subject: lf only\n\nFrom: body@x.org\n", "from"), None);
        assert_eq!(first(&[0xff, b':', b'\n'], "subject"), None);
    }
}
