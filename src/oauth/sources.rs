//! Getting an access token from each kind of source, and saying precisely what went wrong.
//!
//! Microsoft's token endpoint answers errors as JSON with an `AADSTS…` code in the
//! description; those codes decide the [`Step`] (bad secret, missing consent, expired
//! refresh token…) so that the operator is told what to change instead of "invalid_grant".

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

use super::http::{self, HttpResponse, redact_url};
use super::{Flow, OAuthError, OAuthSettings, Step};
use crate::secret::Secret;

/// What a source produced.
#[derive(Debug)]
pub struct Fetched {
    pub access_token: Secret,
    /// How long it lasts, if the source said.
    pub expires_in: Option<Duration>,
    /// A new refresh token (rotation), for the delegated flow.
    pub refresh_token: Option<Secret>,
}

/// One way of getting tokens.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    async fn fetch(&self, settings: &OAuthSettings) -> Result<Fetched, OAuthError>;
}

pub fn for_settings(settings: &OAuthSettings) -> Box<dyn TokenSource> {
    match settings.flow {
        Flow::ClientCredentials { .. } => Box::new(ClientCredentials),
        Flow::RefreshToken { .. } => Box::new(RefreshToken),
        Flow::TokenCommand { .. } => Box::new(TokenCommand),
    }
}

#[derive(Debug)]
struct ClientCredentials;

#[async_trait::async_trait]
impl TokenSource for ClientCredentials {
    async fn fetch(&self, settings: &OAuthSettings) -> Result<Fetched, OAuthError> {
        let Flow::ClientCredentials { client_id, client_secret, .. } = &settings.flow else {
            unreachable!("ClientCredentials is only made for its flow");
        };
        let secret = client_secret.load().map_err(|e| OAuthError {
            step: Step::ClientCredentials,
            detail: format!("{e:#}"),
            fix: format!("put the app's client secret in {}", client_secret.describe()),
            transient: false,
        })?;
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", secret.expose()),
            ("scope", settings.scope.as_str()),
        ];
        let response = post(settings, &settings.token_endpoint, &form).await?;
        parse_token_response(settings, &response)
    }
}

#[derive(Debug)]
struct RefreshToken;

#[async_trait::async_trait]
impl TokenSource for RefreshToken {
    async fn fetch(&self, settings: &OAuthSettings) -> Result<Fetched, OAuthError> {
        let Flow::RefreshToken { client_id, client_secret, refresh_token_file, .. } = &settings.flow else {
            unreachable!("RefreshToken is only made for its flow");
        };
        // One refresh at a time per file: a rotated token works only once.
        let lock = file_lock(refresh_token_file);
        let _guard = lock.lock().await;
        let refresh = read_refresh_token(refresh_token_file)?;
        let secret = match client_secret {
            Some(source) => Some(source.load().map_err(|e| OAuthError {
                step: Step::ClientCredentials,
                detail: format!("{e:#}"),
                fix: format!("put the app's client secret in {}", source.describe()),
                transient: false,
            })?),
            None => None,
        };
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("client_id", client_id.as_str()),
            ("refresh_token", refresh.expose()),
            ("scope", settings.scope.as_str()),
        ];
        if let Some(s) = &secret {
            form.push(("client_secret", s.expose()));
        }
        let response = post(settings, &settings.token_endpoint, &form).await?;
        let fetched = parse_token_response(settings, &response)?;
        if let Some(new) = &fetched.refresh_token
            && new != &refresh
        {
            save_refresh_token(refresh_token_file, new).map_err(|e| OAuthError {
                step: Step::RefreshToken,
                detail: format!(
                    "the token endpoint rotated the refresh token but it could not be saved: {e:#}"
                ),
                fix: format!(
                    "make {} writable by the gatehouse user, then run `gatehouse oauth login` again",
                    refresh_token_file.display()
                ),
                transient: false,
            })?;
            tracing::info!("Saved the rotated OAuth2 refresh token in {}", refresh_token_file.display());
        }
        Ok(fetched)
    }
}

#[derive(Debug)]
struct TokenCommand;

