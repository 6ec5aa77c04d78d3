//! `[metrics] listen`: `/metrics` (Prometheus text, written by `prometheus-client`),
//! `/healthz` and `/readyz`, for a monitoring system to read instead of the logs.
//!
//! The figures are read when scraped, from what the daemon already records (the database
//! and the [`StatusBoard`](crate::inbox::status::StatusBoard)), rather than counted as things happen: they survive restarts,
//! agree with `gatehouse status`, and the pipeline carries no metrics code.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::{Classification, Decision, Status};
use crate::inbox::ImapState;
use crate::inbox::status::StatusBoard;
use crate::oauth::TokenProvider;
use crate::outbox::FAILING_AFTER_ATTEMPTS;
use crate::store::SharedStore;
use crate::store::postgres::lease;

/// Upper bounds (seconds) of the arrival-to-acknowledgement histogram: from "at once" to
/// "the daemon was down for a day".
const ACK_BUCKETS: [f64; 12] =
    [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 4.0 * 3600.0, 24.0 * 3600.0];

/// What the endpoints read.
#[derive(Debug, Clone)]
pub struct Health {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub clock: Arc<dyn Clock>,
    pub status: StatusBoard,
    /// The OAuth2 token providers in use, by config section.
    pub tokens: Vec<(&'static str, Arc<TokenProvider>)>,
    /// On a shared database: the leader lease this node holds (`None` inside: standby),
    /// and the database the lease is kept in (a standby asks it who leads).
    pub holding: Option<(crate::store::postgres::Fence, crate::store::postgres::PgStore)>,
}

/// How a ready node serves: a standby is ready too (it is alive, reaches the database and
/// will take over), and says so, so a monitor can tell the two roles apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    Leader,
    /// Standing by while this node leads.
    Standby(String),
}

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

impl Health {
    /// `/readyz`: on the leader, `Ok` while the inbox is watched, the database takes writes
    /// and the outbox is not stuck; on a standby, `Ok` while another node's lease is live
    /// (it has nothing else to do until it takes over); a standby while no node leads is
    /// not ready, since nothing watches the inbox; otherwise why not, in a line.
    pub async fn ready(&self) -> Result<Ready, String> {
        if let Some((fence, pg)) = &self.holding
            && fence.borrow().is_none()
        {
            let unreachable = |e: anyhow::Error| format!("standby cannot reach the database: {e:#}");
            let mut conn = pg.connection().await.map_err(unreachable)?;
            let holder = lease::live_holder(&mut conn).await.map_err(unreachable)?;
            return match holder {
                Some(leader) if leader != self.config.service.node_name => Ok(Ready::Standby(leader)),
                _ => Err("no node leads (this one is standing by for the leader lease)".into()),
            };
        }
        let (state, detail) = self.status.imap().await;
        if !matches!(state, ImapState::Idle | ImapState::Polling) {
            let detail = detail.map(|d| format!(": {d}")).unwrap_or_default();
            return Err(format!("inbox not watched ({}){detail}", state.as_str()));
        }
        self.status.database_writable()?;
        let failing = self
            .store
            .outbox_failing(FAILING_AFTER_ATTEMPTS)
            .await
            .map_err(|e| format!("database: {e:#}"))?;
        if failing > 0 {
            return Err(format!(
                "outbox stuck: {failing} email(s) failed {FAILING_AFTER_ATTEMPTS} or more attempts"
            ));
        }
        Ok(Ready::Leader)
    }

    /// `/metrics`: the Prometheus text exposition.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let m = self.store.metrics(FAILING_AFTER_ATTEMPTS).await?;
        let now = self.clock.now();
        let mut registry = Registry::with_prefix("gatehouse");

        let messages = Family::<Labels, Counter>::default();
        for (classification, n) in &m.messages {
            messages.get_or_create(&label("classification", classification)).inc_by(count(*n));
        }
        registry.register(
            "messages",
            "Messages taken in from the shared mailbox, by classification",
            messages,
        );

        let quarantined = Gauge::<i64>::default();
        let set_aside = Classification::Quarantined.as_str();
        quarantined.set(m.messages.iter().filter(|(c, _)| c == set_aside).map(|(_, n)| *n).sum());
        registry.register(
            "quarantined_messages",
            "Messages set aside after repeated failures to process them",
            quarantined,
        );

        let requests = Family::<Labels, Gauge>::default();
        for s in Status::ALL {
            requests.get_or_create(&label("status", s.as_str())).set(find(&m.requests_by_status, s.as_str()));
        }
        registry.register("requests", "Requests by status", requests);

        let decisions = Family::<Labels, Gauge>::default();
        for d in Decision::ALL {
            decisions.get_or_create(&label("decision", d.as_str())).set(find(&m.decisions, d.as_str()));
        }
        registry.register("decisions", "Requests by the gatekeepers' decision", decisions);

