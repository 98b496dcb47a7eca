//! The storage behaviour suite, written once and run on SQLite and PostgreSQL
//! (`RECOVERY_TEST_DATABASE_URL`). Concurrency tests fire 32 operations at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::{collections::BTreeMap, sync::Arc};

use common::TestDb;
use recovery_storage::{
    ChangeError, SchemaStatus, Storage, StorageError,
    model::{
        AttemptKind, ClientInfo, Completion, CompletionUpdate, Effects, NewAuditEvent,
        NewEnrollment, NewFlow, NewMessage, Opaque, RateDecision, StoredCode, Timestamp,
    },
};
use tokio::task::JoinSet;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const T0: i64 = 1_800_000_000_000;

on_every_backend!(
    migrations_are_idempotent_and_current,
    a_schema_newer_than_the_build_is_refused,
    a_code_is_created_then_replaced_with_a_new_generation,
    an_email_belongs_to_one_live_enrollment,
    revoking_clears_the_code_and_cancels_flows,
    changing_the_email_moves_lookup_and_generation,
    a_flow_is_verified_once_and_completed_once,
    a_flow_started_before_a_new_code_cannot_complete,
    attempt_counters_stop_at_the_cap,
    concurrent_attempts_get_exactly_cap_successes,
    concurrent_verifications_have_exactly_one_winner,
    concurrent_completions_have_exactly_one_winner,
    rate_limits_allow_exactly_the_limit_per_window,
    concurrent_rate_limit_hits_allow_exactly_the_limit,
    outbox_rows_are_claimed_leased_and_finished,
    concurrent_claimers_never_share_a_row,
    effects_are_written_with_their_change_or_not_at_all,
    effects_that_cannot_be_built_roll_the_change_back,
    the_audit_trail_pages_newest_first,
    concurrent_submissions_reserve_exactly_the_threshold_then_lock,
    a_lock_event_is_written_with_the_lock_and_held_until_the_code_proves_wrong,
    cleanup_deletes_what_expired_in_batches,
);

fn code(id: &str) -> StoredCode {
    StoredCode {
        code_id: id.to_owned(),
        hash: Opaque(format!("$argon2id$v=19$m=19456,t=2,p=1$salt${id}")),
        key_id: "k1".to_owned(),
        params: "argon2id,m=19456,t=2,p=1".to_owned(),
        sealed_keyset: None,
    }
}

fn enrollment(account: &str, email: &str, code_id: &str) -> NewEnrollment {
    NewEnrollment {
        account_id: account.to_owned(),
        email: email.to_owned(),
        email_lookup: email.to_lowercase(),
        code: code(code_id),
    }
}

fn audit(account: &str, kind: &str, at: i64) -> NewAuditEvent {
    NewAuditEvent {
        personal: Default::default(),
        event_id: format!("{account}-{kind}-{at}-{}", rand_suffix()),
        account_id: account.to_owned(),
        serialize_on: None,
        kind: kind.to_owned(),
        occurred_at: Timestamp::from_ms(at),
        client: ClientInfo::default(),
        coalesce: None,
        details: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
    }
}

