//! The gatekeeper decides by replying, as Outlook, Gmail and Thunderbird build replies; only
//! a configured gatekeeper carrying the request's token can, and anything else changes
//! nothing and says why.

use std::sync::Arc;

use chrono::TimeZone as _;
use gatehouse::clock::ManualClock;
use gatehouse::domain::Status;
use serde_json::Value;

use crate::helpers::{Options, TestApp, header, rand_suffix, readable, wait_until};

/// An approach, its notification and the facts a reply needs.
pub(crate) struct Approach {
    pub(crate) requester: String,
    pub(crate) reference: String,
    pub(crate) notification: Vec<u8>,
    pub(crate) reply_to: String,
    pub(crate) subject: String,
    pub(crate) notification_id: String,
}

pub(crate) async fn approach(app: &TestApp, subject: &str) -> Approach {
    approach_from(app, "icb.test", subject).await
}

async fn approach_from(app: &TestApp, domain: &str, subject: &str) -> Approach {
    let requester = app.stack.user("partner", domain);
    let before = app.stack.mailbox(&app.gatekeeper).len();
    app.stack.send(&requester, &app.shared, subject, "Could general practice help with this, please?").await;
    // This approach's notification, not a confirmation of an earlier decision still on its
    // way to the same mailbox.
    let notification = wait_until("the approach's notification", || async {
        app.stack.mailbox(&app.gatekeeper).into_iter().skip(before).find(|m| {
            header(m, "Reply-To").is_some_and(|r| r.contains('+'))
                && header(m, "Subject").is_some_and(|s| s.contains(subject))
        })
    })
    .await;
    let reference = app
        .store
        .list_requests(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.requester == requester)
        .unwrap()
        .reference;
    Approach {
        requester,
        reference,
        reply_to: header(&notification, "Reply-To").unwrap().trim_matches(['<', '>']).to_string(),
        subject: header(&notification, "Subject").unwrap(),
        notification_id: header(&notification, "Message-ID").unwrap(),
        notification,
    }
}

/// The notification's text as a plain-text client quotes it: "> " before each line.
pub(crate) fn quoted_notification(a: &Approach) -> String {
    notification_text(&a.notification).lines().map(|l| format!("> {l}\r\n")).collect()
}

/// The notification's text as an HTML client quotes it: escaped, each line ending in `br`.
pub(crate) fn escaped_notification(a: &Approach, br: &str) -> String {
    notification_text(&a.notification).replace('&', "&amp;").replace('<', "&lt;").replace('\n', br)
}

pub(crate) fn notification_text(n: &[u8]) -> String {
    // The plain part, as clients quote it.
    // Maildir keeps LF line ends; the part is quoted-printable.
    let text = String::from_utf8_lossy(n).replace("\r\n", "\n");
    let start = text.find("Content-Type: text/plain").unwrap();
    let body = &text[start..];
    let body = &body[body.find("\n\n").unwrap() + 2..];
    let body = body.split("\n--").next().unwrap();
    decode_qp(body)
}

