//! What can go wrong in the domain, in the caller's terms. The gRPC adapter maps each variant
//! to one status code and one `ErrorInfo` reason (see `grpc::status`); nothing here carries a
//! secret or an internal cause.

use recovery_storage::StorageError;

use crate::time::Timestamp;

/// A domain failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidEmail(String),
    #[error("{0}")]
    InvalidAccountId(String),
    #[error("{0}")]
    InvalidClient(String),
    #[error("{0}")]
    InvalidPage(String),
    #[error("the recovery code is malformed: {0}; check it for typos (no attempt was counted)")]
    RecoveryCodeMalformed(&'static str),
    #[error("the email code must be exactly 6 digits (no attempt was counted)")]
    EmailCodeMalformed,
    #[error("no such recovery flow")]
    FlowNotFound,
    #[error("the recovery flow has expired; start a new one with BeginRecovery")]
    FlowExpired,
    #[error("the recovery flow is over (it succeeded, or a newer recovery code cancelled it)")]
    FlowCompleted,
    #[error("the email address of this flow is not verified yet; call VerifyEmail first")]
    EmailNotVerified,
    #[error("wrong email code; {attempts_left} attempt(s) left")]
    EmailCodeMismatch { attempts_left: i32 },
    #[error("wrong recovery code; {attempts_left} attempt(s) left")]
    RecoveryCodeMismatch { attempts_left: i32 },
    #[error("this flow used up its attempts; start a new one with BeginRecovery")]
    TooManyAttempts,
    #[error("recovery is locked for this account after too many wrong recovery codes")]
    RecoveryLocked { locked_until: Timestamp },
    #[error("the account has no recovery code")]
    NotEnrolled,
    #[error("this email address is already used for recovery by another account")]
    EmailInUse,
    #[error("too many recovery requests; retry in {}", crate::time::wait_in_words(*.retry_after_ms))]
    RateLimited {
        retry_after_ms: i64,
        limit: &'static str,
    },
    #[error("the server is busy hashing; retry shortly")]
    Overloaded,
    #[error("{0}")]
    CallerNotAllowed(String),
    #[error("{0}")]
    InvalidFamilyId(String),
    #[error("role must be FAMILY_ROLE_ORGANIZER or FAMILY_ROLE_MEMBER")]
    InvalidFamilyRole,
    #[error("{0}")]
    NotFamilyOrganizer(&'static str),
    #[error("the account is not in this family")]
    NotFamilyMember,
    #[error(
        "an organizer cannot recover their own account this way; use your own recovery code, or ask another organizer of the family"
    )]
    SelfRecoveryNotAllowed,
    #[error(
        "this assisted recovery is over (completed, cancelled, replaced by a newer one, ended by a membership change, or the member recovered on their own)"
    )]
    AssistedFlowEnded,
    #[error("the assisted recovery has expired (24 hours); an organizer can begin a new one")]
    AssistedFlowExpired,
    #[error(
        "the member has not verified this assisted recovery yet; they enter the emailed code first"
    )]
    AssistedNotVerified,
    #[error("{0}")]
    OpaqueMessageMalformed(&'static str),
    #[error(
        "no such zero-knowledge enrolment in progress (unknown, expired after 15 minutes, already finished, or started for another account); start again"
    )]
    EnrollmentNotFound,
    #[error(
        "this account's recovery code is zero-knowledge: recover with StartZeroKnowledgeRecovery and FinishZeroKnowledgeRecovery"
    )]
    ZeroKnowledgeEnrollment,
    #[error("this account has a server-held recovery code: recover with RecoverAccount")]
    NotZeroKnowledge,
    #[error(
        "no zero-knowledge recovery is pending on this flow; call StartZeroKnowledgeRecovery first"
    )]
    ZeroKnowledgeNotStarted,
    #[error("{0}")]
    NotRecoveryContact(&'static str),
    #[error("{}", match *.limit {
        "accounts_per_contact" => "this contact already serves the most accounts a contact may (25)",
        _ => "this account already has the most recovery contacts it may (10, invited, waiting and active); remove one first",
    })]
    TooManyContacts { limit: &'static str },
    #[error(
        "wrong confirmation code; {attempts_left} attempt(s) left. Enter only a code the person read out to you directly"
    )]
    ConfirmationCodeMismatch { attempts_left: i32 },
    #[error("{}", if .completes_at.is_some() {
        "the waiting period has not ended; the recovery completes at completes_at unless the owner or a contact cancels it"
    } else {
        "the contacts' vouches do not meet the account's threshold yet"
    })]
    RecoveryPending { completes_at: Option<Timestamp> },
    #[error("the confirmation code must be exactly 6 digits (no attempt was counted)")]
    ConfirmationCodeMalformed,
    #[error("threshold must be from 1 to 10")]
    InvalidThreshold,
    #[error("this contact already accepted; remove them first to invite them again")]
    ContactAlreadyAccepted,
    #[error("the database is unavailable; nothing was changed, retry shortly")]
    Unavailable,
    /// A bug or an unexpected answer: the cause is logged where it happens, never returned.
    #[error("internal error")]
    Internal,
}

impl From<StorageError> for Error {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                Self::Unavailable
            }
            StorageError::Conflict {
                kind: recovery_storage::ConflictKind::AddressInUse,
                ..
            } => Self::EmailInUse,
            // Another writer kept winning: nothing was changed, a retry may succeed.
            StorageError::Conflict { kind, detail } => {
                tracing::warn!(?kind, error = %detail, "conflicting writers; retries exhausted");
                Self::Unavailable
            }
            other => {
                tracing::error!(error = %other, "storage failure");
                Self::Internal
            }
        }
    }
}

/// A change's failure: the database's (mapped as above), or the effects callback's own error,
/// handed back unchanged.
impl<E: Into<Error>> From<recovery_storage::ChangeError<E>> for Error {
    fn from(err: recovery_storage::ChangeError<E>) -> Self {
        match err {
            recovery_storage::ChangeError::Storage(err) => err.into(),
            recovery_storage::ChangeError::Effects(err) => err.into(),
        }
    }
}

impl From<std::convert::Infallible> for Error {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl From<crate::crypto::hasher::Error> for Error {
    fn from(err: crate::crypto::hasher::Error) -> Self {
        match err {
            crate::crypto::hasher::Error::Overloaded => Self::Overloaded,
            crate::crypto::hasher::Error::Failed => Self::Internal,
        }
    }
}

/// Shorthand for domain results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
