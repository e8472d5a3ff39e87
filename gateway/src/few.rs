//! [`Few`]: a list that is usually empty or of one item, kept without an allocation then. A
//! client's groups in the routing index and a Pusher connection's subscriptions are such lists,
//! held for hundreds of thousands of clients.

/// A list that holds none or one item inline and only allocates for a second one (then it is
/// a `Vec`, until it is down to one again). As large as a `Vec` for an item of up to 16 bytes.
#[derive(Debug, Default)]
pub(crate) enum Few<T> {
    #[default]
    None,
    One(T),
    Many(Vec<T>),
}

impl<T> Few<T> {
    /// The items, in order.
    pub fn as_slice(&self) -> &[T] {
        match self {
            Self::None => &[],
            Self::One(item) => std::slice::from_ref(item),
            Self::Many(items) => items,
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.as_slice().iter()
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// Adds `item` at the end; a second item makes a `Vec` of two, grown as a `Vec` after.
    pub fn push(&mut self, item: T) {
        match std::mem::take(self) {
            Self::None => *self = Self::One(item),
            Self::One(first) => {
                let mut items = Vec::with_capacity(2);
                items.extend([first, item]);
                *self = Self::Many(items);
            }
            Self::Many(mut items) => {
                items.push(item);
                *self = Self::Many(items);
            }
        }
    }

    /// Removes the item at `at`, the last one taking its place; one left is kept inline again.
    pub fn swap_remove(&mut self, at: usize) -> T {
        match std::mem::take(self) {
            Self::None => panic!("swap_remove at {at} of an empty list"),
            Self::One(item) => {
                assert_eq!(at, 0, "swap_remove at {at} of a list of one");
                item
            }
            Self::Many(mut items) => {
                let item = items.swap_remove(at);
                *self = match items.len() {
                    0 => Self::None,
                    1 => Self::One(items.pop().expect("one left")),
                    _ => Self::Many(items),
                };
                item
            }
        }
    }

    /// Takes every item out, leaving the list empty.
    pub fn take(&mut self) -> Vec<T> {
        match std::mem::take(self) {
            Self::None => Vec::new(),
            Self::One(item) => vec![item],
            Self::Many(items) => items,
        }
    }

    /// Keeps the items `keep` says to keep.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut at = 0;
        while at < self.len() {
            if keep(&self.as_slice()[at]) {
                at += 1;
            } else {
                self.swap_remove(at);
            }
        }
    }
}

impl<'a, T> IntoIterator for &'a Few<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Few;

    #[test]
    fn one_item_is_inline_and_a_list_shrinks_back_to_it() {
        assert_eq!(size_of::<Few<Arc<str>>>(), size_of::<Vec<Arc<str>>>());
        let mut few = Few::default();
        assert!(few.is_empty());
        few.push(1);
        assert!(matches!(few, Few::One(1)));
        few.push(2);
        few.push(3);
        assert_eq!(few.as_slice(), [1, 2, 3]);
        assert_eq!(few.swap_remove(0), 1);
        assert_eq!(few.as_slice(), [3, 2]);
        few.retain(|&i| i != 3);
        assert!(matches!(few, Few::One(2)), "{few:?}");
        assert_eq!(few.len(), 1);
        assert_eq!(few.take(), [2]);
        assert!(matches!(few, Few::None));
        few.push(4);
        assert_eq!(few.swap_remove(0), 4);
        assert!(few.is_empty());
    }
}
