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

/// How much an auto-reply subject opening says on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Says {
    /// Only auto-responders write it ("Automatic reply:", "Abwesenheitsnotiz:").
    Alone,
    /// A person might write it too ("Out of office: cover over Christmas"): it needs the
    /// text or the threading to agree.
    WithMore,
}

/// Subject openings of automatic replies, lower-cased, as Outlook, Exchange, Gmail, Lotus
/// Notes and others write them in English and the languages of our European partners. The
/// one list for every rule that reads auto-reply subjects: with X-Auto-Response-Suppress
/// or Auto-Submitted any of them marks an auto-reply; without a header, only followed by
/// ':' and at the start (see [`worded_auto_reply`]); `text::normalise_subject` strips them.
pub(super) const AUTO_REPLY_SUBJECTS: &[(&str, Says)] = &[
    ("automatic reply", Says::Alone),
    ("auto reply", Says::Alone),
    ("auto-reply", Says::Alone),
    ("autoreply", Says::Alone),
    ("out of office reply", Says::Alone),
    ("out of office autoreply", Says::Alone),
    ("out of office", Says::WithMore),
    ("out of the office", Says::WithMore),
    ("autosvar", Says::Alone),
    ("automatische antwort", Says::Alone),
    ("abwesenheitsnotiz", Says::Alone),
    ("réponse automatique", Says::Alone),
    ("reponse automatique", Says::Alone),
    ("absence", Says::WithMore),
    ("automatisch antwoord", Says::Alone),
    ("afwezigheidsmelding", Says::Alone),
    ("respuesta automática", Says::Alone),
    ("respuesta automatica", Says::Alone),
    ("fuera de la oficina", Says::WithMore),
    ("risposta automatica", Says::Alone),
    ("fuori sede", Says::WithMore),
    ("fuori ufficio", Says::WithMore),
    ("resposta automática", Says::Alone),
    ("resposta automatica", Says::Alone),
    ("automatyczna odpowiedź", Says::Alone),
    ("automatyczna odpowiedz", Says::Alone),
    ("automatiskt svar", Says::Alone),
    ("automatisk svar", Says::Alone),
    ("automaattinen vastaus", Says::Alone),
    ("frånvaro", Says::WithMore),
    ("ikke til stede", Says::WithMore),
    ("ateb awtomatig", Says::Alone),
    ("allan o'r swyddfa", Says::WithMore),
];

/// What starts the reason of an auto-reply recognised by its words alone, with no header
/// saying so. A person's message could read that way, so such mail is listed in the
/// gatekeepers' daily digest rather than only filed.
pub const BY_WORDING: &str = "by its wording: ";

impl Automated {
    /// Whether only the message's words (no header) marked it as an auto-reply.
    pub fn by_wording(&self) -> bool {
        self.reason.starts_with(BY_WORDING)
    }
}

/// Sentences with which an auto-responder says what it is. Looked for in the first lines
/// of a short text only.
const MACHINE_STATEMENTS: &[&str] = &[
    "this is an automated response",
    "this is an automatic response",
    "this is an automated reply",
    "this is an automatic reply",
    "this is an auto-reply",
    "this is an autoreply",
    "this is an automated message",
    "this is an automatic message",
    "this is an automatically generated",
    "this is an auto-generated",
    "dies ist eine automatische antwort",
    "dies ist eine automatisch generierte",
    "ceci est une réponse automatique",
    "ceci est un message automatique",
    "dit is een automatisch antwoord",
    "dit is een automatisch gegenereerd",
    "esta es una respuesta automática",
    "este es un mensaje automático",
    "questa è una risposta automatica",
    "questo è un messaggio automatico",
    "esta é uma resposta automática",
    "esta é uma mensagem automática",
    "to jest automatyczna odpowiedź",
    "to jest wiadomość automatyczna",
    "detta är ett automatiskt svar",
    "dette er et automatisk svar",
    "dette er et automatisk generert",
    "tämä on automaattinen vastaus",
    "ateb awtomatig yw hwn",
    "neges awtomatig yw hon",
];

