//! The HTTP routes: `POST /v1/<call>` per call, `POST /v1/batch`, `GET /openapi.json`; JSON
//! errors for everything else; every request counted by route and status.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use tracing::Instrument;

use crate::Api;
use crate::calls::{ApiCall, ArgsParser, Call, CallVisitor, Reply, for_each_call};
use crate::error::{ApiError, parse_json, parse_value};

/// The router of the API.
pub fn router(api: Arc<Api>) -> Router {
    let mut routes = Routes(Router::new());
    for_each_call(&mut routes);
    crate::pusher::routes(routes.0)
        .route("/v1/batch", axum::routing::post(batch))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(api.clone(), guard))
        .layer(middleware::from_fn_with_state(api.clone(), track))
        .layer(DefaultBodyLimit::max(api.max_body))
        .with_state(api)
}

/// Before any route: the API key of a call that has a body is checked from its headers, so a
/// request without a valid key is answered 401 before a byte of its body is read (one without a
/// body meets the same check in its route, after 404 and 405); then the body is read within
/// `body_timeout` (408 after; the connection is closed) and `max_body` (413).
async fn guard(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let has_body = declared.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING);
    if has_body
        && req.uri().path().starts_with("/v1/")
        && let Err(e) = api.keys.authenticate(headers)
    {
        if let Some(n) = api.throttles.unauthorized.hit() {
            tracing::info!(requests = n, "requests without a valid API key refused (401) before their body was read");
        }
        return e.into_response();
    }
    let (parts, body) = req.into_parts();
    if declared.is_some_and(|n| n > api.max_body as u64) {
        return body_too_large().into_response();
    }
    let read = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, api.max_body));
    let bytes = match tokio::time::timeout(api.limits.body_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return body_too_large().into_response(),
        Ok(Err(e)) => {
            let e = ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("cannot read the request body: {e}"));
            return e.into_response();
        }
        Err(_) => {
            api.stats.body_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(n) = api.throttles.body_timeout.hit() {
                tracing::warn!(requests = n, timeout = ?api.limits.body_timeout, "requests answered 408: body not received in time");
            }
            let message =
                format!("the request body did not arrive within body_timeout ({:?})", api.limits.body_timeout);
            let mut response = ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", message).into_response();
            response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            return response;
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

fn body_too_large() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "request body is larger than max_body")
}

/// `POST /v1/<call>` for every call, each handled by `handle::<ThatCall>`.
struct Routes(Router<Arc<Api>>);

impl CallVisitor for Routes {
    fn visit<C: ApiCall>(&mut self) {
        let router = std::mem::take(&mut self.0);
        self.0 = router.route(&format!("/v1/{}", C::NAME), axum::routing::post(handle::<C>));
    }
}

/// Parses a batch call's arguments so that an error names the field ([`parse_value`]).
pub(crate) struct Args;

impl ArgsParser for Args {
    type Error = ApiError;
    fn parse<T: serde::de::DeserializeOwned>(&self, args: Value) -> Result<T, ApiError> {
        parse_value(args)
    }
}

/// Counts and times every request by its route pattern.
async fn track(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_string();
    let started = Instant::now();
    let span = tracing::debug_span!("request", route = %route);
    let response = next.run(req).instrument(span).await;
    api.stats.record(&route, response.status().as_u16(), started.elapsed());
    response
}

/// The body, or the JSON error for one that could not be read (413 when over `max_body`).
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "too_large", "request body is larger than max_body")
        } else {
            ApiError::new(status, "bad_request", format!("cannot read the request body: {}", e.body_text()))
        }
    })
}

/// One call: authorize, parse, run, answer `{"value", "missing"}`.
async fn handle<C: ApiCall>(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Reply<C::Output>>, ApiError> {
    let key = api.keys.authorize(&headers, &[(0, C::KIND)])?;
    let call: C = parse_json(&body(raw)?)?;
    api.ready()?;
    api.stats.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let span = tracing::debug_span!("call", call = C::NAME, key = %key);
    match call.run(&api.gateway).instrument(span).await {
        Ok(reply) => {
            tracing::debug!(call = C::NAME, key = %key, missing = reply.missing.len(), "call done");
            Ok(Json(reply))
        }
        Err(e) => {
            tracing::debug!(call = C::NAME, key = %key, error = %e, "call failed");
            Err(e.into())
        }
    }
}

/// `POST /v1/batch`: several calls, run in order.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The calls, run one after the other in this order.
    pub calls: Vec<Call>,
}

/// One call's outcome in a batch: `{"value", "missing"}` or `{"error"}`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum BatchResult {
    /// The call's value and missing gateways.
    Ok(Reply<Value>),
    /// The call failed.
    Err {
        /// Why.
        error: ApiError,
    },
}

/// The answer to a batch: one result per call, in order.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct BatchResponse {
    /// One result per call, in order.
    pub results: Vec<BatchResult>,
}

