//! API keys: `Authorization: Bearer <key>`, compared in constant time, each key limited to what
//! its `access` allows. Keys are kept only as SHA-256 digests and never logged; logs and metrics
//! use the key's name.

use axum::http::{HeaderMap, StatusCode, header};
use gw_config::{ApiAccess, ApiKeyConfig};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::calls::Kind;
use crate::error::ApiError;

struct Key {
    name: String,
    digest: [u8; 32],
    access: ApiAccess,
}

/// The configured keys. Without any, every request is allowed (loopback-only deployments; the
/// config refuses an open API on any other address).
pub struct Keys {
    keys: Vec<Key>,
}

/// Who made a request: the key's name, or `-` on an open API.
pub type KeyName = String;

impl Keys {
    /// The keys of the config's `[[keys]]`.
    pub fn new(config: &[ApiKeyConfig]) -> Self {
        Self {
            keys: config
                .iter()
                .map(|k| Key { name: k.name.clone(), digest: digest(k.key.as_bytes()), access: k.access })
                .collect(),
        }
    }

    /// The key presented by `headers`, if it is one of ours: 401 otherwise.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<(KeyName, ApiAccess), ApiError> {
        if self.keys.is_empty() {
            return Ok(("-".into(), ApiAccess::All));
        }
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing API key: send `Authorization: Bearer <key>`"))?;
        let value = value.to_str().map_err(|_| unauthorized("malformed Authorization header"))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(unauthorized("the Authorization header must be `Bearer <key>`")),
        };
        // Digests have one length whatever the key's, and every key is compared, so the time
        // taken tells nothing about how much of a key was right.
        let presented = digest(token.as_bytes());
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.digest.ct_eq(&presented)) {
                found = Some(key);
            }
        }
        let Some(key) = found else {
            tracing::debug!("request with an invalid API key refused");
            return Err(unauthorized("invalid API key"));
        };
        Ok((key.name.clone(), key.access))
    }

    /// The key's name if it may make calls of `kind`: 401 or 403 otherwise.
    pub fn authorize(&self, headers: &HeaderMap, kinds: &[(usize, Kind)]) -> Result<KeyName, ApiError> {
        let (name, access) = self.authenticate(headers)?;
        for (index, kind) in kinds {
            if !allows(access, *kind) {
                let what = if kinds.len() > 1 {
                    format!("call {index} is a {} call", kind.as_str())
                } else {
                    format!("this is a {} call", kind.as_str())
                };
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("API key {name:?} has {} access; {what}", access_name(access)),
                ));
            }
        }
        Ok(name)
    }
}

fn allows(access: ApiAccess, kind: Kind) -> bool {
    matches!((access, kind), (ApiAccess::All, _) | (ApiAccess::Read, Kind::Read) | (ApiAccess::Send, Kind::Send))
}

fn access_name(access: ApiAccess) -> &'static str {
    match access {
        ApiAccess::All => "all",
        ApiAccess::Read => "read-only",
        ApiAccess::Send => "send-only",
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(&[
            ApiKeyConfig { name: "backend".into(), key: "k-all-0123456789".into(), access: ApiAccess::All },
            ApiKeyConfig { name: "dash".into(), key: "k-read-0123456789".into(), access: ApiAccess::Read },
            ApiKeyConfig { name: "push".into(), key: "k-send-0123456789".into(), access: ApiAccess::Send },
        ])
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn keys_and_access() {
        let k = keys();
        assert_eq!(k.authorize(&HeaderMap::new(), &[(0, Kind::Read)]).unwrap_err().status, 401);
        assert_eq!(k.authorize(&bearer("Bearer nope"), &[(0, Kind::Read)]).unwrap_err().status, 401);
        assert_eq!(k.authorize(&bearer("Basic k-all-0123456789"), &[(0, Kind::Read)]).unwrap_err().status, 401);
        assert_eq!(k.authorize(&bearer("bearer k-all-0123456789"), &[(0, Kind::Write)]).unwrap(), "backend");
        assert_eq!(k.authorize(&bearer("Bearer k-read-0123456789"), &[(0, Kind::Read)]).unwrap(), "dash");
        let e = k.authorize(&bearer("Bearer k-read-0123456789"), &[(0, Kind::Read), (1, Kind::Send)]).unwrap_err();
        assert_eq!(e.status, 403);
        assert!(e.message.contains("call 1 is a send call") && !e.message.contains("k-read"), "{}", e.message);
        assert_eq!(k.authorize(&bearer("Bearer k-send-0123456789"), &[(0, Kind::Send)]).unwrap(), "push");
        assert_eq!(k.authorize(&bearer("Bearer k-send-0123456789"), &[(0, Kind::Write)]).unwrap_err().status, 403);
        assert_eq!(Keys::new(&[]).authorize(&HeaderMap::new(), &[(0, Kind::Write)]).unwrap(), "-");
    }
}
