//! The configuration file: read once, checked completely, then handed around as typed settings.
//!
//! Operators edit this file by hand, so every mistake is reported as
//! `FILE: KEY: what is wrong. Fix: what to do` and the daemon refuses to start rather than
//! guess. Secrets are never in the file: it names their source (see [`crate::secret`]).
//! Relative paths are taken from the config file's folder, so the daemon behaves the same
//! whatever directory it was started from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::domain::EmailAddress;
use crate::schedule::CronSchedule;
use crate::secret::SecretSource;

/// A config mistake, named precisely enough that the operator can fix it without reading code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted key, e.g. `imap.security`; empty when the whole file is at fault.
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        if self.key.is_empty() {
            write!(f, "{file}: {}. Fix: {}", self.problem, self.fix)
        } else {
            write!(f, "{file}: {}: {}. Fix: {}", self.key, self.problem, self.fix)
        }
    }
}

impl std::error::Error for ConfigError {}

/// How to secure a connection to a mail server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Tls,
    /// Plain connection upgraded with STARTTLS before logging in.
    Starttls,
    /// No encryption at all: only ever allowed to a loopback address.
    Plain,
}

/// What to do to a message in the shared mailbox once it is logged. People read that
/// mailbox too, so the default leaves it as it was apart from a private keyword.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterProcessing {
    Keep,
    Seen,
    Move(String),
}

/// What to do with mail already in the mailbox the very first time gatehouse starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backlog {
    /// Log it as requests but send nothing: those senders were dealt with by hand.
    LogOnly,
    TreatAsNew,
}

/// A display name and address, e.g. the `From:` of everything gatehouse sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedAddress {
    pub name: Option<String>,
    pub address: EmailAddress,
}

impl fmt::Display for NamedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} <{}>", self.address),
            None => write!(f, "{}", self.address),
        }
    }
}

impl NamedAddress {
    /// Parses `Name <addr>` or a bare `addr`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let s = s.trim();
        if let (Some(open), true) = (s.rfind('<'), s.ends_with('>')) {
            let name = s[..open].trim().trim_matches('"').trim();
            let address = EmailAddress::parse_mailable(&s[open + 1..s.len() - 1])?;
            let name = (!name.is_empty()).then(|| name.to_string());
            return Ok(Self { name, address });
        }
        Ok(Self { name: None, address: EmailAddress::parse_mailable(s)? })
    }
}

#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub name: String,
    pub timezone: Tz,
    pub data_dir: PathBuf,
    /// `None` means SQLite in `data_dir`.
    pub database: Option<DatabaseSettings>,
    /// This node's name beside the others sharing the database (`node_name`; default: the
    /// host name).
    pub node_name: String,
    pub reference_prefix: String,
    /// Bytes of the ballast file kept in `data_dir` and released when the disk fills, so the
    /// status and the alert can still be written (`disk_ballast_mib`; 0: none).
    pub disk_ballast_bytes: u64,
    /// Warn (log, and one email a day) when the data directory's filesystem has less free
    /// than this percentage of its size or [`Self::disk_warn_free_bytes`], whichever is
    /// smaller; 0 turns the warning off.
    pub disk_warn_free_percent: u8,
    /// `disk_warn_free_mib` in bytes; 0 turns the warning off.
    pub disk_warn_free_bytes: u64,
}

/// How gatehouse proves who it is to a mail server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `auth = "password"` (the default): LOGIN / AUTH PLAIN with a password.
    Password(SecretSource),
    /// `auth = "xoauth2"`: SASL XOAUTH2 with an OAuth2 access token (Microsoft 365 / NHSmail).
    XOAuth2(OAuthSettings),
}

