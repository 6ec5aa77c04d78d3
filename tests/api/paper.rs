//! The `paper` decision carried through on the real stack: the outcome asks for the paper by
//! a date, the requester's reply brings it to the gatekeeper with a `circulate` line, the
//! gatekeeper's `circulate` sends it to the board (the same bytes, the request's context, no
//! note), and the weekly summary counts papers circulated and awaited. A stranger's file on
//! the thread is never the paper.

use mail_parser::{MessageParser, MimeHeaders as _};

use crate::helpers::{TestApp, header, rand_suffix, readable, wait_until};
use crate::triage::{Approach, approach, gmail_reply, request, send, wait_for_class};

/// A reply to `in_reply_to` from `from` carrying `file` as `name` (a PDF).
fn reply_with_file(
    app: &TestApp,
    from: &str,
    reference: &str,
    in_reply_to: &str,
    name: &str,
    file: &[u8],
) -> Vec<u8> {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(file);
    format!(
        "From: <{from}>\r\nTo: {shared}\r\nSubject: Re: Paper please [{reference}]\r\nMessage-ID: <paper.{n}@example.test>\r\nIn-Reply-To: {in_reply_to}\r\nReferences: {in_reply_to}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nHere is the paper.\r\n--b\r\nContent-Type: application/pdf; name={name}\r\nContent-Disposition: attachment; filename={name}\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n--b--\r\n",
        shared = app.shared,
        n = rand_suffix(),
    )
    .into_bytes()
}

/// The gatekeeper's newest mail whose subject holds `words`, once it has come.
async fn gatekeeper_mail(app: &TestApp, words: &str) -> Vec<u8> {
    wait_until(&format!("the gatekeeper's mail about {words:?}"), || async {
        app.stack
            .mailbox(&app.gatekeeper)
            .into_iter()
            .rev()
            .find(|m| header(m, "Subject").is_some_and(|s| s.contains(words)))
    })
    .await
}

/// Decides `paper` on `a` by email and returns the requester's outcome.
async fn decide_paper(app: &TestApp, a: &Approach) -> Vec<u8> {
    send(app, &app.gatekeeper, &gmail_reply(&app.gatekeeper, a, "paper")).await;
    wait_until("the outcome", || async {
        app.stack
            .mailbox(&a.requester)
            .into_iter()
            .find(|m| header(m, "X-Gatehouse").as_deref() == Some("outcome"))
    })
    .await
}

