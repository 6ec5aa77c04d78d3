//! The `message` decision carried through and the more-work nudge, on the real stack: the
//! gatekeeper's draft arrives in their mailbox, a real HTTP receiver on loopback gets the
//! webhook's JSON (also after it was down), hostile subjects come out safe, and a silent
//! requester is reminded once, after the working days, never twice and never after replying.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use chrono::{DateTime, TimeZone as _, Utc};
use chrono_tz::Europe::London;
use gatehouse::clock::ManualClock;
use gatehouse::domain::{Decision, Status};
use gatehouse::templates::Templates;
use gatehouse::triage::grammar::{Command, Reply};
use gatehouse::triage::nudge::Nudges;
use gatehouse::triage::reminders::Reminders;
use gatehouse::triage::{Actor, Triage};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{Options, TestApp, header, readable, wait_until};
use crate::triage::{approach, gmail_reply, send};

/// A real HTTP/1.1 server on loopback that answers every POST with `status` (e.g. "200 OK")
/// and keeps the bodies.
struct Receiver {
    bodies: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(listener: tokio::net::TcpListener, status: &'static str) -> Receiver {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let body = loop {
                        let Ok(n) = stream.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            assert!(head.starts_with("post "), "{head}");
                            assert!(head.contains("content-type: application/json"), "{head}");
                            break String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                        }
                    };
                    kept.lock().unwrap().push(body);
                    let answer =
                        format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno");
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        Receiver { bodies, task }
    }

    async fn wait_for_body(&self) -> serde_json::Value {
        let bodies = self.bodies.clone();
        let body = wait_until("the webhook's POST", || {
            let b = bodies.lock().unwrap().first().cloned();
            async move { b }
        })
        .await;
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An app whose `[channel]` webhook URL is in `var`, retrying after a second.
async fn app_with_webhook(var: &str, url: &str) -> TestApp {
    // SAFETY of the test: each test uses a variable name of its own.
    unsafe { std::env::set_var(var, url) };
    let mut app = TestApp::new(Options {
        extra: format!("\n[channel]\nwebhook_url_env = \"{var}\"\n"),
        ..Options::default()
    })
    .await;
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(
        &app.config_path,
        text.replace("from = \"Test GP", "retry_initial_secs = 1\nfrom = \"Test GP"),
    )
    .unwrap();
    app.start().await;
    app
}

/// The channel draft in the gatekeeper's mailbox, and the text between its rules.
async fn draft(app: &TestApp, reference: &str) -> (Vec<u8>, String) {
    let mail = wait_until("the channel draft", || async {
        app.stack.mailbox(&app.gatekeeper).into_iter().find(|m| {
            header(m, "X-Gatehouse").as_deref() == Some("channel_draft")
                && header(m, "Subject").is_some_and(|s| s.contains(reference))
        })
    })
    .await;
    let body = decoded_text(&mail);
    let rule = "-".repeat(64);
    let text = body.split(&rule).nth(1).unwrap_or_else(|| panic!("no text between rules:\n{body}"));
    (mail.clone(), text.trim_matches('\n').to_string())
}

/// The plain-text body of a single-part email, transfer encoding undone.
fn decoded_text(mail: &[u8]) -> String {
    let text = String::from_utf8_lossy(mail).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap();
    let head = head.to_lowercase();
    if head.contains("content-transfer-encoding: base64") {
        let joined: String = body.split_whitespace().collect();
        return String::from_utf8(base64::engine::general_purpose::STANDARD.decode(joined).unwrap()).unwrap();
    }
    if !head.contains("content-transfer-encoding: quoted-printable") {
        return body.to_string();
    }
    crate::triage::decode_qp(body)
}

#[tokio::test]
async fn a_message_decision_drafts_the_channel_text_for_the_gatekeeper_and_posts_it_to_the_webhook() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/secret-path", listener.local_addr().unwrap());
    let receiver = Receiver::start(listener, "200 OK").await;
    let app = app_with_webhook("GATEHOUSE_TEST_WEBHOOK_MESSAGE", &url).await;
    let a = approach(&app, "Phlebotomy in practices by 18 December").await;
    let commands = "message\nnote: SECRET-NOTE do not share\nThanks, we will share this with the group.";
    send(&app, &app.gatekeeper, &gmail_reply(&app.gatekeeper, &a, commands)).await;

    let (mail, text) = draft(&app, &a.reference).await;
    assert!(text.chars().count() <= 600, "{} chars: {text}", text.chars().count());
    assert!(text.contains(&a.reference), "{text}");
    assert!(text.contains("Phlebotomy in practices"), "{text}");
    assert!(text.contains("Anytown ICB"), "who: {text}");
    assert!(text.contains("By: 18 December"), "by when: {text}");
    assert!(text.contains("we will share this with the group"), "the decision's message: {text}");
    assert!(!String::from_utf8_lossy(&mail).contains("SECRET-NOTE"), "a gatekeeper's note is in the draft");
    assert!(decoded_text(&mail).contains("WhatsApp"));

    let body = receiver.wait_for_body().await;
    assert_eq!(body["text"].as_str().unwrap(), text, "the webhook got another text");
    assert!(!body.to_string().contains("SECRET-NOTE"));
    let r = app.cli_json(&["requests", "show", &a.reference, "--format", "json"]);
    assert_eq!(r["decision"], "message");
    // The URL is a secret: not in the outbox, the events or the log of what was sent.
    for file in ["gatehouse.db", "gatehouse.db-wal"] {
        let bytes = std::fs::read(app.dir.path().join("data").join(file)).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&bytes).contains("secret-path"), "the webhook URL is in {file}");
    }
}

