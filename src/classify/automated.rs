//! Recognising machine-generated mail (bounces, out-of-office replies,
//! mailing lists, bulk mail, and our own mail coming back) and reading
//! delivery status notifications.
//!
//! Why: the single point of access must log every approach from a person,
//! but must never log — or, worse, acknowledge — an auto-reply, which would
//! start a mail loop with the other side's auto-responder. The rules follow
//! RFC 3834 plus what Exchange, Gmail and list servers do in practice, and
//! each result carries the header that triggered it so a human can check.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::mime::Extracted;
use super::text::starts_with_ci;
use super::{Context, ReturnPath};

/// What sort of machine sent a message; decides what gatehouse does with
/// it (a bounce is matched to the message that failed, the rest are only
/// filed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AutomatedKind {
    /// A delivery failure (or delay) report about a message we sent.
    Bounce,
    /// An out-of-office or other automatic reply.
    AutoReply,
    /// A mailing-list message.
    List,
    /// Bulk, junk or otherwise machine-generated mail.
    Bulk,
    /// Our own mail coming back (a loop, a copy, a forwarding rule).
    OwnMail,
}

/// Why a message was judged machine-generated: the kind and the rule that
/// fired (e.g. "Auto-Submitted: auto-replied"), kept for the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Automated {
    /// What sort of machine mail it is.
    pub kind: AutomatedKind,
    /// The header (or rule) that gave it away, e.g. "Precedence: bulk".
    pub reason: String,
}

/// How many Message-IDs a [`Report`] keeps: the message that bounced is
/// named by the first few; a bounce listing thousands is hostile.
pub(super) const MAX_REPORT_IDS: usize = 100;
/// How many recipients a [`Report`] keeps (gatehouse writes to one or two
/// people at a time; the failed ones end up in an event's text).
pub(super) const MAX_REPORT_RECIPIENTS: usize = 100;

/// What a bounce says about the message that failed, so gatehouse can mark
/// that message (found by its Message-ID) as undelivered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Message-IDs (without <>) of the message that bounced, most reliable
    /// source first: the returned message or headers, then In-Reply-To and
    /// References of the bounce itself. No repeats; at most
    /// 100 (`MAX_REPORT_IDS`).
    pub original_message_ids: Vec<String>,
    /// Recipients whose delivery failed (lower-cased addresses). No
    /// repeats; at most 100 (`MAX_REPORT_RECIPIENTS`).
    pub failed_recipients: Vec<String>,
    /// The first recipient's Action ("failed", "delayed", ...).
    pub action: Option<String>,
    /// The first recipient's Status ("5.1.1", ...).
    pub status: Option<String>,
    /// The first recipient's Diagnostic-Code, as written.
    pub diagnostic: Option<String>,
    /// Every recipient the report covers, failed or not; at most
    /// 100 (`MAX_REPORT_RECIPIENTS`).
    pub recipients: Vec<ReportRecipient>,
}

/// One per-recipient block of a delivery status notification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRecipient {
    /// Final-Recipient (else Original-Recipient), lower-cased, without the
    /// "rfc822;" type.
    pub address: String,
    /// Action, lower-cased ("failed", "delayed", "delivered", ...).
    pub action: Option<String>,
    /// Status code as written ("5.1.1").
    pub status: Option<String>,
    /// Diagnostic-Code as written, folded lines joined.
    pub diagnostic: Option<String>,
}

/// Subject openings that, together with X-Auto-Response-Suppress, mark an
/// Exchange automatic reply (Exchange does not always send Auto-Submitted).
const AUTO_REPLY_SUBJECTS: &[&str] = &[
    "automatic reply",
    "out of office",
    "autosvar",
    "auto-reply",
    "auto reply",
    "automatische antwort",
    "réponse automatique",
];

/// Decide whether the message is machine-generated. Order matters: our own
/// mail is checked first (it carries Auto-Submitted too, but must be known
/// as ours), then bounces (which are also "auto-generated"), then replies.
pub(super) fn classify(mail: &Extracted, ctx: &Context<'_>) -> Option<Automated> {
    own_mail(mail, ctx)
        .or_else(|| bounce(mail))
        .or_else(|| auto_submitted(mail))
        .or_else(|| other_auto_reply_markers(mail))
        .or_else(|| list_or_bulk(mail))
        .or_else(|| null_return_path(mail))
}

