//! The mail a spammer, a careless client in another language or a broken server sends,
//! pushed through the whole pipeline on the real stack. Each test is an attack that was
//! tried: what it asserts is what must (and must not) arrive where.

use crate::helpers::{TestApp, readable};
use crate::triage::{
    Approach, approach, escaped_notification, quoted_notification, request, send, token, wait_for_class,
};

/// A reply as Outlook desktop (Word's editor) writes it: HTML only, each line a
/// `MsoNormal` paragraph, a bulleted list as `MsoListParagraph` paragraphs whose bullet is a
/// Symbol-font `·` (then `o`, then Wingdings `§` for deeper levels) hidden from Outlook by
/// `mso-list:Ignore`, and the quoted notification below a header box drawn with a top border.
fn outlook_desktop_reply(from: &str, a: &Approach, lines: &[&str], bullets: &[(&str, &str)]) -> Vec<u8> {
    let paragraphs: String =
        lines.iter().map(|l| format!("<p class=MsoNormal>{l}<o:p></o:p></p>\r\n")).collect();
    let list: String = bullets
        .iter()
        .map(|(bullet, text)| {
            format!(
                "<p class=MsoListParagraph style='text-indent:-18.0pt;mso-list:l0 level1 lfo1'><![if !supportLists]><span style='font-family:Symbol'><span style='mso-list:Ignore'>{bullet}<span style='font:7.0pt \"Times New Roman\"'>&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp; </span></span></span><![endif]>{text}<o:p></o:p></p>\r\n"
            )
        })
        .collect();
    let original = escaped_notification(a, "<br>\r\n");
    format!(
        "From: \"Doe, Jane\" <{from}>\r\nTo: \"GP Access\" <{to}>\r\nSubject: RE: {subject}\r\nThread-Topic: {subject}\r\nMessage-ID: <000001db{n}$AB12CD34@nhs.test>\r\nIn-Reply-To: {nid}\r\nReferences: {nid}\r\nX-Mailer: Microsoft Outlook 16.0\r\nContent-Language: en-gb\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=\"utf-8\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<html xmlns:o=\"urn:schemas-microsoft-com:office:office\"><head><style><!-- p.MsoListParagraph {{margin-left:36.0pt}} --></style></head><body lang=EN-GB><div class=WordSection1>\r\n{paragraphs}{list}<p class=MsoNormal>Kind regards, Jane<o:p></o:p></p>\r\n<div style='border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm'><p class=MsoNormal><b>From:</b> GP Access &lt;{to}&gt; <br><b>Sent:</b> 23 November 2026 10:02<br><b>To:</b> Doe, Jane &lt;{from}&gt;<br><b>Subject:</b> {subject}<o:p></o:p></p></div>\r\n<p class=MsoNormal>{original}</p></div></body></html>\r\n",
        to = a.reply_to,
        subject = a.subject,
        nid = a.notification_id,
        n = crate::helpers::rand_suffix(),
    )
    .into_bytes()
}

/// A plain-text reply, "> " quoting below an "On … wrote:" line.
fn plain_reply(from: &str, a: &Approach, commands: &str) -> Vec<u8> {
    let quoted = quoted_notification(a);
    format!(
        "From: Jeanne Martin <{from}>\r\nTo: {to}\r\nSubject: Re: {subject}\r\nMessage-ID: <{n}@nhs.test>\r\nIn-Reply-To: {nid}\r\nReferences: {nid}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{commands}\r\n\r\nLe lun. 23 nov. 2026 à 10:02, GP Access <{to}> a écrit :\r\n{quoted}",
        to = a.reply_to,
        subject = a.subject,
        nid = a.notification_id,
        n = crate::helpers::rand_suffix(),
        commands = commands.replace('\n', "\r\n"),
    )
    .into_bytes()
}

fn notes_of(r: &serde_json::Value) -> Vec<String> {
    r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "note")
        .map(|e| e["detail"].as_str().unwrap().to_string())
        .collect()
}