#[async_trait::async_trait]
impl TokenSource for TokenCommand {
    async fn fetch(&self, settings: &OAuthSettings) -> Result<Fetched, OAuthError> {
        let Flow::TokenCommand { command } = &settings.flow else {
            unreachable!("TokenCommand is only made for its flow");
        };
        let fail = |detail: String| {
            OAuthError {
            step: Step::TokenCommand,
            detail,
            fix: "run the command by hand as the gatehouse user and make it print only the access token (or JSON with access_token and expires_in)".into(),
            transient: false,
        }
        };
        let mut child = tokio::process::Command::new("/bin/sh");
        child
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let output = match tokio::time::timeout(settings.timeout, child.output()).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Err(fail(format!("cannot run {command:?}: {e}"))),
            Err(_) => {
                return Err(fail(format!(
                    "{command:?} did not finish within {} s",
                    settings.timeout.as_secs()
                )));
            }
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
            return Err(fail(format!(
                "{command:?} failed ({}){}",
                output.status,
                if last.is_empty() { String::new() } else { format!(": {last}") }
            )));
        }
        let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if text.is_empty() {
            return Err(fail(format!("{command:?} printed nothing")));
        }
        if text.starts_with('{') {
            let answer: TokenAnswer = serde_json::from_str(&text)
                .map_err(|e| fail(format!("{command:?} printed JSON without an access_token ({e})")))?;
            return Ok(Fetched {
                access_token: Secret::new(answer.access_token),
                expires_in: answer.expires_in.and_then(|e| e.seconds()).map(Duration::from_secs),
                refresh_token: None,
            });
        }
        if text.contains(char::is_whitespace) {
            return Err(fail(format!(
                "{command:?} printed more than one word; it must print only the token"
            )));
        }
        Ok(Fetched { access_token: Secret::new(text), expires_in: None, refresh_token: None })
    }
}

/// Posts to a token endpoint; a network failure is a [`Step::TokenEndpoint`] error.
async fn post(
    settings: &OAuthSettings,
    url: &str,
    form: &[(&str, &str)],
) -> Result<HttpResponse, OAuthError> {
    http::post_form(url, form, settings.timeout, settings.tls_ca_file.as_deref()).await.map_err(|e| {
        OAuthError {
            step: Step::TokenEndpoint,
            detail: format!("cannot reach {}: {e:#}", redact_url(url)),
            fix: "check that this server can reach it (DNS, firewall, proxy); gatehouse keeps trying".into(),
            transient: true,
        }
    })
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<Seconds>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// `expires_in` is a number in the standard, a string in some servers' answers.
#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(u64),
    Text(String),
}

impl Seconds {
    fn seconds(&self) -> Option<u64> {
        match self {
            Seconds::Number(n) => Some(*n),
            Seconds::Text(t) => t.trim().parse().ok(),
        }
    }
}

