//! Messages taken from the inbox: their bytes, processing attempts and outcomes, and where
//! the inbox watcher has got to.

use std::str::FromStr as _;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row as _};

use super::text::{opt_text, text};

use crate::clock::{from_millis, to_millis};
use crate::domain::Classification;
use crate::store::{
    MailboxState, MessageId, MessageOutcome, MessageRow, NewRawMessage, RawSaved, RequestId, RetryMessage,
    RetryRequest,
};

fn u32_of(v: i64, name: &str) -> anyhow::Result<u32> {
    u32::try_from(v).with_context(|| format!("{name} out of range: {v}"))
}

/// Stores a message's bytes, recognising one stored before (by its Message-ID and content,
/// or by its bytes' hash), as the SQLite store does: see `Tx::save_raw`. Concurrent savers of
/// one message meet on the `dedup_key` unique index, so exactly one stores it.
pub(super) async fn save_raw(conn: &mut PgConnection, m: &NewRawMessage<'_>) -> anyhow::Result<RawSaved> {
    if let Some(id) = insert_raw(conn, m, &m.dedup_key).await? {
        return Ok(RawSaved::New(id));
    }
    let Some(message_id) = m.message_id else {
        return known(conn, &m.dedup_key).await;
    };
    let seen = sqlx::query(
        "SELECT id, processed_at FROM messages
         WHERE message_id = $1
           AND (dedup_key = $2 OR starts_with(dedup_key, $2 || '/'))
           AND (content_hash = $3 OR core_hash = $4 OR core_hash IS NULL)
         ORDER BY id
         LIMIT 1",
    )
    .bind(text(message_id))
    .bind(text(&m.dedup_key))
    .bind(m.content_hash)
    .bind(m.core_hash)
    .fetch_optional(&mut *conn)
    .await
    .context("Cannot read the stored message")?;
    if let Some(row) = seen {
        return Ok(RawSaved::Known {
            id: row.try_get("id")?,
            processed: row.try_get::<Option<i64>, _>("processed_at")?.is_some(),
        });
    }
    tracing::warn!(
        "Message-ID <{message_id}> came before on a different message (another body, subject, sender or date); logging this one too"
    );
    let key = format!("{}/{}", m.dedup_key, m.content_hash);
    match insert_raw(conn, m, &key).await? {
        Some(id) => Ok(RawSaved::New(id)),
        None => known(conn, &key).await,
    }
}

/// Stores the message under `key` with its first processing attempt counted, unless one is
/// stored under that key already.
async fn insert_raw(
    conn: &mut PgConnection,
    m: &NewRawMessage<'_>,
    key: &str,
) -> anyhow::Result<Option<MessageId>> {
    let id: Option<MessageId> = sqlx::query_scalar(
        "INSERT INTO messages
            (mailbox, uidvalidity, uid, dedup_key, message_id, content_hash, core_hash, size,
             fetched_at, backlog, attempts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1)
         ON CONFLICT (dedup_key) DO NOTHING
         RETURNING id",
    )
    .bind(m.mailbox)
    .bind(i64::from(m.uidvalidity))
    .bind(i64::from(m.uid))
    .bind(text(key))
    .bind(opt_text(m.message_id))
    .bind(m.content_hash)
    .bind(m.core_hash)
    .bind(i64::try_from(m.raw.len()).unwrap_or(i64::MAX))
    .bind(to_millis(m.fetched_at))
    .bind(m.backlog)
    .fetch_optional(&mut *conn)
    .await
    .context("Cannot store the raw message")?;
    if let Some(id) = id {
        sqlx::query("INSERT INTO raw_messages (id, raw) VALUES ($1, $2)")
            .bind(id)
            .bind(m.raw)
            .execute(&mut *conn)
            .await
            .context("Cannot store the raw message")?;
    }
    Ok(id)
}

async fn known(conn: &mut PgConnection, key: &str) -> anyhow::Result<RawSaved> {
    let row = sqlx::query("SELECT id, processed_at FROM messages WHERE dedup_key = $1")
        .bind(text(key))
        .fetch_optional(&mut *conn)
        .await
        .context("Cannot read the stored message")?
        .context("The stored message vanished")?;
    Ok(RawSaved::Known {
        id: row.try_get("id")?,
        processed: row.try_get::<Option<i64>, _>("processed_at")?.is_some(),
    })
}

