//! The file as written: the keys each section accepts and the serde shapes they are read
//! into, before any value is checked. Kept apart from the checks so that the one table of
//! keys ([`KNOWN_KEYS`]) sits next to the structs it must agree with.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{Backlog, ConfigError, Security};

/// The keys each section accepts. Checked before deserialising so that a misspelt key is
/// reported by its full name instead of being silently ignored.
pub(super) const KNOWN_KEYS: &[(&str, &[&str])] = &[
    (
        "service",
        &[
            "name",
            "timezone",
            "data_dir",
            "database_url",
            "database_password_env",
            "database_password_file",
            "database_ca_file",
            "database_tls",
            "node_name",
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
    (
        "meetings",
        &[
            "dates",
            "agenda_days_before",
            "time",
            "send_empty_agenda",
            "length_minutes",
            "place",
            "agenda_attachments_max_mb",
            "on",
        ],
    ),
    ("templates", &["dir"]),
    (
        "acknowledgements",
        &["rate_limit_per_day", "domain_limit_per_day", "limit_per_hour", "acknowledge_forwarded"],
    ),
    ("members", &["domains", "addresses"]),
    ("triage", &["authserv_id", "remind_after_working_days", "reminder_hour", "more_work_nudge_days"]),
    ("channel", &["webhook_url_env", "webhook_url_file", "timeout_secs"]),
    ("notifications", &["attach_max_bytes"]),
    ("retention", &["raw_messages_days", "sent_mail_days", "closed_requests_months"]),
    // Free-form tables: any key, string values.
    ("priorities", &["*"]),
    ("organisations", &["*"]),
];

/// The keys one meeting's own table (`[meetings.on."2027-01-07"]`) takes: what may differ
/// from the `[meetings]` defaults on that date.
pub(super) const MEETING_DAY_KEYS: &[&str] = &["time", "length_minutes", "place"];

pub(super) const OAUTH2_KEYS: &[&str] = &[
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
pub(super) struct RawOAuth2 {
    pub(super) flow: Option<String>,
    pub(super) tenant: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret_env: Option<String>,
    pub(super) client_secret_file: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) token_endpoint: Option<String>,
    pub(super) device_code_endpoint: Option<String>,
    pub(super) refresh_token_file: Option<String>,
    pub(super) command: Option<String>,
    pub(super) tls_ca_file: Option<String>,
    #[serde(default = "default_oauth_timeout")]
    pub(super) timeout_secs: u64,
    pub(super) secret_expires: Option<String>,
    #[serde(default = "default_warn_days")]
    pub(super) secret_expires_warn_days: u32,
}

fn default_oauth_timeout() -> u64 {
    30
}

fn default_warn_days() -> u32 {
    14
}

#[derive(Deserialize)]
pub(super) struct RawConfig {
    pub(super) service: RawService,
    pub(super) imap: RawImap,
    pub(super) smtp: RawSmtp,
    pub(super) gatekeepers: RawAddresses,
    #[serde(default)]
    pub(super) operator: RawAddresses,
    pub(super) board: RawBoard,
    #[serde(default)]
    pub(super) meetings: RawMeetings,
    #[serde(default)]
    pub(super) priorities: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) organisations: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) templates: RawTemplates,
    #[serde(default)]
    pub(super) acknowledgements: RawAcknowledgements,
    #[serde(default)]
    pub(super) members: RawMembers,
    #[serde(default)]
    pub(super) triage: RawTriage,
    #[serde(default)]
    pub(super) notifications: RawNotifications,
    #[serde(default)]
    pub(super) retention: RawRetention,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) channel: RawChannel,
}

