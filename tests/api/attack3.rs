//! Attacks on what issues 16 and 18 added, end to end on the real stack and daemon: mail
//! that SQLite takes but PostgreSQL may refuse (NUL bytes, which a PostgreSQL TEXT cannot
//! hold, after any decoding; headers thousands of characters long; text that is not UTF-8
//! once decoded), a gatekeeper's reply carrying NULs; forwards claiming to be another door
//! to someone else's request; `circulate` from people who are not gatekeepers; hostile paper
//! attachments; hostile words for the channel's webhook. Run on both backends
//! (`GATEHOUSE_TEST_BACKEND=postgres`).

use gatehouse::domain::Classification;
use gatehouse::store::MessageRow;

use crate::helpers::{TestApp, header, on_postgres, rand_suffix, readable, wait_until};
use crate::triage::{Approach, approach, gmail_reply, send};

/// Builds one hostile approach from a sender, to the shared address, carrying a marker.
type Build = fn(&str, &str, &str) -> Vec<u8>;

/// The stored message from `sender`, once it has been processed (or set aside).
async fn processed_from(app: &TestApp, sender: &str) -> MessageRow {
    let store = app.store.clone();
    let sender = sender.to_string();
    wait_until(&format!("the message from {sender} to be processed"), || {
        let store = store.clone();
        let sender = sender.clone();
        async move {
            let rows = store.list_messages().await.ok()?;
            rows.into_iter()
                .find(|m| m.from.as_deref() == Some(sender.as_str()) && m.classification.is_some())
        }
    })
    .await
}

/// Asserts that the message from `sender` became a request, was acknowledged (to `sender`
/// only), and that its raw bytes are stored; returns the acknowledgement.
async fn logged_and_answered(app: &TestApp, sender: &str, marker: &str) -> Vec<u8> {
    let row = processed_from(app, sender).await;
    let raw = app.store.raw_message(row.id).await.unwrap();
    assert!(
        raw.windows(marker.len()).any(|w| w == marker.as_bytes()),
        "the raw bytes of {sender}'s message are not stored as they came"
    );
    assert_eq!(
        row.classification,
        Some(Classification::New),
        "{sender}'s message was not logged as a request: {:?}",
        row.detail
    );
    assert!(row.reference.is_some(), "no reference for {sender}'s message");
    let ack = app.stack.wait_for_mail(sender, 1).await.remove(0);
    assert_eq!(header(&ack, "X-Gatehouse").as_deref(), Some("acknowledgement"));
    ack
}

/// A multipart approach with NUL bytes wherever an encoding can put one: the display name
/// and subject (encoded words), the body (quoted-printable), attachment names (an encoded
/// word, an RFC 2231 parameter).
fn encoded_nuls(from: &str, to: &str, marker: &str) -> Vec<u8> {
    format!(
        "From: =?utf-8?q?Mal=00lory_Bloggs?= <{from}>\r\nTo: {to}\r\nSubject: =?utf-8?q?Funding=00bid_{marker}?=\r\n\
         Message-ID: <nul.{marker}@icb.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
         Could general practice help=00 with this?=00\r\n\
         --b\r\nContent-Type: application/pdf; name=\"=?utf-8?q?a=00b.pdf?=\"\r\n\
         Content-Disposition: attachment; filename*=utf-8''c%00d.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         JVBERi0xLjQK\r\n--b--\r\n"
    )
    .into_bytes()
}

/// NUL bytes as they are, undecoded: in the Message-ID, the subject, a References id and
/// the body. (Postfix cuts a header line at a NUL; the body's reaches the mailbox.)
fn raw_nuls(from: &str, to: &str, marker: &str) -> Vec<u8> {
    format!(
        "From: Raw Bloggs <{from}>\r\nTo: {to}\r\nSubject: Raw {marker}\0nul\r\n\
         Message-ID: <raw\0nul.{marker}@icb.test>\r\nReferences: <ref\0nul.{marker}@icb.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease\0help.\r\n"
    )
    .into_bytes()
}

