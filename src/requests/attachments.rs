//! The attachments of an approach, so the gatekeeper's notification can carry them and
//! nobody has to open the shared mailbox to decide.
//!
//! Only what fits under `[notifications] attach_max_bytes` (all together) is attached; the
//! rest is listed. Messages with nested messages inside are never re-parsed here: mail-parser
//! recurses on those, which the classifier defuses and this code does not repeat.

use mail_parser::{MessageParser, MimeHeaders as _};

/// One attachment's name, type and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentBody {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// The attachments of `raw` whose total size stays within `max_total` bytes, in order,
/// skipping any that would go over. Empty for messages holding nested messages.
pub fn bodies(raw: &[u8], max_total: usize) -> Vec<AttachmentBody> {
    if max_total == 0 || contains_ci(raw, b"message/rfc822") || contains_ci(raw, b"multipart/digest") {
        return Vec::new();
    }
    let Some(message) = MessageParser::default().parse(raw) else { return Vec::new() };
    let mut out = Vec::new();
    let mut total = 0usize;
    for part in message.attachments() {
        let bytes = part.contents();
        if bytes.is_empty() || total + bytes.len() > max_total {
            continue;
        }
        let content_type = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_string(),
            })
            .unwrap_or_else(|| "application/octet-stream".into());
        let name = part
            .attachment_name()
            .map(|n| n.chars().filter(|c| !c.is_control() && !"/\\\"".contains(*c)).collect::<String>())
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| format!("attachment-{}", out.len() + 1));
        total += bytes.len();
        out.push(AttachmentBody { name, content_type, bytes: bytes.to_vec() });
    }
    out
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_are_kept_within_the_limit() {
        let raw = include_bytes!("../../tests/fixtures/mail/with-attachments.eml");
        let all = bodies(raw, 10_000_000);
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all.iter().any(|a| a.content_type == "application/pdf"));
        let smallest = all.iter().map(|a| a.bytes.len()).min().unwrap();
        assert!(bodies(raw, smallest).len() <= 1);
        assert!(bodies(raw, 0).is_empty());
    }
}
