//! The server HTTP API ("HTTP API Reference") that backends call through the official SDKs:
//! - [`signature`]: request authentication (`auth_key`, `auth_timestamp`, `auth_version`,
//!   `body_md5`, `auth_signature`), both the SDK's side and the server's check;
//! - [`events`]: `POST /apps/{id}/events` and `POST /apps/{id}/batch_events` bodies and answers;
//! - [`channels`]: `GET /apps/{id}/channels`, `/channels/{name}`, `/channels/{name}/users`
//!   queries and answers, and the user id of `POST .../users/{id}/terminate_connections`.
//!
//! Every refusal is an [`ApiError`] with the HTTP status Pusher documents (400 bad request,
//! 401 authentication, 413 event data too large) and a message naming the field and the limit.

pub mod channels;
pub mod events;
pub mod signature;

use std::fmt;

/// A refused HTTP API request: the status to answer and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ApiError {
    /// The HTTP status (400, 401, 404 or 413).
    pub status: u16,
    /// What is wrong, for the response body and the log.
    pub message: String,
}

impl ApiError {
    /// 400: the request is malformed or asks for something impossible.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: 400, message: message.into() }
    }

    /// 401: the request's authentication failed.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self { status: 401, message: message.into() }
    }

    /// 404: no such app or route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: 404, message: message.into() }
    }

    /// 413: an event's data is over the limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self { status: 413, message: message.into() }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

/// `body` as JSON of type `T`; a refusal names the field (`batch[2].channel: ...`).
fn parse_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            ApiError::bad_request(format!("invalid JSON body: {}", e.inner()))
        } else {
            ApiError::bad_request(format!("invalid JSON body at {path}: {}", e.inner()))
        }
    })?;
    de.end().map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(value)
}
