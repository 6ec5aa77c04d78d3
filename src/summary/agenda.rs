//! Each meeting's agenda, and the updates that keep the board's copy of it right.
//!
//! The agenda goes [`crate::config::MeetingSettings::agenda_days_before`] days before the
//! meeting, from 08:00 local, with every request decided `meeting` for it by then; a meeting
//! with nothing on it gets none unless `[meetings] send_empty_agenda` (its agenda goes as
//! soon as something is decided for it). The `agenda_told` table records which requests the
//! board has been told are on it, in the transaction that queues the email. From then on
//! any difference between that record and the meeting's requests (one added, moved off or
//! moved to another date) goes to the board as an agenda update: an hour after the first
//! change it reports, gathering whatever else changed meanwhile, so at most one an hour.
//!
//! The agenda email carries each item's papers (the files that came with the approach and
//! the requester's later emails), in agenda order, up to `[meetings]
//! agenda_attachments_max_mb` in all; the rest are listed by name and size.
//!
//! Changes from [`LAST_CALL`] before the meeting (`[meetings] time`; without a time, from
//! the start of the meeting day) are too late: they reach no agenda and no update, and the
//! gatekeepers' confirmation says to raise them at the meeting. An update still owed at the
//! last call goes then. Nothing about a meeting is sent once it has started (without a
//! time, after its day).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone as _, Utc};

use super::{Meeting, Paper, Summaries, local_midnight};
use crate::classify::{self, AttachmentBody};
use crate::config::Config;
use crate::domain::{Classification, Decision};
use crate::store::{RequestId, RequestRow};
pub use crate::templates::{AgendaUpdateContext, Removed};
use crate::templates::{BoardView, human_size, long_date, service_view};

/// Changes are gathered this long after the first one before an update goes: the board
/// hears at most one update an hour.
pub const UPDATE_BATCH: Duration = Duration::hours(1);

/// How long before `[meetings] time` changes stop reaching the board: nobody reads an
/// update in the last hours before a meeting, so the item is raised at the meeting instead.
pub const LAST_CALL: Duration = Duration::hours(2);

/// What went to the board for one meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgendaMail {
    Agenda(NaiveDate),
    Update(NaiveDate),
}

/// What `gatehouse agenda send` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgendaSent {
    Sent { items: usize, to: Vec<String> },
    AlreadySent,
}

fn local_at(date: NaiveDate, time: NaiveTime, config: &Config) -> DateTime<Utc> {
    config
        .service
        .timezone
        .from_local_datetime(&date.and_time(time))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| local_midnight(date, config.service.timezone))
}

/// When the meeting's agenda is due: `agenda_days_before` days ahead, at 08:00 local.
pub fn agenda_opens(config: &Config, date: NaiveDate) -> DateTime<Utc> {
    let day = date - Duration::days(i64::from(config.meetings.agenda_days_before));
    local_at(day, NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default(), config)
}

/// From when a change to the meeting's items is too late for the board: [`LAST_CALL`]
/// before the meeting's time (its own, or `[meetings] time`), or the start of the meeting day when no time is set.
pub fn last_call(config: &Config, date: NaiveDate) -> DateTime<Utc> {
    match config.meetings.slot(date).time {
        Some(time) => local_at(date, time, config) - LAST_CALL,
        None => local_midnight(date, config.service.timezone),
    }
}

/// When the meeting starts (the end of its day when no time is set): nothing about it is
/// sent from then on.
pub fn starts(config: &Config, date: NaiveDate) -> DateTime<Utc> {
    match config.meetings.slot(date).time {
        Some(time) => local_at(date, time, config),
        None => local_midnight(date + Duration::days(1), config.service.timezone),
    }
}

/// What the gatekeepers' confirmation of a `meeting` decision for `date`, made at `now`,
/// says of the board. `told` is `None` while the agenda has not gone, else whether the
/// board already has this request on it.
pub fn board_notice(config: &Config, date: NaiveDate, told: Option<bool>, now: DateTime<Utc>) -> BoardView {
    let tz = config.service.timezone;
    let told = if !config.meetings.dates.contains(&date) || now >= starts(config, date) {
        "unscheduled"
    } else if told == Some(true) {
        "agenda"
    } else if now >= last_call(config, date) {
        "too_late"
    } else if told.is_some() {
        "update"
    } else {
        "pending"
    };
    let opens = agenda_opens(config, date);
    BoardView {
        told: told.into(),
        meeting: long_date(date),
        agenda_goes: if now >= opens {
            "shortly".into()
        } else {
            opens.with_timezone(&tz).format("on %A %-d %B %Y at %H:%M").to_string()
        },
    }
}

