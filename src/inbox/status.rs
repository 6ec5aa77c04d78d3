//! The inbox watcher's state, shared with the daemon's heartbeat and health endpoints and
//! written to the database on change (read by `gatehouse status`). It lives with the inbox,
//! which sets it, so the daemon that reads it imports downwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::ImapState;
use crate::clock::Clock;
use crate::disk::Disk;
use crate::store::SharedStore;

/// The watcher's state, shared with the heartbeat and written to the database on change.
#[derive(Debug, Clone)]
pub struct StatusBoard {
    store: SharedStore,
    clock: Arc<dyn Clock>,
    state: Arc<Mutex<(ImapState, Option<String>)>>,
    /// The data directory's ballast and full-disk state.
    disk: Arc<Disk>,
    /// When the inbox was last read to the end (for `/metrics`).
    last_sync: Arc<Mutex<Option<DateTime<Utc>>>>,
    /// Whether the last status write reached the database (for `/readyz`): the heartbeat
    /// writes every few seconds, so this answers "does the database take writes?" without
    /// a write of its own.
    written: Arc<AtomicBool>,
}

impl StatusBoard {
    pub fn new(store: SharedStore, clock: Arc<dyn Clock>, disk: Arc<Disk>) -> Self {
        Self {
            store,
            clock,
            state: Arc::new(Mutex::new((ImapState::Connecting, None))),
            disk,
            last_sync: Arc::default(),
            written: Arc::new(AtomicBool::new(true)),
        }
    }

    /// What the watcher is doing now, and why when it is not watching.
    pub async fn imap(&self) -> (ImapState, Option<String>) {
        self.state.lock().await.clone()
    }

    /// The inbox has read the mailbox to the end.
    pub async fn synced(&self) {
        *self.last_sync.lock().await = Some(self.clock.now());
    }

    pub async fn last_sync(&self) -> Option<DateTime<Utc>> {
        *self.last_sync.lock().await
    }

    /// `Ok` while the database takes writes; otherwise why not.
    pub fn database_writable(&self) -> Result<(), String> {
        if self.disk.is_full() {
            return Err(self.disk.full_detail());
        }
        if !self.written.load(Ordering::SeqCst) {
            return Err("the database does not take writes (see the log)".into());
        }
        Ok(())
    }

    /// Tells the board about a failure the inbox met: a write that failed for lack of
    /// space marks the disk full (and releases the ballast) even when the status write that
    /// follows happens to succeed.
    pub fn note_failure(&self, e: &anyhow::Error) {
        self.disk.note_failure(e);
    }

    /// While the disk is full: says so in the status and returns once there is room again
    /// (or at shutdown). The inbox calls it before each connection, so intake pauses.
    pub async fn wait_while_disk_full(&self, shutdown: &CancellationToken) {
        if self.disk.is_full() {
            self.set(ImapState::Down, Some(self.disk.full_detail())).await;
            self.disk.wait_while_full(shutdown).await;
        }
    }

    pub async fn set(&self, state: ImapState, detail: Option<String>) {
        let mut current = self.state.lock().await;
        if current.0 == state && current.1 == detail {
            return;
        }
        *current = (state, detail);
        let (s, d) = current.clone();
        drop(current);
        self.write(s, d.as_deref()).await;
    }

    /// Writes the current state again: the heartbeat that shows the daemon is alive.
    pub async fn beat(&self) {
        let (s, d) = self.state.lock().await.clone();
        self.write(s, d.as_deref()).await;
    }

    async fn write(&self, state: ImapState, detail: Option<&str>) {
        let Err(e) = self.store.set_daemon_status(state.as_str(), detail, self.clock.now()).await else {
            self.written.store(true, Ordering::SeqCst);
            return;
        };
        // Out of space: the ballast, released now, leaves room to say so.
        let e = anyhow::Error::from(e);
        let retried = if self.disk.note_failure(&e) {
            self.store.set_daemon_status(state.as_str(), detail, self.clock.now()).await.map_err(Into::into)
        } else {
            Err(e)
        };
        self.written.store(retried.is_ok(), Ordering::SeqCst);
        if let Err(e) = retried {
            tracing::warn!("Cannot record the daemon's status: {e:#}");
        }
    }
}
