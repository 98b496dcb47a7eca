//! The thin adapter between the wire (tonic) and the domain: each RPC converts its request,
//! calls [`Recovery`], and converts the answer; every failure goes through
//! [`status::to_status`]. No `unwrap` on a request path.

pub mod auth;
mod family;
pub mod layer;
pub mod status;

use prost_types::Timestamp;
use recovery_proto::v1::{
    AuditEvent, AuditEventKind, BeginRecoveryRequest, BeginRecoveryResponse, ClientContext,
    CreateRecoveryCodeRequest, CreateRecoveryCodeResponse, GetRecoveryStatusRequest,
    GetRecoveryStatusResponse, ListAuditEventsRequest, ListAuditEventsResponse,
    RecoverAccountRequest, RecoverAccountResponse, RevokeRecoveryCodeRequest,
    RevokeRecoveryCodeResponse, UpdateRecoveryEmailRequest, UpdateRecoveryEmailResponse,
    VerifyEmailRequest, VerifyEmailResponse, recovery_service_server::RecoveryService,
};
use recovery_proto::v1::{
    BeginAssistedRecoveryRequest, BeginAssistedRecoveryResponse, CancelAssistedRecoveryRequest,
    CancelAssistedRecoveryResponse, CompleteAssistedRecoveryRequest,
    CompleteAssistedRecoveryResponse, GetFamilyRecoveryStatusRequest,
    GetFamilyRecoveryStatusResponse, PutFamilyMemberRequest, PutFamilyMemberResponse,
    RemoveFamilyMemberRequest, RemoveFamilyMemberResponse, VerifyAssistedRecoveryRequest,
    VerifyAssistedRecoveryResponse,
};
use std::sync::Arc;

use tonic::{Request, Response, Status};

use self::auth::Callers;
use crate::{
    config::Role,
    domain::{self, Recovery, notify::AuditKind},
};

/// The `identity.recovery.v1.RecoveryService` implementation.
#[derive(Debug, Clone)]
pub struct RecoveryApi {
    recovery: Recovery,
    /// Caller roles under mutual TLS; `None` trusts every caller.
    callers: Option<Arc<Callers>>,
}

const AUTH: &[Role] = &[Role::Auth];
const OPERATOR: &[Role] = &[Role::Operator];
const AUTH_OR_OPERATOR: &[Role] = &[Role::Auth, Role::Operator];

impl RecoveryApi {
    pub fn new(recovery: Recovery, callers: Option<Callers>) -> Self {
        Self {
            recovery,
            callers: callers.map(Arc::new),
        }
    }

    fn authorize<T>(
        &self,
        method: &'static str,
        request: &Request<T>,
        allowed: &[Role],
    ) -> Result<String, Status> {
        match &self.callers {
            Some(callers) => callers
                .authorize(request, allowed)
                .map_err(|e| fail(method, &e)),
            None => Ok(domain::caller::TRUSTED.to_owned()),
        }
    }
}

/// The one conversion of an instant to the wire.
pub fn timestamp(at: crate::time::Timestamp) -> Timestamp {
    let ms = at.as_ms();
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
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
    }
}

fn fail(method: &'static str, err: &domain::Error) -> Status {
    let status = status::to_status(err);
    let (_, reason) = status::classify(err);
    tracing::Span::current().record("rpc.error_reason", reason.bare_name());
    tracing::info!(method, reason = reason.bare_name(), "request failed");
    status
}

#[tonic::async_trait]
impl RecoveryService for RecoveryApi {
    async fn create_recovery_code(
        &self,
        request: Request<CreateRecoveryCodeRequest>,
    ) -> Result<Response<CreateRecoveryCodeResponse>, Status> {
        let caller = self.authorize("CreateRecoveryCode", &request, AUTH)?;
        let req = request.into_inner();
        let created = domain::caller::scope(
            caller,
            self.recovery
                .create_recovery_code(&req.account_id, &req.email),
        )
        .await
        .map_err(|e| fail("CreateRecoveryCode", &e))?;
        Ok(Response::new(CreateRecoveryCodeResponse {
            recovery_code: created.recovery_code.to_string(),
            code_id: created.code_id,
            created_at: Some(timestamp(created.created_at)),
        }))
    }

    async fn begin_recovery(
        &self,
        request: Request<BeginRecoveryRequest>,
    ) -> Result<Response<BeginRecoveryResponse>, Status> {
        let caller = self.authorize("BeginRecovery", &request, AUTH)?;
        let req = request.into_inner();
        let client = req.client.unwrap_or_default();
        let flow = domain::caller::scope(
            caller,
            self.recovery
                .begin_recovery(&req.email, &client.ip_address, &client.user_agent),
        )
        .await
        .map_err(|e| fail("BeginRecovery", &e))?;
        Ok(Response::new(BeginRecoveryResponse {
            flow_id: flow.flow_id,
            expires_at: Some(timestamp(flow.expires_at)),
        }))
    }

