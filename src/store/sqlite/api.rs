//! The `Store` and `Tx` traits on SQLite: each method hands over to the aggregate's file
//! (`requests`, `inbox`, `outbox`, `ledger`, `retention`).

use super::*;

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> anyhow::Result<usize> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || migrate_file(&path))
            .await
            .context("The database thread failed")?
    }

    async fn ping(&self) -> anyhow::Result<()> {
        self.read(|c| scalar::<i64>(c, "SELECT 1", [], "The database does not answer").map(drop)).await
    }

    fn describe(&self) -> String {
        format!("SQLite {}", self.path.display())
    }

    async fn list_requests(&self, filter: &RequestFilter) -> anyhow::Result<Vec<RequestRow>> {
        SqliteStore::list_requests(self, filter).await
    }

    async fn find_request(&self, reference: &str) -> anyhow::Result<Option<RequestRow>> {
        SqliteStore::find_request(self, reference).await
    }

    async fn request_messages(&self, request_id: i64) -> anyhow::Result<Vec<MessageRow>> {
        SqliteStore::request_messages(self, request_id).await
    }

    async fn request_events(&self, request_id: i64) -> anyhow::Result<Vec<EventRow>> {
        SqliteStore::request_events(self, request_id).await
    }

    async fn list_messages(&self) -> anyhow::Result<Vec<MessageRow>> {
        SqliteStore::list_messages(self).await
    }

    async fn auto_replies_by_wording(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<Vec<MessageRow>> {
        SqliteStore::auto_replies_by_wording(self, from, to).await
    }

    async fn get_meta(&self, key: &str) -> anyhow::Result<Option<String>> {
        SqliteStore::get_meta(self, key).await
    }

    async fn init_meta(&self, key: &str, value: &str) -> anyhow::Result<String> {
        SqliteStore::init_meta(self, key, value).await
    }

    async fn mailbox_state(&self, mailbox: &str) -> anyhow::Result<Option<MailboxState>> {
        SqliteStore::mailbox_state(self, mailbox).await
    }

    async fn reset_mailbox_state(&self, mailbox: &str, state: MailboxState) -> anyhow::Result<()> {
        SqliteStore::reset_mailbox_state(self, mailbox, state).await
    }

    async fn raw_message(&self, id: i64) -> anyhow::Result<Vec<u8>> {
        SqliteStore::raw_message(self, id).await
    }

    async fn count_attempt(&self, id: i64) -> anyhow::Result<u32> {
        SqliteStore::count_attempt(self, id).await
    }

    async fn attempts(&self, id: i64) -> anyhow::Result<u32> {
        SqliteStore::attempts(self, id).await
    }

    async fn request_retry(&self, id: i64, at: DateTime<Utc>) -> anyhow::Result<RetryRequest> {
        SqliteStore::request_retry(self, id, at).await
    }

    async fn retries_requested(&self) -> anyhow::Result<Vec<RetryMessage>> {
        SqliteStore::retries_requested(self).await
    }

    async fn awaiting_triage(&self) -> anyhow::Result<Vec<RequestRow>> {
        SqliteStore::awaiting_triage(self).await
    }

    async fn received_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<Vec<RequestRow>> {
        SqliteStore::received_between(self, from, to).await
    }

    async fn decided_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<Vec<RequestRow>> {
        SqliteStore::decided_between(self, from, to).await
    }

    async fn with_status(&self, status: Status, limit: i64) -> anyhow::Result<(Vec<RequestRow>, usize)> {
        SqliteStore::with_status(self, status, limit).await
    }

    async fn agenda_for(&self, date: NaiveDate) -> anyhow::Result<Vec<RequestRow>> {
        SqliteStore::agenda_for(self, date).await
    }

    async fn arrivals_since(&self, since: DateTime<Utc>) -> anyhow::Result<Vec<DateTime<Utc>>> {
        SqliteStore::arrivals_since(self, since).await
    }

    async fn events_of_kind(&self, request_ids: &[i64], kind: &str) -> anyhow::Result<Vec<(i64, EventRow)>> {
        SqliteStore::events_of_kind(self, request_ids, kind).await
    }

    async fn last_covered(&self, kind: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        SqliteStore::last_covered(self, kind).await
    }

    async fn summary_sent(&self, kind: &str, period: &str) -> anyhow::Result<bool> {
        SqliteStore::summary_sent(self, kind, period).await
    }

    async fn agenda_told(&self, date: NaiveDate) -> anyhow::Result<Option<Vec<RequestRow>>> {
        SqliteStore::agenda_told(self, date).await
    }

    async fn set_daemon_status(
        &self,
        imap: &str,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        SqliteStore::set_daemon_status(self, imap, detail, now).await
    }

    async fn daemon_status(&self) -> anyhow::Result<Option<DaemonStatus>> {
        SqliteStore::daemon_status(self).await
    }

    async fn set_smtp_status(&self, outcome: SmtpOutcome<'_>, at: DateTime<Utc>) -> anyhow::Result<()> {
        SqliteStore::set_smtp_status(self, outcome, at).await
    }

    async fn outbox_failing(&self, failing_after: i64) -> anyhow::Result<i64> {
        SqliteStore::outbox_failing(self, failing_after).await
    }

    async fn metrics(&self, failing_after: i64) -> anyhow::Result<Metrics> {
        SqliteStore::metrics(self, failing_after).await
    }

    async fn open_alerts(&self) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
        SqliteStore::open_alerts(self).await
    }

    async fn outbox_counts(&self) -> anyhow::Result<OutboxCounts> {
        SqliteStore::outbox_counts(self).await
    }

    async fn last_summary(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        SqliteStore::last_summary(self).await
    }

    async fn requeue_interrupted(&self) -> anyhow::Result<u64> {
        SqliteStore::requeue_interrupted(self).await
    }

    async fn claim_due(&self, now: DateTime<Utc>, limit: i64) -> anyhow::Result<Vec<OutboxItem>> {
        SqliteStore::claim_due(self, now, limit).await
    }

    async fn mark_in_flight(&self, id: i64) -> anyhow::Result<()> {
        SqliteStore::mark_in_flight(self, id).await
    }

    async fn mark_sent(&self, id: i64, at: DateTime<Utc>) -> anyhow::Result<()> {
        SqliteStore::mark_sent(self, id, at).await
    }

    async fn mark_retry(&self, id: i64, next_attempt_at: DateTime<Utc>, error: &str) -> anyhow::Result<()> {
        SqliteStore::mark_retry(self, id, next_attempt_at, error).await
    }

    async fn mark_failed(&self, id: i64, error: &str) -> anyhow::Result<()> {
        SqliteStore::mark_failed(self, id, error).await
    }

    async fn purge_preview(&self, cutoffs: Cutoffs) -> anyhow::Result<PurgeCounts> {
        self.read(move |c| retention::preview(c, &cutoffs)).await
    }

    async fn purge(&self, cutoffs: Cutoffs, actor: &str, at: DateTime<Utc>) -> anyhow::Result<PurgeCounts> {
        let actor = actor.to_string();
        self.write(move |c| retention::purge(c, &cutoffs, &actor, at)).await
    }

    async fn reclaim_space(&self) -> anyhow::Result<Reclaimed> {
        let path = self.path.clone();
        self.write(move |c| retention::reclaim(c, &path)).await
    }

    async fn person_data(&self, person: &EmailAddress) -> anyhow::Result<PersonData> {
        let person = person.clone();
        self.read(move |c| retention::person_data(c, &person)).await
    }

    async fn erase_request(
        &self,
        reference: &str,
        actor: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<Option<Erased>> {
        let (reference, actor) = (reference.to_string(), actor.to_string());
        self.write(move |c| retention::erase(c, &reference, &actor, at)).await
    }

    async fn add_service_event(
        &self,
        at: DateTime<Utc>,
        actor: &str,
        kind: &str,
        detail: &str,
    ) -> anyhow::Result<()> {
        let (actor, kind, detail) = (actor.to_string(), kind.to_string(), detail.to_string());
        self.write(move |c| retention::insert_service_event(c, to_millis(at), &actor, &kind, &detail)).await
    }

    async fn service_events(&self) -> anyhow::Result<Vec<EventRow>> {
        self.read(retention::service_events).await
    }

    async fn backup_to(&self, dest: &Path) -> anyhow::Result<BackupDone> {
        let dest = dest.to_path_buf();
        self.read(move |c| retention::backup(c, &dest)).await
    }

    async fn begin(&self) -> anyhow::Result<Box<dyn Tx>> {
        let conn = self.writer_lock().await?;
        // Taking the write lock may wait (busy_timeout) for the CLI: on a blocking thread.
        let conn = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            end_abandoned_transaction(&conn);
            conn.execute_batch("BEGIN IMMEDIATE").context("Cannot start a transaction")?;
            Ok(conn)
        })
        .await
        .context("The database thread failed")??;
        Ok(Box::new(SqliteTx { conn, open: true, checkpoints: self.checkpoints.clone() }))
    }
}

