//! Watching the shared mailbox: every message in it is stored, processed and checkpointed
//! exactly once, whatever happens to the connection or the daemon.
//!
//! The loop: connect → SELECT → fetch every UID above the checkpoint in size-bounded
//! batches → for each message store the raw bytes first, then process it (classification,
//! request, events and the checkpoint in one transaction) → IDLE (or sleep when the server
//! has no IDLE) → repeat. Any error drops the connection and reconnects with exponential
//! backoff and jitter; a refused login backs off much harder and is shown in
//! `gatehouse status`. A message whose Message-ID (or bytes) was seen before is never
//! processed twice, which covers UIDVALIDITY changes and rebuilt mailboxes; a Message-ID
//! counts only together with what the author wrote (`dedup::core_hash`), so a different
//! message that reuses one is not dropped.
//!
//! With OAuth2, a session ends cleanly (LOGOUT) just before its access token is due for
//! renewal and a new one logs in with a fresh token: Exchange Online drops sessions whose
//! token has expired, and leaving it to do so would look like an outage every hour.
//!
//! Mail is never deleted from the shared mailbox: people read it too.

pub mod connection;
pub mod dedup;
pub mod status;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use futures::TryStreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::config::{AfterProcessing, Backlog, Config};
use crate::intake::{Checkpoint, Intake, ParseResult, ParsedGroup};
use crate::store::{MailboxState, MessageId, NewRawMessage, RawSaved, SharedStore, Tx};
use connection::{ConnectError, Connected, Session, timed};

/// What the watcher is doing, as `gatehouse status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImapState {
    Connecting,
    Idle,
    Polling,
    AuthFailed,
    Down,
}

impl ImapState {
    pub const ALL: [ImapState; 5] =
        [ImapState::Connecting, ImapState::Idle, ImapState::Polling, ImapState::AuthFailed, ImapState::Down];

    pub fn as_str(self) -> &'static str {
        match self {
            ImapState::Connecting => "connecting",
            ImapState::Idle => "idle",
            ImapState::Polling => "polling",
            ImapState::AuthFailed => "auth_failed",
            ImapState::Down => "down",
        }
    }
}

/// IDLE is re-issued well before the 29 minutes after which RFC 2177 lets a server drop us.
const IDLE_REISSUE: Duration = Duration::from_secs(25 * 60);
/// Messages fetched per round trip, and the most bytes one batch may hold in memory.
const BATCH_MESSAGES: usize = 100;
const BATCH_BYTES: u64 = 8 * 1024 * 1024;
/// The most messages processed in one transaction: one commit per group instead of two per
/// message is what makes a backlog cheap, and a group is what had already arrived, so a
/// single new message is not kept waiting.
const GROUP_MESSAGES: usize = 100;
/// The most message bytes read from the server but not yet processed.
const PIPELINE_BYTES: usize = 16 * 1024 * 1024;
/// Processing attempts before a message that keeps failing (or keeps stopping the daemon) is
/// quarantined, so one poisoned message cannot stop the inbox. Counted in the database,
/// across restarts.
const MAX_ATTEMPTS: u32 = 3;
/// How often the watcher, while it waits for mail, looks for messages an operator asked to
/// have processed again (`gatehouse messages retry`).
const RETRY_POLL: Duration = Duration::from_secs(5);

/// Why a connected session ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionEnd {
    Shutdown,
    /// The OAuth2 token is due for renewal: log in again with a new one.
    RenewToken,
}

/// The inbox watcher task.
#[derive(Debug, Clone)]
pub struct Inbox {
    config: Arc<Config>,
    store: SharedStore,
    clock: Arc<dyn Clock>,
    intake: Arc<Intake>,
    status: status::StatusBoard,
    /// With `auth = "xoauth2"`: where IMAP's access tokens come from.
    tokens: Option<Arc<crate::oauth::TokenProvider>>,
    /// Messages whose last counted attempt never ran because the database failed (see
    /// `Inbox::uncount`).
    not_run: Arc<std::sync::Mutex<HashSet<MessageId>>>,
    alerts: Arc<crate::mailings::alerts::Alerts>,
}

/// The operator's alert key for a refused mailbox login.
const LOGIN_REFUSED: &str = "imap_login_refused";

impl Inbox {
    pub fn new(
        config: Arc<Config>,
        store: SharedStore,
        clock: Arc<dyn Clock>,
        intake: Arc<Intake>,
        status: status::StatusBoard,
        alerts: Arc<crate::mailings::alerts::Alerts>,
    ) -> Self {
        Self { config, store, clock, intake, status, tokens: None, not_run: Arc::default(), alerts }
    }

    pub fn with_tokens(mut self, tokens: Option<Arc<crate::oauth::TokenProvider>>) -> Self {
        self.tokens = tokens;
        self
    }

