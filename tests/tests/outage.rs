//! The database goes away under a running server: calls answer UNAVAILABLE (nothing changed,
//! retry later), health turns NOT_SERVING, and everything comes back with the database.
//! Runs against a throwaway PostgreSQL cluster, never the machine's shared server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::time::{Duration, Instant};

use recovery_e2e::{
    Options, Server,
    pgcluster::{Cluster, postgres_bin},
    wait_health,
};
use recovery_proto::v1::{self as api, recovery_service_client::RecoveryServiceClient};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt as _;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[tokio::test]
#[ignore = "needs PostgreSQL server binaries (initdb): run with -- --include-ignored"]
async fn a_lost_database_means_unavailable_and_not_serving_until_it_returns() {
    let bin = postgres_bin().expect(
        "this test needs PostgreSQL's server binaries (initdb, pg_ctl) under /usr/lib/postgresql",
    );
    let cluster = Cluster::create(bin);
    let server = Server::start_with(
        Options::default()
            .env("RECOVERY_SECRET_KEY", KEY)
            .env("RECOVERY_DATABASE_URL", cluster.url()),
    )
    .unwrap();
    server.wait_serving("").await.unwrap();
    let mut c = RecoveryServiceClient::new(server.channel().await.unwrap());
    c.create_recovery_code(api::CreateRecoveryCodeRequest {
        account_id: "acct".into(),
        email: "ann@example.com".into(),
    })
    .await
    .unwrap();

    cluster.stop();
    let stopped = Instant::now();
    let status = api::GetRecoveryStatusRequest {
        account_id: "acct".into(),
    };
    // Every call answers UNAVAILABLE (nothing changed, retry), and within 2 s: never a hang
    // until the caller's deadline.
    for _ in 0..3 {
        let asked = Instant::now();
        let err = c.get_recovery_status(status.clone()).await.unwrap_err();
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "took {:?}",
            asked.elapsed()
        );
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert_eq!(err.get_details_error_info().unwrap().reason, "UNAVAILABLE");
        assert!(err.get_details_retry_info().is_some());
        let asked = Instant::now();
        let err = c
            .begin_recovery(api::BeginRecoveryRequest {
                email: "ann@example.com".into(),
                client: None,
            })
            .await
            .unwrap_err();
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "took {:?}",
            asked.elapsed()
        );
        assert_eq!(err.code(), Code::Unavailable);
    }
    wait_health(
        &server,
        ServingStatus::NotServing,
        Duration::from_secs(5).saturating_sub(stopped.elapsed()),
    )
    .await;

    cluster.start();
    // Both come back by themselves within 5 s of the database's return.
    wait_health(&server, ServingStatus::Serving, Duration::from_secs(5)).await;
    let answer = c.get_recovery_status(status).await.unwrap().into_inner();

    assert!(
        answer.enrolled,
        "what was stored before the outage is still there"
    );
}