#[derive(Deserialize, Default)]
pub(super) struct RawChannel {
    pub(super) webhook_url_env: Option<String>,
    pub(super) webhook_url_file: Option<String>,
    pub(super) timeout_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RawRetention {
    #[serde(default = "default_raw_days")]
    pub(super) raw_messages_days: u32,
    #[serde(default = "default_sent_days")]
    pub(super) sent_mail_days: u32,
    #[serde(default = "default_closed_months")]
    pub(super) closed_requests_months: u32,
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

#[derive(Deserialize)]
pub(super) struct RawNotifications {
    #[serde(default = "default_attach_max")]
    pub(super) attach_max_bytes: usize,
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
pub(super) struct RawTriage {
    pub(super) authserv_id: Option<String>,
    #[serde(default = "default_remind_days")]
    pub(super) remind_after_working_days: u32,
    #[serde(default = "default_reminder_hour")]
    pub(super) reminder_hour: u32,
    #[serde(default = "default_nudge_days")]
    pub(super) more_work_nudge_days: u32,
}

impl Default for RawTriage {
    fn default() -> Self {
        Self {
            authserv_id: None,
            remind_after_working_days: default_remind_days(),
            reminder_hour: default_reminder_hour(),
            more_work_nudge_days: default_nudge_days(),
        }
    }
}

fn default_remind_days() -> u32 {
    2
}

fn default_reminder_hour() -> u32 {
    8
}

fn default_nudge_days() -> u32 {
    5
}

#[derive(Deserialize)]
pub(super) struct RawAcknowledgements {
    #[serde(default = "default_ack_limit")]
    pub(super) rate_limit_per_day: u32,
    #[serde(default = "default_domain_limit")]
    pub(super) domain_limit_per_day: u32,
    #[serde(default = "default_hour_limit")]
    pub(super) limit_per_hour: u32,
    #[serde(default = "default_true")]
    pub(super) acknowledge_forwarded: bool,
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
pub(super) struct RawMembers {
    #[serde(default)]
    pub(super) domains: Vec<String>,
    #[serde(default)]
    pub(super) addresses: Vec<String>,
}

#[derive(Deserialize)]
pub(super) struct RawService {
    pub(super) name: String,
    #[serde(default = "default_timezone")]
    pub(super) timezone: String,
    #[serde(default = "default_data_dir")]
    pub(super) data_dir: String,
    pub(super) database_url: Option<String>,
    pub(super) database_password_env: Option<String>,
    pub(super) database_password_file: Option<String>,
    pub(super) database_ca_file: Option<String>,
    pub(super) database_tls: Option<String>,
    pub(super) node_name: Option<String>,
    #[serde(default = "default_prefix")]
    pub(super) reference_prefix: String,
    #[serde(default = "default_ballast_mib")]
    pub(super) disk_ballast_mib: u64,
    #[serde(default = "default_warn_free_percent")]
    pub(super) disk_warn_free_percent: u8,
    #[serde(default = "default_warn_free_mib")]
    pub(super) disk_warn_free_mib: u64,
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
pub(super) struct RawImap {
    pub(super) host: String,
    pub(super) port: Option<u16>,
    #[serde(default = "default_imap_security")]
    pub(super) security: Security,
    pub(super) username: String,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) tls_ca_file: Option<String>,
    #[serde(default = "default_mailbox")]
    pub(super) mailbox: String,
    #[serde(default = "default_true")]
    pub(super) idle: bool,
    #[serde(default = "default_poll")]
    pub(super) poll_interval_secs: u64,
    #[serde(default = "default_after")]
    pub(super) after_processing: String,
    #[serde(default = "default_backlog")]
    pub(super) backlog: Backlog,
    #[serde(default = "default_timeout")]
    pub(super) timeout_secs: u64,
    #[serde(default = "default_max_message")]
    pub(super) max_message_bytes: usize,
    pub(super) auth: Option<String>,
    pub(super) oauth2: Option<RawOAuth2>,
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
pub(super) struct RawSmtp {
    pub(super) host: String,
    pub(super) port: Option<u16>,
    #[serde(default = "default_smtp_security")]
    pub(super) security: Security,
    pub(super) username: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) tls_ca_file: Option<String>,
    pub(super) from: String,
    #[serde(default = "default_timeout")]
    pub(super) timeout_secs: u64,
    #[serde(default = "default_retry")]
    pub(super) retry_initial_secs: u64,
    pub(super) auth: Option<String>,
    pub(super) oauth2: Option<RawOAuth2>,
}

fn default_retry() -> u64 {
    30
}

fn default_smtp_security() -> Security {
    Security::Starttls
}

#[derive(Deserialize, Default)]
pub(super) struct RawAddresses {
    #[serde(default)]
    pub(super) addresses: Vec<String>,
}

#[derive(Deserialize)]
pub(super) struct RawBoard {
    #[serde(default)]
    pub(super) addresses: Vec<String>,
    #[serde(default = "default_schedule")]
    pub(super) summary_schedule: String,
    #[serde(default)]
    pub(super) share_notes: bool,
    #[serde(default)]
    pub(super) share_addresses: bool,
}

fn default_schedule() -> String {
    "0 8 * * MON".into()
}

#[derive(Deserialize)]
pub(super) struct RawMeetings {
    #[serde(default)]
    pub(super) dates: Vec<String>,
    #[serde(default = "default_agenda_days")]
    pub(super) agenda_days_before: u32,
    pub(super) time: Option<String>,
    #[serde(default)]
    pub(super) send_empty_agenda: bool,
    pub(super) length_minutes: Option<u32>,
    pub(super) place: Option<String>,
    #[serde(default = "default_agenda_attachments_mb")]
    pub(super) agenda_attachments_max_mb: u32,
    /// Date (as written) → what differs on that date.
    #[serde(default)]
    pub(super) on: BTreeMap<String, RawMeetingDay>,
}

impl Default for RawMeetings {
    fn default() -> Self {
        Self {
            dates: Vec::new(),
            agenda_days_before: default_agenda_days(),
            time: None,
            send_empty_agenda: false,
            length_minutes: None,
            place: None,
            agenda_attachments_max_mb: default_agenda_attachments_mb(),
            on: BTreeMap::new(),
        }
    }
}

/// `[meetings.on."YYYY-MM-DD"]`: one meeting's time, length or place where it differs.
#[derive(Deserialize, Default)]
pub(super) struct RawMeetingDay {
    pub(super) time: Option<String>,
    pub(super) length_minutes: Option<u32>,
    pub(super) place: Option<String>,
}

fn default_agenda_days() -> u32 {
    3
}

fn default_agenda_attachments_mb() -> u32 {
    10
}

#[derive(Deserialize, Default)]
pub(super) struct RawTemplates {
    pub(super) dir: Option<String>,
}

/// Reads `text` as TOML, rejects keys no section takes, then deserialises it: a syntax
/// error names its line, a wrong type or a missing key names the dotted key.
pub(super) fn read(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    let err = |key: &str, problem: String, fix: &str| ConfigError {
        file: path.to_path_buf(),
        key: key.to_string(),
        problem,
        fix: fix.to_string(),
    };
    let table: toml::Table = toml::from_str(text)
        .map_err(|e| err("", format!("not valid TOML: {}", e.message()), &toml_location(text, &e)))?;
    check_known_keys(&table, path)?;
    toml::from_str(text).map_err(|e| {
        let key = toml_key_at(text, &e);
        let message = e.message().to_string();
        let fix = if message.starts_with("missing field") {
            "add it: config/gatehouse.example.toml shows every key".to_string()
        } else {
            format!("correct the value ({})", toml_location(text, &e))
        };
        err(&key, message, &fix)
    })
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
            if dotted == "meetings.on" {
                check_meeting_days(v, path)?;
            } else if let Some((_, sub_keys)) = KNOWN_KEYS.iter().find(|(name, _)| *name == dotted) {
                check_sub_table(&dotted, v, sub_keys, path)?;
            }
        }
    }
    Ok(())
}

/// `[meetings.on."YYYY-MM-DD"]` tables: any date as the name (checked as a date later),
/// each with [`MEETING_DAY_KEYS`] only.
fn check_meeting_days(value: &toml::Value, path: &Path) -> Result<(), ConfigError> {
    let Some(days) = value.as_table() else {
        return Err(ConfigError {
            file: path.to_path_buf(),
            key: "meetings.on".into(),
            problem: "expected a table of dates, found a plain value".into(),
            fix: "give each date its own table: [meetings.on.\"2027-01-07\"] with time, length_minutes or place".into(),
        });
    };
    for (date, day) in days {
        check_sub_table(&format!("meetings.on.\"{date}\""), day, MEETING_DAY_KEYS, path)?;
    }
    Ok(())
}

/// One sub-table such as `[imap.oauth2]` against its own row of [`KNOWN_KEYS`].
fn check_sub_table(
    dotted: &str,
    value: &toml::Value,
    sub_keys: &[&str],
    path: &Path,
) -> Result<(), ConfigError> {
    let Some(sub) = value.as_table() else {
        return Err(ConfigError {
            file: path.to_path_buf(),
            key: dotted.to_string(),
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
                fix: format!("remove it or check its spelling; [{dotted}] takes {}", sub_keys.join(", ")),
            });
        }
    }
    Ok(())
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
