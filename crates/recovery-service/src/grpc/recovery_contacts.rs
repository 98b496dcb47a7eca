//! Recovery contacts' RPCs: InviteRecoveryContact, AcceptRecoveryContact,
//! RemoveRecoveryContact, SetRecoveryContactThreshold, GetRecoveryContacts,
//! BeginContactRecovery, ListContactRequests, VouchForRecovery, CancelContactRecovery,
//! CompleteContactRecovery.

use recovery_proto::v1::{self as wire, RecoveryContactState};
use tonic::Request;

use super::{AUTH, AUTH_OR_OPERATOR, Answer, RecoveryApi, timestamp};
use crate::domain::recovery_contacts::ContactState;

pub(super) async fn invite(
    api: &RecoveryApi,
    request: Request<wire::InviteRecoveryContactRequest>,
) -> Answer<wire::InviteRecoveryContactResponse> {
    api.handle(
        "InviteRecoveryContact",
        AUTH,
        request,
        |r, req| async move {
            let (invited_at, expires_at) = r
                .invite_recovery_contact(
                    &req.account_id,
                    &req.contact_account_id,
                    &req.contact_email,
                )
                .await?;
            Ok(wire::InviteRecoveryContactResponse {
                invited_at: Some(timestamp(invited_at)),
                expires_at: Some(timestamp(expires_at)),
            })
        },
    )
    .await
}

pub(super) async fn accept(
    api: &RecoveryApi,
    request: Request<wire::AcceptRecoveryContactRequest>,
) -> Answer<wire::AcceptRecoveryContactResponse> {
    api.handle(
        "AcceptRecoveryContact",
        AUTH,
        request,
        |r, req| async move {
            let active_from = r
                .accept_recovery_contact(&req.account_id, &req.contact_account_id)
                .await?;
            Ok(wire::AcceptRecoveryContactResponse {
                active_from: Some(timestamp(active_from)),
            })
        },
    )
    .await
}

pub(super) async fn remove(
    api: &RecoveryApi,
    request: Request<wire::RemoveRecoveryContactRequest>,
) -> Answer<wire::RemoveRecoveryContactResponse> {
    api.handle(
        "RemoveRecoveryContact",
        AUTH,
        request,
        |r, req| async move {
            let at = r
                .remove_recovery_contact(&req.account_id, &req.contact_account_id)
                .await?;
            Ok(wire::RemoveRecoveryContactResponse {
                removed_at: Some(timestamp(at)),
            })
        },
    )
    .await
}

pub(super) async fn set_threshold(
    api: &RecoveryApi,
    request: Request<wire::SetRecoveryContactThresholdRequest>,
) -> Answer<wire::SetRecoveryContactThresholdResponse> {
    api.handle(
        "SetRecoveryContactThreshold",
        AUTH,
        request,
        |r, req| async move {
            let at = r
                .set_recovery_contact_threshold(&req.account_id, req.threshold)
                .await?;
            Ok(wire::SetRecoveryContactThresholdResponse {
                updated_at: Some(timestamp(at)),
            })
        },
    )
    .await
}

pub(super) async fn list(
    api: &RecoveryApi,
    request: Request<wire::GetRecoveryContactsRequest>,
) -> Answer<wire::GetRecoveryContactsResponse> {
    api.handle(
        "GetRecoveryContacts",
        AUTH_OR_OPERATOR,
        request,
        |r, req| async move {
            let c = r.recovery_contacts(&req.account_id).await?;
            Ok(wire::GetRecoveryContactsResponse {
                contacts: c
                    .contacts
                    .into_iter()
                    .map(|c| wire::RecoveryContact {
                        contact_account_id: c.contact_account_id,
                        state: match c.state {
                            ContactState::Invited => RecoveryContactState::Invited,
                            ContactState::Waiting => RecoveryContactState::Waiting,
                            ContactState::Active => RecoveryContactState::Active,
                        }
                        .into(),
                        email_hint: c.email_hint,
                        active_from: c.active_from.map(timestamp),
                        invited_at: Some(timestamp(c.invited_at)),
                        expires_at: c.expires_at.map(timestamp),
                    })
                    .collect(),
                threshold: c.threshold,
                active_count: c.active_count,
            })
        },
    )
    .await
}

pub(super) async fn begin(
    api: &RecoveryApi,
    request: Request<wire::BeginContactRecoveryRequest>,
) -> Answer<wire::BeginContactRecoveryResponse> {
    api.handle("BeginContactRecovery", AUTH, request, |r, req| async move {
        let client = req.client.unwrap_or_default();
        let started = r
            .begin_contact_recovery(&req.email, &client.ip_address, &client.user_agent)
            .await?;
        Ok(wire::BeginContactRecoveryResponse {
            contact_flow_id: started.contact_flow_id,
            confirmation_code: started.confirmation_code.to_string(),
            expires_at: Some(timestamp(started.expires_at)),
        })
    })
    .await
}

pub(super) async fn requests(
    api: &RecoveryApi,
    request: Request<wire::ListContactRequestsRequest>,
) -> Answer<wire::ListContactRequestsResponse> {
    api.handle("ListContactRequests", AUTH, request, |r, req| async move {
        let requests = r.contact_requests(&req.contact_account_id).await?;
        Ok(wire::ListContactRequestsResponse {
            requests: requests
                .into_iter()
                .map(|q| wire::ContactRequest {
                    contact_flow_id: q.contact_flow_id,
                    account_id: q.account_id,
                    client: Some(wire::ClientContext {
                        ip_address: q.client.ip.unwrap_or_default(),
                        user_agent: q.client.user_agent.unwrap_or_default(),
                    }),
                    requested_at: Some(timestamp(q.requested_at)),
                    expires_at: Some(timestamp(q.expires_at)),
                    vouched: q.vouched,
                    completes_at: q.completes_at.map(timestamp),
                })
                .collect(),
        })
    })
    .await
}

pub(super) async fn vouch(
    api: &RecoveryApi,
    request: Request<wire::VouchForRecoveryRequest>,
) -> Answer<wire::VouchForRecoveryResponse> {
    api.handle("VouchForRecovery", AUTH, request, |r, req| async move {
        let v = r
            .vouch_for_recovery(
                &req.contact_flow_id,
                &req.contact_account_id,
                &req.confirmation_code,
            )
            .await?;
        Ok(wire::VouchForRecoveryResponse {
            vouches: v.vouches,
            threshold: v.threshold,
            completes_at: v.completes_at.map(timestamp),
        })
    })
    .await
}

pub(super) async fn cancel(
    api: &RecoveryApi,
    request: Request<wire::CancelContactRecoveryRequest>,
) -> Answer<wire::CancelContactRecoveryResponse> {
    api.handle(
        "CancelContactRecovery",
        AUTH,
        request,
        |r, req| async move {
            let at = r
                .cancel_contact_recovery(&req.contact_flow_id, &req.account_id)
                .await?;
            Ok(wire::CancelContactRecoveryResponse {
                cancelled_at: Some(timestamp(at)),
            })
        },
    )
    .await
}

pub(super) async fn complete(
    api: &RecoveryApi,
    request: Request<wire::CompleteContactRecoveryRequest>,
) -> Answer<wire::CompleteContactRecoveryResponse> {
    api.handle(
        "CompleteContactRecovery",
        AUTH,
        request,
        |r, req| async move {
            let done = r.complete_contact_recovery(&req.contact_flow_id).await?;
            Ok(wire::CompleteContactRecoveryResponse {
                account_id: done.account_id,
                revoke_all_sessions: true,
                recovery_code_revoked: done.recovery_code_revoked,
            })
        },
    )
    .await
}