impl Auth {
    pub fn oauth(&self) -> Option<&OAuthSettings> {
        match self {
            Auth::XOAuth2(o) => Some(o),
            Auth::Password(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    pub auth: Auth,
    pub tls_ca_file: Option<PathBuf>,
    pub mailbox: String,
    pub idle: bool,
    pub poll_interval: Duration,
    pub after_processing: AfterProcessing,
    pub backlog: Backlog,
    /// Upper bound on any single IMAP command, so a silent server cannot hang the daemon.
    pub timeout: Duration,
    /// Messages larger than this are stored and logged but not parsed; the gatekeepers are
    /// told, so nothing is silently skipped.
    pub max_message_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: Option<String>,
    /// `None`: a relay that needs no login.
    pub auth: Option<Auth>,
    pub tls_ca_file: Option<PathBuf>,
    pub from: NamedAddress,
    pub timeout: Duration,
    /// The first retry delay after a temporary failure; it doubles up to 30 minutes.
    pub retry_initial: Duration,
}

#[derive(Debug, Clone)]
pub struct BoardSettings {
    pub addresses: Vec<EmailAddress>,
    pub summary_schedule: CronSchedule,
    /// Whether the agenda and the weekly summary carry the gatekeepers' internal notes (off
    /// by default: the board can include outside members).
    pub share_notes: bool,
    /// Whether they carry requesters' email addresses (off by default: names and
    /// organisations only).
    pub share_addresses: bool,
}

#[derive(Debug, Clone, Default)]
pub struct MeetingSettings {
    pub dates: Vec<NaiveDate>,
    pub agenda_days_before: u32,
    /// When every meeting starts (local time), if known: agenda updates stop
    /// [`crate::summary::agenda::LAST_CALL`] before it.
    pub time: Option<NaiveTime>,
    /// Whether an agenda with nothing on it is sent (off by default: it would only say
    /// nothing has been decided yet).
    pub send_empty_agenda: bool,
    /// How long every meeting lasts, if given (`length_minutes`); the invitation assumes
    /// [`DEFAULT_MEETING_MINUTES`] otherwise.
    pub length_minutes: Option<u32>,
    /// Where every meeting is held: a room, or an online link (`place`).
    pub place: Option<String>,
    /// What differs on one date (`[meetings.on."YYYY-MM-DD"]`); each is one of `dates`.
    pub on: BTreeMap<NaiveDate, MeetingDay>,
    /// The papers attached to the agenda email, in bytes in all
    /// (`agenda_attachments_max_mb`; 0: listed only).
    pub agenda_attachments_max_bytes: usize,
}

/// How long a meeting is taken to last when `[meetings] length_minutes` is not given.
pub const DEFAULT_MEETING_MINUTES: u32 = 60;

/// One date's own time, length or place (`[meetings.on."2027-01-07"]`), where it differs
/// from the `[meetings]` defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeetingDay {
    pub time: Option<NaiveTime>,
    pub length_minutes: Option<u32>,
    pub place: Option<String>,
}

/// One meeting as held: its date, start (local time, if known), length and place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingSlot {
    pub date: NaiveDate,
    pub time: Option<NaiveTime>,
    pub length_minutes: u32,
    pub place: Option<String>,
}

impl MeetingSlot {
    /// "13:00 to 14:30", when the meeting's time is known.
    pub fn hours(&self) -> Option<String> {
        let start = self.time?;
        let end = start + chrono::Duration::minutes(i64::from(self.length_minutes));
        Some(format!("{} to {}", start.format("%H:%M"), end.format("%H:%M")))
    }
}

impl MeetingSettings {
    /// The meeting on `date`: that date's own settings where given, else the defaults.
    pub fn slot(&self, date: NaiveDate) -> MeetingSlot {
        let day = self.on.get(&date);
        MeetingSlot {
            date,
            time: day.and_then(|d| d.time).or(self.time),
            length_minutes: day
                .and_then(|d| d.length_minutes)
                .or(self.length_minutes)
                .unwrap_or(DEFAULT_MEETING_MINUTES),
            place: day.and_then(|d| d.place.clone()).or_else(|| self.place.clone()),
        }
    }
}

/// Everything gatehouse needs to run, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, named in messages and used to resolve relative paths.
    pub path: PathBuf,
    pub service: ServiceSettings,
    pub imap: ImapSettings,
    pub smtp: SmtpSettings,
    pub gatekeepers: Vec<EmailAddress>,
    /// `[operator] addresses`: whoever looks after gatehouse; empty when not configured.
    /// Read through [`Config::alert_recipients`].
    pub operator: Vec<EmailAddress>,
    pub board: BoardSettings,
    pub meetings: MeetingSettings,
    pub priorities: BTreeMap<String, String>,
    /// Sender address or domain (lower-case) → organisation name.
    pub organisations: BTreeMap<String, String>,
    pub templates_dir: Option<PathBuf>,
    pub acknowledgements: AcknowledgementSettings,
    /// Who redirects approaches: a forward from a member speaks for its original sender.
    pub members: Members,
    pub triage: TriageSettings,
    /// The approach's attachments go with the gatekeeper's notification up to this many
    /// bytes in all (0: list them only).
    pub attach_max_bytes: usize,
    /// `[metrics] listen`: where `/metrics`, `/healthz` and `/readyz` are served; `None`
    /// (the default) serves nothing.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub retention: RetentionSettings,
    /// `[channel]`: the group's messaging channel.
    pub channel: ChannelSettings,
}

