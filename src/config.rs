//! The configuration file: read once, checked completely, then handed around as typed settings.
//!
//! Operators edit this file by hand, so every mistake is reported as
//! `FILE: KEY: what is wrong. Fix: what to do` and the daemon refuses to start rather than
//! guess. Secrets are never in the file: it names their source (see [`crate::secret`]).
//! Relative paths are taken from the config file's folder, so the daemon behaves the same
//! whatever directory it was started from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::domain::EmailAddress;
use crate::oauth::{Flow, OAuthSettings};
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
    pub database_url: Option<String>,
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

/// The keys each section accepts. Checked before deserialising so that a misspelt key is
/// reported by its full name instead of being silently ignored.
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    (
        "service",
        &[
            "name",
            "timezone",
            "data_dir",
            "database_url",
            "reference_prefix",
            "disk_ballast_mib",
            "disk_warn_free_percent",
            "disk_warn_free_mib",
        ],
    ),
    (
        "imap",
        &[
            "host",
            "port",
            "security",
            "username",
            "password_env",
            "password_file",
            "tls_ca_file",
            "mailbox",
            "idle",
            "poll_interval_secs",
            "after_processing",
            "backlog",
            "timeout_secs",
            "max_message_bytes",
            "auth",
            "oauth2",
        ],
    ),
    ("imap.oauth2", OAUTH2_KEYS),
    (
        "smtp",
        &[
            "host",
            "port",
            "security",
            "username",
            "password_env",
            "password_file",
            "tls_ca_file",
            "from",
            "timeout_secs",
            "retry_initial_secs",
            "auth",
            "oauth2",
        ],
    ),
    ("smtp.oauth2", OAUTH2_KEYS),
    ("gatekeepers", &["addresses"]),
    ("operator", &["addresses"]),
    ("metrics", &["listen"]),
    ("board", &["addresses", "summary_schedule", "share_notes", "share_addresses"]),
    ("meetings", &["dates", "agenda_days_before", "time", "send_empty_agenda"]),
    ("templates", &["dir"]),
    (
        "acknowledgements",
        &["rate_limit_per_day", "domain_limit_per_day", "limit_per_hour", "acknowledge_forwarded"],
    ),
    ("members", &["domains", "addresses"]),
    ("triage", &["authserv_id", "remind_after_working_days", "reminder_hour"]),
    ("notifications", &["attach_max_bytes"]),
    ("retention", &["raw_messages_days", "sent_mail_days", "closed_requests_months"]),
    // Free-form tables: any key, string values.
    ("priorities", &["*"]),
    ("organisations", &["*"]),
];

const OAUTH2_KEYS: &[&str] = &[
    "flow",
    "tenant",
    "client_id",
    "client_secret_env",
    "client_secret_file",
    "scope",
    "token_endpoint",
    "device_code_endpoint",
    "refresh_token_file",
    "command",
    "tls_ca_file",
    "timeout_secs",
    "secret_expires",
    "secret_expires_warn_days",
];

#[derive(Deserialize, Clone)]
struct RawOAuth2 {
    flow: Option<String>,
    tenant: Option<String>,
    client_id: Option<String>,
    client_secret_env: Option<String>,
    client_secret_file: Option<String>,
    scope: Option<String>,
    token_endpoint: Option<String>,
    device_code_endpoint: Option<String>,
    refresh_token_file: Option<String>,
    command: Option<String>,
    tls_ca_file: Option<String>,
    #[serde(default = "default_oauth_timeout")]
    timeout_secs: u64,
    secret_expires: Option<String>,
    #[serde(default = "default_warn_days")]
    secret_expires_warn_days: u32,
}

fn default_oauth_timeout() -> u64 {
    30
}

fn default_warn_days() -> u32 {
    14
}

#[derive(Deserialize)]
struct RawConfig {
    service: RawService,
    imap: RawImap,
    smtp: RawSmtp,
    gatekeepers: RawAddresses,
    #[serde(default)]
    operator: RawAddresses,
    board: RawBoard,
    #[serde(default)]
    meetings: RawMeetings,
    #[serde(default)]
    priorities: BTreeMap<String, String>,
    #[serde(default)]
    organisations: BTreeMap<String, String>,
    #[serde(default)]
    templates: RawTemplates,
    #[serde(default)]
    acknowledgements: RawAcknowledgements,
    #[serde(default)]
    members: RawMembers,
    #[serde(default)]
    triage: RawTriage,
    #[serde(default)]
    notifications: RawNotifications,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    metrics: RawMetrics,
}

#[derive(Deserialize, Default)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Deserialize)]
struct RawRetention {
    #[serde(default = "default_raw_days")]
    raw_messages_days: u32,
    #[serde(default = "default_sent_days")]
    sent_mail_days: u32,
    #[serde(default = "default_closed_months")]
    closed_requests_months: u32,
}

impl Default for RawRetention {
    fn default() -> Self {
        Self {
            raw_messages_days: default_raw_days(),
            sent_mail_days: default_sent_days(),
            closed_requests_months: default_closed_months(),
        }
    }
}

fn default_raw_days() -> u32 {
    365
}

fn default_sent_days() -> u32 {
    365
}

fn default_closed_months() -> u32 {
    24
}

/// The longest any retention period may be set to: ten years, in days and in months.
const RETENTION_MAX_DAYS: u32 = 3653;
const RETENTION_MAX_MONTHS: u32 = 120;

#[derive(Deserialize)]
struct RawNotifications {
    #[serde(default = "default_attach_max")]
    attach_max_bytes: usize,
}

impl Default for RawNotifications {
    fn default() -> Self {
        Self { attach_max_bytes: default_attach_max() }
    }
}

fn default_attach_max() -> usize {
    10 * 1024 * 1024
}

#[derive(Deserialize)]
struct RawTriage {
    authserv_id: Option<String>,
    #[serde(default = "default_remind_days")]
    remind_after_working_days: u32,
    #[serde(default = "default_reminder_hour")]
    reminder_hour: u32,
}

impl Default for RawTriage {
    fn default() -> Self {
        Self {
            authserv_id: None,
            remind_after_working_days: default_remind_days(),
            reminder_hour: default_reminder_hour(),
        }
    }
}

fn default_remind_days() -> u32 {
    2
}

fn default_reminder_hour() -> u32 {
    8
}

#[derive(Deserialize)]
struct RawAcknowledgements {
    #[serde(default = "default_ack_limit")]
    rate_limit_per_day: u32,
    #[serde(default = "default_domain_limit")]
    domain_limit_per_day: u32,
    #[serde(default = "default_hour_limit")]
    limit_per_hour: u32,
    #[serde(default = "default_true")]
    acknowledge_forwarded: bool,
}

impl Default for RawAcknowledgements {
    fn default() -> Self {
        Self {
            rate_limit_per_day: default_ack_limit(),
            domain_limit_per_day: default_domain_limit(),
            limit_per_hour: default_hour_limit(),
            acknowledge_forwarded: true,
        }
    }
}

fn default_ack_limit() -> u32 {
    10
}

fn default_domain_limit() -> u32 {
    50
}

fn default_hour_limit() -> u32 {
    100
}

#[derive(Deserialize, Default)]
struct RawMembers {
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    addresses: Vec<String>,
}

#[derive(Deserialize)]
struct RawService {
    name: String,
    #[serde(default = "default_timezone")]
    timezone: String,
    #[serde(default = "default_data_dir")]
    data_dir: String,
    database_url: Option<String>,
    #[serde(default = "default_prefix")]
    reference_prefix: String,
    #[serde(default = "default_ballast_mib")]
    disk_ballast_mib: u64,
    #[serde(default = "default_warn_free_percent")]
    disk_warn_free_percent: u8,
    #[serde(default = "default_warn_free_mib")]
    disk_warn_free_mib: u64,
}

