//! Families' RPCs: PutFamilyMember, RemoveFamilyMember, GetFamilyRecoveryStatus, and the wire
//! forms of family roles and a family's recovery status.

use recovery_proto::v1::{
    self as wire, FamilyMemberStatus, FamilyRole as WireRole, GetFamilyRecoveryStatusResponse,
};
use tonic::Request;

use super::{AUTH, AUTH_OR_OPERATOR, Answer, RecoveryApi, timestamp};
use crate::domain::family::{FamilyRole, FamilyStatus};

/// The domain role of a wire value; `None` for unset or unknown values.
fn role_from_wire(role: i32) -> Option<FamilyRole> {
    match WireRole::try_from(role) {
        Ok(WireRole::Organizer) => Some(FamilyRole::Organizer),
        Ok(WireRole::Member) => Some(FamilyRole::Member),
        Ok(WireRole::Unspecified) | Err(_) => None,
    }
}

fn role_to_wire(role: FamilyRole) -> WireRole {
    match role {
        FamilyRole::Organizer => WireRole::Organizer,
        FamilyRole::Member => WireRole::Member,
    }
}

fn status_to_wire(status: FamilyStatus) -> GetFamilyRecoveryStatusResponse {
    GetFamilyRecoveryStatusResponse {
        members: status
            .members
            .into_iter()
            .map(|m| FamilyMemberStatus {
                account_id: m.account_id,
                role: role_to_wire(m.role).into(),
                email_hint: m.email_hint,
                recovery_code_enrolled: m.recovery_code_enrolled,
                assisted_recovery_pending: m.assisted_recovery_pending,
            })
            .collect(),
        organizer_count: status.organizer_count,
        single_organizer: status.single_organizer,
    }
}

pub(super) async fn put_member(
    api: &RecoveryApi,
    request: Request<wire::PutFamilyMemberRequest>,
) -> Answer<wire::PutFamilyMemberResponse> {
    api.handle("PutFamilyMember", AUTH, request, |r, req| async move {
        let at = r
            .put_family_member(
                &req.family_id,
                &req.account_id,
                role_from_wire(req.role),
                &req.email,
            )
            .await?;
        Ok(wire::PutFamilyMemberResponse {
            updated_at: Some(timestamp(at)),
        })
    })
    .await
}

pub(super) async fn remove_member(
    api: &RecoveryApi,
    request: Request<wire::RemoveFamilyMemberRequest>,
) -> Answer<wire::RemoveFamilyMemberResponse> {
    api.handle("RemoveFamilyMember", AUTH, request, |r, req| async move {
        let at = r
            .remove_family_member(&req.family_id, &req.account_id)
            .await?;
        Ok(wire::RemoveFamilyMemberResponse {
            removed_at: Some(timestamp(at)),
        })
    })
    .await
}

pub(super) async fn status(
    api: &RecoveryApi,
    request: Request<wire::GetFamilyRecoveryStatusRequest>,
) -> Answer<wire::GetFamilyRecoveryStatusResponse> {
    api.handle(
        "GetFamilyRecoveryStatus",
        AUTH_OR_OPERATOR,
        request,
        |r, req| async move {
            let status = r.get_family_recovery_status(&req.family_id).await?;
            Ok(status_to_wire(status))
        },
    )
    .await
}
