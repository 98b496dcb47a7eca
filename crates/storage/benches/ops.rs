//! Latency and throughput of the hot storage operations (start a flow, count an attempt,
//! verify + complete a flow, a rate-limit hit) on SQLite and, when
//! `RECOVERY_TEST_DATABASE_URL` is set, on PostgreSQL (in a throwaway schema), at 1 and 16
//! concurrent callers. `cargo bench -p recovery-storage --bench ops`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark fails loudly

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use recovery_storage::{
    ConnectOptions, Storage,
    model::{
        AttemptKind, ClientInfo, CompletionUpdate, Effects, NewEnrollment, NewFlow, Opaque,
        StoredCode,
    },
};
use sea_orm::{ConnectionTrait as _, Database, Statement};
use tokio::task::JoinSet;

const OPS: usize = 2000;
const T0: i64 = 1_800_000_000_000;

fn new_flow(id: String, target: Option<(String, i64)>) -> NewFlow {
    NewFlow {
        flow_id: id,
        email_lookup: "ann@example.com".into(),
        target,
        email_code_mac: Opaque("0".repeat(64)),
        mac_key_id: "k1".into(),
        email_code_expires_at: recovery_storage::model::Timestamp::from_ms(T0 + 900_000),
        created_at: recovery_storage::model::Timestamp::from_ms(T0),
        expires_at: recovery_storage::model::Timestamp::from_ms(T0 + 1_800_000),
        client: ClientInfo {
            ip: Some("203.0.113.7".into()),
            user_agent: Some("bench".into()),
        },
    }
}

/// Runs `op(i)` for i in 0..OPS with `concurrency` callers; answers (ops/s, p50, p99).
async fn measure<F, Fut>(concurrency: usize, op: F) -> (f64, Duration, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for worker in 0..concurrency {
        let op = Arc::clone(&op);
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut i = worker;
            while i < OPS {
                let t = Instant::now();
                op(i).await;
                latencies.push(t.elapsed());
                i += concurrency;
            }
            latencies
        });
    }
    let mut all = Vec::with_capacity(OPS);
    while let Some(l) = tasks.join_next().await {
        all.extend(l.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    (
        OPS as f64 / elapsed.as_secs_f64(),
        all[all.len() / 2],
        all[all.len() * 99 / 100],
    )
}

fn report(
    backend: &str,
    name: &str,
    concurrency: usize,
    (rate, p50, p99): (f64, Duration, Duration),
) {
    println!(
        "{backend:<8} {name:<28} c={concurrency:<3} {rate:>9.0} ops/s  p50 {:>7.3} ms  p99 {:>7.3} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}

async fn run_suite(backend: &str, storage: Storage) {
    let s = Arc::new(storage);
    s.put_recovery_code(
        NewEnrollment {
            account_id: "acct".into(),
            email: "ann@example.com".into(),
            email_lookup: "ann@example.com".into(),
            code: StoredCode {
                code_id: "c1".into(),
                hash: Opaque("$argon2id$...".into()),
                key_id: "k1".into(),
                params: "argon2id,m=19456,t=2,p=1".into(),
                sealed_keyset: None,
            },
        },
        T0,
        |_| Effects::none(),
    )
    .await
    .unwrap();
    for concurrency in [1, 16] {
        let tag = format!("c{concurrency}");
        let st = Arc::clone(&s);
        let t = tag.clone();
        report(
            backend,
            "begin_recovery",
            concurrency,
            measure(concurrency, move |i| {
                let s = Arc::clone(&st);
                let id = format!("{t}-f{i}");
                async move {
                    s.begin_recovery(new_flow(id, Some(("acct".into(), 1))), Effects::none())
                        .await
                        .unwrap();
                }
            })
            .await,
        );

        let st = Arc::clone(&s);
        let t = tag.clone();
        report(
            backend,
            "register_attempt",
            concurrency,
            measure(concurrency, move |i| {
                let s = Arc::clone(&st);
                let id = format!("{t}-f{i}");
                async move {
                    s.register_attempt_with(&id, AttemptKind::EmailCode, 5, T0, |_| {
                        recovery_storage::model::Effects::none()
                    })
                    .await
                    .unwrap()
                    .unwrap();
                }
            })
            .await,
        );

        let st = Arc::clone(&s);
        let t = tag.clone();
        report(
            backend,
            "verify + recover_account",
            concurrency,
            measure(concurrency, move |i| {
                let s = Arc::clone(&st);
                let id = format!("{t}-f{i}");
                async move {
                    assert!(s.verify_email(&id, T0 + 1, Effects::none()).await.unwrap());
                    s.recover_account(
                        &id,
                        T0 + 2,
                        CompletionUpdate {
                            verified_code_id: "c1".into(),
                            ..CompletionUpdate::default()
                        },
                        |_| Effects::none(),
                    )
                    .await
                    .unwrap();
                }
            })
            .await,
        );

        let st = Arc::clone(&s);
        let t = tag.clone();
        report(
            backend,
            "hit_rate_limit",
            concurrency,
            measure(concurrency, move |i| {
                let s = Arc::clone(&st);
                let key = format!("{t}-ip:{}", i % 64);
                async move {
                    s.hit_rate_limit(&key, 3_600_000, 1_000_000, T0)
                        .await
                        .unwrap();
                }
            })
            .await,
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("{OPS} operations per row");
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let sqlite = Storage::connect(&ConnectOptions::new(url)).await.unwrap();
    sqlite.migrate().await.unwrap();
    run_suite("sqlite", sqlite).await;

    let Ok(url) = std::env::var("RECOVERY_TEST_DATABASE_URL") else {
        println!("postgres: skipped (set RECOVERY_TEST_DATABASE_URL)");
        return;
    };
    let schema = format!("bench_{}", std::process::id());
    let admin = Database::connect(&url).await.unwrap();
    let exec = |sql: String| {
        let admin = &admin;
        async move {
            admin
                .execute_raw(Statement::from_string(admin.get_database_backend(), sql))
                .await
                .unwrap();
        }
    };
    exec(format!("CREATE SCHEMA {schema}")).await;
    let mut options = ConnectOptions::new(url);
    options.schema = Some(schema.clone());
    options.max_connections = 16;
    let pg = Storage::connect(&options).await.unwrap();
    pg.migrate().await.unwrap();
    run_suite("postgres", pg.clone()).await;
    pg.close().await.unwrap();
    exec(format!("DROP SCHEMA {schema} CASCADE")).await;
}
