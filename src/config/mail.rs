//! `[imap]` and `[smtp]`: where mail is read and sent, how the connection is secured and
//! how gatehouse logs in.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::oauth2::oauth_settings;
use super::raw::{RawImap, RawSmtp};
use super::{AfterProcessing, Auth, ConfigError, ImapSettings, NamedAddress, Security, SmtpSettings, Source};
use crate::secret::SecretSource;

/// Checks `[imap]`; `data_dir` is where a refresh token is kept by default.
pub(super) fn imap(raw: RawImap, data_dir: &Path, src: &Source) -> Result<ImapSettings, ConfigError> {
    check_security(&raw.host, raw.security)
        .map_err(|p| src.err("imap.security", p, "use \"tls\" or \"starttls\" for a remote server"))?;
    let auth = imap_auth(&raw, data_dir, src)?;
    let after_processing = after_processing(&raw.after_processing, src)?;
    if raw.poll_interval_secs == 0 {
        return Err(src.err(
            "imap.poll_interval_secs",
            "must be at least 1".into(),
            "use 60 unless you have a reason",
        ));
    }
    let tls_ca_file = raw.tls_ca_file.as_deref().map(|p| src.resolve(p));
    check_file_exists(&tls_ca_file, "imap.tls_ca_file", src.path)?;
    Ok(ImapSettings {
        port: raw.port.unwrap_or(match raw.security {
            Security::Tls => 993,
            _ => 143,
        }),
        host: raw.host,
        security: raw.security,
        username: raw.username,
        auth,
        tls_ca_file,
        mailbox: raw.mailbox,
        idle: raw.idle,
        poll_interval: Duration::from_secs(raw.poll_interval_secs),
        after_processing,
        backlog: raw.backlog,
        timeout: Duration::from_secs(raw.timeout_secs.max(1)),
        max_message_bytes: raw.max_message_bytes,
    })
}

/// IMAP always logs in: with a password, or with an `[imap.oauth2]` token, never both.
fn imap_auth(raw: &RawImap, data_dir: &Path, src: &Source) -> Result<Auth, ConfigError> {
    let password = secret_source(
        ("imap.password_env", "imap.password_file"),
        raw.password_env.clone(),
        raw.password_file.clone(),
        src,
    )?;
    match auth_kind("imap", raw.auth.as_deref(), src.path)? {
        AuthKind::Password => {
            if raw.oauth2.is_some() {
                return Err(src.err(
                    "imap.oauth2",
                    "[imap.oauth2] is only used with auth = \"xoauth2\"".into(),
                    "add auth = \"xoauth2\" to [imap], or remove [imap.oauth2]",
                ));
            }
            Ok(Auth::Password(password.ok_or_else(|| {
                src.err(
                    "imap.password_env",
                    "no password source".into(),
                    "set password_env = \"GATEHOUSE_IMAP_PASSWORD\" (and export it) or password_file, or use auth = \"xoauth2\" with an [imap.oauth2] table",
                )
            })?))
        }
        AuthKind::XOAuth2 => {
            if password.is_some() {
                return Err(src.err(
                    "imap.password_env",
                    "a password is not used with auth = \"xoauth2\"".into(),
                    "remove password_env/password_file from [imap]: the token comes from [imap.oauth2]",
                ));
            }
            let Some(o) = raw.oauth2.clone() else {
                return Err(src.err(
                    "imap.oauth2",
                    "auth = \"xoauth2\" needs an [imap.oauth2] table saying where tokens come from".into(),
                    "add [imap.oauth2] with flow = \"client_credentials\", tenant, client_id and client_secret_env (see config/gatehouse.example.toml)",
                ));
            };
            Ok(Auth::XOAuth2(oauth_settings("imap.oauth2", o, data_dir, src)?))
        }
    }
}

/// `imap.after_processing`: `keep`, `seen` or `move:Folder`.
fn after_processing(value: &str, src: &Source) -> Result<AfterProcessing, ConfigError> {
    Ok(match value.trim() {
        "keep" => AfterProcessing::Keep,
        "seen" => AfterProcessing::Seen,
        other => match other.strip_prefix("move:") {
            Some(folder) if !folder.trim().is_empty() => AfterProcessing::Move(folder.trim().to_string()),
            _ => {
                return Err(src.err(
                    "imap.after_processing",
                    format!("unknown value {other:?}"),
                    "use \"keep\", \"seen\" or \"move:Folder\"",
                ));
            }
        },
    })
}

/// Checks `[smtp]`; `imap_auth` is offered to SMTP when it uses OAuth2 without its own table.
pub(super) fn smtp(
    raw: RawSmtp,
    imap_auth: &Auth,
    data_dir: &Path,
    src: &Source,
) -> Result<SmtpSettings, ConfigError> {
    check_security(&raw.host, raw.security)
        .map_err(|p| src.err("smtp.security", p, "use \"tls\" or \"starttls\" for a remote server"))?;
    let auth = smtp_auth(&raw, imap_auth, data_dir, src)?;
    let from = NamedAddress::parse(&raw.from).map_err(|e| {
        src.err("smtp.from", e.to_string(), "use \"Name <address@example.org>\" or a bare address")
    })?;
    let tls_ca_file = raw.tls_ca_file.as_deref().map(|p| src.resolve(p));
    check_file_exists(&tls_ca_file, "smtp.tls_ca_file", src.path)?;
    Ok(SmtpSettings {
        port: raw.port.unwrap_or(match raw.security {
            Security::Tls => 465,
            Security::Starttls => 587,
            Security::Plain => 25,
        }),
        host: raw.host,
        security: raw.security,
        username: raw.username,
        auth,
        tls_ca_file,
        from,
        timeout: Duration::from_secs(raw.timeout_secs.max(1)),
        retry_initial: Duration::from_secs(raw.retry_initial_secs.max(1)),
    })
}

