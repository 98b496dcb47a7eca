//! Callers that misbehave, through the real binary: calls that give up before their hash is
//! done must not keep the hashing pool busy, and real overload is still answered fast.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use recovery_e2e::{Options, Server, otlp::Collector};
use recovery_proto::v1::{self as api, recovery_service_client::RecoveryServiceClient};
use tonic::{Code, Request};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_types::StatusExt as _;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn create(i: usize, deadline: Option<Duration>) -> Request<api::CreateRecoveryCodeRequest> {
    let mut request = Request::new(api::CreateRecoveryCodeRequest {
        account_id: format!("acct-{i}"),
        email: format!("user{i}@example.com"),
    });
    if let Some(deadline) = deadline {
        request.set_timeout(deadline);
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_that_give_up_do_not_keep_the_hashing_pool_busy() {
    let collector = Collector::default();
    let otlp = collector.start().await;
    let server = Server::start_with(
        Options::default()
            .env("RECOVERY_SECRET_KEY", KEY)
            .env("RECOVERY_HASH_THREADS", "2")
            .env("RECOVERY_HASH_ADMISSION_WAIT", "20ms")
            .env(
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                format!("http://{otlp}"),
            )
            .env("OTEL_METRIC_EXPORT_INTERVAL", "200"),
    )
    .unwrap();
    server.wait_serving("").await.unwrap();
    let channel = server.channel().await.unwrap();

    // 500 CreateRecoveryCode calls with 5 ms deadlines from 64 tasks: each gives up long before
    // its hash could finish.
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let mut client = RecoveryServiceClient::new(channel.clone());
        let next = Arc::clone(&next);
        tasks.spawn(async move {
            let mut codes = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 500 {
                    return codes;
                }
                let result = client
                    .create_recovery_code(create(i, Some(Duration::from_millis(5))))
                    .await;
                codes.push(result.map_or_else(|s| s.code(), |_| Code::Ok));
            }
        });
    }
    let mut answers = Vec::new();
    while let Some(codes) = tasks.join_next().await {
        answers.extend(codes.unwrap());
    }
    assert_eq!(answers.len(), 500);
    assert!(
        answers.iter().all(|c| matches!(
            c,
            Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted | Code::Ok
        )),
        "{answers:?}"
    );

    // The server is not stalled: health answers at once, a normal call succeeds.
    let mut health = HealthClient::new(channel.clone());
    // The fastest of three checks (one slow scheduling blip on a loaded CI box is not a stall).
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let asked = Instant::now();
        let serving = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(serving.into_inner().status, 1, "SERVING");
        fastest = fastest.min(asked.elapsed());
    }
    assert!(
        fastest < Duration::from_millis(100),
        "health took {fastest:?} after the burst"
    );
    let mut client = RecoveryServiceClient::new(channel.clone());
    client
        .create_recovery_code(create(10_000, None))
        .await
        .unwrap();

    // Hashes run for callers that had gone are counted, and few: the queued ones were skipped.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (abandoned, skipped) = loop {
        if let (Some(a), Some(s)) = (
            collector.counter("recovery.hash.pool.abandoned"),
            collector.counter("recovery.hash.pool.skipped"),
        ) {
            break (a, s);
        }
        assert!(
            Instant::now() < deadline,
            "no hashing pool counters exported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let admitted_then_gone = answers.iter().filter(|c| **c != Code::Ok).count();
    assert!(
        abandoned <= 40,
        "{abandoned} hashes ran for callers that had gone ({skipped} skipped, {admitted_then_gone} gave up)"
    );

    // Real overload (64 callers that wait) is still answered with OVERLOADED.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let mut client = RecoveryServiceClient::new(channel.clone());
        tasks.spawn(async move { client.create_recovery_code(create(20_000 + i, None)).await });
    }
    let mut overloaded = 0;
    while let Some(result) = tasks.join_next().await {
        if let Err(status) = result.unwrap() {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert_eq!(
                status.get_details_error_info().unwrap().reason,
                "OVERLOADED"
            );
            overloaded += 1;
        }
    }
    assert!(
        overloaded >= 1,
        "64 concurrent hashes on 2 threads must overload"
    );
}
