//! The daemon: one task per concern (the inbox watcher, the heartbeat), all stopped by one
//! [`CancellationToken`]. Tests start it in-process with their own token; `gatehouse run`
//! cancels the token on SIGINT or SIGTERM.

pub mod health;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::{Auth, Config};
use crate::disk::Disk;
use crate::inbox::{ImapState, Inbox};
use crate::oauth::TokenProvider;
use crate::outbox::Sender;
use crate::outbox::alerts::Alerts;
use crate::requests::Processor;
use crate::store::{self, SharedStore};
use crate::summary::agenda::AgendaMail;
use crate::summary::{Sent, Summaries};
use crate::templates::Templates;
use crate::triage::reminders::Reminders;

/// How often the daemon proves it is alive in the database (read by `gatehouse status`).
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long tasks get to finish their current step after a stop signal. `run` must exit
/// within 10 s of SIGTERM, and an IMAP logout or a transaction commit takes far less.
const GRACE: Duration = Duration::from_secs(7);

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

    async fn beat(&self) {
        let (s, d) = self.state.lock().await.clone();
        self.write(s, d.as_deref()).await;
    }

    async fn write(&self, state: ImapState, detail: Option<&str>) {
        let Err(e) = self.store.set_daemon_status(state.as_str(), detail, self.clock.now()).await else {
            self.written.store(true, Ordering::SeqCst);
            return;
        };
        // Out of space: the ballast, released now, leaves room to say so.
        let retried = if self.disk.note_failure(&e) {
            self.store.set_daemon_status(state.as_str(), detail, self.clock.now()).await
        } else {
            Err(e)
        };
        self.written.store(retried.is_ok(), Ordering::SeqCst);
        if let Err(e) = retried {
            tracing::warn!("Cannot record the daemon's status: {e:#}");
        }
    }
}

/// Everything the tasks share.
#[derive(Debug, Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub clock: Arc<dyn Clock>,
    pub templates: Arc<Templates>,
}

