//! Technical alerts: each problem (a refused login, the outbox failing, the disk filling up,
//! an expiring secret, a message set aside) has a key. [`Alerts::raise`] emails it at most
//! once a day while it lasts; [`Alerts::resolve`] emails "resolved" when it clears. What
//! was sent when is kept in the database (`alerts`), so a restart neither repeats an alert
//! within the day nor forgets to say that a problem has gone.
//!
//! Each alert's words are an overridable template (`alert_*.txt`, `delivery_failure.txt`,
//! `alert_resolved.txt`) like every other email's; [`Alerts::raise_with`] renders one.
//!
//! The alert goes through the outbox like every other email: an alert about the outbox
//! itself waits there until SMTP works again, which is why `/readyz` and `/metrics` exist.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::clock::Clock;
use crate::config::Config;
use crate::mailings::{Composer, Draft};
use crate::store::{AlertRow, SharedStore, Tx};
use crate::templates::{RepeatedAlert, ResolvedAlert, Templates};

/// How long a problem that lasts goes before it is emailed again.
pub const REPEAT_AFTER: chrono::Duration = chrono::Duration::hours(24);

/// Raises and resolves the operator's alerts.
#[derive(Debug)]
pub struct Alerts {
    config: Arc<Config>,
    store: SharedStore,
    clock: Arc<dyn Clock>,
    composer: Composer,
    templates: Arc<Templates>,
    /// The problems raised and not resolved (key → when last sent), read from the database
    /// at first use. `resolve` is called after every success (each email sent, each login)
    /// and `raise` at every failure (every few seconds while a disk is full): neither may
    /// cost a database write when there is nothing to send. Held across a raise or resolve
    /// so the two cannot interleave on one key.
    open: tokio::sync::Mutex<Option<HashMap<String, DateTime<Utc>>>>,
}

impl Alerts {
    pub fn new(
        config: Arc<Config>,
        store: SharedStore,
        clock: Arc<dyn Clock>,
        templates: Arc<Templates>,
    ) -> Self {
        let composer = Composer::new(config.clone());
        Self { config, store, clock, composer, templates, open: tokio::sync::Mutex::new(None) }
    }

    /// An alert's text: `template` (an `alert_*.txt`) rendered with `context`.
    pub fn render(&self, template: &str, context: &impl Serialize) -> anyhow::Result<String> {
        self.templates.render(template, context)
    }

    /// [`Alerts::raise`] with the text of `template` rendered with `context`.
    pub async fn raise_with(
        &self,
        key: &str,
        subject: String,
        template: &str,
        context: &impl Serialize,
    ) -> anyhow::Result<bool> {
        let text = self.render(template, context)?;
        self.raise(key, subject, text).await
    }

    /// [`Alerts::raise_with`], logging rather than returning a failure (see
    /// [`Alerts::raise_or_log`]).
    pub async fn raise_with_or_log(
        &self,
        key: &str,
        subject: String,
        template: &str,
        context: &impl Serialize,
    ) {
        if let Err(e) = self.raise_with(key, subject, template, context).await {
            tracing::error!("Cannot queue the alert {key:?}: {e:#}");
        }
    }

    /// [`raise_in`] with this service's composer: for an alert that must land in the
    /// caller's transaction.
    pub async fn raise_in(&self, tx: &mut dyn Tx, key: &str, draft: Draft) -> anyhow::Result<bool> {
        raise_in(tx, &self.composer, &self.templates, self.clock.now(), key, draft).await
    }

    /// Emails the operator about problem `key`, unless it was emailed in the last day and
    /// has not cleared since. Returns whether an email was queued.
    pub async fn raise(&self, key: &str, subject: String, text: String) -> anyhow::Result<bool> {
        let mut guard = self.open.lock().await;
        let open = self.loaded(&mut guard).await?;
        let now = self.clock.now();
        if open.get(key).is_some_and(|&last| now - last < REPEAT_AFTER) {
            return Ok(false);
        }
        let mut tx = self.store.begin().await?;
        let draft = Draft::system_alert(&self.config.operator_recipients(), subject, text);
        let sent = raise_in(&mut *tx, &self.composer, &self.templates, now, key, draft).await?;
        tx.commit().await?;
        if sent {
            open.insert(key.to_string(), now);
        }
        Ok(sent)
    }

    async fn loaded<'a>(
        &self,
        guard: &'a mut Option<HashMap<String, DateTime<Utc>>>,
    ) -> anyhow::Result<&'a mut HashMap<String, DateTime<Utc>>> {
        Ok(match guard {
            Some(open) => open,
            None => guard.insert(self.store.open_alerts().await?.into_iter().collect()),
        })
    }

    /// Problem `key` has cleared: if the operator was told about it, say so (once) and
    /// mark it resolved. Returns whether an email was queued.
    pub async fn resolve(&self, key: &str) -> anyhow::Result<bool> {
        let mut guard = self.open.lock().await;
        let open = self.loaded(&mut guard).await?;
        if !open.contains_key(key) {
            return Ok(false);
        }
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let Some(alert) = tx.alert(key).await?.filter(|a| a.resolved_at.is_none()) else {
            open.remove(key);
            return Ok(false);
        };
        let text = self.render(
            "alert_resolved.txt",
            &ResolvedAlert {
                subject: alert.subject.clone(),
                first_reported: local(&self.config, alert.first_raised),
                cleared: local(&self.config, now),
            },
        )?;
        let draft = Draft::system_alert(
            &self.config.operator_recipients(),
            format!("Resolved: {}", alert.subject),
            text,
        );
        let mail = self.composer.compose(&draft)?;
        tx.enqueue(&mail, now).await?;
        tx.put_alert(&AlertRow { resolved_at: Some(now), ..alert }).await?;
        tx.commit().await?;
        open.remove(key);
        tracing::info!("Resolved: {key}");
        Ok(true)
    }

    /// Calls [`Alerts::raise`], logging rather than returning a failure: an alert that
    /// cannot be queued must not stop the work that found the problem.
    pub async fn raise_or_log(&self, key: &str, subject: String, text: String) {
        if let Err(e) = self.raise(key, subject, text).await {
            tracing::error!("Cannot queue the alert {key:?}: {e:#}");
        }
    }

    /// Calls [`Alerts::resolve`], logging rather than returning a failure.
    pub async fn resolve_or_log(&self, key: &str) {
        if let Err(e) = self.resolve(key).await {
            tracing::error!("Cannot record that {key:?} has cleared: {e:#}");
        }
    }
}