/// Attack: a gatekeeper writes the internal note as an item of a bulleted list in Outlook,
/// or with the narrow no-break space French typography puts before a colon, or in bold as
/// plain text writes it. Each used to be text for the requester, so the note went out with
/// the outcome.
#[tokio::test]
async fn notes_in_outlook_lists_and_french_spacing_never_reach_the_requester() {
    let app = TestApp::spawn().await;
    let gk = app.gatekeeper.clone();

    let a = approach(&app, "Bulleted notes from Outlook").await;
    let raw = outlook_desktop_reply(
        &gk,
        &a,
        &["decline: this is hospital work", "Sorry, this belongs to the trust."],
        &[("\u{b7}", "Note: told the LMC chair"), ("o", "priority shift")],
    );
    send(&app, &gk, &raw).await;
    wait_for_class(&app, "triage", 1).await;
    let outcome = readable(&app.stack.wait_for_mail(&a.requester, 2).await.pop().unwrap());
    assert!(outcome.contains("Sorry, this belongs to the trust."), "{outcome}");
    assert!(outcome.contains("Kind regards, Jane"), "{outcome}");
    assert!(!outcome.contains("LMC chair"), "the bulleted note reached the requester:\n{outcome}");
    assert!(!outcome.contains("priority"), "{outcome}");
    let r = request(&app, &a.reference).await;
    assert_eq!(notes_of(&r), ["told the LMC chair"]);
    assert_eq!(r["priorities"], serde_json::json!(["shift"]));

    let b = approach(&app, "Notes written the French way").await;
    let raw = plain_reply(
        &gk,
        &b,
        "redirect : the community trust\nThey run this service.\nNote\u{202f}: their lead is on leave\n*Note*: ask Sam\nJeanne",
    );
    send(&app, &gk, &raw).await;
    wait_for_class(&app, "triage", 2).await;
    let outcome = readable(&app.stack.wait_for_mail(&b.requester, 2).await.pop().unwrap());
    assert!(outcome.contains("They run this service."), "{outcome}");
    for internal in ["on leave", "ask Sam", &token(&b)] {
        assert!(!outcome.contains(internal), "{internal:?} reached the requester:\n{outcome}");
    }
    assert_eq!(notes_of(&request(&app, &b.reference).await), ["their lead is on leave", "ask Sam"]);
}

/// The subjects of what reached the gatekeeper, once `n` emails have.
async fn gatekeeper_subjects(app: &TestApp, n: usize) -> Vec<String> {
    app.stack
        .wait_for_mail(&app.gatekeeper, n)
        .await
        .iter()
        .map(|m| crate::helpers::header(m, "Subject").unwrap_or_default())
        .collect()
}

/// Attack (a broken server or web form): a From written as an RFC 2047 encoded word, which
/// no address may be, and a message with no From at all. Both used to be logged as
/// unparseable and shown to nobody: an approach given up unseen. The gatekeepers are told
/// now, and still nobody outside is written to.
#[tokio::test]
async fn a_message_without_a_usable_from_is_shown_to_the_gatekeepers_and_answered_to_nobody() {
    let app = TestApp::spawn().await;
    let users = app.stack.users(&[("jo", "icb.test"), ("webform", "icb.test")]);
    let (jo, form) = (&users[0], &users[1]);
    let encoded = jo.replace('@', "=40");
    let n = crate::helpers::rand_suffix();
    let raws = [
        format!(
            "From: =?utf-8?q?{encoded}?=\r\nTo: {shared}\r\nSubject: Web form enquiry\r\nMessage-ID: <form.{n}@icb.test>\r\nContent-Type: text/plain\r\n\r\nCan the practices host the vaccine clinic?\r\n",
            shared = app.shared
        ),
        format!(
            "To: {shared}\r\nSubject: Enquiry without a sender\r\nMessage-ID: <nofrom.{n}@icb.test>\r\nContent-Type: text/plain\r\n\r\nPlease call me back.\r\n",
            shared = app.shared
        ),
    ];
    app.stack.send_raw(form, &[&app.shared], raws[0].as_bytes()).await;
    // Straight into the mailbox: Postfix would write a From from the envelope.
    app.stack.deliver(form, &app.shared, raws[1].as_bytes());
    let subjects = gatekeeper_subjects(&app, 2).await;
    for wanted in ["Web form enquiry", "Enquiry without a sender"] {
        assert!(
            subjects.iter().any(|s| s.contains("could not be logged") && s.contains(wanted)),
            "{wanted}: {subjects:?}"
        );
    }
    let rows = app.wait_for_messages(2).await;
    for row in &rows {
        assert_eq!(row.classification, Some(gatehouse::domain::Classification::Unparseable), "{row:?}");
        assert_eq!(row.detail.as_deref(), Some("no usable From address"), "{row:?}");
    }
    app.wait_for_outbox_drain().await;
    app.stack.wait_for_queue_empty().await;
    assert!(app.stack.mailbox(jo).is_empty(), "the address in the encoded word was written to");
    assert!(app.stack.mailbox(form).is_empty(), "the envelope sender was written to");
}

