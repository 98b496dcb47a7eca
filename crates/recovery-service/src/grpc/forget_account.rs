//! Forgetting an account: ForgetAccount.

use recovery_proto::v1 as wire;
use tonic::Request;

use super::{AUTH_OR_OPERATOR, Answer, RecoveryApi, timestamp};

pub(super) async fn forget(
    api: &RecoveryApi,
    request: Request<wire::ForgetAccountRequest>,
) -> Answer<wire::ForgetAccountResponse> {
    api.handle(
        "ForgetAccount",
        AUTH_OR_OPERATOR,
        request,
        |r, req| async move {
            let at = r.forget_account(&req.account_id, &req.reason).await?;
            Ok(wire::ForgetAccountResponse {
                forgotten_at: Some(timestamp(at)),
            })
        },
    )
    .await
}
