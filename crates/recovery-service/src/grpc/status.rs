//! The one closed mapping from domain errors to gRPC statuses: every failure carries a
//! `google.rpc.ErrorInfo` (domain `recovery.identity`, a bare reason), rate limits a
//! `google.rpc.RetryInfo`. Messages say what a caller can do; no internal cause is echoed.

use std::{collections::HashMap, time::Duration};

use recovery_proto::{ERROR_DOMAIN, v1::ErrorReason};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::{domain::Error, time::Show as _};

/// The status code and reason of a domain error.
pub fn classify(err: &Error) -> (Code, ErrorReason) {
    use ErrorReason as R;
    match err {
        Error::InvalidEmail(_) => (Code::InvalidArgument, R::InvalidEmail),
        Error::InvalidAccountId(_) => (Code::InvalidArgument, R::InvalidAccountId),
        Error::InvalidClient(_) => (Code::InvalidArgument, R::InvalidClient),
        Error::InvalidPage(_) => (Code::InvalidArgument, R::InvalidPage),
        Error::RecoveryCodeMalformed(_) => (Code::InvalidArgument, R::RecoveryCodeMalformed),
        Error::EmailCodeMalformed => (Code::InvalidArgument, R::EmailCodeMalformed),
        Error::FlowNotFound => (Code::NotFound, R::FlowNotFound),
        Error::FlowExpired => (Code::FailedPrecondition, R::FlowExpired),
        Error::FlowCompleted => (Code::FailedPrecondition, R::FlowCompleted),
        Error::EmailNotVerified => (Code::FailedPrecondition, R::EmailNotVerified),
        Error::EmailCodeMismatch { .. } => (Code::PermissionDenied, R::EmailCodeMismatch),
        Error::RecoveryCodeMismatch { .. } => (Code::PermissionDenied, R::RecoveryCodeMismatch),
        Error::TooManyAttempts => (Code::ResourceExhausted, R::TooManyAttempts),
        Error::RecoveryLocked { .. } => (Code::FailedPrecondition, R::RecoveryLocked),
        Error::NotEnrolled => (Code::NotFound, R::NotEnrolled),
        Error::EmailInUse => (Code::AlreadyExists, R::EmailInUse),
        Error::RateLimited { .. } => (Code::ResourceExhausted, R::RateLimited),
        Error::Overloaded => (Code::ResourceExhausted, R::Overloaded),
        Error::CallerNotAllowed(_) => (Code::PermissionDenied, R::CallerNotAllowed),
        Error::InvalidFamilyId(_) => (Code::InvalidArgument, R::InvalidFamilyId),
        Error::InvalidFamilyRole => (Code::InvalidArgument, R::InvalidFamilyRole),
        Error::NotFamilyOrganizer(_) => (Code::PermissionDenied, R::NotFamilyOrganizer),
        Error::NotFamilyMember => (Code::NotFound, R::NotFamilyMember),
        Error::SelfRecoveryNotAllowed => (Code::FailedPrecondition, R::SelfRecoveryNotAllowed),
        Error::AssistedFlowEnded => (Code::FailedPrecondition, R::FlowCompleted),
        Error::AssistedFlowExpired => (Code::FailedPrecondition, R::FlowExpired),
        Error::AssistedNotVerified => (Code::FailedPrecondition, R::EmailNotVerified),
        Error::OpaqueMessageMalformed(_) => (Code::InvalidArgument, R::OpaqueMessageMalformed),
        Error::EnrollmentNotFound => (Code::NotFound, R::EnrollmentNotFound),
        Error::ZeroKnowledgeEnrollment => (Code::FailedPrecondition, R::ZeroKnowledgeEnrollment),
        Error::NotZeroKnowledge => (Code::FailedPrecondition, R::NotZeroKnowledge),
        Error::ZeroKnowledgeNotStarted => (Code::FailedPrecondition, R::ZeroKnowledgeNotStarted),
        Error::NotRecoveryContact(_) => (Code::PermissionDenied, R::NotRecoveryContact),
        Error::TooManyContacts { .. } => (Code::FailedPrecondition, R::TooManyContacts),
        Error::ConfirmationCodeMismatch { .. } => {
            (Code::PermissionDenied, R::ConfirmationCodeMismatch)
        }
        Error::RecoveryPending { .. } => (Code::FailedPrecondition, R::RecoveryPending),
        Error::ConfirmationCodeMalformed => (Code::InvalidArgument, R::ConfirmationCodeMalformed),
        Error::InvalidThreshold => (Code::InvalidArgument, R::InvalidThreshold),
        Error::ContactAlreadyAccepted => (Code::AlreadyExists, R::ContactAlreadyAccepted),
        Error::Unavailable => (Code::Unavailable, R::Unavailable),
        Error::Internal => (Code::Internal, R::Internal),
    }
}

