//! The PostgreSQL backend (`[service] database_url`), for nodes that share one database.
//!
//! Each query is a small function in the file of its aggregate (`messages`, `requests`,
//! `outbox`, `meta`, `lease`) taking a `&mut PgConnection` and plain values; the [`Store`]
//! and [`Tx`] impls here only pick the connection (the pool's, or the transaction's) and call
//! them. Where SQLite relies on its single writer (reference numbers, claiming the outbox),
//! these queries take row locks instead, so several writers stay correct.
//!
//! Not everything the SQLite store does is here yet: the methods that answer `not_yet`
//! (retries, retention and erasure, metrics, agendas told, service events) fail with an
//! error that says so, rather than quietly doing nothing.

pub mod lease;
mod messages;
mod meta;
mod outbox;
mod requests;
mod status;

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{Postgres, Transaction};

use super::retention::{BackupDone, Cutoffs, Erased, PersonData, PurgeCounts, Reclaimed};
use super::{
    AlertRow, AnsweredCounts, Candidate, DaemonStatus, EventRow, MailboxState, MessageOutcome, MessageRow,
    Metrics, NewOutgoing, NewRawMessage, NewRequest, OutboxCounts, OutboxItem, RawSaved, RequestFilter,
    RequestRow, RequestText, RetryMessage, RetryRequest, SmtpOutcome, Store, Tx,
};
use crate::config::{DatabaseSettings, DatabaseTls};
use crate::domain::{Decision, EmailAddress, Status};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

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
        Ok(Self { pool, describe: describe.to_string() })
    }

    /// A connection from the pool, for the lease and other callers of this module's queries.
    pub async fn connection(&self) -> anyhow::Result<sqlx::pool::PoolConnection<Postgres>> {
        self.pool.acquire().await.with_context(|| format!("Cannot reach the database {}", self.describe))
    }
}

