//! Retention, subject access and erasure on PostgreSQL, as `sqlite/retention.rs` does them.
//!
//! What a purge may take is written once, as SQL conditions shared by the preview and the
//! purge, so `gatehouse purge --dry-run` counts what `gatehouse purge` removes. Purge and
//! erasure each run in one transaction of their own.

use super::text::text;
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};

use super::messages::message_from_row;
use super::requests::{add_event, event_from_row, request_from_row};
use crate::clock::{from_millis, to_millis};
use crate::domain::EmailAddress;
use crate::store::retention::{
    Affected, Cutoffs, Erased, HeldMessage, HeldRequest, PersonData, PurgeCounts, Reclaimed, SentMail,
};
use crate::store::{EventKind, EventRow, RequestId};

/// A closed request `r` due for anonymisation ($3: the closed-requests cutoff). Open
/// requests never are. Statements bind all three cutoffs ($1 to $3) whichever they use.
const CLOSED_DUE: &str = "r.status = 'closed' AND r.anonymised_at IS NULL AND r.updated_at < $3";

/// A stored message `m` whose raw bytes may go ($1: the raw-messages cutoff): processed and
/// no retry asked for, and either old and not part of a request still open, or part of a
/// request due for anonymisation.
fn raw_due() -> String {
    format!(
        "m.processed_at IS NOT NULL AND m.retry_requested_at IS NULL AND (
            (m.fetched_at < $1 AND (m.request_id IS NULL OR EXISTS (
                SELECT 1 FROM requests r WHERE r.id = m.request_id AND r.status = 'closed')))
            OR EXISTS (SELECT 1 FROM requests r WHERE r.id = m.request_id AND {CLOSED_DUE}))"
    )
}

/// An outbox entry `o` whose bytes may go ($2: the sent-mail cutoff): finished with, bytes
/// still held, and either old or about a request anonymised or due to be. Mail not yet sent
/// never is.
fn sent_due() -> String {
    format!(
        "o.status IN ('sent', 'bounced', 'failed', 'cancelled') AND length(o.raw) > 0 AND (
            o.created_at < $2
            OR EXISTS (SELECT 1 FROM requests r WHERE r.id = o.request_id
                       AND (r.anonymised_at IS NOT NULL OR ({CLOSED_DUE}))))"
    )
}

/// An alert about one message set aside or one email given up (`quarantined:ID`,
/// `undeliverable:ID`); compared by prefix, not LIKE, so `_` is literal.
const ONE_OFF_ALERT: &str = "(left(key, length('quarantined:')) = 'quarantined:' OR left(key, length('undeliverable:')) = 'undeliverable:')";

/// Binds the three cutoffs as $1 to $3.
async fn execute_cut(
    conn: &mut PgConnection,
    sql: &str,
    cut: &Cutoffs,
    what: &'static str,
) -> anyhow::Result<u64> {
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(to_millis(cut.raw_messages))
        .bind(to_millis(cut.sent_mail))
        .bind(to_millis(cut.closed_requests))
        .execute(&mut *conn)
        .await
        .context(what)?
        .rows_affected())
}

fn affected(row: &PgRow) -> anyhow::Result<Affected> {
    Ok(Affected {
        count: row.try_get(0)?,
        oldest: row.try_get::<Option<i64>, _>(1)?.map(from_millis),
        newest: row.try_get::<Option<i64>, _>(2)?.map(from_millis),
    })
}

async fn count_of(conn: &mut PgConnection, sql: String, cut: &Cutoffs) -> anyhow::Result<Affected> {
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(to_millis(cut.raw_messages))
        .bind(to_millis(cut.sent_mail))
        .bind(to_millis(cut.closed_requests))
        .fetch_one(&mut *conn)
        .await
        .context("Cannot count what retention would remove")?;
    affected(&row)
}

