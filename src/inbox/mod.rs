//! Watching the shared mailbox: every message in it is stored, processed and checkpointed
//! exactly once, whatever happens to the connection or the daemon.
//!
//! The loop: connect → SELECT → fetch every UID above the checkpoint in size-bounded
//! batches → for each message store the raw bytes first, then process it (classification,
//! request, events and the checkpoint in one transaction) → IDLE (or sleep when the server
//! has no IDLE) → repeat. Any error drops the connection and reconnects with exponential
//! backoff and jitter; a refused login backs off much harder and is shown in
//! `gatehouse status`. A message whose Message-ID (or bytes) was seen before is never
//! processed twice, which covers UIDVALIDITY changes and rebuilt mailboxes.
//!
//! Mail is never deleted from the shared mailbox: people read it too.

pub mod connection;
pub mod dedup;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use futures::TryStreamExt as _;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::{AfterProcessing, Backlog, Config};
use crate::requests::{Checkpoint, Processor};
use crate::store::{MailboxState, NewRawMessage, RawSaved, SharedStore};
use connection::{ConnectError, Session, timed};

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
/// Processing attempts before a message that keeps failing is recorded as unparseable, so
/// one poisoned message cannot stop the inbox.
const MAX_ATTEMPTS: u32 = 3;

/// Exponential backoff with full jitter.
#[derive(Debug)]
struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    fn new(base: Duration, cap: Duration) -> Self {
        Self { attempt: 0, base, cap }
    }

    fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = exp.min(self.cap);
        // Half fixed, half random: spreads reconnects without ever retrying instantly.
        let half = ceiling / 2;
        half + Duration::from_millis(rand::rng().random_range(0..=half.as_millis().max(1) as u64))
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The inbox watcher task.
#[derive(Debug, Clone)]
pub struct Inbox {
    config: Arc<Config>,
    store: SharedStore,
    processor: Arc<Processor>,
    status: crate::daemon::StatusBoard,
}

impl Inbox {
    pub fn new(
        config: Arc<Config>,
        store: SharedStore,
        processor: Arc<Processor>,
        status: crate::daemon::StatusBoard,
    ) -> Self {
        Self { config, store, processor, status }
    }

