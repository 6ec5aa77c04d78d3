//! Opening an authenticated IMAP session: TCP, then TLS or STARTTLS as configured, the
//! server's greeting, then LOGIN. Every step has the configured timeout, because a server
//! that accepts the connection and then says nothing would otherwise hang the daemon.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::{ImapSettings, Security};

/// Any byte stream an IMAP session can run over (plain TCP or TLS).
pub trait ImapIo: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> ImapIo for T {}

pub type ImapStream = Box<dyn ImapIo>;
pub type Session = async_imap::Session<ImapStream>;

/// Why a connection attempt failed, so the watcher can back off harder on bad credentials
/// than on a network blip.
#[derive(Debug)]
pub enum ConnectError {
    /// The server refused the username or password.
    Auth(anyhow::Error),
    /// Anything else: DNS, TCP, TLS, timeouts, protocol errors.
    Other(anyhow::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Auth(e) => write!(f, "login refused: {e:#}"),
            ConnectError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for ConnectError {}

impl From<anyhow::Error> for ConnectError {
    fn from(e: anyhow::Error) -> Self {
        ConnectError::Other(e)
    }
}

/// Runs `fut` with a deadline, turning a timeout into an error that names the step.
pub async fn timed<T, E>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result.with_context(|| what.to_string()),
        Err(_) => bail!("{what}: no answer within {} s", limit.as_secs()),
    }
}

/// Connects and logs in. Returns the session and whether the server supports IDLE.
pub async fn connect(imap: &ImapSettings) -> Result<(Session, bool), ConnectError> {
    let addr = format!("{}:{}", imap.host, imap.port);
    let tcp = timed(imap.timeout, &format!("Cannot connect to {addr}"), TcpStream::connect(&addr)).await?;
    let _ = tcp.set_nodelay(true);

    let stream: ImapStream = match imap.security {
        Security::Tls => Box::new(tls_wrap(imap, tcp).await?),
        Security::Plain | Security::Starttls => Box::new(tcp),
    };
    let mut client = async_imap::Client::new(stream);
    // The greeting must be read before any command, or the first response is misread.
    match tokio::time::timeout(imap.timeout, client.read_response()).await {
        Ok(Ok(Some(_))) => (),
        Ok(Ok(None)) => {
            return Err(anyhow::anyhow!("{addr} closed the connection before greeting").into());
        }
        Ok(Err(e)) => {
            return Err(anyhow::Error::new(e).context(format!("No greeting from {addr}")).into());
        }
        Err(_) => {
            return Err(anyhow::anyhow!("No greeting from {addr} within {} s", imap.timeout.as_secs()).into());
        }
    };

    if imap.security == Security::Starttls {
        timed(
            imap.timeout,
            &format!("STARTTLS refused by {addr}"),
            client.run_command_and_check_ok("STARTTLS", None),
        )
        .await?;
        let tcp = client.into_inner();
        let tls = tls_wrap_stream(imap, tcp).await?;
        client = async_imap::Client::new(Box::new(tls) as ImapStream);
    }

    let password = imap.password.load().map_err(ConnectError::Auth)?;
    let login = tokio::time::timeout(imap.timeout, client.login(&imap.username, password.expose())).await;
    let mut session = match login {
        Ok(Ok(session)) => session,
        Ok(Err((async_imap::error::Error::No(msg), _)))
        | Ok(Err((async_imap::error::Error::Bad(msg), _))) => {
            return Err(ConnectError::Auth(anyhow::anyhow!(
                "{addr} refused the login for {}: {msg}",
                imap.username
            )));
        }
        Ok(Err((e, _))) => {
            return Err(anyhow::Error::new(e).context(format!("Login to {addr} failed")).into());
        }
        Err(_) => {
            return Err(
                anyhow::anyhow!("Login to {addr}: no answer within {} s", imap.timeout.as_secs()).into()
            );
        }
    };
    let caps = timed(imap.timeout, "CAPABILITY failed", session.capabilities()).await?;
    Ok((session, caps.has_str("IDLE")))
}

async fn tls_wrap(
    imap: &ImapSettings,
    tcp: TcpStream,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    tls_wrap_stream(imap, tcp).await
}

async fn tls_wrap_stream<S>(
    imap: &ImapSettings,
    stream: S,
) -> anyhow::Result<tokio_rustls::client::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = crate::tls::client_config(imap.tls_ca_file.as_deref())?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = crate::tls::server_name(&imap.host)?;
    timed(
        imap.timeout,
        &format!("TLS handshake with {}:{} failed", imap.host, imap.port),
        connector.connect(name, stream),
    )
    .await
}

/// Logs in and out again: what `gatehouse check` reports on.
pub async fn check(imap: &ImapSettings) -> anyhow::Result<String> {
    let (mut session, idle) = connect(imap).await.map_err(anyhow::Error::new)?;
    let mailbox = timed(
        imap.timeout,
        &format!("Cannot open mailbox {:?}", imap.mailbox),
        session.examine(&imap.mailbox),
    )
    .await?;
    let _ = tokio::time::timeout(imap.timeout, session.logout()).await;
    Ok(format!(
        "{}:{} as {}, mailbox {} holds {} messages, IDLE {}",
        imap.host,
        imap.port,
        imap.username,
        imap.mailbox,
        mailbox.exists,
        if idle { "supported" } else { "not supported (will poll)" }
    ))
}