        let gauge = |v: i64| {
            let g = Gauge::<i64>::default();
            g.set(v);
            g
        };
        registry.register("outbox_pending", "Emails waiting to be sent", gauge(m.outbox.pending));
        registry.register("outbox_failed", "Emails given up as undeliverable", gauge(m.outbox.failed));
        registry.register(
            "outbox_failing",
            "Emails waiting to be sent that have failed several attempts",
            gauge(m.outbox_failing),
        );
        registry.register(
            "outbox_oldest_pending_seconds",
            "Age of the oldest email waiting to be sent (0 when none waits)",
            seconds(m.outbox_oldest_pending.map_or(0.0, |at| secs(now - at))),
        );

        let (state, _) = self.status.imap().await;
        let imap = Family::<Labels, Gauge>::default();
        for s in ImapState::ALL {
            imap.get_or_create(&label("state", s.as_str())).set(i64::from(s == state));
        }
        registry.register("imap_state", "What the inbox watcher is doing (1 for the current state)", imap);
        if let Some(at) = self.status.last_sync().await {
            registry.register(
                "imap_last_sync_age_seconds",
                "Seconds since the shared mailbox was last read to the end",
                seconds(secs(now - at)),
            );
        }

        let token = Family::<Labels, FloatGauge>::default();
        for (section, provider) in &self.tokens {
            if let Some(expires) = provider.expires_at() {
                token.get_or_create(&label("section", section)).set(secs(expires - now));
            }
        }
        registry.register(
            "oauth_token_expiry_seconds",
            "Seconds until the current OAuth2 access token expires",
            token,
        );
        let secret = Family::<Labels, FloatGauge>::default();
        for (section, settings) in self.config.oauth_sections() {
            if let Some(expires) = settings.secret_expires.and_then(|d| start_of(&self.config, d)) {
                secret.get_or_create(&label("section", section)).set(secs(expires - now));
            }
        }
        registry.register(
            "oauth_client_secret_expiry_seconds",
            "Seconds until the OAuth2 client secret expires (secret_expires)",
            secret,
        );

        let ack = Histogram::new(ACK_BUCKETS);
        for s in &m.ack_seconds {
            ack.observe(*s);
        }
        registry.register(
            "acknowledgement_seconds",
            "Time from an approach's arrival to its acknowledgement leaving",
            ack,
        );

        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).context("Cannot write the metrics")?;
        Ok(out)
    }
}

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_string(), value.to_string())]
}

fn find(pairs: &[(String, i64)], key: &str) -> i64 {
    pairs.iter().find(|(k, _)| k == key).map_or(0, |(_, n)| *n)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn secs(d: chrono::Duration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

fn seconds(v: f64) -> FloatGauge {
    let g = FloatGauge::default();
    g.set(v);
    g
}

/// The first moment of `date` in the service's time zone.
fn start_of(config: &Config, date: chrono::NaiveDate) -> Option<DateTime<Utc>> {
    date.and_hms_opt(0, 0, 0)?
        .and_local_timezone(config.service.timezone)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// Binds `listen` (at start, so a taken port stops `gatehouse run` with a clear error).
pub async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("Cannot listen on {listen} for metrics.listen (is the port taken?)"))
}

/// Connections served at once. A monitoring system needs one or two; anyone who can reach
/// the port could open thousands and hold them (each a file descriptor the daemon's IMAP,
/// SMTP and database need too). Past it, new connections wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 16;

/// How long a client may take to send a request's headers (a slow-loris client sends one
/// byte at a time to hold its connection).
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long one connection may stay open, whatever it does: a scrape takes well under a
/// second, and no connection may hold one of the [`MAX_CONNECTIONS`] for good.
pub const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30);

/// The largest request head read: the endpoints take no parameters, so anything longer is
/// not a monitoring system (hyper answers 431 and closes).
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Serves the endpoints on `listener` until shutdown.
pub async fn serve(listener: TcpListener, health: Health, shutdown: CancellationToken) {
    let health = Arc::new(health);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A slot first, then the connection: when all are taken, accepting waits.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            () = shutdown.cancelled() => return,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("Cannot accept a metrics connection: {e}");
                    // Out of file descriptors, say: give the rest of the daemon a moment
                    // rather than spinning on the error.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let health = health.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let health = health.clone();
                async move { Ok::<_, Infallible>(answer(&health, &request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                result = tokio::time::timeout(CONNECTION_LIFETIME, connection) => match result {
                    Ok(Err(e)) => tracing::debug!("Metrics connection ended: {e}"),
                    Err(_) => tracing::debug!("Metrics connection closed after {CONNECTION_LIFETIME:?}"),
                    Ok(Ok(())) => {}
                },
                () = shutdown.cancelled() => {}
            }
            drop(slot);
        });
    }
}

async fn answer(health: &Health, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match health.ready().await {
            Ok(Ready::Leader) => text(StatusCode::OK, "ready\n".into()),
            Ok(Ready::Standby(leader)) => text(StatusCode::OK, format!("ready (standby: {leader} leads)\n")),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
        },
        "/metrics" => match health.metrics().await {
            Ok(body) => {
                let mut response = text(StatusCode::OK, body);
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            Err(e) => {
                tracing::warn!("Cannot read the metrics: {e:#}");
                text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the metrics: {e:#}\n"))
            }
        },
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics, /healthz or /readyz\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
