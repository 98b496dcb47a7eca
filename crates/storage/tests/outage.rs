//! A PostgreSQL server that goes away under a running pool: operations answer
//! `StorageError::Unavailable` (never a panic), and the pool recovers once the server is back.
//! Runs against a throwaway cluster this test creates with `initdb` in a temporary directory on
//! its own port, never the machine's shared server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::time::{Duration, Instant};

use recovery_storage::{ConnectOptions, Storage, StorageError, model::RateDecision};
use recovery_test_support::pgcluster::{Cluster, postgres_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL server binaries (initdb): run with -- --include-ignored"]
async fn a_stopped_server_is_unavailable_and_the_pool_recovers_when_it_returns() {
    let bin = postgres_bin().expect(
        "this test needs PostgreSQL's server binaries (initdb, pg_ctl) under /usr/lib/postgresql",
    );
    let cluster = Cluster::create(bin);
    let mut options = ConnectOptions::new(cluster.url());
    options.max_connections = 4;
    options.connect_timeout = Duration::from_secs(1);
    let storage = Storage::connect(&options).await.unwrap();
    storage.migrate().await.unwrap();
    storage.ping().await.unwrap();
    let hit = |now: i64| storage.hit_rate_limit("ip:203.0.113.7", 60_000, 100, now);
    assert!(matches!(
        hit(0).await.unwrap(),
        RateDecision::Allowed { count: 1 }
    ));

    cluster.stop();
    for attempt in 0..3 {
        let err = storage.ping().await.unwrap_err();
        assert!(
            matches!(err, StorageError::Unavailable(_)),
            "attempt {attempt}: {err:?}"
        );
        let err = hit(1).await.unwrap_err();
        assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
        assert!(
            !err.to_string().contains("postgres://"),
            "no URL in errors: {err}"
        );
    }

    cluster.start();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match storage.ping().await {
            Ok(()) => break,
            Err(err) if Instant::now() < deadline => {
                assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("the pool did not recover: {err:?}"),
        }
    }
    // Data written before the outage is still there, and writes work again.
    assert!(matches!(
        hit(2).await.unwrap(),
        RateDecision::Allowed { count: 2 }
    ));
    storage.close().await.unwrap();
}
