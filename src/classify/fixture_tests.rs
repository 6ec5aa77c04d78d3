//! The classifier against realistic mail, written the way real clients
//! write it (tests/fixtures/mail/*.eml, CRLF line endings). Each fixture
//! pins down one behaviour gatehouse relies on, so a change in mail-parser
//! or in our rules that alters how a real message is read shows up here.

use super::forward::detect_in_text;
use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("../../tests/fixtures/mail/", $name)).as_slice()
    };
}

const OWN: &[&str] = &["gp.access@practice.test"];

fn parse_fixture(raw: &[u8]) -> Parsed {
    let own: Vec<String> = OWN.iter().map(|s| s.to_string()).collect();
    let ctx = Context { own_addresses: &own, own_message_id_domain: Some("gatehouse.test") };
    match parse(raw, &ctx) {
        Ok(p) => p,
        Err(e) => panic!("fixture did not parse: {e}"),
    }
}

fn mailbox(address: &str, name: Option<&str>) -> Mailbox {
    Mailbox { address: address.to_string(), name: name.map(str::to_string) }
}

fn forwarded(p: &Parsed) -> &Forwarded {
    match &p.forwarded {
        Some(f) => f,
        None => panic!("expected a forward in {:?}", p.subject),
    }
}

fn automated_kind(p: &Parsed) -> Option<AutomatedKind> {
    p.automated.as_ref().map(|a| a.kind)
}

#[test]
fn outlook_forward_html_only() {
    let p = parse_fixture(fixture!("outlook-forward-html-only.eml"));
    assert_eq!(
        p.from,
        Some(mailbox("practice.manager@nhs.test", Some("Patel Sam (ANYTOWN MEDICAL PRACTICE)")))
    );
    assert_eq!(p.subject, "FW: Phlebotomy service for housebound patients - expressions of interest");
    assert!(p.body_html.is_some());
    for tag in ["<p class", "<b>", "</", "<br", "<o:p", "&nbsp;", "&lt;"] {
        assert!(!p.body_text.contains(tag), "body_text must not be HTML: {tag}");
    }
    assert!(!p.body_text.contains("mso"), "style and conditional comments dropped");
    assert!(p.body_text.starts_with("Hi all,\n\nPlease can this be logged – see below"));
    assert_eq!(p.automated, None);

    let f = forwarded(&p);
    assert_eq!(f.source, ForwardSource::Outlook);
    assert_eq!(f.from, mailbox("jo.bloggs@icb.test", Some("Bloggs Jo (NHS ANYTOWN ICB)")));
    assert_eq!(
        f.subject.as_deref(),
        Some("Phlebotomy service for housebound patients - expressions of interest")
    );
    assert_eq!(f.date.as_deref(), Some("Monday, November 16, 2026 9:12 AM"));
    assert!(f.body_text.starts_with("Dear colleagues,\n\nAnytown ICB is inviting"));
    assert!(f.body_text.contains("£12.50 per completed blood draw"));
    assert!(f.note.starts_with("Hi all,"));
    assert!(!f.note.contains("Bloggs"), "the note stops at the header block");
    assert_eq!(f.message_id, None);
}

#[test]
fn outlook_forward_plain() {
    let p = parse_fixture(fixture!("outlook-forward-plain.eml"));
    assert_eq!(p.message_id.as_deref(), Some("000001db3812$5c1e2a40$145a7ec0$@nhs.test"));
    let f = forwarded(&p);
    assert_eq!(f.source, ForwardSource::Outlook);
    assert_eq!(f.from, mailbox("jo.bloggs@icb.test", Some("Jo Bloggs")));
    assert_eq!(f.date.as_deref(), Some("16 November 2026 09:12"));
    assert_eq!(
        f.subject.as_deref(),
        Some("Phlebotomy service for housebound patients - expressions of interest")
    );
    assert!(f.body_text.starts_with("Dear colleagues,"));
    assert!(f.body_text.ends_with("Primary Care Commissioning Manager"));
    assert_eq!(f.note, "Logging this for the partners' meeting on Thursday.\n\nAmina");
}

