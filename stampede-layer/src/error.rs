//! The crate's one error type, and how an origin failure becomes an answer.
//!
//! The stack is infallible (`Service::Error = Infallible`), so it drops into
//! axum's `Router::layer` as is: when the origin service fails (an error, a
//! panic in its rebuild, a rebuild cut at the fill deadline) and no stale copy
//! may be served instead (stale-if-error comes first), the client gets a
//! `502 Bad Gateway` — `504 Gateway Timeout` when the failure was a timeout —
//! with `Retry-After`; the mapping is
//! [`StampedeLayer::error_status`](crate::StampedeLayer::error_status). The
//! error itself rides on the response as an [`OriginFailure`] extension, its
//! source chain intact, for those who want it.

use crate::body::BoxError;
use std::sync::Arc;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The origin service failed (its error is the source).
    #[error("the origin failed: {0}")]
    Origin(#[source] BoxError),
    /// The rebuild this request waited on failed (the leader's error, shared
    /// with every request of the flight; the source is that error).
    #[error("the rebuild this request waited on failed: {0}")]
    Shared(#[source] SharedError),
    /// The cache store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A mitigation list that does not parse (the unknown name; empty for
    /// an empty list).
    #[error(
        "unknown mitigation {0:?}: expected none, all, or a comma list of single-flight, lock, swr, xfetch, jitter, negative, overload-gate"
    )]
    Mitigations(String),
}

/// One error, shared by the requests that waited on the same rebuild: its
/// `source()` is the original error.
#[derive(Clone, Debug)]
pub struct SharedError(pub(crate) Arc<BoxError>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref().as_ref())
    }
}

/// Response extension on an answer the stack made for a failed origin: the
/// error it stands for.
#[derive(Clone, Debug)]
pub struct OriginFailure(pub Arc<Error>);

/// Whether `err`, or anything in its source chain, is a timeout.
pub(crate) fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<tokio::time::error::Elapsed>()
            || e.is::<tower::timeout::error::Elapsed>()
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_error_keeps_its_source() {
        let inner: BoxError = Box::new(std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"));
        let shared = Error::Shared(SharedError(Arc::new(inner)));
        let source = std::error::Error::source(&shared).unwrap();
        assert!(source.source().is_some(), "the original error is reachable");
        assert!(is_timeout(&shared));
        let refused: BoxError =
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let origin = Error::Origin(refused);
        assert!(!is_timeout(std::error::Error::source(&origin).unwrap()));
    }
}
