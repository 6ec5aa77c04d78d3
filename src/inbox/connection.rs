//! Opening an authenticated IMAP session: TCP, then TLS or STARTTLS as configured, the
//! server's greeting, then LOGIN (password) or AUTHENTICATE XOAUTH2 (OAuth2 token). Every
//! step has the configured timeout, because a server that accepts the connection and then
//! says nothing would otherwise hang the daemon.
//!
//! A refused token is renewed once and tried on a fresh connection: the cached token may
//! have been revoked early. A token refused straight after the token endpoint issued it
//! means the app has no right to the mailbox, and is reported as that step.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::{Auth, ImapSettings, Security};
use crate::oauth::{AccessToken, OAuthError, TokenProvider};

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
            ConnectError::Auth(e) if e.downcast_ref::<OAuthError>().is_some() => write!(f, "{e:#}"),
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

impl From<OAuthError> for ConnectError {
    /// An outage is retried like a network failure; a refusal like a wrong password.
    fn from(e: OAuthError) -> Self {
        if e.transient {
            ConnectError::Other(anyhow::Error::new(e))
        } else {
            ConnectError::Auth(anyhow::Error::new(e))
        }
    }
}

/// A logged-in session.
#[derive(Debug)]
pub struct Connected {
    pub session: Session,
    /// Whether the server supports IDLE.
    pub idle: bool,
    /// The OAuth2 token the session logged in with: the session is renewed before it expires.
    pub token: Option<AccessToken>,
}

type Client = async_imap::Client<ImapStream>;

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

/// Connects and logs in. `tokens` is needed (only) with `auth = "xoauth2"`.
pub async fn connect(imap: &ImapSettings, tokens: Option<&TokenProvider>) -> Result<Connected, ConnectError> {
    let addr = format!("{}:{}", imap.host, imap.port);
    let client = open(imap).await?;
    let (mut session, token) = match &imap.auth {
        Auth::Password(source) => {
            let password = source.load().map_err(ConnectError::Auth)?;
            (login(imap, client, password.expose()).await?, None)
        }
        Auth::XOAuth2(settings) => {
            let tokens = tokens.ok_or_else(|| anyhow::anyhow!("No OAuth2 token provider for IMAP"))?;
            let mut token = tokens.token().await?;
            let mut client = Some(client);
            let mut renewed = false;
            loop {
                let c = match client.take() {
                    Some(c) => c,
                    None => open(imap).await?,
                };
                match authenticate(imap, c, &token).await {
                    Ok(session) => break (session, Some(token)),
                    Err(Refused::Other(e)) => return Err(e),
                    Err(Refused::Token(server_says)) => {
                        if renewed {
                            let mut e = crate::oauth::mailbox_permission_error(
                                settings,
                                "IMAP",
                                &imap.username,
                                &addr,
                            );
                            if let Some(msg) = server_says {
                                e.detail = format!("{} ({msg})", e.detail);
                            }
                            return Err(e.into());
                        }
                        tracing::info!("{addr} refused the OAuth2 access token; getting a new one");
                        token = tokens.renew(&token).await?;
                        renewed = true;
                    }
                }
            }
        }
    };
    let caps = timed(imap.timeout, "CAPABILITY failed", session.capabilities()).await?;
    Ok(Connected { session, idle: caps.has_str("IDLE"), token })
}

/// TCP, TLS or STARTTLS, and the greeting.
async fn open(imap: &ImapSettings) -> Result<Client, ConnectError> {
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
    Ok(client)
}

async fn login(imap: &ImapSettings, client: Client, password: &str) -> Result<Session, ConnectError> {
    let addr = format!("{}:{}", imap.host, imap.port);
    let login = tokio::time::timeout(imap.timeout, client.login(&imap.username, password)).await;
    match login {
        Ok(Ok(session)) => Ok(session),
        Ok(Err((async_imap::error::Error::No(msg), _)))
        | Ok(Err((async_imap::error::Error::Bad(msg), _))) => {
            Err(ConnectError::Auth(anyhow::anyhow!("{addr} refused the login for {}: {msg}", imap.username)))
        }
        Ok(Err((e, _))) => Err(anyhow::Error::new(e).context(format!("Login to {addr} failed")).into()),
        Err(_) => {
            Err(anyhow::anyhow!("Login to {addr}: no answer within {} s", imap.timeout.as_secs()).into())
        }
    }
}

enum Refused {
    /// The server said no to the token (with its XOAUTH2 error JSON, if it sent one).
    Token(Option<String>),
    Other(ConnectError),
}

async fn authenticate(imap: &ImapSettings, client: Client, token: &AccessToken) -> Result<Session, Refused> {
    let addr = format!("{}:{}", imap.host, imap.port);
    let authenticator = crate::oauth::XOAuth2::new(&imap.username, &token.secret);
    let server_error = authenticator.server_error.clone();
    let result = tokio::time::timeout(imap.timeout, client.authenticate("XOAUTH2", authenticator)).await;
    match result {
        Ok(Ok(session)) => Ok(session),
        Ok(Err((async_imap::error::Error::No(msg), _)))
        | Ok(Err((async_imap::error::Error::Bad(msg), _))) => {
            let json = server_error.lock().unwrap_or_else(|e| e.into_inner()).take();
            tracing::debug!("{addr} refused XOAUTH2: {msg} {}", json.as_deref().unwrap_or_default());
            Err(Refused::Token(Some(msg.trim().to_string()).filter(|m| !m.is_empty())))
        }
        Ok(Err((e, _))) => Err(Refused::Other(
            anyhow::Error::new(e).context(format!("AUTHENTICATE XOAUTH2 to {addr} failed")).into(),
        )),
        Err(_) => Err(Refused::Other(
            anyhow::anyhow!("AUTHENTICATE to {addr}: no answer within {} s", imap.timeout.as_secs()).into(),
        )),
    }
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
pub async fn check(imap: &ImapSettings, tokens: Option<&TokenProvider>) -> anyhow::Result<String> {
    let Connected { mut session, idle, .. } = connect(imap, tokens).await.map_err(anyhow::Error::new)?;
    let mailbox = timed(
        imap.timeout,
        &format!("Cannot open mailbox {:?}", imap.mailbox),
        session.examine(&imap.mailbox),
    )
    .await?;
    let _ = tokio::time::timeout(imap.timeout, session.logout()).await;
    Ok(format!(
        "{}:{} as {}{}, mailbox {} holds {} messages, IDLE {}",
        imap.host,
        imap.port,
        imap.username,
        if imap.auth.oauth().is_some() { " (XOAUTH2)" } else { "" },
        imap.mailbox,
        mailbox.exists,
        if idle { "supported" } else { "not supported (will poll)" }
    ))
}
