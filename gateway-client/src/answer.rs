//! Results of cluster-wide queries, which say which gateways did not answer.

use crate::ClientError;

/// The merged answer of every gateway that replied, and the gateways that did not (down, not yet
/// connected, or too slow). An answer with `missing` gateways may under-report; use
/// [`complete`](Answer::complete) to treat that as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<T> {
    /// The merged answer of the gateways that replied.
    pub value: T,
    /// Advertised addresses of gateways whose part is missing.
    pub missing: Vec<String>,
}

impl<T> Answer<T> {
    /// True when every known gateway answered.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// The value if every gateway answered, otherwise [`ClientError::Unreachable`] naming the
    /// gateways that did not.
    pub fn complete(self) -> Result<T, ClientError> {
        if self.missing.is_empty() { Ok(self.value) } else { Err(ClientError::Unreachable { gateways: self.missing }) }
    }

    /// Maps the value, keeping `missing`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        Answer { value: f(self.value), missing: self.missing }
    }
}
