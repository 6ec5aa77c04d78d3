//! The daemon: one task per concern (the inbox watcher, the heartbeat), all stopped by one
//! [`CancellationToken`]. Tests start it in-process with their own token; `gatehouse run`
//! cancels the token on SIGINT or SIGTERM.

pub mod health;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::{Auth, Config};
use crate::disk::Disk;
use crate::inbox::Inbox;
use crate::inbox::status::StatusBoard;
use crate::intake::Intake;
use crate::mailings::alerts::Alerts;
use crate::oauth::TokenProvider;
use crate::outbox::Sender;
use crate::store::{self, SharedStore};
use crate::templates::Templates;

/// How often the daemon proves it is alive in the database (read by `gatehouse status`).
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long tasks get to finish their current step after a stop signal. `run` must exit
/// within 10 s of SIGTERM, and an IMAP logout or a transaction commit takes far less.
const GRACE: Duration = Duration::from_secs(7);

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
        let alerts = Arc::new(Alerts::new(
            self.config.clone(),
            self.store.clone(),
            self.clock.clone(),
            self.templates.clone(),
        ));
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
        let intake = Arc::new(Intake::new(
            self.config.clone(),
            self.clock.clone(),
            self.templates.clone(),
            wake.clone(),
        ));
        let sender =
            Sender::new(self.config.clone(), self.store.clone(), self.clock.clone(), wake, alerts.clone())
                .with_tokens(tokens.smtp.clone());
        let inbox = Inbox::new(
            self.config.clone(),
            self.store.clone(),
            self.clock.clone(),
            intake,
            status.clone(),
            alerts.clone(),
        )
        .with_tokens(tokens.imap.clone());
        tasks.spawn(inbox.run(shutdown.clone()));
        tasks.spawn(sender.run(shutdown.clone()));
    }

    /// Time-driven work ([`crate::jobs`]): the weekly summary and agendas, the gatekeepers'
    /// daily reminder, the retention periods and (when OAuth2 is used) the client secret's
    /// expiry warning. Each checks once a minute whether it is due; what was done is in the
    /// database, so nothing goes twice.
    fn spawn_schedules(&self, tasks: &mut JoinSet<()>, alerts: &Arc<Alerts>, shutdown: &CancellationToken) {
        for job in crate::jobs::schedules(&self.config, &self.store, &self.clock, &self.templates, alerts) {
            tasks.spawn(crate::jobs::run_every_minute(job, shutdown.clone()));
        }
    }

    /// Keeping the data directory in shape: the watch on free space.
    fn spawn_housekeeping(&self, tasks: &mut JoinSet<()>, disk: Arc<Disk>, shutdown: &CancellationToken) {
        tasks.spawn(disk.watch(shutdown.clone()));
    }

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

/// `gatehouse run`: open, migrate, run until told to stop.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    App::open(config).await?.run(shutdown).await
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
