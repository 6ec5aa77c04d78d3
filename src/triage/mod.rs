//! The gatekeeper's decisions: who may make them, and what they do.
//!
//! A reply to a notification counts only when it comes from a configured gatekeeper AND
//! carries that request's token (the notification puts it in the Reply-To sub-address and
//! in its footer, both of which plain replies from Outlook, Gmail and Thunderbird keep), and,
//! with `[triage] authserv_id` set, the receiving server vouches for the sender (see
//! [`auth`]). A forged From alone changes nothing. Anything rejected or not understood
//! changes nothing and earns a short error email that says why.
//!
//! Nothing internal reaches a requester: command lines anywhere in the reply are commands
//! ([`grammar`]), and an outcome whose text holds a reply key, the `+key` reply address or
//! the notification's own words (the quoted notification slipped past the quote detection)
//! is not sent: the decision is refused and the gatekeeper told why.
//!
//! The same [`Triage::decide`] serves emailed replies and `gatehouse triage`.

pub mod auth;
pub mod grammar;
pub mod links;
pub mod nudge;
pub mod paper;
pub mod reminders;

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use crate::classify::Parsed;
use crate::classify::subject::reply_subject;
use crate::config::Config;
use crate::domain::{Decision, EmailAddress, Status};
use crate::mailings::recipients::Recipients;
use crate::mailings::{Composer, Draft, row_view};
use crate::store::{self, EventKind, RequestRow, Tx};
use crate::templates::{
    BoardView, EarlierView, OutcomeContext, OutcomeHtmlContext, Templates, TriageConfirmationContext,
    TriageErrorContext, long_date, service_view,
};
use grammar::{Command, Reply, TriageError};

