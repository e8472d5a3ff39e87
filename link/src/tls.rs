//! TLS server setup shared by every daemon that serves TLS (gateway listeners, the HTTP API).

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// Loads a PEM certificate chain and private key into a TLS acceptor. The error names the file
/// and the key it came from (`tls_cert` / `tls_key`), ready for a startup error message.
pub fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("tls_cert {cert}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_cert {cert}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("tls_cert {cert}: no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls_key {key}: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_cert {cert} / tls_key: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