    /// Runs until `shutdown` is cancelled. Never returns an error: every failure is logged
    /// and retried, because the inbox must keep being watched.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(120));
        let mut auth_backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(30 * 60));
        let mut attempts: HashMap<i64, u32> = HashMap::new();
        while !shutdown.is_cancelled() {
            self.status.set(ImapState::Connecting, None).await;
            let connected = tokio::select! {
                c = connection::connect(&self.config.imap) => c,
                () = shutdown.cancelled() => break,
            };
            let delay = match connected {
                Ok((session, idle)) => {
                    auth_backoff.reset();
                    match self.session(session, idle, &shutdown, &mut backoff, &mut attempts).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!("Inbox sync stopped, will reconnect and resume: {e:#}");
                            self.status.set(ImapState::Down, Some(format!("{e:#}"))).await;
                            backoff.next_delay()
                        }
                    }
                }
                Err(ConnectError::Auth(e)) => {
                    tracing::error!(
                        "IMAP login refused for {}: {e:#}. Check the username and password (or token); retrying slowly",
                        self.config.imap.username
                    );
                    self.status.set(ImapState::AuthFailed, Some(format!("{e:#}"))).await;
                    if auth_backoff.attempt == 0 {
                        self.alert_login_refused(&format!("{e:#}")).await;
                    }
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

    /// Tells the gatekeepers (once per run of failures) that the shared mailbox cannot be
    /// read, since approaches go unlogged until someone fixes the credentials.
    async fn alert_login_refused(&self, error: &str) {
        let imap = &self.config.imap;
        let draft = crate::outbox::Draft {
            kind: "system_alert",
            request_id: None,
            to: self.config.gatekeepers.iter().map(|g| (None, g.to_string())).collect(),
            reply_to: None,
            subject: format!("gatehouse cannot log in to the shared mailbox {}", imap.username),
            text: format!(
                "gatehouse could not log in to the shared mailbox, so new approaches are not being logged or answered.\n\nMailbox: {} on {}:{}\nError:   {error}\n\nPlease ask whoever looks after gatehouse to check the mailbox password (or app registration) and run `gatehouse check`. gatehouse keeps trying and will pick up everything that arrived in the meantime.\n",
                imap.username, imap.host, imap.port
            ),
            html: None,
            in_reply_to: None,
            references: Vec::new(),
            auto_submitted: crate::outbox::AutoSubmitted::Generated,
            attachments: Vec::new(),
        };
        let result: anyhow::Result<()> = async {
            let mail = crate::outbox::Composer::new(self.config.clone()).compose(&draft)?;
            let mut tx = self.store.begin().await?;
            tx.enqueue(&mail, Utc::now()).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::error!("Cannot warn the gatekeepers about the refused login: {e:#}");
        }
    }

    /// One connected session: sync, wait for news, sync again… Returns `Ok` only on shutdown.
    async fn session(
        &self,
        mut session: Session,
        server_idle: bool,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
        attempts: &mut HashMap<i64, u32>,
    ) -> anyhow::Result<()> {
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

            let processed =
                self.sync(&mut session, validity, uid_next, keywords_allowed, shutdown, attempts).await?;
            // A whole sync worked: the connection is healthy again.
            backoff.reset();
            if processed > 0 {
                tracing::info!("Logged {processed} new message(s) from {}", imap.mailbox);
            }
            if shutdown.is_cancelled() {
                let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
                return Ok(());
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
                let (wait, stop) = handle.wait_with_timeout(IDLE_REISSUE);
                let outcome = tokio::select! {
                    r = tokio::time::timeout(IDLE_REISSUE, wait) => Some(r),
                    () = shutdown.cancelled() => None,
                };
                drop(stop);
                if let Some(Ok(r)) = outcome {
                    r.context("IDLE failed")?;
                }
                session = timed(imap.timeout, "Cannot end IDLE", handle.done()).await?;
                if shutdown.is_cancelled() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
                    return Ok(());
                }
            } else {
                self.status.set(ImapState::Polling, None).await;
                tokio::select! {
                    () = tokio::time::sleep(imap.poll_interval) => {}
                    () = shutdown.cancelled() => {}
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
        attempts: &mut HashMap<i64, u32>,
    ) -> anyhow::Result<usize> {
        let imap = &self.config.imap;
        let mailbox = imap.mailbox.as_str();
        let state = match self.store.mailbox_state(mailbox).await? {
            Some(s) if s.uidvalidity == uidvalidity => s,
            Some(old) => {
                tracing::warn!(
                    "UIDVALIDITY of {mailbox} changed ({} → {uidvalidity}): re-reading it; messages already logged are recognised by Message-ID and not logged twice",
                    old.uidvalidity
                );
                let s = MailboxState { uidvalidity, last_uid: 0, backlog_below_uid: 0 };
                self.store.reset_mailbox_state(mailbox, s).await?;
                s
            }
            None => {
                // First sight of this mailbox: what is already there is the backlog.
                let s = MailboxState { uidvalidity, last_uid: 0, backlog_below_uid: uid_next };
                self.store.reset_mailbox_state(mailbox, s).await?;
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

        let mut processed = 0;
        for batch in batches(&sizes) {
            if shutdown.is_cancelled() {
                break;
            }
            let set = batch.iter().map(|(uid, _)| uid.to_string()).collect::<Vec<_>>().join(",");
            let fetched: Vec<_> = {
                let stream = timed(
                    imap.timeout,
                    "UID FETCH failed",
                    session.uid_fetch(&set, "(UID INTERNALDATE BODY.PEEK[])"),
                )
                .await?;
                timed(imap.timeout * 4, "UID FETCH of messages failed", stream.try_collect::<Vec<_>>())
                    .await?
            };
            let mut by_uid: Vec<_> = fetched.iter().filter_map(|f| Some((f.uid?, f))).collect();
            by_uid.sort_unstable_by_key(|(uid, _)| *uid);
            let mut to_mark = Vec::new();
            for (uid, fetch) in by_uid {
                let Some(raw) = fetch.body() else {
                    tracing::warn!("UID {uid} in {mailbox} came back without a body; will retry");
                    anyhow::bail!("UID {uid} fetched without a body");
                };
                let backlog = uid < state.backlog_below_uid;
                let internal_date = fetch.internal_date().map(|d| d.with_timezone(&Utc));
                let checkpoint = Checkpoint { mailbox: mailbox.to_string(), uidvalidity, uid };
                if self.take(raw, &checkpoint, backlog && !answer_backlog, internal_date, attempts).await? {
                    processed += 1;
                    to_mark.push(uid);
                }
            }
            self.mark(session, &to_mark, keywords_allowed).await;
        }
        Ok(processed)
    }

    /// Stores one message raw, processes it once, and advances the checkpoint. Returns
    /// whether it was new.
    async fn take(
        &self,
        raw: &[u8],
        checkpoint: &Checkpoint,
        log_only: bool,
        internal_date: Option<chrono::DateTime<Utc>>,
        attempts: &mut HashMap<i64, u32>,
    ) -> anyhow::Result<bool> {
        let content_hash = hex::encode(Sha256::digest(raw));
        let message_id = dedup::message_id(raw);
        let dedup_key = match &message_id {
            Some(id) => format!("mid:{id}"),
            None => format!("sha256:{content_hash}"),
        };
        let saved = self
            .store
            .save_raw(&NewRawMessage {
                mailbox: &checkpoint.mailbox,
                uidvalidity: checkpoint.uidvalidity,
                uid: checkpoint.uid,
                dedup_key,
                message_id,
                content_hash,
                raw,
                backlog: log_only,
                fetched_at: Utc::now(),
            })
            .await?;
        let id = match saved {
            RawSaved::New(id) | RawSaved::Known { id, processed: false } => id,
            RawSaved::Known { processed: true, .. } => {
                self.processor.advance(checkpoint).await?;
                return Ok(false);
            }
        };
        match self.processor.process(id, raw, log_only, internal_date, Some(checkpoint)).await {
            Ok(_) => {
                attempts.remove(&id);
                Ok(true)
            }
            Err(e) if crate::store::is_storage_trouble(&e) => {
                // Not this message's fault: keep it, and retry once the database is usable.
                Err(e.context("The database cannot be written (is the disk full?)"))
            }
            Err(e) => {
                let n = attempts.entry(id).or_insert(0);
                *n += 1;
                if *n >= MAX_ATTEMPTS {
                    tracing::error!(
                        "Message {id} failed {n} times ({e:#}); recording it as unparseable so the inbox can move on"
                    );
                    self.processor.give_up(id, &format!("{e:#}"), Some(checkpoint)).await?;
                    attempts.remove(&id);
                    Ok(true)
                } else {
                    Err(e.context(format!("Processing message {id} (UID {})", checkpoint.uid)))
                }
            }
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
