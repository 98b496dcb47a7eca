//! What recovery means, free of transport and storage types: the rules of docs/design.md over a
//! [`Storage`] handle, a hashing pool, the server key ring and an injected clock.

mod assisted_recovery;
pub mod caller;
mod clock;
pub mod code;
pub mod email;
mod error;
pub mod event;
pub mod family;
mod forget_account;
pub mod notice;
pub mod notify;
mod recovery_code;
pub mod recovery_contacts;
mod recovery_flow;
pub mod secrets;
mod zero_knowledge;

use std::{net::IpAddr, sync::Arc};

pub use clock::{Clock, FixedClock, SystemClock};
pub use error::{Error, Result};
use recovery_storage::Storage;
use zeroize::Zeroizing;

pub use self::notify::Client;
pub use self::recovery_code::{decode_page_token, encode_page_token};
pub use self::zero_knowledge::{RecoveredKeyset, StartedEnrollment};
use crate::{
    crypto::{KeyRing, hasher, opaque::OpaqueKeys},
    time::Timestamp,
};

use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS};

/// The prefix of recovery-code ids (`rc_…`).
const CODE_ID_PREFIX: &str = "rc_";

/// What happens to a recovery code when it completes a recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReusePolicy {
    /// The code stays valid (as 1Password's); `use_count` and `last_used_at` advance.
    Reusable,
    /// The used code dies and RecoverAccount returns a fresh one, once.
    RotateOnUse,
}

/// The kind of an account's enrolment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// CreateRecoveryCode: the service keeps an argon2id hash of the code.
    ServerHeld,
    /// OPAQUE: the code never reaches the service.
    ZeroKnowledge,
}

impl RecoveryMode {
    /// The kind of a stored credential.
    pub fn of(code: &recovery_storage::model::StoredCode) -> Self {
        if code.params == crate::crypto::opaque::PARAMS {
            Self::ZeroKnowledge
        } else {
            Self::ServerHeld
        }
    }

    /// The name events and audit details use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServerHeld => "server_held",
            Self::ZeroKnowledge => "zero_knowledge",
        }
    }
}

