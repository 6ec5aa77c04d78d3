//! A complete sample context for every template, so [`super::Templates`] can prove each
//! one (an override's typo is a config error at start, not a failure on the first real
//! approach) and a test can see every template rendered. The dates are fixed: proving
//! needs no clock.

use serde::Serialize;

use super::context::*;
use super::service_view;
use crate::config::Config;
use crate::domain::Decision;

/// One template with the context it is proved with.
#[derive(Debug)]
pub struct Sample {
    /// The template's file name (`acknowledgement.txt`).
    pub template: String,
    /// The context, ready to render.
    pub context: minijinja::Value,
}

fn sample(template: impl Into<String>, context: &impl Serialize) -> Sample {
    Sample { template: template.into(), context: minijinja::Value::from(minijinja::value::Serde(context)) }
}

/// `name.txt` and `name.html` with one context.
fn pair(name: &str, context: &impl Serialize) -> [Sample; 2] {
    [sample(format!("{name}.txt"), context), sample(format!("{name}.html"), context)]
}

/// Every built-in template (and each outcome twice: `duplicate` also without the earlier
/// request), with a complete context.
pub fn all(config: &Config) -> Vec<Sample> {
    let service = service(config);
    let request = request();
    let mut samples = Vec::new();
    samples.extend(pair(
        "acknowledgement",
        &AcknowledgementContext { service: service.clone(), request: request.clone() },
    ));
    samples.extend(pair(
        "forward_confirmation",
        &ForwardConfirmationContext {
            service: service.clone(),
            request: request.clone(),
            acknowledged: true,
        },
    ));
    samples.extend(pair("notification", &notification(service.clone())));
    for decision in Decision::ALL {
        let context = outcome(service.clone(), decision);
        samples.push(sample(format!("outcome_{}.txt", decision.as_str()), &context));
        // The earlier request is not named to another requester: `duplicate_of` is none.
        if decision == Decision::Duplicate {
            samples.push(sample("outcome_duplicate.txt", &OutcomeContext { duplicate_of: None, ..context }));
        }
    }
    samples.extend(pair("paper_circulation", &paper_circulation(service.clone())));
    samples.push(sample(
        "outcome.html",
        &OutcomeHtmlContext { request: request.clone(), paragraphs: vec!["Sample".into()] },
    ));
    samples.push(sample(
        "triage_confirmation.txt",
        &TriageConfirmationContext {
            service: service.clone(),
            request,
            summary: "decided: paper".into(),
            actor: "jane@example.org".into(),
            requester_told: true,
            board: Some(BoardView {
                told: "pending".into(),
                meeting: "Thursday 3 December 2026".into(),
                agenda_goes: "on Monday 30 November 2026 at 08:00".into(),
            }),
        },
    ));
    samples.push(sample(
        "triage_error.txt",
        &TriageErrorContext {
            service: service.clone(),
            reference: Some("GP-2026-0001".into()),
            error: "Sample".into(),
            help: "paper".into(),
        },
    ));
    samples.push(sample("reminder.txt", &reminder(service.clone())));
    samples.push(sample("channel_message.txt", &channel_message()));
    samples.push(sample("channel_draft.txt", &channel_draft(service.clone())));
    samples.push(sample("more_work_nudge.txt", &more_work_nudge(service.clone(), self::request())));
    let summary = summary(service.clone());
    samples.extend(pair("summary", &summary));
    let meeting = summary.next_meeting.clone().unwrap_or(Meeting { date: String::new(), items: Vec::new() });
    let item = meeting.items.first().cloned().unwrap_or_else(item);
    samples.extend(pair("agenda", &AgendaContext { service: service.clone(), meeting }));
    samples.extend(pair("agenda_update", &agenda_update(service, item)));
    samples.extend(alerts());
    samples
}

/// The service, with a next meeting whatever the config's dates.
pub fn service(config: &Config) -> ServiceView {
    let mut service = service_view(config, chrono::NaiveDate::MIN);
    service.next_meeting.get_or_insert_with(|| "Thursday 3 December 2026".into());
    service
}