/// Headers far past anything a person writes: a 20,000-character subject and display name,
/// 3,000 References and 2,000 recipients.
fn huge_headers(from: &str, to: &str, marker: &str) -> Vec<u8> {
    let references: Vec<String> = (0..3000).map(|i| format!("<r{i}.{marker}@icb.test>")).collect();
    let recipients: Vec<String> = (0..2000).map(|i| format!("person{i}@victims.test")).collect();
    format!(
        "From: \"{name}\" <{from}>\r\nTo: {to},\r\n {recipients}\r\nSubject: Long {marker} {subject}\r\n\
         Message-ID: <long.{marker}@icb.test>\r\nIn-Reply-To: {irt}\r\nReferences: {references}\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nA long one.\r\n",
        name = "N".repeat(20_000),
        recipients = recipients.join(",\r\n "),
        subject = "word ".repeat(4_000),
        irt = references[0],
        references = references.join("\r\n "),
    )
    .into_bytes()
}

/// Text that is not UTF-8 once decoded: an encoded word of bytes no UTF-8 has, a lone
/// surrogate in UTF-16 and in UTF-7, a body declared UTF-16 holding one, and attachment
/// names in an unknown charset and a broken one.
fn broken_charsets(from: &str, to: &str, marker: &str) -> Vec<u8> {
    format!(
        "From: =?utf-16be?b?2AAAQQ==?= <{from}>\r\nTo: {to}\r\nSubject: =?utf-8?b?//79?= {marker} =?utf-7?q?+2AA-?=\r\n\
         Message-ID: <charset.{marker}@icb.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-16be\r\nContent-Transfer-Encoding: base64\r\n\r\n2AAAQQBC\r\n\
         --b\r\nContent-Type: application/octet-stream; name=\"=?x-unknown?q?=FF=FE?=\"\r\n\
         Content-Disposition: attachment; filename*=iso-2022-jp''%1B%24B%FF%00\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         AAAA\r\n--b--\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn mail_postgres_cannot_hold_as_text_is_logged_answered_and_never_stops_the_daemon() {
    let app = TestApp::spawn().await;
    let senders = app.stack.users(&[
        ("nul", "icb.test"),
        ("raw", "icb.test"),
        ("long", "icb.test"),
        ("charset", "icb.test"),
    ]);
    let marker = rand_suffix();
    let builders: [Build; 4] = [encoded_nuls, raw_nuls, huge_headers, broken_charsets];
    for (sender, build) in senders.iter().zip(builders) {
        app.stack.send_raw(sender, &[&app.shared], &build(sender, &app.shared, &marker)).await;
    }
    // An ordinary approach after them is answered: nothing above stopped the daemon.
    let next = app.stack.user("after", "icb.test");
    app.stack.send(&next, &app.shared, "An ordinary approach", "Can we meet?").await;
    app.stack.wait_for_mail(&next, 1).await;

    for sender in &senders {
        let ack = logged_and_answered(&app, sender, &marker).await;
        assert!(!ack.contains(&0), "a NUL byte reached {sender}'s acknowledgement");
    }
    // Nobody named in the recipients or references was written to.
    let requests = app.store.list_requests(&Default::default()).await.unwrap();
    assert_eq!(requests.len(), senders.len() + 1, "one request per approach");
    let nul = requests.iter().find(|r| r.requester == senders[0]).unwrap();
    assert!(nul.body.contains("with this?"), "the body's words were lost: {:?}", nul.body);
    // SQLite keeps a NUL as it came; PostgreSQL's text cannot, and holds U+FFFD instead.
    if on_postgres() {
        assert!(nul.body.contains('\u{FFFD}') && !nul.body.contains('\0'), "{:?}", nul.body);
    }
    let told = app.stack.mailbox(&app.gatekeeper).iter().filter(|m| readable(m).contains(&marker)).count();
    assert!(told >= senders.len(), "the gatekeeper was not told of every approach");
}

/// A gatekeeper's reply, quoted-printable, whose commands carry `=00` (a NUL once decoded).
fn reply_with_nuls(app: &TestApp, a: &Approach, commands: &str) -> Vec<u8> {
    format!(
        "From: Jane Doe <{from}>\r\nTo: {to}\r\nSubject: Re: {subject}\r\nMessage-ID: <nulreply.{n}@nhs.test>\r\n\
         In-Reply-To: {nid}\r\nReferences: {nid}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{commands}\r\n",
        from = app.gatekeeper,
        to = a.reply_to,
        subject = a.subject,
        nid = a.notification_id,
        n = rand_suffix(),
        commands = commands.replace('\n', "\r\n"),
    )
    .into_bytes()
}

#[tokio::test]
async fn a_gatekeeper_s_reply_carrying_nul_bytes_decides_and_keeps_the_note_internal() {
    let app = TestApp::spawn().await;
    let a = approach(&app, "Winter pressures").await;
    let commands = "decline: Not=00 for us this year=00\nnote: internal=00 words about them";
    send(&app, &app.gatekeeper, &reply_with_nuls(&app, &a, commands)).await;
    let outcome = wait_until("the outcome", || async {
        app.stack
            .mailbox(&a.requester)
            .into_iter()
            .find(|m| header(m, "X-Gatehouse").as_deref() == Some("outcome"))
    })
    .await;
    let text = readable(&outcome);
    assert!(text.contains("for us this year"), "the decision's words are missing: {text}");
    assert!(
        !text.contains("internal") && !outcome.contains(&0),
        "the note or a NUL reached the requester: {text}"
    );
    let row = app.store.find_request(&a.reference).await.unwrap().unwrap();
    assert_eq!(row.decision.map(|d| d.to_string()).as_deref(), Some("decline"));
    let events = app.store.request_events(row.id).await.unwrap();
    assert!(
        events.iter().filter_map(|e| e.detail.as_deref()).any(|d| d.contains("about them")),
        "the note is not in the event log: {events:?}"
    );
    // The daemon goes on.
    let next = app.stack.user("after", "icb.test");
    app.stack.send(&next, &app.shared, "After the NUL reply", "Can we meet?").await;
    app.stack.wait_for_mail(&next, 1).await;
}

/// The requester's reply to `in_reply_to` with `text` and files named as given (raw
/// Content-Type/Content-Disposition parameter values).
fn reply_with_files(
    app: &TestApp,
    from: &str,
    a: &Approach,
    in_reply_to: &str,
    text: &str,
    names: &[&str],
) -> Vec<u8> {
    let mut raw = format!(
        "From: <{from}>\r\nTo: {shared}\r\nSubject: Re: Paper [{reference}]\r\nMessage-ID: <files.{n}@example.test>\r\n\
         In-Reply-To: {in_reply_to}\r\nReferences: {in_reply_to}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\n{text}\r\n",
        shared = app.shared,
        reference = a.reference,
        n = rand_suffix(),
    );
    for name in names {
        raw.push_str(&format!(
            "--b\r\nContent-Type: application/pdf; name={name}\r\nContent-Disposition: attachment; filename={name}\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJSBwYXBlcgo=\r\n"
        ));
    }
    raw.push_str("--b--\r\n");
    raw.into_bytes()
}

/// Attachment names in `mail`, as a mail client shows them.
fn attachment_names(mail: &[u8]) -> Vec<String> {
    use mail_parser::MimeHeaders as _;
    let parsed = mail_parser::MessageParser::default().parse(mail).unwrap();
    parsed.attachments().map(|p| p.attachment_name().unwrap_or("").to_string()).collect()
}

/// Characters that make a file name show something other than it is, or reach outside a
/// folder when saved.
fn hostile_name(name: &str) -> bool {
    name.contains(['/', '\\', '\0', '\u{202E}', '\u{202D}', '\u{2066}', '\u{200B}'])
        || name.chars().any(char::is_control)
}

#[tokio::test]
async fn circulate_from_anyone_but_a_keyed_gatekeeper_sends_nothing_and_hostile_paper_names_reach_no_one() {
    let app = TestApp::spawn().await;
    let a = approach(&app, "Paper wanted").await;
    send(&app, &app.gatekeeper, &gmail_reply(&app.gatekeeper, &a, "paper")).await;
    let outcome = wait_until("the outcome", || async {
        app.stack
            .mailbox(&a.requester)
            .into_iter()
            .find(|m| header(m, "X-Gatehouse").as_deref() == Some("outcome"))
    })
    .await;
    let outcome_id = header(&outcome, "Message-ID").unwrap();

    // The requester sends the paper under names built to deceive: a right-to-left override
    // ("report<RLO>fdp.exe" shows as "reportexe.pdf"), a path out of the folder it is saved
    // in, a NUL that cuts the name short in C, a zero-width space; and writes `circulate`.
    let names = [
        "\"=?utf-8?q?report=E2=80=AEfdp.exe?=\"",
        "\"../../../../etc/cron.d/evil\"",
        "\"=?utf-8?q?minutes.pdf=00.exe?=\"",
        "\"=?utf-8?q?=E2=80=8Binvoice=E2=81=A6.pdf?=\"",
    ];
    let raw = reply_with_files(&app, &a.requester, &a, &outcome_id, "circulate\r\ncirculate again", &names);
    send(&app, &a.requester, &raw).await;
    let notification = wait_until("the paper's notification", || async {
        app.stack.mailbox(&app.gatekeeper).into_iter().find(|m| readable(m).contains("THE PAPER HAS COME"))
    })
    .await;
    let shown = attachment_names(&notification);
    assert_eq!(shown.len(), names.len(), "every file reaches the gatekeeper: {shown:?}");
    assert!(!shown.iter().any(|n| hostile_name(n)), "a deceiving name reached the gatekeeper: {shown:?}");
    assert!(!readable(&notification).contains('\u{202E}'), "the override is in the notification's text");

    // A forged gatekeeper From without the reply key, quoting the reference: changes nothing.
    let forged = format!(
        "From: <{gk}>\r\nTo: {shared}\r\nSubject: Re: [{reference}] paper\r\nMessage-ID: <forged.{n}@nhs.test>\r\n\
         In-Reply-To: {outcome_id}\r\nContent-Type: text/plain\r\n\r\ncirculate again\r\n",
        gk = app.gatekeeper,
        shared = app.shared,
        reference = a.reference,
        n = rand_suffix(),
    );
    send(&app, &app.gatekeeper, forged.as_bytes()).await;
    let next = app.stack.user("after", "icb.test");
    app.stack.send(&next, &app.shared, "After the paper", "Can we meet?").await;
    app.stack.wait_for_mail(&next, 1).await;
    app.wait_for_outbox_drain().await;
    app.stack.wait_for_queue_empty().await;
    let circulated = |app: &TestApp| {
        app.stack
            .mailbox(&app.board)
            .into_iter()
            .filter(|m| header(m, "X-Gatehouse").as_deref() == Some("paper_circulation"))
            .collect::<Vec<_>>()
    };
    assert!(circulated(&app).is_empty(), "the requester's or a forged `circulate` reached the board");

    // The gatekeeper's own `circulate`: the board gets the files under names that show what
    // they are.
    let paper_note = Approach {
        requester: a.requester.clone(),
        reference: a.reference.clone(),
        reply_to: header(&notification, "Reply-To").unwrap().trim_matches(['<', '>']).to_string(),
        subject: header(&notification, "Subject").unwrap(),
        notification_id: header(&notification, "Message-ID").unwrap(),
        notification: notification.clone(),
    };
    send(&app, &app.gatekeeper, &gmail_reply(&app.gatekeeper, &paper_note, "circulate")).await;
    let board = wait_until("the paper at the board", || async { circulated(&app).into_iter().next() }).await;
    let shown = attachment_names(&board);
    assert_eq!(shown.len(), names.len(), "{shown:?}");
    assert!(!shown.iter().any(|n| hostile_name(n)), "a deceiving name reached the board: {shown:?}");
    assert!(!readable(&board).contains('\u{202E}'), "the override is in the board's text");
}

const DOOR_TEXT: &str = "Could practices in the south locality host a physiotherapy first-contact clinic on Tuesday mornings from January? We would fund the sessions and bring our own booking system.";

/// An Outlook inline forward by `from` of `original`'s email, with `extra` headers.
fn inline_door(from: &str, shared: &str, original: &str, subject: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: Practice Manager <{from}>\r\nTo: {shared}\r\n{extra}Subject: FW: {subject}\r\nMessage-ID: <door.{n}@practice.test>\r\n\
         Content-Type: text/plain; charset=UTF-8\r\n\r\nFor the leadership group.\r\n\r\n-----Original Message-----\r\n\
         From: Jo Original <{original}>\r\nSent: 20 November 2026 16:10\r\nTo: {from}\r\nSubject: {subject}\r\n\r\n{DOOR_TEXT}\r\n",
        n = rand_suffix(),
    )
    .into_bytes()
}

