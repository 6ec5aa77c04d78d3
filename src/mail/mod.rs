//! Talking SMTP: building the lettre transport from the config. The outbox decides what to
//! send and when; this module only knows how to reach the server.

use anyhow::Context as _;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, Tokio1Executor};

use crate::config::{Security, SmtpSettings};

pub type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// A pooled SMTP transport for the configured server. Reads the password (if any) now.
pub fn transport(smtp: &SmtpSettings) -> anyhow::Result<Transport> {
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
    if let (Some(user), Some(source)) = (&smtp.username, &smtp.password) {
        let password = source.load().context("Cannot read the SMTP password")?;
        builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_string()));
    }
    Ok(builder.build())
}

/// Connects, says EHLO, upgrades and authenticates as configured: what `gatehouse check`
/// reports on.
pub async fn check(smtp: &SmtpSettings) -> anyhow::Result<String> {
    let transport = transport(smtp)?;
    let ok = tokio::time::timeout(smtp.timeout, transport.test_connection())
        .await
        .with_context(|| format!("No answer from {}:{} within {:?}", smtp.host, smtp.port, smtp.timeout))?
        .with_context(|| format!("Cannot connect to {}:{}", smtp.host, smtp.port))?;
    anyhow::ensure!(ok, "{}:{} did not accept the connection", smtp.host, smtp.port);
    let auth = if smtp.username.is_some() { "authenticated" } else { "no authentication" };
    Ok(format!("{}:{} ({:?}, {auth})", smtp.host, smtp.port, smtp.security).to_lowercase())
}
