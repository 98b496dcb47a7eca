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
const WINDOW: Duration = Duration::from_secs(3);
/// Alternating off/on windows; the figure is the median of the per-pair ratios, which a burst
/// of other work on the machine moves less than a mean.
const PAIRS: usize = 7;

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
    for _ in 0..PAIRS {
        rate_off.push(calls_per_second(&off).await);
        rate_on.push(calls_per_second(&on).await);
    }
    // Let the last batch export land before counting what the collector received.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (a, b) = (mean(&rate_off), mean(&rate_on));
    let mut ratios: Vec<f64> = rate_on
        .iter()
        .zip(&rate_off)
        .map(|(on, off)| on / off)
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!("GetRecoveryStatus, 8 clients, {PAIRS} alternating {WINDOW:?} windows each:");
    println!("  export off: {a:.0} calls/s  {rate_off:.0?}");
    println!("  export on:  {b:.0} calls/s  {rate_on:.0?}");
    println!(
        "  ratio on/off: median {:.3} of the pairs {ratios:.3?}, means {:.3}",
        ratios[PAIRS / 2],
        b / a
    );
    let spans = collector.spans();
    println!("  {} spans received:", spans.len());
    let mut by_name = std::collections::BTreeMap::<String, usize>::new();
    for span in &spans {
        *by_name.entry(span.name.clone()).or_default() += 1;
    }
    for (name, count) in by_name {
        println!("    {count:>8}  {name}");
    }
}