/// The whole batch is parsed and authorized before anything runs; then every call runs in order
/// and a failed call does not stop the ones after it (each has its own result). The answer is
/// written as the calls finish, each result as JSON text, and holds at most `max_response` bytes
/// of results: a call whose result would not fit gets an `answer_too_large` error in its place
/// (it ran; only its answer is left out).
async fn batch(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    api.keys.authenticate(&headers)?;
    let request: BatchRequest = parse_batch(&body(raw)?)?;
    if request.calls.len() > api.max_batch {
        return Err(ApiError::bad_field(
            "calls",
            format!("{} calls; a batch has at most {} (max_batch)", request.calls.len(), api.max_batch),
        ));
    }
    let kinds: Vec<_> = request.calls.iter().map(Call::kind).enumerate().collect();
    let key = api.keys.authorize(&headers, &kinds)?;
    api.ready()?;
    let mut answer = BatchAnswer::new(api.max_response);
    for (i, call) in request.calls.into_iter().enumerate() {
        api.stats.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = call.name();
        let span = tracing::debug_span!("call", call = name, key = %key, batch = true);
        match call.run_to_json(&api.gateway).instrument(span).await {
            Ok(reply) => {
                if !answer.push_reply(&reply) {
                    api.stats.answers_too_large.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(key = %key, call = name, len = reply.get().len(), "batch answer full");
                    answer.push_error(answer_too_large(i, name, reply.get().len(), api.max_response));
                }
            }
            Err(e) => answer.push_error(e.into()),
        }
    }
    tracing::debug!(key = %key, calls = answer.results, bytes = answer.body.len(), "batch done");
    Ok(answer.into_response())
}

/// The answer to a batch, `{"results": [...]}`, written result by result.
struct BatchAnswer {
    body: Vec<u8>,
    results: usize,
    /// Bytes of call results it takes at most.
    limit: usize,
    /// Bytes of call results it holds.
    taken: usize,
}

impl BatchAnswer {
    fn new(limit: usize) -> Self {
        Self { body: br#"{"results":["#.to_vec(), results: 0, limit, taken: 0 }
    }

    fn separate(&mut self) {
        if self.results > 0 {
            self.body.push(b',');
        }
        self.results += 1;
    }

    /// Adds a call's reply if it fits; false (and nothing added) if it does not.
    fn push_reply(&mut self, reply: &RawValue) -> bool {
        let len = reply.get().len();
        if self.taken + len > self.limit {
            return false;
        }
        self.taken += len;
        self.separate();
        self.body.extend_from_slice(reply.get().as_bytes());
        true
    }

    /// Adds a call's error (small; not held against the limit).
    fn push_error(&mut self, error: ApiError) {
        self.separate();
        let result = BatchResult::Err { error };
        serde_json::to_writer(&mut self.body, &result).expect("an error serializes");
    }

    fn into_response(mut self) -> Response {
        self.body.extend_from_slice(b"]}");
        ([(header::CONTENT_TYPE, "application/json")], self.body).into_response()
    }
}

/// The error standing in for a batch call's result that would not fit in the answer.
fn answer_too_large(i: usize, name: &str, len: usize, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "answer_too_large",
        format!(
            "calls[{i}] ({name}) ran, but its result ({len} bytes) would take this batch's answer past max_response ({limit} bytes); make the call on its own or ask for less"
        ),
    )
}

/// Parses a batch call by call, so an error names its place (`calls[3].args.uid`); a call
/// without arguments may leave out `args`.
fn parse_batch(body: &[u8]) -> Result<BatchRequest, ApiError> {
    let value: Value = parse_json(body)?;
    let Some(items) = value.get("calls").and_then(Value::as_array) else {
        // Not the expected shape at all: let serde say what is wrong with it.
        return parse_value(value);
    };
    if let Some(other) = value.as_object().and_then(|o| o.keys().find(|k| *k != "calls")) {
        return Err(ApiError::bad_field(other.clone(), format!("unknown field `{other}`; a batch has only `calls`")));
    }
    let mut calls = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |field: &str| format!("calls[{i}]{field}");
        let Some(item) = item.as_object() else {
            return Err(ApiError::bad_field(at(""), "a call is an object: {\"call\": \"<name>\", \"args\": {...}}"));
        };
        if let Some(other) = item.keys().find(|k| *k != "call" && *k != "args") {
            return Err(ApiError::bad_field(
                at(&format!(".{other}")),
                format!("unknown field `{other}`; a call has `call` and `args`"),
            ));
        }
        let Some(name) = item.get("call").and_then(Value::as_str) else {
            return Err(ApiError::bad_field(at(".call"), "missing or not a string: the call's name"));
        };
        let args = item.get("args").cloned().unwrap_or_else(|| Value::Object(Default::default()));
        match Call::from_parts(name, args, &Args) {
            Some(Ok(call)) => calls.push(call),
            Some(Err(mut e)) => {
                let inner = e.field.as_deref().map(|f| format!(".{f}")).unwrap_or_default();
                let field = at(&format!(".args{inner}"));
                let what = e.message.trim_start_matches("invalid request body: ");
                let what = e.field.as_deref().and_then(|f| what.strip_prefix(&format!("{f}: "))).unwrap_or(what);
                e.message = format!("{field}: {what}");
                e.field = Some(field);
                return Err(e);
            }
            None => {
                return Err(ApiError::bad_field(
                    at(".call"),
                    format!("unknown call {name:?}; GET /openapi.json lists every call"),
                ));
            }
        }
    }
    Ok(BatchRequest { calls })
}

async fn openapi(State(api): State<Arc<Api>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], api.openapi.clone()).into_response()
}

async fn not_found(req: Request) -> ApiError {
    let path = req.uri().path();
    let message = match path.strip_prefix("/v1/") {
        Some(call) => format!("unknown call {call:?}; GET /openapi.json lists every call"),
        None => format!("no route {path:?}; the API is under /v1/ (GET /openapi.json describes it)"),
    };
    ApiError::new(StatusCode::NOT_FOUND, "unknown_call", message)
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed here: calls are POST with a JSON body", req.method()),
    )
}
