//! Retention, subject access, erasure and backup on SQLite: kept apart from the pipeline's
//! queries in the aggregates' files.
//!
//! What a purge may take is written once, as SQL conditions shared by the preview and the
//! purge, so `gatehouse purge --dry-run` counts exactly what `gatehouse purge` removes.

use std::path::Path;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, Row, TransactionBehavior, params};

use super::{
    MESSAGE_COLUMNS, REQUEST_COLUMNS, all, event_from_row, exec, insert_event, message_from_row, one,
    request_from_row, scalar,
};
use crate::clock::{from_millis, to_millis};
use crate::domain::EmailAddress;
use crate::store::EventRow;
use crate::store::retention::{
    Affected, BackupDone, Cutoffs, Erased, HeldMessage, HeldRequest, PersonData, PurgeCounts, Reclaimed,
    SentMail,
};

/// A closed request `r` due for anonymisation (?3: the closed-requests cutoff). Open
/// requests never are. Statements bind all three cutoffs (?1 to ?3) whichever they use:
/// SQLite numbers parameters up to the highest one written.
const CLOSED_DUE: &str = "r.status = 'closed' AND r.anonymised_at IS NULL AND r.updated_at < ?3";

/// A stored message `m` whose raw bytes may go (?1: the raw-messages cutoff): processed (a
/// quarantined one counts as processed) and no retry asked for, and either old and not part
/// of a request still open, or part of a request due for anonymisation.
fn raw_due() -> String {
    format!(
        "m.processed_at IS NOT NULL AND m.retry_requested_at IS NULL AND (
            (m.fetched_at < ?1 AND (m.request_id IS NULL OR EXISTS (
                SELECT 1 FROM requests r WHERE r.id = m.request_id AND r.status = 'closed')))
            OR EXISTS (SELECT 1 FROM requests r WHERE r.id = m.request_id AND {CLOSED_DUE}))"
    )
}

/// An outbox entry `o` whose bytes may go (?2: the sent-mail cutoff): finished with (sent,
/// bounced, given up or cancelled), bytes still held, and either old or about a request
/// anonymised or due to be (an email being sent when its request was erased has its bytes
/// removed by the next purge). Mail not yet sent never is.
fn sent_due() -> String {
    format!(
        "o.status IN ('sent', 'bounced', 'failed', 'cancelled') AND length(o.raw) > 0 AND (
            o.created_at < ?2
            OR EXISTS (SELECT 1 FROM requests r WHERE r.id = o.request_id
                       AND (r.anonymised_at IS NOT NULL OR ({CLOSED_DUE}))))"
    )
}

/// An alert about one message set aside or one email given up (`quarantined:ID`,
/// `undeliverable:ID`, the keys `requests` and `outbox` raise them under).
const ONE_OFF_ALERT: &str = "(substr(key, 1, length('quarantined:')) = 'quarantined:' OR substr(key, 1, length('undeliverable:')) = 'undeliverable:')";

fn cutoff_params(c: &Cutoffs) -> [i64; 3] {
    [to_millis(c.raw_messages), to_millis(c.sent_mail), to_millis(c.closed_requests)]
}

fn affected(row: &Row<'_>) -> anyhow::Result<Affected> {
    Ok(Affected {
        count: row.get(0)?,
        oldest: row.get::<_, Option<i64>>(1)?.map(from_millis),
        newest: row.get::<_, Option<i64>>(2)?.map(from_millis),
    })
}

fn count_of(conn: &Connection, sql: &str, binds: impl rusqlite::Params) -> anyhow::Result<Affected> {
    Ok(one(conn, sql, binds, affected, "Cannot count what retention would remove")?.unwrap_or_default())
}