    /// Runs until `shutdown` is cancelled. Never returns an error: every failure is logged
    /// and retried, because the inbox must keep being watched.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(120));
        let mut auth_backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(30 * 60));
        while !shutdown.is_cancelled() {
            // Intake pauses while the disk is full; nothing is lost, the mail waits.
            self.status.wait_while_disk_full(&shutdown).await;
            self.status.set(ImapState::Connecting, None).await;
            let connected = tokio::select! {
                c = connection::connect(&self.config.imap, self.tokens.as_deref()) => c,
                () = shutdown.cancelled() => break,
            };
            let delay = match connected {
                Ok(Connected { session, idle, token }) => {
                    auth_backoff.reset();
                    self.alerts.resolve_or_log(LOGIN_REFUSED).await;
                    let renew_at = token.and_then(|t| t.session_deadline(self.clock.now()));
                    match self.session(session, idle, renew_at, &shutdown, &mut backoff).await {
                        Ok(SessionEnd::Shutdown) => break,
                        Ok(SessionEnd::RenewToken) => {
                            tracing::info!(
                                "The IMAP access token is due for renewal; logging in again with a new one"
                            );
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!("Inbox sync stopped, will reconnect and resume: {e:#}");
                            self.status.note_failure(&e);
                            self.status.set(ImapState::Down, Some(format!("{e:#}"))).await;
                            // One message failing is not the server's trouble, and it is set
                            // aside after MAX_ATTEMPTS: backing off for it would let a flood
                            // of poison messages (anyone can send them) hold up intake for
                            // minutes each, the good mail behind them included.
                            if e.downcast_ref::<MessageFailed>().is_some() {
                                backoff.reset();
                            }
                            backoff.next_delay()
                        }
                    }
                }
                Err(ConnectError::Auth(e)) => {
                    if e.downcast_ref::<crate::oauth::OAuthError>().is_some() {
                        tracing::error!(
                            "IMAP cannot log in to {}: {e:#}; retrying slowly",
                            self.config.imap.username
                        );
                    } else {
                        tracing::error!(
                            "IMAP login refused for {}: {e:#}. Check the username and password (or token); retrying slowly",
                            self.config.imap.username
                        );
                    }
                    self.status.set(ImapState::AuthFailed, Some(format!("{e:#}"))).await;
                    self.alert_login_refused(&format!("{e:#}")).await;
                    auth_backoff.next_delay()
                }
                Err(ConnectError::Other(e)) => {
                    tracing::warn!("Cannot reach the IMAP server: {e:#}");
                    self.status.set(ImapState::Down, Some(format!("{e:#}"))).await;
                    backoff.next_delay()
                }
            };
            tracing::info!("Reconnecting to IMAP in {:.1} s", delay.as_secs_f64());
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => break,
            }
        }
        self.status.set(ImapState::Down, Some("stopped".into())).await;
    }

    /// Tells the operator (once a day while it lasts) that the shared mailbox cannot be
    /// read, since approaches go unlogged until someone fixes the credentials.
    async fn alert_login_refused(&self, error: &str) {
        let imap = &self.config.imap;
        let what_to_check = match imap.auth.oauth() {
            Some(o) => format!(
                "Sign-in uses OAuth2 ({}{}). The error above says which step failed and what to change.",
                o.flow_name(),
                o.client_id().map(|c| format!(", app {c}")).unwrap_or_default()
            ),
            None => "Please check the mailbox password.".to_string(),
        };
        let alert = crate::templates::ImapLoginAlert {
            mailbox: imap.username.clone(),
            host: imap.host.clone(),
            port: imap.port,
            error: error.to_string(),
            fix: what_to_check,
        };
        self.alerts
            .raise_with_or_log(
                LOGIN_REFUSED,
                format!("gatehouse cannot log in to the shared mailbox {}", imap.username),
                "alert_imap_login.txt",
                &alert,
            )
            .await;
    }

    /// One connected session: sync, wait for news, sync again… Returns `Ok` on shutdown, or
    /// when the OAuth2 token is due for renewal at `renew_at`.
    async fn session(
        &self,
        mut session: Session,
        server_idle: bool,
        renew_at: Option<chrono::DateTime<Utc>>,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> anyhow::Result<SessionEnd> {
        // How long this session may still wait for news before its token is due.
        let left = || renew_at.map(|r| (r - self.clock.now()).to_std().unwrap_or_default());
        let imap = &self.config.imap;
        let use_idle = imap.idle && server_idle;
        if imap.idle && !server_idle {
            tracing::warn!(
                "The IMAP server does not support IDLE; polling every {} s",
                imap.poll_interval.as_secs()
            );
        }
        let mut keywords_allowed = false;
        let mut uidvalidity = 0;
        loop {
            let mailbox = timed(
                imap.timeout,
                &format!("Cannot open mailbox {:?}", imap.mailbox),
                session.select(&imap.mailbox),
            )
            .await?;
            let validity = mailbox.uid_validity.context("The server gave no UIDVALIDITY")?;
            if validity != uidvalidity {
                uidvalidity = validity;
                keywords_allowed =
                    mailbox.permanent_flags.iter().any(|f| matches!(f, async_imap::types::Flag::MayCreate));
            }
            let uid_next = mailbox.uid_next.unwrap_or(0);
            while session.unsolicited_responses.try_recv().is_ok() {}

            let processed = self.sync(&mut session, validity, uid_next, keywords_allowed, shutdown).await?;
            // A whole sync worked: the connection is healthy again.
            backoff.reset();
            self.status.synced().await;
            if processed > 0 {
                tracing::info!("Logged {processed} new message(s) from {}", imap.mailbox);
            }
            if shutdown.is_cancelled() {
                let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
                return Ok(SessionEnd::Shutdown);
            }
            if left().is_some_and(|l| l.is_zero()) {
                let _ = tokio::time::timeout(imap.timeout, session.logout()).await;
                return Ok(SessionEnd::RenewToken);
            }
            // Mail that arrived during the sync was announced then (an untagged EXISTS in the
            // middle of a FETCH), and IDLE never announces it again: it would wait for the next
            // arrival. So look again until a sync finds nothing and nothing was announced.
            let announced = std::iter::from_fn(|| session.unsolicited_responses.try_recv().ok())
                .filter(|r| {
                    matches!(
                        r,
                        async_imap::types::UnsolicitedResponse::Exists(_)
                            | async_imap::types::UnsolicitedResponse::Recent(_)
                    )
                })
                .count();
            if processed > 0 || announced > 0 {
                continue;
            }

            if use_idle {
                self.status.set(ImapState::Idle, None).await;
                let mut handle = session.idle();
                timed(imap.timeout, "IDLE refused", handle.init()).await?;
                let wait_for = left().map_or(IDLE_REISSUE, |l| l.min(IDLE_REISSUE));
                let (wait, stop) = handle.wait_with_timeout(wait_for);
                let outcome = tokio::select! {
                    r = tokio::time::timeout(wait_for + Duration::from_secs(5), wait) => Some(r),
                    () = shutdown.cancelled() => None,
                    () = self.retry_asked_for() => None,
                };
                drop(stop);
                if let Some(Ok(r)) = outcome {
                    r.context("IDLE failed")?;
                }
                session = timed(imap.timeout, "Cannot end IDLE", handle.done()).await?;
                if shutdown.is_cancelled() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
                    return Ok(SessionEnd::Shutdown);
                }
            } else {
                self.status.set(ImapState::Polling, None).await;
                let wait_for = left().map_or(imap.poll_interval, |l| l.min(imap.poll_interval));
                tokio::select! {
                    () = tokio::time::sleep(wait_for) => {}
                    () = shutdown.cancelled() => {}
                    () = self.retry_asked_for() => {}
                }
                timed(imap.timeout, "NOOP failed", session.noop()).await?;
            }
        }
    }

    /// Fetches and processes every message above the checkpoint. Returns how many were new.
    async fn sync(
        &self,
        session: &mut Session,
        uidvalidity: u32,
        uid_next: u32,
        keywords_allowed: bool,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<usize> {
        let imap = &self.config.imap;
        let mailbox = imap.mailbox.as_str();
        let retried = self.take_retries().await?;
        let state = match self.store.mailbox_state(mailbox).await? {
            Some(s) if s.uidvalidity == uidvalidity => s,
            Some(old) => {
                tracing::warn!(
                    "UIDVALIDITY of {mailbox} changed ({} → {uidvalidity}): re-reading it; messages already logged are recognised by Message-ID and not logged twice",
                    old.uidvalidity
                );
                let s = MailboxState { uidvalidity, last_uid: 0, backlog_below_uid: 0 };
                self.store.reset_mailbox_state(mailbox, s, self.clock.now()).await?;
                s
            }
            None => {
                // First sight of this mailbox: what is already there is the backlog.
                let s = MailboxState { uidvalidity, last_uid: 0, backlog_below_uid: uid_next };
                self.store.reset_mailbox_state(mailbox, s, self.clock.now()).await?;
                tracing::info!(
                    "First start on {mailbox}: {} message(s) already there are the backlog",
                    uid_next.saturating_sub(1)
                );
                s
            }
        };
        let answer_backlog = self.backlog_mode().await? == Backlog::TreatAsNew;

        // Sizes first, so batches can be bounded in bytes as well as in count.
        let range = format!("{}:*", state.last_uid.saturating_add(1));
        // Keep only (uid, size) as each response arrives: async-imap's responses each hold
        // the whole read buffer they came from, so collecting them first costs ~60 MB for
        // 10,000 messages.
        let last_uid = state.last_uid;
        let mut sizes: Vec<(u32, u64)> = {
            let stream =
                timed(imap.timeout, "UID FETCH failed", session.uid_fetch(&range, "(UID RFC822.SIZE)"))
                    .await?;
            let pairs = stream.try_filter_map(|f| {
                // `N:*` always includes the highest UID, even below N.
                let pair =
                    f.uid.filter(|uid| *uid > last_uid).map(|uid| (uid, u64::from(f.size.unwrap_or(0))));
                futures::future::ready(Ok(pair))
            });
            timed(imap.timeout * 4, "UID FETCH of sizes failed", pairs.try_collect::<Vec<_>>()).await?
        };
        sizes.sort_unstable();

        // Fetching and processing overlap: while one message is stored and processed, the
        // next ones are already being read from the server, so taking in a backlog costs
        // little more than fetching it. In-flight bytes are bounded by `PIPELINE_BYTES`.
        let budget = Arc::new(Semaphore::new(PIPELINE_BYTES.div_ceil(1024)));
        let (arrived_tx, arrived_rx) = mpsc::channel::<Arrived>(BATCH_MESSAGES);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<u32>();
        let job = Job {
            mailbox: mailbox.to_string(),
            uidvalidity,
            backlog_below_uid: state.backlog_below_uid,
            answer_backlog,
            total: sizes.len(),
        };
        // Processing runs as a task of its own, so it works on one core while this task
        // reads from the server on another. When fetching stops (done, or an error), the
        // channel closes and processing finishes what had arrived.
        let processing = tokio::spawn({
            let inbox = self.clone();
            let shutdown = shutdown.clone();
            async move { inbox.process_all(&job, arrived_rx, done_tx, &shutdown).await }
        });
        let fetched = self
            .fetch_all(session, &sizes, keywords_allowed, shutdown, arrived_tx, &mut done_rx, &budget)
            .await;
        let processed = processing.await.context("The inbox's processing task failed")??;
        fetched?;
        let done = drain(&mut done_rx);
        self.mark(session, &done, keywords_allowed).await;
        Ok(processed + retried)
    }

    /// The fetching side of `sync`: batch after batch, marking what was processed meanwhile.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_all(
        &self,
        session: &mut Session,
        sizes: &[(u32, u64)],
        keywords_allowed: bool,
        shutdown: &CancellationToken,
        arrived: mpsc::Sender<Arrived>,
        done: &mut mpsc::UnboundedReceiver<u32>,
        budget: &Arc<Semaphore>,
    ) -> anyhow::Result<()> {
        for batch in batches(sizes) {
            if shutdown.is_cancelled() {
                break;
            }
            let marked = drain(done);
            self.mark(session, &marked, keywords_allowed).await;
            if !self.fetch_batch(session, batch, &arrived, budget).await? {
                break;
            }
        }
        Ok(())
    }

    /// The processing side of `sync`: messages in UID order, in groups of what has already
    /// arrived (at most `GROUP_MESSAGES`), until the fetching side is done or shutdown.
    /// Returns how many were new.
    ///
    /// Each group costs two commits, not two per message: first every raw message is
    /// stored, then all of them are processed in one transaction, each in a step of its own (`Tx::begin_step`) so
    /// one message's failure undoes only its own effects. A message is marked on the server
    /// only once its group is committed. While one group is processed, the next is already
    /// stored and being parsed on the parser's thread.
    async fn process_all(
        &self,
        job: &Job,
        mut arrived: mpsc::Receiver<Arrived>,
        done: mpsc::UnboundedSender<u32>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<usize> {
        let mut processed = 0;
        let mut parsing: Option<Parsing> = None;
        // Thousands of messages on a first start take minutes: say how far along it is (a
        // line every few seconds, and nothing at all for a sync that takes less). Counted
        // per group, so a message costs nothing more.
        let mut progress = crate::progress::Progress::log(
            format!("Taking in messages from {}", job.mailbox),
            job.total as u64,
        );
        loop {
            // With a group in hand, take only what is already here; otherwise wait.
            let next = if parsing.is_some() {
                take_waiting(&mut arrived, Vec::new())
            } else {
                match arrived.recv().await {
                    Some(first) => take_waiting(&mut arrived, vec![first]),
                    None => break,
                }
            };
            if shutdown.is_cancelled() {
                break;
            }
            let started = if next.is_empty() { None } else { Some(self.start_group(job, next).await?) };
            if let Some(group) = parsing.take() {
                let taken = group.group.len() as u64;
                processed += self.finish_group(job, group, &done).await?;
                progress.add(taken);
            }
            parsing = started;
        }
        progress.finish();
        Ok(processed)
    }

    /// Stores a group's raw messages and sets the parser to work on them. Parsed only once
    /// stored: a message that could crash the parser is kept, and its attempt counted.
    ///
    /// A group holding a message that was stored before but never processed (an earlier
    /// attempt failed, or the daemon stopped during it, perhaps because of it) is not parsed
    /// as a group: it is taken one message at a time (`take_one_by_one`), so that a message
    /// which kills the process is found and set aside without counting against the others.
    async fn start_group(&self, job: &Job, mut group: Vec<Arrived>) -> anyhow::Result<Parsing> {
        tracing::debug!("Taking {} message(s) in one transaction", group.len());
        let saved = self.store_raw(job, &group).await?;
        if saved.iter().any(|s| matches!(s, RawSaved::Known { processed: false, .. })) {
            return Ok(Parsing { group, saved, parsed: None });
        }
        let raws = group.iter_mut().map(|m| std::mem::take(&mut m.raw)).collect();
        let intake = self.intake.clone();
        let parsed = tokio::spawn(async move { intake.parse_group(raws).await });
        Ok(Parsing { group, saved, parsed: Some(parsed) })
    }

    /// Processes a parsed group in one transaction and moves the checkpoint past it.
    /// Returns how many messages were new.
    async fn finish_group(
        &self,
        job: &Job,
        Parsing { mut group, saved, parsed }: Parsing,
        done: &mpsc::UnboundedSender<u32>,
    ) -> anyhow::Result<usize> {
        let Some(parsed) = parsed else {
            return self.take_one_by_one(job, &group, &saved, done).await;
        };
        let (raws, parsed) = parsed.await.context("The mail parser's task failed")?;
        for (m, raw) in group.iter_mut().zip(raws) {
            m.raw = raw;
        }
        // Every message new in this group had its first attempt counted when it was stored.
        let counted: Vec<MessageId> =
            saved.iter().filter_map(|s| if let RawSaved::New(id) = s { Some(*id) } else { None }).collect();
        let mut tx = match self.store.begin().await {
            Ok(tx) => tx,
            Err(e) => {
                self.uncount(&counted);
                return Err(e.into());
            }
        };
        let mut new_uids = Vec::new();
        let mut failure = None;
        // The checkpoint moves once per group, past the last message taken.
        let mut last_taken = None;
        for (i, ((m, stored), parsed)) in group.iter().zip(&saved).zip(&parsed).enumerate() {
            let id = match *stored {
                RawSaved::Known { processed: true, .. } => {
                    last_taken = Some(m.uid);
                    continue;
                }
                // (`start_group` sends groups holding a message seen before but not processed
                // down the one-by-one path, so here every message is new.)
                RawSaved::New(id) | RawSaved::Known { id, processed: false } => id,
            };
            let log_only = m.uid < job.backlog_below_uid && !job.answer_backlog;
            match self.take(&mut *tx, id, &m.raw, parsed.as_ref(), log_only, m.internal_date, 1).await {
                Ok(()) => {
                    last_taken = Some(m.uid);
                    new_uids.push(m.uid);
                }
                // Nothing of this group is kept; the mailbox still has it all.
                Err(Failure::Storage(e)) => {
                    drop(tx);
                    self.uncount(&counted);
                    return Err(e);
                }
                // The group up to this message is kept; this one is tried again (one by one,
                // its attempts counted); those after it were not tried yet.
                Err(Failure::Message(e)) => {
                    let untried: Vec<MessageId> = saved
                        .get(i + 1..)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|s| if let RawSaved::New(id) = s { Some(*id) } else { None })
                        .collect();
                    self.uncount(&untried);
                    failure = Some(e);
                    break;
                }
            }
        }
        let committed: anyhow::Result<()> = async {
            if let Some(uid) = last_taken {
                let checkpoint =
                    Checkpoint { mailbox: job.mailbox.clone(), uidvalidity: job.uidvalidity, uid };
                self.intake.advance(&mut *tx, &checkpoint).await?;
            }
            Ok(tx.commit().await?)
        }
        .await;
        if let Err(e) = committed {
            self.uncount(&counted);
            return Err(e);
        }
        self.intake.committed();
        let new = new_uids.len();
        for uid in new_uids {
            // The fetching side marks it between batches (or `sync` after them).
            let _ = done.send(uid);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(new),
        }
    }

    /// A group taken one message at a time, each parsed alone and committed with the
    /// checkpoint past it (see `start_group`). Returns how many messages were new.
    async fn take_one_by_one(
        &self,
        job: &Job,
        group: &[Arrived],
        saved: &[RawSaved],
        done: &mpsc::UnboundedSender<u32>,
    ) -> anyhow::Result<usize> {
        let mut new = 0;
        for (m, saved) in group.iter().zip(saved) {
            let checkpoint =
                Checkpoint { mailbox: job.mailbox.clone(), uidvalidity: job.uidvalidity, uid: m.uid };
            let (id, counted) = match *saved {
                RawSaved::Known { processed: true, .. } => {
                    let mut tx = self.store.begin().await?;
                    self.intake.advance(&mut *tx, &checkpoint).await?;
                    tx.commit().await?;
                    continue;
                }
                RawSaved::New(id) => (id, true),
                RawSaved::Known { id, processed: false } => (id, false),
            };
            let log_only = m.uid < job.backlog_below_uid && !job.answer_backlog;
            let alone = Alone { id, raw: &m.raw, log_only, internal_date: m.internal_date, counted };
            self.take_alone(alone, Some(&checkpoint)).await?;
            new += 1;
            let _ = done.send(m.uid);
        }
        Ok(new)
    }

    /// Processes one stored message in a transaction of its own, its attempt counted and
    /// committed first unless `counted` says storing it did that already. A message whose
    /// earlier attempts all ended with gatehouse stopping (a crash, a kill) is quarantined
    /// without being parsed again. With a checkpoint, it moves in the same transaction.
    async fn take_alone(&self, m: Alone<'_>, checkpoint: Option<&Checkpoint>) -> anyhow::Result<()> {
        let reuse = self.not_run.lock().is_ok_and(|mut not_run| not_run.remove(&m.id));
        let attempts = match (m.counted, reuse) {
            (true, _) => 1,
            (false, true) => self.store.attempts(m.id).await?,
            (false, false) => self.store.count_attempt(m.id).await?,
        };
        let mut tx = match self.store.begin().await {
            Ok(tx) => tx,
            Err(e) => {
                self.uncount(&[m.id]);
                return Err(e.into());
            }
        };
        let taken = if attempts > MAX_ATTEMPTS {
            let why = format!(
                "gatehouse stopped while processing it, {} times (it may be what stops it)",
                attempts - 1
            );
            self.intake.quarantine(&mut *tx, m.id, m.raw, None, &why).await.map_err(Failure::Storage)
        } else {
            let parsed = self.intake.parse_group(vec![m.raw.to_vec()]).await.1.pop().flatten();
            self.take(&mut *tx, m.id, m.raw, parsed.as_ref(), m.log_only, m.internal_date, attempts).await
        };
        let committed = match taken {
            Ok(()) => async {
                if let Some(checkpoint) = checkpoint {
                    self.intake.advance(&mut *tx, checkpoint).await?;
                }
                Ok(tx.commit().await?)
            }
            .await
            .map_err(Failure::Storage),
            Err(e) => Err(e),
        };
        match committed {
            Ok(()) => {
                self.intake.committed();
                Ok(())
            }
            Err(Failure::Storage(e)) => {
                self.uncount(&[m.id]);
                Err(e)
            }
            Err(Failure::Message(e)) => Err(e),
        }
    }

    /// Processes the messages an operator asked to have tried again (`gatehouse messages
    /// retry`), from the database: the checkpoint has moved past them, so the mailbox will
    /// not bring them back. Runs on the watcher's task before the mailbox is read, so nothing
    /// else processes a message meanwhile, and `finish_message` clears the request in the
    /// same transaction as the message's effects: each is processed exactly once.
    async fn take_retries(&self) -> anyhow::Result<usize> {
        let retries = self.store.retries_requested().await?;
        for r in &retries {
            tracing::info!("Processing message {} (UID {}) again, as asked", r.id, r.uid);
            let raw = self.store.raw_message(r.id).await?;
            let alone = Alone {
                id: r.id,
                raw: &raw,
                log_only: r.backlog,
                internal_date: Some(r.fetched_at),
                counted: false,
            };
            self.take_alone(alone, None).await?;
        }
        Ok(retries.len())
    }

    /// Resolves once an operator has asked for a message to be processed again, so a
    /// watcher waiting for mail (IDLE, or between polls) gets on with it within seconds.
    async fn retry_asked_for(&self) {
        loop {
            tokio::time::sleep(RETRY_POLL).await;
            match self.store.retries_requested().await {
                Ok(r) if !r.is_empty() => return,
                Ok(_) => {}
                Err(e) => tracing::debug!("Cannot look for messages to retry: {e:#}"),
            }
        }
    }

    /// Remembers that the attempts last counted for `ids` never got to run because the
    /// database failed: not their fault, so their next attempt reuses that count instead of
    /// adding one (`take_alone`). Kept in memory, not written: a database that cannot take
    /// the message's effects (a full disk) must not be asked to take more writes, which
    /// would crowd out the status that tells the operator why. A restart meanwhile costs
    /// such a message one attempt at most.
    fn uncount(&self, ids: &[MessageId]) {
        if let Ok(mut not_run) = self.not_run.lock() {
            not_run.extend(ids.iter().copied());
        }
    }

    /// Stores a group's raw messages, before anything else can fail, in one commit.
    ///
    /// Attempts are counted here, for a whole group in the same commit as its bytes (a new
    /// message is stored with one attempt counted): parsing and processing follow, so the
    /// count is in the database before the attempt starts and an attempt that kills the
    /// process still counts, without a commit of its own per message on the path every
    /// message takes (a backlog's throughput is about commits). If the process dies in the
    /// middle of a group, every message in it has had an attempt counted, although only one
    /// was to blame: that is why a group holding such a message is then taken one message
    /// at a time (`start_group`), each attempt counted alone, so an innocent message is
    /// overcounted by one at most and only the guilty one reaches `MAX_ATTEMPTS`.
    async fn store_raw(&self, job: &Job, group: &[Arrived]) -> anyhow::Result<Vec<RawSaved>> {
        let mut tx = self.store.begin().await?;
        let mut saved = Vec::with_capacity(group.len());
        for m in group {
            let dedup_key = match &m.message_id {
                Some(id) => format!("mid:{id}"),
                None => format!("sha256:{}", m.content_hash),
            };
            let raw = NewRawMessage {
                mailbox: &job.mailbox,
                uidvalidity: job.uidvalidity,
                uid: m.uid,
                dedup_key,
                message_id: m.message_id.as_deref(),
                content_hash: &m.content_hash,
                core_hash: &m.core_hash,
                raw: &m.raw,
                backlog: m.uid < job.backlog_below_uid && !job.answer_backlog,
                fetched_at: self.clock.now(),
            };
            saved.push(tx.save_raw(&raw).await?);
        }
        tx.commit().await.context("Cannot store the raw messages")?;
        Ok(saved)
    }

    /// Fetches one batch and hands its messages on in UID order (the checkpoint moves only
    /// forward, past messages processed in order). Returns false when the processing side
    /// has stopped.
    async fn fetch_batch(
        &self,
        session: &mut Session,
        batch: &[(u32, u64)],
        arrived: &mpsc::Sender<Arrived>,
        budget: &Arc<Semaphore>,
    ) -> anyhow::Result<bool> {
        let imap = &self.config.imap;
        let set = batch.iter().map(|(uid, _)| uid.to_string()).collect::<Vec<_>>().join(",");
        let expected: Vec<u32> = batch.iter().map(|(uid, _)| *uid).collect();
        let mut next_expected = 0;
        // Servers answer in UID order; anything early waits here for the ones before it.
        let mut early: BTreeMap<u32, Arrived> = BTreeMap::new();
        let mut stream = timed(
            imap.timeout,
            "UID FETCH failed",
            session.uid_fetch(&set, "(UID INTERNALDATE BODY.PEEK[])"),
        )
        .await?;
        loop {
            let next = timed(imap.timeout, "UID FETCH of messages failed", stream.try_next()).await?;
            let Some(fetch) = next else { break };
            let Some(uid) = fetch.uid else { continue };
            let Some(raw) = fetch.body() else {
                tracing::warn!("UID {uid} in {} came back without a body; will retry", imap.mailbox);
                anyhow::bail!("UID {uid} fetched without a body");
            };
            let permit = budget
                .clone()
                .acquire_many_owned(kib(raw.len()))
                .await
                .context("The fetch budget was closed")?;
            // Worked out here, while the processing task is busy with the messages before.
            let m = Arrived {
                uid,
                content_hash: hex::encode(Sha256::digest(raw)),
                core_hash: dedup::core_hash(raw),
                message_id: dedup::message_id(raw),
                raw: raw.to_vec(),
                internal_date: fetch.internal_date().map(|d| d.with_timezone(&Utc)),
                _budget: permit,
            };
            drop(fetch);
            early.insert(uid, m);
            // Hand on everything that is now in order.
            while let Some(uid) = expected.get(next_expected) {
                let Some(m) = early.remove(uid) else { break };
                next_expected += 1;
                if arrived.send(m).await.is_err() {
                    return Ok(false);
                }
            }
        }
        // What is left came after a UID the server did not return (expunged meanwhile).
        for m in early.into_values() {
            if arrived.send(m).await.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Processes the stored message `id` in `tx`, in a step of its own (the caller
    /// moves the checkpoint). `attempts` is this attempt's number: when it fails and that was
    /// the last allowed, the message is quarantined instead, in `tx`.
    #[allow(clippy::too_many_arguments)]
    async fn take(
        &self,
        tx: &mut dyn Tx,
        id: MessageId,
        raw: &[u8],
        parsed: Option<&ParseResult>,
        log_only: bool,
        internal_date: Option<chrono::DateTime<Utc>>,
        attempts: u32,
    ) -> Result<(), Failure> {
        let step = tx.begin_step().await.map_err(|e| Failure::Storage(e.into()))?;
        let result = self.intake.process(tx, id, raw, parsed, log_only, internal_date).await;
        tx.end_step(step, result.is_ok()).await.map_err(|e| Failure::Storage(e.into()))?;
        let Err(e) = result else {
            return Ok(());
        };
        if crate::store::is_storage_trouble(&e) {
            // Not this message's fault: keep it, and retry once the database is usable.
            return Err(Failure::Storage(e.context("The database cannot be written (is the disk full?)")));
        }
        if attempts >= MAX_ATTEMPTS {
            let why = format!("processing failed {attempts} times: {e:#}");
            self.intake.quarantine(tx, id, raw, parsed, &why).await.map_err(Failure::Storage)?;
            Ok(())
        } else {
            tracing::warn!("Message {id}: attempt {attempts} of {MAX_ATTEMPTS} failed: {e:#}");
            Err(Failure::Message(e.context(MessageFailed(id))))
        }
    }

    /// Marks processed messages as the operator chose. Failure here is only logged: the
    /// message is already safely recorded.
    async fn mark(&self, session: &mut Session, uids: &[u32], keywords_allowed: bool) {
        if uids.is_empty() {
            return;
        }
        let imap = &self.config.imap;
        let set = uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let result: anyhow::Result<()> = async {
            match &imap.after_processing {
                AfterProcessing::Keep if keywords_allowed => {
                    let s = timed(
                        imap.timeout,
                        "STORE failed",
                        session.uid_store(&set, "+FLAGS.SILENT ($Gatehouse)"),
                    )
                    .await?;
                    timed(imap.timeout, "STORE failed", s.try_collect::<Vec<_>>()).await?;
                }
                AfterProcessing::Keep => {}
                AfterProcessing::Seen => {
                    let flags = if keywords_allowed {
                        "+FLAGS.SILENT (\\Seen $Gatehouse)"
                    } else {
                        "+FLAGS.SILENT (\\Seen)"
                    };
                    let s = timed(imap.timeout, "STORE failed", session.uid_store(&set, flags)).await?;
                    timed(imap.timeout, "STORE failed", s.try_collect::<Vec<_>>()).await?;
                }
                AfterProcessing::Move(folder) => {
                    timed(
                        imap.timeout,
                        &format!("Cannot move messages to {folder:?}"),
                        session.uid_mv(&set, folder),
                    )
                    .await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!("Could not mark processed messages ({set}): {e:#}");
        }
    }

    /// The backlog choice made at the very first start, kept so that a later config change
    /// cannot suddenly answer years of old mail.
    async fn backlog_mode(&self) -> anyhow::Result<Backlog> {
        let configured = match self.config.imap.backlog {
            Backlog::LogOnly => "log_only",
            Backlog::TreatAsNew => "treat_as_new",
        };
        let kept = self.store.init_meta("backlog", configured).await?;
        Ok(if kept == "treat_as_new" { Backlog::TreatAsNew } else { Backlog::LogOnly })
    }
}

/// What `sync` is working through: one mailbox at one UIDVALIDITY.
struct Job {
    mailbox: String,
    uidvalidity: u32,
    backlog_below_uid: u32,
    answer_backlog: bool,
    /// How many messages this sync fetches, for the progress lines.
    total: usize,
}

/// A stored group on its way through the parser (`parsed`), or to be taken one message at
/// a time (`None`, see `Inbox::start_group`).
struct Parsing {
    group: Vec<Arrived>,
    saved: Vec<RawSaved>,
    parsed: Option<tokio::task::JoinHandle<ParsedGroup>>,
}

/// One stored message to process in a transaction of its own.
struct Alone<'a> {
    id: MessageId,
    raw: &'a [u8],
    log_only: bool,
    internal_date: Option<chrono::DateTime<Utc>>,
    /// Whether this attempt was counted already (when the message was stored).
    counted: bool,
}

/// Why a message could not be taken: the database (nothing of its group can be kept), or
/// the message itself (the group before it is kept, and it is tried again).
enum Failure {
    Storage(anyhow::Error),
    Message(anyhow::Error),
}

/// The context of a failure that was one message's, not the server's or the database's:
/// the inbox retries it at once rather than backing off (see [`Inbox::run`]).
#[derive(Debug)]
struct MessageFailed(MessageId);

impl std::fmt::Display for MessageFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Processing message {}", self.0)
    }
}

/// A message read from the server, on its way to being stored and processed.
struct Arrived {
    uid: u32,
    raw: Vec<u8>,
    /// SHA-256 of `raw`, hex, its `dedup::core_hash` and its Message-ID: what recognises
    /// it if seen again.
    content_hash: String,
    core_hash: String,
    message_id: Option<String>,
    internal_date: Option<chrono::DateTime<Utc>>,
    /// Its share of `PIPELINE_BYTES`, given back once it is processed.
    _budget: OwnedSemaphorePermit,
}

/// `bytes` in whole KiB for the fetch budget, at least 1, at most the whole budget (a message
/// bigger than the budget is taken alone).
fn kib(bytes: usize) -> u32 {
    let whole = PIPELINE_BYTES.div_ceil(1024);
    u32::try_from(bytes.div_ceil(1024).clamp(1, whole)).unwrap_or(u32::MAX)
}

/// `group` and whatever else has already arrived, up to `GROUP_MESSAGES`, without waiting.
fn take_waiting(arrived: &mut mpsc::Receiver<Arrived>, mut group: Vec<Arrived>) -> Vec<Arrived> {
    while group.len() < GROUP_MESSAGES {
        match arrived.try_recv() {
            Ok(m) => group.push(m),
            Err(_) => break,
        }
    }
    group
}

/// Everything waiting in the channel, without waiting for more.
fn drain(rx: &mut mpsc::UnboundedReceiver<u32>) -> Vec<u32> {
    let mut out = Vec::new();
    while let Ok(uid) = rx.try_recv() {
        out.push(uid);
    }
    out
}

/// Splits (uid, size) pairs into fetch batches bounded in count and bytes; a message larger
/// than the byte bound goes alone.
fn batches(sizes: &[(u32, u64)]) -> Vec<&[(u32, u64)]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, (_, size)) in sizes.iter().enumerate() {
        let count = i - start;
        if count > 0 && (count >= BATCH_MESSAGES || bytes + size > BATCH_BYTES) {
            out.push(&sizes[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        out.push(&sizes[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        let small: Vec<(u32, u64)> = (1..=250).map(|u| (u, 1000)).collect();
        let b = batches(&small);
        assert_eq!(b.iter().map(|b| b.len()).collect::<Vec<_>>(), [100, 100, 50]);
        let big = [(1, 1000), (2, 9 * 1024 * 1024), (3, 1000), (4, 1000)];
        let b = batches(&big);
        assert_eq!(b.iter().map(|b| b.len()).collect::<Vec<_>>(), [1, 1, 2]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn backoff_grows_to_its_cap_and_never_waits_zero() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(120));
        let delays: Vec<_> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(500)));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(120)));
        assert!(delays[11] >= Duration::from_secs(60));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
