//! `[channel]`: the group's messaging channel (WhatsApp by hand; Teams or Slack through an
//! incoming webhook).
//!
//! A webhook URL carries its own credential (whoever has it may post to the channel), so
//! the file only names where it is kept, as for passwords: `webhook_url_env` or
//! `webhook_url_file`. It is read when a post is delivered, never logged.

use std::time::Duration;

use super::raw::RawChannel;
use super::{ConfigError, Source};
use crate::secret::SecretSource;

/// How long one webhook post may take when `timeout_secs` is not given.
const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// `[channel]`, checked.
#[derive(Debug, Clone)]
pub struct ChannelSettings {
    /// Where the incoming webhook's URL is kept; `None`: the message is drafted for the
    /// gatekeeper only.
    pub webhook_url: Option<SecretSource>,
    /// The limit on one post, connection and answer included.
    pub timeout: Duration,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self { webhook_url: None, timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS) }
    }
}

/// Checks `[channel]`.
pub(super) fn channel(raw: RawChannel, src: &Source) -> Result<ChannelSettings, ConfigError> {
    let webhook_url = match (raw.webhook_url_env, raw.webhook_url_file) {
        (Some(_), Some(_)) => {
            return Err(src.err(
                "channel.webhook_url_file",
                "both webhook_url_env and webhook_url_file are set".into(),
                "keep one of them",
            ));
        }
        (Some(var), None) => {
            let var = var.trim().to_string();
            if var.is_empty() || var.contains(|c: char| c == '=' || c.is_whitespace() || c == '\0') {
                return Err(src.err(
                    "channel.webhook_url_env",
                    // Not echoed: it may be the URL itself, written where its name belongs.
                    "the value is not an environment variable's name".into(),
                    "name the variable that holds the webhook URL, e.g. webhook_url_env = \"GATEHOUSE_CHANNEL_WEBHOOK\" (never the URL itself: it is a secret)",
                ));
            }
            Some(SecretSource::Env(var))
        }
        (None, Some(file)) if file.trim().is_empty() => {
            return Err(src.err(
                "channel.webhook_url_file",
                "the file name is empty".into(),
                "give the path of a file holding only the webhook URL, or remove the key",
            ));
        }
        (None, Some(file)) => Some(SecretSource::File(src.resolve(file.trim()))),
        (None, None) => None,
    };
    let timeout = match raw.timeout_secs {
        None => Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        Some(secs @ 1..=300) => Duration::from_secs(secs),
        Some(secs) => {
            return Err(src.err(
                "channel.timeout_secs",
                format!("{secs} is not between 1 and 300 seconds"),
                "use e.g. 30, or remove the key",
            ));
        }
    };
    Ok(ChannelSettings { webhook_url, timeout })
}
