//! The API contract, checked from inside this repository: every name other services are
//! written against (the service, each RPC with its request and response fields and their
//! types, the error reasons, the health and reflection services) as the running binary serves
//! them through reflection. The table below is the contract as written for callers; a rename
//! fails here before it reaches one. (The platform's own checker, `../shared/tools/check-contract`,
//! runs too when it is present: `server.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::BTreeMap;

use prost::Message as _;
use prost_types::{
    DescriptorProto, FileDescriptorProto,
    field_descriptor_proto::{Label, Type},
};
use recovery_e2e::Server;
use tokio_stream::StreamExt as _;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

const PACKAGE: &str = "identity.recovery.v1";
const SERVICE: &str = "identity.recovery.v1.RecoveryService";

/// (RPC, request fields, response fields); a field is `name:type`, `[]` marks repeated.
const RPCS: &[(&str, &[&str], &[&str])] = &[
    (
        "CreateRecoveryCode",
        &["account_id:string", "email:string"],
        &[
            "recovery_code:string",
            "code_id:string",
            "created_at:.google.protobuf.Timestamp",
        ],
    ),
    (
        "BeginRecovery",
        &["email:string", "client:.identity.recovery.v1.ClientContext"],
        &["flow_id:string", "expires_at:.google.protobuf.Timestamp"],
    ),
    (
        "VerifyEmail",
        &["flow_id:string", "email_code:string"],
        &["verified_until:.google.protobuf.Timestamp"],
    ),
    (
        "RecoverAccount",
        &["flow_id:string", "recovery_code:string"],
        &[
            "account_id:string",
            "revoke_all_sessions:bool",
            "new_recovery_code:string",
        ],
    ),
    (
        "GetRecoveryStatus",
        &["account_id:string"],
        &[
            "enrolled:bool",
            "code_id:string",
            "created_at:.google.protobuf.Timestamp",
            "last_used_at:.google.protobuf.Timestamp",
            "use_count:uint32",
            "locked_until:.google.protobuf.Timestamp",
            "email_hint:string",
        ],
    ),
    (
        "RevokeRecoveryCode",
        &["account_id:string", "reason:string"],
        &["revoked_at:.google.protobuf.Timestamp"],
    ),
    (
        "UpdateRecoveryEmail",
        &["account_id:string", "email:string"],
        &["updated_at:.google.protobuf.Timestamp"],
    ),
    (
        "ListAuditEvents",
        &["account_id:string", "page_size:int32", "page_token:string"],
        &[
            "events:[].identity.recovery.v1.AuditEvent",
            "next_page_token:string",
            "chain_valid:bool",
            "first_broken_event_id:string",
        ],
    ),
    // Families (API.md, "Families: organizer-assisted recovery").
    (
        "PutFamilyMember",
        &[
            "family_id:string",
            "account_id:string",
            "role:.identity.recovery.v1.FamilyRole",
            "email:string",
        ],
        &["updated_at:.google.protobuf.Timestamp"],
    ),
    (
        "RemoveFamilyMember",
        &["family_id:string", "account_id:string"],
        &["removed_at:.google.protobuf.Timestamp"],
    ),
    (
        "GetFamilyRecoveryStatus",
        &["family_id:string"],
        &[
            "members:[].identity.recovery.v1.FamilyMemberStatus",
            "organizer_count:uint32",
            "single_organizer:bool",
        ],
    ),
    (
        "BeginAssistedRecovery",
        &[
            "family_id:string",
            "organizer_account_id:string",
            "member_account_id:string",
            "client:.identity.recovery.v1.ClientContext",
        ],
        &[
            "assisted_flow_id:string",
            "expires_at:.google.protobuf.Timestamp",
        ],
    ),
    (
        "VerifyAssistedRecovery",
        &["assisted_flow_id:string", "email_code:string"],
        &["verified_until:.google.protobuf.Timestamp"],
    ),
    (
        "CompleteAssistedRecovery",
        &["assisted_flow_id:string", "organizer_account_id:string"],
        &[
            "account_id:string",
            "revoke_all_sessions:bool",
            "recovery_code_revoked:bool",
        ],
    ),
    (
        "CancelAssistedRecovery",
        &["assisted_flow_id:string", "account_id:string"],
        &["cancelled_at:.google.protobuf.Timestamp"],
    ),
    // Recovery contacts.
    (
        "InviteRecoveryContact",
        &[
            "account_id:string",
            "contact_account_id:string",
            "contact_email:string",
        ],
        &[
            "invited_at:.google.protobuf.Timestamp",
            "expires_at:.google.protobuf.Timestamp",
        ],
    ),
    (
        "AcceptRecoveryContact",
        &["account_id:string", "contact_account_id:string"],
        &["active_from:.google.protobuf.Timestamp"],
    ),
    (
        "RemoveRecoveryContact",
        &["account_id:string", "contact_account_id:string"],
        &["removed_at:.google.protobuf.Timestamp"],
    ),
    (
        "SetRecoveryContactThreshold",
        &["account_id:string", "threshold:uint32"],
        &["updated_at:.google.protobuf.Timestamp"],
    ),
    (
        "GetRecoveryContacts",
        &["account_id:string"],
        &[
            "contacts:[].identity.recovery.v1.RecoveryContact",
            "threshold:uint32",
            "active_count:uint32",
        ],
    ),
    (
        "BeginContactRecovery",
        &["email:string", "client:.identity.recovery.v1.ClientContext"],
        &[
            "contact_flow_id:string",
            "confirmation_code:string",
            "expires_at:.google.protobuf.Timestamp",
        ],
    ),
    (
        "ListContactRequests",
        &["contact_account_id:string"],
        &["requests:[].identity.recovery.v1.ContactRequest"],
    ),
    (
        "VouchForRecovery",
        &[
            "contact_flow_id:string",
            "contact_account_id:string",
            "confirmation_code:string",
        ],
        &[
            "vouches:uint32",
            "threshold:uint32",
            "completes_at:.google.protobuf.Timestamp",
        ],
    ),
    (
        "CancelContactRecovery",
        &["contact_flow_id:string", "account_id:string"],
        &["cancelled_at:.google.protobuf.Timestamp"],
    ),
    (
        "CompleteContactRecovery",
        &["contact_flow_id:string"],
        &["account_id:string", "revoke_all_sessions:bool"],
    ),
];

