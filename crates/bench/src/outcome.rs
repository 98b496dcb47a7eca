//! What a call answered, as one label: `OK`, `UNAVAILABLE`, or `RESOURCE_EXHAUSTED/OVERLOADED`
//! (the gRPC status, and the `google.rpc.ErrorInfo` reason when there is one).

use tonic::{Code, Status};
use tonic_types::StatusExt as _;

/// The label of a successful call.
pub const OK: &str = "OK";

/// The label of a call's answer.
pub fn label(result: &Result<(), Status>) -> String {
    match result {
        Ok(()) => OK.to_owned(),
        Err(status) => {
            let code = code_name(status.code());
            match status.get_error_details().error_info() {
                Some(info) if !info.reason.is_empty() => format!("{code}/{}", info.reason),
                _ => code.to_owned(),
            }
        }
    }
}

/// The reason part of a label (`OVERLOADED` of `RESOURCE_EXHAUSTED/OVERLOADED`).
pub fn reason(label: &str) -> Option<&str> {
    label.split_once('/').map(|(_, r)| r)
}

/// The canonical upper-case name of a gRPC status code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn labels_carry_the_status_and_the_error_info_reason() {
        assert_eq!(label(&Ok(())), "OK");
        let overloaded = Status::with_error_details(
            Code::ResourceExhausted,
            "busy",
            ErrorDetails::with_error_info("OVERLOADED", "recovery.identity", HashMap::new()),
        );
        let l = label(&Err(overloaded));
        assert_eq!(l, "RESOURCE_EXHAUSTED/OVERLOADED");
        assert_eq!(reason(&l), Some("OVERLOADED"));
        assert_eq!(label(&Err(Status::unavailable("down"))), "UNAVAILABLE");
        assert_eq!(reason("UNAVAILABLE"), None);
    }
}
