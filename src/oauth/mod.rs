//! OAuth2 for IMAP and SMTP (SASL XOAUTH2), as Microsoft 365 / NHSmail requires since basic
//! authentication was retired.
//!
//! - [`OAuthSettings`] is what `[imap.oauth2]` / `[smtp.oauth2]` say: where tokens come from
//!   (the app-only `client_credentials` flow, a delegated `refresh_token` kept in the data
//!   directory, or a `token_command`), the scope and the token endpoint.
//! - [`sources`] gets a token from each kind of source, and classifies every failure by the
//!   step that failed ([`Step`]) with what to do about it, because "authentication failed"
//!   alone is what makes help desks give up on OAuth2.
//! - [`TokenProvider`] caches the access token, renews it before it expires (and when a
//!   server refuses it), and keeps using a still-valid token while the token endpoint is
//!   briefly down. IMAP and SMTP each hold one; when both sections describe the same source
//!   they share it ([`Providers`]), so a rotated refresh token is never used twice.
//! - [`xoauth2`] builds the SASL string that async-imap's authenticator and lettre send.

pub mod http;
pub mod sources;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use crate::clock::Clock;
// The settings are the config's (what a table says, checked); kept reachable here, where
// they are used.
pub use crate::config::{
    DEFAULT_APP_SCOPE, DEFAULT_DELEGATED_SCOPE, Flow, MICROSOFT_DEVICE_CODE_ENDPOINT,
    MICROSOFT_TOKEN_ENDPOINT, OAuthSettings,
};
use crate::secret::Secret;

/// A token whose lifetime the source did not say (a plain `token_command` output) is asked
/// for again after this long, so a helper that renews tokens is picked up.
pub const UNKNOWN_LIFETIME_REUSE: Duration = Duration::from_secs(5 * 60);
/// Renew this long before expiry at most (a tenth of the lifetime for short-lived tokens).
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);

/// The step of signing in that failed: what `gatehouse check`, `status` and the
/// gatekeepers' alert name, each with its own fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The token endpoint could not be reached or answered nonsense (network, outage).
    TokenEndpoint,
    /// The token endpoint refused the app's credentials (wrong or expired secret, unknown app).
    ClientCredentials,
    /// The app lacks admin consent or the API permission for the scope.
    Consent,
    /// The refresh token is missing, expired or revoked.
    RefreshToken,
    /// The token command failed or printed nothing.
    TokenCommand,
    /// The server refused a token that the token endpoint had just issued: the app or user
    /// has no right to this mailbox (or IMAP/SMTP AUTH is turned off for it).
    MailboxPermission,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::TokenEndpoint => "token endpoint",
            Step::ClientCredentials => "client credentials",
            Step::Consent => "consent",
            Step::RefreshToken => "refresh token",
            Step::TokenCommand => "token command",
            Step::MailboxPermission => "mailbox permission",
        }
    }
}

/// A failure to get or use a token, with the step and the fix.
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub step: Step,
    pub detail: String,
    pub fix: String,
    /// Worth retrying soon by itself (network, outage), as opposed to refused until
    /// someone changes something.
    pub transient: bool,
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OAuth2 failed ({}): {}. Fix: {}", self.step.as_str(), self.detail, self.fix)
    }
}

impl std::error::Error for OAuthError {}

/// An access token and when it must be renewed.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub secret: Secret,
    /// When it stops working, if the source said.
    pub expires_at: Option<DateTime<Utc>>,
    /// When to get a new one: before expiry by a tenth of its lifetime, at most 5 minutes.
    pub renew_at: DateTime<Utc>,
    /// Counts tokens from one provider, so a refusal renews only the token that was refused.
    pub serial: u64,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &self.secret)
            .field("expires_at", &self.expires_at)
            .field("serial", &self.serial)
            .finish()
    }
}