/// Message types the contract names, with their fields.
const MESSAGES: &[(&str, &[&str])] = &[
    ("ClientContext", &["ip_address:string", "user_agent:string"]),
    (
        "AuditEvent",
        &[
            "event_id:string",
            "account_id:string",
            "kind:.identity.recovery.v1.AuditEventKind",
            "occurred_at:.google.protobuf.Timestamp",
            "client:.identity.recovery.v1.ClientContext",
            "details:[].identity.recovery.v1.AuditEvent.DetailsEntry",
        ],
    ),
    (
        "FamilyMemberStatus",
        &[
            "account_id:string",
            "role:.identity.recovery.v1.FamilyRole",
            "email_hint:string",
            "recovery_code_enrolled:bool",
            "assisted_recovery_pending:bool",
        ],
    ),
    (
        "RecoveryContact",
        &[
            "contact_account_id:string",
            "state:.identity.recovery.v1.RecoveryContactState",
            "email_hint:string",
            "active_from:.google.protobuf.Timestamp",
        ],
    ),
    (
        "ContactRequest",
        &[
            "contact_flow_id:string",
            "account_id:string",
            "client:.identity.recovery.v1.ClientContext",
            "requested_at:.google.protobuf.Timestamp",
            "expires_at:.google.protobuf.Timestamp",
            "vouched:bool",
        ],
    ),
];

/// Enums the contract names, with the values callers send or branch on.
const ENUMS: &[(&str, &[&str])] = &[
    (
        "FamilyRole",
        &["FAMILY_ROLE_ORGANIZER", "FAMILY_ROLE_MEMBER"],
    ),
    (
        "RecoveryContactState",
        &[
            "RECOVERY_CONTACT_STATE_INVITED",
            "RECOVERY_CONTACT_STATE_WAITING",
            "RECOVERY_CONTACT_STATE_ACTIVE",
        ],
    ),
];

/// The reasons of the contract (the proto, docs/design.md), bare (the enum carries buf's `ERROR_REASON_` prefix).
const REASONS: &[&str] = &[
    "INVALID_EMAIL",
    "INVALID_ACCOUNT_ID",
    "RECOVERY_CODE_MALFORMED",
    "EMAIL_CODE_MALFORMED",
    "FLOW_NOT_FOUND",
    "FLOW_EXPIRED",
    "FLOW_COMPLETED",
    "EMAIL_NOT_VERIFIED",
    "EMAIL_CODE_MISMATCH",
    "RECOVERY_CODE_MISMATCH",
    "TOO_MANY_ATTEMPTS",
    "RECOVERY_LOCKED",
    "NOT_ENROLLED",
    "RATE_LIMITED",
    "OVERLOADED",
    "CALLER_NOT_ALLOWED",
    "UNAVAILABLE",
    "EMAIL_IN_USE",
    "NOT_FAMILY_ORGANIZER",
    "NOT_FAMILY_MEMBER",
    "SELF_RECOVERY_NOT_ALLOWED",
    "NOT_RECOVERY_CONTACT",
    "TOO_MANY_CONTACTS",
    "CONFIRMATION_CODE_MISMATCH",
    "RECOVERY_PENDING",
];