/// The answer of a method the PostgreSQL store does not do yet.
fn not_yet<T>(what: &str) -> anyhow::Result<T> {
    anyhow::bail!("{what} is not yet implemented on PostgreSQL; use SQLite (remove database_url) for now")
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> anyhow::Result<usize> {
        let count = "SELECT COUNT(*) FROM _sqlx_migrations WHERE success";
        let before: i64 = sqlx::query_scalar(count).fetch_one(&self.pool).await.unwrap_or(0);
        // The migrator holds an advisory lock while it works: nodes starting together wait
        // for each other instead of applying the same migration twice.
        MIGRATOR.run(&self.pool).await.context("Cannot apply the database migrations")?;
        let after: i64 = sqlx::query_scalar(count).fetch_one(&self.pool).await.unwrap_or(0);
        Ok(usize::try_from(after - before).unwrap_or(0))
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.connection().await?;
        sqlx::query("SELECT 1").execute(&mut *conn).await.context("The database does not answer")?;
        Ok(())
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn list_requests(&self, filter: &RequestFilter) -> anyhow::Result<Vec<RequestRow>> {
        requests::list(&mut *self.connection().await?, filter.status.map(Status::as_str)).await
    }
    async fn find_request(&self, reference: &str) -> anyhow::Result<Option<RequestRow>> {
        requests::find(&mut *self.connection().await?, reference).await
    }
    async fn request_messages(&self, request_id: i64) -> anyhow::Result<Vec<MessageRow>> {
        messages::list(&mut *self.connection().await?, Some(request_id)).await
    }
    async fn request_events(&self, request_id: i64) -> anyhow::Result<Vec<EventRow>> {
        requests::events(&mut *self.connection().await?, request_id).await
    }
    async fn list_messages(&self) -> anyhow::Result<Vec<MessageRow>> {
        messages::list(&mut *self.connection().await?, None).await
    }
    async fn auto_replies_by_wording(
        &self,
        _: DateTime<Utc>,
        _: DateTime<Utc>,
    ) -> anyhow::Result<Vec<MessageRow>> {
        not_yet("auto_replies_by_wording")
    }
    async fn get_meta(&self, key: &str) -> anyhow::Result<Option<String>> {
        meta::get(&mut *self.connection().await?, key).await
    }
    async fn init_meta(&self, key: &str, value: &str) -> anyhow::Result<String> {
        meta::init(&mut *self.connection().await?, key, value).await
    }
    async fn mailbox_state(&self, mailbox: &str) -> anyhow::Result<Option<MailboxState>> {
        messages::mailbox_state(&mut *self.connection().await?, mailbox).await
    }
    async fn reset_mailbox_state(&self, mailbox: &str, state: MailboxState) -> anyhow::Result<()> {
        messages::reset_mailbox_state(&mut *self.connection().await?, mailbox, state, Utc::now()).await
    }
    async fn raw_message(&self, id: i64) -> anyhow::Result<Vec<u8>> {
        messages::raw(&mut *self.connection().await?, id).await
    }
    async fn count_attempt(&self, id: i64) -> anyhow::Result<u32> {
        messages::count_attempt(&mut *self.connection().await?, id).await
    }
    async fn attempts(&self, id: i64) -> anyhow::Result<u32> {
        messages::attempts(&mut *self.connection().await?, id).await
    }
    async fn request_retry(&self, _id: i64, _at: DateTime<Utc>) -> anyhow::Result<RetryRequest> {
        not_yet("request_retry")
    }
    async fn retries_requested(&self) -> anyhow::Result<Vec<RetryMessage>> {
        not_yet("retries_requested")
    }
    async fn awaiting_triage(&self) -> anyhow::Result<Vec<RequestRow>> {
        requests::awaiting_triage(&mut *self.connection().await?).await
    }
    async fn received_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<Vec<RequestRow>> {
        requests::received_between(&mut *self.connection().await?, from, to).await
    }
    async fn decided_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<Vec<RequestRow>> {
        requests::decided_between(&mut *self.connection().await?, from, to).await
    }
    async fn with_status(&self, status: Status, limit: i64) -> anyhow::Result<(Vec<RequestRow>, usize)> {
        requests::with_status(&mut *self.connection().await?, status, limit).await
    }
    async fn agenda_for(&self, date: NaiveDate) -> anyhow::Result<Vec<RequestRow>> {
        requests::agenda_for(&mut *self.connection().await?, date).await
    }
    async fn arrivals_since(&self, since: DateTime<Utc>) -> anyhow::Result<Vec<DateTime<Utc>>> {
        requests::arrivals_since(&mut *self.connection().await?, since).await
    }
    async fn events_of_kind(&self, _: &[i64], _: &str) -> anyhow::Result<Vec<(i64, EventRow)>> {
        not_yet("events_of_kind")
    }
    async fn last_covered(&self, kind: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        status::last_covered(&mut *self.connection().await?, kind).await
    }
    async fn summary_sent(&self, kind: &str, period: &str) -> anyhow::Result<bool> {
        status::summary_sent(&mut *self.connection().await?, kind, period).await
    }
    async fn agenda_told(&self, _: NaiveDate) -> anyhow::Result<Option<Vec<RequestRow>>> {
        not_yet("agenda_told")
    }
    async fn set_daemon_status(
        &self,
        imap: &str,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        status::set_daemon(&mut *self.connection().await?, imap, detail, now).await
    }
    async fn daemon_status(&self) -> anyhow::Result<Option<DaemonStatus>> {
        status::daemon(&mut *self.connection().await?).await
    }
    async fn set_smtp_status(&self, outcome: SmtpOutcome<'_>, at: DateTime<Utc>) -> anyhow::Result<()> {
        status::set_smtp(&mut *self.connection().await?, outcome, at).await
    }
    async fn outbox_counts(&self) -> anyhow::Result<OutboxCounts> {
        outbox::counts(&mut *self.connection().await?).await
    }
    async fn metrics(&self, _: i64) -> anyhow::Result<Metrics> {
        not_yet("metrics")
    }
    async fn outbox_failing(&self, _: i64) -> anyhow::Result<i64> {
        not_yet("outbox_failing")
    }
    async fn open_alerts(&self) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
        status::open_alerts(&mut *self.connection().await?).await
    }
    async fn last_summary(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        status::last_summary(&mut *self.connection().await?).await
    }
    async fn requeue_interrupted(&self) -> anyhow::Result<u64> {
        let mut tx = self.pool.begin().await.context("Cannot start a transaction")?;
        let n = outbox::requeue_interrupted(&mut tx).await?;
        tx.commit().await.context("Cannot requeue interrupted mail")?;
        Ok(n)
    }
    async fn claim_due(&self, now: DateTime<Utc>, limit: i64) -> anyhow::Result<Vec<OutboxItem>> {
        outbox::claim_due(&mut *self.connection().await?, now, limit).await
    }
    async fn mark_in_flight(&self, id: i64) -> anyhow::Result<()> {
        outbox::mark_in_flight(&mut *self.connection().await?, id).await
    }
    async fn mark_sent(&self, id: i64, at: DateTime<Utc>) -> anyhow::Result<()> {
        outbox::mark_sent(&mut *self.connection().await?, id, at).await
    }
    async fn mark_retry(&self, id: i64, next_attempt_at: DateTime<Utc>, error: &str) -> anyhow::Result<()> {
        outbox::mark_retry(&mut *self.connection().await?, id, next_attempt_at, error).await
    }
    async fn mark_failed(&self, id: i64, error: &str) -> anyhow::Result<()> {
        outbox::mark_failed(&mut *self.connection().await?, id, error).await
    }
    async fn purge_preview(&self, _: Cutoffs) -> anyhow::Result<PurgeCounts> {
        not_yet("purge_preview")
    }
    async fn purge(&self, _: Cutoffs, _: &str, _: DateTime<Utc>) -> anyhow::Result<PurgeCounts> {
        not_yet("purge")
    }
    async fn reclaim_space(&self) -> anyhow::Result<Reclaimed> {
        not_yet("reclaim_space")
    }
    async fn person_data(&self, _: &EmailAddress) -> anyhow::Result<PersonData> {
        not_yet("person_data")
    }
    async fn erase_request(&self, _: &str, _: &str, _: DateTime<Utc>) -> anyhow::Result<Option<Erased>> {
        not_yet("erase_request")
    }
    async fn add_service_event(&self, _: DateTime<Utc>, _: &str, _: &str, _: &str) -> anyhow::Result<()> {
        not_yet("add_service_event")
    }
    async fn service_events(&self) -> anyhow::Result<Vec<EventRow>> {
        not_yet("service_events")
    }
    async fn backup_to(&self, _: &Path) -> anyhow::Result<BackupDone> {
        anyhow::bail!(
            "gatehouse backup copies a SQLite database; back PostgreSQL up with its own tools (pg_dump)"
        )
    }

    async fn begin(&self) -> anyhow::Result<Box<dyn Tx>> {
        let tx = self.pool.begin().await.context("Cannot start a transaction")?;
        Ok(Box::new(PgTx { tx }))
    }
}

