//! The `Store` and `Tx` traits on SQLite: each method hands over to the aggregate's file
//! (`requests`, `inbox`, `outbox`, `ledger`, `retention`).

use super::error::classify;
use super::*;
use crate::store::{PaperCounts, PaperRow, Step, StoreResult};

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> StoreResult<usize> {
        let result: anyhow::Result<_> = async {
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || migrate_file(&path))
                .await
                .context("The database thread failed")?
        }
        .await;
        result.map_err(classify)
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| scalar::<i64>(c, "SELECT 1", [], "The database does not answer").map(drop))
            .await
            .map_err(classify)
    }

    fn describe(&self) -> String {
        format!("SQLite {}", self.path.display())
    }

    async fn list_requests(&self, filter: &RequestFilter) -> StoreResult<Vec<RequestRow>> {
        SqliteStore::list_requests(self, filter).await.map_err(classify)
    }

    async fn find_request(&self, reference: &str) -> StoreResult<Option<RequestRow>> {
        SqliteStore::find_request(self, reference).await.map_err(classify)
    }

    async fn request_messages(&self, request_id: RequestId) -> StoreResult<Vec<MessageRow>> {
        SqliteStore::request_messages(self, request_id).await.map_err(classify)
    }

    async fn request_events(&self, request_id: RequestId) -> StoreResult<Vec<EventRow>> {
        SqliteStore::request_events(self, request_id).await.map_err(classify)
    }

    async fn list_messages(&self) -> StoreResult<Vec<MessageRow>> {
        SqliteStore::list_messages(self).await.map_err(classify)
    }

    async fn auto_replies_by_wording(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<MessageRow>> {
        SqliteStore::auto_replies_by_wording(self, from, to).await.map_err(classify)
    }

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
        SqliteStore::get_meta(self, key).await.map_err(classify)
    }

    async fn init_meta(&self, key: &str, value: &str) -> StoreResult<String> {
        SqliteStore::init_meta(self, key, value).await.map_err(classify)
    }

    async fn mailbox_state(&self, mailbox: &str) -> StoreResult<Option<MailboxState>> {
        SqliteStore::mailbox_state(self, mailbox).await.map_err(classify)
    }

    async fn reset_mailbox_state(
        &self,
        mailbox: &str,
        state: MailboxState,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        SqliteStore::reset_mailbox_state(self, mailbox, state, at).await.map_err(classify)
    }

    async fn raw_message(&self, id: MessageId) -> StoreResult<Vec<u8>> {
        SqliteStore::raw_message(self, id).await.map_err(classify)
    }

    async fn count_attempt(&self, id: MessageId) -> StoreResult<u32> {
        SqliteStore::count_attempt(self, id).await.map_err(classify)
    }

    async fn attempts(&self, id: MessageId) -> StoreResult<u32> {
        SqliteStore::attempts(self, id).await.map_err(classify)
    }

    async fn request_retry(&self, id: MessageId, at: DateTime<Utc>) -> StoreResult<RetryRequest> {
        SqliteStore::request_retry(self, id, at).await.map_err(classify)
    }

    async fn retries_requested(&self) -> StoreResult<Vec<RetryMessage>> {
        SqliteStore::retries_requested(self).await.map_err(classify)
    }

    async fn awaiting_triage(&self) -> StoreResult<Vec<RequestRow>> {
        SqliteStore::awaiting_triage(self).await.map_err(classify)
    }

    async fn received_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<RequestRow>> {
        SqliteStore::received_between(self, from, to).await.map_err(classify)
    }

    async fn decided_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<RequestRow>> {
        SqliteStore::decided_between(self, from, to).await.map_err(classify)
    }

    async fn with_status(&self, status: Status, limit: i64) -> StoreResult<(Vec<RequestRow>, usize)> {
        SqliteStore::with_status(self, status, limit).await.map_err(classify)
    }

    async fn agenda_for(&self, date: NaiveDate) -> StoreResult<Vec<RequestRow>> {
        SqliteStore::agenda_for(self, date).await.map_err(classify)
    }

    async fn arrivals_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<DateTime<Utc>>> {
        SqliteStore::arrivals_since(self, since).await.map_err(classify)
    }

    async fn events_of_kind(
        &self,
        request_ids: &[RequestId],
        kind: EventKind,
    ) -> StoreResult<Vec<(RequestId, EventRow)>> {
        SqliteStore::events_of_kind(self, request_ids, kind.as_str()).await.map_err(classify)
    }

    async fn last_covered(&self, kind: &str) -> StoreResult<Option<DateTime<Utc>>> {
        SqliteStore::last_covered(self, kind).await.map_err(classify)
    }

    async fn summary_sent(&self, kind: &str, period: &str) -> StoreResult<bool> {
        SqliteStore::summary_sent(self, kind, period).await.map_err(classify)
    }

    async fn agenda_told(&self, date: NaiveDate) -> StoreResult<Option<Vec<RequestRow>>> {
        SqliteStore::agenda_told(self, date).await.map_err(classify)
    }

    async fn set_daemon_status(
        &self,
        imap: &str,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        SqliteStore::set_daemon_status(self, imap, detail, now).await.map_err(classify)
    }

    async fn daemon_status(&self) -> StoreResult<Option<DaemonStatus>> {
        SqliteStore::daemon_status(self).await.map_err(classify)
    }

    async fn set_smtp_status(&self, outcome: SmtpOutcome<'_>, at: DateTime<Utc>) -> StoreResult<()> {
        SqliteStore::set_smtp_status(self, outcome, at).await.map_err(classify)
    }

    async fn outbox_failing(&self, failing_after: i64) -> StoreResult<i64> {
        SqliteStore::outbox_failing(self, failing_after).await.map_err(classify)
    }

    async fn metrics(&self, failing_after: i64) -> StoreResult<Metrics> {
        SqliteStore::metrics(self, failing_after).await.map_err(classify)
    }

    async fn open_alerts(&self) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
        SqliteStore::open_alerts(self).await.map_err(classify)
    }

    async fn outbox_counts(&self) -> StoreResult<OutboxCounts> {
        SqliteStore::outbox_counts(self).await.map_err(classify)
    }

    async fn last_summary(&self) -> StoreResult<Option<DateTime<Utc>>> {
        SqliteStore::last_summary(self).await.map_err(classify)
    }

    async fn requeue_interrupted(&self) -> StoreResult<u64> {
        SqliteStore::requeue_interrupted(self).await.map_err(classify)
    }

    async fn claim_due(&self, now: DateTime<Utc>, limit: i64) -> StoreResult<Vec<OutboxItem>> {
        SqliteStore::claim_due(self, now, limit).await.map_err(classify)
    }

    async fn last_outgoing(&self, request_id: RequestId, kind: &str) -> StoreResult<Option<LastOutgoing>> {
        SqliteStore::last_outgoing(self, request_id, kind).await.map_err(classify)
    }

    async fn mark_in_flight(&self, id: OutboxId) -> StoreResult<()> {
        SqliteStore::mark_in_flight(self, id).await.map_err(classify)
    }

    async fn mark_sent(&self, id: OutboxId, at: DateTime<Utc>) -> StoreResult<()> {
        SqliteStore::mark_sent(self, id, at).await.map_err(classify)
    }

    async fn mark_retry(&self, id: OutboxId, next_attempt_at: DateTime<Utc>, error: &str) -> StoreResult<()> {
        SqliteStore::mark_retry(self, id, next_attempt_at, error).await.map_err(classify)
    }

    async fn mark_failed(&self, id: OutboxId, error: &str) -> StoreResult<()> {
        SqliteStore::mark_failed(self, id, error).await.map_err(classify)
    }

    async fn purge_preview(&self, cutoffs: Cutoffs) -> StoreResult<PurgeCounts> {
        self.read(move |c| retention::preview(c, &cutoffs)).await.map_err(classify)
    }

    async fn purge(&self, cutoffs: Cutoffs, actor: Actor, at: DateTime<Utc>) -> StoreResult<PurgeCounts> {
        let result: anyhow::Result<_> = async {
            let actor = actor.to_string();
            self.write(move |c| retention::purge(c, &cutoffs, &actor, at)).await
        }
        .await;
        result.map_err(classify)
    }

    async fn reclaim_space(&self) -> StoreResult<Reclaimed> {
        let result: anyhow::Result<_> = async {
            let path = self.path.clone();
            self.write(move |c| retention::reclaim(c, &path)).await
        }
        .await;
        result.map_err(classify)
    }

    async fn person_data(&self, person: &EmailAddress) -> StoreResult<PersonData> {
        let result: anyhow::Result<_> = async {
            let person = person.clone();
            self.read(move |c| retention::person_data(c, &person)).await
        }
        .await;
        result.map_err(classify)
    }

    async fn erase_request(
        &self,
        reference: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<Erased>> {
        let result: anyhow::Result<_> = async {
            let (reference, actor) = (reference.to_string(), actor.to_string());
            self.write(move |c| retention::erase(c, &reference, &actor, at)).await
        }
        .await;
        result.map_err(classify)
    }

    async fn add_service_event(
        &self,
        at: DateTime<Utc>,
        actor: Actor,
        kind: EventKind,
        detail: &str,
    ) -> StoreResult<()> {
        let result: anyhow::Result<_> = async {
            let (actor, kind, detail) = (actor.to_string(), kind.as_str(), detail.to_string());
            self.write(move |c| retention::insert_service_event(c, to_millis(at), &actor, kind, &detail))
                .await
        }
        .await;
        result.map_err(classify)
    }

    async fn service_events(&self) -> StoreResult<Vec<EventRow>> {
        self.read(retention::service_events).await.map_err(classify)
    }

    async fn backup_to(&self, dest: &Path) -> StoreResult<BackupDone> {
        let result: anyhow::Result<_> = async {
            let dest = dest.to_path_buf();
            self.read(move |c| retention::backup(c, &dest)).await
        }
        .await;
        result.map_err(classify)
    }

    async fn paper_counts(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<PaperCounts> {
        SqliteStore::paper_counts(self, from, to).await.map_err(classify)
    }

    async fn begin(&self) -> StoreResult<Box<dyn Tx>> {
        let conn = self.writer_lock().await.map_err(classify)?;
        // Taking the write lock may wait (busy_timeout) for the CLI: on a blocking thread.
        let conn = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            end_abandoned_transaction(&conn);
            conn.execute_batch("BEGIN IMMEDIATE").context("Cannot start a transaction")?;
            Ok(conn)
        })
        .await
        .context("The database thread failed")
        .and_then(|r| r)
        .map_err(classify)?;
        Ok(Box::new(SqliteTx { conn, open: true, checkpoints: self.checkpoints.clone() }))
    }
}

