//! Requests, their events, thread Message-IDs and reference numbers.

use std::str::FromStr as _;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};

use super::text::{opt_text, text, text_list};

use crate::classify::Fingerprint;
use crate::clock::{from_millis, to_millis};
use crate::domain::{Decision, Status};
use crate::store::{
    Candidate, EventKind, EventRow, NewRequest, OutboxId, RequestId, RequestRow, RequestText,
};

/// `SELECT <a request row> FROM requests r ` followed by the rest of the query.
macro_rules! select_requests {
    ($tail:literal) => {
        concat!(
            "SELECT r.id, r.reference, r.status, r.decision, r.decision_detail, r.requester,
                r.requester_name, r.organisation, r.via, r.subject, r.body, r.received_at,
                r.decided_at, r.meeting_date,
                (SELECT d.reference FROM requests d WHERE d.id = r.duplicate_of) AS duplicate_of_ref,
                (SELECT p.reference FROM requests p WHERE p.id = r.probable_duplicate_of) AS probable_ref,
                (SELECT COUNT(*) FROM messages m WHERE m.request_id = r.id
                    AND m.classification IN ('new', 'forwarded', 'follow_up')) AS message_count,
                (SELECT string_agg(priority, ',' ORDER BY priority) FROM request_priorities rp
                    WHERE rp.request_id = r.id) AS priorities,
                r.token, r.answer, r.requester_unverified, r.anonymised_at
             FROM requests r ",
            $tail
        )
    };
}

pub(super) fn request_from_row(row: &PgRow) -> anyhow::Result<RequestRow> {
    let status: String = row.try_get("status")?;
    let decision: Option<String> = row.try_get("decision")?;
    let meeting: Option<String> = row.try_get("meeting_date")?;
    let priorities: Option<String> = row.try_get("priorities")?;
    Ok(RequestRow {
        id: row.try_get("id")?,
        reference: row.try_get("reference")?,
        status: Status::from_str(&status)?,
        decision: decision.as_deref().map(Decision::from_str).transpose()?,
        decision_detail: row.try_get("decision_detail")?,
        requester: row.try_get("requester")?,
        requester_name: row.try_get("requester_name")?,
        organisation: row.try_get("organisation")?,
        via: row.try_get("via")?,
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        received_at: from_millis(row.try_get("received_at")?),
        decided_at: row.try_get::<Option<i64>, _>("decided_at")?.map(from_millis),
        meeting_date: meeting.as_deref().map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d")).transpose()?,
        priorities: priorities
            .map(|p| p.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default(),
        duplicate_of: row.try_get("duplicate_of_ref")?,
        probable_duplicate_of: row.try_get("probable_ref")?,
        message_count: row.try_get("message_count")?,
        token: row.try_get("token")?,
        answer: row.try_get("answer")?,
        requester_unverified: row.try_get("requester_unverified")?,
    })
}

pub(super) async fn find(conn: &mut PgConnection, reference: &str) -> anyhow::Result<Option<RequestRow>> {
    sqlx::query(select_requests!("WHERE r.reference = $1"))
        .bind(reference.trim().to_ascii_uppercase())
        .fetch_optional(&mut *conn)
        .await
        .context("Cannot read the request")?
        .as_ref()
        .map(request_from_row)
        .transpose()
}

pub(super) async fn by_token(conn: &mut PgConnection, token: &str) -> anyhow::Result<Option<RequestRow>> {
    sqlx::query(select_requests!("WHERE r.token = $1"))
        .bind(token)
        .fetch_optional(&mut *conn)
        .await
        .context("Cannot read the request")?
        .as_ref()
        .map(request_from_row)
        .transpose()
}

pub(super) async fn for_thread(
    conn: &mut PgConnection,
    ids: &[String],
) -> anyhow::Result<Option<RequestRow>> {
    if ids.is_empty() {
        return Ok(None);
    }
    sqlx::query(select_requests!(
        "WHERE r.id IN (SELECT t.request_id FROM thread_message_ids t WHERE t.message_id = ANY($1))
         ORDER BY r.received_at DESC, r.id DESC LIMIT 1"
    ))
    .bind(text_list(ids))
    .fetch_optional(&mut *conn)
    .await
    .context("Cannot read the thread")?
    .as_ref()
    .map(request_from_row)
    .transpose()
}

pub(super) async fn list(conn: &mut PgConnection, status: Option<&str>) -> anyhow::Result<Vec<RequestRow>> {
    sqlx::query(select_requests!("WHERE $1::text IS NULL OR r.status = $1 ORDER BY r.id"))
        .bind(status)
        .fetch_all(&mut *conn)
        .await
        .context("Cannot read the requests")?
        .iter()
        .map(request_from_row)
        .collect()
}

/// The next number in `year`'s references. The counter row stays locked by this transaction
/// until it ends, so a concurrent intake waits for it and then counts on from what it
/// committed: no number twice, and none skipped (a rollback gives the number back).
pub(super) async fn next_reference_seq(conn: &mut PgConnection, year: i32) -> anyhow::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO reference_counters (year, last_seq) VALUES ($1, 1)
         ON CONFLICT (year) DO UPDATE SET last_seq = reference_counters.last_seq + 1
         RETURNING last_seq",
    )
    .bind(i64::from(year))
    .fetch_one(&mut *conn)
    .await
    .context("Cannot allocate a reference")
}

