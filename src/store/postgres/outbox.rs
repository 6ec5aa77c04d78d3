//! The outbox: every email gatehouse sends, claimed and marked as it goes.

use super::text::text;
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row as _};

use crate::clock::{from_millis, to_millis};
use crate::store::{
    AnsweredCounts, LastOutgoing, NewOutgoing, OutboxCounts, OutboxId, OutboxItem, RequestId,
};

/// Writes an email to the outbox (the caller records its thread Message-ID).
pub(super) async fn enqueue(
    conn: &mut PgConnection,
    mail: &NewOutgoing,
    at: DateTime<Utc>,
) -> anyhow::Result<OutboxId> {
    sqlx::query_scalar(
        "INSERT INTO outbox
            (message_id, request_id, kind, envelope_from, recipients, subject, raw, status,
             attempts, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8)
         RETURNING id",
    )
    .bind(&mail.message_id)
    .bind(mail.request_id)
    .bind(&mail.kind)
    .bind(&mail.envelope_from)
    .bind(serde_json::to_string(&mail.recipients)?)
    .bind(text(&mail.subject))
    .bind(&mail.raw)
    .bind(to_millis(at))
    .fetch_one(&mut *conn)
    .await
    .context("Cannot write to the outbox")
}

pub(super) async fn has_outgoing(
    conn: &mut PgConnection,
    request_id: RequestId,
    kind: &str,
) -> anyhow::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM outbox WHERE request_id = $1 AND kind = $2)")
        .bind(request_id)
        .bind(kind)
        .fetch_one(&mut *conn)
        .await
        .context("Cannot read the outbox")
}

/// The latest email of `kind` about a request, if any (what a follow-up threads on).
pub(super) async fn last_outgoing(
    conn: &mut PgConnection,
    request_id: RequestId,
    kind: &str,
) -> anyhow::Result<Option<LastOutgoing>> {
    let row = sqlx::query(
        "SELECT message_id, recipients, status, created_at FROM outbox
         WHERE request_id = $1 AND kind = $2
         ORDER BY id DESC
         LIMIT 1",
    )
    .bind(request_id)
    .bind(kind)
    .fetch_optional(&mut *conn)
    .await
    .context("Cannot read the outbox")?;
    row.map(|row| {
        let recipients: String = row.try_get("recipients")?;
        Ok(LastOutgoing {
            message_id: row.try_get("message_id")?,
            recipients: serde_json::from_str(&recipients).context("Bad recipients in the outbox")?,
            status: row.try_get("status")?,
            created_at: from_millis(row.try_get("created_at")?),
        })
    })
    .transpose()
}

