//! The recovery flow's RPCs: BeginRecovery, VerifyEmail, RecoverAccount.

use recovery_proto::v1 as wire;
use tonic::Request;

use super::{AUTH, Answer, RecoveryApi, timestamp};

pub(super) async fn begin(
    api: &RecoveryApi,
    request: Request<wire::BeginRecoveryRequest>,
) -> Answer<wire::BeginRecoveryResponse> {
    api.handle("BeginRecovery", AUTH, request, |r, req| async move {
        let client = req.client.unwrap_or_default();
        let flow = r
            .begin_recovery(&req.email, &client.ip_address, &client.user_agent)
            .await?;
        Ok(wire::BeginRecoveryResponse {
            flow_id: flow.flow_id,
            expires_at: Some(timestamp(flow.expires_at)),
        })
    })
    .await
}

pub(super) async fn verify_email(
    api: &RecoveryApi,
    request: Request<wire::VerifyEmailRequest>,
) -> Answer<wire::VerifyEmailResponse> {
    api.handle("VerifyEmail", AUTH, request, |r, req| async move {
        let until = r.verify_email(&req.flow_id, &req.email_code).await?;
        Ok(wire::VerifyEmailResponse {
            verified_until: Some(timestamp(until)),
        })
    })
    .await
}

pub(super) async fn recover(
    api: &RecoveryApi,
    request: Request<wire::RecoverAccountRequest>,
) -> Answer<wire::RecoverAccountResponse> {
    api.handle("RecoverAccount", AUTH, request, |r, req| async move {
        let recovered = r.recover_account(&req.flow_id, &req.recovery_code).await?;
        Ok(wire::RecoverAccountResponse {
            account_id: recovered.account_id,
            revoke_all_sessions: true,
            new_recovery_code: recovered
                .new_recovery_code
                .map(|code| code.to_string())
                .unwrap_or_default(),
        })
    })
    .await
}