/// Attack (a spammer): every header and place other than From that names someone —
/// Reply-To, Sender, Resent-From, the envelope sender (Return-Path), a display name that is
/// an address, an address in the body, an attached message/rfc822 "forward" from a
/// non-member, and a follow-up quoting a reference from a stranger. gatehouse answers the
/// sender as received and nobody else.
#[tokio::test]
async fn addresses_named_anywhere_but_from_are_never_written_to() {
    let app = TestApp::spawn().await;
    let wanted: Vec<(String, String)> =
        (0..8).map(|i| (format!("named{i}"), "trust.test".to_string())).collect();
    let wanted: Vec<(&str, &str)> = wanted.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let named = app.stack.users(&wanted);
    let users = app.stack.users(&[("spammer", "example.org"), ("stranger", "example.com")]);
    let (spammer, stranger) = (&users[0], &users[1]);
    let n = crate::helpers::rand_suffix();
    let headers = format!(
        "From: \"{n0}\" <{spammer}>\r\nReply-To: {n1}\r\nSender: {n2}\r\nResent-From: {n3}\r\nResent-To: {shared}\r\nTo: {shared}\r\nCc: {n6}\r\n",
        n0 = named[0],
        n1 = named[1],
        n2 = named[2],
        n3 = named[3],
        n6 = named[6],
        shared = app.shared
    );
    let raw = format!(
        "{headers}Subject: Your account\r\nMessage-ID: <hdr.{n}@spam.test>\r\nContent-Type: text/plain\r\n\r\nPlease reply to {n4} or write to <mailto:{n4}>.\r\n",
        n4 = named[4]
    );
    // The envelope sender is another named address: it becomes the Return-Path.
    app.stack.send_raw(&named[5], &[&app.shared], raw.as_bytes()).await;
    // A "forward" as an attached message, from someone who is not a member.
    let inner = format!(
        "From: Security Team <{}>\r\nTo: everyone@trust.test\r\nSubject: Password expiry\r\nMessage-ID: <inner.{n}@trust.test>\r\n\r\nSign in at the link below.\r\n",
        named[7]
    );
    let raw = format!(
        "From: {spammer}\r\nTo: {shared}\r\nSubject: FW: Password expiry\r\nMessage-ID: <att.{n}@spam.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--b--\r\n",
        shared = app.shared
    );
    app.stack.send_raw(spammer, &[&app.shared], raw.as_bytes()).await;
    let subjects = gatekeeper_subjects(&app, 2).await;
    let reference = app
        .store
        .list_requests(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.subject == "Your account")
        .unwrap_or_else(|| panic!("{subjects:?}"))
        .reference;
    // A stranger quoting the reference, with a file: a follow-up that changes nothing.
    let raw = format!(
        "From: {stranger}\r\nReply-To: {n1}\r\nTo: {shared}\r\nSubject: Re: Your account [{reference}]\r\nMessage-ID: <fu.{n}@elsewhere.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nMore about this.\r\n--b\r\nContent-Type: application/pdf; name=invoice.pdf\r\nContent-Disposition: attachment; filename=invoice.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n",
        n1 = named[1],
        shared = app.shared
    );
    app.stack.send_raw(stranger, &[&app.shared], raw.as_bytes()).await;
    let mail = app.stack.wait_for_mail(&app.gatekeeper, 3).await;
    let follow_up = readable(mail.last().unwrap());
    assert!(follow_up.contains("NOT FROM THE REQUESTER"), "{follow_up}");
    assert!(!follow_up.contains("JVBERi0xLjQK"), "a stranger's file went to the gatekeepers: {follow_up}");

    app.wait_for_outbox_drain().await;
    app.stack.wait_for_queue_empty().await;
    for address in &named {
        assert!(app.stack.mailbox(address).is_empty(), "{address} was written to");
    }
    assert!(app.stack.mailbox(stranger).is_empty(), "the stranger's follow-up was answered");
    // The spammer's own two messages: an acknowledgement and a forward confirmation.
    assert_eq!(app.stack.mailbox(spammer).len(), 2);
}