/// What a purge with `cut` would take.
pub(super) fn preview(conn: &Connection, cut: &Cutoffs) -> anyhow::Result<PurgeCounts> {
    let p = cutoff_params(cut);
    Ok(PurgeCounts {
        raw_messages: count_of(
            conn,
            &format!(
                "SELECT COUNT(*), MIN(m.fetched_at), MAX(m.fetched_at)
                 FROM messages m JOIN raw_messages rm ON rm.id = m.id WHERE {}",
                raw_due()
            ),
            p,
        )?,
        sent_mail: count_of(
            conn,
            &format!(
                "SELECT COUNT(*), MIN(o.created_at), MAX(o.created_at) FROM outbox o WHERE {}",
                sent_due()
            ),
            p,
        )?,
        answer_records: count_of(
            conn,
            "SELECT COUNT(*), MIN(created_at), MAX(created_at) FROM answered WHERE created_at < ?1",
            [p[1]],
        )?,
        closed_requests: count_of(
            conn,
            &format!(
                "SELECT COUNT(*), MIN(r.updated_at), MAX(r.updated_at) FROM requests r WHERE {CLOSED_DUE}"
            ),
            p,
        )?,
    })
}

/// Removes what `cut` says may go, in one transaction, and records the counts (never the
/// content) as a `purge` service event by `actor`.
pub(super) fn purge(
    conn: &Connection,
    cut: &Cutoffs,
    actor: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<PurgeCounts> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .context("Cannot start the purge")?;
    let counts = preview(&tx, cut)?;
    let p = cutoff_params(cut);
    let now = to_millis(at);
    // Raw bytes first, while the conditions still see which requests are due. Attachment
    // names go with the bytes; a message of no request keeps only what stops it being
    // processed again (its Message-ID, hash and classification).
    exec(
        &tx,
        &format!(
            "UPDATE messages SET attachments = NULL,
                from_address = CASE WHEN request_id IS NULL THEN NULL ELSE from_address END,
                from_name = CASE WHEN request_id IS NULL THEN NULL ELSE from_name END,
                subject = CASE WHEN request_id IS NULL THEN NULL ELSE subject END,
                detail = CASE WHEN request_id IS NULL THEN NULL ELSE detail END
             WHERE id IN (SELECT m.id FROM messages m JOIN raw_messages rm ON rm.id = m.id WHERE {})",
            raw_due()
        ),
        p,
        "Cannot clear old messages' details",
    )?;
    exec(
        &tx,
        &format!("DELETE FROM raw_messages WHERE id IN (SELECT m.id FROM messages m WHERE {})", raw_due()),
        p,
        "Cannot remove old messages' bytes",
    )?;
    exec(
        &tx,
        &format!(
            "UPDATE outbox SET raw = X'', recipients = '[]', subject = '' WHERE id IN (SELECT o.id FROM outbox o WHERE {})",
            sent_due()
        ),
        p,
        "Cannot remove old sent mail",
    )?;
    exec(&tx, "DELETE FROM answered WHERE created_at < ?1", [p[1]], "Cannot remove old answer records")?;
    // An alert about one message or one email keeps that mail's subject (a sender's words)
    // and is never resolved: it goes with the sent mail it was about.
    exec(
        &tx,
        &format!("DELETE FROM alerts WHERE {ONE_OFF_ALERT} AND last_sent < ?1"),
        [p[1]],
        "Cannot remove old alerts",
    )?;
    let due: Vec<i64> = all(
        &tx,
        &format!("SELECT r.id FROM requests r WHERE {CLOSED_DUE}"),
        p,
        |row| Ok(row.get(0)?),
        "Cannot find the closed requests due",
    )?;
    for id in due {
        anonymise(&tx, id, now)?;
        insert_event(
            &tx,
            id,
            now,
            actor,
            "anonymised",
            Some("closed for longer than [retention] closed_requests_months: personal data removed"),
        )?;
    }
    insert_service_event(&tx, now, actor, "purge", &describe(&counts))?;
    tx.commit().context("Cannot commit the purge")?;
    Ok(counts)
}

/// The purge's counts in words, for the event log.
fn describe(c: &PurgeCounts) -> String {
    format!(
        "raw messages: {}, sent emails: {}, answer records: {}, closed requests anonymised: {}",
        c.raw_messages.count, c.sent_mail.count, c.answer_records.count, c.closed_requests.count
    )
}

