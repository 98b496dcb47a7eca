//! Email that always arrives once: delivery over real SMTP on loopback, content, SMTP outages,
//! retries, dead letters, a `kill -9` with mail still queued, and two replicas on PostgreSQL
//! never sending one message twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use recovery_e2e::{
    Options, PgDatabase, Server,
    smtp::{Behaviour, SmtpSink},
};
use recovery_proto::v1::{
    self as api, ClientContext, recovery_service_client::RecoveryServiceClient,
};
use tonic::transport::Channel;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

async fn serve(options: Options) -> (Server, RecoveryServiceClient<Channel>) {
    let server = Server::start_with(options.env("RECOVERY_SECRET_KEY", KEY)).unwrap();
    server.wait_serving("").await.unwrap();
    let client = RecoveryServiceClient::new(server.channel().await.unwrap());
    (server, client)
}

async fn enroll(c: &mut RecoveryServiceClient<Channel>, account: &str, email: &str) {
    c.create_recovery_code(api::CreateRecoveryCodeRequest {
        account_id: account.into(),
        email: email.into(),
    })
    .await
    .unwrap();
}

async fn begin(c: &mut RecoveryServiceClient<Channel>, email: &str) -> Duration {
    let started = Instant::now();
    c.begin_recovery(api::BeginRecoveryRequest {
        email: email.into(),
        client: Some(ClientContext {
            ip_address: "198.51.100.23".into(),
            user_agent: "Mozilla/5.0 <b>x</b>".into(),
        }),
    })
    .await
    .unwrap();
    started.elapsed()
}

fn is_verification(r: &recovery_e2e::smtp::Received) -> bool {
    r.header("Subject")
        .is_some_and(|s| s.contains("verification code"))
}

#[tokio::test]
async fn mail_goes_out_over_smtp_with_the_code_in_plain_text_and_html() {
    let sink = SmtpSink::start().await.unwrap();
    let (_server, mut c) = serve(
        Options::default()
            .env("RECOVERY_SMTP_URL", sink.url())
            .env("RECOVERY_MAIL_FROM", "Recovery <recovery@example.net>"),
    )
    .await;
    enroll(&mut c, "acct", "Ann@Example.com").await;
    let created = sink
        .wait_for(Duration::from_secs(5), |r| {
            r.header("Subject").is_some_and(|s| s.contains("created"))
        })
        .await
        .unwrap();
    assert_eq!(created.to, ["<Ann@Example.com>"]);

    begin(&mut c, "Ann@EXAMPLE.com").await;
    let mail = sink
        .wait_for(Duration::from_secs(5), is_verification)
        .await
        .unwrap();
    assert_eq!(
        mail.to,
        ["<Ann@Example.com>"],
        "the stored address, not the typed one"
    );
    assert_eq!(
        mail.header("From").as_deref(),
        Some("Recovery <recovery@example.net>")
    );
    assert!(
        mail.header("Message-ID")
            .is_some_and(|id| id.ends_with("@recovery-service>"))
    );
    assert!(mail.data.contains("multipart/alternative"));
    assert!(mail.data.contains("text/plain") && mail.data.contains("text/html"));
    let code = mail.code().expect("a line with the 6-digit code");
    assert!(mail.data.contains("valid for 15 minutes"));
    // One message per start: the code, with who asked and from where.
    assert!(mail.data.contains("198.51.100.23"));
    assert!(
        sink.received().iter().all(|r| !r
            .header("Subject")
            .is_some_and(|s| s.contains("was started"))),
        "no second message for the same start"
    );
    // The user agent is never shown as sent: what the parser recognised, or "an unknown
    // browser".
    let html = mail.data.split("text/html").nth(1).expect("an HTML part");
    assert!(html.contains("an unknown browser"), "{html}");
    assert!(
        !mail.data.contains("<b>x</b>") && !mail.data.contains("&lt;b&gt;x"),
        "request text never reaches the message"
    );
    assert!(!code.is_empty());
}

#[tokio::test]
async fn with_smtp_down_calls_answer_and_mail_follows_when_it_returns() {
    // A port with nothing behind it yet, held for the test.
    let port = recovery_e2e::ReservedPort::new().unwrap();
    let addr = port.addr;
    let (server, mut c) = serve(
        Options::default()
            .env("RECOVERY_SMTP_URL", format!("smtp://{addr}"))
            .env("RECOVERY_MAIL_RETRY_BASE", "200ms"),
    )
    .await;
    enroll(&mut c, "acct", "bo@example.com").await;
    let took = begin(&mut c, "bo@example.com").await;
    // The SMTP timeout is 20 s: an RPC that waited on SMTP would show it.
    assert!(
        took < Duration::from_secs(5),
        "BeginRecovery never waits on SMTP: {took:?}"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let sink = SmtpSink::start_on_reserved(port).await.unwrap();
    sink.wait_for(Duration::from_secs(15), is_verification)
        .await
        .unwrap();
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.contains("mail send failed; will retry"))
    );
}

