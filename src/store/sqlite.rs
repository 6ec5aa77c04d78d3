//! The SQLite backend: one file in the data directory, WAL so the CLI can read while the
//! daemon writes, foreign keys on, and write transactions taken with `BEGIN IMMEDIATE` so
//! two writers queue instead of failing half-way.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection as _, Row, Sqlite, Transaction};

use super::{
    Candidate, DaemonStatus, EventRow, MailboxState, MessageOutcome, MessageRow, NewOutgoing, NewRawMessage,
    NewRequest, OutboxCounts, OutboxItem, RawSaved, RequestFilter, RequestRow, RequestText, Store, Tx,
};
use crate::classify::Fingerprint;
use crate::clock::{from_millis, to_millis};
use crate::domain::{Classification, Decision, Status};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const MAX_CONNECTIONS: u32 = 10;
/// Page cache of the writing connection: the indexes a backlog keeps touching stay in
/// memory (SQLite's default is 2 MiB).
const WRITER_CACHE_KIB: u32 = 16 * 1024;
/// How many earlier requests a new approach is compared with: the newest from the same
/// requester and organisation.
const DUPLICATE_CANDIDATES: i64 = 200;

/// The database file's name inside `data_dir`.
pub const FILE_NAME: &str = "gatehouse.db";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The one connection write transactions use. SQLite lets one writer in at a time
    /// anyway, and a connection's page cache is thrown away whenever another connection
    /// has written: writing through one connection keeps it warm (a backlog read its pages
    /// back from the file for every message otherwise).
    writer: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) `gatehouse.db` in `data_dir`, creating the folder private
    /// to the service user: it holds every email received.
    pub async fn open_in(data_dir: &Path) -> anyhow::Result<Self> {
        create_private_dir(data_dir)?;
        Self::open_file(&data_dir.join(FILE_NAME)).await
    }

    pub async fn open_file(path: &Path) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        // Enough that a write transaction's own reads never wait behind writers queued
        // for its lock (the processor reads while it holds the write lock; the outbox
        // sender, heartbeat and schedules each hold at most one connection).
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .after_release(release_check)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("Cannot open the database {}", path.display()))?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_release(release_check)
            .connect_with(options.pragma("cache_size", format!("-{WRITER_CACHE_KIB}")))
            .await
            .with_context(|| format!("Cannot open the database {}", path.display()))?;
        restrict_file(path);
        Ok(Self { pool, writer, path: path.to_path_buf() })
    }
}

/// Checks a connection coming back to its pool. A COMMIT that fails on a full disk is
/// rolled back by SQLite itself; sqlx still counts the transaction open, its ROLLBACK on
/// drop then fails, and the connection refused every later BEGIN ("non-zero transaction
/// depth"), so messages were given up as unparseable. Run the queued rollback now and close
/// a connection that still thinks it is in a transaction.
fn release_check(
    conn: &mut SqliteConnection,
    _: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        conn.ping().await?;
        Ok(!conn.is_in_transaction())
    })
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("Cannot create the data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

fn restrict_file(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}

const REQUEST_COLUMNS: &str = r#"
    r.id, r.reference, r.status, r.decision, r.decision_detail, r.requester, r.requester_name,
    r.organisation, r.via, r.subject, r.body, r.received_at, r.decided_at, r.meeting_date,
    (SELECT d.reference FROM requests d WHERE d.id = r.duplicate_of) AS duplicate_of_ref,
    (SELECT p.reference FROM requests p WHERE p.id = r.probable_duplicate_of) AS probable_ref,
    (SELECT COUNT(*) FROM messages m WHERE m.request_id = r.id
        AND m.classification IN ('new', 'forwarded', 'follow_up')) AS message_count,
    (SELECT group_concat(priority, ',') FROM
        (SELECT priority FROM request_priorities rp WHERE rp.request_id = r.id ORDER BY priority)) AS priorities,
    r.token, r.answer
"#;

fn request_from_row(row: &SqliteRow) -> anyhow::Result<RequestRow> {
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
        answer: row.try_get::<i64, _>("answer")? != 0,
    })
}

const MESSAGE_COLUMNS: &str = r#"
    m.id, m.message_id, m.received_at, m.from_address, m.subject, m.classification, m.detail,
    (SELECT r.reference FROM requests r WHERE r.id = m.request_id) AS reference
"#;