#[async_trait]
impl Tx for SqliteTx {
    async fn next_reference_seq(&mut self, year: i32) -> anyhow::Result<i64> {
        SqliteTx::next_reference_seq(self, year).await
    }

    async fn insert_request(&mut self, r: &NewRequest) -> anyhow::Result<i64> {
        SqliteTx::insert_request(self, r).await
    }

    async fn add_event(
        &mut self,
        request_id: i64,
        at: DateTime<Utc>,
        actor: &str,
        kind: &str,
        detail: Option<&str>,
    ) -> anyhow::Result<()> {
        SqliteTx::add_event(self, request_id, at, actor, kind, detail).await
    }

    async fn add_thread_id(
        &mut self,
        message_id: &str,
        request_id: i64,
        direction: &str,
    ) -> anyhow::Result<()> {
        SqliteTx::add_thread_id(self, message_id, request_id, direction).await
    }

    async fn finish_message(&mut self, id: i64, o: &MessageOutcome, at: DateTime<Utc>) -> anyhow::Result<()> {
        SqliteTx::finish_message(self, id, o, at).await
    }

    async fn set_checkpoint(
        &mut self,
        mailbox: &str,
        uidvalidity: u32,
        last_uid: u32,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        SqliteTx::set_checkpoint(self, mailbox, uidvalidity, last_uid, at).await
    }