#[async_trait]
impl Tx for SqliteTx {
    async fn add_paper(
        &mut self,
        request_id: RequestId,
        message_id: MessageId,
        file: &crate::classify::AttachmentBody,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        SqliteTx::add_paper(self, request_id, message_id, file, at).await.map_err(classify)
    }

    async fn papers(&mut self, request_id: RequestId) -> StoreResult<Vec<PaperRow>> {
        SqliteTx::papers(self, request_id).await.map_err(classify)
    }

    async fn mark_papers_circulated(&mut self, ids: &[i64], at: DateTime<Utc>) -> StoreResult<()> {
        SqliteTx::mark_papers_circulated(self, ids, at).await.map_err(classify)
    }

    async fn next_reference_seq(&mut self, year: i32) -> StoreResult<i64> {
        SqliteTx::next_reference_seq(self, year).await.map_err(classify)
    }

    async fn insert_request(&mut self, r: &NewRequest, at: DateTime<Utc>) -> StoreResult<RequestId> {
        SqliteTx::insert_request(self, r, at).await.map_err(classify)
    }

    async fn add_event(
        &mut self,
        request_id: RequestId,
        at: DateTime<Utc>,
        actor: Actor,
        kind: EventKind,
        detail: Option<&str>,
    ) -> StoreResult<()> {
        SqliteTx::add_event(self, request_id, at, &actor.to_string(), kind.as_str(), detail)
            .await
            .map_err(classify)
    }

