//! Room to say the disk is full, and a warning before it fills.
//!
//! gatehouse reports trouble by writing to its database, which lives on the disk that may be
//! full: whether that write succeeded used to depend on SQLite happening to find a free page,
//! so a full disk could leave `gatehouse status` stale and nobody told. A ballast file of
//! `disk_ballast_mib` in the data directory is kept for that moment: the first write that
//! fails for lack of space releases it, so the status and the alert can be written, and
//! intake pauses (the inbox waits in [`Disk::wait_while_full`]) until the filesystem has
//! room for the ballast again, which is then made again. Before that, when free space drops
//! below the configured threshold, the log and one email a day say so.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::mailings::alerts::Alerts;
use crate::templates::DiskAlert;

/// The ballast's file name in the data directory.
pub const BALLAST_FILE: &str = "gatehouse.ballast";
/// How often the watcher looks at the filesystem: while the disk is full this is how soon
/// intake resumes after space is freed.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Free space wanted beyond the ballast before it is made again and intake resumes, so a
/// disk at the edge does not fill and free over and over.
const RESUME_MARGIN: u64 = 2 << 20;

/// A filesystem's space, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Free to an unprivileged process (what SQLite can use).
    pub available: u64,
    pub total: u64,
}

/// The space on the filesystem that holds `path`.
#[cfg(unix)]
// statvfs's fields are 32-bit on some targets: the conversions are not useless there.
#[allow(clippy::useless_conversion)]
pub fn space(path: &Path) -> std::io::Result<Space> {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `stats` is
    // writable memory of the type statvfs fills in.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs succeeded, so it filled the struct (and it was zeroed before).
    let stats = unsafe { stats.assume_init() };
    let unit = if stats.f_frsize > 0 { stats.f_frsize } else { stats.f_bsize };
    let unit = u64::from(unit);
    Ok(Space {
        available: u64::from(stats.f_bavail).saturating_mul(unit),
        total: u64::from(stats.f_blocks).saturating_mul(unit),
    })
}

/// The space on the filesystem that holds `path` (not available on this platform).
#[cfg(not(unix))]
pub fn space(_path: &Path) -> std::io::Result<Space> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "free space is only read on Unix"))
}

/// Below how many free bytes the low-space warning goes: the smaller of the percentage of
/// the filesystem and the amount; None when either is 0 (warning off).
pub fn warn_below(config: &Config, total: u64) -> Option<u64> {
    let s = &config.service;
    if s.disk_warn_free_percent == 0 || s.disk_warn_free_bytes == 0 {
        return None;
    }
    Some((total / 100).saturating_mul(u64::from(s.disk_warn_free_percent)).min(s.disk_warn_free_bytes))
}

/// "7.9 MiB".
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// The data directory's ballast and full-disk state, shared by the status board, the inbox
/// and the watcher task.
#[derive(Debug)]
pub struct Disk {
    config: Arc<Config>,
    alerts: Arc<Alerts>,
    ballast: PathBuf,
    /// Set when a write failed for lack of space; cleared by the watcher once there is room.
    full: AtomicBool,
    /// Whether this full spell has been alerted (or the alert tried).
    alerted: AtomicBool,
}

impl Disk {
    pub fn new(config: Arc<Config>, alerts: Arc<Alerts>) -> Self {
        let ballast = config.service.data_dir.join(BALLAST_FILE);
        Self { config, alerts, ballast, full: AtomicBool::new(false), alerted: AtomicBool::new(false) }
    }

    fn ballast_bytes(&self) -> u64 {
        self.config.service.disk_ballast_bytes
    }