pub(super) async fn insert(
    conn: &mut PgConnection,
    r: &NewRequest,
    now: DateTime<Utc>,
) -> anyhow::Result<RequestId> {
    let id: RequestId = sqlx::query_scalar(
        "INSERT INTO requests
            (reference, ref_year, ref_seq, status, requester, requester_name, organisation, via,
             subject, body, received_at, probable_duplicate_of, token, answer, requester_unverified,
             created_at, updated_at)
         VALUES ($1, $2, $3, 'awaiting_triage', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)
         RETURNING id",
    )
    .bind(&r.reference)
    .bind(i64::from(r.ref_year))
    .bind(r.ref_seq)
    .bind(text(&r.requester))
    .bind(opt_text(r.requester_name.as_deref()))
    .bind(opt_text(r.organisation.as_deref()))
    .bind(opt_text(r.via.as_deref()))
    .bind(text(&r.subject))
    .bind(text(&r.body))
    .bind(to_millis(r.received_at))
    .bind(r.probable_duplicate_of)
    .bind(&r.token)
    .bind(r.answer)
    .bind(r.requester_unverified)
    .bind(to_millis(now))
    .fetch_one(&mut *conn)
    .await
    .context("Cannot create the request")?;
    sqlx::query("INSERT INTO request_fingerprints (request_id, fingerprint) VALUES ($1, $2)")
        .bind(id)
        .bind(r.fingerprint.to_bytes())
        .execute(&mut *conn)
        .await
        .context("Cannot store the request's fingerprint")?;
    Ok(id)
}

pub(super) async fn add_event(
    conn: &mut PgConnection,
    request_id: RequestId,
    at: DateTime<Utc>,
    actor: &str,
    kind: EventKind,
    detail: Option<&str>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO request_events (request_id, at, actor, kind, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(request_id)
    .bind(to_millis(at))
    .bind(text(actor))
    .bind(kind.as_str())
    .bind(opt_text(detail))
    .execute(&mut *conn)
    .await
    .context("Cannot record the event")?;
    Ok(())
}

/// An event line read back (`at`, `actor`, `kind`, `detail`).
pub(super) fn event_from_row(r: &PgRow) -> anyhow::Result<EventRow> {
    let kind: String = r.try_get("kind")?;
    Ok(EventRow {
        at: from_millis(r.try_get("at")?),
        actor: r.try_get("actor")?,
        kind: EventKind::parse(&kind).with_context(|| format!("Unknown event kind {kind:?}"))?,
        detail: r.try_get("detail")?,
    })
}

pub(super) async fn events(conn: &mut PgConnection, request_id: RequestId) -> anyhow::Result<Vec<EventRow>> {
    let rows = sqlx::query(
        "SELECT at, actor, kind, detail FROM request_events WHERE request_id = $1 ORDER BY at, id",
    )
    .bind(request_id)
    .fetch_all(&mut *conn)
    .await
    .context("Cannot read the request's events")?;
    rows.iter().map(event_from_row).collect()
}

pub(super) async fn add_thread_id(
    conn: &mut PgConnection,
    message_id: &str,
    request_id: RequestId,
    direction: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO thread_message_ids (message_id, request_id, direction) VALUES ($1, $2, $3)
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(text(message_id))
    .bind(request_id)
    .bind(direction)
    .execute(&mut *conn)
    .await
    .context("Cannot record the thread")?;
    Ok(())
}

pub(super) async fn set_status(
    conn: &mut PgConnection,
    request_id: RequestId,
    status: Status,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE requests SET status = $2, updated_at = $3 WHERE id = $1")
        .bind(request_id)
        .bind(status.as_str())
        .bind(to_millis(at))
        .execute(&mut *conn)
        .await
        .context("Cannot change the request's status")?;
    Ok(())
}

pub(super) async fn add_priority(
    conn: &mut PgConnection,
    request_id: RequestId,
    key: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO request_priorities (request_id, priority) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
    )
    .bind(request_id)
    .bind(key)
    .execute(&mut *conn)
    .await
    .context("Cannot record the priority")?;
    Ok(())
}

