//! Poison messages: one email must never stop the daemon. Mail nesting parts far deeper
//! than any stack through every type mail-parser follows into a nested message; a message
//! that fails every time it is processed (or cuts every attempt short, as a crash would) is
//! quarantined after three attempts counted in the database, the gatekeepers are told once,
//! later mail goes on, and `messages retry` processes it again. And `gatehouse run` started
//! together with CLI commands on a fresh database: one migrates, the others wait.

use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse::domain::Classification;
use gatehouse::intake::fault_injection;
use gatehouse::store::MessageRow;

use crate::helpers::{Options, TestApp, header, rand_suffix, readable, wait_until};

/// How deep the hostile messages nest: each level is a nested message inside the last, so
/// code following them recursively needs a stack frame or more per level, far beyond a
/// tokio worker's 2 MiB (and the parser thread's 32 MiB).
const LEVELS: usize = 20_000;

/// A multipart/mixed approach whose first part opens a chain of `LEVELS` nested messages,
/// each opened by `content_type` on a line starting with `lead`. For multipart/digest each
/// level is a digest whose one part has no Content-Type (a message, by default).
fn nested(name: &str, lead: &str, content_type: &str, from: &str, to: &str) -> Vec<u8> {
    let id = rand_suffix();
    let mut raw = format!(
        "From: Jo Bloggs <{from}>\r\nTo: {to}\r\nSubject: Nested {name}\r\nMessage-ID: <nested-{name}.{id}@icb.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"top\"\r\n\r\n\
         --top\r\nContent-Type: text/plain\r\n\r\nPlease see below.\r\n--top\r\n"
    )
    .into_bytes();
    let digest = content_type.to_ascii_lowercase().starts_with("multipart/digest");
    for i in 0..LEVELS {
        if digest {
            raw.extend_from_slice(
                format!("{lead}Content-Type: {content_type}; boundary=\"d{i}\"\r\n\r\n--d{i}\r\n\r\nFrom: {from}\r\nSubject: level {i}\r\n")
                    .as_bytes(),
            );
        } else {
            raw.extend_from_slice(
                format!("{lead}Content-Type: {content_type}\r\n\r\nFrom: {from}\r\nSubject: level {i}\r\n")
                    .as_bytes(),
            );
        }
    }
    raw.extend_from_slice(b"\r\nThe innermost text.\r\n");
    if digest {
        for i in (0..LEVELS).rev() {
            raw.extend_from_slice(format!("--d{i}--\r\n").as_bytes());
        }
    }
    raw.extend_from_slice(b"--top--\r\n");
    raw
}

/// The stored message whose Message-ID starts with `prefix`, once it has been processed.
async fn processed_with_id(app: &TestApp, prefix: &str) -> MessageRow {
    let store = app.store.clone();
    crate::helpers::wait_while_progressing(crate::helpers::STALL, &format!("{prefix} processed"), || {
        let store = store.clone();
        async move {
            let rows = store.list_messages().await.unwrap_or_default();
            let done = rows.iter().filter(|r| r.classification.is_some()).count() as i64;
            let row = rows.into_iter().find(|r| {
                r.classification.is_some() && r.message_id.as_deref().is_some_and(|m| m.starts_with(prefix))
            });
            (done, row)
        }
    })
    .await
}

/// The stored message whose Message-ID starts with `prefix`, as it is now.
async fn row_with_id(app: &TestApp, prefix: &str) -> Option<MessageRow> {
    let rows = app.store.list_messages().await.ok()?;
    rows.into_iter().find(|r| r.message_id.as_deref().is_some_and(|m| m.starts_with(prefix)))
}

/// The quarantine alerts in the gatekeeper's mailbox.
fn alerts(app: &TestApp) -> Vec<Vec<u8>> {
    app.stack
        .mailbox(&app.gatekeeper)
        .into_iter()
        .filter(|m| header(m, "Subject").is_some_and(|s| s.contains("could not be processed")))
        .collect()
}