/// "moved to the meeting on Thursday 10 December 2026", "now decided paper".
fn now_decided(r: &RequestRow) -> String {
    match (r.decision, r.meeting_date) {
        (Some(Decision::Meeting), Some(d)) => format!("moved to the meeting on {}", long_date(d)),
        (Some(d), _) => format!("now decided {}", d.command()),
        (None, _) => "no longer decided".into(),
    }
}

impl Summaries {
    /// The scheduler's tick for meetings: each meeting's agenda once it is due, then an
    /// update whenever the board's copy is out of date and the batch has waited its hour.
    pub async fn run_agendas(&self) -> anyhow::Result<Vec<AgendaMail>> {
        let now = self.clock.now();
        let mut sent = Vec::new();
        for date in self.config.meetings.dates.iter().copied() {
            if now < agenda_opens(&self.config, date) || now >= starts(&self.config, date) {
                continue;
            }
            match self.store.agenda_told(date).await? {
                None => {
                    let last_call = last_call(&self.config, date);
                    let rows: Vec<RequestRow> = self
                        .store
                        .agenda_for(date)
                        .await?
                        .into_iter()
                        .filter(|r| r.decided_at.is_none_or(|d| d < last_call))
                        .collect();
                    if rows.is_empty() && !self.config.meetings.send_empty_agenda {
                        continue;
                    }
                    if matches!(self.send_agenda(date, rows, false).await?, AgendaSent::Sent { .. }) {
                        sent.push(AgendaMail::Agenda(date));
                    }
                }
                Some(told) => {
                    if self.send_update(date, told).await? {
                        sent.push(AgendaMail::Update(date));
                    }
                }
            }
        }
        Ok(sent)
    }

    /// `gatehouse agenda send`: the meeting's agenda with everything decided for it now,
    /// unless its agenda went already (or `force`). What it lists becomes what the board has
    /// been told, so later updates are changes from it.
    pub async fn send_agenda_now(&self, date: NaiveDate, force: bool) -> anyhow::Result<AgendaSent> {
        if !force && self.store.summary_sent("agenda", &date.format("%Y-%m-%d").to_string()).await? {
            return Ok(AgendaSent::AlreadySent);
        }
        let rows = self.store.agenda_for(date).await?;
        self.send_agenda(date, rows, force).await
    }

    /// The agenda exactly as `agenda send` would send it now: `html` or text.
    pub async fn render_agenda(&self, date: NaiveDate, html: bool) -> anyhow::Result<String> {
        let rows = self.store.agenda_for(date).await?;
        let (context, _) = self.agenda_context(date, &rows).await?;
        self.templates.render(if html { "agenda.html" } else { "agenda.txt" }, &context)
    }

    /// The agenda's context, and the papers to attach to it.
    async fn agenda_context(
        &self,
        date: NaiveDate,
        rows: &[RequestRow],
    ) -> anyhow::Result<(super::AgendaContext, Vec<AttachmentBody>)> {
        let now = self.clock.now();
        let refs: Vec<&RequestRow> = rows.iter().collect();
        let notes = self.notes(&refs).await?;
        let mut budget = self.config.meetings.agenda_attachments_max_bytes;
        let mut attached = Vec::new();
        let mut items = Vec::new();
        for r in rows {
            let mut item = self.item(r, now, &notes);
            for paper in self.papers_of(r).await? {
                let name = format!("{} {}", r.reference, paper.name);
                let size = paper.bytes.len();
                // In agenda order, each while it fits: a later, smaller paper may still go.
                let fits = size <= budget;
                item.papers.push(Paper { name: name.clone(), size: human_size(size), attached: fits });
                if fits {
                    budget -= size;
                    attached.push(AttachmentBody { name, ..paper });
                }
            }
            items.push(item);
        }
        let context = super::AgendaContext {
            service: service_view(&self.config, now.with_timezone(&self.tz()).date_naive()),
            meeting: Meeting { date: long_date(date), items },
        };
        Ok((context, attached))
    }

