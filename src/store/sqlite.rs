//! The SQLite backend: one file in the data directory, WAL so the CLI can read while the
//! daemon writes, foreign keys on, and write transactions taken with `BEGIN IMMEDIATE` so
//! two writers queue instead of failing half-way.
//!
//! Statements inside a write transaction run directly on the calling task, on the one
//! writing connection. Inside `BEGIN IMMEDIATE` nothing waits for a lock, so each statement
//! costs only SQLite's own few microseconds. Handing every statement to a database thread
//! and back (as sqlx does) cost more than the statements themselves: about 36 thread
//! switches per message when a backlog is taken in. Only what can wait for another process
//! (taking the write lock, reads and single writes outside a transaction) runs on a blocking
//! thread.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, Params, Row, params};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::retention::{BackupDone, Cutoffs, Erased, PersonData, PurgeCounts, Reclaimed};
use super::{
    AlertRow, AnsweredCounts, Candidate, DaemonStatus, EventRow, LastOutgoing, MailboxState, MessageOutcome,
    MessageRow, Metrics, NewOutgoing, NewRawMessage, NewRequest, OutboxCounts, OutboxItem, RawSaved,
    RequestFilter, RequestRow, RequestText, RetryMessage, RetryRequest, SmtpOutcome, Store, Tx,
};
use crate::classify::Fingerprint;
use crate::clock::{from_millis, to_millis};
use crate::domain::{Classification, Decision, EmailAddress, Status};

mod retention;

/// Schema changes, applied in order by sqlx's migrator (which keeps `_sqlx_migrations`).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Reading connections kept open between uses.
const MAX_IDLE_READERS: usize = 10;
/// How long a statement waits for another process (the CLI) to let go of the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Page cache of the writing connection: the indexes a backlog keeps touching stay in
/// memory (SQLite's default is 2 MiB).
const WRITER_CACHE_KIB: u32 = 16 * 1024;
/// How many earlier requests a new approach is compared with: the newest from the same
/// requester and organisation. Written into the candidate queries as a literal (a test
/// keeps them in step): SQLite plans a bound LIMIT by its value, so a statement with
/// `LIMIT ?` is prepared again every time it runs, which cost ~3 % of a backlog's CPU.
const DUPLICATE_CANDIDATES: i64 = 200;

/// The database file's name inside `data_dir`.
pub const FILE_NAME: &str = "gatehouse.db";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Connections for reads outside a transaction, used on blocking threads.
    readers: Arc<Readers>,
    /// The one connection every write goes through. SQLite lets one writer in at a time
    /// anyway, and a connection's page cache is thrown away whenever another connection has
    /// written: writing through one connection keeps it warm.
    writer: Arc<Mutex<Connection>>,
    /// Nudged after each commit; copies the WAL into the database on a thread of its own.
    checkpoints: Arc<Checkpointer>,
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
        let owned = path.to_path_buf();
        let (writer, checkpoints) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            // The first connection to a new file creates it and switches it to WAL, and
            // SQLite does not wait for the lock that takes: two processes opening a new
            // database at once (`gatehouse run` and a CLI command) got "database is
            // locked". So opening is serialised like migrating; later opens find WAL set.
            let _lock = migration_lock(&owned, MIGRATION_WAIT)?;
            let writer = open_connection(&owned, Some(WRITER_CACHE_KIB))
                .with_context(|| format!("Cannot open the database {}", owned.display()))?;
            Ok((writer, Checkpointer::start(&owned)?))
        })
        .await
        .context("The database thread failed")??;
        restrict_file(path);
        Ok(Self {
            readers: Arc::new(Readers { path: path.to_path_buf(), idle: std::sync::Mutex::new(Vec::new()) }),
            writer: Arc::new(Mutex::new(writer)),
            checkpoints: Arc::new(checkpoints),
            path: path.to_path_buf(),
        })
    }

    /// Runs `f` on a reading connection, on a blocking thread (a read may wait for the
    /// file, never for the write lock: WAL).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let result = f(&conn);
            readers.give_back(conn);
            result
        })
        .await
        .context("The database thread failed")?
    }

    /// Runs `f` on the writing connection outside any transaction (one statement commits
    /// by itself), on a blocking thread: it may wait for the CLI's write lock.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let conn = self.writer_lock().await?;
        let checkpoints = self.checkpoints.clone();
        tokio::task::spawn_blocking(move || {
            end_abandoned_transaction(&conn);
            let result = f(&conn);
            checkpoints.nudge();
            result
        })
        .await
        .context("The database thread failed")?
    }

    /// The writing connection, waited for as long as SQLite would wait for another process's
    /// lock: a task that asked for it while holding it would otherwise wait forever.
    async fn writer_lock(&self) -> anyhow::Result<OwnedMutexGuard<Connection>> {
        match tokio::time::timeout(BUSY_TIMEOUT, self.writer.clone().lock_owned()).await {
            Ok(conn) => Ok(conn),
            Err(_) => Err(anyhow::Error::new(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some("the database's writing connection stayed in use".into()),
            ))
            .context("Cannot start a transaction")),
        }
    }

    async fn requests(&self, sql: String, binds: [i64; 2]) -> anyhow::Result<Vec<RequestRow>> {
        self.read(move |c| all(c, &sql, binds, request_from_row, "Cannot list requests")).await
    }
}