/// The status a caller receives for `err`.
pub fn to_status(err: &Error) -> Status {
    let (code, reason) = classify(err);
    let mut metadata = HashMap::new();
    let mut retry = None;
    match err {
        Error::EmailCodeMismatch { attempts_left }
        | Error::RecoveryCodeMismatch { attempts_left }
        | Error::ConfirmationCodeMismatch { attempts_left } => {
            metadata.insert("attempts_left".to_owned(), attempts_left.to_string());
        }
        Error::RecoveryPending {
            completes_at: Some(at),
        } => {
            metadata.insert("completes_at".to_owned(), at.rfc3339());
        }
        Error::TooManyContacts { limit } => {
            metadata.insert("limit".to_owned(), (*limit).to_owned());
        }
        Error::RecoveryLocked { locked_until } => {
            metadata.insert("locked_until".to_owned(), locked_until.rfc3339());
        }
        Error::RateLimited {
            retry_after_ms,
            limit,
        } => {
            metadata.insert("limit".to_owned(), (*limit).to_owned());
            retry = Some(Duration::from_millis(
                u64::try_from(*retry_after_ms).unwrap_or(0),
            ));
        }
        Error::Overloaded => retry = Some(Duration::from_millis(100)),
        Error::Unavailable => retry = Some(Duration::from_secs(1)),
        _ => {}
    }
    let mut details = ErrorDetails::with_error_info(reason.bare_name(), ERROR_DOMAIN, metadata);
    if retry.is_some() {
        details.set_retry_info(retry);
    }
    Status::with_error_details(code, err.to_string(), details)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error table of the contract (docs/design.md, the proto comments), written out
    /// independently of `classify`.
    #[test]
    fn every_error_has_the_contract_status_and_a_bare_reason() {
        let table = [
            (
                Error::InvalidEmail("x".into()),
                Code::InvalidArgument,
                "INVALID_EMAIL",
            ),
            (
                Error::InvalidAccountId("x".into()),
                Code::InvalidArgument,
                "INVALID_ACCOUNT_ID",
            ),
            (
                Error::InvalidClient("x".into()),
                Code::InvalidArgument,
                "INVALID_CLIENT",
            ),
            (
                Error::InvalidPage("x".into()),
                Code::InvalidArgument,
                "INVALID_PAGE",
            ),
            (
                Error::RecoveryCodeMalformed("x"),
                Code::InvalidArgument,
                "RECOVERY_CODE_MALFORMED",
            ),
            (
                Error::EmailCodeMalformed,
                Code::InvalidArgument,
                "EMAIL_CODE_MALFORMED",
            ),
            (
                Error::OpaqueMessageMalformed("x"),
                Code::InvalidArgument,
                "OPAQUE_MESSAGE_MALFORMED",
            ),
            (
                Error::EnrollmentNotFound,
                Code::NotFound,
                "ENROLLMENT_NOT_FOUND",
            ),
            (
                Error::ZeroKnowledgeEnrollment,
                Code::FailedPrecondition,
                "ZERO_KNOWLEDGE_ENROLLMENT",
            ),
            (
                Error::NotZeroKnowledge,
                Code::FailedPrecondition,
                "NOT_ZERO_KNOWLEDGE",
            ),
            (
                Error::ZeroKnowledgeNotStarted,
                Code::FailedPrecondition,
                "ZERO_KNOWLEDGE_NOT_STARTED",
            ),
            (
                Error::NotRecoveryContact("x"),
                Code::PermissionDenied,
                "NOT_RECOVERY_CONTACT",
            ),
            (
                Error::TooManyContacts {
                    limit: "contacts_per_account",
                },
                Code::FailedPrecondition,
                "TOO_MANY_CONTACTS",
            ),
            (
                Error::ConfirmationCodeMismatch { attempts_left: 2 },
                Code::PermissionDenied,
                "CONFIRMATION_CODE_MISMATCH",
            ),
            (
                Error::RecoveryPending { completes_at: None },
                Code::FailedPrecondition,
                "RECOVERY_PENDING",
            ),
            (
                Error::ConfirmationCodeMalformed,
                Code::InvalidArgument,
                "CONFIRMATION_CODE_MALFORMED",
            ),
            (
                Error::InvalidThreshold,
                Code::InvalidArgument,
                "INVALID_THRESHOLD",
            ),
            (
                Error::ContactAlreadyAccepted,
                Code::AlreadyExists,
                "CONTACT_ALREADY_ACCEPTED",
            ),
            (Error::FlowNotFound, Code::NotFound, "FLOW_NOT_FOUND"),
            (Error::FlowExpired, Code::FailedPrecondition, "FLOW_EXPIRED"),
            (
                Error::FlowCompleted,
                Code::FailedPrecondition,
                "FLOW_COMPLETED",
            ),
            (
                Error::EmailNotVerified,
                Code::FailedPrecondition,
                "EMAIL_NOT_VERIFIED",
            ),
            (
                Error::EmailCodeMismatch { attempts_left: 1 },
                Code::PermissionDenied,
                "EMAIL_CODE_MISMATCH",
            ),
            (
                Error::RecoveryCodeMismatch { attempts_left: 1 },
                Code::PermissionDenied,
                "RECOVERY_CODE_MISMATCH",
            ),
            (
                Error::TooManyAttempts,
                Code::ResourceExhausted,
                "TOO_MANY_ATTEMPTS",
            ),
            (
                Error::RecoveryLocked {
                    locked_until: crate::time::Timestamp::from_ms(0),
                },
                Code::FailedPrecondition,
                "RECOVERY_LOCKED",
            ),
            (Error::NotEnrolled, Code::NotFound, "NOT_ENROLLED"),
            (Error::EmailInUse, Code::AlreadyExists, "EMAIL_IN_USE"),
            (
                Error::RateLimited {
                    retry_after_ms: 1500,
                    limit: "email_per_hour",
                },
                Code::ResourceExhausted,
                "RATE_LIMITED",
            ),
            (Error::Overloaded, Code::ResourceExhausted, "OVERLOADED"),
            (
                Error::CallerNotAllowed("x".into()),
                Code::PermissionDenied,
                "CALLER_NOT_ALLOWED",
            ),
            (Error::Unavailable, Code::Unavailable, "UNAVAILABLE"),
            (Error::Internal, Code::Internal, "INTERNAL"),
            // Families (API.md, "Families").
            (
                Error::NotFamilyOrganizer("x"),
                Code::PermissionDenied,
                "NOT_FAMILY_ORGANIZER",
            ),
            (Error::NotFamilyMember, Code::NotFound, "NOT_FAMILY_MEMBER"),
            (
                Error::SelfRecoveryNotAllowed,
                Code::FailedPrecondition,
                "SELF_RECOVERY_NOT_ALLOWED",
            ),
            (
                Error::InvalidFamilyId("x".into()),
                Code::InvalidArgument,
                "INVALID_FAMILY_ID",
            ),
            (
                Error::InvalidFamilyRole,
                Code::InvalidArgument,
                "INVALID_FAMILY_ROLE",
            ),
            (
                Error::AssistedFlowEnded,
                Code::FailedPrecondition,
                "FLOW_COMPLETED",
            ),
            (
                Error::AssistedFlowExpired,
                Code::FailedPrecondition,
                "FLOW_EXPIRED",
            ),
            (
                Error::AssistedNotVerified,
                Code::FailedPrecondition,
                "EMAIL_NOT_VERIFIED",
            ),
        ];
        for (err, code, reason) in table {
            let status = to_status(&err);
            assert_eq!(status.code(), code, "{err:?}");
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(info.domain, "recovery.identity");
            assert_eq!(info.reason, reason, "{err:?}");
        }
    }

    #[test]
    fn the_contract_codes_and_metadata() {
        let status = to_status(&Error::EmailCodeMismatch { attempts_left: 0 });
        assert_eq!(status.code(), Code::PermissionDenied);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "EMAIL_CODE_MISMATCH");
        assert_eq!(
            info.metadata.get("attempts_left").map(String::as_str),
            Some("0")
        );

        let status = to_status(&Error::RateLimited {
            retry_after_ms: 1500,
            limit: "ip_per_hour",
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(Duration::from_millis(1500))
        );
        // The message says when too, for a person reading it.
        assert_eq!(
            status.message(),
            "too many recovery requests; retry in 2 seconds"
        );
        let status = to_status(&Error::RateLimited {
            retry_after_ms: 56 * 60_000 - 500,
            limit: "email_per_hour",
        });
        assert!(
            status.message().ends_with("retry in 56 minutes"),
            "{}",
            status.message()
        );

        let status = to_status(&Error::RecoveryLocked {
            locked_until: crate::time::Timestamp::from_ms(1_800_000_000_123),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.get_details_error_info().unwrap().metadata["locked_until"],
            "2027-01-15T08:00:00.123Z"
        );
        assert_eq!(to_status(&Error::Unavailable).code(), Code::Unavailable);
        assert_eq!(to_status(&Error::NotEnrolled).code(), Code::NotFound);
    }

    #[test]
    fn storage_unavailability_becomes_unavailable() {
        let err = Error::from(recovery_storage::StorageError::Unavailable(
            "connection refused".into(),
        ));
        let status = to_status(&err);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "UNAVAILABLE"
        );
        assert!(
            !status.message().contains("connection refused"),
            "no internal cause"
        );
        // Conflicts are typed: only the address's unique key is EMAIL_IN_USE; a serialization
        // failure or deadlock that outlasted the retries is UNAVAILABLE (nothing was changed).
        let conflict = |kind| {
            to_status(&Error::from(recovery_storage::StorageError::Conflict {
                kind,
                detail: "could not serialize access due to concurrent update".into(),
            }))
        };
        let in_use = conflict(recovery_storage::ConflictKind::AddressInUse);
        assert_eq!(in_use.code(), Code::AlreadyExists);
        assert_eq!(
            in_use.get_details_error_info().unwrap().reason,
            "EMAIL_IN_USE"
        );
        for kind in [
            recovery_storage::ConflictKind::Transient,
            recovery_storage::ConflictKind::Duplicate,
        ] {
            let status = conflict(kind);
            assert_eq!(status.code(), Code::Unavailable, "{kind:?}");
            assert_eq!(
                status.get_details_error_info().unwrap().reason,
                "UNAVAILABLE"
            );
            assert!(status.get_details_retry_info().is_some());
            assert!(!status.message().contains("serialize"), "no internal cause");
        }
        let other = Error::from(recovery_storage::StorageError::Other(
            "syntax error near SELECT".into(),
        ));
        assert_eq!(to_status(&other).code(), Code::Internal);
        assert!(!to_status(&other).message().contains("SELECT"));
    }
}
