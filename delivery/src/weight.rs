//! How many bytes an item counts for against a byte limit.
//!
//! A weigher is a zero-sized type named in the container's type (`BoundedQueue<Event, MyWeigher>`)
//! rather than a trait on the item: the crates that will use the core hold items they do not own
//! (`gw_proto::Event`, tungstenite's `Message`), so they could not implement a trait of this crate
//! for them, but they can always implement [`Weigher`] for a unit struct of their own. Zero-sized,
//! it costs a queue nothing per instance (a million client queues hold no function pointer).

/// Counts an item's bytes against a byte limit.
pub trait Weigher<T> {
    /// The bytes `item` counts for. Must return the same value for the same item every time it
    /// is asked: the containers add it on the way in and subtract it on the way out.
    fn weight(item: &T) -> usize;
}

/// Every item weighs nothing: only the item limit applies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Weightless;

impl<T> Weigher<T> for Weightless {
    fn weight(_: &T) -> usize {
        0
    }
}

/// An item weighs its length in bytes (`Bytes`, `Vec<u8>`, `String`, `Arc<[u8]>`, ...).
#[derive(Debug, Clone, Copy, Default)]
pub struct Len;

impl<T: AsRef<[u8]>> Weigher<T> for Len {
    fn weight(item: &T) -> usize {
        item.as_ref().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weightless_weighs_nothing_and_len_weighs_bytes() {
        assert_eq!(<Weightless as Weigher<String>>::weight(&"abc".to_string()), 0);
        assert_eq!(Len::weight(&"abc".to_string()), 3);
        assert_eq!(Len::weight(&bytes::Bytes::from_static(b"hello")), 5);
        assert_eq!(Len::weight(&Vec::<u8>::new()), 0);
    }
}
