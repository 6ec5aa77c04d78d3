//! Turning the raw bytes of one email into what gatehouse needs to log it:
//! who it is from (and, for a forward, who originally wrote it), what it
//! says as readable text, what it threads onto, and whether a machine sent
//! it (bounce, auto-reply, list, our own mail).
//!
//! This module is pure: no I/O, no clock, no configuration beyond the
//! [`Context`] passed in, so every rule can be tested against fixture mail.
//! It must never panic, whatever arrives in the shared inbox — a panic
//! would stop the whole inbox being processed — so all slicing goes
//! through `get(..)`, nesting is bounded (mail-parser is kept from building
//! nested message trees, see `mime`), and the parse runs on its own thread
//! with a roomy stack, which also turns any panic into an `Err`.
//!
//! Layout: `headers` reads headers from raw bytes without parsing, `mime` wraps mail-parser, `text` holds HTML-to-text and the
//! quote helpers, `subject` the one rule for reply/forward prefixes, `forward` finds forwarded approaches,
//! `automated` recognises machine mail and reads bounces, `similarity`
//! scores probable duplicates.

mod automated;
mod forward;
pub mod headers;
mod mime;
mod similarity;
pub mod subject;
mod text;

#[cfg(test)]
mod fixture_tests;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use automated::{Automated, AutomatedKind, BY_WORDING, Report, ReportRecipient, Robot, robot};
pub use forward::{ForwardSource, Forwarded, forwarded_chain};
pub use similarity::{Fingerprint, similarity};
pub use text::{find_reference, html_to_text, normalise_subject, reply_text, strip_quoted};

/// A mailbox: address lower-cased and bare (no angle brackets), display
/// name if any. Lower-casing makes addresses comparable when matching a
/// sender against known partners.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mailbox {
    /// Lower-cased, without angle brackets.
    pub address: String,
    /// Decoded and unquoted ("Doe, Jane"); None when absent.
    pub name: Option<String>,
}

/// The envelope sender recorded at delivery. `<>` (Null) is what bounces
/// and RFC 3834 auto-replies use, so it matters for classification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReturnPath {
    /// No Return-Path header (the delivering server did not add one).
    #[default]
    Absent,
    /// `Return-Path: <>`: a bounce or an RFC 3834 auto-reply.
    Null,
    /// The envelope sender, lower-cased, without angle brackets.
    Address(String),
}

/// A real attachment (not an inline body part or an embedded signature
/// image), listed so the log shows what came with a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file name (Content-Disposition filename, else Content-Type
    /// name), decoded; None when the part has none.
    pub name: Option<String>,
    /// "type/subtype", lower-cased.
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: usize,
}

/// One attachment's file name, type and bytes, for the gatekeeper's notification. Taken
/// in the same parse as everything else, on the parser's thread (see [`parse_many`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentBody {
    /// Cleaned for use as a file name; `attachment-N` when the part has none.
    pub name: String,
    /// "type/subtype", lower-cased.
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Everything gatehouse needs from one email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parsed {
    /// Without <>, trimmed; None when absent or empty.
    pub message_id: Option<String>,
    /// Without <>.
    pub in_reply_to: Vec<String>,
    /// Without <>, in order.
    pub references: Vec<String>,
    /// The first From mailbox; None when absent or without an address.
    pub from: Option<Mailbox>,
    /// Why the From does not name exactly one sender (several From headers or mailboxes, a
    /// group); None when it does. Nobody is answered on the strength of such a From.
    #[serde(default)]
    pub from_ambiguous: Option<String>,
    /// The Sender header (lists and delegates send on someone's behalf).
    pub sender: Option<Mailbox>,
    /// Where replies should go, when it differs from From.
    pub reply_to: Vec<Mailbox>,
    /// All To mailboxes, groups flattened.
    pub to: Vec<Mailbox>,
    /// All Cc mailboxes, groups flattened.
    pub cc: Vec<Mailbox>,
    /// The first (outermost) Return-Path.
    pub return_path: ReturnPath,
    /// Decoded (RFC 2047), white space collapsed; "" when absent.
    pub subject: String,
    /// The Date header in UTC; None when absent or not a real date.
    pub date: Option<DateTime<Utc>>,
    /// Readable text: the text/plain part, else the HTML converted to text
    /// (no tags, entities decoded, paragraphs kept); never HTML.
    pub body_text: String,
    /// The HTML body as sent (decoded to UTF-8), for display and archiving.
    pub body_html: Option<String>,
    /// Real attachments only (not inline body parts).
    pub attachments: Vec<Attachment>,
    /// The bytes of those attachments, in order, as many as fit in the budget given to
    /// [`parse_many`] (attached messages never); empty from [`parse`].
    pub attachment_bodies: Vec<AttachmentBody>,
    /// Some(..) when this is machine-generated mail, with why.
    pub automated: Option<Automated>,
    /// Some(..) when this is a forwarded approach (the outermost forward).
    pub forwarded: Option<Forwarded>,
    /// For bounces: which message failed, for whom, and why.
    pub report: Option<Report>,
    /// sha256 hex of the raw bytes, to recognise the same mail fetched twice.
    pub content_hash: String,
}

