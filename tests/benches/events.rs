//! Platform events: events per second the publisher drains to a local JetStream, the latency
//! from RecoverAccount's answer to its `account.recovered` event arriving (p50, p99), and
//! RecoverAccount's own latency with events on and off, in one run on one machine.
//!
//! ```text
//! cargo build --release -p recovery-service && cargo bench -p recovery-e2e --bench events
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark fails loudly

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use recovery_e2e::{Mailbox, Options, Server, nats::NatsServer};
use recovery_proto::v1::{self as api, recovery_service_client::RecoveryServiceClient};
use tonic::transport::Channel;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const ROUNDS: usize = 200;
const BACKLOG: usize = 2000;

type Client = RecoveryServiceClient<Channel>;

fn options() -> Options {
    Options::default()
        .env("RECOVERY_SECRET_KEY", KEY)
        // Cheap hashing: what is measured is the database, the outbox and the publisher.
        .env("RECOVERY_HASH_MEMORY_KIB", "64")
        .env("RECOVERY_HASH_ITERATIONS", "1")
        .env("RECOVERY_STARTS_PER_EMAIL_PER_HOUR", "1000000")
        .env("RECOVERY_STARTS_PER_IP_PER_HOUR", "1000000")
        .env("RECOVERY_STARTS_PER_IP_PER_MINUTE", "1000000")
        .env("RUST_LOG", "warn,recovery_service::server=info")
}

async fn start(options: Options) -> (Server, Client, Mailbox) {
    let server = Server::start_with(options).unwrap();
    server.wait_serving("").await.unwrap();
    let client = RecoveryServiceClient::new(server.channel().await.unwrap());
    let mail = Mailbox::new(server.dir.path().join("mail"));
    (server, client, mail)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// `ROUNDS` recoveries one after another; answers RecoverAccount's latencies and, when
/// `events` is given, the time from each answer to its event arriving.
async fn recoveries(
    c: &mut Client,
    mail: &Mailbox,
    mut events: Option<&mut async_nats::Subscriber>,
) -> (Vec<Duration>, Vec<Duration>) {
    let code = c
        .create_recovery_code(api::CreateRecoveryCodeRequest {
            account_id: "acct-bench".into(),
            email: "bench@example.com".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .recovery_code;
    let (mut rpc, mut arrival) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let flow = c
            .begin_recovery(api::BeginRecoveryRequest {
                email: "bench@example.com".into(),
                client: None,
            })
            .await
            .unwrap()
            .into_inner()
            .flow_id;
        let email_code = mail
            .wait_for("bench@example.com", "verification code")
            .await
            .unwrap()
            .code()
            .unwrap();
        c.verify_email(api::VerifyEmailRequest {
            flow_id: flow.clone(),
            email_code,
        })
        .await
        .unwrap();
        let sent = Instant::now();
        c.recover_account(api::RecoverAccountRequest {
            flow_id: flow.clone(),
            recovery_code: code.clone(),
        })
        .await
        .unwrap();
        let answered = Instant::now();
        rpc.push(answered - sent);
        if let Some(subscriber) = events.as_deref_mut() {
            loop {
                let message = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
                    .await
                    .expect("the event arrives")
                    .unwrap();
                let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
                if event["data"]["flow_id"] == flow.as_str() {
                    arrival.push(answered.elapsed());
                    break;
                }
            }
        }
    }
    rpc.sort();
    arrival.sort();
    (rpc, arrival)
}

#[tokio::main]
async fn main() {
    let mut nats = NatsServer::start().unwrap();
    let nats_client = async_nats::connect(nats.url()).await.unwrap();
    let mut subscriber = nats_client
        .subscribe("identity.recovery.v1.account.recovered")
        .await
        .unwrap();

    // RecoverAccount with events on and off, and each event's arrival.
    let (_on, mut on, on_mail) = start(options().env("RECOVERY_EVENTS_URL", nats.url())).await;
    let (_off, mut off, off_mail) = start(options()).await;
    let (rpc_on, arrival) = recoveries(&mut on, &on_mail, Some(&mut subscriber)).await;
    let (rpc_off, _) = recoveries(&mut off, &off_mail, None).await;

    // Drain rate: a backlog written while NATS is down, published once it is back.
    nats.stop();
    let (_drain, mut c, _) = start(options().env("RECOVERY_EVENTS_URL", nats.url())).await;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let mut c = c.clone();
        tasks.spawn(async move {
            for i in (worker..BACKLOG).step_by(8) {
                c.create_recovery_code(api::CreateRecoveryCodeRequest {
                    account_id: format!("acct-{i}"),
                    email: format!("user{i}@example.com"),
                })
                .await
                .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let _ = c
        .get_recovery_status(api::GetRecoveryStatusRequest {
            account_id: "acct-0".into(),
        })
        .await;
    nats.restart().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut created = client
        .subscribe("identity.recovery.v1.recovery_code.created")
        .await
        .unwrap();
    let mut first = None;
    let mut count = 0;
    while count < BACKLOG {
        tokio::time::timeout(Duration::from_secs(120), created.next())
            .await
            .expect("the backlog drains")
            .unwrap();
        first.get_or_insert_with(Instant::now);
        count += 1;
    }
    let drained = first.unwrap().elapsed();

    println!(
        "platform events, {ROUNDS} sequential recoveries per mode, SQLite, local nats-server -js"
    );
    println!(
        "  RecoverAccount latency   events off: p50 {:.2} ms  p99 {:.2} ms",
        percentile(&rpc_off, 0.5),
        percentile(&rpc_off, 0.99)
    );
    println!(
        "  RecoverAccount latency   events on:  p50 {:.2} ms  p99 {:.2} ms",
        percentile(&rpc_on, 0.5),
        percentile(&rpc_on, 0.99)
    );
    println!(
        "  answer -> event in the stream:       p50 {:.2} ms  p99 {:.2} ms",
        percentile(&arrival, 0.5),
        percentile(&arrival, 0.99)
    );
    println!(
        "  backlog of {BACKLOG} drained in {:.2} s: {:.0} events/s",
        drained.as_secs_f64(),
        (BACKLOG - 1) as f64 / drained.as_secs_f64()
    );
}
