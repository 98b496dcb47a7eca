//! The plain types the storage API speaks. Instants are [`Timestamp`]s (Unix epoch milliseconds,
//! UTC, as the columns keep them; operations take `now` in the same unit). Hashes and
//! MACs are redacted in `Debug`: they are not plaintext secrets, but have no business in logs.

use std::{collections::BTreeMap, fmt};

/// An instant: Unix epoch milliseconds, UTC (the columns' representation, see the migrations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_ms(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn as_ms(self) -> i64 {
        self.0
    }
}

/// A hash or MAC string that prints as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Opaque(pub String);

impl fmt::Debug for Opaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// An enrolment's credential as stored, of either kind: a server-held code's argon2id hash,
/// or a zero-knowledge enrolment's OPAQUE record and sealed keyset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCode {
    /// Opaque identifier, safe to log and show.
    pub code_id: String,
    /// The verifier: the argon2id PHC string, or the OPAQUE registration record (base64).
    pub hash: Opaque,
    /// Id of the server key whose pepper keyed the hash (or whose OPAQUE keys served the
    /// registration).
    pub key_id: String,
    /// The hash parameters, e.g. `argon2id,m=19456,t=2,p=1`, to find outdated hashes; for a
    /// zero-knowledge enrolment the OPAQUE suite's label.
    pub params: String,
    /// Zero-knowledge only: the keyset sealed on the device under OPAQUE's export key
    /// (base64), handed back by a successful recovery.
    pub sealed_keyset: Option<Opaque>,
}

/// An account's recovery enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub account_id: String,
    /// The address given at enrollment: where mail goes.
    pub email: String,
    /// The current code; `None` after a revocation.
    pub code: Option<StoredCode>,
    /// Bumped by every replace, revoke and email change: flows started against an older
    /// generation can no longer complete.
    pub generation: i64,
    pub created_at: Timestamp,
    pub code_created_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub use_count: i64,
    pub locked_until: Option<Timestamp>,
}

/// What to store for a new or replacing code.
#[derive(Debug, Clone)]
pub struct NewEnrollment {
    pub account_id: String,
    pub email: String,
    /// The canonical lookup form of `email`.
    pub email_lookup: String,
    pub code: StoredCode,
}

/// What `put_recovery_code` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// A live code was replaced (rather than a first code, or one after a revocation).
    pub replaced: bool,
    /// The address the previous code's mail went to, when one was live.
    pub previous_email: Option<String>,
    /// The new generation.
    pub generation: i64,
}

/// The end user's context as the auth service reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A recovery flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub flow_id: String,
    pub email_lookup: String,
    /// The enrollment (account id and generation) the flow was started against; `None` for an
    /// email that belongs to no enrolled account.
    pub target: Option<(String, i64)>,
    pub email_code_mac: Opaque,
    pub mac_key_id: String,
    pub email_code_expires_at: Timestamp,
    pub email_attempts: i32,
    pub recovery_attempts: i32,
    pub verified_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub client: ClientInfo,
    /// The sealed OPAQUE login state of a pending StartZeroKnowledgeRecovery.
    pub zk_login_state: Option<Opaque>,
    /// The login state a newer start replaced.
    pub zk_previous_login_state: Option<Opaque>,
}

/// What to store for a new flow.
#[derive(Debug, Clone)]
pub struct NewFlow {
    pub flow_id: String,
    pub email_lookup: String,
    pub target: Option<(String, i64)>,
    pub email_code_mac: Opaque,
    pub mac_key_id: String,
    pub email_code_expires_at: Timestamp,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub client: ClientInfo,
}

/// Which per-flow submission counter an attempt counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    /// VerifyEmail submissions.
    EmailCode,
    /// RecoverAccount submissions.
    RecoveryCode,
}

/// What changes on the enrollment when a flow completes.
#[derive(Debug, Clone, Default)]
pub struct CompletionUpdate {
    /// The failure row the submission held (see [`AttemptReservation::Admitted`]): a right
    /// code is not a failure, and the lock it alone caused is lifted, with its held
    /// `recovery.locked` event (failure id, own lock, held event id).
    pub reservation: Option<(i64, Option<Timestamp>, Option<String>)>,
    /// The id of the code the submission was checked against: the completion happens only if
    /// it is still the enrollment's code (a code rotated meanwhile completes nothing).
    pub verified_code_id: String,
    /// Replace the stored code (re-hash under new parameters or key, or `rotate_on_use`).
    pub new_code: Option<StoredCode>,
    /// The code was rotated: bump the generation, so every other flow in progress against
    /// the old code is cancelled.
    pub rotated: bool,
    /// Retire the enrolment (a zero-knowledge one under `rotate_on_use`): as a revocation,
    /// the credential is deleted, the address freed and the generation bumped.
    pub retire: bool,
    /// Complete only if the flow's pending zero-knowledge login state is still this one (a
    /// newer start replaced it: completes nothing).
    pub login_state: Option<Opaque>,
}