/// What the classifier needs to know about us.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// Our own addresses (the shared mailbox, the configured From): mail
    /// from them is our own mail coming back → Automated OwnMail.
    pub own_addresses: &'a [String],
    /// The domain our Message-IDs use (e.g. "gatehouse.test"): a message
    /// whose Message-ID ends with @that-domain and carries our X-Gatehouse
    /// header is also OwnMail.
    pub own_message_id_domain: Option<&'a str>,
}

/// Why some bytes could not be read as an email at all; the caller logs the
/// message as "unparseable" and keeps the raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl ParseError {
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }

    /// The reason, for the log.
    pub fn reason(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not an email: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

/// Stack for the parser thread. mail-parser no longer recurses once nested
/// message types are neutralised (see `mime`), and our own recursion stops
/// at `mime::MAX_NESTING` levels, so this is headroom, not a calculation:
/// tokio's 2 MiB worker stacks would be enough today, but a stack overflow
/// aborts the whole daemon, so the parser gets room to spare. Only the
/// pages actually touched are committed.
const PARSER_STACK: usize = 32 << 20;

/// Parse raw bytes. Never panics. Err only when the bytes aren't an email
/// at all (empty, or no header section mail-parser can read).
///
/// The work runs on a short-lived thread with a large stack (see
/// `PARSER_STACK`); if the thread cannot be started it runs here
/// instead. A panic inside mail-parser, should one exist, comes back as an
/// Err rather than unwinding into the caller. It is CPU-bound: call it from
/// `spawn_blocking` in async code.
pub fn parse(raw: &[u8], ctx: &Context<'_>) -> Result<Parsed, ParseError> {
    parse_many(&[raw], ctx, 0).pop().unwrap_or_else(|| Err(ParseError::new("nothing was parsed")))
}

/// [`parse`] for several messages, on one thread: starting a thread per message cost more
/// than parsing most of them (a backlog is parsed a group at a time). Each message's
/// attachments are kept as bytes up to `attach_max_bytes` in all (0: none), so that nothing
/// has to parse the raw mail again, on a smaller stack, to attach them to a notification.
pub fn parse_many(
    raws: &[&[u8]],
    ctx: &Context<'_>,
    attach_max_bytes: usize,
) -> Vec<Result<Parsed, ParseError>> {
    let all = || raws.iter().map(|raw| parse_guarded(raw, ctx, attach_max_bytes)).collect::<Vec<_>>();
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("gatehouse-classify".to_string())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, all);
        match worker {
            Ok(handle) => handle.join().unwrap_or_else(|_| {
                raws.iter().map(|_| Err(ParseError::new("the mail parser failed on this message"))).collect()
            }),
            Err(_) => all(),
        }
    })
}

/// One message, a panic in the parser caught and reported as unparseable.
fn parse_guarded(raw: &[u8], ctx: &Context<'_>, attach_max: usize) -> Result<Parsed, ParseError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::new("the message is empty"));
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse_here(raw, ctx, attach_max)))
        .unwrap_or_else(|_| Err(ParseError::new("the mail parser failed on this message")))
}