fn found(kind: AutomatedKind, reason: impl Into<String>) -> Option<Automated> {
    Some(Automated { kind, reason: reason.into() })
}

fn own_mail(mail: &Extracted, ctx: &Context<'_>) -> Option<Automated> {
    if let Some(value) = mail.header("X-Gatehouse") {
        let id_is_ours = ctx.own_message_id_domain.is_some_and(|domain| {
            let domain = domain.trim().trim_start_matches('@').to_ascii_lowercase();
            !domain.is_empty()
                && mail
                    .message_id
                    .as_deref()
                    .is_some_and(|id| id.to_ascii_lowercase().ends_with(&format!("@{domain}")))
        });
        let reason = if id_is_ours {
            format!("X-Gatehouse: {value} and Message-ID in our domain")
        } else {
            format!("X-Gatehouse: {value}")
        };
        return found(AutomatedKind::OwnMail, reason);
    }
    let from = mail.from.as_ref()?;
    let ours = ctx.own_addresses.iter().any(|own| own.trim().eq_ignore_ascii_case(&from.address));
    if ours {
        return found(AutomatedKind::OwnMail, format!("From is our own address {}", from.address));
    }
    None
}

fn bounce(mail: &Extracted) -> Option<Automated> {
    if mail.content_type.as_deref() == Some("multipart/report") {
        let report_type = mail.report_type.as_deref().unwrap_or("");
        if report_type == "disposition-notification" {
            // A read receipt: machine-made, but nothing failed.
            return found(
                AutomatedKind::AutoReply,
                "Content-Type: multipart/report; report-type=disposition-notification",
            );
        }
        let reason = if report_type.is_empty() {
            "Content-Type: multipart/report".to_string()
        } else {
            format!("Content-Type: multipart/report; report-type={report_type}")
        };
        return found(AutomatedKind::Bounce, reason);
    }
    let from = mail.from.as_ref()?;
    let local = from.address.split('@').next().unwrap_or("").to_ascii_lowercase();
    if local == "mailer-daemon" || local == "postmaster" {
        return found(AutomatedKind::Bounce, format!("From: {}", from.address));
    }
    None
}

fn auto_submitted(mail: &Extracted) -> Option<Automated> {
    let value = mail.header("Auto-Submitted")?;
    let token = value.split([';', '(', ' ']).next().unwrap_or("").trim().to_ascii_lowercase();
    if token == "no" {
        return None;
    }
    let reason = format!("Auto-Submitted: {value}");
    if token == "auto-replied" || subject_is_auto_reply(&mail.subject) {
        return found(AutomatedKind::AutoReply, reason);
    }
    // auto-generated, auto-notified and unknown values: machine-made
    // notifications rather than replies.
    found(AutomatedKind::Bulk, reason)
}

fn other_auto_reply_markers(mail: &Extracted) -> Option<Automated> {
    for name in ["X-Autoreply", "X-Autorespond", "X-Autoresponder"] {
        if let Some(value) = mail.header(name) {
            return found(AutomatedKind::AutoReply, format!("{name}: {value}"));
        }
    }
    if let Some(value) = mail.header("X-Auto-Response-Suppress")
        && subject_is_auto_reply(&mail.subject)
    {
        return found(
            AutomatedKind::AutoReply,
            format!("X-Auto-Response-Suppress: {value} with subject \"{}\"", mail.subject),
        );
    }
    None
}

fn subject_is_auto_reply(subject: &str) -> bool {
    let subject = subject.trim_start();
    AUTO_REPLY_SUBJECTS.iter().any(|p| starts_with_ci(subject, p))
}

fn list_or_bulk(mail: &Extracted) -> Option<Automated> {
    for name in ["List-Id", "List-Post"] {
        if let Some(value) = mail.header(name) {
            return found(AutomatedKind::List, format!("{name}: {value}"));
        }
    }
    if let Some(value) = mail.header("Precedence") {
        let kind = match value.trim().to_ascii_lowercase().as_str() {
            "auto_reply" => Some(AutomatedKind::AutoReply),
            "bulk" | "junk" => Some(AutomatedKind::Bulk),
            "list" => Some(AutomatedKind::List),
            _ => None,
        };
        if let Some(kind) = kind {
            return found(kind, format!("Precedence: {value}"));
        }
    }
    if let Some(value) = mail.header("List-Unsubscribe") {
        return found(AutomatedKind::List, format!("List-Unsubscribe: {value}"));
    }
    None
}

