//! Benchmarks, not tests: ignored by default, run with
//! `cargo test --release --test api bench_ -- --ignored --nocapture`.
//! They print figures for BENCHMARKS.md and assert nothing about speed.

use std::time::{Duration, Instant};

use crate::helpers::TestApp;

#[tokio::test]
#[ignore = "benchmark"]
async fn bench_arrival_to_acknowledgement_latency() {
    let app = TestApp::spawn().await;
    let wanted: Vec<(String, String)> =
        (0..30).map(|i| (format!("latency{i}"), "icb.test".to_string())).collect();
    let wanted_refs: Vec<(&str, &str)> = wanted.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let partners = app.stack.users(&wanted_refs);
    let mut samples = Vec::new();
    for p in &partners {
        let new_dir = app.stack.maildir(p).join("new");
        let start = Instant::now();
        app.stack.send(p, &app.shared, "Latency probe", "How quickly is this acknowledged?").await;
        loop {
            if std::fs::read_dir(&new_dir).map(|d| d.count()).unwrap_or(0) > 0 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no acknowledgement for {p}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(start.elapsed());
    }
    samples.sort();
    let pct = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    println!(
        "arrival-to-acknowledgement over {} approaches: p50 {:.3} s, p95 {:.3} s, max {:.3} s",
        samples.len(),
        pct(0.50).as_secs_f64(),
        pct(0.95).as_secs_f64(),
        samples.last().unwrap().as_secs_f64()
    );
}
