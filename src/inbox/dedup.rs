//! Headers read from raw bytes before any real parsing. The Message-ID it decides whether a message
//! was seen before, and must be known before the bytes are stored, so this reader is
//! deliberately tiny and cannot fail (a message without a readable Message-ID is recognised
//! by the hash of its bytes instead).

/// The first `Message-ID:` header's value without angle brackets, if any. Only the header
/// section is read (up to the first empty line), folded lines included.
pub fn message_id(raw: &[u8]) -> Option<String> {
    let text = first_header(raw, "message-id")?;
    let id = text.trim().trim_start_matches('<');
    let id = id.split('>').next().unwrap_or_default().trim();
    (!id.is_empty() && !id.contains(char::is_whitespace)).then(|| id.to_string())
}

/// The first `name:` header's raw value (unfolded, undecoded, lossy UTF-8), read without
/// parsing the message: for messages too large or too broken to parse.
pub fn first_header(raw: &[u8], wanted: &str) -> Option<String> {
    let mut lines = raw.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            return None;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        if !name.trim_ascii().eq_ignore_ascii_case(wanted.as_bytes()) {
            continue;
        }
        let mut value = value.get(1..).unwrap_or_default().to_vec();
        while let Some(next) = lines.peek() {
            if next.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                value.extend_from_slice(next);
                lines.next();
            } else {
                break;
            }
        }
        return Some(String::from_utf8_lossy(&value).trim().to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_folded_and_missing_ids() {
        assert_eq!(
            message_id(b"From: a@b.c\r\nMessage-ID: <abc@x.org>\r\n\r\nbody").as_deref(),
            Some("abc@x.org")
        );
        assert_eq!(message_id(b"message-id:\r\n <folded@x.org>\r\n\r\n").as_deref(), Some("folded@x.org"));
        assert_eq!(message_id(b"Subject: hi\r\n\r\nMessage-ID: <in-body@x.org>\r\n"), None);
        assert_eq!(message_id(b"Message-ID: <>\r\n\r\n"), None);
        assert_eq!(message_id(b""), None);
        assert_eq!(message_id(&[0xff, 0xfe, b':', b'\n']), None);
    }
}