fn default_ballast_mib() -> u64 {
    8
}
fn default_warn_free_percent() -> u8 {
    5
}
fn default_warn_free_mib() -> u64 {
    200
}

fn default_timezone() -> String {
    "Europe/London".into()
}
fn default_data_dir() -> String {
    "data".into()
}
fn default_prefix() -> String {
    "GP".into()
}

#[derive(Deserialize)]
struct RawImap {
    host: String,
    port: Option<u16>,
    #[serde(default = "default_imap_security")]
    security: Security,
    username: String,
    password_env: Option<String>,
    password_file: Option<String>,
    tls_ca_file: Option<String>,
    #[serde(default = "default_mailbox")]
    mailbox: String,
    #[serde(default = "default_true")]
    idle: bool,
    #[serde(default = "default_poll")]
    poll_interval_secs: u64,
    #[serde(default = "default_after")]
    after_processing: String,
    #[serde(default = "default_backlog")]
    backlog: Backlog,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_max_message")]
    max_message_bytes: usize,
    auth: Option<String>,
    oauth2: Option<RawOAuth2>,
}

fn default_max_message() -> usize {
    40 * 1024 * 1024
}

fn default_imap_security() -> Security {
    Security::Tls
}
fn default_mailbox() -> String {
    "INBOX".into()
}
fn default_true() -> bool {
    true
}
fn default_poll() -> u64 {
    60
}
fn default_after() -> String {
    "keep".into()
}
fn default_backlog() -> Backlog {
    Backlog::LogOnly
}
fn default_timeout() -> u64 {
    60
}

#[derive(Deserialize)]
struct RawSmtp {
    host: String,
    port: Option<u16>,
    #[serde(default = "default_smtp_security")]
    security: Security,
    username: Option<String>,
    password_env: Option<String>,
    password_file: Option<String>,
    tls_ca_file: Option<String>,
    from: String,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_retry")]
    retry_initial_secs: u64,
    auth: Option<String>,
    oauth2: Option<RawOAuth2>,
}

fn default_retry() -> u64 {
    30
}

fn default_smtp_security() -> Security {
    Security::Starttls
}

#[derive(Deserialize, Default)]
struct RawAddresses {
    #[serde(default)]
    addresses: Vec<String>,
}

#[derive(Deserialize)]
struct RawBoard {
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default = "default_schedule")]
    summary_schedule: String,
    #[serde(default)]
    share_notes: bool,
    #[serde(default)]
    share_addresses: bool,
}

fn default_schedule() -> String {
    "0 8 * * MON".into()
}

#[derive(Deserialize, Default)]
struct RawMeetings {
    #[serde(default)]
    dates: Vec<String>,
    #[serde(default = "default_agenda_days")]
    agenda_days_before: u32,
    time: Option<String>,
    #[serde(default)]
    send_empty_agenda: bool,
}

fn default_agenda_days() -> u32 {
    3
}

