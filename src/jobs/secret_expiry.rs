//! Warnings before a client secret expires.
//!
//! Entra ID client secrets last at most two years, and when one lapses gatehouse silently
//! stops reading the shared mailbox. The operator writes the expiry date in the config
//! (`secret_expires`); from `secret_expires_warn_days` (14) days before it, once a day, the
//! log and the operator are told ([`Alerts`]), which keeps when the last warning went in the
//! database, so restarts neither repeat it the same day nor skip a day.

use std::sync::Arc;

use anyhow::Context as _;
use chrono::NaiveDate;

use crate::clock::Clock;
use crate::config::Config;
use crate::mailings::alerts::Alerts;
use crate::templates::SecretExpiryAlert;

/// A secret that is due a warning today.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub section: &'static str,
    pub client_id: String,
    pub expires: NaiveDate,
    /// Negative once it has expired.
    pub days_left: i64,
}

impl Due {
    pub fn describe(&self) -> String {
        let when = match self.days_left {
            d if d < 0 => format!("expired on {} ({} days ago)", self.expires, -d),
            0 => format!("expires today ({})", self.expires),
            1 => format!("expires tomorrow ({})", self.expires),
            d => format!("expires on {} (in {d} days)", self.expires),
        };
        format!("The OAuth2 client secret of app {} ([{}]) {when}", self.client_id, self.section)
    }
}

/// Secrets within their warning window on `today`.
pub fn due(config: &Config, today: NaiveDate) -> Vec<Due> {
    config
        .oauth_sections()
        .into_iter()
        .filter_map(|(section, settings)| {
            let expires = settings.secret_expires?;
            let days_left = (expires - today).num_days();
            (days_left <= i64::from(settings.secret_expires_warn_days)).then(|| Due {
                section,
                client_id: settings.client_id().unwrap_or("(token command)").to_string(),
                expires,
                days_left,
            })
        })
        .collect()
}

/// The operator's alert key for the secret of one config section.
pub fn alert_key(section: &str) -> String {
    format!("oauth2_secret:{section}")
}

/// Logs and emails today's warnings that have not gone yet (once a day per secret, through
/// [`Alerts`]), and says so once a secret that was warned about is no longer due (a new one
/// was configured). Returns how many warnings went.
pub async fn warn_once_a_day(config: &Config, alerts: &Alerts, clock: &dyn Clock) -> anyhow::Result<usize> {
    let today = clock.now().with_timezone(&config.service.timezone).date_naive();
    let due = due(config, today);
    for (section, _) in config.oauth_sections() {
        if !due.iter().any(|d| d.section == section) {
            alerts.resolve(&alert_key(section)).await?;
        }
    }
    let mut sent = 0;
    for d in due {
        let what = d.describe();
        let subject = if d.days_left < 0 {
            "gatehouse's access to the shared mailbox has expired".to_string()
        } else {
            format!("gatehouse's access to the shared mailbox expires in {} day(s)", d.days_left.max(0))
        };
        let alert = SecretExpiryAlert {
            what: what.clone(),
            mailbox: config.imap.username.clone(),
            client_id: d.client_id.clone(),
            section: d.section.to_string(),
        };
        if !alerts.raise_with(&alert_key(d.section), subject, "alert_secret_expiry.txt", &alert).await? {
            continue;
        }
        if d.days_left < 0 {
            tracing::error!(
                "{what}: gatehouse cannot get new tokens. Create a new secret and set secret_expires"
            );
        } else {
            tracing::warn!("{what}: create a new secret before then and set secret_expires");
        }
        sent += 1;
    }
    Ok(sent)
}

/// The daily warning as a [`super::Job`].
pub struct SecretExpiry {
    config: Arc<Config>,
    alerts: Arc<Alerts>,
    clock: Arc<dyn Clock>,
}

impl SecretExpiry {
    pub fn new(config: Arc<Config>, alerts: Arc<Alerts>, clock: Arc<dyn Clock>) -> Self {
        Self { config, alerts, clock }
    }
}

#[async_trait::async_trait]
impl super::Job for SecretExpiry {
    async fn run_due(&self) -> anyhow::Result<Vec<String>> {
        // The warnings log themselves (as warnings and errors, not information).
        warn_once_a_day(&self.config, &self.alerts, self.clock.as_ref())
            .await
            .context("Cannot warn about the OAuth2 client secret's expiry")?;
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = crate::config::tests::VALID
            .replace("password_env = \"GATEHOUSE_IMAP_PASSWORD\"\n", "auth = \"xoauth2\"\n")
            .replace("[smtp]", &format!("[imap.oauth2]\nflow = \"client_credentials\"\ntenant = \"t\"\nclient_id = \"app-1\"\nclient_secret_env = \"S\"\n{extra}\n[smtp]"));
        Config::parse(&text, std::path::Path::new("/etc/gatehouse/gatehouse.toml")).unwrap()
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn warnings_start_the_configured_number_of_days_before() {
        let c = config("secret_expires = \"2026-06-30\"");
        assert!(due(&c, day("2026-06-15")).is_empty());
        let d = due(&c, day("2026-06-16"));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].days_left, 14);
        assert!(d[0].describe().contains("in 14 days"), "{}", d[0].describe());
        assert!(due(&c, day("2026-07-02"))[0].describe().contains("2 days ago"));
        let c = config("secret_expires = \"2026-06-30\"\nsecret_expires_warn_days = 30");
        assert_eq!(due(&c, day("2026-05-31")).len(), 1);
        assert!(due(&config(""), day("2026-06-30")).is_empty());
    }
}