/// How long personal data is kept (`[retention]`; README "Retention" says why the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Days an incoming message's raw bytes (and so its attachments, which live only in
    /// them) are kept once processed, unless its request is still open.
    pub raw_messages_days: u32,
    /// Days the bytes and recipients of a sent email are kept.
    pub sent_mail_days: u32,
    /// Months a closed request keeps its personal data; then only its reference, dates,
    /// organisation, decision and priorities stay.
    pub closed_requests_months: u32,
}

/// How gatekeepers' replies are checked, and when they are reminded.
#[derive(Debug, Clone)]
pub struct TriageSettings {
    /// The receiving server's name in `Authentication-Results` (or `exchange-online` for
    /// Exchange Online's header, which has none); when set, a reply counts only when that
    /// server reports `dmarc=pass` or an aligned `dkim=pass` for the gatekeeper's domain.
    pub authserv_id: Option<String>,
    /// Requests awaiting triage this many working days (Monday to Friday) are in the daily
    /// reminder; 0 turns reminders off.
    pub remind_after_working_days: u32,
    /// The local hour (0-23) on working days after which the daily reminder goes.
    pub reminder_hour: u32,
    /// A requester asked for more work who has not replied after this many working days
    /// gets one polite reminder; 0 turns it off.
    pub more_work_nudge_days: u32,
}

/// When the requester is answered.
#[derive(Debug, Clone)]
pub struct AcknowledgementSettings {
    /// At most this many acknowledgements to one address in 24 hours, so a loop with
    /// another robot cannot run away (`+tags` count as the same address).
    pub rate_limit_per_day: u32,
    /// At most this many automatic answers to addresses in one domain in 24 hours, so
    /// made-up addresses cannot turn gatehouse into a relay towards one organisation.
    pub domain_limit_per_day: u32,
    /// At most this many automatic answers in all in one hour, whatever the addresses.
    pub limit_per_hour: u32,
    /// Whether the original sender of a forwarded approach is acknowledged (the forwarder
    /// always gets a short confirmation).
    pub acknowledge_forwarded: bool,
}

/// The practices, PCNs, federation and LMC who redirect approaches to the single point of
/// access (`[members]`). A forward from one of them is trusted to name its original sender,
/// who is then answered; anyone else's forward is logged but only the forwarder hears back.
#[derive(Debug, Clone, Default)]
pub struct Members {
    /// Lower-case domains; a sub-domain of one counts too.
    pub domains: Vec<String>,
    pub addresses: Vec<EmailAddress>,
}

