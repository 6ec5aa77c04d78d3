//! The ledger on SQLite: request events, meta values, the daemon's status, alerts, figures
//! for `/metrics`, once-only mailings (summaries) and what the board was told of each agenda.

use super::*;

impl SqliteStore {
    pub(super) async fn request_events(&self, request_id: RequestId) -> anyhow::Result<Vec<EventRow>> {
        self.read(move |c| {
            all(
                c,
                r#"
                SELECT at, actor, kind, detail
                FROM request_events
                WHERE request_id = ?1
                ORDER BY at, id
                "#,
                [request_id],
                event_from_row,
                "Cannot read the request's events",
            )
        })
        .await
    }

    pub(super) async fn events_of_kind(
        &self,
        request_ids: &[RequestId],
        kind: &str,
    ) -> anyhow::Result<Vec<(RequestId, EventRow)>> {
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(request_ids)?;
        let kind = kind.to_string();
        self.read(move |c| {
            all(
                c,
                r#"
                SELECT request_id, at, actor, kind, detail
                FROM request_events
                WHERE kind = ?2 AND request_id IN (SELECT value FROM json_each(?1))
                ORDER BY request_id, at, id
                "#,
                [&ids, &kind],
                |row| Ok((row.get("request_id")?, event_from_row(row)?)),
                "Cannot read events",
            )
        })
        .await
    }

    pub(super) async fn get_meta(&self, key: &str) -> anyhow::Result<Option<String>> {
        let key = key.to_string();
        self.read(move |c| {
            one(c, "SELECT value FROM meta WHERE key = ?1", [&key], |r| Ok(r.get(0)?), "Cannot read meta")
        })
        .await
    }