/// Removes a request's personal data, keeping its reference, status, dates, organisation,
/// decision, meeting date and priorities. The one definition of what anonymised means,
/// shared by retention and `gatehouse erase`. Mail about it not yet sent is left to the
/// caller.
fn anonymise(conn: &Connection, id: i64, now: i64) -> anyhow::Result<()> {
    exec(
        conn,
        "UPDATE requests SET requester = '', requester_name = NULL, via = NULL, subject = '', body = '',
            decision_detail = NULL, anonymised_at = ?2
         WHERE id = ?1",
        params![id, now],
        "Cannot anonymise the request",
    )?;
    // The log keeps what happened and when. Details (notes, outcome text, senders' words)
    // go; so do senders' addresses as actors. Gatekeepers' and the operator's actions keep
    // their names: they acted in their work role, and the log says who decided.
    exec(
        conn,
        "UPDATE request_events SET detail = NULL,
            actor = CASE WHEN kind IN ('decision', 'priority', 'note') OR instr(actor, '@') = 0
                         THEN actor ELSE 'sender' END
         WHERE request_id = ?1",
        [id],
        "Cannot anonymise the request's log",
    )?;
    exec(
        conn,
        "DELETE FROM request_fingerprints WHERE request_id = ?1",
        [id],
        "Cannot remove the fingerprint",
    )?;
    exec(conn, "DELETE FROM thread_message_ids WHERE request_id = ?1", [id], "Cannot remove the thread")?;
    exec(
        conn,
        "DELETE FROM raw_messages WHERE id IN (SELECT id FROM messages WHERE request_id = ?1)",
        [id],
        "Cannot remove the request's messages",
    )?;
    exec(
        conn,
        "UPDATE messages SET from_address = NULL, from_name = NULL, subject = NULL, attachments = NULL,
            detail = NULL
         WHERE request_id = ?1",
        [id],
        "Cannot clear the request's messages",
    )?;
    exec(
        conn,
        "DELETE FROM answered WHERE outbox_id IN (SELECT id FROM outbox WHERE request_id = ?1)",
        [id],
        "Cannot remove the request's answer records",
    )?;
    exec(
        conn,
        "DELETE FROM alerts WHERE key IN (SELECT 'undeliverable:' || id FROM outbox WHERE request_id = ?1)",
        [id],
        "Cannot remove the alerts about the request's mail",
    )?;
    exec(
        conn,
        "UPDATE outbox SET raw = X'', recipients = '[]', subject = ''
         WHERE request_id = ?1 AND status IN ('sent', 'bounced', 'failed', 'cancelled')",
        [id],
        "Cannot remove the request's sent mail",
    )?;
    Ok(())
}

pub(super) fn insert_service_event(
    conn: &Connection,
    at: i64,
    actor: &str,
    kind: &str,
    detail: &str,
) -> anyhow::Result<()> {
    exec(
        conn,
        "INSERT INTO service_events (at, actor, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![at, actor, kind, detail],
        "Cannot record the service event",
    )
    .map(drop)
}

pub(super) fn service_events(conn: &Connection) -> anyhow::Result<Vec<EventRow>> {
    all(
        conn,
        "SELECT at, actor, kind, detail FROM service_events ORDER BY at, id",
        [],
        event_from_row,
        "Cannot read the service events",
    )
}

