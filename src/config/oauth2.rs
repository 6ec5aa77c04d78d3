//! `[imap.oauth2]` and `[smtp.oauth2]`: where access tokens come from. Each flow takes its
//! own keys and refuses the others', so a table half-converted from one flow to another is
//! caught here rather than at the first login.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;

use super::mail::{check_file_exists, is_loopback};
use super::raw::RawOAuth2;
use super::{ConfigError, Source};
use crate::secret::SecretSource;

/// Microsoft's token endpoint; `{tenant}` is replaced by the configured tenant.
pub const MICROSOFT_TOKEN_ENDPOINT: &str = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token";
pub const MICROSOFT_DEVICE_CODE_ENDPOINT: &str =
    "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode";
/// App-only access to Exchange Online (IMAP.AccessAsApp, SMTP.SendAsApp).
pub const DEFAULT_APP_SCOPE: &str = "https://outlook.office365.com/.default";
/// Delegated access to the mailbox for IMAP and SMTP, with a refresh token.
pub const DEFAULT_DELEGATED_SCOPE: &str = "offline_access https://outlook.office365.com/IMAP.AccessAsUser.All https://outlook.office365.com/SMTP.Send";

/// Where access tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// App-only: the app's own secret buys tokens for the shared mailbox.
    ClientCredentials { tenant: String, client_id: String, client_secret: SecretSource },
    /// Delegated: a refresh token from `gatehouse oauth login`, kept (and rotated) in a file.
    RefreshToken {
        tenant: String,
        client_id: String,
        client_secret: Option<SecretSource>,
        refresh_token_file: PathBuf,
        device_code_endpoint: String,
    },
    /// A command whose standard output is the access token (like isync's PassCmd).
    TokenCommand { command: String },
}

/// One `[imap.oauth2]` or `[smtp.oauth2]` table, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthSettings {
    pub flow: Flow,
    pub scope: String,
    /// With `{tenant}` already replaced.
    pub token_endpoint: String,
    pub tls_ca_file: Option<PathBuf>,
    pub timeout: Duration,
    /// When the client secret stops working (Entra ID shows it); warned about in advance.
    pub secret_expires: Option<NaiveDate>,
    pub secret_expires_warn_days: u32,
}

impl OAuthSettings {
    pub fn flow_name(&self) -> &'static str {
        match self.flow {
            Flow::ClientCredentials { .. } => "client_credentials",
            Flow::RefreshToken { .. } => "refresh_token",
            Flow::TokenCommand { .. } => "token_command",
        }
    }

    pub fn client_id(&self) -> Option<&str> {
        match &self.flow {
            Flow::ClientCredentials { client_id, .. } | Flow::RefreshToken { client_id, .. } => {
                Some(client_id)
            }
            Flow::TokenCommand { .. } => None,
        }
    }
}

/// Checks one `[imap.oauth2]` / `[smtp.oauth2]` table; `data_dir` holds the refresh token
/// unless the table names a file.
pub(super) fn oauth_settings(
    section: &str,
    raw: RawOAuth2,
    data_dir: &Path,
    src: &Source,
) -> Result<OAuthSettings, ConfigError> {
    let table =
        Table { section, flow_name: raw.flow.as_deref().map(str::trim).unwrap_or_default(), raw: &raw, src };
    let (flow, default_scope) = match table.flow_name {
        "client_credentials" => (table.client_credentials()?, DEFAULT_APP_SCOPE),
        "refresh_token" => (table.refresh_token(data_dir)?, DEFAULT_DELEGATED_SCOPE),
        "token_command" => (table.token_command()?, ""),
        "" => {
            return Err(table.err(
                "flow",
                "no flow: where do access tokens come from?".into(),
                "add flow = \"client_credentials\" (app-only, Microsoft 365), \"refresh_token\" (delegated, after `gatehouse oauth login`) or \"token_command\"",
            ));
        }
        other => {
            return Err(table.err(
                "flow",
                format!("unknown flow {other:?}"),
                "use \"client_credentials\", \"refresh_token\" or \"token_command\"",
            ));
        }
    };
    let token_endpoint = match &flow {
        Flow::ClientCredentials { tenant, .. } | Flow::RefreshToken { tenant, .. } => {
            table.endpoint("token_endpoint", &raw.token_endpoint, MICROSOFT_TOKEN_ENDPOINT, tenant)?
        }
        Flow::TokenCommand { .. } => String::new(),
    };
    let secret_expires = table.secret_expires()?;
    let tls_ca_file = raw.tls_ca_file.as_deref().map(|p| src.resolve(p));
    check_file_exists(&tls_ca_file, &format!("{section}.tls_ca_file"), src.path)?;
    Ok(OAuthSettings {
        scope: raw
            .scope
            .as_deref()
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| default_scope.to_string()),
        flow,
        token_endpoint,
        tls_ca_file,
        timeout: Duration::from_secs(raw.timeout_secs.max(1)),
        secret_expires,
        secret_expires_warn_days: raw.secret_expires_warn_days,
    })
}

