//! `[service] database_*` and `node_name`: which database holds everything (SQLite in
//! `data_dir` unless `database_url` names a PostgreSQL server), how gatehouse logs in to it
//! and proves it is talking to the right server, and what this node is called beside the
//! others sharing that database.

use std::path::PathBuf;

use super::mail::{is_loopback, secret_source};
use super::raw::RawService;
use super::{ConfigError, Source};
use crate::secret::{Secret, SecretSource};

/// A PostgreSQL database (`[service] database_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSettings {
    /// `postgres://USER@HOST:PORT/DB` as written: never a password, never TLS settings.
    pub url: String,
    /// The host named in the URL (for messages, and the loopback rule).
    pub host: String,
    /// `database_password_env` / `database_password_file`; `None`: `$PGPASSWORD`, if set.
    pub password: Option<SecretSource>,
    pub tls: DatabaseTls,
}

/// TLS to the database server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTls {
    /// `sslmode=verify-full`: encrypted, the certificate checked against `ca_file` (or the
    /// web's roots, as for the mail servers) and the host name checked against it.
    VerifyFull { ca_file: Option<PathBuf> },
    /// No TLS: only ever to this machine, and only when asked for or by default there.
    Off,
}

impl DatabaseSettings {
    /// The password to log in with: from the named source, else `$PGPASSWORD` (as every
    /// PostgreSQL client takes it), else none (the server may not ask for one).
    pub fn password(&self) -> anyhow::Result<Option<Secret>> {
        match &self.password {
            Some(source) => source.load().map(Some),
            None => Ok(std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()).map(Secret::new)),
        }
    }
}

impl DatabaseSettings {
    /// The database a command names on its command line (`gatehouse db copy --to URL`),
    /// logged in to exactly as the daemon would: with the config's own `database_*`
    /// settings when its `database_url` is this URL; otherwise the URL alone, checked as
    /// `database_url` is (no password, no TLS parameters in it), the password from
    /// `$PGPASSWORD` and TLS verified against the web's roots except to this machine.
    pub fn for_url(url: &str, configured: Option<&DatabaseSettings>) -> Result<DatabaseSettings, String> {
        let url = url.trim();
        let host = url_host(url)?;
        match configured {
            Some(db) if db.url == url => Ok(db.clone()),
            Some(db) => Err(format!(
                "the config's database_url is {}, not {url}: give that URL, or remove database_url to name another database with $PGPASSWORD",
                db.url
            )),
            None => {
                let tls = if is_loopback(&host) {
                    DatabaseTls::Off
                } else {
                    DatabaseTls::VerifyFull { ca_file: None }
                };
                Ok(DatabaseSettings { url: url.to_string(), host, password: None, tls })
            }
        }
    }
}

/// Checks the `database_*` keys; `None` when there is no `database_url` (SQLite).
pub(super) fn database(raw: &RawService, src: &Source) -> Result<Option<DatabaseSettings>, ConfigError> {
    let Some(url) = raw.database_url.as_deref().map(str::trim) else {
        for (key, set) in [
            ("service.database_password_env", raw.database_password_env.is_some()),
            ("service.database_password_file", raw.database_password_file.is_some()),
            ("service.database_ca_file", raw.database_ca_file.is_some()),
            ("service.database_tls", raw.database_tls.is_some()),
        ] {
            if set {
                return Err(src.err(
                    key,
                    "it is set but there is no database_url (the database is SQLite in data_dir)".into(),
                    "add database_url = \"postgres://USER@HOST:PORT/DB\", or remove the key",
                ));
            }
        }
        return Ok(None);
    };
    let host = url_host(url).map_err(|problem| {
        src.err(
            "service.database_url",
            problem,
            "write it as postgres://USER@HOST:PORT/DB, the password in database_password_env or database_password_file (or $PGPASSWORD), TLS in database_tls and database_ca_file",
        )
    })?;
    let password = secret_source(
        ("service.database_password_env", "service.database_password_file"),
        raw.database_password_env.clone(),
        raw.database_password_file.clone(),
        src,
    )?;
    let ca_file = raw.database_ca_file.as_deref().map(|p| src.resolve(p));
    super::mail::check_file_exists(&ca_file, "service.database_ca_file", src.path)?;
    let loopback = is_loopback(&host);
    let tls = match raw.database_tls.as_deref() {
        Some("verify-full") => DatabaseTls::VerifyFull { ca_file },
        None if !loopback || ca_file.is_some() => DatabaseTls::VerifyFull { ca_file },
        // Only loopback reaches here without TLS asked for: the server is this machine.
        None => DatabaseTls::Off,
        Some("off") if loopback => DatabaseTls::Off,
        Some("off") => {
            return Err(src.err(
                "service.database_tls",
                format!("\"off\" (unencrypted) is only allowed to this machine, not to {host:?}"),
                "remove the key (TLS with verify-full), and give the server's CA in database_ca_file if it is not a public one",
            ));
        }
        Some(other) => {
            return Err(src.err(
                "service.database_tls",
                format!("unknown value {other:?}"),
                "use \"verify-full\" (the default, except to this machine) or \"off\" (only to this machine)",
            ));
        }
    };
    if tls == DatabaseTls::Off && raw.database_ca_file.is_some() {
        return Err(src.err(
            "service.database_ca_file",
            "it is set but database_tls is \"off\"".into(),
            "remove database_tls = \"off\" to verify the server with this CA, or remove database_ca_file",
        ));
    }
    Ok(Some(DatabaseSettings { url: url.to_string(), host, password, tls }))
}

