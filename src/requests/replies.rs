//! The emails a request causes when it arrives: the acknowledgement to the requester, the
//! confirmation to a forwarder, and the gatekeeper's notification. They are drafted here and
//! written to the outbox by the caller, inside the request's own transaction.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::domain::Decision;
use crate::outbox::{AutoSubmitted, Composer, Draft};
use crate::store::{Candidate, NewOutgoing, RequestId};
use crate::templates::{
    AcknowledgementContext, EarlierView, ForwardConfirmationContext, LinkView, NotificationContext,
    PriorityView, RequestView, Templates, service_view,
};

#[derive(Debug)]
pub struct Replies {
    config: Arc<Config>,
    templates: Arc<Templates>,
    composer: Composer,
}

/// The thread an email answers: the message's own Message-ID and its References.
#[derive(Debug, Clone, Default)]
pub struct Thread {
    pub message_id: Option<String>,
    pub references: Vec<String>,
}

impl Thread {
    fn references(&self) -> Vec<String> {
        let mut refs = self.references.clone();
        if let Some(id) = &self.message_id {
            refs.push(id.clone());
        }
        // Long threads make long headers; the first and the last few are what clients use.
        if refs.len() > 10 {
            let tail = refs.split_off(refs.len() - 9);
            refs.truncate(1);
            refs.extend(tail);
        }
        refs
    }
}

impl Replies {
    pub fn new(config: Arc<Config>, templates: Arc<Templates>) -> Self {
        let composer = Composer::new(config.clone());
        Self { config, templates, composer }
    }