fn message_from_row(row: &SqliteRow) -> anyhow::Result<MessageRow> {
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
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> anyhow::Result<usize> {
        let before: i64 = applied_migrations(&self.pool).await;
        MIGRATOR.run(&self.pool).await.context("Cannot apply the database migrations")?;
        let after: i64 = applied_migrations(&self.pool).await;
        Ok(usize::try_from(after - before).unwrap_or(0))
    }

    async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.context("The database does not answer")?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("SQLite {}", self.path.display())
    }

    async fn list_requests(&self, filter: &RequestFilter) -> anyhow::Result<Vec<RequestRow>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests r
             WHERE (?1 IS NULL OR r.status = ?1)
             ORDER BY r.received_at, r.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.status.map(Status::as_str))
            .fetch_all(&self.pool)
            .await
            .context("Cannot list requests")?;
        rows.iter().map(request_from_row).collect()
    }

    async fn find_request(&self, reference: &str) -> anyhow::Result<Option<RequestRow>> {
        let mut conn = self.pool.acquire().await.context("Cannot reach the database")?;
        reads::find_request(&mut conn, reference).await
    }

    async fn request_messages(&self, request_id: i64) -> anyhow::Result<Vec<MessageRow>> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.request_id = ?1 ORDER BY m.id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(request_id)
            .fetch_all(&self.pool)
            .await
            .context("Cannot read the request's messages")?;
        rows.iter().map(message_from_row).collect()
    }

    async fn request_events(&self, request_id: i64) -> anyhow::Result<Vec<EventRow>> {
        let rows = sqlx::query(
            r#"
            SELECT at, actor, kind, detail
            FROM request_events
            WHERE request_id = ?1
            ORDER BY at, id
            "#,
        )
        .bind(request_id)
        .fetch_all(&self.pool)
        .await
        .context("Cannot read the request's events")?;
        rows.iter()
            .map(|row| {
                Ok(EventRow {
                    at: from_millis(row.try_get("at")?),
                    actor: row.try_get("actor")?,
                    kind: row.try_get("kind")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect()
    }

    async fn list_messages(&self) -> anyhow::Result<Vec<MessageRow>> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages m ORDER BY m.id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .context("Cannot list messages")?;
        rows.iter().map(message_from_row).collect()
    }

    async fn get_meta(&self, key: &str) -> anyhow::Result<Option<String>> {
        let value = sqlx::query_scalar("SELECT value FROM meta WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .context("Cannot read meta")?;
        Ok(value)
    }

    async fn init_meta(&self, key: &str, value: &str) -> anyhow::Result<String> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .context("Cannot write meta")?;
        self.get_meta(key).await?.context("Meta value vanished")
    }

    async fn mailbox_state(&self, mailbox: &str) -> anyhow::Result<Option<MailboxState>> {
        let row = sqlx::query(
            r#"
            SELECT uidvalidity, last_uid, backlog_below_uid
            FROM mailbox_state
            WHERE mailbox = ?1
            "#,
        )
        .bind(mailbox)
        .fetch_optional(&self.pool)
        .await
        .context("Cannot read the mailbox state")?;
        row.map(|row| {
            Ok(MailboxState {
                uidvalidity: u32_col(&row, "uidvalidity")?,
                last_uid: u32_col(&row, "last_uid")?,
                backlog_below_uid: u32_col(&row, "backlog_below_uid")?,
            })
        })
        .transpose()
    }

    async fn reset_mailbox_state(&self, mailbox: &str, state: MailboxState) -> anyhow::Result<()> {
        sqlx::query(
            r#"
            INSERT INTO mailbox_state (mailbox, uidvalidity, last_uid, backlog_below_uid, updated_at)
            VALUES (?1, ?2, ?3, ?4, ?5)
            ON CONFLICT (mailbox) DO UPDATE SET
                uidvalidity = excluded.uidvalidity,
                last_uid = excluded.last_uid,
                backlog_below_uid = excluded.backlog_below_uid,
                updated_at = excluded.updated_at
            "#,
        )
        .bind(mailbox)
        .bind(i64::from(state.uidvalidity))
        .bind(i64::from(state.last_uid))
        .bind(i64::from(state.backlog_below_uid))
        .bind(to_millis(Utc::now()))
        .execute(&self.pool)
        .await
        .context("Cannot write the mailbox state")?;
        Ok(())
    }

    async fn raw_message(&self, id: i64) -> anyhow::Result<Vec<u8>> {
        sqlx::query_scalar("SELECT raw FROM messages WHERE id = ?1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .context("Cannot read the raw message")
    }

    async fn awaiting_triage(&self) -> anyhow::Result<Vec<RequestRow>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests r WHERE r.status = 'awaiting_triage' ORDER BY r.received_at, r.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .context("Cannot list requests awaiting triage")?;
        rows.iter().map(request_from_row).collect()
    }

    async fn received_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<Vec<RequestRow>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests r
             WHERE r.received_at >= ?1 AND r.received_at < ?2
             ORDER BY r.received_at, r.id"
        );
        self.requests(sql, &[to_millis(from), to_millis(to)]).await
    }

    async fn decided_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<Vec<RequestRow>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests r
             WHERE r.decided_at >= ?1 AND r.decided_at < ?2
             ORDER BY r.decided_at, r.id"
        );
        self.requests(sql, &[to_millis(from), to_millis(to)]).await
    }

    async fn with_status(&self, status: Status, limit: i64) -> anyhow::Result<(Vec<RequestRow>, usize)> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests r WHERE r.status = ?1 ORDER BY r.received_at, r.id LIMIT ?2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(status.as_str())
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .context("Cannot list requests by status")?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE status = ?1")
            .bind(status.as_str())
            .fetch_one(&self.pool)
            .await
            .context("Cannot count requests by status")?;
        let rows = rows.iter().map(request_from_row).collect::<anyhow::Result<Vec<_>>>()?;
        Ok((rows, usize::try_from(total).unwrap_or(0)))
    }

    async fn agenda_for(&self, date: NaiveDate) -> anyhow::Result<Vec<RequestRow>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests r
             WHERE r.decision = 'meeting' AND r.meeting_date = ?1
             ORDER BY r.decided_at, r.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(date.format("%Y-%m-%d").to_string())
            .fetch_all(&self.pool)
            .await
            .context("Cannot read the agenda")?;
        rows.iter().map(request_from_row).collect()
    }

    async fn arrivals_since(&self, since: DateTime<Utc>) -> anyhow::Result<Vec<DateTime<Utc>>> {
        let times: Vec<i64> = sqlx::query_scalar("SELECT received_at FROM requests WHERE received_at >= ?1")
            .bind(to_millis(since))
            .fetch_all(&self.pool)
            .await
            .context("Cannot read arrival times")?;
        Ok(times.into_iter().map(from_millis).collect())
    }

    async fn events_of_kind(&self, request_ids: &[i64], kind: &str) -> anyhow::Result<Vec<(i64, EventRow)>> {
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            r#"
            SELECT request_id, at, actor, kind, detail
            FROM request_events
            WHERE kind = ?2 AND request_id IN (SELECT value FROM json_each(?1))
            ORDER BY request_id, at, id
            "#,
        )
        .bind(serde_json::to_string(request_ids)?)
        .bind(kind)
        .fetch_all(&self.pool)
        .await
        .context("Cannot read events")?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("request_id")?,
                    EventRow {
                        at: from_millis(row.try_get("at")?),
                        actor: row.try_get("actor")?,
                        kind: row.try_get("kind")?,
                        detail: row.try_get("detail")?,
                    },
                ))
            })
            .collect()
    }

    async fn last_covered(&self, kind: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        let at: Option<i64> = sqlx::query_scalar("SELECT MAX(covers_to) FROM summaries WHERE kind = ?1")
            .bind(kind)
            .fetch_one(&self.pool)
            .await
            .context("Cannot read the summaries")?;
        Ok(at.map(from_millis))
    }

    async fn summary_sent(&self, kind: &str, period: &str) -> anyhow::Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM summaries WHERE kind = ?1 AND period = ?2")
            .bind(kind)
            .bind(period)
            .fetch_one(&self.pool)
            .await
            .context("Cannot read the summaries")?;
        Ok(n > 0)
    }

    async fn set_daemon_status(
        &self,
        imap: &str,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            r#"
            INSERT INTO daemon_status (id, imap, imap_detail, last_seen, started_at, pid)
            VALUES (1, ?1, ?2, ?3, ?3, ?4)
            ON CONFLICT (id) DO UPDATE SET
                imap = excluded.imap,
                imap_detail = excluded.imap_detail,
                last_seen = excluded.last_seen,
                pid = excluded.pid
            "#,
        )
        .bind(imap)
        .bind(detail)
        .bind(to_millis(now))
        .bind(i64::from(std::process::id()))
        .execute(&self.pool)
        .await
        .context("Cannot record the daemon's status")?;
        Ok(())
    }

    async fn daemon_status(&self) -> anyhow::Result<Option<DaemonStatus>> {
        let row = sqlx::query(
            r#"
            SELECT imap, imap_detail, last_seen, started_at, pid
            FROM daemon_status
            WHERE id = 1
            "#,
        )
        .fetch_optional(&self.pool)
        .await
        .context("Cannot read the daemon's status")?;
        row.map(|row| {
            Ok(DaemonStatus {
                imap: row.try_get("imap")?,
                imap_detail: row.try_get("imap_detail")?,
                last_seen: from_millis(row.try_get("last_seen")?),
                started_at: from_millis(row.try_get("started_at")?),
                pid: row.try_get("pid")?,
            })
        })
        .transpose()
    }

    async fn outbox_counts(&self) -> anyhow::Result<OutboxCounts> {
        let row = sqlx::query(
            r#"
            SELECT
                COALESCE(SUM(CASE WHEN status IN ('pending', 'claimed', 'sending') THEN 1 ELSE 0 END), 0) AS pending,
                COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) AS failed
            FROM outbox
            "#,
        )
        .fetch_one(&self.pool)
        .await
        .context("Cannot count the outbox")?;
        Ok(OutboxCounts { pending: row.try_get("pending")?, failed: row.try_get("failed")? })
    }

    async fn last_summary(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        let at: Option<i64> = sqlx::query_scalar("SELECT MAX(sent_at) FROM summaries WHERE kind = 'weekly'")
            .fetch_one(&self.pool)
            .await
            .context("Cannot read the summaries")?;
        Ok(at.map(from_millis))
    }

    async fn requeue_interrupted(&self) -> anyhow::Result<u64> {
        // Claimed but never handed to SMTP: simply due again.
        sqlx::query("UPDATE outbox SET status = 'pending' WHERE status = 'claimed'")
            .execute(&self.pool)
            .await
            .context("Cannot requeue claimed mail")?;
        // Cut off mid-SMTP: the server may have it, but losing it would be worse than a
        // second copy, so it goes again; `interrupted` counts how often that happened.
        let done = sqlx::query(
            "UPDATE outbox SET status = 'pending', interrupted = interrupted + 1 WHERE status = 'sending'",
        )
        .execute(&self.pool)
        .await
        .context("Cannot requeue interrupted mail")?;
        Ok(done.rows_affected())
    }

    async fn claim_due(&self, now: DateTime<Utc>, limit: i64) -> anyhow::Result<Vec<OutboxItem>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.context("Cannot start a transaction")?;
        let rows = sqlx::query(
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
        )
        .bind(to_millis(now))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .context("Cannot claim outgoing mail")?;
        tx.commit().await.context("Cannot claim outgoing mail")?;
        let mut items: Vec<OutboxItem> = rows
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
            .collect::<anyhow::Result<_>>()?;
        items.sort_by_key(|i| i.id);
        Ok(items)
    }

    async fn mark_in_flight(&self, id: i64) -> anyhow::Result<()> {
        sqlx::query("UPDATE outbox SET status = 'sending' WHERE id = ?1")
            .bind(id)
            .execute(&self.pool)
            .await
            .context("Cannot mark an email as being sent")?;
        Ok(())
    }

    async fn mark_sent(&self, id: i64, at: DateTime<Utc>) -> anyhow::Result<()> {
        sqlx::query("UPDATE outbox SET status = 'sent', sent_at = ?2, last_error = NULL WHERE id = ?1")
            .bind(id)
            .bind(to_millis(at))
            .execute(&self.pool)
            .await
            .context("Cannot record a sent email")?;
        Ok(())
    }

    async fn mark_retry(&self, id: i64, next_attempt_at: DateTime<Utc>, error: &str) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE outbox SET status = 'pending', next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
        )
        .bind(id)
        .bind(to_millis(next_attempt_at))
        .bind(error)
        .execute(&self.pool)
        .await
        .context("Cannot reschedule an email")?;
        Ok(())
    }

    async fn mark_failed(&self, id: i64, error: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE outbox SET status = 'failed', last_error = ?2 WHERE id = ?1")
            .bind(id)
            .bind(error)
            .execute(&self.pool)
            .await
            .context("Cannot record a failed email")?;
        Ok(())
    }

    async fn begin(&self) -> anyhow::Result<Box<dyn Tx>> {
        let tx = self.writer.begin_with("BEGIN IMMEDIATE").await.context("Cannot start a transaction")?;
        Ok(Box::new(SqliteTx { tx }))
    }
}

