//! The gatekeeper's decisions: who may make them, and what they do.
//!
//! A reply to a notification counts only when it comes from a configured gatekeeper AND
//! carries that request's token (the notification puts it in the Reply-To sub-address and
//! in its footer, both of which plain replies from Outlook, Gmail and Thunderbird keep), and,
//! where the receiving server stamped `Authentication-Results`, DMARC/DKIM did not fail. A
//! forged From alone changes nothing. Anything rejected or not understood changes nothing
//! and earns a short error email that says why.
//!
//! The same [`Triage::decide`] serves emailed replies and `gatehouse triage`.

pub mod grammar;
pub mod reminders;

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use crate::classify::Parsed;
use crate::config::Config;
use crate::domain::{Decision, EmailAddress, Status, requester_display};
use crate::outbox::recipients::Recipients;
use crate::outbox::{AutoSubmitted, Composer, Draft};
use crate::requests::replies::reply_subject;
use crate::store::{RequestRow, Tx};
use crate::templates::{
    EarlierView, OutcomeContext, OutcomeHtmlContext, RequestView, Templates, TriageConfirmationContext,
    TriageErrorContext, long_date, service_view,
};
use grammar::{Command, Reply, TriageError};

/// Who made a decision: a gatekeeper by email, or the operator at the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Gatekeeper(EmailAddress),
    Operator,
}

impl Actor {
    fn name(&self) -> String {
        match self {
            Actor::Gatekeeper(a) => a.to_string(),
            Actor::Operator => "operator".into(),
        }
    }
}

/// What a message addressed to triage turned out to be.
#[derive(Debug)]
pub enum Attempt {
    /// Not a reply to a notification at all: handle as ordinary mail.
    NotTriage,
    /// Authorised for this request.
    Authorised(Box<RequestRow>),
    /// Refused; nothing may change. `request` when it could be told which one.
    Refused { reason: String, request: Option<Box<RequestRow>> },
}

#[derive(Debug)]
pub struct Triage {
    config: Arc<Config>,
    templates: Arc<Templates>,
    composer: Composer,
    recipients: Recipients,
}

impl Triage {
    pub fn new(config: Arc<Config>, templates: Arc<Templates>) -> Self {
        let composer = Composer::new(config.clone());
        let recipients = Recipients::new(config.clone());
        Self { config, templates, composer, recipients }
    }

    /// Decides whether `parsed` is a gatekeeper's reply and whether it may act.
    pub async fn authorise(
        &self,
        tx: &mut dyn Tx,
        parsed: &Parsed,
        raw: &[u8],
        from: &EmailAddress,
    ) -> anyhow::Result<Attempt> {
        let tokens = self.tokens_in(parsed);
        let mut ids = parsed.in_reply_to.clone();
        ids.extend(parsed.references.iter().cloned());
        let notified = tx.request_for_notification(&ids).await?;
        if tokens.is_empty() && notified.is_none() {
            return Ok(Attempt::NotTriage);
        }
        let mut by_token = None;
        for token in &tokens {
            if let Some(r) = tx.request_by_token(token).await? {
                by_token = Some(r);
                break;
            }
        }
        let target = by_token.clone().or_else(|| notified.clone()).map(Box::new);
        let refuse = |reason: String| Ok(Attempt::Refused { reason, request: target.clone() });
        if !self.config.is_gatekeeper(from) {
            return refuse(format!("{from} is not a gatekeeper"));
        }
        let Some(request) = by_token else {
            return if tokens.is_empty() {
                refuse("the reply does not carry the request's key (reply to the notification itself, keeping its Reply-To address)".into())
            } else {
                refuse("the key in the reply does not belong to any request".into())
            };
        };
        if let Some(n) = &notified
            && n.id != request.id
        {
            return refuse(format!(
                "the key in the reply belongs to {}, not {}",
                request.reference, n.reference
            ));
        }
        if let Some(why) = self.authentication_failure(raw, from) {
            return refuse(why);
        }
        Ok(Attempt::Authorised(Box::new(request)))
    }

