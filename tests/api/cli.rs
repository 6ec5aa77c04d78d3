//! The command line as an operator meets it: `check` against the real stack, config errors,
//! empty listings, and `run` stopping cleanly on a signal.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{Options, TestApp, wait_until};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn check_reports_each_part_working_against_the_local_stack() {
    let app = TestApp::new(Options::default()).await;
    let out = app.cli(&["check"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "check failed:\n{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("IMAP OK"), "{stdout}");
    assert!(stdout.contains("IDLE supported"), "{stdout}");
    assert!(stdout.contains("SMTP OK"), "{stdout}");
    assert!(stdout.contains("database ready"), "{stdout}");
}

#[tokio::test]
async fn check_works_over_implicit_tls_too() {
    let app = TestApp::new(Options { security: "tls", ..Options::default() }).await;
    let out = app.cli(&["check"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("IMAP OK"));
}

#[tokio::test]
async fn check_names_the_connection_that_failed_and_why() {
    // A port nothing listens on stands for the stack being down, without stopping the
    // stack other tests share.
    let app = TestApp::new(Options { port: Some(1), ..Options::default() }).await;
    let out = app.cli(&["check"]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "check passed with IMAP down:\n{stdout}");
    let imap_line = stdout.lines().find(|l| l.starts_with("IMAP")).unwrap();
    assert!(imap_line.starts_with("IMAP FAILED"), "{stdout}");
    assert!(imap_line.contains("127.0.0.1:1"), "{imap_line}");
    assert!(imap_line.to_lowercase().contains("refused"), "{imap_line}");
    assert!(stdout.contains("SMTP OK"), "{stdout}");
}

#[tokio::test]
async fn check_reports_a_refused_login() {
    let app = TestApp::new(Options::default()).await;
    std::fs::write(app.dir.path().join("imap.password"), "wrong-password\n").unwrap();
    let out = app.cli(&["check"]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("IMAP FAILED: login refused"), "{stdout}");
    assert!(stdout.contains("SMTP FAILED"), "{stdout}");
    assert!(!stdout.contains("wrong-password"), "the password leaked: {stdout}");
}

#[tokio::test]
async fn a_bad_config_stops_every_command_and_names_file_and_key() {
    let app = TestApp::new(Options::default()).await;
    let original = std::fs::read_to_string(&app.config_path).unwrap();
    let cases = [
        (original.replace("poll_interval_secs = 1", "poll_intervall_secs = 1"), "imap.poll_intervall_secs"),
        (
            original
                .replace("security = \"starttls\"", "security = \"plain\"")
                .replace("host = \"127.0.0.1\"", "host = \"mail.example.org\""),
            "imap.security",
        ),
        (original.replace("timezone = \"Europe/London\"", "timezone = \"Mars/Olympus\""), "service.timezone"),
    ];
    for (bad, key) in cases {
        std::fs::write(&app.config_path, bad).unwrap();
        for command in [&["check"][..], &["requests", "list"][..], &["run"][..]] {
            let out = app.cli(command);
            let stderr = text(&out.stderr);
            assert!(!out.status.success(), "{command:?} accepted a bad config");
            assert!(stderr.contains(&app.config_path.display().to_string()), "{stderr}");
            assert!(stderr.contains(key), "{key} not named: {stderr}");
        }
    }
}

#[tokio::test]
async fn listings_are_empty_json_arrays_on_a_new_database() {
    let app = TestApp::new(Options::default()).await;
    assert_eq!(app.cli_json(&["requests", "list", "--format", "json"]), serde_json::json!([]));
    assert_eq!(app.cli_json(&["messages", "list", "--format", "json"]), serde_json::json!([]));
    let csv = app.cli(&["requests", "list", "--format", "csv"]);
    assert!(text(&csv.stdout).starts_with("reference,status,decision,requester"));
    let missing = app.cli(&["requests", "show", "GP-2026-0001"]);
    assert!(!missing.status.success());
}

#[tokio::test]
async fn migrate_is_idempotent() {
    let app = TestApp::new(Options::default()).await;
    let out = app.cli(&["migrate"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("0 migration(s) applied"), "{}", text(&out.stdout));
}

#[tokio::test]
async fn run_watches_the_inbox_and_exits_zero_on_sigterm_and_sigint() {
    for signal in ["-TERM", "-INT"] {
        let app = TestApp::new(Options::default()).await;
        let child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("--config")
            .arg(&app.config_path)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until("the daemon to report idle", || {
            let out = app.cli(&["status", "--format", "json"]);
            async move {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                (v["imap"] == "idle" && out.status.success()).then_some(())
            }
        })
        .await;
        let kill = Command::new("kill").arg(signal).arg(child.id().to_string()).status().unwrap();
        assert!(kill.success());
        let status = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
        assert!(status.status.success(), "run exited {:?}: {}", status.status, text(&status.stderr));
        // Once stopped, status says so and exits non-zero.
        let out = app.cli(&["status", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["imap"], "down");
        assert!(!out.status.success());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_refused_login_is_shown_in_status_and_told_to_the_gatekeeper() {
    let mut app = TestApp::new(Options::default()).await;
    std::fs::write(app.dir.path().join("imap.password"), "wrong-password\n").unwrap();
    // SMTP uses its own password file here, so the alert can still go out.
    let config = std::fs::read_to_string(&app.config_path).unwrap();
    let smtp_at = config.find("[smtp]").unwrap();
    let (head, tail) = config.split_at(smtp_at);
    std::fs::write(app.dir.path().join("smtp.password"), format!("{}\n", crate::helpers::PASSWORD)).unwrap();
    std::fs::write(&app.config_path, format!("{head}{}", tail.replace("imap.password", "smtp.password")))
        .unwrap();

    let token = tokio_util::sync::CancellationToken::new();
    let daemon = gatehouse::daemon::App::open(app.config()).await.unwrap();
    let handle = tokio::spawn(daemon.run(token.clone()));
    wait_until("status auth_failed", || {
        let out = app.cli(&["status", "--format", "json"]);
        async move {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["imap"] == "auth_failed").then_some(())
        }
    })
    .await;
    let alert = app.stack.wait_for_mail(&app.gatekeeper, 1).await.remove(0);
    let subject = crate::helpers::header(&alert, "Subject").unwrap();
    assert!(subject.contains("cannot log in"), "{subject}");
    assert!(!String::from_utf8_lossy(&alert).contains("wrong-password"));
    token.cancel();
    handle.await.unwrap().unwrap();
    let _ = &mut app;
}

#[tokio::test]
async fn csv_of_a_real_request_reads_back_as_its_json_commas_and_quotes_included() {
    let mut app = TestApp::spawn().await;
    let partner = app.stack.user("csv-partner", "icb.test");
    // The subject decodes to: Phlebotomy, "urgent" (line break) from April
    let raw = format!(
        "From: \"Bloggs, Jo \\\"JB\\\"\" <{partner}>\r\nTo: {}\r\nSubject: =?utf-8?Q?Phlebotomy=2C_=22urgent=22=0Afrom_April?=\r\nMessage-ID: <csv-{}@icb.test>\r\nDate: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nCould practices help?\r\n",
        app.shared,
        crate::helpers::rand_suffix(),
        chrono::Utc::now().to_rfc2822()
    );
    app.stack.send_raw(&partner, &[&app.shared], raw.as_bytes()).await;
    app.wait_for_messages(1).await;
    app.stop().await;

    let json = app.cli_json(&["requests", "list", "--format", "json"]);
    let out = app.cli_ok(&["requests", "list", "--format", "csv"]);
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1, "{}", text(&out.stdout));
    let cell = |name: &str| rows[0].get(headers.iter().position(|h| h == name).unwrap()).unwrap().to_string();
    // Every cell reads back as the JSON row's value.
    for (name, value) in headers.iter().zip(rows[0].iter()) {
        let expected = match &json[0][name.as_str()] {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(items) => {
                items.iter().filter_map(|i| i.as_str()).collect::<Vec<_>>().join(";")
            }
            other => other.to_string(),
        };
        assert_eq!(value, expected, "column {name}: the CSV and the JSON disagree");
    }
    let subject = cell("subject");
    assert!(subject.starts_with("Phlebotomy, \"urgent\""), "{subject:?}");
    assert!(cell("requester_name").starts_with("Bloggs, Jo"), "{:?}", cell("requester_name"));
    assert_eq!(cell("requester"), partner);
}

#[tokio::test]
async fn gatehouse_log_format_json_makes_every_log_line_a_json_object() {
    let app = TestApp::new(Options::default()).await;
    let log_path = app.dir.path().join("json.log");
    let child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("--config")
        .arg(&app.config_path)
        .arg("run")
        .env("GATEHOUSE_LOG_FORMAT", "json")
        .env("GATEHOUSE_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    wait_until("the daemon to report idle", || {
        let out = app.cli(&["status", "--format", "json"]);
        async move {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["imap"] == "idle").then_some(())
        }
    })
    .await;
    let partner = app.stack.user("json-log", "icb.test");
    app.stack.send(&partner, &app.shared, "Logged as JSON", "body").await;
    app.stack.wait_for_mail(&partner, 1).await;
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success());

    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    let mut messages = Vec::new();
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let time = v["timestamp"].as_str().unwrap_or_else(|| panic!("no timestamp: {line}"));
        chrono::DateTime::parse_from_rfc3339(time).unwrap_or_else(|e| panic!("{time}: {e}"));
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&v["level"].as_str().unwrap()),
            "{line}"
        );
        let target = v["target"].as_str().unwrap_or_else(|| panic!("no target: {line}"));
        // gatehouse's own events all carry a message (a library's may carry only fields).
        if target.starts_with("gatehouse") {
            messages.push(v["message"].as_str().unwrap_or_else(|| panic!("no message: {line}")).to_string());
        }
    }
    assert!(messages.iter().any(|m| m.contains("First start on INBOX")), "{log}");
    assert!(!log.contains(crate::helpers::PASSWORD), "the password reached the log");
}
