//! Every email gatehouse sends, between what causes it and the outbox that delivers it:
//!
//! - [`Draft`], one email to build, with defaults so a caller names only what differs, and
//!   [`Composer`], which renders a draft into RFC 5322 bytes with our From, headers and
//!   Message-ID;
//! - [`recipients`]: the one rule for whom gatehouse may write to on its own;
//! - [`views`]: a request as templates see it, and how a requester is named;
//! - [`alerts`]: the operator's alerts, once a day per problem, and when resolved.
//!
//! The words are [`crate::templates`]' (every context and sample is there); queued mail is
//! the [`crate::outbox`]'s. Nothing here sends over the network.

pub mod alerts;
pub mod recipients;
pub mod views;

pub use views::{request_view, requester_display, requester_name, row_view};

use std::sync::Arc;

use anyhow::Context as _;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use rand::Rng as _;

use crate::config::Config;
use crate::domain::EmailAddress;
use crate::store::NewOutgoing;

/// RFC 3834: `auto-replied` for answers to a message (acknowledgements, outcomes),
/// `auto-generated` for everything else (notifications, reminders, summaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoSubmitted {
    Replied,
    Generated,
}

/// `addresses` as a [`Draft`]'s recipients, without display names (the gatekeepers, the
/// board, the operator).
pub fn to_each(addresses: &[EmailAddress]) -> Vec<(Option<String>, String)> {
    addresses.iter().map(|a| (None, a.to_string())).collect()
}

/// One email to build. Start from [`Draft::new`] (or [`Draft::to_all`]) and set only what
/// differs; the fields are private so every email starts from the same defaults.
#[derive(Debug, Clone)]
pub struct Draft {
    kind: &'static str,
    request_id: Option<crate::store::RequestId>,
    to: Vec<(Option<String>, String)>,
    reply_to: Option<String>,
    subject: String,
    text: String,
    html: Option<String>,
    /// Message-IDs (no angle brackets) this answers.
    in_reply_to: Option<String>,
    references: Vec<String>,
    auto_submitted: AutoSubmitted,
    /// Files to attach (the approach's own attachments, for the gatekeeper).
    attachments: Vec<crate::classify::AttachmentBody>,
}

impl Draft {
    /// A plain-text email of `kind` (its `X-Gatehouse` header and outbox kind) to `to`,
    /// about no request, answering nothing, marked `auto-generated`, without HTML or
    /// attachments: the defaults every email starts from. The `with_*`/`answering` methods
    /// set what differs.
    pub fn new(
        kind: &'static str,
        to: Vec<(Option<String>, String)>,
        subject: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            request_id: None,
            to,
            reply_to: None,
            subject: subject.into(),
            text: text.into(),
            html: None,
            in_reply_to: None,
            references: Vec::new(),
            auto_submitted: AutoSubmitted::Generated,
            attachments: Vec::new(),
        }
    }

    /// [`Draft::new`] to each of `addresses`, without display names (the gatekeepers, the
    /// board, the operator).
    pub fn to_all(
        kind: &'static str,
        addresses: &[EmailAddress],
        subject: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Self::new(kind, to_each(addresses), subject, text)
    }

    /// An alert (a message set aside, a refused login, an expiring secret, a full disk, an
    /// email that cannot be delivered) to `to` (see [`Config::operator_recipients`] and
    /// [`Config::alert_recipients`]): the one shape every such alert takes.
    pub fn system_alert(to: &[EmailAddress], subject: String, text: String) -> Self {
        Self::to_all("system_alert", to, subject, text)
    }

    /// About request `id` (kept with the outbox entry, for the request's history).
    #[must_use]
    pub fn about(mut self, request_id: Option<crate::store::RequestId>) -> Self {
        self.request_id = request_id;
        self
    }

    /// With an HTML alternative to the text.
    #[must_use]
    pub fn with_html(mut self, html: String) -> Self {
        self.html = Some(html);
        self
    }

    /// With a Reply-To (the gatekeepers' notification: replies carry the decision).
    #[must_use]
    pub fn with_reply_to(mut self, reply_to: Option<String>) -> Self {
        self.reply_to = reply_to;
        self
    }

    /// An answer to a message (`auto-replied`), threaded under `in_reply_to` when known.
    #[must_use]
    pub fn answering(mut self, in_reply_to: Option<String>, references: Vec<String>) -> Self {
        self.auto_submitted = AutoSubmitted::Replied;
        self.in_reply_to = in_reply_to;
        self.references = references;
        self
    }

    /// Threaded on `parent` (one of our own emails) without answering anything the
    /// recipient sent: it stays `auto-generated` (unlike [`Draft::answering`]).
    #[must_use]
    pub fn threaded_on(mut self, parent: String) -> Self {
        self.references = vec![parent.clone()];
        self.in_reply_to = Some(parent);
        self
    }

    /// With files attached.
    #[must_use]
    pub fn with_attachments(mut self, attachments: Vec<crate::classify::AttachmentBody>) -> Self {
        self.attachments = attachments;
        self
    }
}

/// Builds outgoing messages with gatehouse's From, headers and Message-IDs.
#[derive(Debug, Clone)]
pub struct Composer {
    config: Arc<Config>,
}

impl Composer {
    pub fn new(config: Arc<Config>) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A new Message-ID (no angle brackets) in our own domain, so our own mail coming back
    /// can be recognised (by the domain alone: nothing reads the part before the `@`).
    /// Random, not timed: 128 random bits are unique without a clock.
    pub fn new_message_id(&self) -> String {
        let bytes: [u8; 16] = rand::rng().random();
        format!("gatehouse.{}@{}", hex::encode(bytes), self.config.smtp.from.address.domain())
    }

