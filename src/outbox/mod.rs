//! The durable outbox: every email gatehouse sends is built by [`crate::mailings`], given
//! its Message-ID and written to the database in the same transaction as the event that
//! causes it; the [`Sender`] task here then delivers it over SMTP, retrying temporary
//! failures for two days. The outbox only delivers: what an email says and whom it may go
//! to are the mailings' business (its own failure notices and alerts included).
//!
//! So an SMTP outage delays mail but loses none, and a crash loses none either: an entry
//! the crash left half-sent goes again at the next start (the only way one can go twice).

pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use lettre::AsyncTransport as _;
use lettre::address::Envelope;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::mailings::{Draft, alerts};
use crate::store::{OutboxItem, SharedStore};
use crate::templates::{DeliveryFailureAlert, OutboxFailingAlert, SmtpLoginAlert};

/// How long a temporary failure is retried before the email is given up as failed.
const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::hours(49);
/// Emails in flight at once.
const PARALLEL_SENDS: usize = 4;
/// How often the queue is looked at when nobody wakes the sender (mail queued by the CLI).
const POLL: Duration = Duration::from_secs(2);
/// Failed attempts after which a waiting email means the outbox is failing: the operator
/// is alerted and `/readyz` says not ready. Fewer would alert on a server's passing hiccup.
pub const FAILING_AFTER_ATTEMPTS: i64 = 3;
/// The operator's alert keys for the outbox (see [`alerts`]).
const SMTP_LOGIN: &str = "smtp_login_refused";
const OUTBOX_FAILING: &str = "outbox_failing";

/// The delay before attempt `attempts + 1`: `initial` doubling to a 30-minute ceiling.
pub fn retry_delay(initial: Duration, attempts: i64) -> chrono::Duration {
    let exp = u32::try_from(attempts.clamp(1, 12) - 1).unwrap_or(0);
    let base = Duration::from_secs(initial.as_secs().max(1));
    let delay = crate::backoff::exponential(base, Duration::from_secs(30 * 60), exp);
    chrono::Duration::seconds(i64::try_from(delay.as_secs()).unwrap_or(30 * 60))
}

/// The pooled transport, and the serial of the OAuth2 token it logs in with.
type SharedTransport = tokio::sync::Mutex<Option<(crate::mail::Transport, Option<u64>)>>;

/// The task that delivers the outbox.
#[derive(Debug, Clone)]
pub struct Sender {
    config: Arc<Config>,
    store: SharedStore,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    /// With `auth = "xoauth2"`: where SMTP's access tokens come from.
    tokens: Option<Arc<crate::oauth::TokenProvider>>,
    alerts: Arc<alerts::Alerts>,
}

impl Sender {
    pub fn new(
        config: Arc<Config>,
        store: SharedStore,
        clock: Arc<dyn Clock>,
        wake: Arc<Notify>,
        alerts: Arc<alerts::Alerts>,
    ) -> Self {
        Self { config, store, clock, wake, tokens: None, alerts }
    }

    pub fn with_tokens(mut self, tokens: Option<Arc<crate::oauth::TokenProvider>>) -> Self {
        self.tokens = tokens;
        self
    }