/// How `recover_account` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// This call completed the flow; the enrollment's use count advanced.
    Completed { use_count: i64 },
    /// The flow was already completed, not verified, expired, or unknown.
    NotCompletable,
    /// The enrollment changed (new code, revoke, email change) since the flow started.
    Cancelled,
    /// The account's recovery was locked (by another submission) while this one was checked.
    Locked { until: Timestamp },
}

/// The lockout rule a recovery-code submission is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    /// Failures inside this window...
    pub window_ms: i64,
    /// ...reaching this many lock the account's recovery...
    pub threshold: i64,
    /// ...for this long.
    pub lock_ms: i64,
}

/// What [`crate::Storage::reserve_recovery_attempt`] decided, before any hashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptReservation {
    /// Counted: the submission may be checked. It is counted as a failure until it proves
    /// right (then [`crate::Storage::recover_account`] takes the failure back).
    Admitted {
        /// Submissions of this flow used, this one included.
        used: i32,
        /// The failure row this submission holds.
        failure_id: i64,
        /// Set when this submission's failure reached the threshold and locked the account
        /// (exactly one submission sees it); a right code lifts its own lock.
        locked_until: Option<Timestamp>,
    },
    /// The account's recovery is locked until then: nothing was counted.
    Locked { until: Timestamp },
    /// The flow's submissions are used up, or it ended: nothing was counted.
    NoAttempt,
}

/// A rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Counted; `count` is the number of hits in the window so far.
    Allowed { count: i64 },
    /// Over the limit; retry after this many milliseconds.
    Limited { retry_after_ms: i64 },
}

/// A notification to enqueue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Unique id, used as the `Message-ID` so a repeated send is recognisable.
    pub message_id: String,
    /// Template kind, e.g. `verification_code`.
    pub kind: String,
    pub account_id: Option<String>,
    /// The stored address it goes to.
    pub recipient: String,
    /// Sealed (encrypted and authenticated) template data.
    pub payload: Opaque,
    /// `false` writes the row as `void`: stored like any other (so that a request for an
    /// unknown email does the same writes as one for a known email) but never sent.
    pub deliver: bool,
}

/// A claimed outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub id: i64,
    pub message_id: String,
    pub kind: String,
    pub account_id: Option<String>,
    pub recipient: String,
    pub payload: Opaque,
    /// Delivery attempts so far, this claim included.
    pub attempts: i32,
    pub created_at: Timestamp,
}

/// Delivery state of an outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxStatus {
    Pending,
    Sending,
    Sent,
    Dead,
    /// Written only to keep the work of two requests alike; never sent.
    Void,
}

impl OutboxStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Dead => "dead",
            Self::Void => "void",
        }
    }
}

/// Outbox counts for operators and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Rows waiting or being sent.
    pub backlog: i64,
    /// Rows that gave up.
    pub dead: i64,
    /// Creation time of the oldest row in the backlog.
    pub oldest_backlog_at: Option<Timestamp>,
}

/// An audit event to append. `Debug` leaves out the client and the personal details.
#[derive(Clone)]
pub struct NewAuditEvent {
    pub event_id: String,
    /// Empty for events under no account (requests for unknown emails).
    pub account_id: String,
    /// For events under no account: what concurrent writers serialise on (a keyed hash of the
    /// typed address), so that they queue as a known account's events do.
    pub serialize_on: Option<String>,
    pub kind: String,
    pub occurred_at: Timestamp,
    pub client: ClientInfo,
    pub details: BTreeMap<String, String>,
    /// Details about the person (address hints, free-text reasons): sealed with the client
    /// under the account's data key, and unreadable once the account is forgotten.
    pub personal: BTreeMap<String, String>,
    /// A repeat of the account's newest event (same kind, same values of these details,
    /// within the window) is folded into it instead of written again: its `count` goes up
    /// and `last_at` moves, so a flood of one refusal leaves one row with the right count.
    pub coalesce: Option<Coalesce>,
}