impl SqliteStore {
    async fn requests(&self, sql: String, binds: &[i64]) -> anyhow::Result<Vec<RequestRow>> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            query = query.bind(*b);
        }
        let rows = query.fetch_all(&self.pool).await.context("Cannot list requests")?;
        rows.iter().map(request_from_row).collect()
    }
}

async fn applied_migrations(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

fn u32_col(row: &SqliteRow, name: &str) -> anyhow::Result<u32> {
    let v: i64 = row.try_get(name)?;
    u32::try_from(v).with_context(|| format!("{name} out of range: {v}"))
}

struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
}

#[async_trait]
impl Tx for SqliteTx {
    async fn next_reference_seq(&mut self, year: i32) -> anyhow::Result<i64> {
        let seq = sqlx::query_scalar(
            r#"
            INSERT INTO reference_counters (year, last_seq) VALUES (?1, 1)
            ON CONFLICT (year) DO UPDATE SET last_seq = last_seq + 1
            RETURNING last_seq
            "#,
        )
        .bind(year)
        .fetch_one(&mut *self.tx)
        .await
        .context("Cannot allocate a reference")?;
        Ok(seq)
    }

    async fn insert_request(&mut self, r: &NewRequest) -> anyhow::Result<i64> {
        let now = to_millis(Utc::now());
        let id = sqlx::query_scalar(
            r#"
            INSERT INTO requests
                (reference, ref_year, ref_seq, status, requester, requester_name, organisation, via,
                 subject, body, received_at, probable_duplicate_of, token, answer, created_at, updated_at)
            VALUES (?1, ?2, ?3, 'awaiting_triage', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)
            RETURNING id
            "#,
        )
        .bind(&r.reference)
        .bind(r.ref_year)
        .bind(r.ref_seq)
        .bind(&r.requester)
        .bind(&r.requester_name)
        .bind(&r.organisation)
        .bind(&r.via)
        .bind(&r.subject)
        .bind(&r.body)
        .bind(to_millis(r.received_at))
        .bind(r.probable_duplicate_of)
        .bind(&r.token)
        .bind(r.answer)
        .bind(now)
        .fetch_one(&mut *self.tx)
        .await
        .context("Cannot create the request")?;
        sqlx::query(
            r#"
            INSERT INTO request_fingerprints (request_id, fingerprint)
            VALUES (?1, ?2)
            "#,
        )
        .bind(id)
        .bind(&r.fingerprint)
        .execute(&mut *self.tx)
        .await
        .context("Cannot store the request's fingerprint")?;
        Ok(id)
    }

