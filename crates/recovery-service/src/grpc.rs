//! The thin adapter between the wire (tonic) and the domain: each RPC converts its request,
//! calls the domain and converts the answer. RPCs whose domain is not built yet answer
//! UNIMPLEMENTED, never a fake success.

use recovery_proto::v1::{
    BeginRecoveryRequest, BeginRecoveryResponse, CreateRecoveryCodeRequest,
    CreateRecoveryCodeResponse, GetRecoveryStatusRequest, GetRecoveryStatusResponse,
    ListAuditEventsRequest, ListAuditEventsResponse, RecoverAccountRequest, RecoverAccountResponse,
    RevokeRecoveryCodeRequest, RevokeRecoveryCodeResponse, UpdateRecoveryEmailRequest,
    UpdateRecoveryEmailResponse, VerifyEmailRequest, VerifyEmailResponse,
    recovery_service_server::RecoveryService,
};
use tonic::{Request, Response, Status};

/// The `identity.recovery.v1.RecoveryService` implementation.
#[derive(Debug, Clone, Default)]
pub struct RecoveryApi {}

impl RecoveryApi {
    pub fn new() -> Self {
        Self {}
    }
}

fn not_yet(method: &str) -> Status {
    Status::unimplemented(format!(
        "identity.recovery.v1.RecoveryService/{method} is not implemented by this server yet"
    ))
}

#[tonic::async_trait]
impl RecoveryService for RecoveryApi {
    async fn create_recovery_code(
        &self,
        _request: Request<CreateRecoveryCodeRequest>,
    ) -> Result<Response<CreateRecoveryCodeResponse>, Status> {
        Err(not_yet("CreateRecoveryCode"))
    }

    async fn begin_recovery(
        &self,
        _request: Request<BeginRecoveryRequest>,
    ) -> Result<Response<BeginRecoveryResponse>, Status> {
        Err(not_yet("BeginRecovery"))
    }

    async fn verify_email(
        &self,
        _request: Request<VerifyEmailRequest>,
    ) -> Result<Response<VerifyEmailResponse>, Status> {
        Err(not_yet("VerifyEmail"))
    }

    async fn recover_account(
        &self,
        _request: Request<RecoverAccountRequest>,
    ) -> Result<Response<RecoverAccountResponse>, Status> {
        Err(not_yet("RecoverAccount"))
    }

    async fn get_recovery_status(
        &self,
        _request: Request<GetRecoveryStatusRequest>,
    ) -> Result<Response<GetRecoveryStatusResponse>, Status> {
        Err(not_yet("GetRecoveryStatus"))
    }

    async fn revoke_recovery_code(
        &self,
        _request: Request<RevokeRecoveryCodeRequest>,
    ) -> Result<Response<RevokeRecoveryCodeResponse>, Status> {
        Err(not_yet("RevokeRecoveryCode"))
    }

    async fn update_recovery_email(
        &self,
        _request: Request<UpdateRecoveryEmailRequest>,
    ) -> Result<Response<UpdateRecoveryEmailResponse>, Status> {
        Err(not_yet("UpdateRecoveryEmail"))
    }

    async fn list_audit_events(
        &self,
        _request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        Err(not_yet("ListAuditEvents"))
    }
}