/// What an out-of-office reply says about its owner, in the present or future: "I was out
/// of the office last week" is a person writing, and does not match.
const AWAY_PHRASES: &[&str] = &[
    "i am currently out of the office",
    "i am out of the office",
    "i'm currently out of the office",
    "i'm out of the office",
    "i am currently out of office",
    "i am out of office",
    "i will be out of the office",
    "i am away from the office",
    "i am currently away from",
    "i am currently on annual leave",
    "i am on annual leave",
    "i am currently on leave",
    "ich bin derzeit nicht im büro",
    "ich bin zurzeit nicht im büro",
    "ich bin zur zeit nicht im büro",
    "ich bin bis ",
    "je suis actuellement absent",
    "je suis absent",
    "je serai absent",
    "ik ben momenteel afwezig",
    "ik ben afwezig",
    "ik ben niet op kantoor",
    "estoy fuera de la oficina",
    "me encuentro fuera de la oficina",
    "sono fuori ufficio",
    "sono assente",
    "estou fora do escritório",
    "estou ausente",
    "jestem poza biurem",
    "jestem na urlopie",
    "jag är inte på kontoret",
    "jag är ledig",
    "jag är tjänstledig",
    "jeg er ikke på kontoret",
    "jeg er ikke til stede",
    "jeg er på ferie",
    "olen poissa toimistolta",
    "olen lomalla",
    "rydw i allan o'r swyddfa",
    "rwyf allan o'r swyddfa",
    "dw i allan o'r swyddfa",
];

/// Phrases only a challenge-response anti-spam reply uses.
const CHALLENGE_NAMES: &[&str] =
    &["challenge-response", "challenge/response", "i use a challenge", "spam arrest", "spamarrest", "boxbe"];

/// Phrases a challenge-response reply uses that a person might also write: they count only
/// in a reply that carries a link to click.
const CHALLENGE_ASKS: &[&str] = &[
    "please verify you are human",
    "verify that you are human",
    "verify you are a human",
    "verify that you are a human",
    "prove you are human",
    "confirm your message",
    "confirm that you sent",
    "list of approved senders",
    "complete the verification",
    "one-time verification",
];

/// The services whose challenges come from their own domain.
const CHALLENGE_DOMAINS: &[&str] = &["boxbe.com", "spamarrest.com"];

/// How many non-empty lines at the start of the text the auto-reply sentences are looked
/// for in: an auto-reply says what it is straight away, a person writing about being away
/// has said something else first.
const OPENING_LINES: usize = 4;
/// The longest new text (quotes and history stripped) an auto-reply recognised by its words
/// can have: they are a few lines and a disclaimer; an approach that mentions being away
/// runs on.
const MAX_AUTO_REPLY_TEXT: usize = 4000;

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
        .or_else(|| worded_auto_reply(mail))
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
    if robot(&from.address) == Some(Robot::MailSystem) {
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
    AUTO_REPLY_SUBJECTS.iter().any(|(p, _)| starts_with_ci(subject, p))
}

/// Auto-replies sent without any of the headers above (Lotus Notes, many hosted
/// auto-responders, challenge-response filters), recognised by combined evidence so that a
/// person's message is not taken for one: a subject opening only auto-responders write, or
/// a weaker opening, an out-of-office sentence or a machine's statement at the start of a
/// short text, each with what else must agree. The reason starts with [`BY_WORDING`].
fn worded_auto_reply(mail: &Extracted) -> Option<Automated> {
    let by_wording = |why: String| found(AutomatedKind::AutoReply, format!("{BY_WORDING}{why}"));
    let subject = subject_after_tags(&mail.subject);
    let opening = subject_opening(subject);
    if let Some((written, Says::Alone)) = opening {
        return by_wording(format!("subject opens \"{written}\""));
    }
    if let Some(domain) = mail.from.as_ref().and_then(|f| f.address.rsplit_once('@')).map(|(_, d)| d)
        && CHALLENGE_DOMAINS.iter().any(|c| domain == *c || domain.ends_with(&format!(".{c}")))
    {
        return by_wording(format!("challenge-response anti-spam reply (from {domain})"));
    }
    // A forward may carry an auto-reply; the forwarder is a person.
    if super::forward::is_forward_subject(subject) {
        return None;
    }
    let is_reply = !mail.in_reply_to.is_empty()
        || !mail.references.is_empty()
        || starts_with_ci(subject, "re:")
        || opening.is_some_and(|(written, _)| {
            subject.get(written.len()..).is_some_and(|rest| starts_with_ci(rest.trim_start(), "re:"))
        });
    // The cheap look first: the opening lines of the text as it came.
    let first = normalised(&opening_lines(&mail.body_text));
    let statement = MACHINE_STATEMENTS.iter().find(|p| first.contains(*p));
    let away = AWAY_PHRASES.iter().find(|p| first.contains(*p));
    let challenge_named = CHALLENGE_NAMES.iter().find(|p| first.contains(*p));
    if statement.is_none() && away.is_none() && challenge_named.is_none() && !is_reply {
        return None;
    }
    let text = super::text::strip_quoted(&mail.body_text);
    if text.len() > MAX_AUTO_REPLY_TEXT {
        return None;
    }
    // What the stripped text opens with (a quote header may have hidden an earlier start).
    let first = normalised(&opening_lines(&text));
    if let Some(p) = MACHINE_STATEMENTS.iter().find(|p| first.contains(*p)) {
        return by_wording(format!("the text opens \"{p}\""));
    }
    let whole = normalised(&text);
    if let Some(p) = CHALLENGE_NAMES.iter().find(|p| whole.contains(*p)) {
        return by_wording(format!("challenge-response anti-spam reply (\"{p}\")"));
    }
    if is_reply
        && (whole.contains("http://") || whole.contains("https://"))
        && let Some(p) = CHALLENGE_ASKS.iter().find(|p| whole.contains(*p))
    {
        return by_wording(format!("challenge-response anti-spam reply (\"{p}\" and a link)"));
    }
    let away = AWAY_PHRASES.iter().find(|p| first.contains(*p))?;
    match opening {
        Some((written, _)) => {
            by_wording(format!("subject opens \"{written}\" and the text \"{}\"", away.trim()))
        }
        None if is_reply => by_wording(format!("a reply whose text opens \"{}\"", away.trim())),
        None => None,
    }
}

