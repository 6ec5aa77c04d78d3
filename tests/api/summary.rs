//! The board's weekly summary and meeting agendas: contents, once-only sending, the schedule
//! across clock changes and downtime (with a manual clock), and the HTML in a real browser.

use std::sync::Arc;

use chrono::{TimeZone as _, Utc};
use chrono_tz::Europe::London;
use gatehouse::clock::ManualClock;
use gatehouse::summary::{Sent, Summaries};

use crate::helpers::{Options, TestApp, header, readable};
use crate::on_db;

fn summaries(app: &TestApp, clock: Arc<ManualClock>) -> Summaries {
    let config = Arc::new(app.config());
    let templates = Arc::new(gatehouse::templates::Templates::load(&config).unwrap());
    Summaries::new(config, app.store.clone(), clock, templates)
}

fn london(y: i32, m: u32, d: u32, h: u32, min: u32) -> chrono::DateTime<Utc> {
    London.with_ymd_and_hms(y, m, d, h, min, 0).unwrap().with_timezone(&Utc)
}

async fn outbox_kinds(app: &TestApp, kind: &str) -> Vec<(String, i64)> {
    let sql = "SELECT subject, created_at FROM outbox WHERE kind = $1 ORDER BY id";
    on_db!(app.db().await, |pool| sqlx::query_as(sql).bind(kind).fetch_all(pool).await.unwrap())
}

/// The first agenda in the outbox, as the board will read it.
async fn first_agenda(app: &TestApp) -> String {
    let sql = "SELECT raw FROM outbox WHERE kind = 'agenda' ORDER BY id LIMIT 1";
    let raw: Vec<u8> = on_db!(app.db().await, |pool| sqlx::query_scalar(sql).fetch_one(pool).await.unwrap());
    readable(&raw)
}

/// Three approaches: one decided paper, one meeting with a note, one left waiting.
async fn a_week_of_approaches(app: &TestApp) -> Vec<String> {
    let partners = app.stack.users(&[("s1", "icb.test"), ("s2", "trust.test"), ("s3", "icb.test")]);
    for (p, subject) in partners.iter().zip(["Phlebotomy from April", "Discharge letters", "Flu clinics"]) {
        app.stack.send(p, &app.shared, subject, "Please could general practice help?").await;
    }
    app.wait_for_messages(3).await;
    let refs: Vec<String> = app
        .store
        .list_requests(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.reference)
        .collect();
    app.cli_ok(&["triage", &refs[0], "paper", "--priority", "workforce"]);
    app.cli_ok(&["triage", &refs[1], "meeting", "--note", "Invite the trust's CMO"]);
    refs
}

