//! Active/standby: two `gatehouse run` processes (the real binary, so they can be killed
//! with SIGKILL) on one PostgreSQL database and the real mail stack. Exactly one leads;
//! when it dies or loses the database the other takes over, and every approach ends as
//! exactly one request with its acknowledgement.
//!
//! These run on the private PostgreSQL cluster whichever backend the rest of the suite
//! uses (`deploy/local/test` starts it): several nodes exist only there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{
    Options, Proxy, STALL, TestApp, header, rand_suffix, stack, wait_until_within, wait_while_progressing,
};
use gatehouse::store::RequestFilter;

/// How long a takeover may take before a test gives up: the contract's 15 s, with room for
/// a loaded machine (a hang detector, not a timing claim).
const TAKEOVER_BOUND: Duration = Duration::from_secs(90);
/// The private cluster's port, which [`Proxy`] stands in front of.
const PG_PORT: u16 = 15432;

/// One `gatehouse run` process with a config of its own (node name, data directory, and
/// optionally the database reached through a proxy), logging to a file in the app's folder.
struct Node {
    name: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn new(app: &TestApp, name: &str, db_port: Option<u16>) -> Node {
        let text = std::fs::read_to_string(&app.config_path).unwrap();
        let mut text = text.replacen(
            "data_dir = \"data\"",
            &format!("data_dir = \"data-{name}\"\nnode_name = \"{name}\""),
            1,
        );
        if let Some(port) = db_port {
            text = text.replacen(&format!(":{PG_PORT}/"), &format!(":{port}/"), 1);
        }
        let config = app.dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let log = app.dir.path().join(format!("{name}.log"));
        Node { name: name.to_string(), config, log, child: None }
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env_remove("GATEHOUSE_CONFIG")
            .env("GATEHOUSE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: no cleanup, no lease released (a crash or a power cut).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    /// Kills the process; when the test failed, shows what it logged.
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- {} log (last 40 lines) ---", self.name);
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
    }
}

/// The app on a fresh PostgreSQL database, with acknowledgement limits wide enough for a
/// backlog from a few requesters.
async fn app() -> TestApp {
    let extra = "[acknowledgements]\nrate_limit_per_day = 1000\ndomain_limit_per_day = 1000\n".to_string();
    TestApp::new_postgres(Options { extra, ..Options::default() }).await
}

/// The node holding a live lease now, and its token, read from the database.
async fn leader(pool: &sqlx::PgPool) -> Option<(String, i64)> {
    sqlx::query_as("SELECT holder, token FROM leader_lease WHERE id = 1 AND expires_at > clock_timestamp()")
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn wait_for_leader(pool: &sqlx::PgPool, other_than: Option<&str>) -> (String, i64) {
    wait_until_within(TAKEOVER_BOUND, "a node to lead", || async move {
        leader(pool).await.filter(|(holder, _)| Some(holder.as_str()) != other_than)
    })
    .await
}

/// `gatehouse status --format json`'s nodes (run as the operator would, on any node's
/// config): name → (role, last_seen).
fn roles(app: &TestApp) -> BTreeMap<String, (String, String)> {
    // Exits 1 while no node watches the inbox (mid-takeover), and still prints the nodes.
    let out = app.cli(&["status", "--format", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    status["nodes"]
        .as_array()
        .expect("status lists the nodes")
        .iter()
        .map(|n| {
            let s = |k: &str| n[k].as_str().unwrap_or_else(|| panic!("node without {k}: {n}")).to_string();
            (s("node"), (s("role"), s("last_seen")))
        })
        .collect()
}

/// Waits until the nodes named have all been seen since `since` (an RFC 3339 time from the
/// database's own clock is compared as text: both are UTC in the same format).
async fn wait_for_roles(app: &TestApp, want: &[(&str, &str)], since: &str) {
    wait_until_within(TAKEOVER_BOUND, &format!("the nodes to stand as {want:?}"), || async move {
        let now = roles(app);
        want.iter()
            .all(|(node, role)| now.get(*node).is_some_and(|(r, seen)| r == role && seen.as_str() >= since))
            .then_some(())
    })
    .await;
}

/// Approaches from a few requesters, each with its own subject; returns (requester,
/// Message-ID, subject) for each.
struct Approaches {
    requesters: Vec<String>,
    sent: Vec<(String, String, String)>,
    tag: String,
}

impl Approaches {
    fn new() -> Approaches {
        let requesters = stack().users(&[
            ("practice-a", "nhs.test"),
            ("practice-b", "nhs.test"),
            ("practice-c", "nhs.test"),
        ]);
        Approaches { requesters, sent: Vec::new(), tag: rand_suffix() }
    }

    async fn send(&mut self, app: &TestApp, n: usize) {
        for _ in 0..n {
            let i = self.sent.len();
            let from = self.requesters[i % self.requesters.len()].clone();
            let subject = format!("Approach {i} about rota {} ({})", i * 7 + 3, self.tag);
            let body =
                format!("Could the group consider item {i}: our practice {i} needs help with {}.", i * 13);
            let id = stack().send(&from, &app.shared, &subject, &body).await;
            self.sent.push((from, id, subject));
        }
    }

    /// Waits until every approach is a request and has been acknowledged (the outbox
    /// drained), then returns (requests per approach, acknowledgements per approach).
    async fn settle(&self, app: &TestApp) -> Vec<(usize, usize)> {
        let what = format!("{} approaches logged and acknowledged", self.sent.len());
        wait_while_progressing(STALL, &what, || async move {
            let tally = self.tally(app).await;
            let done = tally.iter().filter(|(r, a)| *r >= 1 && *a >= 1).count();
            let drained = app.store.outbox_counts().await.is_ok_and(|c| c.pending == 0);
            (done as i64, (done == self.sent.len() && drained).then_some(tally))
        })
        .await
    }

    async fn tally(&self, app: &TestApp) -> Vec<(usize, usize)> {
        let requests = app.store.list_requests(&RequestFilter::default()).await.unwrap_or_default();
        let mut acks: BTreeMap<String, usize> = BTreeMap::new();
        for requester in &self.requesters {
            for raw in stack().mailbox(requester) {
                if let Some(to) = header(&raw, "In-Reply-To") {
                    *acks.entry(to.trim().to_string()).or_default() += 1;
                }
            }
        }
        self.sent
            .iter()
            .map(|(_, id, subject)| {
                let logged = requests.iter().filter(|r| r.subject == *subject).count();
                (logged, acks.get(&format!("<{id}>")).copied().unwrap_or(0))
            })
            .collect()
    }
}

/// What a failover left behind: approaches lost, requests duplicated, acknowledgements sent
/// more than once (the outbox's documented at-most-once resend of an interrupted send).
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    lost: usize,
    duplicated: usize,
    acked_twice: usize,
    acked_more: usize,
}

fn outcome(tally: &[(usize, usize)]) -> Outcome {
    Outcome {
        lost: tally.iter().filter(|(r, _)| *r == 0).count(),
        duplicated: tally.iter().map(|(r, _)| r.saturating_sub(1)).sum(),
        acked_twice: tally.iter().filter(|(_, a)| *a == 2).count(),
        acked_more: tally.iter().filter(|(_, a)| *a > 2).count(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_database_exactly_one_leads_and_status_lists_both() {
    let app = app().await;
    let pool = app.pg.as_ref().unwrap().pool().await;
    let (mut a, mut b) = (Node::new(&app, "node-a", None), Node::new(&app, "node-b", None));
    a.start();
    b.start();
    let (first, _) = wait_for_leader(&pool, None).await;
    let second = if first == "node-a" { "node-b" } else { "node-a" };
    wait_for_roles(&app, &[(first.as_str(), "leader"), (second, "standby")], "").await;

    // One approach, answered once: the standby does not read the inbox or send.
    let mut approaches = Approaches::new();
    approaches.send(&app, 2).await;
    let tally = approaches.settle(&app).await;
    assert_eq!(tally, vec![(1, 1), (1, 1)], "each approach one request, one acknowledgement");
    assert_eq!(leader(&pool).await.map(|(h, _)| h), Some(first.clone()), "the lease stayed put");
    let roles = roles(&app);
    assert_eq!(roles.len(), 2, "both nodes listed: {roles:?}");
    assert_eq!(roles.values().filter(|(r, _)| r == "leader").count(), 1, "exactly one leader: {roles:?}");
    a.kill();
    b.kill();
}

/// kill -9 the leader while a backlog is being taken in and more arrives: the standby
/// takes over; nothing is lost or logged twice; an acknowledgement goes twice at most when
/// its send was cut off (the outbox's documented resend). The killed node, restarted,
/// comes back as standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_backlog_hands_over_with_nothing_lost_or_logged_twice() {
    let app = app().await;
    let pool = app.pg.as_ref().unwrap().pool().await;
    let mut nodes = BTreeMap::from([
        ("node-a".to_string(), Node::new(&app, "node-a", None)),
        ("node-b".to_string(), Node::new(&app, "node-b", None)),
    ]);
    nodes.values_mut().for_each(Node::start);
    let (first, token) = wait_for_leader(&pool, None).await;

    let mut approaches = Approaches::new();
    approaches.send(&app, 20).await;
    // Mid-backlog: some taken in, not all.
    let store = &app.store;
    wait_until_within(STALL, "the backlog to be under way", || async move {
        let n = store.list_requests(&RequestFilter::default()).await.ok()?.len();
        (n >= 2).then_some(())
    })
    .await;
    nodes.get_mut(&first).unwrap().kill();
    approaches.send(&app, 10).await;

    let (second, new_token) = wait_for_leader(&pool, Some(&first)).await;
    assert!(new_token > token, "a takeover raises the fencing token");
    let tally = approaches.settle(&app).await;
    let seen = outcome(&tally);
    eprintln!("kill -9 mid-backlog, 30 approaches: {seen:?}");
    assert_eq!((seen.lost, seen.duplicated, seen.acked_more), (0, 0, 0), "{tally:?}");
    // At most the sends the kill cut off (PARALLEL_SENDS = 4) went twice.
    assert!(seen.acked_twice <= 4, "more acknowledgements went twice than were in flight: {tally:?}");

    // The old leader, restarted, stands by.
    let restarted = gatehouse::clock::rfc3339(chrono::Utc::now());
    nodes.get_mut(&first).unwrap().start();
    wait_for_roles(&app, &[(first.as_str(), "standby"), (second.as_str(), "leader")], &restarted).await;
    assert_eq!(leader(&pool).await.map(|(h, _)| h), Some(second));
}

/// The leader's connection to the database is cut (its network, not its process): it
/// stands down by its own clock, the other node takes over, nothing goes twice; when the
/// network comes back the old leader stands by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_database_stands_down_and_the_standby_takes_over() {
    let app = app().await;
    let pool = app.pg.as_ref().unwrap().pool().await;
    let proxy = Proxy::start(PG_PORT).await;
    let mut a = Node::new(&app, "node-a", Some(proxy.port));
    let mut b = Node::new(&app, "node-b", None);
    a.start();
    let pool = &pool;
    wait_until_within(TAKEOVER_BOUND, "node-a to lead", || async move {
        leader(pool).await.filter(|(h, _)| h == "node-a")
    })
    .await;
    b.start();
    wait_for_roles(&app, &[("node-a", "leader"), ("node-b", "standby")], "").await;
    let mut approaches = Approaches::new();
    approaches.send(&app, 4).await;
    approaches.settle(&app).await;

    proxy.refuse(true);
    wait_for_leader(pool, Some("node-a")).await;
    wait_until_within(TAKEOVER_BOUND, "node-a to stand down", || {
        let stood_down = a.log().contains("node-a: lost the leader lease");
        async move { stood_down.then_some(()) }
    })
    .await;
    approaches.send(&app, 4).await;
    let tally = approaches.settle(&app).await;
    // Nothing was in flight at the cut: every approach once, every acknowledgement once.
    assert_eq!(tally, vec![(1, 1); 8], "after the cut");

    let restored = gatehouse::clock::rfc3339(chrono::Utc::now());
    proxy.refuse(false);
    wait_for_roles(&app, &[("node-a", "standby"), ("node-b", "leader")], &restored).await;
    assert_eq!(approaches.tally(&app).await, vec![(1, 1); 8], "node-a, back, sent nothing");
    drop((a, b));
}

/// The takeover figures for BENCHMARKS.md (`deploy/local/failover-bench`): ≥ 10 cycles of
/// kill -9 with two nodes and approaches arriving; takeover time is from the kill to the
/// lease row's change of hands (the new leader's first write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: deploy/local/failover-bench runs it"]
async fn takeover_figures() {
    let cycles: usize =
        std::env::var("GATEHOUSE_FAILOVER_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(10);
    let app = app().await;
    let pool = app.pg.as_ref().unwrap().pool().await;
    let mut nodes = BTreeMap::from([
        ("node-a".to_string(), Node::new(&app, "node-a", None)),
        ("node-b".to_string(), Node::new(&app, "node-b", None)),
    ]);
    nodes.values_mut().for_each(Node::start);
    let mut approaches = Approaches::new();
    let mut takeovers = Vec::new();
    for cycle in 0..cycles {
        let (leading, token) = wait_for_leader(&pool, None).await;
        // Both nodes up (the restarted one heartbeating) before the next kill.
        wait_until_within(TAKEOVER_BOUND, "both nodes to be seen", || {
            let both = roles(&app).len() == 2;
            async move { both.then_some(()) }
        })
        .await;
        approaches.send(&app, 3).await;
        nodes.get_mut(&leading).unwrap().kill();
        let killed = Instant::now();
        approaches.send(&app, 2).await;
        let (pool, leading_ref) = (&pool, &leading);
        let (_, new_token) = wait_until_within(TAKEOVER_BOUND, "the takeover", || async move {
            leader(pool).await.filter(|(h, t)| h != leading_ref && *t > token)
        })
        .await;
        let took = killed.elapsed();
        eprintln!(
            "cycle {cycle}: {leading} killed, token {token} -> {new_token} after {:.1} s",
            took.as_secs_f64()
        );
        takeovers.push(took);
        nodes.get_mut(&leading).unwrap().start();
    }
    let tally = approaches.settle(&app).await;
    let seen = outcome(&tally);
    takeovers.sort();
    let secs = |d: Duration| d.as_secs_f64();
    let median = secs(takeovers[takeovers.len() / 2]);
    let worst = secs(*takeovers.last().unwrap());
    eprintln!(
        "\n| kills | approaches | takeover median | takeover worst | lost | requests duplicated | acks sent twice |\n| --- | --- | --- | --- | --- | --- | --- |\n| {cycles} | {} | {median:.1} s | {worst:.1} s | {} | {} | {} |\n",
        approaches.sent.len(),
        seen.lost,
        seen.duplicated,
        seen.acked_twice + seen.acked_more
    );
    assert_eq!((seen.lost, seen.duplicated), (0, 0), "{tally:?}");
}
