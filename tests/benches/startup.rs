//! Start-up cost of the real binary on SQLite: time from spawn to health SERVING, and resident
//! memory once idle. Build the binary first in the same profile:
//!
//! ```text
//! cargo build --release -p recovery-service && cargo bench -p recovery-e2e --bench startup
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::time::{Duration, Instant};

use recovery_e2e::Server;

const RUNS: usize = 20;

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("binary: {}", recovery_e2e::binary().display());
    let mut to_serving = Vec::with_capacity(RUNS);
    let mut rss = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let server = Server::start()?;
        server.wait_serving("").await?;
        to_serving.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(kib) = rss_kib(server.pid()) {
            rss.push(kib);
        }
    }
    to_serving.sort();
    rss.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "spawn -> SERVING over {RUNS} runs (fresh SQLite file, migrations included): min {:.1} ms, p50 {:.1} ms, max {:.1} ms",
        ms(to_serving[0]),
        ms(to_serving[RUNS / 2]),
        ms(to_serving[RUNS - 1])
    );
    if !rss.is_empty() {
        println!(
            "idle RSS 0.5 s after SERVING: min {} KiB, p50 {} KiB, max {} KiB",
            rss[0],
            rss[rss.len() / 2],
            rss[rss.len() - 1]
        );
    }
    Ok(())
}