impl Members {
    /// Whether `address` is a member: listed itself (any `+tag` ignored), or in a listed
    /// domain or a sub-domain of one.
    pub fn contains(&self, address: &EmailAddress) -> bool {
        let person = address.person();
        if self.addresses.iter().any(|a| a.person() == person) {
            return true;
        }
        let domain = address.domain();
        self.domains
            .iter()
            .any(|d| domain == d || domain.strip_suffix(d.as_str()).is_some_and(|head| head.ends_with('.')))
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            problem: format!("cannot read the config file ({e})"),
            fix: "check the path (--config, $GATEHOUSE_CONFIG or config/gatehouse.toml) and that the file is readable; config/gatehouse.example.toml is a starting point".into(),
        })?;
        Self::parse(&text, path)
    }

    /// Checks `text` as if read from `path` (which names the file in errors and anchors
    /// relative paths). Sections are checked in the order the example file lists them, so
    /// a file with several mistakes reports the first one an operator would read.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw = raw::read(text, path)?;
        let src = Source::new(path);
        let service = service::service(raw.service, &src)?;
        let imap = mail::imap(raw.imap, &service.data_dir, &src)?;
        let smtp = mail::smtp(raw.smtp, &imap.auth, &service.data_dir, &src)?;
        let gatekeepers = people::gatekeepers(&raw.gatekeepers, &src)?;
        let operator = people::addresses(&raw.operator.addresses, "operator.addresses", &src)?;
        let metrics_listen = service::metrics_listen(&raw.metrics, &src)?;
        let board = board::board(raw.board, &src)?;
        let meetings = board::meetings(raw.meetings, &src)?;
        let priorities = board::priorities(raw.priorities, &src)?;
        let organisations = people::organisations(raw.organisations, &src)?;
        let members = people::members(&raw.members, &src)?;
        let triage = board::triage(raw.triage, &src)?;
        let retention = service::retention(&raw.retention, &src)?;
        let templates_dir = service::templates_dir(&raw.templates, &src)?;
        let channel = channel::channel(raw.channel, &src)?;
        Ok(Config {
            path: path.to_path_buf(),
            service,
            imap,
            smtp,
            gatekeepers,
            operator,
            board,
            meetings,
            priorities,
            organisations,
            templates_dir,
            acknowledgements: people::acknowledgements(&raw.acknowledgements),
            members,
            triage,
            attach_max_bytes: raw.notifications.attach_max_bytes,
            metrics_listen,
            retention,
            channel,
        })
    }

    /// The config path the CLI uses: `--config`, then `$GATEHOUSE_CONFIG`, then
    /// `config/gatehouse.toml`.
    pub fn default_path(flag: Option<PathBuf>) -> PathBuf {
        flag.or_else(|| std::env::var_os("GATEHOUSE_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("config/gatehouse.toml"))
    }

    /// The organisation an address belongs to: an exact address entry beats a domain entry,
    /// and `mail.trust.nhs.uk` matches an entry for `trust.nhs.uk`.
    pub fn organisation_for(&self, address: &EmailAddress) -> Option<&str> {
        if let Some(name) = self.organisations.get(address.as_str()) {
            return Some(name);
        }
        let mut domain = address.domain();
        loop {
            if let Some(name) = self.organisations.get(domain) {
                return Some(name);
            }
            match domain.split_once('.') {
                Some((_, rest)) if rest.contains('.') => domain = rest,
                _ => return None,
            }
        }
    }

    pub fn is_gatekeeper(&self, address: &EmailAddress) -> bool {
        self.gatekeepers.contains(address)
    }

    /// Who technical alerts go to (a refused login, an expiring secret, the outbox failing,
    /// a disk filling up, and their "resolved" emails): the `[operator]` addresses, who can
    /// fix them, or the gatekeepers when no operator is configured.
    pub fn operator_recipients(&self) -> Vec<EmailAddress> {
        if self.operator.is_empty() { self.gatekeepers.clone() } else { self.operator.clone() }
    }

    /// Who alerts about one message or email go to (one set aside or not logged, an answer
    /// that cannot be delivered): the gatekeepers, who must read it or contact the sender
    /// another way, and the `[operator]` addresses, who can fix the cause.
    pub fn alert_recipients(&self) -> Vec<EmailAddress> {
        let mut to = self.gatekeepers.clone();
        to.extend(self.operator.iter().filter(|a| !self.gatekeepers.contains(a)).cloned());
        to
    }

    /// Whether a forward from `address` is trusted to name its original sender.
    pub fn is_member(&self, address: &EmailAddress) -> bool {
        self.members.contains(address)
    }

    /// The distinct OAuth2 token sources in use, named by their config section (SMTP
    /// sharing IMAP's settings counts once, as `imap.oauth2`).
    pub fn oauth_sections(&self) -> Vec<(&'static str, &OAuthSettings)> {
        let mut out: Vec<(&'static str, &OAuthSettings)> = Vec::new();
        if let Some(o) = self.imap.auth.oauth() {
            out.push(("imap.oauth2", o));
        }
        if let Some(o) = self.smtp.auth.as_ref().and_then(Auth::oauth)
            && !out.iter().any(|(_, s)| *s == o)
        {
            out.push(("smtp.oauth2", o));
        }
        out
    }
}

/// The file being checked: named in every error, and its folder anchors relative paths so
/// the daemon behaves the same whatever directory it was started from.
struct Source<'a> {
    path: &'a Path,
    base: PathBuf,
}

impl<'a> Source<'a> {
    fn new(path: &'a Path) -> Self {
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        Self { path, base }
    }

    fn err(&self, key: &str, problem: String, fix: &str) -> ConfigError {
        ConfigError { file: self.path.to_path_buf(), key: key.to_string(), problem, fix: fix.to_string() }
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { self.base.join(p) }
    }
}

mod board;
mod channel;
mod database;
mod mail;
mod oauth2;
mod people;
mod raw;
mod service;

pub use channel::ChannelSettings;
pub use database::{DatabaseSettings, DatabaseTls};
pub use mail::is_loopback;
pub use oauth2::{
    DEFAULT_APP_SCOPE, DEFAULT_DELEGATED_SCOPE, Flow, MICROSOFT_DEVICE_CODE_ENDPOINT,
    MICROSOFT_TOKEN_ENDPOINT, OAuthSettings,
};

#[cfg(test)]
pub(crate) mod tests;
