//! The emails' words: built-in minijinja templates, each overridable by a file of the same
//! name in `[templates].dir`.
//!
//! Every template is compiled and test-rendered with a complete sample at start-up, with
//! undefined variables as errors, so a typo in an operator's override stops the daemon with
//! a config error instead of failing on the first real approach. `.html` templates escape
//! everything that came from an email.

pub mod context;
pub mod samples;

pub use context::*;

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
    ("paper_circulation.txt", include_str!("builtin/paper_circulation.txt")),
    ("paper_circulation.html", include_str!("builtin/paper_circulation.html")),
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
    ("alert_smtp_login.txt", include_str!("builtin/alert_smtp_login.txt")),
    ("alert_outbox_failing.txt", include_str!("builtin/alert_outbox_failing.txt")),
    ("delivery_failure.txt", include_str!("builtin/delivery_failure.txt")),
    ("alert_secret_expiry.txt", include_str!("builtin/alert_secret_expiry.txt")),
    ("alert_disk_low.txt", include_str!("builtin/alert_disk_low.txt")),
    ("alert_disk_full.txt", include_str!("builtin/alert_disk_full.txt")),
    ("alert_resolved.txt", include_str!("builtin/alert_resolved.txt")),
    ("alert_imap_login.txt", include_str!("builtin/alert_imap_login.txt")),
    ("alert_quarantined.txt", include_str!("builtin/alert_quarantined.txt")),
    ("alert_quarantined_more.txt", include_str!("builtin/alert_quarantined_more.txt")),
    ("alert_unlogged.txt", include_str!("builtin/alert_unlogged.txt")),
    ("alert_repeated.txt", include_str!("builtin/alert_repeated.txt")),
];

