//! One approach, many doors: the same email forwarded by three practices — Outlook inline,
//! Gmail inline and attached as a .eml — in any order and across a restart, is one request;
//! the original sender is acknowledged once, each practice is confirmed with the one
//! reference, and the summary says how many doors it came through. Another organisation's
//! approach about the same thing, and a stranger's forward claiming the original's
//! Message-ID, stay their own requests.

use crate::helpers::{Options, TestApp, header, rand_suffix, readable, stack, wait_until};

const SUBJECT: &str = "Phlebotomy cover over Christmas";
const TEXT: &str = "Could practices in the north locality share phlebotomy cover between 21 December and 4 January? The hospital clinic closes for refurbishment and we expect around 300 extra bloods a week to come into primary care. We would fund sessions at the usual rate.";

/// The original message as the ICB sent it to each practice.
struct Original {
    from: String,
    message_id: String,
}

#[derive(Clone, Copy, Debug)]
enum Door {
    Outlook,
    Gmail,
    Attached,
}

fn forward(door: Door, practice: &str, shared: &str, o: &Original) -> String {
    let n = rand_suffix();
    let from = &o.from;
    match door {
        Door::Outlook => format!(
            "From: Practice Manager <{practice}>\r\nTo: {shared}\r\nSubject: FW: {SUBJECT}\r\nMessage-ID: <ol.{n}@practice.test>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nFor the leadership group.\r\n\r\n-----Original Message-----\r\nFrom: Jo Original <{from}>\r\nSent: 20 November 2026 16:10\r\nTo: {practice}\r\nSubject: {SUBJECT}\r\n\r\n{TEXT}\r\n"
        ),
        // Gmail keeps the original's Message-ID as In-Reply-To/References.
        Door::Gmail => format!(
            "From: Practice Manager <{practice}>\r\nTo: {shared}\r\nSubject: Fwd: {SUBJECT}\r\nMessage-ID: <gm.{n}@practice.test>\r\nIn-Reply-To: {mid}\r\nReferences: {mid}\r\nDate: Mon, 23 Nov 2026 09:05:00 +0000\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nPassing this on.\r\n\r\n---------- Forwarded message ---------\r\nFrom: Jo Original <{from}>\r\nDate: Fri, 20 Nov 2026 at 16:10\r\nSubject: {SUBJECT}\r\nTo: <{practice}>\r\n\r\n{TEXT}\r\n",
            mid = o.message_id
        ),
        Door::Attached => format!(
            "From: Practice Manager <{practice}>\r\nTo: {shared}\r\nSubject: FW: {SUBJECT}\r\nMessage-ID: <at.{n}@practice.test>\r\nDate: Mon, 23 Nov 2026 09:10:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b{n}\"\r\n\r\n--b{n}\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nSee attached.\r\n\r\n--b{n}\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"original.eml\"\r\n\r\nFrom: Jo Original <{from}>\r\nTo: {practice}\r\nSubject: {SUBJECT}\r\nMessage-ID: {mid}\r\nDate: Fri, 20 Nov 2026 16:10:00 +0000\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n{TEXT}\r\n\r\n--b{n}--\r\n",
            mid = o.message_id
        ),
    }
}

async fn settle(app: &TestApp) {
    app.wait_for_outbox_drain().await;
    app.stack.wait_for_queue_empty().await;
}

fn kinds(r: &serde_json::Value, kind: &str) -> Vec<serde_json::Value> {
    r["events"].as_array().unwrap().iter().filter(|e| e["kind"] == kind).cloned().collect()
}

