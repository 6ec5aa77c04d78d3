//! The durable outbox: every email gatehouse sends is rendered, given its Message-ID and
//! written to the database in the same transaction as the event that causes it; the
//! [`Sender`] task then delivers it over SMTP, retrying temporary failures for two days.
//!
//! So an SMTP outage delays mail but loses none, and a crash loses none either: an entry
//! the crash left half-sent goes again at the next start (the only way one can go twice).

pub mod alerts;
pub mod recipients;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use lettre::AsyncTransport as _;
use lettre::address::Envelope;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use rand::Rng as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::EmailAddress;
use crate::store::{NewOutgoing, OutboxItem, SharedStore};

/// RFC 3834: `auto-replied` for answers to a message (acknowledgements, outcomes),
/// `auto-generated` for everything else (notifications, reminders, summaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoSubmitted {
    Replied,
    Generated,
}

/// `addresses` as a [`Draft`]'s recipients, without display names (the gatekeepers, the
/// board, the operator).
pub fn to_each(addresses: &[EmailAddress]) -> Vec<(Option<String>, String)> {
    addresses.iter().map(|a| (None, a.to_string())).collect()
}

/// One email to build.
#[derive(Debug, Clone)]
pub struct Draft {
    pub kind: &'static str,
    pub request_id: Option<i64>,
    pub to: Vec<(Option<String>, String)>,
    pub reply_to: Option<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// Message-IDs (no angle brackets) this answers.
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub auto_submitted: AutoSubmitted,
    /// Files to attach (the approach's own attachments, for the gatekeeper).
    pub attachments: Vec<crate::classify::AttachmentBody>,
}

impl Draft {
    /// An alert (a message set aside, a refused login, an expiring secret, a full disk, an
    /// email that cannot be delivered) to `to` (see [`Config::operator_recipients`] and
    /// [`Config::alert_recipients`]): the one shape every such alert takes.
    pub fn system_alert(to: &[EmailAddress], subject: String, text: String) -> Self {
        Self {
            kind: "system_alert",
            request_id: None,
            to: to_each(to),
            reply_to: None,
            subject,
            text,
            html: None,
            in_reply_to: None,
            references: Vec::new(),
            auto_submitted: AutoSubmitted::Generated,
            attachments: Vec::new(),
        }
    }
}

/// Builds outgoing messages with gatehouse's From, headers and Message-IDs.
#[derive(Debug, Clone)]
pub struct Composer {
    config: Arc<Config>,
}

impl Composer {
    pub fn new(config: Arc<Config>) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A new Message-ID (no angle brackets) in our own domain, so our own mail coming back
    /// can be recognised.
    pub fn new_message_id(&self) -> String {
        let bytes: [u8; 12] = rand::rng().random();
        format!(
            "gatehouse.{}.{}@{}",
            Utc::now().timestamp(),
            hex::encode(bytes),
            self.config.smtp.from.address.domain()
        )
    }

    /// Renders `draft` into RFC 5322 bytes, ready for the outbox.
    pub fn compose(&self, draft: &Draft) -> anyhow::Result<NewOutgoing> {
        let from = &self.config.smtp.from;
        let from_mailbox = Mailbox::new(
            from.name.as_deref().map(one_line),
            from.address.as_str().parse().context("Bad From address")?,
        );
        let message_id = self.new_message_id();
        let mut builder = lettre::Message::builder()
            .from(from_mailbox)
            .subject(one_line(&draft.subject))
            .message_id(Some(format!("<{message_id}>")))
            .date_now();
        let mut recipients = Vec::new();
        for (name, address) in &draft.to {
            let address: lettre::Address =
                address.parse().with_context(|| format!("Bad recipient {address:?}"))?;
            recipients.push(address.to_string().to_lowercase());
            builder = builder.to(Mailbox::new(name.as_deref().map(one_line), address));
        }
        anyhow::ensure!(!recipients.is_empty(), "An email needs a recipient");
        if let Some(reply_to) = &draft.reply_to {
            builder = builder.reply_to(Mailbox::new(None, reply_to.parse().context("Bad Reply-To")?));
        }
        if let Some(parent) = &draft.in_reply_to {
            builder = builder.in_reply_to(format!("<{}>", clean_id(parent)));
        }
        if !draft.references.is_empty() {
            let refs: Vec<String> = draft.references.iter().map(|r| format!("<{}>", clean_id(r))).collect();
            builder = builder.references(refs.join(" "));
        }
        let auto = match draft.auto_submitted {
            AutoSubmitted::Replied => "auto-replied",
            AutoSubmitted::Generated => "auto-generated",
        };
        builder = builder
            .raw_header(raw_header("Auto-Submitted", auto))
            .raw_header(raw_header("X-Auto-Response-Suppress", "All"))
            .raw_header(raw_header("X-Gatehouse", draft.kind));
        let text = || SinglePart::builder().header(ContentType::TEXT_PLAIN).body(draft.text.clone());
        let body = draft.html.as_ref().map(|html| {
            MultiPart::alternative()
                .singlepart(text())
                .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(html.clone()))
        });
        let message = if draft.attachments.is_empty() {
            match body {
                Some(alternative) => builder.multipart(alternative),
                None => builder.singlepart(text()),
            }
        } else {
            let mut mixed = match body {
                Some(alternative) => MultiPart::mixed().multipart(alternative),
                None => MultiPart::mixed().singlepart(text()),
            };
            for a in &draft.attachments {
                let content_type = ContentType::parse(&a.content_type)
                    .or_else(|_| ContentType::parse("application/octet-stream"))
                    .unwrap_or(ContentType::TEXT_PLAIN);
                mixed =
                    mixed.singlepart(Attachment::new(one_line(&a.name)).body(a.bytes.clone(), content_type));
            }
            builder.multipart(mixed)
        }
        .context("Cannot build the email")?;
        Ok(NewOutgoing {
            kind: draft.kind.to_string(),
            request_id: draft.request_id,
            message_id,
            envelope_from: from.address.to_string(),
            recipients,
            subject: one_line(&draft.subject),
            raw: message.formatted(),
        })
    }
}