    async fn enqueue(&mut self, mail: &NewOutgoing, at: DateTime<Utc>) -> anyhow::Result<i64> {
        SqliteTx::enqueue(self, mail, at).await
    }

    async fn record_answered(
        &mut self,
        outbox_id: i64,
        person: &str,
        domain: &str,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        SqliteTx::record_answered(self, outbox_id, person, domain, at).await
    }

    async fn answered_counts(
        &mut self,
        person: &str,
        domain: &str,
        day: DateTime<Utc>,
        hour: DateTime<Utc>,
    ) -> anyhow::Result<AnsweredCounts> {
        SqliteTx::answered_counts(self, person, domain, day, hour).await
    }

    async fn has_outgoing(&mut self, request_id: i64, kind: &str) -> anyhow::Result<bool> {
        SqliteTx::has_outgoing(self, request_id, kind).await
    }

    async fn mark_bounced(&mut self, outbox_id: i64, detail: &str) -> anyhow::Result<()> {
        SqliteTx::mark_bounced(self, outbox_id, detail).await
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
        SqliteTx::record_decision(self, request_id, decision, detail, meeting_date, duplicate_of, at).await
    }

    async fn alert(&mut self, key: &str) -> anyhow::Result<Option<AlertRow>> {
        SqliteTx::alert(self, key).await
    }

    async fn put_alert(&mut self, a: &AlertRow) -> anyhow::Result<()> {
        SqliteTx::put_alert(self, a).await
    }

    async fn alerts_sent_since(&mut self, prefix: &str, since: DateTime<Utc>) -> anyhow::Result<i64> {
        SqliteTx::alerts_sent_since(self, prefix, since).await
    }