fn null_return_path(mail: &Extracted) -> Option<Automated> {
    (mail.return_path == ReturnPath::Null).then(|| found(AutomatedKind::Bounce, "Return-Path: <>")).flatten()
}

/// Reads a bounce: the delivery-status part if there is one, otherwise
/// what a plain-text bounce and its headers give away.
pub(super) fn report(mail: &Extracted) -> Report {
    let mut report = Report::default();

    // Everything below is capped and deduplicated through sets: a bounce is
    // parsed like any other mail, and an attacker's 40 MB "bounce" listing a
    // million recipients or Message-IDs used to take minutes (quadratic
    // `Vec::contains`) and fill the event log.
    for status in &mail.delivery_status {
        let room = MAX_REPORT_RECIPIENTS.saturating_sub(report.recipients.len());
        report.recipients.extend(parse_delivery_status(status).into_iter().take(room));
    }

    let mut ids: Vec<String> = Vec::new();
    for nested in &mail.nested {
        ids.extend(nested.message_id.clone());
    }
    for block in &mail.header_blocks {
        ids.extend(block.message_id.clone());
    }
    ids.extend(mail.in_reply_to.iter().cloned());
    ids.extend(mail.references.iter().cloned());
    report.original_message_ids = if ids.is_empty() {
        first_unique(message_ids_in_text(&mail.body_text), MAX_REPORT_IDS)
    } else {
        first_unique(ids, MAX_REPORT_IDS)
    };

    if report.recipients.is_empty() {
        // Exim names the failed recipients in a header.
        if let Some(list) = mail.header("X-Failed-Recipients") {
            let addresses = list
                .split(',')
                .map(|a| a.trim().trim_matches(['<', '>']).to_lowercase())
                .filter(|a| !a.is_empty())
                .take(MAX_REPORT_RECIPIENTS);
            report.recipients.extend(addresses.map(|address| ReportRecipient {
                address,
                action: Some("failed".to_string()),
                ..ReportRecipient::default()
            }));
        } else {
            report.recipients.extend(plain_text_failures(&mail.body_text).take(MAX_REPORT_RECIPIENTS));
        }
    }

    let failed = report
        .recipients
        .iter()
        .filter(|r| r.action.as_deref().is_none_or(|a| a.eq_ignore_ascii_case("failed")))
        .map(|r| r.address.clone());
    report.failed_recipients = first_unique(failed, MAX_REPORT_RECIPIENTS);
    if let Some(first) = report.recipients.first() {
        report.action = first.action.clone();
        report.status = first.status.clone();
        report.diagnostic = first.diagnostic.clone();
    }
    report
}

/// The first `max` distinct items, in order.
fn first_unique(items: impl IntoIterator<Item = String>, max: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    items.into_iter().filter(|item| seen.insert(item.clone())).take(max).collect()
}

/// Parses the per-recipient field groups of a message/delivery-status
/// body (RFC 3464): groups are separated by blank lines, fields may be
/// folded, and addresses carry a type prefix ("rfc822; jo@icb.test").
/// Reads at most 100 (`MAX_REPORT_RECIPIENTS`) recipients.
fn parse_delivery_status(text: &str) -> Vec<ReportRecipient> {
    let mut recipients = Vec::new();
    // The per-message group comes first and names no recipient.
    for group in split_groups(text, MAX_REPORT_RECIPIENTS + 1) {
        let mut r = ReportRecipient::default();
        let mut original = None;
        for (name, value) in group {
            match name.as_str() {
                "final-recipient" => r.address = strip_address_type(&value),
                "original-recipient" => original = Some(strip_address_type(&value)),
                "action" => r.action = Some(value.to_ascii_lowercase()),
                "status" => r.status = Some(value),
                "diagnostic-code" => r.diagnostic = Some(value),
                _ => {}
            }
        }
        if r.address.is_empty()
            && let Some(original) = original
        {
            r.address = original;
        }
        if !r.address.is_empty() {
            recipients.push(r);
        }
        if recipients.len() >= MAX_REPORT_RECIPIENTS {
            break;
        }
    }
    recipients
}

