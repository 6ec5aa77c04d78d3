//! The leader lease: which of the nodes sharing one PostgreSQL database leads (watches the
//! inbox, sends mail, runs the schedules) and which wait as standbys.
//!
//! One row (`leader_lease`, id 1) names the holder, a fencing token and when the lease
//! expires, all by the database's clock so skewed node clocks do not matter. The holder
//! renews well inside the lease's length; a standby takes the lease only once it has expired,
//! and every change of hands raises the token by one. A write that matters runs
//! [`check_fence`] in its own transaction: it fails unless the token is still the current,
//! unexpired one, and it holds the row so a takeover waits for that transaction to end, so
//! a node that lost the lease (paused, cut off) cannot write after its successor starts.
//!
//! A leader also stops acting by its own clock: [`Holding`] counts the lease from the moment
//! the renewal was *sent*, which is before the database started counting it, so the old
//! leader's deadline passes before a standby can take over even when it hears nothing back.
//!
//! Each query is a small function on a `&mut PgConnection` and plain values, so it can run
//! on a pooled connection or inside a transaction.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row as _};

/// How long a lease lasts unless renewed. A standby sees a dead leader's lease expire at most
/// this long after the leader's last renewal; with [`RENEW_EVERY`] and a standby's poll of
/// [`RENEW_EVERY`] too, the takeover comes within 15 s of the leader's death.
pub const LEASE_LENGTH: Duration = Duration::from_secs(10);
/// How often the leader renews (and a standby tries to take the lease).
pub const RENEW_EVERY: Duration = Duration::from_secs(3);

/// A lease held: the fencing token, and until when this node may act on it by its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    pub token: i64,
    /// `Instant` the renewal (or acquisition) was sent, plus the lease's length.
    pub act_until: Instant,
}

impl Holding {
    /// Whether this node may still act as leader now (by its own clock; writes that matter
    /// also check the token in the database).
    pub fn is_live(&self, now: Instant) -> bool {
        now < self.act_until
    }
}

/// What `gatehouse status` shows of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub node: String,
    /// `leader` or `standby`, from the lease as it stands (not from what the node last
    /// said), so a dead leader whose lease has run out shows as standby.
    pub role: NodeRole,
    pub last_seen: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    Leader,
    Standby,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Leader => "leader",
            NodeRole::Standby => "standby",
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Takes the lease for `node` if no one holds it or the holder's has expired (its own
/// expired one included: a restarted node waits out its old lease like anyone else, so two
/// processes that share a name never both lead). The token is raised. `None`: another
/// node holds a live lease.
pub async fn try_acquire(
    conn: &mut PgConnection,
    node: &str,
    length: Duration,
) -> anyhow::Result<Option<Holding>> {
    let sent = Instant::now();
    let row = sqlx::query(
        "INSERT INTO leader_lease (id, holder, token, acquired_at, expires_at)
         VALUES (1, $1, 1, clock_timestamp(), clock_timestamp() + make_interval(secs => $2::float8 / 1000))
         ON CONFLICT (id) DO UPDATE SET
             holder = EXCLUDED.holder,
             token = leader_lease.token + 1,
             acquired_at = EXCLUDED.acquired_at,
             expires_at = EXCLUDED.expires_at
         WHERE leader_lease.expires_at <= clock_timestamp()
         RETURNING token",
    )
    .bind(node)
    .bind(millis(length))
    .fetch_optional(&mut *conn)
    .await
    .context("Cannot take the leader lease")?;
    Ok(row.map(|r| Holding { token: r.get(0), act_until: sent + length }))
}

/// Extends the lease `held` by `length` from now. `None`: it was lost (expired, or taken
/// by another node); the caller must stop acting as leader at once.
pub async fn renew(
    conn: &mut PgConnection,
    node: &str,
    held: Holding,
    length: Duration,
) -> anyhow::Result<Option<Holding>> {
    let sent = Instant::now();
    let renewed = sqlx::query(
        "UPDATE leader_lease
         SET expires_at = clock_timestamp() + make_interval(secs => $3::float8 / 1000)
         WHERE id = 1 AND holder = $1 AND token = $2 AND expires_at > clock_timestamp()",
    )
    .bind(node)
    .bind(held.token)
    .bind(millis(length))
    .execute(&mut *conn)
    .await
    .context("Cannot renew the leader lease")?
    .rows_affected();
    Ok((renewed == 1).then_some(Holding { token: held.token, act_until: sent + length }))
}

/// Gives the lease up (on a clean shutdown), so a standby takes over at its next try
/// instead of waiting for the lease to run out. Nothing happens if it was lost already.
pub async fn release(conn: &mut PgConnection, node: &str, held: Holding) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE leader_lease SET expires_at = clock_timestamp()
         WHERE id = 1 AND holder = $1 AND token = $2 AND expires_at > clock_timestamp()",
    )
    .bind(node)
    .bind(held.token)
    .execute(&mut *conn)
    .await
    .context("Cannot release the leader lease")?;
    Ok(())
}

