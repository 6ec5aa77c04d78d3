//! The board's weekly summary and each meeting's agenda.
//!
//! A summary covers a period: a Monday-to-Sunday week (`--week`), or the seven days up to
//! now (`summary send`, and the schedule). Each goes once: the `summaries` table records the
//! week it counts for (keyed by that week's Monday) in the same transaction that puts it in
//! the outbox, so a restart cannot send it twice and `--force` is the only way to repeat
//! one. A schedule missed while the daemon was down is caught up once, covering the whole
//! gap since the last summary.
//!
//! Meetings' agendas and the updates after them are in [`agenda`].

pub mod agenda;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike as _, Duration, NaiveDate, TimeZone as _, Utc};
use chrono_tz::Tz;

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::{Decision, Status};
use crate::mailings::{Composer, Draft};
use crate::store::{EventKind, RequestId, RequestRow, SharedStore};
pub use crate::templates::{
    AgendaContext, Duplicate, Group, Item, Meeting, Paper, PriorityCount, SummaryContext, TrendBar,
};
use crate::templates::{Templates, decision_meaning, long_date, service_view};

/// The most requests a "what waits" list shows; the rest are counted. A board email that
/// lists hundreds of items is not read.
pub const LIST_LIMIT: usize = 50;

/// The time a summary covers, and the week it counts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// The Monday (YYYY-MM-DD) of the week this counts as: one summary per key.
    pub key: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

fn monday_of(date: NaiveDate) -> NaiveDate {
    date - Duration::days(i64::from(date.weekday().num_days_from_monday()))
}

fn local_midnight(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    date.and_hms_opt(0, 0, 0)
        .and_then(|t| tz.from_local_datetime(&t).earliest())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default()))
}

impl Period {
    /// The Monday-to-Sunday week containing `date`.
    pub fn week_containing(date: NaiveDate, tz: Tz) -> Self {
        let monday = monday_of(date);
        Self {
            key: monday.format("%Y-%m-%d").to_string(),
            from: local_midnight(monday, tz),
            to: local_midnight(monday + Duration::days(7), tz),
        }
    }

    /// The seven days up to `now`, counting as `now`'s week.
    pub fn seven_days_to(now: DateTime<Utc>, tz: Tz) -> Self {
        let monday = monday_of(now.with_timezone(&tz).date_naive());
        Self { key: monday.format("%Y-%m-%d").to_string(), from: now - Duration::days(7), to: now }
    }
}

/// Whether a send went out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Sent { period: String, to: Vec<String> },
    AlreadySent { period: String },
}

#[derive(Debug, Clone)]
pub struct Summaries {
    config: Arc<Config>,
    store: SharedStore,
    clock: Arc<dyn Clock>,
    templates: Arc<Templates>,
    composer: Composer,
}

/// "3 days", "5 hours", "1 day 4 hours".
pub fn human_duration(d: Duration) -> String {
    let hours = d.num_hours().max(0);
    let (days, hours) = (hours / 24, hours % 24);
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match (days, hours) {
        (0, 0) => "under an hour".into(),
        (0, h) => plural(h, "hour"),
        (d, 0) => plural(d, "day"),
        (d, h) if d < 3 => format!("{} {}", plural(d, "day"), plural(h, "hour")),
        (d, _) => plural(d, "day"),
    }
}

impl Summaries {
    pub fn new(
        config: Arc<Config>,
        store: SharedStore,
        clock: Arc<dyn Clock>,
        templates: Arc<Templates>,
    ) -> Self {
        let composer = Composer::new(config.clone());
        Self { config, store, clock, templates, composer }
    }

    fn tz(&self) -> Tz {
        self.config.service.timezone
    }

