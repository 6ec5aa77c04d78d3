//! Posts to the group's channel: an outbox entry of kind [`KIND`] holds the JSON body
//! (`{"text": "…"}`, which Slack-style incoming webhooks and Teams Workflows' "post to a
//! channel when a webhook request is received" accept) and is delivered by an HTTP POST
//! instead of SMTP, with the same durability, backoff and two days of retries as an email.
//!
//! The URL is a secret (whoever has it may post to the channel): it is read from
//! `[channel] webhook_url_env` / `webhook_url_file` at each attempt, never stored in the
//! outbox, and messages name only its scheme and host. The HTTP is the OAuth2 module's
//! ([`crate::oauth::http`]): TLS verified as everywhere else, the environment's proxy, a
//! timeout on the whole exchange, redirects followed only within the same origin.
//!
//! A 2xx answer is delivered; 429, 5xx and network errors are retried; any other answer is
//! permanent (the webhook was deleted, or refuses the body): the entry fails and the
//! gatekeepers and operator are told, as for an email that cannot be delivered.

use anyhow::Context as _;

use super::{FAILING_AFTER_ATTEMPTS, Sender};
use crate::mailings::Composer;
use crate::oauth::http::{Method, redact_url};
use crate::secret::SecretSource;
use crate::store::{NewOutgoing, OutboxItem, RequestId};

/// The outbox kind of a post to the channel's webhook.
pub const KIND: &str = "channel_post";

/// The operator's alert key while posts keep failing.
const WEBHOOK_FAILING: &str = "channel_webhook_failing";

/// The outbox entry that posts `text` to the webhook named by `source`.
pub fn entry(
    composer: &Composer,
    source: &SecretSource,
    request_id: RequestId,
    reference: &str,
    text: &str,
) -> anyhow::Result<NewOutgoing> {
    let body = serde_json::json!({ "text": escape(text) });
    Ok(NewOutgoing {
        kind: KIND.to_string(),
        request_id: Some(request_id),
        // Unique per entry, as the outbox requires; never sent anywhere.
        message_id: composer.new_message_id(),
        envelope_from: composer.config().smtp.from.address.to_string(),
        recipients: vec![describe(source)],
        subject: format!("[{reference}] Message for the group's channel"),
        raw: serde_json::to_vec(&body).context("Cannot write the webhook's JSON")?,
    })
}

/// The text as Slack-style webhooks require it: `&`, `<` and `>` escaped, so a requester's
/// words cannot form `<!channel>`, `<@U123>`, `<https://evil|a link>` or Teams' `<at>`.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// How the outbox, its logs and alerts name the webhook: by where its URL is kept.
fn describe(source: &SecretSource) -> String {
    format!("channel webhook ({})", source.describe())
}

/// What a post's answer means for the entry.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Delivered,
    Retry,
    Permanent,
}

fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Permanent,
    }
}

/// The URL checked: http(s) only, and plain http only to this machine (a local receiver).
/// Errors name the scheme and host at most.
fn checked_url(url: &str) -> anyhow::Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|_| anyhow::anyhow!("the channel webhook's URL is not a URL"))?;
    let host = parsed.host_str().unwrap_or_default().to_string();
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if crate::config::is_loopback(&host) => Ok(parsed),
        scheme => anyhow::bail!(
            "the channel webhook's URL must be https:// (it is {scheme}:// to {host}); plain http is allowed only to this machine"
        ),
    }
}

