//! Requests on SQLite: references, the request rows and their lookups (by reference, thread,
//! token, notification), duplicate candidates, decisions and status.

use super::*;

impl SqliteStore {
    pub(super) async fn list_requests(&self, filter: &RequestFilter) -> anyhow::Result<Vec<RequestRow>> {
        let status = filter.status.map(Status::as_str);
        self.read(move |c| {
            let sql = format!(
                "SELECT {REQUEST_COLUMNS} FROM requests r
                 WHERE (?1 IS NULL OR r.status = ?1)
                 ORDER BY r.received_at, r.id"
            );
            all(c, &sql, [status], request_from_row, "Cannot list requests")
        })
        .await
    }

    pub(super) async fn find_request(&self, reference: &str) -> anyhow::Result<Option<RequestRow>> {
        let reference = reference.to_string();
        self.read(move |c| find_request(c, &reference)).await
    }

    pub(super) async fn awaiting_triage(&self) -> anyhow::Result<Vec<RequestRow>> {
        self.read(|c| {
            let sql = format!(
                "SELECT {REQUEST_COLUMNS} FROM requests r WHERE r.status = 'awaiting_triage' ORDER BY r.received_at, r.id"
            );
            all(c, &sql, [], request_from_row, "Cannot list requests awaiting triage")
        })
        .await
    }

    pub(super) async fn received_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<Vec<RequestRow>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests r
             WHERE r.received_at >= ?1 AND r.received_at < ?2
             ORDER BY r.received_at, r.id"
        );
        self.requests(sql, [to_millis(from), to_millis(to)]).await
    }

    pub(super) async fn decided_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<Vec<RequestRow>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests r
             WHERE r.decided_at >= ?1 AND r.decided_at < ?2
             ORDER BY r.decided_at, r.id"
        );
        self.requests(sql, [to_millis(from), to_millis(to)]).await
    }

    pub(super) async fn with_status(
        &self,
        status: Status,
        limit: i64,
    ) -> anyhow::Result<(Vec<RequestRow>, usize)> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {REQUEST_COLUMNS} FROM requests r WHERE r.status = ?1 ORDER BY r.received_at, r.id LIMIT ?2"
            );
            let rows = all(
                c,
                &sql,
                params![status.as_str(), limit],
                request_from_row,
                "Cannot list requests by status",
            )?;
            let total: i64 = scalar(
                c,
                "SELECT COUNT(*) FROM requests WHERE status = ?1",
                [status.as_str()],
                "Cannot count requests by status",
            )?;
            Ok((rows, usize::try_from(total).unwrap_or(0)))
        })
        .await
    }

    pub(super) async fn agenda_for(&self, date: NaiveDate) -> anyhow::Result<Vec<RequestRow>> {
        let date = date.format("%Y-%m-%d").to_string();
        self.read(move |c| {
            let sql = format!(
                "SELECT {REQUEST_COLUMNS} FROM requests r
                 WHERE r.decision = 'meeting' AND r.meeting_date = ?1
                 ORDER BY r.decided_at, r.id"
            );
            all(c, &sql, [&date], request_from_row, "Cannot read the agenda")
        })
        .await
    }

    pub(super) async fn arrivals_since(&self, since: DateTime<Utc>) -> anyhow::Result<Vec<DateTime<Utc>>> {
        self.read(move |c| {
            all(
                c,
                "SELECT received_at FROM requests WHERE received_at >= ?1",
                [to_millis(since)],
                |r| Ok(from_millis(r.get(0)?)),
                "Cannot read arrival times",
            )
        })
        .await
    }
}

impl SqliteTx {
    pub(super) async fn next_reference_seq(&mut self, year: i32) -> anyhow::Result<i64> {
        scalar(
            &self.conn,
            r#"
            INSERT INTO reference_counters (year, last_seq) VALUES (?1, 1)
            ON CONFLICT (year) DO UPDATE SET last_seq = last_seq + 1
            RETURNING last_seq
            "#,
            [year],
            "Cannot allocate a reference",
        )
    }

