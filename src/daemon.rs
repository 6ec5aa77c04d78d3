//! The daemon: one task per concern (the inbox watcher, the outbox sender, each schedule,
//! the heartbeat, the disk watch, the health endpoints), all stopped by one
//! [`CancellationToken`]. Tests start it in-process with their own token; `gatehouse run`
//! cancels the token on SIGINT or SIGTERM.
//!
//! The leader's work (everything that reads the inbox, writes or sends) runs only while
//! this node leads ([`leadership`]): always on SQLite; on PostgreSQL for each term of the
//! leader lease, under a child token of its own that is cancelled, and its tasks awaited,
//! when the term ends. A standby runs the disk watch and health endpoints and keeps its
//! place in the lease.

pub mod health;
pub mod leadership;

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
use crate::store::postgres::lease;
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
    /// On PostgreSQL: the leader lease this node competes for (`store` is fenced by it).
    seat: Option<leadership::Seat>,
}

impl App {
    /// Opens and migrates the database named by the config.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        // Templates first: a broken override is a config error, found before anything runs.
        let templates = Arc::new(Templates::load(&config)?);
        let (store, seat): (SharedStore, _) = match &config.service.database {
            None => (store::open(&config).await?, None),
            Some(db) => {
                let pg = store::postgres::PgStore::open(db).await?;
                let (holding, fence) = tokio::sync::watch::channel(None);
                let seat =
                    leadership::Seat { pg: pg.clone(), node: config.service.node_name.clone(), holding };
                (Arc::new(pg.fenced(fence)), Some(seat))
            }
        };
        let applied = store.migrate().await?;
        if applied > 0 {
            tracing::info!("Database {}: applied {applied} migration(s)", store.describe());
        }
        Ok(Self { config: Arc::new(config), store, clock: Arc::new(SystemClock), templates, seat })
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
        let tokens = Tokens::new(&self);
        let leader = LeaderWork { status: status.clone(), alerts, tokens: tokens.for_leader() };

        let mut tasks = JoinSet::new();
        self.spawn_housekeeping(&mut tasks, disk, &shutdown);
        let fence = self.seat.as_ref().map(|seat| (seat.holding.subscribe(), seat.pg.clone()));
        if let Some(listener) = metrics {
            self.spawn_health(&mut tasks, listener, tokens, &status, fence, &shutdown);
        }
        match self.seat.clone() {
            None => self.spawn_leader_work(&mut tasks, &leader, &shutdown).await,
            Some(seat) => {
                tracing::info!("Node {}: standing by until it holds the leader lease", seat.node);
                tasks.spawn(self.clone().lead_while_elected(seat, leader, shutdown.clone()));
            }
        }
        tracing::info!(
            "gatehouse is running for {} (watching {} on {}:{})",
            self.config.service.name,
            self.config.imap.mailbox,
            self.config.imap.host,
            self.config.imap.port
        );

        shutdown.cancelled().await;
        stop(tasks, GRACE).await;
        Ok(())
    }

    /// The leader's work: the inbox and outbox, every schedule, and the heartbeat that
    /// shows `gatehouse status` what the inbox is doing.
    async fn spawn_leader_work(
        &self,
        tasks: &mut JoinSet<()>,
        leader: &LeaderWork,
        term: &CancellationToken,
    ) {
        // `gatehouse status` sees the leader as soon as it starts, not a heartbeat later.
        leader.status.beat().await;
        self.spawn_mail(tasks, &leader.tokens, &leader.status, &leader.alerts, term);
        self.spawn_schedules(tasks, &leader.alerts, term);
        tasks.spawn(heartbeat(leader.status.clone(), term.clone()));
    }

    /// On a shared database: keeps this node's place in the lease, and runs the leader's
    /// work for each term it holds it. The lease is released (by [`lease::keep`] stopping)
    /// only after the last term's tasks have stopped, so two nodes never act at once.
    async fn lead_while_elected(
        self,
        seat: leadership::Seat,
        leader: LeaderWork,
        shutdown: CancellationToken,
    ) {
        let keeping = CancellationToken::new();
        let mut holding = seat.holding.subscribe();
        // Dies with this task: a daemon task aborted (in-process, as the tests crash one)
        // must not leave its lease renewed for ever by a keeper nobody owns.
        let keeper = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(lease::keep(
            seat.pg,
            seat.node.clone(),
            seat.holding,
            keeping.clone(),
        )));
        while let Some(held) = leadership::elected(&mut holding, &shutdown).await {
            tracing::info!("Node {}: leading (lease token {})", seat.node, held.token);
            let term = shutdown.child_token();
            let mut tasks = JoinSet::new();
            self.spawn_leader_work(&mut tasks, &leader, &term).await;
            let grace = leadership::term_ended(&mut holding, &shutdown).await;
            term.cancel();
            if grace.is_some() {
                tracing::warn!("Node {}: lost the leader lease; stopping the leader's work", seat.node);
            }
            // On shutdown, a second of the daemon's grace is kept for releasing the lease,
            // so a standby takes over at its next try instead of waiting it out.
            stop(tasks, grace.unwrap_or(GRACE.saturating_sub(Duration::from_secs(1)))).await;
            if grace.is_some() {
                tracing::info!("Node {}: standing by", seat.node);
            }
        }
        keeping.cancel();
        if let Err(e) = keeper.await {
            tracing::error!("The leader lease task failed: {e}");
        }
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
        fence: Option<(store::postgres::Fence, store::postgres::PgStore)>,
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
            holding: fence,
        };
        tasks.spawn(health::serve(listener, health, shutdown.clone()));
    }
}

/// What the leader's work shares across its terms.
struct LeaderWork {
    status: StatusBoard,
    alerts: Arc<Alerts>,
    tokens: Tokens,
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

    /// The providers the inbox and outbox use (the health endpoints keep `by_section`).
    fn for_leader(&self) -> Self {
        Self { imap: self.imap.clone(), smtp: self.smtp.clone(), by_section: Vec::new() }
    }
}

/// Gives the tasks `grace` to finish their current step, then abandons the rest: the
/// inbox and outbox redo unfinished work at the next start (or term), so a stop is never a
/// loss.
async fn stop(mut tasks: JoinSet<()>, grace: Duration) {
    tracing::info!("Stopping");
    let stopped = tokio::time::timeout(grace, async {
        while let Some(result) = tasks.join_next().await {
            if let Err(e) = result {
                tracing::error!("A task failed while stopping: {e}");
            }
        }
    })
    .await;
    if stopped.is_err() {
        tracing::warn!(
            "Some work did not finish within {} ms and was abandoned; it will be redone at the next start",
            grace.as_millis()
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