/// The request a gatekeeper notification with one of these Message-IDs was about.
pub(super) async fn for_notification(
    conn: &mut PgConnection,
    ids: &[String],
) -> anyhow::Result<Option<RequestRow>> {
    if ids.is_empty() {
        return Ok(None);
    }
    sqlx::query(select_requests!(
        "WHERE r.id IN (SELECT t.request_id FROM thread_message_ids t
                        WHERE t.direction = 'out:notification' AND t.message_id = ANY($1))
         ORDER BY r.id DESC LIMIT 1"
    ))
    .bind(text_list(ids))
    .fetch_optional(&mut *conn)
    .await
    .context("Cannot look up the notification")?
    .as_ref()
    .map(request_from_row)
    .transpose()
}

/// Earlier requests from this requester or organisation that are open or recent, newest
/// first, at most `limit`: each side walks its own index and stops at the limit.
pub(super) async fn recent(
    conn: &mut PgConnection,
    requester: &str,
    organisation: Option<&str>,
    since: DateTime<Utc>,
    limit: i64,
) -> anyhow::Result<Vec<(RequestId, String)>> {
    let rows = sqlx::query(
        "SELECT id, token FROM (
             (SELECT id, token FROM requests
              WHERE requester = $1 AND (status <> 'closed' OR received_at >= $3)
              ORDER BY id DESC LIMIT $4)
             UNION
             (SELECT id, token FROM requests
              WHERE organisation = $2 AND (status <> 'closed' OR received_at >= $3)
              ORDER BY id DESC LIMIT $4)
         ) c
         ORDER BY id DESC LIMIT $4",
    )
    .bind(text(requester))
    .bind(opt_text(organisation))
    .bind(to_millis(since))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
    .context("Cannot look for earlier approaches")?;
    rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("token")?))).collect()
}

/// What the requests with these tokens are compared by (the body only for a request
/// stored without a fingerprint).
pub(super) async fn texts(conn: &mut PgConnection, tokens: &[String]) -> anyhow::Result<Vec<RequestText>> {
    if tokens.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT r.token, r.subject, f.fingerprint, CASE WHEN f.fingerprint IS NULL THEN r.body END AS body
         FROM requests r LEFT JOIN request_fingerprints f ON f.request_id = r.id
         WHERE r.token = ANY($1)",
    )
    .bind(tokens)
    .fetch_all(&mut *conn)
    .await
    .context("Cannot read earlier approaches")?;
    rows.iter()
        .map(|row| {
            let stored: Option<Vec<u8>> = row.try_get("fingerprint")?;
            let fingerprint = match stored.as_deref().and_then(Fingerprint::from_bytes) {
                Some(f) => f,
                None => Fingerprint::of(&row.try_get::<Option<String>, _>("body")?.unwrap_or_default()),
            };
            Ok(RequestText { token: row.try_get("token")?, subject: row.try_get("subject")?, fingerprint })
        })
        .collect()
}