#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
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

    /// Renders every template with its complete sample ([`samples::all`]), so a broken
    /// override is found now.
    fn prove(&self, config: &Config) -> Result<(), ConfigError> {
        for s in samples::all(config) {
            if let Err(e) = self.render(&s.template, &s.context) {
                let dir = config.templates_dir.as_deref();
                return Err(template_error(config, &s.template, dir, &format!("{e:#}")));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(crate::config::tests::VALID, Path::new("/etc/gatehouse/gatehouse.toml")).unwrap()
    }

    #[test]
    fn every_template_is_proved_with_a_sample() {
        let samples = samples::all(&config());
        for (name, _) in BUILTIN {
            assert!(samples.iter().any(|s| s.template == *name), "{name} has no sample");
        }
        for s in &samples {
            assert!(BUILTIN.iter().any(|(name, _)| s.template == *name), "{} is not a template", s.template);
        }
    }

    #[test]
    fn alerts_render_the_words_they_always_had() {
        let templates = Templates::load(&config()).unwrap();
        let text = templates
            .render(
                "alert_resolved.txt",
                &ResolvedAlert { subject: "S".into(), first_reported: "A".into(), cleared: "B".into() },
            )
            .unwrap();
        assert_eq!(
            text,
            "This problem has cleared; nothing more needs doing:\n\n  S\n\nFirst reported: A\nCleared:        B\n"
        );
        let disk = DiskAlert {
            dir: "/d".into(),
            available: "1.0 MiB".into(),
            total: "9.0 MiB".into(),
            mailbox: "m@x.org".into(),
        };
        let text = templates.render("alert_disk_full.txt", &disk).unwrap();
        assert_eq!(
            text,
            "The disk holding /d is full (1.0 MiB of 9.0 MiB free). gatehouse has paused taking approaches from the shared mailbox m@x.org; they wait there and nothing is lost. It resumes by itself within seconds once space is freed.\n\nPlease free space on that disk or give it more. `gatehouse status` shows the state; an email follows when intake resumes.\n"
        );
        let text = templates
            .render(
                "alert_outbox_failing.txt",
                &OutboxFailingAlert { attempts: 3, host: "h".into(), port: 587, error: "e <x> & y".into() },
            )
            .unwrap();
        assert!(text.starts_with("gatehouse has tried 3 times"), "{text}");
        assert!(
            text.contains("Server:  h:587\nLast error: e <x> & y\n\n"),
            "plain text is not escaped: {text}"
        );
    }

    #[test]
    fn alerts_once_written_in_code_keep_their_words() {
        let templates = Templates::load(&config()).unwrap();
        fn rendered(templates: &Templates, name: &str, context: &impl Serialize) -> String {
            templates.render(name, context).unwrap()
        }
        // The words each alert had when it was a format! in the code, with the same values.
        let (id, from, subject, why, error) = ("7", "Jo <jo@x.org>", "Hi <b>", "it failed & stopped", "NO x");
        let check = "Please check the mailbox password.";
        assert_eq!(
            rendered(
                &templates,
                "alert_imap_login.txt",
                &ImapLoginAlert {
                    mailbox: "gp@x.org".into(),
                    host: "imap.x.org".into(),
                    port: 993,
                    error: error.into(),
                    fix: check.into(),
                }
            ),
            format!(
                "gatehouse could not log in to the shared mailbox, so new approaches are not being logged or answered.\n\nMailbox: {} on {}:{}\nError:   {error}\n\n{check}\n\nPlease fix it and run `gatehouse check`. gatehouse keeps trying and will pick up everything that arrived in the meantime; an email follows when it can log in again.\n",
                "gp@x.org", "imap.x.org", 993
            )
        );
        let alert =
            QuarantinedAlert { id: id.into(), from: from.into(), subject: subject.into(), why: why.into() };
        assert_eq!(
            rendered(&templates, "alert_quarantined.txt", &alert),
            format!(
                "gatehouse could not process a message that arrived in the shared mailbox, so it has set it aside (quarantined) and gone on with the mail after it. It has not been logged as a request, and its sender has not been answered.\n\nStored message: {id}\nFrom:    {from}\nSubject: {subject}\nWhy:     {why}\n\nIts exact bytes are kept in gatehouse's database, and it is still in the shared mailbox. Please read it there and, if it is an approach, log it by forwarding it to the shared mailbox.\n\nTo have gatehouse try it again (after an upgrade, say), whoever looks after gatehouse can run:\n\n    gatehouse messages retry {id}\n"
            )
        );
        let per_day = 5;
        assert_eq!(
            rendered(&templates, "alert_quarantined_more.txt", &QuarantinedMoreAlert { per_day }),
            format!(
                "gatehouse has set aside (quarantined) more than {per_day} messages in a day, so it no longer sends an alert for each: a flood of mail it cannot process may be deliberate. None of them has been logged as a request or answered, and they are still in the shared mailbox.\n\nWhoever looks after gatehouse can list them all with:\n\n    gatehouse messages list --format json\n\n(classification \"quarantined\"), and try one again with `gatehouse messages retry ID`. Messages set aside after this are not alerted one by one until a day has passed.\n"
            )
        );
        let advice = "log it by forwarding it to the shared mailbox";
        let alert = UnloggedAlert {
            why: why.into(),
            id: id.into(),
            from: from.into(),
            subject: subject.into(),
            advice: advice.into(),
        };
        assert_eq!(
            rendered(&templates, "alert_unlogged.txt", &alert),
            format!(
                "A message arrived in the shared mailbox that gatehouse did not log as a request: {why}.\n\nStored message: {id}\nFrom:    {from}\nSubject: {subject}\n\nNobody has been answered. It is still in the shared mailbox. Please read it there and, if it is an approach, {advice}.\n"
            )
        );
        let first = "2026-11-30 09:12 GMT";
        assert_eq!(
            rendered(&templates, "alert_repeated.txt", &RepeatedAlert { first_reported: first.into() }),
            format!(
                "\nThis problem was first reported at {first} and has not cleared. This reminder comes once a day until it does.\n"
            )
        );
    }
}
