//! Retention, subject access, erasure and backup, end to end on the real stack: what the
//! database holds after `purge` and `erase`, what `export --person` writes, and a backup
//! taken while the daemon runs, restored by the README's steps into a new data directory
//! that carries on where it stopped.

use std::path::Path;
use std::sync::Arc;

use gatehouse::clock::ManualClock;
use gatehouse::config::Config;
use gatehouse::retention::Retention;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Db, Options, TestApp, header, wait_until};
use crate::on_db;
use crate::triage::approach;

async fn request_id(db: &Db, reference: &str) -> i64 {
    let sql = "SELECT id FROM requests WHERE reference = $1";
    on_db!(db, |pool| sqlx::query_scalar(sql).bind(reference).fetch_one(pool).await.unwrap())
}

/// Moves everything about one request `days` into the past, as though it had all happened
/// then: the request, its log, its messages, the mail about it and the answer records.
async fn backdate(db: &Db, reference: &str, days: i64) {
    let id = request_id(db, reference).await;
    let ms = days * 86_400_000;
    let sql = format!(
        "UPDATE requests SET received_at = received_at - {ms}, decided_at = decided_at - {ms},
            created_at = created_at - {ms}, updated_at = updated_at - {ms} WHERE id = {id};
         UPDATE request_events SET at = at - {ms} WHERE request_id = {id};
         UPDATE messages SET fetched_at = fetched_at - {ms}, received_at = received_at - {ms},
            processed_at = processed_at - {ms} WHERE request_id = {id};
         UPDATE answered SET created_at = created_at - {ms}
            WHERE outbox_id IN (SELECT id FROM outbox WHERE request_id = {id});
         UPDATE outbox SET created_at = created_at - {ms}, sent_at = sent_at - {ms} WHERE request_id = {id};"
    );
    on_db!(db, |pool| sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await.unwrap().rows_affected());
}

async fn count(db: &Db, sql: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    on_db!(db, |pool| sqlx::query_scalar(sql).fetch_one(pool).await.unwrap())
}

