//! The only place that talks to mail-parser: runs it, then copies what the
//! classifier needs out of its borrowed `Message` into the plain owned
//! [`Extracted`] structure.
//!
//! Why the care: left to itself, mail-parser turns nested `message/rfc822`
//! parts into a tree of `Message`s. Dropping that tree recurses once per
//! level, and for base64-encoded nested messages its `into_owned` both
//! recurses and copies the whole decoded buffer once per level. A hostile
//! 3 MB mail of 50,000 nested messages therefore overflows the stack (an
//! abort, not a panic) or asks for ~100 GB of memory. So before mail-parser
//! sees the bytes, [`neutralise_nested_types`] renames the content types
//! that would make it nest ("message/rfc822" → "xessage/rfc822",
//! "multipart/digest" → "multipart/xigest"); those parts then come back as
//! plain decoded bytes, and [`extract`] parses them itself, one level at a
//! time and at most [`MAX_NESTING`] deep. [`dismantle`] (iterative drop)
//! and the caller's big-stack thread remain as a second line of defence.

use std::borrow::Cow;
use std::collections::HashSet;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{Addr, Address, Encoding, Header, HeaderName, HeaderValue, Message};
use mail_parser::{MessageParser, MessagePart, MimeHeaders, PartType};

use super::text::{html_to_text, tidy_lines};
use super::{Attachment, AttachmentBody, Mailbox, ReturnPath};

/// How deep attached messages are followed (a forward of a forward of …).
pub(super) const MAX_NESTING: usize = 8;
/// How many attached messages are read at each level; more are only listed
/// as attachments. Bounds the work on a mail with thousands of them.
const MAX_NESTED_PER_LEVEL: usize = 16;
/// How many attachments are listed; a mail with more is hostile or broken.
const MAX_ATTACHMENTS: usize = 1000;

/// One header field as written: the name and the unfolded raw value
/// (encoded words not decoded), for the automated-mail rules, which look at
/// headers mail-parser does not know (X-Autoreply, Precedence, ...).
#[derive(Debug, Clone)]
pub(super) struct HeaderField {
    pub name: String,
    pub value: String,
}

/// What a text/rfc822-headers part (the bounced message's header section
/// in a DSN) tells us.
#[derive(Debug, Clone, Default)]
pub(super) struct HeaderBlock {
    pub message_id: Option<String>,
}

/// Everything the classifier needs from one message (or one attached
/// message), owned and free of mail-parser lifetimes.
#[derive(Debug, Clone, Default)]
pub(super) struct Extracted {
    pub headers: Vec<HeaderField>,
    pub message_id: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub from: Option<Mailbox>,
    /// Why the From does not name one sender, when it does not (see [`from_ambiguity`]).
    pub from_ambiguous: Option<String>,
    pub sender: Option<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub return_path: ReturnPath,
    pub subject: String,
    pub date: Option<DateTime<Utc>>,
    /// The Date header as written, for a forwarded message's `date`.
    pub date_raw: Option<String>,
    /// "type/subtype" of the top-level part, lower-cased.
    pub content_type: Option<String>,
    /// The `report-type` parameter of a multipart/report.
    pub report_type: Option<String>,
    /// The text/plain body, when there is one with any content.
    pub plain_text: Option<String>,
    /// The HTML body converted to text, when there is an HTML body.
    pub html_text: Option<String>,
    pub body_text: String,
    pub body_html: Option<String>,
    pub attachments: Vec<Attachment>,
    /// The bytes of the attachments, as far as the budget given to [`extract`] goes.
    pub attachment_bodies: Vec<AttachmentBody>,
    /// Attached messages (message/rfc822), read up to [`MAX_NESTING`] deep.
    pub nested: Vec<Extracted>,
    /// text/rfc822-headers parts (DSNs that return only the headers).
    pub header_blocks: Vec<HeaderBlock>,
    /// Text of message/delivery-status parts.
    pub delivery_status: Vec<String>,
}

impl Extracted {
    /// The first header with this name (case-insensitive), unfolded.
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }
}

/// Runs mail-parser over bytes already passed through
/// [`neutralise_nested_types`]. None when it finds no header section.
pub(super) fn parse_message(raw: &[u8]) -> Option<Message<'_>> {
    MessageParser::default().parse(raw)
}

/// Why some bytes gave no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unreadable {
    NoHeaderSection,
    NoHeaderField,
}

/// Parses one message (the top one or an attached one) from raw bytes and
/// extracts it. `depth` is how many attached-message levels down it is;
/// the bytes of its attachments are kept up to `attach_max` bytes in all.
pub(super) fn extract_bytes(raw: &[u8], depth: usize, attach_max: usize) -> Result<Extracted, Unreadable> {
    let safe = neutralise_nested_types(raw);
    let message = parse_message(&safe).ok_or(Unreadable::NoHeaderSection)?;
    if !has_real_header(&message) {
        dismantle(message);
        return Err(Unreadable::NoHeaderField);
    }
    let extracted = extract(&message, depth, attach_max);
    dismantle(message);
    Ok(extracted)
}