#[tokio::test]
async fn refused_mail_becomes_a_dead_letter() {
    let sink = SmtpSink::start().await.unwrap();
    let collector = recovery_e2e::otlp::Collector::default();
    let otlp = collector.start().await;
    let (server, mut c) = serve(
        Options::default()
            .env(
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                format!("http://{otlp}"),
            )
            .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
            .env("RECOVERY_SMTP_URL", sink.url())
            .env("RECOVERY_MAIL_RETRY_BASE", "100ms")
            .env("RECOVERY_MAIL_MAX_ATTEMPTS", "3"),
    )
    .await;
    // A permanent refusal: dead at once.
    sink.set_behaviour(Behaviour::PermFail);
    enroll(&mut c, "acct", "gone@example.com").await;
    // Temporary refusals until the attempts run out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().iter().any(|l| l.contains("dead letter")) {
        assert!(Instant::now() < deadline, "no dead letter logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A permanent refusal is not retried: dead after its first attempt.
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.contains("dead letter") && l.contains("attempts=1")),
        "{:?}",
        server.log()
    );
    sink.set_behaviour(Behaviour::TempFail);
    begin(&mut c, "gone@example.com").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let dead = server
            .log()
            .iter()
            .filter(|l| l.contains("dead letter"))
            .count();
        // The refused notice, then the verification message after 3 temporary failures.
        if dead >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "temporary failures were not dead-lettered after 3 attempts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.contains("attempts=3") && l.contains("dead letter"))
    );
    assert!(sink.received().is_empty());
    // Both dead letters are counted in the metric operators alert on.
    let deadline = Instant::now() + Duration::from_secs(10);
    while collector.counter("recovery.mail.dead_letters").unwrap_or(0) < 2 {
        assert!(
            Instant::now() < deadline,
            "dead letters not counted: {:?}",
            collector.counter("recovery.mail.dead_letters")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn mail_queued_before_a_kill_9_goes_out_after_the_restart() {
    let port = recovery_e2e::ReservedPort::new().unwrap();
    let addr = port.addr;
    // A short lease: a row claimed when the process died is taken over quickly.
    let options = Options::default()
        .env("RECOVERY_SMTP_URL", format!("smtp://{addr}"))
        .env("RECOVERY_MAIL_RETRY_BASE", "100ms")
        .env("RECOVERY_SMTP_TIMEOUT", "500ms")
        .env("RECOVERY_MAIL_LEASE", "1s");
    let (mut server, mut c) = serve(options.clone()).await;
    enroll(&mut c, "acct", "cy@example.com").await;
    begin(&mut c, "cy@example.com").await;
    server.signal(Signal::SIGKILL).unwrap();
    server.wait_exit(Duration::from_secs(5)).await.unwrap();

    let sink = SmtpSink::start_on_reserved(port).await.unwrap();
    // Restart on the same database: the same working directory.
    let db = server.dir.path().join("recovery.db");
    let restarted = Server::start_with(options.env("RECOVERY_SECRET_KEY", KEY).env(
        "RECOVERY_DATABASE_URL",
        format!("sqlite://{}?mode=rwc", db.display()),
    ))
    .unwrap();
    sink.wait_for(Duration::from_secs(30), is_verification)
        .await
        .unwrap();
    sink.wait_for(Duration::from_secs(5), |r| {
        r.header("Subject").is_some_and(|s| s.contains("created"))
    })
    .await
    .unwrap();
    drop(restarted);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
async fn two_replicas_on_postgres_send_each_message_once() {
    let db = PgDatabase::create().await;
    let sink = SmtpSink::start().await.unwrap();
    let options = Options::default()
        .env("RECOVERY_DATABASE_URL", db.url.clone())
        .env("RECOVERY_SMTP_URL", sink.url())
        .env("RECOVERY_STARTS_PER_IP_PER_MINUTE", "1000")
        .env("RECOVERY_STARTS_PER_IP_PER_HOUR", "1000");
    let (_a, mut a) = serve(options.clone()).await;
    let (_b, mut b) = serve(options).await;
    let accounts = 12;
    for i in 0..accounts {
        enroll(
            &mut a,
            &format!("acct-{i}"),
            &format!("user{i}@example.com"),
        )
        .await;
    }
    for i in 0..accounts {
        let client = if i % 2 == 0 { &mut a } else { &mut b };
        begin(client, &format!("user{i}@example.com")).await;
    }
    // Each account: created + verification (one message per start).
    let expected = accounts * 2;
    let deadline = Instant::now() + Duration::from_secs(20);
    while sink.received().len() < expected {
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} messages arrived",
            sink.received().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for r in sink.received() {
        *ids.entry(r.header("Message-ID").unwrap()).or_default() += 1;
    }
    assert_eq!(ids.len(), expected);
    assert!(
        ids.values().all(|n| *n == 1),
        "a message was sent twice: {ids:?}"
    );
}