    pub(super) async fn insert_request(
        &mut self,
        r: &NewRequest,
        at: DateTime<Utc>,
    ) -> anyhow::Result<RequestId> {
        let now = to_millis(at);
        let id: RequestId = scalar(
            &self.conn,
            r#"
            INSERT INTO requests
                (reference, ref_year, ref_seq, status, requester, requester_name, organisation, via,
                 subject, body, received_at, probable_duplicate_of, token, answer, requester_unverified,
                 created_at, updated_at)
            VALUES (?1, ?2, ?3, 'awaiting_triage', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?15, ?14, ?14)
            RETURNING id
            "#,
            params![
                r.reference,
                r.ref_year,
                r.ref_seq,
                r.requester,
                r.requester_name,
                r.organisation,
                r.via,
                r.subject,
                r.body,
                to_millis(r.received_at),
                r.probable_duplicate_of,
                r.token,
                r.answer,
                now,
                r.requester_unverified
            ],
            "Cannot create the request",
        )?;
        exec(
            &self.conn,
            r#"
            INSERT INTO request_fingerprints (request_id, fingerprint)
            VALUES (?1, ?2)
            "#,
            params![id, r.fingerprint.to_bytes()],
            "Cannot store the request's fingerprint",
        )?;
        Ok(id)
    }

    pub(super) async fn add_thread_id(
        &mut self,
        message_id: &str,
        request_id: RequestId,
        direction: &str,
    ) -> anyhow::Result<()> {
        exec(
            &self.conn,
            r#"
            INSERT INTO thread_message_ids (message_id, request_id, direction)
            VALUES (?1, ?2, ?3)
            ON CONFLICT (message_id) DO NOTHING
            "#,
            params![message_id, request_id, direction],
            "Cannot record the thread",
        )
        .map(drop)
    }

    pub(super) async fn record_decision(
        &mut self,
        request_id: RequestId,
        decision: Decision,
        detail: Option<&str>,
        meeting_date: Option<NaiveDate>,
        duplicate_of: Option<RequestId>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        exec(
            &self.conn,
            r#"
            UPDATE requests SET
                status = ?2, decision = ?3, decision_detail = ?4, meeting_date = ?5,
                duplicate_of = ?6, decided_at = ?7, updated_at = ?7
            WHERE id = ?1
            "#,
            params![
                request_id,
                decision.status().as_str(),
                decision.as_str(),
                detail,
                meeting_date.map(|d| d.format("%Y-%m-%d").to_string()),
                duplicate_of,
                to_millis(at)
            ],
            "Cannot record the decision",
        )
        .map(drop)
    }

    pub(super) async fn add_priority(&mut self, request_id: RequestId, key: &str) -> anyhow::Result<()> {
        exec(
            &self.conn,
            r#"
            INSERT INTO request_priorities (request_id, priority) VALUES (?1, ?2)
            ON CONFLICT (request_id, priority) DO NOTHING
            "#,
            params![request_id, key],
            "Cannot tag the priority",
        )
        .map(drop)
    }

    pub(super) async fn set_status(
        &mut self,
        request_id: RequestId,
        status: Status,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        exec(
            &self.conn,
            "UPDATE requests SET status = ?2, updated_at = ?3 WHERE id = ?1",
            params![request_id, status.as_str(), to_millis(at)],
            "Cannot change the status",
        )
        .map(drop)
    }
}

pub(super) fn find_request(conn: &Connection, reference: &str) -> anyhow::Result<Option<RequestRow>> {
    let sql = format!("SELECT {REQUEST_COLUMNS} FROM requests r WHERE r.reference = ?1");
    one(conn, &sql, [reference.trim().to_ascii_uppercase()], request_from_row, "Cannot read the request")
}

pub(super) fn request_for_thread(conn: &Connection, ids: &[String]) -> anyhow::Result<Option<RequestRow>> {
    if ids.is_empty() {
        return Ok(None);
    }
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM requests r
         WHERE r.id IN (SELECT t.request_id FROM thread_message_ids t
                        WHERE t.message_id IN (SELECT value FROM json_each(?1)))
         ORDER BY r.received_at DESC, r.id DESC
         LIMIT 1"
    );
    one(conn, &sql, [serde_json::to_string(ids)?], request_from_row, "Cannot look up the thread")
}

pub(super) fn request_by_token(conn: &Connection, token: &str) -> anyhow::Result<Option<RequestRow>> {
    let sql = format!("SELECT {REQUEST_COLUMNS} FROM requests r WHERE r.token = ?1");
    one(conn, &sql, [token.to_ascii_lowercase()], request_from_row, "Cannot look up the token")
}

pub(super) fn request_for_notification(
    conn: &Connection,
    ids: &[String],
) -> anyhow::Result<Option<RequestRow>> {
    if ids.is_empty() {
        return Ok(None);
    }
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM requests r
         WHERE r.id IN (SELECT t.request_id FROM thread_message_ids t
                        WHERE t.direction = 'out:notification'
                          AND t.message_id IN (SELECT value FROM json_each(?1)))
         ORDER BY r.id DESC
         LIMIT 1"
    );
    one(conn, &sql, [serde_json::to_string(ids)?], request_from_row, "Cannot look up the notification")
}