    async fn verify_email(
        &self,
        request: Request<VerifyEmailRequest>,
    ) -> Result<Response<VerifyEmailResponse>, Status> {
        let caller = self.authorize("VerifyEmail", &request, AUTH)?;
        let req = request.into_inner();
        let until = domain::caller::scope(
            caller,
            self.recovery.verify_email(&req.flow_id, &req.email_code),
        )
        .await
        .map_err(|e| fail("VerifyEmail", &e))?;
        Ok(Response::new(VerifyEmailResponse {
            verified_until: Some(timestamp(until)),
        }))
    }

    async fn recover_account(
        &self,
        request: Request<RecoverAccountRequest>,
    ) -> Result<Response<RecoverAccountResponse>, Status> {
        let caller = self.authorize("RecoverAccount", &request, AUTH)?;
        let req = request.into_inner();
        let recovered = domain::caller::scope(
            caller,
            self.recovery
                .recover_account(&req.flow_id, &req.recovery_code),
        )
        .await
        .map_err(|e| fail("RecoverAccount", &e))?;
        Ok(Response::new(RecoverAccountResponse {
            account_id: recovered.account_id,
            revoke_all_sessions: true,
            new_recovery_code: recovered
                .new_recovery_code
                .map(|code| code.to_string())
                .unwrap_or_default(),
        }))
    }

    async fn get_recovery_status(
        &self,
        request: Request<GetRecoveryStatusRequest>,
    ) -> Result<Response<GetRecoveryStatusResponse>, Status> {
        let caller = self.authorize("GetRecoveryStatus", &request, AUTH_OR_OPERATOR)?;
        let req = request.into_inner();
        let status =
            domain::caller::scope(caller, self.recovery.get_recovery_status(&req.account_id))
                .await
                .map_err(|e| fail("GetRecoveryStatus", &e))?;
        Ok(Response::new(GetRecoveryStatusResponse {
            enrolled: status.enrolled,
            code_id: status.code_id.unwrap_or_default(),
            created_at: status.created_at.map(timestamp),
            last_used_at: status.last_used_at.map(timestamp),
            use_count: status.use_count,
            locked_until: status.locked_until.map(timestamp),
            email_hint: status.email_hint.unwrap_or_default(),
        }))
    }

    async fn revoke_recovery_code(
        &self,
        request: Request<RevokeRecoveryCodeRequest>,
    ) -> Result<Response<RevokeRecoveryCodeResponse>, Status> {
        let caller = self.authorize("RevokeRecoveryCode", &request, AUTH_OR_OPERATOR)?;
        let req = request.into_inner();
        let at = domain::caller::scope(
            caller,
            self.recovery
                .revoke_recovery_code(&req.account_id, &req.reason),
        )
        .await
        .map_err(|e| fail("RevokeRecoveryCode", &e))?;
        Ok(Response::new(RevokeRecoveryCodeResponse {
            revoked_at: Some(timestamp(at)),
        }))
    }