    /// Whether intake is paused because the disk is full.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::SeqCst)
    }

    /// Makes the ballast if it is configured, missing, and the filesystem has room for it
    /// and the margin; otherwise leaves things as they are (the watcher tries again). A
    /// ballast of another size (the setting changed) is replaced.
    pub fn ensure_ballast(&self) {
        // On PostgreSQL nothing else makes the data directory, and without it the watch
        // could not read the free space (the local disk still holds the logs and ballast).
        if !self.config.service.data_dir.exists() {
            use std::os::unix::fs::DirBuilderExt as _;
            let made =
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.config.service.data_dir);
            if let Err(e) = made {
                tracing::warn!(
                    "Cannot create the data directory {}: {e}",
                    self.config.service.data_dir.display()
                );
            }
        }
        let want = self.ballast_bytes();
        if want == 0 {
            // Turned off: a ballast left from before is only wasted space.
            let _ = std::fs::remove_file(&self.ballast);
            return;
        }
        if std::fs::metadata(&self.ballast).is_ok_and(|m| m.len() == want) {
            return;
        }
        let _ = std::fs::remove_file(&self.ballast);
        match space(&self.config.service.data_dir) {
            Ok(s) if s.available >= want.saturating_add(RESUME_MARGIN) => {}
            Ok(s) => {
                tracing::warn!(
                    "Only {} free in {}: no room for the {} disk ballast yet",
                    mib(s.available),
                    self.config.service.data_dir.display(),
                    mib(want)
                );
                return;
            }
            Err(e) => {
                tracing::warn!(
                    "Cannot read the free space in {}: {e}",
                    self.config.service.data_dir.display()
                );
                return;
            }
        }
        if let Err(e) = make_ballast(&self.ballast, want) {
            tracing::warn!("Cannot make the disk ballast {}: {e:#}", self.ballast.display());
        }
    }

    /// Called with a write that failed. When it failed for lack of space, the disk is marked
    /// full (intake pauses) and the ballast released; returns whether that made room, so the
    /// caller's write is worth one more try now.
    pub fn note_failure(&self, e: &anyhow::Error) -> bool {
        if !crate::store::is_out_of_space(e) {
            return false;
        }
        if !self.full.swap(true, Ordering::SeqCst) {
            self.alerted.store(false, Ordering::SeqCst);
            tracing::error!(
                "The disk holding {} is full: intake is paused until space is freed",
                self.config.service.data_dir.display()
            );
        }
        match std::fs::remove_file(&self.ballast) {
            Ok(()) => {
                tracing::warn!(
                    "Released the {} disk ballast to record the full disk",
                    mib(self.ballast_bytes())
                );
                true
            }
            Err(_) => false,
        }
    }

    /// What `gatehouse status` shows while intake is paused.
    pub fn full_detail(&self) -> String {
        let free =
            space(&self.config.service.data_dir).map(|s| mib(s.available)).unwrap_or_else(|_| "?".into());
        format!(
            "The disk holding {} is full ({free} free): intake is paused until space is freed",
            self.config.service.data_dir.display()
        )
    }

    /// Returns once the disk is no longer full (at once when it is not), or at shutdown.
    pub async fn wait_while_full(&self, shutdown: &CancellationToken) {
        while self.is_full() {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Watches the filesystem until shutdown: alerts a full disk, makes the ballast again
    /// and resumes intake when space returns, and warns once a day when space runs low.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            self.check().await;
            tokio::select! {
                () = tokio::time::sleep(CHECK_EVERY) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn check(&self) {
        let dir = &self.config.service.data_dir;
        let space = match space(dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("Cannot read the free space in {}: {e}", dir.display());
                return;
            }
        };
        if self.is_full() {
            if !self.alerted.swap(true, Ordering::SeqCst) {
                self.alert_full(space).await;
            }
            if space.available >= self.ballast_bytes().saturating_add(RESUME_MARGIN) {
                self.ensure_ballast();
                self.full.store(false, Ordering::SeqCst);
                tracing::info!("{} free in {} again: intake resumes", mib(space.available), dir.display());
                self.alerts.resolve_or_log(DISK_FULL).await;
            }
            return;
        }
        if self.ballast_bytes() > 0 && !self.ballast.exists() {
            self.ensure_ballast();
        }
        match warn_below(&self.config, space.total) {
            Some(below) if space.available < below => self.warn_low(space).await,
            _ => self.alerts.resolve_or_log(DISK_LOW).await,
        }
    }

    /// One email a day, with a log line, while space is low.
    async fn warn_low(&self, space: Space) {
        let dir = self.config.service.data_dir.display();
        let what = format!(
            "Only {} of {} is free on the disk holding {dir}",
            mib(space.available),
            mib(space.total)
        );
        let subject = "gatehouse is running out of disk space".to_string();
        match self.alerts.raise_with(DISK_LOW, subject, "alert_disk_low.txt", &self.alert(space)).await {
            Ok(true) => tracing::warn!("{what}: free some space before it fills"),
            Ok(false) => {}
            Err(e) => tracing::error!("Cannot send the low disk space warning: {e:#}"),
        }
    }

    /// The full-disk alert: at most one a day, however often the disk fills.
    async fn alert_full(&self, space: Space) {
        let subject = "gatehouse's disk is full: approaches are not being logged".to_string();
        self.alerts.raise_with_or_log(DISK_FULL, subject, "alert_disk_full.txt", &self.alert(space)).await;
    }

    /// What the disk alerts say of `space`.
    fn alert(&self, space: Space) -> DiskAlert {
        DiskAlert {
            dir: self.config.service.data_dir.display().to_string(),
            available: mib(space.available),
            total: mib(space.total),
            mailbox: self.config.imap.username.clone(),
        }
    }
}

/// The operator's alert keys for the data directory's disk.
const DISK_LOW: &str = "disk_low";
const DISK_FULL: &str = "disk_full";

/// Writes the ballast: blocks reserved with posix_fallocate where the filesystem can, else
/// written out, so the space is really taken (a sparse file would hold nothing back).
fn make_ballast(path: &Path, bytes: u64) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    let result = (|| -> anyhow::Result<()> {
        let mut file = std::fs::File::create(&partial).context("Cannot create the file")?;
        if !reserve(&file, bytes) {
            // Not zeros: a compressing filesystem would store those in nothing.
            let chunk: Vec<u8> =
                (0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
            let mut left = bytes;
            while left > 0 {
                let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
                file.write_all(chunk.get(..n).unwrap_or(&chunk)).context("Cannot write the file")?;
                left -= n as u64;
            }
        }
        file.sync_all().context("Cannot sync the file")?;
        std::fs::rename(&partial, path).context("Cannot rename the file")?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Reserves `bytes` for `file` without writing them; false where the filesystem cannot.
#[cfg(target_os = "linux")]
fn reserve(file: &std::fs::File, bytes: u64) -> bool {
    use std::os::fd::AsRawFd as _;
    let Ok(len) = libc::off_t::try_from(bytes) else { return false };
    // SAFETY: the descriptor belongs to `file`, which is open for writing for the whole call.
    unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) == 0 }
}

/// Reserves `bytes` for `file` without writing them; false where the filesystem cannot.
#[cfg(not(target_os = "linux"))]
fn reserve(_file: &std::fs::File, _bytes: u64) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ballast_takes_real_space_and_is_replaced_when_its_size_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BALLAST_FILE);
        make_ballast(&path, 3 << 20).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 3 << 20);
        use std::os::unix::fs::MetadataExt as _;
        assert!(meta.blocks() * 512 >= 3 << 20, "sparse: {} blocks", meta.blocks());
        assert!(!dir.path().join("gatehouse.partial").exists());
        let s = space(dir.path()).unwrap();
        assert!(s.total >= s.available && s.available > 0, "{s:?}");
    }

    #[test]
    fn the_warning_threshold_is_the_smaller_of_the_two() {
        let text = crate::config::tests::VALID.replace(
            "reference_prefix = \"GP\"",
            "reference_prefix = \"GP\"\ndisk_warn_free_percent = 5\ndisk_warn_free_mib = 200",
        );
        let c = Config::parse(&text, Path::new("/etc/gatehouse/gatehouse.toml")).unwrap();
        assert_eq!(c.service.disk_ballast_bytes, 8 << 20);
        // 5 % of 1 GiB is about 51 MiB; of 100 GiB, 5 GiB: 200 MiB is smaller.
        assert_eq!(warn_below(&c, 1 << 30), Some((1u64 << 30) / 100 * 5));
        assert_eq!(warn_below(&c, 100 << 30), Some(200 << 20));
        let off = text.replace("disk_warn_free_mib = 200", "disk_warn_free_mib = 0");
        let c = Config::parse(&off, Path::new("/etc/gatehouse/gatehouse.toml")).unwrap();
        assert_eq!(warn_below(&c, 1 << 30), None);
        let bad = text.replace("disk_warn_free_percent = 5", "disk_warn_free_percent = 90");
        let e = Config::parse(&bad, Path::new("/etc/gatehouse/gatehouse.toml")).unwrap_err();
        assert_eq!(e.key, "service.disk_warn_free_percent");
    }
}
