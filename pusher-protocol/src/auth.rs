//! Subscription and sign-in signatures ("Authentication and authorization signatures"): the
//! app's server signs, with the app secret, `socket_id:channel` (private and encrypted
//! channels), `socket_id:channel:channel_data` (presence channels) or
//! `socket_id::user::user_data` (sign-in), and the client sends `{app key}:{hex HMAC-SHA256}`.
//!
//! The signing functions are what an app's auth endpoint computes (the tests use them as one);
//! the `verify_*` functions are what the gateway checks, in constant time.

use crate::hex;

/// Why an `auth` string does not authorize what it came with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `auth` was given for a channel or sign-in that needs one.
    #[error("auth is required for {0}")]
    Missing(String),
    /// The `auth` is not `{key}:{signature}`.
    #[error("invalid auth {0:?}: expected \"<app key>:<hex HMAC-SHA256>\"")]
    Malformed(String),
    /// The `auth` names another app's key.
    #[error("Invalid key in subscription auth data: {0:?}")]
    WrongKey(String),
    /// The signature is not the HMAC of what was subscribed to. The message says what was
    /// expected to be signed (never the secret or the expected signature), as Pusher's does.
    #[error("Invalid signature: Expected HMAC SHA256 hex digest of {signed}, but got {got}")]
    BadSignature {
        /// The string the signature should be the HMAC of.
        signed: String,
        /// The signature that came (cut to 100 characters).
        got: String,
    },
}