/// Every file the server describes through reflection v1, dependencies included.
async fn served_files(server: &Server) -> BTreeMap<String, FileDescriptorProto> {
    let mut client = ServerReflectionClient::new(server.channel().await.unwrap());
    let mut files = BTreeMap::new();
    let mut wanted = vec![
        MessageRequest::FileContainingSymbol(SERVICE.to_owned()),
        MessageRequest::FileContainingSymbol(format!("{PACKAGE}.ErrorReason")),
    ];
    while let Some(request) = wanted.pop() {
        let stream = client
            .server_reflection_info(tokio_stream::once(ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request),
            }))
            .await
            .unwrap()
            .into_inner();
        let responses: Vec<_> = stream.collect().await;
        for response in responses {
            let Some(MessageResponse::FileDescriptorResponse(found)) =
                response.unwrap().message_response
            else {
                panic!("reflection answered without a file descriptor");
            };
            for bytes in found.file_descriptor_proto {
                let file = FileDescriptorProto::decode(bytes.as_slice()).unwrap();
                for dependency in &file.dependency {
                    if !files.contains_key(dependency) {
                        wanted.push(MessageRequest::FileByFilename(dependency.clone()));
                    }
                }
                files.insert(file.name().to_owned(), file);
            }
        }
    }
    files
}

fn fields(message: &DescriptorProto) -> Vec<String> {
    message
        .field
        .iter()
        .map(|f| {
            let repeated = if f.label() == Label::Repeated {
                "[]"
            } else {
                ""
            };
            let ty = match f.r#type() {
                Type::Message | Type::Enum => f.type_name().to_owned(),
                Type::String => "string".into(),
                Type::Bool => "bool".into(),
                Type::Uint32 => "uint32".into(),
                Type::Int32 => "int32".into(),
                other => format!("{other:?}"),
            };
            format!("{}:{repeated}{ty}", f.name())
        })
        .collect()
}

#[tokio::test]
async fn the_served_api_has_every_name_of_the_contract() {
    let server = Server::start().unwrap();
    server.wait_serving("").await.unwrap();
    let files = served_files(&server).await;
    let ours: Vec<&FileDescriptorProto> =
        files.values().filter(|f| f.package() == PACKAGE).collect();
    let message = |name: &str| -> &DescriptorProto {
        ours.iter()
            .flat_map(|f| &f.message_type)
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("message {name} is not served"))
    };
    let service = ours
        .iter()
        .flat_map(|f| &f.service)
        .find(|s| s.name() == "RecoveryService")
        .expect("service RecoveryService");

    for (rpc, request, response) in RPCS {
        let method = service
            .method
            .iter()
            .find(|m| m.name() == *rpc)
            .unwrap_or_else(|| panic!("rpc {rpc} is not served"));
        assert!(
            !method.client_streaming() && !method.server_streaming(),
            "{rpc} is unary"
        );
        for (type_name, want) in [
            (method.input_type(), request),
            (method.output_type(), response),
        ] {
            let short = type_name.rsplit('.').next().unwrap();
            let have = fields(message(short));
            for field in *want {
                assert!(
                    have.contains(&(*field).to_owned()),
                    "{rpc}: {short} lacks {field} (has {have:?})"
                );
            }
        }
    }
    for (name, want) in MESSAGES {
        let have = fields(message(name));
        for field in *want {
            assert!(
                have.contains(&(*field).to_owned()),
                "{name} lacks {field} (has {have:?})"
            );
        }
    }
    for (name, values) in ENUMS {
        let have: Vec<&str> = ours
            .iter()
            .flat_map(|f| &f.enum_type)
            .find(|e| e.name() == *name)
            .unwrap_or_else(|| panic!("enum {name} is not served"))
            .value
            .iter()
            .map(|v| v.name())
            .collect();
        for value in *values {
            assert!(have.contains(value), "{name} lacks {value} (has {have:?})");
        }
    }
    let reasons: Vec<String> = ours
        .iter()
        .flat_map(|f| &f.enum_type)
        .find(|e| e.name() == "ErrorReason")
        .expect("enum ErrorReason")
        .value
        .iter()
        .map(|v| v.name().trim_start_matches("ERROR_REASON_").to_owned())
        .collect();
    for reason in REASONS {
        assert!(
            reasons.iter().any(|r| r == reason),
            "ErrorReason lacks {reason}"
        );
    }
}

#[tokio::test]
async fn health_and_both_reflection_versions_are_served() {
    let server = Server::start().unwrap();
    server.wait_serving("").await.unwrap();
    server
        .wait_serving("identity.recovery.v1.RecoveryService")
        .await
        .unwrap();
    let mut v1alpha =
        tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
            server.channel().await.unwrap(),
        );
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let responses: Vec<_> = v1alpha
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    let mut v1 = ServerReflectionClient::new(server.channel().await.unwrap());
    let v1_responses: Vec<_> = v1
        .server_reflection_info(tokio_stream::once(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    // grpcurl 1.8 speaks only v1alpha; newer clients v1. Each lists the services.
    for listed in [format!("{responses:?}"), format!("{v1_responses:?}")] {
        for service in [SERVICE, "grpc.health.v1.Health"] {
            assert!(
                listed.contains(service),
                "{service} is not listed: {listed}"
            );
        }
    }
    assert!(format!("{responses:?}").contains("grpc.reflection.v1alpha.ServerReflection"));
}
