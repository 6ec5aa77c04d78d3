//! Statements and row mapping shared by the aggregates' files: the one way a query runs
//! (cached, with context on failure) and the one way a row becomes a domain row.

use super::*;

/// Runs one statement (cached), returning how many rows it changed.
/// One line of a request's event log (`at` in milliseconds): the one way every writer adds it.
pub(super) fn insert_event(
    conn: &Connection,
    request_id: i64,
    at: i64,
    actor: &str,
    kind: &str,
    detail: Option<&str>,
) -> anyhow::Result<()> {
    exec(
        conn,
        "INSERT INTO request_events (request_id, at, actor, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![request_id, at, actor, kind, detail],
        "Cannot record the event",
    )
    .map(drop)
}

pub(super) fn exec(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    what: &'static str,
) -> anyhow::Result<usize> {
    conn.prepare_cached(sql).and_then(|mut s| s.execute(params)).context(what)
}

/// The first row of a query, if any.
pub(super) fn one<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    map: impl FnOnce(&Row<'_>) -> anyhow::Result<T>,
    what: &'static str,
) -> anyhow::Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql).context(what)?;
    let mut rows = stmt.query(params).context(what)?;
    match rows.next().context(what)? {
        Some(row) => map(row).map(Some),
        None => Ok(None),
    }
}

/// Every row of a query.
pub(super) fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    mut map: impl FnMut(&Row<'_>) -> anyhow::Result<T>,
    what: &'static str,
) -> anyhow::Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).context(what)?;
    let mut rows = stmt.query(params).context(what)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().context(what)? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// A single value (COUNT, MAX, RETURNING) from a query that always gives one row.
pub(super) fn scalar<T: rusqlite::types::FromSql>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    what: &'static str,
) -> anyhow::Result<T> {
    conn.prepare_cached(sql).and_then(|mut s| s.query_row(params, |r| r.get(0))).context(what)
}

pub(super) const REQUEST_COLUMNS: &str = r#"
    r.id, r.reference, r.status, r.decision, r.decision_detail, r.requester, r.requester_name,
    r.organisation, r.via, r.subject, r.body, r.received_at, r.decided_at, r.meeting_date,
    (SELECT d.reference FROM requests d WHERE d.id = r.duplicate_of) AS duplicate_of_ref,
    (SELECT p.reference FROM requests p WHERE p.id = r.probable_duplicate_of) AS probable_ref,
    (SELECT COUNT(*) FROM messages m WHERE m.request_id = r.id
        AND m.classification IN ('new', 'forwarded', 'follow_up')) AS message_count,
    (SELECT group_concat(priority, ',') FROM
        (SELECT priority FROM request_priorities rp WHERE rp.request_id = r.id ORDER BY priority)) AS priorities,
    r.token, r.answer, r.requester_unverified
"#;

pub(super) fn request_from_row(row: &Row<'_>) -> anyhow::Result<RequestRow> {
    let status: String = row.get("status")?;
    let decision: Option<String> = row.get("decision")?;
    let meeting: Option<String> = row.get("meeting_date")?;
    let priorities: Option<String> = row.get("priorities")?;
    Ok(RequestRow {
        id: row.get("id")?,
        reference: row.get("reference")?,
        status: Status::from_str(&status)?,
        decision: decision.as_deref().map(Decision::from_str).transpose()?,
        decision_detail: row.get("decision_detail")?,
        requester: row.get("requester")?,
        requester_name: row.get("requester_name")?,
        organisation: row.get("organisation")?,
        via: row.get("via")?,
        subject: row.get("subject")?,
        body: row.get("body")?,
        received_at: from_millis(row.get("received_at")?),
        decided_at: row.get::<_, Option<i64>>("decided_at")?.map(from_millis),
        meeting_date: meeting.as_deref().map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d")).transpose()?,
        priorities: priorities
            .map(|p| p.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default(),
        duplicate_of: row.get("duplicate_of_ref")?,
        probable_duplicate_of: row.get("probable_ref")?,
        message_count: row.get("message_count")?,
        token: row.get("token")?,
        answer: row.get::<_, i64>("answer")? != 0,
        requester_unverified: row.get::<_, i64>("requester_unverified")? != 0,
    })
}

pub(super) const MESSAGE_COLUMNS: &str = r#"
    m.id, m.message_id, m.received_at, m.from_address, m.subject, m.classification, m.detail,
    m.attempts, (SELECT r.reference FROM requests r WHERE r.id = m.request_id) AS reference
"#;

pub(super) fn message_from_row(row: &Row<'_>) -> anyhow::Result<MessageRow> {
    let classification: Option<String> = row.get("classification")?;
    Ok(MessageRow {
        id: row.get("id")?,
        message_id: row.get("message_id")?,
        received_at: row.get::<_, Option<i64>>("received_at")?.map(from_millis),
        from: row.get("from_address")?,
        subject: row.get("subject")?,
        classification: classification.as_deref().map(Classification::from_str).transpose()?,
        reference: row.get("reference")?,
        detail: row.get("detail")?,
        attempts: u32_col(row, "attempts")?,
    })
}

pub(super) fn event_from_row(row: &Row<'_>) -> anyhow::Result<EventRow> {
    Ok(EventRow {
        at: from_millis(row.get("at")?),
        actor: row.get("actor")?,
        kind: {
            let kind: String = row.get("kind")?;
            EventKind::parse(&kind).with_context(|| format!("Unknown event kind {kind:?}"))?
        },
        detail: row.get("detail")?,
    })
}

pub(super) fn u32_col(row: &Row<'_>, name: &str) -> anyhow::Result<u32> {
    let v: i64 = row.get(name)?;
    u32::try_from(v).with_context(|| format!("{name} out of range: {v}"))
}

/// The typed ids are stored as their numbers.
macro_rules! sql_id {
    ($($name:ident),*) => {$(
        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                i64::column_result(value).map($name)
            }
        }
    )*};
}

sql_id!(RequestId, MessageId, OutboxId);