pub(super) async fn raw(conn: &mut PgConnection, id: MessageId) -> anyhow::Result<Vec<u8>> {
    sqlx::query_scalar("SELECT raw FROM raw_messages WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .context("Cannot read the raw message")
}

pub(super) async fn count_attempt(conn: &mut PgConnection, id: MessageId) -> anyhow::Result<u32> {
    let n: i64 =
        sqlx::query_scalar("UPDATE messages SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts")
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .context("Cannot count the attempt to process the message")?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

pub(super) async fn attempts(conn: &mut PgConnection, id: MessageId) -> anyhow::Result<u32> {
    let n: i64 = sqlx::query_scalar("SELECT attempts FROM messages WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .context("Cannot read the message")?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

pub(super) async fn finish(
    conn: &mut PgConnection,
    id: MessageId,
    o: &MessageOutcome,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE messages SET
            classification = $2, received_at = $3, from_address = $4, from_name = $5,
            subject = $6, attachments = $7, detail = $8, request_id = $9, processed_at = $10,
            retry_requested_at = NULL
         WHERE id = $1",
    )
    .bind(id)
    .bind(o.classification.as_str())
    .bind(o.received_at.map(to_millis))
    .bind(opt_text(o.from_address.as_deref()))
    .bind(opt_text(o.from_name.as_deref()))
    .bind(opt_text(o.subject.as_deref()))
    .bind(opt_text(o.attachments.as_deref()))
    .bind(opt_text(o.detail.as_deref()))
    .bind(o.request_id)
    .bind(to_millis(at))
    .execute(&mut *conn)
    .await
    .context("Cannot record the message's outcome")?;
    Ok(())
}

pub(super) async fn mailbox_state(
    conn: &mut PgConnection,
    mailbox: &str,
) -> anyhow::Result<Option<MailboxState>> {
    let row =
        sqlx::query("SELECT uidvalidity, last_uid, backlog_below_uid FROM mailbox_state WHERE mailbox = $1")
            .bind(mailbox)
            .fetch_optional(&mut *conn)
            .await
            .context("Cannot read the mailbox state")?;
    row.map(|r| {
        Ok(MailboxState {
            uidvalidity: u32_of(r.try_get("uidvalidity")?, "uidvalidity")?,
            last_uid: u32_of(r.try_get("last_uid")?, "last_uid")?,
            backlog_below_uid: u32_of(r.try_get("backlog_below_uid")?, "backlog_below_uid")?,
        })
    })
    .transpose()
}

pub(super) async fn reset_mailbox_state(
    conn: &mut PgConnection,
    mailbox: &str,
    state: MailboxState,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO mailbox_state (mailbox, uidvalidity, last_uid, backlog_below_uid, updated_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (mailbox) DO UPDATE SET
             uidvalidity = EXCLUDED.uidvalidity,
             last_uid = EXCLUDED.last_uid,
             backlog_below_uid = EXCLUDED.backlog_below_uid,
             updated_at = EXCLUDED.updated_at",
    )
    .bind(mailbox)
    .bind(i64::from(state.uidvalidity))
    .bind(i64::from(state.last_uid))
    .bind(i64::from(state.backlog_below_uid))
    .bind(to_millis(now))
    .execute(&mut *conn)
    .await
    .context("Cannot write the mailbox state")?;
    Ok(())
}

/// Only ever forward, and only within the UIDVALIDITY it was read under.
pub(super) async fn set_checkpoint(
    conn: &mut PgConnection,
    mailbox: &str,
    uidvalidity: u32,
    last_uid: u32,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE mailbox_state SET last_uid = GREATEST(last_uid, $3), updated_at = $4
         WHERE mailbox = $1 AND uidvalidity = $2",
    )
    .bind(mailbox)
    .bind(i64::from(uidvalidity))
    .bind(i64::from(last_uid))
    .bind(to_millis(at))
    .execute(&mut *conn)
    .await
    .context("Cannot advance the inbox checkpoint")?;
    Ok(())
}

/// `SELECT <a message row> FROM messages m ` followed by the rest of the query.
macro_rules! select_messages {
    ($tail:literal) => {
        concat!(
            "SELECT m.id, m.message_id, m.received_at, m.from_address, m.subject, m.classification,
                m.detail, m.attempts, m.fetched_at, m.request_id,
                (SELECT r.reference FROM requests r WHERE r.id = m.request_id) AS reference
             FROM messages m ",
            $tail
        )
    };
}

pub(super) fn message_from_row(row: &sqlx::postgres::PgRow) -> anyhow::Result<MessageRow> {
    let classification: Option<String> = row.try_get("classification")?;
    Ok(MessageRow {
        id: row.try_get("id")?,
        message_id: row.try_get("message_id")?,
        received_at: row.try_get::<Option<i64>, _>("received_at")?.map(from_millis),
        from: row.try_get("from_address")?,
        subject: row.try_get("subject")?,
        classification: classification.as_deref().map(Classification::from_str).transpose()?,
        reference: row.try_get("reference")?,
        detail: row.try_get("detail")?,
        attempts: u32_of(row.try_get("attempts")?, "attempts")?,
    })
}

/// Every message, or only those of one request, oldest first.
pub(super) async fn list(
    conn: &mut PgConnection,
    request_id: Option<RequestId>,
) -> anyhow::Result<Vec<MessageRow>> {
    sqlx::query(select_messages!("WHERE $1::bigint IS NULL OR m.request_id = $1 ORDER BY m.id"))
        .bind(request_id)
        .fetch_all(&mut *conn)
        .await
        .context("Cannot list messages")?
        .iter()
        .map(message_from_row)
        .collect()
}

/// Messages filed in [from, to) as auto-replies recognised by their wording alone, oldest
/// first.
pub(super) async fn auto_replies_by_wording(
    conn: &mut PgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<Vec<MessageRow>> {
    // The prefix is compared with left() rather than LIKE: '_' and '%' in it are literal.
    sqlx::query(select_messages!(
        "WHERE m.classification = 'automated' AND m.processed_at >= $1 AND m.processed_at < $2
           AND left(m.detail, length($3)) = $3
         ORDER BY m.processed_at, m.id"
    ))
    .bind(to_millis(from))
    .bind(to_millis(to))
    .bind(crate::classify::BY_WORDING)
    .fetch_all(&mut *conn)
    .await
    .context("Cannot list the auto-replies")?
    .iter()
    .map(message_from_row)
    .collect()
}

/// A quarantined message's attempts back to none, marked for the daemon to process again.
pub(super) async fn request_retry(
    conn: &mut PgConnection,
    id: MessageId,
    at: DateTime<Utc>,
) -> anyhow::Result<RetryRequest> {
    let changed = sqlx::query(
        "UPDATE messages SET
             attempts = 0, retry_requested_at = $2, classification = NULL, detail = NULL,
             processed_at = NULL
         WHERE id = $1 AND classification = 'quarantined'",
    )
    .bind(id)
    .bind(to_millis(at))
    .execute(&mut *conn)
    .await
    .context("Cannot ask for the message to be processed again")?
    .rows_affected();
    if changed == 1 {
        return Ok(RetryRequest::Requested);
    }
    let found: Option<Option<String>> =
        sqlx::query_scalar("SELECT classification FROM messages WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .context("Cannot read the message")?;
    Ok(match found {
        None => RetryRequest::Missing,
        Some(class) => {
            RetryRequest::NotQuarantined(class.as_deref().map(Classification::from_str).transpose()?)
        }
    })
}

/// Messages whose retry was asked for and that are not yet processed, oldest first.
pub(super) async fn retries_requested(conn: &mut PgConnection) -> anyhow::Result<Vec<RetryMessage>> {
    let rows = sqlx::query(
        "SELECT id, uid, backlog, fetched_at FROM messages
         WHERE retry_requested_at IS NOT NULL AND processed_at IS NULL
         ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await
    .context("Cannot list the messages to retry")?;
    rows.iter()
        .map(|r| {
            Ok(RetryMessage {
                id: r.try_get("id")?,
                uid: u32_of(r.try_get("uid")?, "uid")?,
                backlog: r.try_get("backlog")?,
                fetched_at: from_millis(r.try_get("fetched_at")?),
            })
        })
        .collect()
}
