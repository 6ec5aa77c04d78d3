//! The `message` decision carried through: a short text for the group's channel (who asks,
//! what, by when if they said, the reference), emailed to the gatekeepers ready to paste
//! into WhatsApp and, with `[channel] webhook_url_env`, posted to a Teams or Slack channel
//! through the outbox ([`crate::outbox::webhook`]).
//!
//! Everything in the text was written by the requester, an adversary until shown otherwise,
//! and the channel is wider than the board: only what the requester wrote and the decision's
//! words for the requester go in, never the gatekeepers' notes. Each value loses control
//! characters, bidirectional overrides and invisible characters (which can show text in
//! another order than it is written), has its white space collapsed, cannot mention a whole
//! channel (`@channel`, `@here`: the `@` of a word becomes "(at)") or form a markdown link,
//! and is cut to fit [`MAX_CHARS`] at a word boundary. The webhook's copy also escapes `&`,
//! `<` and `>` ([`crate::outbox::webhook::escape`]), so `<!channel>` or `<at>` cannot be
//! written.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::classify::subject::strip_prefixes;
use crate::config::Config;
use crate::mailings::{Composer, Draft};
use crate::store::{EventKind, NewOutgoing, RequestRow};
use crate::templates::{ChannelDraftContext, ChannelMessageContext};
use crate::templates::{Templates, service_view};

mod when;

/// The longest channel text, in characters: a WhatsApp message read at a glance.
pub const MAX_CHARS: usize = 600;

/// The outbox kind of the gatekeepers' email carrying the text.
pub const DRAFT_KIND: &str = "channel_draft";

/// Drafts the channel text and what carries it.
#[derive(Debug, Clone)]
pub struct Channel {
    config: Arc<Config>,
    templates: Arc<Templates>,
    composer: Composer,
}

impl Channel {
    pub fn new(config: Arc<Config>, templates: Arc<Templates>) -> Self {
        let composer = Composer::new(config.clone());
        Self { config, templates, composer }
    }

    /// The text for the channel: at most [`MAX_CHARS`], plain, safe to paste or post.
    /// `message` is the decision's words for the requester (may be empty).
    pub fn text(&self, request: &RequestRow, message: &str) -> anyhow::Result<String> {
        let mut context = ChannelMessageContext {
            reference: request.reference.clone(),
            who: cut(&safe(&who(request)), 160),
            what: safe(&what(request)),
            by_when: when::by_when(&request.subject, &request.body).map(|w| safe(&w)),
            message: Some(safe(message)).filter(|m| !m.is_empty()),
        };
        // The words around the values take what they take; the requester's subject and the
        // decision's message share the rest, the subject first.
        let bare = ChannelMessageContext { what: String::new(), message: None, ..context.clone() };
        let fixed = self.render(&bare)?.chars().count();
        let room = MAX_CHARS.saturating_sub(fixed + 1);
        let message_len = context.message.as_ref().map_or(0, |m| m.chars().count() + 1);
        let for_message = message_len.min(room / 3);
        context.what = cut(&context.what, room.saturating_sub(for_message).max(1));
        let left = room.saturating_sub(context.what.chars().count() + 1);
        context.message = context.message.map(|m| cut(&m, left)).filter(|m| left > 1 && !m.is_empty());
        // Whatever an override writes, the result is cleaned and capped once more.
        Ok(cut_lines(&self.render(&context)?, MAX_CHARS))
    }

