//! Secrets stay secret and the data stays private.

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

use crate::helpers::{Options, TestApp, wait_until};

pub(crate) fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn no_secret_reaches_the_log_even_at_trace_level() {
    let app = TestApp::new(Options::default()).await;
    // The password from the environment this time (the tests' mail users share one).
    let text = std::fs::read_to_string(&app.config_path)
        .unwrap()
        .replace("password_file = \"imap.password\"", "password_env = \"GATEHOUSE_TEST_SECRET\"");
    std::fs::write(&app.config_path, text).unwrap();
    let password = crate::helpers::PASSWORD;
    // The log goes to a file, not a pipe: nobody reads a pipe until the daemon stops, and a
    // trace log fills one in moments, which blocked the daemon mid-write and hung the test.
    let log_path = app.dir.path().join("trace.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("--config")
        .arg(&app.config_path)
        .arg("run")
        .env("GATEHOUSE_TEST_SECRET", password)
        .env("GATEHOUSE_LOG", "trace,async_imap=trace,lettre=trace,imap_proto=trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .spawn()
        .unwrap();
    let partner = app.stack.user("secrets", "icb.test");
    app.stack.send(&partner, &app.shared, "Log me", "body").await;
    app.stack.wait_for_mail(&partner, 1).await;
    let check = app.cli(&["check"]);
    let _ = &check;
    wait_until("the daemon's status", || {
        let out = app.cli(&["status", "--format", "json"]);
        async move { out.status.success().then_some(()) }
    })
    .await;
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    let log = std::fs::read(&log_path).unwrap();
    let log = String::from_utf8_lossy(&log);
    assert!(log.len() > 1000, "the trace log is suspiciously short: {log}");
    let user = app.shared.clone();
    for form in [
        password.to_string(),
        base64(password.as_bytes()),
        base64(format!("\0{user}\0{password}").as_bytes()),
        base64(format!("{user}\0{user}\0{password}").as_bytes()),
    ] {
        if let Some(at) = log.find(&form) {
            let line = log[..at].rsplit('\n').next().unwrap_or_default();
            panic!("the log contains a secret ({form}) after: {line}");
        }
    }
    let debug = format!("{:?}", app.config());
    assert!(!debug.contains(password));
}

#[tokio::test]
async fn the_data_directory_and_database_are_private() {
    crate::sqlite_only!(
        "the modes of the SQLite file and the folder it makes (PostgreSQL's data is on its server)"
    );
    let app = TestApp::new(Options::default()).await;
    let data = app.dir.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("gatehouse.db")), 0o600);
}
