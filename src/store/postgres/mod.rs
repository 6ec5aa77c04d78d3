//! The PostgreSQL backend (`[service] database_url`), for nodes that share one database.
//!
//! Each query is a small function in the file of its aggregate (`messages`, `requests`,
//! `outbox`, `papers`, `meta`, `lease`) taking a `&mut PgConnection` and plain values; the [`Store`]
//! and [`Tx`] impls here only pick the connection (the pool's, or the transaction's) and call
//! them. Where SQLite relies on its single writer (reference numbers, claiming the outbox),
//! these queries take row locks instead, so several writers stay correct.
//!
//! Everything the SQLite store does is here but `backup_to`, which refuses: PostgreSQL is
//! backed up with its own tools. Retention's purge and erasure run in a transaction of their
//! own (`retention`); `reclaim_space` is a plain VACUUM.

mod error;
mod ids;
pub mod lease;
#[macro_use]
mod messages;
mod meta;
mod outbox;
mod papers;
#[macro_use]
mod requests;
mod retention;
mod status;
pub(crate) mod text;

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{Postgres, Transaction};

use super::retention::{BackupDone, Cutoffs, Erased, PersonData, PurgeCounts, Reclaimed};
use super::{
    Actor, AlertRow, AnsweredCounts, Candidate, DaemonStatus, EventKind, EventRow, LastOutgoing,
    MailboxState, MessageId, MessageOutcome, MessageRow, Metrics, NewOutgoing, NewRawMessage, NewRequest,
    OutboxCounts, OutboxId, OutboxItem, PaperCounts, PaperRow, RawSaved, RequestFilter, RequestId,
    RequestRow, RequestText, RetryMessage, RetryRequest, SmtpOutcome, Step, Store, StoreError, StoreResult,
    ThreadDirection, Tx,
};
use crate::config::{DatabaseSettings, DatabaseTls};
use crate::domain::{Decision, EmailAddress, Status};
use error::sorted;

/// The schema changes, shared with `store::copy`, which applies them inside its own transaction.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections kept open: the daemon's intake, outbox, schedules and lease, plus CLI reads.
const MAX_CONNECTIONS: u32 = 10;
/// How long a caller waits for a free connection (or for the server) before it is told.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Earlier requests compared with a new one for duplicate detection, at most (as SQLite).
const DUPLICATE_CANDIDATES: i64 = 200;

/// A PostgreSQL database shared by any number of gatehouse nodes.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    describe: String,
    /// Set on the daemon's store ([`PgStore::fenced`]): the lease this node holds, as the
    /// leadership loop publishes it. Every write that matters then checks, in its own
    /// transaction, that the lease's token is still current ([`lease::check_fence`]); the
    /// CLI's store has none and writes as an operator.
    fence: Option<Fence>,
}

/// What [`lease::keep`] publishes: the lease held now, `None` on a standby.
pub type Fence = tokio::sync::watch::Receiver<Option<lease::Holding>>;

/// The token this node may write with now: its lease's, while live by its own clock.
fn leading_token(fence: &Fence) -> anyhow::Result<i64> {
    match *fence.borrow() {
        Some(held) if held.is_live(std::time::Instant::now()) => Ok(held.token),
        _ => anyhow::bail!("This node does not hold the leader lease: a standby writes nothing"),
    }
}

/// What to connect with: the URL's user, host, port and database, the password from its
/// configured source (or `$PGPASSWORD`), and TLS exactly as the config says; any `PGSSLMODE`
/// in the environment is overridden, so verification is never turned off behind its back.
pub fn connect_options(db: &DatabaseSettings) -> anyhow::Result<PgConnectOptions> {
    let mut options: PgConnectOptions =
        db.url.parse().with_context(|| format!("Cannot read the database URL {}", db.url))?;
    if let Some(password) = db.password()? {
        options = options.password(password.expose());
    }
    options = match &db.tls {
        DatabaseTls::VerifyFull { ca_file } => {
            let options = options.ssl_mode(PgSslMode::VerifyFull);
            match ca_file {
                Some(ca) => options.ssl_root_cert(ca),
                None => options,
            }
        }
        DatabaseTls::Off => options.ssl_mode(PgSslMode::Disable),
    };
    Ok(options.application_name("gatehouse"))
}