#[test]
fn gmail_forward() {
    let p = parse_fixture(fixture!("gmail-forward.eml"));
    // RFC 2047 in the middle of the subject, UTF-8 en dash.
    assert_eq!(p.subject, "Fwd: Phlebotomy service for housebound patients – expressions of interest");
    let f = forwarded(&p);
    assert_eq!(f.source, ForwardSource::Gmail);
    assert_eq!(f.from, mailbox("jo.bloggs@icb.test", Some("Jo Bloggs")));
    assert_eq!(f.date.as_deref(), Some("Mon, 16 Nov 2026 at 09:12"));
    assert_eq!(f.note, "Could we get this on the list please? Thanks!");
    assert!(f.body_text.starts_with("Dear colleagues,"));

    // The HTML alternative, converted to text, gives the same forward.
    let html = p.body_html.as_deref().map(html_to_text).unwrap_or_default();
    let from_html = detect_in_text(&html, true);
    assert_eq!(from_html.as_ref().map(|f| &f.from), Some(&mailbox("jo.bloggs@icb.test", Some("Jo Bloggs"))));
}

#[test]
fn apple_mail_forward() {
    let p = parse_fixture(fixture!("apple-mail-forward.eml"));
    let f = forwarded(&p);
    assert_eq!(f.source, ForwardSource::AppleMail);
    assert_eq!(f.from, mailbox("jo.bloggs@icb.test", Some("Jo Bloggs")));
    assert_eq!(f.date.as_deref(), Some("16 November 2026 at 09:12:00 GMT"));
    assert_eq!(
        f.subject.as_deref(),
        Some("Phlebotomy service for housebound patients - expressions of interest")
    );
    assert!(f.body_text.starts_with("Dear colleagues,"));
    assert_eq!(f.note, "Can you add this one please\n\nSent from my iPad");
    assert!(!p.body_text.contains('\u{a0}'), "NBSP read as plain spaces");

    let html = p.body_html.as_deref().map(html_to_text).unwrap_or_default();
    let from_html = detect_in_text(&html, true);
    assert_eq!(from_html.map(|f| f.from.address), Some("jo.bloggs@icb.test".to_string()));
}

#[test]
fn thunderbird_forward() {
    let p = parse_fixture(fixture!("thunderbird-forward.eml"));
    let f = forwarded(&p);
    assert_eq!(f.source, ForwardSource::Thunderbird);
    assert_eq!(f.from, mailbox("jo.bloggs@icb.test", Some("Jo Bloggs")));
    assert_eq!(f.date.as_deref(), Some("Mon, 16 Nov 2026 09:12:00 +0000"));
    assert_eq!(f.note, "Another one for the log.\n\nRegards\nChris");
    // format=flowed soft breaks are re-joined.
    assert!(f.body_text.contains("host a community phlebotomy service for housebound patients"));

    // Thunderbird's HTML writes the header block as a table.
    let html = p.body_html.as_deref().map(html_to_text).unwrap_or_default();
    let from_html = detect_in_text(&html, true);
    assert_eq!(from_html.as_ref().map(|f| f.from.address.as_str()), Some("jo.bloggs@icb.test"));
    assert_eq!(
        from_html.and_then(|f| f.subject),
        Some("Phlebotomy service for housebound patients - expressions of interest".to_string())
    );
}

#[test]
fn forward_as_attachment() {
    let p = parse_fixture(fixture!("forward-as-attachment.eml"));
    assert_eq!(
        p.attachments,
        vec![Attachment {
            name: Some(
                "Phlebotomy service for housebound patients - expressions of interest.eml".to_string()
            ),
            content_type: "message/rfc822".to_string(),
            size: p.attachments.first().map_or(0, |a| a.size),
        }]
    );
    let f = forwarded(&p);
    assert_eq!(f.source, ForwardSource::Attachment);
    assert_eq!(f.from, mailbox("jo.bloggs@icb.test", Some("Bloggs, Jo")));
    assert_eq!(
        f.message_id.as_deref(),
        Some("LO2P265MB1234ABCD5678EF90@LO2P265MB1234.GBRP265.PROD.OUTLOOK.COM")
    );
    assert_eq!(f.date.as_deref(), Some("Mon, 16 Nov 2026 09:12:00 +0000"));
    assert!(f.body_text.contains("£12.50"));
    assert_eq!(f.note, "Forwarding the ICB email as an attachment, as requested.\n\nChris");
}

