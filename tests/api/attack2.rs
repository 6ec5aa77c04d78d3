//! Attacks on what issues 17 and 20 added, end to end: a flood of poison messages must not
//! become a flood of alert emails; the metrics port must not be held by clients that open
//! connections and say nothing (or a byte at a time); a token endpoint that redirects must
//! not get the client secret sent to another origin.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gatehouse::domain::Classification;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{Options, TestApp, header, rand_suffix, wait_until, wait_until_within};
use crate::monitoring::{free_port, get};

/// Subjects in `address`'s mailbox that contain `part`.
fn subjects_with(app: &TestApp, address: &str, part: &str) -> usize {
    app.stack
        .mailbox(address)
        .iter()
        .filter_map(|m| header(m, "Subject"))
        .filter(|s| s.contains(part))
        .count()
}

#[tokio::test]
async fn a_flood_of_poison_messages_makes_a_few_alerts_and_one_digest_not_one_each() {
    let cap = usize::try_from(gatehouse::intake::QUARANTINE_ALERTS_PER_DAY).unwrap();
    let flood = cap + 1;
    let app = TestApp::spawn().await;
    let partner = app.stack.user("flood", "icb.test");
    let token = format!("flood-{}", rand_suffix());
    for i in 0..flood {
        let raw = format!(
            "From: Mallory <{partner}>\r\nTo: {}\r\nSubject: Poison {i}\r\nMessage-ID: <{token}.{i}@icb.test>\r\n\
             X-Gatehouse-Test-Fault: fail {token}\r\n\r\nNothing to see.\r\n",
            app.shared
        );
        app.stack.send_raw(&partner, &[&app.shared], raw.as_bytes()).await;
    }
    let store = app.store.clone();
    wait_until_within(Duration::from_secs(480), "every poison message to be set aside", || {
        let store = store.clone();
        let token = token.clone();
        async move {
            let rows = store.list_messages().await.ok()?;
            let set_aside = rows
                .iter()
                .filter(|r| r.message_id.as_deref().is_some_and(|m| m.starts_with(&token)))
                .filter(|r| r.classification == Some(Classification::Quarantined))
                .count();
            (set_aside == flood).then_some(())
        }
    })
    .await;
    // A later ordinary approach is answered: the outbox has sent everything queued before it.
    let next = app.stack.user("after-flood", "icb.test");
    app.stack.send(&next, &app.shared, "An approach after the flood", "Can we meet?").await;
    app.stack.wait_for_mail(&next, 1).await;
    wait_until("the digest alert", || {
        let n = subjects_with(&app, &app.gatekeeper, "More messages could not be processed");
        async move { (n >= 1).then_some(()) }
    })
    .await;
    let one_each = subjects_with(&app, &app.gatekeeper, "A message could not be processed");
    let digests = subjects_with(&app, &app.gatekeeper, "More messages could not be processed");
    assert_eq!((one_each, digests), (cap, 1), "{flood} poison messages");
    let digest = app
        .stack
        .mailbox(&app.gatekeeper)
        .into_iter()
        .find(|m| header(m, "Subject").is_some_and(|s| s.contains("More messages")))
        .unwrap();
    let digest = String::from_utf8_lossy(&digest).to_string();
    assert!(!digest.contains("Poison") && !digest.contains("Mallory"), "the sender's words: {digest}");
}

/// Opens `n` connections to the metrics port, each sending the start of a request and never
/// finishing it; counts those the server has closed.
async fn slow_clients(port: u16, n: usize) -> Arc<AtomicUsize> {
    let closed = Arc::new(AtomicUsize::new(0));
    for _ in 0..n {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: loc").await.unwrap();
        let closed = closed.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            closed.fetch_add(1, Ordering::SeqCst);
        });
    }
    closed
}

#[tokio::test]
async fn metrics_clients_that_never_finish_a_request_are_cut_off_and_the_endpoint_answers_again() {
    let port = free_port();
    let mut app = TestApp::new(Options {
        extra: format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
        ..Options::default()
    })
    .await;
    app.start().await;
    wait_until("the metrics server", || get(port, "/healthz")).await;
    let n = gatehouse::daemon::health::MAX_CONNECTIONS + 4;
    let closed = slow_clients(port, n).await;
    wait_until_within(Duration::from_secs(120), "the server to close every unfinished request", || {
        let closed = closed.clone();
        async move { (closed.load(Ordering::SeqCst) == n).then_some(()) }
    })
    .await;
    let (status, _, body) = get(port, "/healthz").await.expect("answers after the slow clients");
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // A request line far longer than any endpoint's is refused, not read whole.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let line = format!("GET /metrics?{} HTTP/1.1\r\nHost: localhost\r\n\r\n", "a".repeat(64 * 1024));
    let _ = stream.write_all(line.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "a 64 KiB request line was served: {}",
        &answer[..80.min(answer.len())]
    );
    // And the daemon goes on: an approach is still acknowledged.
    let partner = app.stack.user("after-slowloris", "icb.test");
    app.stack.send(&partner, &app.shared, "After the slow clients", "Can we meet?").await;
    app.stack.wait_for_mail(&partner, 1).await;
}

