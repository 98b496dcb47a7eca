//! The recovery code's RPCs: CreateRecoveryCode, GetRecoveryStatus, RevokeRecoveryCode,
//! UpdateRecoveryEmail, and the account's audit trail (ListAuditEvents).

use recovery_proto::v1::{self as wire, AuditEventKind};
use tonic::Request;

use super::{AUTH, AUTH_OR_OPERATOR, Answer, OPERATOR, RecoveryApi, timestamp};
use crate::domain::{RecoveryMode, notify::AuditKind};

pub(super) async fn create(
    api: &RecoveryApi,
    request: Request<wire::CreateRecoveryCodeRequest>,
) -> Answer<wire::CreateRecoveryCodeResponse> {
    api.handle("CreateRecoveryCode", AUTH, request, |r, req| async move {
        let created = r.create_recovery_code(&req.account_id, &req.email).await?;
        Ok(wire::CreateRecoveryCodeResponse {
            recovery_code: created.recovery_code.to_string(),
            code_id: created.code_id,
            created_at: Some(timestamp(created.created_at)),
        })
    })
    .await
}

pub(super) async fn status(
    api: &RecoveryApi,
    request: Request<wire::GetRecoveryStatusRequest>,
) -> Answer<wire::GetRecoveryStatusResponse> {
    api.handle(
        "GetRecoveryStatus",
        AUTH_OR_OPERATOR,
        request,
        |r, req| async move {
            let status = r.get_recovery_status(&req.account_id).await?;
            Ok(wire::GetRecoveryStatusResponse {
                enrolled: status.enrolled,
                code_id: status.code_id.unwrap_or_default(),
                created_at: status.created_at.map(timestamp),
                last_used_at: status.last_used_at.map(timestamp),
                use_count: status.use_count,
                locked_until: status.locked_until.map(timestamp),
                email_hint: status.email_hint.unwrap_or_default(),
                mode: status
                    .mode
                    .map_or(wire::RecoveryMode::Unspecified, mode_to_wire)
                    .into(),
                active_contacts: status.active_contacts,
                contact_threshold: status.contact_threshold,
                open_contact_recoveries: status.open_contact_recoveries,
                contact_recovery_completes_at: status.contact_recovery_completes_at.map(timestamp),
            })
        },
    )
    .await
}

pub(super) async fn revoke(
    api: &RecoveryApi,
    request: Request<wire::RevokeRecoveryCodeRequest>,
) -> Answer<wire::RevokeRecoveryCodeResponse> {
    api.handle(
        "RevokeRecoveryCode",
        AUTH_OR_OPERATOR,
        request,
        |r, req| async move {
            let at = r.revoke_recovery_code(&req.account_id, &req.reason).await?;
            Ok(wire::RevokeRecoveryCodeResponse {
                revoked_at: Some(timestamp(at)),
            })
        },
    )
    .await
}

pub(super) async fn update_email(
    api: &RecoveryApi,
    request: Request<wire::UpdateRecoveryEmailRequest>,
) -> Answer<wire::UpdateRecoveryEmailResponse> {
    api.handle("UpdateRecoveryEmail", AUTH, request, |r, req| async move {
        let at = r.update_recovery_email(&req.account_id, &req.email).await?;
        Ok(wire::UpdateRecoveryEmailResponse {
            updated_at: Some(timestamp(at)),
        })
    })
    .await
}

pub(super) async fn audit_events(
    api: &RecoveryApi,
    request: Request<wire::ListAuditEventsRequest>,
) -> Answer<wire::ListAuditEventsResponse> {
    api.handle("ListAuditEvents", OPERATOR, request, |r, req| async move {
        let page = r
            .list_audit_events(&req.account_id, req.page_size, &req.page_token)
            .await?;
        Ok(audit_page(page))
    })
    .await
}