fn parse_here(raw: &[u8], ctx: &Context<'_>, attach_max: usize) -> Result<Parsed, ParseError> {
    match mime::extract_bytes(raw, 0, attach_max) {
        Ok(mail) => Ok(assemble(mail, raw, ctx)),
        Err(mime::Unreadable::NoHeaderSection) => Err(ParseError::new("no header section could be read")),
        Err(mime::Unreadable::NoHeaderField) => Err(ParseError::new("no header field could be read")),
    }
}

/// Applies the classification rules to the extracted message.
fn assemble(mail: mime::Extracted, raw: &[u8], ctx: &Context<'_>) -> Parsed {
    let automated = automated::classify(&mail, ctx);
    let kind = automated.as_ref().map(|a| a.kind);
    let report = (kind == Some(AutomatedKind::Bounce)).then(|| automated::report(&mail));
    // A bounce or auto-reply often carries the original as an attachment;
    // that is our own message coming back, not a forwarded approach.
    let forwarded = match kind {
        Some(AutomatedKind::Bounce | AutomatedKind::AutoReply | AutomatedKind::OwnMail) => None,
        _ => find_forward(&mail),
    }
    .map(|f| Forwarded { subject: f.subject.map(text::cap_subject), ..f });

    Parsed {
        message_id: mail.message_id,
        in_reply_to: mail.in_reply_to,
        references: mail.references,
        from: mail.from,
        from_ambiguous: mail.from_ambiguous,
        sender: mail.sender,
        reply_to: mail.reply_to,
        to: mail.to,
        cc: mail.cc,
        return_path: mail.return_path,
        subject: text::cap_subject(mail.subject),
        date: mail.date,
        body_text: mail.body_text,
        body_html: mail.body_html,
        attachments: mail.attachments,
        attachment_bodies: mail.attachment_bodies,
        automated,
        forwarded,
        report,
        content_hash: hex::encode(Sha256::digest(raw)),
    }
}

