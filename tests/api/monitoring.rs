//! Knowing when it breaks without reading logs: `/metrics`, `/healthz`, `/readyz` on
//! `[metrics] listen`, the SMTP side of `gatehouse status`, and the operator's alerts (once
//! per problem across restarts, and a "resolved" email when it clears).

use std::collections::BTreeMap;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{Options, TestApp, header, wait_until};

/// A port nothing listens on (the kernel just handed it out and it was let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` over plain HTTP/1.0: (status, Content-Type, body), or `None` while nothing
/// answers on the port yet.
pub async fn get(port: u16, path: &str) -> Option<(u16, String, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("content-type")))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    Some((status, content_type, body.to_string()))
}

/// The samples of a Prometheus text exposition: `name{labels}` → value.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap_or_else(|_| panic!("not a number: {l}")))
        })
        .collect()
}

fn with_metrics(port: u16, extra: &str) -> Options {
    Options { extra: format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n{extra}"), ..Options::default() }
}

fn subjects(app: &TestApp, address: &str) -> Vec<String> {
    app.stack.mailbox(address).iter().filter_map(|m| header(m, "Subject")).collect()
}

#[tokio::test]
async fn metrics_health_and_readiness_show_what_the_daemon_did() {
    let port = free_port();
    let mut app = TestApp::new(with_metrics(port, "")).await;
    app.start().await;
    let (status, _, body) = get(port, "/healthz").await.expect("the metrics server answers");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, body) = get(port, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");

    // Two approaches, acknowledged; one declined by the gatekeeper.
    let partners = app.stack.users(&[("metrics-a", "icb.test"), ("metrics-b", "trust.test")]);
    for (i, p) in partners.iter().enumerate() {
        app.stack.send(p, &app.shared, &format!("Approach {i} for the metrics"), "Can we meet?").await;
    }
    app.wait_for_messages(2).await;
    for p in &partners {
        app.stack.wait_for_mail(p, 1).await;
    }
    app.wait_for_outbox_drain().await;
    let requests = app.cli_json(&["requests", "list", "--format", "json"]);
    let reference = requests[0]["reference"].as_str().unwrap().to_string();
    app.cli_ok(&["triage", &reference, "decline", "not for general practice"]);

    let (status, content_type, body) = get(port, "/metrics").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    let m = samples(&body);
    let value = |name: &str| *m.get(name).unwrap_or_else(|| panic!("no {name} in\n{body}"));
    assert_eq!(value("gatehouse_messages_total{classification=\"new\"}"), 2.0);
    assert_eq!(value("gatehouse_requests{status=\"awaiting_triage\"}"), 1.0);
    assert_eq!(value("gatehouse_requests{status=\"closed\"}"), 1.0);
    assert_eq!(value("gatehouse_requests{status=\"scheduled\"}"), 0.0);
    assert_eq!(value("gatehouse_decisions{decision=\"decline\"}"), 1.0);
    assert_eq!(value("gatehouse_decisions{decision=\"meeting\"}"), 0.0);
    assert_eq!(value("gatehouse_quarantined_messages"), 0.0);
    assert_eq!(value("gatehouse_outbox_failed"), 0.0);
    assert_eq!(value("gatehouse_outbox_failing"), 0.0);
    assert_eq!(value("gatehouse_imap_state{state=\"idle\"}"), 1.0);
    assert_eq!(value("gatehouse_imap_state{state=\"down\"}"), 0.0);
    assert!(value("gatehouse_imap_last_sync_age_seconds") >= 0.0);
    // Both acknowledgements are in the histogram, each in some bucket below infinity's.
    assert_eq!(value("gatehouse_acknowledgement_seconds_count"), 2.0);
    assert_eq!(value("gatehouse_acknowledgement_seconds_bucket{le=\"+Inf\"}"), 2.0);
    assert!(value("gatehouse_acknowledgement_seconds_sum") >= 0.0);
    // No OAuth2 configured: the families exist, with nothing in them.
    assert!(!m.keys().any(|k| k.starts_with("gatehouse_oauth")), "{body}");

    let (status, _, _) = get(port, "/nothing-here").await.unwrap();
    assert_eq!(status, 404);

    // `gatehouse status` carries the SMTP side.
    let s = app.cli_json(&["status", "--format", "json"]);
    let sent = s["smtp_last_sent"].as_str().unwrap_or_else(|| panic!("{s}"));
    assert!(chrono::DateTime::parse_from_rfc3339(sent).is_ok(), "{s}");
    assert!(s["smtp_last_error"].is_null() && s["smtp_last_error_at"].is_null(), "{s}");
    let text = String::from_utf8(app.cli(&["status"]).stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with("smtp sent:") && l.contains(sent)), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn readyz_says_why_while_the_inbox_cannot_be_reached() {
    let port = free_port();
    let closed = free_port();
    let mut app = TestApp::new(Options { port: Some(closed), ..with_metrics(port, "") }).await;
    app.start_nowait().await;
    let body = wait_until("/readyz to answer", || async move {
        get(port, "/readyz").await.map(|(status, _, body)| {
            assert_eq!(status, 503, "ready without an inbox: {body}");
            body
        })
    })
    .await;
    assert!(body.starts_with("not ready: inbox not watched ("), "{body}");
    let (status, _, _) = get(port, "/healthz").await.unwrap();
    assert_eq!(status, 200, "alive all the same");
    // The watcher keeps trying: connecting, then down with the reason, again and again.
    let body = wait_until("the reason to show", || async move {
        let (_, _, body) = get(port, "/readyz").await?;
        body.contains("(down)").then_some(body)
    })
    .await;
    assert!(body.contains("refused"), "{body}");
    let (_, _, metrics) = get(port, "/metrics").await.unwrap();
    assert_eq!(samples(&metrics)["gatehouse_imap_state{state=\"idle\"}"], 0.0, "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn a_refused_login_alerts_the_operator_once_across_restarts_then_says_resolved() {
    let operator = crate::helpers::stack().user("operator", "gatehouse.test");
    let mut app = TestApp::new(Options {
        extra: format!("\n[operator]\naddresses = [\"{operator}\"]\n"),
        ..Options::default()
    })
    .await;
    // IMAP's password is wrong; SMTP's (a file of its own) is right, so alerts go out.
    let config = std::fs::read_to_string(&app.config_path).unwrap().replacen(
        "password_file = \"imap.password\"",
        "password_file = \"mailbox.password\"",
        1,
    );
    std::fs::write(&app.config_path, config).unwrap();
    let mailbox_password = app.dir.path().join("mailbox.password");
    std::fs::write(&mailbox_password, "not-the-password\n").unwrap();

    let store = app.store.clone();
    let auth_failed_since = |since: chrono::DateTime<chrono::Utc>| {
        let store = store.clone();
        async move {
            wait_until("the login to be refused", || {
                let store = store.clone();
                async move {
                    let s = store.daemon_status().await.ok().flatten()?;
                    (s.imap == "auth_failed" && s.last_seen >= since).then_some(())
                }
            })
            .await
        }
    };
    let before = chrono::Utc::now();
    app.start_nowait().await;
    auth_failed_since(before).await;
    let first = app.stack.wait_for_mail(&operator, 1).await;
    let subject = header(&first[0], "Subject").unwrap();
    assert!(subject.contains("cannot log in to the shared mailbox"), "{subject}");
    app.stop().await;

    // A restart meets the same refusal: remembered, so not emailed again today.
    let before = chrono::Utc::now();
    app.start_nowait().await;
    auth_failed_since(before).await;
    // Stopping waits for the watcher to finish reacting to the refusal.
    app.stop().await;
    let open: Vec<String> = app.store.open_alerts().await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(open, ["imap_login_refused"]);

    // Fixed: the next login works, and the operator hears that it is over.
    std::fs::write(&mailbox_password, format!("{}\n", crate::helpers::PASSWORD)).unwrap();
    app.start().await;
    app.stack.wait_for_mail(&operator, 2).await;
    app.wait_for_outbox_drain().await;
    app.stack.wait_for_queue_empty().await;
    app.stop().await;
    let got = subjects(&app, &operator);
    assert_eq!(got.len(), 2, "one alert and one resolved, no repeat: {got:?}");
    assert_eq!(got[1], format!("Resolved: {subject}"), "{got:?}");
    assert!(app.store.open_alerts().await.unwrap().is_empty());
    // Technical trouble is the operator's: the gatekeeper was not told.
    assert!(subjects(&app, &app.gatekeeper).is_empty(), "{:?}", subjects(&app, &app.gatekeeper));
}

#[tokio::test]
async fn a_failing_outbox_shows_in_readyz_and_status_and_alerts_once_then_resolves() {
    let port = free_port();
    let closed = free_port();
    let operator = crate::helpers::stack().user("operator", "gatehouse.test");
    let options = Options {
        smtp_port: Some(closed),
        ..with_metrics(port, &format!("\n[operator]\naddresses = [\"{operator}\"]\n"))
    };
    let mut app = TestApp::new(options).await;
    // Retries a second apart, so three attempts come quickly.
    let config = std::fs::read_to_string(&app.config_path)
        .unwrap()
        .replace("from = \"Test GP", "retry_initial_secs = 1\nfrom = \"Test GP");
    std::fs::write(&app.config_path, config).unwrap();
    app.start().await;
    let partner = app.stack.user("outbox-down", "icb.test");
    app.stack.send(&partner, &app.shared, "While SMTP is down", "Please log this").await;
    app.wait_for_messages(1).await;

    let body = wait_until("/readyz to report the stuck outbox", || async move {
        let (status, _, body) = get(port, "/readyz").await?;
        (status == 503 && body.contains("outbox stuck")).then_some(body)
    })
    .await;
    assert!(body.contains("failed 3 or more attempts"), "{body}");
    let s = app.cli_json(&["status", "--format", "json"]);
    assert!(s["smtp_last_error"].as_str().is_some_and(|e| !e.is_empty()), "{s}");
    assert!(s["smtp_last_error_at"].is_string() && s["smtp_last_sent"].is_null(), "{s}");
    let (_, _, metrics) = get(port, "/metrics").await.unwrap();
    let m = samples(&metrics);
    assert!(m["gatehouse_outbox_failing"] >= 1.0 && m["gatehouse_outbox_pending"] >= 1.0, "{metrics}");
    assert!(m["gatehouse_outbox_oldest_pending_seconds"] > 0.0, "{metrics}");
    // Attempts keep failing (each one raising the alert again): one alert held in the outbox.
    wait_until("the alert to be recorded", || {
        let store = app.store.clone();
        async move {
            let open = store.open_alerts().await.ok()?;
            open.iter().any(|(k, _)| k == "outbox_failing").then_some(())
        }
    })
    .await;
    app.stop().await;

    // SMTP back: everything goes, the alert that waited, and then that it is resolved.
    let config = std::fs::read_to_string(&app.config_path)
        .unwrap()
        .replace(&format!("port = {closed}"), &format!("port = {}", app.stack.submission_port));
    std::fs::write(&app.config_path, config).unwrap();
    app.start().await;
    app.stack.wait_for_mail(&partner, 1).await;
    app.stack.wait_for_mail(&operator, 2).await;
    app.wait_for_outbox_drain().await;
    app.stack.wait_for_queue_empty().await;
    let got = subjects(&app, &operator);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.contains(&"gatehouse cannot send email".to_string()), "{got:?}");
    assert!(got.contains(&"Resolved: gatehouse cannot send email".to_string()), "{got:?}");
    let (status, _, body) = get(port, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let s = app.cli_json(&["status", "--format", "json"]);
    assert!(s["smtp_last_sent"].is_string(), "{s}");
    // The gatekeeper got the notification that waited, and no technical alert.
    let gatekeeper = subjects(&app, &app.gatekeeper);
    assert!(
        gatekeeper.iter().all(|s| !s.contains("cannot send") && !s.starts_with("Resolved")),
        "{gatekeeper:?}"
    );
    app.stop().await;
}
