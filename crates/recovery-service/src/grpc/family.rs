//! The wire forms of family roles and a family's recovery status.

use recovery_proto::v1::{
    FamilyMemberStatus, FamilyRole as WireRole, GetFamilyRecoveryStatusResponse,
};

use crate::domain::family::{FamilyRole, FamilyStatus};

/// The domain role of a wire value; `None` for unset or unknown values.
pub fn role_from_wire(role: i32) -> Option<FamilyRole> {
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

pub fn status_to_wire(status: FamilyStatus) -> GetFamilyRecoveryStatusResponse {
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
