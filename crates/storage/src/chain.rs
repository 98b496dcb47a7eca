//! The audit trail's hash chain. Each account's events are linked in the order they were
//! written: a row stores `HMAC(key, previous link || canonical event)` under a server key the
//! service supplies ([`AuditChainKeys`]), so editing, deleting or reordering a row breaks the
//! chain at that point, and nobody without the key can forge a consistent trail.

use std::fmt;

/// Makes and checks chain links; the service implements it over its key ring.
pub trait AuditChainKeys: Send + Sync + fmt::Debug {
    /// The id of the key new links are made with.
    fn current_key_id(&self) -> String;
    /// The link (hex) of `event` after `previous` under key `key_id`; `None` when that key is
    /// not configured (any more).
    fn link(&self, key_id: &str, previous: &str, event: &[u8]) -> Option<String>;
}

/// Whether an account's trail verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainStatus {
    /// Every linked row verifies and follows the one before it.
    pub valid: bool,
    /// The first row that does not verify.
    pub first_broken_event_id: Option<String>,
}

impl ChainStatus {
    /// A trail that verifies.
    pub const VALID: Self = Self {
        valid: true,
        first_broken_event_id: None,
    };

    /// `broken` false: valid; else a trail that does not verify, at `at` when a row is to blame.
    pub(crate) fn broken(broken: bool, at: Option<String>) -> Self {
        Self {
            valid: !broken,
            first_broken_event_id: at.filter(|_| broken),
        }
    }
}

/// The bytes a link covers: every stored field of the event but its position, in a fixed
/// order and encoding (`details` as stored). A row whose personal details are sealed is
/// covered with its ciphertext (`audit/v2`), so destroying the data key leaves its link
/// verifiable.
#[allow(clippy::too_many_arguments)]
pub(crate) fn canonical(
    event_id: &str,
    account_id: &str,
    kind: &str,
    occurred_at: i64,
    client_ip: Option<&str>,
    client_user_agent: Option<&str>,
    details: &str,
    sealed: Option<&str>,
) -> Vec<u8> {
    match sealed {
        None => serde_json::to_vec(&(
            "audit/v1",
            event_id,
            account_id,
            kind,
            occurred_at,
            client_ip,
            client_user_agent,
            details,
        )),
        Some(sealed) => serde_json::to_vec(&(
            "audit/v2",
            event_id,
            account_id,
            kind,
            occurred_at,
            client_ip,
            client_user_agent,
            details,
            sealed,
        )),
    }
    .unwrap_or_default()
}

/// [`canonical`] of a stored row, with `details` as given (a fold rewrites them).
pub(crate) fn canonical_row(row: &crate::entity::audit_event::Model, details: &str) -> Vec<u8> {
    canonical(
        &row.event_id,
        &row.account_id,
        &row.kind,
        row.occurred_at,
        row.client_ip.as_deref(),
        row.client_user_agent.as_deref(),
        details,
        row.sealed.as_deref(),
    )
}