impl App {
    /// Opens and migrates the database named by the config.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        // Templates first: a broken override is a config error, found before anything runs.
        let templates = Arc::new(Templates::load(&config)?);
        let store = store::open(&config).await?;
        let applied = store.migrate().await?;
        if applied > 0 {
            tracing::info!("Database {}: applied {applied} migration(s)", store.describe());
        }
        Ok(Self { config: Arc::new(config), store, clock: Arc::new(SystemClock), templates })
    }

    /// Runs every task until `shutdown` is cancelled, then waits (briefly) for them to stop.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // Bound first: a port already taken stops the start with a clear error.
        let metrics = match self.config.metrics_listen {
            Some(listen) => Some(health::bind(listen).await?),
            None => None,
        };
        let alerts = Arc::new(Alerts::new(self.config.clone(), self.store.clone(), self.clock.clone()));
        let disk = Arc::new(Disk::new(self.config.clone(), alerts.clone()));
        // The ballast is laid before any task writes, so a disk that fills later has room
        // to say so.
        disk.ensure_ballast();
        let status = StatusBoard::new(self.store.clone(), self.clock.clone(), disk.clone());
        // `gatehouse status` sees the daemon as soon as it starts, not a heartbeat later.
        status.beat().await;
        let tokens = Tokens::new(&self);

        let mut tasks = JoinSet::new();
        self.spawn_mail(&mut tasks, &tokens, &status, &alerts, &shutdown);
        self.spawn_schedules(&mut tasks, &alerts, &shutdown);
        self.spawn_housekeeping(&mut tasks, disk, &shutdown);
        if let Some(listener) = metrics {
            self.spawn_health(&mut tasks, listener, tokens, &status, &shutdown);
        }
        tasks.spawn(heartbeat(status, shutdown.clone()));
        tracing::info!(
            "gatehouse is running for {} (watching {} on {}:{})",
            self.config.service.name,
            self.config.imap.mailbox,
            self.config.imap.host,
            self.config.imap.port
        );

        shutdown.cancelled().await;
        stop(tasks).await;
        Ok(())
    }

    /// The inbox (reads and logs every approach) and the outbox (sends what it queued).
    /// They share a wake-up, so an answer queued by the inbox goes out at once rather than
    /// at the outbox's next poll.
    fn spawn_mail(
        &self,
        tasks: &mut JoinSet<()>,
        tokens: &Tokens,
        status: &StatusBoard,
        alerts: &Arc<Alerts>,
        shutdown: &CancellationToken,
    ) {
        let wake = Arc::new(tokio::sync::Notify::new());
        let processor = Arc::new(Processor::new(
            self.config.clone(),
            self.clock.clone(),
            self.templates.clone(),
            wake.clone(),
        ));
        let sender =
            Sender::new(self.config.clone(), self.store.clone(), self.clock.clone(), wake, alerts.clone())
                .with_tokens(tokens.smtp.clone());
        let inbox =
            Inbox::new(self.config.clone(), self.store.clone(), processor, status.clone(), alerts.clone())
                .with_tokens(tokens.imap.clone());
        tasks.spawn(inbox.run(shutdown.clone()));
        tasks.spawn(sender.run(shutdown.clone()));
    }

    /// Time-driven mail: the weekly summary and agendas, the gatekeepers' daily reminder,
    /// and (when OAuth2 is used) the client secret's expiry warning. Each checks once a
    /// minute whether it is due; what was sent is in the database, so nothing goes twice.
    fn spawn_schedules(&self, tasks: &mut JoinSet<()>, alerts: &Arc<Alerts>, shutdown: &CancellationToken) {
        let summaries = Summaries::new(
            self.config.clone(),
            self.store.clone(),
            self.clock.clone(),
            self.templates.clone(),
        );
        tasks.spawn(every_minute(shutdown.clone(), move || send_summary_and_agendas(summaries.clone())));
        let reminders = Reminders::new(
            self.config.clone(),
            self.store.clone(),
            self.clock.clone(),
            self.templates.clone(),
        );
        tasks.spawn(every_minute(shutdown.clone(), move || send_reminders(reminders.clone())));
        let nudges = crate::triage::nudge::Nudges::new(
            self.config.clone(),
            self.store.clone(),
            self.clock.clone(),
            self.templates.clone(),
        );
        tasks.spawn(every_minute(shutdown.clone(), move || send_nudges(nudges.clone())));
        if !self.config.oauth_sections().is_empty() {
            let (config, alerts, clock) = (self.config.clone(), alerts.clone(), self.clock.clone());
            tasks.spawn(every_minute(shutdown.clone(), move || {
                warn_secret_expiry(config.clone(), alerts.clone(), clock.clone())
            }));
        }
    }

    /// Keeping the data directory in shape: the retention periods, applied once a day, and
    /// the watch on free space.
    fn spawn_housekeeping(&self, tasks: &mut JoinSet<()>, disk: Arc<Disk>, shutdown: &CancellationToken) {
        let retention =
            crate::retention::Retention::new(self.config.clone(), self.store.clone(), self.clock.clone());
        tasks.spawn(every_minute(shutdown.clone(), move || apply_retention(retention.clone())));
        tasks.spawn(disk.watch(shutdown.clone()));
    }

    /// `/metrics`, `/healthz` and `/readyz` on the listener bound at start.
    fn spawn_health(
        &self,
        tasks: &mut JoinSet<()>,
        listener: tokio::net::TcpListener,
        tokens: Tokens,
        status: &StatusBoard,
        shutdown: &CancellationToken,
    ) {
        if let Ok(at) = listener.local_addr() {
            tracing::info!("Serving /metrics, /healthz and /readyz on http://{at}");
        }
        let health = health::Health {
            config: self.config.clone(),
            store: self.store.clone(),
            clock: self.clock.clone(),
            status: status.clone(),
            tokens: tokens.by_section,
        };
        tasks.spawn(health::serve(listener, health, shutdown.clone()));
    }
}

