//! The whole daemon under faults: killed at random during a backlog, its IMAP connection
//! cut mid-fetch, stopped in the middle of sending, its disk full. Nothing may be lost or
//! logged twice.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gatehouse::domain::Classification;
use rand::Rng as _;

use crate::helpers::{
    Db, Options, PrivateStack, Proxy, STALL, TestApp, header, wait_until, wait_while_progressing,
};
use crate::on_db;

fn spawn_daemon(app: &TestApp) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(app.dir.path().join("daemon.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("--config")
        .arg(&app.config_path)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    Command::new("kill").arg(sig).arg(child.id().to_string()).status().unwrap();
}

async fn processed(app: &TestApp) -> usize {
    app.store.list_messages().await.unwrap().iter().filter(|m| m.classification.is_some()).count()
}

/// Acknowledgements per reference in the requesters' mailboxes.
fn acks_per_reference(app: &TestApp, senders: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in senders {
        for m in app.stack.mailbox(s) {
            let subject = header(&m, "Subject").unwrap_or_default();
            if let Some(start) = subject.rfind("[GP-") {
                *counts.entry(subject[start..].to_string()).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// Processed messages and sent emails, read straight from the database: cheap enough to
/// poll while another process (the daemon) writes it.
async fn progress(db: &Db) -> (i64, i64) {
    let sql = "SELECT (SELECT COUNT(*) FROM messages WHERE classification IS NOT NULL), \
                      (SELECT COUNT(*) FROM outbox WHERE status = 'sent')";
    on_db!(db, |pool| sqlx::query_as(sql).fetch_one(pool).await.unwrap_or((-1, -1)))
}

/// Sending limits high enough for a load test from one domain: what it tests is that every
/// approach is answered once, not the caps (tests/api/recipients.rs has those).
const LOAD_LIMITS: &str =
    "[acknowledgements]\nrate_limit_per_day = 1000\ndomain_limit_per_day = 2000\nlimit_per_hour = 2000\n";

#[tokio::test]
async fn twenty_sigkills_during_a_1000_message_backlog_lose_and_duplicate_nothing() {
    let app =
        TestApp::new(Options { backlog: "treat_as_new", extra: LOAD_LIMITS.into(), ..Options::default() })
            .await;
    let wanted: Vec<(String, String)> =
        (0..20).map(|i| (format!("kill{i}"), "icb.test".to_string())).collect();
    let wanted: Vec<(&str, &str)> = wanted.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let senders = app.stack.users(&wanted);
    use futures::StreamExt as _;
    futures::stream::iter(senders.iter().cycle().take(1000).enumerate())
        .for_each_concurrent(10, |(i, s)| {
            let app = &app;
            async move {
                app.stack
                    .send(s, &app.shared, &format!("Backlog approach {i}"), "Please could practices help?")
                    .await;
            }
        })
        .await;
    app.stack.wait_for_mail(&app.shared, 1000).await;
    eprintln!("1000 approaches delivered");
    let pool = app.db().await;

    // Each kill lands at a random moment once the daemon is at work (a message processed or
    // an email sent since it started), so none is wasted on a daemon still starting up.
    let mut kills = 0;
    while kills < 20 {
        let before = progress(&pool).await;
        let child = spawn_daemon(&app);
        wait_while_progressing(STALL, "the restarted daemon to make progress", || {
            let pool = &pool;
            async move {
                let now = progress(pool).await;
                (now.0 + now.1, (now.0 > before.0 || now.1 > before.1).then_some(()))
            }
        })
        .await;
        let delay = rand::rng().random_range(0..700);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        signal(&child, "-KILL");
        let _ = tokio::task::spawn_blocking(move || child.wait_with_output()).await;
        kills += 1;
        let (done, sent) = progress(&pool).await;
        eprintln!("kill {kills} ({delay} ms into work): {done} processed, {sent} emails sent");
        if done >= 1000 {
            break;
        }
    }
    let (at_last_kill, _) = progress(&pool).await;
    let child = spawn_daemon(&app);
    wait_while_progressing(STALL, "all 1000 processed and every email sent", || {
        let (app, pool) = (&app, &pool);
        async move {
            let (done, sent) = progress(pool).await;
            let pending = app.store.outbox_counts().await.map_or(-1, |c| c.pending);
            (done + sent, (done >= 1000 && pending == 0).then_some(()))
        }
    })
    .await;
    signal(&child, "-TERM");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "the last run did not stop cleanly: {:?}", out.status);

    // A message that three kills in a row landed on is set aside as one that keeps stopping
    // the daemon (it cannot tell a SIGKILL from a crash it caused): kept, not lost. The
    // operator's `messages retry` brings it in, as the alert says.
    let set_aside: Vec<String> = app
        .store
        .list_messages()
        .await
        .unwrap()
        .iter()
        .filter(|m| m.classification == Some(Classification::Quarantined))
        .map(|m| m.id.to_string())
        .collect();
    if !set_aside.is_empty() {
        eprintln!("{} message(s) set aside after repeated kills; retrying them", set_aside.len());
        for id in &set_aside {
            app.cli_ok(&["messages", "retry", id]);
        }
        let child = spawn_daemon(&app);
        wait_while_progressing(STALL, "the retried messages processed and their emails sent", || {
            let (app, pool) = (&app, &pool);
            async move {
                let (done, sent) = progress(pool).await;
                let left = app.store.retries_requested().await.map_or(1, |r| r.len());
                let pending = app.store.outbox_counts().await.map_or(-1, |c| c.pending);
                (done + sent, (left == 0 && pending == 0).then_some(()))
            }
        })
        .await;
        signal(&child, "-TERM");
        let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
        assert!(out.status.success(), "the retry run did not stop cleanly: {:?}", out.status);
    }
    pool.close().await;

    let requests = app.store.list_requests(&Default::default()).await.unwrap();
    let messages = app.store.list_messages().await.unwrap();
    let distinct: std::collections::BTreeSet<_> = requests.iter().map(|r| r.reference.clone()).collect();
    assert_eq!(requests.len(), 1000, "requests lost or duplicated");
    assert_eq!(distinct.len(), 1000);
    assert_eq!(messages.len(), 1000);
    let subjects: std::collections::BTreeSet<_> = requests.iter().map(|r| r.subject.clone()).collect();
    assert_eq!(subjects.len(), 1000, "an approach logged twice");
    // Every approach acknowledged (counted once Postfix has delivered all it took). An email
    // goes again only when a kill cut its SMTP exchange off (the server may or may not have
    // taken it), so no email may arrive more often than once plus its interruptions.
    app.stack.wait_for_queue_empty().await;
    let acks = acks_per_reference(&app, &senders);
    assert_eq!(acks.len(), 1000, "some approaches were never acknowledged");
    let mut addresses: Vec<&str> = senders.iter().map(String::as_str).collect();
    addresses.push(&app.gatekeeper);
    let delivered = delivered_ids(app.stack, &addresses);
    let db = app.db().await;
    let sql = "SELECT kind, status, message_id, interrupted FROM outbox";
    let rows: Vec<(String, String, String, i64)> =
        on_db!(db, |pool| sqlx::query_as(sql).fetch_all(pool).await.unwrap());
    db.close().await;
    let answers = rows.iter().filter(|(kind, ..)| kind != "system_alert").count();
    assert_eq!(answers, 2000, "an acknowledgement and a notification for each approach");
    let mut again: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (kind, status, id, interrupted) in &rows {
        assert_eq!(status, "sent", "{kind} {id}");
        let copies = delivered.get(id).copied().unwrap_or(0);
        assert!(
            (1..=1 + *interrupted as usize).contains(&copies),
            "{kind} {id} arrived {copies} time(s) after {interrupted} interruption(s)"
        );
        let entry = again.entry(kind.as_str()).or_default();
        entry.0 += usize::from(copies == 2);
        entry.1 += usize::from(copies > 2);
    }
    assert_eq!(delivered.len(), rows.len(), "mail delivered that the outbox does not know");
    eprintln!(
        "FAULTS: {kills} SIGKILLs (processed {at_last_kill} of 1000 before the last); 0 lost, 0 logged twice; \
         sent twice / three times or more, by kind: {again:?}"
    );
}

#[tokio::test]
async fn an_imap_connection_cut_mid_fetch_loses_nothing() {
    let proxy = Proxy::start(crate::helpers::stack().imap_port).await;
    let app = TestApp::new(Options { port: Some(proxy.port), ..Options::default() }).await;
    let partner = app.stack.user("midfetch", "icb.test");
    for i in 0..300 {
        app.stack
            .send(
                &partner,
                &app.shared,
                &format!("Fetched in pieces {i}"),
                &"A long line of text. ".repeat(50),
            )
            .await;
    }
    app.stack.wait_for_mail(&app.shared, 300).await;
    let mut app = app;
    app.start_nowait().await;
    let mut cuts = 0;
    while processed(&app).await < 300 && cuts < 15 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        proxy.cut();
        cuts += 1;
    }
    wait_until("all 300 processed", || {
        let app = &app;
        async move { (processed(app).await >= 300).then_some(()) }
    })
    .await;
    let messages = app.store.list_messages().await.unwrap();
    assert_eq!(messages.len(), 300);
    assert_eq!(app.store.list_requests(&Default::default()).await.unwrap().len(), 300);
    eprintln!("FAULTS: {cuts} IMAP connection cuts during a 300-message fetch; 0 lost, 0 logged twice");
    app.stop().await;
}

#[tokio::test]
async fn sigterm_in_the_middle_of_sending_exits_cleanly_and_sends_nothing_twice() {
    let app = TestApp::new(Options::default()).await;
    let wanted: Vec<(String, String)> =
        (0..30).map(|i| (format!("term{i}"), "icb.test".to_string())).collect();
    let wanted: Vec<(&str, &str)> = wanted.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let senders = app.stack.users(&wanted);
    let child = spawn_daemon(&app);
    wait_until("the daemon to watch", || {
        let out = app.cli(&["status"]);
        async move { out.status.success().then_some(()) }
    })
    .await;
    for s in &senders {
        app.stack.send(s, &app.shared, "Sent while stopping", "body").await;
    }
    // Stop as soon as some of the 60 emails (acknowledgements and notifications) are out.
    wait_until("sending under way", || {
        let app = &app;
        async move {
            let done = app.store.list_messages().await.ok()?.len();
            (done >= 10).then_some(())
        }
    })
    .await;
    signal(&child, "-TERM");
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    eprintln!("stopped {:.1} s after SIGTERM", started.elapsed().as_secs_f64());
    let mut app = app;
    app.start().await;
    // A hang detector, not a deadline: sixty emails on a loaded machine (a shared database
    // server whose every commit waits on a busy disk) can take minutes, still moving.
    wait_while_progressing(STALL, "every approach acknowledged", || {
        let app = &app;
        let senders = &senders;
        async move {
            let acked = acks_per_reference(app, senders).len();
            (acked as i64, (acked == 30).then_some(()))
        }
    })
    .await;
    app.wait_for_outbox_drain().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acks = acks_per_reference(&app, &senders);
    assert!(acks.values().all(|n| *n == 1), "sent twice: {acks:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_full_disk_is_reported_and_recovered_from_without_loss() {
    crate::sqlite_only!(
        "fills the filesystem under the SQLite file (PostgreSQL keeps its data on its own server)"
    );
    // The default 8 MiB ballast: room for the status, the alert and SQLite's checkpoint of
    // its write-ahead log (up to about 4 MiB) once it is released.
    let app = TestApp::new(Options::default()).await;
    // The data directory on a small filesystem of its own.
    let data = app.dir.path().join("data");
    let db_before = std::fs::read(data.join("gatehouse.db")).unwrap();
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(mounted.success(), "cannot mount a tmpfs (the tests run as root)");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(data.clone());
    std::fs::write(data.join("gatehouse.db"), db_before).unwrap();
    let mut app = app;
    // The test's own handle must look at the database on the new filesystem.
    app.store = gatehouse::store::open(&app.config()).await.unwrap();
    app.start().await;
    let ballast = data.join(gatehouse::disk::BALLAST_FILE);
    assert_eq!(std::fs::metadata(&ballast).map(|m| m.len()).ok(), Some(8 << 20), "no ballast made");
    let partner = app.stack.user("diskfull", "icb.test");
    let filler = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(6000);
    for i in 0..20 {
        app.stack.send(&partner, &app.shared, &format!("Large approach {i}"), &filler).await;
    }
    app.stack.wait_for_mail(&app.shared, 20).await;
    // The daemon says clearly, in `gatehouse status`, that it is stuck and why. The ballast
    // goes at the first write that fails for lack of space: from then until `status` says
    // so is the figure that matters.
    let mut released_at = None;
    let detail = wait_until("gatehouse status to report the full disk", || {
        let app = &app;
        if released_at.is_none() && !ballast.exists() {
            released_at = Some(std::time::Instant::now());
        }
        async move {
            let out = app.cli(&["status", "--format", "json"]);
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            s["imap_detail"].as_str().filter(|d| d.contains("full")).map(str::to_string)
        }
    })
    .await;
    let reported_after = released_at.map(|t| t.elapsed());
    eprintln!("reported: {detail}");
    eprintln!(
        "FAULTS: `gatehouse status` reported the full disk {reported_after:?} after the first failed write"
    );
    let stuck_at = processed(&app).await;
    assert!(stuck_at < 20);
    assert!(!ballast.exists(), "the ballast was not released");
    // The gatekeepers are told, through the room the ballast left.
    wait_until("the full-disk alert to reach the gatekeeper", || {
        let app = &app;
        async move {
            app.stack
                .mailbox(&app.gatekeeper)
                .iter()
                .any(|m| header(m, "Subject").is_some_and(|s| s.contains("disk is full")))
                .then_some(())
        }
    })
    .await;
    // Intake stays paused while the disk is full: nothing more is taken in.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(processed(&app).await, stuck_at);
    // Space returns.
    let grown = Command::new("mount").args(["-o", "remount,size=64m"]).arg(&data).status().unwrap();
    assert!(grown.success());
    wait_until("all 20 processed after the disk recovered", || {
        let app = &app;
        async move { (processed(app).await >= 20).then_some(()) }
    })
    .await;
    let requests = app.store.list_requests(&Default::default()).await.unwrap();
    assert_eq!(requests.len(), 20);
    assert_eq!(app.store.list_messages().await.unwrap().len(), 20);
    assert_eq!(
        std::fs::metadata(&ballast).map(|m| m.len()).ok(),
        Some(8 << 20),
        "the ballast was not made again"
    );
    wait_until("gatehouse status to show the inbox watched again", || {
        let app = &app;
        async move {
            let out = app.cli(&["status", "--format", "json"]);
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (out.status.success() && matches!(s["imap"].as_str(), Some("idle" | "polling"))).then_some(())
        }
    })
    .await;
    eprintln!("FAULTS: disk full after {stuck_at} of 20 messages; recovered, 0 lost, 0 logged twice");
    app.stop().await;
}

/// The outbox as the test sees it: (kind, status, attempts, message_id) per email.
async fn outbox_rows(app: &TestApp) -> Vec<(String, String, i64, String)> {
    let db = app.db().await;
    let sql = "SELECT kind, status, attempts, message_id FROM outbox ORDER BY id";
    let rows = on_db!(db, |pool| sqlx::query_as(sql).fetch_all(pool).await.unwrap());
    db.close().await;
    rows
}

/// Message-IDs (no angle brackets) of everything delivered to `addresses`, with repeats.
fn delivered_ids(stack: &crate::helpers::Stack, addresses: &[&str]) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for a in addresses {
        for m in stack.mailbox(a) {
            let id = header(&m, "Message-ID").unwrap_or_default();
            *ids.entry(id.trim_matches(|c| c == '<' || c == '>').to_string()).or_insert(0) += 1;
        }
    }
    ids
}

/// Each outbox email delivered exactly once, by Message-ID, and nothing else delivered.
fn assert_each_sent_once(rows: &[(String, String, i64, String)], delivered: &BTreeMap<String, usize>) {
    for (kind, status, attempts, id) in rows {
        assert_eq!(status, "sent", "{kind} {id} after {attempts} attempt(s)");
        assert_eq!(delivered.get(id), Some(&1), "{kind} {id} delivered {:?} time(s)", delivered.get(id));
    }
    assert_eq!(delivered.len(), rows.len(), "mail delivered that the outbox does not know: {delivered:?}");
}

#[tokio::test]
async fn a_dovecot_restart_loses_and_duplicates_nothing() {
    // Its own stack: restarting the shared Dovecot would break the tests running beside this.
    let private = PrivateStack::start();
    let stack = private.stack;
    let mut app = TestApp::new_on(stack, Options { extra: LOAD_LIMITS.into(), ..Options::default() }).await;
    app.start().await;
    let senders = stack.users(&[("before", "icb.test"), ("during", "icb.test"), ("after", "icb.test")]);
    // Before: a burst still arriving, and being worked through, when Dovecot goes.
    let burst = {
        let (shared, sender) = (app.shared.clone(), senders[0].clone());
        tokio::spawn(async move {
            for i in 0..60 {
                stack.send(&sender, &shared, &format!("Before the restart {i}"), "Please help.").await;
            }
        })
    };
    wait_until("the burst to be under way", || {
        let app = &app;
        async move { (processed(app).await >= 5).then_some(()) }
    })
    .await;
    private.stop("dovecot");
    let at_stop = processed(&app).await;
    burst.await.unwrap();
    // During: Postfix accepts these and queues them until Dovecot's LMTP is back.
    for i in 0..10 {
        stack.send(&senders[1], &app.shared, &format!("During the restart {i}"), "Please help.").await;
    }
    wait_until("the daemon to notice Dovecot went", || {
        let app = &app;
        async move {
            let s = app.store.daemon_status().await.ok()??;
            (s.imap != "idle").then_some(())
        }
    })
    .await;
    // Down long enough for reconnection attempts to fail.
    tokio::time::sleep(Duration::from_secs(5)).await;
    private.up();
    // After.
    for i in 0..10 {
        stack.send(&senders[2], &app.shared, &format!("After the restart {i}"), "Please help.").await;
    }
    stack.wait_for_queue_empty().await;
    let messages = app.wait_for_messages(80).await;
    app.wait_for_outbox_drain().await;
    stack.wait_for_queue_empty().await;

    assert_eq!(messages.len(), 80, "messages lost or logged twice");
    let subjects: std::collections::BTreeSet<_> = messages.iter().filter_map(|m| m.subject.clone()).collect();
    assert_eq!(subjects.len(), 80, "an approach logged twice or without its subject");
    let requests = app.store.list_requests(&Default::default()).await.unwrap();
    assert_eq!(requests.len(), 80);
    let acks = acks_per_reference(&app, &senders);
    assert_eq!(acks.len(), 80, "approaches never acknowledged");
    assert!(acks.values().all(|n| *n == 1), "acknowledged twice: {acks:?}");
    let mut addresses: Vec<&str> = senders.iter().map(String::as_str).collect();
    addresses.push(&app.gatekeeper);
    assert_each_sent_once(&outbox_rows(&app).await, &delivered_ids(stack, &addresses));
    wait_until("the daemon to be watching again", || {
        let app = &app;
        async move { (app.store.daemon_status().await.ok()??.imap == "idle").then_some(()) }
    })
    .await;
    eprintln!(
        "FAULTS: Dovecot restarted after {at_stop} of 60 messages; 80 logged, 0 lost, 0 logged twice, 160 emails sent once each"
    );
    app.stop().await;
}

#[tokio::test]
async fn postfix_down_for_minutes_then_every_email_goes_once() {
    // Its own stack: stopping the shared Postfix would break the tests running beside this.
    let private = PrivateStack::start();
    let stack = private.stack;
    let mut app = TestApp::new_on(stack, Options::default()).await;
    // First retry after 3 s, doubling: attempts 3, 9, 21, 45, 93 and 189 s after the first
    // failure, so several fall inside the outage and one soon after it.
    let text = std::fs::read_to_string(&app.config_path)
        .unwrap()
        .replace("[smtp]\n", "[smtp]\nretry_initial_secs = 3\n");
    std::fs::write(&app.config_path, text).unwrap();
    app.start().await;
    let wanted: Vec<(String, String)> =
        (0..10).map(|i| (format!("outage{i}"), "icb.test".to_string())).collect();
    let wanted: Vec<(&str, &str)> = wanted.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let senders = stack.users(&wanted);
    // Before: answered as usual.
    stack.send(&senders[0], &app.shared, "Before the outage", "Please help.").await;
    stack.wait_for_mail(&senders[0], 1).await;
    app.wait_for_outbox_drain().await;

    private.stop("postfix");
    // During: approaches still arrive (the inbound route is not the server gatehouse sends
    // through), straight into Dovecot.
    for (i, s) in senders.iter().enumerate() {
        let raw = format!(
            "From: Partner {i} <{s}>\r\nTo: {}\r\nSubject: During the outage {i}\r\nMessage-ID: <outage.{i}.{}@icb.test>\r\nDate: {}\r\n\r\nPlease help.\r\n",
            app.shared,
            crate::helpers::rand_suffix(),
            chrono::Utc::now().to_rfc2822()
        );
        stack.deliver(s, &app.shared, raw.as_bytes());
    }
    app.wait_for_messages(11).await;
    wait_until("every new email to have failed once", || {
        let app = &app;
        async move {
            let rows = outbox_rows(app).await;
            (rows.len() == 22 && rows.iter().filter(|r| r.1 != "sent").all(|r| r.2 >= 1)).then_some(())
        }
    })
    .await;
    let outage = Duration::from_secs(180);
    let started = tokio::time::Instant::now();
    while started.elapsed() < outage {
        tokio::time::sleep(Duration::from_secs(15)).await;
        let rows = outbox_rows(&app).await;
        let waiting: Vec<i64> =
            rows.iter().filter(|r| r.1 != "sent" && r.0 != "system_alert").map(|r| r.2).collect();
        eprintln!(
            "outage {} s: {} email(s) waiting, attempts {:?}",
            started.elapsed().as_secs(),
            waiting.len(),
            waiting.iter().min().zip(waiting.iter().max())
        );
        assert_eq!(waiting.len(), 20, "an email was lost or given up during the outage");
        let alerts = rows.iter().filter(|r| r.0 == "system_alert").count();
        assert!(alerts <= 1, "the failing outbox alerted {alerts} times");
    }
    let rows = outbox_rows(&app).await;
    let retries = rows.iter().filter(|r| r.1 != "sent" && r.0 != "system_alert").map(|r| r.2).min().unwrap();
    assert!(retries >= 4, "only {retries} attempts during the outage");
    assert_eq!(stack.mailbox(&app.gatekeeper).len(), 1, "mail delivered while Postfix was down");
    // The operator (the gatekeeper, with no [operator] set) is told once that sending
    // fails: that email waits with the rest.
    assert_eq!(rows.iter().filter(|r| r.0 == "system_alert").count(), 1, "{rows:?}");
    let status = app.cli_json(&["status", "--format", "json"]);
    assert_eq!(status["outbox_pending"], 21, "{status}");
    assert!(status["smtp_last_error"].is_string(), "{status}");

    private.up();
    app.wait_for_outbox_drain().await;
    stack.wait_for_queue_empty().await;
    let rows = outbox_rows(&app).await;
    // The 22, the alert that waited and the "resolved" that followed.
    assert_eq!(rows.len(), 24, "{rows:?}");
    let subjects: Vec<String> =
        stack.mailbox(&app.gatekeeper).iter().filter_map(|m| header(m, "Subject")).collect();
    assert!(subjects.contains(&"Resolved: gatehouse cannot send email".to_string()), "{subjects:?}");
    let mut addresses: Vec<&str> = senders.iter().map(String::as_str).collect();
    addresses.push(&app.gatekeeper);
    assert_each_sent_once(&rows, &delivered_ids(stack, &addresses));
    for s in &senders {
        let n = stack.mailbox(s).len();
        assert_eq!(n, if s == &senders[0] { 2 } else { 1 }, "{s} got {n} acknowledgement(s)");
    }
    eprintln!(
        "FAULTS: Postfix down {} s; 20 emails waited ({retries}+ attempts each), then all 22 (and the alert and its resolution) delivered once, 0 lost, 0 twice",
        outage.as_secs()
    );
    app.stop().await;
}
