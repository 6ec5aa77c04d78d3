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
    let row = app.store.find_request(m.reference.as_deref().unwrap()).await.unwrap().unwrap();
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

/// Auto-replies that carry no header saying so, as Lotus Notes, Outlook behind a gateway,
/// helpdesks and challenge-response filters send them: (fixture, sender as logged).
const WORDED_AUTO_REPLIES: &[(&str, &str)] = &[
    ("lotus-notes-out-of-office.eml", "jo.bloggs@trust.test"),
    ("outlook-abwesenheitsnotiz.eml", "k.schmidt@klinikum.example"),
    ("outlook-reponse-automatique.eml", "amelie.durand@hopital.example"),
    ("outlook-ateb-awtomatig.eml", "rhys.evans@wales.test"),
    ("helpdesk-automated-response.eml", "enquiries@supplier.test"),
    ("out-of-office-body-only.eml", "priya.shah@pcn.test"),
    ("boxbe-challenge.eml", "notify@boxbe.com"),
    ("spamarrest-challenge.eml", "lee.morgan@example.test"),
    ("challenge-verify-human.eml", "alex.young@surgery.test"),
];

#[tokio::test]
async fn auto_replies_without_headers_are_filed_unanswered_and_listed_in_the_daily_digest() {
    use chrono::{Datelike as _, TimeZone as _, Timelike as _};
    let app = TestApp::spawn().await;
    let outbox = || async {
        let db = app.db().await;
        let sql = "SELECT kind, subject, raw FROM outbox ORDER BY id";
        let rows: Vec<(String, String, Vec<u8>)> =
            crate::on_db!(db, |pool| sqlx::query_as(sql).fetch_all(pool).await.unwrap());
        db.close().await;
        rows
    };
    for (fixture, sender) in WORDED_AUTO_REPLIES {
        let m = app.deliver_fixture(fixture).await;
        assert_eq!(m.classification, Some(Classification::Automated), "{fixture}: {m:?}");
        assert_eq!(m.from.as_deref(), Some(*sender), "{fixture}");
        assert!(
            m.detail.as_deref().unwrap().starts_with(gatehouse::classify::BY_WORDING),
            "{fixture}: {m:?}"
        );
    }
    // Nothing to the senders, no notification: the outbox is written with each message's
    // outcome, so an empty outbox now means nothing will go.
    assert!(app.store.list_requests(&Default::default()).await.unwrap().is_empty());
    assert_eq!(outbox().await.len(), 0, "mail queued for an auto-reply");
    // Machine mail with headers, and a person writing about having been away: not listed.
    for fixture in ["gmail-vacation-reply.eml", "list-message.eml"] {
        let m = app.deliver_fixture(fixture).await;
        assert_eq!(m.classification, Some(Classification::Automated), "{fixture}");
        assert!(!m.detail.as_deref().unwrap().starts_with(gatehouse::classify::BY_WORDING), "{fixture}");
    }
    let person = app.deliver_fixture("human-was-out-of-office.eml").await;
    assert_eq!(person.classification, Some(Classification::New));
    app.stack.wait_for_mail(&app.gatekeeper, 1).await;

    // The next working day's digest, at 10:00 London time, lists the nine and nothing else
    // (the new approach has not waited two working days).
    let london = chrono_tz::Europe::London;
    let mut day = chrono::Utc::now().with_timezone(&london).date_naive();
    loop {
        let at = london.from_local_datetime(&day.and_hms_opt(10, 0, 0).unwrap()).earliest().unwrap();
        let working = !matches!(day.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun);
        if working && at > chrono::Utc::now() {
            break;
        }
        day = day.succ_opt().unwrap();
    }
    let at = london.from_local_datetime(&day.and_hms_opt(10, 0, 0).unwrap()).earliest().unwrap();
    assert_eq!(at.hour(), 10);
    let config = std::sync::Arc::new(app.config());
    let templates = std::sync::Arc::new(gatehouse::templates::Templates::load(&config).unwrap());
    let clock = std::sync::Arc::new(gatehouse::clock::ManualClock::new(at.with_timezone(&chrono::Utc)));
    let reminders = gatehouse::triage::reminders::Reminders::new(config, app.store.clone(), clock, templates);
    assert_eq!(reminders.run_once().await.unwrap(), WORDED_AUTO_REPLIES.len());
    assert_eq!(reminders.run_once().await.unwrap(), 0, "once a day");
    let digests: Vec<_> = outbox().await.into_iter().filter(|(kind, ..)| kind == "reminder").collect();
    assert_eq!(digests.len(), 1);
    let (_, subject, raw) = &digests[0];
    assert_eq!(subject, &format!("{} messages filed as automatic replies", WORDED_AUTO_REPLIES.len()));
    let text = crate::helpers::readable(raw);
    // "in the last day", or "since Friday …" when the digest's day is a Monday.
    assert!(
        text.contains("Mail filed as automatic replies in the last day (not answered):")
            || (at.weekday() == chrono::Weekday::Mon
                && text.contains("Mail filed as automatic replies since ")),
        "{text}"
    );
    assert!(!text.contains("waiting for your decision"), "{text}");
    for (fixture, sender) in WORDED_AUTO_REPLIES {
        assert!(text.contains(sender), "{fixture} not listed:\n{text}");
    }
    assert!(text.contains("why: subject opens \"AUTO:\""), "{text}");
    assert!(text.contains("why: challenge-response anti-spam reply (from boxbe.com)"), "{text}");
    for absent in ["jo.bloggs@icb.test", "primary.care@icb.test", "GP Bulletin"] {
        assert!(!text.contains(absent), "{absent} listed:\n{text}");
    }
}