/// Query parameters that would carry a secret or override the TLS settings behind the
/// config's back.
const REFUSED_PARAMS: &[&str] =
    &["password", "sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "ssl-mode", "ssl-root-cert"];

/// The host of a `postgres://USER@HOST:PORT/DB` URL, refusing a password in it (secrets never
/// go in the config file) and parameters that would set TLS or a password.
fn url_host(url: &str) -> Result<String, String> {
    let Some(rest) = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://")) else {
        return Err(format!("{url:?} is not a postgres:// URL"));
    };
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split('/').next().unwrap_or_default();
    let host_port = match authority.rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            return Err("the URL contains a password, and secrets never go in this file".into());
        }
        Some((_, host_port)) => host_port,
        None => authority,
    };
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let name = param.split('=').next().unwrap_or_default();
        if REFUSED_PARAMS.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            return Err(format!("the URL sets {name:?}, which only the config's own keys may set"));
        }
    }
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(h, _)| format!("[{h}]")).unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default().to_string(),
    };
    if host.is_empty() {
        return Err("the URL names no host".into());
    }
    Ok(host)
}

/// `node_name`: how this node appears in `gatehouse status` and holds the leader lease.
/// Defaults to the host name, so two machines differ without being told.
pub(super) fn node_name(raw: &RawService, src: &Source) -> Result<String, ConfigError> {
    let name = match &raw.node_name {
        Some(name) => name.trim().to_string(),
        None => host_name().unwrap_or_else(|| "gatehouse".into()),
    };
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(src.err(
            "service.node_name",
            format!("{name:?} is not a usable node name"),
            "use up to 64 letters, digits, '-', '_' or '.', e.g. \"gatehouse-a\" (the default is the host name)",
        ));
    }
    Ok(name)
}

/// This machine's host name (the kernel's, as `hostname` prints it).
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::{DatabaseSettings, DatabaseTls, url_host};

    #[test]
    fn a_url_on_the_command_line_logs_in_as_the_config_says() {
        let remote = DatabaseSettings::for_url("postgres://gh@db.example:5432/g", None).unwrap();
        assert_eq!(remote.tls, DatabaseTls::VerifyFull { ca_file: None });
        assert_eq!(remote.password, None, "$PGPASSWORD, as for the daemon");
        let local = DatabaseSettings::for_url("postgres://gh@127.0.0.1:5432/g", None).unwrap();
        assert_eq!(local.tls, DatabaseTls::Off);
        assert!(DatabaseSettings::for_url("postgres://gh:pw@db/g", None).unwrap_err().contains("password"));
        assert!(
            DatabaseSettings::for_url("postgres://gh@db/g?sslmode=disable", None)
                .unwrap_err()
                .contains("sslmode")
        );
        let configured = DatabaseSettings {
            url: "postgres://gh@db.example:5432/g".into(),
            host: "db.example".into(),
            password: Some(crate::secret::SecretSource::Env("GH_DB".into())),
            tls: DatabaseTls::VerifyFull { ca_file: Some("/etc/ca.pem".into()) },
        };
        assert_eq!(DatabaseSettings::for_url(&configured.url, Some(&configured)).unwrap(), configured);
        let other = DatabaseSettings::for_url("postgres://gh@elsewhere/g", Some(&configured)).unwrap_err();
        assert!(other.contains("database_url is postgres://gh@db.example:5432/g"), "{other}");
    }

    #[test]
    fn url_hosts_are_found_and_passwords_refused() {
        assert_eq!(url_host("postgres://gh@db.example:5432/gatehouse").unwrap(), "db.example");
        assert_eq!(url_host("postgresql://gh@127.0.0.1/g").unwrap(), "127.0.0.1");
        assert_eq!(url_host("postgres://gh@[::1]:5432/g").unwrap(), "[::1]");
        assert_eq!(url_host("postgres://db/g?application_name=x").unwrap(), "db");
        assert!(url_host("postgres://gh:secret@db/g").unwrap_err().contains("password"));
        assert!(url_host("postgres://gh@db/g?sslmode=disable").unwrap_err().contains("sslmode"));
        assert!(url_host("postgres://gh@db/g?password=x").is_err());
        assert!(url_host("mysql://gh@db/g").is_err());
        assert!(url_host("postgres:///g").is_err());
    }
}