/// Claims up to `limit` entries due at `now`. `SKIP LOCKED`: two claimers (a leader and a
/// node that has not yet noticed it lost the lease) never claim the same entry.
pub(super) async fn claim_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> anyhow::Result<Vec<OutboxItem>> {
    let rows = sqlx::query(
        "UPDATE outbox SET status = 'claimed', attempts = attempts + 1
         WHERE id IN (
             SELECT id FROM outbox
             WHERE status = 'pending' AND next_attempt_at <= $1
             ORDER BY next_attempt_at, id
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         )
         RETURNING id, kind, request_id, message_id, envelope_from, recipients, subject, raw, attempts, created_at",
    )
    .bind(to_millis(now))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
    .context("Cannot claim outgoing mail")?;
    let mut items = rows
        .iter()
        .map(|row| {
            let recipients: String = row.try_get("recipients")?;
            Ok(OutboxItem {
                id: row.try_get("id")?,
                kind: row.try_get("kind")?,
                request_id: row.try_get("request_id")?,
                message_id: row.try_get("message_id")?,
                envelope_from: row.try_get("envelope_from")?,
                recipients: serde_json::from_str(&recipients).context("Bad recipients in the outbox")?,
                subject: row.try_get("subject")?,
                raw: row.try_get("raw")?,
                attempts: row.try_get("attempts")?,
                created_at: from_millis(row.try_get("created_at")?),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    items.sort_by_key(|i| i.id);
    Ok(items)
}

/// Puts entries left `claimed` or `sending` by a crash back in the queue; those cut off
/// mid-SMTP count the interruption (they may go twice: at most once more).
pub(super) async fn requeue_interrupted(conn: &mut PgConnection) -> anyhow::Result<u64> {
    sqlx::query("UPDATE outbox SET status = 'pending' WHERE status = 'claimed'")
        .execute(&mut *conn)
        .await
        .context("Cannot requeue claimed mail")?;
    let n = sqlx::query(
        "UPDATE outbox SET status = 'pending', interrupted = interrupted + 1 WHERE status = 'sending'",
    )
    .execute(&mut *conn)
    .await
    .context("Cannot requeue interrupted mail")?
    .rows_affected();
    Ok(n)
}

pub(super) async fn mark_in_flight(conn: &mut PgConnection, id: OutboxId) -> anyhow::Result<()> {
    sqlx::query("UPDATE outbox SET status = 'sending' WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await
        .context("Cannot mark an email as being sent")?;
    Ok(())
}

pub(super) async fn mark_sent(
    conn: &mut PgConnection,
    id: OutboxId,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE outbox SET status = 'sent', sent_at = $2, last_error = NULL WHERE id = $1")
        .bind(id)
        .bind(to_millis(at))
        .execute(&mut *conn)
        .await
        .context("Cannot record a sent email")?;
    Ok(())
}

pub(super) async fn mark_retry(
    conn: &mut PgConnection,
    id: OutboxId,
    next_attempt_at: DateTime<Utc>,
    error: &str,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE outbox SET status = 'pending', next_attempt_at = $2, last_error = $3 WHERE id = $1")
        .bind(id)
        .bind(to_millis(next_attempt_at))
        .bind(text(error))
        .execute(&mut *conn)
        .await
        .context("Cannot reschedule an email")?;
    Ok(())
}

pub(super) async fn mark_failed(conn: &mut PgConnection, id: OutboxId, error: &str) -> anyhow::Result<()> {
    sqlx::query("UPDATE outbox SET status = 'failed', last_error = $2 WHERE id = $1")
        .bind(id)
        .bind(text(error))
        .execute(&mut *conn)
        .await
        .context("Cannot record a failed email")?;
    Ok(())
}

pub(super) async fn record_answered(
    conn: &mut PgConnection,
    outbox_id: OutboxId,
    person: &str,
    domain: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO answered (outbox_id, person, domain, created_at) VALUES ($1, $2, $3, $4)")
        .bind(outbox_id)
        .bind(person)
        .bind(domain)
        .bind(to_millis(at))
        .execute(&mut *conn)
        .await
        .context("Cannot record the answer")?;
    Ok(())
}

/// The outbox entry that sent the message with one of these Message-IDs (to link a bounce
/// to what bounced): (outbox id, request id, kind).
pub(super) async fn for_message_ids(
    conn: &mut PgConnection,
    ids: &[String],
) -> anyhow::Result<Option<(OutboxId, Option<RequestId>, String)>> {
    if ids.is_empty() {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT id, request_id, kind FROM outbox WHERE message_id = ANY($1) ORDER BY id DESC LIMIT 1",
    )
    .bind(ids)
    .fetch_optional(&mut *conn)
    .await
    .context("Cannot look up the outbox")?;
    row.map(|r| Ok((r.try_get("id")?, r.try_get("request_id")?, r.try_get("kind")?))).transpose()
}

pub(super) async fn mark_bounced(
    conn: &mut PgConnection,
    outbox_id: OutboxId,
    detail: &str,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE outbox SET status = 'bounced', last_error = $2 WHERE id = $1")
        .bind(outbox_id)
        .bind(text(detail))
        .execute(&mut *conn)
        .await
        .context("Cannot record a bounce")?;
    Ok(())
}

/// The automatic answers to `person` and to `domain` since `day`, and to anyone since `hour`.
pub(super) async fn answered_counts(
    conn: &mut PgConnection,
    person: &str,
    domain: &str,
    day: DateTime<Utc>,
    hour: DateTime<Utc>,
) -> anyhow::Result<AnsweredCounts> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM answered WHERE person = $1 AND created_at >= $3) AS person,
                (SELECT COUNT(*) FROM answered WHERE domain = $2 AND created_at >= $3) AS domain,
                (SELECT COUNT(*) FROM answered WHERE created_at >= $4) AS hour",
    )
    .bind(person)
    .bind(domain)
    .bind(to_millis(day))
    .bind(to_millis(hour))
    .fetch_one(&mut *conn)
    .await
    .context("Cannot count automatic answers")?;
    Ok(AnsweredCounts {
        person: row.try_get("person")?,
        domain: row.try_get("domain")?,
        hour: row.try_get("hour")?,
    })
}

pub(super) async fn counts(conn: &mut PgConnection) -> anyhow::Result<OutboxCounts> {
    let row = sqlx::query(
        "SELECT COUNT(*) FILTER (WHERE status IN ('pending', 'claimed', 'sending')) AS pending,
                COUNT(*) FILTER (WHERE status = 'failed') AS failed
         FROM outbox",
    )
    .fetch_one(&mut *conn)
    .await
    .context("Cannot read the outbox")?;
    Ok(OutboxCounts { pending: row.try_get("pending")?, failed: row.try_get("failed")? })
}

/// Emails waiting to be sent that have failed at least `failing_after` attempts.
pub(super) async fn failing(conn: &mut PgConnection, failing_after: i64) -> anyhow::Result<i64> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox
         WHERE status IN ('pending', 'claimed', 'sending') AND attempts >= $1 AND last_error IS NOT NULL",
    )
    .bind(failing_after)
    .fetch_one(&mut *conn)
    .await
    .context("Cannot read the outbox")
}
