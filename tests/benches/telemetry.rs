//! Overhead of tracing with OTLP export on versus off on a cheap RPC (GetRecoveryStatus, 8
//! clients), both servers in the same run, measured alternately.
//!
//! ```text
//! cargo build --release -p recovery-service && cargo bench -p recovery-e2e --bench telemetry
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark fails loudly

use std::time::{Duration, Instant};

use recovery_e2e::{Options, Server, otlp::Collector};
use recovery_proto::v1::{self as api, recovery_service_client::RecoveryServiceClient};
use tokio::task::JoinSet;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const WINDOW: Duration = Duration::from_secs(4);

async fn calls_per_second(server: &Server) -> f64 {
    let client = RecoveryServiceClient::new(server.channel().await.unwrap());
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for w in 0..8 {
        let mut c = client.clone();
        tasks.spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < WINDOW {
                c.get_recovery_status(api::GetRecoveryStatusRequest {
                    account_id: format!("acct-{w}"),
                })
                .await
                .unwrap();
                n += 1;
            }
            n
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let collector = Collector::default();
    let otlp = collector.start().await;
    let base = || {
        Options::default()
            .env("RECOVERY_SECRET_KEY", KEY)
            .env("RUST_LOG", "warn,recovery_service::server=info")
    };
    let off = Server::start_with(base()).unwrap();
    let on =
        Server::start_with(base().env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}")))
            .unwrap();
    off.wait_serving("").await.unwrap();
    on.wait_serving("").await.unwrap();
    let (mut rate_off, mut rate_on) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        rate_off.push(calls_per_second(&off).await);
        rate_on.push(calls_per_second(&on).await);
    }
    // Let the last batch export land before counting what the collector received.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (a, b) = (mean(&rate_off), mean(&rate_on));
    println!("GetRecoveryStatus, 8 clients, 3 alternating {WINDOW:?} windows each:");
    println!("  export off: {a:.0} calls/s  {rate_off:.0?}");
    println!("  export on:  {b:.0} calls/s  {rate_on:.0?}");
    println!(
        "  ratio on/off: {:.3} ({} spans received)",
        b / a,
        collector.spans().len()
    );
}
