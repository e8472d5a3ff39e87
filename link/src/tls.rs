//! TLS server setup shared by every daemon that serves TLS (gateway listeners, the HTTP API).

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem;

/// Why a certificate and key could not be loaded. The message names the file and the key it
/// came from (`tls_cert` / `tls_key`), ready for a startup error message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file could not be read or parsed.
    #[error("tls_cert {path}: {source}")]
    Cert {
        /// The `tls_cert` path.
        path: String,
        /// What went wrong.
        source: pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("tls_cert {path}: no certificate found")]
    NoCertificate {
        /// The `tls_cert` path.
        path: String,
    },
    /// The key file could not be read or parsed.
    #[error("tls_key {path}: {source}")]
    Key {
        /// The `tls_key` path.
        path: String,
        /// What went wrong.
        source: pem::Error,
    },
    /// rustls refused the certificate and key (they do not match, or are unsupported).
    #[error("tls_cert {cert} / tls_key: {source}")]
    Refused {
        /// The `tls_cert` path.
        cert: String,
        /// What rustls said.
        source: rustls::Error,
    },
}

/// Loads a PEM certificate chain and private key into a TLS acceptor.
pub fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_error = |source| TlsError::Cert { path: cert.to_string(), source };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).map_err(cert_error)?.collect::<Result<_, _>>().map_err(cert_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.to_string() });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key { path: key.to_string(), source })?;
    let refused = |source| TlsError::Refused { cert: cert.to_string(), source };
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(refused)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(refused)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
