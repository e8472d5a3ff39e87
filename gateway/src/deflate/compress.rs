//! Deflating one outgoing message (RFC 7692 section 7.2.1) with no context takeover, with a
//! compressor borrowed from the thread: a zlib compressor holds about 256 KiB, far too much to
//! keep per client, and nothing links one message to the next, so one per thread and window size
//! serves every connection.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};

/// The smallest window zlib deflates raw data with (it refuses 8 bits, the RFC's smallest).
pub(crate) const MIN_WINDOW_BITS: u8 = 9;

/// Compressors kept per thread at most (one per window size and level in use, usually one).
const KEEP_COMPRESSORS: usize = 4;
/// Output buffer kept per thread between messages; a larger one (left by a large message) is freed.
const KEEP_SCRATCH: usize = 256 * 1024;

/// The empty stored block a sync flush ends with, which the sender strips (section 7.2.1).
pub(crate) const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

struct Compressors {
    list: Vec<(u8, u8, Compress)>,
    scratch: Vec<u8>,
}

thread_local! {
    static COMPRESSORS: RefCell<Compressors> = const { RefCell::new(Compressors { list: Vec::new(), scratch: Vec::new() }) };
}

/// `data` deflated as one permessage-deflate message (sync flush, its tail stripped) with a window
/// of `window_bits` (9..=15) at zlib `level`, or `None` when that would not make it smaller.
pub(crate) fn deflate(data: &[u8], window_bits: u8, level: u8) -> Option<Bytes> {
    debug_assert!((MIN_WINDOW_BITS..=15).contains(&window_bits));
    COMPRESSORS.with_borrow_mut(|c| {
        let i = match c.list.iter().position(|(w, l, _)| (*w, *l) == (window_bits, level)) {
            Some(i) => i,
            None => {
                if c.list.len() >= KEEP_COMPRESSORS {
                    c.list.remove(0);
                }
                let z = Compress::new_with_window_bits(Compression::new(u32::from(level)), false, window_bits);
                c.list.push((window_bits, level, z));
                c.list.len() - 1
            }
        };
        let z = &mut c.list[i].2;
        z.reset();
        // Room for the whole message and the tail: output that does not fit was not worth it.
        c.scratch.clear();
        c.scratch.reserve(data.len() + TAIL.len() + 8);
        let done = z.compress_vec(data, &mut c.scratch, FlushCompress::Sync).is_ok()
            && z.total_in() == data.len() as u64
            && c.scratch.ends_with(&TAIL);
        let out = (done && c.scratch.len() - TAIL.len() < data.len())
            .then(|| Bytes::copy_from_slice(&c.scratch[..c.scratch.len() - TAIL.len()]));
        if c.scratch.capacity() > KEEP_SCRATCH {
            c.scratch = Vec::new();
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn inflate(data: &[u8], window_bits: u8) -> Vec<u8> {
        let mut z = Decompress::new_with_window_bits(false, window_bits);
        let mut input = data.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        z.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
        out
    }

    #[test]
    fn messages_deflate_on_their_own_and_inflate_back() {
        let json =
            br#"{"type":"say","from":"client-1","room":"lobby","content":"hello, hello, hello everyone"}"#.repeat(8);
        for bits in [9, 12, 15] {
            let a = deflate(&json, bits, 6).expect("repetitive JSON shrinks");
            assert!(a.len() < json.len() / 4, "{} of {}", a.len(), json.len());
            assert_eq!(inflate(&a, bits), json);
            // No context takeover: the same input gives the same bytes every time.
            assert_eq!(deflate(&json, bits, 6).unwrap(), a);
        }
        assert_eq!(inflate(&deflate(&json, 15, 1).unwrap(), 15), json);
    }

    #[test]
    fn what_does_not_shrink_is_not_compressed() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert_eq!(deflate(&noise, 15, 6), None);
        assert_eq!(deflate(b"", 15, 6), None);
        assert_eq!(deflate(b"x", 15, 6), None);
    }
}