/// Which repeats of an audit event fold into one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coalesce {
    /// The details that must be equal (besides the kind), e.g. the reason and the caller.
    pub on: &'static [&'static str],
    /// Details that may differ: the folded row keeps the latest value of each as
    /// `last_<name>` (e.g. `last_flow_id`).
    pub carry: &'static [&'static str],
    /// How long after the row's first occurrence repeats still fold into it.
    pub window_ms: i64,
    /// This occurrence's time as the trail shows it (RFC 3339): the folded row's `last_at`.
    pub at: String,
}

/// A stored audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the trail: larger is newer.
    pub seq: i64,
    pub event_id: String,
    pub account_id: String,
    pub kind: String,
    pub occurred_at: Timestamp,
    pub client: ClientInfo,
    /// The event's details, its personal ones included while they can be read.
    pub details: BTreeMap<String, String>,
    /// The account was forgotten: the event's personal details (client, personal details)
    /// were sealed under its destroyed data key and are left out.
    pub forgotten: bool,
}

/// Notifications and audit events written in the same transaction as a change.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    pub messages: Vec<NewMessage>,
    pub audit: Vec<NewAuditEvent>,
    /// Platform events (empty when events are off).
    pub events: Vec<NewEvent>,
}

impl Effects {
    /// No effects.
    pub fn none() -> Self {
        Self::default()
    }
}

/// A role in a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FamilyRole {
    /// May begin, complete and cancel the assisted recovery of the family's other members.
    Organizer,
    Member,
}

impl FamilyRole {
    /// The name stored in `family_members.role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Organizer => "organizer",
            Self::Member => "member",
        }
    }

    /// The role a stored name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "organizer" => Some(Self::Organizer),
            "member" => Some(Self::Member),
            _ => None,
        }
    }
}

/// An account's place in a family (an account is in at most one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyMember {
    pub account_id: String,
    pub family_id: String,
    pub role: FamilyRole,
    /// Where assisted-recovery mail for this account goes, as given.
    pub email: String,
    /// Bumped by every put of this account.
    pub generation: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What to store for [`crate::Storage::put_family_member`].
#[derive(Debug, Clone)]
pub struct NewFamilyMember {
    pub family_id: String,
    pub account_id: String,
    pub role: FamilyRole,
    pub email: String,
}

/// What a put did: the membership before (`None` for a new one), after, and the assisted
/// flows it ended.
#[derive(Debug, Clone)]
pub struct PutMemberOutcome {
    pub previous: Option<FamilyMember>,
    pub member: FamilyMember,
    pub ended: Vec<AssistedFlow>,
    /// The address of the account's live enrolment, if it has one.
    pub recovery_address: Option<String>,
}

/// What a removal did: the membership removed and the assisted flows it ended.
#[derive(Debug, Clone)]
pub struct RemovedMember {
    pub member: FamilyMember,
    pub ended: Vec<AssistedFlow>,
}

/// Why an assisted flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssistedEnd {
    /// An organizer completed it.
    Completed,
    /// The member or an organizer cancelled it.
    Cancelled,
    /// A newer BeginAssistedRecovery (or a completion) for the same member replaced it.
    Superseded,
    /// The member recovered with their own recovery code.
    MemberRecovered,
    /// The member or the organizer who began it was put again or removed.
    MembershipChanged,
}

impl AssistedEnd {
    pub const ALL: [Self; 5] = [
        Self::Completed,
        Self::Cancelled,
        Self::Superseded,
        Self::MemberRecovered,
        Self::MembershipChanged,
    ];

    /// The name stored in `assisted_flows.end_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Superseded => "superseded",
            Self::MemberRecovered => "member_recovered",
            Self::MembershipChanged => "membership_changed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// An organizer-assisted recovery flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssistedFlow {
    pub assisted_flow_id: String,
    pub family_id: String,
    pub member_account_id: String,
    /// The organizer who began it.
    pub organizer_account_id: String,
    /// The member's membership generation when it began.
    pub member_generation: i64,
    pub email_code_mac: Opaque,
    pub mac_key_id: String,
    pub email_attempts: i32,
    pub verified_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub end_reason: Option<AssistedEnd>,
    /// The account that completed or cancelled it.
    pub ended_by: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub client: ClientInfo,
}

/// What to store for a new assisted flow.
#[derive(Debug, Clone)]
pub struct NewAssistedFlow {
    pub assisted_flow_id: String,
    pub family_id: String,
    pub member_account_id: String,
    pub organizer_account_id: String,
    pub email_code_mac: Opaque,
    pub mac_key_id: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub client: ClientInfo,
}

