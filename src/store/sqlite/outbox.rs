//! The outbox on SQLite: queueing, claiming, delivery outcomes, bounces and the sending
//! limits' counts.

use super::*;

impl SqliteStore {
    pub(super) async fn requeue_interrupted(&self) -> anyhow::Result<u64> {
        self.write(|c| {
            // Claimed but never handed to SMTP: simply due again.
            exec(
                c,
                "UPDATE outbox SET status = 'pending' WHERE status = 'claimed'",
                [],
                "Cannot requeue claimed mail",
            )?;
            // Cut off mid-SMTP: the server may have it, but losing it would be worse than a
            // second copy, so it goes again; `interrupted` counts how often that happened.
            let n = exec(
                c,
                "UPDATE outbox SET status = 'pending', interrupted = interrupted + 1 WHERE status = 'sending'",
                [],
                "Cannot requeue interrupted mail",
            )?;
            Ok(n as u64)
        })
        .await
    }

    pub(super) async fn claim_due(&self, now: DateTime<Utc>, limit: i64) -> anyhow::Result<Vec<OutboxItem>> {
        self.write(move |c| {
            // One statement: the claim is atomic without an explicit transaction.
            let mut items = all(
                c,
                r#"
                UPDATE outbox SET status = 'claimed', attempts = attempts + 1
                WHERE id IN (
                    SELECT id FROM outbox
                    WHERE status = 'pending' AND next_attempt_at <= ?1
                    ORDER BY next_attempt_at, id
                    LIMIT ?2
                )
                RETURNING id, kind, request_id, message_id, envelope_from, recipients, subject, raw, attempts, created_at
                "#,
                params![to_millis(now), limit],
                |row| {
                    let recipients: String = row.get("recipients")?;
                    Ok(OutboxItem {
                        id: row.get("id")?,
                        kind: row.get("kind")?,
                        request_id: row.get("request_id")?,
                        message_id: row.get("message_id")?,
                        envelope_from: row.get("envelope_from")?,
                        recipients: serde_json::from_str(&recipients)
                            .context("Bad recipients in the outbox")?,
                        subject: row.get("subject")?,
                        raw: row.get("raw")?,
                        attempts: row.get("attempts")?,
                        created_at: from_millis(row.get("created_at")?),
                    })
                },
                "Cannot claim outgoing mail",
            )?;
            items.sort_by_key(|i| i.id);
            Ok(items)
        })
        .await
    }

    pub(super) async fn last_outgoing(
        &self,
        request_id: RequestId,
        kind: &str,
    ) -> anyhow::Result<Option<LastOutgoing>> {
        let kind = kind.to_string();
        self.read(move |c| {
            one(
                c,
                r#"
                SELECT message_id, recipients, status, created_at FROM outbox
                WHERE request_id = ?1 AND kind = ?2
                ORDER BY id DESC
                LIMIT 1
                "#,
                params![request_id, kind],
                |row| {
                    let recipients: String = row.get("recipients")?;
                    Ok(LastOutgoing {
                        message_id: row.get("message_id")?,
                        recipients: serde_json::from_str(&recipients)
                            .context("Bad recipients in the outbox")?,
                        status: row.get("status")?,
                        created_at: from_millis(row.get("created_at")?),
                    })
                },
                "Cannot read the outbox",
            )
        })
        .await
    }

    pub(super) async fn mark_in_flight(&self, id: OutboxId) -> anyhow::Result<()> {
        self.write(move |c| {
            exec(
                c,
                "UPDATE outbox SET status = 'sending' WHERE id = ?1",
                [id],
                "Cannot mark an email as being sent",
            )
            .map(drop)
        })
        .await
    }

    pub(super) async fn mark_sent(&self, id: OutboxId, at: DateTime<Utc>) -> anyhow::Result<()> {
        self.write(move |c| {
            exec(
                c,
                "UPDATE outbox SET status = 'sent', sent_at = ?2, last_error = NULL WHERE id = ?1",
                params![id, to_millis(at)],
                "Cannot record a sent email",
            )
            .map(drop)
        })
        .await
    }

    pub(super) async fn mark_retry(
        &self,
        id: OutboxId,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> anyhow::Result<()> {
        let error = error.to_string();
        self.write(move |c| {
            exec(
                c,
                "UPDATE outbox SET status = 'pending', next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
                params![id, to_millis(next_attempt_at), error],
                "Cannot reschedule an email",
            )
            .map(drop)
        })
        .await
    }

    pub(super) async fn mark_failed(&self, id: OutboxId, error: &str) -> anyhow::Result<()> {
        let error = error.to_string();
        self.write(move |c| {
            exec(
                c,
                "UPDATE outbox SET status = 'failed', last_error = ?2 WHERE id = ?1",
                params![id, error],
                "Cannot record a failed email",
            )
            .map(drop)
        })
        .await
    }

    pub(super) async fn outbox_counts(&self) -> anyhow::Result<OutboxCounts> {
        self.read(|c| {
            let counts = one(
                c,
                r#"
                SELECT
                    COALESCE(SUM(CASE WHEN status IN ('pending', 'claimed', 'sending') THEN 1 ELSE 0 END), 0) AS pending,
                    COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) AS failed
                FROM outbox
                "#,
                [],
                |row| Ok(OutboxCounts { pending: row.get("pending")?, failed: row.get("failed")? }),
                "Cannot count the outbox",
            )?;
            Ok(counts.unwrap_or_default())
        })
        .await
    }