/// Content types whose subtype makes mail-parser parse the body as a
/// nested message.
const NESTED_SUBTYPES: &[&[u8]] = &[b"rfc822", b"global"];
/// What the renamed types are called, so [`extract_parts`] recognises them.
const RENAMED_MESSAGE: &str = "xessage";

/// Renames, in every Content-Type header line, the "message" type of
/// message/rfc822 and message/global and the "digest" subtype of
/// multipart/digest (whose parts default to messages), keeping the length
/// so nothing else moves. mail-parser only takes the type from contiguous
/// bytes of the value (comments, folds and quotes end or spoil the token),
/// so renaming every contiguous "message" in the value catches every way it
/// could read one. Lines in bodies that look like Content-Type headers are
/// renamed too; that only changes how such a line reads.
pub(super) fn neutralise_nested_types(raw: &[u8]) -> Cow<'_, [u8]> {
    let mut owned: Option<Vec<u8>> = None;
    let mut start = 0;
    while start < raw.len() {
        let line_end = find_newline(raw, start);
        // mail-parser skips white space and colons before a header name
        // (":Content-Type: message/rfc822" is a Content-Type to it), so the
        // name's colon is the first one after something else.
        let name_start = raw
            .get(start..line_end)
            .and_then(|line| line.iter().position(|c| *c != b':' && !c.is_ascii_whitespace()))
            .map_or(line_end, |i| start + i);
        let Some(colon) = raw
            .get(name_start..line_end)
            .and_then(|line| line.iter().position(|c| *c == b':'))
            .map(|i| name_start + i)
        else {
            start = line_end.saturating_add(1);
            continue;
        };
        if !is_content_type_name(raw.get(name_start..colon).unwrap_or(&[])) {
            start = line_end.saturating_add(1);
            continue;
        }
        // The value runs on over folded lines (next line starts with WSP),
        // exactly as mail-parser reads it.
        let mut value_end = line_end;
        while matches!(raw.get(value_end.saturating_add(1)), Some(b' ' | b'\t')) {
            value_end = find_newline(raw, value_end.saturating_add(1));
        }
        let value_start = colon.saturating_add(1);
        let value = raw.get(value_start..value_end).unwrap_or(&[]);
        // Only the type/subtype, not the parameters: a boundary or file
        // name containing "digest" or "message" must stay as it is.
        let value = value.get(..type_end(value)).unwrap_or(value);
        let nested_subtype = NESTED_SUBTYPES.iter().any(|sub| find_ci(value, sub).is_some());
        let mut edits: Vec<(usize, u8)> = Vec::new();
        if nested_subtype {
            edits.extend(all_ci(value, b"message").map(|i| (value_start + i, b'x')));
        }
        edits.extend(all_ci(value, b"digest").map(|i| (value_start + i, b'x')));
        if !edits.is_empty() {
            let buf = owned.get_or_insert_with(|| raw.to_vec());
            for (at, byte) in edits {
                if let Some(slot) = buf.get_mut(at) {
                    *slot = byte;
                }
            }
        }
        start = value_end.saturating_add(1);
    }
    match owned {
        Some(buf) => Cow::Owned(buf),
        None => Cow::Borrowed(raw),
    }
}

/// Where the type/subtype of a Content-Type value ends: the first ';'
/// outside a comment, tracked the way mail-parser does (comments nest, a
/// backslash in a comment escapes the next character, quotes are ignored).
fn type_end(value: &[u8]) -> usize {
    let mut depth = 0usize;
    let mut escaped = false;
    for (i, c) in value.iter().enumerate() {
        if depth > 0 {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                b'\\' => escaped = true,
                b'(' => depth = depth.saturating_add(1),
                b')' => depth = depth.saturating_sub(1),
                _ => {}
            }
            continue;
        }
        match c {
            b'(' => depth = 1,
            b';' => return i,
            _ => {}
        }
    }
    value.len()
}

/// Index of the next '\n' at or after `from`, or the end of input.
fn find_newline(raw: &[u8], from: usize) -> usize {
    raw.get(from..).and_then(|rest| rest.iter().position(|c| *c == b'\n')).map_or(raw.len(), |i| from + i)
}

/// mail-parser drops white space anywhere in a header name and ignores case.
fn is_content_type_name(name: &[u8]) -> bool {
    let mut expected = b"content-type".iter();
    for c in name.iter().filter(|c| !c.is_ascii_whitespace()) {
        match expected.next() {
            Some(e) if c.to_ascii_lowercase() == *e => {}
            _ => return false,
        }
    }
    expected.next().is_none()
}

fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle))
}

/// Start positions of every case-insensitive occurrence of `needle`.
fn all_ci<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len().max(1))
        .enumerate()
        .filter(move |(_, w)| !needle.is_empty() && w.eq_ignore_ascii_case(needle))
        .map(|(i, _)| i)
}

/// Whether mail-parser found at least one real header field ("Name: value"
/// with a well-formed name). mail-parser is lenient enough to take a line
/// of prose for a header called "hello world", so "it returned a message"
/// is not proof that the bytes were an email.
pub(super) fn has_real_header(msg: &Message<'_>) -> bool {
    let Some(root) = msg.parts.first() else {
        return false;
    };
    root.headers.iter().any(|h| {
        let name_ok = match &h.name {
            HeaderName::Other(name) => {
                !name.is_empty()
                    && name.len() <= 76
                    && name.bytes().all(|c| c.is_ascii_graphic() && c != b':')
            }
            _ => true,
        };
        // mail-parser records where the value starts; the byte before it
        // must be the colon that ends the name.
        let colon_ok = (h.offset_start as usize)
            .checked_sub(1)
            .and_then(|i| msg.raw_message.get(i))
            .is_some_and(|c| *c == b':');
        name_ok && colon_ok
    })
}

/// Copies what we need out of a parsed message. `depth` is how many
/// attached-message levels we are below the top; `attach_max` bounds the
/// attachment bytes kept (0: none).
pub(super) fn extract(msg: &Message<'_>, depth: usize, attach_max: usize) -> Extracted {
    let raw: &[u8] = msg.raw_message.as_ref();
    let root_headers: &[Header<'_>] = msg.parts.first().map_or(&[], |p| p.headers.as_slice());

    let mut out = Extracted {
        headers: root_headers
            .iter()
            .map(|h| HeaderField { name: h.name.as_str().to_string(), value: raw_value(raw, h) })
            .collect(),
        ..Extracted::default()
    };

    out.message_id = first(root_headers, &HeaderName::MessageId)
        .and_then(|h| ids(&h.value).into_iter().next().or_else(|| bare_id(&raw_value(raw, h))));
    out.in_reply_to = all_ids(root_headers, &HeaderName::InReplyTo);
    out.references = all_ids(root_headers, &HeaderName::References);
    out.from = first(root_headers, &HeaderName::From).and_then(|h| mailboxes(&h.value).into_iter().next());
    out.from_ambiguous = from_ambiguity(root_headers);
    out.sender =
        first(root_headers, &HeaderName::Sender).and_then(|h| mailboxes(&h.value).into_iter().next());
    out.reply_to = all_mailboxes(root_headers, &HeaderName::ReplyTo);
    out.to = all_mailboxes(root_headers, &HeaderName::To);
    out.cc = all_mailboxes(root_headers, &HeaderName::Cc);
    out.return_path = return_path(raw, root_headers);
    out.subject = first(root_headers, &HeaderName::Subject)
        .and_then(|h| h.value.as_text())
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    if let Some(h) = first(root_headers, &HeaderName::Date) {
        out.date = h.value.as_datetime().and_then(to_chrono);
        let written = raw_value(raw, h);
        out.date_raw = (!written.is_empty()).then_some(written);
    }
    if let Some(ct) = msg.parts.first().and_then(|p| p.content_type()) {
        out.content_type = Some(real_type(type_string(ct.ctype(), ct.subtype())));
        out.report_type = ct.attribute("report-type").map(|s| s.to_ascii_lowercase());
    }

    extract_bodies(msg, &mut out);
    extract_parts(msg, depth, attach_max, &mut out);
    out
}

/// Fills the text, HTML and readable body from mail-parser's body lists.
fn extract_bodies(msg: &Message<'_>, out: &mut Extracted) {
    let mut plain = Vec::new();
    let mut text_from_html = Vec::new();
    for &id in &msg.text_body {
        let Some(part) = msg.parts.get(id as usize) else {
            continue;
        };
        match &part.body {
            PartType::Text(t) => {
                let text = repair_charset(msg, part, t);
                let text = match flowed(part) {
                    Some(del_sp) => unflow(&text, del_sp),
                    None => text.into_owned(),
                };
                plain.push(clean_plain(&text));
            }
            PartType::Html(h) => text_from_html.push(html_to_text(&repair_charset(msg, part, h))),
            _ => {}
        }
    }
    let mut html = Vec::new();
    for &id in &msg.html_body {
        if let Some(part) = msg.parts.get(id as usize)
            && let PartType::Html(h) = &part.body
        {
            html.push(repair_charset(msg, part, h).into_owned());
        }
    }

    let plain = join_non_blank(&plain);
    out.body_html = (!html.is_empty()).then(|| html.join("\n"));
    out.html_text = out.body_html.as_deref().map(html_to_text);
    if plain.is_empty() && text_from_html.is_empty() && msg.text_body.is_empty() {
        // Broken MIME: mail-parser found no body part, but may have kept
        // the text as an "attachment" after an encoding problem.
        if let Some(text) = msg.parts.iter().find_map(|p| match &p.body {
            PartType::Text(t) if p.is_encoding_problem && !t.trim().is_empty() => Some(t),
            _ => None,
        }) {
            out.plain_text = Some(clean_plain(text));
        }
    } else if !plain.is_empty() {
        out.plain_text = Some(plain);
    }

    let from_html_bodies = join_non_blank(&text_from_html);
    out.body_text = match (&out.plain_text, from_html_bodies.is_empty()) {
        (Some(p), true) => p.clone(),
        (Some(p), false) => format!("{p}\n\n{from_html_bodies}"),
        (None, false) => from_html_bodies,
        (None, true) => out.html_text.clone().unwrap_or_default(),
    };
}

/// Best effort for text in a charset mail-parser does not know, or that
/// is mislabelled (Windows-1252 bytes sent as UTF-8): mail-parser then
/// decodes as lossy UTF-8, leaving U+FFFD for every accented letter, £ and
/// curly quote. If the part's bytes are not valid UTF-8, read them as
/// Windows-1252 instead, which is what such mail almost always is.
fn repair_charset<'t>(msg: &Message<'_>, part: &MessagePart<'_>, text: &'t str) -> Cow<'t, str> {
    if !text.contains(char::REPLACEMENT_CHARACTER) {
        return Cow::Borrowed(text);
    }
    let charset = part.content_type().and_then(|c| c.attribute("charset")).map(str::to_ascii_lowercase);
    let suspect = match charset.as_deref() {
        None | Some("utf-8" | "utf8" | "us-ascii") => true,
        Some(other) => charset_decoder(other.as_bytes()).is_none(),
    };
    if !suspect {
        return Cow::Borrowed(text);
    }
    let Some(raw) = msg.raw_message.get(part.offset_body as usize..part.offset_end as usize) else {
        return Cow::Borrowed(text);
    };
    let bytes = match part.encoding {
        Encoding::None => Some(raw.to_vec()),
        Encoding::QuotedPrintable => quoted_printable_decode(raw),
        Encoding::Base64 => base64_decode(raw),
    };
    match (bytes, charset_decoder(b"windows-1252")) {
        (Some(bytes), Some(decode)) if std::str::from_utf8(&bytes).is_err() => Cow::Owned(decode(&bytes)),
        _ => Cow::Borrowed(text),
    }
}