/// The rules and numbers of docs/design.md, each configurable.
#[derive(Debug, Clone)]
pub struct Policy {
    pub reuse: ReusePolicy,
    /// A flow's lifetime from BeginRecovery.
    pub flow_ttl_ms: i64,
    /// The email code's lifetime.
    pub email_code_ttl_ms: i64,
    /// VerifyEmail submissions per flow.
    pub email_attempts: i32,
    /// RecoverAccount submissions per flow.
    pub recovery_attempts: i32,
    /// Failed recovery codes within `lockout_window_ms` that lock the account's recovery.
    pub lockout_threshold: i64,
    pub lockout_window_ms: i64,
    pub lockout_ms: i64,
    /// Recovery starts per canonical email address per hour (enrolled or not).
    pub starts_per_email_per_hour: i64,
    /// Recovery starts per client IP (IPv6: per /64) per hour.
    pub starts_per_ip_per_hour: i64,
    /// BeginRecovery calls per client IP (IPv6: per /64) per minute.
    pub starts_per_ip_per_minute: i64,
    /// New recovery addresses an account may claim per day (CreateRecoveryCode with another
    /// address, UpdateRecoveryEmail), successful or not.
    pub address_claims_per_day: i64,
    /// An assisted flow's lifetime (its code's too), from BeginAssistedRecovery; also the
    /// sliding window of the two begin limits below.
    pub assisted_flow_ttl_ms: i64,
    /// VerifyAssistedRecovery submissions per assisted flow.
    pub assisted_attempts: i32,
    /// BeginAssistedRecovery calls per organizer within `assisted_flow_ttl_ms`.
    pub assisted_begins_per_organizer: i64,
    /// BeginAssistedRecovery calls per member within `assisted_flow_ttl_ms`.
    pub assisted_begins_per_member: i64,
    /// CreateRecoveryCode calls per account per hour (whatever the address), counted before the
    /// hashing pool admits the call.
    pub creates_per_account_per_hour: i64,
    /// PutFamilyMember calls per account per day that add it to a family, move it, or change
    /// its family address.
    pub family_changes_per_day: i64,
    /// How long an invitation to be a recovery contact stays open.
    pub contact_invitation_ms: i64,
    /// How long after accepting a contact becomes active.
    pub contact_activation_ms: i64,
    /// How long a contact flow gathers vouches.
    pub contact_gathering_ms: i64,
    /// The waiting period once the vouches meet the threshold (may be 0).
    pub contact_wait_ms: i64,
    /// How often a contact may vouch for one account.
    pub contact_cooldown_ms: i64,
    /// How long a contact flow lives past the end of its waiting period.
    pub contact_completion_window_ms: i64,
    /// Contacts per account (invited, waiting and active).
    pub contacts_per_account: i64,
    /// Accounts per contact.
    pub accounts_per_contact: i64,
    /// BeginContactRecovery calls per account (per typed address without one) in any 24
    /// hours.
    pub contact_begins_per_day: i64,
    /// VouchForRecovery submissions per contact per flow.
    pub vouch_attempts: i32,
    /// InviteRecoveryContact calls (renewals included) per owner, and per invited address, a
    /// day.
    pub contact_invites_per_day: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            reuse: ReusePolicy::Reusable,
            flow_ttl_ms: 30 * MINUTE_MS,
            email_code_ttl_ms: 15 * MINUTE_MS,
            email_attempts: 5,
            recovery_attempts: 5,
            lockout_threshold: 10,
            lockout_window_ms: 24 * HOUR_MS,
            lockout_ms: 24 * HOUR_MS,
            starts_per_email_per_hour: 5,
            starts_per_ip_per_hour: 20,
            starts_per_ip_per_minute: 10,
            address_claims_per_day: 10,
            assisted_flow_ttl_ms: 24 * HOUR_MS,
            assisted_attempts: 5,
            assisted_begins_per_organizer: 5,
            assisted_begins_per_member: 3,
            family_changes_per_day: 5,
            creates_per_account_per_hour: 10,
            contact_invitation_ms: 7 * DAY_MS,
            contact_activation_ms: 7 * DAY_MS,
            contact_gathering_ms: 24 * HOUR_MS,
            contact_wait_ms: 48 * HOUR_MS,
            contact_cooldown_ms: 7 * DAY_MS,
            contact_completion_window_ms: 24 * HOUR_MS,
            contacts_per_account: 10,
            accounts_per_contact: 25,
            contact_begins_per_day: 3,
            vouch_attempts: 5,
            contact_invites_per_day: 50,
        }
    }
}

/// The recovery domain service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Recovery {
    storage: Storage,
    hasher: hasher::Hasher,
    keys: Arc<KeyRing>,
    /// The OPAQUE setups derived from `keys`, one per key id.
    opaque: Arc<OpaqueKeys>,
    clock: Arc<dyn Clock>,
    policy: Arc<Policy>,
    mail_ready: Arc<tokio::sync::Notify>,
    /// Platform events are written (RECOVERY_EVENTS_URL is set).
    events_enabled: bool,
    events_ready: Arc<tokio::sync::Notify>,
    /// Counted submissions running in tasks of their own.
    submissions: Submissions,
}

/// Submissions of a recovery code (either kind) run from their count on in a task of their
/// own, so that a caller hanging up at any moment cannot leave a counted guess unchecked or
/// unrecorded. At most [`SUBMISSIONS_IN_FLIGHT`] run at once on a replica (beyond them a call
/// is `OVERLOADED`), since a task outlives a caller that resets its stream; shutdown waits for
/// them before the database closes.
#[derive(Debug, Clone)]
pub struct Submissions(Arc<tokio::sync::Semaphore>);

/// Submission tasks a replica runs at once.
const SUBMISSIONS_IN_FLIGHT: u32 = 256;

