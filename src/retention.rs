//! How long personal data is kept (`[retention]`), and the daily job that applies it.
//!
//! UK GDPR's storage limitation: the raw bytes of incoming mail, the bytes of sent mail and
//! a closed request's personal data each go after their own period. What may go, and what
//! never may (anything still needed), is decided in the store, in one place shared by the
//! preview and the purge (`store::sqlite::retention`); this module says when.

use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Months, Utc};

use crate::clock::Clock;
use crate::config::{Config, RetentionSettings};
use crate::store::retention::{Cutoffs, PurgeCounts, Reclaimed};
use crate::store::{Actor, SharedStore};

/// The actor the daemon's daily purge is recorded as.
pub const DAILY_ACTOR: Actor = Actor::Retention;

/// Where the local date of the last daily purge is kept.
const LAST_RUN_KEY: &str = "retention_last_run";

/// The instants before which each kind goes, at `now`.
pub fn cutoffs(settings: &RetentionSettings, now: DateTime<Utc>) -> Cutoffs {
    let days = |n: u32| now - chrono::Duration::days(i64::from(n));
    Cutoffs {
        raw_messages: days(settings.raw_messages_days),
        sent_mail: days(settings.sent_mail_days),
        // Calendar months: a request closed on 31 March goes on the last day of the month
        // 24 months on, whatever the lengths of the months between.
        closed_requests: now.checked_sub_months(Months::new(settings.closed_requests_months)).unwrap_or(now),
    }
}

/// The person at the keyboard, for the event log: `operator (USER)`.
pub fn operator_actor() -> Actor {
    match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        Ok(user) if !user.trim().is_empty() => Actor::Operator(Some(user.trim().to_string())),
        _ => Actor::Operator(None),
    }
}

/// What a purge did.
#[derive(Debug, Clone, Copy)]
pub struct Purged {
    pub counts: PurgeCounts,
    pub reclaimed: Reclaimed,
}

/// Applies `[retention]` to the store.
#[derive(Debug, Clone)]
pub struct Retention {
    config: Arc<Config>,
    store: SharedStore,
    clock: Arc<dyn Clock>,
}

impl Retention {
    pub fn new(config: Arc<Config>, store: SharedStore, clock: Arc<dyn Clock>) -> Self {
        Self { config, store, clock }
    }

    /// What a purge now would take.
    pub async fn preview(&self) -> anyhow::Result<PurgeCounts> {
        Ok(self.store.purge_preview(cutoffs(&self.config.retention, self.clock.now())).await?)
    }

    /// Purges now, recorded as `actor`, and gives the space back when a lot went.
    pub async fn purge(&self, actor: Actor) -> anyhow::Result<Purged> {
        let now = self.clock.now();
        let counts = self
            .store
            .purge(cutoffs(&self.config.retention, now), actor, now)
            .await
            .context("Cannot apply the retention periods")?;
        let reclaimed = if counts.is_empty() {
            Reclaimed { how: "none", ..Reclaimed::default() }
        } else {
            self.store.reclaim_space().await.context("Cannot give the purged space back")?
        };
        Ok(Purged { counts, reclaimed })
    }

    /// The daemon's job: purges once per local day (the first call on a new day, so a
    /// daemon that was down catches up at start). None when today's purge already ran.
    pub async fn run_daily(&self) -> anyhow::Result<Option<Purged>> {
        let today = self.clock.now().with_timezone(&self.config.service.timezone).date_naive().to_string();
        if self.store.get_meta(LAST_RUN_KEY).await?.as_deref() == Some(today.as_str()) {
            return Ok(None);
        }
        let purged = self.purge(DAILY_ACTOR).await?;
        // After the purge: a crash in between purges twice, which takes nothing more.
        let mut tx = self.store.begin().await?;
        tx.set_meta(LAST_RUN_KEY, &today).await?;
        tx.commit().await?;
        Ok(Some(purged))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn periods_count_back_from_now_in_days_and_calendar_months() {
        let now = Utc.with_ymd_and_hms(2027, 3, 31, 12, 0, 0).unwrap();
        let c = cutoffs(
            &RetentionSettings { raw_messages_days: 365, sent_mail_days: 30, closed_requests_months: 25 },
            now,
        );
        assert_eq!(c.raw_messages, Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap());
        assert_eq!(c.sent_mail, Utc.with_ymd_and_hms(2027, 3, 1, 12, 0, 0).unwrap());
        // February 2025 has 28 days: the last day of that month.
        assert_eq!(c.closed_requests, Utc.with_ymd_and_hms(2025, 2, 28, 12, 0, 0).unwrap());
    }
}
