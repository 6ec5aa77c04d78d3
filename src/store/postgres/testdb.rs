//! A database of its own for each test, on the private cluster `deploy/local/pgcluster`
//! starts. Found from `GATEHOUSE_PG_*` in the environment (as `deploy/local/test` exports
//! them), else from `deploy/local/pgcluster env`. When there is no cluster the test is
//! skipped with a message saying how to start one; when the environment names one that
//! does not answer, the test fails.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use super::{PgStore, connect_options};
use crate::config::{DatabaseSettings, DatabaseTls};
use crate::secret::SecretSource;

pub(super) struct TestDb {
    pub store: PgStore,
    /// To open more connections to the same database (a second node).
    pub options: PgConnectOptions,
    admin: PgConnectOptions,
    name: String,
}

impl TestDb {
    /// Drops the test's database (after closing the store's connections). On a loaded
    /// machine a session the test just closed can still be exiting when FORCE's few seconds
    /// of waiting for it run out ("being accessed by other users"), and the cluster, shared
    /// by every test running, can be short of connection slots for a moment: the drop is
    /// tried again for up to a minute before the test fails.
    pub async fn drop(self) {
        self.store.pool.close().await;
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let dropped = async {
                let mut admin = PgConnection::connect_with(&self.admin).await?;
                let done = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).execute(&mut admin).await.map(drop);
                let _ = admin.close().await;
                done
            }
            .await;
            match dropped {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("dropping the test database {} again after: {e}", self.name);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("cannot drop the test database {}: {e}", self.name),
            }
        }
    }
}

/// The cluster's settings, and whether the environment named it (then it must answer).
fn cluster() -> Option<(HashMap<String, String>, bool)> {
    let from_env: HashMap<String, String> =
        std::env::vars().filter(|(k, _)| k.starts_with("GATEHOUSE_PG_")).collect();
    if from_env.contains_key("GATEHOUSE_PG_URL") {
        return Some((from_env, true));
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/local/pgcluster");
    let out = std::process::Command::new(script).arg("env").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let vars = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect();
    Some((vars, false))
}

/// A fresh, migrated database for `test`, or `None` (with a message) when no cluster is up.
pub(super) async fn fresh(test: &str) -> Option<TestDb> {
    let skip = |why: &str| {
        eprintln!("SKIPPED {test}: {why}; start the cluster with `deploy/local/pgcluster up` (as root)");
        None
    };
    let Some((vars, named)) = cluster() else {
        return skip("no private PostgreSQL cluster (deploy/local/pgcluster env found none)");
    };
    let get = |k: &str| vars.get(k).cloned().unwrap_or_else(|| panic!("pgcluster env lacks {k}"));
    let settings = DatabaseSettings {
        url: get("GATEHOUSE_PG_URL"),
        host: "127.0.0.1".into(),
        password: Some(SecretSource::File(get("GATEHOUSE_PG_PASSWORD_FILE").into())),
        tls: DatabaseTls::VerifyFull { ca_file: Some(get("GATEHOUSE_PG_CA_FILE").into()) },
    };
    let admin = connect_options(&settings).expect("connect options for the cluster");
    let mut conn = match PgConnection::connect_with(&admin).await {
        Ok(conn) => conn,
        Err(e) if !named => return skip(&format!("the cluster does not answer ({e})")),
        Err(e) => panic!("GATEHOUSE_PG_URL names a cluster that does not answer: {e}"),
    };
    let name = format!("gh_{}_{:016x}", test.chars().take(40).collect::<String>(), rand::random::<u64>());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .expect("create the test database");
    let options = admin.clone().database(&name);
    let store = PgStore::connect(options.clone(), &name).await.expect("connect to the test database");
    crate::store::Store::migrate(&store).await.expect("migrate the test database");
    Some(TestDb { store, options, admin, name })
}
