//! Three replicas of the real binary on one PostgreSQL database, mail to a loopback SMTP sink:
//! the single-use rules hold across replicas, and a replica killed with `kill -9` in the
//! middle of load loses no committed change and no queued mail while the others keep serving.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use recovery_e2e::{
    Options, PgDatabase, Server, enroll,
    otlp::Collector,
    pgcluster::{Cluster, postgres_bin},
    reason,
    smtp::{Behaviour, SmtpSink},
    wait_health, wrong_recovery_code,
};
use recovery_proto::v1::{self as api, recovery_service_client::RecoveryServiceClient};
use tonic::{Status, transport::Channel};
use tonic_types::StatusExt as _;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

type Client = RecoveryServiceClient<Channel>;

struct Replicas {
    servers: Vec<Server>,
    clients: Vec<Client>,
    sink: SmtpSink,
    db: PgDatabase,
}

fn options(db: &PgDatabase, sink: &SmtpSink) -> Options {
    Options::default()
        .env("RECOVERY_SECRET_KEY", KEY)
        .env("RECOVERY_DATABASE_URL", db.url.clone())
        .env("RECOVERY_SMTP_URL", sink.url())
        .env("RECOVERY_MAIL_RETRY_BASE", "200ms")
        .env("RECOVERY_MAIL_LEASE", "3s")
        .env("RECOVERY_SMTP_TIMEOUT", "2s")
        // Many hashing calls at once on two cores: they queue rather than refuse.
        .env("RECOVERY_HASH_ADMISSION_WAIT", "60s")
}

async fn replicas() -> Replicas {
    replicas_with(|o| o).await
}

/// Three replicas with `extra` applied to each one's options.
async fn replicas_with(extra: impl Fn(Options) -> Options) -> Replicas {
    let db = PgDatabase::create().await;
    let sink = SmtpSink::start().await.unwrap();
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let server = Server::start_with(extra(options(&db, &sink))).unwrap();
        server.wait_serving("").await.unwrap();
        clients.push(RecoveryServiceClient::new(server.channel().await.unwrap()));
        servers.push(server);
    }
    Replicas {
        servers,
        clients,
        sink,
        db,
    }
}