/// How long a process waits for another one to finish migrating the same database.
const MIGRATION_WAIT: Duration = Duration::from_secs(120);

/// Applies the migrations with sqlx's migrator, on one connection of its own, on a runtime
/// of its own: the migrator's future cannot be sent between threads (so not awaited from
/// the `Store` trait), and a closed sqlx pool left a task spinning.
///
/// One process migrates at a time: sqlx takes no lock on SQLite, so `gatehouse run` and a
/// CLI command started together on a fresh database both applied the first migration and
/// one of them failed ("table meta already exists"). The others wait for the lock and then
/// find nothing left to do.
fn migrate_file(path: &Path) -> anyhow::Result<usize> {
    use sqlx::Connection as _;
    let _lock = migration_lock(path, MIGRATION_WAIT)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("Cannot start the migrations")?;
    runtime.block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let mut conn = sqlx::sqlite::SqliteConnection::connect_with(&options)
            .await
            .with_context(|| format!("Cannot open the database {}", path.display()))?;
        let count = "SELECT COUNT(*) FROM _sqlx_migrations WHERE success";
        let before: i64 = sqlx::query_scalar(count).fetch_one(&mut conn).await.unwrap_or(0);
        let result = MIGRATOR.run(&mut conn).await.context("Cannot apply the database migrations");
        let after: i64 = sqlx::query_scalar(count).fetch_one(&mut conn).await.unwrap_or(0);
        let _ = conn.close().await;
        result?;
        Ok(usize::try_from(after - before).unwrap_or(0))
    })
}

/// An exclusive lock on a file beside the database (`gatehouse.db.migrate-lock`), taken to
/// open and to migrate the database, held until the returned file is dropped. Waits up to `wait` for another process to let go. An
/// advisory lock (flock) rather than a transaction: the migrator commits one migration at a
/// time, and the lock must cover them all. The kernel lets go of it if the process dies.
fn migration_lock(path: &Path, wait: Duration) -> anyhow::Result<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".migrate-lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("Cannot open the migration lock {}", lock_path.display()))?;
    restrict_file(&lock_path);
    let deadline = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "Another gatehouse process has been migrating the database {} for over {} s (it holds {}). Fix: let it finish or stop it, then try again",
                path.display(),
                wait.as_secs(),
                lock_path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("Cannot lock {}", lock_path.display()));
            }
        }
    }
}

/// Copies committed pages from the WAL into the database file on a thread of its own, so a
/// commit never waits for that copy and its fsync (SQLite's automatic checkpoint runs in
/// the committing call, which for a backlog was the inbox's processing task). The thread
/// ends when the store is dropped; whatever it had not copied yet, SQLite copies when the
/// next connection opens.
#[derive(Debug)]
struct Checkpointer {
    nudges: std::sync::mpsc::SyncSender<()>,
}

/// How often the checkpointer looks even without a nudge (a CLI process's writes).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// The WAL file is cut back to this after a checkpoint emptied it: a backlog can grow it
/// to hundreds of megabytes.
const WAL_KEEP_BYTES: i64 = 64 * 1024 * 1024;

impl Checkpointer {
    fn start(path: &Path) -> anyhow::Result<Self> {
        let conn = open_connection(path, None)
            .with_context(|| format!("Cannot open the database {}", path.display()))?;
        conn.execute_batch(&format!("PRAGMA journal_size_limit = {WAL_KEEP_BYTES};"))?;
        let (nudges, nudged) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("gatehouse-checkpoint".into())
            .spawn(move || {
                use std::sync::mpsc::RecvTimeoutError;
                // Nudged or timed out: look; the store dropped (Disconnected): stop.
                while let Ok(()) | Err(RecvTimeoutError::Timeout) = nudged.recv_timeout(CHECKPOINT_EVERY) {
                    // PASSIVE: copies what no reader still needs, never waits for anyone.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::debug!("WAL checkpoint: {e}");
                    }
                }
            })
            .context("Cannot start the database's checkpoint thread")?;
        Ok(Self { nudges })
    }

    /// Asks for a checkpoint soon; never blocks (one waiting nudge is enough).
    fn nudge(&self) {
        let _ = self.nudges.try_send(());
    }
}

/// Opens one connection with the settings every connection needs.
fn open_connection(path: &Path, cache_kib: Option<u32>) -> anyhow::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        anyhow::bail!("SQLite would not use WAL (journal_mode is {mode})");
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    if let Some(kib) = cache_kib {
        // The writer: a bigger page cache. Its own automatic checkpoints stay on (1,000
        // pages) but find little left to do behind the `Checkpointer`. Turned off, they
        // left a full disk unable to take even the daemon's status: nothing reset the WAL.
        // Savepoints (one per message in a group) keep the pages they change in a statement
        // journal; on disk, writing it was ~7 % of a backlog's CPU. In memory it holds one
        // message's pages at a time, since it is emptied when the savepoint is released.
        conn.execute_batch(&format!("PRAGMA cache_size = -{kib}; PRAGMA temp_store = MEMORY;"))?;
    }
    Ok(conn)
}

