//! Hostile input: header injection through subjects and names, HTML and template syntax in
//! approaches, and a flood of approaches at once.

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
#[ignore = "heavy (1,000 approaches, 2,000 emails); timed out once on a loaded machine: cargo test --test api fifty_senders -- --ignored --nocapture"]
async fn fifty_senders_with_twenty_approaches_each_at_once() {
    let app = TestApp::spawn().await;
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
    let progress = {
        let store = app.store.clone();
        let stack = app.stack;
        let shared = app.shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                let done = store.list_messages().await.map(|m| m.len()).unwrap_or(0);
                let delivered = stack.mailbox(&shared).len();
                let outbox = store.outbox_counts().await.map(|c| c.pending).unwrap_or(-1);
                eprintln!(
                    "progress: {delivered} delivered to the shared mailbox, {done} taken, {outbox} outgoing pending"
                );
            }
        })
    };
    futures::future::join_all(sends).await;
    eprintln!("1000 approaches sent by 50 senders");
    app.wait_for_messages(1000).await;
    app.wait_for_outbox_drain().await;
    let requests = app.store.list_requests(&Default::default()).await.unwrap();
    assert_eq!(requests.len(), 1000);
    let references: std::collections::BTreeSet<_> = requests.iter().map(|r| &r.reference).collect();
    assert_eq!(references.len(), 1000, "a reference was given twice");
    // The rate limit: ten acknowledgements a day per sender, the rest logged as not sent.
    for s in &senders {
        let got = app.stack.mailbox(s).len();
        assert_eq!(got, 10, "{s} got {got} acknowledgements");
    }
    progress.abort();
    eprintln!("LOAD: 50 senders x 20 approaches: 1000 logged, 500 acknowledged, 500 held by the rate limit");
}