/// The requests with these ids as the gatekeeper sees them, newest first.
pub(super) async fn candidates(conn: &mut PgConnection, ids: &[RequestId]) -> anyhow::Result<Vec<Candidate>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT id, reference, requester, organisation, subject, status, decision
         FROM requests WHERE id = ANY($1) ORDER BY id DESC",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .context("Cannot read earlier approaches")?;
    rows.iter()
        .map(|row| {
            let status: String = row.try_get("status")?;
            let decision: Option<String> = row.try_get("decision")?;
            Ok(Candidate {
                id: row.try_get("id")?,
                reference: row.try_get("reference")?,
                requester: row.try_get("requester")?,
                organisation: row.try_get("organisation")?,
                subject: row.try_get("subject")?,
                status: Status::from_str(&status)?,
                decision: decision.as_deref().map(Decision::from_str).transpose()?,
            })
        })
        .collect()
}

/// Records a decision; the status follows from it (PRODUCT.md).
pub(super) async fn record_decision(
    conn: &mut PgConnection,
    request_id: RequestId,
    decision: Decision,
    detail: Option<&str>,
    meeting_date: Option<NaiveDate>,
    duplicate_of: Option<RequestId>,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE requests SET
             status = $2, decision = $3, decision_detail = $4, meeting_date = $5,
             duplicate_of = $6, decided_at = $7, updated_at = $7
         WHERE id = $1",
    )
    .bind(request_id)
    .bind(decision.status().as_str())
    .bind(decision.as_str())
    .bind(opt_text(detail))
    .bind(meeting_date.map(|d| d.format("%Y-%m-%d").to_string()))
    .bind(duplicate_of)
    .bind(to_millis(at))
    .execute(&mut *conn)
    .await
    .context("Cannot record the decision")?;
    Ok(())
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Runs a `select_requests!` query and maps its rows.
async fn rows_of(
    conn: &mut PgConnection,
    query: PgQuery<'_>,
    what: &'static str,
) -> anyhow::Result<Vec<RequestRow>> {
    query.fetch_all(&mut *conn).await.context(what)?.iter().map(request_from_row).collect()
}

pub(super) async fn awaiting_triage(conn: &mut PgConnection) -> anyhow::Result<Vec<RequestRow>> {
    let q = sqlx::query(select_requests!("WHERE r.status = 'awaiting_triage' ORDER BY r.received_at, r.id"));
    rows_of(conn, q, "Cannot list requests awaiting triage").await
}

