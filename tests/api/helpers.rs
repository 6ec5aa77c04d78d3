//! The test harness: the mail stack, per-test users and databases, the daemon in-process
//! with a shutdown handle, and ways to look at what arrived where.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gatehouse::config::Config;
use gatehouse::daemon::App;
use gatehouse::store::SharedStore;
use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio_util::sync::CancellationToken;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
pub const PASSWORD: &str = "test-password";

/// The running local mail stack.
#[derive(Debug)]
pub struct Stack {
    pub host: String,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub smtp_port: u16,
    pub submission_port: u16,
    pub ca_file: PathBuf,
    pub script: PathBuf,
    /// The OAuth2 stand-in (token + introspection endpoint Dovecot checks XOAUTH2 against).
    pub oauth_url: String,
    /// Environment for every `mailstack` call: empty for the shared stack, the state folder
    /// and ports for a private one.
    env: Vec<(String, String)>,
}

static STACK: OnceLock<Stack> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Starts the stack (or finds it running) once per test binary.
pub fn stack() -> &'static Stack {
    STACK.get_or_init(|| Stack::up_with(Vec::new()))
}

impl Stack {
    /// Runs `mailstack up` with `env`, then reads where everything is from `mailstack env`.
    fn up_with(env: Vec<(String, String)>) -> Stack {
        let script = Path::new(REPO).join("deploy/local/mailstack");
        let mut stack = Stack {
            host: String::new(),
            imap_port: 0,
            imaps_port: 0,
            smtp_port: 0,
            submission_port: 0,
            ca_file: PathBuf::new(),
            script,
            oauth_url: String::new(),
            env,
        };
        stack.run(&["up"]);
        let env = stack.command().arg("env").output().expect("run mailstack env");
        let mut vars = BTreeMap::new();
        for line in String::from_utf8_lossy(&env.stdout).lines() {
            if let Some((k, v)) = line.trim_start_matches("export ").split_once('=') {
                vars.insert(k.to_string(), v.trim_matches('\'').to_string());
            }
        }
        let get = |k: &str| vars.get(k).cloned().unwrap_or_else(|| panic!("mailstack env lacks {k}"));
        stack.host = get("GATEHOUSE_MAIL_HOST");
        stack.imap_port = get("GATEHOUSE_IMAP_PORT").parse().unwrap();
        stack.imaps_port = get("GATEHOUSE_IMAPS_PORT").parse().unwrap();
        stack.smtp_port = get("GATEHOUSE_SMTP_PORT").parse().unwrap();
        stack.submission_port = get("GATEHOUSE_SUBMISSION_PORT").parse().unwrap();
        stack.ca_file = PathBuf::from(get("GATEHOUSE_MAIL_CA_FILE"));
        stack.oauth_url = get("GATEHOUSE_OAUTH_URL");
        stack
    }

