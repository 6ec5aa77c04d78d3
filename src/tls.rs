//! TLS client settings shared by the IMAP connection: the public web roots, plus one extra
//! CA when the config names `tls_ca_file` (a private or test CA). Certificates are always
//! verified; there is deliberately no switch to turn that off.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};

/// Builds a rustls client config trusting the Mozilla roots and, if given, the CA file.
pub fn client_config(extra_ca: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("Cannot read the CA file {}", path.display()))?
        {
            let cert = cert.with_context(|| format!("Bad certificate in {}", path.display()))?;
            roots.add(cert).with_context(|| format!("Unusable CA certificate in {}", path.display()))?;
            added += 1;
        }
        anyhow::ensure!(added > 0, "No certificate found in the CA file {}", path.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("Cannot set up TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name to verify the server's certificate against.
pub fn server_name(host: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string())
        .with_context(|| format!("{host:?} is not a valid server name"))
}