impl AccessToken {
    fn new(fetched: sources::Fetched, now: DateTime<Utc>, serial: u64) -> Self {
        let (expires_at, renew_at) = match fetched.expires_in {
            Some(lifetime) => {
                let before = (lifetime / 10).min(RENEW_BEFORE);
                let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(1));
                let before = chrono::Duration::from_std(before).unwrap_or_default();
                (Some(now + lifetime), now + lifetime - before)
            }
            None => (None, now + chrono::Duration::from_std(UNKNOWN_LIFETIME_REUSE).unwrap_or_default()),
        };
        Self { secret: fetched.access_token, expires_at, renew_at, serial }
    }

    /// When a session logged in with this token should end and log in again with a new
    /// one: at renewal time, or at expiry if renewal is already overdue (the token
    /// endpoint is down and this token is what there is). `None` when the lifetime is
    /// unknown: such a session lasts until the server ends it.
    pub fn session_deadline(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let expires = self.expires_at?;
        Some(if self.renew_at > now { self.renew_at } else { expires })
    }

    /// Still accepted by the server (as far as we know).
    pub fn valid_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }
}

/// Gets tokens from the source and caches one, for IMAP or SMTP (or both).
pub struct TokenProvider {
    settings: OAuthSettings,
    source: Box<dyn sources::TokenSource>,
    clock: Arc<dyn Clock>,
    current: Mutex<Option<AccessToken>>,
    serial: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProvider").field("flow", &self.settings.flow_name()).finish_non_exhaustive()
    }
}

impl TokenProvider {
    pub fn new(settings: OAuthSettings, clock: Arc<dyn Clock>) -> Self {
        let source = sources::for_settings(&settings);
        Self::with_source(settings, source, clock)
    }

    pub fn with_source(
        settings: OAuthSettings,
        source: Box<dyn sources::TokenSource>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { settings, source, clock, current: Mutex::new(None), serial: Default::default() }
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    /// When the current access token expires, if one is held and its lifetime is known.
    /// `None` too while a token is being fetched: a metrics scrape must not wait for that.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.current.try_lock().ok()?.as_ref()?.expires_at
    }

