//! Zero-knowledge recovery's RPCs (OPAQUE, RFC 9807): StartZeroKnowledgeEnrollment,
//! FinishZeroKnowledgeEnrollment, StartZeroKnowledgeRecovery, FinishZeroKnowledgeRecovery.
//! Protocol messages cross as bytes, as RFC 9807 serializes them.

use recovery_proto::v1 as wire;
use tonic::Request;

use super::{AUTH, Answer, RecoveryApi, timestamp};

pub(super) async fn start_enrollment(
    api: &RecoveryApi,
    request: Request<wire::StartZeroKnowledgeEnrollmentRequest>,
) -> Answer<wire::StartZeroKnowledgeEnrollmentResponse> {
    api.handle(
        "StartZeroKnowledgeEnrollment",
        AUTH,
        request,
        |r, req| async move {
            let started = r
                .start_zero_knowledge_enrollment(&req.account_id, &req.registration_request)
                .await?;
            Ok(wire::StartZeroKnowledgeEnrollmentResponse {
                enrollment_id: started.enrollment_id,
                registration_response: started.registration_response,
                expires_at: Some(timestamp(started.expires_at)),
            })
        },
    )
    .await
}

pub(super) async fn finish_enrollment(
    api: &RecoveryApi,
    request: Request<wire::FinishZeroKnowledgeEnrollmentRequest>,
) -> Answer<wire::FinishZeroKnowledgeEnrollmentResponse> {
    api.handle(
        "FinishZeroKnowledgeEnrollment",
        AUTH,
        request,
        |r, req| async move {
            let (code_id, created_at) = r
                .finish_zero_knowledge_enrollment(
                    &req.enrollment_id,
                    &req.account_id,
                    &req.email,
                    &req.registration_record,
                    &req.sealed_keyset,
                )
                .await?;
            Ok(wire::FinishZeroKnowledgeEnrollmentResponse {
                code_id,
                created_at: Some(timestamp(created_at)),
            })
        },
    )
    .await
}

pub(super) async fn start_recovery(
    api: &RecoveryApi,
    request: Request<wire::StartZeroKnowledgeRecoveryRequest>,
) -> Answer<wire::StartZeroKnowledgeRecoveryResponse> {
    api.handle(
        "StartZeroKnowledgeRecovery",
        AUTH,
        request,
        |r, req| async move {
            let credential_response = r
                .start_zero_knowledge_recovery(&req.flow_id, &req.credential_request)
                .await?;
            Ok(wire::StartZeroKnowledgeRecoveryResponse {
                credential_response,
            })
        },
    )
    .await
}

pub(super) async fn finish_recovery(
    api: &RecoveryApi,
    request: Request<wire::FinishZeroKnowledgeRecoveryRequest>,
) -> Answer<wire::FinishZeroKnowledgeRecoveryResponse> {
    api.handle(
        "FinishZeroKnowledgeRecovery",
        AUTH,
        request,
        |r, req| async move {
            let recovered = r
                .finish_zero_knowledge_recovery(&req.flow_id, &req.credential_finalization)
                .await?;
            Ok(wire::FinishZeroKnowledgeRecoveryResponse {
                account_id: recovered.account_id,
                revoke_all_sessions: true,
                sealed_keyset: recovered.sealed_keyset,
                reenrollment_required: recovered.reenrollment_required,
            })
        },
    )
    .await
}
