//! Length-prefixed framing: a `u32` big-endian payload length, then the payload.
//!
//! The decoder checks the announced length against its limit before anything is reserved, so a
//! hostile length prefix costs nothing.

use bytes::{Buf, BytesMut};

/// Default maximum payload size of one internal frame (8 MiB).
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;
/// No configuration may raise the frame limit above this (64 MiB); the codec's decode limit.
pub const HARD_MAX_FRAME: usize = 64 * 1024 * 1024;
/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Errors of the framing layer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer announced a frame larger than the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced payload length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A frame with an empty payload, which no message encodes to.
    #[error("empty frame")]
    Empty,
}

/// Splits a byte stream into frames. Holds only the limit; the caller owns the buffer.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max: usize,
}

impl FrameDecoder {
    /// A decoder accepting payloads up to `max` bytes (capped at [`HARD_MAX_FRAME`]).
    pub fn new(max: usize) -> Self {
        Self { max: max.min(HARD_MAX_FRAME) }
    }

    /// The effective limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes one complete frame payload off the front of `buf`, or `None` if more bytes are needed.
    /// When a frame is incomplete, reserves room for the rest of it (never more than the limit).
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        Ok(Some(buf.split_to(len)))
    }
}

/// Appends a frame with `payload` to `out`.
pub fn write_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_frame(&mut v, payload);
        v
    }

    #[test]
    fn byte_layout_is_big_endian_length_then_payload() {
        assert_eq!(framed(b"abc"), vec![0, 0, 0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn partial_frame_waits_for_more_bytes() {
        let dec = FrameDecoder::new(1024);
        let all = framed(b"hello");
        let mut buf = BytesMut::new();
        for (i, b) in all.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = dec.decode(&mut buf).unwrap();
            if i + 1 < all.len() {
                assert!(got.is_none(), "frame complete too early at byte {i}");
            } else {
                assert_eq!(&got.unwrap()[..], b"hello");
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn two_frames_in_one_read() {
        let dec = FrameDecoder::new(1024);
        let mut bytes = framed(b"one");
        bytes.extend(framed(b"two"));
        bytes.extend(&[0, 0]); // start of a third
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(&dec.decode(&mut buf).unwrap().unwrap()[..], b"one");
        assert_eq!(&dec.decode(&mut buf).unwrap().unwrap()[..], b"two");
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], &[0, 0]);
    }

    #[test]
    fn oversize_length_prefix_is_refused_without_reserving() {
        let dec = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2][..]);
        let cap_before = buf.capacity();
        assert_eq!(dec.decode(&mut buf), Err(FrameError::TooLarge { len: u32::MAX as usize, max: 1024 }));
        assert_eq!(buf.capacity(), cap_before);
    }

    #[test]
    fn just_over_the_limit_is_refused_and_at_the_limit_accepted() {
        let dec = FrameDecoder::new(8);
        let mut buf = BytesMut::from(&framed(&[7; 9])[..]);
        assert!(matches!(dec.decode(&mut buf), Err(FrameError::TooLarge { len: 9, max: 8 })));
        let mut buf = BytesMut::from(&framed(&[7; 8])[..]);
        assert_eq!(&dec.decode(&mut buf).unwrap().unwrap()[..], &[7; 8]);
    }

    #[test]
    fn empty_frame_is_an_error() {
        let dec = FrameDecoder::new(8);
        let mut buf = BytesMut::from(&[0, 0, 0, 0][..]);
        assert_eq!(dec.decode(&mut buf), Err(FrameError::Empty));
    }

    #[test]
    fn limit_is_capped_at_hard_max() {
        assert_eq!(FrameDecoder::new(usize::MAX).max(), HARD_MAX_FRAME);
    }
}