    pub(super) async fn init_meta(&self, key: &str, value: &str) -> anyhow::Result<String> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(move |c| {
            exec(
                c,
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                [&key, &value],
                "Cannot write meta",
            )?;
            one(c, "SELECT value FROM meta WHERE key = ?1", [&key], |r| Ok(r.get(0)?), "Cannot read meta")?
                .context("Meta value vanished")
        })
        .await
    }

    pub(super) async fn last_covered(&self, kind: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        let kind = kind.to_string();
        self.read(move |c| {
            let at: Option<i64> = scalar(
                c,
                "SELECT MAX(covers_to) FROM summaries WHERE kind = ?1",
                [&kind],
                "Cannot read the summaries",
            )?;
            Ok(at.map(from_millis))
        })
        .await
    }

    pub(super) async fn summary_sent(&self, kind: &str, period: &str) -> anyhow::Result<bool> {
        let (kind, period) = (kind.to_string(), period.to_string());
        self.read(move |c| {
            let n: i64 = scalar(
                c,
                "SELECT COUNT(*) FROM summaries WHERE kind = ?1 AND period = ?2",
                [&kind, &period],
                "Cannot read the summaries",
            )?;
            Ok(n > 0)
        })
        .await
    }

    pub(super) async fn agenda_told(&self, date: NaiveDate) -> anyhow::Result<Option<Vec<RequestRow>>> {
        let date = date.format("%Y-%m-%d").to_string();
        self.read(move |c| {
            if !agenda_sent(c, &date)? {
                return Ok(None);
            }
            let sql = format!(
                "SELECT {REQUEST_COLUMNS} FROM agenda_told t JOIN requests r ON r.id = t.request_id
                 WHERE t.meeting_date = ?1
                 ORDER BY t.told_at, r.decided_at, r.id"
            );
            all(c, &sql, [&date], request_from_row, "Cannot read what the board was told").map(Some)
        })
        .await
    }

    pub(super) async fn set_daemon_status(
        &self,
        imap: &str,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let (imap, detail) = (imap.to_string(), detail.map(str::to_string));
        self.write(move |c| {
            exec(
                c,
                r#"
                INSERT INTO daemon_status (id, imap, imap_detail, last_seen, started_at, pid)
                VALUES (1, ?1, ?2, ?3, ?3, ?4)
                ON CONFLICT (id) DO UPDATE SET
                    imap = excluded.imap,
                    imap_detail = excluded.imap_detail,
                    last_seen = excluded.last_seen,
                    pid = excluded.pid
                "#,
                params![imap, detail, to_millis(now), i64::from(std::process::id())],
                "Cannot record the daemon's status",
            )
            .map(drop)
        })
        .await
    }

    pub(super) async fn daemon_status(&self) -> anyhow::Result<Option<DaemonStatus>> {
        self.read(|c| {
            one(
                c,
                r#"
                SELECT imap, imap_detail, last_seen, started_at, pid,
                       smtp_last_sent, smtp_last_error, smtp_last_error_at
                FROM daemon_status
                WHERE id = 1
                "#,
                [],
                |row| {
                    Ok(DaemonStatus {
                        imap: row.get("imap")?,
                        imap_detail: row.get("imap_detail")?,
                        last_seen: from_millis(row.get("last_seen")?),
                        started_at: from_millis(row.get("started_at")?),
                        pid: row.get("pid")?,
                        smtp_last_sent: row.get::<_, Option<i64>>("smtp_last_sent")?.map(from_millis),
                        smtp_last_error: match (
                            row.get::<_, Option<String>>("smtp_last_error")?,
                            row.get::<_, Option<i64>>("smtp_last_error_at")?,
                        ) {
                            (Some(e), Some(at)) => Some((e, from_millis(at))),
                            _ => None,
                        },
                    })
                },
                "Cannot read the daemon's status",
            )
        })
        .await
    }

    pub(super) async fn set_smtp_status(
        &self,
        outcome: SmtpOutcome<'_>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let error = match outcome {
            SmtpOutcome::Sent => None,
            SmtpOutcome::Failed(e) => Some(e.to_string()),
        };
        self.write(move |c| {
            // The row exists once the daemon has started (its status board writes it first).
            match error {
                None => exec(
                    c,
                    "UPDATE daemon_status SET smtp_last_sent = ?1 WHERE id = 1",
                    [to_millis(at)],
                    "Cannot record the SMTP status",
                ),
                Some(e) => exec(
                    c,
                    "UPDATE daemon_status SET smtp_last_error = ?1, smtp_last_error_at = ?2 WHERE id = 1",
                    params![e, to_millis(at)],
                    "Cannot record the SMTP status",
                ),
            }
            .map(drop)
        })
        .await
    }

    pub(super) async fn metrics(&self, failing_after: i64) -> anyhow::Result<Metrics> {
        let outbox = self.outbox_counts().await?;
        let outbox_failing = self.outbox_failing(failing_after).await?;
        self.read(move |c| {
            let pairs = |sql: &str, what: &'static str| {
                all(c, sql, [], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)), what)
            };
            let messages = pairs(
                "SELECT classification, COUNT(*) FROM messages WHERE classification IS NOT NULL GROUP BY classification",
                "Cannot count the messages",
            )?;
            let requests_by_status =
                pairs("SELECT status, COUNT(*) FROM requests GROUP BY status", "Cannot count the requests")?;
            let decisions = pairs(
                "SELECT decision, COUNT(*) FROM requests WHERE decision IS NOT NULL GROUP BY decision",
                "Cannot count the decisions",
            )?;
            let oldest: Option<i64> = scalar(
                c,
                "SELECT MIN(created_at) FROM outbox WHERE status IN ('pending', 'claimed', 'sending')",
                [],
                "Cannot read the outbox",
            )?;
            let ack_seconds = all(
                c,
                r#"
                SELECT o.sent_at - r.received_at
                FROM outbox o JOIN requests r ON r.id = o.request_id
                WHERE o.kind = 'acknowledgement' AND o.sent_at IS NOT NULL
                "#,
                [],
                |r| Ok((r.get::<_, i64>(0)?.max(0) as f64) / 1000.0),
                "Cannot read the acknowledgement times",
            )?;
            Ok(Metrics {
                messages,
                requests_by_status,
                decisions,
                outbox,
                outbox_oldest_pending: oldest.map(from_millis),
                outbox_failing,
                ack_seconds,
            })
        })
        .await
    }

    pub(super) async fn open_alerts(&self) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
        self.read(|c| {
            all(
                c,
                "SELECT key, last_sent FROM alerts WHERE resolved_at IS NULL ORDER BY key",
                [],
                |r| Ok((r.get(0)?, from_millis(r.get(1)?))),
                "Cannot read the alerts",
            )
        })
        .await
    }

    pub(super) async fn last_summary(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        self.read(|c| {
            let at: Option<i64> = scalar(
                c,
                "SELECT MAX(sent_at) FROM summaries WHERE kind = 'weekly'",
                [],
                "Cannot read the summaries",
            )?;
            Ok(at.map(from_millis))
        })
        .await
    }
}

impl SqliteTx {
    pub(super) async fn add_event(
        &mut self,
        request_id: RequestId,
        at: DateTime<Utc>,
        actor: &str,
        kind: &str,
        detail: Option<&str>,
    ) -> anyhow::Result<()> {
        insert_event(&self.conn, request_id.0, to_millis(at), actor, kind, detail)
    }

