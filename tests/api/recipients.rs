//! Whom gatehouse writes to, tried the way an attacker would: forged forwards naming
//! someone else, forwards listing dozens of addresses, `+tag` variants and many addresses in
//! one domain against the caps, a stranger quoting a reference, and a sender address the
//! SMTP library refuses. Each asserts what reached which real mailbox.

use crate::helpers::{Options, TestApp, header, rand_suffix, readable, stack, wait_until};

/// An inline Gmail-style forward from `forwarder`, whose block claims to be from `original`
/// and lists `listed` in its To and Cc lines.
fn inline_forward(forwarder: &str, shared: &str, original: &str, listed: &[String], subject: &str) -> String {
    let half = listed.len() / 2;
    let to = if listed.is_empty() { shared.to_string() } else { listed[..half].join(", ") };
    let cc = if listed.is_empty() { String::new() } else { format!("Cc: {}\r\n", listed[half..].join(", ")) };
    format!(
        "From: Someone <{forwarder}>\r\nTo: {shared}\r\nSubject: Fwd: {subject}\r\nMessage-ID: <fwd.{n}@nhs.test>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nPassing this on.\r\n\r\n---------- Forwarded message ---------\r\nFrom: NHS Account Security <{original}>\r\nDate: Fri, 20 Nov 2026 at 16:10\r\nSubject: {subject}\r\nTo: {to}\r\n{cc}\r\nYour account will be closed unless you sign in at the link below.\r\n",
        n = rand_suffix()
    )
}

async fn only_request(app: &TestApp) -> serde_json::Value {
    let requests = app.store.list_requests(&Default::default()).await.unwrap();
    assert_eq!(requests.len(), 1, "{requests:?}");
    app.cli_json(&["requests", "show", &requests[0].reference, "--format", "json"])
}