/// The forward, looked for in the plain text, then in the text made from
/// the HTML (Outlook often sends HTML only), then as an attached message.
fn find_forward(mail: &mime::Extracted) -> Option<Forwarded> {
    let gate = forward::is_forward_subject(&mail.subject);
    mail.plain_text
        .as_deref()
        .and_then(|t| forward::detect_in_text(t, gate))
        .or_else(|| mail.html_text.as_deref().and_then(|t| forward::detect_in_text(t, gate)))
        .or_else(|| mail.nested.iter().find_map(|n| forward::from_attachment(n, &mail.body_text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context<'static> {
        Context::default()
    }

    /// A tiny deterministic generator, so the garbage tests are repeatable
    /// without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| (self.next() & 0xff) as u8).collect()
        }
    }

    #[test]
    fn empty_and_prose_are_errors() {
        assert!(parse(b"", &ctx()).is_err());
        assert!(parse(b" \r\n\r\n", &ctx()).is_err());
        assert!(parse(b"hello world\r\nthis is not mail", &ctx()).is_err());
        assert!(parse(&[0xff, 0xfe, 0, 1, b':', 0x80], &ctx()).is_err());
        let err = parse(b"", &ctx()).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("not an email: the message is empty"));
    }

    #[test]
    fn minimal_message() {
        let p = parse(b"Subject: hi\r\n\r\nbody", &ctx());
        assert_eq!(p.as_ref().map(|p| p.subject.as_str()), Ok("hi"));
        assert_eq!(p.as_ref().map(|p| p.body_text.as_str()), Ok("body"));
        assert_eq!(p.map(|p| p.content_hash.len()), Ok(64));
    }

    #[test]
    fn mbox_from_line_is_tolerated() {
        let raw =
            b"From jo@icb.test Mon Nov 16 09:12:00 2026\nFrom: Jo <jo@icb.test>\nSubject: Hi\n\nHello\n";
        let p = parse(raw, &ctx());
        assert_eq!(p.map(|p| p.subject), Ok("Hi".to_string()));
    }

    #[test]
    fn auto_submitted_no_is_a_person() {
        let raw = b"From: Jo <jo@icb.test>\r\nAuto-Submitted: no\r\nSubject: Hi\r\n\r\nHello";
        let p = parse(raw, &ctx());
        assert_eq!(p.map(|p| p.automated), Ok(None));
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for len in [1, 2, 7, 64, 512, 4096, 65_536] {
            for _ in 0..20 {
                let _ = parse(&rng.bytes(len), &ctx());
            }
        }
        // Random bytes after a plausible header, so the body parsers run.
        for _ in 0..50 {
            let mut raw = b"From: a@b.test\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/html\r\n\r\n".to_vec();
            raw.extend(rng.bytes(2048));
            let _ = parse(&raw, &ctx());
        }
    }

    #[test]
    fn ten_thousand_headers() {
        let mut raw = Vec::new();
        for i in 0..10_000 {
            raw.extend_from_slice(format!("X-Header-{i}: value {i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"Subject: many\r\n\r\nbody");
        let p = parse(&raw, &ctx());
        assert_eq!(p.map(|p| p.subject), Ok("many".to_string()));
    }

    #[test]
    fn one_megabyte_header_line() {
        let mut raw = b"Subject: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 1 << 20));
        raw.extend_from_slice(b"\r\nFrom: x@y.test\r\n\r\nbody");
        let p = parse(&raw, &ctx());
        // Kept whole in the raw message; capped wherever gatehouse repeats it.
        let subject = p.map(|p| p.subject).unwrap_or_default();
        assert!(subject.starts_with("aaa") && subject.ends_with('…'), "{subject:.20}");
        assert_eq!(subject.len(), text::MAX_SUBJECT_BYTES + '…'.len_utf8());
        let mut raw = b"X-Long: ".to_vec();
        raw.extend(std::iter::repeat_n(b'=', 1 << 20));
        raw.extend_from_slice(b"\r\n\r\nbody");
        assert!(parse(&raw, &ctx()).is_ok());
    }

    #[test]
    fn thousand_nested_multiparts() {
        let mut raw = b"From: a@b.test\r\n".to_vec();
        for i in 0..1000 {
            raw.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n").as_bytes(),
            );
        }
        raw.extend_from_slice(b"Content-Type: text/plain\r\n\r\nhello\r\n");
        for i in (0..1000).rev() {
            raw.extend_from_slice(format!("--b{i}--\r\n").as_bytes());
        }
        let p = parse(&raw, &ctx());
        assert_eq!(p.map(|p| p.body_text), Ok("hello".to_string()));
    }

    #[test]
    fn deeply_nested_attached_messages() {
        let mut raw = b"From: a@b.test\r\nSubject: Fwd: deep\r\n".to_vec();
        for i in 0..20_000 {
            raw.extend_from_slice(
                format!("Content-Type: message/rfc822\r\n\r\nFrom: x{i}@y.test\r\n").as_bytes(),
            );
        }
        raw.extend_from_slice(b"\r\nhello\r\n");
        let p = parse(&raw, &ctx());
        assert!(p.is_ok());
    }

    #[test]
    fn base64_encoded_nested_messages() {
        // Left to itself, mail-parser recurses through base64-encoded
        // message/rfc822 parts and copies the decoded buffer per level: this
        // ~600 KB mail would need ~4 GB and a 35 MB stack.
        let mut inner = b"From: a@b.test\r\n".to_vec();
        for i in 0..10_000 {
            inner.extend_from_slice(
                format!("Content-Type: message/rfc822\r\n\r\nFrom: x{i}@y.test\r\n").as_bytes(),
            );
        }
        inner.extend_from_slice(b"\r\nhello\r\n");
        let mut raw =
            b"From: o@p.test\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                .to_vec();
        raw.extend_from_slice(base64(&inner).as_bytes());
        assert!(parse(&raw, &ctx()).is_ok());
    }

    #[test]
    fn base64_attached_message_is_a_forward() {
        let inner = b"From: \"Bloggs, Jo\" <jo.bloggs@icb.test>\r\nSubject: Phlebotomy\r\nMessage-ID: <orig@icb.test>\r\n\r\nThe approach.\r\n";
        let raw = format!(
            "From: pm@nhs.test\r\nSubject: FW: Phlebotomy\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nSee attached\r\n\
             --b\r\nContent-Type: Message/RFC822 (forwarded); name=orig.eml\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
            base64(inner)
        );
        let p = parse(raw.as_bytes(), &ctx());
        let fwd = p.as_ref().ok().and_then(|p| p.forwarded.clone());
        assert_eq!(fwd.as_ref().map(|f| f.from.address.as_str()), Some("jo.bloggs@icb.test"));
        assert_eq!(fwd.as_ref().and_then(|f| f.message_id.as_deref()), Some("orig@icb.test"));
        assert_eq!(fwd.map(|f| f.body_text), Some("The approach.".to_string()));
        let types: Vec<String> =
            p.map(|p| p.attachments.into_iter().map(|a| a.content_type).collect()).unwrap_or_default();
        assert_eq!(types, vec!["message/rfc822".to_string()]);
    }

    #[test]
    fn truncated_base64_and_bad_utf8_headers() {
        let raw = b"From: a@b.test\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29yb";
        assert!(parse(raw, &ctx()).is_ok());
        let raw =
            b"From: \xff\xfe <a@b.test>\r\nSubject: caf\xe9 \xc3\x28\r\nX-Bad: \x80\x81\r\n\r\nbody \xff";
        let p = parse(raw, &ctx());
        assert_eq!(
            p.as_ref().ok().and_then(|p| p.from.as_ref()).map(|m| m.address.as_str()),
            Some("a@b.test")
        );
        let raw = b"Subject: =?utf-8?b?truncated\r\nFrom: =?x-unknown?q?=FF?= <a@b.test>\r\n\r\nx";
        assert!(parse(raw, &ctx()).is_ok());
    }

    #[test]
    fn attachment_bytes_are_kept_within_the_budget_in_the_same_parse() {
        let raw = include_bytes!("../../tests/fixtures/mail/with-attachments.eml");
        let parse_with = |max| parse_many(&[raw], &ctx(), max).pop().unwrap().unwrap();
        let all = parse_with(10_000_000).attachment_bodies;
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all.iter().any(|a| a.content_type == "application/pdf"));
        let smallest = all.iter().map(|a| a.bytes.len()).min().unwrap();
        let some = parse_with(smallest).attachment_bodies;
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].bytes.len(), smallest);
        assert!(parse_with(0).attachment_bodies.is_empty());
        assert!(parse(raw, &ctx()).unwrap().attachment_bodies.is_empty());
        // Beside an attached message, the files still come; the message itself is only listed.
        let forward = include_bytes!("../../tests/fixtures/mail/forward-as-attachment.eml");
        let p = parse_many(&[forward], &ctx(), 10_000_000).pop().unwrap().unwrap();
        assert!(p.attachments.iter().any(|a| a.content_type == "message/rfc822"), "{:?}", p.attachments);
        assert!(p.attachment_bodies.iter().all(|a| !a.content_type.starts_with("message/")));
    }

    #[test]
    fn public_helpers_are_reachable() {
        assert_eq!(normalise_subject("RE: x"), "x");
        assert_eq!(find_reference("GP-2026-0001", "GP").as_deref(), Some("GP-2026-0001"));
        assert_eq!(strip_quoted("a\n> b"), "a");
        assert!(similarity("alpha beta", "alpha beta") > 0.99);
        assert_eq!(html_to_text("<b>x</b>"), "x");
    }

    /// Standard base64 with line breaks, for building test input.
    pub(super) fn base64(data: &[u8]) -> String {
        const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for (i, chunk) in data.chunks(3).enumerate() {
            let b0 = chunk.first().copied().unwrap_or(0);
            let b1 = chunk.get(1).copied().unwrap_or(0);
            let b2 = chunk.get(2).copied().unwrap_or(0);
            let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
            for j in 0..4 {
                if j <= chunk.len() {
                    let idx = ((n >> (18 - 6 * j)) & 63) as usize;
                    out.push(char::from(TABLE[idx]));
                } else {
                    out.push('=');
                }
            }
            if i % 19 == 18 {
                out.push_str("\r\n");
            }
        }
        out
    }
}