    /// The files that came with `request`'s approach and with its requester's later emails
    /// (or its forwarder's), oldest first. Anyone else's email in the thread is not the
    /// requester's paper; a message whose bytes retention has removed has none.
    async fn papers_of(&self, request: &RequestRow) -> anyhow::Result<Vec<AttachmentBody>> {
        let same = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
        let mut papers = Vec::new();
        for m in self.store.request_messages(request.id).await? {
            let theirs = m.from.as_deref().is_some_and(|f| {
                same(f, &request.requester) || request.via.as_deref().is_some_and(|v| same(f, v))
            });
            let approach = matches!(
                m.classification,
                Some(Classification::New | Classification::Forwarded | Classification::FollowUp)
            );
            if !theirs || !approach {
                continue;
            }
            let raw = match self.store.raw_message(m.id).await {
                Ok(raw) => raw,
                Err(e) => {
                    tracing::warn!("No papers from message {} of {}: {e:#}", m.id, request.reference);
                    continue;
                }
            };
            let own = vec![self.config.smtp.from.address.to_string()];
            let limit = self.config.imap.max_message_bytes;
            let parsed = tokio::task::spawn_blocking(move || {
                let ctx = classify::Context { own_addresses: &own, own_message_id_domain: None };
                classify::parse_many(&[raw.as_slice()], &ctx, limit).pop()
            })
            .await
            .context("The mail parser could not run")?;
            match parsed {
                Some(Ok(parsed)) => papers.extend(parsed.attachment_bodies),
                Some(Err(e)) => {
                    tracing::warn!("No papers from message {} of {}: {}", m.id, request.reference, e.reason())
                }
                None => {}
            }
        }
        Ok(papers)
    }

    async fn send_agenda(
        &self,
        date: NaiveDate,
        rows: Vec<RequestRow>,
        force: bool,
    ) -> anyhow::Result<AgendaSent> {
        let now = self.clock.now();
        let (context, papers) = self.agenda_context(date, &rows).await?;
        let draft = self
            .board_draft(
                "agenda",
                format!(
                    "{}: agenda items for the meeting on {} ({})",
                    self.config.service.name,
                    long_date(date),
                    rows.len()
                ),
                self.templates.render("agenda.txt", &context)?,
                self.templates.render("agenda.html", &context)?,
            )
            .with_attachments(papers);
        let mail = self.composer.compose(&draft)?;
        let mut tx = self.store.begin().await?;
        let outbox_id = tx.enqueue(&mail, now).await?;
        let day = local_midnight(date, self.tz());
        let period = date.format("%Y-%m-%d").to_string();
        let recorded = tx.record_summary("agenda", &period, (day, day), Some(outbox_id), now).await?;
        if !recorded && !force {
            // Another process sent it between the check and now.
            return Ok(AgendaSent::AlreadySent);
        }
        // A resent agenda replaces whatever the board was told before.
        let on: Vec<RequestId> = rows.iter().map(|r| r.id).collect();
        let off: Vec<RequestId> = tx
            .agenda_told_ids(date)
            .await?
            .unwrap_or_default()
            .into_iter()
            .filter(|id| !on.contains(id))
            .collect();
        tx.record_agenda_told(date, &on, &off, Some(outbox_id), now).await?;
        tx.commit().await.context("Cannot record the agenda")?;
        Ok(AgendaSent::Sent { items: rows.len(), to: self.board_addresses() })
    }

