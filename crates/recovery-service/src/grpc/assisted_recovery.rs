//! Organizer-assisted recovery's RPCs: BeginAssistedRecovery, VerifyAssistedRecovery,
//! CompleteAssistedRecovery, CancelAssistedRecovery.

use recovery_proto::v1 as wire;
use tonic::Request;

use super::{AUTH, Answer, RecoveryApi, timestamp};

pub(super) async fn begin(
    api: &RecoveryApi,
    request: Request<wire::BeginAssistedRecoveryRequest>,
) -> Answer<wire::BeginAssistedRecoveryResponse> {
    api.handle(
        "BeginAssistedRecovery",
        AUTH,
        request,
        |r, req| async move {
            let client = req.client.unwrap_or_default();
            let started = r
                .begin_assisted_recovery(
                    &req.family_id,
                    &req.organizer_account_id,
                    &req.member_account_id,
                    &client.ip_address,
                    &client.user_agent,
                )
                .await?;
            Ok(wire::BeginAssistedRecoveryResponse {
                assisted_flow_id: started.assisted_flow_id,
                expires_at: Some(timestamp(started.expires_at)),
            })
        },
    )
    .await
}

pub(super) async fn verify(
    api: &RecoveryApi,
    request: Request<wire::VerifyAssistedRecoveryRequest>,
) -> Answer<wire::VerifyAssistedRecoveryResponse> {
    api.handle(
        "VerifyAssistedRecovery",
        AUTH,
        request,
        |r, req| async move {
            let until = r
                .verify_assisted_recovery(&req.assisted_flow_id, &req.email_code)
                .await?;
            Ok(wire::VerifyAssistedRecoveryResponse {
                verified_until: Some(timestamp(until)),
            })
        },
    )
    .await
}

pub(super) async fn complete(
    api: &RecoveryApi,
    request: Request<wire::CompleteAssistedRecoveryRequest>,
) -> Answer<wire::CompleteAssistedRecoveryResponse> {
    api.handle(
        "CompleteAssistedRecovery",
        AUTH,
        request,
        |r, req| async move {
            let recovered = r
                .complete_assisted_recovery(&req.assisted_flow_id, &req.organizer_account_id)
                .await?;
            Ok(wire::CompleteAssistedRecoveryResponse {
                account_id: recovered.account_id,
                revoke_all_sessions: true,
                recovery_code_revoked: recovered.recovery_code_revoked,
            })
        },
    )
    .await
}

pub(super) async fn cancel(
    api: &RecoveryApi,
    request: Request<wire::CancelAssistedRecoveryRequest>,
) -> Answer<wire::CancelAssistedRecoveryResponse> {
    api.handle(
        "CancelAssistedRecovery",
        AUTH,
        request,
        |r, req| async move {
            let at = r
                .cancel_assisted_recovery(&req.assisted_flow_id, &req.account_id)
                .await?;
            Ok(wire::CancelAssistedRecoveryResponse {
                cancelled_at: Some(timestamp(at)),
            })
        },
    )
    .await
}