/// How many assisted flows may begin within a sliding window, counted in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssistedLimits {
    pub window_ms: i64,
    pub per_organizer: i64,
    pub per_member: i64,
}

/// Who is involved in an assisted flow, as the family records say at the change.
#[derive(Debug, Clone)]
pub struct AssistedParties {
    /// The member being recovered (`None` once removed from the family).
    pub member: Option<FamilyMember>,
    /// Every organizer of the flow's family.
    pub organizers: Vec<FamilyMember>,
}

/// An assisted flow just stored, with who is involved and the flows of the member it
/// superseded.
#[derive(Debug, Clone)]
pub struct AssistedStart {
    pub parties: AssistedParties,
    /// The organizer who began it.
    pub organizer: FamilyMember,
    pub superseded: Vec<AssistedFlow>,
    /// The address of the member's live enrolment, if it has one.
    pub recovery_address: Option<String>,
}

/// What [`crate::Storage::begin_assisted_recovery`] decided.
#[derive(Debug, Clone)]
pub enum BeginAssisted {
    Started(Box<AssistedStart>),
    NotOrganizer,
    NotMember,
    SelfRecovery,
    /// Over a limit; `organizer` says whose.
    Limited {
        organizer: bool,
        retry_after_ms: i64,
    },
}

/// A completed assisted recovery.
#[derive(Debug, Clone)]
pub struct AssistedCompletion {
    pub flow: AssistedFlow,
    pub parties: AssistedParties,
    /// The member's recovery code that the completion revoked, if there was one.
    pub revoked_code_id: Option<String>,
    /// The member's other assisted flows it ended.
    pub superseded: Vec<AssistedFlow>,
    /// The address of the member's enrolment that was live until this completion, if any.
    pub recovery_address: Option<String>,
    /// The member's open contact flows it ended.
    pub ended_contact: Vec<ContactFlow>,
}

/// Why an assisted flow could not be completed or cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssistedRefusal {
    NotFound,
    /// The acting account may not do this (not an organizer of the family, nor the member).
    NotAllowed,
    /// The organizer is the member.
    SelfRecovery,
    NotVerified,
    Ended,
    Expired,
    /// The flow's code submissions are used up.
    TooManyAttempts,
}

/// What [`crate::Storage::cancel_assisted_recovery`] ended.
#[derive(Debug, Clone)]
pub struct AssistedCancellation {
    pub flow: AssistedFlow,
    pub parties: AssistedParties,
}

/// One member's line in a family's recovery status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecoveryStatus {
    pub member: FamilyMember,
    /// The account has a live recovery code.
    pub enrolled: bool,
    /// An assisted flow for the account is open and unexpired.
    pub assisted_pending: bool,
}

/// What a recovery with the member's own code ended besides the flow: the assisted flows of
/// the account, and who to tell.
#[derive(Debug, Clone, Default)]
pub struct RecoveryCompletion {
    /// The enrollment's use count after this recovery.
    pub use_count: i64,
    /// The account's assisted flows it ended.
    pub ended_assisted: Vec<AssistedFlow>,
    /// The account's family membership and its family's organizers, when it ended any.
    pub member: Option<FamilyMember>,
    pub organizers: Vec<FamilyMember>,
    /// The account's open contact flows it ended.
    pub ended_contact: Vec<ContactFlow>,
}

/// A platform event to publish after the change commits (written in its transaction).
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Unique; published as the `Nats-Msg-Id` header too.
    pub event_id: String,
    /// The account it is about (per-account order is kept).
    pub account_id: String,
    /// E.g. `account.recovered`.
    pub event_type: String,
    /// The whole CloudEvents JSON object, as published.
    pub payload: String,
}

/// A claimed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub seq: i64,
    pub event_id: String,
    pub account_id: String,
    pub event_type: String,
    pub payload: String,
    /// Publish attempts so far, this claim included.
    pub attempts: i32,
    pub created_at: Timestamp,
}

/// The event outbox's state, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Events not yet published.
    pub backlog: i64,
    /// Creation time of the oldest of them.
    pub oldest_backlog_at: Option<Timestamp>,
}