    async fn add_event(
        &mut self,
        request_id: i64,
        at: DateTime<Utc>,
        actor: &str,
        kind: &str,
        detail: Option<&str>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            r#"
            INSERT INTO request_events (request_id, at, actor, kind, detail)
            VALUES (?1, ?2, ?3, ?4, ?5)
            "#,
        )
        .bind(request_id)
        .bind(to_millis(at))
        .bind(actor)
        .bind(kind)
        .bind(detail)
        .execute(&mut *self.tx)
        .await
        .context("Cannot record the event")?;
        Ok(())
    }

    async fn add_thread_id(
        &mut self,
        message_id: &str,
        request_id: i64,
        direction: &str,
    ) -> anyhow::Result<()> {
        sqlx::query(
            r#"
            INSERT INTO thread_message_ids (message_id, request_id, direction)
            VALUES (?1, ?2, ?3)
            ON CONFLICT (message_id) DO NOTHING
            "#,
        )
        .bind(message_id)
        .bind(request_id)
        .bind(direction)
        .execute(&mut *self.tx)
        .await
        .context("Cannot record the thread")?;
        Ok(())
    }

    async fn finish_message(&mut self, id: i64, o: &MessageOutcome, at: DateTime<Utc>) -> anyhow::Result<()> {
        sqlx::query(
            r#"
            UPDATE messages SET
                classification = ?2, received_at = ?3, from_address = ?4, from_name = ?5,
                subject = ?6, attachments = ?7, detail = ?8, request_id = ?9, processed_at = ?10
            WHERE id = ?1
            "#,
        )
        .bind(id)
        .bind(o.classification.as_str())
        .bind(o.received_at.map(to_millis))
        .bind(&o.from_address)
        .bind(&o.from_name)
        .bind(&o.subject)
        .bind(&o.attachments)
        .bind(&o.detail)
        .bind(o.request_id)
        .bind(to_millis(at))
        .execute(&mut *self.tx)
        .await
        .context("Cannot record the message's outcome")?;
        Ok(())
    }

    async fn set_checkpoint(
        &mut self,
        mailbox: &str,
        uidvalidity: u32,
        last_uid: u32,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        // Only ever forward, and only within the UIDVALIDITY it was read under.
        sqlx::query(
            r#"
            UPDATE mailbox_state SET last_uid = MAX(last_uid, ?3), updated_at = ?4
            WHERE mailbox = ?1 AND uidvalidity = ?2
            "#,
        )
        .bind(mailbox)
        .bind(i64::from(uidvalidity))
        .bind(i64::from(last_uid))
        .bind(to_millis(at))
        .execute(&mut *self.tx)
        .await
        .context("Cannot advance the inbox checkpoint")?;
        Ok(())
    }

    async fn enqueue(&mut self, mail: &NewOutgoing, at: DateTime<Utc>) -> anyhow::Result<i64> {
        let id = sqlx::query_scalar(
            r#"
            INSERT INTO outbox
                (message_id, request_id, kind, envelope_from, recipients, subject, raw, status,
                 attempts, next_attempt_at, created_at)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8)
            RETURNING id
            "#,
        )
        .bind(&mail.message_id)
        .bind(mail.request_id)
        .bind(&mail.kind)
        .bind(&mail.envelope_from)
        .bind(serde_json::to_string(&mail.recipients)?)
        .bind(&mail.subject)
        .bind(&mail.raw)
        .bind(to_millis(at))
        .fetch_one(&mut *self.tx)
        .await
        .context("Cannot write to the outbox")?;
        if let Some(request_id) = mail.request_id {
            self.add_thread_id(&mail.message_id, request_id, &format!("out:{}", mail.kind)).await?;
        }
        Ok(id)
    }

    async fn count_sent_to(
        &mut self,
        kind: &str,
        recipient: &str,
        since: DateTime<Utc>,
    ) -> anyhow::Result<i64> {
        let n = sqlx::query_scalar(
            r#"
            SELECT COUNT(*) FROM outbox
            WHERE kind = ?1 AND created_at >= ?3
              AND EXISTS (SELECT 1 FROM json_each(outbox.recipients) WHERE value = ?2)
            "#,
        )
        .bind(kind)
        .bind(recipient)
        .bind(to_millis(since))
        .fetch_one(&mut *self.tx)
        .await
        .context("Cannot count sent mail")?;
        Ok(n)
    }

    async fn has_outgoing(&mut self, request_id: i64, kind: &str) -> anyhow::Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE request_id = ?1 AND kind = ?2")
            .bind(request_id)
            .bind(kind)
            .fetch_one(&mut *self.tx)
            .await
            .context("Cannot read the outbox")?;
        Ok(n > 0)
    }

    async fn mark_bounced(&mut self, outbox_id: i64, detail: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE outbox SET status = 'bounced', last_error = ?2 WHERE id = ?1")
            .bind(outbox_id)
            .bind(detail)
            .execute(&mut *self.tx)
            .await
            .context("Cannot record a bounce")?;
        Ok(())
    }

    async fn record_decision(
        &mut self,
        request_id: i64,
        decision: Decision,
        detail: Option<&str>,
        meeting_date: Option<NaiveDate>,
        duplicate_of: Option<i64>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            r#"
            UPDATE requests SET
                status = ?2, decision = ?3, decision_detail = ?4, meeting_date = ?5,
                duplicate_of = ?6, decided_at = ?7, updated_at = ?7
            WHERE id = ?1
            "#,
        )
        .bind(request_id)
        .bind(decision.status().as_str())
        .bind(decision.as_str())
        .bind(detail)
        .bind(meeting_date.map(|d| d.format("%Y-%m-%d").to_string()))
        .bind(duplicate_of)
        .bind(to_millis(at))
        .execute(&mut *self.tx)
        .await
        .context("Cannot record the decision")?;
        Ok(())
    }

    async fn set_meta(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *self.tx)
        .await
        .context("Cannot write meta")?;
        Ok(())
    }

    async fn add_priority(&mut self, request_id: i64, key: &str) -> anyhow::Result<()> {
        sqlx::query(
            r#"
            INSERT INTO request_priorities (request_id, priority) VALUES (?1, ?2)
            ON CONFLICT (request_id, priority) DO NOTHING
            "#,
        )
        .bind(request_id)
        .bind(key)
        .execute(&mut *self.tx)
        .await
        .context("Cannot tag the priority")?;
        Ok(())
    }

    async fn set_status(&mut self, request_id: i64, status: Status, at: DateTime<Utc>) -> anyhow::Result<()> {
        sqlx::query("UPDATE requests SET status = ?2, updated_at = ?3 WHERE id = ?1")
            .bind(request_id)
            .bind(status.as_str())
            .bind(to_millis(at))
            .execute(&mut *self.tx)
            .await
            .context("Cannot change the status")?;
        Ok(())
    }

    async fn record_summary(
        &mut self,
        kind: &str,
        period: &str,
        covers: (DateTime<Utc>, DateTime<Utc>),
        outbox_id: Option<i64>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let done = sqlx::query(
            r#"
            INSERT INTO summaries (kind, period, covers_from, covers_to, sent_at, outbox_id)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6)
            ON CONFLICT (kind, period) DO NOTHING
            "#,
        )
        .bind(kind)
        .bind(period)
        .bind(to_millis(covers.0))
        .bind(to_millis(covers.1))
        .bind(to_millis(at))
        .bind(outbox_id)
        .execute(&mut *self.tx)
        .await
        .context("Cannot record the mailing")?;
        Ok(done.rows_affected() == 1)
    }

    async fn find_request(&mut self, reference: &str) -> anyhow::Result<Option<RequestRow>> {
        reads::find_request(&mut self.tx, reference).await
    }

    async fn save_raw(&mut self, m: &NewRawMessage<'_>) -> anyhow::Result<RawSaved> {
        reads::save_raw(&mut self.tx, m).await
    }

    async fn request_for_thread(&mut self, ids: &[String]) -> anyhow::Result<Option<RequestRow>> {
        reads::request_for_thread(&mut self.tx, ids).await
    }

    async fn request_by_token(&mut self, token: &str) -> anyhow::Result<Option<RequestRow>> {
        reads::request_by_token(&mut self.tx, token).await
    }

    async fn request_for_notification(&mut self, ids: &[String]) -> anyhow::Result<Option<RequestRow>> {
        reads::request_for_notification(&mut self.tx, ids).await
    }

    async fn recent_requests(
        &mut self,
        requester: &str,
        organisation: Option<&str>,
        since: DateTime<Utc>,
    ) -> anyhow::Result<Vec<(i64, String)>> {
        reads::recent_requests(&mut self.tx, requester, organisation, since).await
    }

    async fn request_texts(&mut self, tokens: &[String]) -> anyhow::Result<Vec<RequestText>> {
        reads::request_texts(&mut self.tx, tokens).await
    }

    async fn candidates(&mut self, ids: &[i64]) -> anyhow::Result<Vec<Candidate>> {
        reads::candidates(&mut self.tx, ids).await
    }

    async fn outbox_for_message_ids(
        &mut self,
        ids: &[String],
    ) -> anyhow::Result<Option<(i64, Option<i64>, String)>> {
        reads::outbox_for_message_ids(&mut self.tx, ids).await
    }

    async fn savepoint(&mut self) -> anyhow::Result<()> {
        sqlx::query("SAVEPOINT gatehouse_step")
            .execute(&mut *self.tx)
            .await
            .context("Cannot start a savepoint")?;
        Ok(())
    }

    async fn release_savepoint(&mut self) -> anyhow::Result<()> {
        sqlx::query("RELEASE gatehouse_step")
            .execute(&mut *self.tx)
            .await
            .context("Cannot release a savepoint")?;
        Ok(())
    }

    async fn rollback_to_savepoint(&mut self) -> anyhow::Result<()> {
        sqlx::query("ROLLBACK TO gatehouse_step")
            .execute(&mut *self.tx)
            .await
            .context("Cannot roll back a step")?;
        sqlx::query("RELEASE gatehouse_step")
            .execute(&mut *self.tx)
            .await
            .context("Cannot release a savepoint")?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> anyhow::Result<()> {
        self.tx.commit().await.context("Cannot commit")?;
        Ok(())
    }
}

