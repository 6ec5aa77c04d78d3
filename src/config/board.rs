//! `[board]`, `[meetings]`, `[priorities]` and `[triage]`: what the board hears and when,
//! and how gatekeepers' replies are checked and chased.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveTime};

use super::people::addresses;
use super::raw::{RawBoard, RawMeetings, RawTriage};
use super::{BoardSettings, ConfigError, MeetingSettings, Source, TriageSettings};
use crate::schedule::CronSchedule;

/// Checks `[board]`.
pub(super) fn board(raw: RawBoard, src: &Source) -> Result<BoardSettings, ConfigError> {
    let board_addresses = addresses(&raw.addresses, "board.addresses", src)?;
    let summary_schedule = CronSchedule::parse(&raw.summary_schedule).map_err(|e| {
        src.err(
            "board.summary_schedule",
            format!("{:?} is not a valid schedule ({e})", raw.summary_schedule),
            "use five-field cron: minute hour day-of-month month day-of-week, e.g. \"0 8 * * MON\"",
        )
    })?;
    Ok(BoardSettings {
        addresses: board_addresses,
        summary_schedule,
        share_notes: raw.share_notes,
        share_addresses: raw.share_addresses,
    })
}

/// Checks `[meetings]`: dates sorted and each once, so "the next meeting" is the first
/// one still ahead.
pub(super) fn meetings(raw: RawMeetings, src: &Source) -> Result<MeetingSettings, ConfigError> {
    let mut dates = Vec::new();
    for d in &raw.dates {
        let date = NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").map_err(|_| {
            src.err("meetings.dates", format!("{d:?} is not a date"), "write dates as YYYY-MM-DD")
        })?;
        dates.push(date);
    }
    dates.sort();
    dates.dedup();
    let time = match raw.time.as_deref().map(str::trim) {
        None => None,
        Some(t) => Some(NaiveTime::parse_from_str(t, "%H:%M").map_err(|_| {
            src.err(
                "meetings.time",
                format!("{t:?} is not a time of day"),
                "write the local time the meetings start as HH:MM, e.g. \"13:00\", or remove it",
            )
        })?),
    };
    Ok(MeetingSettings {
        dates,
        agenda_days_before: raw.agenda_days_before,
        time,
        send_empty_agenda: raw.send_empty_agenda,
    })
}

/// `[priorities]` keys are typed by gatekeepers after `priority`, so each is one word.
pub(super) fn priorities(
    raw: BTreeMap<String, String>,
    src: &Source,
) -> Result<BTreeMap<String, String>, ConfigError> {
    for key in raw.keys() {
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(src.err(
                &format!("priorities.{key}"),
                "a priority key must be one word".into(),
                "use letters, digits, - or _ (e.g. workforce)",
            ));
        }
    }
    Ok(raw)
}

/// Checks `[triage]`.
pub(super) fn triage(raw: RawTriage, src: &Source) -> Result<TriageSettings, ConfigError> {
    if let Some(id) = raw.authserv_id.as_deref().map(str::trim)
        && id.contains(|c: char| c.is_whitespace() || c == ';' || c == '=')
    {
        return Err(src.err(
            "triage.authserv_id",
            format!("{id:?} is not a server name"),
            "give the name your receiving server writes first in Authentication-Results (e.g. \"mx.example.org\"), or \"exchange-online\" for Microsoft 365 / NHSmail",
        ));
    }
    if raw.reminder_hour > 23 {
        return Err(src.err(
            "triage.reminder_hour",
            format!("{} is not an hour of the day", raw.reminder_hour),
            "use 0 to 23, e.g. 8 for 08:00",
        ));
    }
    Ok(TriageSettings {
        authserv_id: raw.authserv_id.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
        remind_after_working_days: raw.remind_after_working_days,
        reminder_hour: raw.reminder_hour,
        more_work_nudge_days: raw.more_work_nudge_days,
    })
}