/// What a decision sends the outside world: the outcome email and whom it goes to, or why
/// none may go (the decision still counts; the gatekeepers are told).
enum OutcomeMail {
    Send { mail: crate::store::NewOutgoing, to: String },
    NotSent(String),
}

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

    /// Who the request's log says did it.
    fn author(&self) -> store::Actor {
        match self {
            Actor::Gatekeeper(a) => store::Actor::Address(a.clone()),
            Actor::Operator => store::Actor::Operator(None),
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
    channel: crate::channel::Channel,
}

impl Triage {
    pub fn new(config: Arc<Config>, templates: Arc<Templates>) -> Self {
        let composer = Composer::new(config.clone());
        let recipients = Recipients::new(config.clone());
        let channel = crate::channel::Channel::new(config.clone(), templates.clone());
        Self { config, templates, composer, recipients, channel }
    }

    /// Decides whether `parsed` is a gatekeeper's reply and whether it may act. `quoted_keys`
    /// are the keys [`reply_keys_in`] found in its text (worked out on the parser's thread).
    pub async fn authorise(
        &self,
        tx: &mut dyn Tx,
        parsed: &Parsed,
        quoted_keys: &[String],
        raw: &[u8],
        from: &EmailAddress,
    ) -> anyhow::Result<Attempt> {
        let mut tokens = self.keys_in_recipients(parsed);
        for key in quoted_keys {
            if !tokens.contains(key) {
                tokens.push(key.clone());
            }
        }
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
        if let Some(authserv) = self.config.triage.authserv_id.as_deref()
            && let Some(why) = auth::verdict(authserv, raw, from.domain()).refusal(authserv)
        {
            return refuse(why);
        }
        Ok(Attempt::Authorised(Box::new(request)))
    }

    /// Keys in a `local+KEY@domain` recipient: the notification's Reply-To, which a plain
    /// reply keeps.
    fn keys_in_recipients(&self, parsed: &Parsed) -> Vec<String> {
        let ours = self.config.smtp.from.address.as_str();
        let (local, domain) = ours.split_once('@').unwrap_or((ours, ""));
        let mut tokens: Vec<String> = Vec::new();
        for m in parsed.to.iter().chain(parsed.cc.iter()) {
            let Some((l, d)) = m.address.split_once('@') else { continue };
            if d.eq_ignore_ascii_case(domain)
                && let Some(rest) = l.strip_prefix(local)
                && let Some(token) = rest.strip_prefix('+')
                && is_token(token)
                && !tokens.iter().any(|t| t.eq_ignore_ascii_case(token))
                && tokens.len() < MAX_KEYS
            {
                tokens.push(token.to_ascii_lowercase());
            }
        }
        tokens
    }

    /// The new text of an authorised reply, read: the commands and the message. Refused when
    /// the new text still holds the quoted notification (a quote header gatehouse did not
    /// recognise): it cannot tell where the gatekeeper's words end, so it asks rather than
    /// guess.
    pub fn read_reply(&self, parsed: &Parsed, request: &RequestRow) -> Result<Reply, TriageError> {
        let text = crate::classify::reply_text(&parsed.body_text, parsed.body_html.as_deref());
        if let Some(what) = self.internal_text_in(&text, request) {
            return Err(TriageError(format!(
                "the new text of your reply seems to hold the quoted notification ({what}), so gatehouse cannot tell where your words end; reply again with your commands and text above the quoted part, or delete the quoted part"
            )));
        }
        grammar::parse(&text)
    }

    /// What in `text` belongs to the gatekeepers only: a reply key, the `+key` reply
    /// address, or the notification's own words. `None` when there is nothing.
    fn internal_text_in(&self, text: &str, request: &RequestRow) -> Option<String> {
        let lower = text.to_lowercase();
        if !request.token.is_empty() && lower.contains(&request.token.to_ascii_lowercase()) {
            return Some("the request's reply key".into());
        }
        let ours = self.config.smtp.from.address.as_str();
        let local = ours.split_once('@').map_or(ours, |(l, _)| l);
        if lower.contains(&format!("{}+", local.to_lowercase())) {
            return Some(format!("the reply address {local}+…"));
        }
        if let Some(marker) = NOTIFICATION_MARKERS.iter().find(|m| text.contains(*m)) {
            return Some(format!("the notification's words \"{marker}\""));
        }
        if has_key_shape(text) {
            return Some("a reply key".into());
        }
        None
    }

    /// Applies a parsed reply to `request` inside `tx`: the decision, priorities, notes, the
    /// requester's outcome email, `circulate`'s email to the board ([`paper`]) and the
    /// gatekeepers' confirmation. An `Err(TriageError)`
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

        let paper = match self.prepare_paper(tx, request, reply, today, now).await? {
            Ok(paper) => paper,
            Err(e) => return Ok(Err(e)),
        };
        // The outcome is drafted before anything is written, so that one refused by the
        // final check for internal text leaves the request as it was.
        let outcome = match &reply.decision {
            Some(command) => {
                match self.outcome(
                    request,
                    command,
                    meeting_date,
                    duplicate.as_ref(),
                    &reply.message,
                    paper.asked_by,
                    now,
                )? {
                    Ok(mail) => Some(mail),
                    Err(e) => return Ok(Err(e)),
                }
            }
            None => None,
        };
        // A `message` decision's text for the group's channel (and its webhook post).
        let channel = match &reply.decision {
            Some(Command::Message) => self.channel.mailings(request, &reply.message, now)?,
            _ => Vec::new(),
        };

        let who = actor.author();
        let mut summary = Vec::new();
        let mut requester_told = false;
        let mut board = None;
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
            tx.add_event(request.id, now, who.clone(), EventKind::Decision, Some(&event)).await?;
            summary.push(format!("decided: {what}"));
            if let (Decision::Meeting, Some(date)) = (decision, meeting_date) {
                let told = tx.agenda_told_ids(date).await?.map(|ids| ids.contains(&request.id));
                board = Some(crate::summary::agenda::board_notice(&self.config, date, told, now));
            }
            match outcome {
                Some(OutcomeMail::Send { mail, to }) => {
                    tx.enqueue(&mail, now).await?;
                    tx.add_event(
                        request.id,
                        now,
                        store::Actor::Gatehouse,
                        EventKind::OutcomeSent,
                        Some(&format!("Outcome sent to {to}")),
                    )
                    .await?;
                    requester_told = true;
                }
                Some(OutcomeMail::NotSent(why)) => {
                    tx.add_event(
                        request.id,
                        now,
                        store::Actor::Gatehouse,
                        EventKind::OutcomeNotSent,
                        Some(&why),
                    )
                    .await?;
                    summary.push(format!("outcome not sent: {why}"));
                }
                None => {}
            }
            for (kind, mail) in &channel {
                tx.enqueue(mail, now).await?;
                tx.add_event(request.id, now, store::Actor::Gatehouse, *kind, Some(&mail.subject)).await?;
            }
        }
        for key in &reply.priorities {
            tx.add_priority(request.id, key).await?;
            tx.add_event(request.id, now, who.clone(), EventKind::Priority, Some(key)).await?;
            summary.push(format!("priority {key}"));
        }
        for note in &reply.notes {
            tx.add_event(request.id, now, who.clone(), EventKind::Note, Some(note)).await?;
            summary.push("note added".into());
        }
        if let Some(circulation) = paper.circulation {
            summary.push(self.circulate(tx, request, circulation, actor, now).await?);
        }
        let summary = summary.join("; ");
        let confirmation = self.confirmation(request, &summary, actor, requester_told, board, now)?;
        tx.enqueue(&confirmation, now).await?;
        Ok(Ok(summary))
    }

    /// The outcome email and whom it goes to, or why it may not go (see
    /// [`crate::mailings::recipients`]): to the requester, or, when an outsider's forward named
    /// them, to the forwarder alone. A decision sends at most this one email outside. A
    /// `TriageError` when its text holds something internal (see [`Self::internal_text_in`]):
    /// then the decision is refused.
    #[allow(clippy::too_many_arguments)]
    fn outcome(
        &self,
        request: &RequestRow,
        command: &Command,
        meeting_date: Option<NaiveDate>,
        duplicate: Option<&RequestRow>,
        message: &str,
        paper_by: Option<String>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<OutcomeMail, TriageError>> {
        let via = request.via.as_deref().and_then(|v| EmailAddress::parse(v).ok());
        let mut view = row_view(&self.config, request);
        // The intake's judgment stands: a forward it could not verify (an outsider's, or a
        // member's address the receiving server did not vouch for) named the requester, and
        // only the forwarder may hear the outcome.
        let (to, name) =
            if !request.requester_unverified && self.recipients.stands_behind_requester(via.as_ref()) {
                (EmailAddress::parse(&request.requester).ok(), request.requester_name.clone())
            } else {
                // The forwarder is not the person the template would greet by name.
                view.requester_name = None;
                (via, None)
            };
        let Some(to) = to else {
            return Ok(Ok(OutcomeMail::NotSent(format!("{} is not an address", request.requester))));
        };
        if let Some(why) = self.recipients.never(&to) {
            return Ok(Ok(OutcomeMail::NotSent(why)));
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
            meeting_time: meeting_date.and_then(|d| self.config.meetings.slot(d).hours()),
            meeting_place: meeting_date.and_then(|d| self.config.meetings.slot(d).place),
            // Another requester's approach is named only to the same requester or
            // organisation; anyone else hears that it duplicates an earlier approach.
            duplicate_of: duplicate.filter(|d| same_source(request, d)).map(|d| EarlierView {
                reference: d.reference.clone(),
                subject: d.subject.clone(),
                status: d.status.to_string(),
                decision: d.decision.map(|x| x.to_string()),
            }),
            message: message.to_string(),
            previous: request.decision.filter(|p| *p != decision).map(|p| p.command().to_string()),
            paper_by,
        };
        let text = self.templates.render(&format!("outcome_{}.txt", decision.as_str()), &context)?;
        // The last guard, whatever the quote detection and the grammar made of the reply.
        if let Some(what) = self.internal_text_in(&text, request) {
            return Ok(Err(TriageError(format!(
                "the outcome for the requester would contain {what}, which is for the gatekeepers only; nothing was sent or changed. Reply again with only your commands and the words meant for the requester"
            ))));
        }
        // A meeting's outcome carries the calendar invitation for the slot.
        let attachments = match meeting_date.filter(|_| decision == Decision::Meeting) {
            Some(date) => {
                let attendee = crate::calendar::Person { name: name.as_deref(), address: &to };
                vec![crate::calendar::for_request(
                    &self.config,
                    &request.reference,
                    &request.subject,
                    date,
                    attendee,
                    now,
                )]
            }
            None => Vec::new(),
        };
        let paragraphs = text.split("\n\n").map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
        let html =
            self.templates.render("outcome.html", &OutcomeHtmlContext { request: view, paragraphs })?;
        let subject = reply_subject(&request.subject, &request.reference);
        // An answer to the requester's approach (auto-replied), though not threaded under it.
        let mail = self.composer.compose(
            &Draft::new("outcome", vec![(name, to.to_string())], subject, text)
                .about(Some(request.id))
                .with_html(html)
                .answering(None, Vec::new())
                .with_attachments(attachments),
        )?;
        Ok(Ok(OutcomeMail::Send { mail, to: to.to_string() }))
    }

    /// The one-line confirmation: to the deciding gatekeeper with the other copied, or to
    /// both when the operator decided. For a `meeting` decision it says what the board has
    /// been told (`board`).
    fn confirmation(
        &self,
        request: &RequestRow,
        summary: &str,
        actor: &Actor,
        requester_told: bool,
        board: Option<BoardView>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<crate::store::NewOutgoing> {
        let context = TriageConfirmationContext {
            service: service_view(
                &self.config,
                now.with_timezone(&self.config.service.timezone).date_naive(),
            ),
            request: row_view(&self.config, request),
            summary: summary.to_string(),
            actor: actor.name(),
            requester_told,
            board,
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
        let subject = format!("[{}] {summary}", request.reference);
        let text = self.templates.render("triage_confirmation.txt", &context)?;
        self.composer.compose(&Draft::new("triage_confirmation", to, subject, text).about(Some(request.id)))
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
        let subject = match reference {
            Some(r) => format!("[{r}] Not acted on: {error}"),
            None => format!("Not acted on: {error}"),
        };
        let text = self.templates.render("triage_error.txt", &context)?;
        let references = in_reply_to.map(|i| vec![i.to_string()]).unwrap_or_default();
        self.composer.compose(
            &Draft::to_all("triage_error", to, subject, text)
                .answering(in_reply_to.map(str::to_string), references),
        )
    }

    /// A requester answered a `more-work` decision: back to the gatekeeper.
    pub async fn reopen_if_waiting(
        &self,
        tx: &mut dyn Tx,
        request: &RequestRow,
        from: &EmailAddress,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        if request.status != Status::WaitingOnRequester || !paper::speaks_for(request, from) {
            return Ok(false);
        }
        tx.set_status(request.id, Status::AwaitingTriage, now).await?;
        tx.add_event(
            request.id,
            now,
            store::Actor::Address(from.clone()),
            EventKind::Reopened,
            Some("The requester replied to more-work; back to the gatekeeper"),
        )
        .await?;
        Ok(true)
    }
}

fn is_token(s: &str) -> bool {
    s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// At most this many keys are taken from one reply: each is looked up in the store, inside
/// the write transaction, and a real reply carries one or two.
const MAX_KEYS: usize = 8;

/// The notification's footer, which a quoted notification carries: "Reply key for
/// GP-2026-0042: KEY".
const KEY_FOOTER: &str = "Reply key for ";

/// How far after [`KEY_FOOTER`] its colon may be: the reference is short, and bounding the
/// search keeps a body of many footers linear.
const FOOTER_COLON_WITHIN: usize = 40;

/// Words only the gatekeepers' emails carry (the notification's headings and decision help,
/// its key footer, the reminder digest and the error reply). Any of them in an outcome means
/// the quoted notification slipped into it. `notification_markers_are_in_the_templates`
/// keeps this list in step with the built-in templates.
/// Matched as written (case and all), as quoting keeps it, so that a sentence of the
/// gatekeeper's own that happens to share the words in lower case is not taken for one.
pub const NOTIFICATION_MARKERS: &[&str] = &[
    "Reply key for",
    "needs your decision.",
    "has written again.",
    "HOW TO DECIDE:",
    "One click:",
    "Decide with one click",
    "internal note, never sent",
    "goes to the requester with the outcome",
    "for your decision, oldest first",
    "was not acted on:",
];

/// Reply keys quoted in a reply's text (the notification's footer): what the parser's
/// thread works out for each message, so the store transaction does not scan bodies. Linear
/// in the text, and at most [`MAX_KEYS`].
pub fn reply_keys_in(body_text: &str, body_html: Option<&str>) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for text in [Some(body_text), body_html].into_iter().flatten() {
        let mut rest = text;
        while let Some(at) = rest.find(KEY_FOOTER) {
            if keys.len() >= MAX_KEYS {
                return keys;
            }
            rest = rest.get(at + KEY_FOOTER.len()..).unwrap_or_default();
            let window: String = rest.chars().take(FOOTER_COLON_WITHIN).take_while(|c| *c != '\n').collect();
            let Some(colon) = window.find(':') else { continue };
            let after = rest.get(colon + 1..).unwrap_or_default().trim_start_matches([' ', '\t']);
            let candidate: String = after.chars().take(33).take_while(char::is_ascii_hexdigit).collect();
            let candidate = candidate.to_ascii_lowercase();
            if is_token(&candidate) && !keys.contains(&candidate) {
                keys.push(candidate);
            }
        }
    }
    keys
}

/// Whether `text` holds a run of exactly 32 hex digits standing alone: the shape of a reply
/// key (of this request or any other).
fn has_key_shape(text: &str) -> bool {
    let mut run = 0usize;
    let mut alone = true;
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() {
            run += 1;
            continue;
        }
        if run == 32 && alone && !c.is_alphanumeric() {
            return true;
        }
        alone = !c.is_alphanumeric();
        run = 0;
    }
    false
}

/// Whether `earlier` came from the same requester or organisation as `request`, so that
/// naming it to `request`'s requester tells them nothing about someone else.
fn same_source(request: &RequestRow, earlier: &RequestRow) -> bool {
    let same = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
    same(&request.requester, &earlier.requester)
        || earlier.via.as_deref().is_some_and(|v| same(v, &request.requester))
        || matches!((&request.organisation, &earlier.organisation), (Some(a), Some(b)) if !a.trim().is_empty() && same(a, b))
}

/// "meeting on Thursday 3 December 2026", "decline (not GP work)".
pub fn describe(decision: Decision, detail: Option<&str>, meeting: Option<NaiveDate>) -> String {
    match (decision, detail, meeting) {
        (Decision::Meeting, _, Some(d)) => format!("meeting on {}", long_date(d)),
        (d, Some(detail), _) => format!("{} ({detail})", d.command()),
        (d, None, _) => d.command().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triage() -> (Triage, RequestRow) {
        let config = Arc::new(
            crate::config::Config::parse(
                crate::config::tests::VALID,
                std::path::Path::new("/etc/gatehouse/gatehouse.toml"),
            )
            .unwrap(),
        );
        let templates = Arc::new(Templates::load(&config).unwrap());
        let request = RequestRow {
            id: crate::store::RequestId(1),
            reference: "GP-2026-0001".into(),
            status: Status::AwaitingTriage,
            decision: None,
            decision_detail: None,
            requester: "jo@icb.example".into(),
            requester_name: None,
            organisation: Some("Anytown ICB".into()),
            via: None,
            subject: "Phlebotomy".into(),
            body: String::new(),
            received_at: Utc::now(),
            decided_at: None,
            meeting_date: None,
            priorities: Vec::new(),
            duplicate_of: None,
            probable_duplicate_of: None,
            message_count: 1,
            token: "00112233445566778899aabbccddeeff".into(),
            answer: true,
            requester_unverified: false,
        };
        (Triage::new(config, templates), request)
    }

    #[test]
    fn notification_markers_are_in_the_templates() {
        // Renamed headings must be renamed here too, or the guard stops seeing them.
        let templates = [
            include_str!("../templates/builtin/notification.txt"),
            include_str!("../templates/builtin/notification.html"),
            include_str!("../templates/builtin/reminder.txt"),
            include_str!("../templates/builtin/triage_error.txt"),
        ];
        for marker in NOTIFICATION_MARKERS {
            assert!(templates.iter().any(|t| t.contains(marker)), "{marker:?} is in no gatekeeper template");
        }
    }

    #[test]
    fn internal_text_is_found_in_what_would_go_to_a_requester() {
        let (t, request) = triage();
        let found = |text: &str| t.internal_text_in(text, &request);
        assert_eq!(found("Thanks, we will discuss it on the 3rd.\nJane"), None);
        assert_eq!(found("We will decide how to decide: one click: at a time."), None, "lower case prose");
        assert!(found("key 00112233445566778899AABBCCDDEEFF here").unwrap().contains("reply key"));
        assert!(found("write to GP-Access+abc@nhs.net").unwrap().contains("reply address"));
        assert!(found("Reply key for GP-2026-0001: (elided)").unwrap().contains("Reply key for"));
        assert!(found("  HOW TO DECIDE: reply to this email").is_some());
        assert!(found("One click: Paper <mailto:x>").is_some());
        assert!(found("another key ffffffffffffffffffffffffffffffff.").unwrap().contains("a reply key"));
        assert_eq!(
            found("a hash ffffffffffffffffffffffffffffffff0 or gffffffffffffffffffffffffffffffff"),
            None
        );
    }

    #[test]
    fn quoted_keys_are_found_in_linear_time() {
        // Found by review: each footer searched for its colon to the end of the body, so a
        // body of footers took quadratic time inside the store transaction.
        let text = format!(
            "paper\n\n> Reply key for GP-2026-0001: 00112233445566778899AABBCCDDEEFF (keep it)\n{}",
            "Reply key for ".repeat(200_000)
        );
        assert_eq!(reply_keys_in(&text, None), ["00112233445566778899aabbccddeeff"]);
        let html = "<p>Reply key for GP-2026-0002: ffffffffffffffffffffffffffffffff</p>";
        assert_eq!(reply_keys_in(&text, Some(html)).len(), 2);
        // No newline anywhere, and no colon: each footer looks only a few characters on.
        assert!(reply_keys_in(&"Reply key for x".repeat(300_000), None).is_empty());
        assert_eq!(
            reply_keys_in(&format!("Reply key for {}: {}", "x".repeat(60), "f".repeat(32)), None).len(),
            0
        );
        let many: String = (0..20).map(|i| format!("Reply key for R: {i:032x}\n")).collect();
        assert_eq!(reply_keys_in(&many, None).len(), MAX_KEYS);
    }

    #[test]
    fn tokens_are_32_hex_digits() {
        assert!(is_token("0123456789abcdef0123456789abcdef"));
        assert!(!is_token("0123456789abcdef"));
        assert!(!is_token("0123456789abcdef0123456789abcdeg"));
    }
}