/// An HTTP server that answers a request for `/token` with a 307 to `redirect` when given,
/// and any other request with a token; keeps every request it was sent.
async fn http_server(redirect: Option<String>) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let redirect = redirect.clone();
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                // The head, then a body of Content-Length bytes.
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => got.extend_from_slice(&buf[..k]),
                    }
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if body.len() >= length {
                            break;
                        }
                    }
                }
                let request = String::from_utf8_lossy(&got).to_string();
                let answer = match redirect {
                    Some(location) if request.starts_with("POST /token ") => format!(
                        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                    _ => {
                        let body = r#"{"access_token":"t","token_type":"Bearer","expires_in":3600}"#;
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    }
                };
                kept.lock().unwrap().push(request);
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn a_token_endpoint_redirecting_elsewhere_never_gets_the_client_secret_sent_there() {
    let (elsewhere, stolen) = http_server(None).await;
    let (endpoint, asked) = http_server(Some(format!("http://127.0.0.1:{elsewhere}/steal"))).await;
    let secret = format!("secret-{}", rand_suffix());
    let form = [("grant_type", "client_credentials"), ("client_secret", secret.as_str())];
    let url = format!("http://127.0.0.1:{endpoint}/token");
    let result = gatehouse::oauth::http::post_form(&url, &form, Duration::from_secs(20), None).await;
    assert!(asked.lock().unwrap().iter().any(|r| r.contains(&secret)), "the endpoint itself was asked");
    assert!(
        stolen.lock().unwrap().iter().all(|r| !r.contains(&secret)),
        "the secret went to another origin: {:?}",
        stolen.lock().unwrap()
    );
    let error = format!("{:#}", result.expect_err("a cross-origin redirect is not followed"));
    assert!(error.contains("another origin"), "{error}");
    assert!(!error.contains(&secret), "{error}");

    // A redirect within the endpoint's own origin is still followed, form and all.
    let (own, seen) = http_server(Some("/token2".into())).await;
    let url = format!("http://127.0.0.1:{own}/token");
    let answer = gatehouse::oauth::http::post_form(&url, &form, Duration::from_secs(20), None).await.unwrap();
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let seen = seen.lock().unwrap();
    assert!(seen.iter().any(|r| r.starts_with("POST /token2 ") && r.contains(&secret)), "{seen:?}");
}

#[tokio::test]
async fn mail_quoting_an_erased_request_is_a_new_approach_and_adds_nothing_to_the_erased_one() {
    let app = TestApp::spawn().await;
    let jo = app.stack.user("erased", "icb.test");
    app.stack.send(&jo, &app.shared, "Erase me: care homes", "First words.").await;
    let ack = app.stack.wait_for_mail(&jo, 1).await.remove(0);
    let subject = header(&ack, "Subject").unwrap();
    let reference =
        subject.split(['[', ']']).find(|p| p.starts_with("GP-")).expect("a reference in the ack").to_string();
    app.cli_ok(&["erase", &reference]);
    app.stack
        .send(&jo, &app.shared, &format!("Re: [{reference}] WORDS-AFTER-ERASE"), "BODY-AFTER-ERASE")
        .await;
    // Logged as a new approach, so acknowledged under a new reference.
    let acks = app.stack.wait_for_mail(&jo, 2).await;
    let second = acks.iter().filter_map(|m| header(m, "Subject")).find(|s| s.contains("WORDS-AFTER-ERASE"));
    let second = second.expect("the new approach acknowledged");
    assert!(!second.contains(&format!("[{reference}]")) || second.matches("[GP-").count() == 2, "{second}");
    let erased = app.cli_json(&["requests", "show", &reference, "--format", "json"]).to_string();
    for back in ["WORDS-AFTER-ERASE", "BODY-AFTER-ERASE", jo.as_str()] {
        assert!(!erased.contains(back), "{back:?} added to the erased request: {erased}");
    }
    let requests = app.store.list_requests(&Default::default()).await.unwrap();
    let new = requests.iter().find(|r| r.subject.contains("WORDS-AFTER-ERASE")).expect("a new request");
    assert_eq!(new.requester, jo);
}

#[tokio::test]
async fn a_subject_access_export_holds_the_persons_emails_not_the_gatekeepers_reply_or_a_strangers() {
    let app = TestApp::spawn().await;
    let a = crate::triage::approach(&app, "Export attack: flu clinics").await;
    let reply = format!(
        "From: Gatekeeper <{from}>\r\nTo: {to}\r\nSubject: Re: {subject}\r\nMessage-ID: <gk-{n}@icb.test>\r\nIn-Reply-To: {nid}\r\nReferences: {nid}\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\ndecline: GATEKEEPER-OUTCOME\r\nnote: GATEKEEPER-INTERNAL-WORDS\r\n\r\nOn Mon, 23 Nov 2026 at 10:02, gatehouse wrote:\r\n{quoted}",
        from = app.gatekeeper,
        to = a.reply_to,
        subject = a.subject,
        nid = a.notification_id,
        n = rand_suffix(),
        quoted = crate::triage::quoted_notification(&a),
    );
    app.stack.send_raw(&app.gatekeeper, &[&a.reply_to], reply.as_bytes()).await;
    let stranger = app.stack.user("stranger", "elsewhere.test");
    app.stack
        .send(&stranger, &app.shared, &format!("Re: [{}] about Jo", a.reference), "STRANGER-WORDS about Jo")
        .await;
    app.wait_for_messages(3).await;
    let dir = app.dir.path().join("export-attack");
    app.cli_ok(&["export", "--person", &a.requester, dir.to_str().unwrap()]);
    let emls: Vec<u8> = std::fs::read_dir(dir.join("incoming"))
        .unwrap()
        .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let emls = String::from_utf8_lossy(&emls);
    assert!(emls.contains("Could general practice help"), "their own approach: {emls}");
    let key = a.reply_to.split('@').next().unwrap();
    for other in ["GATEKEEPER-INTERNAL-WORDS", "STRANGER-WORDS", key, stranger.as_str()] {
        assert!(!emls.contains(other), "{other:?} in the requester's export: {emls}");
    }
    let listed = std::fs::read_to_string(dir.join("incoming.json")).unwrap();
    assert!(!listed.contains(&stranger) && !listed.contains(&app.gatekeeper), "{listed}");
}