    /// `deploy/local/mailstack` for this stack.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.script);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null());
        cmd
    }

    /// Runs `mailstack ARGS…`, failing the test if it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("run mailstack");
        assert!(
            out.status.success(),
            "mailstack {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Messages Postfix has accepted but not yet delivered (or bounced).
    pub fn queued(&self) -> usize {
        self.run(&["queue"]).trim().parse().expect("mailstack queue prints a number")
    }

    /// Waits until Postfix has delivered everything it accepted, so a count of what arrived
    /// is final (a bound for a hang, not a speed requirement).
    pub async fn wait_for_queue_empty(&self) {
        wait_while_progressing(STALL, "Postfix's queue to empty", || {
            let n = self.queued();
            async move { (n as i64, (n == 0).then_some(())) }
        })
        .await;
    }

    /// Delivers `raw` to `to` straight through Dovecot (LDA), not Postfix: mail arriving
    /// while Postfix is down.
    pub fn deliver(&self, from: &str, to: &str, raw: &[u8]) {
        use std::io::Write as _;
        let mut child = self
            .command()
            .args(["deliver", to, from])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("run mailstack deliver");
        child.stdin.take().unwrap().write_all(raw).unwrap();
        assert!(child.wait().unwrap().success(), "mailstack deliver to {to} failed");
    }

    /// A new mail user unique to this test run, e.g. `jo-17-4242@icb.test`.
    pub fn user(&self, name: &str, domain: &str) -> String {
        self.users(&[(name, domain)]).remove(0)
    }

    /// Several new users at once (adding users costs the stack about a second per call).
    pub fn users(&self, wanted: &[(&str, &str)]) -> Vec<String> {
        let addresses: Vec<String> = wanted
            .iter()
            .map(|(name, domain)| {
                let n = COUNTER.fetch_add(1, Ordering::SeqCst);
                format!("{name}-{n}-{}-{}@{domain}", std::process::id(), rand_suffix())
            })
            .collect();
        let mut cmd = self.command();
        cmd.arg("add-user");
        for a in &addresses {
            cmd.args([a.as_str(), PASSWORD]);
        }
        let out = cmd.output().expect("run mailstack add-user");
        assert!(out.status.success(), "add-user failed: {}", String::from_utf8_lossy(&out.stderr));
        addresses
    }

    pub fn maildir(&self, address: &str) -> PathBuf {
        let out = self.command().args(["maildir", address]).output().expect("mailstack maildir");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    }

    /// Every message delivered to `address`, oldest first, as raw bytes.
    pub fn mailbox(&self, address: &str) -> Vec<Vec<u8>> {
        let root = self.maildir(address);
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(root.join(sub)) {
                for e in entries.flatten() {
                    let modified = e.metadata().and_then(|m| m.modified()).ok();
                    files.push((modified, e.path()));
                }
            }
        }
        files.sort();
        files.into_iter().filter_map(|(_, p)| std::fs::read(p).ok()).collect()
    }

    /// Sends raw bytes through Postfix's port 2525, as mail from the outside world arrives.
    pub async fn send_raw(&self, from: &str, to: &[&str], raw: &[u8]) {
        let transport =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host).port(self.smtp_port).build();
        let envelope =
            Envelope::new(Some(from.parse().unwrap()), to.iter().map(|t| t.parse().unwrap()).collect())
                .unwrap();
        transport.send_raw(&envelope, raw).await.expect("send through the local stack");
    }

    /// Sends a simple plain-text email.
    pub async fn send(&self, from: &str, to: &str, subject: &str, body: &str) -> String {
        let id = format!("{}.{}@sender.test", rand_suffix(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let raw = format!(
            "From: Test Sender <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
            chrono::Utc::now().to_rfc2822()
        );
        self.send_raw(from, &[to], raw.as_bytes()).await;
        id
    }

    /// Waits until `address` holds at least `n` messages. Fails only when nothing new has
    /// arrived for two minutes: a hang detector, not a timing assertion.
    pub async fn wait_for_mail(&self, address: &str, n: usize) -> Vec<Vec<u8>> {
        wait_while_progressing(STALL, &format!("{n} message(s) in {address}"), || {
            // Counted without reading them: a thousand files four times a second adds up.
            let count = self.count(address);
            async move { (count as i64, (count >= n).then_some(())) }
        })
        .await;
        self.mailbox(address)
    }

    /// How many messages `address` holds.
    pub fn count(&self, address: &str) -> usize {
        let root = self.maildir(address);
        ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(root.join(sub)).ok())
            .map(Iterator::count)
            .sum()
    }
}

/// A mail stack of one test's own (its own state folder, free ports, its own Dovecot and
/// Postfix), for faults that would break the shared stack under the tests running beside it:
/// restarting Dovecot, stopping Postfix. Stopped and removed when dropped.
pub struct PrivateStack {
    pub stack: &'static Stack,
    state: tempfile::TempDir,
}

