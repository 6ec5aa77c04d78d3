//! Benchmarks, not tests: ignored by default, run with
//! `cargo test --release --test api bench_ -- --ignored --nocapture`.
//! They print figures for BENCHMARKS.md and assert nothing about speed. The backend is
//! SQLite unless `GATEHOUSE_TEST_BACKEND=postgres`; `bench_arrival_latency_sqlite_beside_postgres`
//! measures both in one run (the private cluster must be up: `deploy/local/pgcluster up`).

use std::time::{Duration, Instant};

use crate::helpers::{Options, TestApp};

/// Sends one approach from `partner` (a fresh user with an empty Maildir) to `app` through
/// Postfix, and returns how long until the acknowledgement appears in `partner`'s Maildir.
async fn arrival_to_acknowledgement(app: &TestApp, partner: &str) -> Duration {
    let new_dir = app.stack.maildir(partner).join("new");
    let start = Instant::now();
    app.stack.send(partner, &app.shared, "Latency probe", "How quickly is this acknowledged?").await;
    while std::fs::read_dir(&new_dir).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "no acknowledgement for {partner}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

/// One line of figures: median, p90, p95 and worst of `samples`.
fn latency_line(what: &str, mut samples: Vec<Duration>) -> String {
    samples.sort();
    let pct = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).saturating_sub(1)].as_secs_f64();
    format!(
        "arrival-to-acknowledgement {what} over {} approaches: p50 {:.3} s, p90 {:.3} s, p95 {:.3} s, max {:.3} s",
        samples.len(),
        pct(0.50),
        pct(0.90),
        pct(0.95),
        samples.last().unwrap().as_secs_f64()
    )
}

fn partners(app: &TestApp, tag: &str, n: usize) -> Vec<String> {
    let wanted: Vec<(String, String)> =
        (0..n).map(|i| (format!("latency{tag}{i}"), "icb.test".to_string())).collect();
    let wanted_refs: Vec<(&str, &str)> = wanted.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    app.stack.users(&wanted_refs)
}

#[tokio::test]
#[ignore = "benchmark"]
async fn bench_arrival_to_acknowledgement_latency() {
    let app = TestApp::spawn().await;
    let mut samples = Vec::new();
    for p in &partners(&app, "", 30) {
        samples.push(arrival_to_acknowledgement(&app, p).await);
    }
    let backend = if app.pg.is_some() { "on PostgreSQL" } else { "on SQLite" };
    println!("{}", latency_line(backend, samples));
}

/// The same measurement on both backends in one run: two daemons (one on a SQLite file,
/// one on a fresh database in the private PostgreSQL cluster) take approaches in turn,
/// which of the two goes first alternating each round, so the machine's drift falls on both.
#[tokio::test]
#[ignore = "benchmark"]
async fn bench_arrival_latency_sqlite_beside_postgres() {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(30);
    let mut sqlite = TestApp::new(Options { postgres: Some(false), ..Options::default() }).await;
    let mut postgres = TestApp::new(Options { postgres: Some(true), ..Options::default() }).await;
    sqlite.start().await;
    postgres.start().await;
    let (sqlite_partners, pg_partners) = (partners(&sqlite, "s", rounds), partners(&postgres, "p", rounds));
    let (mut on_sqlite, mut on_pg) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        if i % 2 == 0 {
            on_sqlite.push(arrival_to_acknowledgement(&sqlite, &sqlite_partners[i]).await);
            on_pg.push(arrival_to_acknowledgement(&postgres, &pg_partners[i]).await);
        } else {
            on_pg.push(arrival_to_acknowledgement(&postgres, &pg_partners[i]).await);
            on_sqlite.push(arrival_to_acknowledgement(&sqlite, &sqlite_partners[i]).await);
        }
    }
    println!("{}", latency_line("on SQLite", on_sqlite));
    println!("{}", latency_line("on PostgreSQL", on_pg));
}

#[tokio::test]
#[ignore = "benchmark"]
async fn bench_summary_over_100k_requests() {
    crate::sqlite_only!("reads the SQLite file directly");
    use std::sync::Arc;
    let app = TestApp::new(crate::helpers::Options::default()).await;
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        app.dir.path().join("data/gatehouse.db").display()
    ))
    .await
    .unwrap();
    // 100,000 requests over two years, a realistic mix of statuses and decisions.
    let now = chrono::Utc::now();
    let span_ms: i64 = 2 * 365 * 24 * 3600 * 1000;
    let load = Instant::now();
    let mut tx = pool.begin().await.unwrap();
    let orgs =
        ["Anytown ICB", "Anytown Hospitals NHS Trust", "Anytown Council", "Community Trust", "Hospice"];
    let decisions = [
        None,
        Some("meeting"),
        Some("paper"),
        Some("message"),
        Some("more_work"),
        Some("decline"),
        Some("redirect"),
    ];
    for i in 0..100_000i64 {
        let received = now.timestamp_millis() - span_ms + span_ms * i / 100_000;
        let decision = decisions[(i % 7) as usize];
        let status = match decision {
            None => "awaiting_triage",
            Some("more_work") => "waiting_on_requester",
            Some("meeting" | "paper" | "message") => "scheduled",
            _ => "closed",
        };
        // Old undecided ones are closed, as they would be in real life.
        let (status, decision) =
            if decision.is_none() && i < 99_900 { ("closed", Some("decline")) } else { (status, decision) };
        sqlx::query(
            "INSERT INTO requests (reference, ref_year, ref_seq, status, decision, requester, organisation, subject, body, received_at, decided_at, token, created_at, updated_at)
             VALUES (?1, 2026, ?2, ?3, ?4, ?5, ?6, ?7, 'A body of an approach.', ?8, ?9, ?10, ?8, ?8)",
        )
        .bind(format!("GP-2026-{i:05}"))
        .bind(i)
        .bind(status)
        .bind(decision)
        .bind(format!("sender{}@icb.test", i % 500))
        .bind(orgs[(i % 5) as usize])
        .bind(format!("Approach number {i} about a service change"))
        .bind(received)
        .bind(decision.map(|_| received + 3 * 24 * 3600 * 1000))
        .bind(format!("{i:032x}"))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    println!("loaded 100,000 requests in {:.1} s", load.elapsed().as_secs_f64());
    let config = Arc::new(app.config());
    let templates = Arc::new(gatehouse::templates::Templates::load(&config).unwrap());
    let summaries = gatehouse::summary::Summaries::new(
        config.clone(),
        app.store.clone(),
        Arc::new(gatehouse::clock::SystemClock),
        templates,
    );
    let period = gatehouse::summary::Period::seven_days_to(now, config.service.timezone);
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let html = summaries.render(&period, true).await.unwrap();
        times.push(start.elapsed());
        size = html.len();
    }
    times.sort();
    println!(
        "summary over 100,000 requests (HTML, {} KB): median {:.0} ms, best {:.0} ms, worst {:.0} ms over 5 runs",
        size / 1024,
        times[2].as_secs_f64() * 1000.0,
        times[0].as_secs_f64() * 1000.0,
        times[4].as_secs_f64() * 1000.0
    );
}
