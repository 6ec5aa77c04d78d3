//! The inbox's state on SQLite: stored raw messages and what processing made of them,
//! each mailbox's checkpoint, processing attempts, retries and quarantine.

use super::*;

impl SqliteStore {
    pub(super) async fn list_messages(&self) -> anyhow::Result<Vec<MessageRow>> {
        self.read(|c| {
            let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages m ORDER BY m.id");
            all(c, &sql, [], message_from_row, "Cannot list messages")
        })
        .await
    }

    pub(super) async fn request_messages(&self, request_id: RequestId) -> anyhow::Result<Vec<MessageRow>> {
        self.read(move |c| {
            let sql =
                format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.request_id = ?1 ORDER BY m.id");
            all(c, &sql, [request_id], message_from_row, "Cannot read the request's messages")
        })
        .await
    }

    pub(super) async fn auto_replies_by_wording(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<Vec<MessageRow>> {
        let (from, to) = (to_millis(from), to_millis(to));
        // The prefix is matched with substr rather than LIKE: '_' and '%' in it are literal.
        let prefix = crate::classify::BY_WORDING.to_string();
        self.read(move |c| {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m
                 WHERE m.classification = 'automated' AND m.processed_at >= ?1 AND m.processed_at < ?2
                   AND substr(m.detail, 1, length(?3)) = ?3
                 ORDER BY m.processed_at, m.id"
            );
            all(
                c,
                &sql,
                rusqlite::params![from, to, prefix],
                message_from_row,
                "Cannot list the auto-replies",
            )
        })
        .await
    }

    pub(super) async fn mailbox_state(&self, mailbox: &str) -> anyhow::Result<Option<MailboxState>> {
        let mailbox = mailbox.to_string();
        self.read(move |c| {
            one(
                c,
                r#"
                SELECT uidvalidity, last_uid, backlog_below_uid
                FROM mailbox_state
                WHERE mailbox = ?1
                "#,
                [&mailbox],
                |row| {
                    Ok(MailboxState {
                        uidvalidity: u32_col(row, "uidvalidity")?,
                        last_uid: u32_col(row, "last_uid")?,
                        backlog_below_uid: u32_col(row, "backlog_below_uid")?,
                    })
                },
                "Cannot read the mailbox state",
            )
        })
        .await
    }

    pub(super) async fn reset_mailbox_state(
        &self,
        mailbox: &str,
        state: MailboxState,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let mailbox = mailbox.to_string();
        self.write(move |c| {
            exec(
                c,
                r#"
                INSERT INTO mailbox_state (mailbox, uidvalidity, last_uid, backlog_below_uid, updated_at)
                VALUES (?1, ?2, ?3, ?4, ?5)
                ON CONFLICT (mailbox) DO UPDATE SET
                    uidvalidity = excluded.uidvalidity,
                    last_uid = excluded.last_uid,
                    backlog_below_uid = excluded.backlog_below_uid,
                    updated_at = excluded.updated_at
                "#,
                params![mailbox, state.uidvalidity, state.last_uid, state.backlog_below_uid, to_millis(at)],
                "Cannot write the mailbox state",
            )
            .map(drop)
        })
        .await
    }

    pub(super) async fn raw_message(&self, id: MessageId) -> anyhow::Result<Vec<u8>> {
        self.read(move |c| {
            scalar(c, "SELECT raw FROM raw_messages WHERE id = ?1", [id], "Cannot read the raw message")
        })
        .await
    }

