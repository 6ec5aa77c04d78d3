//! `[service]`, `[metrics]`, `[retention]` and `[templates]`: how the daemon itself runs,
//! where it keeps its data and for how long.

use std::path::PathBuf;

use chrono_tz::Tz;

use super::raw::{RawMetrics, RawRetention, RawService, RawTemplates};
use super::{ConfigError, RetentionSettings, ServiceSettings, Source};

/// The longest any retention period may be set to: ten years, in days and in months.
const RETENTION_MAX_DAYS: u32 = 3653;
const RETENTION_MAX_MONTHS: u32 = 120;

/// Checks `[service]`.
pub(super) fn service(raw: RawService, src: &Source) -> Result<ServiceSettings, ConfigError> {
    let timezone: Tz = raw.timezone.parse().map_err(|_| {
        src.err(
            "service.timezone",
            format!("unknown timezone {:?}", raw.timezone),
            "use an IANA name such as \"Europe/London\"",
        )
    })?;
    let prefix = raw.reference_prefix.trim().to_string();
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(src.err(
            "service.reference_prefix",
            format!("{prefix:?} is not a usable prefix"),
            "use letters and digits only, e.g. \"GP\"",
        ));
    }
    check_disk(&raw, src)?;
    let database = super::database::database(&raw, src)?;
    let node_name = super::database::node_name(&raw, src)?;
    Ok(ServiceSettings {
        name: raw.name,
        timezone,
        data_dir: src.resolve(&raw.data_dir),
        database,
        node_name,
        reference_prefix: prefix.to_ascii_uppercase(),
        disk_ballast_bytes: raw.disk_ballast_mib << 20,
        disk_warn_free_percent: raw.disk_warn_free_percent,
        disk_warn_free_bytes: raw.disk_warn_free_mib << 20,
    })
}

/// The ballast and the free-space warning: amounts that would be a typo are refused (and
/// the MiB are shifted into bytes later, so they must not overflow).
fn check_disk(raw: &RawService, src: &Source) -> Result<(), ConfigError> {
    if raw.disk_ballast_mib > 1024 {
        return Err(src.err(
            "service.disk_ballast_mib",
            format!("{} MiB is more room than a full disk needs", raw.disk_ballast_mib),
            "use a few MiB, e.g. 8, or 0 for no ballast",
        ));
    }
    if raw.disk_warn_free_percent > 50 {
        return Err(src.err(
            "service.disk_warn_free_percent",
            format!("{} is more than half the disk", raw.disk_warn_free_percent),
            "use a percentage from 0 (no warning) to 50, e.g. 5",
        ));
    }
    if raw.disk_warn_free_mib > 1 << 30 {
        return Err(src.err(
            "service.disk_warn_free_mib",
            format!("{} MiB is not a usable amount", raw.disk_warn_free_mib),
            "use an amount in MiB, e.g. 200, or 0 for no warning",
        ));
    }
    Ok(())
}

/// `[metrics] listen`: `None` serves nothing.
pub(super) fn metrics_listen(
    raw: &RawMetrics,
    src: &Source,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    raw.listen
        .as_deref()
        .map(|l| {
            l.trim().parse::<std::net::SocketAddr>().map_err(|_| {
                src.err(
                    "metrics.listen",
                    format!("{l:?} is not an address and port"),
                    "write it as \"127.0.0.1:9464\" (loopback unless a monitoring server elsewhere must reach it), or remove it to serve no metrics",
                )
            })
        })
        .transpose()
}

/// Checks `[retention]`: zero would delete what is still needed.
pub(super) fn retention(raw: &RawRetention, src: &Source) -> Result<RetentionSettings, ConfigError> {
    for (key, value, max, unit) in [
        ("retention.raw_messages_days", raw.raw_messages_days, RETENTION_MAX_DAYS, "days"),
        ("retention.sent_mail_days", raw.sent_mail_days, RETENTION_MAX_DAYS, "days"),
        ("retention.closed_requests_months", raw.closed_requests_months, RETENTION_MAX_MONTHS, "months"),
    ] {
        if value == 0 || value > max {
            return Err(src.err(
                key,
                format!("{value} {unit} is not a usable retention period"),
                &format!("use 1 to {max} {unit}; remove the key for the default (README: Retention)"),
            ));
        }
    }
    Ok(RetentionSettings {
        raw_messages_days: raw.raw_messages_days,
        sent_mail_days: raw.sent_mail_days,
        closed_requests_months: raw.closed_requests_months,
    })
}

/// `[templates] dir`: must exist, so a typo does not silently fall back to the built-ins.
pub(super) fn templates_dir(raw: &RawTemplates, src: &Source) -> Result<Option<PathBuf>, ConfigError> {
    let templates_dir = raw.dir.as_deref().map(|p| src.resolve(p));
    if let Some(dir) = &templates_dir
        && !dir.is_dir()
    {
        return Err(src.err(
            "templates.dir",
            format!("the folder {} does not exist", dir.display()),
            "create it (it may be empty) or remove the key to use the built-in templates",
        ));
    }
    Ok(templates_dir)
}
