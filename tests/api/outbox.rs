//! What gatehouse sends, as it arrives in real mailboxes: the acknowledgement, the
//! gatekeeper's notification, and the outbox's promise that SMTP trouble loses nothing.

use std::time::Duration;

use crate::helpers::{Options, Proxy, TestApp, header, wait_until};

fn text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

#[tokio::test]
async fn the_acknowledgement_explains_the_process_and_threads() {
    let app = TestApp::spawn().await;
    let partner = app.stack.user("ack", "icb.test");
    let id = app.stack.send(&partner, &app.shared, "Phlebotomy from April", "Could practices help?").await;
    let ack = app.stack.wait_for_mail(&partner, 1).await.remove(0);
    let year = chrono::Utc::now().format("%Y");
    let reference = format!("GP-{year}-0001");
    assert_eq!(header(&ack, "Subject").unwrap(), format!("Re: Phlebotomy from April [{reference}]"));
    assert_eq!(header(&ack, "Auto-Submitted").unwrap(), "auto-replied");
    assert_eq!(header(&ack, "X-Auto-Response-Suppress").unwrap(), "All");
    assert_eq!(header(&ack, "In-Reply-To").unwrap(), format!("<{id}>"));
    assert!(header(&ack, "References").unwrap().contains(&format!("<{id}>")));
    assert!(header(&ack, "From").unwrap().contains(&app.shared));
    assert!(header(&ack, "Content-Type").unwrap().starts_with("multipart/alternative"));
    let ack_id = header(&ack, "Message-ID").unwrap();
    let body = text(&ack);
    assert!(body.contains("text/plain") && body.contains("text/html"));
    assert!(body.contains(&reference));
    assert!(body.contains("gatekeeper"));
    // The Message-ID we sent is the one stored, so replies thread.
    let shown = app.cli_json(&["requests", "show", &reference, "--format", "json"]);
    let kinds: Vec<_> =
        shown["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect();
    assert!(kinds.contains(&"acknowledged".to_string()), "{kinds:?}");
    assert!(ack_id.contains("gatehouse."), "{ack_id}");
}

#[tokio::test]
async fn the_gatekeeper_is_told_at_once_with_everything_to_decide() {
    let app = TestApp::spawn().await;
    let partner = app.stack.user("notify", "icb.test");
    app.stack
        .send(&partner, &app.shared, "Care home ward rounds", "Please can GPs do weekly ward rounds?")
        .await;
    let note = app.stack.wait_for_mail(&app.gatekeeper, 1).await.remove(0);
    let subject = header(&note, "Subject").unwrap();
    assert!(
        subject.contains("-0001]")
            && subject.contains("Care home ward rounds")
            && subject.contains("Anytown ICB"),
        "{subject}"
    );
    assert_eq!(header(&note, "Auto-Submitted").unwrap(), "auto-generated");
    let reply_to = header(&note, "Reply-To").unwrap();
    let token = app.store.list_requests(&Default::default()).await.unwrap()[0].token.clone();
    let local = app.shared.split('@').next().unwrap();
    assert!(reply_to.contains(&format!("{local}+{token}@")), "{reply_to}");
    let body = text(&note);
    assert!(body.contains("Please can GPs do weekly ward rounds?"));
    assert!(body.contains("mailto:"));
    assert!(body.contains("more-work: WHAT"));
    assert!(body.contains(&partner));
}

#[tokio::test]
async fn automated_mail_is_never_answered() {
    let app = TestApp::spawn().await;
    let robot = app.stack.user("robot", "icb.test");
    let cases = [
        "Auto-Submitted: auto-replied\r\nSubject: Out of office",
        "Precedence: bulk\r\nSubject: Newsletter",
        "List-Id: <news.icb.test>\r\nSubject: List post",
        "X-Autoreply: yes\r\nSubject: Away",
    ];
    for (i, headers) in cases.iter().enumerate() {
        let raw = format!(
            "From: <{robot}>\r\nTo: {}\r\n{headers}\r\nMessage-ID: <auto{i}.{}@icb.test>\r\n\r\nI am a robot.\r\n",
            app.shared,
            crate::helpers::rand_suffix()
        );
        app.stack.send_raw(&robot, &[&app.shared], raw.as_bytes()).await;
    }
    let rows = app.wait_for_messages(cases.len()).await;
    assert!(
        rows.iter().all(|m| m.classification == Some(gatehouse::domain::Classification::Automated)),
        "{rows:#?}"
    );
    assert!(app.store.list_requests(&Default::default()).await.unwrap().is_empty());
    assert_eq!(app.store.outbox_counts().await.unwrap().pending, 0);
    assert!(app.stack.mailbox(&robot).is_empty());
}

#[tokio::test]
async fn a_loop_with_an_autoresponder_stops_at_the_rate_limit() {
    let mut app = TestApp::new(Options {
        extra: "[acknowledgements]\nrate_limit_per_day = 3\n".into(),
        ..Options::default()
    })
    .await;
    app.start().await;
    let robot = app.stack.user("badrobot", "trust.test");
    // A badly behaved robot: answers everything it receives with a fresh email that
    // carries no auto-reply headers and no threading.
    let stack = app.stack;
    let (shared, robot_addr) = (app.shared.clone(), robot.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let robot_task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut answered = 0;
            while !stop.is_cancelled() {
                let inbox = stack.mailbox(&robot_addr);
                while answered < inbox.len() {
                    answered += 1;
                    stack
                        .send(
                            &robot_addr,
                            &shared,
                            &format!("Ticket #{answered} opened"),
                            "Your ticket has been opened.",
                        )
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answered
        })
    };
    app.stack.send(&robot, &app.shared, "Please call me", "First message").await;
    // 1 approach + 3 robot answers to our 3 acknowledgements = 4 requests; the 4th is not
    // acknowledged, so the robot falls silent.
    app.wait_for_messages(4).await;
    app.wait_for_outbox_drain().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    let answered = robot_task.await.unwrap();
    assert_eq!(answered, 3, "the robot received {answered} acknowledgements");
    assert_eq!(app.store.list_requests(&Default::default()).await.unwrap().len(), 4);
    let last = app.store.list_requests(&Default::default()).await.unwrap().pop().unwrap();
    let events = app.store.request_events(last.id).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "not_acknowledged" && e.detail.as_deref().unwrap_or("").contains("rate limit")));
}

