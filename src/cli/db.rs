//! `gatehouse db copy --to postgres://…`: moving a deployment from its SQLite file to a
//! PostgreSQL database (the copy itself is [`crate::store::copy`]; this is the command's
//! checks and its report).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use serde_json::json;

use super::{HEARTBEAT_LIMIT_SECS, TextFormat, print_json};
use crate::clock::{Clock as _, SystemClock, rfc3339};
use crate::config::{Config, DatabaseSettings};
use crate::store::copy::Copied;
use crate::store::{self, DaemonStatus};

/// `gatehouse db copy --to URL`.
pub(super) async fn copy(config: &Config, to: &str, format: TextFormat) -> anyhow::Result<ExitCode> {
    let target =
        DatabaseSettings::for_url(to, config.service.database.as_ref()).map_err(|e| anyhow!("--to: {e}"))?;
    let file = config.service.data_dir.join(store::sqlite::FILE_NAME);
    if !file.is_file() {
        bail!("There is no SQLite database at {}: nothing to copy", file.display());
    }
    // Brought up to date first, so both schemas are this version's.
    let sqlite = store::open_sqlite_file(&file).await?;
    sqlite.migrate().await?;
    if let Some(why) = daemon_running(sqlite.daemon_status().await?.as_ref()) {
        bail!(
            "Refused: {why}: stop it first (e.g. `systemctl stop gatehouse`); the copy must see the file as the daemon left it"
        );
    }
    drop(sqlite);
    let copied = store::copy::sqlite_to_postgres(&file, &target).await?;
    match format {
        TextFormat::Json => print_json(&copied_json(&copied, &file, &target.url))?,
        TextFormat::Text => print_text(&copied, &file, &target.url)?,
    }
    Ok(if copied.committed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Why the daemon looks to be running on the file, if it does: it did not record a clean
/// stop, its heartbeat is recent, and its process (when this machine can tell) is alive.
fn daemon_running(status: Option<&DaemonStatus>) -> Option<String> {
    let s = status?;
    if s.imap == "down" && s.imap_detail.as_deref() == Some("stopped") {
        return None;
    }
    if (SystemClock.now() - s.last_seen).num_seconds() > HEARTBEAT_LIMIT_SECS {
        return None;
    }
    let proc = Path::new("/proc");
    match s.pid {
        // Gone: it crashed (or was killed) without recording its stop.
        Some(pid) if proc.is_dir() && !proc.join(pid.to_string()).exists() => None,
        Some(pid) => Some(format!(
            "the daemon (pid {pid}) is running on this database (last seen {})",
            rfc3339(s.last_seen)
        )),
        None => Some(format!(
            "a daemon was running on this database {} s ago and has not recorded a stop",
            (SystemClock.now() - s.last_seen).num_seconds()
        )),
    }
}

fn copied_json(copied: &Copied, file: &Path, url: &str) -> serde_json::Value {
    json!({
        "source": file.display().to_string(),
        "target": url,
        "committed": copied.committed,
        "tables": copied.tables.iter().map(|t| json!({
            "table": t.table,
            "sqlite_rows": t.source.rows,
            "postgres_rows": t.target.rows,
            "sqlite_checksum": t.source.hex(),
            "postgres_checksum": t.target.hex(),
            "matches": t.matches(),
        })).collect::<Vec<_>>(),
    })
}

fn print_text(copied: &Copied, file: &Path, url: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{} -> {url}", file.display())?;
    writeln!(out, "  {:<22} {:>10} {:>10}  values", "table", "SQLite", "PostgreSQL")?;
    for t in &copied.tables {
        let values = if t.matches() { "same" } else { "DIFFERENT" };
        writeln!(out, "  {:<22} {:>10} {:>10}  {values}", t.table, t.source.rows, t.target.rows)?;
    }
    let rows: u64 = copied.tables.iter().map(|t| t.source.rows).sum();
    if copied.committed {
        writeln!(
            out,
            "Copied {rows} rows in {} tables; every table's count and checksum match. Next: start the daemon with [service] database_url = \"{url}\" (docs/UPGRADE-POSTGRES.md).",
            copied.tables.len()
        )?;
    } else {
        writeln!(out, "The copy does not match the SQLite database, so nothing was kept (rolled back).")?;
    }
    Ok(())
}