#[test]
fn new_approach_plain() {
    let p = parse_fixture(fixture!("new-approach-plain.eml"));
    assert_eq!(p.from, Some(mailbox("jo.bloggs@icb.test", Some("Bloggs, Jo"))));
    assert_eq!(
        p.to,
        vec![
            mailbox("gp.access@practice.test", Some("GP Access")),
            mailbox("gp.access@other.test", Some("Other Practice")),
        ]
    );
    assert_eq!(p.cc, vec![mailbox("primary.care@icb.test", Some("ICB Primary Care"))]);
    assert_eq!(p.reply_to, vec![mailbox("primary.care@icb.test", None)]);
    assert_eq!(p.return_path, ReturnPath::Address("jo.bloggs@icb.test".to_string()));
    assert_eq!(p.date.map(|d| d.to_rfc3339()), Some("2026-11-16T09:12:00+00:00".to_string()));
    // Auto-Submitted: no is a person.
    assert_eq!(p.automated, None);
    assert_eq!(p.forwarded, None);
    assert!(p.body_text.contains("£12.50 per completed blood draw"));
    assert_eq!(p.body_html, None);
    assert!(p.attachments.is_empty());
}

#[test]
fn new_approach_html_only() {
    let p = parse_fixture(fixture!("new-approach-html-only.eml"));
    let expected = "Phlebotomy service for housebound patients\n\n\
        Dear practice colleagues,\n\n\
        Anytown ICB is inviting practices to host a community phlebotomy service for housebound patients – starting 1 January 2027.\n\n\
        Item Payment\nPer completed draw £12.50\nSet-up £1,500\n\n\
        To take part:\n\n\
        - reply with your practice name & ODS code\n\
        - say how many sessions you could offer\n\n\
        Questions? Email primary.care@icb.test.\n\n\
        Kind regards,\nPrimary Care Team\nNHS Anytown ICB";
    assert_eq!(p.body_text, expected);
    assert!(p.body_html.as_deref().is_some_and(|h| h.contains("<table")));
    // The logo is referenced by Content-ID: part of the body, not attached.
    assert!(p.attachments.is_empty());
    assert_eq!(p.forwarded, None);
}

#[test]
fn outlook_windows_1252() {
    let p = parse_fixture(fixture!("outlook-windows-1252.eml"));
    assert_eq!(p.subject, "Practice “hub” proposal – £500 per month");
    assert_eq!(p.from, Some(mailbox("pat.oneill@pcn.test", Some("Pat O’Neill"))));
    assert!(p.body_text.contains("last week’s meeting, the “hub” proposal – a shared"));
    assert!(p.body_text.contains("£500 per month"));
    assert!(p.body_html.as_deref().is_some_and(|h| h.contains("£500") && h.contains("“hub”")));
}

#[test]
fn cjk_iso_2022_jp() {
    let p = parse_fixture(fixture!("cjk-iso-2022-jp.eml"));
    assert_eq!(p.subject, "採血サービスについて");
    assert_eq!(p.from, Some(mailbox("hanako.yamada@partner.test", Some("山田 花子"))));
    assert!(p.body_text.starts_with("ご担当者様"));
    assert!(p.body_text.contains("採血サービスの件でご連絡いたします。"));
    assert_eq!(p.date.map(|d| d.to_rfc3339()), Some("2026-11-19T09:00:00+00:00".to_string()));
}

#[test]
fn gb2312_body_and_subject() {
    // "你好" in GB2312, and the same in an encoded-word subject.
    let raw = b"From: a@partner.test\r\nSubject: =?GB2312?B?xOO6ww==?=\r\nContent-Type: text/plain; charset=GB2312\r\n\r\n\xc4\xe3\xba\xc3\r\n";
    let p = parse_fixture(raw);
    assert_eq!(p.subject, "你好");
    assert_eq!(p.body_text, "你好");
}