/// A request with every field set (and markup in its subject, for the `.html` escaping).
pub fn request() -> RequestView {
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

fn earlier() -> EarlierView {
    EarlierView {
        reference: "GP-2026-0000".into(),
        subject: "Earlier".into(),
        status: "closed".into(),
        decision: Some("decline".into()),
    }
}

fn notification(service: ServiceView) -> NotificationContext {
    NotificationContext {
        service,
        request: request(),
        kind: "new".into(),
        text: "Sample".into(),
        sender: "Jo Bloggs <jo.bloggs@example.org>".into(),
        stranger: true,
        unverified: true,
        warnings: vec!["Sample warning".into()],
        token: "0123456789abcdef".into(),
        links: vec![LinkView { label: "Paper".into(), href: "mailto:x@example.org".into() }],
        probable_duplicate: Some(earlier()),
        earlier: vec![earlier()],
        priorities: vec![PriorityView { key: "workforce".into(), description: "Workforce".into() }],
        paper: true,
    }
}

/// `circulate`'s email to the board.
fn paper_circulation(service: ServiceView) -> PaperCirculationContext {
    let file = AttachmentView {
        name: "paper.pdf".into(),
        content_type: "application/pdf".into(),
        size: "120 KB".into(),
    };
    PaperCirculationContext {
        service,
        reference: "GP-2026-0042".into(),
        subject: "Phlebotomy".into(),
        requester: "Jo Bloggs <jo.bloggs@example.org>".into(),
        organisation: Some("Anytown ICB".into()),
        received: "Monday 23 November 2026, 09:12".into(),
        message: "Sample message".into(),
        attached: vec![file.clone()],
        listed: vec![file],
    }
}

fn outcome(service: ServiceView, decision: Decision) -> OutcomeContext {
    OutcomeContext {
        service,
        request: request(),
        decision: decision.as_str().into(),
        detail: Some("Sample reason".into()),
        meeting_date: Some("Thursday 3 December 2026".into()),
        meeting_time: Some("13:00 to 14:30".into()),
        meeting_place: Some("Room 2".into()),
        duplicate_of: Some(EarlierView {
            reference: "GP-2026-0000".into(),
            subject: "Earlier".into(),
            status: "scheduled".into(),
            decision: Some("meeting".into()),
        }),
        message: "Sample message".into(),
        previous: Some("paper".into()),
        paper_by: Some(
            "Thursday 24 December 2026, a week before the board meets on Thursday 31 December 2026".into(),
        ),
    }
}

fn reminder(service: ServiceView) -> ReminderContext {
    ReminderContext {
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
        waiting_on_requester: vec![waiting()],
    }
}

fn item() -> Item {
    Item {
        reference: "GP-2026-0001".into(),
        subject: "Sample <subject>".into(),
        requester: "Jo Bloggs <jo@example.org>".into(),
        organisation: "Anytown ICB".into(),
        received: "Mon 16 Nov 09:12".into(),
        decision: Some("paper".into()),
        detail: Some("Sample detail".into()),
        priorities: vec!["workforce".into()],
        waiting: "3 days".into(),
        notes: vec!["Sample note".into()],
        doors: Some("Came via 2 doors: Anytown Surgery, Riverside PCN".into()),
        papers: vec![Paper {
            name: "GP-2026-0001 costings.xlsx".into(),
            size: "24 KB".into(),
            attached: false,
        }],
    }
}

/// The weekly summary.
pub fn summary(service: ServiceView) -> SummaryContext {
    let item = item();
    let group = Group { name: "Anytown ICB".into(), count: 1, items: vec![item.clone()] };
    SummaryContext {
        service,
        period: "Monday 16 November 2026 to Sunday 22 November 2026".into(),
        new_count: 1,
        decided_count: 1,
        awaiting_count: 1,
        waiting_on_requester_count: 1,
        new_by_organisation: vec![group.clone()],
        decisions: vec![group],
        awaiting: vec![item.clone()],
        awaiting_more: 1,
        waiting_on_requester: vec![item.clone()],
        waiting_on_requester_more: 1,
        next_meeting: Some(Meeting { date: "Thursday 3 December 2026".into(), items: vec![item.clone()] }),
        papers: vec![item.clone()],
        papers_circulated: 1,
        papers_awaited: 1,
        messages: vec![item.clone()],
        duplicates: vec![Duplicate {
            item,
            of_reference: "GP-2026-0000".into(),
            how: "probably the same as".into(),
        }],
        priorities: vec![PriorityCount {
            key: "workforce".into(),
            description: "Workforce".into(),
            count: 1,
        }],
        no_priority: 0,
        median_to_decision: Some("1 day 4 hours".into()),
        trend: vec![TrendBar { label: "16 Nov".into(), count: 1, percent: 100, bar: "#".repeat(20) }],
    }
}

/// An agenda update.
pub fn agenda_update(service: ServiceView, item: Item) -> AgendaUpdateContext {
    AgendaUpdateContext {
        service,
        meeting: Meeting { date: "Thursday 3 December 2026".into(), items: vec![item.clone()] },
        added: vec![item.clone()],
        removed: vec![Removed { item, now: "moved to the meeting on Thursday 7 January 2027".into() }],
    }
}

/// The operator's alerts.
fn alerts() -> Vec<Sample> {
    let disk = DiskAlert {
        dir: "/var/lib/gatehouse".into(),
        available: "120 MiB".into(),
        total: "20480 MiB".into(),
        mailbox: "gp-access@example.org".into(),
    };
    vec![
        sample(
            "alert_smtp_login.txt",
            &SmtpLoginAlert {
                host: "smtp.example.org".into(),
                port: 587,
                user: "gp-access@example.org".into(),
                error: "535 5.7.3 Authentication unsuccessful".into(),
                fix: "check the SMTP username and password".into(),
            },
        ),
        sample(
            "alert_outbox_failing.txt",
            &OutboxFailingAlert {
                attempts: 3,
                host: "smtp.example.org".into(),
                port: 587,
                error: "connection refused".into(),
            },
        ),
        sample(
            "delivery_failure.txt",
            &DeliveryFailureAlert {
                to: "jo@example.org".into(),
                subject: "Re: [GP-2026-0001] Sample".into(),
                what: "acknowledgement".into(),
                error: "550 5.1.1 No such user".into(),
            },
        ),
        sample(
            "alert_secret_expiry.txt",
            &SecretExpiryAlert {
                what:
                    "The OAuth2 client secret of app app-1 ([imap.oauth2]) expires on 2026-12-31 (in 14 days)"
                        .into(),
                mailbox: "gp-access@example.org".into(),
                client_id: "app-1".into(),
                section: "imap.oauth2".into(),
            },
        ),
        sample("alert_disk_low.txt", &disk),
        sample("alert_disk_full.txt", &disk),
        sample(
            "alert_imap_login.txt",
            &ImapLoginAlert {
                mailbox: "gp-access@example.org".into(),
                host: "imap.example.org".into(),
                port: 993,
                error: "NO [AUTHENTICATIONFAILED] Invalid credentials".into(),
                fix: "Please check the mailbox password.".into(),
            },
        ),
        sample(
            "alert_quarantined.txt",
            &QuarantinedAlert {
                id: "42".into(),
                from: "Jo Bloggs <jo@example.org>".into(),
                subject: "Sample".into(),
                why: "processing failed 3 times".into(),
            },
        ),
        sample("alert_quarantined_more.txt", &QuarantinedMoreAlert { per_day: 5 }),
        sample(
            "alert_unlogged.txt",
            &UnloggedAlert {
                why: "it is not an email gatehouse can read".into(),
                id: "42".into(),
                from: "jo@example.org".into(),
                subject: "Sample".into(),
                advice: "log it by forwarding it to the shared mailbox".into(),
            },
        ),
        sample("alert_repeated.txt", &RepeatedAlert { first_reported: "2026-11-30 09:12 GMT".into() }),
        sample(
            "alert_resolved.txt",
            &ResolvedAlert {
                subject: "gatehouse cannot send email".into(),
                first_reported: "2026-11-30 09:12 GMT".into(),
                cleared: "2026-11-30 10:40 GMT".into(),
            },
        ),
    ]
}

fn channel_message() -> ChannelMessageContext {
    ChannelMessageContext {
        reference: "GP-2026-0001".into(),
        who: "Jo Bloggs, Anytown ICB".into(),
        what: "Sample subject".into(),
        by_when: Some("Friday 18 December 2026".into()),
        message: Some("Sample message".into()),
    }
}

fn channel_draft(service: ServiceView) -> ChannelDraftContext {
    ChannelDraftContext {
        service,
        reference: "GP-2026-0001".into(),
        text: "GP-2026-0001: Jo Bloggs, Anytown ICB asks: Sample".into(),
        posted: true,
    }
}

fn more_work_nudge(service: ServiceView, request: RequestView) -> NudgeContext {
    NudgeContext {
        service,
        request,
        detail: Some("Sample work".into()),
        asked_on: "Monday 30 November 2026".into(),
    }
}

fn waiting() -> WaitingItem {
    WaitingItem {
        reference: "GP-2026-0002".into(),
        subject: "Sample".into(),
        requester_display: "Jo <jo@example.org>".into(),
        organisation: Some("Anytown ICB".into()),
        waiting: "6 working days".into(),
        nudged: true,
    }
}