/// Reads and the raw-message write that both the pool (`Store`) and a transaction (`Tx`)
/// offer: inside a transaction they see its own uncommitted writes, which the inbox needs
/// when several messages are processed in one transaction (a follow-up to a request created
/// a moment earlier).
mod reads {
    use super::*;

    pub(super) async fn find_request(
        conn: &mut SqliteConnection,
        reference: &str,
    ) -> anyhow::Result<Option<RequestRow>> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM requests r WHERE r.reference = ?1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(reference.trim().to_ascii_uppercase())
            .fetch_optional(&mut *conn)
            .await
            .context("Cannot read the request")?;
        row.as_ref().map(request_from_row).transpose()
    }

    pub(super) async fn save_raw(
        conn: &mut SqliteConnection,
        m: &NewRawMessage<'_>,
    ) -> anyhow::Result<RawSaved> {
        let inserted = sqlx::query_scalar::<_, i64>(
            r#"
        INSERT INTO messages
            (mailbox, uidvalidity, uid, dedup_key, message_id, content_hash, size, raw, fetched_at, backlog)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
        ON CONFLICT (dedup_key) DO NOTHING
        RETURNING id
        "#,
        )
        .bind(m.mailbox)
        .bind(i64::from(m.uidvalidity))
        .bind(i64::from(m.uid))
        .bind(&m.dedup_key)
        .bind(&m.message_id)
        .bind(&m.content_hash)
        .bind(i64::try_from(m.raw.len()).unwrap_or(i64::MAX))
        .bind(m.raw)
        .bind(to_millis(m.fetched_at))
        .bind(m.backlog)
        .fetch_optional(&mut *conn)
        .await
        .context("Cannot store the raw message")?;
        if let Some(id) = inserted {
            return Ok(RawSaved::New(id));
        }
        let row = sqlx::query("SELECT id, processed_at FROM messages WHERE dedup_key = ?1")
            .bind(&m.dedup_key)
            .fetch_one(&mut *conn)
            .await
            .context("Cannot read the stored message")?;
        Ok(RawSaved::Known {
            id: row.try_get("id")?,
            processed: row.try_get::<Option<i64>, _>("processed_at")?.is_some(),
        })
    }

    pub(super) async fn request_for_thread(
        conn: &mut SqliteConnection,
        ids: &[String],
    ) -> anyhow::Result<Option<RequestRow>> {
        if ids.is_empty() {
            return Ok(None);
        }
        let ids = serde_json::to_string(ids)?;
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests r
         WHERE r.id IN (SELECT t.request_id FROM thread_message_ids t
                        WHERE t.message_id IN (SELECT value FROM json_each(?1)))
         ORDER BY r.received_at DESC, r.id DESC
         LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ids)
            .fetch_optional(&mut *conn)
            .await
            .context("Cannot look up the thread")?;
        row.as_ref().map(request_from_row).transpose()
    }

    pub(super) async fn request_by_token(
        conn: &mut SqliteConnection,
        token: &str,
    ) -> anyhow::Result<Option<RequestRow>> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM requests r WHERE r.token = ?1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(token.to_ascii_lowercase())
            .fetch_optional(&mut *conn)
            .await
            .context("Cannot look up the token")?;
        row.as_ref().map(request_from_row).transpose()
    }

    pub(super) async fn request_for_notification(
        conn: &mut SqliteConnection,
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
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(serde_json::to_string(ids)?)
            .fetch_optional(&mut *conn)
            .await
            .context("Cannot look up the notification")?;
        row.as_ref().map(request_from_row).transpose()
    }

    pub(super) async fn recent_requests(
        conn: &mut SqliteConnection,
        requester: &str,
        organisation: Option<&str>,
        since: DateTime<Utc>,
    ) -> anyhow::Result<Vec<(i64, String)>> {
        // Two index walks (requester, organisation), each stopping at the limit, rather than
        // an OR that scans every request. One row comes back, not hundreds: sqlx hands each
        // row from its SQLite thread to ours separately, and that cost more than the query.
        let list: Option<String> = sqlx::query_scalar(
            r#"
            SELECT group_concat(id || ':' || token, ',')
            FROM (
                SELECT r.id, r.token
                FROM requests r
                WHERE r.id IN (
                    SELECT id FROM (
                        SELECT id FROM requests
                        WHERE requester = ?1 AND (status <> 'closed' OR received_at >= ?3)
                        ORDER BY received_at DESC, id DESC
                        LIMIT ?4
                    )
                    UNION ALL
                    SELECT id FROM (
                        SELECT id FROM requests
                        WHERE organisation = ?2 AND (status <> 'closed' OR received_at >= ?3)
                        ORDER BY received_at DESC, id DESC
                        LIMIT ?4
                    )
                )
                ORDER BY r.id DESC
                LIMIT ?4
            )
            "#,
        )
        .bind(requester)
        .bind(organisation)
        .bind(to_millis(since))
        .bind(DUPLICATE_CANDIDATES)
        .fetch_one(&mut *conn)
        .await
        .context("Cannot look for earlier approaches")?;
        list.unwrap_or_default()
            .split(',')
            .filter(|item| !item.is_empty())
            .map(|item| {
                let (id, token) = item.split_once(':').context("Malformed request list")?;
                Ok((id.parse().context("Malformed request id")?, token.to_string()))
            })
            .collect()
    }

    pub(super) async fn request_texts(
        conn: &mut SqliteConnection,
        tokens: &[String],
    ) -> anyhow::Result<Vec<RequestText>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        // Not a column of `requests`: reading one after `body` walks the body's overflow
        // pages (see the fingerprints migration). The body is read only for requests from
        // before fingerprints were stored.
        let rows = sqlx::query(
            r#"
            SELECT r.token, r.subject, f.fingerprint,
                   CASE WHEN f.fingerprint IS NULL THEN r.body END AS body
            FROM requests r
            LEFT JOIN request_fingerprints f ON f.request_id = r.id
            WHERE r.token IN (SELECT value FROM json_each(?1))
            "#,
        )
        .bind(serde_json::to_string(tokens)?)
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
                Ok(RequestText {
                    token: row.try_get("token")?,
                    subject: row.try_get("subject")?,
                    fingerprint,
                })
            })
            .collect()
    }

    pub(super) async fn candidates(
        conn: &mut SqliteConnection,
        ids: &[i64],
    ) -> anyhow::Result<Vec<Candidate>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            r#"
            SELECT id, reference, requester, organisation, subject, status, decision
            FROM requests
            WHERE id IN (SELECT value FROM json_each(?1))
            ORDER BY id DESC
            "#,
        )
        .bind(serde_json::to_string(ids)?)
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

    pub(super) async fn outbox_for_message_ids(
        conn: &mut SqliteConnection,
        ids: &[String],
    ) -> anyhow::Result<Option<(i64, Option<i64>, String)>> {
        if ids.is_empty() {
            return Ok(None);
        }
        let row = sqlx::query(
            r#"
        SELECT id, request_id, kind FROM outbox
        WHERE message_id IN (SELECT value FROM json_each(?1))
        ORDER BY id DESC
        LIMIT 1
        "#,
        )
        .bind(serde_json::to_string(ids)?)
        .fetch_optional(&mut *conn)
        .await
        .context("Cannot look up the outbox")?;
        row.map(|row| Ok((row.try_get("id")?, row.try_get("request_id")?, row.try_get("kind")?))).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_commit_sqlite_already_rolled_back_leaves_no_broken_connection_in_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_in(dir.path()).await.unwrap();
        for pool in [&store.pool, &store.writer] {
            for _ in 0..MAX_CONNECTIONS {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
                // SQLite ends the transaction itself, as it does when a COMMIT hits a full
                // disk; sqlx does not know, so its COMMIT and then its ROLLBACK fail.
                sqlx::query("ROLLBACK").execute(&mut *tx).await.unwrap();
                assert!(tx.commit().await.is_err());
            }
            for _ in 0..MAX_CONNECTIONS * 2 {
                let tx = pool.begin_with("BEGIN IMMEDIATE").await.expect("a usable connection");
                tx.rollback().await.unwrap();
            }
        }
    }
}
