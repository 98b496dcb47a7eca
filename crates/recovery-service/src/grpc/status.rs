//! The one closed mapping from domain errors to gRPC statuses: every failure carries a
//! `google.rpc.ErrorInfo` (domain `recovery.identity`, a bare reason), rate limits a
//! `google.rpc.RetryInfo`. Messages say what a caller can do; no internal cause is echoed.

use std::{collections::HashMap, time::Duration};

use recovery_proto::{ERROR_DOMAIN, v1::ErrorReason};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::{domain::Error, time::rfc3339};

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
        | Error::RecoveryCodeMismatch { attempts_left } => {
            metadata.insert("attempts_left".to_owned(), attempts_left.to_string());
        }
        Error::RecoveryLocked { locked_until_ms } => {
            metadata.insert("locked_until".to_owned(), rfc3339(*locked_until_ms));
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

    #[test]
    fn every_error_carries_error_info_with_a_bare_reason() {
        let all = [
            Error::InvalidEmail("x".into()),
            Error::InvalidAccountId("x".into()),
            Error::InvalidClient("x".into()),
            Error::InvalidPage("x".into()),
            Error::RecoveryCodeMalformed("x"),
            Error::EmailCodeMalformed,
            Error::FlowNotFound,
            Error::FlowExpired,
            Error::FlowCompleted,
            Error::EmailNotVerified,
            Error::EmailCodeMismatch { attempts_left: 0 },
            Error::RecoveryCodeMismatch { attempts_left: 3 },
            Error::TooManyAttempts,
            Error::RecoveryLocked { locked_until_ms: 0 },
            Error::NotEnrolled,
            Error::EmailInUse,
            Error::RateLimited {
                retry_after_ms: 1500,
                limit: "email_per_hour",
            },
            Error::Overloaded,
            Error::CallerNotAllowed("x".into()),
            Error::Unavailable,
            Error::Internal,
        ];
        for err in all {
            let status = to_status(&err);
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(info.domain, "recovery.identity");
            assert!(!info.reason.starts_with("ERROR_REASON_"), "{}", info.reason);
            assert_eq!(info.reason, classify(&err).1.bare_name());
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

        let status = to_status(&Error::RecoveryLocked {
            locked_until_ms: 1_800_000_000_123,
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
        let other = Error::from(recovery_storage::StorageError::Other(
            "syntax error near SELECT".into(),
        ));
        assert_eq!(to_status(&other).code(), Code::Internal);
        assert!(!to_status(&other).message().contains("SELECT"));
    }
}