#[tokio::test]
async fn purge_takes_only_what_is_past_its_period_and_never_what_is_still_needed() {
    let mut app = TestApp::spawn().await;
    // A: closed three years ago. B: still open, a little over a year old. C: closed a little
    // over a year ago.
    let a = approach(&app, "Retention A: flu vaccine uptake").await;
    let b = approach(&app, "Retention B: estates strategy").await;
    let c = approach(&app, "Retention C: pharmacy first").await;
    for r in [&a, &c] {
        app.cli_ok(&["triage", &r.reference, "decline", "Not for this group", "--note", "internal words"]);
    }
    app.wait_for_outbox_drain().await;
    app.stop().await;

    let conn = app.db().await;
    backdate(&conn, &a.reference, 3 * 365).await;
    backdate(&conn, &b.reference, 400).await;
    backdate(&conn, &c.reference, 400).await;
    let a_id = request_id(&conn, &a.reference).await;
    let b_id = request_id(&conn, &b.reference).await;
    let c_id = request_id(&conn, &c.reference).await;
    // An email about B still waiting to go (an SMTP outage), and a message taken in three
    // years ago but never processed: both still needed, whatever their age.
    let old = chrono::Utc::now().timestamp_millis() - 3 * 365 * 86_400_000;
    let unprocessed: i64 = on_db!(conn, |pool| {
        sqlx::query(
            "UPDATE outbox SET status = 'pending', next_attempt_at = 4102444800000
             WHERE request_id = $1 AND kind = 'acknowledgement'",
        )
        .bind(b_id)
        .execute(pool)
        .await
        .unwrap();
        let id = sqlx::query_scalar(
            "INSERT INTO messages (mailbox, uidvalidity, uid, dedup_key, content_hash, size, fetched_at)
             VALUES ('INBOX', 1, 999999, 'never-processed', 'h', 5, $1) RETURNING id",
        )
        .bind(old)
        .fetch_one(pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO raw_messages (id, raw) VALUES ($1, $2)")
            .bind(id)
            .bind(b"hi!!!".to_vec())
            .execute(pool)
            .await
            .unwrap();
        id
    });
    let raw_before = count(&conn, "SELECT COUNT(*) FROM raw_messages").await;

    let preview = app.cli_json(&["purge", "--dry-run", "--format", "json"]);
    assert_eq!(preview["dry_run"], true);
    assert_eq!(preview["closed_requests"]["count"], 1, "{preview}");
    assert_eq!(preview["raw_messages"]["count"], 2, "A's and C's approaches: {preview}");
    assert!(preview["sent_mail"]["count"].as_i64().unwrap() >= 4, "{preview}");
    assert!(
        preview["raw_messages"]["oldest"].as_str().unwrap()
            < preview["raw_messages"]["newest"].as_str().unwrap()
    );
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM raw_messages").await,
        raw_before,
        "a dry run changed something"
    );

    let purged = app.cli_json(&["purge", "--format", "json"]);
    for kind in ["raw_messages", "sent_mail", "answer_records", "closed_requests"] {
        assert_eq!(purged[kind], preview[kind], "the purge took other than the dry run said ({kind})");
    }

    // A keeps only what the board's statistics need.
    let shown = app.cli_json(&["requests", "show", &a.reference, "--format", "json"]);
    assert_eq!(shown["requester"], "");
    assert_eq!(shown["subject"], "");
    assert_eq!(shown["requester_name"], Value::Null);
    assert_eq!(shown["decision"], "decline");
    assert_eq!(shown["decision_detail"], Value::Null);
    assert_eq!(shown["status"], "closed");
    assert_eq!(shown["organisation"], "Anytown ICB");
    let text = shown.to_string();
    for gone in
        ["flu vaccine", "internal words", "Not for this group", &a.requester, "Could general practice"]
    {
        assert!(!text.contains(gone), "{gone:?} is still held: {text}");
    }
    assert!(shown["events"].as_array().unwrap().iter().any(|e| e["kind"] == "anonymised"), "{shown}");
    assert!(
        shown["messages"].as_array().unwrap().iter().all(|m| m["from"].is_null() && m["subject"].is_null())
    );

    // Raw bytes: A's and C's gone; B's (open) and the unprocessed one kept.
    let mut raw_of = Vec::new();
    for id in [a_id, b_id, c_id] {
        let sql = format!(
            "SELECT COUNT(*) FROM raw_messages rm JOIN messages m ON m.id = rm.id WHERE m.request_id = {id}"
        );
        raw_of.push(count(&conn, &sql).await);
    }
    assert_eq!(raw_of, [0, 1, 0]);
    assert_eq!(count(&conn, &format!("SELECT COUNT(*) FROM raw_messages WHERE id = {unprocessed}")).await, 1);
    // Sent mail: everything old and finished with lost its bytes; the unsent one kept them.
    assert_eq!(
        count(
            &conn,
            &format!(
                "SELECT COUNT(*) FROM outbox WHERE request_id IN ({a_id}, {c_id}) AND (length(raw) > 0 OR recipients != '[]')"
            )
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &conn,
            &format!(
                "SELECT COUNT(*) FROM outbox WHERE request_id = {b_id} AND status = 'pending' AND length(raw) > 0"
            )
        )
        .await,
        1
    );
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM answered").await, 0);
    // C is closed but not for long enough: its request is whole; B is open and whole.
    for (r, words) in [(&c, "pharmacy first"), (&b, "estates strategy")] {
        let shown = app.cli_json(&["requests", "show", &r.reference, "--format", "json"]);
        assert!(shown["subject"].as_str().unwrap().contains(words), "{shown}");
        assert_eq!(shown["requester"], r.requester.as_str());
    }
    assert_eq!(
        count(&conn, &format!("SELECT COUNT(*) FROM request_fingerprints WHERE request_id = {a_id}")).await,
        0
    );

    // The purge is in the log by count, and a second one finds nothing.
    let events = app.store.service_events().await.unwrap();
    // (The daemon's own daily purge ran at its start, with nothing to take.)
    let purge = events
        .iter()
        .find(|e| e.kind == "purge" && e.actor.starts_with("operator"))
        .expect("the purge is logged as the operator's");
    assert!(purge.detail.as_deref().unwrap().contains("closed requests anonymised: 1"), "{purge:?}");
    let again = app.cli_json(&["purge", "--dry-run", "--format", "json"]);
    for kind in ["raw_messages", "sent_mail", "answer_records", "closed_requests"] {
        assert_eq!(again[kind]["count"], 0, "{again}");
    }
    // The board's statistics still count all three.
    let listed = app.cli_json(&["requests", "list", "--format", "json"]);
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert_eq!(listed.as_array().unwrap().iter().filter(|r| r["decision"] == "decline").count(), 2);
}