/// The subject without the tags gateways put in front ("[EXTERNAL] ").
fn subject_after_tags(subject: &str) -> &str {
    let mut rest = subject.trim_start();
    for _ in 0..4 {
        match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
            Some((tag, after)) if tag.len() <= 40 => rest = after.trim_start(),
            _ => break,
        }
    }
    rest
}

/// The auto-reply opening of a subject (tags already removed) as written, up to and
/// including its ':', and what it says on its own. Lotus Notes' "AUTO:" (in capitals) says
/// enough when the rest says the person is away.
fn subject_opening(subject: &str) -> Option<(&str, Says)> {
    if let Some(rest) = subject.strip_prefix("AUTO:") {
        let rest = normalised(rest);
        let away = ["out of the office", "out of office", "returning", "außer haus", "abwesend", "absent"]
            .iter()
            .any(|w| rest.contains(w));
        return Some(("AUTO:", if away { Says::Alone } else { Says::WithMore }));
    }
    AUTO_REPLY_SUBJECTS.iter().find_map(|(phrase, says)| {
        let n = phrase.chars().count();
        let end = subject.char_indices().nth(n).map_or(subject.len(), |(i, _)| i);
        let head = subject.get(..end)?;
        if normalised(head) != *phrase {
            return None;
        }
        // Auto-responders put a ':' straight after (French: " :").
        let rest = subject.get(end..)?;
        let spaces = rest.len() - rest.trim_start_matches([' ', '\u{a0}']).len();
        if !rest.get(spaces..)?.starts_with(':') {
            return None;
        }
        Some((subject.get(..end + spaces + 1)?, *says))
    })
}

/// The first [`OPENING_LINES`] non-empty lines of a text.
fn opening_lines(text: &str) -> String {
    text.lines().filter(|l| !l.trim().is_empty()).take(OPENING_LINES).collect::<Vec<_>>().join(" ")
}

/// Lower-cased, curly apostrophes straightened, runs of white space (non-breaking spaces
/// included) made one space: how the phrase lists are written.
fn normalised(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c == '\u{a0}')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .replace(['\u{2019}', '\u{2018}'], "'")
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

/// Whose machine an address is, by its local part: see [`robot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Robot {
    /// The mail system itself (`mailer-daemon`, `postmaster`): what it sends is a bounce.
    MailSystem,
    /// A sender nobody reads replies to (`noreply`, `bounces`…).
    NoReply,
}

/// Local parts of the mail system's own addresses.
const MAIL_SYSTEM: &[&str] = &["mailer-daemon", "postmaster"];
/// Local parts that belong to other machines: nobody reads what goes there, and the machine
/// may answer back.
const NO_REPLY: &[&str] =
    &["noreply", "no-reply", "no_reply", "donotreply", "do-not-reply", "do_not_reply", "bounce", "bounces"];