#[derive(Deserialize, Default)]
struct ErrorAnswer {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// Turns a token endpoint's answer into a token or an error naming the step.
pub fn parse_token_response(
    settings: &OAuthSettings,
    response: &HttpResponse,
) -> Result<Fetched, OAuthError> {
    let endpoint = redact_url(&settings.token_endpoint);
    if response.status == 200 {
        let answer: TokenAnswer = serde_json::from_slice(&response.body).map_err(|_| OAuthError {
            step: Step::TokenEndpoint,
            detail: format!("{endpoint} answered 200 without an access token: {}", response.snippet()),
            fix: "check token_endpoint: it must be the OAuth2 token endpoint (…/oauth2/v2.0/token)".into(),
            transient: false,
        })?;
        return Ok(Fetched {
            access_token: Secret::new(answer.access_token),
            expires_in: answer.expires_in.and_then(|e| e.seconds()).map(Duration::from_secs),
            refresh_token: answer.refresh_token.map(Secret::new),
        });
    }
    let Ok(err) = serde_json::from_slice::<ErrorAnswer>(&response.body) else {
        // An outage page, a proxy's answer: not the identity platform talking.
        return Err(OAuthError {
            step: Step::TokenEndpoint,
            detail: format!("{endpoint} answered HTTP {}: {}", response.status, response.snippet()),
            fix: if response.status >= 500 || response.status == 429 {
                "wait: the identity service is having trouble, and gatehouse keeps trying".into()
            } else {
                "check token_endpoint and tenant".into()
            },
            transient: response.status >= 500 || response.status == 429 || response.status == 408,
        });
    };
    Err(classify_error(settings, response.status, &err.error, &err.error_description))
}

fn classify_error(settings: &OAuthSettings, status: u16, error: &str, description: &str) -> OAuthError {
    let first_line = description.lines().next().unwrap_or_default().trim();
    let detail = format!("the token endpoint refused ({error}): {first_line}");
    let has = |code: &str| description.contains(code);
    let client_id = settings.client_id().unwrap_or_default();
    let (step, fix) = if has("AADSTS65001")
        || error == "consent_required"
        || has("AADSTS650057")
        || has("AADSTS500011")
    {
        (
            Step::Consent,
            format!(
                "in Entra ID, App registrations → {client_id} → API permissions: add Office 365 Exchange Online IMAP.AccessAsApp and SMTP.SendAsApp (application) or IMAP.AccessAsUser.All and SMTP.Send (delegated), then \"Grant admin consent\""
            ),
        )
    } else if error == "invalid_scope" || has("AADSTS70011") {
        (
            Step::Consent,
            "check scope: for client_credentials use \"https://outlook.office365.com/.default\"".to_string(),
        )
    } else if has("AADSTS7000222") {
        (
            Step::ClientCredentials,
            format!(
                "the client secret has expired: in Entra ID, App registrations → {client_id} → Certificates & secrets, add a new secret, store it where the config says, set secret_expires to its expiry date and restart gatehouse"
            ),
        )
    } else if error == "invalid_client"
        || error == "unauthorized_client"
        || has("AADSTS7000215")
        || has("AADSTS700016")
    {
        (
            Step::ClientCredentials,
            format!(
                "check tenant and client_id ({client_id}) against the app registration's Overview page, and that the secret given is the secret's Value (not its ID) and has not expired"
            ),
        )
    } else if error == "invalid_grant" || error == "interaction_required" || error == "expired_token" {
        match settings.flow {
            Flow::RefreshToken { .. } => (
                Step::RefreshToken,
                "the refresh token has expired or was revoked (unused for 90 days, a password change, or an admin's revocation): run `gatehouse oauth login` again".to_string(),
            ),
            _ => (Step::ClientCredentials, "check the app registration and its secret".to_string()),
        }
    } else if status >= 500 || error == "temporarily_unavailable" {
        return OAuthError {
            step: Step::TokenEndpoint,
            detail,
            fix: "wait: the identity service is having trouble, and gatehouse keeps trying".into(),
            transient: true,
        };
    } else {
        (Step::TokenEndpoint, "check tenant, client_id, scope and token_endpoint".to_string())
    };
    OAuthError { step, detail, fix, transient: false }
}

// ---------------------------------------------------------------------------------------
// The refresh token file

type FileLock = Arc<tokio::sync::Mutex<()>>;

/// One lock per refresh token file in this process.
fn file_lock(path: &Path) -> FileLock {
    static LOCKS: OnceLock<std::sync::Mutex<Vec<(PathBuf, FileLock)>>> = OnceLock::new();
    let mut locks = LOCKS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, l)) = locks.iter().find(|(p, _)| p == path) {
        return l.clone();
    }
    let l = Arc::new(tokio::sync::Mutex::new(()));
    locks.push((path.to_path_buf(), l.clone()));
    l
}