#[tokio::test]
async fn the_daily_job_purges_once_a_local_day_by_the_clock_it_is_given() {
    let mut app = TestApp::spawn().await;
    let a = approach(&app, "Retention daily: workforce plan").await;
    app.cli_ok(&["triage", &a.reference, "decline", "Not ours"]);
    app.wait_for_outbox_drain().await;
    app.stop().await;

    let daily_purges = || async {
        let events = app.store.service_events().await.unwrap();
        events
            .into_iter()
            .filter(|e| e.kind == "purge" && e.actor == gatehouse::retention::DAILY_ACTOR.to_string())
            .count()
    };
    let at_start = daily_purges().await;
    assert_eq!(at_start, 1, "the daemon purges when it starts");
    let clock = Arc::new(ManualClock::new(chrono::Utc::now() + chrono::Duration::days(3 * 365)));
    let retention = Retention::new(Arc::new(app.config()), app.store.clone(), clock.clone());
    let first = retention.run_daily().await.unwrap().expect("the first run of the day purges");
    assert_eq!(first.counts.closed_requests.count, 1);
    assert_eq!(first.counts.raw_messages.count, 1);
    assert!(first.counts.sent_mail.count >= 2, "{:?}", first.counts);
    assert!(retention.run_daily().await.unwrap().is_none(), "purged twice in one day");
    clock.advance(chrono::Duration::days(1));
    let next = retention.run_daily().await.unwrap().expect("the next day purges again");
    assert!(next.counts.is_empty(), "{:?}", next.counts);
    let shown = app.cli_json(&["requests", "show", &a.reference, "--format", "json"]);
    assert_eq!(shown["subject"], "");
    assert_eq!(daily_purges().await, at_start + 2);
}