    /// A token to use now: the cached one until it is due for renewal, else a new one. If
    /// the token endpoint is unreachable while the cached token still works, the cached
    /// one is used (and renewal is tried again next time).
    pub async fn token(&self) -> Result<AccessToken, OAuthError> {
        let mut current = self.current.lock().await;
        let now = self.clock.now();
        if let Some(t) = current.as_ref()
            && now < t.renew_at
        {
            return Ok(t.clone());
        }
        match self.source.fetch(&self.settings).await {
            Ok(fetched) => {
                let serial = self.serial.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let token = AccessToken::new(fetched, self.clock.now(), serial);
                tracing::debug!(
                    "New OAuth2 access token ({}), valid until {}",
                    self.settings.flow_name(),
                    token.expires_at.map(|e| e.to_rfc3339()).unwrap_or_else(|| "unknown".into())
                );
                *current = Some(token.clone());
                Ok(token)
            }
            Err(e) if e.transient => match current.as_ref() {
                Some(t) if t.valid_at(now) => {
                    tracing::warn!(
                        "Cannot renew the OAuth2 access token yet ({e}); the current one still works"
                    );
                    Ok(t.clone())
                }
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// A server refused `refused`: forget it (unless it was already replaced) and get a new
    /// token.
    pub async fn renew(&self, refused: &AccessToken) -> Result<AccessToken, OAuthError> {
        {
            let mut current = self.current.lock().await;
            if current.as_ref().is_some_and(|t| t.serial == refused.serial) {
                *current = None;
            }
        }
        self.token().await
    }
}

/// Token providers shared by sections with the same settings (IMAP and SMTP usually use
/// one app registration, and a rotated refresh token must not be used twice).
#[derive(Debug, Default)]
pub struct Providers {
    made: std::sync::Mutex<Vec<Arc<TokenProvider>>>,
}

impl Providers {
    pub fn get(&self, settings: &OAuthSettings, clock: Arc<dyn Clock>) -> Arc<TokenProvider> {
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = made.iter().find(|p| p.settings() == settings) {
            return p.clone();
        }
        let p = Arc::new(TokenProvider::new(settings.clone(), clock));
        made.push(p.clone());
        p
    }
}

/// The SASL XOAUTH2 initial response (before base64), as Microsoft and Google document it.
pub fn xoauth2(user: &str, token: &Secret) -> String {
    format!("user={user}\x01auth=Bearer {}\x01\x01", token.expose())
}

/// async-imap's side of `AUTHENTICATE XOAUTH2`: the first challenge (empty) gets the
/// credentials; a second one is the server's JSON error, answered with an empty line as
/// the mechanism requires, and kept for the error message.
pub struct XOAuth2 {
    response: Option<String>,
    pub server_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl XOAuth2 {
    pub fn new(user: &str, token: &Secret) -> Self {
        Self { response: Some(xoauth2(user, token)), server_error: Default::default() }
    }
}

impl async_imap::Authenticator for XOAuth2 {
    type Response = String;

    fn process(&mut self, challenge: &[u8]) -> String {
        match self.response.take() {
            Some(r) => r,
            None => {
                let text = String::from_utf8_lossy(challenge).into_owned();
                *self.server_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
                String::new()
            }
        }
    }
}

impl fmt::Debug for XOAuth2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("XOAuth2([redacted])")
    }
}

/// What to tell the operator when IMAP or SMTP refuses a token just issued.
pub fn mailbox_permission_error(
    settings: &OAuthSettings,
    service: &str,
    user: &str,
    server: &str,
) -> OAuthError {
    let fix = match &settings.flow {
        Flow::ClientCredentials { client_id, .. } => format!(
            "give the app access to the mailbox in Exchange Online PowerShell: New-ServicePrincipal -AppId {client_id} -ObjectId <the enterprise application's object ID>, then Add-MailboxPermission -Identity {user} -User <that object ID> -AccessRights FullAccess (changes can take 30 minutes to apply); check that {service} is enabled for the mailbox (Set-CASMailbox)"
        ),
        Flow::RefreshToken { .. } => format!(
            "the signed-in account needs access to {user}, and {service} must be enabled for the mailbox (Set-CASMailbox); if the account changed, run `gatehouse oauth login` again"
        ),
        Flow::TokenCommand { .. } => {
            format!("check that the token command gets a token for {user} with the {service} scope")
        }
    };
    OAuthError {
        step: Step::MailboxPermission,
        detail: format!("{server} refused a new token for {user}"),
        fix,
        transient: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use chrono::TimeZone as _;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A source that counts its calls and answers from a script.
    #[derive(Debug)]
    struct Scripted {
        calls: Arc<AtomicUsize>,
        lifetime: Option<Duration>,
        fail: Arc<std::sync::Mutex<Option<OAuthError>>>,
    }

    #[async_trait::async_trait]
    impl sources::TokenSource for Scripted {
        async fn fetch(&self, _: &OAuthSettings) -> Result<sources::Fetched, OAuthError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(e) = self.fail.lock().unwrap().clone() {
                return Err(e);
            }
            Ok(sources::Fetched {
                access_token: Secret::new(format!("token-{n}")),
                expires_in: self.lifetime,
                refresh_token: None,
            })
        }
    }

    fn settings() -> OAuthSettings {
        OAuthSettings {
            flow: Flow::TokenCommand { command: "true".into() },
            scope: String::new(),
            token_endpoint: String::new(),
            tls_ca_file: None,
            timeout: Duration::from_secs(5),
            secret_expires: None,
            secret_expires_warn_days: 14,
        }
    }

    type Failure = Arc<std::sync::Mutex<Option<OAuthError>>>;

    fn provider(lifetime: Option<Duration>) -> (TokenProvider, Arc<AtomicUsize>, Arc<ManualClock>, Failure) {
        let calls = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(std::sync::Mutex::new(None));
        let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap()));
        let source = Scripted { calls: calls.clone(), lifetime, fail: fail.clone() };
        (TokenProvider::with_source(settings(), Box::new(source), clock.clone()), calls, clock, fail)
    }