    async fn update_recovery_email(
        &self,
        request: Request<UpdateRecoveryEmailRequest>,
    ) -> Result<Response<UpdateRecoveryEmailResponse>, Status> {
        let caller = self.authorize("UpdateRecoveryEmail", &request, AUTH)?;
        let req = request.into_inner();
        let at = domain::caller::scope(
            caller,
            self.recovery
                .update_recovery_email(&req.account_id, &req.email),
        )
        .await
        .map_err(|e| fail("UpdateRecoveryEmail", &e))?;
        Ok(Response::new(UpdateRecoveryEmailResponse {
            updated_at: Some(timestamp(at)),
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        let caller = self.authorize("ListAuditEvents", &request, OPERATOR)?;
        let req = request.into_inner();
        let page = domain::caller::scope(
            caller,
            self.recovery
                .list_audit_events(&req.account_id, req.page_size, &req.page_token),
        )
        .await
        .map_err(|e| fail("ListAuditEvents", &e))?;
        let events = page
            .events
            .into_iter()
            .map(|e| AuditEvent {
                event_id: e.event_id,
                account_id: e.account_id,
                kind: audit_kind(e.kind).into(),
                occurred_at: Some(timestamp(e.occurred_at)),
                client: Some(ClientContext {
                    ip_address: e.client_ip.unwrap_or_default(),
                    user_agent: e.client_user_agent.unwrap_or_default(),
                }),
                details: e.details.into_iter().collect(),
            })
            .collect();
        Ok(Response::new(ListAuditEventsResponse {
            events,
            next_page_token: page.next_page_token,
            chain_valid: page.chain_valid,
            first_broken_event_id: page.first_broken_event_id.unwrap_or_default(),
        }))
    }

    async fn put_family_member(
        &self,
        request: Request<PutFamilyMemberRequest>,
    ) -> Result<Response<PutFamilyMemberResponse>, Status> {
        let caller = self.authorize("PutFamilyMember", &request, AUTH)?;
        let req = request.into_inner();
        let at = domain::caller::scope(
            caller,
            self.recovery.put_family_member(
                &req.family_id,
                &req.account_id,
                family::role_from_wire(req.role),
                &req.email,
            ),
        )
        .await
        .map_err(|e| fail("PutFamilyMember", &e))?;
        Ok(Response::new(PutFamilyMemberResponse {
            updated_at: Some(timestamp(at)),
        }))
    }

    async fn remove_family_member(
        &self,
        request: Request<RemoveFamilyMemberRequest>,
    ) -> Result<Response<RemoveFamilyMemberResponse>, Status> {
        let caller = self.authorize("RemoveFamilyMember", &request, AUTH)?;
        let req = request.into_inner();
        let at = domain::caller::scope(
            caller,
            self.recovery
                .remove_family_member(&req.family_id, &req.account_id),
        )
        .await
        .map_err(|e| fail("RemoveFamilyMember", &e))?;
        Ok(Response::new(RemoveFamilyMemberResponse {
            removed_at: Some(timestamp(at)),
        }))
    }

    async fn get_family_recovery_status(
        &self,
        request: Request<GetFamilyRecoveryStatusRequest>,
    ) -> Result<Response<GetFamilyRecoveryStatusResponse>, Status> {
        let caller = self.authorize("GetFamilyRecoveryStatus", &request, AUTH_OR_OPERATOR)?;
        let req = request.into_inner();
        let status = domain::caller::scope(
            caller,
            self.recovery.get_family_recovery_status(&req.family_id),
        )
        .await
        .map_err(|e| fail("GetFamilyRecoveryStatus", &e))?;
        Ok(Response::new(family::status_to_wire(status)))
    }

    async fn begin_assisted_recovery(
        &self,
        request: Request<BeginAssistedRecoveryRequest>,
    ) -> Result<Response<BeginAssistedRecoveryResponse>, Status> {
        let caller = self.authorize("BeginAssistedRecovery", &request, AUTH)?;
        let req = request.into_inner();
        let client = req.client.unwrap_or_default();
        let started = domain::caller::scope(
            caller,
            self.recovery.begin_assisted_recovery(
                &req.family_id,
                &req.organizer_account_id,
                &req.member_account_id,
                &client.ip_address,
                &client.user_agent,
            ),
        )
        .await
        .map_err(|e| fail("BeginAssistedRecovery", &e))?;
        Ok(Response::new(BeginAssistedRecoveryResponse {
            assisted_flow_id: started.assisted_flow_id,
            expires_at: Some(timestamp(started.expires_at)),
        }))
    }

    async fn verify_assisted_recovery(
        &self,
        request: Request<VerifyAssistedRecoveryRequest>,
    ) -> Result<Response<VerifyAssistedRecoveryResponse>, Status> {
        let caller = self.authorize("VerifyAssistedRecovery", &request, AUTH)?;
        let req = request.into_inner();
        let until = domain::caller::scope(
            caller,
            self.recovery
                .verify_assisted_recovery(&req.assisted_flow_id, &req.email_code),
        )
        .await
        .map_err(|e| fail("VerifyAssistedRecovery", &e))?;
        Ok(Response::new(VerifyAssistedRecoveryResponse {
            verified_until: Some(timestamp(until)),
        }))
    }

    async fn complete_assisted_recovery(
        &self,
        request: Request<CompleteAssistedRecoveryRequest>,
    ) -> Result<Response<CompleteAssistedRecoveryResponse>, Status> {
        let caller = self.authorize("CompleteAssistedRecovery", &request, AUTH)?;
        let req = request.into_inner();
        let recovered = domain::caller::scope(
            caller,
            self.recovery
                .complete_assisted_recovery(&req.assisted_flow_id, &req.organizer_account_id),
        )
        .await
        .map_err(|e| fail("CompleteAssistedRecovery", &e))?;
        Ok(Response::new(CompleteAssistedRecoveryResponse {
            account_id: recovered.account_id,
            revoke_all_sessions: true,
            recovery_code_revoked: recovered.recovery_code_revoked,
        }))
    }

    async fn cancel_assisted_recovery(
        &self,
        request: Request<CancelAssistedRecoveryRequest>,
    ) -> Result<Response<CancelAssistedRecoveryResponse>, Status> {
        let caller = self.authorize("CancelAssistedRecovery", &request, AUTH)?;
        let req = request.into_inner();
        let at = domain::caller::scope(
            caller,
            self.recovery
                .cancel_assisted_recovery(&req.assisted_flow_id, &req.account_id),
        )
        .await
        .map_err(|e| fail("CancelAssistedRecovery", &e))?;
        Ok(Response::new(CancelAssistedRecoveryResponse {
            cancelled_at: Some(timestamp(at)),
        }))
    }
}