/// One oauth2 table being checked: errors are named `{section}.{key}` and speak of its flow.
struct Table<'a> {
    section: &'a str,
    flow_name: &'a str,
    raw: &'a RawOAuth2,
    src: &'a Source<'a>,
}

impl Table<'_> {
    fn err(&self, key: &str, problem: String, fix: &str) -> ConfigError {
        self.src.err(&format!("{}.{key}", self.section), problem, fix)
    }

    /// `flow = "client_credentials"`: app-only, with a client secret.
    fn client_credentials(&self) -> Result<Flow, ConfigError> {
        let raw = self.raw;
        self.not_here("command", &raw.command)?;
        self.not_here("refresh_token_file", &raw.refresh_token_file)?;
        self.not_here("device_code_endpoint", &raw.device_code_endpoint)?;
        let tenant = self.tenant("client_credentials")?;
        let client_id = self.need("client_id", &raw.client_id, CLIENT_ID_EXAMPLE)?;
        let client_secret = self.client_secret(true)?.ok_or_else(|| {
            self.err("client_secret_env", "no client secret source".into(), "set client_secret_env")
        })?;
        Ok(Flow::ClientCredentials { tenant, client_id, client_secret })
    }

    /// `flow = "refresh_token"`: delegated, after `gatehouse oauth login`; the client ID
    /// names the token file, so it must be safe in a file name.
    fn refresh_token(&self, data_dir: &Path) -> Result<Flow, ConfigError> {
        let raw = self.raw;
        self.not_here("command", &raw.command)?;
        let tenant = self.tenant("refresh_token")?;
        let client_id = self.need("client_id", &raw.client_id, CLIENT_ID_EXAMPLE)?;
        if !client_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_') {
            return Err(self.err(
                "client_id",
                format!("{client_id:?} is not a client ID"),
                "copy the Application (client) ID from Entra ID",
            ));
        }
        let refresh_token_file = match &raw.refresh_token_file {
            Some(f) => self.src.resolve(f),
            None => data_dir.join(format!("oauth2-{client_id}.refresh_token")),
        };
        let device_code_endpoint = self.endpoint(
            "device_code_endpoint",
            &raw.device_code_endpoint,
            MICROSOFT_DEVICE_CODE_ENDPOINT,
            &tenant,
        )?;
        Ok(Flow::RefreshToken {
            tenant,
            client_id,
            client_secret: self.client_secret(false)?,
            refresh_token_file,
            device_code_endpoint,
        })
    }

    /// `flow = "token_command"`: a command prints the token, so no Microsoft key applies.
    fn token_command(&self) -> Result<Flow, ConfigError> {
        let raw = self.raw;
        for (key, value) in [
            ("tenant", &raw.tenant),
            ("client_id", &raw.client_id),
            ("client_secret_env", &raw.client_secret_env),
            ("client_secret_file", &raw.client_secret_file),
            ("refresh_token_file", &raw.refresh_token_file),
            ("token_endpoint", &raw.token_endpoint),
            ("device_code_endpoint", &raw.device_code_endpoint),
        ] {
            self.not_here(key, value)?;
        }
        let command = self.need("command", &raw.command, "\"/usr/local/bin/get-token gp-access@nhs.net\"")?;
        Ok(Flow::TokenCommand { command })
    }

    /// A key this flow requires, trimmed and not blank.
    fn need(&self, key: &str, value: &Option<String>, example: &str) -> Result<String, ConfigError> {
        match value.as_deref().map(str::trim) {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(self.err(
                key,
                format!("flow = {:?} needs {key}", self.flow_name),
                &format!("add {key} = {example}"),
            )),
        }
    }

    /// A key this flow would silently ignore, so it is refused.
    fn not_here(&self, key: &str, value: &Option<String>) -> Result<(), ConfigError> {
        match value {
            Some(_) => {
                Err(self.err(key, format!("{key} is not used with flow = {:?}", self.flow_name), "remove it"))
            }
            None => Ok(()),
        }
    }

    /// The tenant goes into the endpoint URLs, so only name characters are allowed.
    fn tenant(&self, flow: &str) -> Result<String, ConfigError> {
        let tenant =
            self.need("tenant", &self.raw.tenant, "\"contoso.onmicrosoft.com\" (or the directory ID)")?;
        let tenant_ok =
            !tenant.is_empty() && tenant.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !tenant_ok {
            return Err(self.err(
                "tenant",
                format!("{tenant:?} is not a tenant name or ID"),
                &format!("use the directory (tenant) ID or domain from Entra ID, for {flow}"),
            ));
        }
        Ok(tenant)
    }

    /// An endpoint URL (Microsoft's by default) with `{tenant}` filled in.
    fn endpoint(
        &self,
        key: &str,
        value: &Option<String>,
        default: &str,
        tenant: &str,
    ) -> Result<String, ConfigError> {
        let url = value.as_deref().map(str::trim).unwrap_or(default).replace("{tenant}", tenant);
        check_endpoint(&url).map_err(|p| {
            self.err(key, p, "use an https:// URL (http:// is only allowed to this machine), or remove the key for Microsoft's")
        })?;
        Ok(url)
    }

    /// Where the client secret comes from; never the secret itself.
    fn client_secret(&self, required: bool) -> Result<Option<SecretSource>, ConfigError> {
        match (&self.raw.client_secret_env, &self.raw.client_secret_file) {
            (Some(_), Some(_)) => Err(self.err(
                "client_secret_file",
                "both client_secret_env and client_secret_file are set".into(),
                "keep one of them",
            )),
            (Some(var), None) if var.trim().is_empty() || var.contains(char::is_whitespace) => Err(self.err(
                "client_secret_env",
                format!("{var:?} is not an environment variable name"),
                "name the variable that holds the client secret, e.g. \"GATEHOUSE_OAUTH_CLIENT_SECRET\" (the secret itself never goes in this file)",
            )),
            (Some(var), None) => Ok(Some(SecretSource::Env(var.trim().to_string()))),
            (None, Some(file)) => Ok(Some(SecretSource::File(self.src.resolve(file)))),
            (None, None) if required => Err(self.err(
                "client_secret_env",
                "no client secret source".into(),
                "set client_secret_env = \"GATEHOUSE_OAUTH_CLIENT_SECRET\" (and export it) or client_secret_file",
            )),
            (None, None) => Ok(None),
        }
    }

    /// `secret_expires`, so the operator is warned before the client secret runs out.
    fn secret_expires(&self) -> Result<Option<NaiveDate>, ConfigError> {
        match self.raw.secret_expires.as_deref().map(str::trim) {
            Some(d) => Ok(Some(NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                self.err(
                    "secret_expires",
                    format!("{d:?} is not a date"),
                    "write the client secret's expiry date (Entra ID → Certificates & secrets → Expires) as YYYY-MM-DD",
                )
            })?)),
            None => Ok(None),
        }
    }
}

const CLIENT_ID_EXAMPLE: &str = "\"<the app registration's Application (client) ID>\"";

/// Token endpoints carry secrets, so they are https, except to this machine (tests).
fn check_endpoint(url: &str) -> Result<(), String> {
    if let Some(rest) = url.strip_prefix("https://") {
        return if rest.is_empty() { Err(format!("{url:?} has no host")) } else { Ok(()) };
    }
    if let Some(rest) = url.strip_prefix("http://") {
        let authority = rest.split('/').next().unwrap_or_default();
        let host = match authority.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        };
        return if is_loopback(host) {
            Ok(())
        } else {
            Err(format!("{url:?} is plain http, which would send secrets unencrypted"))
        };
    }
    Err(format!("{url:?} is not an https:// URL"))
}