/// What [`crate::Storage::forget_account`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgotten {
    /// The account had an enrolment (live or revoked) of either kind.
    pub had_enrolment: bool,
    /// Its family membership, as it was.
    pub family: Option<FamilyMember>,
    /// The other organizers of that family (to be told that a member left).
    pub organizers: Vec<FamilyMember>,
    /// Assisted flows of other members it had begun as an organizer, now ended.
    pub ended: Vec<AssistedFlow>,
    /// Recovery and assisted flows removed.
    pub removed_flows: u64,
    /// Messages to the account or its addresses removed, sent or not.
    pub removed_messages: u64,
}

/// How a forget ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgetOutcome {
    /// The account was forgotten now.
    Forgotten(Forgotten),
    /// Nothing was left to remove: the account was forgotten at this time.
    AlreadyForgotten(Timestamp),
    /// Nothing was ever kept about the account.
    Unknown,
}

impl std::fmt::Debug for NewAuditEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAuditEvent")
            .field("event_id", &self.event_id)
            .field("account_id", &self.account_id)
            .field("kind", &self.kind)
            .field("occurred_at", &self.occurred_at)
            .field("client", &"<redacted>")
            .field("details", &self.details)
            .field("personal", &"<redacted>")
            .field("coalesce", &self.coalesce)
            .finish_non_exhaustive()
    }
}

/// Where a recovery contact stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactState {
    /// Invited, not accepted, the invitation still open.
    Invited,
    /// The invitation was not accepted in time.
    Expired,
    /// Accepted, not active yet.
    Waiting,
    /// May vouch and cancel.
    Active,
}

impl ContactState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invited => "invited",
            Self::Expired => "expired",
            Self::Waiting => "waiting",
            Self::Active => "active",
        }
    }
}

/// One of an owner's recovery contacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryContact {
    pub owner_account_id: String,
    pub contact_account_id: String,
    /// Where the contact's mail goes.
    pub contact_email: String,
    pub invited_at: Timestamp,
    /// When the invitation expires unless accepted.
    pub expires_at: Timestamp,
    pub accepted_at: Option<Timestamp>,
    pub active_from: Option<Timestamp>,
}

impl RecoveryContact {
    /// Where the contact stands at `now` (milliseconds).
    pub fn state(&self, now: i64) -> ContactState {
        match (self.accepted_at, self.active_from) {
            (Some(_), Some(from)) if from.as_ms() <= now => ContactState::Active,
            (Some(_), _) => ContactState::Waiting,
            (None, _) if self.expires_at.as_ms() > now => ContactState::Invited,
            (None, _) => ContactState::Expired,
        }
    }
}

/// The limits of recovery contacts, counted in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactLimits {
    /// Contacts per owner: invited (open), waiting and active.
    pub per_owner: i64,
    /// Owners per contact, counted the same way.
    pub per_contact: i64,
}

/// Why a contact change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactRefusal {
    /// No such contact (or no open invitation, for an acceptance).
    NotContact,
    /// The contact already accepted (a second invitation).
    AlreadyAccepted,
    /// The owner has its limit of contacts.
    TooManyForOwner,
    /// The contact serves its limit of owners.
    TooManyForContact,
}

/// A contact change just stored: the contact as it now is (as it was, for a removal), the
/// owner's recovery address (where the owner hears of it), and the waiting periods it stopped.
#[derive(Debug, Clone)]
pub struct ContactChange {
    pub contact: RecoveryContact,
    /// A second invitation (renewed), or an acceptance already made (nothing changed).
    pub repeated: bool,
    pub recovery_address: Option<String>,
    /// Vouches of the contact withdrawn from open flows (a removal).
    pub withdrawn_vouches: u64,
    /// Flows whose waiting period stopped: their vouches no longer meet the threshold.
    pub stopped: Vec<ContactFlow>,
}

/// A threshold change just stored.
#[derive(Debug, Clone)]
pub struct ThresholdChange {
    pub previous: i32,
    pub recovery_address: Option<String>,
    /// Flows whose waiting period stopped: their vouches no longer meet the raised threshold.
    pub stopped: Vec<ContactFlow>,
}

/// Why a contact flow ended without completing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactEnd {
    /// The owner or a contact cancelled it.
    Cancelled,
    /// The account was recovered another way (its own code, an organizer, another contact
    /// flow).
    Recovered,
}

impl ContactEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancelled => "cancelled",
            Self::Recovered => "recovered",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Self::Cancelled, Self::Recovered]
            .into_iter()
            .find(|e| e.as_str() == name)
    }
}

