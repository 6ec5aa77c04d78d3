//! Hostile input: header injection through subjects and names, HTML and template syntax in
//! approaches, and a flood of approaches at once.

use std::collections::BTreeSet;

use gatehouse::domain::Classification;
use gatehouse::triage::grammar::Command;

use crate::helpers::{TestApp, header, readable};

fn b64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() { A[((n >> (18 - 6 * i)) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

#[tokio::test]
async fn headers_cannot_be_injected_through_subjects_or_names() {
    let app = TestApp::spawn().await;
    let users = app.stack.users(&[("inject", "icb.test"), ("victim", "icb.test")]);
    let (sender, victim) = (&users[0], &users[1]);
    let subject = format!("=?utf-8?B?{}?=", b64(&format!("Hello\r\nBcc: {victim}\r\nX-Injected: yes")));
    let name = format!("=?utf-8?B?{}?=", b64(&format!("Evil\r\nBcc: {victim}")));
    let raw = format!(
        "From: {name} <{sender}>\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: <inject.{}@icb.test>\r\n\r\nBody\r\n",
        app.shared,
        crate::helpers::rand_suffix()
    );
    app.stack.send_raw(sender, &[&app.shared], raw.as_bytes()).await;
    let ack = app.stack.wait_for_mail(sender, 1).await.remove(0);
    let note = app.stack.wait_for_mail(&app.gatekeeper, 1).await.remove(0);
    for mail in [&ack, &note] {
        assert!(header(mail, "X-Injected").is_none(), "a header was injected");
        assert!(header(mail, "Bcc").is_none());
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(app.stack.mailbox(victim).is_empty(), "the injected Bcc received mail");
}

#[tokio::test]
async fn html_and_template_syntax_in_an_approach_stay_inert() {
    let app = TestApp::spawn().await;
    let sender = app.stack.user("html", "icb.test");
    let body = "<script>alert('x')</script> <img src=x onerror=alert(1)> {{ service.name }} {% if true %}IF{% endif %}";
    app.stack.send(&sender, &app.shared, "<b>Bold</b> {{ token }}", body).await;
    let note = app.stack.wait_for_mail(&app.gatekeeper, 1).await.remove(0);
    let text = readable(&note);
    let html = &text[text.find("Content-Type: text/html").unwrap()..];
    assert!(!html.contains("<script>"), "raw script in the HTML notification");
    assert!(html.contains("&lt;script&gt;"), "{html}");
    assert!(!html.contains("<img src=x"));
    assert!(text.contains("{{ service.name }}"), "template syntax from the email was rendered");
    assert!(text.contains("{% if true %}IF{% endif %}"), "template syntax from the email was run: {text}");
    // The same in the board's summary.
    let summary = app.cli(&["summary", "preview", "--format", "html"]);
    let summary = String::from_utf8_lossy(&summary.stdout);
    assert!(
        summary.contains("&lt;b&gt;Bold&lt;&#x2f;b&gt;") || summary.contains("&lt;b&gt;Bold&lt;/b&gt;"),
        "{summary}"
    );
    assert!(summary.contains("{{ token }}"));
}

#[tokio::test]
async fn fifty_senders_with_twenty_approaches_each_at_once() {
    // The per-address limit is what this tests; the domain and hourly caps are raised out of
    // the way (all fifty senders share one domain).
    let mut app = TestApp::new(crate::helpers::Options {
        extra: "[acknowledgements]\ndomain_limit_per_day = 2000\nlimit_per_hour = 2000\n".into(),
        ..crate::helpers::Options::default()
    })
    .await;
    app.start().await;
    let wanted: Vec<(String, String)> =
        (0..50).map(|i| (format!("load{i}"), "trust.test".to_string())).collect();
    let wanted: Vec<(&str, &str)> = wanted.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let senders = app.stack.users(&wanted);
    // All fifty at once, each sending its twenty one after another.
    let sends = senders.iter().map(|s| {
        let app = &app;
        async move {
            for i in 0..20 {
                app.stack.send(s, &app.shared, &format!("Load approach {i} from {s}"), "Please help.").await;
            }
        }
    });
    futures::future::join_all(sends).await;
    eprintln!("1000 approaches sent by 50 senders");
    app.wait_for_messages(1000).await;
    app.wait_for_outbox_drain().await;
    // Counted once Postfix has delivered everything it took.
    app.stack.wait_for_queue_empty().await;
    let requests = app.store.list_requests(&Default::default()).await.unwrap();
    assert_eq!(requests.len(), 1000);
    let references: BTreeSet<_> = requests.iter().map(|r| &r.reference).collect();
    assert_eq!(references.len(), 1000, "a reference was given twice");
    // The rate limit: ten acknowledgements a day per sender, each for a different request;
    // the other ten logged as not answered.
    let mut acknowledged = BTreeSet::new();
    for s in &senders {
        let acks = app.stack.mailbox(s);
        assert_eq!(acks.len(), 10, "{s} got {} acknowledgements", acks.len());
        for ack in &acks {
            let subject = header(ack, "Subject").unwrap();
            let reference = subject.rsplit_once('[').map(|(_, r)| r.trim_end_matches(']').to_string());
            assert!(acknowledged.insert(reference.clone()), "{reference:?} acknowledged twice");
        }
    }
    let mut not_answered = 0;
    for r in &requests {
        let events = app.store.request_events(r.id).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        match (kinds.contains(&"acknowledged"), kinds.contains(&"not_acknowledged")) {
            (true, false) => {}
            (false, true) => not_answered += 1,
            other => panic!("{}: acknowledged/not acknowledged {other:?}", r.reference),
        }
    }
    assert_eq!(not_answered, 500);
    // The gatekeeper is told of every one, once.
    let notifications = app.stack.mailbox(&app.gatekeeper);
    let told: BTreeSet<_> = notifications
        .iter()
        .filter_map(|n| header(n, "Subject")?.split(']').next().map(str::to_string))
        .collect();
    assert_eq!(notifications.len(), 1000, "the gatekeeper got {} notifications", notifications.len());
    assert_eq!(told.len(), 1000, "a request notified twice");
    eprintln!(
        "LOAD: 50 senders x 20 approaches: 1000 logged, 500 acknowledged once each, 500 held by the rate limit, 1000 notifications"
    );
}

/// Hostile mail, built to size: each must be stored raw and logged, and must not stop the
/// daemon.
fn pathological(name: &str, from: &str, to: &str) -> Vec<u8> {
    let id = crate::helpers::rand_suffix();
    let mut raw = format!("From: Jo Bloggs <{from}>\r\nTo: {to}\r\nMessage-ID: <{name}.{id}@icb.test>\r\n")
        .into_bytes();
    match name {
        "headers-10k" => {
            for i in 0..10_000 {
                raw.extend_from_slice(format!("X-Header-{i}: value {i}\r\n").as_bytes());
            }
            raw.extend_from_slice(b"Subject: Ten thousand headers\r\n\r\nPlease help.\r\n");
        }
        "nested-multipart-1k" => {
            raw.extend_from_slice(b"Subject: A thousand nested multiparts\r\nMIME-Version: 1.0\r\n");
            for i in 0..1_000 {
                raw.extend_from_slice(
                    format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n").as_bytes(),
                );
            }
            raw.extend_from_slice(b"Content-Type: text/plain\r\n\r\nPlease help.\r\n");
            for i in (0..1_000).rev() {
                raw.extend_from_slice(format!("--b{i}--\r\n").as_bytes());
            }
        }
        "nested-message-1k" => {
            raw.extend_from_slice(b"Subject: Fwd: a thousand forwards deep\r\nMIME-Version: 1.0\r\n");
            for i in 0..1_000 {
                raw.extend_from_slice(
                    format!(
                        "Content-Type: message/rfc822\r\n\r\nFrom: x{i}@icb.test\r\nSubject: Fwd: {i}\r\n"
                    )
                    .as_bytes(),
                );
            }
            raw.extend_from_slice(b"\r\nPlease help.\r\n");
        }
        "subject-1mb" => {
            raw.extend_from_slice(b"Subject: ");
            raw.extend(std::iter::repeat_n(b'a', 1 << 20));
            raw.extend_from_slice(b"\r\n\r\nPlease help.\r\n");
        }
        "invalid-utf8" => {
            // Undeclared 8-bit bytes and broken UTF-8 in the name, subject, boundary,
            // filename and bodies, and a charset that lies.
            raw = b"From: J\xffo \xc3 Bl\xe9ggs \xe2\x82 <".to_vec();
            raw.extend_from_slice(from.as_bytes());
            raw.extend_from_slice(
                format!(">\r\nTo: {to}\r\nMessage-ID: <{name}.{id}@icb.test>\r\n").as_bytes(),
            );
            raw.extend_from_slice(
                b"Subject: Caf\xe9 \xf0\x28\x8c\x28 =?utf-8?B?/w==?= \xed\xa0\x80\r\n\
                  MIME-Version: 1.0\r\n\
                  Content-Type: multipart/mixed; boundary=\"\xfe\xff\"\r\n\r\n\
                  --\xfe\xff\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
                  Please help \xc0\xaf \xe2\x82 \xff\xfe\r\n\
                  --\xfe\xff\r\nContent-Type: text/html; charset=iso-2022-jp\r\n\r\n\
                  <p>\x1b$B\xff\xff\x1b(B \x80\x81</p>\r\n\
                  --\xfe\xff\r\nContent-Type: application/pdf; name=\"r\xe9sum\xe9\xff.pdf\"\r\n\
                  Content-Transfer-Encoding: base64\r\n\r\n\xff\xfe!!notbase64\r\n\
                  --\xfe\xff--\r\n",
            );
        }
        "attachment-50mb" => {
            raw.extend_from_slice(
                b"Subject: A 50 MB attachment\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
                  --b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n\
                  --b\r\nContent-Type: application/pdf; name=big.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            );
            let line = [b"QUJDRA==".repeat(9).as_slice(), b"QUJD\r\n"].concat();
            while raw.len() < 50_000_000 {
                raw.extend_from_slice(&line);
            }
            raw.extend_from_slice(b"--b--\r\n");
        }
        other => panic!("no such case {other}"),
    }
    raw
}

/// Whether `stored` holds the message `sent`: the same body byte for byte, and every header
/// line sent (the servers add their own, such as Received, Return-Path and Date).
fn holds(stored: &[u8], sent: &[u8]) -> bool {
    let split = |raw: &[u8]| {
        let raw = crate::helpers::replace_bytes(raw, b"\r\n", b"\n");
        let at = raw.windows(2).position(|w| w == b"\n\n").unwrap_or(raw.len());
        let (head, body) = raw.split_at(at);
        // A server may end the message with one more line break.
        let body = body.strip_suffix(b"\n").filter(|b| b.ends_with(b"\n")).unwrap_or(body);
        let lines: BTreeSet<Vec<u8>> = head.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
        (lines, body.to_vec())
    };
    let (stored_head, stored_body) = split(stored);
    let (sent_head, sent_body) = split(sent);
    stored_body == sent_body && sent_head.is_subset(&stored_head)
}

#[tokio::test]
async fn pathological_mail_is_stored_logged_and_survived() {
    let app = TestApp::spawn().await;
    let partner = app.stack.user("hostile", "icb.test");
    // Small hostile cases straight into Dovecot, byte for byte (Postfix would rewrite an
    // over-long header); the big one through Postfix, as mail of that size arrives.
    let cases = ["headers-10k", "nested-multipart-1k", "nested-message-1k", "subject-1mb", "invalid-utf8"];
    let mut sent = Vec::new();
    for name in cases {
        let raw = pathological(name, &partner, &app.shared);
        app.stack.deliver(&partner, &app.shared, &raw);
        sent.push((name, raw));
    }
    let big = pathological("attachment-50mb", &partner, &app.shared);
    app.stack.send_raw(&partner, &[&app.shared], &big).await;
    sent.push(("attachment-50mb", big));
    // Each logged once (the nested forward names a made-up original sender, who is never
    // written to: the forwarder is not a member).
    let logged = |rows: &[gatehouse::store::MessageRow], name: &str| {
        rows.iter()
            .filter(|r| r.message_id.as_deref().is_some_and(|m| m.starts_with(&format!("{name}."))))
            .filter(|r| r.classification.is_some())
            .count()
    };
    let rows = crate::helpers::wait_while_progressing(crate::helpers::STALL, "every case logged", || {
        let app = &app;
        let sent = &sent;
        async move {
            let rows = app.store.list_messages().await.unwrap_or_default();
            let done = sent.iter().filter(|(name, _)| logged(&rows, name) > 0).count();
            (done as i64, (done == sent.len()).then_some(rows))
        }
    })
    .await;

    for (name, raw) in &sent {
        assert_eq!(logged(&rows, name), 1, "{name} logged more than once");
        let row = rows
            .iter()
            .find(|r| r.message_id.as_deref().is_some_and(|m| m.starts_with(&format!("{name}."))))
            .unwrap();
        let stored = app.store.raw_message(row.id).await.unwrap();
        assert!(holds(&stored, raw), "{name}: the stored bytes differ from those sent");
        match (*name, row.classification) {
            ("attachment-50mb", Some(Classification::Unparseable)) => {
                assert!(row.detail.as_deref().unwrap_or_default().contains("too large"), "{row:?}");
            }
            ("attachment-50mb", other) => panic!("the 50 MB message was parsed: {other:?}"),
            // Kept whole in the raw message, but not repeated into every email about the
            // request (a 17.5 MB notification, the megabyte back to the sender).
            ("subject-1mb", Some(Classification::New)) => {
                let subject = row.subject.as_deref().unwrap_or_default();
                assert!(subject.len() <= 1003 && subject.ends_with('…'), "{} bytes", subject.len());
            }
            ("invalid-utf8", Some(Classification::New)) => {
                assert_eq!(row.from.as_deref(), Some(partner.as_str()), "{row:?}");
            }
            // A request (a forward is one too), or kept as unparseable.
            (_, Some(Classification::New | Classification::Forwarded | Classification::Unparseable)) => {}
            (_, other) => panic!("{name}: {other:?}"),
        }
        eprintln!("HOSTILE: {name} ({} bytes): {:?} {:?}", raw.len(), row.classification, row.detail);
    }
    // The gatekeeper is told of the one too large to parse.
    let told = wait_until_some_mail(&app, "A message too large").await;
    assert!(told.contains("50 MB attachment"), "{told}");
    // Everything the CLI shows survives the bytes it shows.
    for args in [["messages", "list", "--format", "json"], ["requests", "list", "--format", "json"]] {
        let out = app.cli(&args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
    }
    // And the daemon is still there for the next, ordinary approach.
    let next = app.stack.user("afterwards", "icb.test");
    app.stack.send(&next, &app.shared, "An ordinary approach", "Please help.").await;
    app.stack.wait_for_mail(&next, 1).await;
    let rows = app.store.list_messages().await.unwrap();
    assert!(
        rows.iter().any(|r| r.subject.as_deref() == Some("An ordinary approach") && r.reference.is_some())
    );
}

/// The subject of the first email to the gatekeeper whose subject contains `what`.
async fn wait_until_some_mail(app: &TestApp, what: &str) -> String {
    crate::helpers::wait_until(&format!("an email about {what}"), || {
        let mail = app.stack.mailbox(&app.gatekeeper);
        async move { mail.iter().filter_map(|m| header(m, "Subject")).find(|s| s.contains(what)) }
    })
    .await
}

/// NUL bytes, raw and encoded (quoted-printable, base64, RFC 2047 and RFC 2231), in every
/// part of an approach that ends up as text in the database: PostgreSQL refuses `\0` in a
/// text column, so a store that passed one on would fail the message for ever (its
/// quarantine too) and stop the inbox behind it. Each approach is logged, answered and
/// decided, and the daemon carries on; on PostgreSQL nothing stored holds a NUL (each is
/// U+FFFD), while SQLite keeps the text as decoded.
#[tokio::test]
async fn nul_bytes_anywhere_in_an_approach_are_logged_and_answered() {
    let app = TestApp::spawn().await;
    let users = app.stack.users(&[("nulenc", "icb.test"), ("nulraw", "icb.test"), ("nulafter", "icb.test")]);
    let n = crate::helpers::rand_suffix();
    let encoded = format!(
        "From: =?utf-8?B?{name}?= <{from}>\r\nTo: {to}\r\nSubject: =?utf-8?Q?Encoded=00NUL_in_the_subject?=\r\n\
         Message-ID: <nul-encoded.{n}@icb.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
         A body with an encoded =00 NUL in it.\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{part}\r\n\
         --b\r\nContent-Type: application/octet-stream\r\n\
         Content-Disposition: attachment; filename*=utf-8''evil%00name.txt\r\n\r\nattached\r\n--b--\r\n",
        name = b64("Jo\0 Bloggs"),
        from = users[0],
        to = app.shared,
        part = b64("A second part\0 with a NUL."),
    );
    let raw = format!(
        "From: Sam\0 Raw <{from}>\r\nTo: {to}\r\nSubject: Raw\0NUL in the subject\r\n\
         Message-ID: <nul-raw.{n}\0@icb.test>\r\nReferences: <unknown\0@icb.test>\r\n\r\n\
         A body with a raw \0 NUL in it.\r\n",
        from = users[1],
        to = app.shared,
    );
    app.stack.deliver(&users[0], &app.shared, encoded.as_bytes());
    app.stack.deliver(&users[1], &app.shared, raw.as_bytes());
    let rows = app.wait_for_messages(2).await;
    let no_nul = |what: &str, text: &str| {
        assert!(!crate::helpers::on_postgres() || !text.contains('\0'), "a NUL stored: {what}");
    };
    for row in &rows {
        assert_eq!(row.classification, Some(Classification::New), "{row:?}");
        let held =
            [&row.subject, &row.from, &row.message_id, &row.detail].map(|t| t.as_deref().unwrap_or(""));
        no_nul(&format!("{row:?}"), &held.concat());
    }
    for sender in &users[..2] {
        app.stack.wait_for_mail(sender, 1).await;
    }
    let requests = app.store.list_requests(&Default::default()).await.unwrap();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        let shown = app.cli_json(&["requests", "show", &r.reference, "--format", "json"]);
        no_nul(&shown.to_string(), &shown.to_string().replace("\\u0000", "\0"));
        assert!(r.body.contains("NUL in it"), "{:?}", r.body);
        no_nul(&format!("{r:?}"), &[&r.subject, &r.body, r.requester_name.as_deref().unwrap_or("")].concat());
    }
    // The gatekeeper's reply may carry one too: the decision, its note and message are kept.
    let r = &requests[0];
    let config = std::sync::Arc::new(app.config());
    let templates = std::sync::Arc::new(gatehouse::templates::Templates::load(&config).unwrap());
    let triage = gatehouse::triage::Triage::new(config, templates);
    let reply = gatehouse::triage::grammar::Reply {
        decision: Some(Command::from_parts("decline".parse().unwrap(), Some("Not\0 ours")).unwrap()),
        circulate: None,
        priorities: Vec::new(),
        notes: vec!["A note\0 here".into()],
        message: "Goodbye\0 now".into(),
    };
    let mut tx = app.store.begin().await.unwrap();
    let actor = gatehouse::triage::Actor::Operator;
    triage.decide(&mut *tx, r, &reply, &actor, chrono::Utc::now()).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    let shown = app.cli_json(&["requests", "show", &r.reference, "--format", "json"]);
    assert_eq!(shown["decision"], "decline", "{shown}");
    no_nul(&shown.to_string(), &shown.to_string().replace("\\u0000", "\0"));
    // And the daemon is there for the next approach.
    app.stack.send(&users[2], &app.shared, "An ordinary approach after the NULs", "Please help.").await;
    app.stack.wait_for_mail(&users[2], 1).await;
}
