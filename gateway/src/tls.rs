//! rustls configuration for the listener and for the upstream connection.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::config::{ListenerTls, UpstreamConfig};
use crate::error::ConfigError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    let certs = certs.map_err(|e| ConfigError::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::Tls(format!(
            "{}: no PEM certificates found",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    crate::secret_file::check_private(path, "the TLS private key")?;
    let pem = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            ConfigError::Tls(format!("{}: no PEM private key found", path.display()))
        }
        e => ConfigError::Tls(format!("{}: {e}", path.display())),
    })
}

fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| ConfigError::Tls(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A broken system certificate must not stop the gateway;
                // the rest of the store still verifies.
                let _ = roots.add(cert);
            }
        }
    }
    Ok(roots)
}

/// The listener's TLS config: HTTP/2 and HTTP/1.1 by ALPN, optional required
/// client certificates.
pub fn server_config(tls: &ListenerTls) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let certs = read_certs(&tls.cert_file)?;
    let key = read_key(&tls.key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?;
    let builder = match &tls.client_ca_file {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(root_store(Some(ca))?),
                provider(),
            )
            .build()
            .map_err(|e| ConfigError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The upstream client's TLS config: configured CA bundle or system roots,
/// optional client certificate.
pub fn client_config(upstream: &UpstreamConfig) -> Result<rustls::ClientConfig, ConfigError> {
    client_tls(
        upstream.ca_file.as_deref(),
        upstream.client_cert_file.as_deref(),
        upstream.client_key_file.as_deref(),
    )
}

/// A TLS client config: the CA bundle (or system roots), and a client
/// certificate when both files are given.
pub fn client_tls(
    ca_file: Option<&Path>,
    client_cert_file: Option<&Path>,
    client_key_file: Option<&Path>,
) -> Result<rustls::ClientConfig, ConfigError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?
        .with_root_certificates(root_store(ca_file)?);
    match (client_cert_file, client_key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| ConfigError::Tls(e.to_string())),
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The subject of a DER certificate as an RFC 4514 string, e.g.
/// `CN=ward-terminal-3,O=Example Hospital`: the identity of a client that
/// authenticated with it. `None` for a certificate that does not parse
/// (the handshake already verified it; this only names it).
pub fn certificate_subject(der: &[u8]) -> Option<std::sync::Arc<str>> {
    use x509_cert::der::Decode;
    let certificate = x509_cert::Certificate::from_der(der).ok()?;
    Some(certificate.tbs_certificate.subject.to_string().into())
}