    /// Renders `draft` into RFC 5322 bytes, ready for the outbox.
    pub fn compose(&self, draft: &Draft) -> anyhow::Result<NewOutgoing> {
        let from = &self.config.smtp.from;
        let from_mailbox = Mailbox::new(
            from.name.as_deref().map(one_line),
            from.address.as_str().parse().context("Bad From address")?,
        );
        let message_id = self.new_message_id();
        let mut builder = lettre::Message::builder()
            .from(from_mailbox)
            .subject(one_line(&draft.subject))
            .message_id(Some(format!("<{message_id}>")))
            .date_now();
        let mut recipients = Vec::new();
        for (name, address) in &draft.to {
            let address: lettre::Address =
                address.parse().with_context(|| format!("Bad recipient {address:?}"))?;
            recipients.push(address.to_string().to_lowercase());
            builder = builder.to(Mailbox::new(name.as_deref().map(one_line), address));
        }
        anyhow::ensure!(!recipients.is_empty(), "An email needs a recipient");
        if let Some(reply_to) = &draft.reply_to {
            builder = builder.reply_to(Mailbox::new(None, reply_to.parse().context("Bad Reply-To")?));
        }
        if let Some(parent) = &draft.in_reply_to {
            builder = builder.in_reply_to(format!("<{}>", clean_id(parent)));
        }
        if !draft.references.is_empty() {
            let refs: Vec<String> = draft.references.iter().map(|r| format!("<{}>", clean_id(r))).collect();
            builder = builder.references(refs.join(" "));
        }
        let auto = match draft.auto_submitted {
            AutoSubmitted::Replied => "auto-replied",
            AutoSubmitted::Generated => "auto-generated",
        };
        builder = builder
            .raw_header(raw_header("Auto-Submitted", auto))
            .raw_header(raw_header("X-Auto-Response-Suppress", "All"))
            .raw_header(raw_header("X-Gatehouse", draft.kind));
        let text = || SinglePart::builder().header(ContentType::TEXT_PLAIN).body(draft.text.clone());
        // A calendar invitation is one more alternative of the body, as iMIP (RFC 6047) and
        // Outlook expect, and is also attached as a file below for clients that show only
        // attachments.
        let invitation = draft.attachments.iter().find(|a| crate::calendar::is_invitation(&a.content_type));
        let body = (draft.html.is_some() || invitation.is_some()).then(|| {
            let mut alternative = MultiPart::alternative().singlepart(text());
            if let Some(html) = &draft.html {
                alternative = alternative
                    .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(html.clone()));
            }
            if let Some(ics) = invitation {
                let content_type = ContentType::parse(&ics.content_type).unwrap_or(ContentType::TEXT_PLAIN);
                alternative = alternative.singlepart(
                    SinglePart::builder()
                        .header(content_type)
                        .body(String::from_utf8_lossy(&ics.bytes).into_owned()),
                );
            }
            alternative
        });
        let message = if draft.attachments.is_empty() {
            match body {
                Some(alternative) => builder.multipart(alternative),
                None => builder.singlepart(text()),
            }
        } else {
            let mut mixed = match body {
                Some(alternative) => MultiPart::mixed().multipart(alternative),
                None => MultiPart::mixed().singlepart(text()),
            };
            for a in &draft.attachments {
                // The invitation's file copy: application/ics, so no client takes it for a
                // second invitation.
                let kind = if crate::calendar::is_invitation(&a.content_type) {
                    "application/ics"
                } else {
                    a.content_type.as_str()
                };
                let content_type = ContentType::parse(kind)
                    .or_else(|_| ContentType::parse("application/octet-stream"))
                    .unwrap_or(ContentType::TEXT_PLAIN);
                mixed =
                    mixed.singlepart(Attachment::new(one_line(&a.name)).body(a.bytes.clone(), content_type));
            }
            builder.multipart(mixed)
        }
        .context("Cannot build the email")?;
        Ok(NewOutgoing {
            kind: draft.kind.to_string(),
            request_id: draft.request_id,
            message_id,
            envelope_from: from.address.to_string(),
            recipients,
            subject: one_line(&draft.subject),
            raw: message.formatted(),
        })
    }
}

fn raw_header(name: &'static str, value: &str) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), one_line(value))
}

pub use crate::classify::subject::one_line;

fn clean_id(id: &str) -> String {
    id.chars().filter(|c| !c.is_whitespace() && !c.is_control() && *c != '<' && *c != '>').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_cannot_carry_new_lines() {
        assert_eq!(one_line("Hello\r\nBcc: victim@example.org"), "Hello Bcc: victim@example.org");
        assert_eq!(one_line("  a \t b  "), "a b");
        assert_eq!(clean_id("<abc@x>\r\nX: y"), "abc@xX:y");
    }

    #[test]
    fn a_draft_starts_plain_and_generated() {
        let to = [EmailAddress::parse("g@example.org").unwrap()];
        let d = Draft::to_all("reminder", &to, "S", "T");
        assert_eq!(d.to, [(None, "g@example.org".to_string())]);
        assert_eq!(d.auto_submitted, AutoSubmitted::Generated);
        assert!(d.html.is_none() && d.in_reply_to.is_none() && d.request_id.is_none());
        let d = d
            .about(Some(crate::store::RequestId(7)))
            .answering(Some("a@b".into()), vec!["a@b".into()])
            .with_html("<p>".into());
        assert_eq!(
            (d.request_id, d.auto_submitted),
            (Some(crate::store::RequestId(7)), AutoSubmitted::Replied)
        );
        assert_eq!(d.references, ["a@b"]);
    }
}
