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
//!
//! The files: this one opens the database and holds its connections and the WAL
//! checkpointer; `migrate` applies `migrations/sqlite`; `sql` runs statements and maps
//! rows; `api` implements the `Store` and `Tx` traits by handing each method to its
//! aggregate's file (`requests`, `inbox`, `outbox`, `ledger`, `retention`) and sorting
//! failures into `StoreError` (`error`).

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
    Actor, AlertRow, AnsweredCounts, Candidate, DaemonStatus, EventKind, EventRow, LastOutgoing,
    MailboxState, MessageId, MessageOutcome, MessageRow, Metrics, NewOutgoing, NewRawMessage, NewRequest,
    OutboxCounts, OutboxId, OutboxItem, RawSaved, RequestFilter, RequestId, RequestRow, RequestText,
    RetryMessage, RetryRequest, SmtpOutcome, Store, ThreadDirection, Tx,
};
use crate::classify::Fingerprint;
use crate::clock::{from_millis, to_millis};
use crate::domain::{Classification, Decision, EmailAddress, Status};

mod api;
mod error;
mod inbox;
mod ledger;
mod migrate;
mod outbox;
mod papers;
mod requests;
mod retention;
mod sql;
#[cfg(test)]
mod tests;

use migrate::*;
use sql::*;

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