    async fn add_thread_id(
        &mut self,
        message_id: &str,
        request_id: RequestId,
        direction: ThreadDirection,
    ) -> StoreResult<()> {
        SqliteTx::add_thread_id(self, message_id, request_id, &direction.to_string()).await.map_err(classify)
    }

    async fn finish_message(
        &mut self,
        id: MessageId,
        o: &MessageOutcome,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        SqliteTx::finish_message(self, id, o, at).await.map_err(classify)
    }

    async fn set_checkpoint(
        &mut self,
        mailbox: &str,
        uidvalidity: u32,
        last_uid: u32,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        SqliteTx::set_checkpoint(self, mailbox, uidvalidity, last_uid, at).await.map_err(classify)
    }

    async fn enqueue(&mut self, mail: &NewOutgoing, at: DateTime<Utc>) -> StoreResult<OutboxId> {
        SqliteTx::enqueue(self, mail, at).await.map_err(classify)
    }

    async fn mark_failed(&mut self, id: OutboxId, error: &str) -> StoreResult<()> {
        SqliteTx::mark_failed_in_tx(self, id, error).await.map_err(classify)
    }

    async fn record_answered(
        &mut self,
        outbox_id: OutboxId,
        person: &str,
        domain: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        SqliteTx::record_answered(self, outbox_id, person, domain, at).await.map_err(classify)
    }

    async fn answered_counts(
        &mut self,
        person: &str,
        domain: &str,
        day: DateTime<Utc>,
        hour: DateTime<Utc>,
    ) -> StoreResult<AnsweredCounts> {
        SqliteTx::answered_counts(self, person, domain, day, hour).await.map_err(classify)
    }

    async fn has_outgoing(&mut self, request_id: RequestId, kind: &str) -> StoreResult<bool> {
        SqliteTx::has_outgoing(self, request_id, kind).await.map_err(classify)
    }

    async fn mark_bounced(&mut self, outbox_id: OutboxId, detail: &str) -> StoreResult<()> {
        SqliteTx::mark_bounced(self, outbox_id, detail).await.map_err(classify)
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
        SqliteTx::record_decision(self, request_id, decision, detail, meeting_date, duplicate_of, at)
            .await
            .map_err(classify)
    }