/// `gatehouse erase REF`: the request anonymised, its messages' bytes and the mail about it
/// removed, mail about it not yet sent cancelled, and an `erased` event by `actor` saying
/// what kinds went (never the content). None when there is no such request.
pub(super) fn erase(
    conn: &Connection,
    reference: &str,
    actor: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<Option<Erased>> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .context("Cannot start the erasure")?;
    let Some(id) = one(
        &tx,
        "SELECT id FROM requests WHERE reference = ?1",
        [reference],
        |r| Ok(r.get::<_, i64>(0)?),
        "Cannot find the request",
    )?
    else {
        return Ok(None);
    };
    let now = to_millis(at);
    let cancelled = exec(
        &tx,
        "UPDATE outbox SET status = 'cancelled', last_error = 'erased before it was sent'
         WHERE request_id = ?1 AND status = 'pending'",
        [id],
        "Cannot cancel the request's unsent mail",
    )?;
    let erased = Erased {
        raw_messages: scalar(
            &tx,
            "SELECT COUNT(*) FROM raw_messages WHERE id IN (SELECT id FROM messages WHERE request_id = ?1)",
            [id],
            "Cannot count the request's messages",
        )?,
        sent_mail: scalar(
            &tx,
            "SELECT COUNT(*) FROM outbox WHERE request_id = ?1 AND length(raw) > 0
               AND status IN ('sent', 'bounced', 'failed', 'cancelled')",
            [id],
            "Cannot count the request's mail",
        )?,
        cancelled_mail: i64::try_from(cancelled).unwrap_or(i64::MAX),
        in_flight_mail: scalar(
            &tx,
            "SELECT COUNT(*) FROM outbox WHERE request_id = ?1 AND status IN ('claimed', 'sending')",
            [id],
            "Cannot count the request's mail",
        )?,
    };
    anonymise(&tx, id, now)?;
    let detail = format!(
        "removed: requester, name, forwarder, subject, body, outcome text, notes and event details, {} incoming message(s) with their attachments, {} sent email(s); {} unsent email(s) cancelled",
        erased.raw_messages, erased.sent_mail, erased.cancelled_mail
    );
    insert_event(&tx, id, now, actor, "erased", Some(&detail))?;
    tx.commit().context("Cannot commit the erasure")?;
    Ok(Some(erased))
}

