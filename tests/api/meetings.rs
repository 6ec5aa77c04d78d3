//! Meetings carried through: the gatekeeper's emailed `meeting` reply sends the requester an
//! outcome with a calendar invitation their calendar can read (parsed back here with the
//! `ical` crate), a later decision updates the same event, and the board's agenda carries
//! each item's papers up to `[meetings] agenda_attachments_max_mb`, listing the rest.

use std::sync::Arc;

use base64::Engine as _;
use chrono::{NaiveDate, Utc};
use gatehouse::clock::ManualClock;
use gatehouse::summary::Summaries;
use gatehouse::summary::agenda::AgendaSent;
use gatehouse::templates::Templates;
use gatehouse::triage::grammar::{Command, Reply};
use gatehouse::triage::{Actor, Triage};
use mail_parser::{MessageParser, MimeHeaders as _};

use crate::helpers::{Options, TestApp, header, readable, wait_until};
use crate::triage::{approach, send, thunderbird_reply};

/// Meetings with a default time, length and place, and one date with its own time.
const MEETINGS: &str = "[\"2027-01-07\", \"2099-12-03\"]\ntime = \"13:00\"\nlength_minutes = 90\nplace = \"Anytown Federation, Room 2; or Teams\"\n\n[meetings.on.\"2027-01-07\"]\ntime = \"10:30\"\n";

/// The outcome emails in `address`'s mailbox, oldest first.
fn outcomes(app: &TestApp, address: &str) -> Vec<Vec<u8>> {
    app.stack
        .mailbox(address)
        .into_iter()
        .filter(|m| header(m, "X-Gatehouse").as_deref() == Some("outcome"))
        .collect()
}

/// The invitation an outcome carries: its text/calendar body part (checked to be the
/// REQUEST Outlook and Gmail offer to add) and the invite.ics file, which must agree.
fn invitation(raw: &[u8]) -> String {
    let message = MessageParser::default().parse(raw).expect("the outcome parses as an email");
    let mut calendar = None;
    let mut file = None;
    for part in &message.parts {
        let Some(ct) = part.content_type() else { continue };
        let kind = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()).to_ascii_lowercase();
        if kind == "text/calendar" {
            assert!(part.attachment_name().is_none(), "the calendar part is a body part, not a file");
            assert_eq!(ct.attribute("method").map(str::to_ascii_uppercase).as_deref(), Some("REQUEST"));
            calendar = Some(String::from_utf8_lossy(part.contents()).into_owned());
        } else if kind == "application/ics" {
            assert_eq!(part.attachment_name(), Some("invite.ics"));
            file = Some(String::from_utf8_lossy(part.contents()).into_owned());
        }
    }
    let calendar = calendar.expect("the outcome has a text/calendar part");
    let file = file.expect("the outcome attaches invite.ics");
    assert_eq!(calendar.replace("\r\n", "\n"), file.replace("\r\n", "\n"));
    calendar
}

/// The one VEVENT of an invitation, read by a real iCalendar parser: property name →
/// (parameters, value), TEXT values unescaped.
struct Event {
    method: String,
    properties: Vec<ical::property::Property>,
}

impl Event {
    fn parse(ics: &str) -> Event {
        let mut calendars = ical::IcalParser::new(std::io::BufReader::new(ics.as_bytes()));
        let calendar = calendars.next().expect("one calendar").expect("the calendar parses");
        assert!(calendars.next().is_none(), "exactly one calendar");
        assert_eq!(calendar.events.len(), 1, "exactly one event");
        let method = calendar
            .properties
            .iter()
            .find(|p| p.name == "METHOD")
            .and_then(|p| p.value.clone())
            .unwrap_or_default();
        Event { method, properties: calendar.events.into_iter().next().unwrap().properties }
    }

    fn value(&self, name: &str) -> String {
        let p = self.properties.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no {name}"));
        let v = p.value.clone().unwrap_or_default();
        v.replace("\\n", "\n").replace("\\;", ";").replace("\\,", ",").replace("\\\\", "\\")
    }

    fn param(&self, name: &str, param: &str) -> Option<String> {
        let p = self.properties.iter().find(|p| p.name == name)?;
        p.params.as_ref()?.iter().find(|(k, _)| k == param).map(|(_, v)| v.join(","))
    }
}

#[tokio::test]
async fn a_meeting_reply_sends_the_requester_an_invitation_their_calendar_reads() {
    let mut app = TestApp::new(Options { meetings: MEETINGS, ..Options::default() }).await;
    app.start().await;
    let gk = app.gatekeeper.clone();
    let subject = "Phlebotomy; in practices, urgent";
    let a = approach(&app, subject).await;
    send(&app, &gk, &thunderbird_reply(&gk, &a, "meeting 2027-01-07\nWe look forward to it.")).await;
    let outcome =
        wait_until("the requester's outcome", || async { outcomes(&app, &a.requester).pop() }).await;
    let text = readable(&outcome);
    assert!(text.contains("Thursday 7 January 2027, 10:30 to 12:00"), "{text}");
    assert!(text.contains("Where: Anytown Federation, Room 2; or Teams"), "{text}");

    let event = Event::parse(&invitation(&outcome));
    assert_eq!(event.method, "REQUEST");
    // 10:30 in London in January is 10:30 UTC; 90 minutes long.
    assert_eq!(event.value("DTSTART"), "20270107T103000Z");
    assert_eq!(event.value("DTEND"), "20270107T120000Z");
    assert_eq!(event.value("LOCATION"), "Anytown Federation, Room 2; or Teams");
    let uid = event.value("UID");
    assert_eq!(uid, format!("meeting-{}@gatehouse.test", a.reference.to_ascii_lowercase()));
    assert_eq!(event.value("ATTENDEE").to_ascii_lowercase(), format!("mailto:{}", a.requester));
    assert_eq!(event.value("ORGANIZER").to_ascii_lowercase(), format!("mailto:{}", app.shared));
    assert_eq!(event.param("ATTENDEE", "RSVP").as_deref(), Some("FALSE"));
    let summary = event.value("SUMMARY");
    assert!(summary.starts_with(&format!("{}: {subject}", a.reference)), "{summary}");

    // The gatekeeper moves it: the same event, now at the default time on the other date.
    send(&app, &gk, &thunderbird_reply(&gk, &a, "meeting 2099-12-03")).await;
    let moved = wait_until("the second outcome", || async {
        let all = outcomes(&app, &a.requester);
        (all.len() >= 2).then(|| all[1].clone())
    })
    .await;
    let again = Event::parse(&invitation(&moved));
    assert_eq!(again.value("UID"), uid);
    assert_eq!(again.value("DTSTART"), "20991203T130000Z");
    assert!(
        again.value("SEQUENCE").parse::<i64>().unwrap() >= event.value("SEQUENCE").parse::<i64>().unwrap()
    );
    assert!(again.value("DTSTAMP") >= event.value("DTSTAMP"));
}