    fn item(&self, r: &RequestRow, now: DateTime<Utc>, notes: &BTreeMap<RequestId, Vec<String>>) -> Item {
        let tz = self.tz();
        Item {
            reference: r.reference.clone(),
            subject: r.subject.clone(),
            requester: crate::mailings::views::board_requester(
                &self.config,
                r.requester_name.as_deref(),
                &r.requester,
            ),
            organisation: r.organisation.clone().unwrap_or_else(|| "(no organisation)".into()),
            received: r.received_at.with_timezone(&tz).format("%a %-d %b %H:%M").to_string(),
            decision: r.decision.map(|d| d.command().to_string()),
            detail: r.decision_detail.clone(),
            priorities: r.priorities.clone(),
            waiting: human_duration(now - r.received_at),
            notes: notes.get(&r.id).cloned().unwrap_or_default(),
            papers: Vec::new(),
            doors: None,
        }
    }

    /// How many doors each of `rows` came through, for those that came through several.
    async fn doors(&self, rows: &[&RequestRow]) -> anyhow::Result<BTreeMap<RequestId, String>> {
        let ids: Vec<RequestId> = rows.iter().map(|r| r.id).collect();
        let mut further: BTreeMap<RequestId, Vec<String>> = BTreeMap::new();
        for (id, e) in self.store.events_of_kind(&ids, EventKind::AlsoReceived).await? {
            further.entry(id).or_default().push(e.actor);
        }
        Ok(rows
            .iter()
            .filter_map(|r| {
                let more = further.get(&r.id)?;
                crate::mailings::views::came_via(&self.config, r.via.as_deref(), more).map(|d| (r.id, d))
            })
            .collect())
    }

    /// The gatekeepers' notes on `rows`, for the board only when `[board] share_notes` says so.
    async fn notes(&self, rows: &[&RequestRow]) -> anyhow::Result<BTreeMap<RequestId, Vec<String>>> {
        let mut notes: BTreeMap<RequestId, Vec<String>> = BTreeMap::new();
        if !self.config.board.share_notes {
            return Ok(notes);
        }
        let ids: Vec<RequestId> = rows.iter().map(|r| r.id).collect();
        for (id, e) in self.store.events_of_kind(&ids, EventKind::Note).await? {
            notes.entry(id).or_default().extend(e.detail);
        }
        Ok(notes)
    }

