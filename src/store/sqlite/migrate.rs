//! The SQLite schema: `migrations/sqlite`, applied by sqlx's migrator, one process at a time.
//!
//! sqlx is here only for its migrator (and `migrate!`, which needs its `macros` feature,
//! embeds the files in the binary); the queries run on rusqlite. The migrator works on one
//! sqlx connection of its own, on a runtime of its own, and nothing of it leaves this file:
//! a backend on sqlx itself (PostgreSQL, `migrations/postgres`) runs its own migrator on
//! its own pool, sharing nothing with this one.

use super::*;

/// Schema changes, applied in order by sqlx's migrator (which keeps `_sqlx_migrations`).
pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a process waits for another one to finish migrating the same database.
pub(super) const MIGRATION_WAIT: Duration = Duration::from_secs(120);

/// Applies the migrations with sqlx's migrator, on one connection of its own, on a runtime
/// of its own: the migrator's future cannot be sent between threads (so not awaited from
/// the `Store` trait), and a closed sqlx pool left a task spinning.
///
/// One process migrates at a time: sqlx takes no lock on SQLite, so `gatehouse run` and a
/// CLI command started together on a fresh database both applied the first migration and
/// one of them failed ("table meta already exists"). The others wait for the lock and then
/// find nothing left to do.
pub(super) fn migrate_file(path: &Path) -> anyhow::Result<usize> {
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
pub(super) fn migration_lock(path: &Path, wait: Duration) -> anyhow::Result<std::fs::File> {
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
