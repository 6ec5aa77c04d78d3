//! What the running daemon is doing (`daemon_status`), the once-only mailings (`summaries`)
//! and the operator's alerts, for `gatehouse status` and the schedules.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row as _};

use super::text::{opt_text, text};

use crate::clock::{from_millis, to_millis};
use crate::store::{AlertRow, DaemonStatus, Metrics, OutboxId, SmtpOutcome};

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
    .bind(opt_text(detail))
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
                .bind(text(e))
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

/// Records a once-only mailing; false if it was recorded already (by this node or another:
/// the primary key decides, so a summary goes once however many nodes try).
pub(super) async fn record_summary(
    conn: &mut PgConnection,
    kind: &str,
    period: &str,
    covers: (DateTime<Utc>, DateTime<Utc>),
    outbox_id: Option<OutboxId>,
    at: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO summaries (kind, period, covers_from, covers_to, sent_at, outbox_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (kind, period) DO NOTHING",
    )
    .bind(kind)
    .bind(period)
    .bind(to_millis(covers.0))
    .bind(to_millis(covers.1))
    .bind(to_millis(at))
    .bind(outbox_id)
    .execute(&mut *conn)
    .await
    .context("Cannot record the mailing")?
    .rows_affected();
    Ok(inserted == 1)
}

pub(super) async fn last_summary(conn: &mut PgConnection) -> anyhow::Result<Option<DateTime<Utc>>> {
    let at: Option<i64> = sqlx::query_scalar("SELECT MAX(sent_at) FROM summaries WHERE kind = 'weekly'")
        .fetch_one(&mut *conn)
        .await
        .context("Cannot read the summaries")?;
    Ok(at.map(from_millis))
}

pub(super) async fn alert(conn: &mut PgConnection, key: &str) -> anyhow::Result<Option<AlertRow>> {
    let row =
        sqlx::query("SELECT key, subject, first_raised, last_sent, resolved_at FROM alerts WHERE key = $1")
            .bind(text(key))
            .fetch_optional(&mut *conn)
            .await
            .context("Cannot read an alert")?;
    row.map(|r| {
        Ok(AlertRow {
            key: r.try_get("key")?,
            subject: r.try_get("subject")?,
            first_raised: from_millis(r.try_get("first_raised")?),
            last_sent: from_millis(r.try_get("last_sent")?),
            resolved_at: r.try_get::<Option<i64>, _>("resolved_at")?.map(from_millis),
        })
    })
    .transpose()
}

pub(super) async fn put_alert(conn: &mut PgConnection, a: &AlertRow) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO alerts (key, subject, first_raised, last_sent, resolved_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (key) DO UPDATE SET
             subject = EXCLUDED.subject, first_raised = EXCLUDED.first_raised,
             last_sent = EXCLUDED.last_sent, resolved_at = EXCLUDED.resolved_at",
    )
    .bind(text(&a.key))
    .bind(text(&a.subject))
    .bind(to_millis(a.first_raised))
    .bind(to_millis(a.last_sent))
    .bind(a.resolved_at.map(to_millis))
    .execute(&mut *conn)
    .await
    .context("Cannot record an alert")?;
    Ok(())
}

/// `starts_with`, not LIKE: a prefix is matched literally, `_` and `%` included.
pub(super) async fn alerts_sent_since(
    conn: &mut PgConnection,
    prefix: &str,
    since: DateTime<Utc>,
) -> anyhow::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM alerts WHERE starts_with(key, $1) AND last_sent >= $2")
        .bind(prefix)
        .bind(to_millis(since))
        .fetch_one(&mut *conn)
        .await
        .context("Cannot count the alerts sent")
}

pub(super) async fn open_alerts(conn: &mut PgConnection) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
    let rows = sqlx::query("SELECT key, last_sent FROM alerts WHERE resolved_at IS NULL ORDER BY key")
        .fetch_all(&mut *conn)
        .await
        .context("Cannot read the alerts")?;
    rows.iter().map(|r| Ok((r.try_get("key")?, from_millis(r.try_get("last_sent")?)))).collect()
}

/// Figures for `/metrics`.
pub(super) async fn metrics(conn: &mut PgConnection, failing_after: i64) -> anyhow::Result<Metrics> {
    let outbox = super::outbox::counts(conn).await?;
    let outbox_failing = super::outbox::failing(conn, failing_after).await?;
    let messages = pairs(
        conn,
        "SELECT classification, COUNT(*) FROM messages WHERE classification IS NOT NULL GROUP BY classification",
        "Cannot count the messages",
    )
    .await?;
    let requests_by_status =
        pairs(conn, "SELECT status, COUNT(*) FROM requests GROUP BY status", "Cannot count the requests")
            .await?;
    let decisions = pairs(
        conn,
        "SELECT decision, COUNT(*) FROM requests WHERE decision IS NOT NULL GROUP BY decision",
        "Cannot count the decisions",
    )
    .await?;
    let oldest: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(created_at) FROM outbox WHERE status IN ('pending', 'claimed', 'sending')",
    )
    .fetch_one(&mut *conn)
    .await
    .context("Cannot read the outbox")?;
    let ack_millis: Vec<i64> = sqlx::query_scalar(
        "SELECT o.sent_at - r.received_at
         FROM outbox o JOIN requests r ON r.id = o.request_id
         WHERE o.kind = 'acknowledgement' AND o.sent_at IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await
    .context("Cannot read the acknowledgement times")?;
    Ok(Metrics {
        messages,
        requests_by_status,
        decisions,
        outbox,
        outbox_oldest_pending: oldest.map(from_millis),
        outbox_failing,
        ack_seconds: ack_millis.into_iter().map(|ms| ms.max(0) as f64 / 1000.0).collect(),
    })
}

/// A `SELECT name, COUNT(*) … GROUP BY name` as pairs.
async fn pairs(
    conn: &mut PgConnection,
    sql: &'static str,
    what: &'static str,
) -> anyhow::Result<Vec<(String, i64)>> {
    sqlx::query_as(sql).fetch_all(&mut *conn).await.context(what)
}