/// A page of the trail on the wire.
pub(crate) fn audit_page(page: crate::domain::AuditPage) -> wire::ListAuditEventsResponse {
    let events = page
        .events
        .into_iter()
        .map(|e| wire::AuditEvent {
            event_id: e.event_id,
            account_id: e.account_id,
            kind: audit_kind(e.kind).into(),
            occurred_at: Some(timestamp(e.occurred_at)),
            client: Some(wire::ClientContext {
                ip_address: e.client_ip.unwrap_or_default(),
                user_agent: e.client_user_agent.unwrap_or_default(),
            }),
            details: e.details.into_iter().collect(),
            forgotten: e.forgotten,
        })
        .collect();
    wire::ListAuditEventsResponse {
        events,
        next_page_token: page.next_page_token,
        chain_valid: page.chain_valid,
        first_broken_event_id: page.first_broken_event_id.unwrap_or_default(),
    }
}

fn mode_to_wire(mode: RecoveryMode) -> wire::RecoveryMode {
    match mode {
        RecoveryMode::ServerHeld => wire::RecoveryMode::ServerHeld,
        RecoveryMode::ZeroKnowledge => wire::RecoveryMode::ZeroKnowledge,
    }
}

/// The wire's name for each kind: one mapping, checked by the compiler.
fn audit_kind(kind: AuditKind) -> AuditEventKind {
    match kind {
        AuditKind::CodeCreated => AuditEventKind::CodeCreated,
        AuditKind::CodeReplaced => AuditEventKind::CodeReplaced,
        AuditKind::CodeRevoked => AuditEventKind::CodeRevoked,
        AuditKind::EmailUpdated => AuditEventKind::EmailUpdated,
        AuditKind::RecoveryStarted => AuditEventKind::RecoveryStarted,
        AuditKind::EmailVerified => AuditEventKind::EmailVerified,
        AuditKind::EmailCodeFailed => AuditEventKind::EmailCodeFailed,
        AuditKind::RecoveryCodeFailed => AuditEventKind::RecoveryCodeFailed,
        AuditKind::RecoveryCompleted => AuditEventKind::RecoveryCompleted,
        AuditKind::RecoveryLocked => AuditEventKind::RecoveryLocked,
        AuditKind::EmailClaimRefused => AuditEventKind::EmailClaimRefused,
        AuditKind::SubmissionRefused => AuditEventKind::SubmissionRefused,
        AuditKind::FamilyMemberPut => AuditEventKind::FamilyMemberPut,
        AuditKind::FamilyMemberRemoved => AuditEventKind::FamilyMemberRemoved,
        AuditKind::AssistedRecoveryStarted => AuditEventKind::AssistedRecoveryStarted,
        AuditKind::AssistedRecoveryVerified => AuditEventKind::AssistedRecoveryVerified,
        AuditKind::AssistedCodeFailed => AuditEventKind::AssistedCodeFailed,
        AuditKind::AssistedRecoveryCompleted => AuditEventKind::AssistedRecoveryCompleted,
        AuditKind::AssistedRecoveryCancelled => AuditEventKind::AssistedRecoveryCancelled,
        AuditKind::ZeroKnowledgeRecoveryStarted => AuditEventKind::ZeroKnowledgeRecoveryStarted,
        AuditKind::AccountForgotten => AuditEventKind::AccountForgotten,
        AuditKind::RecoveryContactInvited => AuditEventKind::RecoveryContactInvited,
        AuditKind::RecoveryContactAccepted => AuditEventKind::RecoveryContactAccepted,
        AuditKind::RecoveryContactRemoved => AuditEventKind::RecoveryContactRemoved,
        AuditKind::RecoveryContactThresholdSet => AuditEventKind::RecoveryContactThresholdSet,
        AuditKind::ContactRecoveryStarted => AuditEventKind::ContactRecoveryStarted,
        AuditKind::ContactVouched => AuditEventKind::ContactVouched,
        AuditKind::ConfirmationCodeFailed => AuditEventKind::ConfirmationCodeFailed,
        AuditKind::ContactRecoveryPending => AuditEventKind::ContactRecoveryPending,
        AuditKind::ContactRecoveryCancelled => AuditEventKind::ContactRecoveryCancelled,
        AuditKind::ContactRecoveryCompleted => AuditEventKind::ContactRecoveryCompleted,
    }
}