#[tokio::test]
async fn a_hostile_subject_reaches_the_channel_safe_and_a_down_receiver_gets_it_after_a_retry() {
    // A port that refuses connections until the receiver starts on it.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let url = format!("http://{addr}/hook");
    let app = app_with_webhook("GATEHOUSE_TEST_WEBHOOK_HOSTILE", &url).await;

    let hostile = format!(
        "@channel <script>alert(1)</script> \u{202E}gnp.exe\u{2066} [click](https://evil.example) {}",
        "words ".repeat(830)
    );
    assert!(hostile.chars().count() > 5000);
    // As a client sends a long subject: RFC 2047 words, folded.
    let encoded: Vec<String> = hostile
        .as_bytes()
        .chunks(45)
        .map(|c| format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(c)))
        .collect();
    let requester = app.stack.user("hostile", "icb.test");
    let raw = format!(
        "From: Mallory <{requester}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <hostile.{n}@icb.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease @here look.\r\n",
        to = app.shared,
        subject = encoded.join("\r\n "),
        n = crate::helpers::rand_suffix(),
    );
    app.stack.send_raw(&requester, &[&app.shared], raw.as_bytes()).await;
    let reference = wait_until("the hostile approach", || async {
        let rows = app.store.list_requests(&Default::default()).await.ok()?;
        rows.into_iter().find(|r| r.requester == requester).map(|r| r.reference)
    })
    .await;
    let out = app.cli(&["triage", &reference, "message"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (_, text) = draft(&app, &reference).await;
    let safe = |t: &str| {
        assert!(t.chars().count() <= 600, "{} chars", t.chars().count());
        assert!(t.contains(&reference), "{t}");
        assert!(!t.contains("@channel") && !t.contains("@here"), "a mention: {t}");
        assert!(!t.contains('\u{202E}') && !t.contains('\u{2066}'), "a bidi override: {t:?}");
        assert!(!t.contains("](http"), "a markdown link: {t}");
        assert!(t.ends_with('…') || t.lines().any(|l| l.ends_with('…')), "not cut with an ellipsis: {t}");
        assert!(!t.chars().any(|c| c.is_control() && c != '\n'), "{t:?}");
    };
    safe(&text);

    // The post failed at least once while nothing listened; the error names no path.
    let error = wait_until("a failed attempt to post", || {
        let app = &app;
        async move {
            let sql =
                "SELECT attempts, last_error FROM outbox WHERE kind = 'channel_post' AND status = 'pending'";
            let db = app.db().await;
            let row: Option<(i64, Option<String>)> =
                crate::on_db!(db, |pool| sqlx::query_as(sql).fetch_optional(pool).await.ok()?);
            db.close().await;
            row.filter(|(n, e)| *n >= 1 && e.is_some()).and_then(|(_, e)| e)
        }
    })
    .await;
    assert!(error.contains("127.0.0.1") && !error.contains("/hook"), "{error}");
    let receiver = Receiver::start(tokio::net::TcpListener::bind(addr).await.unwrap(), "202 Accepted").await;
    let body = receiver.wait_for_body().await;
    let posted = body["text"].as_str().unwrap();
    assert!(posted.contains("&lt;script&gt;") && !posted.contains("<script>"), "{posted}");
    assert_eq!(posted, text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"));
    safe(&text);
}

#[tokio::test]
async fn a_webhook_that_refuses_the_post_is_given_up_at_once_and_the_gatekeepers_told() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/deleted-secret", listener.local_addr().unwrap());
    let receiver = Receiver::start(listener, "404 Not Found").await;
    let app = app_with_webhook("GATEHOUSE_TEST_WEBHOOK_GONE", &url).await;
    let a = approach(&app, "Shared care protocol").await;
    let out = app.cli(&["triage", &a.reference, "message"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    receiver.wait_for_body().await;
    let alert = wait_until("the delivery failure alert", || async {
        app.stack.mailbox(&app.gatekeeper).into_iter().find(|m| {
            header(m, "X-Gatehouse").as_deref() == Some("delivery_failure")
                && header(m, "Subject").is_some_and(|s| s.contains(&a.reference))
        })
    })
    .await;
    let text = readable(&alert);
    assert!(text.contains("404") && text.contains("channel_post"), "{text}");
    assert!(!text.contains("deleted-secret"), "the webhook's URL is in the alert: {text}");
    // Given up after the one refusal: no retry reached the receiver.
    app.wait_for_outbox_drain().await;
    assert_eq!(receiver.bodies.lock().unwrap().len(), 1);
    // The draft still reached the gatekeeper, to paste by hand.
    draft(&app, &a.reference).await;
}

fn london(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    London.with_ymd_and_hms(y, m, d, h, min, 0).unwrap().with_timezone(&Utc)
}

#[tokio::test]
async fn a_silent_requester_is_reminded_once_after_five_working_days_and_a_replying_one_never() {
    // The daemon's own nudges are off: the test's clock alone decides when one is due.
    let mut app = TestApp::new(Options {
        extra: "\n[triage]\nmore_work_nudge_days = 0\n".into(),
        ..Options::default()
    })
    .await;
    app.start().await;
    let silent = approach(&app, "Costed plan for winter access").await;
    let replying = approach(&app, "Costed plan for spring access").await;
    let mut config = app.config();
    config.triage.more_work_nudge_days = 5;
    let config = Arc::new(config);
    let templates = Arc::new(Templates::load(&config).unwrap());
    let triage = Triage::new(config.clone(), templates.clone());
    // Decided on Monday 16 November 2026 at 10:00 (London), in the past so what is queued
    // goes at once.
    let decided = london(2026, 11, 16, 10, 0);
    for a in [&silent, &replying] {
        let request = app.store.find_request(&a.reference).await.unwrap().unwrap();
        let reply = Reply {
            decision: Some(Command::from_parts(Decision::MoreWork, Some("costings per practice")).unwrap()),
            ..Reply::default()
        };
        let mut tx = app.store.begin().await.unwrap();
        triage.decide(&mut *tx, &request, &reply, &Actor::Operator, decided).await.unwrap().unwrap();
        tx.commit().await.unwrap();
    }
    // The second requester answers their outcome.
    let outcome = app.stack.wait_for_mail(&replying.requester, 2).await.pop().unwrap();
    assert!(header(&outcome, "Subject").unwrap().contains(&replying.reference));
    app.stack
        .send(
            &replying.requester,
            &app.shared,
            &format!("Re: Costed plan for spring access [{}]", replying.reference),
            "Here are the costings per practice.",
        )
        .await;
    wait_until("the reply to reopen the request", || async {
        let r = app.store.find_request(&replying.reference).await.ok()??;
        (r.status == Status::AwaitingTriage).then_some(())
    })
    .await;

    let clock = Arc::new(ManualClock::new(decided));
    let store = app.store.clone();
    let nudges = |clock: &Arc<ManualClock>| {
        Nudges::new(config.clone(), store.clone(), clock.clone(), templates.clone())
    };
    let mut sent = Vec::new();
    for at in [
        london(2026, 11, 20, 10, 0), // Friday: four working days
        london(2026, 11, 22, 23, 0), // Sunday night: the weekend does not count
        london(2026, 11, 23, 9, 59), // Monday: a minute short of five
        london(2026, 11, 23, 10, 0), // five working days
        london(2026, 11, 23, 10, 1),
        london(2026, 11, 24, 10, 0),
    ] {
        clock.set(at);
        let n = nudges(&clock).run_once().await.unwrap();
        if n > 0 {
            sent.push((at, n));
        }
    }
    assert_eq!(sent, [(london(2026, 11, 23, 10, 0), 1)], "once, after five working days, for one request");

    // The nudge reaches the silent requester, threaded on the outcome, once.
    let mailbox = app.stack.wait_for_mail(&silent.requester, 3).await;
    let outcome =
        mailbox.iter().find(|m| header(m, "X-Gatehouse").as_deref() == Some("outcome")).expect("the outcome");
    let nudge = mailbox
        .iter()
        .find(|m| header(m, "X-Gatehouse").as_deref() == Some("more_work_nudge"))
        .expect("the nudge");
    let outcome_id = header(outcome, "Message-ID").unwrap();
    assert_eq!(header(nudge, "In-Reply-To").unwrap(), outcome_id);
    assert!(header(nudge, "References").unwrap().contains(&outcome_id));
    assert!(header(nudge, "Subject").unwrap().contains(&silent.reference));
    let text = readable(nudge);
    assert!(text.contains("costings per practice") && text.contains("only reminder"), "{text}");

    // A restart of the daemon, and of the job on the same clock, sends nothing again.
    app.stop().await;
    app.start().await;
    assert_eq!(nudges(&clock).run_once().await.unwrap(), 0);
    app.wait_for_outbox_drain().await;
    let count = |who: &str| {
        app.stack
            .mailbox(who)
            .iter()
            .filter(|m| header(m, "X-Gatehouse").as_deref() == Some("more_work_nudge"))
            .count()
    };
    assert_eq!(count(&silent.requester), 1);
    assert_eq!(count(&replying.requester), 0, "a requester who replied was nudged");

    // The gatekeeper's digest shows what is still out.
    clock.set(london(2026, 11, 25, 9, 0));
    let reminders = Reminders::new(config.clone(), app.store.clone(), clock.clone(), templates.clone());
    assert!(reminders.run_once().await.unwrap() >= 1);
    app.wait_for_outbox_drain().await;
    let digest = app
        .stack
        .mailbox(&app.gatekeeper)
        .into_iter()
        .find(|m| header(m, "X-Gatehouse").as_deref() == Some("reminder"))
        .expect("the digest");
    let text = readable(&digest);
    assert!(text.contains("waiting on the requester"), "{text}");
    assert!(text.contains(&format!("{}  waiting 6 working days", silent.reference)), "{text}");
    assert!(text.contains("(reminded once)"), "{text}");
    assert!(!text.contains(&format!("{}  waiting", replying.reference)), "{text}");
}
