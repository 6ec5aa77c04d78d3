//! The emails' words: built-in minijinja templates, each overridable by a file of the same
//! name in `[templates].dir`.
//!
//! Every template is compiled and test-rendered with a complete sample at start-up, with
//! undefined variables as errors, so a typo in an operator's override stops the daemon with
//! a config error instead of failing on the first real approach. `.html` templates escape
//! everything that came from an email.

pub mod board;
pub mod channel;

use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::domain::Decision;

/// (name, built-in source). The README documents each one's variables.
const BUILTIN: &[(&str, &str)] = &[
    ("acknowledgement.txt", include_str!("builtin/acknowledgement.txt")),
    ("acknowledgement.html", include_str!("builtin/acknowledgement.html")),
    ("forward_confirmation.txt", include_str!("builtin/forward_confirmation.txt")),
    ("forward_confirmation.html", include_str!("builtin/forward_confirmation.html")),
    ("notification.txt", include_str!("builtin/notification.txt")),
    ("notification.html", include_str!("builtin/notification.html")),
    ("outcome_meeting.txt", include_str!("builtin/outcome_meeting.txt")),
    ("outcome_paper.txt", include_str!("builtin/outcome_paper.txt")),
    ("outcome_message.txt", include_str!("builtin/outcome_message.txt")),
    ("outcome_more_work.txt", include_str!("builtin/outcome_more_work.txt")),
    ("outcome_decline.txt", include_str!("builtin/outcome_decline.txt")),
    ("outcome_redirect.txt", include_str!("builtin/outcome_redirect.txt")),
    ("outcome_duplicate.txt", include_str!("builtin/outcome_duplicate.txt")),
    ("outcome.html", include_str!("builtin/outcome.html")),
    ("triage_confirmation.txt", include_str!("builtin/triage_confirmation.txt")),
    ("triage_error.txt", include_str!("builtin/triage_error.txt")),
    ("reminder.txt", include_str!("builtin/reminder.txt")),
    ("summary.txt", include_str!("builtin/summary.txt")),
    ("summary.html", include_str!("builtin/summary.html")),
    ("agenda.txt", include_str!("builtin/agenda.txt")),
    ("agenda.html", include_str!("builtin/agenda.html")),
    ("agenda_update.txt", include_str!("builtin/agenda_update.txt")),
    ("agenda_update.html", include_str!("builtin/agenda_update.html")),
    ("channel_message.txt", include_str!("builtin/channel_message.txt")),
    ("channel_draft.txt", include_str!("builtin/channel_draft.txt")),
    ("more_work_nudge.txt", include_str!("builtin/more_work_nudge.txt")),
];

#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

