//! One error type for a lookup. Where it came from decides what the client
//! sees: a Redis that cannot be reached is 503 / `-ERR`, a Redis that is too
//! slow is 504, a key of the wrong type is 409. None of them is ever a 404.

use std::sync::Arc;
use std::time::Duration;

/// What went wrong while answering a lookup.
///
/// Cloned to every waiter of a coalesced miss, so it holds shared strings.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Redis is not connected, refused the connection or dropped it.
    #[error("backend unavailable: {0}")]
    Unavailable(Arc<str>),
    /// One Redis round trip took longer than `--backend-timeout`.
    #[error("backend timed out after {0:?}")]
    Timeout(Duration),
    /// The key holds a list, hash, … rather than a string.
    #[error("{0}")]
    WrongType(Arc<str>),
    /// Redis answered with an error reply other than WRONGTYPE.
    #[error("backend error: {0}")]
    Reply(Arc<str>),
}

impl Error {
    pub fn unavailable(msg: impl Into<Arc<str>>) -> Self {
        Error::Unavailable(msg.into())
    }
}