/// A transaction on one pooled connection; dropped without commit, it rolls back.
struct PgTx {
    tx: Transaction<'static, Postgres>,
}

/// The savepoint around one message's work inside a batch.
const SAVEPOINT: &str = "SAVEPOINT gatehouse_message";

#[async_trait]
impl Tx for PgTx {
    async fn save_raw(&mut self, message: &NewRawMessage<'_>) -> anyhow::Result<RawSaved> {
        messages::save_raw(&mut self.tx, message).await
    }
    async fn find_request(&mut self, reference: &str) -> anyhow::Result<Option<RequestRow>> {
        requests::find(&mut self.tx, reference).await
    }
    async fn request_for_thread(&mut self, ids: &[String]) -> anyhow::Result<Option<RequestRow>> {
        requests::for_thread(&mut self.tx, ids).await
    }
    async fn request_by_token(&mut self, token: &str) -> anyhow::Result<Option<RequestRow>> {
        requests::by_token(&mut self.tx, token).await
    }
    async fn request_for_notification(&mut self, ids: &[String]) -> anyhow::Result<Option<RequestRow>> {
        requests::for_notification(&mut self.tx, ids).await
    }
    async fn recent_requests(
        &mut self,
        requester: &str,
        organisation: Option<&str>,
        since: DateTime<Utc>,
    ) -> anyhow::Result<Vec<(i64, String)>> {
        requests::recent(&mut self.tx, requester, organisation, since, DUPLICATE_CANDIDATES).await
    }
    async fn request_texts(&mut self, tokens: &[String]) -> anyhow::Result<Vec<RequestText>> {
        requests::texts(&mut self.tx, tokens).await
    }
    async fn candidates(&mut self, ids: &[i64]) -> anyhow::Result<Vec<Candidate>> {
        requests::candidates(&mut self.tx, ids).await
    }
    async fn outbox_for_message_ids(
        &mut self,
        ids: &[String],
    ) -> anyhow::Result<Option<(i64, Option<i64>, String)>> {
        outbox::for_message_ids(&mut self.tx, ids).await
    }
    async fn savepoint(&mut self) -> anyhow::Result<()> {
        sqlx::query(SAVEPOINT)
            .execute(&mut *self.tx)
            .await
            .context("Cannot start the message's savepoint")?;
        Ok(())
    }
    async fn release_savepoint(&mut self) -> anyhow::Result<()> {
        sqlx::query("RELEASE SAVEPOINT gatehouse_message")
            .execute(&mut *self.tx)
            .await
            .context("Cannot keep the message's work")?;
        Ok(())
    }
    async fn rollback_to_savepoint(&mut self) -> anyhow::Result<()> {
        sqlx::query("ROLLBACK TO SAVEPOINT gatehouse_message")
            .execute(&mut *self.tx)
            .await
            .context("Cannot undo the message's work")?;
        Ok(())
    }
    async fn next_reference_seq(&mut self, year: i32) -> anyhow::Result<i64> {
        requests::next_reference_seq(&mut self.tx, year).await
    }
    async fn insert_request(&mut self, request: &NewRequest) -> anyhow::Result<i64> {
        requests::insert(&mut self.tx, request, Utc::now()).await
    }
    async fn add_event(
        &mut self,
        request_id: i64,
        at: DateTime<Utc>,
        actor: &str,
        kind: &str,
        detail: Option<&str>,
    ) -> anyhow::Result<()> {
        requests::add_event(&mut self.tx, request_id, at, actor, kind, detail).await
    }
    async fn add_thread_id(
        &mut self,
        message_id: &str,
        request_id: i64,
        direction: &str,
    ) -> anyhow::Result<()> {
        requests::add_thread_id(&mut self.tx, message_id, request_id, direction).await
    }
    async fn finish_message(
        &mut self,
        id: i64,
        outcome: &MessageOutcome,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        messages::finish(&mut self.tx, id, outcome, at).await
    }
    async fn set_checkpoint(
        &mut self,
        mailbox: &str,
        uidvalidity: u32,
        last_uid: u32,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        messages::set_checkpoint(&mut self.tx, mailbox, uidvalidity, last_uid, at).await
    }
    async fn enqueue(&mut self, mail: &NewOutgoing, at: DateTime<Utc>) -> anyhow::Result<i64> {
        let id = outbox::enqueue(&mut self.tx, mail, at).await?;
        if let Some(request_id) = mail.request_id {
            requests::add_thread_id(
                &mut self.tx,
                &mail.message_id,
                request_id,
                &format!("out:{}", mail.kind),
            )
            .await?;
        }
        Ok(id)
    }
    async fn record_answered(
        &mut self,
        outbox_id: i64,
        person: &str,
        domain: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        outbox::record_answered(&mut self.tx, outbox_id, person, domain, at).await
    }
    async fn answered_counts(
        &mut self,
        person: &str,
        domain: &str,
        day: DateTime<Utc>,
        hour: DateTime<Utc>,
    ) -> anyhow::Result<AnsweredCounts> {
        outbox::answered_counts(&mut self.tx, person, domain, day, hour).await
    }
    async fn has_outgoing(&mut self, request_id: i64, kind: &str) -> anyhow::Result<bool> {
        outbox::has_outgoing(&mut self.tx, request_id, kind).await
    }
    async fn mark_bounced(&mut self, outbox_id: i64, detail: &str) -> anyhow::Result<()> {
        outbox::mark_bounced(&mut self.tx, outbox_id, detail).await
    }
    async fn record_decision(
        &mut self,
        request_id: i64,
        decision: Decision,
        detail: Option<&str>,
        meeting_date: Option<NaiveDate>,
        duplicate_of: Option<i64>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        requests::record_decision(&mut self.tx, request_id, decision, detail, meeting_date, duplicate_of, at)
            .await
    }
    async fn add_priority(&mut self, request_id: i64, key: &str) -> anyhow::Result<()> {
        requests::add_priority(&mut self.tx, request_id, key).await
    }
    async fn set_meta(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        meta::set(&mut self.tx, key, value).await
    }
    async fn alert(&mut self, key: &str) -> anyhow::Result<Option<AlertRow>> {
        status::alert(&mut self.tx, key).await
    }
    async fn put_alert(&mut self, alert: &AlertRow) -> anyhow::Result<()> {
        status::put_alert(&mut self.tx, alert).await
    }
    async fn alerts_sent_since(&mut self, prefix: &str, since: DateTime<Utc>) -> anyhow::Result<i64> {
        status::alerts_sent_since(&mut self.tx, prefix, since).await
    }
    async fn set_status(&mut self, request_id: i64, status: Status, at: DateTime<Utc>) -> anyhow::Result<()> {
        requests::set_status(&mut self.tx, request_id, status, at).await
    }
    async fn record_summary(
        &mut self,
        kind: &str,
        period: &str,
        covers: (DateTime<Utc>, DateTime<Utc>),
        outbox_id: Option<i64>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        status::record_summary(&mut self.tx, kind, period, covers, outbox_id, at).await
    }
    async fn agenda_told_ids(&mut self, _: NaiveDate) -> anyhow::Result<Option<Vec<i64>>> {
        not_yet("agenda_told_ids")
    }
    async fn record_agenda_told(
        &mut self,
        _: NaiveDate,
        _: &[i64],
        _: &[i64],
        _: Option<i64>,
        _: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        not_yet("record_agenda_told")
    }
    async fn commit(self: Box<Self>) -> anyhow::Result<()> {
        self.tx.commit().await.context("Cannot commit")
    }
}

#[cfg(test)]
mod testdb;
#[cfg(test)]
mod tests;
