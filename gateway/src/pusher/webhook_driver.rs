//! The webhook dispatcher's IO (docs/pusher.md §7): one task per gateway that feeds the
//! [`Dispatcher`] the events of every Pusher connection and the clock, and POSTs the bodies it
//! hands out, signed with the app's secret (`X-Pusher-Key`, `X-Pusher-Signature`), each within
//! `webhook_timeout`. On a stop, lingering events are released and what is queued is sent
//! until the grace period ends; what is left then is dropped and counted.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gw_pusher_protocol::webhook::{self, WebhookBody, WebhookEvent};
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::header::CONTENT_TYPE;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::webhook::{Dispatcher, Outcome};

/// The most of a receiver's answer read (then ignored); the connection is reused after it.
const MAX_ANSWER: usize = 64 * 1024;

/// Where one endpoint's requests go and who signs them.
#[derive(Clone)]
pub(crate) struct Target {
    pub uri: hyper::Uri,
    /// Its HTTP client (its own trust store when it has a `ca_file`), connections reused.
    pub client: Client_,
    pub url: String,
    pub app_id: String,
    pub key: String,
    pub secret: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("url", &self.url).field("app_id", &self.app_id).finish_non_exhaustive()
    }
}

/// The driver's input and settings.
#[derive(Debug)]
pub(crate) struct Driver {
    pub dispatcher: Dispatcher,
    /// One per dispatcher endpoint, in the same order.
    pub targets: Vec<Target>,
    pub events: mpsc::Receiver<(usize, WebhookEvent)>,
    /// One request's time limit (`webhook_timeout`).
    pub timeout: Duration,
}

/// An HTTP/1 client of `http://` and `https://` URLs.
pub(crate) type Client_ = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

impl Driver {
    /// Runs until `stop` is cancelled and then everything is sent, or `grace` after the stop.
    pub async fn run(mut self, stop: CancellationToken, grace: Duration) {
        let mut inflight: JoinSet<(usize, Result<(), String>)> = JoinSet::new();
        let mut deadline: Option<Instant> = None;
        let mut input_open = true;
        loop {
            let now = Instant::now();
            self.dispatcher.handle_timeout(now.into_std());
            while let Some(t) = self.dispatcher.poll_transmit(now.into_std()) {
                let target = self.targets[t.endpoint].clone();
                let body = Bytes::from(WebhookBody { time_ms: wall_ms(), events: t.events }.encode());
                tracing::debug!(url = %target.url, app = %target.app_id, bytes = body.len(), retry = t.retry, "webhook");
                let (timeout, endpoint) = (self.timeout, t.endpoint);
                inflight.spawn(async move { (endpoint, post(&target, body, timeout).await) });
            }
            if deadline.is_some() && !input_open && self.dispatcher.is_idle() {
                break;
            }
            let wake = self.dispatcher.poll_timeout().map(Instant::from_std);
            tokio::select! {
                biased;
                _ = stop.cancelled(), if deadline.is_none() => {
                    deadline = Some(now + grace);
                    // The connections closed before the stop: what they said is in the input.
                    while let Ok((app, event)) = self.events.try_recv() {
                        self.dispatcher.event(now.into_std(), app, event);
                    }
                    self.dispatcher.release_lingering(now.into_std());
                    input_open = false;
                }
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    let Ok((endpoint, result)) = done else { continue };
                    let target = &self.targets[endpoint];
                    let outcome = self.dispatcher.handle_result(Instant::now().into_std(), endpoint, result.is_ok());
                    match (outcome, result) {
                        (Outcome::Retry { after }, Err(e)) => {
                            tracing::debug!(url = %target.url, app = %target.app_id, error = %e, retry_in = ?after, "webhook failed");
                        }
                        (Outcome::GaveUp { events }, Err(e)) => {
                            tracing::warn!(url = %target.url, app = %target.app_id, events, error = %e, "webhook given up after webhook_retry_for; its events are dropped");
                        }
                        _ => {}
                    }
                }
                event = self.events.recv(), if input_open => match event {
                    Some((app, event)) => self.dispatcher.event(Instant::now().into_std(), app, event),
                    None => input_open = false,
                },
                _ = sleep_until(wake), if wake.is_some() => {}
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.dispatcher.abandon();
                    tracing::warn!("grace period over with webhooks unsent; they are dropped");
                    break;
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Milliseconds since the epoch (the body's `time_ms`, which receivers check against their clock).
fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One signed POST; `Ok` for a 2xx answer.
async fn post(target: &Target, body: Bytes, timeout: Duration) -> Result<(), String> {
    let [(key_name, key), (sig_name, signature)] = webhook::headers(&target.key, &target.secret, &body);
    let request = Request::post(target.uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(key_name, key)
        .header(sig_name, signature)
        .body(Full::new(body))
        .map_err(|e| format!("request: {e}"))?;
    let exchange = async {
        let response = target.client.request(request).await.map_err(|e| with_causes(&e))?;
        let status = response.status();
        // Read the answer so the connection can carry the next request.
        let _ = Limited::new(response.into_body(), MAX_ANSWER).collect().await;
        if status.is_success() { Ok(()) } else { Err(format!("receiver answered HTTP {}", status.as_u16())) }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within webhook_timeout ({timeout:?})")),
    }
}

/// An error with its causes, `outer: inner: ...` (hyper's own text names neither what failed
/// nor why).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// Parses a configured webhook URL and makes its client: for `https://`, trusting the
/// certificates of `ca_file` when given, else the system's trust store.
pub(crate) fn connect_to(url: &str, ca_file: Option<&str>) -> Result<(hyper::Uri, Client_), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("only http:// and https:// URLs are supported".into()),
    };
    if uri.authority().is_none() {
        return Err("the URL has no host".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = |roots: rustls::RootCertStore| -> Result<rustls::ClientConfig, String> {
        Ok(rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    };
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match (https, ca_file) {
        // A plain-HTTP receiver needs no trust store (a FROM-scratch image may have none).
        (false, _) => builder.with_tls_config(tls(rustls::RootCertStore::empty())?),
        (true, Some(path)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("ca_file {path}: {e}"))? {
                let cert = cert.map_err(|e| format!("ca_file {path}: {e}"))?;
                roots.add(cert).map_err(|e| format!("ca_file {path}: {e}"))?;
            }
            builder.with_tls_config(tls(roots)?)
        }
        (true, None) => builder.with_provider_and_native_roots(provider.clone()).map_err(|e| {
            format!(
                "no trust store for https: {e} (install the system's CA certificates, or set the webhook's ca_file)"
            )
        })?,
    };
    let connector = builder.https_or_http().enable_http1().build();
    let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
    Ok((uri, client))
}

/// Starts the driver (nothing when no app has webhooks).
pub(crate) fn spawn(
    driver: Option<Driver>,
    stop: CancellationToken,
    grace: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    use tracing::Instrument;
    let driver = driver?;
    let span = tracing::info_span!("pusher_webhooks", endpoints = driver.targets.len());
    Some(tokio::spawn(driver.run(stop, grace).instrument(span)))
}