/// An approach with one attached file of `size` bytes named `name`; its reference.
async fn approach_with_paper(
    app: &TestApp,
    who: &str,
    subject: &str,
    name: &str,
    size: usize,
) -> (String, Vec<u8>) {
    let requester = app.stack.user(who, "icb.test");
    let paper: Vec<u8> =
        b"%PDF-1.4\n".iter().copied().chain((0..size - 9).map(|i| (i % 251) as u8)).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&paper);
    let lines: Vec<&str> = encoded.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect();
    let raw = format!(
        "From: Jo Bloggs <{requester}>\r\nTo: {shared}\r\nSubject: {subject}\r\nMessage-ID: <{n}@icb.test>\r\nDate: {date}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe paper is attached.\r\n--b1\r\nContent-Type: application/pdf; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{body}\r\n--b1--\r\n",
        shared = app.shared,
        n = crate::helpers::rand_suffix(),
        date = Utc::now().to_rfc2822(),
        body = lines.join("\r\n"),
    );
    app.stack.send_raw(&requester, &[&app.shared], raw.as_bytes()).await;
    let store = app.store.clone();
    let reference = wait_until("the approach to be logged", || {
        let store = store.clone();
        let requester = requester.clone();
        async move {
            let requests = store.list_requests(&Default::default()).await.ok()?;
            requests.into_iter().find(|r| r.requester == requester).map(|r| r.reference)
        }
    })
    .await;
    (reference, paper)
}

#[tokio::test]
async fn the_agenda_carries_each_item_s_papers_up_to_the_limit_and_lists_the_rest() {
    let mut app = TestApp::new(Options {
        meetings: "[\"2099-12-03\"]\nagenda_attachments_max_mb = 1",
        ..Options::default()
    })
    .await;
    app.start().await;
    let (small_ref, small) = approach_with_paper(&app, "small", "Small paper", "costings.pdf", 40_000).await;
    let (big_ref, _) = approach_with_paper(&app, "big", "Big paper", "full-report.pdf", 1_200_000).await;

    // The real time: the daemon's sender, on the real clock, delivers what is queued now.
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let config = Arc::new(app.config());
    let templates = Arc::new(Templates::load(&config).unwrap());
    let triage = Triage::new(config.clone(), templates.clone());
    for reference in [&small_ref, &big_ref] {
        let request = app.store.find_request(reference).await.unwrap().unwrap();
        let reply = Reply {
            decision: Some(Command::Meeting(NaiveDate::from_ymd_opt(2099, 12, 3))),
            priorities: Vec::new(),
            notes: Vec::new(),
            message: String::new(),
            circulate: None,
        };
        let mut tx = app.store.begin().await.unwrap();
        triage.decide(&mut *tx, &request, &reply, &Actor::Operator, Utc::now()).await.unwrap().unwrap();
        tx.commit().await.unwrap();
    }
    let summaries = Summaries::new(config, app.store.clone(), clock, templates);
    let sent = summaries.send_agenda_now(NaiveDate::from_ymd_opt(2099, 12, 3).unwrap(), false).await.unwrap();
    assert!(matches!(sent, AgendaSent::Sent { items: 2, .. }), "{sent:?}");

    let agenda = wait_until("the agenda in the board's mailbox", || async {
        app.stack
            .mailbox(&app.board)
            .into_iter()
            .find(|m| header(m, "X-Gatehouse").as_deref() == Some("agenda"))
    })
    .await;
    let message = MessageParser::default().parse(&agenda[..]).unwrap();
    let files: Vec<(String, Vec<u8>)> = message
        .attachments()
        .map(|p| (p.attachment_name().unwrap_or_default().to_string(), p.contents().to_vec()))
        .collect();
    // The small paper fits and is attached under its item's reference; the big one does not.
    assert_eq!(files.len(), 1, "{:?}", files.iter().map(|(n, _)| n).collect::<Vec<_>>());
    assert_eq!(files[0].0, format!("{small_ref} costings.pdf"));
    assert_eq!(files[0].1, small);
    let text = readable(&agenda);
    assert!(text.contains(&format!("Paper: {small_ref} costings.pdf (40 KB, attached)")), "{text}");
    assert!(
        text.contains(&format!(
            "Paper: {big_ref} full-report.pdf (1.1 MB, not attached: the email would be too large"
        )),
        "{text}"
    );
}
