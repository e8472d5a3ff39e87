//! Lower-case hex digests (HMAC-SHA256, MD5) and the constant-time check of a hex signature a
//! peer sent against the digest we computed.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// `bytes` as lower-case hex, as Pusher writes every digest.
pub(crate) fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// HMAC-SHA256 of `message` keyed with `secret`.
pub(crate) fn hmac_sha256(secret: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Whether `given` is the hex form (either case) of `expected`, compared in constant time once
/// the length is right (the length of a digest is no secret).
pub(crate) fn matches(given: &str, expected: &[u8]) -> bool {
    let given = given.as_bytes();
    if given.len() != expected.len() * 2 {
        return false;
    }
    let mut decoded = Vec::with_capacity(expected.len());
    for pair in given.chunks_exact(2) {
        let (Some(hi), Some(lo)) = (nibble(pair[0]), nibble(pair[1])) else { return false };
        decoded.push(hi << 4 | lo);
    }
    bool::from(decoded.as_slice().ct_eq(expected))
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_lower_case() {
        assert_eq!(encode(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(encode(&[]), "");
    }

    #[test]
    fn matches_either_case_and_nothing_else() {
        let digest = [0xab, 0x01];
        assert!(matches("ab01", &digest));
        assert!(matches("AB01", &digest));
        assert!(!matches("ab02", &digest));
        assert!(!matches("ab0", &digest));
        assert!(!matches("ab011", &digest));
        assert!(!matches("zz01", &digest));
        assert!(!matches("ab\u{e9}", &digest));
    }
}