fn message(account: &str, kind: &str) -> NewMessage {
    NewMessage {
        message_id: format!("{account}-{kind}-{}", rand_suffix()),
        kind: kind.to_owned(),
        account_id: Some(account.to_owned()),
        recipient: "ann@example.com".to_owned(),
        payload: Opaque("sealed".to_owned()),
        deliver: true,
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn flow(id: &str, target: Option<(&str, i64)>, now: i64) -> NewFlow {
    NewFlow {
        flow_id: id.to_owned(),
        email_lookup: "ann@example.com".to_owned(),
        target: target.map(|(a, g)| (a.to_owned(), g)),
        email_code_mac: Opaque("mac".to_owned()),
        mac_key_id: "k1".to_owned(),
        email_code_expires_at: Timestamp::from_ms(now + 15 * MIN),
        created_at: Timestamp::from_ms(now),
        expires_at: Timestamp::from_ms(now + 30 * MIN),
        client: ClientInfo {
            ip: Some("203.0.113.7".to_owned()),
            user_agent: Some("test".to_owned()),
        },
    }
}

/// An enrolled account with a verified flow against it.
/// A completion of a submission checked against code `code_id`.
fn checked(code_id: &str) -> CompletionUpdate {
    CompletionUpdate {
        verified_code_id: code_id.into(),
        ..CompletionUpdate::default()
    }
}

async fn verified_flow(s: &Storage, account: &str, flow_id: &str) {
    let put = s
        .put_recovery_code(
            enrollment(account, &format!("{account}@example.com"), "c1"),
            T0,
            |_| Effects::none(),
        )
        .await
        .unwrap();
    s.begin_recovery(
        flow(flow_id, Some((account, put.generation)), T0),
        Effects::none(),
    )
    .await
    .unwrap();
    assert!(
        s.verify_email(flow_id, T0 + MIN, Effects::none())
            .await
            .unwrap()
    );
}

async fn migrations_are_idempotent_and_current(db: &TestDb) {
    let s = &db.storage;
    assert_eq!(s.schema_status().await.unwrap(), SchemaStatus::Current);
    assert!(
        s.migrate().await.unwrap().is_empty(),
        "second run applies nothing"
    );
    assert_eq!(s.schema_status().await.unwrap(), SchemaStatus::Current);
}

async fn a_schema_newer_than_the_build_is_refused(db: &TestDb) {
    db.execute(
        "INSERT INTO {schema}.seaql_migrations (version, applied_at) VALUES ('m29990101_000001_from_the_future', 0)",
    )
    .await;
    let s = &db.storage;
    assert_eq!(
        s.schema_status().await.unwrap(),
        SchemaStatus::TooNew(vec!["m29990101_000001_from_the_future".to_owned()])
    );
    let err = s.migrate().await.unwrap_err();
    assert!(matches!(err, StorageError::SchemaTooNew(_)), "{err:?}");
    assert!(err.to_string().contains("newer than this build"), "{err}");
    assert_ne!(s.schema_status().await.unwrap(), SchemaStatus::Current);
}

async fn a_code_is_created_then_replaced_with_a_new_generation(db: &TestDb) {
    let s = &db.storage;
    let first = s
        .put_recovery_code(enrollment("acct", "ann@example.com", "c1"), T0, |o| {
            Effects {
                messages: vec![message(
                    "acct",
                    if o.replaced { "replaced" } else { "created" },
                )],
                audit: vec![audit("acct", "created", T0)],
                events: vec![],
            }
        })
        .await
        .unwrap();
    assert!(!first.replaced);
    assert_eq!(first.generation, 1);

    let second = s
        .put_recovery_code(enrollment("acct", "ann@example.com", "c2"), T0 + 1, |o| {
            Effects {
                messages: vec![message(
                    "acct",
                    if o.replaced { "replaced" } else { "created" },
                )],
                audit: vec![audit("acct", "replaced", T0 + 1)],
                events: vec![],
            }
        })
        .await
        .unwrap();
    assert!(second.replaced);
    assert_eq!(second.previous_email.as_deref(), Some("ann@example.com"));
    assert_eq!(second.generation, 2);

    let stored = s.find_enrollment("acct").await.unwrap().unwrap();
    assert_eq!(stored.code.unwrap().code_id, "c2");
    assert_eq!(stored.use_count, 0);
    assert_eq!(stored.code_created_at, Some(Timestamp::from_ms(T0 + 1)));
    let found = s
        .find_enrollment_by_email("ann@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.account_id, "acct");

    let claimed = s.claim_outbox("w", 10, MIN, T0 + 2).await.unwrap();
    let kinds: Vec<&str> = claimed.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(kinds, ["created", "replaced"]);
    assert_eq!(
        s.list_audit_events("acct", None, 10).await.unwrap().len(),
        2
    );
}

async fn an_email_belongs_to_one_live_enrollment(db: &TestDb) {
    let s = &db.storage;
    s.put_recovery_code(enrollment("a", "shared@example.com", "c1"), T0, |_| {
        Effects::none()
    })
    .await
    .unwrap();
    let err = s
        .put_recovery_code(enrollment("b", "shared@example.com", "c2"), T0, |_| {
            Effects {
                messages: vec![message("b", "created")],
                audit: vec![],
                events: vec![],
            }
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ChangeError::Storage(StorageError::Conflict {
                kind: recovery_storage::ConflictKind::AddressInUse,
                ..
            })
        ),
        "{err:?}"
    );
    assert!(s.find_enrollment("b").await.unwrap().is_none());
    assert!(
        s.claim_outbox("w", 10, MIN, T0).await.unwrap().is_empty(),
        "rolled back"
    );

    // Once revoked, the address is free again.
    s.revoke_recovery_code("a", T0 + 1, |_| Effects::none())
        .await
        .unwrap();
    s.put_recovery_code(enrollment("b", "shared@example.com", "c2"), T0 + 2, |_| {
        Effects::none()
    })
    .await
    .unwrap();
}

async fn revoking_clears_the_code_and_cancels_flows(db: &TestDb) {
    let s = &db.storage;
    verified_flow(s, "acct", "f1").await;
    let before = s
        .revoke_recovery_code("acct", T0 + 2 * MIN, |e| Effects {
            messages: vec![],
            audit: vec![audit(&e.account_id, "revoked", T0)],
            events: vec![],
        })
        .await
        .unwrap();
    assert_eq!(before.code.unwrap().code_id, "c1");
    let after = s.find_enrollment("acct").await.unwrap().unwrap();
    assert!(after.code.is_none());
    assert_eq!(after.generation, 2);
    assert!(
        s.find_enrollment_by_email("acct@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.recover_account("f1", T0 + 3 * MIN, checked("c1"), |_| { Effects::none() })
            .await
            .unwrap(),
        Completion::Cancelled
    );
    let err = s
        .revoke_recovery_code("acct", T0, |_| Effects::none())
        .await
        .unwrap_err();
    assert!(matches!(err, ChangeError::Storage(StorageError::NotFound)));
    let err = s
        .revoke_recovery_code("nobody", T0, |_| Effects::none())
        .await
        .unwrap_err();
    assert!(matches!(err, ChangeError::Storage(StorageError::NotFound)));

    let again = s
        .put_recovery_code(
            enrollment("acct", "acct@example.com", "c3"),
            T0 + 4 * MIN,
            |_| Effects::none(),
        )
        .await
        .unwrap();
    assert!(!again.replaced, "a code after a revocation is a creation");
    assert_eq!(again.generation, 3, "generations never repeat");
}

async fn changing_the_email_moves_lookup_and_generation(db: &TestDb) {
    let s = &db.storage;
    verified_flow(s, "acct", "f1").await;
    let before = s
        .update_recovery_email(
            "acct",
            "New@Example.com",
            "new@example.com",
            T0 + MIN,
            |_| Effects::none(),
        )
        .await
        .unwrap();
    assert_eq!(before.email, "acct@example.com");
    assert!(
        s.find_enrollment_by_email("acct@example.com")
            .await
            .unwrap()
            .is_none()
    );
    let moved = s
        .find_enrollment_by_email("new@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.email, "New@Example.com");
    assert_eq!(moved.generation, 2);
    assert_eq!(
        s.recover_account("f1", T0 + 2 * MIN, checked("c1"), |_| { Effects::none() })
            .await
            .unwrap(),
        Completion::Cancelled
    );
    let err = s
        .update_recovery_email("nobody", "x@example.com", "x@example.com", T0, |_| {
            Effects::none()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ChangeError::Storage(StorageError::NotFound)));
}

async fn a_flow_is_verified_once_and_completed_once(db: &TestDb) {
    let s = &db.storage;
    let put = s
        .put_recovery_code(enrollment("acct", "ann@example.com", "c1"), T0, |_| {
            Effects::none()
        })
        .await
        .unwrap();
    s.begin_recovery(
        flow("f1", Some(("acct", put.generation)), T0),
        Effects::none(),
    )
    .await
    .unwrap();
    let stored = s.find_flow("f1").await.unwrap().unwrap();
    assert_eq!(stored.target, Some(("acct".to_owned(), 1)));
    assert_eq!(stored.client.ip.as_deref(), Some("203.0.113.7"));
    assert!(s.find_flow("nope").await.unwrap().is_none());

    // Not verified yet: cannot complete.
    assert_eq!(
        s.recover_account("f1", T0 + MIN, checked("c1"), |_| { Effects::none() })
            .await
            .unwrap(),
        Completion::NotCompletable
    );
    // The email code expires at +15 min: verifying at exactly that instant is too late.
    assert!(
        !s.verify_email("f1", T0 + 15 * MIN, Effects::none())
            .await
            .unwrap()
    );
    assert!(
        s.verify_email("f1", T0 + 15 * MIN - 1, Effects::none())
            .await
            .unwrap()
    );
    assert!(
        !s.verify_email("f1", T0 + MIN, Effects::none())
            .await
            .unwrap(),
        "once"
    );

    let done = s
        .recover_account(
            "f1",
            T0 + 20 * MIN,
            CompletionUpdate {
                verified_code_id: "c1".into(),
                new_code: Some(code("c2")),
                rotated: true,
                ..CompletionUpdate::default()
            },
            |n| Effects {
                messages: vec![message("acct", "recovered")],
                audit: vec![audit("acct", &format!("completed-{}", n.use_count), T0)],
                events: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(done, Completion::Completed { use_count: 1 });
    let e = s.find_enrollment("acct").await.unwrap().unwrap();
    assert_eq!(e.use_count, 1);
    assert_eq!(e.last_used_at, Some(Timestamp::from_ms(T0 + 20 * MIN)));
    assert_eq!(e.code.unwrap().code_id, "c2");
    assert_eq!(
        s.recover_account("f1", T0 + 21 * MIN, checked("c1"), |_| { Effects::none() })
            .await
            .unwrap(),
        Completion::NotCompletable
    );

    // A flow for an enrolment that changed meanwhile is not stored.
    assert!(matches!(
        s.begin_recovery(flow("f-stale", Some(("acct", 1)), T0), Effects::none())
            .await,
        Err(recovery_storage::StorageError::NotFound)
    ));
    assert!(s.find_flow("f-stale").await.unwrap().is_none());
    // A verified flow past its 30-minute lifetime cannot complete.
    let generation = s.find_enrollment("acct").await.unwrap().unwrap().generation;
    s.begin_recovery(flow("f2", Some(("acct", generation)), T0), Effects::none())
        .await
        .unwrap();
    assert!(
        s.verify_email("f2", T0 + MIN, Effects::none())
            .await
            .unwrap()
    );
    assert_eq!(
        s.recover_account("f2", T0 + 30 * MIN, checked("c1"), |_| { Effects::none() })
            .await
            .unwrap(),
        Completion::NotCompletable
    );
    // A flow for an unknown email never completes.
    s.begin_recovery(flow("f3", None, T0), Effects::none())
        .await
        .unwrap();
    assert!(
        s.verify_email("f3", T0 + MIN, Effects::none())
            .await
            .unwrap()
    );
    assert_eq!(
        s.recover_account("f3", T0 + 2 * MIN, checked("c1"), |_| { Effects::none() })
            .await
            .unwrap(),
        Completion::NotCompletable
    );
}

async fn a_flow_started_before_a_new_code_cannot_complete(db: &TestDb) {
    let s = &db.storage;
    verified_flow(s, "acct", "f1").await;
    s.put_recovery_code(
        enrollment("acct", "acct@example.com", "c2"),
        T0 + 2 * MIN,
        |_| Effects::none(),
    )
    .await
    .unwrap();
    assert_eq!(
        s.recover_account("f1", T0 + 3 * MIN, checked("c1"), |_| {
            Effects {
                messages: vec![message("acct", "recovered")],
                audit: vec![],
                events: vec![],
            }
        })
        .await
        .unwrap(),
        Completion::Cancelled
    );
    let f = s.find_flow("f1").await.unwrap().unwrap();
    assert_eq!(f.completed_at, None, "the completion rolled back");
    assert_eq!(
        s.find_enrollment("acct").await.unwrap().unwrap().use_count,
        0
    );
    assert!(
        s.claim_outbox("w", 10, MIN, T0 + 4 * MIN)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn attempt_counters_stop_at_the_cap(db: &TestDb) {
    let s = &db.storage;
    s.begin_recovery(flow("f1", None, T0), Effects::none())
        .await
        .unwrap();
    for expected in 1..=5 {
        assert_eq!(
            s.register_attempt_with("f1", AttemptKind::EmailCode, 5, T0, |_| Effects::none())
                .await
                .unwrap(),
            Some(expected)
        );
    }
    assert_eq!(
        s.register_attempt_with("f1", AttemptKind::EmailCode, 5, T0, |_| Effects::none())
            .await
            .unwrap(),
        None
    );
    // The other counter is separate.
    assert_eq!(
        s.register_attempt_with("f1", AttemptKind::RecoveryCode, 5, T0, |_| Effects::none())
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        s.register_attempt_with("nope", AttemptKind::EmailCode, 5, T0, |_| Effects::none())
            .await
            .unwrap(),
        None
    );
    let f = s.find_flow("f1").await.unwrap().unwrap();
    assert_eq!((f.email_attempts, f.recovery_attempts), (5, 1));
}

async fn concurrent_attempts_get_exactly_cap_successes(db: &TestDb) {
    let s = db.storage.clone();
    s.begin_recovery(flow("f1", None, T0), Effects::none())
        .await
        .unwrap();
    let mut tasks = JoinSet::new();
    for _ in 0..32 {
        let s = s.clone();
        tasks.spawn(async move {
            s.register_attempt_with("f1", AttemptKind::RecoveryCode, 5, T0, |_| Effects::none())
                .await
        });
    }
    let mut granted: Vec<i32> = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Some(n) = result.unwrap().unwrap() {
            granted.push(n);
        }
    }
    granted.sort_unstable();
    assert_eq!(granted, [1, 2, 3, 4, 5]);
}

async fn concurrent_verifications_have_exactly_one_winner(db: &TestDb) {
    let s = db.storage.clone();
    s.begin_recovery(flow("f1", None, T0), Effects::none())
        .await
        .unwrap();
    let mut tasks = JoinSet::new();
    for i in 0..32 {
        let s = s.clone();
        tasks.spawn(async move {
            s.verify_email(
                "f1",
                T0 + MIN,
                Effects {
                    messages: vec![],
                    audit: vec![audit("acct", &format!("verified-{i}"), T0)],
                    events: vec![],
                },
            )
            .await
        });
    }
    let mut winners = 0;
    while let Some(result) = tasks.join_next().await {
        winners += usize::from(result.unwrap().unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(
        s.list_audit_events("acct", None, 100).await.unwrap().len(),
        1
    );
}

async fn concurrent_completions_have_exactly_one_winner(db: &TestDb) {
    let s = db.storage.clone();
    verified_flow(&s, "acct", "f1").await;
    let s = Arc::new(s);
    let mut tasks = JoinSet::new();
    for _ in 0..32 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            s.recover_account("f1", T0 + 2 * MIN, checked("c1"), |_| Effects {
                messages: vec![message("acct", "recovered")],
                audit: vec![],
                events: vec![],
            })
            .await
        });
    }
    let mut completed = 0;
    while let Some(result) = tasks.join_next().await {
        match result.unwrap().unwrap() {
            Completion::Completed { use_count } => {
                completed += 1;
                assert_eq!(use_count, 1);
            }
            Completion::NotCompletable => {}
            Completion::Cancelled => panic!("nothing changed the enrollment"),
            Completion::Locked { .. } => panic!("nothing locked the account"),
        }
    }
    assert_eq!(completed, 1);
    assert_eq!(
        s.find_enrollment("acct").await.unwrap().unwrap().use_count,
        1
    );
    assert_eq!(
        s.claim_outbox("w", 100, MIN, T0 + 3 * MIN)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn rate_limits_allow_exactly_the_limit_per_window(db: &TestDb) {
    let s = &db.storage;
    let window_start = T0 - T0.rem_euclid(HOUR);
    let now = window_start + 10 * MIN;
    for n in 1..=3 {
        assert_eq!(
            s.hit_rate_limit("email:ann@example.com", HOUR, 3, now)
                .await
                .unwrap(),
            RateDecision::Allowed { count: n }
        );
    }
    assert_eq!(
        s.hit_rate_limit("email:ann@example.com", HOUR, 3, now)
            .await
            .unwrap(),
        RateDecision::Limited {
            retry_after_ms: 50 * MIN
        }
    );
    // Other keys are counted apart; the next window starts afresh.
    assert!(matches!(
        s.hit_rate_limit("ip:203.0.113.7", HOUR, 3, now)
            .await
            .unwrap(),
        RateDecision::Allowed { count: 1 }
    ));
    assert!(matches!(
        s.hit_rate_limit("email:ann@example.com", HOUR, 3, window_start + HOUR)
            .await
            .unwrap(),
        RateDecision::Allowed { count: 1 }
    ));
}

async fn concurrent_rate_limit_hits_allow_exactly_the_limit(db: &TestDb) {
    let s = db.storage.clone();
    let mut tasks = JoinSet::new();
    for _ in 0..32 {
        let s = s.clone();
        tasks.spawn(async move { s.hit_rate_limit("ip:198.51.100.1", HOUR, 5, T0).await });
    }
    let mut allowed = 0;
    while let Some(result) = tasks.join_next().await {
        if matches!(result.unwrap().unwrap(), RateDecision::Allowed { .. }) {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5);
}

async fn outbox_rows_are_claimed_leased_and_finished(db: &TestDb) {
    let s = &db.storage;
    s.begin_recovery(
        flow("f1", None, T0),
        Effects {
            messages: vec![
                message("a", "one"),
                message("a", "two"),
                message("a", "three"),
            ],
            audit: vec![],
            events: vec![],
        },
    )
    .await
    .unwrap();
    let claimed = s.claim_outbox("w1", 10, MIN, T0).await.unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(
        claimed
            .iter()
            .all(|m| m.attempts == 1 && m.payload == Opaque("sealed".into()))
    );
    assert!(
        s.claim_outbox("w2", 10, MIN, T0 + 1)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );

    let (one, two, three) = (claimed[0].id, claimed[1].id, claimed[2].id);
    assert!(
        !s.mark_outbox_sent(one, "w2", T0).await.unwrap(),
        "not w2's claim"
    );
    assert!(s.mark_outbox_sent(one, "w1", T0).await.unwrap());
    assert!(
        s.reschedule_outbox(two, "w1", T0 + 5 * MIN, "421 try later")
            .await
            .unwrap()
    );
    assert!(
        s.dead_letter_outbox(three, "w1", "550 no such user")
            .await
            .unwrap()
    );

    assert!(
        s.claim_outbox("w2", 10, MIN, T0 + MIN)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let again = s.claim_outbox("w2", 10, MIN, T0 + 5 * MIN).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (two, 2));

    // w2 dies mid-send: once its lease runs out, another worker takes the row over.
    let taken = s.claim_outbox("w3", 10, MIN, T0 + 6 * MIN).await.unwrap();
    assert_eq!((taken[0].id, taken[0].attempts), (two, 3));
    assert!(
        !s.mark_outbox_sent(two, "w2", T0 + 6 * MIN).await.unwrap(),
        "w2 lost it"
    );
    let stats = s.outbox_stats().await.unwrap();
    assert_eq!((stats.backlog, stats.dead), (1, 1));
    assert_eq!(stats.oldest_backlog_at, Some(Timestamp::from_ms(T0)));
    assert!(s.mark_outbox_sent(two, "w3", T0 + 6 * MIN).await.unwrap());
    let stats = s.outbox_stats().await.unwrap();
    assert_eq!(
        (stats.backlog, stats.dead, stats.oldest_backlog_at),
        (0, 1, None)
    );
}

async fn concurrent_claimers_never_share_a_row(db: &TestDb) {
    let s = db.storage.clone();
    let messages: Vec<NewMessage> = (0..64).map(|i| message("a", &format!("m{i}"))).collect();
    s.begin_recovery(
        flow("f1", None, T0),
        Effects {
            messages,
            audit: vec![],
            events: vec![],
        },
    )
    .await
    .unwrap();
    let mut tasks = JoinSet::new();
    for w in 0..8 {
        let s = s.clone();
        tasks.spawn(async move {
            let owner = format!("w{w}");
            let mut mine = Vec::new();
            loop {
                let batch = s.claim_outbox(&owner, 4, MIN, T0).await.unwrap();
                if batch.is_empty() {
                    break mine;
                }
                for m in batch {
                    assert!(s.mark_outbox_sent(m.id, &owner, T0).await.unwrap());
                    mine.push(m.id);
                }
            }
        });
    }
    let mut all = Vec::new();
    while let Some(result) = tasks.join_next().await {
        all.extend(result.unwrap());
    }
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "a row was claimed twice");
    assert_eq!(all.len(), 64);
}

async fn effects_are_written_with_their_change_or_not_at_all(db: &TestDb) {
    let s = &db.storage;
    let duplicate = audit("acct", "dup", T0);
    s.put_recovery_code(enrollment("acct", "ann@example.com", "c1"), T0, |_| {
        Effects {
            messages: vec![],
            audit: vec![duplicate.clone()],
            events: vec![],
        }
    })
    .await
    .unwrap();
    // The same audit event id again: the audit insert fails, so the replacement must not land.
    let err = s
        .put_recovery_code(enrollment("acct", "ann@example.com", "c2"), T0 + 1, |_| {
            Effects {
                messages: vec![message("acct", "replaced")],
                audit: vec![duplicate],
                events: vec![],
            }
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ChangeError::Storage(StorageError::Conflict {
                kind: recovery_storage::ConflictKind::Duplicate,
                ..
            })
        ),
        "{err:?}"
    );
    let e = s.find_enrollment("acct").await.unwrap().unwrap();
    assert_eq!(e.code.unwrap().code_id, "c1");
    assert_eq!(e.generation, 1);
    assert!(
        s.claim_outbox("w", 10, MIN, T0 + 2)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn the_audit_trail_pages_newest_first(db: &TestDb) {
    let s = &db.storage;
    for i in 0..5 {
        s.begin_recovery(
            flow(&format!("f{i}"), None, T0 + i),
            Effects {
                messages: vec![],
                audit: vec![audit("acct", &format!("e{i}"), T0 + i)],
                events: vec![],
            },
        )
        .await
        .unwrap();
    }
    s.begin_recovery(
        flow("other", None, T0),
        Effects {
            messages: vec![],
            audit: vec![audit("someone-else", "x", T0)],
            events: vec![],
        },
    )
    .await
    .unwrap();
    let page1 = s.list_audit_events("acct", None, 2).await.unwrap();
    let kinds: Vec<&str> = page1.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["e4", "e3"]);
    assert_eq!(page1[0].details.get("k").map(String::as_str), Some("v"));
    let page2 = s
        .list_audit_events("acct", Some(page1[1].seq), 2)
        .await
        .unwrap();
    let kinds: Vec<&str> = page2.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["e2", "e1"]);
    let page3 = s
        .list_audit_events("acct", Some(page2[1].seq), 2)
        .await
        .unwrap();
    assert_eq!(page3.len(), 1);
}

async fn cleanup_deletes_what_expired_in_batches(db: &TestDb) {
    let s = &db.storage;
    for i in 0..5 {
        s.begin_recovery(flow(&format!("old{i}"), None, T0), Effects::none())
            .await
            .unwrap();
    }
    s.begin_recovery(flow("fresh", None, T0 + HOUR), Effects::none())
        .await
        .unwrap();
    s.hit_rate_limit("ip:a", MIN, 5, T0).await.unwrap();
    let now = T0 + HOUR;
    let first = s.cleanup(now, now - 24 * HOUR, now, 3).await.unwrap();
    assert_eq!(first.flows, 3, "bounded by the batch");
    assert_eq!(first.rate_limits, 1);
    let second = s.cleanup(now, now - 24 * HOUR, now, 3).await.unwrap();
    assert_eq!(second.flows, 2);
    assert_eq!(
        s.cleanup(now, now - 24 * HOUR, now, 3).await.unwrap().flows,
        0
    );
    assert!(s.find_flow("fresh").await.unwrap().is_some());
    assert!(s.find_flow("old0").await.unwrap().is_none());
}

async fn effects_that_cannot_be_built_roll_the_change_back(db: &TestDb) {
    let s = &db.storage;
    let err = s
        .put_recovery_code(enrollment("acct", "ann@example.com", "c1"), T0, |_| {
            Err::<Effects, _>("the random source failed")
        })
        .await
        .unwrap_err();
    // The callback's own error comes back as it was, not as a string.
    assert!(
        matches!(err, ChangeError::Effects("the random source failed")),
        "{err:?}"
    );
    assert!(
        s.find_enrollment("acct").await.unwrap().is_none(),
        "nothing stored"
    );

    s.put_recovery_code(enrollment("acct", "ann@example.com", "c1"), T0, |_| {
        Effects::none()
    })
    .await
    .unwrap();
    s.revoke_recovery_code("acct", T0 + 1, |_| {
        Err::<Effects, _>("no notice, no revocation")
    })
    .await
    .unwrap_err();
    assert!(
        s.find_enrollment("acct")
            .await
            .unwrap()
            .unwrap()
            .code
            .is_some()
    );
}

async fn concurrent_submissions_reserve_exactly_the_threshold_then_lock(db: &TestDb) {
    let s = Arc::new(db.storage.clone());
    verified_flow(&s, "acct", "f0").await;
    let generation = s.find_enrollment("acct").await.unwrap().unwrap().generation;
    for i in 1..8 {
        s.begin_recovery(
            flow(&format!("f{i}"), Some(("acct", generation)), T0),
            Effects::none(),
        )
        .await
        .unwrap();
    }
    let lockout = recovery_storage::model::Lockout {
        window_ms: 24 * HOUR,
        threshold: 10,
        lock_ms: 24 * HOUR,
    };
    let mut tasks = JoinSet::new();
    for i in 0..40 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            s.reserve_recovery_attempt(&format!("f{}", i % 8), "acct", 5, T0 + MIN, lockout, None)
                .await
                .unwrap()
        });
    }
    let (mut admitted, mut locked, mut lockers) = (0, 0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            recovery_storage::model::AttemptReservation::Admitted { locked_until, .. } => {
                admitted += 1;
                lockers += usize::from(locked_until.is_some());
            }
            recovery_storage::model::AttemptReservation::Locked { until } => {
                assert_eq!(until, Timestamp::from_ms(T0 + MIN + 24 * HOUR));
                locked += 1;
            }
            recovery_storage::model::AttemptReservation::NoAttempt => {}
        }
    }
    assert_eq!(admitted, 10, "exactly the threshold is counted");
    assert_eq!(lockers, 1, "one submission locks");
    assert_eq!(locked, 30);
}

async fn a_lock_event_is_written_with_the_lock_and_held_until_the_code_proves_wrong(db: &TestDb) {
    let s = &db.storage;
    verified_flow(s, "acct", "f1").await;
    let lockout = recovery_storage::model::Lockout {
        window_ms: 24 * HOUR,
        threshold: 1,
        lock_ms: 24 * HOUR,
    };
    let event = |id: &str| recovery_storage::model::NewEvent {
        event_id: id.into(),
        account_id: "acct".into(),
        event_type: "recovery.locked".into(),
        payload: "{}".into(),
    };
    // This submission locks: its event is stored with the lock, but held.
    let reserved = s
        .reserve_recovery_attempt("f1", "acct", 5, T0 + MIN, lockout, Some(event("evt_l1")))
        .await
        .unwrap();
    let recovery_storage::model::AttemptReservation::Admitted {
        failure_id,
        locked_until: Some(until),
        ..
    } = reserved
    else {
        panic!("the first failure locks: {reserved:?}");
    };
    assert_eq!(s.event_stats().await.unwrap().backlog, 1);
    assert!(
        s.claim_events("p", 10, MIN, T0 + MIN)
            .await
            .unwrap()
            .is_empty(),
        "held"
    );
    // The code proved right: lock and event are given back together.
    s.release_recovery_attempt("acct", failure_id, Some(until), Some("evt_l1"))
        .await
        .unwrap();
    assert_eq!(s.event_stats().await.unwrap().backlog, 0);
    assert!(
        s.find_enrollment("acct")
            .await
            .unwrap()
            .unwrap()
            .locked_until
            .is_none()
    );

    // Again; this time the code proves wrong: the event goes out at once.
    s.reserve_recovery_attempt(
        "f1",
        "acct",
        5,
        T0 + 2 * MIN,
        lockout,
        Some(event("evt_l2")),
    )
    .await
    .unwrap();
    s.release_held_event("evt_l2", T0 + 2 * MIN).await.unwrap();
    let claimed = s.claim_events("p", 10, MIN, T0 + 2 * MIN).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event_id, "evt_l2");
    assert!(
        s.mark_event_published(claimed[0].seq, "p", T0 + 2 * MIN)
            .await
            .unwrap()
    );
    // A submission that locks and whose process dies: published after the hold anyway.
    verified_flow(s, "acct2", "f2").await;
    let mut e3 = event("evt_l3");
    e3.account_id = "acct2".into();
    s.reserve_recovery_attempt("f2", "acct2", 5, T0 + 3 * MIN, lockout, Some(e3))
        .await
        .unwrap();
    assert!(
        s.claim_events("p", 10, MIN, T0 + 3 * MIN + 119_999)
            .await
            .unwrap()
            .is_empty()
    );
    let late = s
        .claim_events("p", 10, MIN, T0 + 3 * MIN + 120_000)
        .await
        .unwrap();
    assert_eq!(late[0].event_id, "evt_l3");
}

/// A migrated database at `url` where "ann" has code "c1".
async fn migrated_with_ann(url: &str) -> Storage {
    let storage = Storage::connect(&recovery_storage::ConnectOptions::new(url))
        .await
        .unwrap();
    storage.migrate().await.unwrap();
    storage
        .put_recovery_code(enrollment("ann", "ann@example.com", "c1"), T0, |_| {
            Effects::default()
        })
        .await
        .unwrap();
    storage
}

/// SQLite has one writer; reads outside a transaction go to read-only connections beside it,
/// so a status read never queues behind a write waiting for the database (here: another
/// process holds the write lock, and the service's own write waits on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_reads_do_not_queue_behind_the_writer() {
    use sea_orm::{ConnectionTrait as _, Database, Statement, TransactionTrait as _};

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
    let storage = migrated_with_ann(&url).await;

    // Another process takes the write lock and keeps it.
    let other = Database::connect(&url).await.unwrap();
    let held = other.begin().await.unwrap();
    held.execute_raw(Statement::from_string(
        held.get_database_backend(),
        "UPDATE recovery_enrollments SET use_count = use_count WHERE account_id = 'ann'",
    ))
    .await
    .unwrap();

    // The service's writer now waits on it (busy timeout) with its one connection.
    let writer = {
        let storage = storage.clone();
        tokio::spawn(async move { storage.hit_rate_limit("ip:203.0.113.7", HOUR, 5, T0).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !writer.is_finished(),
        "the write should be waiting for the lock"
    );

    // Reads answer at once, and see what was committed.
    for _ in 0..20 {
        let found = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            storage.find_enrollment("ann"),
        )
        .await
        .expect("a read waited for the writer")
        .unwrap()
        .unwrap();
        assert_eq!(found.code.unwrap().code_id, "c1");
        let events = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            storage.list_audit_events("ann", None, 20),
        )
        .await
        .expect("a read waited for the writer")
        .unwrap();
        assert!(events.is_empty());
    }

    // The lock goes away: the waiting write completes.
    held.rollback().await.unwrap();
    assert_eq!(
        writer.await.unwrap().unwrap(),
        RateDecision::Allowed { count: 1 }
    );
    other.close().await.unwrap();
    storage.close().await.unwrap();
}

/// An in-memory database written as a `file:` URI is one database: reads see the writer's
/// schema and rows (read-only connections would each open an empty one).
#[tokio::test]
async fn a_shared_memory_sqlite_url_reads_what_it_wrote() {
    let storage = migrated_with_ann("sqlite:file::memory:?cache=shared").await;
    let found = storage.find_enrollment("ann").await.unwrap().unwrap();
    assert_eq!(found.code.unwrap().code_id, "c1");
    storage.ping().await.unwrap();
    storage.close().await.unwrap();
}