#[tokio::test]
async fn an_smtp_outage_delays_mail_but_loses_and_repeats_none() {
    let proxy = Proxy::start(crate::helpers::stack().submission_port).await;
    let mut app =
        TestApp::new(Options { smtp_port: Some(proxy.port), extra: String::new(), ..Options::default() })
            .await;
    // Retry quickly so the test does not wait half a minute.
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    let text = text.replace("from = \"Test GP", "retry_initial_secs = 1\nfrom = \"Test GP");
    std::fs::write(&app.config_path, text).unwrap();
    proxy.refuse(true);
    app.start().await;
    let partners =
        app.stack.users(&[("outage-a", "icb.test"), ("outage-b", "icb.test"), ("outage-c", "icb.test")]);
    for p in &partners {
        app.stack.send(p, &app.shared, "During the outage", "body").await;
    }
    app.wait_for_messages(3).await;
    let store = app.store.clone();
    wait_until("a failed delivery attempt", || {
        let store = store.clone();
        async move {
            let pending = store.outbox_counts().await.ok()?.pending;
            (pending >= 6).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for p in &partners {
        assert!(app.stack.mailbox(p).is_empty(), "mail went through a refused server");
    }
    proxy.refuse(false);
    for p in &partners {
        app.stack.wait_for_mail(p, 1).await;
    }
    app.wait_for_outbox_drain().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in &partners {
        assert_eq!(app.stack.mailbox(p).len(), 1, "{p} got a duplicate");
    }
    assert_eq!(app.stack.mailbox(&app.gatekeeper).len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_kill_while_sending_loses_nothing() {
    let mut app = TestApp::spawn().await;
    let partners = app.stack.users(&[
        ("kill-a", "icb.test"),
        ("kill-b", "icb.test"),
        ("kill-c", "icb.test"),
        ("kill-d", "icb.test"),
    ]);
    for p in &partners {
        app.stack.send(p, &app.shared, "Before the crash", "body").await;
    }
    app.wait_for_messages(1).await;
    app.kill().await;
    app.start().await;
    app.wait_for_messages(4).await;
    for p in &partners {
        let got = app.stack.wait_for_mail(p, 1).await.len();
        // A crash between the server accepting and the database recording may repeat one.
        assert!(got <= 2, "{p} got {got}");
    }
    app.wait_for_outbox_drain().await;
    assert_eq!(app.store.outbox_counts().await.unwrap().failed, 0);
}

#[tokio::test]
async fn the_notification_carries_the_attachments() {
    let app = TestApp::spawn().await;
    app.deliver_fixture("with-attachments.eml").await;
    let note = app.stack.wait_for_mail(&app.gatekeeper, 1).await.remove(0);
    assert!(header(&note, "Content-Type").unwrap().starts_with("multipart/mixed"));
    let text = crate::helpers::readable(&note);
    assert!(text.contains("Content-Disposition: attachment"), "{text}");
    assert!(text.contains("application/pdf"));
}

#[tokio::test]
async fn a_member_s_forward_answers_the_original_sender_and_confirms_to_the_forwarder() {
    // Only a member's forward speaks for the original sender (tests/api/recipients.rs has
    // a forward from anyone else).
    let users = crate::helpers::stack().users(&[("original", "icb.test"), ("practice", "nhs.test")]);
    let (original, practice) = (&users[0], &users[1]);
    let mut app = TestApp::new(Options {
        extra: format!("[members]\naddresses = [\"{practice}\"]\n"),
        ..Options::default()
    })
    .await;
    app.start().await;
    let raw = format!(
        "From: Practice Manager <{practice}>\r\nTo: {shared}\r\nSubject: Fwd: Extended access rota\r\nMessage-ID: <fwd.{n}@nhs.test>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nPassing this on as agreed.\r\n\r\n---------- Forwarded message ---------\r\nFrom: Jo Original <{original}>\r\nDate: Fri, 20 Nov 2026 at 16:10\r\nSubject: Extended access rota\r\nTo: <{practice}>\r\n\r\nCould your practice cover Saturday mornings in January?\r\n",
        shared = app.shared,
        n = crate::helpers::rand_suffix()
    );
    app.stack.send_raw(practice, &[&app.shared], raw.as_bytes()).await;
    let ack = app.stack.wait_for_mail(original, 1).await.remove(0);
    assert!(header(&ack, "Subject").unwrap().starts_with("Re: Extended access rota ["));
    let confirmation = app.stack.wait_for_mail(practice, 1).await.remove(0);
    let reference = app.store.list_requests(&Default::default()).await.unwrap()[0].reference.clone();
    assert!(crate::helpers::readable(&confirmation).contains(&reference));
    let r = app.cli_json(&["requests", "show", &reference, "--format", "json"]);
    assert_eq!(r["requester"], original.as_str());
    assert_eq!(r["via"], practice.as_str());
}

#[tokio::test]
async fn a_bounce_of_our_own_mail_is_linked_to_what_bounced() {
    let app = TestApp::spawn().await;
    // A sender the local stack has no mailbox for: our acknowledgement bounces, and Postfix
    // sends its DSN back to the shared mailbox.
    let ghost = format!("ghost-{}@icb.test", crate::helpers::rand_suffix());
    app.stack.send(&ghost, &app.shared, "From a mailbox that does not exist", "Hello").await;
    let rows = app.wait_for_messages(2).await;
    let bounce =
        rows.iter().find(|m| m.classification == Some(gatehouse::domain::Classification::Automated)).unwrap();
    let detail = bounce.detail.clone().unwrap();
    assert!(detail.contains("bounce of outbox #") && detail.contains("acknowledgement"), "{detail}");
    let reference = app.store.list_requests(&Default::default()).await.unwrap()[0].reference.clone();
    let r = app.cli_json(&["requests", "show", &reference, "--format", "json"]);
    assert!(r["events"].as_array().unwrap().iter().any(|e| e["kind"] == "bounced"), "{r:#}");
    assert_eq!(r["message_count"], 1, "a bounce is not part of the requester's thread");
}

#[tokio::test]
async fn a_broken_template_override_is_a_config_error() {
    let app = TestApp::new(Options::default()).await;
    let dir = app.dir.path().join("templates");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("acknowledgement.txt"), "Dear {{ request.requester_nam }},\n").unwrap();
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(&app.config_path, format!("{text}\n[templates]\ndir = \"templates\"\n")).unwrap();
    let out = app.cli(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("templates.dir") && stdout.contains("acknowledgement.txt"), "{stdout}");
    let run = app.cli(&["run"]);
    assert!(!run.status.success(), "the daemon started with a broken template");
    assert!(String::from_utf8_lossy(&run.stderr).contains("templates.dir"));
    // A good override is used.
    std::fs::write(dir.join("acknowledgement.txt"), "Custom words for {{ request.reference }}.\n").unwrap();
    let out = app.cli(&["check"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK"));
}