/// Some(delsp) when a text part is format=flowed (RFC 3676), as
/// Thunderbird and Apple Mail send plain text.
fn flowed(part: &MessagePart<'_>) -> Option<bool> {
    let ct = part.content_type()?;
    if !ct.attribute("format")?.eq_ignore_ascii_case("flowed") {
        return None;
    }
    Some(ct.attribute("delsp").is_some_and(|d| d.eq_ignore_ascii_case("yes")))
}

/// Re-joins format=flowed soft line breaks (a line ending in a space
/// continues on the next line of the same quote depth) and removes space
/// stuffing, so paragraphs read as the sender typed them.
fn unflow(text: &str, del_sp: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut continuing = false;
    let mut depth_of_paragraph = 0usize;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let depth = line.bytes().take_while(|b| *b == b'>').count();
        let content = line.get(depth..).unwrap_or("");
        let content = content.strip_prefix(' ').unwrap_or(content);
        if continuing && depth != depth_of_paragraph {
            out.push('\n');
            continuing = false;
        }
        if !continuing && depth > 0 {
            out.push_str(&">".repeat(depth));
            out.push(' ');
        }
        let soft = content.ends_with(' ') && content != "-- ";
        let kept = if soft && del_sp { content.strip_suffix(' ').unwrap_or(content) } else { content };
        out.push_str(kept);
        if soft {
            continuing = true;
            depth_of_paragraph = depth;
        } else {
            out.push('\n');
            continuing = false;
        }
    }
    out
}

