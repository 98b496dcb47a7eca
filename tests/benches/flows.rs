//! Throughput of the hashing RPCs next to raw argon2 on the same machine in the same run, and
//! the timing of BeginRecovery for known vs unknown emails (Welch's t).
//!
//! ```text
//! cargo build --release -p recovery-service && cargo bench -p recovery-e2e --bench flows
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark fails loudly

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use recovery_e2e::{Options, Server, smtp::SmtpSink};
use recovery_proto::v1::{
    self as api, ClientContext, recovery_service_client::RecoveryServiceClient,
};
use tokio::task::JoinSet;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const CLIENTS: usize = 8;
const WINDOW: Duration = Duration::from_secs(6);

/// argon2id m=19456 t=2 p=1 on every core for `WINDOW`: hashes per second.
fn raw_argon2_rate() -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let params = Params::new(19_456, 2, 1, Some(32)).unwrap();
                let argon = Argon2::new_with_secret(
                    &[7u8; 32],
                    Algorithm::Argon2id,
                    Version::V0x13,
                    params.clone(),
                )
                .unwrap();
                let mut blocks = vec![Block::default(); params.block_count()];
                let mut out = [0u8; 32];
                let mut n = 0u64;
                while started.elapsed() < WINDOW {
                    argon
                        .hash_password_into_with_memory(
                            b"RC1CODE",
                            b"saltsaltsaltsalt",
                            &mut out,
                            &mut blocks,
                        )
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / started.elapsed().as_secs_f64()
}

/// CPU seconds (user + system) the process `pid` has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn client_context(i: usize) -> Option<ClientContext> {
    Some(ClientContext {
        ip_address: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        user_agent: "bench".into(),
    })
}

