//! `[board]`, `[meetings]`, `[priorities]` and `[triage]`: what the board hears and when,
//! and how gatekeepers' replies are checked and chased.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveTime};

use super::people::addresses;
use super::raw::{RawBoard, RawMeetings, RawTriage};
use super::{BoardSettings, ConfigError, MeetingDay, MeetingSettings, Source, TriageSettings};
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
/// one still ahead; each `[meetings.on."DATE"]` names one of them.
pub(super) fn meetings(raw: RawMeetings, src: &Source) -> Result<MeetingSettings, ConfigError> {
    let mut dates = Vec::new();
    for d in &raw.dates {
        dates.push(date(d, "meetings.dates", src)?);
    }
    dates.sort();
    dates.dedup();
    let mut on = BTreeMap::new();
    for (written, day) in raw.on {
        let key = format!("meetings.on.\"{written}\"");
        let date = date(&written, &key, src)?;
        if !dates.contains(&date) {
            return Err(src.err(
                &key,
                format!("{written} is not one of the meeting dates"),
                "add it to [meetings] dates, or correct the date in the table's name",
            ));
        }
        let checked = MeetingDay {
            time: time(day.time.as_deref(), &format!("{key}.time"), src)?,
            length_minutes: length(day.length_minutes, &format!("{key}.length_minutes"), src)?,
            place: place(day.place.as_deref(), &format!("{key}.place"), src)?,
        };
        on.insert(date, checked);
    }
    if raw.agenda_attachments_max_mb > MAX_AGENDA_ATTACHMENTS_MB {
        return Err(src.err(
            "meetings.agenda_attachments_max_mb",
            format!("{} MB is more than mail servers accept", raw.agenda_attachments_max_mb),
            &format!(
                "use 0 (list the papers only) to {MAX_AGENDA_ATTACHMENTS_MB}; NHSmail and Microsoft 365 refuse emails over about 35 MB"
            ),
        ));
    }
    Ok(MeetingSettings {
        dates,
        agenda_days_before: raw.agenda_days_before,
        time: time(raw.time.as_deref(), "meetings.time", src)?,
        send_empty_agenda: raw.send_empty_agenda,
        length_minutes: length(raw.length_minutes, "meetings.length_minutes", src)?,
        place: place(raw.place.as_deref(), "meetings.place", src)?,
        on,
        agenda_attachments_max_bytes: usize::try_from(raw.agenda_attachments_max_mb)
            .unwrap_or(usize::MAX)
            .saturating_mul(1024 * 1024),
    })
}

/// The most `agenda_attachments_max_mb` may be: base64 makes the email a third larger, and
/// the biggest mail servers the board uses take about 35 MB.
const MAX_AGENDA_ATTACHMENTS_MB: u32 = 25;

/// The longest `place` may be: a room and address, or a Teams join link with its query.
const MAX_PLACE_CHARS: usize = 500;

fn date(written: &str, key: &str, src: &Source) -> Result<NaiveDate, ConfigError> {
    NaiveDate::parse_from_str(written.trim(), "%Y-%m-%d")
        .map_err(|_| src.err(key, format!("{written:?} is not a date"), "write dates as YYYY-MM-DD"))
}

fn time(written: Option<&str>, key: &str, src: &Source) -> Result<Option<NaiveTime>, ConfigError> {
    let Some(t) = written.map(str::trim) else { return Ok(None) };
    NaiveTime::parse_from_str(t, "%H:%M").map(Some).map_err(|_| {
        src.err(
            key,
            format!("{t:?} is not a time of day"),
            "write the local time the meeting starts as HH:MM, e.g. \"13:00\", or remove it",
        )
    })
}

fn length(minutes: Option<u32>, key: &str, src: &Source) -> Result<Option<u32>, ConfigError> {
    match minutes {
        Some(m) if m == 0 || m > 24 * 60 => Err(src.err(
            key,
            format!("{m} minutes is not the length of a meeting"),
            "give the length in minutes, 1 to 1440, e.g. 90",
        )),
        m => Ok(m),
    }
}

/// A place goes into the invitation and the outcome as one line: no line breaks or other
/// control characters, and not empty.
fn place(written: Option<&str>, key: &str, src: &Source) -> Result<Option<String>, ConfigError> {
    let Some(p) = written.map(str::trim) else { return Ok(None) };
    if p.is_empty() || p.chars().any(char::is_control) || p.chars().count() > MAX_PLACE_CHARS {
        return Err(src.err(
            key,
            "a place must be one line of text".into(),
            &format!(
                "write the room and address, or the online meeting link, on one line (at most {MAX_PLACE_CHARS} characters), or remove it"
            ),
        ));
    }
    Ok(Some(p.to_string()))
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