    /// Tokens found where a plain reply keeps them: a `local+TOKEN@domain` recipient, or the
    /// notification's "Reply key … : TOKEN" footer in the quoted text.
    fn tokens_in(&self, parsed: &Parsed) -> Vec<String> {
        let ours = self.config.smtp.from.address.as_str();
        let (local, domain) = ours.split_once('@').unwrap_or((ours, ""));
        let mut tokens = Vec::new();
        for m in parsed.to.iter().chain(parsed.cc.iter()) {
            let Some((l, d)) = m.address.split_once('@') else { continue };
            if d.eq_ignore_ascii_case(domain)
                && let Some(rest) = l.strip_prefix(local)
                && let Some(token) = rest.strip_prefix('+')
                && is_token(token)
            {
                tokens.push(token.to_ascii_lowercase());
            }
        }
        for text in [&parsed.body_text, parsed.body_html.as_ref().unwrap_or(&String::new())] {
            let mut rest = text.as_str();
            while let Some(at) = rest.find("Reply key for ") {
                rest = rest.get(at + 14..).unwrap_or_default();
                let Some(colon) = rest.find(':') else { break };
                let candidate: String = rest
                    .get(colon + 1..)
                    .unwrap_or_default()
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit())
                    .collect();
                if is_token(&candidate) && !tokens.contains(&candidate.to_ascii_lowercase()) {
                    tokens.push(candidate.to_ascii_lowercase());
                }
            }
        }
        tokens
    }

    /// DMARC or DKIM failing for the gatekeeper's domain, as stamped by the configured
    /// receiving server, rejects the reply. Results from other servers are ignored: anyone
    /// can write that header.
    fn authentication_failure(&self, raw: &[u8], from: &EmailAddress) -> Option<String> {
        let authserv = self.config.triage.authserv_id.as_deref()?;
        for value in header_values(raw, "authentication-results") {
            let mut parts = value.split(';');
            let server = parts.next().unwrap_or_default().split_whitespace().next().unwrap_or_default();
            if !server.eq_ignore_ascii_case(authserv) {
                continue;
            }
            for result in parts {
                let r = result.trim().to_ascii_lowercase();
                let about_sender = r.contains(&format!("header.from={}", from.domain()))
                    || r.contains(&format!("header.d={}", from.domain()))
                    || r.contains(&format!("header.i=@{}", from.domain()));
                if (r.starts_with("dmarc=fail") || r.starts_with("dkim=fail"))
                    && (about_sender || r.starts_with("dmarc"))
                {
                    return Some(format!(
                        "{authserv} reports the message failed authentication ({})",
                        r.split_whitespace().next().unwrap_or_default()
                    ));
                }
            }
        }
        None
    }

    /// Applies a parsed reply to `request` inside `tx`: the decision, priorities, notes, the
    /// requester's outcome email and the gatekeepers' confirmation. An `Err(TriageError)`
    /// means nothing was written.
    pub async fn decide(
        &self,
        tx: &mut dyn Tx,
        request: &RequestRow,
        reply: &Reply,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<String, TriageError>> {
        for key in &reply.priorities {
            if !self.config.priorities.contains_key(key) {
                let known: Vec<&str> = self.config.priorities.keys().map(String::as_str).collect();
                return Ok(Err(TriageError(format!(
                    "{key:?} is not an agreed priority (known: {})",
                    if known.is_empty() { "none are configured".to_string() } else { known.join(", ") }
                ))));
            }
        }
        let today = now.with_timezone(&self.config.service.timezone).date_naive();
        let mut meeting_date: Option<NaiveDate> = None;
        let mut duplicate: Option<RequestRow> = None;
        match &reply.decision {
            Some(Command::Meeting(Some(d))) => meeting_date = Some(*d),
            Some(Command::Meeting(None)) => match self.config.meetings.dates.iter().find(|d| **d > today) {
                Some(d) => meeting_date = Some(*d),
                None => {
                    return Ok(Err(TriageError(
                        "there is no meeting date after today in [meetings].dates; give one: meeting YYYY-MM-DD".into(),
                    )));
                }
            },
            Some(Command::Duplicate(reference)) => {
                let reference = reference.to_string();
                match tx.find_request(&reference).await? {
                    Some(r) if r.id == request.id => {
                        return Ok(Err(TriageError(format!("{reference} cannot be a duplicate of itself"))));
                    }
                    Some(r) => duplicate = Some(r),
                    None => return Ok(Err(TriageError(format!("there is no request {reference}")))),
                }
            }
            _ => {}
        }

        let who = actor.name();
        let mut summary = Vec::new();
        let mut requester_told = false;
        if let Some(command) = &reply.decision {
            let decision = command.decision();
            let detail = command.detail();
            tx.record_decision(
                request.id,
                decision,
                detail.as_deref(),
                meeting_date,
                duplicate.as_ref().map(|d| d.id),
                now,
            )
            .await?;
            let what = describe(decision, detail.as_deref(), meeting_date);
            let event = match request.decision {
                Some(previous) => format!("{what} (was {previous})"),
                None => what.clone(),
            };
            tx.add_event(request.id, now, &who, "decision", Some(&event)).await?;
            summary.push(format!("decided: {what}"));
            match self.outcome(request, command, meeting_date, duplicate.as_ref(), &reply.message, now)? {
                Ok((mail, to)) => {
                    tx.enqueue(&mail, now).await?;
                    tx.add_event(
                        request.id,
                        now,
                        "gatehouse",
                        "outcome_sent",
                        Some(&format!("Outcome sent to {to}")),
                    )
                    .await?;
                    requester_told = true;
                }
                Err(why) => {
                    tx.add_event(request.id, now, "gatehouse", "outcome_not_sent", Some(&why)).await?;
                    summary.push(format!("outcome not sent: {why}"));
                }
            }
        }
        for key in &reply.priorities {
            tx.add_priority(request.id, key).await?;
            tx.add_event(request.id, now, &who, "priority", Some(key)).await?;
            summary.push(format!("priority {key}"));
        }
        for note in &reply.notes {
            tx.add_event(request.id, now, &who, "note", Some(note)).await?;
            summary.push("note added".into());
        }
        let summary = summary.join("; ");
        let confirmation = self.confirmation(request, &summary, actor, requester_told, now)?;
        tx.enqueue(&confirmation, now).await?;
        Ok(Ok(summary))
    }

    /// The outcome email and whom it goes to, or why it may not go (see
    /// [`crate::outbox::recipients`]): to the requester, or, when an outsider's forward named
    /// them, to the forwarder alone. A decision sends at most this one email outside.
    fn outcome(
        &self,
        request: &RequestRow,
        command: &Command,
        meeting_date: Option<NaiveDate>,
        duplicate: Option<&RequestRow>,
        message: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<(crate::store::NewOutgoing, String), String>> {
        let via = request.via.as_deref().and_then(|v| EmailAddress::parse(v).ok());
        let mut view = view_of(&self.config, request);
        let (to, name) = if self.recipients.stands_behind_requester(via.as_ref()) {
            (EmailAddress::parse(&request.requester).ok(), request.requester_name.clone())
        } else {
            // The forwarder is not the person the template would greet by name.
            view.requester_name = None;
            (via, None)
        };
        let Some(to) = to else {
            return Ok(Err(format!("{} is not an address", request.requester)));
        };
        if let Some(why) = self.recipients.never(&to) {
            return Ok(Err(why));
        }
        let decision = command.decision();
        let context = OutcomeContext {
            service: service_view(
                &self.config,
                now.with_timezone(&self.config.service.timezone).date_naive(),
            ),
            request: view.clone(),
            decision: decision.as_str().into(),
            detail: command.detail(),
            meeting_date: meeting_date.map(long_date),
            duplicate_of: duplicate.map(|d| EarlierView {
                reference: d.reference.clone(),
                subject: d.subject.clone(),
                status: d.status.to_string(),
                decision: d.decision.map(|x| x.to_string()),
            }),
            message: message.to_string(),
            previous: request.decision.filter(|p| *p != decision).map(|p| p.command().to_string()),
        };
        let text = self.templates.render(&format!("outcome_{}.txt", decision.as_str()), &context)?;
        let paragraphs = text.split("\n\n").map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
        let html =
            self.templates.render("outcome.html", &OutcomeHtmlContext { request: view, paragraphs })?;
        let mail = self.composer.compose(&Draft {
            kind: "outcome",
            request_id: Some(request.id),
            to: vec![(name, to.to_string())],
            reply_to: None,
            subject: reply_subject(&request.subject, &request.reference),
            text,
            html: Some(html),
            in_reply_to: None,
            references: Vec::new(),
            auto_submitted: AutoSubmitted::Replied,
            attachments: Vec::new(),
        })?;
        Ok(Ok((mail, to.to_string())))
    }

    /// The one-line confirmation: to the deciding gatekeeper with the other copied, or to
    /// both when the operator decided.
    fn confirmation(
        &self,
        request: &RequestRow,
        summary: &str,
        actor: &Actor,
        requester_told: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<crate::store::NewOutgoing> {
        let context = TriageConfirmationContext {
            service: service_view(
                &self.config,
                now.with_timezone(&self.config.service.timezone).date_naive(),
            ),
            request: view_of(&self.config, request),
            summary: summary.to_string(),
            actor: actor.name(),
            requester_told,
        };
        let mut to: Vec<(Option<String>, String)> = Vec::new();
        if let Actor::Gatekeeper(g) = actor {
            to.push((None, g.to_string()));
        }
        for g in &self.config.gatekeepers {
            if !to.iter().any(|(_, a)| a == g.as_str()) {
                to.push((None, g.to_string()));
            }
        }
        self.composer.compose(&Draft {
            kind: "triage_confirmation",
            request_id: Some(request.id),
            to,
            reply_to: None,
            subject: format!("[{}] {summary}", request.reference),
            text: self.templates.render("triage_confirmation.txt", &context)?,
            html: None,
            in_reply_to: None,
            references: Vec::new(),
            auto_submitted: AutoSubmitted::Generated,
            attachments: Vec::new(),
        })
    }

    /// The short error email for a reply that changed nothing.
    pub fn error_reply(
        &self,
        to: &[EmailAddress],
        reference: Option<&str>,
        error: &str,
        in_reply_to: Option<&str>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<crate::store::NewOutgoing> {
        let context = TriageErrorContext {
            service: service_view(
                &self.config,
                now.with_timezone(&self.config.service.timezone).date_naive(),
            ),
            reference: reference.map(str::to_string),
            error: error.to_string(),
            help: grammar::HELP.to_string(),
        };
        self.composer.compose(&Draft {
            kind: "triage_error",
            request_id: None,
            to: to.iter().map(|a| (None, a.to_string())).collect(),
            reply_to: None,
            subject: match reference {
                Some(r) => format!("[{r}] Not acted on: {error}"),
                None => format!("Not acted on: {error}"),
            },
            text: self.templates.render("triage_error.txt", &context)?,
            html: None,
            in_reply_to: in_reply_to.map(str::to_string),
            references: in_reply_to.map(|i| vec![i.to_string()]).unwrap_or_default(),
            auto_submitted: AutoSubmitted::Replied,
            attachments: Vec::new(),
        })
    }

    /// A requester answered a `more-work` decision: back to the gatekeeper.
    pub async fn reopen_if_waiting(
        &self,
        tx: &mut dyn Tx,
        request: &RequestRow,
        from: &EmailAddress,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let from_requester =
            from.as_str() == request.requester || request.via.as_deref() == Some(from.as_str());
        if request.status != Status::WaitingOnRequester || !from_requester {
            return Ok(false);
        }
        tx.set_status(request.id, Status::AwaitingTriage, now).await?;
        tx.add_event(
            request.id,
            now,
            from.as_str(),
            "reopened",
            Some("The requester replied to more-work; back to the gatekeeper"),
        )
        .await?;
        Ok(true)
    }
}

fn is_token(s: &str) -> bool {
    s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// "meeting on Thursday 3 December 2026", "decline (not GP work)".
pub fn describe(decision: Decision, detail: Option<&str>, meeting: Option<NaiveDate>) -> String {
    match (decision, detail, meeting) {
        (Decision::Meeting, _, Some(d)) => format!("meeting on {}", long_date(d)),
        (d, Some(detail), _) => format!("{} ({detail})", d.command()),
        (d, None, _) => d.command().to_string(),
    }
}

fn view_of(config: &Config, r: &RequestRow) -> RequestView {
    let requester_display = requester_display(r.requester_name.as_deref(), &r.requester);
    RequestView {
        reference: r.reference.clone(),
        subject: r.subject.clone(),
        requester: r.requester.clone(),
        requester_name: r.requester_name.clone(),
        requester_display,
        organisation: r.organisation.clone(),
        via: r.via.clone(),
        received: r
            .received_at
            .with_timezone(&config.service.timezone)
            .format("%A %-d %B %Y, %H:%M")
            .to_string(),
        status: r.status.to_string(),
        decision: r.decision.map(|d| d.to_string()),
        body: r.body.clone(),
        attachments: Vec::new(),
        message_count: r.message_count,
    }
}

/// The unfolded values of every `name` header in the raw header section.
fn header_values(raw: &[u8], name: &str) -> Vec<String> {
    let head_end =
        raw.windows(4).position(|w| w == b"\r\n\r\n").or_else(|| raw.windows(2).position(|w| w == b"\n\n"));
    let head = String::from_utf8_lossy(raw.get(..head_end.unwrap_or(raw.len())).unwrap_or_default());
    let mut values: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(c) = current.as_mut() {
                c.push(' ');
                c.push_str(line.trim());
            }
            continue;
        }
        if let Some(c) = current.take() {
            values.push(c);
        }
        if let Some((n, v)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            current = Some(v.trim().to_string());
        }
    }
    values.extend(current);
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_unfolded() {
        let raw = b"Authentication-Results: mx.nhs.net;\r\n dmarc=fail header.from=nhs.net\r\nSubject: x\r\n\r\nAuthentication-Results: body";
        assert_eq!(
            header_values(raw, "authentication-results"),
            ["mx.nhs.net; dmarc=fail header.from=nhs.net"]
        );
    }

    #[test]
    fn tokens_are_32_hex_digits() {
        assert!(is_token("0123456789abcdef0123456789abcdef"));
        assert!(!is_token("0123456789abcdef"));
        assert!(!is_token("0123456789abcdef0123456789abcdeg"));
    }
}
