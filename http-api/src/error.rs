//! Errors as JSON with the right status code: `{"error": {"code", "message", "field"?, "missing"?}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gw_gateway_client::ClientError;
use gw_proto::Refusal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A failed request or call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApiError {
    /// HTTP status (also inside batch results, where the response itself is 200).
    pub status: u16,
    /// Stable machine-readable code: `bad_request`, `unauthorized`, `forbidden`, `unknown_call`,
    /// `method_not_allowed`, `too_large`, `answer_too_large`, `limit_reached`, `client_gone`, `no_gateways`, `gateway_unavailable`,
    /// `timeout`, `refused`, `internal`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The request field at fault, as a path (`uids[2]`, `calls[0].args.message.base64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Gateways that were not reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ApiError,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status: status.as_u16(), code: code.into(), message: message.into(), field: None, missing: vec![] }
    }

    /// 400 naming the field at fault.
    pub fn bad_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let mut e = Self::new(StatusCode::BAD_REQUEST, "bad_request", message);
        e.field = (!field.is_empty()).then_some(field);
        e
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        let message = e.to_string();
        let (status, code, missing) = match e {
            ClientError::InvalidClientId(_) | ClientError::EmptyName(_) | ClientError::InvalidSession(_) => {
                (StatusCode::BAD_REQUEST, "bad_request", vec![])
            }
            ClientError::ClientGone(_) => (StatusCode::NOT_FOUND, "client_gone", vec![]),
            ClientError::NoGateways => (StatusCode::SERVICE_UNAVAILABLE, "no_gateways", vec![]),
            ClientError::GatewayUnavailable(g) => (StatusCode::SERVICE_UNAVAILABLE, "gateway_unavailable", vec![g]),
            ClientError::Unreachable { gateways } => (StatusCode::SERVICE_UNAVAILABLE, "gateway_unavailable", gateways),
            ClientError::Shutdown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down", vec![]),
            ClientError::Timeout(g) => (StatusCode::GATEWAY_TIMEOUT, "timeout", vec![g]),
            ClientError::WriteRefused { refusal, .. } => match refusal {
                Refusal::SessionTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", vec![]),
                Refusal::TooManyGroups { .. } => (StatusCode::CONFLICT, "limit_reached", vec![]),
                Refusal::ClientGone => (StatusCode::NOT_FOUND, "client_gone", vec![]),
                _ => (StatusCode::BAD_REQUEST, "bad_request", vec![]),
            },
            ClientError::Refused { gateway, .. } | ClientError::UnexpectedReply(gateway) => {
                (StatusCode::BAD_GATEWAY, "refused", vec![gateway])
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal", vec![]),
        };
        let mut err = Self::new(status, code, message);
        err.missing = missing;
        err
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let unauthorized = status == StatusCode::UNAUTHORIZED;
        let mut response = (status, Json(ErrorBody { error: self })).into_response();
        if unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Arguments come by name: serde would also take a struct from a JSON array, its fields in
/// order, which no caller means (and which breaks silently when a field is added).
const NOT_AN_ARRAY: &str = "arguments are a JSON object of named fields, not an array";

/// Parses a request body, a JSON object; an empty body is `{}` (for calls without arguments). A
/// bad one is a 400 naming the field: serde's path, plus the field a "missing/unknown field"
/// message names.
pub fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::bad_field("", format!("invalid request body: {NOT_AN_ARRAY}")));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        bad_json(&path, &message)
    })?;
    de.end().map_err(|e| ApiError::bad_field("", format!("invalid JSON: {e}")))?;
    Ok(value)
}

/// Like [`parse_json`], from an already parsed value.
pub fn parse_value<T: for<'de> Deserialize<'de>>(value: serde_json::Value) -> Result<T, ApiError> {
    if value.is_array() {
        return Err(ApiError::bad_field("", format!("invalid request body: {NOT_AN_ARRAY}")));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        bad_json(&path, &e.into_inner().to_string())
    })
}

fn bad_json(path: &str, message: &str) -> ApiError {
    // `?` marks a place serde could not name (the input ended inside an object, say): say
    // nothing rather than name a field that does not exist.
    let path = path.trim_end_matches('?').trim_end_matches('.');
    // "missing field `uid`" and "unknown field `x`, expected ..." name the field in the message.
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p).and_then(|rest| rest.split_once('`')).map(|(name, _)| name));
    let field = match (path, named) {
        ("", Some(n)) => n.to_string(),
        (p, Some(n)) if p != n && !p.ends_with(&format!(".{n}")) => format!("{p}.{n}"),
        (p, _) => p.to_string(),
    };
    let message = if field.is_empty() {
        format!("invalid request body: {message}")
    } else {
        format!("invalid request body: {field}: {message}")
    };
    ApiError::bad_field(field, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::{Call, SendToUid};

    #[test]
    fn errors_name_the_field() {
        let e = parse_json::<SendToUid>(br#"{"message":"hi"}"#).unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (400, Some("uid")), "{e:?}");
        let e = parse_json::<SendToUid>(br#"{"uid":5,"message":"hi"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("uid"), "{e:?}");
        let e = parse_json::<SendToUid>(br#"{"uid":"u","message":"hi","mesage":1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("mesage"), "{e:?}");
        let e = parse_json::<SendToUid>(br#"{"uid":"u","message":{"base64":"!!"}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("message"), "{e:?}");
        let e = parse_json::<Call>(br#"{"call":"send_to_uid","args":{"uid":"","message":"x"}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("args.uid"), "{e:?}");
        let e = parse_json::<SendToUid>(br#"{"uid":"u","message":"hi"} trailing"#).unwrap_err();
        assert_eq!(e.status, 400);
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = parse_json::<SendToUid>(deep.as_bytes()).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn arguments_are_named_never_positional() {
        for body in [&br#"["u1","hi"]"#[..], b"  [\"u1\", \"hi\"]"] {
            let e = parse_json::<SendToUid>(body).unwrap_err();
            assert_eq!((e.status, e.field.as_deref()), (400, None), "{e:?}");
            assert!(e.message.contains("not an array"), "{e:?}");
        }
        let e = parse_value::<SendToUid>(serde_json::json!(["u1", "hi"])).unwrap_err();
        assert!(e.message.contains("not an array"), "{e:?}");
        let e = Call::from_parts("send_to_uid", serde_json::json!(["u1", "hi"]), &crate::routes::Args)
            .unwrap()
            .unwrap_err();
        assert_eq!(e.status, 400, "{e:?}");
    }

    #[test]
    fn a_body_cut_short_names_no_field() {
        for body in [&b"{"[..], b"{\"uid\"", b"{\"uid\":\"u\",", b"{\"uid\":"] {
            let e = parse_json::<SendToUid>(body).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.field.as_deref().is_none_or(|f| !f.contains('?')), "{:?}: {e:?}", String::from_utf8_lossy(body));
            assert!(e.message.contains("EOF"), "{e:?}");
        }
    }

    #[test]
    fn binary_messages_are_base64() {
        let c: SendToUid = parse_json(br#"{"uid":"u","message":{"base64":"AAEC"}}"#).unwrap();
        assert!(c.message.0.binary);
        assert_eq!(&c.message.0.data[..], &[0, 1, 2]);
        let c: SendToUid = parse_json(br#"{"uid":"u","message":"text"}"#).unwrap();
        assert!(!c.message.0.binary);
    }
}