#[test]
fn gmail_vacation_reply() {
    let p = parse_fixture(fixture!("gmail-vacation-reply.eml"));
    assert_eq!(
        p.automated,
        Some(Automated {
            kind: AutomatedKind::AutoReply,
            reason: "Auto-Submitted: auto-replied".to_string(),
        })
    );
    assert_eq!(p.in_reply_to, vec!["ack.GP-2026-0042.1@gatehouse.test".to_string()]);
    assert_eq!(find_reference(&p.subject, "GP").as_deref(), Some("GP-2026-0042"));
    assert_eq!(p.report, None);
    assert_eq!(p.forwarded, None);
}

#[test]
fn exchange_automatic_reply() {
    let p = parse_fixture(fixture!("exchange-automatic-reply.eml"));
    assert_eq!(automated_kind(&p), Some(AutomatedKind::AutoReply));
    assert!(p.automated.as_ref().is_some_and(|a| a.reason.starts_with("X-Auto-Response-Suppress: All")));
    assert_eq!(normalise_subject(&p.subject), "phlebotomy service for housebound patients");
}

#[test]
fn list_message() {
    let p = parse_fixture(fixture!("list-message.eml"));
    assert_eq!(
        p.automated,
        Some(Automated {
            kind: AutomatedKind::List,
            reason: "List-Id: Anytown GP Bulletin <gp-bulletin.lists.icb.test>".to_string(),
        })
    );
    assert_eq!(p.sender, Some(mailbox("gp-bulletin-bounces@lists.icb.test", Some("gp-bulletin"))));
    // The list footer's underscore line is not a forward.
    assert_eq!(p.forwarded, None);
}

#[test]
fn postfix_dsn() {
    let p = parse_fixture(fixture!("postfix-dsn.eml"));
    assert_eq!(p.return_path, ReturnPath::Null);
    assert_eq!(
        p.automated,
        Some(Automated {
            kind: AutomatedKind::Bounce,
            reason: "Content-Type: multipart/report; report-type=delivery-status".to_string(),
        })
    );
    let Some(report) = &p.report else {
        panic!("a DSN must have a report");
    };
    assert_eq!(report.original_message_ids, vec!["ack.GP-2026-0042.1@gatehouse.test".to_string()]);
    assert_eq!(report.failed_recipients, vec!["jo.blogs@icb.test".to_string()]);
    assert_eq!(report.action.as_deref(), Some("failed"));
    assert_eq!(report.status.as_deref(), Some("5.1.1"));
    assert!(
        report.diagnostic.as_deref().is_some_and(|d| d.contains("User unknown in virtual mailbox table"))
    );
    // The returned headers carry X-Gatehouse, but they are not ours coming
    // back: only top-level headers count.
    assert_eq!(p.forwarded, None);
    assert!(p.body_text.starts_with("This is the mail system at host"));
}

#[test]
fn with_attachments() {
    let p = parse_fixture(fixture!("with-attachments.eml"));
    assert_eq!(
        p.attachments,
        vec![
            Attachment {
                name: Some("Phlebotomy service specification.pdf".to_string()),
                content_type: "application/pdf".to_string(),
                size: 218,
            },
            Attachment {
                name: Some("Expression of interest – form.docx".to_string()),
                content_type: "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
                    .to_string(),
                size: 475,
            },
        ]
    );
    assert!(p.body_text.starts_with("Dear colleagues,"));
    assert_eq!(p.forwarded, None);
}

#[test]
fn follow_up_reply() {
    let p = parse_fixture(fixture!("follow-up-reply.eml"));
    assert_eq!(p.in_reply_to, vec!["ack.GP-2026-0042.1@gatehouse.test".to_string()]);
    assert_eq!(
        p.references,
        vec![
            "LO2P265MB1234ABCD5678EF90@LO2P265MB1234.GBRP265.PROD.OUTLOOK.COM".to_string(),
            "ack.GP-2026-0042.1@gatehouse.test".to_string(),
        ]
    );
    assert_eq!(find_reference(&p.subject, "GP").as_deref(), Some("GP-2026-0042"));
    assert_eq!(
        strip_quoted(&p.body_text),
        "Thanks - could you also confirm how many sessions per week you could offer?\n\nJo"
    );
    // "RE:" and a note above Outlook's block: a reply, not a forward.
    assert_eq!(p.forwarded, None);
    assert_eq!(p.automated, None);
}