/// Everything held about `person`: compared as `EmailAddress::person` compares (case and
/// `+tag` folded), the one rule for who a person is. SQL narrows by domain; the rule decides.
pub(super) fn person_data(conn: &Connection, person: &EmailAddress) -> anyhow::Result<PersonData> {
    let wanted = person.person();
    let same = |address: Option<&str>| {
        address.and_then(|a| EmailAddress::parse(a).ok()).is_some_and(|a| a.person() == wanted)
    };
    let like = format!("%@{}", person.domain());
    // Their requests, with the people each is about (requester and forwarder).
    let parties: Vec<(i64, String, Option<String>)> = all(
        conn,
        "SELECT id, requester, via FROM requests WHERE requester LIKE ?1 OR via LIKE ?1 ORDER BY id",
        [&like],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?)),
        "Cannot find the person's requests",
    )?
    .into_iter()
    .filter(|(_, requester, via)| same(Some(requester)) || same(via.as_deref()))
    .collect();
    let ids: Vec<i64> = parties.iter().map(|(id, _, _)| *id).collect();
    // A message of one of their requests goes in when it came from the request's requester
    // or forwarder (the forward carrying their approach, say), not when someone else wrote
    // it: a gatekeeper's reply (their notes, the quoted notification and its reply key) or a
    // stranger quoting the reference are other people's emails.
    let from_a_party = |request_id: i64, from: Option<&str>| {
        let Some(from) = from.and_then(|a| EmailAddress::parse(a).ok()) else {
            // Its sender already removed by retention: nothing of anyone else's is left.
            return from.is_none();
        };
        parties.iter().filter(|(id, _, _)| *id == request_id).any(|(_, requester, via)| {
            [Some(requester.as_str()), via.as_deref()]
                .into_iter()
                .flatten()
                .filter_map(|a| EmailAddress::parse(a).ok())
                .any(|a| a.person() == from.person())
        })
    };
    let mut data = PersonData::default();
    for &id in &ids {
        let sql = format!("SELECT {REQUEST_COLUMNS}, r.anonymised_at FROM requests r WHERE r.id = ?1");
        let Some((request, anonymised_at)) = one(
            conn,
            &sql,
            [id],
            |row| Ok((request_from_row(row)?, row.get::<_, Option<i64>>("anonymised_at")?.map(from_millis))),
            "Cannot read the person's request",
        )?
        else {
            continue;
        };
        let events = all(
            conn,
            "SELECT at, actor, kind, detail FROM request_events WHERE request_id = ?1 ORDER BY at, id",
            [id],
            event_from_row,
            "Cannot read the request's events",
        )?;
        data.requests.push(HeldRequest { request, events, anonymised_at });
    }
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS}, m.fetched_at, m.request_id AS request_id FROM messages m
         WHERE m.from_address LIKE ?1 OR m.request_id IN (SELECT value FROM json_each(?2))
         ORDER BY m.id"
    );
    let id_list = serde_json::to_string(&ids).context("Cannot list the requests")?;
    let rows = all(
        conn,
        &sql,
        params![like, id_list],
        |row| {
            Ok((
                message_from_row(row)?,
                from_millis(row.get("fetched_at")?),
                row.get::<_, Option<i64>>("request_id")?,
            ))
        },
        "Cannot find the person's messages",
    )?;
    for (row, fetched_at, request_id) in rows {
        if !(same(row.from.as_deref()) || request_id.is_some_and(|r| from_a_party(r, row.from.as_deref()))) {
            continue;
        }
        let raw = one(
            conn,
            "SELECT raw FROM raw_messages WHERE id = ?1",
            [row.id],
            |r| Ok(r.get::<_, Vec<u8>>(0)?),
            "Cannot read the message's bytes",
        )?;
        data.incoming.push(HeldMessage { row, fetched_at, raw });
    }
    let sent = all(
        conn,
        "SELECT o.id, o.kind, o.message_id, o.recipients, o.subject, o.status, o.created_at, o.sent_at, o.raw,
            (SELECT r.reference FROM requests r WHERE r.id = o.request_id) AS reference
         FROM outbox o WHERE o.recipients LIKE ?1 ORDER BY o.id",
        [format!("%@{}%", person.domain())],
        |row| {
            let recipients: String = row.get("recipients")?;
            Ok(SentMail {
                id: row.get("id")?,
                kind: row.get("kind")?,
                message_id: row.get("message_id")?,
                reference: row.get("reference")?,
                recipients: serde_json::from_str(&recipients).context("An outbox entry's recipients are not a list")?,
                subject: row.get("subject")?,
                status: row.get("status")?,
                created_at: from_millis(row.get("created_at")?),
                sent_at: row.get::<_, Option<i64>>("sent_at")?.map(from_millis),
                raw: row.get("raw")?,
            })
        },
        "Cannot find the mail sent to the person",
    )?;
    data.sent = sent.into_iter().filter(|m| m.recipients.iter().any(|r| same(Some(r)))).collect();
    Ok(data)
}

/// The database file's size with its WAL.
fn size_on_disk(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    len(path) + len(Path::new(&wal))
}

/// The share of free pages above which a database without incremental vacuum is rebuilt
/// (VACUUM) after a purge, and switched to incremental vacuum so later purges give space
/// back without a rebuild. Below it the free pages are simply reused by new mail.
const VACUUM_FREE_SHARE: f64 = 0.10;