/// Three practices forward one ICB email through `doors`, in that order, with a restart
/// after the first; everything must end as one request.
async fn three_doors(doors: [Door; 3]) {
    let users = stack().users(&[
        ("jo", "icb.test"),
        ("pm", "nhs.test"),
        ("pm", "example.org"),
        ("pcn", "example.com"),
    ]);
    let original =
        Original { from: users[0].clone(), message_id: format!("<orig.{}@icb.test>", rand_suffix()) };
    let practices = &users[1..];
    let members = practices.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ");
    let mut app = TestApp::new(Options {
        extra: format!("\"example.org\" = \"Riverside Surgery\"\n\n[members]\naddresses = [{members}]\n"),
        ..Options::default()
    })
    .await;
    app.start().await;
    for (i, (door, practice)) in doors.iter().zip(practices).enumerate() {
        let raw = forward(*door, practice, &app.shared, &original);
        app.stack.send_raw(practice, &[&app.shared], raw.as_bytes()).await;
        app.stack.wait_for_mail(practice, 1).await;
        if i == 0 {
            // The later doors must find the first in the store, not in memory.
            app.stop().await;
            app.start().await;
        }
    }
    settle(&app).await;

    let requests = app.store.list_requests(&Default::default()).await.unwrap();
    assert_eq!(requests.len(), 1, "{doors:?}: {requests:?}");
    let reference = requests[0].reference.clone();
    let r = app.cli_json(&["requests", "show", &reference, "--format", "json"]);
    assert_eq!(r["requester"], original.from.as_str());
    assert_eq!(r["via"], practices[0].as_str());
    let also: Vec<String> =
        kinds(&r, "also_received").iter().map(|e| e["detail"].as_str().unwrap().to_string()).collect();
    assert_eq!(
        also,
        [format!("Also received via {}", practices[1]), format!("Also received via {}", practices[2])]
    );
    let messages = r["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "each copy's message is linked to the request: {r:#}");
    assert!(messages.iter().all(|m| m["classification"] == "forwarded"), "{r:#}");

    let acks = app.stack.mailbox(&original.from);
    assert_eq!(acks.len(), 1, "{doors:?}: the original sender was acknowledged more than once");
    assert_eq!(header(&acks[0], "X-Gatehouse").as_deref(), Some("acknowledgement"));
    for practice in practices {
        let mail = app.stack.mailbox(practice);
        assert_eq!(mail.len(), 1, "{practice}");
        assert_eq!(header(&mail[0], "X-Gatehouse").as_deref(), Some("forward_confirmation"));
        let text = readable(&mail[0]);
        assert!(text.contains(&reference), "{doors:?}: {text}");
        assert!(text.contains("The original sender has been told"), "{text}");
    }
    assert_eq!(kinds(&r, "forward_confirmed").len(), 3, "{r:#}");
    let notifications = app.stack.mailbox(&app.gatekeeper);
    assert_eq!(notifications.len(), 1, "one approach, one notification: no email per door");

    let out = app.cli_ok(&["summary", "preview"]);
    let summary = String::from_utf8_lossy(&out.stdout);
    let came = summary.lines().find(|l| l.contains(&reference)).unwrap_or_default();
    assert!(came.contains("Came via 3 doors:"), "{summary}");
    assert!(came.contains("nhs.test, Riverside Surgery, example.com"), "{came}");
}

#[tokio::test]
async fn outlook_gmail_and_attached_forwards_of_one_email_are_one_request() {
    three_doors([Door::Outlook, Door::Gmail, Door::Attached]).await;
}

#[tokio::test]
async fn the_same_forwards_in_another_order_are_still_one_request() {
    three_doors([Door::Attached, Door::Outlook, Door::Gmail]).await;
}

#[tokio::test]
async fn another_organisation_and_a_stranger_claiming_the_message_id_stay_separate() {
    let users = stack().users(&[
        ("jo", "icb.test"),
        ("pm", "nhs.test"),
        ("lead", "trust.test"),
        ("stranger", "council.test"),
    ]);
    let (jo, practice, trust, stranger) = (&users[0], &users[1], &users[2], &users[3]);
    let original = Original { from: jo.clone(), message_id: format!("<orig.{}@icb.test>", rand_suffix()) };
    let mut app = TestApp::new(Options {
        extra: format!("[members]\naddresses = [\"{practice}\"]\n"),
        ..Options::default()
    })
    .await;
    app.start().await;
    let raw = forward(Door::Attached, practice, &app.shared, &original);
    app.stack.send_raw(practice, &[&app.shared], raw.as_bytes()).await;
    app.stack.wait_for_mail(practice, 1).await;
    let first = app.store.list_requests(&Default::default()).await.unwrap()[0].reference.clone();

    // The trust writes about the same thing itself: its own request, flagged as today.
    app.stack.send(trust, &app.shared, SUBJECT, TEXT).await;
    app.stack.wait_for_mail(trust, 1).await;

    // Someone outside [members] attaches a message claiming to be the original: it joins
    // nothing, and what they are told names only their own request.
    let raw = forward(Door::Attached, stranger, &app.shared, &original);
    app.stack.send_raw(stranger, &[&app.shared], raw.as_bytes()).await;
    let told = readable(&app.stack.wait_for_mail(stranger, 1).await.remove(0));
    settle(&app).await;

    let requests = wait_until("three requests", || {
        let store = app.store.clone();
        async move { store.list_requests(&Default::default()).await.ok().filter(|r| r.len() == 3) }
    })
    .await;
    let by =
        |who: &str| requests.iter().find(|r| r.requester == who || r.via.as_deref() == Some(who)).unwrap();
    let trusts = by(trust);
    assert_eq!(trusts.requester, trust.as_str());
    let strangers = by(stranger);
    assert_eq!(strangers.requester, jo.as_str());
    assert_ne!(strangers.reference, first);
    assert!(told.contains(&strangers.reference) && !told.contains(&first), "{told}");
    assert_eq!(strangers.probable_duplicate_of.as_deref(), Some(first.as_str()), "{strangers:?}");
    let r = app.cli_json(&["requests", "show", &first, "--format", "json"]);
    assert!(kinds(&r, "also_received").is_empty(), "{r:#}");
    assert_eq!(app.stack.mailbox(jo).len(), 1, "only the member's forward acknowledged the original sender");
}