#[test]
fn malformed_mime() {
    let p = parse_fixture(fixture!("malformed-mime.eml"));
    // Unknown charset, 8-bit bytes: read as Windows-1252, not U+FFFD.
    assert_eq!(p.body_text, "Patient transport request for phlebotomy clinic £ 5 – café.");
    assert_eq!(p.subject, "Referral form submission");
    assert_eq!(p.attachments.first().and_then(|a| a.name.as_deref()), Some("form.bin"));
}

#[test]
fn no_message_id() {
    let p = parse_fixture(fixture!("no-message-id.eml"));
    assert_eq!(p.message_id, None);
    assert_eq!(p.from, Some(mailbox("manager@pharmacy.test", Some("Anytown Pharmacy"))));
    // "Name:" and "Message:" lines are not a forward header block.
    assert_eq!(p.forwarded, None);
    assert_eq!(p.content_hash.len(), 64);
}

#[test]
fn own_acknowledgement() {
    let p = parse_fixture(fixture!("own-acknowledgement.eml"));
    assert_eq!(
        p.automated,
        Some(Automated {
            kind: AutomatedKind::OwnMail,
            reason: "X-Gatehouse: acknowledgement and Message-ID in our domain".to_string(),
        })
    );
}

#[test]
fn every_fixture_parses_and_hashes_differently() {
    let all = [
        fixture!("outlook-forward-html-only.eml"),
        fixture!("outlook-forward-plain.eml"),
        fixture!("gmail-forward.eml"),
        fixture!("apple-mail-forward.eml"),
        fixture!("thunderbird-forward.eml"),
        fixture!("forward-as-attachment.eml"),
        fixture!("new-approach-plain.eml"),
        fixture!("new-approach-html-only.eml"),
        fixture!("outlook-windows-1252.eml"),
        fixture!("cjk-iso-2022-jp.eml"),
        fixture!("gmail-vacation-reply.eml"),
        fixture!("exchange-automatic-reply.eml"),
        fixture!("list-message.eml"),
        fixture!("postfix-dsn.eml"),
        fixture!("with-attachments.eml"),
        fixture!("follow-up-reply.eml"),
        fixture!("malformed-mime.eml"),
        fixture!("no-message-id.eml"),
        fixture!("own-acknowledgement.eml"),
    ];
    for raw in all {
        // Some servers and tools hand over LF-only mail: same result.
        let lf: Vec<u8> = raw
            .iter()
            .enumerate()
            .filter(|(i, b)| !(**b == b'\r' && raw.get(i + 1) == Some(&b'\n')))
            .map(|(_, b)| *b)
            .collect();
        let mut from_lf = parse_fixture(&lf);
        let from_crlf = parse_fixture(raw);
        from_lf.content_hash.clone_from(&from_crlf.content_hash);
        if from_lf.body_html.is_some() {
            // Only the HTML source keeps its own line endings.
            from_lf.body_html.clone_from(&from_crlf.body_html);
        }
        // So do attached messages, text parts and undecodable parts (kept
        // raw), which changes their size; sizes are pinned in their own tests.
        for (a, b) in from_lf.attachments.iter_mut().zip(&from_crlf.attachments) {
            a.size = b.size;
        }
        assert_eq!(from_lf, from_crlf, "LF-only differs for {:?}", from_crlf.subject);
    }
    let mut hashes: Vec<String> = all.iter().map(|raw| parse_fixture(raw).content_hash).collect();
    hashes.sort();
    hashes.dedup();
    assert_eq!(hashes.len(), all.len());
    for raw in all {
        // Every fixture is CRLF throughout, as it would arrive over IMAP.
        let bare_lf = raw
            .iter()
            .enumerate()
            .filter(|(i, b)| **b == b'\n' && (*i == 0 || raw.get(i - 1) != Some(&b'\r')))
            .count();
        assert_eq!(bare_lf, 0);
    }
}