impl PrivateStack {
    pub fn start() -> PrivateStack {
        use std::os::unix::fs::PermissionsExt as _;
        let state = tempfile::Builder::new().prefix("gatehouse-stack-").tempdir().unwrap();
        // Postfix, Dovecot and the mail user must be able to reach the state folder.
        std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // Ports the kernel has just handed out, so free now; all five held until all are known.
        let listeners: Vec<_> = (0..5).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
        drop(listeners);
        let mut env =
            vec![("GATEHOUSE_MAIL_STATE".to_string(), state.path().join("state").display().to_string())];
        for (name, port) in ["IMAP", "IMAPS", "SMTP", "SUBMISSION", "OAUTH"].iter().zip(&ports) {
            env.push((format!("GATEHOUSE_{name}_PORT"), port.to_string()));
        }
        // `up` after a fault waits for every port to greet; on a loaded machine that can take
        // longer than the default 30 s.
        env.push(("GATEHOUSE_MAIL_WAIT".to_string(), "120".to_string()));
        // Leaked: TestApp holds `&'static Stack`; one small struct per test that needs it.
        let stack: &'static Stack = Box::leak(Box::new(Stack::up_with(env)));
        PrivateStack { stack, state }
    }

    /// Stops one daemon: "dovecot" or "postfix".
    pub fn stop(&self, service: &str) {
        self.stack.run(&["stop", service]);
    }

    /// Starts whatever is stopped and waits until every port answers.
    pub fn up(&self) {
        self.stack.run(&["up"]);
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        let _ = self.stack.command().arg("down").output();
        // The short socket folder lives outside the state folder (Unix socket paths are
        // limited), named by the state path's hash.
        let _ = std::fs::read_to_string(self.state.path().join("state/sockdir"))
            .map(|dir| std::fs::remove_dir_all(dir.trim()));
    }
}

pub fn rand_suffix() -> String {
    use rand::Rng as _;
    let n: u32 = rand::rng().random();
    format!("{n:08x}")
}

/// How long large work may show no progress at all before a test calls it a hang.
pub const STALL: Duration = Duration::from_secs(120);

/// Polls `check` until it returns `(_, Some)`, failing the test only when the progress figure
/// it also returns (messages processed, emails arrived, …) has not moved for `stall`. For
/// large work, whose total time depends on the machine's load: a hang detector, never a
/// speed claim. Polls every 250 ms so the test's own reads do not compete with the daemon.
pub async fn wait_while_progressing<T, F, Fut>(stall: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (i64, Option<T>)>,
{
    let mut last = None;
    let mut since = tokio::time::Instant::now();
    loop {
        let (progress, done) = check().await;
        if let Some(v) = done {
            return v;
        }
        if last != Some(progress) {
            last = Some(progress);
            since = tokio::time::Instant::now();
        }
        assert!(
            since.elapsed() < stall,
            "gave up waiting for {what}: no progress for {} s (stuck at {progress})",
            stall.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls `check` until it returns `Some`, failing the test after 60 s.
pub async fn wait_until<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_until_within(Duration::from_secs(60), what, check).await
}

/// Like [`wait_until`], with the bound given (for work that is large by design).
pub async fn wait_until_within<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Options for a test's config.
#[derive(Debug, Clone)]
pub struct Options {
    pub security: &'static str,
    pub port: Option<u16>,
    pub smtp_port: Option<u16>,
    pub idle: bool,
    pub backlog: &'static str,
    pub meetings: &'static str,
    pub extra: String,
    /// The backend for this app alone: `Some(true)` PostgreSQL, `Some(false)` SQLite, `None`
    /// as `GATEHOUSE_TEST_BACKEND` says (for a benchmark that puts the two side by side).
    pub postgres: Option<bool>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            security: "starttls",
            port: None,
            smtp_port: None,
            idle: true,
            backlog: "log_only",
            meetings: "[\"2099-12-03\", \"2099-12-10\"]",
            extra: String::new(),
            postgres: None,
        }
    }
}

/// One test's gatehouse: its own shared mailbox, gatekeeper, board, data directory and
/// config file, and (once started) the daemon running in-process.
pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub shared: String,
    pub gatekeeper: String,
    pub board: String,
    pub stack: &'static Stack,
    pub store: SharedStore,
    /// The PostgreSQL database made for this app (dropped with it), when the tests run on
    /// PostgreSQL.
    pub pg: Option<PgTestDb>,
    daemon: Option<(CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>)>,
}

