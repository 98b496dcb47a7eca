//! The bytes of a gRPC message body decoded as every request message of
//! `identity.recovery.v1`; each message that decodes re-encodes to itself, and its string
//! fields go through the domain's parsers as the service would feed them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use recovery_proto::v1;
use recovery_service_fuzz as check;

/// Decodes `data` as `M`; a decoded message must survive encode and decode unchanged.
fn decode<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) -> Option<M> {
    let message = M::decode(data).ok()?;
    let again = M::decode(message.encode_to_vec().as_slice());
    assert!(
        again.as_ref().is_ok_and(|again| *again == message),
        "{message:?}"
    );
    Some(message)
}

fuzz_target!(|data: &[u8]| {
    if let Some(req) = decode::<v1::CreateRecoveryCodeRequest>(data) {
        check::check_account_id(&req.account_id);
        check::check_email(&req.email);
    }
    if let Some(req) = decode::<v1::BeginRecoveryRequest>(data) {
        check::check_email(&req.email);
        let client = req.client.unwrap_or_default();
        check::check_client(&client.ip_address, &client.user_agent);
    }
    if let Some(req) = decode::<v1::VerifyEmailRequest>(data) {
        check::check_email_code(&req.email_code);
    }
    if let Some(req) = decode::<v1::RecoverAccountRequest>(data) {
        check::check_recovery_code(&req.recovery_code);
    }
    if let Some(req) = decode::<v1::GetRecoveryStatusRequest>(data) {
        check::check_account_id(&req.account_id);
    }
    if let Some(req) = decode::<v1::RevokeRecoveryCodeRequest>(data) {
        check::check_account_id(&req.account_id);
        check::check_truncate(req.reason.trim(), 500);
    }
    if let Some(req) = decode::<v1::UpdateRecoveryEmailRequest>(data) {
        check::check_account_id(&req.account_id);
        check::check_email(&req.email);
    }
    if let Some(req) = decode::<v1::ListAuditEventsRequest>(data) {
        check::check_account_id(&req.account_id);
        check::check_page_token(&req.page_token);
    }
    if let Some(req) = decode::<v1::StartZeroKnowledgeEnrollmentRequest>(data) {
        check::check_account_id(&req.account_id);
        check::check_opaque_messages(&req.registration_request);
    }
    if let Some(req) = decode::<v1::FinishZeroKnowledgeEnrollmentRequest>(data) {
        check::check_account_id(&req.account_id);
        check::check_email(&req.email);
        check::check_opaque_messages(&req.registration_record);
    }
    if let Some(req) = decode::<v1::StartZeroKnowledgeRecoveryRequest>(data) {
        check::check_opaque_messages(&req.credential_request);
    }
    if let Some(req) = decode::<v1::FinishZeroKnowledgeRecoveryRequest>(data) {
        check::check_opaque_messages(&req.credential_finalization);
    }
    if let Some(req) = decode::<v1::ForgetAccountRequest>(data) {
        check::check_account_id(&req.account_id);
        check::check_truncate(req.reason.trim(), 200);
    }
    // Families.
    if let Some(req) = decode::<v1::PutFamilyMemberRequest>(data) {
        check::check_account_id(&req.account_id);
        check::check_email(&req.email);
    }
    if let Some(req) = decode::<v1::RemoveFamilyMemberRequest>(data) {
        check::check_account_id(&req.account_id);
    }
    decode::<v1::GetFamilyRecoveryStatusRequest>(data);
    if let Some(req) = decode::<v1::BeginAssistedRecoveryRequest>(data) {
        check::check_account_id(&req.organizer_account_id);
        check::check_account_id(&req.member_account_id);
        let client = req.client.unwrap_or_default();
        check::check_client(&client.ip_address, &client.user_agent);
    }
    if let Some(req) = decode::<v1::VerifyAssistedRecoveryRequest>(data) {
        check::check_email_code(&req.email_code);
    }
    if let Some(req) = decode::<v1::CompleteAssistedRecoveryRequest>(data) {
        check::check_account_id(&req.organizer_account_id);
    }
    if let Some(req) = decode::<v1::CancelAssistedRecoveryRequest>(data) {
        check::check_account_id(&req.account_id);
    }
    // Recovery contacts.
    if let Some(req) = decode::<v1::InviteRecoveryContactRequest>(data) {
        check::check_account_id(&req.account_id);
        check::check_account_id(&req.contact_account_id);
        check::check_email(&req.contact_email);
    }
    for (owner, contact) in [
        decode::<v1::AcceptRecoveryContactRequest>(data)
            .map(|r| (r.account_id, r.contact_account_id)),
        decode::<v1::RemoveRecoveryContactRequest>(data)
            .map(|r| (r.account_id, r.contact_account_id)),
    ]
    .into_iter()
    .flatten()
    {
        check::check_account_id(&owner);
        check::check_account_id(&contact);
    }
    if let Some(req) = decode::<v1::SetRecoveryContactThresholdRequest>(data) {
        check::check_account_id(&req.account_id);
    }
    if let Some(req) = decode::<v1::GetRecoveryContactsRequest>(data) {
        check::check_account_id(&req.account_id);
    }
    if let Some(req) = decode::<v1::BeginContactRecoveryRequest>(data) {
        check::check_email(&req.email);
        let client = req.client.unwrap_or_default();
        check::check_client(&client.ip_address, &client.user_agent);
    }
    if let Some(req) = decode::<v1::ListContactRequestsRequest>(data) {
        check::check_account_id(&req.contact_account_id);
    }
    if let Some(req) = decode::<v1::VouchForRecoveryRequest>(data) {
        check::check_account_id(&req.contact_account_id);
        check::check_email_code(&req.confirmation_code);
    }
    if let Some(req) = decode::<v1::CancelContactRecoveryRequest>(data) {
        check::check_account_id(&req.account_id);
    }
    decode::<v1::CompleteContactRecoveryRequest>(data);
});