#[test]
fn forwards_score_as_duplicates_of_the_original() {
    let direct = parse_fixture(fixture!("new-approach-plain.eml"));
    let via_gmail = parse_fixture(fixture!("gmail-forward.eml"));
    let via_attachment = parse_fixture(fixture!("forward-as-attachment.eml"));
    let unrelated = parse_fixture(fixture!("outlook-windows-1252.eml"));
    let body = |p: &Parsed| p.forwarded.as_ref().map_or(p.body_text.clone(), |f| f.body_text.clone());
    assert!(similarity(&body(&direct), &body(&via_gmail)) > 0.9);
    assert!(similarity(&body(&direct), &body(&via_attachment)) > 0.9);
    assert!(similarity(&body(&direct), &body(&unrelated)) < 0.2);
    assert_eq!(
        normalise_subject(&via_gmail.subject),
        "phlebotomy service for housebound patients – expressions of interest"
    );
    assert_eq!(normalise_subject(&direct.subject), normalise_subject(&via_attachment.subject));
}

#[test]
fn forwarded_chain_follows_nested_forwards() {
    let outer = parse_fixture(fixture!("outlook-forward-plain.eml"));
    let chain = forwarded_chain(&outer);
    assert_eq!(chain.len(), 1);
    // A forward of the Gmail forward: the chain reaches the ICB sender.
    let nested = "From: Sam Patel <practice.manager@nhs.test>\r\nTo: gp.access@practice.test\r\n\
        Subject: FW: Fwd: Phlebotomy\r\n\r\nSee below\r\n\r\n-----Original Message-----\r\n\
        From: Amina Khan <amina.khan@nhs.test>\r\nSent: 16 November 2026 10:00\r\n\
        Subject: Fwd: Phlebotomy\r\n\r\nFYI\r\n\r\n---------- Forwarded message ---------\r\n\
        From: Jo Bloggs <jo.bloggs@icb.test>\r\nDate: Mon, 16 Nov 2026 at 09:12\r\n\
        Subject: Phlebotomy\r\n\r\nThe approach.\r\n";
    let p = parse_fixture(nested.as_bytes());
    let chain = forwarded_chain(&p);
    let senders: Vec<&str> = chain.iter().map(|f| f.from.address.as_str()).collect();
    assert_eq!(senders, vec!["amina.khan@nhs.test", "jo.bloggs@icb.test"]);
    assert_eq!(chain.last().map(|f| f.body_text.as_str()), Some("The approach."));
}

/// Real mail with random damage (flipped bytes, cut-offs, duplicated
/// chunks) must still parse or fail cleanly. `GATEHOUSE_FUZZ_ROUNDS` raises
/// the count for a longer local run.
#[test]
fn mutated_fixtures_never_panic() {
    let rounds: usize =
        std::env::var("GATEHOUSE_FUZZ_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let fixtures = [
        fixture!("outlook-forward-html-only.eml"),
        fixture!("gmail-forward.eml"),
        fixture!("apple-mail-forward.eml"),
        fixture!("thunderbird-forward.eml"),
        fixture!("forward-as-attachment.eml"),
        fixture!("new-approach-html-only.eml"),
        fixture!("outlook-windows-1252.eml"),
        fixture!("cjk-iso-2022-jp.eml"),
        fixture!("postfix-dsn.eml"),
        fixture!("with-attachments.eml"),
        fixture!("malformed-mime.eml"),
    ];
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for raw in fixtures {
        for _ in 0..rounds {
            let mut m = raw.to_vec();
            let len = m.len().max(1) as u64;
            match next() % 4 {
                0 => {
                    for _ in 0..8 {
                        let at = (next() % len) as usize;
                        if let Some(b) = m.get_mut(at) {
                            *b = (next() & 0xff) as u8;
                        }
                    }
                }
                1 => m.truncate((next() % len) as usize),
                2 => {
                    let at = (next() % len) as usize;
                    let chunk: Vec<u8> = m.iter().skip(at).take(200).copied().collect();
                    for _ in 0..(next() % 50) {
                        m.splice(at..at, chunk.iter().copied());
                    }
                }
                _ => {
                    let at = (next() % len) as usize;
                    let junk: &[u8] = match next() % 4 {
                        0 => b"\r\n--",
                        1 => b"Content-Type: message/rfc822\r\n\r\n",
                        2 => b"=?utf-8?b?",
                        _ => b"<div><p class=MsoNormal>&#",
                    };
                    m.splice(at..at, junk.iter().copied());
                }
            }
            let _ = parse_fixture_lenient(&m);
        }
    }
}