    pub async fn run(self, shutdown: CancellationToken) {
        match self.store.requeue_interrupted().await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!("{n} email(s) were being sent when gatehouse stopped; sending them again")
            }
            Err(e) => tracing::error!("{e:#}"),
        }
        let transport: SharedTransport = tokio::sync::Mutex::new(None);
        // Sends run in parallel, but their bookkeeping goes to the database one at a time,
        // so the sender never holds more than one connection waiting for the write lock.
        let bookkeeping = tokio::sync::Mutex::new(());
        while !shutdown.is_cancelled() {
            let due = match self.store.claim_due(self.clock.now(), 20).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!("Cannot read the outbox: {e:#}");
                    Vec::new()
                }
            };
            if due.is_empty() {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                    () = shutdown.cancelled() => {}
                }
                continue;
            }
            // A few at once over the pooled connections: a burst of approaches means two
            // emails each, and one at a time would leave the last requester waiting.
            futures::stream::iter(due)
                .for_each_concurrent(PARALLEL_SENDS, |item| {
                    let (this, transport, shutdown, bookkeeping) =
                        (&self, &transport, &shutdown, &bookkeeping);
                    async move {
                        if shutdown.is_cancelled() {
                            // Not attempted: straight back in the queue, due at once.
                            let _guard = bookkeeping.lock().await;
                            let _ = this
                                .store
                                .mark_retry(item.id, this.clock.now(), "not sent: gatehouse was stopping")
                                .await;
                            return;
                        }
                        if let Err(e) = this.deliver(&item, transport, bookkeeping).await {
                            tracing::error!("Outbox entry {}: {e:#}", item.id);
                            // Never left claimed: back in the queue for a later attempt.
                            let _guard = bookkeeping.lock().await;
                            let next =
                                this.clock.now() + retry_delay(this.config.smtp.retry_initial, item.attempts);
                            let _ = this.store.mark_retry(item.id, next, &format!("{e:#}")).await;
                        }
                    }
                })
                .await;
        }
    }

    async fn deliver(
        &self,
        item: &OutboxItem,
        shared: &SharedTransport,
        bookkeeping: &tokio::sync::Mutex<()>,
    ) -> anyhow::Result<()> {
        if item.kind == webhook::KIND {
            return self.post_to_webhook(item, bookkeeping).await;
        }
        let now = self.clock.now();
        let envelope = Envelope::new(
            Some(item.envelope_from.parse().context("Bad envelope sender")?),
            item.recipients.iter().map(|r| r.parse()).collect::<Result<_, _>>().context("Bad recipient")?,
        )
        .context("Bad envelope")?;
        let mut token = match &self.tokens {
            Some(tokens) => match tokens.token().await {
                Ok(t) => Some(t),
                Err(e) if e.transient => return self.temporary(item, now, &e.to_string()).await,
                Err(e) => {
                    tracing::error!("SMTP cannot log in: {e}");
                    return self
                        .login_refused(item, now, &e.to_string(), "the error says which step failed")
                        .await;
                }
            },
            None => None,
        };
        {
            let _guard = bookkeeping.lock().await;
            self.store.mark_in_flight(item.id).await?;
        }
        let mut renewed = false;
        let limit = self.config.smtp.timeout * 2;
        let sent = loop {
            // Clones share one connection pool; a failure or a new token drops it so the next
            // send reconnects (and re-reads the password, or logs in with the new token).
            let t = {
                let mut guard = shared.lock().await;
                let serial = token.as_ref().map(|t| t.serial);
                if guard.as_ref().is_none_or(|(_, s)| *s != serial) {
                    match crate::mail::transport(&self.config.smtp, token.as_ref()) {
                        Ok(t) => *guard = Some((t, serial)),
                        Err(e) => {
                            drop(guard);
                            let _guard = bookkeeping.lock().await;
                            return self.temporary(item, now, &format!("{e:#}")).await;
                        }
                    }
                }
                match guard.as_ref() {
                    Some((t, _)) => t.clone(),
                    None => return Ok(()),
                }
            };
            let sent = tokio::time::timeout(limit, t.send_raw(&envelope, &item.raw)).await;
            match (&sent, &self.tokens, &token) {
                (Ok(Err(e)), Some(tokens), Some(refused)) if crate::mail::is_auth_failure(e) && !renewed => {
                    // The token may have been revoked early: renew it and try once more now.
                    *shared.lock().await = None;
                    tracing::info!("The SMTP server refused the OAuth2 access token; getting a new one");
                    match tokens.renew(refused).await {
                        Ok(t) => token = Some(t),
                        Err(e) => {
                            let _guard = bookkeeping.lock().await;
                            return self.temporary(item, now, &e.to_string()).await;
                        }
                    }
                    renewed = true;
                }
                _ => break sent,
            }
        };
        let _guard = bookkeeping.lock().await;
        let reset = || async { *shared.lock().await = None };
        match sent {
            Ok(Ok(_)) => {
                let now = self.clock.now();
                self.store.mark_sent(item.id, now).await?;
                tracing::info!("Sent {} to {} ({})", item.kind, item.recipients.join(", "), item.subject);
                self.note_smtp(crate::store::SmtpOutcome::Sent).await;
                self.alerts.resolve_or_log(SMTP_LOGIN).await;
                self.alerts.resolve_or_log(OUTBOX_FAILING).await;
                Ok(())
            }
            Ok(Err(e)) if crate::mail::is_auth_failure(&e) => {
                // The login, not the email, is at fault: keep it queued until it is fixed.
                reset().await;
                let why = match (self.config.smtp.auth.as_ref().and_then(crate::config::Auth::oauth), renewed)
                {
                    (Some(settings), true) => crate::oauth::mailbox_permission_error(
                        settings,
                        "SMTP AUTH",
                        self.config.smtp.username.as_deref().unwrap_or_default(),
                        &format!("{}:{}", self.config.smtp.host, self.config.smtp.port),
                    )
                    .to_string(),
                    _ => "check the SMTP username and password".to_string(),
                };
                tracing::error!("The SMTP server refused gatehouse's login: {e}. {why}");
                self.login_refused(item, now, &format!("SMTP login refused: {e}"), &why).await
            }
            Ok(Err(e)) if e.is_permanent() => {
                reset().await;
                self.permanent(item, &format!("{e}")).await
            }
            Ok(Err(e)) => {
                reset().await;
                self.temporary(item, now, &format!("{e}")).await
            }
            Err(_) => {
                reset().await;
                self.temporary(
                    item,
                    now,
                    &format!("no answer from the SMTP server within {} s", limit.as_secs()),
                )
                .await
            }
        }
    }

    /// SMTP will not let gatehouse log in: alert the operator (as that, not also as "outbox
    /// failing": one problem, one alert) and keep the email queued until it is fixed.
    async fn login_refused(
        &self,
        item: &OutboxItem,
        now: DateTime<Utc>,
        error: &str,
        fix: &str,
    ) -> anyhow::Result<()> {
        let smtp = &self.config.smtp;
        let alert = SmtpLoginAlert {
            host: smtp.host.clone(),
            port: smtp.port,
            user: smtp.username.clone().unwrap_or_else(|| "(none)".into()),
            error: error.to_string(),
            fix: fix.to_string(),
        };
        let subject = format!("gatehouse cannot log in to the SMTP server {}", smtp.host);
        self.alerts.raise_with_or_log(SMTP_LOGIN, subject, "alert_smtp_login.txt", &alert).await;
        let error = format!("{error}; {fix}");
        self.note_smtp(crate::store::SmtpOutcome::Failed(&error)).await;
        self.retry_later(item, now, &error).await
    }

    /// Records the SMTP side of `gatehouse status`; a failure to do so only loses the figure.
    async fn note_smtp(&self, outcome: crate::store::SmtpOutcome<'_>) {
        if let Err(e) = self.store.set_smtp_status(outcome, self.clock.now()).await {
            tracing::warn!("{e:#}");
        }
    }

    async fn temporary(&self, item: &OutboxItem, now: DateTime<Utc>, error: &str) -> anyhow::Result<()> {
        self.note_smtp(crate::store::SmtpOutcome::Failed(error)).await;
        if item.attempts >= FAILING_AFTER_ATTEMPTS {
            let smtp = &self.config.smtp;
            let alert = OutboxFailingAlert {
                attempts: item.attempts,
                host: smtp.host.clone(),
                port: smtp.port,
                error: error.to_string(),
            };
            let subject = "gatehouse cannot send email".to_string();
            self.alerts.raise_with_or_log(OUTBOX_FAILING, subject, "alert_outbox_failing.txt", &alert).await;
        }
        self.retry_later(item, now, error).await
    }

    /// Puts the entry back in the queue for a later attempt, or gives it up after two days.
    async fn retry_later(&self, item: &OutboxItem, now: DateTime<Utc>, error: &str) -> anyhow::Result<()> {
        if now - item.created_at > GIVE_UP_AFTER {
            return self.permanent(item, &format!("still failing after two days: {error}")).await;
        }
        let next = now + retry_delay(self.config.smtp.retry_initial, item.attempts);
        tracing::warn!(
            "Could not send {} to {} (attempt {}): {error}; retrying at {next}",
            item.kind,
            item.recipients.join(", "),
            item.attempts
        );
        Ok(self.store.mark_retry(item.id, next, error).await?)
    }

    /// Marks the entry failed and tells the gatekeepers and the operator (the recipient
    /// must be reached another way), unless the failure is itself such a report (which would
    /// loop). Both in one transaction: the entry is never failed without its notice.
    async fn permanent(&self, item: &OutboxItem, error: &str) -> anyhow::Result<()> {
        tracing::error!("Gave up sending {} to {}: {error}", item.kind, item.recipients.join(", "));
        let notice = match item.kind.as_str() {
            "delivery_failure" => None,
            _ => {
                let alert = DeliveryFailureAlert {
                    to: item.recipients.join(", "),
                    subject: item.subject.clone(),
                    what: item.kind.clone(),
                    error: error.to_string(),
                };
                // Proved at start, so this cannot fail on a template; were it to, the entry
                // is still given up rather than retried for ever.
                match self.alerts.render("delivery_failure.txt", &alert) {
                    Ok(text) => Some(
                        Draft::to_all(
                            "delivery_failure",
                            &self.config.alert_recipients(),
                            format!("Could not deliver: {}", item.subject),
                            text,
                        )
                        .about(item.request_id),
                    ),
                    Err(e) => {
                        tracing::error!("Cannot write the notice of a failed email: {e:#}");
                        None
                    }
                }
            }
        };
        let mut tx = self.store.begin().await?;
        tx.mark_failed(item.id, error).await?;
        if let Some(draft) = notice {
            self.alerts.raise_in(&mut *tx, &format!("undeliverable:{}", item.id), draft).await?;
        }
        tx.commit().await?;
        // A webhook's refusal says nothing about SMTP.
        if item.kind != webhook::KIND {
            self.note_smtp(crate::store::SmtpOutcome::Failed(error)).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailings::Composer;

    #[tokio::test]
    async fn an_email_given_up_is_failed_with_its_notice_once() {
        let (_dir, config, store, clock) = alerts::testing::setup().await;
        let alerts = Arc::new(alerts::testing::new_alerts(&config, &store, &clock));
        let sender = Sender::new(config.clone(), store.clone(), clock.clone(), Arc::default(), alerts);
        let to = [crate::domain::EmailAddress::parse("jo@example.org").unwrap()];
        let mail =
            Composer::new(config).compose(&Draft::to_all("acknowledgement", &to, "Hello", "Hi")).unwrap();
        let mut tx = store.begin().await.unwrap();
        tx.enqueue(&mail, clock.now()).await.unwrap();
        tx.commit().await.unwrap();
        let item = store.claim_due(clock.now(), 10).await.unwrap().remove(0);

        sender.permanent(&item, "550 5.1.1 No such user").await.unwrap();
        let counts = store.outbox_counts().await.unwrap();
        assert_eq!((counts.failed, counts.pending), (1, 1), "failed, and its notice queued");
        let notice = store.claim_due(clock.now(), 10).await.unwrap().remove(0);
        assert_eq!(
            (notice.kind.as_str(), notice.subject.as_str()),
            ("delivery_failure", "Could not deliver: Hello")
        );
        let raw = String::from_utf8_lossy(&notice.raw).replace("=\r\n", "");
        assert!(raw.contains("Error:   550 5.1.1 No such user"), "{raw}");
        // A notice that cannot be delivered is failed without a notice of its own.
        sender.permanent(&notice, "550 no").await.unwrap();
        let counts = store.outbox_counts().await.unwrap();
        assert_eq!((counts.failed, counts.pending), (2, 0));
    }

    #[test]
    fn retries_back_off_to_half_an_hour() {
        let base = Duration::from_secs(30);
        assert_eq!(retry_delay(base, 1).num_seconds(), 30);
        assert_eq!(retry_delay(base, 2).num_seconds(), 60);
        assert_eq!(retry_delay(base, 10).num_seconds(), 1800);
        assert_eq!(retry_delay(base, 1000).num_seconds(), 1800);
    }
}
