//! PostgreSQL's errors sorted into the store's own [`StoreError`]: the one place that knows
//! its SQLSTATE codes.

use crate::store::StoreError;

/// Sorts a failure met on PostgreSQL (its chain holds the sqlx error, if any) into what the
/// caller can act on.
pub(super) fn classify(e: anyhow::Error) -> StoreError {
    let kind = e
        .chain()
        .find_map(|cause| {
            if let Some(err) = cause.downcast_ref::<sqlx::Error>() {
                return Some(sqlx_kind(err));
            }
            cause.downcast_ref::<std::io::Error>().map(io_kind)
        })
        .unwrap_or(Kind::Failed);
    match kind {
        Kind::DiskFull => StoreError::Unavailable { disk_full: true, cause: e },
        Kind::Unavailable => StoreError::Unavailable { disk_full: false, cause: e },
        Kind::Conflict => StoreError::Conflict(e),
        Kind::NotFound => StoreError::NotFound(e),
        Kind::Failed => StoreError::Failed(e),
    }
}

/// `Result::map_err(classify)` for the trait impls.
pub(super) fn sorted<T>(result: anyhow::Result<T>) -> crate::store::StoreResult<T> {
    result.map_err(classify)
}

#[derive(Debug, PartialEq)]
enum Kind {
    DiskFull,
    Unavailable,
    Conflict,
    NotFound,
    Failed,
}

fn io_kind(io: &std::io::Error) -> Kind {
    if io.kind() == std::io::ErrorKind::StorageFull { Kind::DiskFull } else { Kind::Unavailable }
}

fn sqlx_kind(e: &sqlx::Error) -> Kind {
    match e {
        sqlx::Error::Io(io) => io_kind(io),
        sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::InvalidSavePointStatement => Kind::Unavailable,
        sqlx::Error::RowNotFound => Kind::NotFound,
        sqlx::Error::Database(db) => db.code().map_or(Kind::Failed, |code| sqlstate_kind(&code)),
        _ => Kind::Failed,
    }
}

/// By SQLSTATE (PostgreSQL's appendix A): its class, then the few codes that matter.
fn sqlstate_kind(code: &str) -> Kind {
    match code {
        // disk_full
        "53100" => Kind::DiskFull,
        // unique_violation, foreign_key_violation, exclusion_violation, serialization_failure,
        // deadlock_detected: the write met another one.
        "23505" | "23503" | "23P01" | "40001" | "40P01" => Kind::Conflict,
        // Class 08 connection exception, 53 insufficient resources, 57P admin/crash
        // shutdown and cannot-connect-now, 58 system error (I/O), 25006 read-only (a standby
        // server after a failover of the database itself).
        _ if code.starts_with("08")
            || code.starts_with("53")
            || code.starts_with("57P")
            || code.starts_with("58")
            || code == "25006" =>
        {
            Kind::Unavailable
        }
        _ => Kind::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_sorted_by_what_the_caller_can_do() {
        assert_eq!(sqlstate_kind("53100"), Kind::DiskFull);
        assert_eq!(sqlstate_kind("23505"), Kind::Conflict);
        assert_eq!(sqlstate_kind("40001"), Kind::Conflict);
        assert_eq!(sqlstate_kind("57P01"), Kind::Unavailable);
        assert_eq!(sqlstate_kind("08006"), Kind::Unavailable);
        assert_eq!(sqlstate_kind("42601"), Kind::Failed);
        let gone = anyhow::Error::new(sqlx::Error::PoolTimedOut).context("Cannot reach the database");
        assert!(classify(gone).is_unavailable());
        assert!(matches!(classify(anyhow::Error::new(sqlx::Error::RowNotFound)), StoreError::NotFound(_)));
        let enospc = anyhow::Error::new(std::io::Error::from_raw_os_error(28)).context("Cannot write");
        assert!(classify(enospc).is_disk_full());
        assert!(matches!(classify(anyhow::anyhow!("Bad row")), StoreError::Failed(_)));
    }
}
