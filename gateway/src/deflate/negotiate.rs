//! Which permessage-deflate offer of a client the gateway accepts, and its answer (RFC 7692
//! section 7.1). Sans-IO: header values in, an agreement and a header value out.

/// What a client and the gateway agreed to. No context takeover in either direction is always
/// part of it (the gateway's answer says so whatever the client offered, which RFC 7692 allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// The `server_max_window_bits` the client asked for (8..=15), which the answer repeats; the
    /// gateway then compresses with a window of at most that many bits.
    server_max_window_bits: Option<u8>,
}

impl Agreed {
    /// The largest window, in bits, the gateway may compress with for this client.
    pub fn server_window_bits(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(15)
    }

    /// The `Sec-WebSocket-Extensions` value of the handshake's answer.
    pub fn response(&self) -> String {
        let mut out = String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
        if let Some(bits) = self.server_max_window_bits {
            out.push_str(&format!("; server_max_window_bits={bits}"));
        }
        out
    }
}

/// The offer to accept among the `Sec-WebSocket-Extensions` values of a request (in order), if
/// any is a valid permessage-deflate offer. An offer with an unknown parameter, a repeated one or
/// a bad value is declined, as RFC 7692 section 7.1 requires, and the next one considered. Among
/// valid offers the first one that lets the gateway compress (`server_max_window_bits` not 8) is
/// taken, else the first valid one.
pub(crate) fn negotiate<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Agreed> {
    let mut fallback = None;
    for value in values {
        for extension in split_outside_quotes(value, ',') {
            let Some(agreed) = parse_offer(extension) else { continue };
            if agreed.server_window_bits() >= super::compress::MIN_WINDOW_BITS {
                return Some(agreed);
            }
            fallback.get_or_insert(agreed);
        }
    }
    fallback
}

/// One extension of the list, if it is a valid permessage-deflate offer.
fn parse_offer(extension: &str) -> Option<Agreed> {
    let mut parts = split_outside_quotes(extension, ';');
    if !parts.next()?.trim().eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let (mut server_nct, mut client_nct, mut server_bits, mut client_bits) = (false, false, None, None);
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        let seen = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => std::mem::replace(&mut server_nct, true),
            "client_no_context_takeover" if value.is_none() => std::mem::replace(&mut client_nct, true),
            "server_max_window_bits" => server_bits.replace(window_bits(value?)?).is_some(),
            // A value is optional here: without one the client only says it understands the
            // parameter (the gateway never sends it, so the client keeps its default window).
            "client_max_window_bits" => client_bits.replace(value.map(window_bits).unwrap_or(Some(15))?).is_some(),
            _ => return None,
        };
        if seen {
            return None;
        }
    }
    Some(Agreed { server_max_window_bits: server_bits })
}

/// A window size parameter: 8 to 15, written without leading zeros.
fn window_bits(value: &str) -> Option<u8> {
    let bits: u8 = value.parse().ok()?;
    ((8..=15).contains(&bits) && !value.starts_with('0') && value.bytes().all(|b| b.is_ascii_digit())).then_some(bits)
}

/// A parameter value as a token or a quoted string (whose content must still be a token here).
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            (!inner.contains(['"', '\\'])).then_some(inner)
        }
        None => Some(value),
    }
}

/// Splits at `sep` except inside double quotes.
fn split_outside_quotes(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut start = 0;
    let mut cuts = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                cuts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    cuts.push(&s[start..]);
    cuts.into_iter().filter(|part| !part.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(values: &[&str]) -> Option<String> {
        negotiate(values.iter().copied()).map(|a| a.response())
    }

    const PLAIN: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn what_browsers_and_libraries_offer_is_accepted_without_context_takeover() {
        // Chromium and Firefox.
        assert_eq!(answer(&["permessage-deflate; client_max_window_bits"]).as_deref(), Some(PLAIN));
        // Python websockets, Autobahn's default offer, a bare offer.
        assert_eq!(
            answer(&["permessage-deflate; client_no_context_takeover; client_max_window_bits"]).as_deref(),
            Some(PLAIN)
        );
        assert_eq!(answer(&["permessage-deflate"]).as_deref(), Some(PLAIN));
        assert_eq!(answer(&["PerMessage-Deflate ; Server_No_Context_Takeover"]).as_deref(), Some(PLAIN));
    }

    #[test]
    fn a_window_the_client_sets_for_the_server_is_repeated_and_used() {
        let a = negotiate(["permessage-deflate; server_max_window_bits=10"]).unwrap();
        assert_eq!(a.server_window_bits(), 10);
        assert_eq!(a.response(), format!("{PLAIN}; server_max_window_bits=10"));
        let a = negotiate(["permessage-deflate; server_max_window_bits=\"12\"; client_max_window_bits=9"]).unwrap();
        assert_eq!(a.server_window_bits(), 12);
        assert_eq!(negotiate(["permessage-deflate"]).unwrap().server_window_bits(), 15);
    }

    #[test]
    fn invalid_offers_are_declined_and_the_next_one_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=1a",
            "permessage-deflate; client_max_window_bits=99",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; mystery",
            "permessage-deflate; server_max_window_bits=\"10",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(negotiate([bad]), None, "{bad:?} must be declined");
        }
        // Several offers in one value and over several header lines: the first valid one wins.
        let a = negotiate([
            "x-webkit-deflate-frame, permessage-deflate; mystery",
            "permessage-deflate; server_max_window_bits=11, permessage-deflate",
        ]);
        assert_eq!(a.unwrap().server_window_bits(), 11);
    }

    #[test]
    fn a_256_byte_window_is_accepted_only_when_nothing_better_is_offered() {
        // Autobahn 13.3 / 13.5: the only offer. Accepted; messages then go uncompressed.
        let a = negotiate(["permessage-deflate; server_max_window_bits=8"]).unwrap();
        assert_eq!(a.server_window_bits(), 8);
        assert_eq!(a.response(), format!("{PLAIN}; server_max_window_bits=8"));
        // Autobahn 13.7: a later offer lets the gateway compress.
        let a = negotiate(["permessage-deflate; server_no_context_takeover; server_max_window_bits=8, \
             permessage-deflate; server_no_context_takeover, permessage-deflate"]);
        assert_eq!(a.unwrap().server_window_bits(), 15);
    }
}
