//! Zero-knowledge enrolments and logins in storage, on SQLite and PostgreSQL
//! (`RECOVERY_TEST_DATABASE_URL`): a finished enrollment id stores once however many race, a
//! pending login completes only as the state it was started with, a wrong finish ends it once,
//! and a retiring completion frees the address.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::sync::Arc;

use common::TestDb;
use recovery_storage::{
    ChangeError, ConflictKind, Storage, StorageError,
    model::{
        ClientInfo, Completion, CompletionUpdate, Effects, NewEnrollment, NewFlow, Opaque,
        StoredCode, Timestamp,
    },
};
use tokio::task::JoinSet;

const MIN: i64 = 60_000;
const T0: i64 = 1_800_000_000_000;

on_every_backend!(
    a_finished_enrollment_is_stored_once_with_its_sealed_keyset,
    concurrent_finishes_of_one_enrollment_store_it_once,
    a_pending_login_completes_only_with_the_state_it_was_started_with,
    a_wrong_finish_ends_the_login_once,
    concurrent_finishes_of_one_login_complete_once,
    a_retiring_completion_frees_the_address_and_cancels_other_flows,
    revoking_a_zero_knowledge_enrolment_deletes_its_record_and_keyset,
);

fn zk_code(id: &str) -> StoredCode {
    StoredCode {
        code_id: id.to_owned(),
        hash: Opaque(format!("record-of-{id}")),
        key_id: "k1".to_owned(),
        params: "opaque-3dh,ristretto255-sha512".to_owned(),
        sealed_keyset: Some(Opaque(format!("keyset-of-{id}"))),
    }
}

fn enrollment(account: &str, code_id: &str) -> NewEnrollment {
    NewEnrollment {
        account_id: account.to_owned(),
        email: format!("{account}@example.com"),
        email_lookup: format!("{account}@example.com"),
        code: zk_code(code_id),
    }
}

fn flow(id: &str, account: &str, generation: i64) -> NewFlow {
    NewFlow {
        flow_id: id.to_owned(),
        email_lookup: "lookup".to_owned(),
        target: Some((account.to_owned(), generation)),
        email_code_mac: Opaque("mac".to_owned()),
        mac_key_id: "k1".to_owned(),
        email_code_expires_at: Timestamp::from_ms(T0 + 15 * MIN),
        created_at: Timestamp::from_ms(T0),
        expires_at: Timestamp::from_ms(T0 + 30 * MIN),
        client: ClientInfo::default(),
    }
}

/// A zero-knowledge enrolment with a verified flow `flow_id` against it.
async fn verified_flow(s: &Storage, account: &str, flow_id: &str) -> i64 {
    let put = s
        .finish_enrollment(
            enrollment(account, "zk_1"),
            &format!("key-{account}-{flow_id}"),
            T0 + 15 * MIN,
            T0,
            |_| Effects::none(),
        )
        .await
        .unwrap();
    s.begin_recovery(flow(flow_id, account, put.generation), Effects::none())
        .await
        .unwrap();
    assert!(
        s.verify_email(flow_id, T0 + MIN, Effects::none())
            .await
            .unwrap()
    );
    put.generation
}

fn completing(state: &str, retire: bool) -> CompletionUpdate {
    CompletionUpdate {
        verified_code_id: "zk_1".to_owned(),
        login_state: Some(Opaque(state.to_owned())),
        retire,
        ..CompletionUpdate::default()
    }
}

fn already_used<E: std::fmt::Debug>(result: &Result<impl std::fmt::Debug, ChangeError<E>>) -> bool {
    matches!(
        result,
        Err(ChangeError::Storage(StorageError::Conflict {
            kind: ConflictKind::AlreadyUsed,
            ..
        }))
    )
}