/// A contact recovery flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactFlow {
    pub contact_flow_id: String,
    /// `None`: begun for an address no account recovers with (it never completes).
    pub account_id: Option<String>,
    pub code_mac: Opaque,
    pub mac_key_id: String,
    /// Vouches it needs.
    pub threshold: i32,
    pub created_at: Timestamp,
    /// The end of its gathering of vouches.
    pub expires_at: Timestamp,
    /// The end of its waiting period, once the vouches met the threshold.
    pub completes_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub end_reason: Option<ContactEnd>,
    pub ended_by: Option<String>,
    pub client: ClientInfo,
}

impl ContactFlow {
    /// When the flow can no longer be acted on: the end of its gathering, or, once its vouches
    /// met the threshold, `after_completes_ms` past its waiting period.
    pub fn expiry(&self, after_completes_ms: i64) -> Timestamp {
        match self.completes_at {
            Some(at) => Timestamp::from_ms(at.as_ms() + after_completes_ms),
            None => self.expires_at,
        }
    }
}

/// What to store for a new contact flow.
#[derive(Debug, Clone)]
pub struct NewContactFlow {
    pub contact_flow_id: String,
    /// The keyed hash of the typed address (the flow's limit key when no account has it).
    pub email_lookup: String,
    pub code_mac: Opaque,
    pub mac_key_id: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub client: ClientInfo,
}

/// A contact flow about to be stored: the account the address belongs to (if any), its
/// recovery address, its active contacts and its threshold, as the transaction sees them.
#[derive(Debug, Clone, Default)]
pub struct ContactStart {
    pub account_id: Option<String>,
    pub recovery_address: Option<String>,
    pub active_contacts: Vec<RecoveryContact>,
    pub threshold: i32,
}

/// What [`crate::Storage::begin_contact_recovery`] decided.
#[derive(Debug, Clone)]
pub enum BeginContact {
    Started(ContactStart),
    /// Over the per-account limit of begins.
    Limited {
        retry_after_ms: i64,
    },
}

/// Why a step of a contact flow was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactFlowRefusal {
    NotFound,
    /// Completed or cancelled.
    Ended,
    /// Past its gathering (no threshold met) or past its lifetime after `completes_at`.
    Expired,
    /// The acting account is not an active contact (nor, for a cancel, the owner).
    NotContact,
    /// This contact used up its submissions on the flow.
    TooManyAttempts,
    /// This contact vouched for this account within the cooldown.
    Cooldown {
        retry_after_ms: i64,
    },
    /// The waiting period has not ended (`None`: the threshold is not met).
    Pending {
        completes_at: Option<Timestamp>,
    },
}

/// A counted submission of a confirmation code.
#[derive(Debug, Clone)]
pub enum VouchOutcome {
    /// A wrong code, counted.
    Mismatch { attempts_left: i32 },
    /// A right code: the contact's vouch (new or already given).
    Vouched(Box<Vouch>),
}

/// A vouch and where the flow stands after it.
#[derive(Debug, Clone)]
pub struct Vouch {
    pub flow: ContactFlow,
    /// The contact vouched before: nothing changed.
    pub repeated: bool,
    pub vouches: i64,
    /// This vouch met the threshold: the waiting period began (`flow.completes_at`).
    pub pending_started: bool,
    pub recovery_address: Option<String>,
    /// The owner's active contacts (told when the waiting period begins).
    pub contacts: Vec<RecoveryContact>,
}

/// A contact flow cancelled or completed, and who to tell.
#[derive(Debug, Clone)]
pub struct ContactFlowEnd {
    pub flow: ContactFlow,
    pub recovery_address: Option<String>,
    /// The owner's active contacts.
    pub contacts: Vec<RecoveryContact>,
    /// The contacts whose vouches counted (a completion).
    pub vouched_by: Vec<String>,
    /// The enrolment a completion revoked, if one was live.
    pub revoked_code_id: Option<String>,
    /// What else a completion ended: the account's assisted flows (with its membership and
    /// organizers) and its other contact flows.
    pub recovered: RecoveryCompletion,
}

/// A contact request as a contact sees it.
#[derive(Debug, Clone)]
pub struct ContactRequest {
    pub flow: ContactFlow,
    /// This contact already vouched.
    pub vouched: bool,
}

/// An account's recovery contacts at a glance (GetRecoveryStatus).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContactSummary {
    /// Contacts active now.
    pub active: i64,
    /// The threshold (`None`: never set, 1).
    pub threshold: Option<i32>,
    /// Open contact flows (gathering vouches, or in or past their waiting period).
    pub open_flows: i64,
    /// The earliest end of a waiting period among them.
    pub completes_at: Option<Timestamp>,
}