impl Default for Submissions {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(
            SUBMISSIONS_IN_FLIGHT as usize,
        )))
    }
}

impl Submissions {
    /// Runs `work` (a counted submission) in a task of its own, in the caller's identity and
    /// span, and answers what it answers, unless too many already run.
    async fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        use tracing::Instrument as _;
        let Ok(slot) = Arc::clone(&self.0).try_acquire_owned() else {
            tracing::warn!(
                in_flight = SUBMISSIONS_IN_FLIGHT,
                "too many submissions in flight: OVERLOADED"
            );
            return Err(Error::Overloaded);
        };
        let caller = caller::current();
        let task = async move {
            let answer = work.await;
            drop(slot);
            answer
        };
        tokio::spawn(caller::scope(caller, task).in_current_span())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "a submission task failed");
                Error::Internal
            })?
    }

    /// Whether every submission task finished within `limit` (at shutdown, before the
    /// database closes; no new call arrives by then).
    pub async fn drained(&self, limit: std::time::Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.0.acquire_many(SUBMISSIONS_IN_FLIGHT)).await,
            Ok(Ok(_))
        )
    }
}

/// A code just created: shown once.
#[derive(Debug)]
pub struct CreatedCode {
    pub recovery_code: Zeroizing<String>,
    pub code_id: String,
    pub created_at: Timestamp,
}

/// A flow just started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedFlow {
    pub flow_id: String,
    pub expires_at: Timestamp,
}

/// A completed recovery.
#[derive(Debug)]
pub struct Recovered {
    pub account_id: String,
    /// The replacement code under `rotate_on_use`, shown once.
    pub new_recovery_code: Option<Zeroizing<String>>,
}

/// An account's recovery status; never the code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub enrolled: bool,
    /// The kind of enrolment; `None` when not enrolled.
    pub mode: Option<RecoveryMode>,
    pub code_id: Option<String>,
    pub created_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub use_count: u32,
    pub locked_until: Option<Timestamp>,
    pub email_hint: Option<String>,
    /// Recovery contacts active now.
    pub active_contacts: u32,
    /// The contact threshold.
    pub contact_threshold: u32,
    /// Contact recoveries in progress.
    pub open_contact_recoveries: u32,
    /// The earliest end of a waiting period among them.
    pub contact_recovery_completes_at: Option<Timestamp>,
}

/// One event of an account's audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub event_id: String,
    pub account_id: String,
    pub kind: notify::AuditKind,
    pub occurred_at: Timestamp,
    /// The end user's IP address and user agent, as the auth service reported them.
    pub client_ip: Option<String>,
    pub client_user_agent: Option<String>,
    pub details: std::collections::BTreeMap<String, String>,
    /// The account was forgotten after this event: its personal details are gone.
    pub forgotten: bool,
}

/// One page of an audit trail, and whether the account's whole trail verifies.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    pub next_page_token: String,
    /// Every event of the account's hash-chained trail verifies.
    pub chain_valid: bool,
    /// The first event that does not, when one does not.
    pub first_broken_event_id: Option<String>,
}

impl Recovery {
    /// The domain service over `storage`; fails only if the OPAQUE keys cannot be derived
    /// from the key ring.
    pub fn new(
        storage: Storage,
        hasher: hasher::Hasher,
        keys: Arc<KeyRing>,
        clock: Arc<dyn Clock>,
        policy: Policy,
    ) -> std::result::Result<Self, String> {
        // Every audit event this service writes is linked into its account's hash chain.
        let storage = storage
            .with_audit_chain(Arc::new(secrets::AuditChain(Arc::clone(&keys))))
            .with_personal_data(Arc::new(secrets::PersonalData {
                keys: Arc::clone(&keys),
                personal_detail: notify::is_personal_detail,
            }));
        let opaque = Arc::new(OpaqueKeys::derive(&keys)?);
        Ok(Self {
            storage,
            hasher,
            opaque,
            keys,
            clock,
            policy: Arc::new(policy),
            mail_ready: Arc::new(tokio::sync::Notify::new()),
            events_enabled: false,
            events_ready: Arc::new(tokio::sync::Notify::new()),
            submissions: Submissions::default(),
        })
    }

