//! HTTP API request authentication ("Generating authentication signatures"): every request
//! carries `auth_key`, `auth_timestamp` (seconds; within [`Limits::auth_timestamp_window`] of the
//! server's clock), `auth_version` (`1.0`), `body_md5` (hex MD5 of a non-empty body) and
//! `auth_signature`: the hex HMAC-SHA256, with the app secret, of
//!
//! ```text
//! METHOD\nPATH\nk1=v1&k2=v2...
//! ```
//!
//! where the query parameters other than `auth_signature` are sorted by key, keys lower-cased,
//! values not URL-escaped. The path is the one requested, as sent. The official SDKs send
//! `body_md5` with every request, the MD5 of the empty body included; it is checked whenever
//! it is present.
//!
//! [`Limits::auth_timestamp_window`]: crate::Limits::auth_timestamp_window

use md5::{Digest, Md5};

use crate::api::ApiError;
use crate::hex;

/// The only `auth_version` there is.
pub const AUTH_VERSION: &str = "1.0";

/// The hex MD5 of `body`, as `body_md5` carries it.
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(&Md5::digest(body))
}

/// The string an HTTP API signature is the HMAC of. `params` is every query parameter as
/// decoded from the URL; `auth_signature` is left out if present.
pub fn string_to_sign(method: &str, path: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<(String, &str)> =
        params.iter().filter(|(k, _)| k != "auth_signature").map(|(k, v)| (k.to_lowercase(), v.as_str())).collect();
    // Stable: parameters given more than once keep their order, as the SDKs sign them.
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let query: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}\n{path}\n{}", method.to_uppercase(), query.join("&"))
}

/// What an SDK sends: `params` with the authentication parameters added, signature last, ready
/// for [`query_string`]. `body_md5` is added when the body is not empty.
pub fn sign_request(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    params: &[(String, String)],
    body: &[u8],
    timestamp: u64,
) -> Vec<(String, String)> {
    let mut all = params.to_vec();
    all.push(("auth_key".into(), key.into()));
    all.push(("auth_timestamp".into(), timestamp.to_string()));
    all.push(("auth_version".into(), AUTH_VERSION.into()));
    if !body.is_empty() {
        all.push(("body_md5".into(), body_md5(body)));
    }
    let signature = crate::auth::sign(secret, &string_to_sign(method, path, &all));
    all.push(("auth_signature".into(), signature));
    all
}

/// `params` URL-encoded as a query string (without the `?`).
pub fn query_string(params: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish()
}

/// The `auth_key` of a request, to find its app when the path names none (the Python SDK's
/// `terminate_user_connections` posts to `/users/{id}/terminate_connections`).
pub fn auth_key(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "auth_key").map(|(_, v)| v.into_owned())
}