/// Quoted-printable undone (soft breaks joined, `=XX` decoded).
pub(crate) fn decode_qp(s: &str) -> String {
    let s = s.replace("=\n", "");
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A reply as Gmail writes it: plain text, commands on top, the notification quoted.
pub(crate) fn gmail_reply(from: &str, a: &Approach, commands: &str) -> Vec<u8> {
    let quoted = quoted_notification(a);
    format!(
        "From: Jane Doe <{from}>\r\nTo: {to}\r\nSubject: Re: {subject}\r\nMessage-ID: <CAgmail{n}@mail.gmail.com>\r\nIn-Reply-To: {nid}\r\nReferences: {nid}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n{commands}\r\n\r\nOn Mon, 23 Nov 2026 at 10:02, Test GP Single Point of Access <{to}> wrote:\r\n{quoted}",
        to = a.reply_to,
        subject = a.subject,
        nid = a.notification_id,
        n = rand_suffix(),
        commands = commands.replace('\n', "\r\n"),
    )
    .into_bytes()
}

/// A reply as Outlook writes it: HTML only, top-posted, the original below a From/Sent block.
fn outlook_reply(from: &str, a: &Approach, commands: &str) -> Vec<u8> {
    let lines: String =
        commands.lines().map(|l| format!("<div class=\"elementToProof\">{l}</div>")).collect();
    let original = escaped_notification(a, "<br>");
    format!(
        "From: \"Doe Jane (NHS ENGLAND)\" <{from}>\r\nTo: \"GP Access\" <{to}>\r\nSubject: RE: {subject}\r\nThread-Topic: {subject}\r\nMessage-ID: <AM0PR01MB{n}@AM0PR01MB.eurprd01.prod.exchangelabs.com>\r\nIn-Reply-To: {nid}\r\nReferences: {nid}\r\nContent-Language: en-GB\r\nX-MS-Has-Attach:\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=\"us-ascii\"\r\n\r\n<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=us-ascii\"></head><body><div dir=\"ltr\">{lines}<div><br></div></div><hr style=\"display:inline-block;width:98%\" tabindex=\"-1\"><div id=\"divRplyFwdMsg\" dir=\"ltr\"><font face=\"Calibri, sans-serif\" style=\"font-size:11pt\" color=\"#000000\"><b>From:</b> Test GP Single Point of Access &lt;{to}&gt;<br><b>Sent:</b> 23 November 2026 10:02<br><b>To:</b> Doe Jane &lt;{from}&gt;<br><b>Subject:</b> {subject}</font><div>&nbsp;</div></div><div>{original}</div></body></html>\r\n",
        to = a.reply_to,
        subject = a.subject,
        nid = a.notification_id,
        n = rand_suffix(),
    )
    .into_bytes()
}

/// A reply as Thunderbird writes it: plain, "On … wrote:" then "> " quoting.
pub(crate) fn thunderbird_reply(from: &str, a: &Approach, commands: &str) -> Vec<u8> {
    let quoted = quoted_notification(a);
    format!(
        "From: Jane Doe <{from}>\r\nTo: Test GP Single Point of Access <{to}>\r\nSubject: Re: {subject}\r\nMessage-ID: <{n}@nhs.test>\r\nIn-Reply-To: {nid}\r\nReferences: {nid}\r\nUser-Agent: Mozilla Thunderbird\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\n\r\n{commands}\r\n\r\nOn 23/11/2026 10:02, Test GP Single Point of Access wrote:\r\n{quoted}",
        to = a.reply_to,
        subject = a.subject,
        nid = a.notification_id,
        n = rand_suffix(),
        commands = commands.replace('\n', "\r\n"),
    )
    .into_bytes()
}

pub(crate) async fn send(app: &TestApp, from: &str, raw: &[u8]) {
    app.stack.send_raw(from, &[&app.shared], raw).await;
}

pub(crate) async fn request(app: &TestApp, reference: &str) -> Value {
    app.cli_json(&["requests", "show", reference, "--format", "json"])
}

/// Waits until the message with this classification count appears.
pub(crate) async fn wait_for_class(app: &TestApp, class: &str, n: usize) {
    let store = app.store.clone();
    let class = class.to_string();
    wait_until(&format!("{n} {class} message(s)"), || {
        let store = store.clone();
        let class = class.clone();
        async move {
            let rows = store.list_messages().await.ok()?;
            (rows.iter().filter(|m| m.classification.map(|c| c.as_str()) == Some(class.as_str())).count()
                >= n)
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn each_decision_by_reply_from_each_client() {
    let app = TestApp::spawn().await;
    let earlier = approach(&app, "Diabetes checks in pharmacies").await;
    let cases: Vec<(&str, &str, &str, &str, &str)> = vec![
        // (client, commands, status, decision, expected outcome phrase)
        (
            "outlook",
            "paper\npriority workforce\nnote: check with the LMC\nThanks - a two-page paper please.",
            "scheduled",
            "paper",
            "paper should go round the board",
        ),
        (
            "gmail",
            "decline: this is hospital work\nSorry we cannot help.",
            "closed",
            "decline",
            "this is hospital work",
        ),
        ("thunderbird", "meeting", "scheduled", "meeting", "Thursday 3 December 2099"),
        ("gmail", "/message", "scheduled", "message", "messaging channel"),
        (
            "outlook",
            "more-work: costings per practice",
            "waiting_on_requester",
            "more_work",
            "costings per practice",
        ),
        ("thunderbird", "#redirect: the community trust", "closed", "redirect", "the community trust"),
        (
            "gmail",
            &*Box::leak(format!("duplicate {}", earlier.reference).into_boxed_str()),
            "closed",
            "duplicate",
            &*Box::leak(earlier.reference.clone().into_boxed_str()),
        ),
    ];
    let mut triaged = 0;
    for (client, commands, status, decision, phrase) in cases {
        let a = approach(&app, &format!("Approach decided by {client}: {decision}")).await;
        let confirmations = app.stack.mailbox(&app.gatekeeper).len();
        let raw = match client {
            "outlook" => outlook_reply(&app.gatekeeper, &a, commands),
            "gmail" => gmail_reply(&app.gatekeeper, &a, commands),
            _ => thunderbird_reply(&app.gatekeeper, &a, commands),
        };
        send(&app, &app.gatekeeper, &raw).await;
        triaged += 1;
        wait_for_class(&app, "triage", triaged).await;
        let r = request(&app, &a.reference).await;
        assert_eq!(r["status"], status, "{client} {commands}: {r:#}");
        assert_eq!(r["decision"], decision, "{client} {commands}");
        assert!(r["decided_at"].is_string());
        let events: Vec<_> = r["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["kind"].as_str().unwrap().to_string(), e["actor"].as_str().unwrap().to_string()))
            .collect();
        assert!(events.contains(&("decision".to_string(), app.gatekeeper.clone())), "{events:?}");
        // The requester hears the outcome, threaded on their request.
        let outcome = app.stack.wait_for_mail(&a.requester, 2).await.pop().unwrap();
        assert_eq!(
            header(&outcome, "Subject").unwrap(),
            format!("Re: Approach decided by {client}: {decision} [{}]", a.reference)
        );
        assert_eq!(header(&outcome, "Auto-Submitted").unwrap(), "auto-replied");
        let body = crate::helpers::readable(&outcome);
        assert!(body.contains(phrase), "{client}: outcome lacks {phrase:?}:\n{body}");
        assert!(!body.contains("check with the LMC"), "an internal note reached the requester");
        // The gatekeeper gets a one-line confirmation.
        let confirmation = app.stack.wait_for_mail(&app.gatekeeper, confirmations + 1).await.pop().unwrap();
        assert!(header(&confirmation, "Subject").unwrap().contains(&a.reference));
        if decision == "paper" {
            assert_eq!(r["priorities"], serde_json::json!(["workforce"]));
            assert!(body.contains("a two-page paper please"), "the gatekeeper's words are missing");
        }
        if decision == "meeting" {
            assert_eq!(r["meeting_date"], "2099-12-03");
        }
        if decision == "duplicate" {
            assert_eq!(r["duplicate_of"], earlier.reference.as_str());
        }
    }
}

/// Builds one refused attempt; returns the raw reply and who sent it.
async fn assert_refused(app: &TestApp, a: &Approach, from: &str, raw: Vec<u8>, why: &str, error_to: &str) {
    let errors_before = app.stack.mailbox(error_to).len();
    let rejected_before = app
        .store
        .list_messages()
        .await
        .unwrap()
        .iter()
        .filter(|m| m.classification == Some(gatehouse::domain::Classification::Rejected))
        .count();
    send(app, from, &raw).await;
    wait_for_class(app, "rejected", rejected_before + 1).await;
    let r = request(app, &a.reference).await;
    assert_eq!(r["status"], "awaiting_triage", "{why}: {r:#}");
    assert_eq!(r["decision"], Value::Null, "{why}");
    let error = app.stack.wait_for_mail(error_to, errors_before + 1).await.pop().unwrap();
    let text = crate::helpers::readable(&error);
    assert!(text.contains(why), "{why:?} not in the error:\n{text}");
    assert!(text.contains("more-work: WHAT"), "the error does not show the commands");
    assert_eq!(app.stack.mailbox(&a.requester).len(), 1, "the requester was told something");
}

#[tokio::test]
async fn replies_that_may_not_decide_change_nothing_and_say_why() {
    let app = TestApp::new(Options {
        extra: "[triage]\nauthserv_id = \"mx.gatehouse.test\"\n".into(),
        ..Options::default()
    })
    .await;
    let mut app = app;
    app.start().await;
    let a = approach(&app, "Refusals").await;
    let other = approach(&app, "Another request").await;
    let gk = app.gatekeeper.clone();

    // A forged From with no token (plain address, the footer stripped).
    let mut forged = gmail_reply(&gk, &a, "decline: forged");
    let text = String::from_utf8_lossy(&forged).replace(&a.reply_to, &app.shared);
    let text = text.lines().filter(|l| !l.contains("Reply key")).collect::<Vec<_>>().join("\r\n");
    forged = text.into_bytes();
    assert_refused(&app, &a, &gk, forged, "does not carry the request", &gk).await;

    // The token of another request, replying in this request's thread.
    let mut crossed = gmail_reply(&gk, &a, "decline: crossed");
    let text = String::from_utf8_lossy(&crossed).replace(&a.reply_to, &other.reply_to);
    let other_token = other.reply_to.split('+').nth(1).unwrap().split('@').next().unwrap();
    let a_token = a.reply_to.split('+').nth(1).unwrap().split('@').next().unwrap();
    crossed = text.replace(a_token, other_token).into_bytes();
    assert_refused(&app, &a, &gk, crossed, "belongs to", &gk).await;

    // A made-up token.
    let fake = "0123456789abcdef0123456789abcdef";
    let wrong =
        String::from_utf8_lossy(&gmail_reply(&gk, &a, "decline: wrong")).replace(a_token, fake).into_bytes();
    assert_refused(&app, &a, &gk, wrong, "does not belong to any request", &gk).await;

    // Someone who is not a gatekeeper, with a valid token: the gatekeepers are told.
    let stranger = app.stack.user("stranger", "icb.test");
    assert_refused(
        &app,
        &a,
        &stranger,
        gmail_reply(&stranger, &a, "decline: not mine"),
        "is not a gatekeeper",
        &gk,
    )
    .await;

    // DMARC failure reported by our own receiving server.
    let ours = "Authentication-Results: mx.gatehouse.test; dmarc=fail (p=reject) header.from=gatehouse.test";
    let spoofed = stamp(ours, gmail_reply(&gk, &a, "decline: spoofed"));
    assert_refused(&app, &a, &gk, spoofed, "reports dmarc=fail", &gk).await;
    // A pass from someone else's server is not ours (anyone can write that header)...
    let theirs = "Authentication-Results: mx.evil.test; dmarc=pass header.from=gatehouse.test";
    let forged = stamp(theirs, gmail_reply(&gk, &a, "decline: forged pass"));
    assert_refused(&app, &a, &gk, forged, "carries no Authentication-Results", &gk).await;
    // ...and `none` or no header at all does not vouch either.
    let none = "Authentication-Results: mx.gatehouse.test; dmarc=none header.from=gatehouse.test";
    assert_refused(&app, &a, &gk, stamp(none, gmail_reply(&gk, &a, "decline: none")), "dmarc=none", &gk)
        .await;
    assert_refused(&app, &a, &gk, gmail_reply(&gk, &a, "decline: bare"), "carries no Authentication", &gk)
        .await;

    let pass = "Authentication-Results: mx.gatehouse.test; dkim=pass header.d=gatehouse.test; dmarc=pass header.from=gatehouse.test";
    // An unknown command.
    assert_refused(
        &app,
        &a,
        &gk,
        stamp(pass, gmail_reply(&gk, &a, "approve please")),
        "should be a command",
        &gk,
    )
    .await;
    // An unknown priority.
    assert_refused(
        &app,
        &a,
        &gk,
        stamp(pass, gmail_reply(&gk, &a, "paper\npriority gardening")),
        "not an agreed priority",
        &gk,
    )
    .await;
    // The same reply vouched for by our server decides.
    send(&app, &gk, &stamp(pass, gmail_reply(&gk, &a, "paper"))).await;
    wait_for_class(&app, "triage", 1).await;
    assert_eq!(request(&app, &a.reference).await["decision"], "paper");
}

/// `raw` with an `Authentication-Results` header on top, as the receiving server adds it.
fn stamp(header: &str, raw: Vec<u8>) -> Vec<u8> {
    let mut stamped = format!("{header}\r\n").into_bytes();
    stamped.extend_from_slice(&raw);
    stamped
}

/// Exchange Online's own header form (no authserv-id), as Microsoft 365 / NHSmail stamp it.
fn exchange(dmarc: &str, domain: &str) -> String {
    format!(
        "Authentication-Results: spf=pass (sender IP is 192.0.2.7)\r\n smtp.mailfrom={domain}; dkim=none (message not signed)\r\n header.d=none;dmarc={dmarc} action=none\r\n header.from={domain};compauth=pass reason=100"
    )
}

#[tokio::test]
async fn exchange_online_must_vouch_for_a_decision() {
    let mut app = TestApp::new(Options {
        extra: "[triage]\nauthserv_id = \"exchange-online\"\n".into(),
        ..Options::default()
    })
    .await;
    app.start().await;
    let gk = app.gatekeeper.clone();
    let domain = gk.split('@').nth(1).unwrap().to_string();
    let a = approach(&app, "Vouched for by Exchange").await;
    for (header, why) in [
        (Some(exchange("fail", &domain)), "reports dmarc=fail"),
        (Some(exchange("none", &domain)), "dmarc=none"),
        (Some(exchange("bestguesspass", &domain)), "dmarc=bestguesspass"),
        // A named server on top is not Exchange's header.
        (
            Some(format!("Authentication-Results: mx.evil.test; dmarc=pass header.from={domain}")),
            "no Authentication-Results from Exchange Online",
        ),
        (None, "no Authentication-Results from Exchange Online"),
    ] {
        let raw = outlook_reply(&gk, &a, "decline: not ours");
        let raw = match header {
            Some(h) => stamp(&h, raw),
            None => raw,
        };
        assert_refused(&app, &a, &gk, raw, why, &gk).await;
    }
    send(&app, &gk, &stamp(&exchange("pass", &domain), outlook_reply(&gk, &a, "decline: not ours"))).await;
    wait_for_class(&app, "triage", 1).await;
    assert_eq!(request(&app, &a.reference).await["decision"], "decline");
    // `check` reports what the gatekeeper's mail carried.
    let out = app.cli(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("authentication WARNING: 4 of the last 6 messages from gatekeepers carried Authentication-Results from exchange-online; 1 passed"),
        "{text}"
    );
}

/// The notification's text, quoted the way a client that does not prefix lines quotes it.
fn unprefixed_reply(from: &str, a: &Approach, commands: &str, header: &str) -> Vec<u8> {
    format!(
        "From: Jane Doe <{from}>\r\nTo: {to}\r\nSubject: Re: {subject}\r\nMessage-ID: <{n}@nhs.test>\r\nIn-Reply-To: {nid}\r\nReferences: {nid}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{commands}\r\n\r\n{header}\r\n\r\n{quoted}",
        to = a.reply_to,
        subject = a.subject,
        nid = a.notification_id,
        n = rand_suffix(),
        commands = commands.replace('\n', "\r\n"),
        header = header.replace('\n', "\r\n"),
        quoted = notification_text(&a.notification).replace('\n', "\r\n"),
    )
    .into_bytes()
}

pub(crate) fn token(a: &Approach) -> String {
    a.reply_to.split('+').nth(1).unwrap().split('@').next().unwrap().to_string()
}

#[tokio::test]
async fn notes_below_the_text_from_outlook_and_thunderbird_stay_internal() {
    let app = TestApp::spawn().await;
    let gk = app.gatekeeper.clone();
    let commands = "decline: this is hospital work\nSorry, this belongs to the trust.\nnote: spoke to the LMC chair\npriority shift\nKind regards, Jane";
    for (n, client) in ["outlook", "thunderbird"].into_iter().enumerate() {
        let a = approach(&app, &format!("Notes below the text from {client}")).await;
        let raw = if client == "outlook" {
            outlook_reply(&gk, &a, commands)
        } else {
            thunderbird_reply(&gk, &a, commands)
        };
        send(&app, &gk, &raw).await;
        wait_for_class(&app, "triage", n + 1).await;
        let outcome = readable(&app.stack.wait_for_mail(&a.requester, 2).await.pop().unwrap());
        assert!(outcome.contains("Sorry, this belongs to the trust."), "{client}: {outcome}");
        assert!(outcome.contains("Kind regards, Jane"), "{client}: {outcome}");
        assert!(!outcome.contains("LMC chair"), "{client}: the note reached the requester:\n{outcome}");
        assert!(!outcome.contains("priority"), "{client}: {outcome}");
        let r = request(&app, &a.reference).await;
        assert_eq!(r["priorities"], serde_json::json!(["shift"]), "{client}");
        let notes: Vec<&str> = r["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "note")
            .map(|e| e["detail"].as_str().unwrap())
            .collect();
        assert_eq!(notes, ["spoke to the LMC chair"], "{client}");
    }
}

#[tokio::test]
async fn quote_headers_in_other_languages_never_reach_the_requester() {
    let app = TestApp::spawn().await;
    let gk = app.gatekeeper.clone();
    let shared = app.shared.clone();
    let headers = [
        format!(
            "Von: GP Access <{shared}>\nGesendet: Montag, 16. November 2026 09:12\nAn: Jane Doe <{gk}>\nBetreff: x"
        ),
        format!("De : GP Access <{shared}>\nEnvoyé : lundi 16 novembre 2026 09:12\nÀ : Jane Doe\nObjet : x"),
        format!("Il giorno lun 16 nov 2026 alle ore 09:12 GP Access <{shared}> ha scritto:"),
        "W dniu 16.11.2026 o 09:12, GP Access pisze:".to_string(),
        format!("Från: GP Access <{shared}>\nSkickat: den 16 november 2026 09:12\nTill: Jane\nÄmne: x"),
        format!("ma 16.11.2026 klo 9.12 GP Access <{shared}> kirjoitti:"),
        format!("Ar Llun, 16 Tach 2026 am 09:12, GP Access <{shared}> ysgrifennodd:"),
        "-----Mensagem original-----".to_string(),
    ];
    let mut decided = 0;
    for header in &headers {
        let a = approach(&app, "Quoted in another language").await;
        send(
            &app,
            &gk,
            &unprefixed_reply(&gk, &a, "redirect: the community trust\nThey run this service.", header),
        )
        .await;
        decided += 1;
        wait_for_class(&app, "triage", decided).await;
        let outcome = readable(&app.stack.wait_for_mail(&a.requester, 2).await.pop().unwrap());
        assert!(outcome.contains("They run this service."), "{header}: {outcome}");
        for internal in [token(&a).as_str(), "Reply key", "HOW TO DECIDE", "mailto:"] {
            assert!(!outcome.contains(internal), "{header}: {internal:?} reached the requester:\n{outcome}");
        }
    }
    // HTML only, the header in a language not known here: Outlook's divider and Gmail's
    // quote container show where the quote starts.
    let a = approach(&app, "Quoted under an Estonian header").await;
    let raw = String::from_utf8(outlook_reply(&gk, &a, "redirect: the LMC\nThey can help."))
        .unwrap()
        .replace("<b>From:</b>", "<b>Saatja:</b>")
        .replace("<b>Sent:</b>", "<b>Saadetud:</b>")
        .replace("<b>To:</b>", "<b>Adressaat:</b>")
        .replace("<b>Subject:</b>", "<b>Teema:</b>");
    send(&app, &gk, raw.as_bytes()).await;
    decided += 1;
    wait_for_class(&app, "triage", decided).await;
    let outcome = readable(&app.stack.wait_for_mail(&a.requester, 2).await.pop().unwrap());
    assert!(outcome.contains("They can help.") && !outcome.contains(&token(&a)), "{outcome}");
}

#[tokio::test]
async fn a_reply_whose_new_text_holds_the_notification_is_refused() {
    let app = TestApp::spawn().await;
    let gk = app.gatekeeper.clone();
    let a = approach(&app, "Quoted under a header nobody knows").await;
    // Plain text, an Estonian Outlook header: the quote cannot be told from the new text.
    let header = format!("Saatja: GP Access <{}>\nSaadetud: 16. november 2026 09:12\nTeema: x", app.shared);
    let raw = unprefixed_reply(&gk, &a, "decline: not ours\nSorry.", &header);
    assert_refused(&app, &a, &gk, raw, "seems to hold the quoted notification", &gk).await;
    // The command line cannot slip a key or the notification's words through either.
    let out = app.cli(&[
        "triage",
        &a.reference,
        "paper",
        "--message",
        &format!("Reply key for {}: {}", a.reference, token(&a)),
    ]);
    assert!(!out.status.success(), "the CLI sent internal text");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("for the gatekeepers only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(request(&app, &a.reference).await["decision"], Value::Null);
    assert_eq!(app.stack.mailbox(&a.requester).len(), 1, "the requester was told something");
}

#[tokio::test]
async fn a_duplicate_names_the_earlier_request_only_to_its_own_organisation() {
    let app = TestApp::spawn().await;
    let gk = app.gatekeeper.clone();
    let earlier = approach_from(&app, "trust.test", "Confidential workforce restructure").await;
    let a = approach_from(&app, "icb.test", "Workforce restructure").await;
    send(&app, &gk, &gmail_reply(&gk, &a, &format!("duplicate {}", earlier.reference))).await;
    wait_for_class(&app, "triage", 1).await;
    assert_eq!(request(&app, &a.reference).await["duplicate_of"], earlier.reference.as_str());
    let outcome = readable(&app.stack.wait_for_mail(&a.requester, 2).await.pop().unwrap());
    assert!(outcome.contains("already received"), "{outcome}");
    assert!(
        !outcome.contains("Confidential"),
        "another organisation's subject reached the requester:\n{outcome}"
    );
    assert!(!outcome.contains(&earlier.reference), "{outcome}");
}

#[tokio::test]
async fn meeting_without_a_future_date_is_an_error() {
    let mut app = TestApp::new(Options { meetings: "[\"2020-01-02\"]", ..Options::default() }).await;
    app.start().await;
    let a = approach(&app, "No meetings left").await;
    let gk = app.gatekeeper.clone();
    assert_refused(&app, &a, &gk, thunderbird_reply(&gk, &a, "meeting"), "no meeting date after today", &gk)
        .await;
}

#[tokio::test]
async fn a_plain_email_from_a_gatekeeper_is_an_ordinary_approach() {
    let app = TestApp::spawn().await;
    app.stack
        .send(&app.gatekeeper, &app.shared, "From the gatekeeper herself", "decline: this is not a reply")
        .await;
    let rows = app.wait_for_messages(1).await;
    assert_eq!(rows[0].classification, Some(gatehouse::domain::Classification::New));
}

#[tokio::test]
async fn more_work_returns_to_the_gatekeeper_when_the_requester_replies() {
    let app = TestApp::spawn().await;
    let a = approach(&app, "Needs costing").await;
    send(&app, &app.gatekeeper, &gmail_reply(&app.gatekeeper, &a, "more-work: a costing")).await;
    wait_for_class(&app, "triage", 1).await;
    assert_eq!(request(&app, &a.reference).await["status"], "waiting_on_requester");
    let outcome = app.stack.wait_for_mail(&a.requester, 2).await.pop().unwrap();
    let id = header(&outcome, "Message-ID").unwrap();
    let raw = format!(
        "From: <{r}>\r\nTo: {s}\r\nSubject: Re: Needs costing [{reference}]\r\nMessage-ID: <costing.{n}@icb.test>\r\nIn-Reply-To: {id}\r\nReferences: {id}\r\n\r\nThe costing is attached.\r\n",
        r = a.requester,
        s = app.shared,
        reference = a.reference,
        n = rand_suffix()
    );
    app.stack.send_raw(&a.requester, &[&app.shared], raw.as_bytes()).await;
    wait_for_class(&app, "follow_up", 1).await;
    let r = request(&app, &a.reference).await;
    assert_eq!(r["status"], "awaiting_triage");
    assert_eq!(r["decision"], "more_work", "the decision stays in the record until replaced");
}

#[tokio::test]
async fn the_cli_decides_like_an_email_and_a_later_decision_replaces_the_earlier() {
    let app = TestApp::spawn().await;
    let a = approach(&app, "Decided at the command line").await;
    let out = app.cli(&["triage", &a.reference, "paper", "--message", "A short paper please"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = app.cli(&["triage", &a.reference, "decline", "not GP work", "--priority", "shift"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = request(&app, &a.reference).await;
    assert_eq!(r["status"], "closed");
    assert_eq!(r["decision"], "decline");
    assert_eq!(r["priorities"], serde_json::json!(["shift"]));
    let decisions: Vec<_> =
        r["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "decision").collect();
    assert_eq!(decisions.len(), 2);
    assert!(decisions.iter().all(|e| e["actor"] == "operator"));
    // Both outcomes reach the requester; the second says it changed.
    let mail = app.stack.wait_for_mail(&a.requester, 3).await;
    let last = crate::helpers::readable(&mail[2]);
    assert!(last.contains("has changed"), "{last}");
    assert!(last.contains("not GP work"));
    // Bad input changes nothing.
    let out = app.cli(&["triage", &a.reference, "meeting", "next week"]);
    assert!(!out.status.success());
    let out = app.cli(&["triage", "GP-1999-0001", "paper"]);
    assert!(!out.status.success());
    assert_eq!(request(&app, &a.reference).await["decision"], "decline");
}

#[tokio::test]
async fn reminders_come_once_a_working_day_for_what_has_waited_two_working_days() {
    let mut app = TestApp::spawn().await;
    let a = approach(&app, "Waiting over a weekend").await;
    app.stop().await;
    // Received on Thursday 26 November 2026 at 10:00 (London).
    let london = chrono_tz::Europe::London;
    let thursday = london.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap().with_timezone(&chrono::Utc);
    let db = app.db().await;
    crate::on_db!(db, |pool| {
        let sql = "UPDATE requests SET received_at = $1";
        sqlx::query(sql).bind(thursday.timestamp_millis()).execute(pool).await.unwrap();
    });
    let config = Arc::new(app.config());
    let templates = Arc::new(gatehouse::templates::Templates::load(&config).unwrap());
    let clock = Arc::new(ManualClock::new(thursday));
    let reminders =
        gatehouse::triage::reminders::Reminders::new(config, app.store.clone(), clock.clone(), templates);
    let at = |d: u32, h: u32, m: u32| {
        london.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap().with_timezone(&chrono::Utc)
    };
    let mut sent = Vec::new();
    for (day, hour, minute) in
        [(27, 9, 0), (28, 12, 0), (29, 12, 0), (30, 7, 59), (30, 9, 0), (30, 10, 0), (30, 16, 0)]
    {
        clock.set(at(day, hour, minute));
        if reminders.run_once().await.unwrap() > 0 {
            sent.push((day, hour));
        }
    }
    // Friday: one working day. The weekend does not count. Monday 09:00: 1 day 23 hours.
    // Monday 10:00: two working days; once that day only.
    assert_eq!(sent, [(30, 10)]);
    clock.set(london.with_ymd_and_hms(2026, 12, 1, 8, 30, 0).unwrap().with_timezone(&chrono::Utc));
    assert_eq!(reminders.run_once().await.unwrap(), 1, "Tuesday's reminder");
    // Decided: no more reminders.
    let out = app.cli(&["triage", &a.reference, "message"]);
    assert!(out.status.success());
    clock.set(london.with_ymd_and_hms(2026, 12, 2, 9, 0, 0).unwrap().with_timezone(&chrono::Utc));
    assert_eq!(reminders.run_once().await.unwrap(), 0);
    // The digests wait in the outbox for the gatekeeper, with decision links. (They are due
    // at the manual clock's time, in the future, so the test reads them from the outbox.)
    let sql = "SELECT raw, recipients FROM outbox WHERE kind = 'reminder' ORDER BY id";
    let digests: Vec<(Vec<u8>, String)> =
        crate::on_db!(db, |pool| sqlx::query_as(sql).fetch_all(pool).await.unwrap());
    assert_eq!(digests.len(), 2);
    assert!(digests[0].1.contains(&app.gatekeeper));
    let text = crate::helpers::readable(&digests[0].0);
    assert!(text.contains(&a.reference) && text.contains("mailto:"), "{text}");
    let _ = Status::AwaitingTriage;
}