/// What a purge with `cut` would take.
pub(super) async fn preview(conn: &mut PgConnection, cut: &Cutoffs) -> anyhow::Result<PurgeCounts> {
    Ok(PurgeCounts {
        raw_messages: count_of(
            conn,
            format!(
                "SELECT COUNT(*), MIN(m.fetched_at), MAX(m.fetched_at)
                 FROM messages m JOIN raw_messages rm ON rm.id = m.id WHERE {}",
                raw_due()
            ),
            cut,
        )
        .await?,
        sent_mail: count_of(
            conn,
            format!(
                "SELECT COUNT(*), MIN(o.created_at), MAX(o.created_at) FROM outbox o WHERE {}",
                sent_due()
            ),
            cut,
        )
        .await?,
        answer_records: count_of(
            conn,
            "SELECT COUNT(*), MIN(created_at), MAX(created_at) FROM answered WHERE created_at < $2".into(),
            cut,
        )
        .await?,
        closed_requests: count_of(
            conn,
            format!(
                "SELECT COUNT(*), MIN(r.updated_at), MAX(r.updated_at) FROM requests r WHERE {CLOSED_DUE}"
            ),
            cut,
        )
        .await?,
    })
}

/// Removes what `cut` says may go and records the counts (never the content) as a `purge`
/// service event by `actor`; the caller's transaction makes it all or nothing.
pub(super) async fn purge(
    conn: &mut PgConnection,
    cut: &Cutoffs,
    actor: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<PurgeCounts> {
    let counts = preview(conn, cut).await?;
    // Raw bytes first, while the conditions still see which requests are due. Attachment
    // names go with the bytes; a message of no request keeps only what stops it being
    // processed again (its Message-ID, hash and classification).
    let clear = format!(
        "UPDATE messages SET attachments = NULL,
            from_address = CASE WHEN request_id IS NULL THEN NULL ELSE from_address END,
            from_name = CASE WHEN request_id IS NULL THEN NULL ELSE from_name END,
            subject = CASE WHEN request_id IS NULL THEN NULL ELSE subject END,
            detail = CASE WHEN request_id IS NULL THEN NULL ELSE detail END
         WHERE id IN (SELECT m.id FROM messages m JOIN raw_messages rm ON rm.id = m.id WHERE {})",
        raw_due()
    );
    execute_cut(conn, &clear, cut, "Cannot clear old messages' details").await?;
    let bytes =
        format!("DELETE FROM raw_messages WHERE id IN (SELECT m.id FROM messages m WHERE {})", raw_due());
    execute_cut(conn, &bytes, cut, "Cannot remove old messages' bytes").await?;
    let sent = format!(
        "UPDATE outbox SET raw = ''::bytea, recipients = '[]', subject = ''
         WHERE id IN (SELECT o.id FROM outbox o WHERE {})",
        sent_due()
    );
    execute_cut(conn, &sent, cut, "Cannot remove old sent mail").await?;
    execute_cut(conn, "DELETE FROM answered WHERE created_at < $2", cut, "Cannot remove old answer records")
        .await?;
    // An alert about one message or one email keeps that mail's subject (a sender's words)
    // and is never resolved: it goes with the sent mail it was about.
    let alerts = format!("DELETE FROM alerts WHERE {ONE_OFF_ALERT} AND last_sent < $2");
    execute_cut(conn, &alerts, cut, "Cannot remove old alerts").await?;
    let due: Vec<RequestId> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT r.id FROM requests r WHERE {CLOSED_DUE} ORDER BY r.id"
    )))
    .bind(to_millis(cut.raw_messages))
    .bind(to_millis(cut.sent_mail))
    .bind(to_millis(cut.closed_requests))
    .fetch_all(&mut *conn)
    .await
    .context("Cannot find the closed requests due")?;
    for id in due {
        anonymise(conn, id, at).await?;
        let why = "closed for longer than [retention] closed_requests_months: personal data removed";
        add_event(conn, id, at, actor, EventKind::Anonymised, Some(why)).await?;
    }
    add_service_event(conn, at, actor, EventKind::Purge, &describe(&counts)).await?;
    Ok(counts)
}