    pub(super) async fn count_attempt(&self, id: MessageId) -> anyhow::Result<u32> {
        self.write(move |c| {
            let n: i64 = scalar(
                c,
                "UPDATE messages SET attempts = attempts + 1 WHERE id = ?1 RETURNING attempts",
                [id],
                "Cannot count the attempt to process the message",
            )?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
        .await
    }

    pub(super) async fn attempts(&self, id: MessageId) -> anyhow::Result<u32> {
        self.read(move |c| {
            let n: i64 =
                scalar(c, "SELECT attempts FROM messages WHERE id = ?1", [id], "Cannot read the message")?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
        .await
    }

    pub(super) async fn request_retry(
        &self,
        id: MessageId,
        at: DateTime<Utc>,
    ) -> anyhow::Result<RetryRequest> {
        self.write(move |c| {
            let changed = exec(
                c,
                r#"
                UPDATE messages SET
                    attempts = 0, retry_requested_at = ?2, classification = NULL, detail = NULL,
                    processed_at = NULL
                WHERE id = ?1 AND classification = 'quarantined'
                "#,
                params![id, to_millis(at)],
                "Cannot ask for the message to be processed again",
            )?;
            if changed == 1 {
                return Ok(RetryRequest::Requested);
            }
            let found: Option<Option<String>> = one(
                c,
                "SELECT classification FROM messages WHERE id = ?1",
                [id],
                |r| Ok(r.get(0)?),
                "Cannot read the message",
            )?;
            Ok(match found {
                None => RetryRequest::Missing,
                Some(class) => {
                    RetryRequest::NotQuarantined(class.as_deref().map(Classification::from_str).transpose()?)
                }
            })
        })
        .await
    }

    pub(super) async fn retries_requested(&self) -> anyhow::Result<Vec<RetryMessage>> {
        self.read(|c| {
            all(
                c,
                r#"
                SELECT id, uid, backlog, fetched_at FROM messages
                WHERE retry_requested_at IS NOT NULL AND processed_at IS NULL
                ORDER BY id
                "#,
                [],
                |r| {
                    Ok(RetryMessage {
                        id: r.get("id")?,
                        uid: u32_col(r, "uid")?,
                        backlog: r.get::<_, i64>("backlog")? != 0,
                        fetched_at: from_millis(r.get("fetched_at")?),
                    })
                },
                "Cannot list the messages to retry",
            )
        })
        .await
    }
}

impl SqliteTx {
    pub(super) async fn finish_message(
        &mut self,
        id: MessageId,
        o: &MessageOutcome,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        exec(
            &self.conn,
            r#"
            UPDATE messages SET
                classification = ?2, received_at = ?3, from_address = ?4, from_name = ?5,
                subject = ?6, attachments = ?7, detail = ?8, request_id = ?9, processed_at = ?10,
                retry_requested_at = NULL
            WHERE id = ?1
            "#,
            params![
                id,
                o.classification.as_str(),
                o.received_at.map(to_millis),
                o.from_address,
                o.from_name,
                o.subject,
                o.attachments,
                o.detail,
                o.request_id,
                to_millis(at)
            ],
            "Cannot record the message's outcome",
        )
        .map(drop)
    }

    pub(super) async fn set_checkpoint(
        &mut self,
        mailbox: &str,
        uidvalidity: u32,
        last_uid: u32,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        // Only ever forward, and only within the UIDVALIDITY it was read under.
        exec(
            &self.conn,
            r#"
            UPDATE mailbox_state SET last_uid = MAX(last_uid, ?3), updated_at = ?4
            WHERE mailbox = ?1 AND uidvalidity = ?2
            "#,
            params![mailbox, uidvalidity, last_uid, to_millis(at)],
            "Cannot advance the inbox checkpoint",
        )
        .map(drop)
    }
}

/// The raw bytes go in a table of their own, written once: in `messages` they were
/// copied again by every UPDATE of the row (SQLite rewrites a changed row whole,
/// overflow pages included).
pub(super) fn save_raw(conn: &Connection, m: &NewRawMessage<'_>) -> anyhow::Result<RawSaved> {
    if let Some(id) = insert_raw(conn, m, &m.dedup_key)? {
        return Ok(RawSaved::New(id));
    }
    // Stored before under this key. Without a Message-ID the key is the bytes' hash, so
    // it is the same message. With one, it is the same message if the bytes or what the
    // author wrote match one of the copies under that Message-ID (rows from before
    // `core_hash` existed count as matching, as they always did).
    let Some(message_id) = m.message_id else {
        return known(conn, &m.dedup_key);
    };
    let seen: Option<RawSaved> = one(
        conn,
        r#"
        SELECT id, processed_at FROM messages
        WHERE message_id = ?1
          -- Implied by the Message-ID (its keys are "mid:ID" and "mid:ID/hash"), but
          -- it is what lets the walk use the dedup_key index.
          AND (dedup_key = ?2 OR (dedup_key >= ?2 || '/' AND dedup_key < ?2 || '0'))
          AND (content_hash = ?3 OR core_hash = ?4 OR core_hash IS NULL)
        ORDER BY id
        LIMIT 1
        "#,
        params![message_id, m.dedup_key, m.content_hash, m.core_hash],
        known_from_row,
        "Cannot read the stored message",
    )?;
    if let Some(seen) = seen {
        return Ok(seen);
    }
    // A different message under a Message-ID already used: logged too, under a key of
    // its own (the Message-ID and its bytes' hash), so that it is recognised in turn.
    tracing::warn!(
        "Message-ID <{message_id}> came before on a different message (another body, subject, sender or date); logging this one too"
    );
    let key = format!("{}/{}", m.dedup_key, m.content_hash);
    match insert_raw(conn, m, &key)? {
        Some(id) => Ok(RawSaved::New(id)),
        None => known(conn, &key),
    }
}

/// Stores the message under `key`, unless a message is already stored under it, with its
/// first processing attempt counted (see `Tx::save_raw`).
fn insert_raw(conn: &Connection, m: &NewRawMessage<'_>, key: &str) -> anyhow::Result<Option<MessageId>> {
    let inserted: Option<MessageId> = one(
        conn,
        r#"
        INSERT INTO messages
            (mailbox, uidvalidity, uid, dedup_key, message_id, content_hash, core_hash, size,
             fetched_at, backlog, attempts)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1)
        ON CONFLICT (dedup_key) DO NOTHING
        RETURNING id
        "#,
        params![
            m.mailbox,
            m.uidvalidity,
            m.uid,
            key,
            m.message_id,
            m.content_hash,
            m.core_hash,
            i64::try_from(m.raw.len()).unwrap_or(i64::MAX),
            to_millis(m.fetched_at),
            m.backlog
        ],
        |r| Ok(r.get(0)?),
        "Cannot store the raw message",
    )?;
    if let Some(id) = inserted {
        exec(
            conn,
            "INSERT INTO raw_messages (id, raw) VALUES (?1, ?2)",
            params![id, m.raw],
            "Cannot store the raw message",
        )?;
    }
    Ok(inserted)
}

fn known(conn: &Connection, key: &str) -> anyhow::Result<RawSaved> {
    one(
        conn,
        "SELECT id, processed_at FROM messages WHERE dedup_key = ?1",
        [key],
        known_from_row,
        "Cannot read the stored message",
    )?
    .context("The stored message vanished")
}

fn known_from_row(row: &rusqlite::Row<'_>) -> anyhow::Result<RawSaved> {
    Ok(RawSaved::Known {
        id: row.get("id")?,
        processed: row.get::<_, Option<i64>>("processed_at")?.is_some(),
    })
}