fn raw_header(name: &'static str, value: &str) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), one_line(value))
}

/// Header values come partly from incoming mail; a CR or LF in them would let a sender
/// inject headers into what we send.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn clean_id(id: &str) -> String {
    id.chars().filter(|c| !c.is_whitespace() && !c.is_control() && *c != '<' && *c != '>').collect()
}

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
    let secs = i64::try_from(initial.as_secs()).unwrap_or(30).max(1).saturating_mul(1i64 << exp).min(30 * 60);
    chrono::Duration::seconds(secs)
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
    composer: Composer,
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
        let composer = Composer::new(config.clone());
        Self { config, store, clock, wake, composer, tokens: None, alerts }
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
        self.alerts
            .raise_or_log(
                SMTP_LOGIN,
                format!("gatehouse cannot log in to the SMTP server {}", smtp.host),
                format!(
                    "gatehouse cannot log in to the SMTP server, so no email goes out: acknowledgements, the gatekeepers' notifications and outcomes wait in the outbox (nothing is lost).\n\nServer:  {}:{}\nUser:    {}\nError:   {error}\n\nFix: {fix}, then run `gatehouse check`. The waiting emails go out by themselves once the login works (this email waited with them).\n",
                    smtp.host,
                    smtp.port,
                    smtp.username.as_deref().unwrap_or("(none)"),
                ),
            )
            .await;
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
            self.alerts
                .raise_or_log(
                    OUTBOX_FAILING,
                    "gatehouse cannot send email".to_string(),
                    format!(
                        "gatehouse has tried {} times to send an email and failed each time, so acknowledgements, the gatekeepers' notifications and outcomes are waiting in the outbox. It keeps retrying for two days; nothing is lost meanwhile.\n\nServer:  {}:{}\nLast error: {error}\n\n`gatehouse status` shows the outbox; `gatehouse check` tests the SMTP settings. The waiting emails go out by themselves once sending works (this email waited with them).\n",
                        item.attempts, smtp.host, smtp.port
                    ),
                )
                .await;
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
        self.store.mark_retry(item.id, next, error).await
    }

    /// Marks the entry failed and tells the gatekeepers and the operator (the recipient
    /// must be reached another way), unless the failure is itself such a report (which would
    /// loop).
    async fn permanent(&self, item: &OutboxItem, error: &str) -> anyhow::Result<()> {
        tracing::error!("Gave up sending {} to {}: {error}", item.kind, item.recipients.join(", "));
        self.store.mark_failed(item.id, error).await?;
        // A webhook's refusal says nothing about SMTP.
        if item.kind != webhook::KIND {
            self.note_smtp(crate::store::SmtpOutcome::Failed(error)).await;
        }
        if item.kind == "delivery_failure" {
            return Ok(());
        }
        let draft = Draft {
            kind: "delivery_failure",
            request_id: item.request_id,
            to: to_each(&self.config.alert_recipients()),
            reply_to: None,
            subject: format!("Could not deliver: {}", item.subject),
            text: format!(
                "gatehouse could not deliver an email and has given up.\n\nTo:      {}\nSubject: {}\nWhat:    {}\nError:   {error}\n\nThe recipient has not received it. You may want to contact them another way.\n",
                item.recipients.join(", "),
                item.subject,
                item.kind
            ),
            html: None,
            in_reply_to: None,
            references: Vec::new(),
            auto_submitted: AutoSubmitted::Generated,
            attachments: Vec::new(),
        };
        let mut tx = self.store.begin().await?;
        alerts::raise_in(
            &mut *tx,
            &self.composer,
            self.clock.now(),
            &format!("undeliverable:{}", item.id),
            draft,
        )
        .await?;
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_cannot_carry_new_lines() {
        assert_eq!(one_line("Hello\r\nBcc: victim@example.org"), "Hello Bcc: victim@example.org");
        assert_eq!(one_line("  a \t b  "), "a b");
        assert_eq!(clean_id("<abc@x>\r\nX: y"), "abc@xX:y");
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
