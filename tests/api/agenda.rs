//! A meeting's agenda after it has gone: decisions made later reach the board as agenda
//! updates (batched, once each, none after the last call), an empty meeting gets no agenda,
//! the gatekeepers' confirmation says what the board has been told, and the CLI previews
//! and resends an agenda. Decisions and the schedule run on a manual clock against the real
//! store; the running daemon delivers what they queue to the board's real mailbox.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone as _, Utc};
use chrono_tz::Europe::London;
use gatehouse::clock::ManualClock;
use gatehouse::summary::agenda::AgendaMail;
use gatehouse::summary::{Period, Summaries};
use gatehouse::templates::Templates;
use gatehouse::triage::grammar::{Command, Reply};
use gatehouse::triage::{Actor, Triage};

use crate::helpers::{Options, TestApp, header, readable};
use crate::on_db;

fn london(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    London.with_ymd_and_hms(y, m, d, h, min, 0).unwrap().with_timezone(&Utc)
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// A scheduler as the daemon builds it at start: a new one is a restart.
fn restarted(app: &TestApp, clock: &Arc<ManualClock>) -> Summaries {
    let config = Arc::new(app.config());
    let templates = Arc::new(Templates::load(&config).unwrap());
    Summaries::new(config, app.store.clone(), clock.clone(), templates)
}

/// The operator decides `reference` at `at`, as `gatehouse triage` does; returns the
/// gatekeepers' confirmation as queued.
async fn decide(
    app: &TestApp,
    at: DateTime<Utc>,
    reference: &str,
    decision: &str,
    arg: Option<&str>,
) -> String {
    let config = Arc::new(app.config());
    let triage = Triage::new(config.clone(), Arc::new(Templates::load(&config).unwrap()));
    let request = app.store.find_request(reference).await.unwrap().unwrap();
    let reply = Reply {
        decision: Some(Command::from_parts(decision.parse().unwrap(), arg).unwrap()),
        priorities: Vec::new(),
        notes: Vec::new(),
        message: String::new(),
        circulate: None,
    };
    let mut tx = app.store.begin().await.unwrap();
    triage.decide(&mut *tx, &request, &reply, &Actor::Operator, at).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    let sql = "SELECT raw FROM outbox WHERE kind = 'triage_confirmation' ORDER BY id DESC LIMIT 1";
    let raw: Vec<u8> = on_db!(app.db().await, |pool| sqlx::query_scalar(sql).fetch_one(pool).await.unwrap());
    readable(&raw).replace('\n', " ")
}

/// The requests the board has been told are on the meeting's agenda, by reference.
async fn told(app: &TestApp, meeting: &str) -> Vec<String> {
    let told = app.store.agenda_told(date(meeting)).await.unwrap().unwrap_or_default();
    sorted(&told.into_iter().map(|r| r.reference).collect::<Vec<_>>())
}

/// `n` approaches from the outside, logged by the running daemon; their references.
async fn approaches(app: &TestApp, n: usize) -> Vec<String> {
    let names: Vec<(String, &str)> = (0..n).map(|i| (format!("a{i}"), "icb.test")).collect();
    let wanted: Vec<(&str, &str)> = names.iter().map(|(a, d)| (a.as_str(), *d)).collect();
    for (i, sender) in app.stack.users(&wanted).iter().enumerate() {
        app.stack
            .send(sender, &app.shared, &format!("Approach number {i}"), "Could the group discuss this?")
            .await;
    }
    app.wait_for_messages(n).await;
    // In the order they were sent, whatever order they were logged in.
    let mut requests = app.store.list_requests(&Default::default()).await.unwrap();
    requests.sort_by(|a, b| a.subject.cmp(&b.subject));
    assert_eq!(requests.len(), n);
    requests.into_iter().map(|r| r.reference).collect()
}

#[tokio::test]
async fn the_board_hears_of_every_change_to_an_agenda_once_and_in_time() {
    let mut app = TestApp::new(Options {
        meetings: "[\"2099-12-03\", \"2099-12-10\", \"2099-12-17\"]\ntime = \"13:00\"",
        ..Options::default()
    })
    .await;
    // The daemon runs on the real clock (2026), for which none of these meetings is near:
    // it only logs the approaches and, at the end, delivers what the schedule queued.
    app.start().await;
    let r = approaches(&app, 5).await;
    let clock = Arc::new(ManualClock::new(london(2099, 11, 29, 10, 0)));
    let none: Vec<AgendaMail> = Vec::new();
    let thursday_3 = date("2099-12-03");

    // Before the agenda: it will be on it.
    let confirmation = decide(&app, clock_now(&clock), &r[0], "meeting", Some("2099-12-03")).await;
    assert!(
        confirmation.contains("Not yet told to the board: it will be on the agenda for Thursday 3 December 2099, which goes on Monday 30 November 2099 at 08:00"),
        "{confirmation}"
    );
    assert_eq!(restarted(&app, &clock).run_agendas().await.unwrap(), none, "too early");

    // The agenda, once.
    clock.set(london(2099, 11, 30, 9, 0));
    assert_eq!(restarted(&app, &clock).run_agendas().await.unwrap(), [AgendaMail::Agenda(thursday_3)]);
    assert_eq!(restarted(&app, &clock).run_agendas().await.unwrap(), none, "the agenda went twice");
    assert_eq!(told(&app, "2099-12-03").await, [r[0].clone()]);

    // Two decisions after it, within the hour: one update an hour after the first.
    clock.set(london(2099, 11, 30, 10, 0));
    let confirmation = decide(&app, clock_now(&clock), &r[1], "meeting", Some("2099-12-03")).await;
    assert!(
        confirmation.contains("The agenda for Thursday 3 December 2099 has gone: the board will be told in an agenda update within the hour"),
        "{confirmation}"
    );
    clock.set(london(2099, 11, 30, 10, 30));
    assert_eq!(restarted(&app, &clock).run_agendas().await.unwrap(), none, "an update before its hour");
    clock.set(london(2099, 11, 30, 10, 40));
    decide(&app, clock_now(&clock), &r[2], "meeting", None).await;
    clock.set(london(2099, 11, 30, 11, 0));
    assert_eq!(restarted(&app, &clock).run_agendas().await.unwrap(), [AgendaMail::Update(thursday_3)]);
    assert_eq!(told(&app, "2099-12-03").await, sorted(&r[0..3]));
    // Deciding an item the board has again changes nothing it needs to hear.
    clock.set(london(2099, 11, 30, 11, 10));
    let confirmation = decide(&app, clock_now(&clock), &r[0], "meeting", Some("2099-12-03")).await;
    assert!(
        confirmation.contains("The board has it on the agenda for Thursday 3 December 2099"),
        "{confirmation}"
    );
    clock.set(london(2099, 11, 30, 12, 30));
    assert_eq!(restarted(&app, &clock).run_agendas().await.unwrap(), none, "an update with nothing new");

    // One moved off, one moved to the next meeting: one update.
    clock.set(london(2099, 12, 1, 9, 0));
    decide(&app, clock_now(&clock), &r[0], "paper", None).await;
    decide(&app, clock_now(&clock), &r[1], "meeting", Some("2099-12-10")).await;
    clock.set(london(2099, 12, 1, 10, 0));
    assert_eq!(restarted(&app, &clock).run_agendas().await.unwrap(), [AgendaMail::Update(thursday_3)]);
    assert_eq!(restarted(&app, &clock).run_agendas().await.unwrap(), none, "the update went twice");
    assert_eq!(told(&app, "2099-12-03").await, [r[2].clone()]);

    // Half an hour before the last call (11:00, two hours before 13:00): the update goes at
    // the last call, not an hour later.
    clock.set(london(2099, 12, 3, 10, 30));
    decide(&app, clock_now(&clock), &r[3], "meeting", Some("2099-12-03")).await;
    clock.set(london(2099, 12, 3, 11, 0));
    assert_eq!(restarted(&app, &clock).run_agendas().await.unwrap(), [AgendaMail::Update(thursday_3)]);
    // After the last call: too late, and the gatekeepers are told so.
    clock.set(london(2099, 12, 3, 11, 30));
    let confirmation = decide(&app, clock_now(&clock), &r[4], "meeting", Some("2099-12-03")).await;
    assert!(
        confirmation.contains("It is too late for the agenda for Thursday 3 December 2099: the board will not be told before the meeting, so raise it at the meeting"),
        "{confirmation}"
    );
    clock.set(london(2099, 12, 3, 12, 45));
    assert_eq!(restarted(&app, &clock).run_agendas().await.unwrap(), none, "an update after the last call");
    assert_eq!(told(&app, "2099-12-03").await, sorted(&r[2..4]));

    // The next meeting's agenda carries the item moved to it; the one after has nothing on
    // it and gets no agenda, though the weekly summary still names it.
    clock.set(london(2099, 12, 7, 9, 0));
    assert_eq!(
        restarted(&app, &clock).run_agendas().await.unwrap(),
        [AgendaMail::Agenda(date("2099-12-10"))]
    );
    clock.set(london(2099, 12, 14, 9, 0));
    let s = restarted(&app, &clock);
    assert_eq!(s.run_agendas().await.unwrap(), none, "an empty agenda went");
    assert!(!app.store.summary_sent("agenda", "2099-12-17").await.unwrap());
    assert_eq!(app.store.agenda_told(date("2099-12-17")).await.unwrap(), None);
    let summary = s.gather(&Period::seven_days_to(clock_now(&clock), London)).await.unwrap();
    let next = summary.next_meeting.expect("the weekly summary names the next meeting");
    assert_eq!(next.date, "Thursday 17 December 2099");
    assert!(next.items.is_empty());

    // What the board received: two agendas and three updates, each once.
    // The daemon's sender runs on the real clock, for which mail queued in 2099 is not due
    // yet: due now.
    on_db!(app.db().await, |pool| {
        sqlx::query("UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending'")
            .execute(pool)
            .await
            .unwrap();
    });
    app.stack.wait_for_mail(&app.board, 5).await;
    app.wait_for_outbox_drain().await;
    let mail: Vec<(String, String)> =
        app.stack.mailbox(&app.board).iter().map(|m| (header(m, "Subject").unwrap(), readable(m))).collect();
    assert_eq!(mail.len(), 5, "{:?}", mail.iter().map(|m| &m.0).collect::<Vec<_>>());
    let find = |needle: &str| -> Vec<&(String, String)> {
        mail.iter().filter(|(s, _)| s.contains(needle)).collect()
    };
    let agenda = find("agenda items for the meeting on Thursday 3 December 2099 (1)");
    assert_eq!(agenda.len(), 1);
    assert!(agenda[0].1.contains(&r[0]) && !agenda[0].1.contains(&r[1]), "{}", agenda[0].1);
    let added = find("agenda update for the meeting on Thursday 3 December 2099 (2 added)");
    assert_eq!(added.len(), 1);
    let text = &added[0].1;
    assert!(text.contains("ADDED TO THE AGENDA") && text.contains(&r[1]) && text.contains(&r[2]), "{text}");
    assert!(text.contains(&format!("The agenda now has 3 items: {}, {}, {}.", r[0], r[1], r[2])), "{text}");
    let off = find("agenda update for the meeting on Thursday 3 December 2099 (2 off)");
    assert_eq!(off.len(), 1);
    let text = &off[0].1;
    assert!(text.contains(&format!("{}  Approach number 0 (now decided paper)", r[0])), "{text}");
    assert!(
        text.contains(&format!(
            "{}  Approach number 1 (moved to the meeting on Thursday 10 December 2099)",
            r[1]
        )),
        "{text}"
    );
    assert!(text.contains(&format!("The agenda now has 1 item: {}.", r[2])), "{text}");
    let last_call = find("agenda update for the meeting on Thursday 3 December 2099 (1 added)");
    assert_eq!(last_call.len(), 1);
    assert!(last_call[0].1.contains(&r[3]) && !last_call[0].1.contains(&r[4]), "{}", last_call[0].1);
    let next = find("agenda items for the meeting on Thursday 10 December 2099 (1)");
    assert_eq!(next.len(), 1);
    assert!(next[0].1.contains(&r[1]), "{}", next[0].1);
    assert!(mail.iter().all(|(_, m)| !m.contains(&r[4])), "the late decision reached the board");
    assert!(find("17 December").is_empty());
    // And the outbox holds exactly those.
    let sql = "SELECT kind, COUNT(*) FROM outbox WHERE kind IN ('agenda', 'agenda_update') GROUP BY kind ORDER BY kind";
    let kinds: Vec<(String, i64)> =
        on_db!(app.db().await, |pool| sqlx::query_as(sql).fetch_all(pool).await.unwrap());
    assert_eq!(kinds, [("agenda".to_string(), 2), ("agenda_update".to_string(), 3)]);
    app.stop().await;
}

fn clock_now(clock: &ManualClock) -> DateTime<Utc> {
    gatehouse::clock::Clock::now(clock)
}

#[tokio::test]
async fn the_cli_previews_and_resends_an_agenda() {
    let app = TestApp::spawn().await;
    let r = approaches(&app, 2).await;
    app.cli_ok(&["triage", &r[0], "meeting", "2099-12-03"]);
    let preview = app.cli_ok(&["agenda", "preview", "2099-12-03"]);
    let text = String::from_utf8_lossy(&preview.stdout);
    assert!(text.contains("agenda items for the meeting on Thursday 3 December 2099"), "{text}");
    assert!(text.contains(&r[0]) && !text.contains(&r[1]), "{text}");
    let html = app.cli_ok(&["agenda", "preview", "2099-12-03", "--format", "html"]);
    assert!(String::from_utf8_lossy(&html.stdout).starts_with("<!DOCTYPE html>"));
    assert!(!app.cli(&["agenda", "preview", "3 Dec"]).status.success(), "a bad date was taken");

    app.cli_ok(&["agenda", "send", "2099-12-03"]);
    let mail = app.stack.wait_for_mail(&app.board, 1).await;
    assert!(header(&mail[0], "Subject").unwrap().contains("Thursday 3 December 2099 (1)"));
    assert!(readable(&mail[0]).contains(&r[0]));
    let again = app.cli_ok(&["agenda", "send", "2099-12-03"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already sent"), "a repeat send must say so");
    // A resend lists what is decided now, and that is what the board has been told.
    app.cli_ok(&["triage", &r[1], "meeting", "2099-12-03"]);
    app.cli_ok(&["agenda", "send", "2099-12-03", "--force"]);
    let mail = app.stack.wait_for_mail(&app.board, 2).await;
    let resent =
        mail.iter().find(|m| header(m, "Subject").unwrap().contains("(2)")).expect("the resent agenda");
    assert!(readable(resent).contains(&r[1]));
    assert_eq!(told(&app, "2099-12-03").await, sorted(&r));
}

fn sorted(refs: &[String]) -> Vec<String> {
    let mut refs = refs.to_vec();
    refs.sort();
    refs
}