pub(super) async fn received_between(
    conn: &mut PgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<Vec<RequestRow>> {
    let q = sqlx::query(select_requests!(
        "WHERE r.received_at >= $1 AND r.received_at < $2 ORDER BY r.received_at, r.id"
    ))
    .bind(to_millis(from))
    .bind(to_millis(to));
    rows_of(conn, q, "Cannot read the requests received").await
}

pub(super) async fn decided_between(
    conn: &mut PgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<Vec<RequestRow>> {
    let q = sqlx::query(select_requests!(
        "WHERE r.decided_at >= $1 AND r.decided_at < $2 ORDER BY r.decided_at, r.id"
    ))
    .bind(to_millis(from))
    .bind(to_millis(to));
    rows_of(conn, q, "Cannot read the requests decided").await
}

pub(super) async fn with_status(
    conn: &mut PgConnection,
    status: Status,
    limit: i64,
) -> anyhow::Result<(Vec<RequestRow>, usize)> {
    let q = sqlx::query(select_requests!("WHERE r.status = $1 ORDER BY r.received_at, r.id LIMIT $2"))
        .bind(status.as_str())
        .bind(limit);
    let rows = rows_of(conn, q, "Cannot list requests by status").await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE status = $1")
        .bind(status.as_str())
        .fetch_one(&mut *conn)
        .await
        .context("Cannot count requests by status")?;
    Ok((rows, usize::try_from(total).unwrap_or(0)))
}

pub(super) async fn agenda_for(conn: &mut PgConnection, date: NaiveDate) -> anyhow::Result<Vec<RequestRow>> {
    let q = sqlx::query(select_requests!(
        "WHERE r.decision = 'meeting' AND r.meeting_date = $1 ORDER BY r.decided_at, r.id"
    ))
    .bind(date.format("%Y-%m-%d").to_string());
    rows_of(conn, q, "Cannot read the agenda").await
}

pub(super) async fn arrivals_since(
    conn: &mut PgConnection,
    since: DateTime<Utc>,
) -> anyhow::Result<Vec<DateTime<Utc>>> {
    let times: Vec<i64> = sqlx::query_scalar("SELECT received_at FROM requests WHERE received_at >= $1")
        .bind(to_millis(since))
        .fetch_all(&mut *conn)
        .await
        .context("Cannot read arrival times")?;
    Ok(times.into_iter().map(from_millis).collect())
}

/// The `kind` events of these requests, by request id.
pub(super) async fn events_of_kind(
    conn: &mut PgConnection,
    request_ids: &[RequestId],
    kind: EventKind,
) -> anyhow::Result<Vec<(RequestId, EventRow)>> {
    if request_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT request_id, at, actor, kind, detail FROM request_events
         WHERE kind = $2 AND request_id = ANY($1)
         ORDER BY request_id, at, id",
    )
    .bind(request_ids)
    .bind(kind.as_str())
    .fetch_all(&mut *conn)
    .await
    .context("Cannot read events")?;
    rows.iter().map(|r| Ok((r.try_get("request_id")?, event_from_row(r)?))).collect()
}

/// What the board has been told is on the agenda for `date`, in the order told; `None`
/// until that agenda has gone.
pub(super) async fn agenda_told(
    conn: &mut PgConnection,
    date: NaiveDate,
) -> anyhow::Result<Option<Vec<RequestRow>>> {
    let date = date.format("%Y-%m-%d").to_string();
    if !agenda_sent(conn, &date).await? {
        return Ok(None);
    }
    let rows = sqlx::query(select_requests!(
        "JOIN agenda_told t ON t.request_id = r.id WHERE t.meeting_date = $1
         ORDER BY t.told_at, r.decided_at, r.id"
    ))
    .bind(&date)
    .fetch_all(&mut *conn)
    .await
    .context("Cannot read what the board was told")?;
    rows.iter().map(request_from_row).collect::<anyhow::Result<_>>().map(Some)
}

/// As [`agenda_told`], the request ids only.
pub(super) async fn agenda_told_ids(
    conn: &mut PgConnection,
    date: NaiveDate,
) -> anyhow::Result<Option<Vec<RequestId>>> {
    let date = date.format("%Y-%m-%d").to_string();
    if !agenda_sent(conn, &date).await? {
        return Ok(None);
    }
    sqlx::query_scalar(
        "SELECT request_id FROM agenda_told WHERE meeting_date = $1 ORDER BY told_at, request_id",
    )
    .bind(&date)
    .fetch_all(&mut *conn)
    .await
    .context("Cannot read what the board was told")
    .map(Some)
}

/// Records that the `on` requests are on the agenda for `date` and the `off` ones no longer.
pub(super) async fn record_agenda_told(
    conn: &mut PgConnection,
    date: NaiveDate,
    on: &[RequestId],
    off: &[RequestId],
    outbox_id: Option<OutboxId>,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    let date = date.format("%Y-%m-%d").to_string();
    sqlx::query(
        "INSERT INTO agenda_told (meeting_date, request_id, outbox_id, told_at)
         SELECT $1, id, $3, $4 FROM unnest($2::bigint[]) AS id
         ON CONFLICT (meeting_date, request_id) DO NOTHING",
    )
    .bind(&date)
    .bind(on)
    .bind(outbox_id)
    .bind(to_millis(at))
    .execute(&mut *conn)
    .await
    .context("Cannot record what the board was told")?;
    sqlx::query("DELETE FROM agenda_told WHERE meeting_date = $1 AND request_id = ANY($2)")
        .bind(&date)
        .bind(off)
        .execute(&mut *conn)
        .await
        .context("Cannot record what the board was told")?;
    Ok(())
}

/// Whether the agenda for the meeting on `date` (YYYY-MM-DD) has gone.
async fn agenda_sent(conn: &mut PgConnection, date: &str) -> anyhow::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM summaries WHERE kind = 'agenda' AND period = $1)")
        .bind(date)
        .fetch_one(&mut *conn)
        .await
        .context("Cannot read the summaries")
}
