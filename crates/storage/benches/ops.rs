//! Latency and throughput of the hot storage operations (start a flow, count an attempt,
//! verify + complete a flow, a rate-limit hit) on SQLite and, when
//! `RECOVERY_TEST_DATABASE_URL` is set, on PostgreSQL (in a throwaway schema), at 1 and 16
//! concurrent callers; and the first page of an account's audit trail (20 rows and the
//! chain's verification) for an account with 100,000 events beside one with 10.
//! `cargo bench -p recovery-storage --bench ops`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark fails loudly

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use recovery_storage::{
    AuditChainKeys, ConnectOptions, Storage,
    model::{
        AttemptKind, ClientInfo, CompletionUpdate, Effects, NewAuditEvent, NewEnrollment, NewFlow,
        Opaque, StoredCode, Timestamp,
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

/// Chain keys for the benchmark: a keyed SipHash, cheaper than the service's HMAC-SHA-256
/// (about 1 µs a row), which the figures below leave out.
#[derive(Debug)]
struct BenchKeys;

impl AuditChainKeys for BenchKeys {
    fn current_key_id(&self) -> String {
        "k1".into()
    }

    fn link(&self, _key_id: &str, previous: &str, event: &[u8]) -> Option<String> {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ("bench-key", previous, event).hash(&mut h);
        Some(format!("{:016x}", h.finish()))
    }
}

/// `n` audit events of `account`, 1,000 a transaction.
async fn fill_trail(s: &Storage, account: &str, n: usize) {
    for start in (0..n).step_by(1000) {
        let audit = (start..n.min(start + 1000))
            .map(|i| NewAuditEvent {
                personal: Default::default(),
                event_id: format!("ev-{account}-{i}"),
                account_id: account.into(),
                serialize_on: None,
                kind: "RECOVERY_STARTED".into(),
                occurred_at: Timestamp::from_ms(T0 + i as i64),
                client: ClientInfo {
                    ip: Some("203.0.113.7".into()),
                    user_agent: Some("bench".into()),
                },
                details: [("flow_id".to_owned(), format!("fl_{i:026}"))].into(),
                coalesce: None,
            })
            .collect();
        s.write_effects(
            Effects {
                messages: vec![],
                audit,
                events: vec![],
            },
            T0,
        )
        .await
        .unwrap();
    }
}

/// ListAuditEvents' storage work for the first page of 20: the page, and the chain verified
/// from its checkpoint and over the rows shown.
async fn audit_pages(backend: &str, storage: Storage) {
    let s = storage.with_audit_chain(Arc::new(BenchKeys));
    let tag = format!("{}", std::process::id());
    let (big, small) = (format!("big-{tag}"), format!("small-{tag}"));
    let filled = Instant::now();
    fill_trail(&s, &big, 100_000).await;
    fill_trail(&s, &small, 10).await;
    println!(
        "{backend:<8} audit trail of 100,000 events written in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    // The first verification walks everything (as every page did before checkpoints).
    for account in [&big, &small] {
        let t = Instant::now();
        assert!(s.audit_chain_status(account, None).await.unwrap().valid);
        println!(
            "{backend:<8} first (full) verification, {:>7} events: {:>9.3} ms",
            if account == &big { 100_000 } else { 10 },
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    for (name, account) in [
        ("audit page, 100,000 events", &big),
        ("audit page, 10 events", &small),
    ] {
        let st = s.clone();
        let account = account.clone();
        report(
            backend,
            name,
            1,
            measure(1, move |_| {
                let s = st.clone();
                let account = account.clone();
                async move {
                    let rows = s.list_audit_events(&account, None, 21).await.unwrap();
                    let shown = rows.get(19).zip(rows.first()).map(|(o, n)| (o.seq, n.seq));
                    assert!(s.audit_chain_status(&account, shown).await.unwrap().valid);
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
    run_suite("sqlite", sqlite.clone()).await;
    audit_pages("sqlite", sqlite).await;

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
    audit_pages("postgres", pg.clone()).await;
    pg.close().await.unwrap();
    exec(format!("DROP SCHEMA {schema} CASCADE")).await;
}
