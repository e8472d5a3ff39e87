//! The `http` application: business logic served by an HTTP endpoint in any language.
//!
//! Every client event is POSTed as JSON to `[http_app] url`; the endpoint's answer is applied:
//! messages to the client, Gateway API calls (the JSON of the HTTP push API's batch), session
//! changes. It is an [`Events`] implementation like any other, so the worker's guarantees hold:
//! events of one client in order, at least once (`redelivered`), nothing lost on reload.
//!
//! An event is acknowledged when its handler returns, which is after the endpoint answered 2xx and
//! the answer was applied, or after the event was given up: the endpoint answered 4xx (it
//! refused the event; not retried), or it was down, slow, answered 5xx or garbage until
//! `timeout` passed (retried with backoff until then). A retry is posted with `redelivered: true`:
//! the endpoint may have acted on the attempt that failed. A given-up event is logged with the
//! client id, the URL and the cause, and counted as a handler error, and the worker goes on. The
//! requests, retries and given-up events are counted in the worker's `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gw_business_worker::{Context, Events, HandlerResult, Message, MetricFamily, Protocol, Session, WebSocketRequest};
use gw_config::HttpAppConfig;
use gw_http_calls::calls::Call;
use gw_http_calls::types::Message as JsonMessage;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Counters of the endpoint's behaviour.
#[derive(Debug, Default)]
pub struct HttpAppStats {
    /// Requests sent to the endpoint, retries included.
    pub requests: AtomicU64,
    /// Attempts that failed and were retried.
    pub retries: AtomicU64,
    /// Events given up (4xx, or still failing at the deadline).
    pub failures: AtomicU64,
}

/// Why the `http` application cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpAppError {
    /// `http_app.url` does not parse; the URL and why.
    #[error("http_app.url {0:?} is not a valid URL: {1}")]
    Url(String, String),
    /// `http_app.headers` holds a name or value that is not a valid header.
    #[error("http_app.headers: {0}")]
    Header(String),
    /// `http_app.api_key` is not a valid header value.
    #[error("http_app.api_key is not a valid header value")]
    ApiKey,
}

/// One failed attempt.
#[derive(Debug, thiserror::Error)]
enum Attempt {
    #[error("endpoint refused the event: HTTP {0}: {1}")]
    Refused(u16, String),
    #[error("{0}")]
    Retry(String),
}

/// What the endpoint may answer (every key optional; an empty body is `{}`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    /// Messages to the client, in order.
    #[serde(default)]
    reply: Vec<JsonMessage>,
    /// Gateway API calls, run in order after the replies.
    #[serde(default)]
    calls: Vec<Call>,
    /// Replaces the session.
    #[serde(default)]
    session: Option<Session>,
    /// Merged into the session (top level; `null` removes a key).
    #[serde(default)]
    update_session: Option<Session>,
}

/// The `http` application.
pub struct HttpApp {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: hyper::Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    config: HttpAppConfig,
    permits: Semaphore,
    /// What happened so far.
    pub stats: Arc<HttpAppStats>,
}

impl std::fmt::Debug for HttpApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpApp").field("url", &self.config.url).finish_non_exhaustive()
    }
}