/// The string a subscription signature is the HMAC of: `socket_id:channel`, then
/// `:channel_data` when channel data comes with the subscription (presence channels).
pub fn channel_string_to_sign(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// The string a sign-in signature is the HMAC of: `socket_id::user::user_data`.
pub fn user_string_to_sign(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// The hex HMAC-SHA256 of `message` keyed with `secret`, as Pusher signs everything.
pub fn sign(secret: &str, message: &str) -> String {
    hex::encode(&hex::hmac_sha256(secret.as_bytes(), message.as_bytes()))
}

/// The `auth` an app's server returns for a subscription: `{key}:{signature}`.
pub fn channel_auth(key: &str, secret: &str, socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    format!("{key}:{}", sign(secret, &channel_string_to_sign(socket_id, channel, channel_data)))
}

/// The `auth` an app's server returns for a sign-in: `{key}:{signature}`.
pub fn user_auth(key: &str, secret: &str, socket_id: &str, user_data: &str) -> String {
    format!("{key}:{}", sign(secret, &user_string_to_sign(socket_id, user_data)))
}

/// Checks a subscription's `auth` against the app's `key` and `secret`.
///
/// `channel_data` is the subscription's `channel_data` exactly as it came, if it came: it is
/// part of what was signed whatever the channel's kind, as the SDKs sign it.
pub fn verify_channel_auth(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: Option<&str>,
) -> Result<(), AuthError> {
    let auth = auth.ok_or_else(|| AuthError::Missing(format!("channel {channel:?}")))?;
    verify(key, secret, &channel_string_to_sign(socket_id, channel, channel_data), auth)
}

/// Checks a sign-in's `auth` against the app's `key` and `secret`.
pub fn verify_user_auth(
    key: &str,
    secret: &str,
    socket_id: &str,
    user_data: &str,
    auth: &str,
) -> Result<(), AuthError> {
    verify(key, secret, &user_string_to_sign(socket_id, user_data), auth)
}

fn verify(key: &str, secret: &str, signed: &str, auth: &str) -> Result<(), AuthError> {
    let cut = |s: &str| s.chars().take(100).collect::<String>();
    let (given_key, signature) = auth.split_once(':').ok_or_else(|| AuthError::Malformed(cut(auth)))?;
    if given_key != key {
        return Err(AuthError::WrongKey(cut(given_key)));
    }
    if hex::matches(signature, &hex::hmac_sha256(secret.as_bytes(), signed.as_bytes())) {
        Ok(())
    } else {
        Err(AuthError::BadSignature { signed: signed.to_owned(), got: cut(signature) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The worked examples of Pusher's "Generating authentication and authorization strings".
    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    #[test]
    fn private_channel_example_from_the_docs() {
        let auth = channel_auth(KEY, SECRET, "1234.1234", "private-foobar", None);
        assert_eq!(auth, "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4");
        assert_eq!(verify_channel_auth(KEY, SECRET, "1234.1234", "private-foobar", None, Some(&auth)), Ok(()));
    }

    #[test]
    fn presence_channel_example_from_the_docs() {
        // The page's text says "Mr. Channels" since Pusher renamed the product, but its digest
        // was made with the old name: afaed369... is the HMAC of "Mr. Pusher" (checked with
        // Python's hmac); "Mr. Channels" gives 31935e7d....
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#;
        let auth = channel_auth(KEY, SECRET, "1234.1234", "presence-foobar", Some(data));
        assert_eq!(auth, "278d425bdf160c739803:afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c");
        assert_eq!(verify_channel_auth(KEY, SECRET, "1234.1234", "presence-foobar", Some(data), Some(&auth)), Ok(()));
        let renamed = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        assert_eq!(
            channel_auth(KEY, SECRET, "1234.1234", "presence-foobar", Some(renamed)),
            "278d425bdf160c739803:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
        );
    }

    #[test]
    fn user_authentication_example_from_the_docs() {
        let auth = user_auth(KEY, SECRET, "1234.1234", r#"{"id":"12345"}"#);
        assert_eq!(auth, "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba");
        assert_eq!(verify_user_auth(KEY, SECRET, "1234.1234", r#"{"id":"12345"}"#, &auth), Ok(()));
    }

    #[test]
    fn refuses_what_was_not_signed() {
        let auth = channel_auth(KEY, SECRET, "1234.1234", "private-foobar", None);
        let check = |sid, ch, data, a| verify_channel_auth(KEY, SECRET, sid, ch, data, a);
        // Another socket, channel, channel data or secret.
        assert!(matches!(check("1234.1235", "private-foobar", None, Some(&auth)), Err(AuthError::BadSignature { .. })));
        assert!(matches!(check("1234.1234", "private-foobaz", None, Some(&auth)), Err(AuthError::BadSignature { .. })));
        assert!(matches!(
            check("1234.1234", "private-foobar", Some("{}"), Some(&auth)),
            Err(AuthError::BadSignature { .. })
        ));
        let other = channel_auth(KEY, "another secret", "1234.1234", "private-foobar", None);
        assert!(matches!(
            check("1234.1234", "private-foobar", None, Some(&other)),
            Err(AuthError::BadSignature { .. })
        ));
        // Another key, no key, nothing.
        let wrong_key = auth.replacen(KEY, "someone-else", 1);
        assert_eq!(
            check("1234.1234", "private-foobar", None, Some(&wrong_key)),
            Err(AuthError::WrongKey("someone-else".into()))
        );
        assert_eq!(
            check("1234.1234", "private-foobar", None, Some("deadbeef")),
            Err(AuthError::Malformed("deadbeef".into()))
        );
        assert!(matches!(check("1234.1234", "private-foobar", None, None), Err(AuthError::Missing(_))));
        // A signature in upper case is the same digest.
        let upper = format!("{KEY}:{}", auth.split_once(':').unwrap().1.to_uppercase());
        assert_eq!(check("1234.1234", "private-foobar", None, Some(&upper)), Ok(()));
    }

    #[test]
    fn bad_signature_message_says_what_to_sign_and_never_the_secret_or_digest() {
        let good = sign(SECRET, "1234.1234:private-foobar");
        let err = verify_channel_auth(
            KEY,
            SECRET,
            "1234.1234",
            "private-foobar",
            None,
            Some(&format!("{KEY}:{}", "0".repeat(500))),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "Invalid signature: Expected HMAC SHA256 hex digest of 1234.1234:private-foobar, but got 000"
            ),
            "{err}"
        );
        assert!(!err.contains(SECRET) && !err.contains(&good), "{err}");
        assert!(err.len() < 200, "the echo of what came is cut: {err}");
    }
}