/// Attack (a spammer getting a forged sender past the receiving server's DMARC check, as in
/// "Composition Kills"): a From naming two mailboxes, two From headers, a group as From, and
/// a member's address listed first beside the spammer's on an inline forward naming a
/// victim. gatehouse used to answer the first mailbox (and trust the "member"'s forward);
/// now the approach is logged, the gatekeepers told why, and nobody is answered.
#[tokio::test]
async fn a_from_naming_several_senders_is_answered_to_nobody() {
    let users = crate::helpers::stack().users(&[
        ("victim0", "trust.test"),
        ("victim1", "trust.test"),
        ("victim2", "trust.test"),
        ("victim3", "trust.test"),
        ("member", "nhs.test"),
        ("spammer", "example.org"),
    ]);
    let (victims, member, spammer) = (&users[..4], &users[4], &users[5]);
    let mut app = TestApp::new(crate::helpers::Options {
        extra: format!("[members]\naddresses = [\"{member}\"]\n"),
        ..crate::helpers::Options::default()
    })
    .await;
    app.start().await;
    let n = crate::helpers::rand_suffix();
    let froms = [
        format!("From: {}, {spammer}\r\n", victims[0]),
        format!("From: {}\r\nFrom: {spammer}\r\n", victims[1]),
        format!("From: Accounts: {};\r\n", victims[2]),
        format!("From: {member}, {spammer}\r\n"),
    ];
    for (i, from) in froms.iter().enumerate() {
        let raw = format!(
            "{from}To: {shared}\r\nSubject: Fwd: Account notice {i}\r\nMessage-ID: <multi{i}.{n}@example.org>\r\nContent-Type: text/plain\r\n\r\nPassing this on.\r\n\r\n---------- Forwarded message ---------\r\nFrom: IT Service Desk <{victim}>\r\nDate: Fri, 20 Nov 2026 at 16:10\r\nSubject: Account notice {i}\r\nTo: {shared}\r\n\r\nSign in at the link below.\r\n",
            shared = app.shared,
            victim = victims[3],
        );
        app.stack.send_raw(spammer, &[&app.shared], raw.as_bytes()).await;
    }
    let notes: Vec<String> =
        app.stack.wait_for_mail(&app.gatekeeper, 4).await.iter().map(|m| readable(m)).collect();
    for note in &notes {
        assert!(note.contains("Not answered:") && note.contains("nobody was answered"), "{note}");
    }
    app.wait_for_outbox_drain().await;
    app.stack.wait_for_queue_empty().await;
    for address in victims.iter().chain([member, spammer]) {
        assert!(app.stack.mailbox(address).is_empty(), "{address} was written to");
    }
    assert_eq!(app.store.list_requests(&Default::default()).await.unwrap().len(), 4);
}