/// Walks the flat part list (no recursion: mail-parser already flattened
/// the multiparts) for attachments (their bytes up to `attach_max` in all),
/// attached messages and report parts.
fn extract_parts(msg: &Message<'_>, depth: usize, attach_max: usize, out: &mut Extracted) {
    let mut attached = 0usize;
    let body_parts: HashSet<u32> = msg.text_body.iter().chain(&msg.html_body).copied().collect();
    for &id in &msg.attachments {
        let Some(part) = msg.parts.get(id as usize) else {
            continue;
        };
        if body_parts.contains(&id) {
            continue;
        }
        let ct = part.content_type();
        let ctype = ct.map(|c| type_string(c.ctype(), c.subtype()));
        let disposition_attachment = part.content_disposition().is_some_and(|d| d.is_attachment());

        match (&part.body, ctype.as_deref()) {
            (PartType::Text(t), Some("text/rfc822-headers")) => {
                out.header_blocks.push(header_block(t.as_bytes()));
            }
            (PartType::Binary(b) | PartType::InlineBinary(b), Some("text/rfc822-headers")) => {
                out.header_blocks.push(header_block(b));
            }
            (
                PartType::Binary(b) | PartType::InlineBinary(b),
                Some("message/delivery-status" | "message/global-delivery-status"),
            ) => out.delivery_status.push(String::from_utf8_lossy(b).into_owned()),
            (PartType::Text(t), Some("message/delivery-status" | "message/global-delivery-status")) => {
                out.delivery_status.push(t.to_string())
            }
            (PartType::Binary(b) | PartType::InlineBinary(b), Some("xessage/rfc822" | "xessage/global"))
                if depth < MAX_NESTING && out.nested.len() < MAX_NESTED_PER_LEVEL =>
            {
                if let Ok(nested) = extract_bytes(b, depth + 1, 0) {
                    out.nested.push(nested);
                }
            }
            (PartType::Text(t), Some("xessage/rfc822" | "xessage/global"))
                if depth < MAX_NESTING && out.nested.len() < MAX_NESTED_PER_LEVEL =>
            {
                if let Ok(nested) = extract_bytes(t.as_bytes(), depth + 1, 0) {
                    out.nested.push(nested);
                }
            }
            // Only if neutralising missed a nested type: mail-parser built
            // the tree itself.
            (PartType::Message(inner), _)
                if depth < MAX_NESTING && out.nested.len() < MAX_NESTED_PER_LEVEL =>
            {
                out.nested.push(extract(inner, depth + 1, 0));
            }
            _ => {}
        }

        // Images referenced from the HTML (Content-ID, not marked as an
        // attachment) are part of the body, e.g. Outlook signature logos.
        if part.content_id().is_some() && !disposition_attachment {
            continue;
        }
        if matches!(part.body, PartType::Multipart(_)) || out.attachments.len() >= MAX_ATTACHMENTS {
            continue;
        }
        let size = match &part.body {
            PartType::Text(t) | PartType::Html(t) => t.len(),
            PartType::Binary(b) | PartType::InlineBinary(b) => b.len(),
            PartType::Message(_) | PartType::Multipart(_) => {
                (part.offset_end as usize).saturating_sub(part.offset_body as usize)
            }
        };
        let ctype = ctype.map(real_type);
        let content_type = ctype.unwrap_or_else(|| match part.body {
            PartType::Message(_) => "message/rfc822".to_string(),
            PartType::Text(_) => "text/plain".to_string(),
            PartType::Html(_) => "text/html".to_string(),
            _ => "application/octet-stream".to_string(),
        });
        // The files themselves, for the gatekeeper's notification: taken here, from the one
        // parse, rather than by parsing the raw mail again later. Attached messages are only
        // listed (they are read above as forwards, and an email is not a file to open).
        let bytes = part.contents();
        if attach_max > 0
            && !content_type.starts_with("message/")
            && !bytes.is_empty()
            && attached.saturating_add(bytes.len()) <= attach_max
        {
            attached += bytes.len();
            let name = part
                .attachment_name()
                .and_then(crate::domain::file_name)
                .unwrap_or_else(|| format!("attachment-{}", out.attachment_bodies.len() + 1));
            out.attachment_bodies.push(AttachmentBody {
                name,
                content_type: content_type.clone(),
                bytes: bytes.to_vec(),
            });
        }
        out.attachments.push(Attachment {
            name: part.attachment_name().and_then(crate::domain::file_name),
            content_type,
            size,
        });
    }
}

/// Reads the Message-ID out of a bounced message's returned header section.
fn header_block(bytes: &[u8]) -> HeaderBlock {
    let Some(msg) = MessageParser::default().parse_headers(bytes) else {
        return HeaderBlock::default();
    };
    let headers: &[Header<'_>] = msg.parts.first().map_or(&[], |p| p.headers.as_slice());
    let message_id = first(headers, &HeaderName::MessageId)
        .and_then(|h| ids(&h.value).into_iter().next().or_else(|| bare_id(&raw_value(&msg.raw_message, h))));
    HeaderBlock { message_id }
}

/// Drops a parsed message without recursion: nested messages are moved
/// out onto an explicit stack first, so each drop only frees one level.
pub(super) fn dismantle(msg: Message<'_>) {
    let mut stack = vec![msg];
    while let Some(mut current) = stack.pop() {
        for part in current.parts.iter_mut() {
            if matches!(part.body, PartType::Message(_))
                && let PartType::Message(inner) = std::mem::take(&mut part.body)
            {
                stack.push(inner);
            }
        }
        drop(current);
    }
}

fn first<'a, 'x>(headers: &'a [Header<'x>], name: &HeaderName<'_>) -> Option<&'a Header<'x>> {
    headers.iter().find(|h| &h.name == name)
}

