//! The little HTTP that OAuth2 needs: one POST of a form (or JSON) to a token endpoint,
//! over a fresh HTTP/1.1 connection, answered with a status and a body.
//!
//! Token requests happen about once an hour, so there is no pooling, redirects or
//! compression. TLS is verified exactly as for IMAP ([`crate::tls`]); plain `http://` is
//! refused by the config for anything but this machine (the local test stand-in).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Token endpoint answers are small; anything bigger is not one.
const MAX_BODY: usize = 1024 * 1024;

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
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    request(
        Method::POST,
        url,
        Some(("application/x-www-form-urlencoded", body.into_bytes())),
        timeout,
        extra_ca,
    )
    .await
}

/// Sends one request and reads the whole answer, all within `timeout`.
pub async fn request(
    method: Method,
    url: &str,
    body: Option<(&str, Vec<u8>)>,
    timeout: Duration,
    extra_ca: Option<&Path>,
) -> anyhow::Result<HttpResponse> {
    match tokio::time::timeout(timeout, request_inner(method, url, body, extra_ca)).await {
        Ok(result) => result,
        Err(_) => bail!("no answer from {} within {} s", redact_url(url), timeout.as_secs()),
    }
}

async fn request_inner(
    method: Method,
    url: &str,
    body: Option<(&str, Vec<u8>)>,
    extra_ca: Option<&Path>,
) -> anyhow::Result<HttpResponse> {
    let uri: Uri = url.parse().with_context(|| format!("{:?} is not a URL", redact_url(url)))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => bail!("{} is not an http(s) URL", redact_url(url)),
    };
    let host = uri.host().context("The URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_else(|| host.clone());
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();

    let tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
        .await
        .with_context(|| format!("Cannot connect to {host}:{port}"))?;
    let _ = tcp.set_nodelay(true);

    let (content_type, bytes) = body.map(|(t, b)| (Some(t.to_string()), b)).unwrap_or((None, Vec::new()));
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::USER_AGENT, concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .header(hyper::header::CONNECTION, "close");
    if let Some(t) = content_type {
        builder = builder.header(hyper::header::CONTENT_TYPE, t);
    }
    let request = builder.body(Full::new(Bytes::from(bytes))).context("Cannot build the HTTP request")?;

    if https {
        let config = crate::tls::client_config(extra_ca)?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = crate::tls::server_name(&host)?;
        let tls = connector
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {host} failed"))?;
        exchange(TokioIo::new(tls), request).await
    } else {
        exchange(TokioIo::new(tcp), request).await
    }
}

async fn exchange<IO>(io: IO, request: Request<Full<Bytes>>) -> anyhow::Result<HttpResponse>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.context("HTTP handshake failed")?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = async {
        let response = sender.send_request(request).await.context("The HTTP request failed")?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("Cannot read the HTTP answer: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(HttpResponse { status, body })
    }
    .await;
    driver.abort();
    result
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
}
