//! Who is calling: the identity the transport authenticated (a client certificate's SAN under
//! mutual TLS, `trusted` without it), carried with each request so that every audit event of
//! a state change records it.

use std::future::Future;

tokio::task_local! {
    static CALLER: String;
}

/// The identity recorded when no transport identity was set (no mutual TLS).
pub const TRUSTED: &str = "trusted";

/// Runs `work` as `identity`.
pub async fn scope<F: Future>(identity: String, work: F) -> F::Output {
    CALLER.scope(identity, work).await
}

/// The identity of the request being served.
pub fn current() -> String {
    CALLER
        .try_with(Clone::clone)
        .unwrap_or_else(|_| TRUSTED.to_owned())
}
