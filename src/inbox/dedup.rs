//! Recognising a message seen before, from its raw bytes before any real parsing (headers
//! through [`crate::classify::headers`]). The Message-ID it decides whether a message
//! was seen before, and must be known before the bytes are stored, so this reader is
//! deliberately tiny and cannot fail (a message without a readable Message-ID is recognised
//! by the hash of its bytes instead).

use crate::classify::headers;

/// The first `Message-ID:` header's value without angle brackets, if any. Only the header
/// section is read (up to the first empty line), folded lines included.
pub fn message_id(raw: &[u8]) -> Option<String> {
    let text = headers::first(raw, "message-id")?;
    let id = text.trim().trim_start_matches('<');
    let id = id.split('>').next().unwrap_or_default().trim();
    (!id.is_empty() && !id.contains(char::is_whitespace)).then(|| id.to_string())
}

/// SHA-256 (hex) of what the author wrote: the From, Subject and Date headers and the body,
/// with line endings and trailing blank lines evened out. The same message delivered twice,
/// or read again from a rebuilt mailbox, differs only in the headers servers add (Received,
/// Delivered-To…), so it has the same core; a different message that reuses a Message-ID
/// (some scanners and form mailers send every message with one ID) does not.
pub fn core_hash(raw: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    let mut hash = Sha256::new();
    for name in ["from", "subject", "date"] {
        hash.update(headers::first(raw, name).unwrap_or_default().as_bytes());
        hash.update(b"\n");
    }
    let body = body_start(raw).map_or(&[][..], |at| &raw[at..]);
    let body = body.trim_ascii_end();
    for line in body.split(|b| *b == b'\n') {
        hash.update(line.strip_suffix(b"\r").unwrap_or(line));
        hash.update(b"\n");
    }
    hex::encode(hash.finalize())
}

/// Where the body starts: after the first empty line (LF or CRLF line ends).
fn body_start(raw: &[u8]) -> Option<usize> {
    let mut at = 0;
    for line in raw.split_inclusive(|b| *b == b'\n') {
        at += line.len();
        if matches!(line, b"\n" | b"\r\n") {
            return Some(at);
        }
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

    #[test]
    fn the_core_is_what_the_author_wrote() {
        let sent = b"From: Jo <jo@icb.test>\r\nSubject: Phlebotomy\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\nMessage-ID: <1@icb.test>\r\n\r\nCan practices help?\r\n";
        let core = core_hash(sent);
        // Delivered again: servers add headers, may use LF line ends or add a line break.
        let again = [
            b"Received: from mx by mx2; Mon, 23 Nov 2026 09:00:05 +0000\r\nDelivered-To: spoa@gp.test\r\n"
                .as_slice(),
            sent,
        ]
        .concat();
        assert_eq!(core_hash(&again), core);
        let lf: Vec<u8> = sent.iter().copied().filter(|b| *b != b'\r').collect();
        assert_eq!(core_hash(&lf), core);
        assert_eq!(core_hash(&[sent.as_slice(), b"\r\n"].concat()), core);
        // Another message under the same Message-ID: another body, subject or date.
        let replace = |from: &str, to: &str| String::from_utf8_lossy(sent).replace(from, to).into_bytes();
        assert_ne!(core_hash(&replace("Can practices help?", "Second scan attached.")), core);
        assert_ne!(core_hash(&replace("Subject: Phlebotomy", "Subject: Flu")), core);
        assert_ne!(core_hash(&replace("09:00:00", "09:05:00")), core);
        // Nothing to go on still gives a hash, never a panic.
        assert_eq!(core_hash(b"").len(), 64);
        assert_eq!(core_hash(b"no header end").len(), 64);
    }
}
