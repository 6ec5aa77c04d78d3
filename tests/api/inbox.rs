//! The inbox watcher against real Dovecot: every message logged once, with the right
//! requester, across restarts, crashes, reconnects and UIDVALIDITY changes.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::{Options, Proxy, TestApp, wait_until};

fn requests(app: &TestApp) -> Vec<Value> {
    app.cli_json(&["requests", "list", "--format", "json"]).as_array().unwrap().clone()
}

fn messages(app: &TestApp) -> Vec<Value> {
    app.cli_json(&["messages", "list", "--format", "json"]).as_array().unwrap().clone()
}

/// Every reference distinct, every message accounted for once.
fn assert_each_logged_once(app: &TestApp, expected: usize) {
    let requests = requests(app);
    let references: BTreeSet<_> =
        requests.iter().map(|r| r["reference"].as_str().unwrap().to_string()).collect();
    assert_eq!(requests.len(), expected, "requests: {requests:#?}");
    assert_eq!(references.len(), expected, "references repeat");
    let messages = messages(app);
    let ids: BTreeSet<_> = messages.iter().map(|m| m["message_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(messages.len(), expected, "messages: {messages:#?}");
    assert_eq!(ids.len(), expected, "a message was logged twice");
}

#[tokio::test]
async fn a_new_approach_becomes_a_request_with_a_reference() {
    let app = TestApp::spawn().await;
    let partner = app.stack.user("jo.bloggs", "icb.test");
    let id = app
        .stack
        .send(&partner, &app.shared, "Phlebotomy service from April", "Could practices take this on?")
        .await;
    app.wait_for_messages(1).await;
    let requests = requests(&app);
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    let year = chrono::Utc::now().format("%Y").to_string();
    assert_eq!(r["reference"], format!("GP-{year}-0001"));
    assert_eq!(r["status"], "awaiting_triage");
    assert_eq!(r["decision"], Value::Null);
    assert_eq!(r["requester"], partner.as_str());
    assert_eq!(r["requester_name"], "Test Sender");
    assert_eq!(r["organisation"], "Anytown ICB");
    assert_eq!(r["via"], Value::Null);
    assert_eq!(r["subject"], "Phlebotomy service from April");
    assert_eq!(r["message_count"], 1);
    assert_eq!(r["priorities"], serde_json::json!([]));
    assert_eq!(r["duplicate_of"], Value::Null);
    let m = &messages(&app)[0];
    assert_eq!(m["message_id"], id.as_str());
    assert_eq!(m["classification"], "new");
    assert_eq!(m["reference"], r["reference"]);
    assert_eq!(m["from"], partner.as_str());

    let shown = app.cli_json(&["requests", "show", r["reference"].as_str().unwrap(), "--format", "json"]);
    assert_eq!(shown["messages"].as_array().unwrap().len(), 1);
    let kinds: Vec<_> =
        shown["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"received"), "{kinds:?}");
}

#[tokio::test]
async fn mail_already_there_at_first_start_is_logged_but_not_answered() {
    let mut app = TestApp::new(Options::default()).await;
    let partner = app.stack.user("backlog", "icb.test");
    for i in 0..3 {
        app.stack
            .send(&partner, &app.shared, &format!("Old approach {i}"), "Sent before gatehouse started")
            .await;
    }
    app.stack.wait_for_mail(&app.shared, 3).await;
    app.start().await;
    app.wait_for_messages(3).await;
    app.stop().await;
    // A restart must not turn the backlog into new mail.
    app.start().await;
    app.stack.send(&partner, &app.shared, "New approach", "Sent after gatehouse started").await;
    app.wait_for_messages(4).await;
    assert_each_logged_once(&app, 4);
    // Only the new one is acknowledged.
    let acks = app.stack.wait_for_mail(&partner, 1).await;
    assert_eq!(acks.len(), 1);
    assert!(String::from_utf8_lossy(&acks[0]).contains("Re: New approach"));
    let shown = app.cli_json(&[
        "requests",
        "show",
        requests(&app)[0]["reference"].as_str().unwrap(),
        "--format",
        "json",
    ]);
    let kinds: Vec<_> =
        shown["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect();
    assert!(kinds.contains(&"backlog".to_string()), "{kinds:?}");
    assert!(!kinds.contains(&"acknowledged".to_string()), "{kinds:?}");
}

#[tokio::test]
async fn a_restart_while_mail_arrives_loses_and_repeats_nothing() {
    let mut app = TestApp::spawn().await;
    let partner = app.stack.user("restart", "trust.test");
    for i in 0..5 {
        app.stack.send(&partner, &app.shared, &format!("Before the restart {i}"), "body").await;
    }
    app.wait_for_messages(2).await;
    app.stop().await;
    for i in 0..5 {
        app.stack.send(&partner, &app.shared, &format!("While stopped {i}"), "body").await;
    }
    app.stack.wait_for_mail(&app.shared, 10).await;
    app.start().await;
    app.wait_for_messages(10).await;
    assert_each_logged_once(&app, 10);
}

#[tokio::test]
async fn a_crash_mid_batch_loses_and_repeats_nothing() {
    let mut app = TestApp::new(Options { backlog: "treat_as_new", ..Options::default() }).await;
    let partner = app.stack.user("crash", "trust.test");
    for i in 0..100 {
        app.stack.send(&partner, &app.shared, &format!("Approach {i}"), "body").await;
    }
    app.stack.wait_for_mail(&app.shared, 100).await;
    // Kill it three times part-way through the backlog, each time later than the last.
    // (How far it got before each kill depends on the machine; the outcome must not.)
    for round in 1..=3 {
        app.start_nowait().await;
        app.wait_for_messages(round * 5).await;
        app.kill().await;
    }
    let done = app.store.list_messages().await.unwrap().len();
    eprintln!("{done} of 100 messages were stored when the last crash came");
    app.start().await;
    app.wait_for_messages(100).await;
    assert_each_logged_once(&app, 100);
}

#[tokio::test]
async fn a_rebuilt_mailbox_with_a_new_uidvalidity_logs_nothing_twice() {
    let mut app = TestApp::spawn().await;
    let partner = app.stack.user("rebuild", "council.test");
    for i in 0..4 {
        app.stack.send(&partner, &app.shared, &format!("Approach {i}"), "body").await;
    }
    app.wait_for_messages(4).await;
    app.stop().await;
    let before = app.store.mailbox_state("INBOX").await.unwrap().unwrap().uidvalidity;
    // Dovecot assigns a new UIDVALIDITY when its UID list is lost, as after a restore.
    let maildir = app.stack.maildir(&app.shared);
    for entry in std::fs::read_dir(&maildir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("dovecot") {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    app.start().await;
    app.stack.send(&partner, &app.shared, "After the rebuild", "body").await;
    app.wait_for_messages(5).await;
    // Give the re-read a chance to (wrongly) log the old four again before counting.
    let store = app.store.clone();
    wait_until("the checkpoint to pass the rebuilt mailbox", || {
        let store = store.clone();
        async move {
            let s = store.mailbox_state("INBOX").await.ok()??;
            (s.last_uid >= 5).then_some(())
        }
    })
    .await;
    let after = app.store.mailbox_state("INBOX").await.unwrap().unwrap().uidvalidity;
    assert_ne!(before, after, "the test did not change UIDVALIDITY");
    assert_each_logged_once(&app, 5);
}

#[tokio::test]
async fn a_dropped_connection_while_idling_reconnects_and_loses_nothing() {
    let proxy = Proxy::start(crate::helpers::stack().imap_port).await;
    let mut app = TestApp::new(Options { port: Some(proxy.port), ..Options::default() }).await;
    app.start().await;
    let partner = app.stack.user("blip", "icb.test");
    app.stack.send(&partner, &app.shared, "Before the blip", "body").await;
    app.wait_for_messages(1).await;
    let before = proxy.connections();
    proxy.cut();
    app.stack.send(&partner, &app.shared, "During the blip", "body").await;
    app.wait_for_messages(2).await;
    assert!(proxy.connections() > before, "the daemon did not reconnect");
    // And the outage kind: refused for a while, then back.
    proxy.refuse(true);
    app.stack.send(&partner, &app.shared, "During the outage", "body").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    proxy.refuse(false);
    app.wait_for_messages(3).await;
    assert_each_logged_once(&app, 3);
    app.stop().await;
}

#[tokio::test]
async fn polling_works_when_idle_is_off() {
    let app = {
        let mut app = TestApp::new(Options { idle: false, ..Options::default() }).await;
        app.start().await;
        app
    };
    let status = app.cli_json(&["status", "--format", "json"]);
    assert_eq!(status["imap"], "polling");
    let partner = app.stack.user("poll", "icb.test");
    app.stack.send(&partner, &app.shared, "Polled", "body").await;
    app.wait_for_messages(1).await;
    assert_each_logged_once(&app, 1);
}

#[tokio::test]
async fn replies_thread_onto_their_request() {
    let app = TestApp::spawn().await;
    let partner = app.stack.user("thread", "icb.test");
    let first = app.stack.send(&partner, &app.shared, "Community nursing", "First message").await;
    app.wait_for_messages(1).await;
    let reference = requests(&app)[0]["reference"].as_str().unwrap().to_string();
    // A reply to the acknowledgement, threaded by headers.
    let ack = app.stack.wait_for_mail(&partner, 1).await.remove(0);
    let ack_id = crate::helpers::header(&ack, "Message-ID").unwrap();
    let raw = format!(
        "From: <{partner}>\r\nTo: {shared}\r\nSubject: Re: Community nursing\r\nMessage-ID: <reply1.{n}@icb.test>\r\nIn-Reply-To: {ack_id}\r\nReferences: <{first}> {ack_id}\r\n\r\nOne more thing.\r\n",
        shared = app.shared,
        n = crate::helpers::rand_suffix()
    );
    app.stack.send_raw(&partner, &[&app.shared], raw.as_bytes()).await;
    // A new email naming the reference in its subject.
    app.stack.send(&partner, &app.shared, &format!("Update on {reference}"), "Second thing").await;
    app.wait_for_messages(3).await;
    let requests = requests(&app);
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0]["message_count"], 3);
    let classes: Vec<_> =
        messages(&app).iter().map(|m| m["classification"].as_str().unwrap().to_string()).collect();
    assert_eq!(classes, ["new", "follow_up", "follow_up"]);
}

#[tokio::test]
async fn a_repeated_approach_is_linked_as_a_probable_duplicate() {
    let app = TestApp::spawn().await;
    let (a, b) = {
        let u = app.stack.users(&[("first", "icb.test"), ("second", "icb.test")]);
        (u[0].clone(), u[1].clone())
    };
    let body = "We would like every practice to run a weekend flu clinic for housebound patients, funded from the winter money, starting in January.";
    app.stack.send(&a, &app.shared, "Weekend flu clinics", body).await;
    app.wait_for_messages(1).await;
    app.stack.send(&b, &app.shared, "RE: FW: Weekend flu clinics", body).await;
    app.wait_for_messages(2).await;
    let requests = requests(&app);
    assert_eq!(requests[1]["probable_duplicate_of"], requests[0]["reference"]);
    assert_eq!(requests[1]["duplicate_of"], Value::Null, "the decision stays the gatekeeper's");
    assert_eq!(requests[1]["status"], "awaiting_triage");
}

/// The flags in a Maildir file name (`…:2,FLAGS`) of every message in a folder.
fn maildir_flags(dir: &std::path::Path) -> Vec<String> {
    ["cur", "new"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(dir.join(sub)).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().split(":2,").nth(1).unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn processed_mail_is_marked_as_configured_and_never_deleted() {
    // Default: kept, unread, with the private $Gatehouse keyword.
    let app = TestApp::spawn().await;
    let partner = app.stack.user("marks", "icb.test");
    app.stack.send(&partner, &app.shared, "Keep me", "body").await;
    app.wait_for_messages(1).await;
    let maildir = app.stack.maildir(&app.shared);
    wait_until("the keyword", || {
        let keywords = std::fs::read_to_string(maildir.join("dovecot-keywords")).unwrap_or_default();
        let flags = maildir_flags(&maildir);
        async move { (keywords.contains("$Gatehouse") && flags.iter().any(|f| f.contains('a'))).then_some(()) }
    })
    .await;
    assert!(maildir_flags(&maildir).iter().all(|f| !f.contains('S')), "marked read");

    // seen: also read.
    let mut app = TestApp::new(Options { extra: String::new(), ..Options::default() }).await;
    let text = std::fs::read_to_string(&app.config_path)
        .unwrap()
        .replace("mailbox = \"INBOX\"", "mailbox = \"INBOX\"\nafter_processing = \"seen\"");
    std::fs::write(&app.config_path, text).unwrap();
    app.start().await;
    app.stack.send(&partner, &app.shared, "Mark me read", "body").await;
    app.wait_for_messages(1).await;
    let maildir = app.stack.maildir(&app.shared);
    wait_until("the Seen flag", || {
        let flags = maildir_flags(&maildir);
        async move { flags.iter().any(|f| f.contains('S')).then_some(()) }
    })
    .await;

    // move:Folder: moved, not deleted.
    let mut app = TestApp::new(Options::default()).await;
    let text = std::fs::read_to_string(&app.config_path)
        .unwrap()
        .replace("mailbox = \"INBOX\"", "mailbox = \"INBOX\"\nafter_processing = \"move:Processed\"");
    std::fs::write(&app.config_path, text).unwrap();
    let maildir = app.stack.maildir(&app.shared);
    // The folder exists, as the operator would have made it.
    let folder = maildir.join(".Processed");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(folder.join(sub)).unwrap();
    }
    let mail_uid = std::fs::metadata(&maildir).map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
    let _ = std::process::Command::new("chown").args(["-R", &mail_uid.to_string()]).arg(&folder).status();
    app.start().await;
    app.stack.send(&partner, &app.shared, "Move me", "body").await;
    app.wait_for_messages(1).await;
    wait_until("the message in Processed", || {
        let moved = maildir_flags(&folder).len();
        let left = maildir_flags(&maildir).len();
        async move { (moved == 1 && left == 0).then_some(()) }
    })
    .await;
    assert_eq!(app.store.list_messages().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_backlog_taken_in_one_group_still_threads_and_links_duplicates() {
    // The inbox processes what has arrived in groups, in one transaction: a reply and a
    // repeat that arrive right behind their original must still find it.
    let mut app = TestApp::new(Options::default()).await;
    let (a, b) = {
        let u = app.stack.users(&[("group-first", "icb.test"), ("group-second", "icb.test")]);
        (u[0].clone(), u[1].clone())
    };
    let body = "We would like every practice to run a weekend flu clinic for housebound patients, funded from the winter money, starting in January.";
    let first = app.stack.send(&a, &app.shared, "Weekend flu clinics", body).await;
    let raw = format!(
        "From: <{a}>\r\nTo: {shared}\r\nSubject: Re: Weekend flu clinics\r\nMessage-ID: <group-reply.{n}@icb.test>\r\nIn-Reply-To: <{first}>\r\nReferences: <{first}>\r\n\r\nAnd the funding is confirmed.\r\n",
        shared = app.shared,
        n = crate::helpers::rand_suffix()
    );
    app.stack.send_raw(&a, &[&app.shared], raw.as_bytes()).await;
    app.stack.send(&b, &app.shared, "FW: Weekend flu clinics", body).await;
    app.stack.wait_for_mail(&app.shared, 3).await;
    app.start().await;
    app.wait_for_messages(3).await;

    let classes: Vec<_> =
        messages(&app).iter().map(|m| m["classification"].as_str().unwrap().to_string()).collect();
    assert_eq!(classes, ["new", "follow_up", "new"]);
    let requests = requests(&app);
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(requests[0]["message_count"], 2);
    assert_eq!(requests[1]["probable_duplicate_of"], requests[0]["reference"]);
    // One transaction, yet consecutive references.
    let seq =
        |r: &Value| r["reference"].as_str().unwrap().rsplit('-').next().unwrap().parse::<u32>().unwrap();
    assert_eq!(seq(&requests[1]), seq(&requests[0]) + 1);
}

#[tokio::test]
async fn a_message_id_reused_by_a_different_message_still_logs_it_and_a_second_delivery_does_not() {
    let app = TestApp::spawn().await;
    let scanner = app.stack.user("scanner", "trust.test");
    // Some scanners and form mailers send every message with one fixed Message-ID.
    let scan = |subject: &str, date: &str, body: &str| {
        format!(
            "From: Ward 7 Scanner <{scanner}>\r\nTo: {}\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <scan@mfp.trust.test>\r\n\r\n{body}\r\n",
            app.shared
        )
        .into_bytes()
    };
    let first = scan("Discharge letters", "Mon, 23 Nov 2026 09:00:00 +0000", "Discharge letters attached.");
    let second = scan("Referral backlog", "Mon, 23 Nov 2026 10:30:00 +0000", "The referral backlog report.");
    app.stack.send_raw(&scanner, &[&app.shared], &first).await;
    app.stack.send_raw(&scanner, &[&app.shared], &second).await;
    // The first one again, through Postfix: new Received headers, the same message.
    app.stack.send_raw(&scanner, &[&app.shared], &first).await;
    // Processed in arrival order: once this one is in, the three before it were handled.
    let last = app.stack.send(&scanner, &app.shared, "Last one", "After the scans.").await;
    let rows = wait_until("the last message processed", || {
        let app = &app;
        let last = last.clone();
        async move {
            let rows = app.store.list_messages().await.ok()?;
            let done = rows
                .iter()
                .any(|m| m.message_id.as_deref() == Some(last.as_str()) && m.classification.is_some());
            done.then_some(rows)
        }
    })
    .await;
    let scans: Vec<_> =
        rows.iter().filter(|m| m.message_id.as_deref() == Some("scan@mfp.trust.test")).collect();
    assert_eq!(scans.len(), 2, "both scans logged, the repeat not: {rows:#?}");
    let subjects: BTreeSet<_> =
        requests(&app).iter().map(|r| r["subject"].as_str().unwrap().to_string()).collect();
    assert_eq!(
        subjects,
        BTreeSet::from([
            "Discharge letters".to_string(),
            "Referral backlog".to_string(),
            "Last one".to_string()
        ])
    );
    assert_eq!(rows.len(), 3, "{rows:#?}");
}
