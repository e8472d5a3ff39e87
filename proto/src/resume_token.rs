//! Resume tokens of connection state recovery (issue 25, `docs/recovery.md`): what a client
//! presents on reconnect to take its held state back.
//!
//! Text form: `<client id>.<generation hex>.<base64url HMAC-SHA256(secret, "<client id>.<generation hex>")>`.
//! The client id names the gateway that holds the state (so a hand-over to another gateway can
//! find it); the generation goes up by one on every successful resume, so a token used once is
//! stale (`replayed`) afterwards. Signed with the cluster secret and checked in constant time:
//! a client cannot make a token for another client or another generation.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ClientId;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted (a client id is at most 600 characters).
pub const MAX_TOKEN_LEN: usize = 700;

/// A verified token: whose state it names, and which generation of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeToken {
    /// The client whose state the token takes back.
    pub client: ClientId,
    /// The generation it was issued for.
    pub generation: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token at all (wrong shape, bad client id, bad number, too long).
    #[error("malformed resume token: {0}")]
    Malformed(&'static str),
    /// Well formed, but the signature does not match: made up or altered.
    #[error("the resume token's signature does not match")]
    Forged,
}

impl ResumeToken {
    /// The token's text form, signed with `secret`.
    pub fn sign(&self, secret: &[u8]) -> String {
        let body = format!("{}.{:x}", self.client, self.generation);
        let sig = URL_SAFE_NO_PAD.encode(mac(secret, &body).finalize().into_bytes());
        format!("{body}.{sig}")
    }

    /// Parses `text` and checks its signature with `secret`, in constant time.
    pub fn verify(text: &str, secret: &[u8]) -> Result<Self, TokenError> {
        let (parsed, body, sig) = Self::parse(text)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        mac(secret, body).verify_slice(&sig).map_err(|_| TokenError::Forged)?;
        Ok(parsed)
    }

    /// The client a well-formed token names, signature unchecked: what a gateway that is not
    /// the client's home reads to find the home, which checks the signature itself.
    pub fn names(text: &str) -> Result<ClientId, TokenError> {
        Self::parse(text).map(|(t, _, _)| t.client)
    }

    fn parse(text: &str) -> Result<(Self, &str, &str), TokenError> {
        if text.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("too long"));
        }
        let (body, sig) = text.rsplit_once('.').ok_or(TokenError::Malformed("no signature"))?;
        let (client, generation) = body.rsplit_once('.').ok_or(TokenError::Malformed("no generation"))?;
        let client: ClientId = client.parse().map_err(|_| TokenError::Malformed("bad client id"))?;
        if generation.is_empty() || generation.len() > 16 || !generation.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Malformed("generation is not hex"));
        }
        let generation =
            u64::from_str_radix(generation, 16).map_err(|_| TokenError::Malformed("generation is not hex"))?;
        Ok((Self { client, generation }, body, sig))
    }
}

fn mac(secret: &[u8], body: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(body.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_home_is_read_without_the_secret_and_the_signature_still_decides() {
        let t = token().sign(b"secret");
        assert_eq!(ResumeToken::names(&t), Ok(token().client));
        let forged = format!("{}x", &t[..t.len() - 1]);
        assert_eq!(ResumeToken::names(&forged), Ok(token().client), "names() does not judge");
        assert!(ResumeToken::verify(&forged, b"secret").is_err());
        assert!(ResumeToken::names("garbage").is_err());
    }

    fn token() -> ResumeToken {
        ResumeToken { client: ClientId::new("127.0.0.1:2900", 0xabc, 7), generation: 3 }
    }

    #[test]
    fn a_signed_token_verifies_and_names_its_client_and_generation() {
        let text = token().sign(b"secret");
        assert!(text.starts_with(&format!("{}.3.", token().client)), "{text}");
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "URL-safe: {text}");
        assert_eq!(ResumeToken::verify(&text, b"secret").unwrap(), token());
    }

    #[test]
    fn another_secret_client_or_generation_is_forged() {
        let text = token().sign(b"secret");
        assert_eq!(ResumeToken::verify(&text, b"other"), Err(TokenError::Forged));
        let sig = text.rsplit_once('.').unwrap().1;
        let other_client = format!("{}.3.{sig}", ClientId::new("127.0.0.1:2900", 0xabc, 8));
        assert_eq!(ResumeToken::verify(&other_client, b"secret"), Err(TokenError::Forged));
        let other_gen = format!("{}.4.{sig}", token().client);
        assert_eq!(ResumeToken::verify(&other_gen, b"secret"), Err(TokenError::Forged));
        let mut flipped = text.clone().into_bytes();
        let first = text.rfind('.').unwrap() + 1;
        flipped[first] = if flipped[first] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(ResumeToken::verify(&flipped, b"secret"), Err(TokenError::Forged));
        // A truncated signature is a mismatch too, not a panic.
        assert_eq!(ResumeToken::verify(&text[..text.len() - 3], b"secret"), Err(TokenError::Forged));
    }

    #[test]
    fn garbage_is_malformed_with_a_reason() {
        for (bad, why) in [
            ("", "no signature"),
            ("abc", "no signature"),
            ("a.b", "no generation"),
            ("nope.1.sig", "bad client id"),
            ("Z3c6MQ.1.2.xyz.c2ln", "generation is not hex"),
            ("Z3c6MQ.1.2..c2ln", "generation is not hex"),
            ("Z3c6MQ.1.2.1.!!", "signature is not base64url"),
        ] {
            assert_eq!(ResumeToken::verify(bad, b"s"), Err(TokenError::Malformed(why)), "{bad:?}");
        }
        assert_eq!(ResumeToken::verify(&"a".repeat(MAX_TOKEN_LEN + 1), b"s"), Err(TokenError::Malformed("too long")));
    }
}
