//! Progress of long work (thousands of messages on a first start; a purge, an export, a
//! backup), so that nobody has to guess whether gatehouse is working or stuck.
//!
//! Work in progress reports how many of how many are done, the rate and the time left:
//! the daemon in its log, a CLI command as a bar on a terminal and as plain lines on
//! stderr otherwise (a pipe, a file, cron's mail). Lines come at most every
//! [`REPORT_EVERY`], and only once the work has run that long, so short work says nothing.
//! Counting costs an addition and a clock read per call: call [`Progress::add`] per batch
//! where there are batches.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The least time between two progress lines.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Counts work done out of a known total and reports it now and then.
#[derive(Debug)]
pub struct Progress {
    what: String,
    total: u64,
    done: u64,
    started: Instant,
    last_report: Instant,
    reported: bool,
    out: Out,
}

#[derive(Debug)]
enum Out {
    /// The daemon's log (`tracing`, level info).
    Log,
    /// A CLI command on a terminal.
    Bar(ProgressBar),
    /// A CLI command whose stderr is not a terminal.
    Lines,
}

impl Progress {
    /// Progress reported in the log, for the daemon. `what` names the work and its unit,
    /// e.g. "Taking in the backlog of INBOX (messages)".
    pub fn log(what: impl Into<String>, total: u64) -> Progress {
        Progress::new(what.into(), total, Out::Log)
    }

    /// Progress for a CLI command: a bar when stderr is a terminal, plain lines otherwise.
    pub fn cli(what: impl Into<String>, total: u64) -> Progress {
        let what = what.into();
        let out = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(what.clone());
            Out::Bar(bar)
        } else {
            Out::Lines
        };
        Progress::new(what, total, out)
    }

    fn new(what: String, total: u64, out: Out) -> Progress {
        let now = Instant::now();
        Progress { what, total, done: 0, started: now, last_report: now, reported: false, out }
    }

    /// Counts `n` more done, and reports if it is time to.
    pub fn add(&mut self, n: u64) {
        if let Out::Bar(bar) = &self.out {
            // indicatif limits how often it redraws by itself.
            bar.inc(n);
            self.done += n;
            return;
        }
        if let Some(line) = self.tick(n, Instant::now()) {
            self.emit(&line);
        }
    }

    /// Ends the work: clears a bar, and says how long it took if progress was reported
    /// (long work), so the log shows where it ended.
    pub fn finish(self) {
        let elapsed = self.started.elapsed();
        match &self.out {
            Out::Bar(bar) => bar.finish_and_clear(),
            Out::Log | Out::Lines if self.reported => {
                let line = format!(
                    "{}: {} of {} done in {}",
                    self.what,
                    self.done,
                    self.total,
                    duration_text(elapsed)
                );
                self.emit(&line);
            }
            Out::Log | Out::Lines => {}
        }
    }

    /// Counts `n` more done at `now`; the line to report, when one is due.
    fn tick(&mut self, n: u64, now: Instant) -> Option<String> {
        self.done += n;
        if now.saturating_duration_since(self.last_report) < REPORT_EVERY || self.done >= self.total {
            return None;
        }
        self.last_report = now;
        self.reported = true;
        Some(self.line(now.saturating_duration_since(self.started)))
    }

    /// "WHAT: 1200 of 10000 (12%), 240/s, about 37 s left".
    fn line(&self, elapsed: Duration) -> String {
        let percent = self.done.saturating_mul(100).checked_div(self.total).unwrap_or(100);
        let rate = self.done as f64 / elapsed.as_secs_f64().max(0.001);
        let left = if rate > 0.0 {
            let secs = self.total.saturating_sub(self.done) as f64 / rate;
            format!("about {} left", duration_text(Duration::from_secs_f64(secs.min(1e9))))
        } else {
            "time left unknown".to_string()
        };
        let rate = if rate >= 10.0 { format!("{rate:.0}/s") } else { format!("{rate:.1}/s") };
        format!("{}: {} of {} ({percent}%), {rate}, {left}", self.what, self.done, self.total)
    }

    fn emit(&self, line: &str) {
        match &self.out {
            Out::Log => tracing::info!("{line}"),
            Out::Lines => eprintln!("{line}"),
            Out::Bar(bar) => bar.println(line),
        }
    }
}

/// A duration for people: "42 s", "3 min 5 s", "2 h 10 min".
fn duration_text(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_at_most_every_few_seconds_with_count_rate_and_time_left() {
        let mut p = Progress::log("Taking in the backlog of INBOX (messages)", 10_000);
        let t0 = p.started;
        // Quick work says nothing.
        assert_eq!(p.tick(500, t0 + Duration::from_secs(1)), None);
        assert_eq!(p.tick(500, t0 + Duration::from_secs(4)), None);
        let line = p.tick(1000, t0 + Duration::from_secs(10)).expect("a line after 10 s");
        assert_eq!(
            line,
            "Taking in the backlog of INBOX (messages): 2000 of 10000 (20%), 200/s, about 40 s left"
        );
        // Not again within REPORT_EVERY, however much is done.
        assert_eq!(p.tick(3000, t0 + Duration::from_secs(12)), None);
        let line = p.tick(0, t0 + Duration::from_secs(16)).expect("a line after 16 s");
        assert!(line.contains("5000 of 10000 (50%)"), "{line}");
        // Done: the finishing line says so instead.
        assert_eq!(p.tick(5000, t0 + Duration::from_secs(60)), None);
        assert!(p.reported);
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration_text(Duration::from_secs(42)), "42 s");
        assert_eq!(duration_text(Duration::from_secs(185)), "3 min 5 s");
        assert_eq!(duration_text(Duration::from_secs(7800)), "2 h 10 min");
    }
}
