//! The one place that knows the payload encoding.
//!
//! Decision (see DESIGN.md): payloads are bincode 2.0.1 through its serde API. bincode is
//! unmaintained (RUSTSEC-2025-0141, recorded in `deny.toml`) and its 3.x release is an intentional
//! compile error, so the version is pinned and every call sits in this module: swapping the format
//! means rewriting this file only. Decoding is bounded by [`HARD_MAX_FRAME`] and, through the
//! format-agnostic serde adapter in `codec/bounded.rs`, by the payload itself: a length claimed
//! inside a payload never makes the decoder allocate more than the payload's size (strings and
//! byte buffers are checked against the bytes left before they are allocated). A payload must be
//! consumed exactly (trailing bytes are an error).

mod bounded;

use serde::{Serialize, de::DeserializeOwned};

use self::bounded::Bounded;
use crate::frame::{HARD_MAX_FRAME, HEADER_LEN};

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<HARD_MAX_FRAME>,
>;

const fn config() -> Config {
    bincode::config::standard().with_limit::<HARD_MAX_FRAME>()
}

/// Errors of encoding or decoding a payload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The payload is not a valid encoding of the expected message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The payload decoded but left bytes over.
    #[error("malformed message: {0} trailing bytes")]
    Trailing(usize),
    /// The message does not fit in one frame.
    #[error("message of {len} bytes exceeds the frame limit of {max} bytes")]
    TooLarge {
        /// Encoded size in bytes.
        len: usize,
        /// The frame limit.
        max: usize,
    },
    /// Encoding failed (a type that serde cannot express in this format).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Appends `msg` to `out` as one complete frame (length prefix included). On error `out` is left
/// as it was.
pub fn encode_frame<T: Serialize>(msg: &T, out: &mut Vec<u8>, max: usize) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = bincode::serde::encode_into_std_write(msg, out, config()) {
        out.truncate(start);
        return Err(CodecError::Encode(e.to_string()));
    }
    let len = out.len() - start - HEADER_LEN;
    if len > max.min(HARD_MAX_FRAME) {
        out.truncate(start);
        return Err(CodecError::TooLarge { len, max });
    }
    out[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// The size of `msg`'s payload once encoded (without the frame's length prefix), computed
/// without writing it anywhere: for checking that a message fits in a frame before committing to
/// send it (a numbered event that could not be framed would hold back its worker's
/// acknowledgements for good).
pub fn encoded_len<T: Serialize>(msg: &T) -> Result<usize, CodecError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(msg, &mut size, config()).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(size.bytes_written)
}

/// Decodes one message from a complete frame payload.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    let (msg, used) = decode_prefix(payload)?;
    if used != payload.len() {
        return Err(CodecError::Trailing(payload.len() - used));
    }
    Ok(msg)
}

/// Decodes a message from the start of `payload`, returning it and the bytes consumed. Used to
/// read the stable prefix (magic, version) of a handshake frame whose rest may be from another
/// protocol version.
pub fn decode_prefix<T: DeserializeOwned>(payload: &[u8]) -> Result<(T, usize), CodecError> {
    // Through `Bounded`: no string, byte buffer or preallocated vector may claim more memory
    // than the payload has bytes.
    let seed = Bounded { inner: std::marker::PhantomData::<T>, cap: payload.len() };
    bincode::serde::seed_decode_from_slice(seed, payload, config()).map_err(|e| CodecError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Blob {
        data: Vec<u8>,
    }

    #[test]
    fn huge_length_inside_payload_is_refused_without_allocating_it() {
        // A Vec<u8> claiming u64::MAX elements, varint-encoded (0xfd marker + 8 bytes).
        let mut payload = vec![0xfd];
        payload.extend_from_slice(&u64::MAX.to_le_bytes());
        let err = decode::<Blob>(&payload).unwrap_err();
        assert!(matches!(err, CodecError::Malformed(_)), "{err}");
        // Just above the decode limit but far beyond the payload.
        let mut payload = vec![0xfc];
        payload.extend_from_slice(&((HARD_MAX_FRAME as u32) + 1).to_le_bytes());
        assert!(decode::<Blob>(&payload).is_err());
        // Within the limit but far beyond the 5-byte payload: fails at end of input.
        let mut payload = vec![0xfc];
        payload.extend_from_slice(&((HARD_MAX_FRAME as u32) - 1).to_le_bytes());
        assert!(decode::<Blob>(&payload).is_err());
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut out = Vec::new();
        encode_frame(&Blob { data: vec![1, 2] }, &mut out, 1024).unwrap();
        let mut payload = out[HEADER_LEN..].to_vec();
        payload.push(0);
        assert!(matches!(decode::<Blob>(&payload), Err(CodecError::Trailing(1))));
    }

    #[test]
    fn encoded_len_is_what_a_frame_carries() {
        for data in [vec![], vec![7; 10], vec![1; 300], vec![2; 70_000]] {
            let blob = Blob { data };
            let mut out = Vec::new();
            encode_frame(&blob, &mut out, 1 << 20).unwrap();
            assert_eq!(encoded_len(&blob).unwrap(), out.len() - HEADER_LEN);
        }
    }

    #[test]
    fn encode_refuses_oversize_and_leaves_buffer_untouched() {
        let mut out = vec![9, 9];
        let err = encode_frame(&Blob { data: vec![0; 100] }, &mut out, 50).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { max: 50, .. }));
        assert_eq!(out, vec![9, 9]);
    }
}
