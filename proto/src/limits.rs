//! Rules every sender and every gateway apply alike, so a call is refused with the same reason
//! wherever it is checked: early by a sender (the HTTP API, the client library) with a precise
//! error, and always by the gateway that would store the value.

/// The longest uid or group name, in bytes (UTF-8).
pub const MAX_NAME_BYTES: usize = 1024;

/// Why a string cannot be a uid or group name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Empty, or nothing but whitespace.
    #[error("must not be empty or only whitespace")]
    Blank,
    /// Longer than [`MAX_NAME_BYTES`].
    #[error("is {len} bytes; a uid or group name has at most {MAX_NAME_BYTES}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Holds a control character (NUL, a line break, ...), which logs, PHP peers and the
    /// line-based listeners would take apart.
    #[error("contains the control character {ch:?} at byte {at}")]
    Control {
        /// The character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
}

/// Checks a uid or group name: at most [`MAX_NAME_BYTES`] bytes, not blank, no control
/// characters. Leading and trailing spaces are kept as they are (they are part of the name).
///
/// ```
/// use gw_proto::limits::{check_name, NameError};
/// assert!(check_name("user-42").is_ok());
/// assert_eq!(check_name("  "), Err(NameError::Blank));
/// assert!(matches!(check_name("a\0b"), Err(NameError::Control { at: 1, .. })));
/// ```
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong { len: name.len() });
    }
    if name.trim().is_empty() {
        return Err(NameError::Blank);
    }
    match name.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, ch)) => Err(NameError::Control { ch, at }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_for_blankness_length_and_control_characters() {
        for ok in ["u", "user-42", " padded ", "ünïcødé", "room:1/a b", &"x".repeat(MAX_NAME_BYTES)] {
            assert_eq!(check_name(ok), Ok(()), "{ok:?}");
        }
        for blank in ["", " ", "\u{3000}", " \u{a0} "] {
            assert_eq!(check_name(blank), Err(NameError::Blank), "{blank:?}");
        }
        assert_eq!(check_name(&"x".repeat(MAX_NAME_BYTES + 1)), Err(NameError::TooLong { len: MAX_NAME_BYTES + 1 }));
        assert_eq!(check_name(&"é".repeat(600)), Err(NameError::TooLong { len: 1200 }));
        assert_eq!(check_name("a\0"), Err(NameError::Control { ch: '\0', at: 1 }));
        assert_eq!(check_name("é\nb"), Err(NameError::Control { ch: '\n', at: 2 }));
        assert!(matches!(check_name("\u{7f}x"), Err(NameError::Control { at: 0, .. })));
        // A million bytes is refused for its length before anything walks it.
        assert!(matches!(check_name(&"\0".repeat(1 << 20)), Err(NameError::TooLong { .. })));
        assert!(NameError::Blank.to_string().contains("empty"));
        assert!(NameError::TooLong { len: 2000 }.to_string().contains("1024"));
    }
}