/// Gives the pages a purge freed back to the file system when worth it, then empties the
/// WAL the rebuild went through.
pub(super) fn reclaim(conn: &Connection, path: &Path) -> anyhow::Result<Reclaimed> {
    let bytes_before = size_on_disk(path);
    let pragma = |name: &str| {
        scalar::<i64>(conn, &format!("PRAGMA {name}"), [], "Cannot read the database's page counts")
    };
    let (mode, free, pages) = (pragma("auto_vacuum")?, pragma("freelist_count")?, pragma("page_count")?);
    let how = if free == 0 {
        "none"
    } else if mode == 2 {
        // Each step of incremental_vacuum frees pages; it is done when it returns no row.
        let mut stmt = conn.prepare("PRAGMA incremental_vacuum").context("Cannot reclaim space")?;
        let mut rows = stmt.query([]).context("Cannot reclaim space")?;
        while rows.next().context("Cannot reclaim space")?.is_some() {}
        "incremental"
    } else if free as f64 >= pages as f64 * VACUUM_FREE_SHARE {
        // The rebuild's transient copy goes to a file: the writer keeps temporary tables in
        // memory, which for VACUUM would mean a second whole database in RAM.
        let rebuilt =
            conn.execute_batch("PRAGMA temp_store = FILE; PRAGMA auto_vacuum = INCREMENTAL; VACUUM;");
        conn.execute_batch("PRAGMA temp_store = MEMORY;").context("Cannot reset temp_store")?;
        rebuilt.context("Cannot rebuild the database (VACUUM)")?;
        "vacuum"
    } else {
        "none"
    };
    if how != "none"
        && let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
    {
        tracing::debug!("WAL checkpoint after reclaiming space: {e}");
    }
    Ok(Reclaimed { bytes_before, bytes_after: size_on_disk(path), how })
}

/// How many times a backup step that found the database busy is tried again.
const BACKUP_TRIES: u32 = 50;

/// Copies the database into `dest` (an empty file) with SQLite's online backup API, in one
/// step so the copy is one consistent snapshot (WAL: the daemon's writes carry on
/// meanwhile), makes the copy a standalone file (no WAL), and checks it.
pub(super) fn backup(source: &Connection, dest: &Path) -> anyhow::Result<BackupDone> {
    let mut copy = Connection::open(dest).with_context(|| format!("Cannot open {}", dest.display()))?;
    {
        let backup = rusqlite::backup::Backup::new(source, &mut copy).context("Cannot start the backup")?;
        let mut tries = 0;
        loop {
            match backup.step(-1).context("The backup failed")? {
                rusqlite::backup::StepResult::Done => break,
                _ if tries < BACKUP_TRIES => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => anyhow::bail!("The backup could not finish: the database stayed busy ({other:?})"),
            }
        }
    }
    // The copy inherits WAL from the source's header: one self-contained file is easier to
    // move and restore.
    copy.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(())).context("Cannot finish the backup")?;
    let problems =
        all(&copy, "PRAGMA integrity_check", [], |r| Ok(r.get::<_, String>(0)?), "Cannot check the backup")?;
    if problems != ["ok"] {
        anyhow::bail!("The backup failed its integrity check: {}", problems.join("; "));
    }
    let pages = scalar::<i64>(&copy, "PRAGMA page_count", [], "Cannot check the backup")?;
    drop(copy);
    let bytes = std::fs::metadata(dest).map(|m| m.len()).context("Cannot read the backup's size")?;
    Ok(BackupDone { bytes, pages })
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use crate::store::AlertRow;
    use crate::store::retention::Cutoffs;

    #[tokio::test]
    async fn purge_drops_old_alerts_about_one_message_and_keeps_lasting_problems() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open_sqlite_file(&dir.path().join("g.db")).await.unwrap();
        store.migrate().await.unwrap();
        let now = chrono::Utc::now();
        let old = now - Duration::days(40);
        let mut tx = store.begin().await.unwrap();
        for (key, at) in [
            ("quarantined:1", old),
            ("undeliverable:7", old),
            ("quarantined:2", now),
            ("imap_login_refused", old),
            // A literal prefix: LIKE would take this one for `quarantined:` too.
            ("quarantinedX1", old),
        ] {
            let subject = format!("A SENDER'S SUBJECT for {key}");
            tx.put_alert(&AlertRow {
                key: key.into(),
                subject,
                first_raised: at,
                last_sent: at,
                resolved_at: None,
            })
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let cut = Cutoffs { raw_messages: old, sent_mail: now - Duration::days(30), closed_requests: old };
        store.purge(cut, crate::store::Actor::Retention, now).await.unwrap();
        let keys: Vec<String> = store.open_alerts().await.unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["imap_login_refused", "quarantined:2", "quarantinedX1"]);
    }
}