fn read_refresh_token(path: &Path) -> Result<Secret, OAuthError> {
    let missing = |detail: String| OAuthError {
        step: Step::RefreshToken,
        detail,
        fix: "run `gatehouse oauth login` once, as the user gatehouse runs as, to sign in and save one"
            .into(),
        transient: false,
    };
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(Secret::new(text.trim().to_string())),
        Ok(_) => Err(missing(format!("{} is empty", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(missing(format!("there is no refresh token yet ({} does not exist)", path.display())))
        }
        Err(e) => Err(missing(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Writes the refresh token so that a crash leaves either the old or the new one, never
/// half of either: a temporary file (0600) in the same folder, synced, then renamed over.
pub fn save_refresh_token(path: &Path, token: &Secret) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("Cannot create {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("refresh_token");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("Cannot write {}", tmp.display()))?;
        f.write_all(token.expose().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("Cannot replace {}", path.display()))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

// ---------------------------------------------------------------------------------------
// `gatehouse oauth login`: the device-code flow

#[derive(Deserialize)]
struct DeviceCode {
    device_code: String,
    message: Option<String>,
    user_code: String,
    verification_uri: Option<String>,
    #[serde(default = "default_interval")]
    interval: u64,
    #[serde(default = "default_device_expiry")]
    expires_in: u64,
}

fn default_interval() -> u64 {
    5
}
fn default_device_expiry() -> u64 {
    900
}

/// Signs in once with the device-code flow (the operator opens a web page on any device and
/// types a code) and saves the refresh token. `say` shows the instructions.
pub async fn device_login(
    settings: &OAuthSettings,
    say: &mut dyn FnMut(&str),
) -> Result<PathBuf, OAuthError> {
    let Flow::RefreshToken { client_id, client_secret, refresh_token_file, device_code_endpoint, .. } =
        &settings.flow
    else {
        return Err(OAuthError {
            step: Step::RefreshToken,
            detail: format!("flow is {:?}, which needs no sign-in", settings.flow_name()),
            fix: "use flow = \"refresh_token\" for delegated sign-in".into(),
            transient: false,
        });
    };
    let form = [("client_id", client_id.as_str()), ("scope", settings.scope.as_str())];
    let response = post(settings, device_code_endpoint, &form).await?;
    if response.status != 200 {
        let err = serde_json::from_slice::<ErrorAnswer>(&response.body).unwrap_or_default();
        let mut e = classify_error(settings, response.status, &err.error, &err.error_description);
        if err.error.is_empty() {
            e.detail = format!(
                "{} answered HTTP {}: {}",
                redact_url(device_code_endpoint),
                response.status,
                response.snippet()
            );
        }
        return Err(e);
    }
    let code: DeviceCode = serde_json::from_slice(&response.body).map_err(|e| OAuthError {
        step: Step::TokenEndpoint,
        detail: format!("unexpected device code answer ({e})"),
        fix: "check device_code_endpoint".into(),
        transient: false,
    })?;
    say(&code.message.clone().unwrap_or_else(|| {
        format!(
            "To sign in, open {} and enter the code {}",
            code.verification_uri.as_deref().unwrap_or("https://microsoft.com/devicelogin"),
            code.user_code
        )
    }));
    let secret = match client_secret {
        Some(s) => Some(s.load().map_err(|e| OAuthError {
            step: Step::ClientCredentials,
            detail: format!("{e:#}"),
            fix: format!("put the app's client secret in {}", s.describe()),
            transient: false,
        })?),
        None => None,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(code.expires_in);
    let mut interval = Duration::from_secs(code.interval.max(1));
    loop {
        tokio::time::sleep(interval).await;
        let mut form = vec![
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", client_id.as_str()),
            ("device_code", code.device_code.as_str()),
        ];
        if let Some(s) = &secret {
            form.push(("client_secret", s.expose()));
        }
        let response = post(settings, &settings.token_endpoint, &form).await?;
        if response.status == 200 {
            let fetched = parse_token_response(settings, &response)?;
            let Some(refresh) = fetched.refresh_token else {
                return Err(OAuthError {
                    step: Step::Consent,
                    detail: "signed in, but no refresh token came back".into(),
                    fix: "include offline_access in scope".into(),
                    transient: false,
                });
            };
            save_refresh_token(refresh_token_file, &refresh).map_err(|e| OAuthError {
                step: Step::RefreshToken,
                detail: format!("{e:#}"),
                fix: "run the command as the user gatehouse runs as, with write access to the data directory"
                    .into(),
                transient: false,
            })?;
            return Ok(refresh_token_file.clone());
        }
        let err = serde_json::from_slice::<ErrorAnswer>(&response.body).unwrap_or_default();
        match err.error.as_str() {
            "authorization_pending" => {}
            "slow_down" => interval += Duration::from_secs(5),
            _ => return Err(classify_error(settings, response.status, &err.error, &err.error_description)),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(OAuthError {
                step: Step::RefreshToken,
                detail: "nobody signed in before the code expired".into(),
                fix: "run `gatehouse oauth login` again and complete the sign-in within 15 minutes".into(),
                transient: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(flow: Flow) -> OAuthSettings {
        OAuthSettings {
            flow,
            scope: super::super::DEFAULT_APP_SCOPE.into(),
            token_endpoint: "https://login.microsoftonline.com/t/oauth2/v2.0/token".into(),
            tls_ca_file: None,
            timeout: Duration::from_secs(5),
            secret_expires: None,
            secret_expires_warn_days: 14,
        }
    }

    fn app() -> OAuthSettings {
        settings(Flow::ClientCredentials {
            tenant: "t".into(),
            client_id: "11111111-2222".into(),
            client_secret: crate::secret::SecretSource::Env("X".into()),
        })
    }

    fn answer(status: u16, body: &str) -> HttpResponse {
        HttpResponse { status, body: body.as_bytes().to_vec() }
    }

    #[test]
    fn a_token_answer_gives_the_token_and_its_lifetime() {
        let f = parse_token_response(
            &app(),
            &answer(200, r#"{"token_type":"Bearer","expires_in":3599,"access_token":"eyJ0"}"#),
        )
        .unwrap();
        assert_eq!(f.access_token.expose(), "eyJ0");
        assert_eq!(f.expires_in, Some(Duration::from_secs(3599)));
        let f =
            parse_token_response(&app(), &answer(200, r#"{"expires_in":"60","access_token":"a"}"#)).unwrap();
        assert_eq!(f.expires_in, Some(Duration::from_secs(60)));
    }

    #[test]
    fn microsoft_errors_name_the_step_and_the_fix() {
        let cases = [
            (
                r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#,
                Step::ClientCredentials,
                "Value",
            ),
            (
                r#"{"error":"invalid_client","error_description":"AADSTS7000222: The provided client secret keys for app are expired."}"#,
                Step::ClientCredentials,
                "new secret",
            ),
            (
                r#"{"error":"invalid_grant","error_description":"AADSTS65001: The user or administrator has not consented to use the application"}"#,
                Step::Consent,
                "Grant admin consent",
            ),
            (
                r#"{"error":"unauthorized_client","error_description":"AADSTS700016: Application with identifier 'x' was not found"}"#,
                Step::ClientCredentials,
                "client_id",
            ),
            (
                r#"{"error":"invalid_scope","error_description":"AADSTS70011: The provided request must include a 'scope'"}"#,
                Step::Consent,
                "scope",
            ),
        ];
        for (body, step, fix) in cases {
            let e = parse_token_response(&app(), &answer(400, body)).err().unwrap();
            assert_eq!(e.step, step, "{body}");
            assert!(e.fix.contains(fix), "{e}");
            assert!(!e.transient);
        }
    }

    #[test]
    fn an_expired_refresh_token_says_to_sign_in_again() {
        let s = settings(Flow::RefreshToken {
            tenant: "t".into(),
            client_id: "c".into(),
            client_secret: None,
            refresh_token_file: "/x".into(),
            device_code_endpoint: "https://x/devicecode".into(),
        });
        let e = parse_token_response(
            &s,
            &answer(400, r#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity."}"#),
        )
        .err()
        .unwrap();
        assert_eq!(e.step, Step::RefreshToken);
        assert!(e.to_string().contains("gatehouse oauth login"), "{e}");
    }

    #[test]
    fn an_outage_page_is_transient_and_blames_the_endpoint() {
        let e = parse_token_response(&app(), &answer(503, "<html>Service Unavailable</html>")).err().unwrap();
        assert_eq!(e.step, Step::TokenEndpoint);
        assert!(e.transient);
        assert!(e.detail.contains("503"), "{e}");
    }

    #[test]
    fn the_refresh_token_file_is_private_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/oauth2.refresh_token");
        save_refresh_token(&path, &Secret::new("rt-1")).unwrap();
        save_refresh_token(&path, &Secret::new("rt-2")).unwrap();
        assert_eq!(read_refresh_token(&path).unwrap().expose(), "rt-2");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left behind");
        let missing = read_refresh_token(&dir.path().join("nope")).err().unwrap();
        assert!(missing.fix.contains("gatehouse oauth login"));
    }

    #[tokio::test]
    async fn a_token_command_prints_the_token() {
        let mut s = app();
        s.flow = Flow::TokenCommand { command: "echo tok-123".into() };
        let f = TokenCommand.fetch(&s).await.unwrap();
        assert_eq!(f.access_token.expose(), "tok-123");
        assert_eq!(f.expires_in, None);
        s.flow = Flow::TokenCommand { command: r#"echo '{"access_token":"j","expires_in":120}'"#.into() };
        let f = TokenCommand.fetch(&s).await.unwrap();
        assert_eq!((f.access_token.expose(), f.expires_in), ("j", Some(Duration::from_secs(120))));
        s.flow = Flow::TokenCommand { command: "echo nope >&2; exit 3".into() };
        let e = TokenCommand.fetch(&s).await.unwrap_err();
        assert_eq!(e.step, Step::TokenCommand);
        assert!(e.detail.contains("nope"), "{e}");
    }
}
