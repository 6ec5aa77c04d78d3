//! `gatehouse db copy --to postgres://…`: a deployment that took in mail on SQLite is
//! copied into a fresh PostgreSQL database, row for row and byte for byte, and the daemon
//! carries on there: the next reference follows the last, mail already taken in is not
//! taken in again. A copy into a database that holds gatehouse data, with a wrong
//! password, or while the daemon runs, is refused and writes nothing.

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use sqlx::Row as _;

use crate::helpers::{PgTestDb, TestApp, rand_suffix};
use crate::sqlite_only;
use crate::triage::{approach, gmail_reply, send};

/// A fresh database on the private cluster, its `[service]` lines and its URL.
async fn fresh_pg() -> (PgTestDb, String, String) {
    let (pg, lines) = PgTestDb::create().await;
    let url = setting(&lines, "database_url");
    (pg, lines, url)
}

/// A value from the `[service]` lines [`PgTestDb::create`] gives.
fn setting(lines: &str, key: &str) -> String {
    lines
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?.trim_start().strip_prefix('=')?.trim().strip_prefix('"')?.strip_suffix('"')
        })
        .unwrap_or_else(|| panic!("no {key} in {lines}"))
        .to_string()
}

/// Points the app's config at the PostgreSQL database (as the upgrade guide says, before
/// copying): the copy logs in with the same settings the daemon will.
fn point_config_at(app: &TestApp, lines: &str) {
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(&app.config_path, text.replacen("[service]\n", &format!("[service]\n{lines}"), 1))
        .unwrap();
}

/// `gatehouse db copy --to URL`, with extra environment.
fn db_copy(app: &TestApp, url: &str, json: bool, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.arg("--config").arg(&app.config_path).args(["db", "copy", "--to", url]);
    if json {
        cmd.args(["--format", "json"]);
    }
    cmd.env_remove("GATEHOUSE_CONFIG").env_remove("PGPASSWORD").stdin(Stdio::null());
    cmd.envs(env.iter().copied()).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Every gatehouse table in the PostgreSQL database with its row count.
async fn pg_counts(pool: &sqlx::PgPool) -> BTreeMap<String, i64> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut counts = BTreeMap::new();
    for table in tables {
        let sql = format!("SELECT COUNT(*) FROM \"{table}\"");
        counts.insert(table, sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.unwrap());
    }
    counts
}

/// Every table the SQLite migrations made, with its row count.
fn sqlite_counts(db: &rusqlite::Connection) -> BTreeMap<String, i64> {
    let mut stmt = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' AND name <> '_sqlx_migrations'")
        .unwrap();
    let tables: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    tables
        .into_iter()
        .map(|t| {
            let n = db.query_row(&format!("SELECT COUNT(*) FROM \"{t}\""), [], |r| r.get(0)).unwrap();
            (t, n)
        })
        .collect()
}