fn event_details(r: &serde_json::Value, kind: &str) -> Vec<String> {
    r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until everything gatehouse queued has left and Postfix has delivered it, so an
/// empty mailbox means nothing was sent there.
async fn settle(app: &TestApp) {
    app.wait_for_outbox_drain().await;
    app.stack.wait_for_queue_empty().await;
}

#[tokio::test]
async fn a_forged_forward_from_a_non_member_mails_only_the_forwarder() {
    let app = TestApp::spawn().await;
    let users = app.stack.users(&[("forger", "nhs.test"), ("victim", "icb.test")]);
    let (forger, victim) = (&users[0], &users[1]);
    let raw = inline_forward(forger, &app.shared, victim, &[], "Account closure");
    app.stack.send_raw(forger, &[&app.shared], raw.as_bytes()).await;

    let confirmation = app.stack.wait_for_mail(forger, 1).await.remove(0);
    let text = readable(&confirmation);
    assert!(text.contains("We have not written to the original sender"), "{text}");
    let notification = app.stack.wait_for_mail(&app.gatekeeper, 1).await.remove(0);
    let note = readable(&notification);
    assert!(note.contains("UNVERIFIED FORWARD"), "{note}");
    assert!(note.contains("(not a member: unverified)"), "{note}");

    let r = only_request(&app).await;
    assert_eq!(r["requester"], victim.as_str());
    assert_eq!(r["via"], forger.as_str());
    assert_eq!(r["messages"][0]["classification"], "forwarded");
    let why = event_details(&r, "not_acknowledged");
    assert!(why.iter().any(|w| w.contains("not in [members]")), "{why:?}");
    assert_eq!(event_details(&r, "forward_confirmed").len(), 1);

    settle(&app).await;
    assert!(app.stack.mailbox(victim).is_empty(), "the address named in the forward was mailed");
    assert_eq!(app.stack.mailbox(forger).len(), 1, "the forwarder got more than the confirmation");

    // A decision on it goes to the forwarder too, never to the address it named.
    app.cli_ok(&["triage", r["reference"].as_str().unwrap(), "decline", "not for general practice"]);
    let outcome = app.stack.wait_for_mail(forger, 2).await.pop().unwrap();
    assert_eq!(header(&outcome, "X-Gatehouse").as_deref(), Some("outcome"));
    assert!(readable(&outcome).contains("Dear colleague"), "{}", readable(&outcome));
    settle(&app).await;
    assert!(app.stack.mailbox(victim).is_empty(), "the outcome went to the address named in the forward");
}

#[tokio::test]
async fn a_member_s_forward_acknowledges_the_original_sender() {
    let users = stack().users(&[("pm", "nhs.test"), ("original", "icb.test")]);
    let (member, original) = (&users[0], &users[1]);
    let mut app = TestApp::new(Options {
        extra: format!("[members]\naddresses = [\"{member}\"]\n"),
        ..Options::default()
    })
    .await;
    app.start().await;
    let raw = inline_forward(member, &app.shared, original, &[], "Extended access rota");
    app.stack.send_raw(member, &[&app.shared], raw.as_bytes()).await;

    let ack = app.stack.wait_for_mail(original, 1).await.remove(0);
    assert_eq!(header(&ack, "X-Gatehouse").as_deref(), Some("acknowledgement"));
    assert!(header(&ack, "Subject").unwrap().starts_with("Re: Extended access rota ["));
    let confirmation = app.stack.wait_for_mail(member, 1).await.remove(0);
    assert!(readable(&confirmation).contains("The original sender has been told"));
    let note = readable(&app.stack.wait_for_mail(&app.gatekeeper, 1).await.remove(0));
    assert!(!note.contains("UNVERIFIED"), "{note}");
    let r = only_request(&app).await;
    assert_eq!(r["requester"], original.as_str());
    assert_eq!(r["via"], member.as_str());
}

#[tokio::test]
async fn a_forged_member_address_does_not_vouch_for_a_forward_when_the_server_does_not() {
    // Anyone can write a member's address in From; with authserv_id set, the receiving
    // server must vouch for it before the forward's named sender is written to.
    let users = stack().users(&[("pm", "nhs.test"), ("victim", "icb.test"), ("original", "icb.test")]);
    let (member, victim, original) = (&users[0], &users[1], &users[2]);
    let mut app = TestApp::new(Options {
        extra: format!(
            "[members]\naddresses = [\"{member}\"]\n[triage]\nauthserv_id = \"mx.gatehouse.test\"\n"
        ),
        ..Options::default()
    })
    .await;
    app.start().await;

    let forged = inline_forward(member, &app.shared, victim, &[], "Account closure");
    app.stack.send_raw(member, &[&app.shared], forged.as_bytes()).await;
    let note = readable(&app.stack.wait_for_mail(&app.gatekeeper, 1).await.remove(0));
    assert!(note.contains("UNVERIFIED FORWARD"), "{note}");
    let vouched = format!(
        "Authentication-Results: mx.gatehouse.test; dkim=pass header.d=nhs.test; dmarc=pass header.from=nhs.test\r\n{}",
        inline_forward(member, &app.shared, original, &[], "Extended access rota")
    );
    app.stack.send_raw(member, &[&app.shared], vouched.as_bytes()).await;
    let ack = app.stack.wait_for_mail(original, 1).await.remove(0);
    assert_eq!(header(&ack, "X-Gatehouse").as_deref(), Some("acknowledgement"));

    settle(&app).await;
    assert!(app.stack.mailbox(victim).is_empty(), "a forged member's forward had its named sender mailed");
    let requests = app.store.list_requests(&Default::default()).await.unwrap();
    let forged = requests.iter().find(|r| r.requester == *victim).expect("the forged forward is logged");
    let r = app.cli_json(&["requests", "show", &forged.reference, "--format", "json"]);
    let why = event_details(&r, "not_acknowledged");
    assert!(
        why.iter().any(|w| w.contains("does not vouch") || w.contains("no Authentication-Results")),
        "{why:?}"
    );

    // A later decision keeps the intake's judgment: the outcome goes to the member's address
    // the forward came from, never to the address the forged forward named.
    let confirmations = app.stack.mailbox(member).len();
    app.cli_ok(&["triage", &forged.reference, "decline", "not for general practice"]);
    let outcome = app.stack.wait_for_mail(member, confirmations + 1).await.pop().unwrap();
    assert_eq!(header(&outcome, "X-Gatehouse").as_deref(), Some("outcome"));
    settle(&app).await;
    assert!(
        app.stack.mailbox(victim).is_empty(),
        "a forged member's forward had its named sender sent the outcome"
    );
}

#[tokio::test]
async fn a_forward_listing_dozens_of_addresses_mails_none_of_them() {
    let wanted: Vec<(String, String)> =
        (0..30).map(|i| (format!("listed{i}"), "trust.test".to_string())).collect();
    let wanted: Vec<(&str, &str)> = wanted.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let listed = stack().users(&wanted);
    let users =
        stack().users(&[("member", "nhs.test"), ("outsider", "council.test"), ("original", "icb.test")]);
    let (member, outsider, original) = (&users[0], &users[1], &users[2]);
    let mut app = TestApp::new(Options {
        extra: format!("[members]\naddresses = [\"{member}\"]\n"),
        ..Options::default()
    })
    .await;
    app.start().await;
    // From a member: only the one original sender is answered, not the thirty in To and Cc.
    let raw = inline_forward(member, &app.shared, original, &listed, "Circulated widely");
    app.stack.send_raw(member, &[&app.shared], raw.as_bytes()).await;
    // From an outsider, naming one of the thirty as the original sender: only the outsider.
    let raw = inline_forward(outsider, &app.shared, &listed[0], &listed, "Circulated again");
    app.stack.send_raw(outsider, &[&app.shared], raw.as_bytes()).await;

    app.stack.wait_for_mail(original, 1).await;
    app.stack.wait_for_mail(member, 1).await;
    app.stack.wait_for_mail(outsider, 1).await;
    app.stack.wait_for_mail(&app.gatekeeper, 2).await;
    settle(&app).await;
    for address in &listed {
        assert!(app.stack.mailbox(address).is_empty(), "{address}, listed in a forward, was mailed");
    }
    assert_eq!(app.stack.mailbox(original).len(), 1);
    assert_eq!(app.stack.mailbox(member).len(), 1);
    assert_eq!(app.stack.mailbox(outsider).len(), 1);
    let requests = app.store.list_requests(&Default::default()).await.unwrap();
    assert_eq!(requests.len(), 2);
}

#[tokio::test]
async fn plus_tag_variants_count_as_one_address_against_the_daily_limit() {
    let mut app = TestApp::new(Options {
        extra: "[acknowledgements]\nrate_limit_per_day = 3\n".into(),
        ..Options::default()
    })
    .await;
    app.start().await;
    let jo = app.stack.user("jo", "icb.test");
    let (local, domain) = jo.split_once('@').unwrap();
    for i in 0..5 {
        let tagged = format!("{local}+{i}@{domain}");
        app.stack.send(&tagged, &app.shared, &format!("Approach {i}"), "Please help.").await;
    }
    app.wait_for_messages(5).await;
    settle(&app).await;
    // Postfix delivers every +tag to the one mailbox: three acknowledgements in all.
    assert_eq!(app.stack.mailbox(&jo).len(), 3, "the +tags were counted as different people");
    let mut limited = 0;
    for r in app.store.list_requests(&Default::default()).await.unwrap() {
        let events = app.store.request_events(r.id).await.unwrap();
        limited += events
            .iter()
            .filter(|e| {
                e.kind == "not_acknowledged"
                    && e.detail
                        .as_deref()
                        .unwrap_or_default()
                        .contains(&format!("rate limit: 3 automatic answers to {jo}"))
            })
            .count();
    }
    assert_eq!(limited, 2);
}

#[tokio::test]
async fn many_addresses_in_one_domain_or_in_one_hour_meet_the_caps() {
    let mut app = TestApp::new(Options {
        extra: "[acknowledgements]\ndomain_limit_per_day = 2\nlimit_per_hour = 4\n".into(),
        ..Options::default()
    })
    .await;
    app.start().await;
    let same = app.stack.users(&[("dom1", "trust.test"), ("dom2", "trust.test"), ("dom3", "trust.test")]);
    // One at a time, so which ones the cap holds back is known.
    let mut sent = 0;
    for s in &same {
        app.stack.send(s, &app.shared, "One of many", "Please help.").await;
        sent += 1;
        app.wait_for_messages(sent).await;
    }
    settle(&app).await;
    let answered: Vec<usize> = same.iter().map(|s| app.stack.mailbox(s).len()).collect();
    assert_eq!(answered, [1, 1, 0], "the domain cap did not hold");
    let r = app.store.list_requests(&Default::default()).await.unwrap();
    let last = app.store.request_events(r.last().unwrap().id).await.unwrap();
    assert!(
        last.iter().any(|e| e.kind == "not_acknowledged"
            && e.detail.as_deref().unwrap_or_default().contains("to @trust.test")),
        "{last:?}"
    );
    // Two more answers fit in the hour (four in all); the one after does not.
    let others = app.stack.users(&[("hour1", "icb.test"), ("hour2", "council.test"), ("hour3", "nhs.test")]);
    for s in &others {
        app.stack.send(s, &app.shared, "Within the hour", "Please help.").await;
        sent += 1;
        app.wait_for_messages(sent).await;
    }
    settle(&app).await;
    let answered: Vec<usize> = others.iter().map(|s| app.stack.mailbox(s).len()).collect();
    assert_eq!(answered, [1, 1, 0], "the hourly cap did not hold");
    // The gatekeepers hear of every approach, capped or not, and why one was not answered.
    let notes: Vec<String> =
        app.stack.wait_for_mail(&app.gatekeeper, 6).await.iter().map(|n| readable(n)).collect();
    for why in [
        "2 automatic answers to @trust.test in the last 24 hours",
        "4 automatic answers in all in the last hour",
    ] {
        assert!(
            notes.iter().any(|n| n.contains(&format!("was not sent an acknowledgement: rate limit: {why}"))),
            "no notification says {why}"
        );
    }
}

#[tokio::test]
async fn a_follow_up_from_a_stranger_is_named_flagged_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let users = app.stack.users(&[("requester", "icb.test"), ("stranger", "trust.test")]);
    let (requester, stranger) = (&users[0], &users[1]);
    app.stack.send(requester, &app.shared, "Phlebotomy pilot", "Could practices take part?").await;
    app.stack.wait_for_mail(requester, 1).await;
    let reference = app.store.list_requests(&Default::default()).await.unwrap()[0].reference.clone();
    app.cli_ok(&["triage", &reference, "more-work", "a costing per practice"]);
    app.stack.wait_for_mail(requester, 2).await;
    let before = app.stack.wait_for_mail(&app.gatekeeper, 2).await.len();

    // A stranger quotes the reference, with a file.
    let raw = format!(
        "From: Helpful Person <{stranger}>\r\nTo: {shared}\r\nSubject: Re: Phlebotomy pilot [{reference}]\r\nMessage-ID: <stranger.{n}@trust.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nHere is the costing; please open the attachment.\r\n--b\r\nContent-Type: application/pdf; name=costing.pdf\r\nContent-Disposition: attachment; filename=costing.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n",
        shared = app.shared,
        n = rand_suffix()
    );
    app.stack.send_raw(stranger, &[&app.shared], raw.as_bytes()).await;
    let note = app.stack.wait_for_mail(&app.gatekeeper, before + 1).await.pop().unwrap();
    let subject = header(&note, "Subject").unwrap();
    assert!(subject.contains("Not from the requester") && subject.contains(stranger.as_str()), "{subject}");
    let text = readable(&note);
    assert!(text.contains("NOT FROM THE REQUESTER"), "{text}");
    assert!(text.contains(&format!("Written by:    Helpful Person <{stranger}>")), "{text}");
    assert!(!text.contains("Content-Disposition: attachment"), "the stranger's file was attached");

    let r = app.cli_json(&["requests", "show", &reference, "--format", "json"]);
    assert_eq!(r["status"], "waiting_on_requester", "a stranger reopened the request");
    assert!(event_details(&r, "reopened").is_empty());
    let follow = event_details(&r, "follow_up");
    assert!(follow.iter().any(|d| d.contains("not the requester")), "{follow:?}");
    settle(&app).await;
    assert!(app.stack.mailbox(stranger).is_empty(), "the stranger was answered");
    assert_eq!(app.stack.mailbox(requester).len(), 2, "the requester was told of the stranger's mail");

    // The requester's own follow-up still reopens it, named as theirs.
    app.stack
        .send(requester, &app.shared, &format!("Re: Phlebotomy pilot [{reference}]"), "Costing attached.")
        .await;
    let note = app.stack.wait_for_mail(&app.gatekeeper, before + 2).await.pop().unwrap();
    assert!(!readable(&note).contains("NOT FROM THE REQUESTER"));
    wait_until("the requester's reply to reopen the request", || {
        let app = &app;
        let reference = reference.clone();
        async move {
            let r = app.cli_json(&["requests", "show", &reference, "--format", "json"]);
            (r["status"] == "awaiting_triage").then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_sender_address_the_mail_library_refuses_is_logged_not_answered() {
    let app = TestApp::spawn().await;
    let envelope = app.stack.user("envelope", "icb.test");
    // Read from the header without complaint, but over the 64 characters SMTP allows
    // before the @.
    let bad = format!("jo.bloggs.{}.{}@icb.test", rand_suffix(), "x".repeat(60));
    let raw = format!(
        "From: Jo Bloggs <{bad}>\r\nTo: {shared}\r\nSubject: Hard to answer\r\nMessage-ID: <unmailable.{n}@icb.test>\r\n\r\nPlease call me.\r\n",
        shared = app.shared,
        n = rand_suffix()
    );
    app.stack.send_raw(&envelope, &[&app.shared], raw.as_bytes()).await;
    let rows = app.wait_for_messages(1).await;
    assert_eq!(rows[0].classification, Some(gatehouse::domain::Classification::New), "{rows:?}");
    let note = readable(&app.stack.wait_for_mail(&app.gatekeeper, 1).await.remove(0));
    assert!(
        note.contains(&format!("NOTE: {bad} was not sent an acknowledgement: {bad} cannot be mailed")),
        "{note}"
    );
    let r = only_request(&app).await;
    assert_eq!(r["requester"], bad.as_str());
    let why = event_details(&r, "not_acknowledged");
    assert!(why.iter().any(|w| w.contains("cannot be mailed")), "{why:?}");
    settle(&app).await;
    assert!(app.stack.mailbox(&envelope).is_empty());
    let failed = app.store.outbox_counts().await.unwrap().failed;
    assert_eq!(failed, 0, "an email that could never be built was queued");
}