impl HttpApp {
    /// The application for `config` (the URL and headers are checked here).
    pub fn new(config: HttpAppConfig) -> Result<Self, HttpAppError> {
        let uri: hyper::Uri = config.url.parse().map_err(|e| HttpAppError::Url(config.url.clone(), format!("{e}")))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(HttpAppError::Url(config.url.clone(), "only http://host:port/path is supported".into()));
        }
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let name = HeaderName::try_from(name.as_str()).map_err(|e| HttpAppError::Header(format!("{name}: {e}")))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|_| HttpAppError::Header(format!("{name}: invalid value")))?;
            headers.push((name, value));
        }
        if !config.api_key.is_empty() {
            let mut v =
                HeaderValue::try_from(format!("Bearer {}", config.api_key)).map_err(|_| HttpAppError::ApiKey)?;
            v.set_sensitive(true);
            headers.push((AUTHORIZATION, v));
        }
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build_http();
        Ok(Self {
            client,
            uri,
            headers,
            permits: Semaphore::new(config.concurrency),
            config,
            stats: Arc::new(HttpAppStats::default()),
        })
    }

    /// Posts one event; retries until the deadline; applies the answer.
    async fn deliver(&self, ctx: &mut Context, mut event: Map<String, Value>) -> HandlerResult {
        event.insert("client_id".into(), ctx.client_id.to_string().into());
        event.insert("session".into(), Value::Object(ctx.session.clone()));
        event.insert("server".into(), server_json(ctx));
        event.insert("redelivered".into(), ctx.redelivered.into());
        let mut body = Bytes::from(serde_json::to_vec(&event)?);
        let mut flagged = ctx.redelivered;
        let deadline = Instant::now() + self.config.timeout;
        let mut backoff = self.config.retry_min;
        let answer = loop {
            let err = match tokio::time::timeout_at(deadline, self.attempt(body.clone())).await {
                Ok(Ok(answer)) => break answer,
                Ok(Err(Attempt::Refused(status, text))) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    return Err(Attempt::Refused(status, text).into());
                }
                Ok(Err(Attempt::Retry(e))) => e,
                Err(_) => format!("no answer within the event's timeout of {:?}", self.config.timeout),
            };
            if Instant::now() + backoff >= deadline {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                let (url, timeout) = (&self.config.url, self.config.timeout);
                return Err(format!("endpoint {url} failed for {timeout:?}; event given up: {err}").into());
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client_id = %ctx.client_id, error = %err, retry_in = ?backoff, "endpoint failed; retrying");
            if !flagged {
                // The endpoint may have acted on the attempt that failed (it timed out, or
                // answered 5xx after acting): the retry says so, as a redelivery does.
                event.insert("redelivered".into(), true.into());
                body = Bytes::from(serde_json::to_vec(&event)?);
                flagged = true;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.retry_max);
        };
        self.apply(ctx, answer).await
    }

    async fn attempt(&self, body: Bytes) -> Result<Answer, Attempt> {
        let _permit = self.permits.acquire().await.map_err(|_| Attempt::Retry("shutting down".into()))?;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = Request::post(self.uri.clone()).header(CONTENT_TYPE, "application/json");
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        let req = req.body(Full::new(body)).map_err(|e| Attempt::Retry(format!("request: {e}")))?;
        let response =
            self.client.request(req).await.map_err(|e| {
                Attempt::Retry(format!("endpoint {} unreachable: {}", self.config.url, with_causes(&e)))
            })?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), self.config.max_answer)
            .collect()
            .await
            .map_err(|e| Attempt::Retry(format!("reading the answer: {e}")))?
            .to_bytes();
        let text = || String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        if status.is_client_error() {
            return Err(Attempt::Refused(status.as_u16(), text()));
        }
        if !status.is_success() {
            return Err(Attempt::Retry(format!("endpoint answered HTTP {}: {}", status.as_u16(), text())));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Answer::default());
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| Attempt::Retry(format!("endpoint answered garbage ({e}): {}", text())))
    }

    async fn apply(&self, ctx: &mut Context, answer: Answer) -> HandlerResult {
        for msg in answer.reply {
            ctx.send(msg).await?;
        }
        for call in answer.calls {
            let name = call.name();
            // A call that fails (a client gone, a gateway down) is the endpoint's business: it is
            // logged, and the rest of the answer still applies.
            if let Err(e) = call.run(ctx.gateway()).await {
                tracing::warn!(client_id = %ctx.client_id, call = name, error = %e, "Gateway API call from the endpoint failed");
            }
        }
        if let Some(session) = answer.session {
            ctx.session = session;
        }
        for (key, value) in answer.update_session.unwrap_or_default() {
            if value.is_null() {
                ctx.session.remove(&key);
            } else {
                ctx.session.insert(key, value);
            }
        }
        Ok(())
    }
}

/// An error with the errors that caused it, `outer: inner: ...`: hyper's own text ("client error
/// (Connect)") names neither what failed nor why.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = e.source();
    }
    text
}

fn server_json(ctx: &Context) -> Value {
    let s = &ctx.server;
    json!({
        "client_addr": s.client_addr.map(|a| a.to_string()),
        "gateway_addr": s.gateway_addr.map(|a| a.to_string()),
        "listener": s.listener,
        "protocol": s.protocol.map(|p| format!("{p:?}").to_lowercase()),
    })
}

fn event(name: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("event".into(), name.into());
    m
}

impl Events for HttpApp {
    /// WebSocket clients are announced once their handshake is done (with it); others here.
    async fn on_connect(&self, ctx: &mut Context) -> HandlerResult {
        if ctx.server.protocol == Some(Protocol::WebSocket) {
            return Ok(());
        }
        self.deliver(ctx, event("connect")).await
    }

    async fn on_websocket_connect(&self, ctx: &mut Context, request: &WebSocketRequest) -> HandlerResult {
        let mut e = event("connect");
        e.insert(
            "handshake".into(),
            json!({ "path": request.path, "query": request.query, "headers": request.headers }),
        );
        self.deliver(ctx, e).await
    }

    async fn on_message(&self, ctx: &mut Context, msg: Message) -> HandlerResult {
        let mut e = event("message");
        e.insert("message".into(), serde_json::to_value(JsonMessage(msg))?);
        self.deliver(ctx, e).await
    }

    async fn on_close(&self, ctx: &mut Context) -> HandlerResult {
        self.deliver(ctx, event("close")).await
    }

    /// A client that dropped without closing came back (connection state recovery): same
    /// client id, uid, groups and session; no `close`/`connect` pair is posted for it.
    async fn on_resume(&self, ctx: &mut Context, replayed: u64) -> HandlerResult {
        let mut e = event("resume");
        e.insert("replayed".into(), replayed.into());
        self.deliver(ctx, e).await
    }

    fn metrics(&self) -> Vec<MetricFamily> {
        let s = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            MetricFamily::counter(
                "gw_worker_http_requests_total",
                "Requests the http application sent to its endpoint, retries included.",
                n(&s.requests),
            ),
            MetricFamily::counter(
                "gw_worker_http_retries_total",
                "Attempts at the endpoint that failed and were retried.",
                n(&s.retries),
            ),
            MetricFamily::counter(
                "gw_worker_http_failures_total",
                "Events the http application gave up (the endpoint answered 4xx, or kept failing until the timeout).",
                n(&s.failures),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_endpoint_is_named_with_the_cause() {
        // A port nobody listens on any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/events");
        let app = HttpApp::new(HttpAppConfig { url: url.clone(), ..HttpAppConfig::default() }).unwrap();
        let Err(Attempt::Retry(why)) = app.attempt(Bytes::from_static(b"{}")).await else {
            panic!("an unreachable endpoint is a failure to retry");
        };
        assert!(why.contains(&url), "names the URL: {why}");
        assert!(why.contains("Connection refused"), "names the cause: {why}");
    }
}