/// The purge's counts in words, for the event log.
fn describe(c: &PurgeCounts) -> String {
    format!(
        "raw messages: {}, sent emails: {}, answer records: {}, closed requests anonymised: {}",
        c.raw_messages.count, c.sent_mail.count, c.answer_records.count, c.closed_requests.count
    )
}

/// Removes a request's personal data, keeping its reference, status, dates, organisation,
/// decision, meeting date and priorities (as SQLite's `anonymise`, the definition).
async fn anonymise(conn: &mut PgConnection, id: RequestId, at: DateTime<Utc>) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE requests SET requester = '', requester_name = NULL, via = NULL, subject = '', body = '',
            decision_detail = NULL, anonymised_at = $2
         WHERE id = $1",
    )
    .bind(id)
    .bind(to_millis(at))
    .execute(&mut *conn)
    .await
    .context("Cannot anonymise the request")?;
    let steps: [(&'static str, &'static str); 8] = [
        // The log keeps what happened and when; senders' addresses as actors go, the
        // gatekeepers' and the operator's names stay (they acted in their work role).
        (
            "UPDATE request_events SET detail = NULL,
                actor = CASE WHEN kind IN ('decision', 'priority', 'note') OR strpos(actor, '@') = 0
                             THEN actor ELSE 'sender' END
             WHERE request_id = $1",
            "Cannot anonymise the request's log",
        ),
        ("DELETE FROM request_fingerprints WHERE request_id = $1", "Cannot remove the fingerprint"),
        ("DELETE FROM thread_message_ids WHERE request_id = $1", "Cannot remove the thread"),
        (
            "DELETE FROM raw_messages WHERE id IN (SELECT id FROM messages WHERE request_id = $1)",
            "Cannot remove the request's messages",
        ),
        (
            "UPDATE messages SET from_address = NULL, from_name = NULL, subject = NULL, attachments = NULL,
                detail = NULL
             WHERE request_id = $1",
            "Cannot clear the request's messages",
        ),
        (
            "DELETE FROM answered WHERE outbox_id IN (SELECT id FROM outbox WHERE request_id = $1)",
            "Cannot remove the request's answer records",
        ),
        (
            "DELETE FROM alerts WHERE key IN (SELECT 'undeliverable:' || id FROM outbox WHERE request_id = $1)",
            "Cannot remove the alerts about the request's mail",
        ),
        (
            "UPDATE outbox SET raw = ''::bytea, recipients = '[]', subject = ''
             WHERE request_id = $1 AND status IN ('sent', 'bounced', 'failed', 'cancelled')",
            "Cannot remove the request's sent mail",
        ),
    ];
    for (sql, what) in steps {
        sqlx::query(sql).bind(id).execute(&mut *conn).await.context(what)?;
    }
    Ok(())
}

pub(super) async fn add_service_event(
    conn: &mut PgConnection,
    at: DateTime<Utc>,
    actor: &str,
    kind: EventKind,
    detail: &str,
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO service_events (at, actor, kind, detail) VALUES ($1, $2, $3, $4)")
        .bind(to_millis(at))
        .bind(text(actor))
        .bind(kind.as_str())
        .bind(text(detail))
        .execute(&mut *conn)
        .await
        .context("Cannot record the service event")?;
    Ok(())
}

pub(super) async fn service_events(conn: &mut PgConnection) -> anyhow::Result<Vec<EventRow>> {
    sqlx::query("SELECT at, actor, kind, detail FROM service_events ORDER BY at, id")
        .fetch_all(&mut *conn)
        .await
        .context("Cannot read the service events")?
        .iter()
        .map(event_from_row)
        .collect()
}