/// A transaction left open (a failed COMMIT on a full disk, a panic half-way) would make
/// every later BEGIN fail, and messages would then be given up as unparseable although
/// nothing is wrong with them. Roll it back before the connection is used again.
fn end_abandoned_transaction(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::warn!("Cannot roll back an abandoned transaction: {e}");
    }
}

/// Idle reading connections, opened when first needed.
#[derive(Debug)]
struct Readers {
    path: PathBuf,
    idle: std::sync::Mutex<Vec<Connection>>,
}

impl Readers {
    fn take(&self) -> anyhow::Result<Connection> {
        let kept = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match kept {
            Some(conn) => Ok(conn),
            None => open_connection(&self.path, None)
                .with_context(|| format!("Cannot open the database {}", self.path.display())),
        }
    }

    fn give_back(&self, conn: Connection) {
        if !conn.is_autocommit() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE_READERS
        {
            idle.push(conn);
        }
    }
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

/// Runs one statement (cached), returning how many rows it changed.
/// One line of a request's event log (`at` in milliseconds): the one way every writer adds it.
fn insert_event(
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

fn exec(conn: &Connection, sql: &str, params: impl Params, what: &'static str) -> anyhow::Result<usize> {
    conn.prepare_cached(sql).and_then(|mut s| s.execute(params)).context(what)
}

/// The first row of a query, if any.
fn one<T>(
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
fn all<T>(
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
fn scalar<T: rusqlite::types::FromSql>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    what: &'static str,
) -> anyhow::Result<T> {
    conn.prepare_cached(sql).and_then(|mut s| s.query_row(params, |r| r.get(0))).context(what)
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
    r.token, r.answer, r.requester_unverified
"#;

fn request_from_row(row: &Row<'_>) -> anyhow::Result<RequestRow> {
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

const MESSAGE_COLUMNS: &str = r#"
    m.id, m.message_id, m.received_at, m.from_address, m.subject, m.classification, m.detail,
    m.attempts, (SELECT r.reference FROM requests r WHERE r.id = m.request_id) AS reference
"#;

fn message_from_row(row: &Row<'_>) -> anyhow::Result<MessageRow> {
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

fn event_from_row(row: &Row<'_>) -> anyhow::Result<EventRow> {
    Ok(EventRow {
        at: from_millis(row.get("at")?),
        actor: row.get("actor")?,
        kind: row.get("kind")?,
        detail: row.get("detail")?,
    })
}

fn u32_col(row: &Row<'_>, name: &str) -> anyhow::Result<u32> {
    let v: i64 = row.get(name)?;
    u32::try_from(v).with_context(|| format!("{name} out of range: {v}"))
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> anyhow::Result<usize> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || migrate_file(&path))
            .await
            .context("The database thread failed")?
    }

    async fn ping(&self) -> anyhow::Result<()> {
        self.read(|c| scalar::<i64>(c, "SELECT 1", [], "The database does not answer").map(drop)).await
    }

    fn describe(&self) -> String {
        format!("SQLite {}", self.path.display())
    }

    async fn list_requests(&self, filter: &RequestFilter) -> anyhow::Result<Vec<RequestRow>> {
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

    async fn find_request(&self, reference: &str) -> anyhow::Result<Option<RequestRow>> {
        let reference = reference.to_string();
        self.read(move |c| reads::find_request(c, &reference)).await
    }

    async fn request_messages(&self, request_id: i64) -> anyhow::Result<Vec<MessageRow>> {
        self.read(move |c| {
            let sql =
                format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.request_id = ?1 ORDER BY m.id");
            all(c, &sql, [request_id], message_from_row, "Cannot read the request's messages")
        })
        .await
    }

    async fn request_events(&self, request_id: i64) -> anyhow::Result<Vec<EventRow>> {
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

    async fn last_outgoing(&self, request_id: i64, kind: &str) -> anyhow::Result<Option<LastOutgoing>> {
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

    async fn list_messages(&self) -> anyhow::Result<Vec<MessageRow>> {
        self.read(|c| {
            let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages m ORDER BY m.id");
            all(c, &sql, [], message_from_row, "Cannot list messages")
        })
        .await
    }

    async fn auto_replies_by_wording(
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

    async fn get_meta(&self, key: &str) -> anyhow::Result<Option<String>> {
        let key = key.to_string();
        self.read(move |c| {
            one(c, "SELECT value FROM meta WHERE key = ?1", [&key], |r| Ok(r.get(0)?), "Cannot read meta")
        })
        .await
    }

    async fn init_meta(&self, key: &str, value: &str) -> anyhow::Result<String> {
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

    async fn mailbox_state(&self, mailbox: &str) -> anyhow::Result<Option<MailboxState>> {
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

    async fn reset_mailbox_state(&self, mailbox: &str, state: MailboxState) -> anyhow::Result<()> {
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
                params![
                    mailbox,
                    state.uidvalidity,
                    state.last_uid,
                    state.backlog_below_uid,
                    to_millis(Utc::now())
                ],
                "Cannot write the mailbox state",
            )
            .map(drop)
        })
        .await
    }

    async fn raw_message(&self, id: i64) -> anyhow::Result<Vec<u8>> {
        self.read(move |c| {
            scalar(c, "SELECT raw FROM raw_messages WHERE id = ?1", [id], "Cannot read the raw message")
        })
        .await
    }

    async fn count_attempt(&self, id: i64) -> anyhow::Result<u32> {
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

    async fn attempts(&self, id: i64) -> anyhow::Result<u32> {
        self.read(move |c| {
            let n: i64 =
                scalar(c, "SELECT attempts FROM messages WHERE id = ?1", [id], "Cannot read the message")?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
        .await
    }

    async fn request_retry(&self, id: i64, at: DateTime<Utc>) -> anyhow::Result<RetryRequest> {
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

    async fn retries_requested(&self) -> anyhow::Result<Vec<RetryMessage>> {
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

    async fn awaiting_triage(&self) -> anyhow::Result<Vec<RequestRow>> {
        self.read(|c| {
            let sql = format!(
                "SELECT {REQUEST_COLUMNS} FROM requests r WHERE r.status = 'awaiting_triage' ORDER BY r.received_at, r.id"
            );
            all(c, &sql, [], request_from_row, "Cannot list requests awaiting triage")
        })
        .await
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
        self.requests(sql, [to_millis(from), to_millis(to)]).await
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
        self.requests(sql, [to_millis(from), to_millis(to)]).await
    }

    async fn with_status(&self, status: Status, limit: i64) -> anyhow::Result<(Vec<RequestRow>, usize)> {
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

    async fn agenda_for(&self, date: NaiveDate) -> anyhow::Result<Vec<RequestRow>> {
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

    async fn arrivals_since(&self, since: DateTime<Utc>) -> anyhow::Result<Vec<DateTime<Utc>>> {
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

    async fn events_of_kind(&self, request_ids: &[i64], kind: &str) -> anyhow::Result<Vec<(i64, EventRow)>> {
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

    async fn last_covered(&self, kind: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
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

    async fn summary_sent(&self, kind: &str, period: &str) -> anyhow::Result<bool> {
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

    async fn agenda_told(&self, date: NaiveDate) -> anyhow::Result<Option<Vec<RequestRow>>> {
        let date = date.format("%Y-%m-%d").to_string();
        self.read(move |c| {
            if !reads::agenda_sent(c, &date)? {
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

    async fn set_daemon_status(
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

    async fn daemon_status(&self) -> anyhow::Result<Option<DaemonStatus>> {
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

    async fn set_smtp_status(&self, outcome: SmtpOutcome<'_>, at: DateTime<Utc>) -> anyhow::Result<()> {
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

    async fn outbox_failing(&self, failing_after: i64) -> anyhow::Result<i64> {
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

    async fn metrics(&self, failing_after: i64) -> anyhow::Result<Metrics> {
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

    async fn open_alerts(&self) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
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

    async fn outbox_counts(&self) -> anyhow::Result<OutboxCounts> {
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

    async fn last_summary(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
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

    async fn requeue_interrupted(&self) -> anyhow::Result<u64> {
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

    async fn claim_due(&self, now: DateTime<Utc>, limit: i64) -> anyhow::Result<Vec<OutboxItem>> {
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

    async fn mark_in_flight(&self, id: i64) -> anyhow::Result<()> {
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

    async fn mark_sent(&self, id: i64, at: DateTime<Utc>) -> anyhow::Result<()> {
        self.write(move |c| {
            exec(
                c,
                "UPDATE outbox SET status = 'sent', sent_at = ?2, last_error = NULL WHERE id = ?1",
                [id, to_millis(at)],
                "Cannot record a sent email",
            )
            .map(drop)
        })
        .await
    }

    async fn mark_retry(&self, id: i64, next_attempt_at: DateTime<Utc>, error: &str) -> anyhow::Result<()> {
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

    async fn mark_failed(&self, id: i64, error: &str) -> anyhow::Result<()> {
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

    async fn purge_preview(&self, cutoffs: Cutoffs) -> anyhow::Result<PurgeCounts> {
        self.read(move |c| retention::preview(c, &cutoffs)).await
    }

    async fn purge(&self, cutoffs: Cutoffs, actor: &str, at: DateTime<Utc>) -> anyhow::Result<PurgeCounts> {
        let actor = actor.to_string();
        self.write(move |c| retention::purge(c, &cutoffs, &actor, at)).await
    }

    async fn reclaim_space(&self) -> anyhow::Result<Reclaimed> {
        let path = self.path.clone();
        self.write(move |c| retention::reclaim(c, &path)).await
    }

    async fn person_data(&self, person: &EmailAddress) -> anyhow::Result<PersonData> {
        let person = person.clone();
        self.read(move |c| retention::person_data(c, &person)).await
    }

    async fn erase_request(
        &self,
        reference: &str,
        actor: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<Option<Erased>> {
        let (reference, actor) = (reference.to_string(), actor.to_string());
        self.write(move |c| retention::erase(c, &reference, &actor, at)).await
    }

    async fn add_service_event(
        &self,
        at: DateTime<Utc>,
        actor: &str,
        kind: &str,
        detail: &str,
    ) -> anyhow::Result<()> {
        let (actor, kind, detail) = (actor.to_string(), kind.to_string(), detail.to_string());
        self.write(move |c| retention::insert_service_event(c, to_millis(at), &actor, &kind, &detail)).await
    }

    async fn service_events(&self) -> anyhow::Result<Vec<EventRow>> {
        self.read(retention::service_events).await
    }

    async fn backup_to(&self, dest: &Path) -> anyhow::Result<BackupDone> {
        let dest = dest.to_path_buf();
        self.read(move |c| retention::backup(c, &dest)).await
    }

    async fn begin(&self) -> anyhow::Result<Box<dyn Tx>> {
        let conn = self.writer_lock().await?;
        // Taking the write lock may wait (busy_timeout) for the CLI: on a blocking thread.
        let conn = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            end_abandoned_transaction(&conn);
            conn.execute_batch("BEGIN IMMEDIATE").context("Cannot start a transaction")?;
            Ok(conn)
        })
        .await
        .context("The database thread failed")??;
        Ok(Box::new(SqliteTx { conn, open: true, checkpoints: self.checkpoints.clone() }))
    }
}

/// A write transaction on the writing connection, which it holds until it ends. Dropped
/// without `commit`, it rolls back.
struct SqliteTx {
    conn: OwnedMutexGuard<Connection>,
    open: bool,
    checkpoints: Arc<Checkpointer>,
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if self.open {
            end_abandoned_transaction(&self.conn);
        }
    }
}

#[async_trait]
impl Tx for SqliteTx {
    async fn next_reference_seq(&mut self, year: i32) -> anyhow::Result<i64> {
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

    async fn insert_request(&mut self, r: &NewRequest) -> anyhow::Result<i64> {
        let now = to_millis(Utc::now());
        let id: i64 = scalar(
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
            params![id, r.fingerprint],
            "Cannot store the request's fingerprint",
        )?;
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
        insert_event(&self.conn, request_id, to_millis(at), actor, kind, detail)
    }

    async fn add_thread_id(
        &mut self,
        message_id: &str,
        request_id: i64,
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

    async fn finish_message(&mut self, id: i64, o: &MessageOutcome, at: DateTime<Utc>) -> anyhow::Result<()> {
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

    async fn set_checkpoint(
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

    async fn enqueue(&mut self, mail: &NewOutgoing, at: DateTime<Utc>) -> anyhow::Result<i64> {
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

    async fn record_answered(
        &mut self,
        outbox_id: i64,
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

    async fn answered_counts(
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

    async fn has_outgoing(&mut self, request_id: i64, kind: &str) -> anyhow::Result<bool> {
        let n: i64 = scalar(
            &self.conn,
            "SELECT COUNT(*) FROM outbox WHERE request_id = ?1 AND kind = ?2",
            params![request_id, kind],
            "Cannot read the outbox",
        )?;
        Ok(n > 0)
    }

    async fn mark_bounced(&mut self, outbox_id: i64, detail: &str) -> anyhow::Result<()> {
        exec(
            &self.conn,
            "UPDATE outbox SET status = 'bounced', last_error = ?2 WHERE id = ?1",
            params![outbox_id, detail],
            "Cannot record a bounce",
        )
        .map(drop)
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

    async fn alert(&mut self, key: &str) -> anyhow::Result<Option<AlertRow>> {
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

    async fn put_alert(&mut self, a: &AlertRow) -> anyhow::Result<()> {
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

    async fn alerts_sent_since(&mut self, prefix: &str, since: DateTime<Utc>) -> anyhow::Result<i64> {
        // substr, not LIKE: a prefix is matched literally, `_` and `%` included.
        scalar(
            &self.conn,
            "SELECT COUNT(*) FROM alerts WHERE substr(key, 1, length(?1)) = ?1 AND last_sent >= ?2",
            params![prefix, to_millis(since)],
            "Cannot count the alerts sent",
        )
    }

    async fn set_meta(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        exec(
            &self.conn,
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
            [key, value],
            "Cannot write meta",
        )
        .map(drop)
    }

    async fn add_priority(&mut self, request_id: i64, key: &str) -> anyhow::Result<()> {
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

    async fn set_status(&mut self, request_id: i64, status: Status, at: DateTime<Utc>) -> anyhow::Result<()> {
        exec(
            &self.conn,
            "UPDATE requests SET status = ?2, updated_at = ?3 WHERE id = ?1",
            params![request_id, status.as_str(), to_millis(at)],
            "Cannot change the status",
        )
        .map(drop)
    }

    async fn record_summary(
        &mut self,
        kind: &str,
        period: &str,
        covers: (DateTime<Utc>, DateTime<Utc>),
        outbox_id: Option<i64>,
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

    async fn agenda_told_ids(&mut self, date: NaiveDate) -> anyhow::Result<Option<Vec<i64>>> {
        let date = date.format("%Y-%m-%d").to_string();
        if !reads::agenda_sent(&self.conn, &date)? {
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

    async fn record_agenda_told(
        &mut self,
        date: NaiveDate,
        on: &[i64],
        off: &[i64],
        outbox_id: Option<i64>,
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

    async fn find_request(&mut self, reference: &str) -> anyhow::Result<Option<RequestRow>> {
        reads::find_request(&self.conn, reference)
    }

    async fn save_raw(&mut self, m: &NewRawMessage<'_>) -> anyhow::Result<RawSaved> {
        reads::save_raw(&self.conn, m)
    }

    async fn request_for_thread(&mut self, ids: &[String]) -> anyhow::Result<Option<RequestRow>> {
        reads::request_for_thread(&self.conn, ids)
    }

    async fn request_by_token(&mut self, token: &str) -> anyhow::Result<Option<RequestRow>> {
        reads::request_by_token(&self.conn, token)
    }

    async fn request_for_notification(&mut self, ids: &[String]) -> anyhow::Result<Option<RequestRow>> {
        reads::request_for_notification(&self.conn, ids)
    }

    async fn recent_requests(
        &mut self,
        requester: &str,
        organisation: Option<&str>,
        since: DateTime<Utc>,
    ) -> anyhow::Result<Vec<(i64, String)>> {
        reads::recent_requests(&self.conn, requester, organisation, since)
    }

    async fn request_texts(&mut self, tokens: &[String]) -> anyhow::Result<Vec<RequestText>> {
        reads::request_texts(&self.conn, tokens)
    }

    async fn candidates(&mut self, ids: &[i64]) -> anyhow::Result<Vec<Candidate>> {
        reads::candidates(&self.conn, ids)
    }

    async fn outbox_for_message_ids(
        &mut self,
        ids: &[String],
    ) -> anyhow::Result<Option<(i64, Option<i64>, String)>> {
        reads::outbox_for_message_ids(&self.conn, ids)
    }

    async fn savepoint(&mut self) -> anyhow::Result<()> {
        exec(&self.conn, "SAVEPOINT gatehouse_step", [], "Cannot start a savepoint").map(drop)
    }

    async fn release_savepoint(&mut self) -> anyhow::Result<()> {
        exec(&self.conn, "RELEASE gatehouse_step", [], "Cannot release a savepoint").map(drop)
    }

    async fn rollback_to_savepoint(&mut self) -> anyhow::Result<()> {
        exec(&self.conn, "ROLLBACK TO gatehouse_step", [], "Cannot roll back a step")?;
        exec(&self.conn, "RELEASE gatehouse_step", [], "Cannot release a savepoint").map(drop)
    }

    async fn commit(mut self: Box<Self>) -> anyhow::Result<()> {
        self.open = false;
        let result = self.conn.execute_batch("COMMIT").context("Cannot commit");
        if result.is_err() {
            // SQLite may or may not have rolled back by itself (a full disk does).
            end_abandoned_transaction(&self.conn);
        }
        self.checkpoints.nudge();
        result
    }
}

/// Reads and the raw-message write that both the pool (`Store`) and a transaction (`Tx`)
/// offer: inside a transaction they see its own uncommitted writes, which the inbox needs
/// when several messages are processed in one transaction (a follow-up to a request created
/// a moment earlier).
mod reads {
    use super::*;

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

    pub(super) fn find_request(conn: &Connection, reference: &str) -> anyhow::Result<Option<RequestRow>> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM requests r WHERE r.reference = ?1");
        one(conn, &sql, [reference.trim().to_ascii_uppercase()], request_from_row, "Cannot read the request")
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
    fn insert_raw(conn: &Connection, m: &NewRawMessage<'_>, key: &str) -> anyhow::Result<Option<i64>> {
        let inserted: Option<i64> = one(
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

    pub(super) fn request_for_thread(
        conn: &Connection,
        ids: &[String],
    ) -> anyhow::Result<Option<RequestRow>> {
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
    ) -> anyhow::Result<Vec<(i64, String)>> {
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

    pub(super) fn candidates(conn: &Connection, ids: &[i64]) -> anyhow::Result<Vec<Candidate>> {
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

    pub(super) fn outbox_for_message_ids(
        conn: &Connection,
        ids: &[String],
    ) -> anyhow::Result<Option<(i64, Option<i64>, String)>> {
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
}

/// Two lists ordered by id, newest first, merged into one without repeats, at most
/// `limit` long.
fn newest_first(a: Vec<(i64, String)>, b: Vec<(i64, String)>, limit: usize) -> Vec<(i64, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_lists_merge_newest_first_without_repeats() {
        let list = |ids: &[i64]| ids.iter().map(|i| (*i, format!("t{i}"))).collect::<Vec<_>>();
        let merged = newest_first(list(&[9, 7, 4, 2]), list(&[8, 7, 3]), 10);
        assert_eq!(merged.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [9, 8, 7, 4, 3, 2]);
        let capped = newest_first(list(&[9, 7, 4, 2]), list(&[8, 7, 3]), 3);
        assert_eq!(capped.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [9, 8, 7]);
        assert!(newest_first(Vec::new(), Vec::new(), 5).is_empty());
        assert_eq!(newest_first(list(&[5]), Vec::new(), 5), list(&[5]));
    }

    #[tokio::test]
    async fn candidate_queries_take_the_limit_and_are_not_prepared_again_each_time() {
        let (_dir, store) = store().await;
        let conn = store.writer.lock().await;
        for sql in [reads::RECENT_BY_REQUESTER, reads::RECENT_BY_ORGANISATION] {
            assert!(sql.contains(&format!("LIMIT {DUPLICATE_CANDIDATES}\n")), "{sql}");
            for since in 0..3 {
                let mut stmt = conn.prepare_cached(sql).unwrap();
                let mut rows = stmt.query(params!["a@b.test", since]).unwrap();
                assert!(rows.next().unwrap().is_none());
                drop(rows);
                assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "{sql}");
            }
        }
    }

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_in(dir.path()).await.unwrap();
        store.migrate().await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_commit_sqlite_already_rolled_back_fails_and_leaves_the_writer_usable() {
        let (_dir, store) = store().await;
        let conn = store.writer.clone().lock_owned().await;
        conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO meta (key, value) VALUES ('lost', 'yes');").unwrap();
        let tx = Box::new(SqliteTx { conn, open: true, checkpoints: store.checkpoints.clone() });
        // SQLite ends the transaction itself, as it does when a COMMIT hits a full disk.
        tx.conn.execute_batch("ROLLBACK").unwrap();
        assert!(tx.commit().await.is_err());
        assert_eq!(store.get_meta("lost").await.unwrap(), None);

        // Dropped half-way: rolled back, and the next transaction starts cleanly.
        let mut tx = store.begin().await.expect("a usable writer");
        tx.set_meta("k", "v").await.unwrap();
        drop(tx);
        assert_eq!(store.get_meta("k").await.unwrap(), None);
        let mut tx = store.begin().await.unwrap();
        tx.set_meta("k", "v").await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(store.get_meta("k").await.unwrap().as_deref(), Some("v"));
    }

    #[tokio::test]
    async fn a_connection_left_in_a_transaction_is_rolled_back_before_the_next_begin() {
        let (_dir, store) = store().await;
        {
            let conn = store.writer.lock().await;
            conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO meta (key, value) VALUES ('half', 'done');")
                .unwrap();
        }
        let mut tx = store.begin().await.expect("a usable writer");
        tx.set_meta("after", "yes").await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(store.get_meta("half").await.unwrap(), None);
        assert_eq!(store.get_meta("after").await.unwrap().as_deref(), Some("yes"));
    }

    #[tokio::test]
    async fn attempts_are_counted_when_stored_and_before_each_retry_and_survive_a_reopen() {
        let (dir, store) = store().await;
        let raw = NewRawMessage {
            mailbox: "INBOX",
            uidvalidity: 7,
            uid: 3,
            dedup_key: "mid:poison@x".into(),
            message_id: Some("poison@x"),
            content_hash: "h",
            core_hash: "c",
            raw: b"poison",
            backlog: false,
            fetched_at: Utc::now(),
        };
        let attempts = |store: &SqliteStore, id: i64| {
            let store = store.clone();
            async move { store.list_messages().await.unwrap().into_iter().find(|m| m.id == id).unwrap().attempts }
        };
        // Stored for the first time: the attempt about to be made is counted in the same commit.
        let mut tx = store.begin().await.unwrap();
        let RawSaved::New(id) = tx.save_raw(&raw).await.unwrap() else { panic!() };
        tx.commit().await.unwrap();
        assert_eq!(attempts(&store, id).await, 1);
        // Seen again unprocessed (after a crash): storing counts nothing; each attempt does.
        let mut tx = store.begin().await.unwrap();
        assert_eq!(tx.save_raw(&raw).await.unwrap(), RawSaved::Known { id, processed: false });
        tx.commit().await.unwrap();
        assert_eq!(attempts(&store, id).await, 1);
        assert_eq!(store.count_attempt(id).await.unwrap(), 2);
        assert_eq!(store.count_attempt(id).await.unwrap(), 3);
        assert_eq!(store.attempts(id).await.unwrap(), 3);
        assert!(store.count_attempt(id + 100).await.is_err(), "no such message");
        // Committed counts survive the process: a new store on the same file sees them.
        drop(store);
        let store = SqliteStore::open_in(dir.path()).await.unwrap();
        assert_eq!(store.count_attempt(id).await.unwrap(), 4);

        // Only a quarantined message can be retried.
        assert_eq!(store.request_retry(id, Utc::now()).await.unwrap(), RetryRequest::NotQuarantined(None));
        assert_eq!(store.request_retry(id + 100, Utc::now()).await.unwrap(), RetryRequest::Missing);
        let outcome = |classification| MessageOutcome {
            classification,
            received_at: None,
            from_address: Some("jo@icb.test".into()),
            from_name: None,
            subject: Some("Poison".into()),
            attachments: None,
            detail: Some("processing failed 3 times".into()),
            request_id: None,
        };
        let mut tx = store.begin().await.unwrap();
        tx.finish_message(id, &outcome(Classification::Quarantined), Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
        assert!(store.retries_requested().await.unwrap().is_empty());
        let mut tx = store.begin().await.unwrap();
        assert_eq!(tx.save_raw(&raw).await.unwrap(), RawSaved::Known { id, processed: true });
        drop(tx);
        // Retried: attempts start again, it is unprocessed and listed for the daemon…
        assert_eq!(store.request_retry(id, Utc::now()).await.unwrap(), RetryRequest::Requested);
        let row = store.list_messages().await.unwrap().into_iter().find(|m| m.id == id).unwrap();
        assert_eq!((row.classification, row.attempts), (None, 0));
        let wanted = store.retries_requested().await.unwrap();
        assert_eq!(wanted.iter().map(|r| (r.id, r.uid, r.backlog)).collect::<Vec<_>>(), [(id, 3, false)]);
        // …until it is processed, which ends the request in the same write.
        let mut tx = store.begin().await.unwrap();
        tx.finish_message(id, &outcome(Classification::Automated), Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
        assert!(store.retries_requested().await.unwrap().is_empty());
        assert_eq!(
            store.request_retry(id, Utc::now()).await.unwrap(),
            RetryRequest::NotQuarantined(Some(Classification::Automated))
        );
    }

    #[tokio::test]
    async fn migrations_wait_for_each_other_and_a_stuck_one_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        // Many migrating at once on a fresh file: one applies everything, the others nothing.
        let runs: Vec<_> = (0..6)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || migrate_file(&path))
            })
            .collect();
        let applied: Vec<usize> = runs.into_iter().map(|r| r.join().unwrap().unwrap()).collect();
        assert_eq!(applied.iter().filter(|n| **n > 0).count(), 1, "{applied:?}");
        // A process holding the lock for too long: the next one says what to do.
        let held = migration_lock(&path, Duration::from_secs(1)).unwrap();
        let e = migration_lock(&path, Duration::from_millis(200)).unwrap_err();
        assert!(format!("{e:#}").contains("Another gatehouse process"), "{e:#}");
        drop(held);
        assert!(migration_lock(&path, Duration::from_millis(200)).is_ok());
    }

    #[tokio::test]
    async fn a_message_id_used_again_by_a_different_message_logs_that_message_too() {
        let (_dir, store) = store().await;
        let message = |uid: u32, content: &'static str, core: &'static str| NewRawMessage {
            mailbox: "INBOX",
            uidvalidity: 7,
            uid,
            dedup_key: "mid:scan@mfp".into(),
            message_id: Some("scan@mfp"),
            content_hash: content,
            core_hash: core,
            raw: b"x",
            backlog: false,
            fetched_at: Utc::now(),
        };
        let mut tx = store.begin().await.unwrap();
        let RawSaved::New(first) = tx.save_raw(&message(1, "h1", "c1")).await.unwrap() else { panic!() };
        // Delivered twice (other Received headers, the same author's content): the same.
        let same = tx.save_raw(&message(2, "h1b", "c1")).await.unwrap();
        assert_eq!(same, RawSaved::Known { id: first, processed: false });
        // Another scan, sent with the same fixed Message-ID: a message of its own.
        let RawSaved::New(second) = tx.save_raw(&message(3, "h2", "c2")).await.unwrap() else {
            panic!("a different message under a used Message-ID was dropped")
        };
        assert_ne!(second, first);
        // Both are recognised when the mailbox is read again, by bytes or by content.
        assert_eq!(
            tx.save_raw(&message(1, "h1", "c1")).await.unwrap(),
            RawSaved::Known { id: first, processed: false }
        );
        assert_eq!(
            tx.save_raw(&message(3, "h2", "c2")).await.unwrap(),
            RawSaved::Known { id: second, processed: false }
        );
        assert_eq!(
            tx.save_raw(&message(3, "h2x", "c2")).await.unwrap(),
            RawSaved::Known { id: second, processed: false }
        );
        // A third one is a third message.
        assert!(
            matches!(tx.save_raw(&message(4, "h3", "c3")).await.unwrap(), RawSaved::New(id) if id != first && id != second)
        );
        // Without a Message-ID the key is the bytes' hash: the same key is the same message.
        let mut anonymous = message(5, "h4", "c4");
        anonymous.message_id = None;
        anonymous.dedup_key = "sha256:h4".into();
        let RawSaved::New(id) = tx.save_raw(&anonymous).await.unwrap() else { panic!() };
        assert_eq!(tx.save_raw(&anonymous).await.unwrap(), RawSaved::Known { id, processed: false });
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn raw_bytes_are_kept_apart_from_the_message_row_and_read_back_exactly() {
        let (_dir, store) = store().await;
        let raw = b"From: a@b.test\r\nSubject: x\r\n\r\n\xff\x00body".to_vec();
        let message = NewRawMessage {
            mailbox: "INBOX",
            uidvalidity: 7,
            uid: 1,
            dedup_key: "mid:x@y".into(),
            message_id: Some("x@y"),
            content_hash: "h",
            core_hash: "c",
            raw: &raw,
            backlog: false,
            fetched_at: Utc::now(),
        };
        let mut tx = store.begin().await.unwrap();
        let saved = tx.save_raw(&message).await.unwrap();
        let again = tx.save_raw(&message).await.unwrap();
        tx.commit().await.unwrap();
        let RawSaved::New(id) = saved else { panic!("first save is new: {saved:?}") };
        assert_eq!(again, RawSaved::Known { id, processed: false });
        assert_eq!(store.raw_message(id).await.unwrap(), raw);
    }
}