/// An ordinary approach after the hostile mail: it must get its request, its
/// acknowledgement and its notification.
async fn an_ordinary_approach_is_still_answered(app: &TestApp, name: &str) {
    let next = app.stack.user(name, "icb.test");
    let subject = format!("An ordinary approach after {name}");
    app.stack.send(&next, &app.shared, &subject, "Please could practices help?").await;
    let ack = app.stack.wait_for_mail(&next, 1).await.remove(0);
    let reference = header(&ack, "Subject").unwrap_or_default();
    assert!(reference.contains("[GP-"), "not an acknowledgement: {reference}");
    let row =
        app.store.list_messages().await.unwrap().into_iter().find(|r| r.subject.as_deref() == Some(&subject));
    let row = row.expect("the ordinary approach was logged");
    assert_eq!(row.classification, Some(Classification::New));
    let reference = row.reference.expect("a request");
    wait_until("the gatekeeper's notification", || {
        let mail = app.stack.mailbox(&app.gatekeeper);
        let reference = reference.clone();
        async move {
            mail.iter().any(|m| header(m, "Subject").is_some_and(|s| s.contains(&reference))).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn mail_nested_deeper_than_any_stack_through_every_nested_type_never_stops_the_daemon() {
    let app = TestApp::spawn().await;
    let partner = app.stack.user("nesting", "icb.test");
    // Every type mail-parser parses as a nested message (message/rfc822, message/global, a
    // part without a type in a multipart/digest), in the spellings it accepts: any case,
    // parameters, comments, and a stray colon before the header name.
    let cases = [
        ("rfc822", "", "message/rfc822"),
        ("rfc822-upper", "", "MESSAGE/RFC822; name=\"forwarded.eml\""),
        ("global", "", "Message/Global (an attached message)"),
        ("global-colon", ":", "message/global"),
        ("digest", "", "multipart/digest"),
        ("digest-mixed", ":", "Multipart/DIGEST"),
    ];
    let mut sent = Vec::new();
    for (name, lead, content_type) in cases {
        let raw = nested(name, lead, content_type, &partner, &app.shared);
        app.stack.send_raw(&partner, &[&app.shared], &raw).await;
        sent.push((name, raw));
    }
    for (name, raw) in &sent {
        let row = processed_with_id(&app, &format!("nested-{name}.")).await;
        // Logged (a request, or kept as unparseable) or set aside: never fatal.
        assert!(
            matches!(
                row.classification,
                Some(Classification::New | Classification::Unparseable | Classification::Quarantined)
            ),
            "{name}: {row:?}"
        );
        let stored = app.store.raw_message(row.id).await.unwrap();
        let innermost = b"The innermost text.";
        assert!(stored.windows(innermost.len()).any(|w| w == innermost), "{name}: raw bytes not kept");
        assert!(stored.len() >= raw.len() / 2, "{name}: {} of {} bytes kept", stored.len(), raw.len());
        eprintln!(
            "NESTED: {name} ({} bytes, {LEVELS} levels): {:?} {:?}",
            raw.len(),
            row.classification,
            row.detail
        );
    }
    an_ordinary_approach_is_still_answered(&app, "after-nesting").await;
}

#[tokio::test]
async fn a_message_failing_every_time_is_quarantined_after_three_attempts_across_restarts_then_retried() {
    let mut app = TestApp::spawn().await;
    let partner = app.stack.user("poison", "icb.test");
    let token = format!("fail-{}", rand_suffix());
    let prefix = format!("poison.{token}");
    let raw = format!(
        "From: Jo Bloggs <{partner}>\r\nTo: {}\r\nSubject: Poisoned approach\r\nMessage-ID: <{prefix}@icb.test>\r\n\
         X-Gatehouse-Test-Fault: fail {token}\r\n\r\nPlease could practices help?\r\n",
        app.shared
    );
    app.stack.send_raw(&partner, &[&app.shared], raw.as_bytes()).await;
    // The first attempt is counted in the database; then the daemon dies.
    wait_until("the first attempt to be counted", || {
        let app = &app;
        let prefix = prefix.clone();
        async move { row_with_id(app, &prefix).await.filter(|r| r.attempts >= 1) }
    })
    .await;
    app.kill().await;
    let before = row_with_id(&app, &prefix).await.unwrap();
    eprintln!("killed after {} attempt(s): {:?}", before.attempts, before.classification);
    // A new daemon goes on counting from there, and sets the message aside at the third.
    app.start().await;
    let row = wait_until("the message to be quarantined", || {
        let app = &app;
        let prefix = prefix.clone();
        async move { row_with_id(app, &prefix).await.filter(|r| r.classification.is_some()) }
    })
    .await;
    assert_eq!(row.classification, Some(Classification::Quarantined), "{row:?}");
    // Three attempts in all: the ones before the kill were not forgotten (a fourth only if
    // the kill cut the third short).
    assert_eq!(row.attempts, before.attempts.max(2) + 1, "{row:?}");
    assert!(row.detail.as_deref().unwrap_or_default().contains("injected fault"), "{row:?}");
    assert_eq!(row.subject.as_deref(), Some("Poisoned approach"));
    assert_eq!(row.from.as_deref(), Some(partner.as_str()));
    assert!(row.reference.is_none());
    let json = app.cli_json(&["messages", "list", "--format", "json"]);
    let listed = json.as_array().unwrap().iter().find(|m| m["id"] == row.id.0).unwrap().clone();
    assert_eq!(listed["classification"], "quarantined");
    let kept = app.store.raw_message(row.id).await.unwrap();
    let fault = format!("X-Gatehouse-Test-Fault: fail {token}");
    assert!(kept.windows(fault.len()).any(|w| w == fault.as_bytes()), "the raw bytes were not kept");

    // Later mail is processed; the gatekeeper hears of the poisoned message once.
    an_ordinary_approach_is_still_answered(&app, "after-poison").await;
    app.wait_for_outbox_drain().await;
    app.stack.wait_for_queue_empty().await;
    let told = alerts(&app);
    assert_eq!(told.len(), 1, "{} alerts", told.len());
    let text = readable(&told[0]);
    assert!(text.contains(&format!("Stored message: {}", row.id)), "{text}");
    assert!(text.contains("Poisoned approach") && text.contains(&partner), "{text}");
    assert!(text.contains(&format!("gatehouse messages retry {}", row.id)), "{text}");
    assert!(app.stack.mailbox(&partner).is_empty(), "the poisoned message was answered");
    // Nor is anyone told again when the daemon restarts.
    app.stop().await;
    app.start().await;

    // After "an upgrade", the operator asks for it again; the running daemon processes it,
    // once.
    fault_injection::fix(&token);
    let id = row.id.to_string();
    let out = app.cli_ok(&["messages", "retry", &id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("processed again"));
    let row = wait_until("the retried message to be processed", || {
        let app = &app;
        let prefix = prefix.clone();
        async move {
            row_with_id(app, &prefix)
                .await
                .filter(|r| r.classification.is_some_and(|c| c != Classification::Quarantined))
        }
    })
    .await;
    assert_eq!(row.classification, Some(Classification::New), "{row:?}");
    assert_eq!(row.attempts, 1);
    let reference = row.reference.clone().expect("a request at last");
    let ack = app.stack.wait_for_mail(&partner, 1).await.remove(0);
    assert!(header(&ack, "Subject").unwrap_or_default().contains(&reference));
    // A message that is not quarantined (any more) cannot be retried.
    let again = app.cli(&["messages", "retry", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not quarantined"));
    let missing = app.cli(&["messages", "retry", "999999"]);
    assert!(!missing.status.success());
    app.wait_for_outbox_drain().await;
    app.stack.wait_for_queue_empty().await;
    assert_eq!(app.stack.mailbox(&partner).len(), 1, "the retried approach was answered twice");
    let requests = app.store.list_requests(&Default::default()).await.unwrap();
    assert_eq!(requests.iter().filter(|r| r.subject == "Poisoned approach").count(), 1);
    assert_eq!(alerts(&app).len(), 1);
}

#[tokio::test]
async fn a_message_cutting_every_attempt_short_is_set_aside_without_a_fourth_try() {
    let operator = crate::helpers::stack().user("operator", "gatehouse.test");
    let extra = format!("[operator]\naddresses = [\"{operator}\"]\n");
    let mut app = TestApp::new(Options { extra, ..Options::default() }).await;
    app.start().await;
    let partner = app.stack.user("crasher", "icb.test");
    let token = format!("panic-{}", rand_suffix());
    let prefix = format!("crash.{token}");
    let raw = format!(
        "From: <{partner}>\r\nTo: {}\r\nSubject: Crashing approach\r\nMessage-ID: <{prefix}@icb.test>\r\n\
         X-Gatehouse-Test-Fault: panic {token}\r\n\r\nPlease help.\r\n",
        app.shared
    );
    app.stack.send_raw(&partner, &[&app.shared], raw.as_bytes()).await;
    // An innocent message right behind it (often in the same group) is not blamed.
    let innocent = format!("innocent.{}", rand_suffix());
    let raw = format!(
        "From: <{partner}>\r\nTo: {}\r\nSubject: Innocent approach\r\nMessage-ID: <{innocent}@icb.test>\r\n\r\nPlease help.\r\n",
        app.shared
    );
    app.stack.send_raw(&partner, &[&app.shared], raw.as_bytes()).await;
    let row = processed_with_id(&app, &prefix).await;
    assert_eq!(row.classification, Some(Classification::Quarantined), "{row:?}");
    let next = processed_with_id(&app, &innocent).await;
    assert_eq!(next.classification, Some(Classification::New), "{next:?}");
    assert!(next.attempts <= 2, "{next:?}");
    // Three attempts began and none ended; the fourth was counted, and the message set aside
    // without being processed again.
    assert_eq!(fault_injection::runs(&token), 3);
    assert_eq!(row.attempts, 4);
    assert!(
        row.detail.as_deref().unwrap_or_default().contains("stopped while processing it, 3 times"),
        "{row:?}"
    );
    an_ordinary_approach_is_still_answered(&app, "after-crash").await;
    // The gatekeeper and the operator are each told once.
    app.wait_for_outbox_drain().await;
    app.stack.wait_for_queue_empty().await;
    assert_eq!(alerts(&app).len(), 1);
    let to_operator: Vec<_> = app
        .stack
        .mailbox(&operator)
        .into_iter()
        .filter(|m| header(m, "Subject").is_some_and(|s| s.contains("Crashing approach")))
        .collect();
    assert_eq!(to_operator.len(), 1);
}

#[tokio::test]
async fn run_and_cli_commands_started_together_on_fresh_databases_never_fail_to_migrate() {
    let app = TestApp::new(Options::default()).await;
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    let bin = env!("CARGO_BIN_EXE_gatehouse");
    for round in 0..20 {
        // A fresh database each round: a config of its own naming a new data directory.
        let config = app.dir.path().join(format!("race{round}.toml"));
        std::fs::write(&config, text.replace("data_dir = \"data\"", &format!("data_dir = \"race{round}\"")))
            .unwrap();
        let cli = |args: &[&str]| {
            Command::new(bin)
                .arg("--config")
                .arg(&config)
                .args(args)
                .env_remove("GATEHOUSE_CONFIG")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        // Started back to back, in a different order each round.
        let mut started = Vec::new();
        let commands: [&[&str]; 3] = [&["run"], &["status"], &["requests", "list"]];
        for i in 0..3 {
            let args = commands[(i + round) % 3];
            started.push((args, cli(args)));
        }
        let daemon_at = started.iter().position(|(args, _)| args[0] == "run").unwrap();
        let (_, mut daemon) = started.remove(daemon_at);
        for (args, child) in started {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!migration_failed(&stderr), "round {round}: {args:?}: {stderr}");
            if args[0] == "requests" {
                assert!(out.status.success(), "round {round}: {args:?}: {stderr}");
            }
        }
        // The daemon comes up and watches the inbox (or exits, and says why).
        let up = wait_until(&format!("round {round}: the daemon to watch the inbox"), || {
            let config = config.clone();
            let exited = daemon.try_wait().unwrap().is_some();
            async move {
                if exited {
                    return Some(None);
                }
                let out = Command::new(bin)
                    .arg("--config")
                    .arg(&config)
                    .args(["status", "--format", "json"])
                    .output()
                    .ok()?;
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                (out.status.success() && (v["imap"] == "idle" || v["imap"] == "polling")).then_some(Some(v))
            }
        })
        .await;
        let Some(up) = up else {
            let out = daemon.wait_with_output().unwrap();
            panic!(
                "round {round}: the daemon exited ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        };
        assert!(up["last_seen"].is_string());
        Command::new("kill").arg("-TERM").arg(daemon.id().to_string()).status().unwrap();
        let out = tokio::task::spawn_blocking(move || daemon.wait_with_output()).await.unwrap().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "round {round}: the daemon failed: {stderr}");
        assert!(!migration_failed(&stderr), "round {round}: {stderr}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a process's error output shows it failing over the migrations.
fn migration_failed(stderr: &str) -> bool {
    ["Cannot apply the database migrations", "already exists", "migrating the database"]
        .iter()
        .any(|s| stderr.contains(s))
}