impl PgStore {
    /// Connects (one connection at once, so a wrong password or certificate is reported now,
    /// not at the first query) and brings the schema up to date.
    pub async fn open(db: &DatabaseSettings) -> anyhow::Result<Self> {
        let store = Self::connect(connect_options(db)?, &db.url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without migrating.
    pub async fn connect(options: PgConnectOptions, describe: &str) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .with_context(|| format!("Cannot connect to the database {describe}"))?;
        Ok(Self { pool, describe: describe.to_string(), fence: None })
    }

    /// This store with its writes fenced by the lease `holding` publishes (the daemon's).
    pub fn fenced(mut self, holding: Fence) -> Self {
        self.fence = Some(holding);
        self
    }

    /// A connection from the pool, for the lease and other callers of this module's queries.
    pub async fn connection(&self) -> anyhow::Result<sqlx::pool::PoolConnection<Postgres>> {
        self.pool.acquire().await.with_context(|| format!("Cannot reach the database {}", self.describe))
    }
}

/// Calls query function `$f` on a pooled connection with the rest of the arguments, and
/// sorts any failure (reaching the database included) into a [`StoreError`].
macro_rules! pooled {
    ($self:ident, $f:path $(, $arg:expr)* $(,)?) => {
        sorted(async { $f(&mut *$self.connection().await?, $($arg),*).await }.await)
    };
}

/// Like [`pooled!`] for a write that matters: on a fenced store it runs in a transaction
/// that checks the lease before it commits, so a node that lost the lease changes nothing.
macro_rules! fenced {
    ($self:ident, $f:path $(, $arg:expr)* $(,)?) => {
        match &$self.fence {
            None => pooled!($self, $f $(, $arg)*),
            Some(fence) => sorted(
                async {
                    let mut tx = $self.pool.begin().await.context("Cannot start a transaction")?;
                    let out = $f(&mut tx, $($arg),*).await?;
                    lease::check_fence(&mut tx, leading_token(fence)?).await?;
                    tx.commit().await.context("Cannot commit")?;
                    Ok(out)
                }
                .await,
            ),
        }
    };
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> StoreResult<usize> {
        let result: anyhow::Result<usize> = async {
            let count = "SELECT COUNT(*) FROM _sqlx_migrations WHERE success";
            // The table is not there before the first migration.
            let before: i64 = sqlx::query_scalar(count).fetch_one(&self.pool).await.unwrap_or(0);
            // The migrator holds an advisory lock while it works: nodes starting together
            // wait for each other instead of applying the same migration twice.
            MIGRATOR.run(&self.pool).await.context("Cannot apply the database migrations")?;
            let after: i64 =
                sqlx::query_scalar(count).fetch_one(&self.pool).await.context("Cannot count migrations")?;
            Ok(usize::try_from(after - before).unwrap_or(0))
        }
        .await;
        sorted(result)
    }

    async fn ping(&self) -> StoreResult<()> {
        pooled!(self, meta::ping)
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn begin(&self) -> StoreResult<Box<dyn Tx>> {
        let tx = sorted(self.pool.begin().await.context("Cannot start a transaction"))?;
        Ok(Box::new(PgTx { tx, fence: self.fence.clone() }))
    }

    async fn list_requests(&self, filter: &RequestFilter) -> StoreResult<Vec<RequestRow>> {
        pooled!(self, requests::list, filter.status.map(Status::as_str))
    }
    async fn find_request(&self, reference: &str) -> StoreResult<Option<RequestRow>> {
        pooled!(self, requests::find, reference)
    }
    async fn awaiting_triage(&self) -> StoreResult<Vec<RequestRow>> {
        pooled!(self, requests::awaiting_triage)
    }
    async fn received_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<RequestRow>> {
        pooled!(self, requests::received_between, from, to)
    }
    async fn decided_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<RequestRow>> {
        pooled!(self, requests::decided_between, from, to)
    }
    async fn with_status(&self, status: Status, limit: i64) -> StoreResult<(Vec<RequestRow>, usize)> {
        pooled!(self, requests::with_status, status, limit)
    }
    async fn agenda_for(&self, date: NaiveDate) -> StoreResult<Vec<RequestRow>> {
        pooled!(self, requests::agenda_for, date)
    }
    async fn arrivals_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<DateTime<Utc>>> {
        pooled!(self, requests::arrivals_since, since)
    }

    async fn list_messages(&self) -> StoreResult<Vec<MessageRow>> {
        pooled!(self, messages::list, None)
    }
    async fn request_messages(&self, request_id: RequestId) -> StoreResult<Vec<MessageRow>> {
        pooled!(self, messages::list, Some(request_id))
    }
    async fn auto_replies_by_wording(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<MessageRow>> {
        pooled!(self, messages::auto_replies_by_wording, from, to)
    }
    async fn mailbox_state(&self, mailbox: &str) -> StoreResult<Option<MailboxState>> {
        pooled!(self, messages::mailbox_state, mailbox)
    }
    async fn reset_mailbox_state(
        &self,
        mailbox: &str,
        state: MailboxState,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        fenced!(self, messages::reset_mailbox_state, mailbox, state, at)
    }
    async fn raw_message(&self, id: MessageId) -> StoreResult<Vec<u8>> {
        pooled!(self, messages::raw, id)
    }
    async fn count_attempt(&self, id: MessageId) -> StoreResult<u32> {
        fenced!(self, messages::count_attempt, id)
    }
    async fn attempts(&self, id: MessageId) -> StoreResult<u32> {
        pooled!(self, messages::attempts, id)
    }
    async fn request_retry(&self, id: MessageId, at: DateTime<Utc>) -> StoreResult<RetryRequest> {
        fenced!(self, messages::request_retry, id, at)
    }
    async fn retries_requested(&self) -> StoreResult<Vec<RetryMessage>> {
        pooled!(self, messages::retries_requested)
    }

    async fn requeue_interrupted(&self) -> StoreResult<u64> {
        fenced!(self, outbox::requeue_interrupted)
    }
    async fn claim_due(&self, now: DateTime<Utc>, limit: i64) -> StoreResult<Vec<OutboxItem>> {
        fenced!(self, outbox::claim_due, now, limit)
    }
    async fn mark_in_flight(&self, id: OutboxId) -> StoreResult<()> {
        fenced!(self, outbox::mark_in_flight, id)
    }
    async fn mark_sent(&self, id: OutboxId, at: DateTime<Utc>) -> StoreResult<()> {
        fenced!(self, outbox::mark_sent, id, at)
    }
    async fn mark_retry(&self, id: OutboxId, next_attempt_at: DateTime<Utc>, error: &str) -> StoreResult<()> {
        fenced!(self, outbox::mark_retry, id, next_attempt_at, error)
    }
    async fn mark_failed(&self, id: OutboxId, error: &str) -> StoreResult<()> {
        fenced!(self, outbox::mark_failed, id, error)
    }
    async fn outbox_counts(&self) -> StoreResult<OutboxCounts> {
        pooled!(self, outbox::counts)
    }
    async fn outbox_failing(&self, failing_after: i64) -> StoreResult<i64> {
        pooled!(self, outbox::failing, failing_after)
    }
    async fn last_outgoing(&self, request_id: RequestId, kind: &str) -> StoreResult<Option<LastOutgoing>> {
        pooled!(self, outbox::last_outgoing, request_id, kind)
    }

    async fn request_events(&self, request_id: RequestId) -> StoreResult<Vec<EventRow>> {
        pooled!(self, requests::events, request_id)
    }
    async fn events_of_kind(
        &self,
        request_ids: &[RequestId],
        kind: EventKind,
    ) -> StoreResult<Vec<(RequestId, EventRow)>> {
        pooled!(self, requests::events_of_kind, request_ids, kind)
    }
    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
        pooled!(self, meta::get, key)
    }
    async fn init_meta(&self, key: &str, value: &str) -> StoreResult<String> {
        pooled!(self, meta::init, key, value)
    }
    async fn set_daemon_status(
        &self,
        imap: &str,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        pooled!(self, status::set_daemon, imap, detail, now)
    }
    async fn daemon_status(&self) -> StoreResult<Option<DaemonStatus>> {
        pooled!(self, status::daemon)
    }
    async fn set_smtp_status(&self, outcome: SmtpOutcome<'_>, at: DateTime<Utc>) -> StoreResult<()> {
        pooled!(self, status::set_smtp, outcome, at)
    }
    async fn metrics(&self, failing_after: i64) -> StoreResult<Metrics> {
        pooled!(self, status::metrics, failing_after)
    }
    async fn open_alerts(&self) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
        pooled!(self, status::open_alerts)
    }
    async fn last_summary(&self) -> StoreResult<Option<DateTime<Utc>>> {
        pooled!(self, status::last_summary)
    }
    async fn last_covered(&self, kind: &str) -> StoreResult<Option<DateTime<Utc>>> {
        pooled!(self, status::last_covered, kind)
    }
    async fn summary_sent(&self, kind: &str, period: &str) -> StoreResult<bool> {
        pooled!(self, status::summary_sent, kind, period)
    }
    async fn agenda_told(&self, date: NaiveDate) -> StoreResult<Option<Vec<RequestRow>>> {
        pooled!(self, requests::agenda_told, date)
    }

    async fn purge_preview(&self, cutoffs: Cutoffs) -> StoreResult<PurgeCounts> {
        pooled!(self, retention::preview, &cutoffs)
    }
    async fn purge(&self, cutoffs: Cutoffs, actor: Actor, at: DateTime<Utc>) -> StoreResult<PurgeCounts> {
        let result: anyhow::Result<PurgeCounts> = async {
            let mut tx = self.pool.begin().await.context("Cannot start the purge")?;
            let counts = retention::purge(&mut tx, &cutoffs, &actor.to_string(), at).await?;
            if let Some(fence) = &self.fence {
                lease::check_fence(&mut tx, leading_token(fence)?).await?;
            }
            tx.commit().await.context("Cannot commit the purge")?;
            Ok(counts)
        }
        .await;
        sorted(result)
    }
    async fn reclaim_space(&self) -> StoreResult<Reclaimed> {
        pooled!(self, retention::reclaim)
    }
    async fn person_data(&self, person: &EmailAddress) -> StoreResult<PersonData> {
        pooled!(self, retention::person_data, person)
    }
    async fn erase_request(
        &self,
        reference: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<Erased>> {
        let result: anyhow::Result<Option<Erased>> = async {
            let mut tx = self.pool.begin().await.context("Cannot start the erasure")?;
            let erased = retention::erase(&mut tx, reference, &actor.to_string(), at).await?;
            tx.commit().await.context("Cannot commit the erasure")?;
            Ok(erased)
        }
        .await;
        sorted(result)
    }
    async fn add_service_event(
        &self,
        at: DateTime<Utc>,
        actor: Actor,
        kind: EventKind,
        detail: &str,
    ) -> StoreResult<()> {
        fenced!(self, retention::add_service_event, at, &actor.to_string(), kind, detail)
    }
    async fn service_events(&self) -> StoreResult<Vec<EventRow>> {
        pooled!(self, retention::service_events)
    }
    async fn paper_counts(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<PaperCounts> {
        pooled!(self, papers::counts, from, to)
    }
    async fn backup_to(&self, _dest: &Path) -> StoreResult<BackupDone> {
        Err(StoreError::Failed(anyhow::anyhow!(
            "gatehouse backup copies a SQLite database; back PostgreSQL up with its own tools (pg_dump)"
        )))
    }
}

/// A transaction on one pooled connection; dropped without commit, it rolls back.
struct PgTx {
    tx: Transaction<'static, Postgres>,
    fence: Option<Fence>,
}

/// Calls query function `$f` on the transaction's connection with the rest of the
/// arguments, and sorts any failure into a [`StoreError`].
macro_rules! in_tx {
    ($self:ident, $f:path $(, $arg:expr)* $(,)?) => {
        sorted($f(&mut $self.tx, $($arg),*).await)
    };
}

#[async_trait]
impl Tx for PgTx {
    async fn begin_step(&mut self) -> StoreResult<Step> {
        in_tx!(self, meta::exec, "SAVEPOINT gatehouse_step", "Cannot start a step")?;
        Ok(Step::opened())
    }
    async fn end_step(&mut self, _step: Step, keep: bool) -> StoreResult<()> {
        if !keep {
            in_tx!(self, meta::exec, "ROLLBACK TO SAVEPOINT gatehouse_step", "Cannot undo a step")?;
        }
        in_tx!(self, meta::exec, "RELEASE SAVEPOINT gatehouse_step", "Cannot end a step")
    }
    async fn commit(self: Box<Self>) -> StoreResult<()> {
        let PgTx { mut tx, fence } = *self;
        sorted(
            async {
                // Last, so the lease row stays held (FOR SHARE) only from here to the commit:
                // a takeover waits for this commit, or this fails and rolls back.
                if let Some(fence) = &fence {
                    lease::check_fence(&mut tx, leading_token(fence)?).await?;
                }
                tx.commit().await.context("Cannot commit")
            }
            .await,
        )
    }

    async fn next_reference_seq(&mut self, year: i32) -> StoreResult<i64> {
        in_tx!(self, requests::next_reference_seq, year)
    }
    async fn insert_request(&mut self, request: &NewRequest, at: DateTime<Utc>) -> StoreResult<RequestId> {
        in_tx!(self, requests::insert, request, at)
    }
    async fn find_request(&mut self, reference: &str) -> StoreResult<Option<RequestRow>> {
        in_tx!(self, requests::find, reference)
    }
    async fn request_for_thread(&mut self, ids: &[String]) -> StoreResult<Option<RequestRow>> {
        in_tx!(self, requests::for_thread, ids)
    }
    async fn request_by_token(&mut self, token: &str) -> StoreResult<Option<RequestRow>> {
        in_tx!(self, requests::by_token, token)
    }
    async fn request_for_notification(&mut self, ids: &[String]) -> StoreResult<Option<RequestRow>> {
        in_tx!(self, requests::for_notification, ids)
    }
    async fn recent_requests(
        &mut self,
        requester: &str,
        organisation: Option<&str>,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<(RequestId, String)>> {
        in_tx!(self, requests::recent, requester, organisation, since, DUPLICATE_CANDIDATES)
    }
    async fn request_texts(&mut self, tokens: &[String]) -> StoreResult<Vec<RequestText>> {
        in_tx!(self, requests::texts, tokens)
    }
    async fn candidates(&mut self, ids: &[RequestId]) -> StoreResult<Vec<Candidate>> {
        in_tx!(self, requests::candidates, ids)
    }
    async fn record_decision(
        &mut self,
        request_id: RequestId,
        decision: Decision,
        detail: Option<&str>,
        meeting_date: Option<NaiveDate>,
        duplicate_of: Option<RequestId>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        in_tx!(self, requests::record_decision, request_id, decision, detail, meeting_date, duplicate_of, at)
    }
    async fn add_priority(&mut self, request_id: RequestId, key: &str) -> StoreResult<()> {
        in_tx!(self, requests::add_priority, request_id, key)
    }
    async fn set_status(
        &mut self,
        request_id: RequestId,
        status: Status,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        in_tx!(self, requests::set_status, request_id, status, at)
    }
    async fn add_thread_id(
        &mut self,
        message_id: &str,
        request_id: RequestId,
        direction: ThreadDirection,
    ) -> StoreResult<()> {
        in_tx!(self, requests::add_thread_id, message_id, request_id, &direction.to_string())
    }

    async fn save_raw(&mut self, message: &NewRawMessage<'_>) -> StoreResult<RawSaved> {
        in_tx!(self, messages::save_raw, message)
    }
    async fn finish_message(
        &mut self,
        id: MessageId,
        outcome: &MessageOutcome,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        in_tx!(self, messages::finish, id, outcome, at)
    }
    async fn set_checkpoint(
        &mut self,
        mailbox: &str,
        uidvalidity: u32,
        last_uid: u32,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        in_tx!(self, messages::set_checkpoint, mailbox, uidvalidity, last_uid, at)
    }

    async fn enqueue(&mut self, mail: &NewOutgoing, at: DateTime<Utc>) -> StoreResult<OutboxId> {
        let id = in_tx!(self, outbox::enqueue, mail, at)?;
        if let Some(request_id) = mail.request_id {
            let direction = ThreadDirection::Out(mail.kind.clone()).to_string();
            in_tx!(self, requests::add_thread_id, &mail.message_id, request_id, &direction)?;
        }
        Ok(id)
    }
    async fn mark_failed(&mut self, id: OutboxId, error: &str) -> StoreResult<()> {
        in_tx!(self, outbox::mark_failed, id, error)
    }
    async fn record_answered(
        &mut self,
        outbox_id: OutboxId,
        person: &str,
        domain: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        in_tx!(self, outbox::record_answered, outbox_id, person, domain, at)
    }
    async fn answered_counts(
        &mut self,
        person: &str,
        domain: &str,
        day: DateTime<Utc>,
        hour: DateTime<Utc>,
    ) -> StoreResult<AnsweredCounts> {
        in_tx!(self, outbox::answered_counts, person, domain, day, hour)
    }
    async fn has_outgoing(&mut self, request_id: RequestId, kind: &str) -> StoreResult<bool> {
        in_tx!(self, outbox::has_outgoing, request_id, kind)
    }
    async fn mark_bounced(&mut self, outbox_id: OutboxId, detail: &str) -> StoreResult<()> {
        in_tx!(self, outbox::mark_bounced, outbox_id, detail)
    }
    async fn outbox_for_message_ids(
        &mut self,
        ids: &[String],
    ) -> StoreResult<Option<(OutboxId, Option<RequestId>, String)>> {
        in_tx!(self, outbox::for_message_ids, ids)
    }

    async fn add_event(
        &mut self,
        request_id: RequestId,
        at: DateTime<Utc>,
        actor: Actor,
        kind: EventKind,
        detail: Option<&str>,
    ) -> StoreResult<()> {
        in_tx!(self, requests::add_event, request_id, at, &actor.to_string(), kind, detail)
    }
    async fn set_meta(&mut self, key: &str, value: &str) -> StoreResult<()> {
        in_tx!(self, meta::set, key, value)
    }
    async fn alert(&mut self, key: &str) -> StoreResult<Option<AlertRow>> {
        in_tx!(self, status::alert, key)
    }
    async fn put_alert(&mut self, alert: &AlertRow) -> StoreResult<()> {
        in_tx!(self, status::put_alert, alert)
    }
    async fn alerts_sent_since(&mut self, prefix: &str, since: DateTime<Utc>) -> StoreResult<i64> {
        in_tx!(self, status::alerts_sent_since, prefix, since)
    }
    async fn record_summary(
        &mut self,
        kind: &str,
        period: &str,
        covers: (DateTime<Utc>, DateTime<Utc>),
        outbox_id: Option<OutboxId>,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        in_tx!(self, status::record_summary, kind, period, covers, outbox_id, at)
    }
    async fn agenda_told_ids(&mut self, date: NaiveDate) -> StoreResult<Option<Vec<RequestId>>> {
        in_tx!(self, requests::agenda_told_ids, date)
    }
    async fn record_agenda_told(
        &mut self,
        date: NaiveDate,
        on: &[RequestId],
        off: &[RequestId],
        outbox_id: Option<OutboxId>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        in_tx!(self, requests::record_agenda_told, date, on, off, outbox_id, at)
    }

    async fn add_paper(
        &mut self,
        request_id: RequestId,
        message_id: MessageId,
        file: &crate::classify::AttachmentBody,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        in_tx!(self, papers::add, request_id, message_id, file, at)
    }
    async fn papers(&mut self, request_id: RequestId) -> StoreResult<Vec<PaperRow>> {
        in_tx!(self, papers::of_request, request_id)
    }
    async fn mark_papers_circulated(&mut self, ids: &[i64], at: DateTime<Utc>) -> StoreResult<()> {
        in_tx!(self, papers::mark_circulated, ids, at)
    }
}

#[cfg(test)]
mod testdb;
#[cfg(test)]
mod tests;
