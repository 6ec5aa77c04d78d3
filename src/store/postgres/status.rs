//! What the running daemon is doing (`daemon_status`) and the once-only mailings
//! (`summaries`), for `gatehouse status` and the schedules.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row as _};

use crate::clock::{from_millis, to_millis};
use crate::store::{DaemonStatus, SmtpOutcome};

pub(super) async fn set_daemon(
    conn: &mut PgConnection,
    imap: &str,
    detail: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO daemon_status (id, imap, imap_detail, last_seen, started_at, pid)
         VALUES (1, $1, $2, $3, $3, $4)
         ON CONFLICT (id) DO UPDATE SET
             imap = EXCLUDED.imap, imap_detail = EXCLUDED.imap_detail,
             last_seen = EXCLUDED.last_seen, pid = EXCLUDED.pid",
    )
    .bind(imap)
    .bind(detail)
    .bind(to_millis(now))
    .bind(i64::from(std::process::id()))
    .execute(&mut *conn)
    .await
    .context("Cannot record the daemon's status")?;
    Ok(())
}

pub(super) async fn daemon(conn: &mut PgConnection) -> anyhow::Result<Option<DaemonStatus>> {
    let row = sqlx::query(
        "SELECT imap, imap_detail, last_seen, started_at, pid, smtp_last_sent, smtp_last_error, smtp_last_error_at
         FROM daemon_status WHERE id = 1",
    )
    .fetch_optional(&mut *conn)
    .await
    .context("Cannot read the daemon's status")?;
    row.map(|row| {
        Ok(DaemonStatus {
            imap: row.try_get("imap")?,
            imap_detail: row.try_get("imap_detail")?,
            last_seen: from_millis(row.try_get("last_seen")?),
            started_at: from_millis(row.try_get("started_at")?),
            pid: row.try_get("pid")?,
            smtp_last_sent: row.try_get::<Option<i64>, _>("smtp_last_sent")?.map(from_millis),
            smtp_last_error: match (
                row.try_get::<Option<String>, _>("smtp_last_error")?,
                row.try_get::<Option<i64>, _>("smtp_last_error_at")?,
            ) {
                (Some(e), Some(at)) => Some((e, from_millis(at))),
                _ => None,
            },
        })
    })
    .transpose()
}

/// The row exists once the daemon has started (its status board writes it first).
pub(super) async fn set_smtp(
    conn: &mut PgConnection,
    outcome: SmtpOutcome<'_>,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    let query = match outcome {
        SmtpOutcome::Sent => {
            sqlx::query("UPDATE daemon_status SET smtp_last_sent = $1 WHERE id = 1").bind(to_millis(at))
        }
        SmtpOutcome::Failed(e) => {
            sqlx::query("UPDATE daemon_status SET smtp_last_error = $2, smtp_last_error_at = $1 WHERE id = 1")
                .bind(to_millis(at))
                .bind(e)
        }
    };
    query.execute(&mut *conn).await.context("Cannot record the SMTP status")?;
    Ok(())
}

pub(super) async fn last_covered(
    conn: &mut PgConnection,
    kind: &str,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let at: Option<i64> = sqlx::query_scalar("SELECT MAX(covers_to) FROM summaries WHERE kind = $1")
        .bind(kind)
        .fetch_one(&mut *conn)
        .await
        .context("Cannot read the summaries")?;
    Ok(at.map(from_millis))
}

pub(super) async fn summary_sent(conn: &mut PgConnection, kind: &str, period: &str) -> anyhow::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM summaries WHERE kind = $1 AND period = $2)")
        .bind(kind)
        .bind(period)
        .fetch_one(&mut *conn)
        .await
        .context("Cannot read the summaries")
}