/// SMTP may need no login (a relay); a password needs a username, and a token needs the
/// mailbox it sends as.
fn smtp_auth(
    raw: &RawSmtp,
    imap_auth: &Auth,
    data_dir: &Path,
    src: &Source,
) -> Result<Option<Auth>, ConfigError> {
    let password = secret_source(
        ("smtp.password_env", "smtp.password_file"),
        raw.password_env.clone(),
        raw.password_file.clone(),
        src,
    )?;
    match auth_kind("smtp", raw.auth.as_deref(), src.path)? {
        AuthKind::Password => {
            if raw.oauth2.is_some() {
                return Err(src.err(
                    "smtp.oauth2",
                    "[smtp.oauth2] is only used with auth = \"xoauth2\"".into(),
                    "add auth = \"xoauth2\" to [smtp], or remove [smtp.oauth2]",
                ));
            }
            if password.is_some() && raw.username.is_none() {
                return Err(src.err(
                    "smtp.username",
                    "a password source is set but no username".into(),
                    "add username, or remove password_env/password_file",
                ));
            }
            Ok(password.map(Auth::Password))
        }
        AuthKind::XOAuth2 => {
            if password.is_some() {
                return Err(src.err(
                    "smtp.password_env",
                    "a password is not used with auth = \"xoauth2\"".into(),
                    "remove password_env/password_file from [smtp]: the token comes from [smtp.oauth2]",
                ));
            }
            if raw.username.is_none() {
                return Err(src.err(
                    "smtp.username",
                    "auth = \"xoauth2\" needs the mailbox to send as".into(),
                    "add username = \"gp-access@nhs.net\" (the shared mailbox)",
                ));
            }
            let settings = match (raw.oauth2.clone(), imap_auth) {
                (Some(o), _) => oauth_settings("smtp.oauth2", o, data_dir, src)?,
                // One app registration usually serves both: [imap.oauth2] is reused.
                (None, Auth::XOAuth2(imap)) => imap.clone(),
                (None, Auth::Password(_)) => {
                    return Err(src.err(
                        "smtp.oauth2",
                        "auth = \"xoauth2\" needs an [smtp.oauth2] table (or [imap.oauth2] to share)".into(),
                        "add [smtp.oauth2] with flow, tenant, client_id and client_secret_env",
                    ));
                }
            };
            Ok(Some(Auth::XOAuth2(settings)))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthKind {
    Password,
    XOAuth2,
}

fn auth_kind(section: &str, value: Option<&str>, path: &Path) -> Result<AuthKind, ConfigError> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("password") => Ok(AuthKind::Password),
        Some("xoauth2") | Some("oauth2") => Ok(AuthKind::XOAuth2),
        Some(other) => Err(ConfigError {
            file: path.to_path_buf(),
            key: format!("{section}.auth"),
            problem: format!("unknown value {other:?}"),
            fix: "use \"password\" (the default) or \"xoauth2\" (Microsoft 365 / NHSmail, Gmail)".into(),
        }),
    }
}

/// A password's source from its two keys (`keys`: the env key, the file key), at most one set.
pub(super) fn secret_source(
    keys: (&str, &str),
    env: Option<String>,
    file: Option<String>,
    src: &Source,
) -> Result<Option<SecretSource>, ConfigError> {
    match (env, file) {
        (Some(_), Some(_)) => Err(ConfigError {
            file: src.path.to_path_buf(),
            key: keys.1.to_string(),
            problem: format!("both {} and {} are set", short(keys.0), short(keys.1)),
            fix: "keep one of them".into(),
        }),
        (Some(var), None) if var.trim().is_empty() || var.contains(char::is_whitespace) => {
            Err(ConfigError {
                file: src.path.to_path_buf(),
                key: keys.0.to_string(),
                problem: format!("{var:?} is not an environment variable name"),
                fix: "name the variable that holds the password, e.g. \"GATEHOUSE_IMAP_PASSWORD\" (the password itself never goes in this file)".into(),
            })
        }
        (Some(var), None) => Ok(Some(SecretSource::Env(var))),
        (None, Some(file)) => Ok(Some(SecretSource::File(src.resolve(&file)))),
        (None, None) => Ok(None),
    }
}

pub(super) fn check_file_exists(file: &Option<PathBuf>, key: &str, path: &Path) -> Result<(), ConfigError> {
    match file {
        Some(f) if !f.is_file() => Err(ConfigError {
            file: path.to_path_buf(),
            key: key.into(),
            problem: format!("the file {} does not exist", f.display()),
            fix: "give the path of a PEM file (relative paths start from the config file's folder)".into(),
        }),
        _ => Ok(()),
    }
}

/// `plain` sends passwords and patient-adjacent mail in clear text, so it is only allowed
/// to this machine.
fn check_security(host: &str, security: Security) -> Result<(), String> {
    if security == Security::Plain && !is_loopback(host) {
        return Err(format!("\"plain\" (unencrypted) is only allowed to this machine, not to {host:?}"));
    }
    Ok(())
}

/// `imap.password_env` → `password_env`.
fn short(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// Whether `host` names this machine (`localhost`, `127.0.0.1`, `[::1]`…).
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}
