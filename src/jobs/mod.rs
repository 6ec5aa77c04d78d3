//! Time-driven work, in one shape: every schedule the daemon keeps is a [`Job`] — the weekly
//! summary, the meetings' agendas, the gatekeepers' daily reminder, the more-work reminder
//! to a silent requester ([`crate::triage::nudge`]), the warning before an
//! OAuth2 client secret lapses ([`secret_expiry`]) and the daily retention run. The daemon
//! starts each from [`schedules`] with [`run_every_minute`]; each works out for itself
//! whether it is due, and keeps what it did in the database, so a missed minute (or a day
//! the daemon was down) is simply caught up and nothing goes twice. The CLI's `check` reads
//! the same secret-expiry rule.
//!
//! A job may use the config, the store, the mailings and the outbox; nothing in the
//! pipeline imports a job.

pub mod secret_expiry;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::mailings::alerts::Alerts;
use crate::retention::Retention;
use crate::store::SharedStore;
use crate::summary::agenda::AgendaMail;
use crate::summary::{Sent, Summaries};
use crate::templates::Templates;
use crate::triage::nudge::Nudges;
use crate::triage::reminders::Reminders;

/// How often each job is asked whether it is due.
const EVERY: Duration = Duration::from_secs(60);

/// One schedule: asked once a minute, it does whatever is due.
#[async_trait::async_trait]
pub trait Job: Send + Sync {
    /// Does what is due now (often nothing) and says what it did, a line for the log each.
    /// A failure is logged and the job asked again next minute: one bad week must not stop
    /// the daemon.
    async fn run_due(&self) -> anyhow::Result<Vec<String>>;
}

/// Every schedule the daemon keeps, for this config.
pub fn schedules(
    config: &Arc<Config>,
    store: &SharedStore,
    clock: &Arc<dyn Clock>,
    templates: &Arc<Templates>,
    alerts: &Arc<Alerts>,
) -> Vec<Box<dyn Job>> {
    let summaries = Summaries::new(config.clone(), store.clone(), clock.clone(), templates.clone());
    let mut jobs: Vec<Box<dyn Job>> = vec![
        Box::new(WeeklySummary(summaries.clone())),
        Box::new(Agendas(summaries)),
        Box::new(Reminders::new(config.clone(), store.clone(), clock.clone(), templates.clone())),
        Box::new(Nudges::new(config.clone(), store.clone(), clock.clone(), templates.clone())),
        Box::new(Retention::new(config.clone(), store.clone(), clock.clone())),
    ];
    if !config.oauth_sections().is_empty() {
        jobs.push(Box::new(secret_expiry::SecretExpiry::new(config.clone(), alerts.clone(), clock.clone())));
    }
    jobs
}

/// Runs `job` once a minute (and once at start) until shutdown.
pub async fn run_every_minute(job: Box<dyn Job>, shutdown: CancellationToken) {
    loop {
        match job.run_due().await {
            Ok(done) => done.iter().for_each(|line| tracing::info!("{line}")),
            Err(e) => tracing::error!("{e:#}"),
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// The board's weekly summary.
struct WeeklySummary(Summaries);

#[async_trait::async_trait]
impl Job for WeeklySummary {
    async fn run_due(&self) -> anyhow::Result<Vec<String>> {
        Ok(match self.0.run_schedule().await.context("Cannot send the weekly summary")? {
            Some(Sent::Sent { period, .. }) => {
                vec![format!("Weekly summary for the week of {period} sent to the board")]
            }
            _ => Vec::new(),
        })
    }
}

/// Each meeting's agenda, and the updates after it.
struct Agendas(Summaries);

#[async_trait::async_trait]
impl Job for Agendas {
    async fn run_due(&self) -> anyhow::Result<Vec<String>> {
        let sent = self.0.run_agendas().await.context("Cannot send a meeting agenda")?;
        Ok(sent
            .into_iter()
            .map(|m| match m {
                AgendaMail::Agenda(d) => format!("Agenda for the meeting on {d} sent to the board"),
                AgendaMail::Update(d) => format!("Agenda update for the meeting on {d} sent to the board"),
            })
            .collect())
    }
}

/// The gatekeepers' daily reminder.
#[async_trait::async_trait]
impl Job for Reminders {
    async fn run_due(&self) -> anyhow::Result<Vec<String>> {
        Ok(match self.run_once().await.context("Cannot send the daily reminder")? {
            0 => Vec::new(),
            n => vec![format!("Sent the gatekeepers' daily digest ({n} item(s))")],
        })
    }
}

/// The one more-work reminder to each requester who has not replied.
#[async_trait::async_trait]
impl Job for Nudges {
    async fn run_due(&self) -> anyhow::Result<Vec<String>> {
        Ok(match self.run_once().await.context("Cannot send the more-work reminders")? {
            0 => Vec::new(),
            n => vec![format!("Reminded {n} requester(s) of the more work asked of them")],
        })
    }
}

/// The retention periods, applied once a day.
#[async_trait::async_trait]
impl Job for Retention {
    async fn run_due(&self) -> anyhow::Result<Vec<String>> {
        Ok(match self.run_daily().await.context("Cannot apply the retention periods")? {
            Some(p) if !p.counts.is_empty() => vec![format!(
                "Retention: removed the bytes of {} message(s) and {} sent email(s), {} answer record(s), anonymised {} closed request(s); database {} -> {} bytes ({})",
                p.counts.raw_messages.count,
                p.counts.sent_mail.count,
                p.counts.answer_records.count,
                p.counts.closed_requests.count,
                p.reclaimed.bytes_before,
                p.reclaimed.bytes_after,
                p.reclaimed.how
            )],
            _ => Vec::new(),
        })
    }
}