/// Checks a request's authentication for the app with `key` and `secret`: `query` is the raw
/// query string (without the `?`), `path` the requested path as sent, `now` the server's clock
/// in seconds since the epoch. Returns every query parameter, decoded, for the route to read.
#[expect(
    clippy::too_many_arguments,
    reason = "each is one part of the request or of the app; a struct would only rename them"
)]
pub fn verify_request(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    now: u64,
    window: u64,
) -> Result<Vec<(String, String)>, ApiError> {
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let one = |name: &str| -> Result<Option<&str>, ApiError> {
        let mut found = params.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = found.next();
        if found.next().is_some() {
            return Err(ApiError::unauthorized(format!("{name} given more than once")));
        }
        Ok(first)
    };
    let required = |name: &str| one(name)?.ok_or_else(|| ApiError::unauthorized(format!("Missing {name}")));
    let cut = |s: &str| s.chars().take(100).collect::<String>();

    let given_key = required("auth_key")?;
    if given_key != key {
        return Err(ApiError::unauthorized(format!("Unknown auth_key {:?}", cut(given_key))));
    }
    let version = required("auth_version")?;
    if version != AUTH_VERSION {
        return Err(ApiError::unauthorized(format!(
            "Unsupported auth_version {:?}: only {AUTH_VERSION}",
            cut(version)
        )));
    }
    let ts = required("auth_timestamp")?;
    let ts_secs: u64 = ts.parse().map_err(|_| {
        ApiError::unauthorized(format!("auth_timestamp must be seconds since the epoch, not {:?}", cut(ts)))
    })?;
    if ts_secs.abs_diff(now) > window {
        return Err(ApiError::unauthorized(format!(
            "Timestamp expired: Given timestamp ({ts_secs}) not within {window}s of server time ({now})"
        )));
    }
    match one("body_md5")? {
        Some(given) => {
            let actual = body_md5(body);
            if !given.eq_ignore_ascii_case(&actual) {
                return Err(ApiError::unauthorized(format!(
                    "body_md5 {:?} is not the MD5 of the body ({actual})",
                    cut(given)
                )));
            }
        }
        None if !body.is_empty() => return Err(ApiError::unauthorized("Missing body_md5 for a request with a body")),
        None => {}
    }
    let signature = required("auth_signature")?;
    let signed = string_to_sign(method, path, &params);
    if !hex::matches(signature, &hex::hmac_sha256(secret.as_bytes(), signed.as_bytes())) {
        return Err(ApiError::unauthorized(format!(
            "Invalid signature: you should have sent HmacSHA256Hex({signed:?}, your_secret_key), but you sent {:?}",
            cut(signature)
        )));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";
    const BODY: &str = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The worked example of Pusher's HTTP API reference, byte for byte.
    #[test]
    fn worked_example_from_the_docs() {
        assert_eq!(body_md5(BODY.as_bytes()), "ec365a775a4cd0599faeb73354201b6f");
        let params = p(&[
            ("auth_key", KEY),
            ("auth_timestamp", "1353088179"),
            ("auth_version", "1.0"),
            ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
        ]);
        let signed = string_to_sign("POST", "/apps/3/events", &params);
        assert_eq!(
            signed,
            "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
        );
        assert_eq!(
            crate::auth::sign(SECRET, &signed),
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        let signed_params = sign_request(KEY, SECRET, "POST", "/apps/3/events", &[], BODY.as_bytes(), 1353088179);
        assert_eq!(signed_params.last().unwrap().1, "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c");
        let query = query_string(&signed_params);
        assert_eq!(
            query,
            "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        let ok = verify_request(KEY, SECRET, "POST", "/apps/3/events", &query, BODY.as_bytes(), 1353088179 + 600, 600);
        assert_eq!(ok.unwrap().len(), 5);
    }

    #[test]
    fn keys_are_sorted_lower_cased_and_values_not_escaped() {
        let params = p(&[("Name", "Something else"), ("auth_key", "foo"), ("auth_signature", "x")]);
        assert_eq!(string_to_sign("get", "/p", &params), "GET\n/p\nauth_key=foo&name=Something else");
        // Escaped on the wire, unescaped in what is signed.
        let signed =
            sign_request(KEY, SECRET, "GET", "/apps/3/channels", &p(&[("filter_by_prefix", "a b&c")]), b"", 10);
        let query = query_string(&signed);
        assert!(query.starts_with("filter_by_prefix=a+b%26c&"), "{query}");
        assert!(verify_request(KEY, SECRET, "GET", "/apps/3/channels", &query, b"", 10, 600).is_ok());
    }

    #[test]
    fn every_tampering_is_refused_with_401() {
        let good = query_string(&sign_request(KEY, SECRET, "POST", "/apps/3/events", &[], BODY.as_bytes(), 1000));
        let check = |method: &str, path: &str, query: &str, body: &str, now: u64| {
            verify_request(KEY, SECRET, method, path, query, body.as_bytes(), now, 600)
        };
        assert!(check("POST", "/apps/3/events", &good, BODY, 1000).is_ok());
        let status = |r: Result<Vec<(String, String)>, ApiError>| r.unwrap_err().status;
        assert_eq!(status(check("GET", "/apps/3/events", &good, BODY, 1000)), 401, "method");
        assert_eq!(status(check("POST", "/apps/4/events", &good, BODY, 1000)), 401, "path");
        assert_eq!(status(check("POST", "/apps/3/events", &good, "{}", 1000)), 401, "body");
        assert_eq!(
            status(check("POST", "/apps/3/events", &format!("{good}&extra=1"), BODY, 1000)),
            401,
            "an added parameter"
        );
        assert_eq!(status(check("POST", "/apps/3/events", &good, BODY, 1601)), 401, "stale");
        assert_eq!(status(check("POST", "/apps/3/events", &good, BODY, 399)), 401, "from the future");
        assert!(check("POST", "/apps/3/events", &good, BODY, 1600).is_ok(), "the window's edge");
        let other_secret = verify_request(KEY, "other", "POST", "/apps/3/events", &good, BODY.as_bytes(), 1000, 600);
        assert!(
            other_secret.unwrap_err().message.starts_with(
                "Invalid signature: you should have sent HmacSHA256Hex(\"POST\\n/apps/3/events\\nauth_key="
            )
        );
    }

    #[test]
    fn missing_and_malformed_authentication_is_named() {
        let msg = |query: &str, body: &str| {
            verify_request(KEY, SECRET, "POST", "/x", query, body.as_bytes(), 1000, 600).unwrap_err().message
        };
        assert_eq!(msg("", ""), "Missing auth_key");
        assert_eq!(msg("auth_key=nope", ""), "Unknown auth_key \"nope\"");
        assert_eq!(msg(&format!("auth_key={KEY}&auth_key={KEY}"), ""), "auth_key given more than once");
        assert_eq!(msg(&format!("auth_key={KEY}"), ""), "Missing auth_version");
        assert_eq!(msg(&format!("auth_key={KEY}&auth_version=2.0"), ""), "Unsupported auth_version \"2.0\": only 1.0");
        assert_eq!(msg(&format!("auth_key={KEY}&auth_version=1.0"), ""), "Missing auth_timestamp");
        assert_eq!(
            msg(&format!("auth_key={KEY}&auth_version=1.0&auth_timestamp=-1"), ""),
            "auth_timestamp must be seconds since the epoch, not \"-1\""
        );
        assert_eq!(
            msg(&format!("auth_key={KEY}&auth_version=1.0&auth_timestamp=1"), ""),
            "Timestamp expired: Given timestamp (1) not within 600s of server time (1000)"
        );
        let base = format!("auth_key={KEY}&auth_version=1.0&auth_timestamp=1000");
        assert_eq!(msg(&base, "{}"), "Missing body_md5 for a request with a body");
        assert_eq!(
            msg(&format!("{base}&body_md5=00"), "{}"),
            "body_md5 \"00\" is not the MD5 of the body (99914b932bd37a50b983c5e7c90ae93b)"
        );
        assert_eq!(msg(&base, ""), "Missing auth_signature");
    }

    #[test]
    fn auth_key_finds_the_app() {
        assert_eq!(auth_key("a=1&auth_key=k%31&b=2").as_deref(), Some("k1"));
        assert_eq!(auth_key("a=1"), None);
    }
}