#[derive(Deserialize, Default)]
struct RawTemplates {
    dir: Option<String>,
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
    /// relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let err = |key: &str, problem: String, fix: &str| ConfigError {
            file: path.to_path_buf(),
            key: key.to_string(),
            problem,
            fix: fix.to_string(),
        };

        let table: toml::Table = toml::from_str(text)
            .map_err(|e| err("", format!("not valid TOML: {}", e.message()), &toml_location(text, &e)))?;
        check_known_keys(&table, path)?;
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let key = toml_key_at(text, &e);
            let message = e.message().to_string();
            let fix = if message.starts_with("missing field") {
                "add it: config/gatehouse.example.toml shows every key".to_string()
            } else {
                format!("correct the value ({})", toml_location(text, &e))
            };
            err(&key, message, &fix)
        })?;

        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        let resolve = |p: &str| -> PathBuf {
            let p = PathBuf::from(p);
            if p.is_absolute() { p } else { base.join(p) }
        };

        // [service]
        let timezone: Tz = raw.service.timezone.parse().map_err(|_| {
            err(
                "service.timezone",
                format!("unknown timezone {:?}", raw.service.timezone),
                "use an IANA name such as \"Europe/London\"",
            )
        })?;
        let prefix = raw.service.reference_prefix.trim().to_string();
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(err(
                "service.reference_prefix",
                format!("{prefix:?} is not a usable prefix"),
                "use letters and digits only, e.g. \"GP\"",
            ));
        }
        if raw.service.disk_ballast_mib > 1024 {
            return Err(err(
                "service.disk_ballast_mib",
                format!("{} MiB is more room than a full disk needs", raw.service.disk_ballast_mib),
                "use a few MiB, e.g. 8, or 0 for no ballast",
            ));
        }
        if raw.service.disk_warn_free_percent > 50 {
            return Err(err(
                "service.disk_warn_free_percent",
                format!("{} is more than half the disk", raw.service.disk_warn_free_percent),
                "use a percentage from 0 (no warning) to 50, e.g. 5",
            ));
        }
        if raw.service.disk_warn_free_mib > 1 << 30 {
            return Err(err(
                "service.disk_warn_free_mib",
                format!("{} MiB is not a usable amount", raw.service.disk_warn_free_mib),
                "use an amount in MiB, e.g. 200, or 0 for no warning",
            ));
        }
        if let Some(url) = &raw.service.database_url {
            check_database_url(url).map_err(|p| {
                err(
                    "service.database_url",
                    p,
                    "use postgres://user@host/db and give the password in $PGPASSWORD, or remove the key to use SQLite",
                )
            })?;
        }

        // [imap]
        check_security(&raw.imap.host, raw.imap.security)
            .map_err(|p| err("imap.security", p, "use \"tls\" or \"starttls\" for a remote server"))?;
        let data_dir = resolve(&raw.service.data_dir);
        let imap_password =
            secret_source("imap", raw.imap.password_env, raw.imap.password_file, &resolve, path)?;
        let imap_auth = match auth_kind("imap", raw.imap.auth.as_deref(), path)? {
            AuthKind::Password => {
                if raw.imap.oauth2.is_some() {
                    return Err(err(
                        "imap.oauth2",
                        "[imap.oauth2] is only used with auth = \"xoauth2\"".into(),
                        "add auth = \"xoauth2\" to [imap], or remove [imap.oauth2]",
                    ));
                }
                Auth::Password(imap_password.ok_or_else(|| {
                    err(
                        "imap.password_env",
                        "no password source".into(),
                        "set password_env = \"GATEHOUSE_IMAP_PASSWORD\" (and export it) or password_file, or use auth = \"xoauth2\" with an [imap.oauth2] table",
                    )
                })?)
            }
            AuthKind::XOAuth2 => {
                if imap_password.is_some() {
                    return Err(err(
                        "imap.password_env",
                        "a password is not used with auth = \"xoauth2\"".into(),
                        "remove password_env/password_file from [imap]: the token comes from [imap.oauth2]",
                    ));
                }
                let Some(o) = raw.imap.oauth2.clone() else {
                    return Err(err(
                        "imap.oauth2",
                        "auth = \"xoauth2\" needs an [imap.oauth2] table saying where tokens come from"
                            .into(),
                        "add [imap.oauth2] with flow = \"client_credentials\", tenant, client_id and client_secret_env (see config/gatehouse.example.toml)",
                    ));
                };
                Auth::XOAuth2(oauth_settings("imap.oauth2", o, &resolve, &data_dir, path)?)
            }
        };
        let after_processing = match raw.imap.after_processing.trim() {
            "keep" => AfterProcessing::Keep,
            "seen" => AfterProcessing::Seen,
            other => match other.strip_prefix("move:") {
                Some(folder) if !folder.trim().is_empty() => AfterProcessing::Move(folder.trim().to_string()),
                _ => {
                    return Err(err(
                        "imap.after_processing",
                        format!("unknown value {other:?}"),
                        "use \"keep\", \"seen\" or \"move:Folder\"",
                    ));
                }
            },
        };
        if raw.imap.poll_interval_secs == 0 {
            return Err(err(
                "imap.poll_interval_secs",
                "must be at least 1".into(),
                "use 60 unless you have a reason",
            ));
        }
        let imap_tls_ca = raw.imap.tls_ca_file.as_deref().map(&resolve);
        check_file_exists(&imap_tls_ca, "imap.tls_ca_file", path)?;

        // [smtp]
        check_security(&raw.smtp.host, raw.smtp.security)
            .map_err(|p| err("smtp.security", p, "use \"tls\" or \"starttls\" for a remote server"))?;
        let smtp_password =
            secret_source("smtp", raw.smtp.password_env, raw.smtp.password_file, &resolve, path)?;
        let smtp_auth = match auth_kind("smtp", raw.smtp.auth.as_deref(), path)? {
            AuthKind::Password => {
                if raw.smtp.oauth2.is_some() {
                    return Err(err(
                        "smtp.oauth2",
                        "[smtp.oauth2] is only used with auth = \"xoauth2\"".into(),
                        "add auth = \"xoauth2\" to [smtp], or remove [smtp.oauth2]",
                    ));
                }
                if smtp_password.is_some() && raw.smtp.username.is_none() {
                    return Err(err(
                        "smtp.username",
                        "a password source is set but no username".into(),
                        "add username, or remove password_env/password_file",
                    ));
                }
                smtp_password.map(Auth::Password)
            }
            AuthKind::XOAuth2 => {
                if smtp_password.is_some() {
                    return Err(err(
                        "smtp.password_env",
                        "a password is not used with auth = \"xoauth2\"".into(),
                        "remove password_env/password_file from [smtp]: the token comes from [smtp.oauth2]",
                    ));
                }
                if raw.smtp.username.is_none() {
                    return Err(err(
                        "smtp.username",
                        "auth = \"xoauth2\" needs the mailbox to send as".into(),
                        "add username = \"gp-access@nhs.net\" (the shared mailbox)",
                    ));
                }
                let settings = match (raw.smtp.oauth2.clone(), &imap_auth) {
                    (Some(o), _) => oauth_settings("smtp.oauth2", o, &resolve, &data_dir, path)?,
                    // One app registration usually serves both: [imap.oauth2] is reused.
                    (None, Auth::XOAuth2(imap)) => imap.clone(),
                    (None, Auth::Password(_)) => {
                        return Err(err(
                            "smtp.oauth2",
                            "auth = \"xoauth2\" needs an [smtp.oauth2] table (or [imap.oauth2] to share)"
                                .into(),
                            "add [smtp.oauth2] with flow, tenant, client_id and client_secret_env",
                        ));
                    }
                };
                Some(Auth::XOAuth2(settings))
            }
        };
        let from = NamedAddress::parse(&raw.smtp.from).map_err(|e| {
            err("smtp.from", e.to_string(), "use \"Name <address@example.org>\" or a bare address")
        })?;
        let smtp_tls_ca = raw.smtp.tls_ca_file.as_deref().map(&resolve);
        check_file_exists(&smtp_tls_ca, "smtp.tls_ca_file", path)?;

        // [gatekeepers] and [board]
        let gatekeepers = parse_addresses(&raw.gatekeepers.addresses, "gatekeepers.addresses", path)?;
        if gatekeepers.is_empty() || gatekeepers.len() > 2 {
            return Err(err(
                "gatekeepers.addresses",
                format!(
                    "{} addresses given; the single point of access has one or two gatekeepers",
                    gatekeepers.len()
                ),
                "list one or two addresses",
            ));
        }
        let operator = parse_addresses(&raw.operator.addresses, "operator.addresses", path)?;
        let metrics_listen = raw
            .metrics
            .listen
            .as_deref()
            .map(|l| {
                l.trim().parse::<std::net::SocketAddr>().map_err(|_| {
                    err(
                        "metrics.listen",
                        format!("{l:?} is not an address and port"),
                        "write it as \"127.0.0.1:9464\" (loopback unless a monitoring server elsewhere must reach it), or remove it to serve no metrics",
                    )
                })
            })
            .transpose()?;
        let board_addresses = parse_addresses(&raw.board.addresses, "board.addresses", path)?;
        if let Some(id) = raw.triage.authserv_id.as_deref().map(str::trim)
            && id.contains(|c: char| c.is_whitespace() || c == ';' || c == '=')
        {
            return Err(err(
                "triage.authserv_id",
                format!("{id:?} is not a server name"),
                "give the name your receiving server writes first in Authentication-Results (e.g. \"mx.example.org\"), or \"exchange-online\" for Microsoft 365 / NHSmail",
            ));
        }
        let summary_schedule = CronSchedule::parse(&raw.board.summary_schedule).map_err(|e| {
            err(
                "board.summary_schedule",
                format!("{:?} is not a valid schedule ({e})", raw.board.summary_schedule),
                "use five-field cron: minute hour day-of-month month day-of-week, e.g. \"0 8 * * MON\"",
            )
        })?;

        // [meetings]
        let mut dates = Vec::new();
        for d in &raw.meetings.dates {
            let date = NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").map_err(|_| {
                err("meetings.dates", format!("{d:?} is not a date"), "write dates as YYYY-MM-DD")
            })?;
            dates.push(date);
        }
        dates.sort();
        dates.dedup();
        let meeting_time = match raw.meetings.time.as_deref().map(str::trim) {
            None => None,
            Some(t) => Some(NaiveTime::parse_from_str(t, "%H:%M").map_err(|_| {
                err(
                    "meetings.time",
                    format!("{t:?} is not a time of day"),
                    "write the local time the meetings start as HH:MM, e.g. \"13:00\", or remove it",
                )
            })?),
        };

        // [priorities] keys are typed by gatekeepers after `priority`.
        for key in raw.priorities.keys() {
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(err(
                    &format!("priorities.{key}"),
                    "a priority key must be one word".into(),
                    "use letters, digits, - or _ (e.g. workforce)",
                ));
            }
        }

        // [organisations]: an address or a domain each.
        let mut organisations = BTreeMap::new();
        for (key, name) in raw.organisations {
            let lower = key.trim().to_lowercase();
            let ok = if lower.contains('@') {
                EmailAddress::parse(&lower).is_ok()
            } else {
                EmailAddress::parse(&format!("x@{lower}")).is_ok()
            };
            if !ok {
                return Err(err(
                    &format!("organisations.\"{key}\""),
                    "not an email address or a domain".into(),
                    "use a sender address (\"jo.bloggs@nhs.net\") or a domain (\"anytown-icb.example\")",
                ));
            }
            organisations.insert(lower, name);
        }

        // [members]: domains and addresses whose forwards speak for the original sender.
        let mut member_domains = Vec::new();
        for d in &raw.members.domains {
            let domain = d.trim().trim_start_matches('@').to_lowercase();
            if domain.is_empty() || EmailAddress::parse_mailable(&format!("x@{domain}")).is_err() {
                return Err(err(
                    "members.domains",
                    format!("{d:?} is not a domain"),
                    "list domains like \"anytown-pcn.nhs.uk\" (no @); put single people in members.addresses",
                ));
            }
            if !member_domains.contains(&domain) {
                member_domains.push(domain);
            }
        }
        let members = Members {
            domains: member_domains,
            addresses: parse_addresses(&raw.members.addresses, "members.addresses", path)?,
        };

        if raw.triage.reminder_hour > 23 {
            return Err(err(
                "triage.reminder_hour",
                format!("{} is not an hour of the day", raw.triage.reminder_hour),
                "use 0 to 23, e.g. 8 for 08:00",
            ));
        }

        // [retention]
        for (key, value, max, unit) in [
            ("retention.raw_messages_days", raw.retention.raw_messages_days, RETENTION_MAX_DAYS, "days"),
            ("retention.sent_mail_days", raw.retention.sent_mail_days, RETENTION_MAX_DAYS, "days"),
            (
                "retention.closed_requests_months",
                raw.retention.closed_requests_months,
                RETENTION_MAX_MONTHS,
                "months",
            ),
        ] {
            if value == 0 || value > max {
                return Err(err(
                    key,
                    format!("{value} {unit} is not a usable retention period"),
                    &format!("use 1 to {max} {unit}; remove the key for the default (README: Retention)"),
                ));
            }
        }

        // [templates]
        let templates_dir = raw.templates.dir.as_deref().map(&resolve);
        if let Some(dir) = &templates_dir
            && !dir.is_dir()
        {
            return Err(err(
                "templates.dir",
                format!("the folder {} does not exist", dir.display()),
                "create it (it may be empty) or remove the key to use the built-in templates",
            ));
        }

        Ok(Config {
            path: path.to_path_buf(),
            service: ServiceSettings {
                name: raw.service.name,
                timezone,
                data_dir,
                database_url: raw.service.database_url,
                reference_prefix: prefix.to_ascii_uppercase(),
                disk_ballast_bytes: raw.service.disk_ballast_mib << 20,
                disk_warn_free_percent: raw.service.disk_warn_free_percent,
                disk_warn_free_bytes: raw.service.disk_warn_free_mib << 20,
            },
            imap: ImapSettings {
                port: raw.imap.port.unwrap_or(match raw.imap.security {
                    Security::Tls => 993,
                    _ => 143,
                }),
                host: raw.imap.host,
                security: raw.imap.security,
                username: raw.imap.username,
                auth: imap_auth,
                tls_ca_file: imap_tls_ca,
                mailbox: raw.imap.mailbox,
                idle: raw.imap.idle,
                poll_interval: Duration::from_secs(raw.imap.poll_interval_secs),
                after_processing,
                backlog: raw.imap.backlog,
                timeout: Duration::from_secs(raw.imap.timeout_secs.max(1)),
                max_message_bytes: raw.imap.max_message_bytes,
            },
            smtp: SmtpSettings {
                port: raw.smtp.port.unwrap_or(match raw.smtp.security {
                    Security::Tls => 465,
                    Security::Starttls => 587,
                    Security::Plain => 25,
                }),
                host: raw.smtp.host,
                security: raw.smtp.security,
                username: raw.smtp.username,
                auth: smtp_auth,
                tls_ca_file: smtp_tls_ca,
                from,
                timeout: Duration::from_secs(raw.smtp.timeout_secs.max(1)),
                retry_initial: Duration::from_secs(raw.smtp.retry_initial_secs.max(1)),
            },
            gatekeepers,
            operator,
            board: BoardSettings {
                addresses: board_addresses,
                summary_schedule,
                share_notes: raw.board.share_notes,
                share_addresses: raw.board.share_addresses,
            },
            meetings: MeetingSettings {
                dates,
                agenda_days_before: raw.meetings.agenda_days_before,
                time: meeting_time,
                send_empty_agenda: raw.meetings.send_empty_agenda,
            },
            priorities: raw.priorities,
            organisations,
            templates_dir,
            attach_max_bytes: raw.notifications.attach_max_bytes,
            metrics_listen,
            retention: RetentionSettings {
                raw_messages_days: raw.retention.raw_messages_days,
                sent_mail_days: raw.retention.sent_mail_days,
                closed_requests_months: raw.retention.closed_requests_months,
            },
            triage: TriageSettings {
                authserv_id: raw.triage.authserv_id.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
                remind_after_working_days: raw.triage.remind_after_working_days,
                reminder_hour: raw.triage.reminder_hour,
            },
            acknowledgements: AcknowledgementSettings {
                rate_limit_per_day: raw.acknowledgements.rate_limit_per_day,
                domain_limit_per_day: raw.acknowledgements.domain_limit_per_day,
                limit_per_hour: raw.acknowledgements.limit_per_hour,
                acknowledge_forwarded: raw.acknowledgements.acknowledge_forwarded,
            },
            members,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthKind {
    Password,
    XOAuth2,
}

fn auth_kind(section: &str, value: Option<&str>, path: &Path) -> Result<AuthKind, ConfigError> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("password") => Ok(AuthKind::Password),
        Some("xoauth2") | Some("oauth2") => Ok(AuthKind::XOAuth2),
        Some(other) => Err(ConfigError {
            file: path.to_path_buf(),
            key: format!("{section}.auth"),
            problem: format!("unknown value {other:?}"),
            fix: "use \"password\" (the default) or \"xoauth2\" (Microsoft 365 / NHSmail, Gmail)".into(),
        }),
    }
}