    /// The submissions running in tasks of their own, for shutdown to wait on.
    pub fn submissions(&self) -> Submissions {
        self.submissions.clone()
    }

    /// This service with platform events written to the event outbox for every change.
    pub fn with_events(mut self) -> Self {
        self.events_enabled = true;
        self
    }

    /// Notified after every commit that may have written events, so a publisher can publish
    /// at once.
    pub fn events_ready(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.events_ready)
    }

    /// Notified after every commit that enqueued mail, so a delivery worker can send at once.
    pub fn mail_ready(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.mail_ready)
    }

    /// After a commit that may have written events but no mail.
    fn events_written(&self) {
        if self.events_enabled {
            self.events_ready.notify_one();
        }
    }

    fn mail_enqueued(&self) {
        self.mail_ready.notify_one();
        if self.events_enabled {
            self.events_ready.notify_one();
        }
    }

    /// Counts one hit on a rate limit (`limit` per fixed window of `window_ms`, across
    /// replicas); over it, `RATE_LIMITED` naming the limit, logged and counted.
    async fn limit(
        &self,
        key: &str,
        window_ms: i64,
        limit: i64,
        name: &'static str,
        now: i64,
    ) -> Result<()> {
        match self
            .storage
            .hit_rate_limit(key, window_ms, limit, now)
            .await?
        {
            recovery_storage::model::RateDecision::Allowed { .. } => Ok(()),
            recovery_storage::model::RateDecision::Limited { retry_after_ms } => {
                tracing::info!(limit = name, retry_after_ms, "rate-limited");
                crate::metrics::get().rate_limited(name);
                Err(Error::RateLimited {
                    retry_after_ms,
                    limit: name,
                })
            }
        }
    }

    /// Whether recovery can be served now: the database answers.
    pub async fn ready(&self) -> bool {
        match self.storage.ping().await {
            Ok(()) => true,
            Err(err) => {
                tracing::debug!(error = %err, "readiness probe failed");
                false
            }
        }
    }

    /// The hashing pool (for metrics).
    pub fn hasher(&self) -> &hasher::Hasher {
        &self.hasher
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// Checks an account id: 1 to 128 bytes, no control characters.
pub fn validate_account_id(account_id: &str) -> Result<&str> {
    if account_id.is_empty() {
        return Err(Error::InvalidAccountId("account_id is empty".into()));
    }
    if account_id.len() > 128 {
        return Err(Error::InvalidAccountId(
            "account_id is longer than 128 bytes".into(),
        ));
    }
    if account_id.chars().any(char::is_control) {
        return Err(Error::InvalidAccountId(
            "account_id contains control characters".into(),
        ));
    }
    Ok(account_id)
}

/// Validates the client context the auth service reported: an IP address (or none) and a user
/// agent, trimmed of control characters and cut to 512 bytes.
pub fn client(ip_address: &str, user_agent: &str) -> Result<Client> {
    let ip = match ip_address.trim() {
        "" => None,
        text => Some(text.parse::<IpAddr>().map_err(|_| {
            Error::InvalidClient("client.ip_address is not an IPv4 or IPv6 address".into())
        })?),
    };
    let ip = ip.map(|ip| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    });
    let cleaned: String = user_agent.chars().filter(|c| !c.is_control()).collect();
    let user_agent = truncate(&cleaned, 512);
    let user_agent = user_agent.trim();
    Ok(Client {
        ip,
        user_agent: (!user_agent.is_empty()).then(|| user_agent.to_owned()),
    })
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The network a client's limits count under: IPv4 as is, IPv6 by its /64 (the bucket key is
/// a keyed hash of it).
pub fn ip_limit_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("ip6:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests;