/// Splits "Name: value" field groups at blank lines, unfolding continuation
/// lines; names are lower-cased. Stops after `max_groups` groups.
fn split_groups(text: &str, max_groups: usize) -> Vec<Vec<(String, String)>> {
    let mut groups = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if groups.len() >= max_groups {
            return groups;
        }
        if line.trim().is_empty() {
            if !current.is_empty() {
                groups.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            current.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

fn strip_address_type(value: &str) -> String {
    let address = value.split_once(';').map_or(value, |(_, a)| a);
    address.trim().trim_matches(['<', '>']).trim().to_lowercase()
}

/// "Message-ID: <…>" lines in a bounce that quotes the original inline.
fn message_ids_in_text(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines().filter_map(|line| {
        let line = line.trim();
        line.get(..11).filter(|h| h.eq_ignore_ascii_case("message-id:"))?;
        let id = line.get(11..)?.trim().trim_start_matches('<').trim_end_matches('>').trim();
        (!id.is_empty() && !id.contains(char::is_whitespace)).then(|| id.to_string())
    })
}

/// Recipients named in a plain-text bounce in the Postfix/qmail form
/// "<jo@icb.test>: host … said: 550 …".
fn plain_text_failures(text: &str) -> impl Iterator<Item = ReportRecipient> + '_ {
    text.lines().filter_map(|line| {
        let line = line.trim();
        let rest = line.strip_prefix('<')?;
        let (address, after) = rest.split_once(">:")?;
        if !address.contains('@') || address.contains(char::is_whitespace) {
            return None;
        }
        let diagnostic = after.trim();
        Some(ReportRecipient {
            address: address.to_lowercase(),
            action: Some("failed".to_string()),
            status: None,
            diagnostic: (!diagnostic.is_empty()).then(|| diagnostic.to_string()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::super::Mailbox;
    use super::super::mime::HeaderField;
    use super::*;

    /// Builds an `Extracted` straight from header pairs, without MIME.
    fn mail(headers: &[(&str, &str)], subject: &str) -> Extracted {
        Extracted {
            headers: headers
                .iter()
                .map(|(n, v)| HeaderField { name: n.to_string(), value: v.to_string() })
                .collect(),
            subject: subject.to_string(),
            from: Some(Mailbox { address: "jo.bloggs@icb.test".to_string(), name: None }),
            ..Extracted::default()
        }
    }

    fn ctx() -> Context<'static> {
        Context { own_addresses: &[], own_message_id_domain: Some("gatehouse.test") }
    }

    fn kind(headers: &[(&str, &str)], subject: &str) -> Option<AutomatedKind> {
        classify(&mail(headers, subject), &ctx()).map(|a| a.kind)
    }

    #[test]
    fn auto_submitted_values() {
        assert_eq!(kind(&[("Auto-Submitted", "no")], "Hi"), None);
        assert_eq!(kind(&[("Auto-Submitted", "auto-replied")], "Hi"), Some(AutomatedKind::AutoReply));
        assert_eq!(
            kind(&[("Auto-Submitted", "auto-generated")], "Automatic reply: x"),
            Some(AutomatedKind::AutoReply)
        );
        assert_eq!(
            kind(&[("Auto-Submitted", "auto-generated")], "Password expiry"),
            Some(AutomatedKind::Bulk)
        );
    }

    #[test]
    fn exchange_suppress_needs_subject() {
        assert_eq!(kind(&[("X-Auto-Response-Suppress", "All")], "Meeting"), None);
        assert_eq!(
            kind(&[("X-Auto-Response-Suppress", "All")], "Out of Office: Meeting"),
            Some(AutomatedKind::AutoReply)
        );
        assert_eq!(
            kind(&[("X-Auto-Response-Suppress", "All")], "Autosvar: Meeting"),
            Some(AutomatedKind::AutoReply)
        );
    }

    #[test]
    fn precedence_and_lists() {
        assert_eq!(kind(&[("Precedence", "bulk")], "News"), Some(AutomatedKind::Bulk));
        assert_eq!(kind(&[("Precedence", "auto_reply")], "x"), Some(AutomatedKind::AutoReply));
        assert_eq!(kind(&[("Precedence", "list")], "x"), Some(AutomatedKind::List));
        assert_eq!(kind(&[("Precedence", "first-class")], "x"), None);
        assert_eq!(kind(&[("List-Unsubscribe", "<mailto:u@x.test>")], "x"), Some(AutomatedKind::List));
        assert_eq!(kind(&[("X-Autoreply", "yes")], "x"), Some(AutomatedKind::AutoReply));
    }

    #[test]
    fn own_mail_comes_first() {
        let m = mail(&[("X-Gatehouse", "ack"), ("Auto-Submitted", "auto-replied")], "Your request");
        let a = classify(&m, &ctx());
        assert_eq!(a.map(|a| a.kind), Some(AutomatedKind::OwnMail));
        let own = ["SPOA@Practice.test".to_string()];
        let mut m = mail(&[], "x");
        m.from = Some(Mailbox { address: "spoa@practice.test".to_string(), name: None });
        let c = Context { own_addresses: &own, own_message_id_domain: None };
        assert_eq!(classify(&m, &c).map(|a| a.kind), Some(AutomatedKind::OwnMail));
    }

    #[test]
    fn delivery_status_fields() {
        let status = "Reporting-MTA: dns; mx.practice.test\n\
            Arrival-Date: Mon, 16 Nov 2026 09:12:00 +0000\n\n\
            Final-Recipient: rfc822; Jo.Bloggs@icb.test\n\
            Original-Recipient: rfc822;jo.bloggs@icb.test\n\
            Action: failed\n\
            Status: 5.1.1\n\
            Diagnostic-Code: smtp; 550 5.1.1 <jo.bloggs@icb.test>:\n    Recipient address rejected\n";
        let r = parse_delivery_status(status);
        assert_eq!(r.len(), 1);
        assert_eq!(r.first().map(|r| r.address.as_str()), Some("jo.bloggs@icb.test"));
        assert_eq!(
            r.first().and_then(|r| r.diagnostic.as_deref()),
            Some("smtp; 550 5.1.1 <jo.bloggs@icb.test>: Recipient address rejected")
        );
    }

    #[test]
    fn plain_text_bounce_fallbacks() {
        let mut m = mail(&[], "Undelivered Mail");
        m.body_text = "<jo@icb.test>: host mx said: 550 no such user\n\
            Message-ID: <abc@gatehouse.test>\n"
            .to_string();
        let r = report(&m);
        assert_eq!(r.failed_recipients, vec!["jo@icb.test".to_string()]);
        assert_eq!(r.original_message_ids, vec!["abc@gatehouse.test".to_string()]);
    }

    #[test]
    fn huge_bounces_are_capped_and_linear() {
        // Found by deploy/local/fuzz --pathological: the lists were
        // deduplicated with Vec::contains, so a 10 MB "bounce" naming
        // 200,000 recipients or Message-IDs took minutes to read.
        let n = 200_000;
        let mut m = mail(&[], "Undelivered Mail");
        m.body_text = (0..n)
            .map(|i| {
                format!("<p{i}@example.test>: 550 no such user\nMessage-ID: <{}@gatehouse.test>\n", i % 7)
            })
            .collect();
        let r = report(&m);
        assert_eq!(r.recipients.len(), MAX_REPORT_RECIPIENTS);
        assert_eq!(r.failed_recipients.len(), MAX_REPORT_RECIPIENTS);
        assert_eq!(r.failed_recipients.first().map(String::as_str), Some("p0@example.test"));
        // Repeats are dropped, order kept.
        assert_eq!(r.original_message_ids.len(), 7);
        assert_eq!(r.original_message_ids.get(1).map(String::as_str), Some("1@gatehouse.test"));

        let list: Vec<String> = (0..n).map(|i| format!("p{i}@example.test")).collect();
        let mut m = mail(&[("X-Failed-Recipients", &list.join(", "))], "Undelivered Mail");
        m.references = (0..n).map(|i| format!("{i}@gatehouse.test")).collect();
        m.delivery_status = vec![
            (0..n)
                .map(|i| format!("Final-Recipient: rfc822; d{i}@example.test\nAction: failed\n\n"))
                .collect(),
        ];
        let r = report(&m);
        assert_eq!(r.original_message_ids.len(), MAX_REPORT_IDS);
        assert_eq!(r.recipients.len(), MAX_REPORT_RECIPIENTS);
        assert_eq!(r.failed_recipients.first().map(String::as_str), Some("d0@example.test"));
        assert_eq!(r.action.as_deref(), Some("failed"));
    }
}