/// The fence for a write that matters, run inside that write's transaction: fails unless
/// `token` is the current lease's and the lease has not expired. It takes the lease row in
/// share mode, so a takeover (which updates the row) waits until this transaction ends: the
/// write lands before the successor's first, or not at all.
pub async fn check_fence(conn: &mut PgConnection, token: i64) -> anyhow::Result<()> {
    let live: Option<bool> = sqlx::query_scalar(
        "SELECT expires_at > clock_timestamp() FROM leader_lease WHERE id = 1 AND token = $1 FOR SHARE",
    )
    .bind(token)
    .fetch_optional(&mut *conn)
    .await
    .context("Cannot check the leader lease")?;
    match live {
        Some(true) => Ok(()),
        Some(false) => {
            anyhow::bail!("This node's leader lease (token {token}) has expired: it no longer leads")
        }
        None => anyhow::bail!("This node's leader lease (token {token}) was taken over: it no longer leads"),
    }
}

/// Records that `node` is alive and what it believes it is (for `gatehouse status`).
pub async fn heartbeat(conn: &mut PgConnection, node: &str, role: NodeRole) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO nodes (node, role, last_seen) VALUES ($1, $2, clock_timestamp())
         ON CONFLICT (node) DO UPDATE SET role = EXCLUDED.role, last_seen = EXCLUDED.last_seen",
    )
    .bind(node)
    .bind(role.as_str())
    .execute(&mut *conn)
    .await
    .context("Cannot record this node in the nodes table")?;
    Ok(())
}

/// The node whose lease is live now, by the database's clock; `None` while no node leads
/// (a leader just died, or the first node has not taken the lease yet).
pub async fn live_holder(conn: &mut PgConnection) -> anyhow::Result<Option<String>> {
    sqlx::query_scalar("SELECT holder FROM leader_lease WHERE id = 1 AND expires_at > clock_timestamp()")
        .fetch_optional(&mut *conn)
        .await
        .context("Cannot read the leader lease")
}

/// Every node that has run against this database, by name, each with its role by the lease
/// as it stands now.
pub async fn nodes(conn: &mut PgConnection) -> anyhow::Result<Vec<NodeRow>> {
    let rows = sqlx::query(
        "SELECT n.node,
                COALESCE(l.holder = n.node AND l.expires_at > clock_timestamp(), false) AS leads,
                (extract(epoch FROM n.last_seen) * 1000)::bigint AS last_seen
         FROM nodes n LEFT JOIN leader_lease l ON l.id = 1
         ORDER BY n.node",
    )
    .fetch_all(&mut *conn)
    .await
    .context("Cannot read the nodes table")?;
    rows.into_iter()
        .map(|r| {
            let last_seen: i64 = r.get("last_seen");
            Ok(NodeRow {
                node: r.get("node"),
                role: if r.get("leads") { NodeRole::Leader } else { NodeRole::Standby },
                last_seen: DateTime::from_timestamp_millis(last_seen)
                    .context("A node's last_seen is out of range")?,
            })
        })
        .collect()
}

/// Keeps this node's place in the lease until `shutdown`: takes the lease when it is free,
/// renews it every [`RENEW_EVERY`] while held, records the node's heartbeat, and publishes
/// what it holds on `holding` (`None`: standby). A renewal that fails or cannot reach the
/// database publishes `None` as soon as the lease may have run out by this node's clock, so
/// the leader's work stops before a standby can take over. On shutdown a held lease is
/// released so a standby takes over at its next try.
///
/// The daemon starts it on PostgreSQL (`daemon::leadership`) and runs the leader's work
/// while it publishes a lease; its fenced store checks writes against what it publishes.
pub async fn keep(
    store: super::PgStore,
    node: String,
    holding: tokio::sync::watch::Sender<Option<Holding>>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut held: Option<Holding> = None;
    loop {
        let attempt = async {
            let mut conn = store.connection().await?;
            let now_held = match held {
                Some(h) => renew(&mut conn, &node, h, LEASE_LENGTH).await?,
                None => try_acquire(&mut conn, &node, LEASE_LENGTH).await?,
            };
            let role = if now_held.is_some() { NodeRole::Leader } else { NodeRole::Standby };
            heartbeat(&mut conn, &node, role).await?;
            anyhow::Ok(now_held)
        };
        held = match tokio::time::timeout(RENEW_EVERY, attempt).await {
            Ok(Ok(now_held)) => {
                if held.is_some() && now_held.is_none() {
                    tracing::warn!(node = %node, "Lost the leader lease: standing by");
                } else if held.is_none() && now_held.is_some() {
                    tracing::info!(node = %node, "Took the leader lease: leading");
                }
                now_held
            }
            // Cannot reach the database: keep acting only while the lease surely lasts.
            Ok(Err(e)) => {
                tracing::warn!(node = %node, "Cannot renew or take the leader lease: {e:#}");
                held.filter(|h| h.is_live(Instant::now()))
            }
            Err(_) => held.filter(|h| h.is_live(Instant::now())),
        };
        holding.send_replace(held);
        let wake = match held {
            // Wake in time to stand down by this node's clock if renewals keep failing.
            Some(h) => (Instant::now() + RENEW_EVERY).min(h.act_until),
            None => Instant::now() + RENEW_EVERY,
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(wake.into()) => {}
        }
        if held.is_some_and(|h| !h.is_live(Instant::now())) {
            holding.send_replace(None);
            held = None;
        }
    }
    holding.send_replace(None);
    if let Some(h) = held
        && let Ok(mut conn) = store.connection().await
        && let Err(e) = release(&mut conn, &node, h).await
    {
        tracing::warn!(node = %node, "Cannot release the leader lease (it runs out by itself): {e:#}");
    }
}
