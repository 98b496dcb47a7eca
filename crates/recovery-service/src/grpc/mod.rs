//! The thin adapter between the wire (tonic) and the domain, one file per RPC family
//! (`recovery_code`, `recovery_flow`, `family`, `assisted_recovery`, `zero_knowledge`,
//! `forget_account`, `recovery_contacts`), each
//! named as its domain and storage files are. Every RPC goes through [`RecoveryApi::handle`]:
//! the caller's role is checked, the request converted, [`Recovery`] called, the answer
//! converted, and every failure mapped by [`status::to_status`]. No `unwrap` on a request path.

mod assisted_recovery;
pub mod auth;
mod family;
mod forget_account;
pub mod layer;
pub(crate) mod recovery_code;
mod recovery_contacts;
mod recovery_flow;
pub mod status;
mod zero_knowledge;

use std::{future::Future, sync::Arc};

use prost_types::Timestamp;
use recovery_proto::v1::{self as wire, recovery_service_server::RecoveryService};
use tonic::{Request, Response, Status};

use self::auth::{Callers, Role};
use crate::domain::{self, Recovery};

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

    /// Serves one RPC: `method` (its name, written once), the `roles` that may call it, and
    /// `f`, which converts the request, calls the domain and converts the answer.
    async fn handle<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        roles: &[Role],
        request: Request<Req>,
        f: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(Recovery, Req) -> Fut,
        Fut: Future<Output = Result<Resp, domain::Error>>,
    {
        let caller = match &self.callers {
            Some(callers) => callers
                .authorize(&request, roles)
                .map_err(|e| fail(method, &e))?,
            None => domain::caller::TRUSTED.to_owned(),
        };
        let answer = domain::caller::scope(caller, f(self.recovery.clone(), request.into_inner()))
            .await
            .map_err(|e| fail(method, &e))?;
        Ok(Response::new(answer))
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

fn fail(method: &'static str, err: &domain::Error) -> Status {
    let status = status::to_status(err);
    let (_, reason) = status::classify(err);
    tracing::Span::current().record("rpc.error_reason", reason.bare_name());
    tracing::info!(method, reason = reason.bare_name(), "request failed");
    status
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl RecoveryService for RecoveryApi {
    async fn create_recovery_code(
        &self,
        request: Request<wire::CreateRecoveryCodeRequest>,
    ) -> Answer<wire::CreateRecoveryCodeResponse> {
        recovery_code::create(self, request).await
    }

    async fn get_recovery_status(
        &self,
        request: Request<wire::GetRecoveryStatusRequest>,
    ) -> Answer<wire::GetRecoveryStatusResponse> {
        recovery_code::status(self, request).await
    }

    async fn revoke_recovery_code(
        &self,
        request: Request<wire::RevokeRecoveryCodeRequest>,
    ) -> Answer<wire::RevokeRecoveryCodeResponse> {
        recovery_code::revoke(self, request).await
    }

    async fn update_recovery_email(
        &self,
        request: Request<wire::UpdateRecoveryEmailRequest>,
    ) -> Answer<wire::UpdateRecoveryEmailResponse> {
        recovery_code::update_email(self, request).await
    }

    async fn list_audit_events(
        &self,
        request: Request<wire::ListAuditEventsRequest>,
    ) -> Answer<wire::ListAuditEventsResponse> {
        recovery_code::audit_events(self, request).await
    }

    async fn begin_recovery(
        &self,
        request: Request<wire::BeginRecoveryRequest>,
    ) -> Answer<wire::BeginRecoveryResponse> {
        recovery_flow::begin(self, request).await
    }

    async fn verify_email(
        &self,
        request: Request<wire::VerifyEmailRequest>,
    ) -> Answer<wire::VerifyEmailResponse> {
        recovery_flow::verify_email(self, request).await
    }

    async fn recover_account(
        &self,
        request: Request<wire::RecoverAccountRequest>,
    ) -> Answer<wire::RecoverAccountResponse> {
        recovery_flow::recover(self, request).await
    }

    async fn put_family_member(
        &self,
        request: Request<wire::PutFamilyMemberRequest>,
    ) -> Answer<wire::PutFamilyMemberResponse> {
        family::put_member(self, request).await
    }

    async fn remove_family_member(
        &self,
        request: Request<wire::RemoveFamilyMemberRequest>,
    ) -> Answer<wire::RemoveFamilyMemberResponse> {
        family::remove_member(self, request).await
    }

    async fn get_family_recovery_status(
        &self,
        request: Request<wire::GetFamilyRecoveryStatusRequest>,
    ) -> Answer<wire::GetFamilyRecoveryStatusResponse> {
        family::status(self, request).await
    }

    async fn begin_assisted_recovery(
        &self,
        request: Request<wire::BeginAssistedRecoveryRequest>,
    ) -> Answer<wire::BeginAssistedRecoveryResponse> {
        assisted_recovery::begin(self, request).await
    }

    async fn verify_assisted_recovery(
        &self,
        request: Request<wire::VerifyAssistedRecoveryRequest>,
    ) -> Answer<wire::VerifyAssistedRecoveryResponse> {
        assisted_recovery::verify(self, request).await
    }

    async fn complete_assisted_recovery(
        &self,
        request: Request<wire::CompleteAssistedRecoveryRequest>,
    ) -> Answer<wire::CompleteAssistedRecoveryResponse> {
        assisted_recovery::complete(self, request).await
    }

    async fn cancel_assisted_recovery(
        &self,
        request: Request<wire::CancelAssistedRecoveryRequest>,
    ) -> Answer<wire::CancelAssistedRecoveryResponse> {
        assisted_recovery::cancel(self, request).await
    }

    async fn start_zero_knowledge_enrollment(
        &self,
        request: Request<wire::StartZeroKnowledgeEnrollmentRequest>,
    ) -> Answer<wire::StartZeroKnowledgeEnrollmentResponse> {
        zero_knowledge::start_enrollment(self, request).await
    }

    async fn finish_zero_knowledge_enrollment(
        &self,
        request: Request<wire::FinishZeroKnowledgeEnrollmentRequest>,
    ) -> Answer<wire::FinishZeroKnowledgeEnrollmentResponse> {
        zero_knowledge::finish_enrollment(self, request).await
    }

    async fn start_zero_knowledge_recovery(
        &self,
        request: Request<wire::StartZeroKnowledgeRecoveryRequest>,
    ) -> Answer<wire::StartZeroKnowledgeRecoveryResponse> {
        zero_knowledge::start_recovery(self, request).await
    }

    async fn finish_zero_knowledge_recovery(
        &self,
        request: Request<wire::FinishZeroKnowledgeRecoveryRequest>,
    ) -> Answer<wire::FinishZeroKnowledgeRecoveryResponse> {
        zero_knowledge::finish_recovery(self, request).await
    }

    async fn forget_account(
        &self,
        request: Request<wire::ForgetAccountRequest>,
    ) -> Answer<wire::ForgetAccountResponse> {
        forget_account::forget(self, request).await
    }
    async fn invite_recovery_contact(
        &self,
        request: Request<wire::InviteRecoveryContactRequest>,
    ) -> Answer<wire::InviteRecoveryContactResponse> {
        recovery_contacts::invite(self, request).await
    }

    async fn accept_recovery_contact(
        &self,
        request: Request<wire::AcceptRecoveryContactRequest>,
    ) -> Answer<wire::AcceptRecoveryContactResponse> {
        recovery_contacts::accept(self, request).await
    }

    async fn remove_recovery_contact(
        &self,
        request: Request<wire::RemoveRecoveryContactRequest>,
    ) -> Answer<wire::RemoveRecoveryContactResponse> {
        recovery_contacts::remove(self, request).await
    }

    async fn set_recovery_contact_threshold(
        &self,
        request: Request<wire::SetRecoveryContactThresholdRequest>,
    ) -> Answer<wire::SetRecoveryContactThresholdResponse> {
        recovery_contacts::set_threshold(self, request).await
    }

    async fn get_recovery_contacts(
        &self,
        request: Request<wire::GetRecoveryContactsRequest>,
    ) -> Answer<wire::GetRecoveryContactsResponse> {
        recovery_contacts::list(self, request).await
    }

    async fn begin_contact_recovery(
        &self,
        request: Request<wire::BeginContactRecoveryRequest>,
    ) -> Answer<wire::BeginContactRecoveryResponse> {
        recovery_contacts::begin(self, request).await
    }

    async fn list_contact_requests(
        &self,
        request: Request<wire::ListContactRequestsRequest>,
    ) -> Answer<wire::ListContactRequestsResponse> {
        recovery_contacts::requests(self, request).await
    }

    async fn vouch_for_recovery(
        &self,
        request: Request<wire::VouchForRecoveryRequest>,
    ) -> Answer<wire::VouchForRecoveryResponse> {
        recovery_contacts::vouch(self, request).await
    }

    async fn cancel_contact_recovery(
        &self,
        request: Request<wire::CancelContactRecoveryRequest>,
    ) -> Answer<wire::CancelContactRecoveryResponse> {
        recovery_contacts::cancel(self, request).await
    }

    async fn complete_contact_recovery(
        &self,
        request: Request<wire::CompleteContactRecoveryRequest>,
    ) -> Answer<wire::CompleteContactRecoveryResponse> {
        recovery_contacts::complete(self, request).await
    }
}