    /// Sends the update for `date` if the board's copy (`told`) differs from the meeting's
    /// requests by changes made before the last call, and the first of them is an hour old
    /// (or the last call has come).
    async fn send_update(&self, date: NaiveDate, told: Vec<RequestRow>) -> anyhow::Result<bool> {
        let now = self.clock.now();
        let last_call = last_call(&self.config, date);
        let current = self.store.agenda_for(date).await?;
        let told_ids: BTreeSet<RequestId> = told.iter().map(|r| r.id).collect();
        let current_ids: BTreeSet<RequestId> = current.iter().map(|r| r.id).collect();
        let changed_at = |r: &RequestRow| r.decided_at.unwrap_or(now);
        let added: Vec<&RequestRow> =
            current.iter().filter(|r| !told_ids.contains(&r.id) && changed_at(r) < last_call).collect();
        let removed: Vec<&RequestRow> =
            told.iter().filter(|r| !current_ids.contains(&r.id) && changed_at(r) < last_call).collect();
        let Some(first) = added.iter().chain(&removed).map(|r| changed_at(r)).min() else {
            return Ok(false);
        };
        if now < (first + UPDATE_BATCH).min(last_call) {
            return Ok(false);
        }
        let removed_ids: BTreeSet<RequestId> = removed.iter().map(|r| r.id).collect();
        let on_agenda: Vec<&RequestRow> =
            told.iter().filter(|r| !removed_ids.contains(&r.id)).chain(added.iter().copied()).collect();
        let all: Vec<&RequestRow> = on_agenda.iter().chain(&removed).copied().collect();
        let notes: BTreeMap<RequestId, Vec<String>> = self.notes(&all).await?;
        let item = |r: &RequestRow| self.item(r, now, &notes);
        let context = AgendaUpdateContext {
            service: service_view(&self.config, now.with_timezone(&self.tz()).date_naive()),
            meeting: Meeting { date: long_date(date), items: on_agenda.iter().map(|r| item(r)).collect() },
            added: added.iter().map(|r| item(r)).collect(),
            removed: removed.iter().map(|r| Removed { item: item(r), now: now_decided(r) }).collect(),
        };
        let mut what = Vec::new();
        if !added.is_empty() {
            what.push(format!("{} added", added.len()));
        }
        if !removed.is_empty() {
            what.push(format!("{} off", removed.len()));
        }
        let mail = self.composer.compose(&self.board_draft(
            "agenda_update",
            format!(
                "{}: agenda update for the meeting on {} ({})",
                self.config.service.name,
                long_date(date),
                what.join(", ")
            ),
            self.templates.render("agenda_update.txt", &context)?,
            self.templates.render("agenda_update.html", &context)?,
        ))?;
        let mut tx = self.store.begin().await?;
        let mut now_told = tx.agenda_told_ids(date).await?.unwrap_or_default();
        now_told.sort_unstable();
        if now_told != told_ids.iter().copied().collect::<Vec<_>>() {
            // Another process told the board something meanwhile: the next tick diffs again.
            return Ok(false);
        }
        let outbox_id = tx.enqueue(&mail, now).await?;
        let on: Vec<RequestId> = added.iter().map(|r| r.id).collect();
        let off: Vec<RequestId> = removed_ids.into_iter().collect();
        tx.record_agenda_told(date, &on, &off, Some(outbox_id), now).await?;
        tx.commit().await.context("Cannot record the agenda update")?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(time: Option<&str>) -> Config {
        let text = crate::config::tests::VALID.replace(
            "agenda_days_before = 3",
            &match time {
                Some(t) => format!("agenda_days_before = 3\ntime = \"{t}\""),
                None => "agenda_days_before = 3".into(),
            },
        );
        Config::parse(&text, std::path::Path::new("/etc/gatehouse/gatehouse.toml")).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_last_call_is_two_hours_before_the_meeting_or_the_start_of_its_day() {
        let date = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        let timed = config(Some("13:00"));
        assert_eq!(last_call(&timed, date), at("2026-12-03T11:00:00Z"));
        assert_eq!(starts(&timed, date), at("2026-12-03T13:00:00Z"));
        let untimed = config(None);
        assert_eq!(last_call(&untimed, date), at("2026-12-03T00:00:00Z"));
        assert_eq!(starts(&untimed, date), at("2026-12-04T00:00:00Z"));
        assert_eq!(agenda_opens(&untimed, date), at("2026-11-30T08:00:00Z"));
    }

    #[test]
    fn the_confirmation_says_what_the_board_has_been_told() {
        let date = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        let c = config(Some("13:00"));
        let told = |t: Option<bool>, now: &str| board_notice(&c, date, t, at(now)).told;
        assert_eq!(told(None, "2026-11-29T10:00:00Z"), "pending");
        assert_eq!(
            board_notice(&c, date, None, at("2026-11-29T10:00:00Z")).agenda_goes,
            "on Monday 30 November 2026 at 08:00"
        );
        assert_eq!(told(Some(false), "2026-12-01T10:00:00Z"), "update");
        assert_eq!(told(Some(true), "2026-12-01T10:00:00Z"), "agenda");
        assert_eq!(told(Some(false), "2026-12-03T11:00:00Z"), "too_late");
        assert_eq!(told(None, "2026-12-03T11:30:00Z"), "too_late");
        assert_eq!(told(Some(false), "2026-12-03T13:00:00Z"), "unscheduled");
        let other = NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        assert_eq!(board_notice(&c, other, None, at("2026-11-29T10:00:00Z")).told, "unscheduled");
    }
}