/// Checks one `[imap.oauth2]` / `[smtp.oauth2]` table.
fn oauth_settings(
    section: &str,
    raw: RawOAuth2,
    resolve: &dyn Fn(&str) -> PathBuf,
    data_dir: &Path,
    path: &Path,
) -> Result<OAuthSettings, ConfigError> {
    let err = |key: &str, problem: String, fix: &str| ConfigError {
        file: path.to_path_buf(),
        key: format!("{section}.{key}"),
        problem,
        fix: fix.to_string(),
    };
    let flow_name = raw.flow.as_deref().map(str::trim).unwrap_or_default().to_string();
    let need = |key: &str, value: &Option<String>, example: &str| -> Result<String, ConfigError> {
        match value.as_deref().map(str::trim) {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => {
                Err(err(key, format!("flow = {flow_name:?} needs {key}"), &format!("add {key} = {example}")))
            }
        }
    };
    let not_here = |key: &str, value: &Option<String>| -> Result<(), ConfigError> {
        match value {
            Some(_) => Err(err(key, format!("{key} is not used with flow = {flow_name:?}"), "remove it")),
            None => Ok(()),
        }
    };
    let tenant_ok =
        |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let endpoint = |key: &str,
                    value: &Option<String>,
                    default: &str,
                    tenant: &str|
     -> Result<String, ConfigError> {
        let url = value.as_deref().map(str::trim).unwrap_or(default).replace("{tenant}", tenant);
        check_endpoint(&url).map_err(|p| {
            err(key, p, "use an https:// URL (http:// is only allowed to this machine), or remove the key for Microsoft's")
        })?;
        Ok(url)
    };
    let client_secret = |required: bool| -> Result<Option<SecretSource>, ConfigError> {
        match (&raw.client_secret_env, &raw.client_secret_file) {
            (Some(_), Some(_)) => Err(err(
                "client_secret_file",
                "both client_secret_env and client_secret_file are set".into(),
                "keep one of them",
            )),
            (Some(var), None) if var.trim().is_empty() || var.contains(char::is_whitespace) => Err(err(
                "client_secret_env",
                format!("{var:?} is not an environment variable name"),
                "name the variable that holds the client secret, e.g. \"GATEHOUSE_OAUTH_CLIENT_SECRET\" (the secret itself never goes in this file)",
            )),
            (Some(var), None) => Ok(Some(SecretSource::Env(var.trim().to_string()))),
            (None, Some(file)) => Ok(Some(SecretSource::File(resolve(file)))),
            (None, None) if required => Err(err(
                "client_secret_env",
                "no client secret source".into(),
                "set client_secret_env = \"GATEHOUSE_OAUTH_CLIENT_SECRET\" (and export it) or client_secret_file",
            )),
            (None, None) => Ok(None),
        }
    };
    let tenant_of = |flow: &str| -> Result<String, ConfigError> {
        let tenant = need("tenant", &raw.tenant, "\"contoso.onmicrosoft.com\" (or the directory ID)")?;
        if !tenant_ok(&tenant) {
            return Err(err(
                "tenant",
                format!("{tenant:?} is not a tenant name or ID"),
                &format!("use the directory (tenant) ID or domain from Entra ID, for {flow}"),
            ));
        }
        Ok(tenant)
    };
    let (flow, default_scope) = match flow_name.as_str() {
        "client_credentials" => {
            not_here("command", &raw.command)?;
            not_here("refresh_token_file", &raw.refresh_token_file)?;
            not_here("device_code_endpoint", &raw.device_code_endpoint)?;
            let tenant = tenant_of("client_credentials")?;
            let client_id =
                need("client_id", &raw.client_id, "\"<the app registration's Application (client) ID>\"")?;
            let client_secret = client_secret(true)?.ok_or_else(|| {
                err("client_secret_env", "no client secret source".into(), "set client_secret_env")
            })?;
            (Flow::ClientCredentials { tenant, client_id, client_secret }, crate::oauth::DEFAULT_APP_SCOPE)
        }
        "refresh_token" => {
            not_here("command", &raw.command)?;
            let tenant = tenant_of("refresh_token")?;
            let client_id =
                need("client_id", &raw.client_id, "\"<the app registration's Application (client) ID>\"")?;
            if !client_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_') {
                return Err(err(
                    "client_id",
                    format!("{client_id:?} is not a client ID"),
                    "copy the Application (client) ID from Entra ID",
                ));
            }
            let refresh_token_file = match &raw.refresh_token_file {
                Some(f) => resolve(f),
                None => data_dir.join(format!("oauth2-{client_id}.refresh_token")),
            };
            let device_code_endpoint = endpoint(
                "device_code_endpoint",
                &raw.device_code_endpoint,
                crate::oauth::MICROSOFT_DEVICE_CODE_ENDPOINT,
                &tenant,
            )?;
            (
                Flow::RefreshToken {
                    tenant,
                    client_id,
                    client_secret: client_secret(false)?,
                    refresh_token_file,
                    device_code_endpoint,
                },
                crate::oauth::DEFAULT_DELEGATED_SCOPE,
            )
        }
        "token_command" => {
            for (key, value) in [
                ("tenant", &raw.tenant),
                ("client_id", &raw.client_id),
                ("client_secret_env", &raw.client_secret_env),
                ("client_secret_file", &raw.client_secret_file),
                ("refresh_token_file", &raw.refresh_token_file),
                ("token_endpoint", &raw.token_endpoint),
                ("device_code_endpoint", &raw.device_code_endpoint),
            ] {
                not_here(key, value)?;
            }
            let command = need("command", &raw.command, "\"/usr/local/bin/get-token gp-access@nhs.net\"")?;
            (Flow::TokenCommand { command }, "")
        }
        "" => {
            return Err(err(
                "flow",
                "no flow: where do access tokens come from?".into(),
                "add flow = \"client_credentials\" (app-only, Microsoft 365), \"refresh_token\" (delegated, after `gatehouse oauth login`) or \"token_command\"",
            ));
        }
        other => {
            return Err(err(
                "flow",
                format!("unknown flow {other:?}"),
                "use \"client_credentials\", \"refresh_token\" or \"token_command\"",
            ));
        }
    };
    let token_endpoint = match &flow {
        Flow::ClientCredentials { tenant, .. } | Flow::RefreshToken { tenant, .. } => {
            endpoint("token_endpoint", &raw.token_endpoint, crate::oauth::MICROSOFT_TOKEN_ENDPOINT, tenant)?
        }
        Flow::TokenCommand { .. } => String::new(),
    };
    let secret_expires = match raw.secret_expires.as_deref().map(str::trim) {
        Some(d) => Some(NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
            err(
                "secret_expires",
                format!("{d:?} is not a date"),
                "write the client secret's expiry date (Entra ID → Certificates & secrets → Expires) as YYYY-MM-DD",
            )
        })?),
        None => None,
    };
    let tls_ca_file = raw.tls_ca_file.as_deref().map(resolve);
    check_file_exists(&tls_ca_file, &format!("{section}.tls_ca_file"), path)?;
    Ok(OAuthSettings {
        scope: raw.scope.map(|s| s.trim().to_string()).unwrap_or_else(|| default_scope.to_string()),
        flow,
        token_endpoint,
        tls_ca_file,
        timeout: Duration::from_secs(raw.timeout_secs.max(1)),
        secret_expires,
        secret_expires_warn_days: raw.secret_expires_warn_days,
    })
}