/// `(id, bytes)` of a table's byte column, by id, from each side.
fn sqlite_bytes(db: &rusqlite::Connection, table: &str, column: &str) -> Vec<(i64, Vec<u8>)> {
    let mut stmt = db.prepare(&format!("SELECT id, {column} FROM {table} ORDER BY id")).unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

async fn pg_bytes(pool: &sqlx::PgPool, table: &str, column: &str) -> Vec<(i64, Vec<u8>)> {
    let sql = format!("SELECT id, {column} FROM {table} ORDER BY id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

fn sqlite_file(app: &TestApp) -> rusqlite::Connection {
    rusqlite::Connection::open(app.dir.path().join("data/gatehouse.db")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_deployment_moves_to_postgres_and_carries_on_there() {
    sqlite_only!("copies this app's SQLite file into PostgreSQL");
    let mut app = TestApp::spawn().await;
    let suffix = rand_suffix();
    let decided = approach(&app, &format!("Winter pressures {suffix}")).await;
    let waiting = approach(&app, &format!("Estates review {suffix}")).await;
    app.stack.wait_for_mail(&decided.requester, 1).await;
    app.stack.wait_for_mail(&waiting.requester, 1).await;
    send(&app, &app.gatekeeper, &gmail_reply(&app.gatekeeper, &decided, "decline: not ours to decide")).await;
    app.stack.wait_for_mail(&decided.requester, 2).await;
    app.cli_ok(&["summary", "send"]);
    app.stack.wait_for_mail(&app.board, 1).await;
    app.wait_for_outbox_drain().await;
    app.stop().await;
    let requests_before = app.cli_json(&["requests", "list", "--format", "json"]);
    let messages_before = app.cli_json(&["messages", "list", "--format", "json"]);
    let status_before: Value =
        serde_json::from_slice(&app.cli(&["status", "--format", "json"]).stdout).unwrap();
    assert!(status_before["last_summary"].is_string(), "{status_before:#}");

    let (pg, lines, url) = fresh_pg().await;
    point_config_at(&app, &lines);
    let out = db_copy(&app, &url, true, &[]);
    assert!(out.status.success(), "db copy failed: {}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["committed"], true);

    // The report: every SQLite table, each matching, with the counts both sides hold.
    let db = sqlite_file(&app);
    let sqlite = sqlite_counts(&db);
    let pool = pg.pool().await;
    let postgres = pg_counts(&pool).await;
    let reported: BTreeMap<String, &Value> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["table"].as_str().unwrap().to_string(), t))
        .collect();
    assert_eq!(reported.keys().collect::<Vec<_>>(), sqlite.keys().collect::<Vec<_>>(), "{report:#}");
    for (table, count) in &sqlite {
        let row = reported[table];
        assert_eq!(row["sqlite_rows"], *count, "{table}");
        assert_eq!(row["postgres_rows"], *count, "{table}");
        assert_eq!(row["matches"], true, "{table}");
        assert_eq!(row["sqlite_checksum"], row["postgres_checksum"], "{table}");
        assert_eq!(postgres[table], *count, "{table} in PostgreSQL");
    }
    for table in
        ["requests", "messages", "raw_messages", "request_events", "outbox", "summaries", "mailbox_state"]
    {
        assert!(sqlite[table] > 0, "the deployment had no {table} to copy");
    }
    assert_eq!(sqlite["requests"], 2);
    // Raw bytes, compared outside the copy's own checksum.
    assert_eq!(sqlite_bytes(&db, "raw_messages", "raw"), pg_bytes(&pool, "raw_messages", "raw").await);
    assert_eq!(sqlite_bytes(&db, "outbox", "raw"), pg_bytes(&pool, "outbox", "raw").await);
    let last_request_id: i64 = db.query_row("SELECT MAX(id) FROM requests", [], |r| r.get(0)).unwrap();
    let last_message_id: i64 = db.query_row("SELECT MAX(id) FROM messages", [], |r| r.get(0)).unwrap();
    drop(db);

    // The daemon on PostgreSQL: the same requests and messages, as the CLI shows them.
    app.store = gatehouse::store::open(&app.config()).await.unwrap();
    assert!(app.store.describe().starts_with("postgres"), "{}", app.store.describe());
    assert_eq!(app.cli_json(&["requests", "list", "--format", "json"]), requests_before);
    assert_eq!(app.cli_json(&["messages", "list", "--format", "json"]), messages_before);
    app.start().await;
    let status = app.cli_json(&["status", "--format", "json"]);
    assert_eq!(status["running"], true, "{status:#}");
    assert_eq!(status["last_summary"], status_before["last_summary"], "the summary sent is remembered");

    // A new approach takes the next reference and the next ids: no gap, no repeat.
    let next = approach(&app, &format!("Flu clinics {suffix}")).await;
    let last_seq: u32 =
        requests_before[1]["reference"].as_str().unwrap().rsplit('-').next().unwrap().parse().unwrap();
    let expected = format!(
        "{}{:04}",
        requests_before[1]["reference"].as_str().unwrap().trim_end_matches(char::is_numeric),
        last_seq + 1
    );
    assert_eq!(next.reference, expected);
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM requests ORDER BY id").fetch_all(&pool).await.unwrap();
    assert_eq!(ids.last(), Some(&(last_request_id + 1)));
    let new_message: i64 = sqlx::query_scalar("SELECT MAX(id) FROM messages").fetch_one(&pool).await.unwrap();
    assert_eq!(new_message, last_message_id + 1, "the new approach is the only message taken in");
    app.stack.wait_for_mail(&next.requester, 1).await;
    app.wait_for_outbox_drain().await;

    // The mail taken in before the copy was not taken in again: no second acknowledgement.
    assert_eq!(app.stack.count(&decided.requester), 2, "acknowledgement and outcome only");
    assert_eq!(app.stack.count(&waiting.requester), 1, "one acknowledgement only");
    assert_eq!(app.store.list_messages().await.unwrap().len(), messages_before.as_array().unwrap().len() + 1);
    let listed = app.cli_json(&["requests", "list", "--format", "json"]);
    assert_eq!(listed.as_array().unwrap()[..2], requests_before.as_array().unwrap()[..]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_copies_write_nothing() {
    sqlite_only!("copies this app's SQLite file into PostgreSQL");
    let mut app = TestApp::spawn().await;
    let a = approach(&app, &format!("Out of hours {}", rand_suffix())).await;
    app.stack.wait_for_mail(&a.requester, 1).await;
    let (pg, lines, url) = fresh_pg().await;
    let pool = pg.pool().await;
    let password = std::fs::read_to_string(setting(&lines, "database_password_file")).unwrap();

    // While the daemon runs on the file.
    let out = db_copy(&app, &url, false, &[("PGPASSWORD", password.trim())]);
    assert!(!out.status.success());
    assert!(text(&out).contains("stop it first"), "{}", text(&out));
    assert!(pg_counts(&pool).await.is_empty(), "nothing written while the daemon runs");
    app.stop().await;

    // A wrong password ($PGPASSWORD, as for the daemon without database_password_*).
    let out = db_copy(&app, &url, false, &[("PGPASSWORD", "not-the-password")]);
    assert!(!out.status.success());
    assert!(text(&out).contains("password authentication failed"), "{}", text(&out));
    assert!(pg_counts(&pool).await.is_empty(), "nothing written with a wrong password");

    // A password in the URL is refused as in the config.
    let out = db_copy(&app, &url.replacen('@', ":secret@", 1), false, &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("password"), "{}", text(&out));

    // A value that would not come back the same (a flag other than 0 or 1) fails the copy
    // half-way: nothing is left behind, not even the schema.
    let db = sqlite_file(&app);
    db.execute("UPDATE messages SET backlog = 2 WHERE id = (SELECT max(id) FROM messages)", []).unwrap();
    let out = db_copy(&app, &url, false, &[("PGPASSWORD", password.trim())]);
    assert!(!out.status.success());
    assert!(text(&out).contains("messages") && text(&out).contains("rolled back"), "{}", text(&out));
    assert!(pg_counts(&pool).await.is_empty(), "a failed copy leaves nothing: {:?}", pg_counts(&pool).await);
    db.execute("UPDATE messages SET backlog = 0 WHERE backlog = 2", []).unwrap();

    // Text SQLite kept with a NUL (mail can carry one) arrives as the PostgreSQL store keeps
    // all text from mail: the NUL marked U+FFFD, the copy still verified and committed.
    db.execute(
        "INSERT INTO alerts (key, subject, first_raised, last_sent) VALUES ('nul', ?1, 0, 0)",
        ["a\0b"],
    )
    .unwrap();
    drop(db);

    // The right password copies (and exits 0, printing the table).
    let out = db_copy(&app, &url, false, &[("PGPASSWORD", password.trim())]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("requests"), "{}", text(&out));
    let copied = pg_counts(&pool).await;
    assert_eq!(copied["requests"], 1);
    let raw_before = pg_bytes(&pool, "raw_messages", "raw").await;
    let subject: String =
        sqlx::query("SELECT subject FROM alerts WHERE key = 'nul'").fetch_one(&pool).await.unwrap().get(0);
    assert_eq!(subject, "a\u{FFFD}b");

    // Into a database that now holds gatehouse data: refused, nothing changed.
    let out = db_copy(&app, &url, false, &[("PGPASSWORD", password.trim())]);
    assert!(!out.status.success());
    assert!(text(&out).contains("already holds gatehouse data"), "{}", text(&out));
    assert_eq!(pg_counts(&pool).await, copied);
    assert_eq!(pg_bytes(&pool, "raw_messages", "raw").await, raw_before);
}