    pub(super) async fn outbox_failing(&self, failing_after: i64) -> anyhow::Result<i64> {
        self.read(move |c| {
            scalar(
                c,
                r#"
                SELECT COUNT(*) FROM outbox
                WHERE status IN ('pending', 'claimed', 'sending') AND attempts >= ?1 AND last_error IS NOT NULL
                "#,
                [failing_after],
                "Cannot read the outbox",
            )
        })
        .await
    }
}

impl SqliteTx {
    /// The outbox entry given up, in the transaction that queues its notice.
    pub(super) async fn mark_failed_in_tx(&mut self, id: OutboxId, error: &str) -> anyhow::Result<()> {
        exec(
            &self.conn,
            "UPDATE outbox SET status = 'failed', last_error = ?2 WHERE id = ?1",
            params![id, error],
            "Cannot record a failed email",
        )
        .map(drop)
    }

    pub(super) async fn enqueue(
        &mut self,
        mail: &NewOutgoing,
        at: DateTime<Utc>,
    ) -> anyhow::Result<OutboxId> {
        let id = scalar(
            &self.conn,
            r#"
            INSERT INTO outbox
                (message_id, request_id, kind, envelope_from, recipients, subject, raw, status,
                 attempts, next_attempt_at, created_at)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8)
            RETURNING id
            "#,
            params![
                mail.message_id,
                mail.request_id,
                mail.kind,
                mail.envelope_from,
                serde_json::to_string(&mail.recipients)?,
                mail.subject,
                mail.raw,
                to_millis(at)
            ],
            "Cannot write to the outbox",
        )?;
        if let Some(request_id) = mail.request_id {
            self.add_thread_id(&mail.message_id, request_id, &format!("out:{}", mail.kind)).await?;
        }
        Ok(id)
    }

    pub(super) async fn record_answered(
        &mut self,
        outbox_id: OutboxId,
        person: &str,
        domain: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        exec(
            &self.conn,
            "INSERT INTO answered (outbox_id, person, domain, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![outbox_id, person, domain, to_millis(at)],
            "Cannot record an automatic answer",
        )?;
        Ok(())
    }

    pub(super) async fn answered_counts(
        &mut self,
        person: &str,
        domain: &str,
        day: DateTime<Utc>,
        hour: DateTime<Utc>,
    ) -> anyhow::Result<AnsweredCounts> {
        let count = |sql: &str, key: Option<&str>, since: DateTime<Utc>| -> anyhow::Result<i64> {
            match key {
                Some(k) => {
                    scalar(&self.conn, sql, params![k, to_millis(since)], "Cannot count automatic answers")
                }
                None => scalar(&self.conn, sql, params![to_millis(since)], "Cannot count automatic answers"),
            }
        };
        Ok(AnsweredCounts {
            person: count(
                "SELECT COUNT(*) FROM answered WHERE person = ?1 AND created_at >= ?2",
                Some(person),
                day,
            )?,
            domain: count(
                "SELECT COUNT(*) FROM answered WHERE domain = ?1 AND created_at >= ?2",
                Some(domain),
                day,
            )?,
            hour: count("SELECT COUNT(*) FROM answered WHERE created_at >= ?1", None, hour)?,
        })
    }

    pub(super) async fn has_outgoing(&mut self, request_id: RequestId, kind: &str) -> anyhow::Result<bool> {
        let n: i64 = scalar(
            &self.conn,
            "SELECT COUNT(*) FROM outbox WHERE request_id = ?1 AND kind = ?2",
            params![request_id, kind],
            "Cannot read the outbox",
        )?;
        Ok(n > 0)
    }

    pub(super) async fn mark_bounced(&mut self, outbox_id: OutboxId, detail: &str) -> anyhow::Result<()> {
        exec(
            &self.conn,
            "UPDATE outbox SET status = 'bounced', last_error = ?2 WHERE id = ?1",
            params![outbox_id, detail],
            "Cannot record a bounce",
        )
        .map(drop)
    }
}

pub(super) fn outbox_for_message_ids(
    conn: &Connection,
    ids: &[String],
) -> anyhow::Result<Option<(OutboxId, Option<RequestId>, String)>> {
    if ids.is_empty() {
        return Ok(None);
    }
    one(
        conn,
        r#"
        SELECT id, request_id, kind FROM outbox
        WHERE message_id IN (SELECT value FROM json_each(?1))
        ORDER BY id DESC
        LIMIT 1
        "#,
        [serde_json::to_string(ids)?],
        |row| Ok((row.get("id")?, row.get("request_id")?, row.get("kind")?)),
        "Cannot look up the outbox",
    )
}