    pub fn acknowledgement(
        &self,
        request_id: RequestId,
        request: &RequestView,
        original_subject: &str,
        thread: &Thread,
        now: DateTime<Utc>,
    ) -> anyhow::Result<NewOutgoing> {
        let context = AcknowledgementContext {
            service: service_view(&self.config, self.today(now)),
            request: request.clone(),
        };
        let subject = reply_subject(original_subject, &request.reference);
        self.composer.compose(&Draft {
            kind: "acknowledgement",
            request_id: Some(request_id),
            to: vec![(request.requester_name.clone(), request.requester.clone())],
            reply_to: None,
            subject,
            text: self.templates.render("acknowledgement.txt", &context)?,
            html: Some(self.templates.render("acknowledgement.html", &context)?),
            in_reply_to: thread.message_id.clone(),
            references: thread.references(),
            auto_submitted: AutoSubmitted::Replied,
            attachments: Vec::new(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn forward_confirmation(
        &self,
        request_id: RequestId,
        request: &RequestView,
        forwarder: &str,
        acknowledged: bool,
        original_subject: &str,
        thread: &Thread,
        now: DateTime<Utc>,
    ) -> anyhow::Result<NewOutgoing> {
        let context = ForwardConfirmationContext {
            service: service_view(&self.config, self.today(now)),
            request: request.clone(),
            acknowledged,
        };
        self.composer.compose(&Draft {
            kind: "forward_confirmation",
            request_id: Some(request_id),
            to: vec![(None, forwarder.to_string())],
            reply_to: None,
            subject: reply_subject(original_subject, &request.reference),
            text: self.templates.render("forward_confirmation.txt", &context)?,
            html: Some(self.templates.render("forward_confirmation.html", &context)?),
            in_reply_to: thread.message_id.clone(),
            references: thread.references(),
            auto_submitted: AutoSubmitted::Replied,
            attachments: Vec::new(),
        })
    }

    /// The gatekeepers' notification: everything needed to decide, and how.
    #[allow(clippy::too_many_arguments)]
    pub fn notification(
        &self,
        request_id: RequestId,
        request: &RequestView,
        token: &str,
        kind: &str,
        text: &str,
        about: &Provenance,
        probable_duplicate: Option<&Candidate>,
        earlier: &[Candidate],
        attachments: Vec<crate::classify::AttachmentBody>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<NewOutgoing> {
        let reply_to = self.reply_address(token);
        let subject = match kind {
            // A stranger's follow-up is named as theirs, not the requester's.
            "follow_up" if about.stranger => format!(
                "[{}] Not from the requester: {} wrote about {}",
                request.reference,
                about.sender,
                capped(&request.subject)
            ),
            "follow_up" => {
                format!("[{}] More from {}: {}", request.reference, who(request), capped(&request.subject))
            }
            _ => format!(
                "[{}] New approach from {}: {}",
                request.reference,
                who(request),
                capped(&request.subject)
            ),
        };
        let reply_subject = format!("Re: {subject}");
        let links = self.decision_links(token, &reply_subject);
        let view = |c: &Candidate| EarlierView {
            reference: c.reference.clone(),
            subject: c.subject.clone(),
            status: c.status.to_string(),
            decision: c.decision.map(|d| d.to_string()),
        };
        let context = NotificationContext {
            service: service_view(&self.config, self.today(now)),
            request: request.clone(),
            kind: kind.to_string(),
            text: text.to_string(),
            sender: about.sender.clone(),
            stranger: about.stranger,
            unverified: about.unverified,
            warnings: about.warnings.clone(),
            token: token.to_string(),
            links,
            probable_duplicate: probable_duplicate.map(view),
            earlier: earlier.iter().map(view).collect(),
            priorities: self
                .config
                .priorities
                .iter()
                .map(|(k, v)| PriorityView { key: k.clone(), description: v.clone() })
                .collect(),
        };
        self.composer.compose(&Draft {
            kind: "notification",
            request_id: Some(request_id),
            to: crate::outbox::to_each(&self.config.gatekeepers),
            reply_to: Some(reply_to),
            subject,
            text: self.templates.render("notification.txt", &context)?,
            html: Some(self.templates.render("notification.html", &context)?),
            in_reply_to: None,
            references: Vec::new(),
            auto_submitted: AutoSubmitted::Generated,
            attachments,
        })
    }

    /// One `mailto:` link per decision, each opening a reply that carries the token.
    pub fn decision_links(&self, token: &str, reply_subject: &str) -> Vec<LinkView> {
        let reply_to = self.reply_address(token);
        Decision::ALL
            .iter()
            .map(|d| {
                let body = match d {
                    Decision::Meeting | Decision::Paper | Decision::Message => d.command().to_string(),
                    Decision::Duplicate => "duplicate GP-YYYY-NNNN".to_string(),
                    other => format!("{}: ", other.command()),
                };
                let label = match d {
                    Decision::MoreWork => "More work".to_string(),
                    other => capitalise(other.command()),
                };
                LinkView { label, href: mailto(&reply_to, reply_subject, &format!("{body}\n\n")) }
            })
            .collect()
    }

    /// The shared address with the request's token as a sub-address
    /// (`gp-access+TOKEN@nhs.net`): a plain reply carries it back.
    pub fn reply_address(&self, token: &str) -> String {
        let address = self.config.smtp.from.address.as_str();
        match address.split_once('@') {
            Some((local, domain)) => format!("{local}+{token}@{domain}"),
            None => address.to_string(),
        }
    }

    fn today(&self, now: DateTime<Utc>) -> chrono::NaiveDate {
        now.with_timezone(&self.config.service.timezone).date_naive()
    }
}

/// Who wrote the message a notification is about, and what the gatekeeper must be warned
/// of: the template variables `sender`, `stranger`, `unverified` and `warnings`.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The real sender of this message, named as requesters are.
    pub sender: String,
    /// A follow-up from someone who is not the requester, the forwarder or of the same
    /// organisation: it changed nothing and was not answered.
    pub stranger: bool,
    /// A forward from someone outside `[members]`: the original sender is whoever the
    /// forwarder typed, and was not contacted.
    pub unverified: bool,
    /// Lines the gatekeeper must read (e.g. why the requester was not answered).
    pub warnings: Vec<String>,
}

fn who(request: &RequestView) -> String {
    request
        .organisation
        .clone()
        .or_else(|| request.requester_name.as_deref().and_then(crate::domain::display_name))
        .unwrap_or_else(|| request.requester.clone())
}

/// The most characters of a sender's subject repeated in the subject of an email gatehouse
/// sends: enough to recognise it, too few to carry a message of the sender's own.
pub const MAX_SUBJECT_CHARS: usize = 120;

/// A sender's subject as it may appear in one of ours: single line, cut to
/// [`MAX_SUBJECT_CHARS`].
fn capped(subject: &str) -> String {
    let line = crate::outbox::one_line(subject);
    if line.chars().count() <= MAX_SUBJECT_CHARS {
        return line;
    }
    let cut: String = line.chars().take(MAX_SUBJECT_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

/// The subject of an answer to a requester or forwarder: "Re: SUBJECT [GP-2026-0042]", the
/// sender's subject without stacked prefixes and capped, so the reference (which threads
/// the reply) always survives.
pub fn reply_subject(original: &str, reference: &str) -> String {
    format!("Re: {} [{reference}]", capped(&strip_reply_prefixes(original)))
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A `mailto:` link with subject and body filled in (RFC 6068 percent-encoding).
pub fn mailto(to: &str, subject: &str, body: &str) -> String {
    format!("mailto:{}?subject={}&body={}", to, percent(subject), percent(body))
}

fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// "RE: Fwd: Re: Subject" → "Subject", so our replies do not stack prefixes.
pub fn strip_reply_prefixes(subject: &str) -> String {
    let mut s = subject.trim();
    loop {
        let lower = s.to_ascii_lowercase();
        let cut = ["re:", "fw:", "fwd:", "aw:", "wg:", "re :", "fw :", "fwd :"]
            .iter()
            .find(|p| lower.starts_with(*p))
            .map(|p| p.len());
        match cut {
            Some(n) => s = s.get(n..).unwrap_or_default().trim_start(),
            None => return if s.is_empty() { "(no subject)".to_string() } else { s.to_string() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailto_links_are_percent_encoded() {
        assert_eq!(
            mailto("a+t@x.org", "Re: [GP-2026-0001] A & B", "decline: \n"),
            "mailto:a+t@x.org?subject=Re%3A%20%5BGP-2026-0001%5D%20A%20%26%20B&body=decline%3A%20%0A"
        );
    }

    #[test]
    fn a_long_subject_is_capped_and_keeps_the_reference() {
        let subject = reply_subject(&format!("RE: {}", "word ".repeat(200)), "GP-2026-0042");
        assert!(subject.ends_with("… [GP-2026-0042]"), "{subject}");
        assert!(subject.chars().count() <= MAX_SUBJECT_CHARS + 20, "{subject}");
        assert_eq!(
            reply_subject("Fwd: Rota\r\nBcc: x@y.z", "GP-2026-0001"),
            "Re: Rota Bcc: x@y.z [GP-2026-0001]"
        );
    }

    #[test]
    fn reply_prefixes_do_not_stack() {
        assert_eq!(strip_reply_prefixes("RE: Fwd: re: Phlebotomy"), "Phlebotomy");
        assert_eq!(strip_reply_prefixes("  "), "(no subject)");
    }
}
