//! Mutual TLS and caller roles: client certificate SANs map to roles through RECOVERY_CALLERS,
//! and each RPC answers CALLER_NOT_ALLOWED to a role it is not for.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::Path;

use rcgen::SanType;
use recovery_e2e::pki::{Pki, dns, uri};
use recovery_e2e::{Options, Server, run};
use recovery_proto::v1::{self as api, recovery_service_client::RecoveryServiceClient};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_types::StatusExt as _;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const AUTH_ID: &str = "spiffe://platform/ns/auth/sa/auth-service";

async fn channel(
    server: &Server,
    ca: &str,
    client: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

#[tokio::test]
async fn client_certificates_map_to_roles_and_roles_to_rpcs() {
    let pki = Pki::new();
    let (server_cert, server_key) = pki.issue(vec![
        dns("localhost"),
        SanType::IpAddress("127.0.0.1".parse().unwrap()),
    ]);
    let auth = pki.issue(vec![uri(AUTH_ID)]);
    let operator = pki.issue(vec![dns("oncall.ops.internal")]);
    let stranger = pki.issue(vec![dns("someone.else.internal")]);
    let ca = pki.write("ca.pem", &pki.ca_pem);
    let server = Server::start_with(
        Options::default()
            .env("RECOVERY_SECRET_KEY", KEY)
            .env("RECOVERY_TLS_CERT", pki.write("server.pem", &server_cert))
            .env("RECOVERY_TLS_KEY", pki.write("server.key", &server_key))
            .env("RECOVERY_TLS_CLIENT_CA", ca.clone())
            .env(
                "RECOVERY_CALLERS",
                format!("{AUTH_ID}=auth,dns:oncall.ops.internal=operator"),
            ),
    )
    .unwrap();

    let mut as_auth =
        RecoveryServiceClient::new(channel(&server, &pki.ca_pem, Some(&auth)).await.unwrap());
    let mut as_operator = RecoveryServiceClient::new(
        channel(&server, &pki.ca_pem, Some(&operator))
            .await
            .unwrap(),
    );
    let mut as_stranger = RecoveryServiceClient::new(
        channel(&server, &pki.ca_pem, Some(&stranger))
            .await
            .unwrap(),
    );

    as_auth
        .create_recovery_code(api::CreateRecoveryCodeRequest {
            account_id: "acct".into(),
            email: "ann@example.com".into(),
        })
        .await
        .unwrap();
    let status = api::GetRecoveryStatusRequest {
        account_id: "acct".into(),
    };
    assert!(
        as_auth
            .get_recovery_status(status.clone())
            .await
            .unwrap()
            .into_inner()
            .enrolled
    );
    assert!(
        as_operator
            .get_recovery_status(status.clone())
            .await
            .unwrap()
            .into_inner()
            .enrolled
    );
    let audit = api::ListAuditEventsRequest {
        account_id: "acct".into(),
        ..Default::default()
    };
    assert!(
        !as_operator
            .list_audit_events(audit.clone())
            .await
            .unwrap()
            .into_inner()
            .events
            .is_empty()
    );

    let denied = [
        as_auth
            .list_audit_events(audit.clone())
            .await
            .map(drop)
            .unwrap_err(),
        as_operator
            .create_recovery_code(api::CreateRecoveryCodeRequest {
                account_id: "x".into(),
                email: "x@example.com".into(),
            })
            .await
            .map(drop)
            .unwrap_err(),
        as_operator
            .begin_recovery(api::BeginRecoveryRequest {
                email: "ann@example.com".into(),
                client: None,
            })
            .await
            .map(drop)
            .unwrap_err(),
        as_stranger
            .get_recovery_status(status.clone())
            .await
            .map(drop)
            .unwrap_err(),
        as_stranger
            .list_audit_events(audit)
            .await
            .map(drop)
            .unwrap_err(),
    ];
    for err in denied {
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::PermissionDenied, "CALLER_NOT_ALLOWED".into()),
            "{err:?}"
        );
    }

    // Without a client certificate the handshake itself fails: a transport error (the
    // connection or the call never reaches the service), never an answer of the service.
    let anonymous = match channel(&server, &pki.ca_pem, None).await {
        Ok(channel) => RecoveryServiceClient::new(channel)
            .get_recovery_status(status)
            .await
            .map(drop),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    let err = anonymous.unwrap_err();
    // The code varies with when the refused handshake surfaces (UNAVAILABLE, CANCELLED,
    // UNKNOWN); what holds is that it is a transport failure.
    assert!(
        std::error::Error::source(&err)
            .is_some_and(|source| source.is::<tonic::transport::Error>())
            || err.code() == Code::Unavailable,
        "{err:?}"
    );
    assert!(
        err.get_details_error_info().is_none(),
        "the service itself never answered: {err:?}"
    );

    // The healthcheck subcommand speaks mutual TLS too.
    let (cert, key) = (
        pki.write("op.pem", &operator.0),
        pki.write("op.key", &operator.1),
    );
    let addr = server.addr.to_string();
    let (ok, stdout, _) = run(
        Path::new(pki.dir.path()),
        &[],
        &[
            "healthcheck",
            "--addr",
            &addr,
            "--tls-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    )
    .unwrap();
    assert!(ok.success(), "{stdout}");
}

#[test]
fn callers_without_a_client_ca_are_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("RECOVERY_CALLERS".to_owned(), format!("{AUTH_ID}=auth"))];
    let (status, _, stderr) = run(dir.path(), &env, &[]).unwrap();
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr.contains("RECOVERY_CALLERS: needs RECOVERY_TLS_CLIENT_CA"),
        "{stderr}"
    );
}