/// Token endpoints carry secrets, so they are https, except to this machine (tests).
fn check_endpoint(url: &str) -> Result<(), String> {
    if let Some(rest) = url.strip_prefix("https://") {
        return if rest.is_empty() { Err(format!("{url:?} has no host")) } else { Ok(()) };
    }
    if let Some(rest) = url.strip_prefix("http://") {
        let authority = rest.split('/').next().unwrap_or_default();
        let host = match authority.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        };
        return if is_loopback(host) {
            Ok(())
        } else {
            Err(format!("{url:?} is plain http, which would send secrets unencrypted"))
        };
    }
    Err(format!("{url:?} is not an https:// URL"))
}

fn check_known_keys(table: &toml::Table, path: &Path) -> Result<(), ConfigError> {
    for (section, value) in table {
        let Some((_, keys)) = KNOWN_KEYS.iter().find(|(name, _)| name == section) else {
            let sections: Vec<_> = KNOWN_KEYS.iter().map(|(n, _)| format!("[{n}]")).collect();
            return Err(ConfigError {
                file: path.to_path_buf(),
                key: section.clone(),
                problem: "unknown section or key".into(),
                fix: format!("remove it or check its spelling; sections are {}", sections.join(", ")),
            });
        };
        let Some(inner) = value.as_table() else {
            return Err(ConfigError {
                file: path.to_path_buf(),
                key: section.clone(),
                problem: "expected a [section], found a plain value".into(),
                fix: format!("write it as a [{section}] table"),
            });
        };
        if keys == &["*"] {
            for (key, v) in inner {
                if !v.is_str() {
                    return Err(ConfigError {
                        file: path.to_path_buf(),
                        key: format!("{section}.{key}"),
                        problem: "expected a quoted string".into(),
                        fix: format!("write it as {key} = \"…\""),
                    });
                }
            }
            continue;
        }
        for (key, v) in inner {
            if !keys.contains(&key.as_str()) {
                return Err(ConfigError {
                    file: path.to_path_buf(),
                    key: format!("{section}.{key}"),
                    problem: "unknown key".into(),
                    fix: format!("remove it or check its spelling; [{section}] takes {}", keys.join(", ")),
                });
            }
            // Sub-tables such as [imap.oauth2] have their own keys.
            let dotted = format!("{section}.{key}");
            if let Some((_, sub_keys)) = KNOWN_KEYS.iter().find(|(name, _)| *name == dotted) {
                let Some(sub) = v.as_table() else {
                    return Err(ConfigError {
                        file: path.to_path_buf(),
                        key: dotted.clone(),
                        problem: "expected a [section], found a plain value".into(),
                        fix: format!("write it as a [{dotted}] table"),
                    });
                };
                for sub_key in sub.keys() {
                    if !sub_keys.contains(&sub_key.as_str()) {
                        return Err(ConfigError {
                            file: path.to_path_buf(),
                            key: format!("{dotted}.{sub_key}"),
                            problem: "unknown key".into(),
                            fix: format!(
                                "remove it or check its spelling; [{dotted}] takes {}",
                                sub_keys.join(", ")
                            ),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

fn secret_source(
    section: &str,
    env: Option<String>,
    file: Option<String>,
    resolve: &dyn Fn(&str) -> PathBuf,
    path: &Path,
) -> Result<Option<SecretSource>, ConfigError> {
    match (env, file) {
        (Some(_), Some(_)) => Err(ConfigError {
            file: path.to_path_buf(),
            key: format!("{section}.password_file"),
            problem: "both password_env and password_file are set".into(),
            fix: "keep one of them".into(),
        }),
        (Some(var), None) if var.trim().is_empty() || var.contains(char::is_whitespace) => {
            Err(ConfigError {
                file: path.to_path_buf(),
                key: format!("{section}.password_env"),
                problem: format!("{var:?} is not an environment variable name"),
                fix: "name the variable that holds the password, e.g. \"GATEHOUSE_IMAP_PASSWORD\" (the password itself never goes in this file)".into(),
            })
        }
        (Some(var), None) => Ok(Some(SecretSource::Env(var))),
        (None, Some(file)) => Ok(Some(SecretSource::File(resolve(&file)))),
        (None, None) => Ok(None),
    }
}

fn check_file_exists(file: &Option<PathBuf>, key: &str, path: &Path) -> Result<(), ConfigError> {
    match file {
        Some(f) if !f.is_file() => Err(ConfigError {
            file: path.to_path_buf(),
            key: key.into(),
            problem: format!("the file {} does not exist", f.display()),
            fix: "give the path of a PEM file (relative paths start from the config file's folder)".into(),
        }),
        _ => Ok(()),
    }
}

/// `plain` sends passwords and patient-adjacent mail in clear text, so it is only allowed
/// to this machine.
fn check_security(host: &str, security: Security) -> Result<(), String> {
    if security == Security::Plain && !is_loopback(host) {
        return Err(format!("\"plain\" (unencrypted) is only allowed to this machine, not to {host:?}"));
    }
    Ok(())
}

pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

fn check_database_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://")) else {
        return Err(format!("{url:?} is not a postgres:// URL"));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && userinfo.contains(':')
    {
        return Err("the URL contains a password, and secrets never go in this file".into());
    }
    Ok(())
}

fn parse_addresses(list: &[String], key: &str, path: &Path) -> Result<Vec<EmailAddress>, ConfigError> {
    let mut out = Vec::new();
    for item in list {
        // gatehouse writes to these, so they must be addresses mail can be sent to.
        let address = EmailAddress::parse_mailable(item).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: key.into(),
            problem: e.to_string(),
            fix: "write bare addresses like \"jane.doe@nhs.net\"".into(),
        })?;
        if !out.contains(&address) {
            out.push(address);
        }
    }
    Ok(out)
}

/// "line 12, column 3" for a TOML error, so the operator can find it.
fn toml_location(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or_default();
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
            format!("see line {line}, column {column}")
        }
        None => "see config/gatehouse.example.toml".into(),
    }
}

/// The dotted key a TOML error points at, found from the error's span: the section header
/// above it and the key on its line.
fn toml_key_at(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return String::new();
    };
    // Include the line the span starts on: a missing-field error points at the [section]
    // header itself.
    let line_end = text.get(span.start..).and_then(|t| t.find('\n')).map_or(text.len(), |i| span.start + i);
    let before = text.get(..line_end).unwrap_or_default();
    let section = before
        .lines()
        .rev()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix('[').and_then(|l| l.strip_suffix(']')).map(str::to_string)
        })
        .next();
    let line_start = text.get(..span.start).and_then(|t| t.rfind('\n')).map(|i| i + 1).unwrap_or(0);
    let line = text.get(line_start..).and_then(|l| l.lines().next()).unwrap_or_default();
    let key = line.split_once('=').map(|(k, _)| k.trim().to_string()).filter(|k| !k.starts_with('['));
    let missing = e.message().strip_prefix("missing field `").and_then(|m| m.split('`').next());
    match (section, key, missing) {
        (Some(s), _, Some(m)) => format!("{s}.{m}"),
        (None, _, Some(m)) => m.to_string(),
        (Some(s), Some(k), None) => format!("{s}.{k}"),
        (Some(s), None, None) => s,
        (None, Some(k), None) => k,
        (None, None, None) => String::new(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const VALID: &str = r#"
[service]
name = "Anytown General Practice Leadership Group"
timezone = "Europe/London"
data_dir = "data"
reference_prefix = "GP"

[imap]
host = "outlook.office365.com"
port = 993
security = "tls"
username = "gp-access@nhs.net"
password_env = "GATEHOUSE_IMAP_PASSWORD"
mailbox = "INBOX"
idle = true
poll_interval_secs = 60

[smtp]
host = "smtp.office365.com"
port = 587
security = "starttls"
username = "gp-access@nhs.net"
password_env = "GATEHOUSE_SMTP_PASSWORD"
from = "Anytown GP Single Point of Access <gp-access@nhs.net>"

[gatekeepers]
addresses = ["jane.doe@nhs.net", "sam.patel@nhs.net"]

[board]
addresses = ["pcn-cds@nhs.net", "lmc.chair@example.org"]
summary_schedule = "0 8 * * MON"

[meetings]
dates = ["2026-12-03", "2027-01-07"]
agenda_days_before = 3

[priorities]
resilience = "Strengthening resilience support for local practices"
workforce = "Recruiting hard-to-find staff groups"

[organisations]
"anytown-icb.example" = "Anytown ICB"
"jo.bloggs@nhs.net" = "Anytown Hospitals NHS Trust"
"nhs.net" = "NHSmail"
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/gatehouse/gatehouse.toml"))
    }

    #[test]
    fn the_product_example_loads() {
        let c = load(VALID).unwrap();
        assert_eq!(c.gatekeepers.len(), 2);
        assert_eq!(c.service.data_dir, PathBuf::from("/etc/gatehouse/data"));
        assert_eq!(c.smtp.from.name.as_deref(), Some("Anytown GP Single Point of Access"));
        assert_eq!(c.imap.after_processing, AfterProcessing::Keep);
        // What the board sees of requesters and of the gatekeepers' notes: nothing unless asked.
        assert!(!c.board.share_notes && !c.board.share_addresses);
        let shared = load(&VALID.replace(
            "summary_schedule = \"0 8 * * MON\"",
            "summary_schedule = \"0 8 * * MON\"\nshare_notes = true\nshare_addresses = true",
        ))
        .unwrap();
        assert!(shared.board.share_notes && shared.board.share_addresses);
    }

    #[test]
    fn retention_defaults_to_a_year_of_mail_and_two_years_of_closed_requests_and_refuses_nonsense() {
        let c = load(VALID).unwrap();
        assert_eq!(
            c.retention,
            RetentionSettings { raw_messages_days: 365, sent_mail_days: 365, closed_requests_months: 24 }
        );
        let set = |extra: &str| VALID.replace("[board]", &format!("[retention]\n{extra}\n\n[board]"));
        let c = load(&set("raw_messages_days = 90\nclosed_requests_months = 36")).unwrap();
        assert_eq!((c.retention.raw_messages_days, c.retention.sent_mail_days), (90, 365));
        assert_eq!(c.retention.closed_requests_months, 36);
        let e = load(&set("sent_mail_days = 0")).unwrap_err();
        assert_eq!(e.key, "retention.sent_mail_days");
        assert!(e.fix.contains("1 to 3653 days"), "{}", e.fix);
        assert_eq!(
            load(&set("closed_requests_months = 121")).unwrap_err().key,
            "retention.closed_requests_months"
        );
        assert_eq!(load(&set("attachments_days = 30")).unwrap_err().key, "retention.attachments_days");
    }

    #[test]
    fn alerts_go_to_the_gatekeepers_and_any_operator_once_each() {
        let c = load(VALID).unwrap();
        assert_eq!(c.alert_recipients(), c.gatekeepers);
        assert_eq!(c.operator_recipients(), c.gatekeepers);
        let with = VALID.replace(
            "[board]",
            "[operator]\naddresses = [\"IT@Example.org\", \"jane.doe@nhs.net\"]\n\n[board]",
        );
        let c = load(&with).unwrap();
        let to: Vec<String> = c.alert_recipients().iter().map(ToString::to_string).collect();
        assert_eq!(to, ["jane.doe@nhs.net", "sam.patel@nhs.net", "it@example.org"]);
        let technical: Vec<String> = c.operator_recipients().iter().map(ToString::to_string).collect();
        assert_eq!(technical, ["it@example.org", "jane.doe@nhs.net"]);
        let bad = VALID.replace("[board]", "[operator]\naddresses = [\"it@nhs\"]\n\n[board]");
        assert_eq!(load(&bad).unwrap_err().key, "operator.addresses");
        let unknown = VALID.replace("[board]", "[operator]\nemail = \"it@example.org\"\n\n[board]");
        assert_eq!(load(&unknown).unwrap_err().key, "operator.email");
    }

    #[test]
    fn metrics_listen_is_off_unless_given_and_must_be_an_address_and_port() {
        assert_eq!(load(VALID).unwrap().metrics_listen, None);
        let on = VALID.replace("[board]", "[metrics]\nlisten = \"127.0.0.1:9464\"\n\n[board]");
        assert_eq!(load(&on).unwrap().metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        for bad in ["localhost", "127.0.0.1", "9464", ""] {
            let text = VALID.replace("[board]", &format!("[metrics]\nlisten = \"{bad}\"\n\n[board]"));
            let e = load(&text).unwrap_err();
            assert_eq!(e.key, "metrics.listen", "{bad}");
        }
        let unknown = VALID.replace("[board]", "[metrics]\nport = 9464\n\n[board]");
        assert_eq!(load(&unknown).unwrap_err().key, "metrics.port");
    }

    #[test]
    fn organisations_prefer_the_exact_address_then_the_closest_domain() {
        let c = load(VALID).unwrap();
        let org = |a: &str| c.organisation_for(&EmailAddress::parse(a).unwrap()).map(str::to_string);
        assert_eq!(org("jo.bloggs@nhs.net").as_deref(), Some("Anytown Hospitals NHS Trust"));
        assert_eq!(org("someone@nhs.net").as_deref(), Some("NHSmail"));
        assert_eq!(org("a@mail.anytown-icb.example").as_deref(), Some("Anytown ICB"));
        assert_eq!(org("a@elsewhere.org"), None);
    }

    #[test]
    fn members_are_addresses_or_domains_and_their_sub_domains() {
        let c = load(VALID).unwrap();
        assert!(c.members.domains.is_empty() && c.members.addresses.is_empty());
        assert_eq!(c.acknowledgements.domain_limit_per_day, 50);
        assert_eq!(c.acknowledgements.limit_per_hour, 100);
        let text = VALID.replace(
            "[priorities]\n",
            "[members]\ndomains = [\"Anytown-PCN.nhs.test\"]\naddresses = [\"LMC.Secretary@example.org\"]\n[priorities]\n",
        );
        let c = load(&text).unwrap();
        let member = |a: &str| c.is_member(&EmailAddress::parse(a).unwrap());
        assert!(member("pm@anytown-pcn.nhs.test"));
        assert!(member("pm@mail.anytown-pcn.nhs.test"));
        assert!(!member("pm@evil-anytown-pcn.nhs.test"));
        assert!(!member("pm@nhs.test"));
        assert!(member("lmc.secretary@example.org"));
        assert!(member("lmc.secretary+forwards@example.org"));
        assert!(!member("someone.else@example.org"));
    }

    #[test]
    fn debug_output_never_contains_a_secret_value() {
        // SAFETY of the test: the variable name is unique to this test.
        unsafe { std::env::set_var("GATEHOUSE_IMAP_PASSWORD_DEBUG_TEST", "pw-that-must-not-leak") };
        let text = VALID.replace("GATEHOUSE_IMAP_PASSWORD", "GATEHOUSE_IMAP_PASSWORD_DEBUG_TEST");
        let c = load(&text).unwrap();
        let Auth::Password(source) = &c.imap.auth else { panic!("password auth expected") };
        let secret = source.load().unwrap();
        assert_eq!(secret.expose(), "pw-that-must-not-leak");
        assert!(!format!("{c:?} {secret:?}").contains("pw-that-must-not-leak"));
    }

    /// Each bad config must be refused with a message naming the file and the key.
    #[test]
    fn each_config_error_names_the_file_and_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("[imap]\n", "[imap]\nhots = \"x\"\n", "imap.hots"),
            ("[board]\n", "[bored]\nx = 1\n[board]\n", "bored"),
            (
                "addresses = [\"jane.doe@nhs.net\", \"sam.patel@nhs.net\"]",
                "addresses = []",
                "gatekeepers.addresses",
            ),
            (
                "addresses = [\"jane.doe@nhs.net\", \"sam.patel@nhs.net\"]",
                "addresses = [\"a@nhs.net\", \"b@nhs.net\", \"c@nhs.net\"]",
                "gatekeepers.addresses",
            ),
            ("security = \"tls\"", "security = \"plain\"", "imap.security"),
            ("security = \"starttls\"", "security = \"plain\"", "smtp.security"),
            ("timezone = \"Europe/London\"", "timezone = \"Europe/Londn\"", "service.timezone"),
            (
                "summary_schedule = \"0 8 * * MON\"",
                "summary_schedule = \"0 8 * MON\"",
                "board.summary_schedule",
            ),
            (
                "summary_schedule = \"0 8 * * MON\"",
                "summary_schedule = \"0 25 * * MON\"",
                "board.summary_schedule",
            ),
            ("\"pcn-cds@nhs.net\"", "\"pcn-cds-at-nhs.net\"", "board.addresses"),
            ("\"jane.doe@nhs.net\",", "\"jane.doe@nhs\",", "gatekeepers.addresses"),
            ("<gp-access@nhs.net>\"", "<gp-access>\"", "smtp.from"),
            ("[meetings]\n", "[templates]\ndir = \"no-such-folder\"\n[meetings]\n", "templates.dir"),
            ("\"2026-12-03\"", "\"3 Dec 2026\"", "meetings.dates"),
            ("agenda_days_before = 3", "agenda_days_before = 3\ntime = \"1pm\"", "meetings.time"),
            ("agenda_days_before = 3", "agenda_days_before = 3\ntime = \"25:00\"", "meetings.time"),
            (
                "agenda_days_before = 3",
                "agenda_days_before = 3\nsend_empty_agenda = \"no\"",
                "meetings.send_empty_agenda",
            ),
            ("agenda_days_before = 3", "agenda_days_before = 3\nsend_empty = true", "meetings.send_empty"),
            ("port = 993", "port = \"nine\"", "imap.port"),
            ("name = \"Anytown General Practice Leadership Group\"\n", "", "service.name"),
            ("password_env = \"GATEHOUSE_IMAP_PASSWORD\"\n", "", "imap.password_env"),
            ("mailbox = \"INBOX\"", "after_processing = \"delete\"", "imap.after_processing"),
            ("# database", "database_url = \"postgres://u:pw@db/g\"", "service.database_url"),
            ("\"sam.patel@nhs.net\"]", "\"sam..patel@nhs.net\"]", "gatekeepers.addresses"),
            ("[priorities]\n", "[members]\ndomains = [\"not a domain\"]\n[priorities]\n", "members.domains"),
            ("[priorities]\n", "[members]\naddresses = [\"lmc\"]\n[priorities]\n", "members.addresses"),
            ("[priorities]\n", "[members]\nfriends = []\n[priorities]\n", "members.friends"),
            (
                "[priorities]\n",
                "[acknowledgements]\nlimit_per_hour = -1\n[priorities]\n",
                "acknowledgements.limit_per_hour",
            ),
            (
                "[meetings]\n",
                "[triage]\nauthserv_id = \"mx.nhs.net; dmarc=pass\"\n[meetings]\n",
                "triage.authserv_id",
            ),
            (
                "summary_schedule = \"0 8 * * MON\"",
                "summary_schedule = \"0 8 * * MON\"\nshare_note = true",
                "board.share_note",
            ),
            (
                "summary_schedule = \"0 8 * * MON\"",
                "summary_schedule = \"0 8 * * MON\"\nshare_notes = \"yes\"",
                "board.share_notes",
            ),
        ];
        for (from, to, key) in cases {
            let text = if *from == "# database" {
                VALID.replace("reference_prefix = \"GP\"", &format!("reference_prefix = \"GP\"\n{to}"))
            } else {
                assert!(VALID.contains(from), "test case pattern {from:?} not in example");
                VALID.replacen(from, to, 1)
            };
            let e = load(&text).expect_err(&format!("accepted config with {to:?}"));
            let msg = e.to_string();
            assert_eq!(e.key, *key, "wrong key for {to:?}: {msg}");
            assert!(msg.starts_with("/etc/gatehouse/gatehouse.toml: "), "{msg}");
            assert!(msg.contains(key), "{msg}");
            assert!(msg.contains("Fix: "), "{msg}");
        }
    }

    /// VALID with IMAP and SMTP on XOAUTH2 and the given [imap.oauth2] body.
    fn oauth(table: &str) -> String {
        VALID
            .replace("password_env = \"GATEHOUSE_IMAP_PASSWORD\"\n", "auth = \"xoauth2\"\n")
            .replace("password_env = \"GATEHOUSE_SMTP_PASSWORD\"\n", "auth = \"xoauth2\"\n")
            .replace("[smtp]", &format!("[imap.oauth2]\n{table}\n[smtp]"))
    }

    const APP: &str = "flow = \"client_credentials\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"0f6e-app\"\nclient_secret_env = \"GATEHOUSE_OAUTH_SECRET\"\nsecret_expires = \"2027-03-31\"";

    #[test]
    fn an_app_only_oauth2_config_loads_and_smtp_shares_it() {
        let c = load(&oauth(APP)).unwrap();
        let o = c.imap.auth.oauth().unwrap();
        assert_eq!(o.scope, "https://outlook.office365.com/.default");
        assert_eq!(
            o.token_endpoint,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(o.secret_expires, NaiveDate::from_ymd_opt(2027, 3, 31));
        assert_eq!(o.secret_expires_warn_days, 14);
        assert!(
            matches!(&o.flow, Flow::ClientCredentials { client_secret: SecretSource::Env(v), .. } if v == "GATEHOUSE_OAUTH_SECRET")
        );
        assert_eq!(c.smtp.auth.as_ref().and_then(Auth::oauth), Some(o));
        assert_eq!(c.oauth_sections().len(), 1, "a shared source counts once");
    }

    #[test]
    fn a_delegated_config_keeps_its_refresh_token_in_the_data_dir() {
        let c = load(&oauth("flow = \"refresh_token\"\ntenant = \"organizations\"\nclient_id = \"abc-123\""))
            .unwrap();
        let o = c.imap.auth.oauth().unwrap();
        assert!(o.scope.contains("offline_access") && o.scope.contains("IMAP.AccessAsUser.All"));
        let Flow::RefreshToken { refresh_token_file, device_code_endpoint, client_secret, .. } = &o.flow
        else {
            panic!("refresh_token flow expected");
        };
        assert_eq!(refresh_token_file, &PathBuf::from("/etc/gatehouse/data/oauth2-abc-123.refresh_token"));
        assert!(device_code_endpoint.ends_with("/organizations/oauth2/v2.0/devicecode"));
        assert!(client_secret.is_none());
        let c = load(&oauth("flow = \"token_command\"\ncommand = \"get-token imap\"")).unwrap();
        assert!(
            matches!(&c.imap.auth.oauth().unwrap().flow, Flow::TokenCommand { command } if command == "get-token imap")
        );
    }

    /// Every OAuth2 mistake names the file, the dotted key and a fix.
    #[test]
    fn oauth2_config_errors_name_the_key() {
        let cases: &[(String, &str)] = &[
            (oauth(&format!("{APP}\nclientid = \"x\"")), "imap.oauth2.clientid"),
            (oauth(APP).replacen("auth = \"xoauth2\"", "auth = \"kerberos\"", 1), "imap.auth"),
            (oauth(APP).replacen("[imap.oauth2]", "[unused]", 1), "unused"),
            (oauth(APP).replace("[imap.oauth2]\n", "").replace(APP, ""), "imap.oauth2"),
            (
                oauth(APP).replacen("auth = \"xoauth2\"", "auth = \"xoauth2\"\npassword_env = \"P\"", 1),
                "imap.password_env",
            ),
            (oauth(&APP.replace("flow = \"client_credentials\"\n", "")), "imap.oauth2.flow"),
            (oauth(&APP.replace("client_credentials", "implicit")), "imap.oauth2.flow"),
            (
                oauth(&APP.replace("client_secret_env = \"GATEHOUSE_OAUTH_SECRET\"\n", "")),
                "imap.oauth2.client_secret_env",
            ),
            (oauth(&APP.replace("tenant = \"contoso.onmicrosoft.com\"\n", "")), "imap.oauth2.tenant"),
            (
                oauth(&format!("{APP}\ntoken_endpoint = \"http://login.example.org/token\"")),
                "imap.oauth2.token_endpoint",
            ),
            (oauth(&APP.replace("2027-03-31", "31/03/2027")), "imap.oauth2.secret_expires"),
            (oauth(&format!("{APP}\ncommand = \"x\"")), "imap.oauth2.command"),
            (
                oauth(APP).replace(
                    "username = \"gp-access@nhs.net\"\nauth = \"xoauth2\"\nfrom",
                    "auth = \"xoauth2\"\nfrom",
                ),
                "smtp.username",
            ),
            (
                VALID.replace("password_env = \"GATEHOUSE_SMTP_PASSWORD\"", "auth = \"xoauth2\""),
                "smtp.oauth2",
            ),
        ];
        for (text, key) in cases {
            let e = load(text).expect_err(&format!("accepted a config that should fail on {key}"));
            assert_eq!(e.key, *key, "{e}");
            assert!(e.to_string().starts_with("/etc/gatehouse/gatehouse.toml: "), "{e}");
            assert!(e.to_string().contains("Fix: "), "{e}");
        }
        // A token endpoint on this machine may be plain http (the local test stand-in).
        assert!(
            load(&oauth(&format!("{APP}\ntoken_endpoint = \"http://127.0.0.1:1880/{{tenant}}/token\"")))
                .is_ok()
        );
    }

    #[test]
    fn plain_is_allowed_to_loopback() {
        let text = VALID
            .replace("host = \"outlook.office365.com\"", "host = \"127.0.0.1\"")
            .replace("security = \"tls\"", "security = \"plain\"");
        assert!(load(&text).is_ok());
        assert!(is_loopback("localhost") && is_loopback("::1") && is_loopback("127.0.0.2"));
        assert!(!is_loopback("10.0.0.1") && !is_loopback("mail.example.org"));
    }
}