    /// Gathers the summary for `period`.
    pub async fn gather(&self, period: &Period) -> anyhow::Result<SummaryContext> {
        let now = self.clock.now();
        let tz = self.tz();
        let today = now.with_timezone(&tz).date_naive();
        let new = self.store.received_between(period.from, period.to).await?;
        let decided = self.store.decided_between(period.from, period.to).await?;
        let limit = i64::try_from(LIST_LIMIT).unwrap_or(50);
        let (awaiting, awaiting_total) = self.store.with_status(Status::AwaitingTriage, limit).await?;
        let (waiting, waiting_total) = self.store.with_status(Status::WaitingOnRequester, limit).await?;
        let next_date = self.config.meetings.dates.iter().find(|d| **d > today).copied();
        let paper_counts = self.store.paper_counts(period.from, period.to).await?;
        let agenda = match next_date {
            Some(d) => self.store.agenda_for(d).await?,
            None => Vec::new(),
        };
        let all: Vec<&RequestRow> = new.iter().chain(&decided).chain(&agenda).collect();
        let notes = self.notes(&all).await?;
        let doors = self.doors(&all).await?;
        let item = |r: &RequestRow| Item { doors: doors.get(&r.id).cloned(), ..self.item(r, now, &notes) };

        let mut by_org: BTreeMap<String, Vec<Item>> = BTreeMap::new();
        for r in &new {
            let i = item(r);
            by_org.entry(i.organisation.clone()).or_default().push(i);
        }
        let mut new_by_organisation: Vec<Group> =
            by_org.into_iter().map(|(name, items)| Group { name, count: items.len(), items }).collect();
        new_by_organisation.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));

        let decisions = Decision::ALL
            .iter()
            .filter_map(|d| {
                let items: Vec<Item> = decided.iter().filter(|r| r.decision == Some(*d)).map(item).collect();
                (!items.is_empty()).then(|| Group {
                    name: format!("{} — {}", d.command(), decision_meaning(*d)),
                    count: items.len(),
                    items,
                })
            })
            .collect();

        let mut duplicates: Vec<Duplicate> = new
            .iter()
            .filter_map(|r| {
                r.probable_duplicate_of.as_ref().map(|of| Duplicate {
                    item: item(r),
                    of_reference: of.clone(),
                    how: "probably the same as".into(),
                })
            })
            .collect();
        duplicates.extend(decided.iter().filter_map(|r| {
            r.duplicate_of.as_ref().map(|of| Duplicate {
                item: item(r),
                of_reference: of.clone(),
                how: "decided a duplicate of".into(),
            })
        }));

        let mut priority_counts: BTreeMap<&str, usize> = BTreeMap::new();
        let mut no_priority = 0;
        let tagged: Vec<&RequestRow> = {
            let mut seen = std::collections::BTreeSet::new();
            new.iter().chain(&decided).filter(|r| seen.insert(r.id)).collect()
        };
        for r in &tagged {
            if r.priorities.is_empty() {
                no_priority += 1;
            }
            for p in &r.priorities {
                *priority_counts.entry(p.as_str()).or_default() += 1;
            }
        }
        let priorities = self
            .config
            .priorities
            .iter()
            .map(|(k, v)| PriorityCount {
                key: k.clone(),
                description: v.clone(),
                count: priority_counts.get(k.as_str()).copied().unwrap_or(0),
            })
            .collect();

        let mut to_decision: Vec<Duration> =
            decided.iter().filter_map(|r| r.decided_at.map(|d| d - r.received_at)).collect();
        to_decision.sort();
        let median_to_decision = match to_decision.len() {
            0 => None,
            n if n % 2 == 1 => Some(human_duration(to_decision[n / 2])),
            n => Some(human_duration((to_decision[n / 2 - 1] + to_decision[n / 2]) / 2)),
        };

        // Eight weeks of arrivals, oldest first, ending with the period's week.
        let last_monday = monday_of((period.to - Duration::seconds(1)).with_timezone(&tz).date_naive());
        let first_monday = last_monday - Duration::weeks(7);
        let mut weeks = [0usize; 8];
        for t in self.store.arrivals_since(local_midnight(first_monday, tz)).await? {
            let monday = monday_of(t.with_timezone(&tz).date_naive());
            let index = (monday - first_monday).num_weeks();
            if let Ok(i) = usize::try_from(index)
                && i < 8
            {
                weeks[i] += 1;
            }
        }
        let max = weeks.iter().copied().max().unwrap_or(0).max(1);
        let trend = weeks
            .iter()
            .enumerate()
            .map(|(i, n)| TrendBar {
                label: (first_monday + Duration::weeks(i as i64)).format("%-d %b").to_string(),
                count: *n,
                percent: n * 100 / max,
                bar: "#".repeat(n * 20 / max),
            })
            .collect();

        let local_to = period.to.with_timezone(&tz) - Duration::seconds(1);
        Ok(SummaryContext {
            service: service_view(&self.config, today),
            period: format!(
                "{} to {}",
                period.from.with_timezone(&tz).format("%A %-d %B %Y"),
                local_to.format("%A %-d %B %Y")
            ),
            new_count: new.len(),
            decided_count: decided.len(),
            awaiting_count: awaiting_total,
            waiting_on_requester_count: waiting_total,
            new_by_organisation,
            decisions,
            awaiting: awaiting.iter().map(item).collect(),
            awaiting_more: awaiting_total.saturating_sub(awaiting.len()),
            waiting_on_requester: waiting.iter().map(item).collect(),
            waiting_on_requester_more: waiting_total.saturating_sub(waiting.len()),
            next_meeting: next_date
                .map(|d| Meeting { date: long_date(d), items: agenda.iter().map(item).collect() }),
            papers: decided.iter().filter(|r| r.decision == Some(Decision::Paper)).map(item).collect(),
            papers_circulated: paper_counts.circulated,
            papers_awaited: paper_counts.awaited,
            messages: decided.iter().filter(|r| r.decision == Some(Decision::Message)).map(item).collect(),
            duplicates,
            priorities,
            no_priority,
            median_to_decision,
            trend,
        })
    }

    /// The summary exactly as it would be sent: `html` or text.
    pub async fn render(&self, period: &Period, html: bool) -> anyhow::Result<String> {
        let context = self.gather(period).await?;
        self.templates.render(if html { "summary.html" } else { "summary.txt" }, &context)
    }

    /// Sends the summary for `period` unless that week's went already (or `force`).
    pub async fn send(&self, period: &Period, force: bool) -> anyhow::Result<Sent> {
        if !force && self.store.summary_sent("weekly", &period.key).await? {
            return Ok(Sent::AlreadySent { period: period.key.clone() });
        }
        let context = self.gather(period).await?;
        let text = self.templates.render("summary.txt", &context)?;
        let html = self.templates.render("summary.html", &context)?;
        let to = self.board_addresses();
        anyhow::ensure!(!to.is_empty(), "[board].addresses is empty: nobody to send the summary to");
        let mail = self.composer.compose(&self.board_draft(
            "summary",
            format!(
                "{}: weekly summary, {} new, {} decided, {} waiting",
                self.config.service.name, context.new_count, context.decided_count, context.awaiting_count
            ),
            text,
            html,
        ))?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let outbox_id = tx.enqueue(&mail, now).await?;
        let recorded =
            tx.record_summary("weekly", &period.key, (period.from, period.to), Some(outbox_id), now).await?;
        if !recorded && !force {
            // Another process sent it between the check and now.
            return Ok(Sent::AlreadySent { period: period.key.clone() });
        }
        tx.commit().await?;
        Ok(Sent::Sent { period: period.key.clone(), to })
    }

    /// The scheduler's tick: sends the summary if a scheduled time has passed whose week has
    /// none yet. Times before this installation first ran do not count (no summary of the
    /// past on the first start).
    pub async fn run_schedule(&self) -> anyhow::Result<Option<Sent>> {
        let now = self.clock.now();
        let tz = self.tz();
        let installed = self.store.init_meta("summaries_since", &now.timestamp_millis().to_string()).await?;
        let installed = installed.parse::<i64>().map(crate::clock::from_millis).unwrap_or(now);
        let local_now = now.with_timezone(&tz);
        let Some(fire) = self.config.board.summary_schedule.latest_at_or_before(&local_now, 62) else {
            return Ok(None);
        };
        let fire = fire.with_timezone(&Utc);
        if fire < installed {
            return Ok(None);
        }
        let key = monday_of(fire.with_timezone(&tz).date_naive()).format("%Y-%m-%d").to_string();
        if self.store.summary_sent("weekly", &key).await? {
            return Ok(None);
        }
        // Catch up the whole gap since the last summary (or a week).
        let from = self.store.last_covered("weekly").await?.unwrap_or(fire - Duration::days(7));
        let period = Period { key, from, to: now };
        Ok(Some(self.send(&period, false).await?))
    }

    /// The board's addresses, as mailings to it are sent.
    fn board_addresses(&self) -> Vec<String> {
        self.config.board.addresses.iter().map(ToString::to_string).collect()
    }

    /// A mailing to the board (summary, agenda, agenda update): the one shape they take.
    fn board_draft(&self, kind: &'static str, subject: String, text: String, html: String) -> Draft {
        Draft::to_all(kind, &self.config.board.addresses, subject, text).with_html(html)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::London;

    #[test]
    fn weeks_run_monday_to_sunday_in_local_time() {
        let p = Period::week_containing(NaiveDate::from_ymd_opt(2026, 10, 28).unwrap_or_default(), London);
        assert_eq!(p.key, "2026-10-26");
        // Clocks went back on 25 October: the week starts at local midnight, 00:00 GMT.
        assert_eq!(p.from.to_rfc3339(), "2026-10-26T00:00:00+00:00");
        let p = Period::week_containing(NaiveDate::from_ymd_opt(2026, 10, 25).unwrap_or_default(), London);
        assert_eq!(p.key, "2026-10-19");
        assert_eq!(p.from.to_rfc3339(), "2026-10-18T23:00:00+00:00");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::minutes(20)), "under an hour");
        assert_eq!(human_duration(Duration::hours(5)), "5 hours");
        assert_eq!(human_duration(Duration::hours(28)), "1 day 4 hours");
        assert_eq!(human_duration(Duration::days(9)), "9 days");
    }
}