#[tokio::main]
async fn main() {
    println!("binary: {}", recovery_e2e::binary().display());
    let raw = tokio::task::spawn_blocking(raw_argon2_rate).await.unwrap();
    println!("raw argon2id (m=19456,t=2,p=1) on all cores: {raw:.1} hashes/s");

    // Mail goes over SMTP to a sink, as in production (the `.eml` file transport of the
    // embedded default costs the kernel far more per message than an SMTP send).
    let sink = SmtpSink::start().await.unwrap();
    let server = Server::start_with(
        Options::default()
            .env("RECOVERY_SECRET_KEY", KEY)
            .env("RECOVERY_SMTP_URL", sink.url())
            .env("RECOVERY_STARTS_PER_EMAIL_PER_HOUR", "1000000")
            .env("RECOVERY_STARTS_PER_IP_PER_HOUR", "1000000")
            .env("RECOVERY_STARTS_PER_IP_PER_MINUTE", "1000000")
            .env("RECOVERY_HASH_ADMISSION_WAIT", "30s")
            .env("RUST_LOG", "warn,recovery_service::server=info"),
    )
    .unwrap();
    server.wait_serving("").await.unwrap();
    let client = RecoveryServiceClient::new(server.channel().await.unwrap());

    // CreateRecoveryCode, 8 clients.
    let cpu_before = cpu_seconds(server.pid());
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for worker in 0..CLIENTS {
        let mut c = client.clone();
        tasks.spawn(async move {
            let mut n = 0;
            while started.elapsed() < WINDOW {
                c.create_recovery_code(api::CreateRecoveryCodeRequest {
                    account_id: format!("create-{worker}-{n}"),
                    email: format!("create{worker}x{n}@example.com"),
                })
                .await
                .unwrap();
                n += 1;
            }
            n
        });
    }
    let mut calls = 0;
    while let Some(n) = tasks.join_next().await {
        calls += n.unwrap();
    }
    let create = f64::from(calls) / started.elapsed().as_secs_f64();
    let create_cpu = cpu_seconds(server.pid()) - cpu_before;
    let threads = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    println!(
        "CreateRecoveryCode, {CLIENTS} clients: {create:.1} calls/s; the server used {:.2} of {threads} cores",
        create_cpu / started.elapsed().as_secs_f64()
    );
    let create_calls = f64::from(calls);

    let raw_mid = tokio::task::spawn_blocking(raw_argon2_rate).await.unwrap();
    println!("raw argon2id between the phases: {raw_mid:.1} hashes/s");

    // RecoverAccount, 8 clients, each call on its own verified flow.
    let accounts = 64;
    let flows_needed = (raw * WINDOW.as_secs_f64() * 1.3) as usize;
    let mut codes = Vec::new();
    let mut c = client.clone();
    for a in 0..accounts {
        let code = c
            .create_recovery_code(api::CreateRecoveryCodeRequest {
                account_id: format!("rec-{a}"),
                email: format!("rec{a}@example.com"),
            })
            .await
            .unwrap()
            .into_inner()
            .recovery_code;
        codes.push(code);
    }
    let mut flows: Vec<(String, String)> = Vec::with_capacity(flows_needed);
    for i in 0..flows_needed {
        let a = i % accounts;
        let email = format!("rec{a}@example.com");
        let before = sink.received().len();
        let flow = c
            .begin_recovery(api::BeginRecoveryRequest {
                email: email.clone(),
                client: client_context(i),
            })
            .await
            .unwrap()
            .into_inner()
            .flow_id;
        let code = loop {
            let found = sink.received()[before..].iter().find_map(|r| {
                let ours = r.to.iter().any(|t| t.contains(&email))
                    && r.header("Subject")
                        .is_some_and(|s| s.contains("verification code"));
                if ours { r.code() } else { None }
            });
            if let Some(code) = found {
                break code;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        c.verify_email(api::VerifyEmailRequest {
            flow_id: flow.clone(),
            email_code: code,
        })
        .await
        .unwrap();
        flows.push((flow, codes[a].clone()));
    }
    let flows = Arc::new(std::sync::Mutex::new(flows));
    let cpu_before = cpu_seconds(server.pid());
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..CLIENTS {
        let mut c = client.clone();
        let flows = Arc::clone(&flows);
        tasks.spawn(async move {
            let mut n = 0u32;
            while started.elapsed() < WINDOW {
                let Some((flow, code)) = flows.lock().unwrap().pop() else {
                    break;
                };
                c.recover_account(api::RecoverAccountRequest {
                    flow_id: flow,
                    recovery_code: code,
                })
                .await
                .unwrap();
                n += 1;
            }
            n
        });
    }
    let mut calls = 0;
    while let Some(n) = tasks.join_next().await {
        calls += n.unwrap();
    }
    let recover = f64::from(calls) / started.elapsed().as_secs_f64();
    let recover_cpu = cpu_seconds(server.pid()) - cpu_before;
    println!(
        "RecoverAccount, {CLIENTS} clients: {recover:.1} calls/s; the server used {:.2} of {threads} cores",
        recover_cpu / started.elapsed().as_secs_f64()
    );
    let recover_calls = f64::from(calls);
    // This machine's speed drifts: compare each phase with raw argon2 measured right before
    // and right after it.
    let raw_after = tokio::task::spawn_blocking(raw_argon2_rate).await.unwrap();
    println!("raw argon2id after: {raw_after:.1} hashes/s");
    println!(
        "ratio to raw argon2 around each phase: CreateRecoveryCode {:.3}, RecoverAccount {:.3} (goal >= 0.9)",
        create / ((raw + raw_mid) / 2.0),
        recover / ((raw_mid + raw_after) / 2.0)
    );
    // The load generator and the SMTP sink share these cores: per CPU second the server
    // spends, how many calls it completes next to raw argon2's hashes per CPU second.
    let raw_per_cpu = ((raw + raw_mid + raw_after) / 3.0) / threads;
    println!(
        "calls per server CPU second vs raw hashes per CPU second: CreateRecoveryCode {:.3}, RecoverAccount {:.3}",
        create_calls / create_cpu / raw_per_cpu,
        recover_calls / recover_cpu / raw_per_cpu
    );
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", server.pid())) {
        for line in status
            .lines()
            .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        {
            println!("server {line}");
        }
    }

    // BeginRecovery timing: known vs unknown, interleaved, one client.
    let per_kind = 1000;
    let mut known = Vec::with_capacity(per_kind);
    let mut unknown = Vec::with_capacity(per_kind);
    let mut order: Vec<bool> = (0..2 * per_kind).map(|i| i % 2 == 0).collect();
    // A fixed shuffle (xorshift) so neither kind always follows the other.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    for _ in 0..100 {
        // warm-up
        c.begin_recovery(api::BeginRecoveryRequest {
            email: "rec0@example.com".into(),
            client: client_context(0),
        })
        .await
        .unwrap();
    }
    for (i, is_known) in order.into_iter().enumerate() {
        let email = if is_known {
            format!("rec{}@example.com", i % accounts)
        } else {
            format!("ghost{}@example.com", i % accounts)
        };
        let t = Instant::now();
        c.begin_recovery(api::BeginRecoveryRequest {
            email,
            client: client_context(i),
        })
        .await
        .unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if is_known {
            known.push(ms)
        } else {
            unknown.push(ms)
        }
    }
    let stats = |v: &[f64]| {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var, n)
    };
    let (mk, vk, nk) = stats(&known);
    let (mu, vu, nu) = stats(&unknown);
    let t = (mk - mu) / (vk / nk + vu / nu).sqrt();
    println!(
        "BeginRecovery over {per_kind} calls each: known mean {mk:.3} ms (sd {:.3}), unknown mean {mu:.3} ms (sd {:.3}), Welch's t = {t:.2}",
        vk.sqrt(),
        vu.sqrt()
    );
}