/// The OAuth2 token providers: one per distinct `[*.oauth2]` source, shared when IMAP and
/// SMTP use the same app (a rotated refresh token must not be used twice).
struct Tokens {
    imap: Option<Arc<TokenProvider>>,
    smtp: Option<Arc<TokenProvider>>,
    /// Every distinct source by its config section, for `/readyz` and `/metrics`.
    by_section: Vec<(&'static str, Arc<TokenProvider>)>,
}

impl Tokens {
    fn new(app: &App) -> Self {
        let providers = crate::oauth::Providers::default();
        let config = &app.config;
        let imap = config.imap.auth.oauth().map(|o| providers.get(o, app.clock.clone()));
        let smtp =
            config.smtp.auth.as_ref().and_then(Auth::oauth).map(|o| providers.get(o, app.clock.clone()));
        let by_section = config
            .oauth_sections()
            .into_iter()
            .map(|(section, settings)| (section, providers.get(settings, app.clock.clone())))
            .collect();
        Self { imap, smtp, by_section }
    }
}

/// Gives the tasks [`GRACE`] to finish their current step, then abandons the rest: the
/// inbox and outbox redo unfinished work at the next start, so a stop is never a loss.
async fn stop(mut tasks: JoinSet<()>) {
    tracing::info!("Stopping");
    let stopped = tokio::time::timeout(GRACE, async {
        while let Some(result) = tasks.join_next().await {
            if let Err(e) = result {
                tracing::error!("A task failed while stopping: {e}");
            }
        }
    })
    .await;
    if stopped.is_err() {
        tracing::warn!(
            "Some work did not finish within {} s and was abandoned; it will be redone at the next start",
            GRACE.as_secs()
        );
        tasks.abort_all();
    }
    tracing::info!("Stopped");
}

/// One minute's check of the weekly summary and the meeting agendas. A failure is logged
/// and tried again next minute: one bad week must not stop the daemon.
async fn send_summary_and_agendas(summaries: Summaries) {
    match summaries.run_schedule().await {
        Ok(Some(Sent::Sent { period, .. })) => {
            tracing::info!("Weekly summary for the week of {period} sent to the board")
        }
        Ok(_) => {}
        Err(e) => tracing::error!("Cannot send the weekly summary: {e:#}"),
    }
    match summaries.run_agendas().await {
        Ok(mailings) => {
            for m in mailings {
                match m {
                    AgendaMail::Agenda(d) => {
                        tracing::info!("Agenda for the meeting on {d} sent to the board")
                    }
                    AgendaMail::Update(d) => {
                        tracing::info!("Agenda update for the meeting on {d} sent to the board")
                    }
                }
            }
        }
        Err(e) => tracing::error!("Cannot send a meeting agenda: {e:#}"),
    }
}

/// One minute's check of the gatekeepers' daily reminder.
async fn send_reminders(reminders: Reminders) {
    match reminders.run_once().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("Sent the gatekeepers' daily digest ({n} item(s))"),
        Err(e) => tracing::error!("Cannot send the daily reminder: {e:#}"),
    }
}

/// One minute's check for requesters asked for more work who have not replied.
async fn send_nudges(nudges: crate::triage::nudge::Nudges) {
    match nudges.run_once().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("Reminded {n} requester(s) of the more work asked of them"),
        Err(e) => tracing::error!("Cannot send the more-work reminders: {e:#}"),
    }
}

/// One minute's check of the OAuth2 client secret's expiry (it warns at most once a day).
async fn warn_secret_expiry(config: Arc<Config>, alerts: Arc<Alerts>, clock: Arc<dyn Clock>) {
    if let Err(e) = crate::jobs::secret_expiry::warn_once_a_day(&config, &alerts, clock.as_ref()).await {
        tracing::error!("Cannot warn about the OAuth2 client secret's expiry: {e:#}");
    }
}

/// One minute's check of the retention periods (they are applied once a day).
async fn apply_retention(retention: crate::retention::Retention) {
    match retention.run_daily().await {
        Ok(Some(p)) if !p.counts.is_empty() => tracing::info!(
            "Retention: removed the bytes of {} message(s) and {} sent email(s), {} answer record(s), anonymised {} closed request(s); database {} -> {} bytes ({})",
            p.counts.raw_messages.count,
            p.counts.sent_mail.count,
            p.counts.answer_records.count,
            p.counts.closed_requests.count,
            p.reclaimed.bytes_before,
            p.reclaimed.bytes_after,
            p.reclaimed.how
        ),
        Ok(_) => {}
        Err(e) => tracing::error!("Cannot apply the retention periods: {e:#}"),
    }
}

/// `gatehouse run`: open, migrate, run until told to stop.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    App::open(config).await?.run(shutdown).await
}

/// Runs `work` once a minute (and once at start) until shutdown: for time-driven mail,
/// whose state lives in the database, so a missed minute is simply caught up.
async fn every_minute<F, Fut>(shutdown: CancellationToken, work: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        work().await;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn heartbeat(status: StatusBoard, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT) => status.beat().await,
            () = shutdown.cancelled() => return,
        }
    }
}

/// Cancels `shutdown` on SIGINT (Ctrl-C) or SIGTERM (systemd, `kill`).
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            tracing::error!("Cannot listen for signals; stop the daemon with SIGKILL");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
}