/// The newest earlier requests from one requester (or one organisation, below) that
/// are still open or recent, `DUPLICATE_CANDIDATES` at most.
pub(super) const RECENT_BY_REQUESTER: &str = r#"
    SELECT id, token FROM requests
    WHERE requester = ?1 AND (status <> 'closed' OR received_at >= ?2)
    ORDER BY id DESC
    LIMIT 200
"#;

pub(super) const RECENT_BY_ORGANISATION: &str = r#"
    SELECT id, token FROM requests
    WHERE organisation = ?1 AND (status <> 'closed' OR received_at >= ?2)
    ORDER BY id DESC
    LIMIT 200
"#;

pub(super) fn recent_requests(
    conn: &Connection,
    requester: &str,
    organisation: Option<&str>,
    since: DateTime<Utc>,
) -> anyhow::Result<Vec<(RequestId, String)>> {
    // Two walks of covering indexes ordered by id, each stopping at the limit, merged
    // here: an OR scans every request, and a UNION in SQL sorts both lists again. The
    // token comes from the index, never from the row (where it sits after the body's
    // overflow pages).
    let walk = |sql: &str, value: &str| {
        all(
            conn,
            sql,
            params![value, to_millis(since)],
            |r| Ok((r.get(0)?, r.get(1)?)),
            "Cannot look for earlier approaches",
        )
    };
    let by_requester = walk(RECENT_BY_REQUESTER, requester)?;
    let by_organisation = match organisation {
        Some(o) => walk(RECENT_BY_ORGANISATION, o)?,
        None => Vec::new(),
    };
    Ok(newest_first(by_requester, by_organisation, usize::try_from(DUPLICATE_CANDIDATES).unwrap_or(0)))
}

pub(super) fn request_texts(conn: &Connection, tokens: &[String]) -> anyhow::Result<Vec<RequestText>> {
    if tokens.is_empty() {
        return Ok(Vec::new());
    }
    // Not a column of `requests`: reading one after `body` walks the body's overflow
    // pages (see the fingerprints migration). The body is read only for requests from
    // before fingerprints were stored.
    all(
        conn,
        r#"
        SELECT r.token, r.subject, f.fingerprint,
               CASE WHEN f.fingerprint IS NULL THEN r.body END AS body
        FROM requests r
        LEFT JOIN request_fingerprints f ON f.request_id = r.id
        WHERE r.token IN (SELECT value FROM json_each(?1))
        "#,
        [serde_json::to_string(tokens)?],
        |row| {
            let stored: Option<Vec<u8>> = row.get("fingerprint")?;
            let fingerprint = match stored.as_deref().and_then(Fingerprint::from_bytes) {
                Some(f) => f,
                None => Fingerprint::of(&row.get::<_, Option<String>>("body")?.unwrap_or_default()),
            };
            Ok(RequestText { token: row.get("token")?, subject: row.get("subject")?, fingerprint })
        },
        "Cannot read earlier approaches",
    )
}

pub(super) fn candidates(conn: &Connection, ids: &[RequestId]) -> anyhow::Result<Vec<Candidate>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    all(
        conn,
        r#"
        SELECT id, reference, requester, organisation, subject, status, decision
        FROM requests
        WHERE id IN (SELECT value FROM json_each(?1))
        ORDER BY id DESC
        "#,
        [serde_json::to_string(ids)?],
        |row| {
            let status: String = row.get("status")?;
            let decision: Option<String> = row.get("decision")?;
            Ok(Candidate {
                id: row.get("id")?,
                reference: row.get("reference")?,
                requester: row.get("requester")?,
                organisation: row.get("organisation")?,
                subject: row.get("subject")?,
                status: Status::from_str(&status)?,
                decision: decision.as_deref().map(Decision::from_str).transpose()?,
            })
        },
        "Cannot read earlier approaches",
    )
}

/// Two lists ordered by id, newest first, merged into one without repeats, at most
/// `limit` long.
pub(super) fn newest_first(
    a: Vec<(RequestId, String)>,
    b: Vec<(RequestId, String)>,
    limit: usize,
) -> Vec<(RequestId, String)> {
    let mut merged = Vec::with_capacity(limit.min(a.len() + b.len()));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while merged.len() < limit {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                b.next();
                a.next()
            }
            (Some(x), Some(y)) if x.0 > y.0 => a.next(),
            (Some(_), Some(_)) | (None, Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, None) => None,
        };
        match next {
            Some(item) => merged.push(item),
            None => break,
        }
    }
    merged
}
