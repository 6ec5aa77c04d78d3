//! Papers: the files a requester sent with a request, kept for `circulate`, and the weekly
//! summary's figures about them.

use super::text::text;
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};

use crate::classify::AttachmentBody;
use crate::clock::{from_millis, to_millis};
use crate::store::{MessageId, PaperCounts, PaperRow, RequestId};

fn paper_from_row(row: &PgRow) -> anyhow::Result<PaperRow> {
    Ok(PaperRow {
        id: row.try_get("id")?,
        message_id: row.try_get("message_id")?,
        name: row.try_get("name")?,
        content_type: row.try_get("content_type")?,
        bytes: row.try_get("bytes")?,
        received_at: from_millis(row.try_get("received_at")?),
        circulated_at: row.try_get::<Option<i64>, _>("circulated_at")?.map(from_millis),
    })
}

/// Requests whose papers went to the board in [from, to), and requests decided `paper`,
/// still scheduled, for which no paper has come.
pub(super) async fn counts(
    conn: &mut PgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<PaperCounts> {
    let circulated: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT request_id) FROM papers WHERE circulated_at >= $1 AND circulated_at < $2",
    )
    .bind(to_millis(from))
    .bind(to_millis(to))
    .fetch_one(&mut *conn)
    .await
    .context("Cannot count the papers circulated")?;
    let awaited: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM requests r WHERE r.decision = 'paper' AND r.status = 'scheduled'
         AND NOT EXISTS (SELECT 1 FROM papers p WHERE p.request_id = r.id)",
    )
    .fetch_one(&mut *conn)
    .await
    .context("Cannot count the papers awaited")?;
    Ok(PaperCounts {
        circulated: usize::try_from(circulated).unwrap_or(0),
        awaited: usize::try_from(awaited).unwrap_or(0),
    })
}

pub(super) async fn add(
    conn: &mut PgConnection,
    request_id: RequestId,
    message_id: MessageId,
    file: &AttachmentBody,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO papers (request_id, message_id, name, content_type, bytes, received_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(request_id)
    .bind(message_id)
    .bind(text(&file.name))
    .bind(text(&file.content_type))
    .bind(&file.bytes)
    .bind(to_millis(at))
    .execute(&mut *conn)
    .await
    .context("Cannot keep the paper")?;
    Ok(())
}

/// The request's papers, oldest first.
pub(super) async fn of_request(
    conn: &mut PgConnection,
    request_id: RequestId,
) -> anyhow::Result<Vec<PaperRow>> {
    sqlx::query(
        "SELECT id, message_id, name, content_type, bytes, received_at, circulated_at
         FROM papers WHERE request_id = $1 ORDER BY received_at, id",
    )
    .bind(request_id)
    .fetch_all(&mut *conn)
    .await
    .context("Cannot read the request's papers")?
    .iter()
    .map(paper_from_row)
    .collect()
}

pub(super) async fn mark_circulated(
    conn: &mut PgConnection,
    ids: &[i64],
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE papers SET circulated_at = $2 WHERE id = ANY($1)")
        .bind(ids)
        .bind(to_millis(at))
        .execute(&mut *conn)
        .await
        .context("Cannot record the papers circulated")?;
    Ok(())
}