/// [`Alerts::raise`] inside the caller's transaction, with the caller's `draft` (its
/// recipients, subject and text): for an alert that must land together with what caused it
/// (a message set aside, an email given up). A repeat says since when the problem has
/// lasted (`alert_repeated.txt`). Returns whether an email was queued.
pub async fn raise_in(
    tx: &mut dyn Tx,
    composer: &Composer,
    templates: &Templates,
    now: DateTime<Utc>,
    key: &str,
    mut draft: Draft,
) -> anyhow::Result<bool> {
    let earlier = tx.alert(key).await?.filter(|a| a.resolved_at.is_none());
    let first_raised = match &earlier {
        Some(a) if now - a.last_sent < REPEAT_AFTER => return Ok(false),
        Some(a) => {
            let first_reported = local(composer.config(), a.first_raised);
            draft.text.push_str(&templates.render("alert_repeated.txt", &RepeatedAlert { first_reported })?);
            a.first_raised
        }
        None => now,
    };
    let mail = composer.compose(&draft)?;
    tx.enqueue(&mail, now).await?;
    let subject = draft.subject;
    tx.put_alert(&AlertRow {
        key: key.to_string(),
        subject,
        first_raised,
        last_sent: now,
        resolved_at: None,
    })
    .await?;
    tracing::info!("Alert {key:?} queued for {}", mail.recipients.join(", "));
    Ok(true)
}

fn local(config: &Config, at: DateTime<Utc>) -> String {
    at.with_timezone(&config.service.timezone).format("%Y-%m-%d %H:%M %Z").to_string()
}

/// For tests: a config with an operator, a fresh database, a clock to move, and the
/// alerts over them.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::clock::ManualClock;

    pub(crate) async fn setup() -> (tempfile::TempDir, Arc<Config>, SharedStore, Arc<ManualClock>) {
        let dir = tempfile::tempdir().unwrap();
        let text = crate::config::tests::VALID
            .replace("[board]", "[operator]\naddresses = [\"it@example.org\"]\n\n[board]");
        let config =
            Arc::new(Config::parse(&text, std::path::Path::new("/etc/gatehouse/gatehouse.toml")).unwrap());
        let store = crate::store::open_sqlite_file(&dir.path().join("g.db")).await.unwrap();
        store.migrate().await.unwrap();
        let clock = Arc::new(ManualClock::new(Utc::now()));
        (dir, config, store, clock)
    }

    pub(crate) fn new_alerts(config: &Arc<Config>, store: &SharedStore, clock: &Arc<ManualClock>) -> Alerts {
        let templates = Arc::new(Templates::load(config).unwrap());
        Alerts::new(config.clone(), store.clone(), clock.clone(), templates)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{new_alerts, setup};
    use super::*;

    #[tokio::test]
    async fn a_lasting_problem_goes_once_a_day_survives_a_restart_and_is_resolved_once() {
        let (_dir, config, store, clock) = setup().await;
        let alerts = new_alerts(&config, &store, &clock);
        async fn raise(a: &Alerts) -> anyhow::Result<bool> {
            a.raise("imap_login_refused", "Cannot log in".into(), "Fix it.\n".into()).await
        }
        assert!(raise(&alerts).await.unwrap());
        clock.advance(chrono::Duration::hours(23));
        assert!(!raise(&alerts).await.unwrap(), "twice within a day");
        // A restart (a new Alerts, same database) remembers it.
        let restarted = new_alerts(&config, &store, &clock);
        assert!(!raise(&restarted).await.unwrap(), "repeated after a restart");
        clock.advance(chrono::Duration::hours(2));
        assert!(raise(&restarted).await.unwrap(), "not repeated the next day");
        assert!(!restarted.resolve("disk_full").await.unwrap(), "never raised: nothing to resolve");
        assert!(restarted.resolve("imap_login_refused").await.unwrap());
        assert!(!restarted.resolve("imap_login_refused").await.unwrap(), "resolved twice");
        assert!(store.open_alerts().await.unwrap().is_empty());
        // Raised again after clearing: a new occurrence, told at once.
        assert!(raise(&restarted).await.unwrap());

        let counts = store.outbox_counts().await.unwrap();
        assert_eq!(counts.pending, 4, "two alerts, one resolved, one new alert");
        let sent = store.claim_due(clock.now() + chrono::Duration::hours(1), 10).await.unwrap();
        let subjects: Vec<&str> = sent.iter().map(|i| i.subject.as_str()).collect();
        assert_eq!(subjects, ["Cannot log in", "Cannot log in", "Resolved: Cannot log in", "Cannot log in"]);
        assert!(sent.iter().all(|i| i.recipients == ["it@example.org"]), "the operator only");
        let reminder = String::from_utf8_lossy(&sent[1].raw).replace("=\r\n", "");
        assert!(reminder.contains("first reported"), "{reminder}");
    }
}
