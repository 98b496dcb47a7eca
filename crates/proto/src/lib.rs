//! The `identity.recovery.v1` API: prost messages, the tonic client and server, and the
//! encoded descriptor set for server reflection. Generated at build time from `proto/`;
//! this crate depends on nothing else of the workspace.

/// Messages, enums and the `RecoveryService` client and server of `identity.recovery.v1`.
pub mod v1 {
    #![allow(
        missing_docs,
        missing_debug_implementations,
        clippy::all,
        clippy::pedantic,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )]
    tonic::include_proto!("identity.recovery.v1");
}

/// The encoded `google.protobuf.FileDescriptorSet` of the API and its imports, with source
/// comments, for `tonic-reflection` (so `grpcurl describe` shows the documentation).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/recovery_descriptor.bin"));

/// The `google.rpc.ErrorInfo.domain` of every error this service decides.
pub const ERROR_DOMAIN: &str = "recovery.identity";

impl v1::ErrorReason {
    /// The reason as written in `google.rpc.ErrorInfo.reason`: the enum name without buf's
    /// `ERROR_REASON_` prefix, e.g. `INVALID_EMAIL`.
    pub fn bare_name(self) -> &'static str {
        let name = self.as_str_name();
        name.strip_prefix("ERROR_REASON_").unwrap_or(name)
    }
}

#[cfg(test)]
mod tests {
    use super::v1::ErrorReason;

    #[test]
    fn error_reasons_are_written_without_the_buf_prefix() {
        assert_eq!(ErrorReason::InvalidEmail.bare_name(), "INVALID_EMAIL");
        assert_eq!(
            ErrorReason::TooManyAttempts.bare_name(),
            "TOO_MANY_ATTEMPTS"
        );
    }

    #[test]
    fn descriptor_set_carries_the_service() {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let service = set
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(move |s| (f.package(), s.name())))
            .find(|(_, name)| *name == "RecoveryService");
        assert_eq!(service, Some(("identity.recovery.v1", "RecoveryService")));
        assert!(
            set.file
                .iter()
                .any(|f| f.name() == "google/protobuf/timestamp.proto"),
            "imports must be included for reflection"
        );
    }
}