/// The service as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub name: String,
    /// The shared mailbox address.
    pub address: String,
    pub next_meeting: Option<String>,
    pub decisions: Vec<DecisionView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecisionView {
    pub command: String,
    pub meaning: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttachmentView {
    pub name: String,
    pub content_type: String,
    pub size: String,
}

/// A request as templates see it; every value from an email is plain text here and is
/// escaped by `.html` templates.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    pub reference: String,
    pub subject: String,
    pub requester: String,
    pub requester_name: Option<String>,
    /// "Jo Bloggs <jo@icb.test>" or the bare address.
    pub requester_display: String,
    pub organisation: Option<String>,
    pub via: Option<String>,
    /// "Monday 23 November 2026, 09:12" in the service timezone.
    pub received: String,
    pub status: String,
    pub decision: Option<String>,
    pub body: String,
    pub attachments: Vec<AttachmentView>,
    pub message_count: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EarlierView {
    pub reference: String,
    pub subject: String,
    pub status: String,
    pub decision: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkView {
    pub label: String,
    pub href: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PriorityView {
    pub key: String,
    pub description: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AcknowledgementContext {
    pub service: ServiceView,
    pub request: RequestView,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForwardConfirmationContext {
    pub service: ServiceView,
    pub request: RequestView,
    /// Whether the original sender was sent an acknowledgement.
    pub acknowledged: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotificationContext {
    pub service: ServiceView,
    pub request: RequestView,
    /// "new" or "follow_up".
    pub kind: String,
    /// The text to decide on: the approach, or the follow-up's new text.
    pub text: String,
    /// Who really wrote this message ("Name <address>"): for a follow-up, not necessarily
    /// the requester.
    pub sender: String,
    /// A follow-up from someone who is not the requester, the forwarder or of the same
    /// organisation: it changed nothing and nobody was answered.
    pub stranger: bool,
    /// A forward from someone not in `[members]`: the original sender is only as the
    /// forwarder wrote it, and only the forwarder was answered.
    pub unverified: bool,
    /// Lines the gatekeeper must read, e.g. why the requester was not acknowledged.
    pub warnings: Vec<String>,
    pub token: String,
    pub links: Vec<LinkView>,
    pub probable_duplicate: Option<EarlierView>,
    pub earlier: Vec<EarlierView>,
    pub priorities: Vec<PriorityView>,
}

/// The outcome email to the requester (`outcome_<decision>.txt`).
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeContext {
    pub service: ServiceView,
    pub request: RequestView,
    pub decision: String,
    /// The reason, destination or work needed.
    pub detail: Option<String>,
    /// "Thursday 3 December 2026" for meetings.
    pub meeting_date: Option<String>,
    /// The earlier request, named only when it came from the same requester or
    /// organisation; none otherwise (the template then must not name it).
    pub duplicate_of: Option<EarlierView>,
    /// The gatekeeper's words for the requester (may be empty).
    pub message: String,
    /// The decision this one replaces, if any.
    pub previous: Option<String>,
}

/// `outcome.html`: the outcome text as paragraphs.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeHtmlContext {
    pub request: RequestView,
    pub paragraphs: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TriageConfirmationContext {
    pub service: ServiceView,
    pub request: RequestView,
    /// "decided: meeting on Thursday 3 December 2026".
    pub summary: String,
    pub actor: String,
    pub requester_told: bool,
    /// For a `meeting` decision: what the board has been told of it.
    pub board: Option<BoardView>,
}

/// What the board has been told of a request decided `meeting` (the summary's agenda
/// module works it out).
#[derive(Debug, Clone, Serialize)]
pub struct BoardView {
    /// `agenda` (the board has it on the agenda), `update` (the agenda has gone: an agenda
    /// update tells the board), `pending` (it will be on the agenda, which has not gone),
    /// `too_late` (too late for the agenda: raise it at the meeting) or `unscheduled` (the
    /// date is not an upcoming one in `[meetings] dates`: no agenda goes for it).
    pub told: String,
    /// "Thursday 3 December 2026".
    pub meeting: String,
    /// When the agenda goes, for `pending`: "on Monday 30 November 2026 at 08:00" or
    /// "shortly".
    pub agenda_goes: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TriageErrorContext {
    pub service: ServiceView,
    pub reference: Option<String>,
    pub error: String,
    pub help: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReminderItem {
    pub reference: String,
    pub subject: String,
    pub requester_display: String,
    pub organisation: Option<String>,
    /// "3 working days".
    pub waiting: String,
    pub links: Vec<LinkView>,
}

/// A message filed as an automatic reply by its wording alone, listed in the daily digest
/// in case a person wrote it.
#[derive(Debug, Clone, Serialize)]
pub struct AutoReplyItem {
    /// The sender's address ("" when it had none).
    pub from: String,
    pub subject: String,
    /// Why it was taken for an auto-reply ("subject opens \"AUTO:\"").
    pub why: String,
    /// "Monday 30 November, 09:12" in the service timezone.
    pub received: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReminderContext {
    pub service: ServiceView,
    pub requests: Vec<ReminderItem>,
    pub auto_replies: Vec<AutoReplyItem>,
    /// "in the last day", or "since Friday 27 November, 10:00" after a weekend.
    pub auto_replies_period: String,
    /// Requests decided `more-work` still waiting on their requester, longest first.
    pub waiting_on_requester: Vec<channel::WaitingItem>,
}

impl Templates {
    /// Loads the built-ins and any overrides, and proves each renders.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        let dir = config.templates_dir.as_deref();
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut syntax = minijinja::syntax::SyntaxConfig::builder();
        syntax.keep_trailing_newline(true);
        if let Ok(syntax) = syntax.build() {
            env.set_syntax(syntax);
        }
        for (name, builtin) in BUILTIN {
            let source = match dir.map(|d| d.join(name)).filter(|p| p.is_file()) {
                Some(path) => std::fs::read_to_string(&path)
                    .map_err(|e| template_error(config, name, dir, &e.to_string()))?,
                None => (*builtin).to_string(),
            };
            env.add_template_owned(*name, source)
                .map_err(|e| template_error(config, name, dir, &format!("{e:#}")))?;
        }
        let templates = Self { env };
        templates.prove(config)?;
        Ok(templates)
    }

    pub fn render(&self, name: &str, context: &impl Serialize) -> anyhow::Result<String> {
        let template = self.env.get_template(name)?;
        Ok(template.render(minijinja::value::Serde(context))?)
    }

    /// Renders every template with a complete sample, so a broken override is found now.
    fn prove(&self, config: &Config) -> Result<(), ConfigError> {
        let service = service_view(config, chrono::Utc::now().date_naive());
        let request = sample_request();
        let earlier = EarlierView {
            reference: "GP-2026-0000".into(),
            subject: "Earlier".into(),
            status: "closed".into(),
            decision: Some("decline".into()),
        };
        let checks: Vec<(&str, anyhow::Result<String>)> = vec![
            (
                "acknowledgement",
                self.render_pair(
                    "acknowledgement",
                    &AcknowledgementContext { service: service.clone(), request: request.clone() },
                ),
            ),
            (
                "forward_confirmation",
                self.render_pair(
                    "forward_confirmation",
                    &ForwardConfirmationContext {
                        service: service.clone(),
                        request: request.clone(),
                        acknowledged: true,
                    },
                ),
            ),
            (
                "notification",
                self.render_pair(
                    "notification",
                    &NotificationContext {
                        service,
                        request,
                        kind: "new".into(),
                        text: "Sample".into(),
                        sender: "Jo Bloggs <jo.bloggs@example.org>".into(),
                        stranger: true,
                        unverified: true,
                        warnings: vec!["Sample warning".into()],
                        token: "0123456789abcdef".into(),
                        links: vec![LinkView { label: "Paper".into(), href: "mailto:x@example.org".into() }],
                        probable_duplicate: Some(earlier.clone()),
                        earlier: vec![earlier],
                        priorities: vec![PriorityView {
                            key: "workforce".into(),
                            description: "Workforce".into(),
                        }],
                    },
                ),
            ),
        ];
        let mut checks = checks;
        for decision in Decision::ALL {
            let context = OutcomeContext {
                service: service_view(config, chrono::Utc::now().date_naive()),
                request: sample_request(),
                decision: decision.as_str().into(),
                detail: Some("Sample reason".into()),
                meeting_date: Some("Thursday 3 December 2026".into()),
                duplicate_of: Some(EarlierView {
                    reference: "GP-2026-0000".into(),
                    subject: "Earlier".into(),
                    status: "scheduled".into(),
                    decision: Some("meeting".into()),
                }),
                message: "Sample message".into(),
                previous: Some("paper".into()),
            };
            checks.push(("outcome", self.render(&format!("outcome_{}.txt", decision.as_str()), &context)));
            // The earlier request is not named to another requester: `duplicate_of` is none.
            if decision == Decision::Duplicate {
                let context = OutcomeContext { duplicate_of: None, ..context };
                checks.push(("outcome", self.render("outcome_duplicate.txt", &context)));
            }
        }
        checks.push((
            "outcome",
            self.render(
                "outcome.html",
                &OutcomeHtmlContext { request: sample_request(), paragraphs: vec!["Sample".into()] },
            ),
        ));
        let service = service_view(config, chrono::Utc::now().date_naive());
        checks.push((
            "triage_confirmation",
            self.render(
                "triage_confirmation.txt",
                &TriageConfirmationContext {
                    service: service.clone(),
                    request: sample_request(),
                    summary: "decided: paper".into(),
                    actor: "jane@example.org".into(),
                    requester_told: true,
                    board: Some(BoardView {
                        told: "pending".into(),
                        meeting: "Thursday 3 December 2026".into(),
                        agenda_goes: "on Monday 30 November 2026 at 08:00".into(),
                    }),
                },
            ),
        ));
        checks.push((
            "triage_error",
            self.render(
                "triage_error.txt",
                &TriageErrorContext {
                    service: service.clone(),
                    reference: Some("GP-2026-0001".into()),
                    error: "Sample".into(),
                    help: "paper".into(),
                },
            ),
        ));
        checks.push((
            "reminder",
            self.render(
                "reminder.txt",
                &ReminderContext {
                    service,
                    requests: vec![ReminderItem {
                        reference: "GP-2026-0001".into(),
                        subject: "Sample".into(),
                        requester_display: "Jo <jo@example.org>".into(),
                        organisation: Some("Anytown ICB".into()),
                        waiting: "3 working days".into(),
                        links: vec![LinkView { label: "Paper".into(), href: "mailto:x@example.org".into() }],
                    }],
                    auto_replies: vec![AutoReplyItem {
                        from: "jo@example.org".into(),
                        subject: "AUTO: Jo is out of the office".into(),
                        why: "subject opens \"AUTO:\"".into(),
                        received: "Monday 30 November, 09:12".into(),
                    }],
                    auto_replies_period: "in the last day".into(),
                    waiting_on_requester: vec![channel::sample_waiting()],
                },
            ),
        ));
        let service = service_view(config, chrono::Utc::now().date_naive());
        checks.push(("channel_message", self.render("channel_message.txt", &channel::sample_message())));
        checks.push((
            "channel_draft",
            self.render("channel_draft.txt", &channel::sample_draft(service.clone())),
        ));
        checks.push((
            "more_work_nudge",
            self.render("more_work_nudge.txt", &channel::sample_nudge(service, sample_request())),
        ));
        let summary = board::sample_context(service_view(config, chrono::Utc::now().date_naive()));
        checks.push(("summary", self.render_pair("summary", &summary)));
        let agenda = board::AgendaContext {
            service: summary.service.clone(),
            meeting: summary
                .next_meeting
                .clone()
                .unwrap_or(board::Meeting { date: String::new(), items: Vec::new() }),
        };
        checks.push(("agenda", self.render_pair("agenda", &agenda)));
        let item = agenda.meeting.items.first().cloned();
        if let Some(item) = item {
            let update = board::sample_update_context(agenda.service.clone(), item);
            checks.push(("agenda_update", self.render_pair("agenda_update", &update)));
        }
        for (name, result) in checks {
            if let Err(e) = result {
                return Err(template_error(config, name, config.templates_dir.as_deref(), &format!("{e:#}")));
            }
        }
        Ok(())
    }

    /// Renders `name.txt` and `name.html`.
    pub fn render_pair(&self, name: &str, context: &impl Serialize) -> anyhow::Result<String> {
        let text = self.render(&format!("{name}.txt"), context)?;
        self.render(&format!("{name}.html"), context)?;
        Ok(text)
    }
}

fn sample_request() -> RequestView {
    RequestView {
        reference: "GP-2026-0001".into(),
        subject: "Sample <subject> & more".into(),
        requester: "jo.bloggs@example.org".into(),
        requester_name: Some("Jo Bloggs".into()),
        requester_display: "Jo Bloggs <jo.bloggs@example.org>".into(),
        organisation: Some("Anytown ICB".into()),
        via: Some("practice@example.org".into()),
        received: "Monday 23 November 2026, 09:12".into(),
        status: "awaiting_triage".into(),
        decision: Some("meeting".into()),
        body: "Sample text".into(),
        attachments: vec![AttachmentView {
            name: "spec.pdf".into(),
            content_type: "application/pdf".into(),
            size: "12 KB".into(),
        }],
        message_count: 1,
    }
}

fn template_error(config: &Config, name: &str, dir: Option<&Path>, problem: &str) -> ConfigError {
    let origin = match dir {
        Some(d) if d.join(name).is_file() => format!("the override {}", d.join(name).display()),
        Some(d) if d.join(format!("{name}.txt")).is_file() || d.join(format!("{name}.html")).is_file() => {
            format!("an override of {name} in {}", d.display())
        }
        _ => format!("the built-in template {name}"),
    };
    ConfigError {
        file: config.path.clone(),
        key: "templates.dir".into(),
        problem: format!("{origin} does not render: {problem}"),
        fix: "correct the template (the README lists each template's variables) or delete the override to use the built-in one".into(),
    }
}

/// The service's side of every template.
pub fn service_view(config: &Config, today: chrono::NaiveDate) -> ServiceView {
    ServiceView {
        name: config.service.name.clone(),
        address: config.smtp.from.address.to_string(),
        next_meeting: config.meetings.dates.iter().find(|d| **d > today).map(|d| long_date(*d)),
        decisions: Decision::ALL
            .iter()
            .map(|d| DecisionView {
                command: d.command().to_string(),
                meaning: decision_meaning(*d).to_string(),
            })
            .collect(),
    }
}

/// What each decision means, in the words a requester reads.
pub fn decision_meaning(d: Decision) -> &'static str {
    match d {
        Decision::Meeting => "it comes to a meeting of the leadership group",
        Decision::Paper => "a paper is sent round the board instead of a meeting slot",
        Decision::Message => "a short message to the group's messaging channel is enough",
        Decision::MoreWork => "more work is needed before it can come to the group (we will say what)",
        Decision::Decline => "general practice will not take it forward (we will say why)",
        Decision::Redirect => "it belongs elsewhere (we will say where)",
        Decision::Duplicate => "it is the same as an earlier approach (we will name it)",
    }
}

/// "Thursday 3 December 2026".
pub fn long_date(d: chrono::NaiveDate) -> String {
    d.format("%A %-d %B %Y").to_string()
}

/// "12 KB", "3.4 MB".
pub fn human_size(bytes: usize) -> String {
    let b = bytes as f64;
    if b < 1024.0 * 1024.0 {
        format!("{} KB", (b / 1024.0).ceil().max(1.0))
    } else {
        format!("{:.1} MB", b / (1024.0 * 1024.0))
    }
}