#[tokio::test]
async fn a_paper_asked_for_comes_back_and_is_circulated_to_the_board() {
    let app = TestApp::spawn().await;
    let config = app.config();
    let a = approach(&app, "Paper please").await;

    // The outcome asks for the paper by the date the one rule gives.
    let outcome = decide_paper(&app, &a).await;
    let today = chrono::Utc::now().with_timezone(&config.service.timezone).date_naive();
    let due = gatehouse::triage::paper::paper_due(&config.meetings.dates, today).describe();
    let text = readable(&outcome).replace('\n', " ");
    assert!(text.contains(&format!("by {due}")), "the outcome does not ask by {due}: {text}");

    // A stranger on the thread sends a file first: it is not the paper.
    let stranger = format!("helper.{}@elsewhere.test", rand_suffix());
    let outcome_id = header(&outcome, "Message-ID").unwrap();
    let evil =
        reply_with_file(&app, &stranger, &a.reference, &outcome_id, "evil.pdf", b"%PDF-1.4 not the paper");
    app.stack.send_raw(&stranger, &[&app.shared], &evil).await;
    wait_for_class(&app, "follow_up", 1).await;

    // The requester replies to the outcome with the PDF.
    let pdf: Vec<u8> =
        b"%PDF-1.4\n".iter().copied().chain((0..4000u32).map(|i| (i * 7 % 251) as u8)).collect();
    let raw = reply_with_file(&app, &a.requester, &a.reference, &outcome_id, "costing paper.pdf", &pdf);
    app.stack.send_raw(&a.requester, &[&app.shared], &raw).await;
    let notification = wait_until("the paper's notification", || async {
        app.stack.mailbox(&app.gatekeeper).into_iter().find(|m| readable(m).contains("THE PAPER HAS COME"))
    })
    .await;
    let parsed = MessageParser::default().parse(&notification).unwrap();
    let files: Vec<_> = parsed
        .attachments()
        .map(|p| (p.attachment_name().unwrap_or("").to_string(), p.contents().to_vec()))
        .collect();
    assert_eq!(files, [("costing paper.pdf".to_string(), pdf.clone())], "the notification carries the paper");
    assert!(readable(&notification).contains("reply with one line: circulate"));

    // The gatekeeper replies `circulate`, with words for the board and an internal note.
    let paper_note = Approach {
        requester: a.requester.clone(),
        reference: a.reference.clone(),
        reply_to: header(&notification, "Reply-To").unwrap().trim_matches(['<', '>']).to_string(),
        subject: header(&notification, "Subject").unwrap(),
        notification_id: header(&notification, "Message-ID").unwrap(),
        notification: notification.clone(),
    };
    let commands =
        "circulate\nFor Thursday, please read before the meeting.\nnote: chased them twice by phone";
    send(&app, &app.gatekeeper, &gmail_reply(&app.gatekeeper, &paper_note, commands)).await;
    let board = wait_until("the paper at the board", || async {
        app.stack
            .mailbox(&app.board)
            .into_iter()
            .find(|m| header(m, "X-Gatehouse").as_deref() == Some("paper_circulation"))
    })
    .await;
    let parsed = MessageParser::default().parse(&board).unwrap();
    let files: Vec<_> = parsed
        .attachments()
        .map(|p| (p.attachment_name().unwrap_or("").to_string(), p.contents().to_vec()))
        .collect();
    assert_eq!(
        files,
        [("costing paper.pdf".to_string(), pdf.clone())],
        "the board has the same bytes, and only them"
    );
    let body = parsed.body_text(0).unwrap().to_string();
    for want in
        [a.reference.as_str(), "Paper please", "Anytown ICB", "For Thursday, please read before the meeting."]
    {
        assert!(body.contains(want), "{want:?} missing from the board's email: {body}");
    }
    let whole = readable(&board);
    assert!(!whole.contains("chased them twice"), "a gatekeeper's note reached the board: {whole}");
    assert!(!whole.contains("evil.pdf"), "the stranger's file reached the board");
    let token = a.reply_to.split('+').nth(1).unwrap().split('@').next().unwrap();
    assert!(!whole.contains(token), "the reply key reached the board");
    let confirmation = gatekeeper_mail(&app, "paper circulated to the board").await;
    assert!(readable(&confirmation).contains("costing paper.pdf"));

    // Circulating again without `again` sends nothing and says why.
    send(&app, &app.gatekeeper, &gmail_reply(&app.gatekeeper, &paper_note, "circulate")).await;
    let refused = gatekeeper_mail(&app, "Not acted on").await;
    assert!(readable(&refused).contains("already went to the board"), "{}", readable(&refused));

    // Another request decided `paper` with nothing received: awaited; `circulate` on it
    // sends nothing and says so.
    let b = approach(&app, "Second paper").await;
    decide_paper(&app, &b).await;
    wait_until("the second decision", || async {
        (request(&app, &b.reference).await["decision"] == "paper").then_some(())
    })
    .await;
    send(&app, &app.gatekeeper, &gmail_reply(&app.gatekeeper, &b, "circulate")).await;
    wait_until("the refusal for the second request", || async {
        app.stack.mailbox(&app.gatekeeper).into_iter().find(|m| {
            header(m, "Subject").is_some_and(|s| s.contains(&b.reference) && s.contains("Not acted on"))
                && readable(m).contains("no paper has come")
        })
    })
    .await;

    let preview = String::from_utf8_lossy(&app.cli_ok(&["summary", "preview"]).stdout).to_string();
    assert!(
        preview
            .contains("Papers circulated to the board this week: 1; papers still awaited from requesters: 1"),
        "{preview}"
    );
    app.wait_for_outbox_drain().await;
    app.stack.wait_for_queue_empty().await;
    let circulations = app
        .stack
        .mailbox(&app.board)
        .iter()
        .filter(|m| header(m, "X-Gatehouse").as_deref() == Some("paper_circulation"))
        .count();
    assert_eq!(circulations, 1, "the paper went to the board exactly once");
    assert!(app.stack.mailbox(&stranger).is_empty(), "the stranger was written to");
}
