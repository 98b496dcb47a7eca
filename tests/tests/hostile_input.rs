//! Hostile input through the real binary, spoken as raw HTTP/2: thousands of malformed calls
//! from many connections, oversized messages, a thousand streams on one connection, header
//! floods, invalid UTF-8 in string fields, and a rapid-reset flood. Afterwards the server is
//! SERVING, a whole recovery still works, and its memory stayed bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use recovery_e2e::{Mailbox, Options, Server};
use recovery_proto::v1::{self as api, recovery_service_client::RecoveryServiceClient};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const SERVICE: &str = "/identity.recovery.v1.RecoveryService";
const RPCS: [&str; 8] = [
    "CreateRecoveryCode",
    "BeginRecovery",
    "VerifyEmail",
    "RecoverAccount",
    "GetRecoveryStatus",
    "RevokeRecoveryCode",
    "UpdateRecoveryEmail",
    "ListAuditEvents",
];

async fn connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn request(path: &str, header_flood: usize) -> http::Request<()> {
    let mut builder = http::Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for i in 0..header_flood {
        builder = builder.header(format!("x-flood-{i}"), "a".repeat(1024));
    }
    builder.body(()).unwrap()
}

/// One unary gRPC call with `message` as the protobuf body: the `grpc-status` the server
/// answered, or the HTTP/2 error that ended the stream.
async fn raw_call(
    client: &h2::client::SendRequest<Bytes>,
    path: &str,
    message: &[u8],
    header_flood: usize,
) -> Result<String, h2::Error> {
    let mut client = client.clone().ready().await?;
    let (response, mut stream) = client.send_request(request(path, header_flood), false)?;
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(message);
    stream.send_data(Bytes::from(frame), true)?;
    let response = response.await?;
    if let Some(status) = response.headers().get("grpc-status") {
        return Ok(status.to_str().unwrap().to_owned());
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(body
        .trailers()
        .await?
        .and_then(|t| t.get("grpc-status").map(|v| v.to_str().unwrap().to_owned()))
        .unwrap_or_else(|| "none".into()))
}

/// Bytes that are not a sensible message: a few shapes per index.
fn garbage(i: usize) -> Vec<u8> {
    match i % 6 {
        0 => vec![0xff; i % 300],
        1 => (0..(i % 500)).map(|b| (b * 31 + i) as u8).collect(),
        // Field 1, length-delimited, invalid UTF-8.
        2 => vec![0x0a, 0x04, 0xff, 0xfe, 0xc0, 0x80],
        // A length longer than the message.
        3 => vec![0x0a, 0x7f, b'a'],
        // Field 1 with control characters, NUL and a right-to-left override.
        4 => {
            let text = "ann\u{0}\r\nBcc: eve@evil.example\u{202e}@example.com".as_bytes();
            let mut m = vec![0x0a, u8::try_from(text.len()).unwrap()];
            m.extend_from_slice(text);
            m
        }
        _ => Vec::new(),
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// After the abuse: SERVING, a whole recovery works, memory bounded.
async fn still_fine(server: &Server) {
    let channel = server.channel().await.unwrap();
    let serving = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(serving.into_inner().status, 1, "SERVING");
    let mut c = RecoveryServiceClient::new(channel);
    let code = c
        .create_recovery_code(api::CreateRecoveryCodeRequest {
            account_id: "acct-after".into(),
            email: "after@example.com".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .recovery_code;
    let flow = c
        .begin_recovery(api::BeginRecoveryRequest {
            email: "after@example.com".into(),
            client: Some(api::ClientContext {
                ip_address: "198.51.100.200".into(),
                user_agent: "after".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .flow_id;
    let mail = Mailbox::new(server.dir.path().join("mail"))
        .wait_for("after@example.com", "verification code")
        .await
        .unwrap();
    c.verify_email(api::VerifyEmailRequest {
        flow_id: flow.clone(),
        email_code: mail.code().unwrap(),
    })
    .await
    .unwrap();
    let done = c
        .recover_account(api::RecoverAccountRequest {
            flow_id: flow,
            recovery_code: code,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.account_id, "acct-after");
    let rss = rss_kib(server.pid());
    assert!(rss < 128 * 1024, "RSS {rss} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_oversized_and_flooding_calls_are_refused_and_harmless() {
    let server = Server::start_with(
        Options::default()
            .env("RECOVERY_SECRET_KEY", KEY)
            .env("RECOVERY_STARTS_PER_IP_PER_MINUTE", "1000000")
            .env("RECOVERY_STARTS_PER_IP_PER_HOUR", "1000000"),
    )
    .unwrap();
    server.wait_serving("").await.unwrap();

    // 10,000 malformed calls from 64 connections: every one answered with a status other
    // than OK, INTERNAL or UNKNOWN (or the stream refused), none crashes anything.
    let mut tasks = tokio::task::JoinSet::new();
    for conn in 0..64 {
        let addr = server.addr;
        tasks.spawn(async move {
            let client = connect(addr).await;
            let mut answers = Vec::new();
            for i in (conn..10_000).step_by(64) {
                let path = format!("{SERVICE}/{}", RPCS[i % RPCS.len()]);
                answers.push(raw_call(&client, &path, &garbage(i), 0).await);
            }
            answers
        });
    }
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    while let Some(answers) = tasks.join_next().await {
        for answer in answers.unwrap() {
            let key = answer.unwrap_or_else(|e| format!("h2:{e}"));
            *statuses.entry(key).or_default() += 1;
        }
    }
    eprintln!("answers to 10,000 malformed calls: {statuses:?}");
    assert_eq!(statuses.values().sum::<usize>(), 10_000);
    // Nothing OK, nothing UNKNOWN or INTERNAL: bytes that are not the message are the
    // caller's fault (INVALID_ARGUMENT), as are hostile field values.
    for bad in ["0", "2", "13"] {
        assert!(!statuses.contains_key(bad), "{statuses:?}");
    }

    // 5 MiB messages on every RPC: refused by the transport's 64 KiB limit.
    let client = connect(server.addr).await;
    for rpc in RPCS {
        let answer = raw_call(
            &client,
            &format!("{SERVICE}/{rpc}"),
            &vec![b'a'; 5 << 20],
            0,
        )
        .await;
        match answer {
            Ok(status) => assert!(
                status == "8" || status == "11",
                "{rpc}: 5 MiB answered {status}"
            ),
            Err(e) => assert!(!e.is_io(), "{rpc}: {e}"),
        }
    }

    // 1,000 streams on one connection: answered 128 at a time.
    let client = connect(server.addr).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let client = client.clone();
        calls.spawn(async move {
            let body = api::GetRecoveryStatusRequest {
                account_id: format!("acct-{i}"),
            };
            raw_call(
                &client,
                &format!("{SERVICE}/GetRecoveryStatus"),
                &prost::Message::encode_to_vec(&body),
                0,
            )
            .await
        });
    }
    let mut ok = 0;
    let mut other = std::collections::BTreeMap::<String, usize>::new();
    while let Some(answer) = calls.join_next().await {
        match answer.unwrap() {
            Ok(status) if status == "0" => ok += 1,
            answer => *other.entry(format!("{answer:?}")).or_default() += 1,
        }
    }
    eprintln!("1,000 streams on one connection: {ok} OK, others {other:?}");
    // Usually all 1,000; at least a full window of 128 concurrent streams, and nothing the
    // service itself refused (anything else is the client's HTTP/2 stream bookkeeping).
    assert!(ok >= 128, "{ok} OK, others {other:?}");
    assert!(other.keys().all(|k| k.starts_with("Err(")), "{other:?}");

    // A header flood (200 headers of 1 KiB, over the 16 KiB list limit) is refused; the
    // server goes on serving others.
    let flooder = connect(server.addr).await;
    let flooded = raw_call(&flooder, &format!("{SERVICE}/GetRecoveryStatus"), &[], 200).await;
    assert!(
        !matches!(flooded.as_deref(), Ok("0")),
        "a 200 KiB header list was served: {flooded:?}"
    );

    still_fine(&server).await;
}

/// A rapid-reset flood (HEADERS immediately followed by RST_STREAM, thousands of times on one
/// connection) gets that connection closed; a fresh connection still works. A caller whose
/// deadlines expire in a burst is another matter: `hostile.rs` shows it keeps its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rapid_reset_flood_is_cut_off() {
    let server = Server::start_with(Options::default().env("RECOVERY_SECRET_KEY", KEY)).unwrap();
    server.wait_serving("").await.unwrap();
    let client = connect(server.addr).await;
    let mut cut_off = false;
    for _ in 0..20_000 {
        let Ok(mut ready) = client.clone().ready().await else {
            cut_off = true;
            break;
        };
        match ready.send_request(request(&format!("{SERVICE}/GetRecoveryStatus"), 0), false) {
            Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(_) => {
                cut_off = true;
                break;
            }
        }
    }
    assert!(
        cut_off,
        "20,000 HEADERS+RST_STREAM and the connection still stands"
    );
    still_fine(&server).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}
