//! Time-driven work: when the board's weekly summary is due.
//!
//! Operators write ordinary five-field cron (`0 8 * * MON`, day-of-week 0 or 7 = Sunday) in
//! the service's timezone. The `cron` crate wants a leading seconds field and numbers
//! day-of-week from 1 = Sunday, so a copied crontab line would silently fire a day late;
//! [`CronSchedule`] translates the day-of-week field into names, which mean the same in both.

use std::fmt;
use std::str::FromStr;

use anyhow::{Context as _, bail};
use chrono::{DateTime, TimeZone};

/// A five-field cron expression, checked and ready to compute firing times.
#[derive(Clone)]
pub struct CronSchedule {
    source: String,
    schedule: cron::Schedule,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", self.source)
    }
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl CronSchedule {
    pub fn parse(expr: &str) -> anyhow::Result<Self> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 {
            bail!("expected 5 fields (minute hour day-of-month month day-of-week), found {}", fields.len());
        }
        let dow = translate_day_of_week(fields[4])?;
        let six = format!("0 {} {} {} {} {}", fields[0], fields[1], fields[2], fields[3], dow);
        let schedule = cron::Schedule::from_str(&six).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self { source: expr.trim().to_string(), schedule })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first firing time strictly after `after`, in the same timezone.
    pub fn next_after<Z: TimeZone>(&self, after: &DateTime<Z>) -> Option<DateTime<Z>> {
        self.schedule.after(after).next()
    }

    /// The last firing time at or before `at`, searching back at most `lookback` days; used to
    /// find the period a restarted daemon missed.
    pub fn latest_at_or_before<Z: TimeZone>(
        &self,
        at: &DateTime<Z>,
        lookback_days: i64,
    ) -> Option<DateTime<Z>> {
        let start = at.clone() - chrono::Duration::days(lookback_days);
        let mut latest = None;
        for t in self.schedule.after(&start) {
            if t > *at {
                break;
            }
            latest = Some(t);
        }
        latest
    }
}

/// Rewrites a standard cron day-of-week field (0–7, 0 and 7 = Sunday, names, ranges, steps)
/// as an explicit list of day names.
fn translate_day_of_week(field: &str) -> anyhow::Result<String> {
    if field == "*" || field == "?" {
        return Ok("*".into());
    }
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>()
                    .ok()
                    .filter(|s| *s > 0)
                    .with_context(|| format!("bad step in {item:?}"))?,
            ),
            None => (item, 1),
        };
        let (first, last) = if range == "*" {
            (0, 6)
        } else if let Some((a, b)) = range.split_once('-') {
            (day_number(a)?, day_number(b)?)
        } else {
            let d = day_number(range)?;
            (d, if step > 1 { 6 } else { d })
        };
        // 7 is Sunday too; a range ending in it (5-7) means Friday to Sunday.
        let last = if last < first && last == 0 { 7 } else { last };
        if last < first {
            bail!("day-of-week range {item:?} runs backwards");
        }
        let mut d = first;
        while d <= last {
            days[d % 7] = true;
            d += step;
        }
    }
    let names: Vec<&str> = (0..7).filter(|d| days[*d]).map(|d| DAY_NAMES[d]).collect();
    Ok(names.join(","))
}

fn day_number(s: &str) -> anyhow::Result<usize> {
    if let Ok(n) = s.parse::<usize>() {
        if n > 7 {
            bail!("day-of-week {n} is out of range (0-7)");
        }
        return Ok(n);
    }
    let upper = s.to_ascii_uppercase();
    DAY_NAMES
        .iter()
        .position(|d| upper.starts_with(d) && upper.len() >= 3)
        .with_context(|| format!("{s:?} is not a day of the week"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Weekday};
    use chrono_tz::Europe::London;

    fn next(expr: &str, y: i32, m: u32, d: u32, h: u32) -> DateTime<chrono_tz::Tz> {
        let s = CronSchedule::parse(expr).unwrap();
        let from = London.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap();
        s.next_after(&from).unwrap()
    }

    #[test]
    fn numeric_days_follow_ordinary_cron() {
        // 2026-11-23 is a Monday.
        assert_eq!(next("0 8 * * 1", 2026, 11, 22, 0).weekday(), Weekday::Mon);
        assert_eq!(next("0 8 * * 0", 2026, 11, 23, 0).weekday(), Weekday::Sun);
        assert_eq!(next("0 8 * * 7", 2026, 11, 23, 0).weekday(), Weekday::Sun);
        assert_eq!(next("0 8 * * MON", 2026, 11, 23, 9).day(), 30);
        let weekdays: Vec<_> = {
            let s = CronSchedule::parse("30 7 * * 1-5").unwrap();
            let from = London.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap();
            s.schedule.after(&from).take(5).map(|t| t.weekday()).collect()
        };
        assert_eq!(weekdays, [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri]);
        assert_eq!(translate_day_of_week("5-7").unwrap(), "SUN,FRI,SAT");
        assert_eq!(translate_day_of_week("*/2").unwrap(), "SUN,TUE,THU,SAT");
        assert_eq!(translate_day_of_week("mon-wed,fri").unwrap(), "MON,TUE,WED,FRI");
    }

    #[test]
    fn the_hour_is_local_time_across_clock_changes() {
        // Clocks go back on 2026-10-25 and forward on 2027-03-28.
        let t = next("0 8 * * MON", 2026, 10, 24, 12);
        assert_eq!((t.day(), t.hour()), (26, 8));
        let t = next("0 8 * * MON", 2027, 3, 27, 12);
        assert_eq!((t.day(), t.hour()), (29, 8));
    }

    #[test]
    fn bad_expressions_are_refused() {
        for bad in ["0 8 * *", "0 8 * * * *", "61 8 * * MON", "0 8 * * 8", "0 8 * * FUNDAY", "0 8 * * 5-2"] {
            assert!(CronSchedule::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
