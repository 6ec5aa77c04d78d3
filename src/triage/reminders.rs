//! The daily reminder: once a working day, after `reminder_hour`, the gatekeepers get one
//! digest of every request that has waited for a decision longer than
//! `remind_after_working_days` working days (Monday to Friday), oldest first, and of the
//! mail filed since the last digest as automatic replies by its wording alone (no header
//! said so), so that a person's message misread as one is still seen. The digest goes when
//! either list has something in it; the second list goes even with reminders turned off.
//!
//! Time comes from a [`Clock`], so tests move it across a weekend without sleeping.

use std::sync::Arc;

use chrono::{DateTime, Datelike as _, Duration, NaiveDate, TimeZone as _, Timelike as _, Utc, Weekday};
use chrono_tz::Tz;

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::{Decision, Status};
use crate::mailings::{Composer, Draft, requester_display};
use crate::store::{Actor, EventKind, RequestId, SharedStore};
use crate::templates::WaitingItem;
use crate::templates::{AutoReplyItem, ReminderContext, ReminderItem, Templates, service_view};

fn is_working_day(d: NaiveDate) -> bool {
    !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

/// Working time elapsed between `from` and `to` in `tz`: weekends do not count.
pub fn working_time_between(from: DateTime<Utc>, to: DateTime<Utc>, tz: Tz) -> Duration {
    if to <= from {
        return Duration::zero();
    }
    let mut total = Duration::zero();
    let mut cursor = from.with_timezone(&tz);
    let end = to.with_timezone(&tz);
    while cursor < end {
        let day = cursor.date_naive();
        let next_midnight = day
            .succ_opt()
            .and_then(|d| tz.from_local_datetime(&d.and_hms_opt(0, 0, 0)?).earliest())
            .unwrap_or(end);
        let slice_end = next_midnight.min(end);
        if is_working_day(day) {
            total += slice_end - cursor;
        }
        cursor = slice_end;
    }
    total
}

/// Whether a request received at `received` is overdue at `now`.
pub fn is_overdue(received: DateTime<Utc>, now: DateTime<Utc>, working_days: u32, tz: Tz) -> bool {
    working_time_between(received, now, tz) >= Duration::days(i64::from(working_days))
}

#[derive(Debug, Clone)]
pub struct Reminders {
    config: Arc<Config>,
    store: SharedStore,
    clock: Arc<dyn Clock>,
    templates: Arc<Templates>,
    composer: Composer,
}

impl Reminders {
    pub fn new(
        config: Arc<Config>,
        store: SharedStore,
        clock: Arc<dyn Clock>,
        templates: Arc<Templates>,
    ) -> Self {
        let composer = Composer::new(config.clone());
        Self { config, store, clock, templates, composer }
    }

    /// Sends today's digest if it is due and not sent yet. Returns how many requests and
    /// auto-replies it named (0 when nothing was sent).
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let days = self.config.triage.remind_after_working_days;
        let now = self.clock.now();
        let tz = self.config.service.timezone;
        let local = now.with_timezone(&tz);
        if !is_working_day(local.date_naive()) || local.hour() < self.config.triage.reminder_hour {
            return Ok(0);
        }
        let period = local.date_naive().format("%Y-%m-%d").to_string();
        if self.store.summary_sent("reminder", &period).await? {
            return Ok(0);
        }
        let overdue: Vec<_> = if days == 0 {
            Vec::new()
        } else {
            self.store
                .awaiting_triage()
                .await?
                .into_iter()
                // The backlog found at first start was deliberately not acted on.
                .filter(|r| r.answer && is_overdue(r.received_at, now, days, tz))
                .collect()
        };
        let since = auto_replies_since(self.store.last_covered("reminder").await?, now, tz);
        let auto_replies: Vec<AutoReplyItem> = self
            .store
            .auto_replies_by_wording(since, now)
            .await?
            .into_iter()
            .map(|m| AutoReplyItem {
                from: m.from.unwrap_or_default(),
                subject: m.subject.unwrap_or_default(),
                why: m
                    .detail
                    .as_deref()
                    .map(|d| d.strip_prefix(crate::classify::BY_WORDING).unwrap_or(d).to_string())
                    .unwrap_or_default(),
                received: m
                    .received_at
                    .map(|t| t.with_timezone(&tz).format("%A %-d %B, %H:%M").to_string())
                    .unwrap_or_default(),
            })
            .collect();
        let waiting_on_requester = self.waiting_on_requester(now).await?;
        // A request is "still out" for the digest once its requester has had the nudge.
        let still_out = waiting_on_requester.iter().filter(|w| w.nudged).count();
        if overdue.is_empty() && auto_replies.is_empty() && still_out == 0 {
            return Ok(0);
        }
        let items = overdue
            .iter()
            .map(|r| {
                let waited = working_time_between(r.received_at, now, tz).num_days();
                ReminderItem {
                    reference: r.reference.clone(),
                    subject: r.subject.clone(),
                    requester_display: requester_display(r.requester_name.as_deref(), &r.requester),
                    organisation: r.organisation.clone(),
                    waiting: format!("{waited} working day{}", if waited == 1 { "" } else { "s" }),
                    links: super::links::decision_links(
                        &self.config,
                        &r.token,
                        &format!("Re: [{}] {}", r.reference, r.subject),
                    ),
                }
            })
            .collect::<Vec<_>>();
        let count = items.len();
        let filed = auto_replies.len();
        let auto_replies_period = if now - since <= Duration::hours(26) {
            "in the last day".to_string()
        } else {
            format!("since {}", since.with_timezone(&tz).format("%A %-d %B, %H:%M"))
        };
        let context = ReminderContext {
            service: service_view(&self.config, local.date_naive()),
            requests: items,
            auto_replies,
            auto_replies_period,
            waiting_on_requester,
        };
        let waiting =
            format!("{count} approach{} waiting for your decision", if count == 1 { "" } else { "es" });
        let filed_text =
            format!("{filed} message{} filed as automatic replies", if filed == 1 { "" } else { "s" });
        let subject = match (count, filed) {
            (0, 0) => format!(
                "{still_out} approach{} still waiting on the requester",
                if still_out == 1 { "" } else { "es" }
            ),
            (_, 0) => waiting,
            (0, _) => filed_text,
            _ => format!("{waiting}; {filed_text}"),
        };
        let text = self.templates.render("reminder.txt", &context)?;
        let mail =
            self.composer.compose(&Draft::to_all("reminder", &self.config.gatekeepers, subject, text))?;
        let mut tx = self.store.begin().await?;
        let outbox_id = tx.enqueue(&mail, now).await?;
        // Recorded in the same transaction: once per day even across restarts.
        if !tx.record_summary("reminder", &period, (now, now), Some(outbox_id), now).await? {
            return Ok(0);
        }
        for r in &overdue {
            tx.add_event(
                r.id,
                now,
                Actor::Gatehouse,
                EventKind::Reminder,
                Some("In the gatekeepers' daily reminder"),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(count + filed + still_out)
    }

    /// Requests decided `more-work` still waiting on their requester, longest first, with
    /// the working days since the decision and whether the nudge went.
    async fn waiting_on_requester(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<WaitingItem>> {
        let tz = self.config.service.timezone;
        let (mut rows, _) = self.store.with_status(Status::WaitingOnRequester, WAITING_LISTED).await?;
        rows.retain(|r| r.answer && r.decision == Some(Decision::MoreWork) && r.decided_at.is_some());
        rows.sort_by_key(|r| r.decided_at);
        let ids: Vec<RequestId> = rows.iter().map(|r| r.id).collect();
        let nudged: Vec<RequestId> = self
            .store
            .events_of_kind(&ids, EventKind::MoreWorkNudge)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        Ok(rows
            .iter()
            .map(|r| {
                let days = r.decided_at.map_or(0, |at| working_time_between(at, now, tz).num_days());
                WaitingItem {
                    reference: r.reference.clone(),
                    subject: r.subject.clone(),
                    requester_display: requester_display(r.requester_name.as_deref(), &r.requester),
                    organisation: r.organisation.clone(),
                    waiting: format!("{days} working day{}", if days == 1 { "" } else { "s" }),
                    nudged: nudged.contains(&r.id),
                }
            })
            .collect())
    }
}

/// The most requests waiting on their requester the digest lists.
const WAITING_LISTED: i64 = 200;

/// How far back the digest's auto-replies go: to the last digest (everything filed since
/// then is listed once, across weekends and days without a digest), at most a week; with no
/// digest yet, one working day.
fn auto_replies_since(last: Option<DateTime<Utc>>, now: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    if let Some(last) = last {
        return last.max(now - Duration::days(7)).min(now);
    }
    let mut since = now - Duration::days(1);
    while !is_working_day(since.with_timezone(&tz).date_naive()) {
        since -= Duration::days(1);
    }
    since
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::London;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        London.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn weekends_do_not_count() {
        // Thursday 26 November 2026, 10:00.
        let thu = at(2026, 11, 26, 10);
        assert!(!is_overdue(thu, at(2026, 11, 27, 10), 2, London)); // Fri: one day
        assert!(!is_overdue(thu, at(2026, 11, 29, 23), 2, London)); // Sun night: still one day and 14 h
        assert!(!is_overdue(thu, at(2026, 11, 30, 9), 2, London)); // Mon 09:00: 1 d 23 h
        assert!(is_overdue(thu, at(2026, 11, 30, 10), 2, London)); // Mon 10:00: two working days
        // Received on a Saturday: the clock starts on Monday.
        let sat = at(2026, 11, 28, 12);
        assert!(!is_overdue(sat, at(2026, 12, 1, 23), 2, London));
        assert!(is_overdue(sat, at(2026, 12, 2, 0), 2, London));
    }

    #[test]
    fn auto_replies_are_listed_since_the_last_digest_or_over_a_weekend() {
        let monday = at(2026, 11, 30, 10);
        // First digest on a Monday: back to Friday at the same time.
        assert_eq!(auto_replies_since(None, monday, London), at(2026, 11, 27, 10));
        assert_eq!(auto_replies_since(None, at(2026, 12, 1, 10), London), monday);
        // Since the last digest, however long ago, up to a week.
        assert_eq!(auto_replies_since(Some(at(2026, 11, 26, 9)), monday, London), at(2026, 11, 26, 9));
        assert_eq!(auto_replies_since(Some(at(2026, 11, 2, 9)), monday, London), at(2026, 11, 23, 10));
    }
}
