//! Talking SMTP: building the lettre transport from the config. The outbox decides what to
//! send and when; this module only knows how to reach the server and log in, with a
//! password or (`auth = "xoauth2"`) an OAuth2 access token. A transport carries the token
//! it was built with, so the outbox builds a new one whenever the token changes.

use anyhow::Context as _;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, Tokio1Executor};

use crate::config::{Auth, Security, SmtpSettings};
use crate::oauth::{AccessToken, TokenProvider};

pub type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// A pooled SMTP transport for the configured server. Reads the password (if any) now;
/// with XOAUTH2, logs in with `token`.
pub fn transport(smtp: &SmtpSettings, token: Option<&AccessToken>) -> anyhow::Result<Transport> {
    let tls = || -> anyhow::Result<TlsParameters> {
        let mut builder = TlsParameters::builder(smtp.host.clone());
        if let Some(ca) = &smtp.tls_ca_file {
            let pem =
                std::fs::read(ca).with_context(|| format!("Cannot read the CA file {}", ca.display()))?;
            let cert = Certificate::from_pem(&pem)
                .with_context(|| format!("Bad certificate in {}", ca.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        builder.build_rustls().context("Cannot set up TLS for SMTP")
    };
    let tls = match smtp.security {
        Security::Tls => Tls::Wrapper(tls()?),
        Security::Starttls => Tls::Required(tls()?),
        Security::Plain => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(smtp.timeout));
    match (&smtp.username, &smtp.auth) {
        (Some(user), Some(Auth::Password(source))) => {
            let password = source.load().context("Cannot read the SMTP password")?;
            builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_string()));
        }
        (Some(user), Some(Auth::XOAuth2(_))) => {
            let token = token.context("No OAuth2 access token for SMTP")?;
            builder = builder
                .credentials(Credentials::new(user.clone(), token.secret.expose().to_string()))
                .authentication(vec![Mechanism::Xoauth2]);
        }
        _ => {}
    }
    Ok(builder.build())
}

/// Whether lettre's error means the server refused the login (not the message), which no
/// amount of retrying the same credentials fixes. XOAUTH2 refusals come either as 535 or
/// as a 334 error challenge that lettre's mechanism declines to answer.
pub fn is_auth_failure(e: &lettre::transport::smtp::Error) -> bool {
    let code = e.status().map(|c| c.to_string());
    matches!(code.as_deref(), Some("535" | "534" | "530"))
        || (e.is_client() && e.to_string().contains("does not expect a challenge"))
}

/// Connects, says EHLO, upgrades and authenticates as configured: what `gatehouse check`
/// reports on. With XOAUTH2, a refused token is renewed and tried once more, and a new
/// token refused too is reported as a mailbox permission problem.
pub async fn check(smtp: &SmtpSettings, tokens: Option<&TokenProvider>) -> anyhow::Result<String> {
    let attempt = |token: Option<AccessToken>| async move {
        let transport = transport(smtp, token.as_ref())?;
        let result =
            tokio::time::timeout(smtp.timeout, transport.test_connection()).await.with_context(|| {
                format!("No answer from {}:{} within {:?}", smtp.host, smtp.port, smtp.timeout)
            })?;
        anyhow::Ok(result)
    };
    let oauth = smtp.auth.as_ref().and_then(Auth::oauth);
    let result = match (oauth, tokens) {
        (Some(settings), Some(tokens)) => {
            let token = tokens.token().await?;
            match attempt(Some(token.clone())).await? {
                Err(e) if is_auth_failure(&e) => {
                    let token = tokens.renew(&token).await?;
                    match attempt(Some(token)).await? {
                        Err(e) if is_auth_failure(&e) => {
                            let user = smtp.username.as_deref().unwrap_or_default();
                            let server = format!("{}:{}", smtp.host, smtp.port);
                            let mut err =
                                crate::oauth::mailbox_permission_error(settings, "SMTP AUTH", user, &server);
                            err.detail = format!("{} ({e})", err.detail);
                            return Err(err.into());
                        }
                        other => other,
                    }
                }
                other => other,
            }
        }
        (Some(_), None) => anyhow::bail!("No OAuth2 token provider for SMTP"),
        (None, _) => attempt(None).await?,
    };
    let ok = result.with_context(|| format!("Cannot connect to {}:{}", smtp.host, smtp.port))?;
    anyhow::ensure!(ok, "{}:{} did not accept the connection", smtp.host, smtp.port);
    let auth = match &smtp.auth {
        Some(Auth::XOAuth2(_)) => "authenticated with XOAUTH2",
        Some(Auth::Password(_)) => "authenticated",
        None => "no authentication",
    };
    Ok(format!("{}:{} ({}, {auth})", smtp.host, smtp.port, format!("{:?}", smtp.security).to_lowercase()))
}