    async fn set_meta(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        SqliteTx::set_meta(self, key, value).await
    }

    async fn add_priority(&mut self, request_id: i64, key: &str) -> anyhow::Result<()> {
        SqliteTx::add_priority(self, request_id, key).await
    }

    async fn set_status(&mut self, request_id: i64, status: Status, at: DateTime<Utc>) -> anyhow::Result<()> {
        SqliteTx::set_status(self, request_id, status, at).await
    }

    async fn record_summary(
        &mut self,
        kind: &str,
        period: &str,
        covers: (DateTime<Utc>, DateTime<Utc>),
        outbox_id: Option<i64>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        SqliteTx::record_summary(self, kind, period, covers, outbox_id, at).await
    }

    async fn agenda_told_ids(&mut self, date: NaiveDate) -> anyhow::Result<Option<Vec<i64>>> {
        SqliteTx::agenda_told_ids(self, date).await
    }

    async fn record_agenda_told(
        &mut self,
        date: NaiveDate,
        on: &[i64],
        off: &[i64],
        outbox_id: Option<i64>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        SqliteTx::record_agenda_told(self, date, on, off, outbox_id, at).await
    }

    async fn find_request(&mut self, reference: &str) -> anyhow::Result<Option<RequestRow>> {
        requests::find_request(&self.conn, reference)
    }

    async fn save_raw(&mut self, m: &NewRawMessage<'_>) -> anyhow::Result<RawSaved> {
        inbox::save_raw(&self.conn, m)
    }

    async fn request_for_thread(&mut self, ids: &[String]) -> anyhow::Result<Option<RequestRow>> {
        requests::request_for_thread(&self.conn, ids)
    }

    async fn request_by_token(&mut self, token: &str) -> anyhow::Result<Option<RequestRow>> {
        requests::request_by_token(&self.conn, token)
    }

    async fn request_for_notification(&mut self, ids: &[String]) -> anyhow::Result<Option<RequestRow>> {
        requests::request_for_notification(&self.conn, ids)
    }

    async fn recent_requests(
        &mut self,
        requester: &str,
        organisation: Option<&str>,
        since: DateTime<Utc>,
    ) -> anyhow::Result<Vec<(i64, String)>> {
        requests::recent_requests(&self.conn, requester, organisation, since)
    }

    async fn request_texts(&mut self, tokens: &[String]) -> anyhow::Result<Vec<RequestText>> {
        requests::request_texts(&self.conn, tokens)
    }

    async fn candidates(&mut self, ids: &[i64]) -> anyhow::Result<Vec<Candidate>> {
        requests::candidates(&self.conn, ids)
    }

    async fn outbox_for_message_ids(
        &mut self,
        ids: &[String],
    ) -> anyhow::Result<Option<(i64, Option<i64>, String)>> {
        outbox::outbox_for_message_ids(&self.conn, ids)
    }

    async fn savepoint(&mut self) -> anyhow::Result<()> {
        exec(&self.conn, "SAVEPOINT gatehouse_step", [], "Cannot start a savepoint").map(drop)
    }

    async fn release_savepoint(&mut self) -> anyhow::Result<()> {
        exec(&self.conn, "RELEASE gatehouse_step", [], "Cannot release a savepoint").map(drop)
    }

    async fn rollback_to_savepoint(&mut self) -> anyhow::Result<()> {
        exec(&self.conn, "ROLLBACK TO gatehouse_step", [], "Cannot roll back a step")?;
        exec(&self.conn, "RELEASE gatehouse_step", [], "Cannot release a savepoint").map(drop)
    }

    async fn commit(mut self: Box<Self>) -> anyhow::Result<()> {
        self.open = false;
        let result = self.conn.execute_batch("COMMIT").context("Cannot commit");
        if result.is_err() {
            // SQLite may or may not have rolled back by itself (a full disk does).
            end_abandoned_transaction(&self.conn);
        }
        self.checkpoints.nudge();
        result
    }
}
