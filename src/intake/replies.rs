//! The emails a request causes when it arrives: the acknowledgement to the requester, the
//! confirmation to a forwarder, and the gatekeeper's notification. They are drafted here and
//! written to the outbox by the caller, inside the request's own transaction.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::classify::subject::{capped, reply_subject};
use crate::config::Config;
use crate::mailings::{Composer, Draft, requester_name};
use crate::store::{Candidate, NewOutgoing, RequestId};
use crate::templates::{
    AcknowledgementContext, EarlierView, ForwardConfirmationContext, NotificationContext, PriorityView,
    RequestView, Templates, service_view,
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
        let to = vec![(request.requester_name.clone(), request.requester.clone())];
        let text = self.templates.render("acknowledgement.txt", &context)?;
        let html = self.templates.render("acknowledgement.html", &context)?;
        self.composer.compose(
            &Draft::new("acknowledgement", to, subject, text)
                .about(Some(request_id))
                .with_html(html)
                .answering(thread.message_id.clone(), thread.references()),
        )
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
        let subject = reply_subject(original_subject, &request.reference);
        let text = self.templates.render("forward_confirmation.txt", &context)?;
        let html = self.templates.render("forward_confirmation.html", &context)?;
        self.composer.compose(
            &Draft::new("forward_confirmation", vec![(None, forwarder.to_string())], subject, text)
                .about(Some(request_id))
                .with_html(html)
                .answering(thread.message_id.clone(), thread.references()),
        )
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
        let reply_to = crate::triage::links::reply_address(&self.config, token);
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
        let links = crate::triage::links::decision_links(&self.config, token, &reply_subject);
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
            paper: about.paper,
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
        let text = self.templates.render("notification.txt", &context)?;
        let html = self.templates.render("notification.html", &context)?;
        self.composer.compose(
            &Draft::to_all("notification", &self.config.gatekeepers, subject, text)
                .about(Some(request_id))
                .with_reply_to(Some(reply_to))
                .with_html(html)
                .with_attachments(attachments),
        )
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
    /// The requester's paper came, for a request decided `paper`: offer `circulate`.
    pub paper: bool,
}

fn who(request: &RequestView) -> String {
    request
        .organisation
        .clone()
        .or_else(|| requester_name(request.requester_name.as_deref()))
        .unwrap_or_else(|| request.requester.clone())
}