/// `jo-1-2-x@icb.test` written as `JO-1-2-X+tag@ICB.test`: the same person.
fn variant(address: &str, tag: &str) -> String {
    let (local, domain) = address.split_once('@').unwrap();
    format!("{}+{tag}@{}", local.to_uppercase(), domain.to_uppercase())
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn export_writes_everything_about_one_person_and_erase_removes_one_request() {
    let mut app = TestApp::spawn().await;
    let jo = app.stack.user("jo", "icb.test");
    let other = app.stack.user("sam", "icb.test");
    app.stack.send(&jo, &app.shared, "Export one: care homes", "Jo's first approach about care homes.").await;
    let tagged = variant(&jo, "sar");
    let with_attachment = format!(
        "From: Jo <{tagged}>\r\nTo: {shared}\r\nSubject: Export two: minutes\r\nMessage-ID: <export-two-{n}@icb.test>\r\nDate: {date}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nJo's second approach, minutes attached.\r\n--b1\r\nContent-Type: text/plain; name=\"minutes.txt\"\r\nContent-Disposition: attachment; filename=\"minutes.txt\"\r\n\r\nMINUTES-OF-THE-LMC-MEETING\r\n--b1--\r\n",
        shared = app.shared,
        n = crate::helpers::rand_suffix(),
        date = chrono::Utc::now().to_rfc2822(),
    );
    app.stack.send_raw(&tagged, &[&app.shared], with_attachment.as_bytes()).await;
    app.stack.send(&other, &app.shared, "Export three: someone else", "Sam's approach.").await;
    app.wait_for_messages(3).await;
    let requests = app.store.list_requests(&Default::default()).await.unwrap();
    let reference =
        |subject: &str| requests.iter().find(|r| r.subject.contains(subject)).unwrap().reference.clone();
    let (one, two, three) = (reference("care homes"), reference("minutes"), reference("someone else"));
    app.cli_ok(&[
        "triage",
        &one,
        "decline",
        "Belongs elsewhere",
        "--note",
        "GATEKEEPER-PRIVATE-NOTE",
        "--message",
        "OUTCOME-WORDS-FOR-JO",
    ]);
    app.wait_for_outbox_drain().await;
    // Two acknowledgements and the outcome of the first.
    let jo_mail = app.stack.wait_for_mail(&jo, 3).await;

    let dir = app.dir.path().join("export-jo");
    let asked_as = variant(&jo, "other");
    app.cli_ok(&["export", "--person", &asked_as, dir.to_str().unwrap()]);
    assert_eq!(mode(&dir), 0o700);
    let readme = std::fs::read_to_string(dir.join("README.txt")).unwrap();
    assert!(readme.contains("2 request(s)"), "{readme}");
    let mut files: Vec<String> = std::fs::read_dir(dir.join("requests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, vec![format!("{one}.json"), format!("{two}.json")]);
    let first: Value =
        serde_json::from_slice(&std::fs::read(dir.join("requests").join(format!("{one}.json"))).unwrap())
            .unwrap();
    assert!(first["body"].as_str().unwrap().contains("first approach about care homes"), "{first}");
    assert!(first["events"].as_array().unwrap().iter().any(|e| e["kind"] == "decision"), "{first}");
    assert_eq!(mode(&dir.join("requests").join(format!("{one}.json"))), 0o600);
    // Their incoming mail as received, attachment included; nobody else's.
    let incoming: Value = serde_json::from_slice(&std::fs::read(dir.join("incoming.json")).unwrap()).unwrap();
    assert_eq!(incoming.as_array().unwrap().len(), 2, "{incoming}");
    let emls: Vec<Vec<u8>> = std::fs::read_dir(dir.join("incoming"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(emls.len(), 2);
    let joined = String::from_utf8_lossy(&emls.concat()).into_owned();
    assert!(joined.contains("MINUTES-OF-THE-LMC-MEETING") && joined.contains("care homes"), "{joined}");
    assert!(!joined.contains("Sam's approach"));
    // What gatehouse sent them: exactly the emails in their mailbox.
    let sent: Vec<Vec<u8>> = std::fs::read_dir(dir.join("sent"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let ids = |mails: &[Vec<u8>]| {
        let mut ids: Vec<String> = mails.iter().map(|m| header(m, "Message-ID").unwrap()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&sent), ids(&jo_mail));
    let everything = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(everything, 6, "README.txt, requests, incoming, incoming.json, sent, sent.json");
    let export_dump = format!("{readme}{first}{incoming}");
    assert!(!export_dump.contains(&three) && !export_dump.contains(&other));
    // Never into a folder that has something in it.
    assert!(!app.cli(&["export", "--person", &jo, dir.to_str().unwrap()]).status.success());

    // Erase the first request.
    let conn = app.db().await;
    let one_id = request_id(&conn, &one).await;
    app.cli_ok(&["erase", &one]);
    let shown = app.cli_json(&["requests", "show", &one, "--format", "json"]);
    let text = shown.to_string();
    for gone in ["care homes", "GATEKEEPER-PRIVATE-NOTE", "OUTCOME-WORDS-FOR-JO", "Belongs elsewhere", &jo] {
        assert!(!text.contains(gone), "{gone:?} is still held after erase: {text}");
    }
    assert_eq!((shown["decision"].as_str(), shown["status"].as_str()), (Some("decline"), Some("closed")));
    let erased =
        shown["events"].as_array().unwrap().iter().find(|e| e["kind"] == "erased").expect("logged").clone();
    assert!(erased["actor"].as_str().unwrap().starts_with("operator"), "{erased}");
    assert!(erased["detail"].as_str().unwrap().contains("1 incoming message(s)"), "{erased}");
    assert_eq!(
        count(
            &conn,
            &format!(
                "SELECT COUNT(*) FROM raw_messages WHERE id IN (SELECT id FROM messages WHERE request_id = {one_id})"
            )
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &conn,
            &format!(
                "SELECT COUNT(*) FROM outbox WHERE request_id = {one_id} AND (length(raw) > 0 OR recipients != '[]' OR subject != '')"
            )
        )
        .await,
        0
    );
    // The second request and someone else's are untouched.
    let second = app.cli_json(&["requests", "show", &two, "--format", "json"]);
    assert!(second["subject"].as_str().unwrap().contains("minutes"));
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM raw_messages").await, 2);
    // A new export no longer finds the erased request.
    let after = app.dir.path().join("export-after");
    app.cli_ok(&["export", "--person", &jo, after.to_str().unwrap()]);
    assert_eq!(std::fs::read_dir(after.join("requests")).unwrap().count(), 1);
    assert!(!app.cli(&["erase", "GP-1999-0001"]).status.success());
    let kinds: Vec<String> = app
        .store
        .service_events()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind.to_string())
        .filter(|k| k != "purge")
        .collect();
    assert_eq!(kinds, ["export", "export"]);
    app.stop().await;
}

#[tokio::test]
async fn a_backup_taken_while_running_restores_by_the_readme_steps_and_carries_on() {
    crate::sqlite_only!(
        "`gatehouse backup` copies the SQLite file (PostgreSQL is backed up with its own tools)"
    );
    let mut app = TestApp::new(Options::default()).await;
    app.start().await;
    let first = approach(&app, "Backup one: winter pressures").await;
    let second = approach(&app, "Backup two: digital").await;
    app.wait_for_outbox_drain().await;

    // Taken while the daemon runs.
    let file = app.dir.path().join("gatehouse-backup.db");
    app.cli_ok(&["backup", file.to_str().unwrap()]);
    assert_eq!(mode(&file), 0o600);
    let refused = app.cli(&["backup", file.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    app.cli_ok(&["backup", "--force", file.to_str().unwrap()]);
    assert!(!app.dir.path().join("gatehouse-backup.db-wal").exists(), "the backup is one file");
    app.stop().await;

    // The README's restore: a new data directory (here a new server's), the file copied in
    // as gatehouse.db, the daemon started.
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(app.dir.path().join("imap.password"), restored.path().join("imap.password")).unwrap();
    let config_path = restored.path().join("gatehouse.toml");
    std::fs::copy(&app.config_path, &config_path).unwrap();
    std::fs::create_dir(restored.path().join("data")).unwrap();
    std::fs::copy(&file, restored.path().join("data").join("gatehouse.db")).unwrap();
    let config = Config::load(&config_path).unwrap();
    let store = gatehouse::store::open(&config).await.unwrap();
    let token = CancellationToken::new();
    let daemon = tokio::spawn(gatehouse::daemon::App::open(config).await.unwrap().run(token.clone()));

    // It carries on: the requests are there, a new approach gets the next reference, and
    // nothing already processed is processed (or answered) again.
    let before = store.list_requests(&Default::default()).await.unwrap();
    assert_eq!(
        before.iter().map(|r| r.reference.as_str()).collect::<Vec<_>>(),
        [first.reference.as_str(), second.reference.as_str()]
    );
    let messages_before = store.list_messages().await.unwrap().len();
    let third_from = app.stack.user("partner", "icb.test");
    app.stack.send(&third_from, &app.shared, "Backup three: after the restore", "A new approach.").await;
    let requests = wait_until("the new approach in the restored data", || {
        let store = store.clone();
        async move {
            let rows = store.list_requests(&Default::default()).await.ok()?;
            (rows.len() >= 3).then_some(rows)
        }
    })
    .await;
    assert_eq!(requests.len(), 3, "an approach was logged twice");
    let seq = |r: &str| r.rsplit('-').next().unwrap().parse::<u32>().unwrap();
    assert_eq!(seq(&requests[2].reference), seq(&second.reference) + 1, "{}", requests[2].reference);
    assert_eq!(store.list_messages().await.unwrap().len(), messages_before + 1);
    app.stack.wait_for_mail(&third_from, 1).await;
    assert_eq!(app.stack.count(&first.requester), 1, "the first requester was acknowledged again");
    token.cancel();
    daemon.await.unwrap().unwrap();
}
