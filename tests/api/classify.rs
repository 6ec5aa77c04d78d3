//! Mail as real clients write it, delivered through the real stack: each class of message
//! ends up as the right kind of record, with the right requester.

use gatehouse::domain::Classification;

use crate::helpers::TestApp;

async fn request_for(app: &TestApp, reference: &str) -> serde_json::Value {
    app.cli_json(&["requests", "show", reference, "--format", "json"])
}

/// (fixture, original sender, forwarder)
const FORWARDS: &[(&str, &str, &str)] = &[
    ("outlook-forward-html-only.eml", "jo.bloggs@icb.test", "practice.manager@nhs.test"),
    ("outlook-forward-plain.eml", "jo.bloggs@icb.test", "amina.khan@nhs.test"),
    ("gmail-forward.eml", "jo.bloggs@icb.test", "amina.khan@nhs.test"),
    ("apple-mail-forward.eml", "jo.bloggs@icb.test", "practice.manager@nhs.test"),
    ("thunderbird-forward.eml", "jo.bloggs@icb.test", "chris.nurse@nhs.test"),
    ("forward-as-attachment.eml", "jo.bloggs@icb.test", "chris.nurse@nhs.test"),
];

#[tokio::test]
async fn forwards_are_logged_against_the_original_sender_via_the_forwarder() {
    let app = TestApp::spawn().await;
    for (fixture, original, forwarder) in FORWARDS {
        let m = app.deliver_fixture(fixture).await;
        assert_eq!(m.classification, Some(Classification::Forwarded), "{fixture}: {m:?}");
        let r = request_for(&app, m.reference.as_deref().unwrap()).await;
        assert_eq!(r["requester"], *original, "{fixture}");
        assert_eq!(r["via"], *forwarder, "{fixture}");
        assert_eq!(r["organisation"], "Anytown ICB", "{fixture}");
        assert!(
            !r["subject"].as_str().unwrap().to_lowercase().starts_with("fw"),
            "{fixture}: {}",
            r["subject"]
        );
    }
}

#[tokio::test]
async fn machine_mail_is_logged_as_automated_and_never_becomes_a_request() {
    let app = TestApp::spawn().await;
    for fixture in [
        "gmail-vacation-reply.eml",
        "exchange-automatic-reply.eml",
        "list-message.eml",
        "postfix-dsn.eml",
        "own-acknowledgement.eml",
    ] {
        let m = app.deliver_fixture(fixture).await;
        assert_eq!(m.classification, Some(Classification::Automated), "{fixture}: {m:?}");
        assert_eq!(m.reference, None, "{fixture}");
        assert!(m.detail.is_some(), "{fixture}: no reason recorded");
    }
    assert!(app.store.list_requests(&Default::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn legacy_charsets_and_html_only_mail_read_correctly() {
    let app = TestApp::spawn().await;
    let m = app.deliver_fixture("outlook-windows-1252.eml").await;
    let r = request_for(&app, m.reference.as_deref().unwrap()).await;
    assert_eq!(r["subject"], "Practice \u{201c}hub\u{201d} proposal \u{2013} \u{a3}500 per month");
    assert_eq!(r["requester_name"], "Pat O\u{2019}Neill");
    let m = app.deliver_fixture("new-approach-html-only.eml").await;
    let shown = gatehouse::store::open_sqlite_file(&app.dir.path().join("data/gatehouse.db")).await.unwrap();
    let row = shown.find_request(m.reference.as_deref().unwrap()).await.unwrap().unwrap();
    assert!(!row.body.contains('<'), "HTML left in the text: {}", row.body);
    assert!(!row.body.trim().is_empty());
    let m = app.deliver_fixture("cjk-iso-2022-jp.eml").await;
    assert_eq!(m.classification, Some(Classification::New));
    assert!(m.subject.as_deref().unwrap().chars().any(|c| c as u32 > 0x3000), "{:?}", m.subject);
}

#[tokio::test]
async fn broken_mail_is_kept_and_logged_never_lost() {
    let app = TestApp::spawn().await;
    let m = app.deliver_fixture("malformed-mime.eml").await;
    assert!(
        matches!(m.classification, Some(Classification::New) | Some(Classification::Unparseable)),
        "{m:?}"
    );
    // Bytes that are not an email at all.
    let garbage = b"\x00\x01\x02 this is not an email\r\n\r\n\xff\xfe";
    app.stack.send_raw("sender@icb.test", &[&app.shared], garbage).await;
    let rows = app.wait_for_messages(2).await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let raw = app.store.raw_message(row.id).await.unwrap();
        assert!(!raw.is_empty(), "raw bytes not kept for {row:?}");
    }
    let m = app.deliver_fixture("with-attachments.eml").await;
    assert_eq!(m.classification, Some(Classification::New));
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_kept_logged_and_reported_not_parsed() {
    let mut app = crate::helpers::TestApp::new(crate::helpers::Options::default()).await;
    let text = std::fs::read_to_string(&app.config_path)
        .unwrap()
        .replace("timeout_secs = 20", "timeout_secs = 20\nmax_message_bytes = 100000");
    std::fs::write(&app.config_path, text).unwrap();
    app.start().await;
    let partner = app.stack.user("big", "icb.test");
    let body = "A".repeat(76);
    let attachment: String = (0..3000).map(|_| format!("{body}\r\n")).collect();
    let raw = format!(
        "From: Big Sender <{partner}>\r\nTo: {}\r\nSubject: Huge specification\r\nMessage-ID: <big.{}@icb.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\nContent-Type: application/pdf; name=spec.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{attachment}--b--\r\n",
        app.shared,
        crate::helpers::rand_suffix()
    );
    app.stack.send_raw(&partner, &[&app.shared], raw.as_bytes()).await;
    let rows = app.wait_for_messages(1).await;
    assert_eq!(rows[0].classification, Some(Classification::Unparseable));
    assert!(rows[0].detail.as_deref().unwrap().contains("too large"), "{:?}", rows[0].detail);
    assert_eq!(rows[0].from.as_deref(), Some(partner.as_str()));
    assert!(app.store.raw_message(rows[0].id).await.unwrap().len() > 100_000);
    let alert = app.stack.wait_for_mail(&app.gatekeeper, 1).await.remove(0);
    assert!(crate::helpers::header(&alert, "Subject").unwrap().contains("Huge specification"));
    assert!(app.stack.mailbox(&partner).is_empty(), "the sender was answered");
}