impl Sender {
    /// Delivers a [`KIND`] entry: one POST, then the outbox's bookkeeping.
    pub(super) async fn post_to_webhook(
        &self,
        item: &OutboxItem,
        bookkeeping: &tokio::sync::Mutex<()>,
    ) -> anyhow::Result<()> {
        let Some(source) = self.config.channel.webhook_url.as_ref() else {
            let _guard = bookkeeping.lock().await;
            return self
                .permanent(item, "[channel] no longer names a webhook, so the post cannot be made")
                .await;
        };
        let url = match source.load().and_then(|u| checked_url(u.expose())) {
            Ok(url) => url,
            Err(e) => {
                let _guard = bookkeeping.lock().await;
                return self.webhook_retry(item, &format!("{e:#}")).await;
            }
        };
        let shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
        {
            let _guard = bookkeeping.lock().await;
            self.store.mark_in_flight(item.id).await?;
        }
        let answer = crate::oauth::http::request(
            Method::POST,
            url.as_str(),
            Some(("application/json", item.raw.clone())),
            self.config.channel.timeout,
            None,
        )
        .await;
        let _guard = bookkeeping.lock().await;
        match answer {
            Ok(r) if verdict(r.status) == Verdict::Delivered => {
                self.store.mark_sent(item.id, self.clock.now()).await?;
                tracing::info!("Posted {} to the {} ({})", item.subject, item.recipients.join(", "), shown);
                self.alerts.resolve_or_log(WEBHOOK_FAILING).await;
                Ok(())
            }
            Ok(r) => {
                let error = format!("{shown} answered HTTP {}: {}", r.status, r.snippet());
                if verdict(r.status) == Verdict::Retry {
                    self.webhook_retry(item, &error).await
                } else {
                    self.permanent(item, &error).await
                }
            }
            Err(e) => {
                // The HTTP layer's messages name the URL (less any password); the path of a
                // webhook's URL is its secret, so only the scheme and host stay.
                let error = format!("{e:#}").replace(&redact_url(url.as_str()), &shown);
                let error = error.replace(url.as_str(), &shown);
                self.webhook_retry(item, &error).await
            }
        }
    }

    /// A temporary failure: alert the operator once the post has failed a few times (as
    /// that, not as SMTP failing), and retry with the outbox's backoff for two days.
    async fn webhook_retry(&self, item: &OutboxItem, error: &str) -> anyhow::Result<()> {
        let now = self.clock.now();
        if item.attempts >= FAILING_AFTER_ATTEMPTS {
            self.alerts
                .raise_or_log(
                    WEBHOOK_FAILING,
                    "gatehouse cannot post to the group's channel".to_string(),
                    format!(
                        "gatehouse has tried {} times to post a message to the group's channel through its webhook and failed each time. It keeps retrying for two days; the gatekeepers also had the text by email, ready to paste.\n\nWebhook: {}\nLast error: {error}\n\nCheck that the webhook still exists and that the URL in {} is current.\n",
                        item.attempts,
                        item.recipients.join(", "),
                        self.config
                            .channel
                            .webhook_url
                            .as_ref()
                            .map_or_else(|| "[channel]".to_string(), SecretSource::describe),
                    ),
                )
                .await;
        }
        self.retry_later(item, now, error).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_delivered_retried_or_refused() {
        assert_eq!(verdict(200), Verdict::Delivered);
        assert_eq!(verdict(202), Verdict::Delivered);
        assert_eq!(verdict(429), Verdict::Retry);
        assert_eq!(verdict(503), Verdict::Retry);
        assert_eq!(verdict(400), Verdict::Permanent);
        assert_eq!(verdict(404), Verdict::Permanent);
        assert_eq!(verdict(301), Verdict::Permanent);
    }

    #[test]
    fn only_https_or_this_machine_and_errors_never_show_the_path() {
        assert!(checked_url("https://hooks.example/services/SECRET").is_ok());
        assert!(checked_url("http://127.0.0.1:8080/hook").is_ok());
        let e = checked_url("http://hooks.example/services/SECRET").unwrap_err().to_string();
        assert!(e.contains("hooks.example") && !e.contains("SECRET"), "{e}");
        let e = checked_url("not a url SECRET").unwrap_err().to_string();
        assert!(!e.contains("SECRET"), "{e}");
    }

    #[test]
    fn the_body_is_json_text_with_slack_escapes() {
        assert_eq!(escape("a <b> & <!here>"), "a &lt;b&gt; &amp; &lt;!here&gt;");
    }
}