#[tokio::test]
async fn the_preview_shows_every_section_and_names_each_request() {
    let app = TestApp::spawn().await;
    let refs = a_week_of_approaches(&app).await;
    let out = app.cli(&["summary", "preview"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for section in [
        "NEW APPROACHES BY ORGANISATION",
        "DECISIONS",
        "WAITING FOR THE GATEKEEPER",
        "WAITING ON REQUESTERS",
        "NEXT MEETING: Thursday 3 December 2099",
        "TO CIRCULATE",
        "REPEATED APPROACHES",
        "PRIORITIES",
        "LAST EIGHT WEEKS",
    ] {
        assert!(text.contains(section), "{section} missing:\n{text}");
    }
    assert!(text.contains("3 new approaches, 2 decided, 1 waiting for the gatekeeper"), "{text}");
    for r in &refs {
        assert!(text.contains(r.as_str()), "{r} missing");
    }
    assert!(text.contains("Anytown ICB (2)") && text.contains("Anytown Hospitals NHS Trust (1)"), "{text}");
    assert!(text.contains("Recruiting hard-to-find staff groups: 1"), "{text}");
    assert!(text.contains("Median time from arrival to decision"));
    // The trend's last bar is this week, with the three approaches.
    let this_monday = {
        let today = chrono::Utc::now().with_timezone(&London).date_naive();
        today - chrono::Duration::days(i64::from(chrono::Datelike::weekday(&today).num_days_from_monday()))
    };
    let last_bar = format!("{}: 3 ####################", this_monday.format("%-d %b"));
    assert!(text.contains(&last_bar), "{last_bar:?} missing:\n{text}");
    let html =
        String::from_utf8_lossy(&app.cli(&["summary", "preview", "--format", "html"]).stdout).to_string();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains(&refs[2]));
    // A week with nothing in it still renders.
    let empty = app.cli(&["summary", "preview", "--week", "2026-01-07"]);
    assert!(
        String::from_utf8_lossy(&empty.stdout).contains("Monday 5 January 2026 to Sunday 11 January 2026")
    );
}

#[tokio::test]
async fn summary_send_goes_once_per_week_unless_forced() {
    let app = TestApp::spawn().await;
    a_week_of_approaches(&app).await;
    app.cli_ok(&["summary", "send"]);
    let mail = app.stack.wait_for_mail(&app.board, 1).await.remove(0);
    assert!(header(&mail, "Subject").unwrap().contains("weekly summary, 3 new, 2 decided, 1 waiting"));
    assert_eq!(header(&mail, "Auto-Submitted").unwrap(), "auto-generated");
    assert!(header(&mail, "Content-Type").unwrap().starts_with("multipart/alternative"));
    // A repeat send must exit 0.
    let again = app.cli_ok(&["summary", "send"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already sent"));
    app.cli_ok(&["summary", "send", "--force"]);
    app.stack.wait_for_mail(&app.board, 2).await;
    // A past week is its own period.
    app.cli_ok(&["summary", "send", "--week", "2026-01-07"]);
    app.stack.wait_for_mail(&app.board, 3).await;
    assert_eq!(outbox_kinds(&app, "summary").await.len(), 3);
}

#[tokio::test]
async fn the_schedule_keeps_local_time_across_clock_changes_and_catches_up_once() {
    let app = TestApp::new(Options::default()).await;
    let clock = Arc::new(ManualClock::new(london(2026, 10, 24, 12, 0)));
    let s = summaries(&app, clock.clone());
    let sent = |r: Option<Sent>| matches!(r, Some(Sent::Sent { .. }));
    // Installed on Saturday 24 October; clocks go back on Sunday 25th.
    assert!(!sent(s.run_schedule().await.unwrap()));
    clock.set(london(2026, 10, 26, 7, 59));
    assert!(!sent(s.run_schedule().await.unwrap()), "sent before 08:00 local");
    clock.set(london(2026, 10, 26, 8, 0));
    assert!(sent(s.run_schedule().await.unwrap()), "not sent at 08:00 GMT on Monday");
    clock.set(london(2026, 10, 26, 9, 0));
    assert!(!sent(s.run_schedule().await.unwrap()), "sent twice in one week");
    // A restart (a new scheduler on the same database) sends nothing more.
    let restarted = summaries(&app, clock.clone());
    assert!(!sent(restarted.run_schedule().await.unwrap()));
    // Down over two Mondays: one summary on start, covering the whole gap.
    clock.set(london(2026, 11, 11, 14, 0));
    match restarted.run_schedule().await.unwrap() {
        Some(Sent::Sent { period, .. }) => assert_eq!(period, "2026-11-09"),
        other => panic!("expected the missed summary, got {other:?}"),
    }
    assert!(!sent(restarted.run_schedule().await.unwrap()));
    let sql = "SELECT covers_from, covers_to FROM summaries WHERE period = '2026-11-09'";
    let (from, to): (i64, i64) =
        on_db!(app.db().await, |pool| sqlx::query_as(sql).fetch_one(pool).await.unwrap());
    assert_eq!(from, london(2026, 10, 26, 8, 0).timestamp_millis(), "the gap since the last summary");
    assert_eq!(to, london(2026, 11, 11, 14, 0).timestamp_millis());
    // Clocks go forward on 28 March 2027: 08:00 BST is 07:00 UTC.
    clock.set(Utc.with_ymd_and_hms(2027, 3, 29, 6, 59, 0).unwrap());
    let before = restarted.run_schedule().await.unwrap();
    // (The catch-up for the weeks since November goes now, before 08:00 BST on the 29th.)
    if sent(before) {
        assert!(!sent(restarted.run_schedule().await.unwrap()));
    }
    clock.set(Utc.with_ymd_and_hms(2027, 3, 29, 7, 0, 0).unwrap());
    match restarted.run_schedule().await.unwrap() {
        Some(Sent::Sent { period, .. }) => assert_eq!(period, "2027-03-29"),
        other => panic!("expected Monday 29 March's summary at 08:00 BST, got {other:?}"),
    }
}

#[tokio::test]
async fn each_meeting_gets_its_agenda_once() {
    let app =
        TestApp::new(Options { meetings: "[\"2099-12-03\", \"2099-12-10\"]", ..Options::default() }).await;
    let mut app = app;
    app.start().await;
    let refs = a_week_of_approaches(&app).await;
    app.stop().await;
    let clock = Arc::new(ManualClock::new(london(2099, 11, 29, 12, 0)));
    let s = summaries(&app, clock.clone());
    assert!(s.run_agendas().await.unwrap().is_empty(), "too early");
    clock.set(london(2099, 11, 30, 9, 0));
    let sent = s.run_agendas().await.unwrap();
    assert_eq!(sent.len(), 1);
    assert!(s.run_agendas().await.unwrap().is_empty(), "sent twice");
    let restarted = summaries(&app, clock.clone());
    clock.set(london(2099, 12, 2, 9, 0));
    assert!(restarted.run_agendas().await.unwrap().is_empty(), "sent again after a restart");
    // Nothing is decided for the second meeting: no agenda saying so.
    clock.set(london(2099, 12, 7, 9, 0));
    assert!(restarted.run_agendas().await.unwrap().is_empty(), "an empty agenda went");
    let agendas = outbox_kinds(&app, "agenda").await;
    assert_eq!(agendas.len(), 1);
    assert!(agendas[0].0.contains("Thursday 3 December 2099 (1)"), "{:?}", agendas[0]);
    // Its content: the item, its requester and the gatekeeper's note.
    let text = first_agenda(&app).await;
    assert!(text.contains(&refs[1]) && text.contains("Discharge letters"), "{text}");
    assert!(text.contains("Anytown Hospitals NHS Trust"), "{text}");
    // The board can include outside members: no internal notes, no addresses by default.
    assert!(
        !text.contains("CMO") && !text.contains("Gatekeeper's note"),
        "a note reached the board:\n{text}"
    );
    assert!(!text.contains("@trust.test"), "a requester's address reached the board:\n{text}");
    assert!(!text.contains(&refs[0]), "a paper is not on the agenda");
}

#[tokio::test]
async fn the_board_sees_notes_and_addresses_only_when_configured() {
    let mut app = TestApp::spawn().await;
    let refs = a_week_of_approaches(&app).await;
    app.stop().await;
    let config = std::fs::read_to_string(&app.config_path).unwrap().replace(
        "summary_schedule = \"0 8 * * MON\"",
        "summary_schedule = \"0 8 * * MON\"\nshare_notes = true\nshare_addresses = true",
    );
    std::fs::write(&app.config_path, config).unwrap();
    let requester = app.store.find_request(&refs[1]).await.unwrap().unwrap().requester;
    let s = summaries(&app, Arc::new(ManualClock::new(london(2099, 11, 30, 9, 0))));
    assert_eq!(s.run_agendas().await.unwrap().len(), 1);
    let text = first_agenda(&app).await;
    assert!(text.contains("CMO") && text.contains(&requester), "{text}");
}

#[tokio::test]
async fn the_html_summary_renders_in_a_real_browser() {
    let app = TestApp::spawn().await;
    a_week_of_approaches(&app).await;
    let html = app.cli(&["summary", "preview", "--format", "html"]).stdout;
    let artifacts = std::path::Path::new(crate::helpers::REPO).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let page = artifacts.join("summary.html");
    std::fs::write(&page, &html).unwrap();
    let shot = artifacts.join("summary.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| std::process::Command::new(c).arg("--version").output().is_ok())
        .expect("chromium is not installed: deploy/local/test installs it");
    let common = |cmd: &mut std::process::Command| {
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    let mut dom = std::process::Command::new(chromium);
    common(&mut dom);
    let dom = dom.arg("--dump-dom").arg(format!("file://{}", page.display())).output().unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    for id in
        ["new", "decisions", "waiting", "requesters", "agenda", "circulate", "repeats", "priorities", "trend"]
    {
        assert!(dom.contains(&format!("id=\"{id}\"")), "section {id} not rendered");
    }
    let mut screenshot = std::process::Command::new(chromium);
    common(&mut screenshot);
    let out = screenshot
        .arg("--window-size=720,2400")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let png = std::fs::read(&shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(png.len() > 20_000, "the screenshot is suspiciously small ({} bytes)", png.len());
}
