//! The store's own error: what went wrong in terms a caller can act on, whatever the
//! backend. Driver errors (rusqlite, sqlx) are sorted into it inside the backend and never
//! reach the callers as such.

use std::fmt;

/// `Result` with a [`StoreError`].
pub type StoreResult<T> = Result<T, StoreError>;

/// Why a store call failed. Each variant keeps the backend's account of it (with its
/// context) for the logs; the variant is what the caller decides on.
#[derive(Debug)]
pub enum StoreError {
    /// The database could not be used at all (I/O error, locked, gone, out of memory or
    /// space) rather than this call being wrong: nothing is given up on because of it, it is
    /// retried once the database is usable. `disk_full` says it was the disk that was full.
    Unavailable { disk_full: bool, cause: anyhow::Error },
    /// The write conflicts with what is stored (a uniqueness or reference constraint).
    Conflict(anyhow::Error),
    /// What the call names is not stored.
    NotFound(anyhow::Error),
    /// Anything else: a statement or a stored value the code did not expect.
    Failed(anyhow::Error),
}

impl StoreError {
    /// The backend's account of the failure.
    pub fn cause(&self) -> &anyhow::Error {
        match self {
            StoreError::Unavailable { cause, .. }
            | StoreError::Conflict(cause)
            | StoreError::NotFound(cause)
            | StoreError::Failed(cause) => cause,
        }
    }

    /// Whether the database could not be used at all (see [`StoreError::Unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// Whether a write failed for lack of space on the disk.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Unavailable { disk_full: true, .. })
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The whole account on one line, as `{:#}` shows an anyhow chain: the variant adds
        // nothing a reader of the log needs.
        write!(f, "{:#}", self.cause())
    }
}

impl std::error::Error for StoreError {}

/// Whether `e` means the database could not be used at all (disk full, I/O error, locked,
/// gone) rather than that this particular write was wrong. Such failures are retried
/// indefinitely; nothing is given up on because of them.
pub fn is_storage_trouble(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.downcast_ref::<StoreError>().is_some_and(StoreError::is_unavailable))
}

/// Whether `e` means a write failed for lack of space on the disk (the store's
/// [`StoreError::Unavailable`] with `disk_full`, or ENOSPC from a file written directly),
/// as opposed to any other storage trouble.
pub fn is_out_of_space(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        if let Some(store) = cause.downcast_ref::<StoreError>() {
            return store.is_disk_full();
        }
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unavailable_store_is_storage_trouble_and_only_a_full_disk_is_out_of_space() {
        let unavailable =
            |disk_full| StoreError::Unavailable { disk_full, cause: anyhow::anyhow!("disk I/O error") };
        let full = anyhow::Error::new(unavailable(true)).context("Cannot commit");
        assert!(is_storage_trouble(&full));
        assert!(is_out_of_space(&full));
        let locked = anyhow::Error::new(unavailable(false)).context("Cannot start a transaction");
        assert!(is_storage_trouble(&locked));
        assert!(!is_out_of_space(&locked));
        for wrong in [
            StoreError::Conflict(anyhow::anyhow!("UNIQUE constraint failed")),
            StoreError::NotFound(anyhow::anyhow!("No such message")),
            StoreError::Failed(anyhow::anyhow!("Bad row")),
        ] {
            let e = anyhow::Error::new(wrong);
            assert!(!is_storage_trouble(&e) && !is_out_of_space(&e), "{e:#}");
        }
        assert!(!is_storage_trouble(&anyhow::anyhow!("Bad recipient")));
        let enospc = anyhow::Error::new(std::io::Error::from_raw_os_error(28)).context("Cannot write");
        assert!(is_out_of_space(&enospc));
        assert!(!is_storage_trouble(&enospc));
    }

    #[test]
    fn the_error_reads_as_the_backend_told_it() {
        let e =
            StoreError::Failed(anyhow::anyhow!("near \"x\": syntax error").context("Cannot list requests"));
        assert_eq!(e.to_string(), "Cannot list requests: near \"x\": syntax error");
    }
}
