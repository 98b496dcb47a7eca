//! Traces and metrics reach an OTLP collector (an in-process receiver here): one SERVER span
//! per RPC with the RPC attributes, child spans for the domain, hashing and database, the
//! caller's trace continued, the trace id in every log line of the request; and no secret in
//! anything exported or logged during a whole recovery.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::{common::v1::any_value::Value, trace::v1::Span};
use recovery_e2e::{Mailbox, Options, Server, device, otlp::Collector};
use recovery_proto::v1::{
    self as api, ClientContext, recovery_service_client::RecoveryServiceClient,
};
use tonic::{Request, metadata::MetadataValue};

const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            Value::BoolValue(b) => Some(b.to_string()),
            other => Some(format!("{other:?}")),
        })
}

fn with_traceparent<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(format!("00-{TRACE_ID}-{PARENT_ID}-01")).unwrap(),
    );
    request
}

#[tokio::test]
async fn spans_reach_the_collector_and_no_secret_is_exported_or_logged() {
    let collector = Collector::default();
    let otlp = collector.start().await;
    let server = Server::start_with(
        Options::default()
            .env("RECOVERY_SECRET_KEY", KEY)
            .env("RECOVERY_LOG_FORMAT", "json")
            .env(
                "RUST_LOG",
                "debug,h2=info,hyper=info,tower=info,sqlx=info,sea_orm=info",
            )
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("OTEL_METRIC_EXPORT_INTERVAL", "300")
            .env("OTEL_SERVICE_NAME", "recovery-e2e"),
    )
    .unwrap();
    server.wait_serving("").await.unwrap();
    let mut c = RecoveryServiceClient::new(server.channel().await.unwrap());
    let mail = Mailbox::new(server.dir.path().join("mail"));
    let email = "ann.secretive@example.com";

    let code = c
        .create_recovery_code(with_traceparent(api::CreateRecoveryCodeRequest {
            account_id: "acct-otel".into(),
            email: email.into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .recovery_code;
    let flow = c
        .begin_recovery(api::BeginRecoveryRequest {
            email: email.into(),
            client: Some(ClientContext {
                ip_address: "203.0.113.50".into(),
                user_agent: "otel-test".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .flow_id;
    let email_code = mail
        .wait_for(email, "verification code")
        .await
        .unwrap()
        .code()
        .unwrap();
    let wrong = if email_code == "000000" {
        "000001"
    } else {
        "000000"
    };
    let err = c
        .verify_email(api::VerifyEmailRequest {
            flow_id: flow.clone(),
            email_code: wrong.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    c.verify_email(api::VerifyEmailRequest {
        flow_id: flow.clone(),
        email_code: email_code.clone(),
    })
    .await
    .unwrap();
    c.recover_account(api::RecoverAccountRequest {
        flow_id: flow,
        recovery_code: code.clone(),
    })
    .await
    .unwrap();

    // A zero-knowledge enrolment and recovery: its protocol messages, sealed keyset and export
    // key must not reach telemetry or logs either.
    let zk_email = "zoe.secretive@example.com";
    let zk_code = b"ZK1-SECRET-DEVICE-CODE";
    let zk_keyset = b"the-vault-key-in-clear";
    let enrolled = device::enrol(&mut c, "acct-otel-zk", zk_email, zk_code, zk_keyset)
        .await
        .unwrap();
    let zk_flow = c
        .begin_recovery(api::BeginRecoveryRequest {
            email: zk_email.into(),
            client: None,
        })
        .await
        .unwrap()
        .into_inner()
        .flow_id;
    let zk_email_code = mail
        .wait_for(zk_email, "verification code")
        .await
        .unwrap()
        .code()
        .unwrap();
    c.verify_email(api::VerifyEmailRequest {
        flow_id: zk_flow.clone(),
        email_code: zk_email_code,
    })
    .await
    .unwrap();
    let login = device::start_login(&mut c, &zk_flow, zk_code)
        .await
        .unwrap();
    let ke2 = login.credential_response.clone();
    let (ke3, export_key) = login.finish(zk_code).unwrap();
    let recovered = device::finish_login(&mut c, &zk_flow, ke3.clone())
        .await
        .unwrap();
    assert_eq!(recovered.sealed_keyset, enrolled.sealed_keyset);
    let zk_secrets: Vec<(&str, Vec<u8>)> = vec![
        ("zero-knowledge code", zk_code.to_vec()),
        ("keyset", zk_keyset.to_vec()),
        ("sealed keyset", enrolled.sealed_keyset.clone()),
        ("export key", export_key.clone()),
        ("KE2", ke2.clone()),
        ("KE3", ke3.clone()),
    ];

    // Wait for the last RPC's span to arrive.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let spans = collector.spans();
        if spans
            .iter()
            .any(|s| s.name == "identity.recovery.v1.RecoveryService/RecoverAccount")
            && spans.iter().any(|s| {
                s.name == "identity.recovery.v1.RecoveryService/FinishZeroKnowledgeRecovery"
            })
            && !collector.metrics.lock().expect("metrics").is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans did not arrive: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spans = collector.spans();

    // The caller's trace is continued by a SERVER span with the RPC attributes.
    let create = spans
        .iter()
        .find(|s| s.name == "identity.recovery.v1.RecoveryService/CreateRecoveryCode")
        .expect("a CreateRecoveryCode span");
    assert_eq!(hex(&create.trace_id), TRACE_ID);
    assert_eq!(hex(&create.parent_span_id), PARENT_ID);
    assert_eq!(create.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(attr(create, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attr(create, "rpc.service").as_deref(),
        Some("identity.recovery.v1.RecoveryService")
    );
    assert_eq!(
        attr(create, "rpc.method").as_deref(),
        Some("CreateRecoveryCode")
    );
    assert_eq!(attr(create, "rpc.grpc.status_code").as_deref(), Some("0"));

    // Children: the domain step, hashing (with its admission wait) and the database.
    let descendants = |root: &Span| -> Vec<String> {
        let mut ids = vec![root.span_id.clone()];
        let mut names = Vec::new();
        let mut grew = true;
        while grew {
            grew = false;
            for s in &spans {
                if ids.contains(&s.parent_span_id) && !ids.contains(&s.span_id) {
                    ids.push(s.span_id.clone());
                    names.push(s.name.clone());
                    grew = true;
                }
            }
        }
        names
    };
    let children = descendants(create);
    for want in [
        "domain.create_recovery_code",
        "argon2.admit",
        "argon2.hash",
        "db.put_recovery_code",
    ] {
        assert!(
            children.iter().any(|n| n == want),
            "{want} missing under CreateRecoveryCode: {children:?}"
        );
    }
    assert!(
        spans
            .iter()
            .filter(|s| s.name == "argon2.hash")
            .all(|s| hex(&s.trace_id).len() == 32)
    );

    // A failure names its reason.
    let failed = spans
        .iter()
        .find(|s| {
            s.name.ends_with("/VerifyEmail")
                && attr(s, "rpc.grpc.status_code").as_deref() == Some("7")
        })
        .expect("the failed VerifyEmail span");
    assert_eq!(
        attr(failed, "rpc.error_reason").as_deref(),
        Some("EMAIL_CODE_MISMATCH")
    );

    // The trace id is in the log lines of the request it belongs to.
    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.contains(TRACE_ID) && l.contains("recovery code created")),
        "no log line of CreateRecoveryCode carries its trace id"
    );

    // Metrics went through the same pipeline.
    let metrics = format!("{:?}", collector.metrics.lock().expect("metrics"));
    assert!(
        metrics.contains("rpc.server.duration"),
        "no RPC duration metric"
    );

    // Nothing secret anywhere: not in spans, metrics or any log line.
    let everything = format!("{}\n{}", collector.dump(), log.join("\n"));
    for (what, secret) in &zk_secrets {
        for (form, text) in [
            ("bytes", String::from_utf8_lossy(secret).into_owned()),
            ("hex", hex(secret)),
            ("base64", base64_standard(secret)),
            (
                "bytes as a debug list",
                format!("{:?}", &secret[..secret.len().min(8)]),
            ),
        ] {
            if text.len() >= 8 {
                assert!(
                    !everything.contains(&text),
                    "the {what} ({form}) leaked into telemetry or logs"
                );
            }
        }
    }
    assert!(
        spans
            .iter()
            .any(|s| s.name.ends_with("/FinishZeroKnowledgeRecovery")),
        "the zero-knowledge RPCs have spans too"
    );
    let canonical: String = code[4..].replace('-', "");
    for (what, secret) in [
        ("recovery code", code.as_str()),
        ("recovery code (canonical)", canonical.as_str()),
        ("email code", email_code.as_str()),
        ("secret key", KEY),
        ("secret key (half)", &KEY[..32]),
        ("email address", email),
    ] {
        assert!(
            !everything.contains(secret),
            "the {what} leaked into telemetry or logs"
        );
    }
}

fn base64_standard(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn an_unreachable_collector_slows_nothing_and_shutdown_stays_bounded() {
    // A collector that accepts connections and never answers (the kernel completes the
    // handshake into the listen backlog; nothing ever reads): the worst case, worse than a
    // refused port.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = blackhole.local_addr().unwrap();
    let mut server = Server::start_with(
        Options::default()
            .env("RECOVERY_SECRET_KEY", KEY)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{dead}"))
            .env("OTEL_BSP_SCHEDULE_DELAY", "100"),
    )
    .unwrap();
    server.wait_serving("").await.unwrap();
    let mut c = RecoveryServiceClient::new(server.channel().await.unwrap());
    let started = Instant::now();
    for i in 0..20 {
        c.get_recovery_status(api::GetRecoveryStatusRequest {
            account_id: format!("a{i}"),
        })
        .await
        .unwrap();
    }
    // Had each call waited for one export (3 s timeout), 20 calls would take a minute.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "RPCs waited on the collector: {:?}",
        started.elapsed()
    );
    let signalled = Instant::now();
    server.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = server.wait_exit(Duration::from_secs(20)).await.unwrap();
    assert!(status.success());
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        signalled.elapsed()
    );
    drop(blackhole);
}

/// Without any collector, every request's log lines still carry a trace id (the caller's
/// `traceparent` when it sent one, else a fresh one), the RPC is named once, and no `Debug`
/// form of an internal type reaches a line.
#[tokio::test]
async fn text_logs_carry_a_trace_id_without_a_collector() {
    let server = Server::start_with(Options::default().env("RECOVERY_SECRET_KEY", KEY)).unwrap();
    server.wait_serving("").await.unwrap();
    let mut client = RecoveryServiceClient::new(server.channel().await.unwrap());
    client
        .create_recovery_code(with_traceparent(api::CreateRecoveryCodeRequest {
            account_id: "acct-traced".into(),
            email: "traced@example.com".into(),
        }))
        .await
        .unwrap();
    client
        .create_recovery_code(api::CreateRecoveryCodeRequest {
            account_id: "acct-fresh".into(),
            email: "fresh@example.com".into(),
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines: Vec<String> = server
            .log()
            .into_iter()
            .filter(|l| l.contains("rpc=identity.recovery.v1.RecoveryService/CreateRecoveryCode"))
            .collect();
        if lines.len() >= 2 {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "no request log lines: {:?}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let trace_ids: Vec<&str> = lines
        .iter()
        .map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("trace_id="))
                .map(|id| {
                    &id[..id
                        .find(|c: char| !c.is_ascii_hexdigit())
                        .unwrap_or(id.len())]
                })
                .unwrap_or_else(|| panic!("no trace_id in {l}"))
        })
        .collect();
    assert!(
        trace_ids.contains(&TRACE_ID),
        "the caller's trace id: {lines:?}"
    );
    assert!(
        trace_ids.iter().any(|id| *id != TRACE_ID
            && id.len() == 32
            && id.bytes().all(|b| b.is_ascii_hexdigit())),
        "a fresh trace id for the call without traceparent: {lines:?}"
    );
    for line in &lines {
        assert_eq!(
            line.matches("CreateRecoveryCode").count(),
            1,
            "the RPC named once: {line}"
        );
        assert!(
            !line.contains("otel.") && !line.contains("rpc.method"),
            "{line}"
        );
    }
    for line in server.log() {
        assert!(
            !line.contains("Transport::") && !line.contains("Some("),
            "{line}"
        );
    }
}
