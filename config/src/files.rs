//! Checks of the files a configuration names: TLS certificates and keys must be readable PEM.
//!
//! They run when a daemon starts (`DaemonConfig::check_files`), not at every load: `status` or
//! `stop` must work for an operator who cannot read a key that only the daemon's user may read.
//! A bad path is then a configuration error like any other (exit code 64, every problem at once)
//! rather than a failure half-way through starting.

use std::io::Read;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::validate::{Problem, parse_listener_url};
use crate::{GatewayConfig, HttpApiConfig};

/// Largest certificate or key file read: a chain of a few certificates takes a few KB, and a
/// path naming something endless (`/dev/zero`) must not hang the start.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// What a PEM file must hold.
#[derive(Clone, Copy)]
enum Pem {
    Certificate,
    PrivateKey,
}

/// Problems with the TLS files of a gateway's listeners.
pub(crate) fn gateway(config: &GatewayConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        // Files on a listener that is not TLS, or only one of the two, are validation's to report.
        if let (Ok(url), Some(cert), Some(key)) = (parse_listener_url(&l.url), &l.tls_cert, &l.tls_key)
            && url.tls
        {
            check(&mut problems, &format!("listeners[{i}].tls_cert"), cert, Pem::Certificate);
            check(&mut problems, &format!("listeners[{i}].tls_key"), key, Pem::PrivateKey);
        }
    }
    for (i, app) in config.pusher.iter().flat_map(|p| &p.apps).enumerate() {
        for (w, hook) in app.webhooks.iter().enumerate() {
            if let Some(ca) = &hook.ca_file {
                check(&mut problems, &format!("pusher.apps[{i}].webhooks[{w}].ca_file"), ca, Pem::Certificate);
            }
        }
    }
    problems
}

/// Problems with the HTTP API's TLS files.
pub(crate) fn http_api(config: &HttpApiConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        check(&mut problems, "tls_cert", cert, Pem::Certificate);
        check(&mut problems, "tls_key", key, Pem::PrivateKey);
    }
    problems
}

fn check(problems: &mut Vec<Problem>, key: &str, path: &str, want: Pem) {
    if let Err(reason) = read_pem(path, want) {
        problems.push(Problem { key: key.into(), reason });
    }
}

/// Reads `path` as the TLS loader will, and says what is wrong with it, if anything.
fn read_pem(path: &str, want: Pem) -> Result<(), String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PEM_FILE + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(format!("{path} is larger than {MAX_PEM_FILE} bytes: not a certificate or key file"));
    }
    let bad = |e: pem::Error| format!("{path} is not a valid PEM file: {e}");
    match want {
        Pem::Certificate => {
            let certs = CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(bad)?;
            if certs.is_empty() {
                return Err(format!("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
            }
        }
        Pem::PrivateKey => match PrivateKeyDer::from_pem_slice(&bytes) {
            Ok(_) => {}
            Err(pem::Error::NoItemsFound) => {
                return Err(format!("{path} holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC)"));
            }
            Err(e) => return Err(bad(e)),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ListenerConfig;

    // Only the PEM structure is checked here (rustls checks the DER when it loads them), so any
    // base64 body stands in for a real certificate and key.
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nAAECAwQF\n-----END PRIVATE KEY-----\n";

    #[test]
    fn missing_unreadable_and_mixed_up_files_are_named_by_key() {
        let dir = std::env::temp_dir().join(format!("gw-config-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, CERT).unwrap();
        std::fs::write(&key, KEY).unwrap();
        let (cert, key) = (cert.to_str().unwrap().to_string(), key.to_str().unwrap().to_string());
        let api = |c: &str, k: &str| HttpApiConfig {
            tls_cert: Some(c.into()),
            tls_key: Some(k.into()),
            ..HttpApiConfig::default()
        };
        assert!(http_api(&api(&cert, &key)).is_empty());
        let missing = http_api(&api("/nonexistent/cert.pem", &key));
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].key, "tls_cert");
        assert!(missing[0].reason.starts_with("cannot read /nonexistent/cert.pem: No such file"), "{missing:?}");
        // Swapped: neither file holds what it should.
        let swapped: Vec<String> = http_api(&api(&key, &cert)).iter().map(ToString::to_string).collect();
        assert_eq!(swapped.len(), 2, "{swapped:?}");
        assert!(swapped[0].starts_with("tls_cert: ") && swapped[0].contains("holds no PEM certificate"), "{swapped:?}");
        assert!(swapped[1].starts_with("tls_key: ") && swapped[1].contains("holds no PEM private key"), "{swapped:?}");
        let dir_as_file = http_api(&api(dir.to_str().unwrap(), &key));
        assert!(dir_as_file[0].reason.starts_with("cannot read"), "{dir_as_file:?}");
        let endless = http_api(&api("/dev/zero", &key));
        assert!(endless[0].reason.contains("is larger than"), "{endless:?}");

        // A gateway's TLS listener names its index; plain listeners are not looked at.
        let listener = |url: &str, c: &str| ListenerConfig {
            tls_cert: Some(c.into()),
            tls_key: Some(key.clone()),
            ..ListenerConfig::new(url)
        };
        let gw = GatewayConfig {
            listeners: vec![listener("wss://127.0.0.1:0", &cert), listener("text+tls://127.0.0.1:0", "/nope.pem")],
            ..GatewayConfig::default()
        };
        let keys: Vec<String> = gateway(&gw).into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["listeners[1].tls_cert"]);

        // A webhook's trust file must hold certificates (a key there is a mix-up).
        let mut pusher = crate::PusherConfig::default();
        let mut app = crate::PusherApp::new("1", "k", "s");
        for ca in [&cert, &key] {
            let mut hook = crate::PusherWebhook::new("https://backend.example/hook");
            hook.ca_file = Some(ca.clone());
            app.webhooks.push(hook);
        }
        pusher.apps.push(app);
        let gw = GatewayConfig { pusher: Some(pusher), ..GatewayConfig::default() };
        let problems = gateway(&gw);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "pusher.apps[0].webhooks[1].ca_file");
        assert!(problems[0].reason.contains("holds no PEM certificate"), "{problems:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