    async fn alert(&mut self, key: &str) -> StoreResult<Option<AlertRow>> {
        SqliteTx::alert(self, key).await.map_err(classify)
    }

    async fn put_alert(&mut self, a: &AlertRow) -> StoreResult<()> {
        SqliteTx::put_alert(self, a).await.map_err(classify)
    }

    async fn alerts_sent_since(&mut self, prefix: &str, since: DateTime<Utc>) -> StoreResult<i64> {
        SqliteTx::alerts_sent_since(self, prefix, since).await.map_err(classify)
    }

    async fn set_meta(&mut self, key: &str, value: &str) -> StoreResult<()> {
        SqliteTx::set_meta(self, key, value).await.map_err(classify)
    }

    async fn add_priority(&mut self, request_id: RequestId, key: &str) -> StoreResult<()> {
        SqliteTx::add_priority(self, request_id, key).await.map_err(classify)
    }

    async fn set_status(
        &mut self,
        request_id: RequestId,
        status: Status,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        SqliteTx::set_status(self, request_id, status, at).await.map_err(classify)
    }

    async fn record_summary(
        &mut self,
        kind: &str,
        period: &str,
        covers: (DateTime<Utc>, DateTime<Utc>),
        outbox_id: Option<OutboxId>,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        SqliteTx::record_summary(self, kind, period, covers, outbox_id, at).await.map_err(classify)
    }

    async fn agenda_told_ids(&mut self, date: NaiveDate) -> StoreResult<Option<Vec<RequestId>>> {
        SqliteTx::agenda_told_ids(self, date).await.map_err(classify)
    }

    async fn record_agenda_told(
        &mut self,
        date: NaiveDate,
        on: &[RequestId],
        off: &[RequestId],
        outbox_id: Option<OutboxId>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        SqliteTx::record_agenda_told(self, date, on, off, outbox_id, at).await.map_err(classify)
    }

    async fn find_request(&mut self, reference: &str) -> StoreResult<Option<RequestRow>> {
        requests::find_request(&self.conn, reference).map_err(classify)
    }

    async fn save_raw(&mut self, m: &NewRawMessage<'_>) -> StoreResult<RawSaved> {
        inbox::save_raw(&self.conn, m).map_err(classify)
    }

    async fn request_for_thread(&mut self, ids: &[String]) -> StoreResult<Option<RequestRow>> {
        requests::request_for_thread(&self.conn, ids).map_err(classify)
    }

    async fn request_by_token(&mut self, token: &str) -> StoreResult<Option<RequestRow>> {
        requests::request_by_token(&self.conn, token).map_err(classify)
    }

    async fn request_for_notification(&mut self, ids: &[String]) -> StoreResult<Option<RequestRow>> {
        requests::request_for_notification(&self.conn, ids).map_err(classify)
    }

    async fn recent_requests(
        &mut self,
        requester: &str,
        organisation: Option<&str>,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<(RequestId, String)>> {
        requests::recent_requests(&self.conn, requester, organisation, since).map_err(classify)
    }

    async fn request_texts(&mut self, tokens: &[String]) -> StoreResult<Vec<RequestText>> {
        requests::request_texts(&self.conn, tokens).map_err(classify)
    }

    async fn candidates(&mut self, ids: &[RequestId]) -> StoreResult<Vec<Candidate>> {
        requests::candidates(&self.conn, ids).map_err(classify)
    }

    async fn outbox_for_message_ids(
        &mut self,
        ids: &[String],
    ) -> StoreResult<Option<(OutboxId, Option<RequestId>, String)>> {
        outbox::outbox_for_message_ids(&self.conn, ids).map_err(classify)
    }

    async fn begin_step(&mut self) -> StoreResult<Step> {
        exec(&self.conn, "SAVEPOINT gatehouse_step", [], "Cannot start a step").map_err(classify)?;
        Ok(Step::opened())
    }

    async fn end_step(&mut self, _step: Step, keep: bool) -> StoreResult<()> {
        if !keep {
            exec(&self.conn, "ROLLBACK TO gatehouse_step", [], "Cannot undo a step").map_err(classify)?;
        }
        exec(&self.conn, "RELEASE gatehouse_step", [], "Cannot end a step").map(drop).map_err(classify)
    }

    async fn commit(mut self: Box<Self>) -> StoreResult<()> {
        self.open = false;
        let result = self.conn.execute_batch("COMMIT").context("Cannot commit");
        if result.is_err() {
            // SQLite may or may not have rolled back by itself (a full disk does).
            end_abandoned_transaction(&self.conn);
        }
        self.checkpoints.nudge();
        result.map_err(classify)
    }
}