async fn a_finished_enrollment_is_stored_once_with_its_sealed_keyset(db: &TestDb) {
    let s = &db.storage;
    let first = s
        .finish_enrollment(
            enrollment("acct", "zk_1"),
            "id-1",
            T0 + 15 * MIN,
            T0,
            |_| Effects::none(),
        )
        .await
        .unwrap();
    assert!(!first.replaced);
    let stored = s.find_enrollment("acct").await.unwrap().unwrap();
    assert_eq!(stored.code, Some(zk_code("zk_1")));

    // The same enrollment id again: refused, nothing changed (not even by another account).
    let again = s
        .finish_enrollment(
            enrollment("acct", "zk_2"),
            "id-1",
            T0 + 15 * MIN,
            T0 + 1,
            |_| Effects::none(),
        )
        .await;
    assert!(already_used(&again), "{again:?}");
    let other = s
        .finish_enrollment(
            enrollment("other", "zk_3"),
            "id-1",
            T0 + 15 * MIN,
            T0 + 1,
            |_| Effects::none(),
        )
        .await;
    assert!(already_used(&other), "{other:?}");
    assert_eq!(s.find_enrollment("other").await.unwrap(), None);
    assert_eq!(s.find_enrollment("acct").await.unwrap().unwrap(), stored);

    // Another enrollment id replaces it, as CreateRecoveryCode replaces a code.
    let second = s
        .finish_enrollment(
            enrollment("acct", "zk_2"),
            "id-2",
            T0 + 15 * MIN,
            T0 + 2,
            |_| Effects::none(),
        )
        .await
        .unwrap();
    assert!(second.replaced);
    assert_eq!(second.generation, first.generation + 1);
    assert_eq!(
        s.find_enrollment("acct").await.unwrap().unwrap().code,
        Some(zk_code("zk_2"))
    );

    // Cleanup forgets finished ids once they have expired, not before.
    let report = s.cleanup(T0 + 15 * MIN - 1, 0, 0, 100).await.unwrap();
    assert_eq!(report.finished_enrollments, 0);
    let report = s.cleanup(T0 + 15 * MIN, 0, 0, 100).await.unwrap();
    assert_eq!(report.finished_enrollments, 2);
}

async fn concurrent_finishes_of_one_enrollment_store_it_once(db: &TestDb) {
    let s = Arc::new(db.storage.clone());
    let mut tasks = JoinSet::new();
    for n in 0..32 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            s.finish_enrollment(
                enrollment("acct", &format!("zk_{n}")),
                "one-id",
                T0 + 15 * MIN,
                T0,
                |_| Effects::none(),
            )
            .await
        });
    }
    let (mut stored, mut refused) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        let result = result.unwrap();
        if result.is_ok() {
            stored += 1;
        } else {
            assert!(already_used(&result), "{result:?}");
            refused += 1;
        }
    }
    assert_eq!((stored, refused), (1, 31));
    assert_eq!(
        s.find_enrollment("acct").await.unwrap().unwrap().generation,
        1
    );
}

async fn a_pending_login_completes_only_with_the_state_it_was_started_with(db: &TestDb) {
    let s = &db.storage;
    verified_flow(s, "acct", "f1").await;
    assert!(
        s.store_login_state("f1", Opaque("s1".into()), T0 + 2 * MIN, Effects::none())
            .await
            .unwrap()
    );
    assert_eq!(
        s.find_flow("f1").await.unwrap().unwrap().zk_login_state,
        Some(Opaque("s1".into()))
    );
    // A newer start replaces the pending login (kept beside it): the first one completes
    // nothing.
    assert!(
        s.store_login_state("f1", Opaque("s2".into()), T0 + 3 * MIN, Effects::none())
            .await
            .unwrap()
    );
    let replaced = s.find_flow("f1").await.unwrap().unwrap();
    assert_eq!(replaced.zk_previous_login_state, Some(Opaque("s1".into())));

    let stale = s
        .recover_account("f1", T0 + 4 * MIN, completing("s1", false), |_| {
            Effects::none()
        })
        .await
        .unwrap();
    assert_eq!(stale, Completion::NotCompletable);
    let done = s
        .recover_account("f1", T0 + 4 * MIN, completing("s2", false), |_| {
            Effects::none()
        })
        .await
        .unwrap();
    assert_eq!(done, Completion::Completed { use_count: 1 });
    let flow = s.find_flow("f1").await.unwrap().unwrap();
    assert!(flow.completed_at.is_some());
    assert_eq!(flow.zk_login_state, None, "the logins end with the flow");
    assert_eq!(flow.zk_previous_login_state, None);
    // A completed flow takes no new login.
    assert!(
        !s.store_login_state("f1", Opaque("s3".into()), T0 + 5 * MIN, Effects::none())
            .await
            .unwrap()
    );
    // Nor does an unverified one.
    s.begin_recovery(flow_of("f2", "acct", 1), Effects::none())
        .await
        .unwrap();
    assert!(
        !s.store_login_state("f2", Opaque("s".into()), T0 + MIN, Effects::none())
            .await
            .unwrap()
    );
}