/// The header's value exactly as written, unfolded and trimmed.
fn raw_value(raw: &[u8], h: &Header<'_>) -> String {
    let bytes = raw.get(h.offset_start as usize..h.offset_end as usize).unwrap_or(&[]);
    let text = String::from_utf8_lossy(bytes);
    text.split(['\r', '\n']).map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Message IDs from a parsed ID header, without angle brackets.
fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    let list: Vec<&str> = match value {
        HeaderValue::Text(t) => vec![t.as_ref()],
        HeaderValue::TextList(l) => l.iter().map(|s| s.as_ref()).collect(),
        _ => Vec::new(),
    };
    list.into_iter().filter_map(bare_id).collect()
}

/// Trims an ID and its angle brackets; None when nothing is left or it
/// contains white space (then it was not an ID at all).
fn bare_id(s: &str) -> Option<String> {
    let id = s.trim().trim_start_matches('<').trim_end_matches('>').trim();
    (!id.is_empty() && !id.contains(char::is_whitespace)).then(|| id.to_string())
}

fn all_ids(headers: &[Header<'_>], name: &HeaderName<'_>) -> Vec<String> {
    headers.iter().filter(|h| &h.name == name).flat_map(|h| ids(&h.value)).collect()
}

fn all_mailboxes(headers: &[Header<'_>], name: &HeaderName<'_>) -> Vec<Mailbox> {
    headers.iter().filter(|h| &h.name == name).flat_map(|h| mailboxes(&h.value)).collect()
}

/// Why the From header(s) do not name exactly one sender: several From headers, several
/// mailboxes in one, or a group. gatehouse reads the first mailbox, but a receiving server's
/// DMARC check may have judged another (the "multiple From" tricks that get a forged sender
/// past it), so nobody is answered on the strength of such a From. None when it names one.
fn from_ambiguity(headers: &[Header<'_>]) -> Option<String> {
    let froms: Vec<&Header<'_>> = headers.iter().filter(|h| h.name == HeaderName::From).collect();
    if froms.len() > 1 {
        return Some(format!("the message has {} From headers", froms.len()));
    }
    match &froms.first()?.value {
        HeaderValue::Address(Address::Group(_)) => Some("its From is a group".to_string()),
        HeaderValue::Address(Address::List(list)) if list.len() > 1 => {
            Some(format!("its From names {} mailboxes", list.len()))
        }
        _ => None,
    }
}

/// Flattens an address list or group into mailboxes, skipping entries
/// without an address (a bare display name, "undisclosed-recipients:;").
fn mailboxes(value: &HeaderValue<'_>) -> Vec<Mailbox> {
    match value {
        HeaderValue::Address(Address::List(list)) => list.iter().filter_map(to_mailbox).collect(),
        HeaderValue::Address(Address::Group(groups)) => {
            groups.iter().flat_map(|g| g.addresses.iter()).filter_map(to_mailbox).collect()
        }
        _ => Vec::new(),
    }
}

fn to_mailbox(addr: &Addr<'_>) -> Option<Mailbox> {
    let address =
        addr.address.as_deref()?.trim().trim_start_matches('<').trim_end_matches('>').trim().to_lowercase();
    if address.is_empty() {
        return None;
    }
    Some(Mailbox { address, name: addr.name.as_deref().and_then(clean_display_name) })
}

/// Display names as gatehouse keeps them (see [`crate::domain::display_name`]: cleaned and
/// capped once, where mail is read); None when nothing is left.
pub(super) fn clean_display_name(name: &str) -> Option<String> {
    crate::domain::display_name(name)
}

/// The first (outermost, added at final delivery) Return-Path. mail-parser
/// parses `<>` to an empty value, so the raw text decides between Null and
/// an unparseable address.
fn return_path(raw: &[u8], headers: &[Header<'_>]) -> ReturnPath {
    let Some(h) = first(headers, &HeaderName::ReturnPath) else {
        return ReturnPath::Absent;
    };
    let parsed = match &h.value {
        HeaderValue::Text(t) => Some(t.to_string()),
        HeaderValue::TextList(l) => l.first().map(|s| s.to_string()),
        _ => None,
    };
    let candidate = parsed.unwrap_or_else(|| raw_value(raw, h));
    let address = candidate.trim().trim_start_matches('<').trim_end_matches('>').trim().to_lowercase();
    if address.is_empty() { ReturnPath::Null } else { ReturnPath::Address(address) }
}

/// mail-parser's broken-down date to UTC. A date that does not exist
/// (31 February) gives None; an impossible zone offset is read as UTC
/// rather than losing the date.
fn to_chrono(dt: &mail_parser::DateTime) -> Option<DateTime<Utc>> {
    let date = NaiveDate::from_ymd_opt(i32::from(dt.year), u32::from(dt.month), u32::from(dt.day))?;
    let time =
        NaiveTime::from_hms_opt(u32::from(dt.hour), u32::from(dt.minute), u32::from(dt.second.min(59)))?;
    let local = NaiveDateTime::new(date, time);
    let sign = if dt.tz_before_gmt { -1 } else { 1 };
    let seconds = (i32::from(dt.tz_hour) * 3600 + i32::from(dt.tz_minute) * 60) * sign;
    match FixedOffset::east_opt(seconds) {
        Some(offset) => offset.from_local_datetime(&local).single().map(|d| d.with_timezone(&Utc)),
        None => Some(Utc.from_utc_datetime(&local)),
    }
}

/// The name a type had before [`neutralise_nested_types`] renamed it.
fn real_type(t: String) -> String {
    if let Some(rest) = t.strip_prefix(RENAMED_MESSAGE) {
        return format!("message{rest}");
    }
    match t.as_str() {
        "multipart/xigest" => "multipart/digest".to_string(),
        _ => t,
    }
}

fn type_string(ctype: &str, subtype: Option<&str>) -> String {
    match subtype {
        Some(sub) => format!("{}/{}", ctype, sub).to_ascii_lowercase(),
        None => ctype.to_ascii_lowercase(),
    }
}

/// Plain-text body with line endings normalised and outer blank lines gone.
fn clean_plain(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .trim_matches(|c: char| c == '\n' || c == ' ' || c == '\t')
        .to_string()
}

fn join_non_blank(parts: &[String]) -> String {
    let kept: Vec<&str> = parts.iter().map(String::as_str).filter(|p| !p.trim().is_empty()).collect();
    if kept.is_empty() { String::new() } else { tidy_keep_layout(&kept.join("\n\n")) }
}

/// Plain text is kept as the sender laid it out; only trailing blank space
/// goes. (HTML goes through the stricter `tidy_lines`.)
fn tidy_keep_layout(text: &str) -> String {
    if text.contains('\u{a0}') {
        // Non-breaking spaces in plain text come from clients that
        // converted HTML; they confuse label matching and read as spaces.
        return tidy_lines(text);
    }
    text.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_path_forms() {
        let null = parse_message(b"Return-Path: <>\r\nFrom: a@b.test\r\n\r\nx");
        let null = null.map(|m| extract(&m, 0, 0).return_path);
        assert_eq!(null, Some(ReturnPath::Null));
        let addr = parse_message(b"Return-Path: <Bounce@Example.TEST>\r\n\r\nx");
        let addr = addr.map(|m| extract(&m, 0, 0).return_path);
        assert_eq!(addr, Some(ReturnPath::Address("bounce@example.test".to_string())));
        let absent = parse_message(b"From: a@b.test\r\n\r\nx").map(|m| extract(&m, 0, 0).return_path);
        assert_eq!(absent, Some(ReturnPath::Absent));
    }

    #[test]
    fn dates_convert_to_utc() {
        let m = parse_message(b"Date: Mon, 16 Nov 2026 09:12:00 -0500\r\n\r\nx");
        let date = m.and_then(|m| extract(&m, 0, 0).date);
        assert_eq!(date.map(|d| d.to_rfc3339()), Some("2026-11-16T14:12:00+00:00".to_string()));
        let bad = parse_message(b"Date: Mon, 31 Feb 2026 09:12:00 +0000\r\n\r\nx");
        assert_eq!(bad.and_then(|m| extract(&m, 0, 0).date), None);
    }

    #[test]
    fn neutralises_every_spelling_mail_parser_accepts() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"Content-Type: message/rfc822\r\n", b"Content-Type: xessage/rfc822\r\n"),
            (b"content-type:MESSAGE/Global\n", b"content-type:xESSAGE/Global\n"),
            (b"Content - Type : message\r\n /rfc822\r\n", b"Content - Type : xessage\r\n /rfc822\r\n"),
            (b"Content-Type: (c) message (c)/ (c) rfc822\n", b"Content-Type: (c) xessage (c)/ (c) rfc822\n"),
            (
                b"Content-Type: multipart/digest; boundary=x\n",
                b"Content-Type: multipart/xigest; boundary=x\n",
            ),
            (
                b"Content-Type: text/plain; name=message.txt\n",
                b"Content-Type: text/plain; name=message.txt\n",
            ),
            (
                b"Content-Type: message/rfc822; name=\"Message from Jo.eml\"\n",
                b"Content-Type: xessage/rfc822; name=\"Message from Jo.eml\"\n",
            ),
            (
                b"Content-Type: multipart/mixed; boundary=\"digest_1\"\n",
                b"Content-Type: multipart/mixed; boundary=\"digest_1\"\n",
            ),
            (b"Content-Type: (a;b\\) c) message/rfc822\n", b"Content-Type: (a;b\\) c) xessage/rfc822\n"),
            (b"Subject: message/rfc822\n", b"Subject: message/rfc822\n"),
            (b":Content-Type: message/rfc822\n", b":Content-Type: xessage/rfc822\n"),
            (b" :: Content-Type : Message/Global\r\n", b" :: Content-Type : xessage/Global\r\n"),
            (b"::content-type:multipart/DIGEST\n", b"::content-type:multipart/xIGEST\n"),
        ];
        for (input, expected) in cases {
            assert_eq!(neutralise_nested_types(input).as_ref(), *expected);
        }
        assert!(matches!(neutralise_nested_types(b"From: a\r\n\r\nbody"), Cow::Borrowed(_)));
        assert!(is_content_type_name(b" Content-TYPE "));
        assert!(!is_content_type_name(b"Content-Types"));
        assert!(!is_content_type_name(b"Content-Typ"));
    }

    /// mail-parser (0.11, `parsers/message.rs`) parses a part as a nested
    /// message when its type is message/rfc822 or message/global (type and
    /// subtype lower-cased by its Content-Type parser, so in any case, with
    /// any parameters and comments) or when it has no Content-Type inside a
    /// multipart/digest. After neutralising, none of them nests.
    #[test]
    fn no_spelling_of_a_nested_type_makes_mail_parser_nest() {
        let inner = "From: inner@b.test\r\nSubject: inner\r\n\r\nhello\r\n";
        let types = [
            "message/rfc822",
            "MESSAGE/RFC822",
            "Message/Global; name=\"x.eml\"",
            "message/global (comment)",
            "(c) message (c)/ (c) rfc822",
            "message\r\n /rfc822",
        ];
        let mut cases: Vec<String> = Vec::new();
        for ct in types {
            for lead in ["", ":", " : "] {
                cases.push(format!(
                    "From: a@b.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n{lead}Content-Type: {ct}\r\n\r\n{inner}--b--\r\n"
                ));
                // (A line starting with white space after a header continues it.)
                if !lead.starts_with(' ') {
                    cases.push(format!("From: a@b.test\r\n{lead}Content-Type: {ct}\r\n\r\n{inner}"));
                }
            }
        }
        for digest in ["multipart/digest", "Multipart/DIGEST", "multipart/digest (c)"] {
            for lead in ["", ":"] {
                cases.push(format!(
                    "From: a@b.test\r\n{lead}Content-Type: {digest}; boundary=\"d\"\r\n\r\n--d\r\n\r\n{inner}--d--\r\n"
                ));
            }
        }
        for case in &cases {
            // The case is real: left alone, mail-parser builds a nested message.
            let before = parse_message(case.as_bytes()).expect(case);
            assert!(
                before.parts.iter().any(|p| matches!(p.body, PartType::Message(_))),
                "not a nesting case: {case:?}"
            );
            dismantle(before);
            let safe = neutralise_nested_types(case.as_bytes());
            let after = parse_message(&safe).expect(case);
            assert!(
                after.parts.iter().all(|p| !matches!(p.body, PartType::Message(_))),
                "still nests after neutralising: {case:?}"
            );
            dismantle(after);
        }
    }

    #[test]
    fn unflow_joins_soft_breaks() {
        let text =
            "Anytown ICB is inviting \r\nGP practices.\r\n\r\n> quoted \r\n> more\r\n-- \r\n From me\r\n";
        assert_eq!(
            unflow(text, false),
            "Anytown ICB is inviting GP practices.\n\n> quoted more\n-- \nFrom me\n\n"
        );
        assert_eq!(unflow("a \nb", true), "ab\n");
    }

    #[test]
    fn dismantle_handles_deep_nesting() {
        let mut raw = b"From: a@b.test\r\n".to_vec();
        for i in 0..20_000 {
            raw.extend_from_slice(
                format!("Content-Type: message/rfc822\r\n\r\nFrom: x{i}@y.test\r\n").as_bytes(),
            );
        }
        raw.extend_from_slice(b"\r\nhello\r\n");
        if let Some(m) = parse_message(&raw) {
            let e = extract(&m, 0, 0);
            assert!(e.nested.len() <= 1);
            dismantle(m);
        }
    }
}
