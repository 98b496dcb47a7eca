//! What one abusive caller costs everyone else, through the release binary on SQLite:
//!
//! - a flood of 50,000 refused RecoverAccount calls on one used-up flow: how many audit rows
//!   it leaves, the count they carry, and whether the trail still verifies;
//! - RecoverAccount throughput of 4 clients alone, then beside 4 clients looping
//!   CreateRecoveryCode on one account: with the default limit (10 an hour are hashed; the rest
//!   are refused before the hashing pool admits them), and with the limit lifted (the pool's
//!   fair admission alone: the account holds one permit at a time).
//!
//! ```text
//! cargo build --release -p recovery-service && cargo bench -p recovery-e2e --bench abuse
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark fails loudly

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use recovery_e2e::{Options, Server, smtp::SmtpSink};
use recovery_proto::v1::{self as api, recovery_service_client::RecoveryServiceClient};
use tokio::task::JoinSet;
use tonic::transport::Channel;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const FLOOD: u64 = 50_000;
const WINDOW: Duration = Duration::from_secs(5);

type Client = RecoveryServiceClient<Channel>;

/// A verified flow for `email` (its code read from the SMTP sink).
async fn verified_flow(c: &mut Client, sink: &SmtpSink, email: &str) -> String {
    let before = sink.received().len();
    let flow = c
        .begin_recovery(api::BeginRecoveryRequest {
            email: email.into(),
            client: None,
        })
        .await
        .unwrap()
        .into_inner()
        .flow_id;
    let code = loop {
        let found = sink.received()[before..].iter().find_map(|r| {
            let ours = r.to.iter().any(|t| t.contains(email))
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
    flow
}

async fn flood(c: &mut Client, sink: &SmtpSink) {
    let code = c
        .create_recovery_code(api::CreateRecoveryCodeRequest {
            account_id: "flooded".into(),
            email: "flooded@example.com".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .recovery_code;
    let flow = verified_flow(c, sink, "flooded@example.com").await;
    let wrong = recovery_e2e::wrong_recovery_code(&code);
    for _ in 0..5 {
        let _ = c
            .recover_account(api::RecoverAccountRequest {
                flow_id: flow.clone(),
                recovery_code: wrong.clone(),
            })
            .await;
    }
    let started = Instant::now();
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for w in 0..4u64 {
        let (mut c, flow, code, refused) =
            (c.clone(), flow.clone(), code.clone(), Arc::clone(&refused));
        tasks.spawn(async move {
            let mut i = w;
            while i < FLOOD {
                let status = c
                    .recover_account(api::RecoverAccountRequest {
                        flow_id: flow.clone(),
                        recovery_code: code.clone(),
                    })
                    .await
                    .unwrap_err();
                assert_eq!(recovery_e2e::reason(&status), "TOO_MANY_ATTEMPTS");
                refused.fetch_add(1, Ordering::Relaxed);
                i += 4;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let elapsed = started.elapsed();
    let mut rows = 0;
    let mut counted = 0u64;
    let mut token = String::new();
    let mut valid = true;
    loop {
        let page = c
            .list_audit_events(api::ListAuditEventsRequest {
                account_id: "flooded".into(),
                page_size: 500,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        valid &= page.chain_valid;
        for e in &page.events {
            rows += 1;
            if e.kind() == api::AuditEventKind::SubmissionRefused {
                counted += e
                    .details
                    .get("count")
                    .map_or(1, |c| c.parse::<u64>().unwrap());
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    println!(
        "flood: {} refused RecoverAccount calls on one flow in {:.1} s ({:.0}/s): the account's trail has {rows} rows, its SUBMISSION_REFUSED rows count {counted}, chain_valid {valid}",
        refused.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        refused.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
    );
}

/// RecoverAccount calls/s of 4 clients over `WINDOW`, each call on its own verified flow;
/// with `abuser`, 4 more clients loop CreateRecoveryCode on one account meanwhile.
async fn recoveries(c: &Client, flows: Vec<(String, String)>, abuser: bool) -> (f64, u64, u64) {
    let flows = Arc::new(Mutex::new(flows));
    let stop = Arc::new(AtomicBool::new(false));
    let (created, limited) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut abusers = JoinSet::new();
    if abuser {
        for _ in 0..4 {
            let (mut c, stop) = (c.clone(), Arc::clone(&stop));
            let (created, limited) = (Arc::clone(&created), Arc::clone(&limited));
            abusers.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match c
                        .create_recovery_code(api::CreateRecoveryCodeRequest {
                            account_id: "looper".into(),
                            email: "looper@example.com".into(),
                        })
                        .await
                    {
                        Ok(_) => created.fetch_add(1, Ordering::Relaxed),
                        Err(s) => {
                            assert_eq!(recovery_e2e::reason(&s), "RATE_LIMITED", "{s:?}");
                            limited.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        }
    }
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..4 {
        let (mut c, flows) = (c.clone(), Arc::clone(&flows));
        tasks.spawn(async move {
            let mut n = 0u64;
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
    let rate = calls as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    while abusers.join_next().await.is_some() {}
    (
        rate,
        created.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
    )
}

async fn prepared_flows(
    c: &mut Client,
    sink: &SmtpSink,
    tag: &str,
    n: usize,
) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let email = format!("{tag}{i}@example.com");
        let code = c
            .create_recovery_code(api::CreateRecoveryCodeRequest {
                account_id: format!("{tag}-{i}"),
                email: email.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .recovery_code;
        out.push((verified_flow(c, sink, &email).await, code));
    }
    out
}

async fn start(sink: &SmtpSink, creates_per_hour: &str) -> (Server, Client) {
    let server = Server::start_with(
        Options::default()
            .env("RECOVERY_SECRET_KEY", KEY)
            .env("RECOVERY_SMTP_URL", sink.url())
            .env("RECOVERY_STARTS_PER_EMAIL_PER_HOUR", "1000000")
            .env("RECOVERY_STARTS_PER_IP_PER_HOUR", "1000000")
            .env("RECOVERY_STARTS_PER_IP_PER_MINUTE", "1000000")
            .env("RECOVERY_CREATES_PER_ACCOUNT_PER_HOUR", creates_per_hour)
            .env("RECOVERY_HASH_ADMISSION_WAIT", "30s")
            .env("RUST_LOG", "warn,recovery_service::server=info"),
    )
    .unwrap();
    server.wait_serving("").await.unwrap();
    let client = RecoveryServiceClient::new(server.channel().await.unwrap());
    (server, client)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sink = SmtpSink::start().await.unwrap();
    let (server, mut c) = start(&sink, "10").await;
    flood(&mut c, &sink).await;
    // The default (10 an hour, counted before admission, and one permit per account), then
    // the limit lifted: what the loop costs the others with only the hashing pool's fair
    // admission between them.
    for (label, limit) in [
        ("limit 10/h before admission, one permit per account", "10"),
        ("limit lifted, one permit per account", "1000000"),
    ] {
        let (_server, mut c) = start(&sink, limit).await;
        let alone = prepared_flows(&mut c, &sink, "alone", 400).await;
        let beside = prepared_flows(&mut c, &sink, "beside", 400).await;
        let (rate_alone, _, _) = recoveries(&c, alone, false).await;
        let (rate_beside, created, limited) = recoveries(&c, beside, true).await;
        println!(
            "{label}: RecoverAccount, 4 clients: {rate_alone:.1} calls/s alone, {rate_beside:.1} calls/s beside one account looping CreateRecoveryCode from 4 clients ({created} created, {limited} refused RATE_LIMITED before any hash); ratio {:.2}",
            rate_beside / rate_alone
        );
    }
    drop(server);
}