/// `gatehouse erase REF` in the caller's transaction: the request (locked against a
/// concurrent writer) anonymised, its messages' bytes and mail removed, mail not yet sent
/// cancelled, and an `erased` event by `actor`. None when there is no such request.
pub(super) async fn erase(
    conn: &mut PgConnection,
    reference: &str,
    actor: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<Option<Erased>> {
    let Some(id): Option<RequestId> =
        sqlx::query_scalar("SELECT id FROM requests WHERE reference = $1 FOR UPDATE")
            .bind(reference)
            .fetch_optional(&mut *conn)
            .await
            .context("Cannot find the request")?
    else {
        return Ok(None);
    };
    let cancelled = sqlx::query(
        "UPDATE outbox SET status = 'cancelled', last_error = 'erased before it was sent'
         WHERE request_id = $1 AND status = 'pending'",
    )
    .bind(id)
    .execute(&mut *conn)
    .await
    .context("Cannot cancel the request's unsent mail")?
    .rows_affected();
    let raw_messages = count_for(
        conn,
        id,
        "SELECT COUNT(*) FROM raw_messages WHERE id IN (SELECT id FROM messages WHERE request_id = $1)",
    )
    .await?;
    let sent_mail = count_for(
        conn,
        id,
        "SELECT COUNT(*) FROM outbox WHERE request_id = $1 AND length(raw) > 0
           AND status IN ('sent', 'bounced', 'failed', 'cancelled')",
    )
    .await?;
    let in_flight_mail = count_for(
        conn,
        id,
        "SELECT COUNT(*) FROM outbox WHERE request_id = $1 AND status IN ('claimed', 'sending')",
    )
    .await?;
    let erased = Erased {
        raw_messages,
        sent_mail,
        cancelled_mail: i64::try_from(cancelled).unwrap_or(i64::MAX),
        in_flight_mail,
    };
    anonymise(conn, id, at).await?;
    let detail = format!(
        "removed: requester, name, forwarder, subject, body, outcome text, notes and event details, {} incoming message(s) with their attachments, {} sent email(s); {} unsent email(s) cancelled",
        erased.raw_messages, erased.sent_mail, erased.cancelled_mail
    );
    add_event(conn, id, at, actor, EventKind::Erased, Some(&detail)).await?;
    Ok(Some(erased))
}

/// A `SELECT COUNT(*)` about request `id` ($1).
async fn count_for(conn: &mut PgConnection, id: RequestId, sql: &'static str) -> anyhow::Result<i64> {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .context("Cannot count the request's messages and mail")
}

/// Everything held about `person`, compared as `EmailAddress::person` compares (case and
/// `+tag` folded): SQL narrows by domain, the rule decides (as SQLite's `person_data`).
pub(super) async fn person_data(
    conn: &mut PgConnection,
    person: &EmailAddress,
) -> anyhow::Result<PersonData> {
    let wanted = person.person();
    let same = |address: Option<&str>| {
        address.and_then(|a| EmailAddress::parse(a).ok()).is_some_and(|a| a.person() == wanted)
    };
    let like = format!("%@{}", person.domain());
    let parties: Vec<(RequestId, String, Option<String>)> = sqlx::query_as(
        "SELECT id, requester, via FROM requests WHERE requester LIKE $1 OR via LIKE $1 ORDER BY id",
    )
    .bind(&like)
    .fetch_all(&mut *conn)
    .await
    .context("Cannot find the person's requests")?
    .into_iter()
    .filter(|(_, requester, via): &(RequestId, String, Option<String>)| {
        same(Some(requester)) || same(via.as_deref())
    })
    .collect();
    let ids: Vec<RequestId> = parties.iter().map(|(id, _, _)| *id).collect();
    // A message of one of their requests goes in when it came from the request's requester
    // or forwarder, not when someone else wrote it (a gatekeeper's reply, a stranger quoting
    // the reference).
    let from_a_party = |request_id: RequestId, from: Option<&str>| {
        let Some(from) = from.and_then(|a| EmailAddress::parse(a).ok()) else {
            // Its sender already removed by retention: nothing of anyone else's is left.
            return from.is_none();
        };
        parties.iter().filter(|(id, _, _)| *id == request_id).any(|(_, requester, via)| {
            [Some(requester.as_str()), via.as_deref()]
                .into_iter()
                .flatten()
                .filter_map(|a| EmailAddress::parse(a).ok())
                .any(|a| a.person() == from.person())
        })
    };
    let mut data = PersonData::default();
    let requests = sqlx::query(select_requests!("WHERE r.id = ANY($1) ORDER BY r.id"))
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .context("Cannot read the person's requests")?;
    for row in &requests {
        let request = request_from_row(row)?;
        let anonymised_at = row.try_get::<Option<i64>, _>("anonymised_at")?.map(from_millis);
        let events = super::requests::events(conn, request.id).await?;
        data.requests.push(HeldRequest { request, events, anonymised_at });
    }
    let messages =
        sqlx::query(select_messages!("WHERE m.from_address LIKE $1 OR m.request_id = ANY($2) ORDER BY m.id"))
            .bind(&like)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .context("Cannot find the person's messages")?;
    for row in &messages {
        let message = message_from_row(row)?;
        let request_id: Option<RequestId> = row.try_get("request_id")?;
        if !(same(message.from.as_deref())
            || request_id.is_some_and(|r| from_a_party(r, message.from.as_deref())))
        {
            continue;
        }
        let raw: Option<Vec<u8>> = sqlx::query_scalar("SELECT raw FROM raw_messages WHERE id = $1")
            .bind(message.id)
            .fetch_optional(&mut *conn)
            .await
            .context("Cannot read the message's bytes")?;
        let fetched_at = from_millis(row.try_get("fetched_at")?);
        data.incoming.push(HeldMessage { row: message, fetched_at, raw });
    }
    let sent = sqlx::query(
        "SELECT o.id, o.kind, o.message_id, o.recipients, o.subject, o.status, o.created_at, o.sent_at, o.raw,
            (SELECT r.reference FROM requests r WHERE r.id = o.request_id) AS reference
         FROM outbox o WHERE o.recipients LIKE $1 ORDER BY o.id",
    )
    .bind(format!("%@{}%", person.domain()))
    .fetch_all(&mut *conn)
    .await
    .context("Cannot find the mail sent to the person")?;
    for row in &sent {
        let mail = sent_mail(row)?;
        if mail.recipients.iter().any(|r| same(Some(r))) {
            data.sent.push(mail);
        }
    }
    Ok(data)
}

fn sent_mail(row: &PgRow) -> anyhow::Result<SentMail> {
    let recipients: String = row.try_get("recipients")?;
    Ok(SentMail {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        message_id: row.try_get("message_id")?,
        reference: row.try_get("reference")?,
        recipients: serde_json::from_str(&recipients)
            .context("An outbox entry's recipients are not a list")?,
        subject: row.try_get("subject")?,
        status: row.try_get("status")?,
        created_at: from_millis(row.try_get("created_at")?),
        sent_at: row.try_get::<Option<i64>, _>("sent_at")?.map(from_millis),
        raw: row.try_get("raw")?,
    })
}

/// After a purge: a plain VACUUM of the tables a purge empties, so the space is reused
/// and trailing pages go back to the file system. It takes no lock that stops the daemon's
/// writes, and cannot run inside a transaction (so: on a connection of its own).
pub(super) async fn reclaim(conn: &mut PgConnection) -> anyhow::Result<Reclaimed> {
    let size = "SELECT pg_database_size(current_database())";
    let before: i64 =
        sqlx::query_scalar(size).fetch_one(&mut *conn).await.context("Cannot read the database's size")?;
    sqlx::query("VACUUM raw_messages, messages, outbox, answered, requests, request_events, alerts")
        .execute(&mut *conn)
        .await
        .context("Cannot reclaim space (VACUUM)")?;
    let after: i64 =
        sqlx::query_scalar(size).fetch_one(&mut *conn).await.context("Cannot read the database's size")?;
    Ok(Reclaimed {
        bytes_before: u64::try_from(before).unwrap_or(0),
        bytes_after: u64::try_from(after).unwrap_or(0),
        how: "vacuum",
    })
}