fn parse_fixture_lenient(raw: &[u8]) -> Result<Parsed, ParseError> {
    let own: Vec<String> = OWN.iter().map(|s| s.to_string()).collect();
    let ctx = Context { own_addresses: &own, own_message_id_domain: Some("gatehouse.test") };
    parse(raw, &ctx)
}

/// Auto-replies sent without RFC 3834 or Exchange headers, as Lotus Notes, Outlook behind
/// gateways that strip headers, helpdesks and challenge-response filters send them: each
/// is automated, marked as recognised by its wording, and says why.
#[test]
fn auto_replies_without_headers_are_recognised_by_their_wording() {
    let cases: &[(&str, &[u8], &str)] = &[
        ("Lotus Notes", fixture!("lotus-notes-out-of-office.eml"), "subject opens \"AUTO:\""),
        ("German Outlook", fixture!("outlook-abwesenheitsnotiz.eml"), "subject opens \"Abwesenheitsnotiz:\""),
        (
            "French Outlook",
            fixture!("outlook-reponse-automatique.eml"),
            "subject opens \"Réponse automatique",
        ),
        ("Welsh Outlook", fixture!("outlook-ateb-awtomatig.eml"), "subject opens \"Ateb awtomatig:\""),
        (
            "helpdesk",
            fixture!("helpdesk-automated-response.eml"),
            "the text opens \"this is an automated response\"",
        ),
        (
            "out-of-office text",
            fixture!("out-of-office-body-only.eml"),
            "a reply whose text opens \"i am currently out of the office\"",
        ),
        ("Boxbe", fixture!("boxbe-challenge.eml"), "challenge-response anti-spam reply (from boxbe.com)"),
        (
            "Spam Arrest",
            fixture!("spamarrest-challenge.eml"),
            "challenge-response anti-spam reply (\"spam arrest\")",
        ),
        (
            "verify you are human",
            fixture!("challenge-verify-human.eml"),
            "challenge-response anti-spam reply (\"please verify you are human\" and a link)",
        ),
    ];
    for (what, raw, why) in cases {
        let p = parse_fixture(raw);
        let a = p.automated.as_ref().unwrap_or_else(|| panic!("{what}: not recognised ({:?})", p.subject));
        assert_eq!(a.kind, AutomatedKind::AutoReply, "{what}");
        assert!(a.by_wording(), "{what}: {}", a.reason);
        assert!(a.reason.starts_with(&format!("{}{why}", automated::BY_WORDING)), "{what}: {}", a.reason);
        assert_eq!(p.forwarded, None, "{what}");
    }
}

/// People who write about being away, or whose subject reads like an auto-reply, are still
/// approaches; so is a forward of an auto-reply.
#[test]
fn people_writing_about_being_away_are_not_auto_replies() {
    for (what, raw) in [
        ("was out of the office", fixture!("human-was-out-of-office.eml")),
        ("Out of office: subject", fixture!("human-out-of-office-subject.eml")),
        ("away, new approach", fixture!("human-away-new-approach.eml")),
        ("an ordinary approach", fixture!("new-approach-plain.eml")),
        ("a follow-up", fixture!("follow-up-reply.eml")),
    ] {
        let p = parse_fixture(raw);
        assert_eq!(p.automated, None, "{what}");
    }
    // Headers still win: an Exchange auto-reply keeps its header reason, not the wording.
    let p = parse_fixture(fixture!("exchange-automatic-reply.eml"));
    assert!(p.automated.as_ref().is_some_and(|a| !a.by_wording()), "{:?}", p.automated);
    // A person forwarding an auto-reply they got is forwarding, not auto-replying.
    let ooo = String::from_utf8_lossy(fixture!("out-of-office-body-only.eml")).replace("\r\n", "\n");
    let body = ooo.split_once("\n\n").map_or("", |(_, b)| b);
    let fwd = format!(
        "From: Sam Patel <practice.manager@nhs.test>\nTo: gp.access@practice.test\nSubject: FW: Your approach has been logged\nMessage-ID: <fw.ooo.1@nhs.test>\nIn-Reply-To: <x@nhs.test>\nContent-Type: text/plain\n\n{body}"
    );
    assert_eq!(parse_fixture(fwd.as_bytes()).automated, None);
}
