//! The little HTTP that OAuth2 needs: one POST of a form (or JSON) to a token endpoint,
//! answered with a status and a body.
//!
//! reqwest does the HTTP: it honours `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and
//! `NO_PROXY` as curl does (NHS networks often allow the web only through a proxy, reached
//! with CONNECT; IMAP and SMTP do not go through it), and follows redirects. TLS is ours,
//! verified exactly as for IMAP ([`crate::tls`]: the web roots plus `tls_ca_file`), handed
//! to reqwest whole, so there is one place that decides what is trusted. Plain `http://`
//! is refused by the config for anything but this machine (the local test stand-in).
//!
//! Token requests happen about once an hour, so a client is built per request: the proxy
//! settings are read from the environment each time, and nothing is pooled.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// The request method, for [`request`].
pub use reqwest::Method;

/// Token endpoint answers are small; anything bigger is not one.
const MAX_BODY: usize = 1024 * 1024;

/// Redirects followed at most: an identity platform redirects rarely, and never in a loop.
const MAX_REDIRECTS: usize = 5;

/// An HTTP answer: status code and body bytes.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text for messages, shortened: error pages can be long.
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if one_line.chars().count() > 300 {
            format!("{}…", one_line.chars().take(300).collect::<String>())
        } else {
            one_line
        }
    }
}

/// POSTs `form` (application/x-www-form-urlencoded) to `url`.
pub async fn post_form(
    url: &str,
    form: &[(&str, &str)],
    timeout: Duration,
    extra_ca: Option<&Path>,
) -> anyhow::Result<HttpResponse> {
    let client = client(timeout, extra_ca)?;
    let builder = client.post(checked(url)?).form(form);
    send(builder, url, timeout).await
}

/// Sends one request and reads the whole answer, all within `timeout`.
pub async fn request(
    method: Method,
    url: &str,
    body: Option<(&str, Vec<u8>)>,
    timeout: Duration,
    extra_ca: Option<&Path>,
) -> anyhow::Result<HttpResponse> {
    let client = client(timeout, extra_ca)?;
    let mut builder = client.request(method, checked(url)?);
    if let Some((content_type, bytes)) = body {
        builder = builder.header(reqwest::header::CONTENT_TYPE, content_type).body(bytes);
    }
    send(builder, url, timeout).await
}

/// A client for one request: our TLS, the proxies the environment names, the timeout.
fn client(timeout: Duration, extra_ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let tls = Arc::unwrap_or_clone(crate::tls::client_config(extra_ca)?);
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::custom(same_origin_redirects))
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("Cannot set up the HTTP client")
}

/// Follows a redirect only within the endpoint's own origin (scheme, host and port), at
/// most [`MAX_REDIRECTS`] times. A 307 or 308 re-sends the form, client secret and all:
/// elsewhere (another host, or plain http) it would hand the secret to whoever is there.
fn same_origin_redirects(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let origin = |u: &reqwest::Url| {
        (u.scheme().to_string(), u.host_str().map(str::to_string), u.port_or_known_default())
    };
    let Some(first) = attempt.previous().first() else {
        return attempt.stop();
    };
    if origin(attempt.url()) != origin(first) {
        let to = format!("{}://{}", attempt.url().scheme(), attempt.url().host_str().unwrap_or_default());
        return attempt.error(format!(
            "the token endpoint redirected to {to}, another origin: not followed, so the client secret goes nowhere else"
        ));
    }
    if attempt.previous().len() > MAX_REDIRECTS {
        return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
    }
    attempt.follow()
}

/// The URL parsed, and only http(s): a message about it never shows a user:password part.
fn checked(url: &str) -> anyhow::Result<reqwest::Url> {
    let parsed =
        reqwest::Url::parse(url).map_err(|_| anyhow::anyhow!("{:?} is not a URL", redact_url(url)))?;
    match parsed.scheme() {
        "https" | "http" => Ok(parsed),
        _ => bail!("{} is not an http(s) URL", redact_url(url)),
    }
}

async fn send(
    builder: reqwest::RequestBuilder,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<HttpResponse> {
    let shown = redact_url(url);
    let answer = async {
        let mut response = builder
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| describe(e, &shown, timeout))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| anyhow::anyhow!("Cannot read the HTTP answer: {}", clean(e)))?
        {
            anyhow::ensure!(
                body.len() + chunk.len() <= MAX_BODY,
                "{shown} answered with more than {MAX_BODY} bytes"
            );
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse { status, body })
    };
    // reqwest's own timeout covers the whole exchange too; this one also bounds a proxy
    // that accepts the connection and then says nothing.
    match tokio::time::timeout(timeout, answer).await {
        Ok(result) => result,
        Err(_) => bail!("no answer from {shown} within {} s", timeout.as_secs()),
    }
}

/// A request error as a sentence naming the endpoint, the cause chain included (reqwest's
/// top-level message alone says only "error sending request").
fn describe(e: reqwest::Error, shown: &str, timeout: Duration) -> anyhow::Error {
    if e.is_timeout() {
        return anyhow::anyhow!("no answer from {shown} within {} s", timeout.as_secs());
    }
    let what = if e.is_connect() {
        format!("Cannot connect to {shown}")
    } else {
        format!("The request to {shown} failed")
    };
    anyhow::anyhow!("{what}: {}", clean(e))
}

/// An error and its causes on one line, without the URL reqwest adds to its own message
/// (it could carry a user:password part).
fn clean(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.dedup();
    parts.join(": ")
}

/// A URL for messages: without any user:password part.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
            format!("{scheme}://{host}{tail}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_messages_lose_their_credentials() {
        assert_eq!(redact_url("https://u:p@login.example/t/token"), "https://login.example/t/token");
        assert_eq!(redact_url("http://127.0.0.1:1880/x"), "http://127.0.0.1:1880/x");
    }

    #[tokio::test]
    async fn a_closed_port_is_an_error_naming_the_host() {
        let e = post_form("http://127.0.0.1:1/token", &[("a", "b")], Duration::from_secs(5), None)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("127.0.0.1:1"), "{e:#}");
    }

    #[tokio::test]
    async fn an_error_never_shows_the_urls_credentials() {
        let e =
            post_form("http://user:hunter2@127.0.0.1:1/token", &[("a", "b")], Duration::from_secs(5), None)
                .await
                .unwrap_err();
        let text = format!("{e:#}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("127.0.0.1:1"), "{text}");
    }
}