    fn render(&self, context: &ChannelMessageContext) -> anyhow::Result<String> {
        let text = self.templates.render("channel_message.txt", context)?;
        Ok(text.lines().map(safe).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n"))
    }

    /// What a `message` decision queues besides the outcome: the gatekeepers' email with the
    /// text ready to paste, and the webhook post when `[channel]` names one.
    pub fn mailings(
        &self,
        request: &RequestRow,
        message: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Vec<(EventKind, NewOutgoing)>> {
        let text = self.text(request, message)?;
        let webhook = self.config.channel.webhook_url.as_ref();
        let context = ChannelDraftContext {
            service: service_view(
                &self.config,
                now.with_timezone(&self.config.service.timezone).date_naive(),
            ),
            reference: request.reference.clone(),
            text: text.clone(),
            posted: webhook.is_some(),
        };
        let draft = self.composer.compose(
            &Draft::to_all(
                DRAFT_KIND,
                &self.config.gatekeepers,
                format!("[{}] Message for the group's channel", request.reference),
                self.templates.render("channel_draft.txt", &context)?,
            )
            .about(Some(request.id)),
        )?;
        let mut out = vec![(EventKind::ChannelDraft, draft)];
        if let Some(source) = webhook {
            out.push((
                EventKind::ChannelPost,
                crate::outbox::webhook::entry(&self.composer, source, request.id, &request.reference, &text)?,
            ));
        }
        Ok(out)
    }
}

/// "Jo Bloggs, Anytown ICB": the requester's name (or address) and organisation. A forward
/// gatehouse could not verify named the requester on the forwarder's word alone, which the
/// text says.
fn who(request: &RequestRow) -> String {
    let name = request
        .requester_name
        .as_deref()
        .and_then(crate::domain::display_name)
        .unwrap_or_else(|| request.requester.clone());
    let mut who = match request.organisation.as_deref().map(str::trim).filter(|o| !o.is_empty()) {
        Some(org) => format!("{name}, {org}"),
        None => name,
    };
    if request.requester_unverified
        && let Some(via) = &request.via
    {
        who.push_str(&format!(" (as forwarded by {via})"));
    }
    who
}

/// What is asked: the subject without reply prefixes, or the first line of the text when
/// there was no subject.
fn what(request: &RequestRow) -> String {
    let subject = strip_prefixes(&request.subject);
    if !subject.trim().is_empty() {
        return subject.to_string();
    }
    request.body.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("(no subject)").to_string()
}

/// One value from mail as the channel may show it: one line, without control, bidirectional
/// or invisible characters, white space collapsed, no whole-channel mention (`@here`,
/// `@channel`: an `@` opening a word becomes "(at)"; an address's `@` stays) and no markdown
/// link (`](` is broken apart).
pub fn safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(8192));
    let mut after_word = false;
    for c in s.chars() {
        match c {
            c if crate::domain::hides_or_reorders(c) => continue,
            '@' if !after_word => out.push_str("(at)"),
            '\u{FF20}' | '\u{FE6B}' => out.push_str("(at)"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
        after_word = c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '+');
    }
    let collapsed = out.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.replace("](", "] (")
}

/// `s` in at most `max` characters: cut at the last word boundary that fits, with an
/// ellipsis.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max <= 1 {
        return "…".chars().take(max).collect();
    }
    let head: String = s.chars().take(max - 1).collect();
    // Back to the last space, unless that would throw away most of it (one long word).
    let kept = match head.rfind(char::is_whitespace) {
        Some(at) if head[..at].chars().count() * 2 >= max => &head[..at],
        _ => head.as_str(),
    };
    format!("{}…", kept.trim_end())
}

/// A text of several lines in at most `max` characters, newlines included.
fn cut_lines(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    cut(text, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_lose_what_could_hide_or_mention() {
        assert_eq!(safe("Hi @channel and @here!"), "Hi (at)channel and (at)here!");
        assert_eq!(safe("ask jo@icb.example"), "ask jo@icb.example");
        assert_eq!(safe("\u{FF20}everyone"), "(at)everyone");
        assert_eq!(safe("evil\u{202E}fdp.exe\u{2066}x\u{200B}y"), "evilfdp.exexy");
        assert_eq!(safe("a\r\nb\t\u{0007}c   d"), "a b c d");
        assert_eq!(safe("[click](https://evil.example)"), "[click] (https://evil.example)");
    }

    fn channel() -> Channel {
        let config = Arc::new(
            crate::config::Config::parse(
                crate::config::tests::VALID,
                std::path::Path::new("/etc/gatehouse/gatehouse.toml"),
            )
            .unwrap(),
        );
        let templates = Arc::new(Templates::load(&config).unwrap());
        Channel::new(config, templates)
    }

    fn request(subject: &str, name: Option<&str>) -> RequestRow {
        RequestRow {
            reference: "GP-2026-0042".into(),
            status: crate::domain::Status::Scheduled,
            decision: Some(crate::domain::Decision::Message),
            requester_name: name.map(str::to_string),
            organisation: Some("Anytown ICB".into()),
            subject: subject.into(),
            body: "Hello\nCould the group look at this by Friday 18 December?".into(),
            ..RequestRow::sample()
        }
    }

    #[test]
    fn the_text_names_who_what_when_and_the_reference_within_600_characters() {
        let c = channel();
        let text = c.text(&request("RE: Fwd: Phlebotomy in practices", Some("Jo Bloggs")), "").unwrap();
        assert_eq!(
            text,
            "GP-2026-0042: Jo Bloggs, Anytown ICB asks the group: Phlebotomy in practices\nBy: Friday 18 December"
        );
        // Both the subject and the decision's words are long: each is cut, the reference
        // and the deadline stay, and the subject keeps the larger share.
        let long = format!("Phlebotomy {}", "very long words ".repeat(100));
        let message = format!("We will share it. {}", "more words ".repeat(100));
        let text = c.text(&request(&long, Some("@here Jo\u{202E}")), &message).unwrap();
        assert!(text.chars().count() <= MAX_CHARS, "{} chars", text.chars().count());
        assert!(text.starts_with("GP-2026-0042: "), "{text}");
        assert!(text.contains("By: Friday 18 December"), "{text}");
        assert!(text.contains("We will share it."), "{text}");
        assert_eq!(text.matches('…').count(), 2, "{text}");
        assert!(!text.contains("@here") && !text.contains('\u{202E}'), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].chars().count() > lines[2].chars().count(), "{text}");
    }

    #[test]
    fn long_values_are_cut_at_a_word_with_an_ellipsis() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("one two three four", 12), "one two…");
        assert!(cut("one two three four", 12).chars().count() <= 12);
        let word = "x".repeat(50);
        assert_eq!(cut(&word, 10).chars().count(), 10);
        assert!(cut(&word, 10).ends_with('…'));
    }
}
