//! `application/x-www-form-urlencoded` text as found in query strings: `+` is a space, `%XX` a
//! byte, and a malformed escape stays as written. Shared by the Rust worker's request helpers and
//! the gateway's PHP `$_GET`.

/// Decodes one key or value (invalid UTF-8 becomes U+FFFD).
pub fn decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded `key=value` pairs of a query string (without `?`), in order; a key without `=` has
/// an empty value.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_php_urldecode() {
        assert_eq!(decode("a+b%20c%2"), "a b c%2");
        assert_eq!(decode("%e4%bd%a0"), "你");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(
            query_pairs("a=1&&b&c=x+y"),
            [("a".into(), "1".into()), ("b".into(), String::new()), ("c".into(), "x y".into())]
        );
    }
}