    fn outage() -> OAuthError {
        OAuthError { step: Step::TokenEndpoint, detail: "down".into(), fix: "wait".into(), transient: true }
    }

    #[tokio::test]
    async fn a_token_is_reused_until_five_minutes_before_it_expires() {
        let (p, calls, clock, _) = provider(Some(Duration::from_secs(3600)));
        let first = p.token().await.unwrap();
        assert_eq!(first.secret.expose(), "token-1");
        clock.advance(chrono::Duration::minutes(54));
        assert_eq!(p.token().await.unwrap().secret.expose(), "token-1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        clock.advance(chrono::Duration::minutes(1) + chrono::Duration::seconds(1));
        assert_eq!(p.token().await.unwrap().secret.expose(), "token-2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn short_lived_tokens_are_renewed_a_tenth_of_their_life_early() {
        let (p, _, clock, _) = provider(Some(Duration::from_secs(100)));
        let t = p.token().await.unwrap();
        assert_eq!(t.renew_at - clock.now(), chrono::Duration::seconds(90));
    }

    #[tokio::test]
    async fn a_refused_token_is_renewed_once_even_if_both_services_report_it() {
        let (p, calls, _, _) = provider(Some(Duration::from_secs(3600)));
        let refused = p.token().await.unwrap();
        let a = p.renew(&refused).await.unwrap();
        let b = p.renew(&refused).await.unwrap();
        assert_eq!(a.secret.expose(), "token-2");
        assert_eq!(b, a, "the second report of the same refusal must not fetch again");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_outage_is_ridden_out_while_the_current_token_works() {
        let (p, _, clock, fail) = provider(Some(Duration::from_secs(3600)));
        p.token().await.unwrap();
        *fail.lock().unwrap() = Some(outage());
        clock.advance(chrono::Duration::minutes(57));
        assert_eq!(p.token().await.unwrap().secret.expose(), "token-1");
        clock.advance(chrono::Duration::minutes(4));
        let e = p.token().await.unwrap_err();
        assert_eq!(e.step, Step::TokenEndpoint);
    }

    #[tokio::test]
    async fn a_refusal_is_reported_even_while_the_old_token_works() {
        let (p, _, clock, fail) = provider(Some(Duration::from_secs(3600)));
        p.token().await.unwrap();
        *fail.lock().unwrap() = Some(OAuthError {
            step: Step::ClientCredentials,
            detail: "secret expired".into(),
            fix: "new secret".into(),
            transient: false,
        });
        clock.advance(chrono::Duration::minutes(58));
        assert_eq!(p.token().await.unwrap_err().step, Step::ClientCredentials);
    }

    #[tokio::test]
    async fn tokens_of_unknown_lifetime_are_asked_for_again_after_five_minutes() {
        let (p, calls, clock, _) = provider(None);
        let t = p.token().await.unwrap();
        assert_eq!(t.expires_at, None);
        clock.advance(chrono::Duration::minutes(4));
        p.token().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        clock.advance(chrono::Duration::minutes(2));
        assert_eq!(p.token().await.unwrap().secret.expose(), "token-2");
    }

    #[test]
    fn the_xoauth2_string_and_authenticator() {
        let token = Secret::new("abc");
        assert_eq!(xoauth2("gp@nhs.net", &token), "user=gp@nhs.net\x01auth=Bearer abc\x01\x01");
        let mut a = XOAuth2::new("gp@nhs.net", &token);
        use async_imap::Authenticator as _;
        assert_eq!(a.process(b""), "user=gp@nhs.net\x01auth=Bearer abc\x01\x01");
        assert_eq!(a.process(br#"{"status":"401"}"#), "");
        assert_eq!(a.server_error.lock().unwrap().as_deref(), Some(r#"{"status":"401"}"#));
        assert!(!format!("{a:?}").contains("abc"));
        let t = AccessToken { secret: token, expires_at: None, renew_at: Utc::now(), serial: 1 };
        assert!(!format!("{t:?}").contains("abc"));
    }
}