/// The one rule for machines' addresses, for filing their mail and for never writing to
/// them: the local part (any `+tag` dropped, any case) is a known machine's name, whole or
/// as the first or last word (`bounces-list`, `ops.noreply`).
pub fn robot(address: &str) -> Option<Robot> {
    let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
    let local = local.split_once('+').map_or(local, |(base, _)| base).to_ascii_lowercase();
    let named = |r: &&str| {
        local == *r
            || local.strip_prefix(r).is_some_and(|rest| rest.starts_with(['-', '.', '_']))
            || local.strip_suffix(r).is_some_and(|rest| rest.ends_with(['-', '.', '_']))
    };
    if MAIL_SYSTEM.iter().any(named) {
        Some(Robot::MailSystem)
    } else {
        NO_REPLY.iter().any(named).then_some(Robot::NoReply)
    }
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

    fn worded(subject: &str, body: &str, reply: bool) -> Option<Automated> {
        let mut m = mail(&[], subject);
        m.body_text = body.to_string();
        if reply {
            m.in_reply_to = vec!["ack.GP-2026-0042.1@gatehouse.test".to_string()];
        }
        classify(&m, &ctx())
    }

    #[test]
    fn auto_reply_subjects_in_the_languages_partners_write() {
        let body = "Thank you for your message.";
        for subject in [
            "Automatic reply: Phlebotomy",
            "[EXTERNAL] Automatic reply: Phlebotomy",
            "Auto-Reply: Phlebotomy",
            "Abwesenheitsnotiz: Phlebotomy",
            "Automatische Antwort: Phlebotomy",
            "Réponse automatique : Phlebotomy",
            "RÉPONSE AUTOMATIQUE\u{a0}: Phlebotomy",
            "Automatisch antwoord: Phlebotomy",
            "Afwezigheidsmelding: Phlebotomy",
            "Respuesta automática: Phlebotomy",
            "Risposta automatica: Phlebotomy",
            "Resposta automática: Phlebotomy",
            "Automatyczna odpowiedź: Phlebotomy",
            "Automatiskt svar: Phlebotomy",
            "Automatisk svar: Phlebotomy",
            "Autosvar: Phlebotomy",
            "Automaattinen vastaus: Phlebotomy",
            "Ateb awtomatig: Phlebotomy",
            "AUTO: Jo Bloggs is out of the office (returning 12/01/2026)",
            "AUTO: Jo Bloggs ist außer Haus",
        ] {
            let a = worded(subject, body, false);
            assert!(a.as_ref().is_some_and(Automated::by_wording), "{subject}: {a:?}");
        }
        // Openings a person might write need the text or the threading to agree.
        for subject in [
            "Out of office: Phlebotomy",
            "Absence: Phlebotomy",
            "Fuera de la oficina: Phlebotomy",
            "Fuori sede: Phlebotomy",
            "Frånvaro: Phlebotomy",
            "Ikke til stede: Phlebotomy",
            "Allan o\u{2019}r swyddfa: Phlebotomy",
            "AUTO: Phlebotomy",
        ] {
            assert_eq!(worded(subject, "Dear all, a question about phlebotomy.", false), None, "{subject}");
            let a = worded(subject, "Hello,\nI am out of the office until Monday.", false);
            assert!(a.is_some_and(|a| a.by_wording()), "{subject}");
            let a = worded(subject, "Hello,\nI am out of the office until Monday.", true);
            assert!(a.is_some_and(|a| a.by_wording()), "{subject}");
        }
        // Not at the start, or without the colon: a person's subject.
        for subject in [
            "Re: Automatic reply settings for the practice",
            "Question about automatic reply: should we use one?",
            "Automatic replies from the ICB",
            "Auto enrolment for pensions",
        ] {
            assert_eq!(worded(subject, body, false), None, "{subject}");
        }
    }

    #[test]
    fn away_sentences_count_only_at_the_start_of_a_short_reply() {
        let ooo = "Thank you for your email.\nI am currently out of the office until 30 November.";
        assert!(worded("Re: Phlebotomy", ooo, true).is_some());
        assert!(worded("Re: Phlebotomy", ooo, false).is_some(), "Re: in the subject is a reply");
        assert_eq!(worded("Phlebotomy", ooo, false), None, "a new message, not a reply");
        let later = format!("Dear all,\nAbout the contract.\nWe met last week.\nIt went well.\n{ooo}");
        assert_eq!(worded("Re: Phlebotomy", &later, true), None, "not in the opening lines");
        let long = format!("{ooo}\n{}", "More about the phlebotomy contract. ".repeat(200));
        assert_eq!(worded("Re: Phlebotomy", &long, true), None, "a long text is a person writing");
        assert_eq!(
            worded("Re: Phlebotomy", "I was out of the office last week, about the contract.", true),
            None
        );
        // A machine's statement needs no threading.
        assert!(
            worded("Your enquiry", "This is an automated response: we have your email.", false).is_some()
        );
        // Challenge words a person might use need a link to click and a reply.
        let ask = "Please confirm your message was for the board.";
        assert_eq!(worded("Re: Phlebotomy", ask, true), None);
        let challenge = "Please confirm your message by visiting https://verify.test/c/1";
        assert!(worded("Re: Phlebotomy", challenge, true).is_some());
        assert_eq!(worded("Phlebotomy", challenge, false), None);
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