    pub(super) async fn alert(&mut self, key: &str) -> anyhow::Result<Option<AlertRow>> {
        one(
            &self.conn,
            "SELECT key, subject, first_raised, last_sent, resolved_at FROM alerts WHERE key = ?1",
            [key],
            |r| {
                Ok(AlertRow {
                    key: r.get("key")?,
                    subject: r.get("subject")?,
                    first_raised: from_millis(r.get("first_raised")?),
                    last_sent: from_millis(r.get("last_sent")?),
                    resolved_at: r.get::<_, Option<i64>>("resolved_at")?.map(from_millis),
                })
            },
            "Cannot read an alert",
        )
    }

    pub(super) async fn put_alert(&mut self, a: &AlertRow) -> anyhow::Result<()> {
        exec(
            &self.conn,
            r#"
            INSERT INTO alerts (key, subject, first_raised, last_sent, resolved_at)
            VALUES (?1, ?2, ?3, ?4, ?5)
            ON CONFLICT (key) DO UPDATE SET
                subject = excluded.subject,
                first_raised = excluded.first_raised,
                last_sent = excluded.last_sent,
                resolved_at = excluded.resolved_at
            "#,
            params![
                a.key,
                a.subject,
                to_millis(a.first_raised),
                to_millis(a.last_sent),
                a.resolved_at.map(to_millis)
            ],
            "Cannot record an alert",
        )
        .map(drop)
    }

    pub(super) async fn alerts_sent_since(
        &mut self,
        prefix: &str,
        since: DateTime<Utc>,
    ) -> anyhow::Result<i64> {
        // substr, not LIKE: a prefix is matched literally, `_` and `%` included.
        scalar(
            &self.conn,
            "SELECT COUNT(*) FROM alerts WHERE substr(key, 1, length(?1)) = ?1 AND last_sent >= ?2",
            params![prefix, to_millis(since)],
            "Cannot count the alerts sent",
        )
    }

    pub(super) async fn set_meta(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        exec(
            &self.conn,
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
            [key, value],
            "Cannot write meta",
        )
        .map(drop)
    }

    pub(super) async fn record_summary(
        &mut self,
        kind: &str,
        period: &str,
        covers: (DateTime<Utc>, DateTime<Utc>),
        outbox_id: Option<OutboxId>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let inserted = exec(
            &self.conn,
            r#"
            INSERT INTO summaries (kind, period, covers_from, covers_to, sent_at, outbox_id)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6)
            ON CONFLICT (kind, period) DO NOTHING
            "#,
            params![kind, period, to_millis(covers.0), to_millis(covers.1), to_millis(at), outbox_id],
            "Cannot record the mailing",
        )?;
        Ok(inserted == 1)
    }

    pub(super) async fn agenda_told_ids(
        &mut self,
        date: NaiveDate,
    ) -> anyhow::Result<Option<Vec<RequestId>>> {
        let date = date.format("%Y-%m-%d").to_string();
        if !agenda_sent(&self.conn, &date)? {
            return Ok(None);
        }
        all(
            &self.conn,
            "SELECT request_id FROM agenda_told WHERE meeting_date = ?1 ORDER BY told_at, request_id",
            [&date],
            |r| Ok(r.get(0)?),
            "Cannot read what the board was told",
        )
        .map(Some)
    }

    pub(super) async fn record_agenda_told(
        &mut self,
        date: NaiveDate,
        on: &[RequestId],
        off: &[RequestId],
        outbox_id: Option<OutboxId>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let date = date.format("%Y-%m-%d").to_string();
        for id in on {
            exec(
                &self.conn,
                r#"
                INSERT INTO agenda_told (meeting_date, request_id, outbox_id, told_at)
                VALUES (?1, ?2, ?3, ?4)
                ON CONFLICT (meeting_date, request_id) DO NOTHING
                "#,
                params![date, id, outbox_id, to_millis(at)],
                "Cannot record what the board was told",
            )?;
        }
        for id in off {
            exec(
                &self.conn,
                "DELETE FROM agenda_told WHERE meeting_date = ?1 AND request_id = ?2",
                params![date, id],
                "Cannot record what the board was told",
            )?;
        }
        Ok(())
    }
}

/// Whether the agenda for the meeting on `date` (YYYY-MM-DD) has gone.
pub(super) fn agenda_sent(conn: &Connection, date: &str) -> anyhow::Result<bool> {
    let n: i64 = scalar(
        conn,
        "SELECT COUNT(*) FROM summaries WHERE kind = 'agenda' AND period = ?1",
        [date],
        "Cannot read the summaries",
    )?;
    Ok(n > 0)
}