/// Begins a flow on one replica; answers the flow and its emailed code.
async fn flow(r: &mut Replicas, email: &str, via: usize) -> (String, String) {
    let before = r.sink.received().len();
    let flow = r.clients[via]
        .begin_recovery(api::BeginRecoveryRequest {
            email: email.into(),
            client: None,
        })
        .await
        .unwrap()
        .into_inner()
        .flow_id;
    // The newest message to this address: the code of this flow.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mail = loop {
        let received = r.sink.received();
        if let Some(m) = received[before.min(received.len())..]
            .iter()
            .find(|m| m.to.iter().any(|t| t.contains(email)) && m.code().is_some())
        {
            break m.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no code mailed to {email}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    (flow, mail.code().unwrap())
}

async fn verified(r: &mut Replicas, email: &str, via: usize) -> String {
    let (flow, code) = flow(r, email, via).await;
    r.clients[(via + 1) % 3]
        .verify_email(api::VerifyEmailRequest {
            flow_id: flow.clone(),
            email_code: code,
        })
        .await
        .unwrap();
    flow
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
async fn forty_eight_recoveries_of_one_flow_over_three_replicas_complete_once() {
    let mut r = replicas().await;
    let code = enroll(&mut r.clients[0], "acct-48", "a48@example.com").await;
    let flow = verified(&mut r, "a48@example.com", 1).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..48 {
        let mut c = r.clients[i % 3].clone();
        let (flow, code) = (flow.clone(), code.clone());
        tasks.spawn(async move {
            c.recover_account(api::RecoverAccountRequest {
                flow_id: flow,
                recovery_code: code,
            })
            .await
        });
    }
    let (mut ok, mut completed) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(_) => ok += 1,
            Err(s) if reason(&s) == "FLOW_COMPLETED" || reason(&s) == "TOO_MANY_ATTEMPTS" => {
                completed += 1;
            }
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
    assert_eq!((ok, completed), (1, 47));
    let status = r.clients[2]
        .get_recovery_status(api::GetRecoveryStatusRequest {
            account_id: "acct-48".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.use_count, 1);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
async fn thirty_wrong_email_codes_over_three_replicas_count_exactly_five() {
    let mut r = replicas().await;
    enroll(&mut r.clients[0], "acct-30", "a30@example.com").await;
    let (flow, code) = flow(&mut r, "a30@example.com", 0).await;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let mut c = r.clients[i % 3].clone();
        let flow = flow.clone();
        tasks.spawn(async move {
            c.verify_email(api::VerifyEmailRequest {
                flow_id: flow,
                email_code: wrong.into(),
            })
            .await
        });
    }
    let (mut mismatches, mut exhausted) = (BTreeSet::new(), 0);
    while let Some(result) = tasks.join_next().await {
        let status = result.unwrap().unwrap_err();
        match reason(&status).as_str() {
            "EMAIL_CODE_MISMATCH" => {
                let left =
                    status.get_details_error_info().unwrap().metadata["attempts_left"].clone();
                assert!(mismatches.insert(left), "each count answered once");
            }
            "TOO_MANY_ATTEMPTS" => exhausted += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(mismatches.len(), 5, "exactly five counted: {mismatches:?}");
    assert_eq!(exhausted, 25);
    let refused = r.clients[1]
        .verify_email(api::VerifyEmailRequest {
            flow_id: flow,
            email_code: code,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "TOO_MANY_ATTEMPTS", "even the right code");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
async fn ten_wrong_recovery_codes_over_replicas_lock_the_account_on_every_replica() {
    let mut r = replicas().await;
    let code = enroll(&mut r.clients[0], "acct-lock", "lock@example.com").await;
    let wrong = wrong_recovery_code(&code);
    let mut submitted = 0;
    for round in 0..2 {
        let flow = verified(&mut r, "lock@example.com", round).await;
        for i in 0..5 {
            let err = r.clients[(round + i) % 3]
                .recover_account(api::RecoverAccountRequest {
                    flow_id: flow.clone(),
                    recovery_code: wrong.clone(),
                })
                .await
                .unwrap_err();
            assert_eq!(reason(&err), "RECOVERY_CODE_MISMATCH");
            submitted += 1;
        }
    }
    assert_eq!(submitted, 10);
    // Every replica now refuses, even the right code, before any hashing.
    let flow = verified(&mut r, "lock@example.com", 2).await;
    for c in &mut r.clients {
        let err = c
            .recover_account(api::RecoverAccountRequest {
                flow_id: flow.clone(),
                recovery_code: code.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "RECOVERY_LOCKED");
        let status = c
            .get_recovery_status(api::GetRecoveryStatusRequest {
                account_id: "acct-lock".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(status.locked_until.is_some());
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
async fn a_replica_killed_under_load_loses_no_committed_change_and_no_mail() {
    let mut r = replicas().await;
    // Load: 6 writers, each creating codes for its own accounts through every replica.
    let committed = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..6 {
        let clients = r.clients.clone();
        let (committed, stop) = (Arc::clone(&committed), Arc::clone(&stop));
        tasks.spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let account = format!("acct-{w}-{n}");
                let mut c = clients[(w + n) % 3].clone();
                let result = tokio::time::timeout(
                    Duration::from_secs(20),
                    c.create_recovery_code(api::CreateRecoveryCodeRequest {
                        account_id: account.clone(),
                        email: format!("{account}@example.com"),
                    }),
                )
                .await;
                if let Ok(Ok(_)) = result {
                    committed.lock().unwrap().push(account);
                }
                n += 1;
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = std::time::Instant::now();
    r.servers[0]
        .signal(nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    r.servers[0]
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap();
    let at_kill = committed.lock().unwrap().len();
    // The others keep serving: the load goes on through them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    let committed = committed.lock().unwrap().clone();
    assert!(
        committed.len() > at_kill,
        "the surviving replicas kept serving ({at_kill} before the kill, {} after)",
        committed.len()
    );
    // The killed replica comes back on the same database.
    r.servers[0] = Server::start_with(options(&r.db, &r.sink)).unwrap();
    r.servers[0].wait_serving("").await.unwrap();
    let mut c = RecoveryServiceClient::new(r.servers[0].channel().await.unwrap());
    for account in &committed {
        let status = c
            .get_recovery_status(api::GetRecoveryStatusRequest {
                account_id: account.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            status.enrolled,
            "{account}: its answer said stored, so it is"
        );
    }
    // Every committed change's mail is delivered (a message claimed by the killed replica
    // after its lease), each Message-ID once.
    let want: BTreeSet<String> = committed
        .iter()
        .map(|a| format!("{a}@example.com"))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let received = r.sink.received();
        let delivered: BTreeSet<String> = received
            .iter()
            .flat_map(|m| m.to.iter().cloned())
            .map(|t| t.trim_matches(|c| c == '<' || c == '>').to_owned())
            .collect();
        if want.is_subset(&delivered) {
            // Each Message-ID once, but for a message the killed replica had handed to the
            // SMTP server and not yet marked sent: that one is sent again after its lease,
            // with the same Message-ID (receivers deduplicate by it). Its first copy arrived
            // before the kill.
            let mut first_seen: std::collections::BTreeMap<String, std::time::Instant> =
                std::collections::BTreeMap::new();
            let mut repeated = Vec::new();
            for m in &received {
                let id = m
                    .header("Message-ID")
                    .expect("every message has a Message-ID");
                match first_seen.get(&id) {
                    Some(first) => repeated.push((id.clone(), *first)),
                    None => {
                        first_seen.insert(id, m.at);
                    }
                }
            }
            for (id, first) in &repeated {
                assert!(
                    *first <= killed_at + Duration::from_millis(100),
                    "{id} was sent twice though it was not in flight at the kill"
                );
            }
            eprintln!(
                "{} committed, {} messages, {} sent again after the kill",
                committed.len(),
                received.len(),
                repeated.len()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} committed changes' mail delivered",
            want.intersection(&delivered).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
async fn sigterm_to_a_replica_under_load_lets_admitted_calls_finish_and_new_ones_go_elsewhere() {
    let mut r = replicas().await;
    let signalled: Arc<Mutex<Option<std::time::Instant>>> = Arc::new(Mutex::new(None));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // (started, result) of every call to replica 0; retried on replica 1 when refused.
    type Outcome = (std::time::Instant, Result<(), Status>, bool);
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let clients = r.clients.clone();
        let (stop, outcomes) = (Arc::clone(&stop), Arc::clone(&outcomes));
        tasks.spawn(async move {
            let mut n = 0;
            let mut first = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let account = format!("acct-t{w}-{n}");
                let request = api::CreateRecoveryCodeRequest {
                    account_id: account.clone(),
                    email: format!("{account}@example.com"),
                };
                let started = std::time::Instant::now();
                let result = clients[first]
                    .clone()
                    .create_recovery_code(request.clone())
                    .await
                    .map(drop);
                let refused = result.is_err();
                outcomes.lock().unwrap().push((started, result, first == 0));
                if refused {
                    // The replica is going away: new calls go to the others.
                    first = 1;
                    clients[1]
                        .clone()
                        .create_recovery_code(request)
                        .await
                        .expect("another replica takes the call");
                }
                n += 1;
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    *signalled.lock().unwrap() = Some(std::time::Instant::now());
    r.servers[0]
        .signal(nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let exit = r.servers[0]
        .wait_exit(Duration::from_secs(40))
        .await
        .unwrap();
    assert!(exit.success(), "a drained replica exits 0: {exit:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    let at = signalled.lock().unwrap().unwrap();
    let outcomes = outcomes.lock().unwrap();
    let mut before = 0;
    for (started, result, _) in outcomes.iter().filter(|o| o.2) {
        if *started + Duration::from_millis(100) < at {
            before += 1;
            assert!(
                result.is_ok(),
                "a call admitted before SIGTERM failed: {result:?}"
            );
        } else if let Err(status) = result {
            // Refused, never cut off: UNAVAILABLE (connection refused), or the transport's
            // own cancellation of a request the draining server never took (GOAWAY): the
            // caller may retry it elsewhere. Never a call that ran and then broke.
            let refused = status.code() == tonic::Code::Unavailable
                || (status.code() == tonic::Code::Cancelled
                    && status.message() == "operation was canceled"
                    && format!("{status:?}").contains("connection closed"));
            assert!(refused, "{status:?}");
        }
    }
    assert!(before > 0, "load was running when the signal came");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
async fn a_slow_then_down_mail_server_never_slows_the_rpcs_and_loses_no_mail() {
    let collector = Collector::default();
    let otlp = collector.start().await;
    let mut r = replicas_with(|o| {
        o.env("RECOVERY_SMTP_TIMEOUT", "10s")
            .env("RECOVERY_MAIL_LEASE", "30s")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
            .env("OTEL_METRIC_EXPORT_INTERVAL", "300")
    })
    .await;
    for i in 0..12 {
        enroll(
            &mut r.clients[i % 3],
            &format!("acct-m{i}"),
            &format!("m{i}@example.com"),
        )
        .await;
    }
    r.sink
        .wait_for(Duration::from_secs(30), |_| true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Slow: 5 s per message. Every BeginRecovery still answers at once.
    r.sink
        .set_behaviour(Behaviour::Slow(Duration::from_secs(5)));
    let mut slowest = Duration::ZERO;
    for i in 0..12 {
        let asked = std::time::Instant::now();
        r.clients[i % 3]
            .begin_recovery(api::BeginRecoveryRequest {
                email: format!("m{i}@example.com"),
                client: None,
            })
            .await
            .unwrap();
        slowest = slowest.max(asked.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(1500),
        "BeginRecovery waited for mail: {slowest:?}"
    );
    // The outbox backs up, and the backlog gauge says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !collector
        .gauge_values("recovery.outbox.backlog")
        .iter()
        .any(|v| *v > 0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the backlog gauge never rose"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Down: nothing listens; calls still answer at once.
    let addr = r.sink.addr;
    r.sink.stop_listening();
    for i in 0..12 {
        let asked = std::time::Instant::now();
        r.clients[i % 3]
            .begin_recovery(api::BeginRecoveryRequest {
                email: format!("m{i}@example.com"),
                client: None,
            })
            .await
            .unwrap();
        assert!(asked.elapsed() < Duration::from_millis(1500));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Back, on the same address: everything is delivered, each message once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let back = loop {
        match SmtpSink::start_on(addr).await {
            Ok(sink) => break sink,
            Err(err) => {
                assert!(std::time::Instant::now() < deadline, "{err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let codes: Vec<String> = r
            .sink
            .received()
            .into_iter()
            .chain(back.received())
            .filter(|m| m.code().is_some())
            .filter_map(|m| m.header("Message-ID"))
            .collect();
        let distinct: BTreeSet<&String> = codes.iter().collect();
        if distinct.len() >= 24 {
            assert_eq!(codes.len(), distinct.len(), "each message once");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of 24 verification messages delivered",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL server binaries (initdb): run with -- --include-ignored"]
async fn postgres_stopped_and_restarted_under_load_every_call_answers_fast_and_all_recover() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let bin = postgres_bin().expect("PostgreSQL's server binaries (initdb, pg_ctl)");
    let cluster = Cluster::create(bin);
    let sink = SmtpSink::start().await.unwrap();
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let server = Server::start_with(
            Options::default()
                .env("RECOVERY_SECRET_KEY", KEY)
                .env("RECOVERY_DATABASE_URL", cluster.url())
                .env("RECOVERY_SMTP_URL", sink.url()),
        )
        .unwrap();
        server.wait_serving("").await.unwrap();
        clients.push(RecoveryServiceClient::new(server.channel().await.unwrap()));
        servers.push(server);
    }
    enroll(&mut clients[0], "acct-pg", "pg@example.com").await;

    // Load: status reads and recovery starts through every replica, each call timed.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // How long each call took, and its error code if it failed.
    type Timed = (Duration, Option<tonic::Code>);
    let calls: Arc<Mutex<Vec<Timed>>> = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..6 {
        let mut c = clients[w % 3].clone();
        let (stop, calls) = (Arc::clone(&stop), Arc::clone(&calls));
        tasks.spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let asked = std::time::Instant::now();
                let result = if n % 2 == 0 {
                    c.get_recovery_status(api::GetRecoveryStatusRequest {
                        account_id: "acct-pg".into(),
                    })
                    .await
                    .map(drop)
                } else {
                    c.begin_recovery(api::BeginRecoveryRequest {
                        email: format!("nobody{w}-{n}@example.com"),
                        client: None,
                    })
                    .await
                    .map(drop)
                };
                calls
                    .lock()
                    .unwrap()
                    .push((asked.elapsed(), result.err().map(|s| s.code())));
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.stop();
    let stopped = std::time::Instant::now();
    // Every replica turns NOT_SERVING within 5 s of the database going away.
    for server in &servers {
        let left = Duration::from_secs(5).saturating_sub(stopped.elapsed());
        wait_health(server, ServingStatus::NotServing, left).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.start();
    let back = std::time::Instant::now();
    // And SERVING again within 5 s of its return.
    for server in &servers {
        let left = Duration::from_secs(5).saturating_sub(back.elapsed());
        wait_health(server, ServingStatus::Serving, left).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    let calls = calls.lock().unwrap().clone();
    let unavailable = calls
        .iter()
        .filter(|(_, code)| *code == Some(tonic::Code::Unavailable))
        .count();
    assert!(unavailable > 0, "the outage was seen");
    for (took, code) in &calls {
        assert!(
            matches!(code, None | Some(tonic::Code::Unavailable)),
            "never anything but OK or UNAVAILABLE: {code:?}"
        );
        assert!(*took < Duration::from_secs(2), "a call took {took:?}");
    }
    // Everything answers again, on every replica.
    for c in &mut clients {
        assert!(
            c.get_recovery_status(api::GetRecoveryStatusRequest {
                account_id: "acct-pg".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .enrolled
        );
    }
    eprintln!(
        "{} calls during the outage test, {unavailable} UNAVAILABLE, slowest {:?}",
        calls.len(),
        calls.iter().map(|(t, _)| *t).max().unwrap_or_default()
    );
}