#[tokio::test]
async fn a_forged_door_joins_no_one_s_request_and_a_real_one_learns_no_internal_words() {
    let users = crate::helpers::stack().users(&[
        ("jo", "icb.test"),
        ("pm", "nhs.test"),
        ("pm", "example.org"),
        ("victim", "victims.test"),
    ]);
    let (jo, member, other_member, victim) = (&users[0], &users[1], &users[2], &users[3]);
    let mut app = TestApp::new(crate::helpers::Options {
        extra: format!(
            "[members]\naddresses = [\"{member}\", \"{other_member}\"]\n[triage]\nauthserv_id = \"mx.gatehouse.test\"\n"
        ),
        ..Default::default()
    })
    .await;
    app.start().await;
    let subject = "Physiotherapy first-contact clinic";
    app.stack.send(jo, &app.shared, subject, DOOR_TEXT).await;
    app.stack.wait_for_mail(jo, 1).await;
    let first = app.store.list_requests(&Default::default()).await.unwrap().remove(0);
    // The gatekeeper decides with an internal note and words for the requester only.
    app.cli_ok(&[
        "triage",
        &first.reference,
        "decline",
        "not this year",
        "--message",
        "Only-for-Jo words",
        "--note",
        "internal-note-words",
    ]);
    app.stack.wait_for_mail(jo, 2).await;

    // A forged member (the From only: the receiving server vouches for nothing), its
    // Reply-To and Cc naming a third party: it joins nothing, and the third party is not
    // written to.
    let extra = format!("Reply-To: {victim}\r\nCc: {victim}\r\n");
    app.stack
        .send_raw(other_member, &[&app.shared], &inline_door(other_member, &app.shared, jo, subject, &extra))
        .await;
    app.stack.wait_for_mail(other_member, 1).await;
    // Someone outside [members] with an Authentication-Results of their own writing.
    let stranger = app.stack.user("stranger", "council.test");
    let forged_auth = "Authentication-Results: mx.gatehouse.test; dkim=pass header.d=council.test; dmarc=pass header.from=council.test\r\n";
    let raw = [forged_auth.as_bytes(), &inline_door(&stranger, &app.shared, jo, subject, &extra)].concat();
    app.stack.send_raw(&stranger, &[&app.shared], &raw).await;
    app.stack.wait_for_mail(&stranger, 1).await;

    // A real member's forward, vouched for: another door of Jo's request (not of the two
    // unverified requests the forged copies made under Jo's name with the same text),
    // confirmed to the member in their own copy's words, never the gatekeeper's note or
    // words for Jo.
    let vouched = "Authentication-Results: mx.gatehouse.test; dkim=pass header.d=nhs.test; dmarc=pass header.from=nhs.test\r\n";
    let raw = [vouched.as_bytes(), &inline_door(member, &app.shared, jo, subject, "")].concat();
    app.stack.send_raw(member, &[&app.shared], &raw).await;
    let confirmation = app.stack.wait_for_mail(member, 1).await.remove(0);
    app.wait_for_outbox_drain().await;
    app.stack.wait_for_queue_empty().await;

    let text = readable(&confirmation);
    assert!(text.contains(&first.reference), "the door's confirmation names the request: {text}");
    for secret in ["internal-note-words", "Only-for-Jo", "not this year", &first.token] {
        assert!(!text.contains(secret), "{secret:?} reached the forwarder: {text}");
    }
    let events = app.store.request_events(first.id).await.unwrap();
    let doors: Vec<_> = events
        .iter()
        .filter(|e| e.kind == gatehouse::store::EventKind::AlsoReceived)
        .filter_map(|e| e.detail.clone())
        .collect();
    assert_eq!(doors, [format!("Also received via {member}")], "only the vouched member's door joined");
    assert!(app.stack.mailbox(victim).is_empty(), "a third party named in a forged door was written to");
    assert_eq!(app.stack.mailbox(jo).len(), 2, "Jo had more than the acknowledgement and the outcome");
}