/// The backend the integration tests run on: `GATEHOUSE_TEST_BACKEND=postgres` for the
/// private cluster `deploy/local/pgcluster` runs (a fresh database per app), SQLite
/// otherwise.
pub fn on_postgres() -> bool {
    std::env::var("GATEHOUSE_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// Returns from the test (with a line saying why) when it runs on PostgreSQL: for tests of
/// what only SQLite has (its file, `gatehouse backup`, the disk-full ballast) or that read
/// the SQLite file directly.
#[macro_export]
macro_rules! sqlite_only {
    ($why:expr) => {
        if $crate::helpers::on_postgres() {
            // Past the test harness's capture (it takes only the print macros), so the run
            // shows every skip and deploy/local/test can count them.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "SKIPPED on PostgreSQL: {}: {}", module_path!(), $why);
            return;
        }
    };
}

/// The app's database as the test itself sees it, on whichever backend the suite runs: for
/// what the store has no method for (the outbox's rows, a request moved into the past). Used
/// through [`on_db!`] with SQL both migrations' twins take: `$1` parameters (SQLite takes
/// them too), the shared table and column names, integers as `i64`, bytes as `Vec<u8>`.
pub enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Db {
    /// Closes the pool (a test that polls while a daemon process writes opens many).
    pub async fn close(&self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// Runs `$body` with `$pool` bound to the [`Db`]'s pool (`&SqlitePool` or `&PgPool`): the
/// same sqlx calls compile for both, so a test reads the database one way on both backends.
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match &$db {
            $crate::helpers::Db::Sqlite($pool) => $body,
            $crate::helpers::Db::Postgres($pool) => $body,
        }
    };
}

impl TestApp {
    /// A pool on this app's database (the SQLite file, or the app's PostgreSQL database).
    pub async fn db(&self) -> Db {
        match &self.pg {
            Some(pg) => Db::Postgres(pg.pool().await),
            None => {
                let path = self.dir.path().join("data/gatehouse.db");
                Db::Sqlite(sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap())
            }
        }
    }
}

/// A database of its own on the private PostgreSQL cluster, dropped when the app is.
#[derive(Debug)]
pub struct PgTestDb {
    name: String,
    admin: sqlx::postgres::PgConnectOptions,
}

/// The private cluster's settings: `GATEHOUSE_PG_*` from the environment (as
/// `deploy/local/test` exports them), else from `deploy/local/pgcluster env`.
fn pg_cluster() -> BTreeMap<String, String> {
    let from_env: BTreeMap<String, String> =
        std::env::vars().filter(|(k, _)| k.starts_with("GATEHOUSE_PG_")).collect();
    if from_env.contains_key("GATEHOUSE_PG_URL") {
        return from_env;
    }
    let out = Command::new(Path::new(REPO).join("deploy/local/pgcluster")).arg("env").output().unwrap();
    assert!(
        out.status.success(),
        "GATEHOUSE_TEST_BACKEND=postgres but no private cluster: start one with `deploy/local/pgcluster up`"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

impl PgTestDb {
    /// Creates a fresh database; returns it with the `[service]` lines that point gatehouse
    /// at it (password from the cluster's file, TLS verified against its CA).
    pub async fn create() -> (PgTestDb, String) {
        use sqlx::Connection as _;
        let vars = pg_cluster();
        let get = |k: &str| vars.get(k).cloned().unwrap_or_else(|| panic!("pgcluster env lacks {k}"));
        let url = get("GATEHOUSE_PG_URL");
        let (password_file, ca_file) = (get("GATEHOUSE_PG_PASSWORD_FILE"), get("GATEHOUSE_PG_CA_FILE"));
        let password = std::fs::read_to_string(&password_file).unwrap();
        let admin: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        let admin = admin
            .password(password.trim())
            .ssl_mode(sqlx::postgres::PgSslMode::VerifyFull)
            .ssl_root_cert(ca_file.as_str());
        let name = format!("gh_api_{}{}", rand_suffix(), rand_suffix());
        let mut conn = sqlx::PgConnection::connect_with(&admin).await.expect("the private cluster answers");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
        let lines = format!(
            "database_url = \"{base}/{name}\"\ndatabase_password_file = \"{password_file}\"\ndatabase_ca_file = \"{ca_file}\"\n"
        );
        (PgTestDb { name, admin }, lines)
    }
}

impl PgTestDb {
    /// A pool on this database, for a test that reads what the store wrote.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect_with(self.admin.clone().database(&self.name)).await.unwrap()
    }
}

impl Drop for PgTestDb {
    /// Drops the database (closing whatever still holds it: an aborted daemon's pool) on a
    /// thread of its own, since the test's runtime may be the one being dropped.
    fn drop(&mut self) {
        let (name, admin) = (self.name.clone(), self.admin.clone());
        let dropped = std::thread::spawn(move || {
            use sqlx::Connection as _;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            // Tried again a few times: on a loaded machine FORCE's wait for the sessions it
            // ends can run out, or the shared cluster be short of connection slots a moment.
            runtime.block_on(async {
                let mut tries = 0;
                loop {
                    let dropped = async {
                        let mut conn = sqlx::PgConnection::connect_with(&admin).await?;
                        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                        let done = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.map(drop);
                        let _ = conn.close().await;
                        done
                    }
                    .await;
                    tries += 1;
                    if dropped.is_ok() || tries == 10 {
                        return dropped;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}: {dropped:?}", self.name);
        }
    }
}

impl TestApp {
    /// A configured app whose daemon is not yet running.
    pub async fn new(options: Options) -> TestApp {
        Self::new_on(stack(), options).await
    }

    /// Like [`TestApp::new`], on a given stack (a [`PrivateStack`]'s).
    pub async fn new_on(stack: &'static Stack, options: Options) -> TestApp {
        Self::build(stack, options).await
    }

    /// Like [`TestApp::new`], on a fresh PostgreSQL database whichever the suite's backend
    /// (for what only PostgreSQL has: several nodes on one database).
    pub async fn new_postgres(options: Options) -> TestApp {
        Self::build(stack(), Options { postgres: Some(true), ..options }).await
    }

    async fn build(stack: &'static Stack, options: Options) -> TestApp {
        // The in-process daemon's log, captured per test and shown when one fails (warnings
        // and errors; GATEHOUSE_TEST_LOG=info or debug for more).
        let filter = tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_TEST_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        let mut users = stack
            .users(&[
                ("gp-access", "gatehouse.test"),
                ("gatekeeper", "gatehouse.test"),
                ("board", "gatehouse.test"),
            ])
            .into_iter();
        let (shared, gatekeeper, board) =
            (users.next().unwrap(), users.next().unwrap(), users.next().unwrap());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("imap.password"), format!("{PASSWORD}\n")).unwrap();
        let (pg, database) = if options.postgres.unwrap_or_else(on_postgres) {
            let (db, lines) = PgTestDb::create().await;
            (Some(db), lines)
        } else {
            (None, String::new())
        };
        let port = options.port.unwrap_or(match options.security {
            "tls" => stack.imaps_port,
            _ => stack.imap_port,
        });
        let text = format!(
            r#"
[service]
name = "Test GP Leadership Group"
timezone = "Europe/London"
data_dir = "data"
reference_prefix = "GP"
{database}
[imap]
host = "{host}"
port = {port}
security = "{security}"
username = "{shared}"
password_file = "imap.password"
tls_ca_file = "{ca}"
mailbox = "INBOX"
idle = {idle}
poll_interval_secs = 1
backlog = "{backlog}"
timeout_secs = 20

[smtp]
host = "{host}"
port = {submission}
security = "starttls"
username = "{shared}"
password_file = "imap.password"
tls_ca_file = "{ca}"
from = "Test GP Single Point of Access <{shared}>"

[gatekeepers]
addresses = ["{gatekeeper}"]

[board]
addresses = ["{board}"]
summary_schedule = "0 8 * * MON"

[meetings]
dates = {meetings}

[priorities]
workforce = "Recruiting hard-to-find staff groups"
shift = "Reducing the shift of work from secondary to primary care"

[organisations]
"icb.test" = "Anytown ICB"
"trust.test" = "Anytown Hospitals NHS Trust"
{extra}
"#,
            host = stack.host,
            security = options.security,
            ca = stack.ca_file.display(),
            idle = options.idle,
            backlog = options.backlog,
            meetings = options.meetings,
            submission = options.smtp_port.unwrap_or(stack.submission_port),
            extra = options.extra,
            database = database,
        );
        let config_path = dir.path().join("gatehouse.toml");
        std::fs::write(&config_path, text).unwrap();
        let config = Config::load(&config_path).expect("test config loads");
        let store = gatehouse::store::open(&config).await.unwrap();
        store.migrate().await.unwrap();
        TestApp { dir, config_path, shared, gatekeeper, board, stack, store, pg, daemon: None }
    }

    pub async fn spawn() -> TestApp {
        let mut app = Self::new(Options::default()).await;
        app.start().await;
        app
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap()
    }

    /// Starts the daemon in-process without waiting for anything.
    pub async fn start_nowait(&mut self) {
        assert!(self.daemon.is_none(), "already running");
        let token = CancellationToken::new();
        let app = App::open(self.config()).await.unwrap();
        let handle = tokio::spawn(app.run(token.clone()));
        self.daemon = Some((token, handle));
    }

    /// Starts the daemon in-process and waits until it watches the inbox.
    pub async fn start(&mut self) {
        self.start_nowait().await;
        let store = self.store.clone();
        wait_until("the daemon to watch the inbox", || {
            let store = store.clone();
            async move {
                let s = store.daemon_status().await.ok().flatten()?;
                matches!(s.imap.as_str(), "idle" | "polling").then_some(())
            }
        })
        .await;
    }

    /// Stops the daemon the way SIGTERM does, and waits for it.
    pub async fn stop(&mut self) {
        if let Some((token, handle)) = self.daemon.take() {
            token.cancel();
            handle.await.unwrap().unwrap();
        }
    }

    /// Kills the daemon without letting it finish anything (a crash).
    pub async fn kill(&mut self) {
        if let Some((_, handle)) = self.daemon.take() {
            handle.abort();
            let _ = handle.await;
        }
    }

    /// Runs the real `gatehouse` binary against this app's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env_remove("GATEHOUSE_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs the CLI and fails the test, showing what it printed, unless it exits 0.
    pub fn cli_ok(&self, args: &[&str]) -> Output {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "gatehouse {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args);
        assert!(out.status.success(), "gatehouse {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits until `n` messages have been taken from the inbox and processed.
    pub async fn wait_for_messages(&self, n: usize) -> Vec<gatehouse::store::MessageRow> {
        let store = self.store.clone();
        wait_while_progressing(STALL, &format!("{n} processed message(s)"), || {
            let store = store.clone();
            async move {
                let Ok(rows) = store.list_messages().await else { return (-1, None) };
                let done = rows.iter().filter(|m| m.classification.is_some()).count();
                (done as i64, (done >= n).then_some(rows))
            }
        })
        .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some((token, handle)) = self.daemon.take() {
            token.cancel();
            handle.abort();
        }
    }
}

/// A fixture email from tests/fixtures/mail, with `{{name}}` placeholders replaced.
pub fn fixture(name: &str, vars: &[(&str, &str)]) -> Vec<u8> {
    let path = Path::new(REPO).join("tests/fixtures/mail").join(name);
    let mut raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (k, v) in vars {
        let pattern = format!("{{{{{k}}}}}");
        raw = replace_bytes(&raw, pattern.as_bytes(), v.as_bytes());
    }
    raw
}

pub fn replace_bytes(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

pub type Shared<T> = Arc<T>;

/// A TCP proxy in front of a real server that a test can break: `cut` drops every open
/// connection (a network blip), `refuse` makes new connections fail (a server outage).
pub struct Proxy {
    pub port: u16,
    state: Arc<std::sync::Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    refusing: bool,
    generation: u64,
    connections: u64,
}

impl Proxy {
    pub async fn start(target_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(std::sync::Mutex::new(ProxyState::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                let (refusing, generation) = {
                    let mut s = shared.lock().unwrap();
                    s.connections += 1;
                    (s.refusing, s.generation)
                };
                if refusing {
                    drop(inbound);
                    continue;
                }
                let watch = shared.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let cut = async {
                        loop {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            if watch.lock().unwrap().generation != generation {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        () = cut => {}
                    }
                });
            }
        });
        Proxy { port, state }
    }

    /// Drops every connection open now, as a network failure would.
    pub fn cut(&self) {
        self.state.lock().unwrap().generation += 1;
    }

    /// While refusing, connections are accepted and closed at once.
    pub fn refuse(&self, refusing: bool) {
        let mut s = self.state.lock().unwrap();
        s.refusing = refusing;
        if refusing {
            s.generation += 1;
        }
    }

    pub fn connections(&self) -> u64 {
        self.state.lock().unwrap().connections
    }
}

/// A header's value in raw message bytes (first occurrence, unfolded), for assertions.
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    // Maildir stores LF line ends; long headers are folded.
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    let head = text.split("\n\n").next().unwrap_or_default().replace("\n ", " ").replace("\n\t", " ");
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

impl TestApp {
    /// Waits until nothing is left to send. Fails only when the outbox has not moved for
    /// five minutes (a retry can be minutes away): a hang detector, not a speed requirement.
    pub async fn wait_for_outbox_drain(&self) {
        let store = self.store.clone();
        wait_while_progressing(Duration::from_secs(300), "the outbox to drain", || {
            let store = store.clone();
            async move {
                let pending = store.outbox_counts().await.map_or(-1, |c| c.pending);
                (pending, (pending == 0).then_some(()))
            }
        })
        .await;
    }

    /// Injects a fixture into this app's shared mailbox and waits until it is processed.
    pub async fn deliver_fixture(&self, name: &str) -> gatehouse::store::MessageRow {
        let raw = fixture(name, &[]);
        let id = gatehouse::inbox::dedup::message_id(&raw);
        self.stack.send_raw("sender@icb.test", &[&self.shared], &raw).await;
        let store = self.store.clone();
        wait_until(&format!("{name} to be processed"), || {
            let store = store.clone();
            let id = id.clone();
            async move {
                let rows = store.list_messages().await.ok()?;
                rows.into_iter().find(|m| m.classification.is_some() && (id.is_none() || m.message_id == id))
            }
        })
        .await
    }
}

/// The text of a delivered message for assertions: LF line ends (as Maildir stores them),
/// quoted-printable soft breaks and the common escapes undone.
pub fn readable(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .replace("\r\n", "\n")
        .replace("=\n", "")
        .replace("=3D", "=")
        .replace("=20", " ")
        .replace("=E2=80=99", "\u{2019}")
}