fn flow_of(id: &str, account: &str, generation: i64) -> NewFlow {
    flow(id, account, generation)
}

async fn a_wrong_finish_ends_the_login_once(db: &TestDb) {
    let s = &db.storage;
    verified_flow(s, "acct", "f1").await;
    assert!(
        s.store_login_state("f1", Opaque("s1".into()), T0 + 2 * MIN, Effects::none())
            .await
            .unwrap()
    );
    let s1 = Opaque("s1".into());
    assert!(
        !s.end_login_state("f1", &Opaque("other".into()), T0, Effects::none())
            .await
            .unwrap()
    );
    assert!(
        s.end_login_state("f1", &s1, T0, Effects::none())
            .await
            .unwrap()
    );
    assert!(
        !s.end_login_state("f1", &s1, T0, Effects::none())
            .await
            .unwrap()
    );
    assert_eq!(
        s.find_flow("f1").await.unwrap().unwrap().zk_login_state,
        None
    );
    // Ended: the right KE3 that comes after completes nothing.
    assert_eq!(
        s.recover_account("f1", T0 + 3 * MIN, completing("s1", false), |_| {
            Effects::none()
        })
        .await
        .unwrap(),
        Completion::NotCompletable
    );
}

async fn concurrent_finishes_of_one_login_complete_once(db: &TestDb) {
    let s = Arc::new(db.storage.clone());
    verified_flow(&s, "acct", "f1").await;
    assert!(
        s.store_login_state("f1", Opaque("s1".into()), T0 + 2 * MIN, Effects::none())
            .await
            .unwrap()
    );
    let mut tasks = JoinSet::new();
    for _ in 0..32 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            s.recover_account("f1", T0 + 3 * MIN, completing("s1", false), |_| {
                Effects::none()
            })
            .await
        });
    }
    let mut completed = 0;
    while let Some(result) = tasks.join_next().await {
        match result.unwrap().unwrap() {
            Completion::Completed { .. } => completed += 1,
            Completion::NotCompletable => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(completed, 1);
    assert_eq!(
        s.find_enrollment("acct").await.unwrap().unwrap().use_count,
        1
    );
}

async fn a_retiring_completion_frees_the_address_and_cancels_other_flows(db: &TestDb) {
    let s = &db.storage;
    let generation = verified_flow(s, "acct", "f1").await;
    s.begin_recovery(flow("f2", "acct", generation), Effects::none())
        .await
        .unwrap();
    assert!(
        s.store_login_state("f1", Opaque("s1".into()), T0 + 2 * MIN, Effects::none())
            .await
            .unwrap()
    );
    assert_eq!(
        s.recover_account("f1", T0 + 3 * MIN, completing("s1", true), |_| {
            Effects::none()
        })
        .await
        .unwrap(),
        Completion::Completed { use_count: 1 }
    );
    let after = s.find_enrollment("acct").await.unwrap().unwrap();
    assert_eq!(after.code, None, "retired: record and keyset deleted");
    assert_eq!(
        after.generation,
        generation + 1,
        "other flows are cancelled"
    );
    assert_eq!(
        s.find_enrollment_by_email("acct@example.com")
            .await
            .unwrap(),
        None
    );
    // The address is free for another account at once.
    s.put_recovery_code(
        NewEnrollment {
            account_id: "other".into(),
            ..enrollment("acct", "zk_9")
        },
        T0 + 4 * MIN,
        |_| Effects::none(),
    )
    .await
    .unwrap();
}

async fn revoking_a_zero_knowledge_enrolment_deletes_its_record_and_keyset(db: &TestDb) {
    let s = &db.storage;
    s.finish_enrollment(
        enrollment("acct", "zk_1"),
        "id-1",
        T0 + 15 * MIN,
        T0,
        |_| Effects::none(),
    )
    .await
    .unwrap();
    s.revoke_recovery_code("acct", T0 + 1, |_| Effects::none())
        .await
        .unwrap();
    assert_eq!(s.find_enrollment("acct").await.unwrap().unwrap().code, None);
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM {schema}.recovery_enrollments \
             WHERE code_hash IS NOT NULL OR sealed_keyset IS NOT NULL OR hash_params IS NOT NULL"
        )
        .await,
        0
    );
}
