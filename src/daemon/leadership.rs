//! Which node does the leader's work. On SQLite there is one node and it always leads. On
//! PostgreSQL any number of nodes share the database and [`lease::keep`] decides: the node
//! holding the lease leads for as long as it holds it (a *term*), the others stand by,
//! heartbeating in the `nodes` table, and take over when the lease runs out.
//!
//! A term ends when the lease is lost, or earlier by this node's own clock: when no renewal
//! has landed and only [`STAND_DOWN_MARGIN`] of the lease is left, the term's tasks are
//! cancelled and given the rest of the lease to stop, then abandoned. So the old leader has
//! stopped before the database lets anyone else take the lease, and its writes after that
//! are refused by the fence ([`crate::store::postgres::PgStore::fenced`]) in any case.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DatabaseTls};
use crate::store::SharedStore;
use crate::store::postgres::lease::{self, Holding, NodeRole, NodeRow};
use crate::store::postgres::{self, PgStore};

/// How much of the lease is left when a leader that could not renew stops its work: enough
/// for its tasks to finish their current step (or be abandoned) before the lease runs out.
/// Normal renewals keep about [`lease::LEASE_LENGTH`] ahead, so only two failed renewals in
/// a row reach it.
pub const STAND_DOWN_MARGIN: Duration = Duration::from_secs(3);

/// The lease machinery of a node on a shared database: the store it keeps the lease in,
/// its name, and where [`lease::keep`] publishes what it holds (the fenced store reads it).
#[derive(Debug, Clone)]
pub struct Seat {
    pub pg: PgStore,
    pub node: String,
    pub holding: watch::Sender<Option<Holding>>,
}

/// Whether `held` still leaves room for a term: a lease about to run out (no renewal
/// landed) does not start one, nor keep one going.
pub fn can_lead(held: Option<Holding>, now: Instant) -> bool {
    held.is_some_and(|h| h.act_until > now + STAND_DOWN_MARGIN)
}

/// Waits until this node may lead (`Some`: with the lease held), or until `shutdown`
/// (`None`).
pub async fn elected(
    holding: &mut watch::Receiver<Option<Holding>>,
    shutdown: &CancellationToken,
) -> Option<Holding> {
    loop {
        let held = *holding.borrow_and_update();
        if can_lead(held, Instant::now()) {
            return held;
        }
        tokio::select! {
            changed = holding.changed() => changed.ok()?,
            () = shutdown.cancelled() => return None,
        }
    }
}

/// Waits until this node's term ends: the lease is lost, or about to run out by this node's
/// clock, or `shutdown`. Returns how long the term's tasks may take to stop: the rest of the
/// lease when it was lost, `None` (the usual grace) on a shutdown, when the lease is still
/// held and is released only after the tasks have stopped.
pub async fn term_ended(
    holding: &mut watch::Receiver<Option<Holding>>,
    shutdown: &CancellationToken,
) -> Option<Duration> {
    loop {
        let held = *holding.borrow_and_update();
        let now = Instant::now();
        let Some(h) = held.filter(|_| can_lead(held, now)) else {
            return Some(held.map_or(Duration::ZERO, |h| h.act_until.saturating_duration_since(now)));
        };
        let stand_down = h.act_until.checked_sub(STAND_DOWN_MARGIN).unwrap_or(now);
        tokio::select! {
            changed = holding.changed() => if changed.is_err() { return Some(Duration::ZERO) },
            () = tokio::time::sleep_until(stand_down.into()) => {}
            () = shutdown.cancelled() => return None,
        }
    }
}

/// Every node of this deployment with its role, for `gatehouse status` and `check`: from
/// the `nodes` table and the lease on PostgreSQL; on SQLite this node alone, leading, now.
pub async fn nodes(config: &Config, now: DateTime<Utc>) -> anyhow::Result<Vec<NodeRow>> {
    let Some(db) = &config.service.database else {
        return Ok(vec![NodeRow {
            node: config.service.node_name.clone(),
            role: NodeRole::Leader,
            last_seen: now,
        }]);
    };
    let pg = PgStore::connect(postgres::connect_options(db)?, &db.url).await?;
    let mut conn = pg.connection().await?;
    lease::nodes(&mut conn).await
}

/// The database in one line for `gatehouse check`: backend, where (never a password), TLS,
/// and how many migrations are applied.
/// `store` is the opened (and migrated) store, which describes a SQLite file itself.
pub async fn describe_database(config: &Config, store: &SharedStore) -> anyhow::Result<String> {
    let Some(db) = &config.service.database else {
        let applied = sqlx::migrate!("./migrations/sqlite").iter().count();
        return Ok(format!("{}, {applied} migrations applied", store.describe()));
    };
    let options = postgres::connect_options(db)?;
    let tls = match &db.tls {
        DatabaseTls::VerifyFull { .. } => "TLS on (verify-full)",
        DatabaseTls::Off => "TLS off",
    };
    let pg = PgStore::connect(options.clone(), &db.url).await?;
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut *pg.connection().await?)
        .await
        .context("Cannot count the applied migrations")?;
    Ok(format!(
        "PostgreSQL {}:{}/{} as {}, {tls}, {applied} migrations applied",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default)"),
        options.get_username()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(secs_left: u64) -> Option<Holding> {
        Some(Holding { token: 7, act_until: Instant::now() + Duration::from_secs(secs_left) })
    }

    #[test]
    fn a_lease_about_to_run_out_starts_no_term() {
        let now = Instant::now();
        assert!(can_lead(held(10), now));
        assert!(!can_lead(held(2), now));
        assert!(!can_lead(None, now));
    }

    #[tokio::test]
    async fn a_term_ends_by_this_nodes_clock_when_renewals_stop() {
        let (tx, mut rx) = watch::channel(held(5));
        let shutdown = CancellationToken::new();
        let started = Instant::now();
        // No renewal comes: the term ends at 5 s - margin, leaving the margin to stop in.
        let left = term_ended(&mut rx, &shutdown).await.expect("not a shutdown");
        assert!(started.elapsed() >= Duration::from_secs(1), "ended before the margin was reached");
        assert!(left <= STAND_DOWN_MARGIN);
        drop(tx);
    }

    #[tokio::test]
    async fn a_term_ends_when_the_lease_is_lost_and_a_standby_waits_for_it() {
        let (tx, mut rx) = watch::channel(held(10));
        let shutdown = CancellationToken::new();
        assert!(elected(&mut rx, &shutdown).await.is_some());
        tx.send_replace(None);
        assert_eq!(term_ended(&mut rx, &shutdown).await, Some(Duration::ZERO));
        shutdown.cancel();
        assert_eq!(elected(&mut rx, &shutdown).await, None);
        assert_eq!(term_ended(&mut rx, &shutdown).await, Some(Duration::ZERO));
    }
}