/// Every RPC × every role, as a table: the roles the contract names get past authorization
/// (their answer is anything but CALLER_NOT_ALLOWED), others get PERMISSION_DENIED /
/// CALLER_NOT_ALLOWED, a certificate of the CA whose SAN maps to no role is refused
/// everywhere, and no certificate gets no answer from the service at all.
#[tokio::test]
async fn every_rpc_answers_every_role_as_the_contract_says() {
    let pki = Pki::new();
    let (server_cert, server_key) = pki.issue(vec![
        dns("localhost"),
        SanType::IpAddress("127.0.0.1".parse().unwrap()),
    ]);
    let auth = pki.issue(vec![uri(AUTH_ID)]);
    let operator = pki.issue(vec![dns("oncall.ops.internal")]);
    let stranger = pki.issue(vec![dns("someone.else.internal")]);
    let ca = pki.write("ca.pem", &pki.ca_pem);
    let server = Server::start_with(
        Options::default()
            .env("RECOVERY_SECRET_KEY", KEY)
            .env("RECOVERY_TLS_CERT", pki.write("server.pem", &server_cert))
            .env("RECOVERY_TLS_KEY", pki.write("server.key", &server_key))
            .env("RECOVERY_TLS_CLIENT_CA", ca)
            .env(
                "RECOVERY_CALLERS",
                format!("{AUTH_ID}=auth,dns:oncall.ops.internal=operator"),
            ),
    )
    .unwrap();
    // (RPC, auth allowed, operator allowed)
    let table = [
        ("CreateRecoveryCode", true, false),
        ("BeginRecovery", true, false),
        ("VerifyEmail", true, false),
        ("RecoverAccount", true, false),
        ("GetRecoveryStatus", true, true),
        ("RevokeRecoveryCode", true, true),
        ("UpdateRecoveryEmail", true, false),
        ("ListAuditEvents", false, true),
        ("PutFamilyMember", true, false),
        ("RemoveFamilyMember", true, false),
        ("GetFamilyRecoveryStatus", true, true),
        ("BeginAssistedRecovery", true, false),
        ("VerifyAssistedRecovery", true, false),
        ("CompleteAssistedRecovery", true, false),
        ("CancelAssistedRecovery", true, false),
        ("StartZeroKnowledgeEnrollment", true, false),
        ("FinishZeroKnowledgeEnrollment", true, false),
        ("StartZeroKnowledgeRecovery", true, false),
        ("FinishZeroKnowledgeRecovery", true, false),
    ];
    async fn call(c: &mut RecoveryServiceClient<Channel>, rpc: &str) -> Result<(), tonic::Status> {
        match rpc {
            "CreateRecoveryCode" => c
                .create_recovery_code(api::CreateRecoveryCodeRequest::default())
                .await
                .map(drop),
            "BeginRecovery" => c
                .begin_recovery(api::BeginRecoveryRequest::default())
                .await
                .map(drop),
            "VerifyEmail" => c
                .verify_email(api::VerifyEmailRequest::default())
                .await
                .map(drop),
            "RecoverAccount" => c
                .recover_account(api::RecoverAccountRequest::default())
                .await
                .map(drop),
            "GetRecoveryStatus" => c
                .get_recovery_status(api::GetRecoveryStatusRequest::default())
                .await
                .map(drop),
            "RevokeRecoveryCode" => c
                .revoke_recovery_code(api::RevokeRecoveryCodeRequest::default())
                .await
                .map(drop),
            "UpdateRecoveryEmail" => c
                .update_recovery_email(api::UpdateRecoveryEmailRequest::default())
                .await
                .map(drop),
            "ListAuditEvents" => c
                .list_audit_events(api::ListAuditEventsRequest::default())
                .await
                .map(drop),
            "PutFamilyMember" => c
                .put_family_member(api::PutFamilyMemberRequest::default())
                .await
                .map(drop),
            "RemoveFamilyMember" => c
                .remove_family_member(api::RemoveFamilyMemberRequest::default())
                .await
                .map(drop),
            "GetFamilyRecoveryStatus" => c
                .get_family_recovery_status(api::GetFamilyRecoveryStatusRequest::default())
                .await
                .map(drop),
            "BeginAssistedRecovery" => c
                .begin_assisted_recovery(api::BeginAssistedRecoveryRequest::default())
                .await
                .map(drop),
            "VerifyAssistedRecovery" => c
                .verify_assisted_recovery(api::VerifyAssistedRecoveryRequest::default())
                .await
                .map(drop),
            "CompleteAssistedRecovery" => c
                .complete_assisted_recovery(api::CompleteAssistedRecoveryRequest::default())
                .await
                .map(drop),
            "CancelAssistedRecovery" => c
                .cancel_assisted_recovery(api::CancelAssistedRecoveryRequest::default())
                .await
                .map(drop),
            "StartZeroKnowledgeEnrollment" => {
                c.start_zero_knowledge_enrollment(
                    api::StartZeroKnowledgeEnrollmentRequest::default(),
                )
                .await
                .map(drop)
            }
            "FinishZeroKnowledgeEnrollment" => c
                .finish_zero_knowledge_enrollment(
                    api::FinishZeroKnowledgeEnrollmentRequest::default(),
                )
                .await
                .map(drop),
            "StartZeroKnowledgeRecovery" => c
                .start_zero_knowledge_recovery(api::StartZeroKnowledgeRecoveryRequest::default())
                .await
                .map(drop),
            "FinishZeroKnowledgeRecovery" => c
                .finish_zero_knowledge_recovery(api::FinishZeroKnowledgeRecoveryRequest::default())
                .await
                .map(drop),
            other => panic!("{other}"),
        }
    }
    let mut as_auth =
        RecoveryServiceClient::new(channel(&server, &pki.ca_pem, Some(&auth)).await.unwrap());
    let mut as_operator = RecoveryServiceClient::new(
        channel(&server, &pki.ca_pem, Some(&operator))
            .await
            .unwrap(),
    );
    let mut as_stranger = RecoveryServiceClient::new(
        channel(&server, &pki.ca_pem, Some(&stranger))
            .await
            .unwrap(),
    );
    for (rpc, auth_allowed, operator_allowed) in table {
        for (who, client, allowed) in [
            ("auth", &mut as_auth, auth_allowed),
            ("operator", &mut as_operator, operator_allowed),
            ("unknown SAN", &mut as_stranger, false),
        ] {
            // Empty requests: an allowed caller gets the contract's INVALID_ARGUMENT or
            // NOT_FOUND reason, never CALLER_NOT_ALLOWED.
            let err = call(client, rpc).await.unwrap_err();
            let denied =
                err.code() == Code::PermissionDenied && reason(&err) == "CALLER_NOT_ALLOWED";
            assert_eq!(!denied, allowed, "{rpc} as {who}: {err:?}");
            assert!(
                err.get_details_error_info().is_some(),
                "{rpc} as {who}: {err:?}"
            );
        }
        // No certificate: the handshake fails, the service never answers.
        let anonymous = match channel(&server, &pki.ca_pem, None).await {
            Ok(channel) => call(&mut RecoveryServiceClient::new(channel), rpc).await,
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        };
        let err = anonymous.unwrap_err();
        assert!(
            err.get_details_error_info().is_none(),
            "{rpc} without a certificate: {err:?}"
        );
    }
}
