//! Delivery speed: messages per second the worker sends to a local SMTP sink, and the time
//! from BeginRecovery's answer to the verification message arriving (p50, p99).
//!
//! ```text
//! cargo build --release -p recovery-service && cargo bench -p recovery-e2e --bench mail
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark fails loudly

use std::time::{Duration, Instant};

use recovery_e2e::{Options, Server, smtp::SmtpSink};
use recovery_proto::v1::{
    self as api, ClientContext, recovery_service_client::RecoveryServiceClient,
};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[tokio::main]
async fn main() {
    let sink = SmtpSink::start().await.unwrap();
    let server = Server::start_with(
        Options::default()
            .env("RECOVERY_SECRET_KEY", KEY)
            .env("RECOVERY_SMTP_URL", sink.url())
            .env("RECOVERY_HASH_MEMORY_KIB", "64")
            .env("RECOVERY_HASH_ITERATIONS", "1")
            .env("RECOVERY_STARTS_PER_EMAIL_PER_HOUR", "1000000")
            .env("RECOVERY_STARTS_PER_IP_PER_HOUR", "1000000")
            .env("RECOVERY_STARTS_PER_IP_PER_MINUTE", "1000000")
            .env("RUST_LOG", "warn,recovery_service::server=info"),
    )
    .unwrap();
    server.wait_serving("").await.unwrap();
    let mut c = RecoveryServiceClient::new(server.channel().await.unwrap());
    let accounts = 50;
    for i in 0..accounts {
        c.create_recovery_code(api::CreateRecoveryCodeRequest {
            account_id: format!("acct-{i}"),
            email: format!("user{i}@example.com"),
        })
        .await
        .unwrap();
    }
    while sink.received().len() < accounts {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Latency: one BeginRecovery at a time, waiting for its verification message.
    let mut latencies = Vec::new();
    for i in 0..200 {
        let before = sink.received().len();
        c.begin_recovery(api::BeginRecoveryRequest {
            email: format!("user{}@example.com", i % accounts),
            client: Some(ClientContext {
                ip_address: "203.0.113.9".into(),
                user_agent: "bench".into(),
            }),
        })
        .await
        .unwrap();
        let answered = Instant::now();
        // Two messages per start: the verification code and the "recovery started" notice.
        loop {
            let received = sink.received();
            if let Some(mail) = received[before..].iter().find(|r| {
                r.header("Subject")
                    .is_some_and(|s| s.contains("verification code"))
            }) {
                latencies.push(mail.at.saturating_duration_since(answered));
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        while sink.received().len() < before + 2 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "BeginRecovery answer -> verification mail at the SMTP sink over {} calls: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() * 99 / 100]),
        ms(latencies[latencies.len() - 1])
    );

    // Throughput: enqueue a burst, then time the worker draining it.
    let before = sink.received().len();
    let burst = 500;
    for i in 0..burst {
        c.begin_recovery(api::BeginRecoveryRequest {
            email: format!("user{}@example.com", i % accounts),
            client: None,
        })
        .await
        .unwrap();
    }
    let enqueued = Instant::now();
    let first_seen = sink.received().len() - before;
    while sink.received().len() < before + 2 * burst {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let last = sink.received().last().unwrap().at;
    let start = sink.received()[before].at;
    let total = 2 * burst;
    println!(
        "worker throughput: {total} messages in {:.2} s = {:.0} messages/s (first {first_seen} sent while enqueueing; drained {:.2} s after the last call)",
        last.duration_since(start).as_secs_f64(),
        total as f64 / last.duration_since(start).as_secs_f64(),
        last.saturating_duration_since(enqueued).as_secs_f64()
    );
}
