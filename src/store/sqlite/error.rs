//! SQLite's and sqlx's errors sorted into the store's own [`StoreError`]: the one place
//! that knows the drivers' error codes.

use crate::store::StoreError;

/// Sorts a failure met on SQLite (its chain holds the rusqlite or sqlx error, if any) into
/// what the caller can act on.
pub(super) fn classify(e: anyhow::Error) -> StoreError {
    let mut verdict = None;
    for cause in e.chain() {
        if let Some(err) = cause.downcast_ref::<rusqlite::Error>() {
            verdict = Some(sqlite_kind(err));
            break;
        }
        if let Some(err) = cause.downcast_ref::<sqlx::Error>() {
            verdict = Some(sqlx_kind(err));
            break;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            verdict = Some(if io.kind() == std::io::ErrorKind::StorageFull {
                Kind::DiskFull
            } else {
                Kind::Unavailable
            });
            break;
        }
    }
    match verdict.unwrap_or(Kind::Failed) {
        Kind::DiskFull => StoreError::Unavailable { disk_full: true, cause: e },
        Kind::Unavailable => StoreError::Unavailable { disk_full: false, cause: e },
        Kind::Conflict => StoreError::Conflict(e),
        Kind::NotFound => StoreError::NotFound(e),
        Kind::Failed => StoreError::Failed(e),
    }
}

enum Kind {
    DiskFull,
    Unavailable,
    Conflict,
    NotFound,
    Failed,
}

fn sqlite_kind(e: &rusqlite::Error) -> Kind {
    use rusqlite::ErrorCode as C;
    match e {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            C::DiskFull => Kind::DiskFull,
            C::DatabaseBusy
            | C::DatabaseLocked
            | C::OutOfMemory
            | C::ReadOnly
            | C::SystemIoFailure
            | C::DatabaseCorrupt
            | C::CannotOpen
            | C::FileLockingProtocolFailed => Kind::Unavailable,
            C::ConstraintViolation => Kind::Conflict,
            _ => Kind::Failed,
        },
        rusqlite::Error::QueryReturnedNoRows => Kind::NotFound,
        _ => Kind::Failed,
    }
}

/// sqlx runs the migrations.
fn sqlx_kind(e: &sqlx::Error) -> Kind {
    match e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => Kind::DiskFull,
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        // A connection left in a transaction by a failed COMMIT: not the message's fault.
        | sqlx::Error::InvalidSavePointStatement => Kind::Unavailable,
        sqlx::Error::RowNotFound => Kind::NotFound,
        sqlx::Error::Database(db) => {
            // SQLITE_FULL (13, and its extended codes); SQLITE_BUSY (5), SQLITE_LOCKED (6),
            // SQLITE_IOERR (10), SQLITE_CANTOPEN (14) and their extended codes.
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff);
            match code {
                Some(13) => Kind::DiskFull,
                Some(5 | 6 | 10 | 14) => Kind::Unavailable,
                Some(19) => Kind::Conflict,
                _ => Kind::Failed,
            }
        }
        _ => Kind::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_failures_are_sorted_by_what_the_caller_can_do() {
        let failure = |code, text: Option<&str>| {
            anyhow::Error::new(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                text.map(Into::into),
            ))
        };
        let full = classify(
            failure(rusqlite::ffi::SQLITE_FULL, Some("database or disk is full")).context("Cannot commit"),
        );
        assert!(full.is_unavailable() && full.is_disk_full(), "{full:?}");
        assert!(full.to_string().starts_with("Cannot commit: database or disk is full"), "{full}");
        let busy = classify(failure(rusqlite::ffi::SQLITE_BUSY, None));
        assert!(busy.is_unavailable() && !busy.is_disk_full());
        assert!(matches!(classify(failure(rusqlite::ffi::SQLITE_CONSTRAINT, None)), StoreError::Conflict(_)));
        assert!(matches!(
            classify(anyhow::Error::new(rusqlite::Error::QueryReturnedNoRows)),
            StoreError::NotFound(_)
        ));
        assert!(matches!(classify(anyhow::anyhow!("Bad row")), StoreError::Failed(_)));
    }

    #[test]
    fn a_connection_stuck_in_a_transaction_is_unavailable_not_the_messages_fault() {
        let stuck =
            anyhow::Error::new(sqlx::Error::InvalidSavePointStatement).context("Cannot start a transaction");
        assert!(classify(stuck).is_unavailable());
        let enospc = anyhow::Error::new(std::io::Error::from_raw_os_error(28)).context("Cannot write");
        assert!(classify(enospc).is_disk_full());
    }
}
