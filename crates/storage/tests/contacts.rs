//! The recovery-contacts part of the storage behaviour suite, run on SQLite and PostgreSQL:
//! the limits and single-use steps under 32 concurrent calls, the cleanup of old contact flows
//! and a forget that removes contacts in both directions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use common::TestDb;
use recovery_storage::{
    CONTACT_FLOW_RETENTION_MS, Storage,
    model::{
        BeginContact, ClientInfo, ContactFlowRefusal, ContactLimits, ContactRefusal, Effects,
        NewContactFlow, NewEnrollment, Opaque, RecoveryContact, StoredCode, Timestamp,
        VouchOutcome,
    },
};
use tokio::task::JoinSet;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const T0: i64 = 1_800_000_000_000;
const LIMITS: ContactLimits = ContactLimits {
    per_owner: 10,
    per_contact: 25,
};

on_every_backend!(
    concurrent_vouches_count_once_and_start_one_waiting_period,
    concurrent_invitations_hold_both_limits,
    old_contact_flows_and_their_vouches_are_cleaned_up,
    a_forget_removes_contacts_both_ways_and_withdraws_its_vouches,
);

async fn enroll(s: &Storage, account: &str) {
    s.put_recovery_code(
        NewEnrollment {
            account_id: account.into(),
            email: format!("{account}@example.com"),
            email_lookup: format!("{account}@example.com"),
            code: StoredCode {
                code_id: "c1".into(),
                hash: Opaque("$argon2id$hash".into()),
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
}

fn contact(owner: &str, name: &str, at: i64) -> RecoveryContact {
    RecoveryContact {
        owner_account_id: owner.into(),
        contact_account_id: name.into(),
        contact_email: format!("{name}@example.net"),
        invited_at: Timestamp::from_ms(at),
        expires_at: Timestamp::from_ms(at + 7 * DAY),
        accepted_at: None,
        active_from: None,
    }
}

async fn invite(s: &Storage, owner: &str, name: &str) -> Result<(), ContactRefusal> {
    s.invite_recovery_contact(contact(owner, name, T0), LIMITS, |_| Effects::none())
        .await
        .unwrap()
        .map(drop)
}

/// `owner` enrolled with `names` active from T0 + 1, and `threshold`.
async fn with_contacts(s: &Storage, owner: &str, names: &[&str], threshold: i32) {
    enroll(s, owner).await;
    for name in names {
        invite(s, owner, name).await.unwrap();
        s.accept_recovery_contact(owner, name, 1, T0, |_| Effects::none())
            .await
            .unwrap()
            .unwrap();
    }
    s.set_recovery_contact_threshold(owner, threshold, T0, |_| Effects::none())
        .await
        .unwrap();
}

async fn begin(s: &Storage, owner: &str, id: &str, at: i64) {
    let begun = s
        .begin_contact_recovery(
            NewContactFlow {
                contact_flow_id: id.into(),
                email_lookup: format!("key-{owner}"),
                code_mac: Opaque("mac".into()),
                mac_key_id: "k1".into(),
                created_at: Timestamp::from_ms(at),
                expires_at: Timestamp::from_ms(at + DAY),
                client: ClientInfo::default(),
            },
            &format!("{owner}@example.com"),
            3,
            DAY,
            |_| Effects::none(),
        )
        .await
        .unwrap();
    assert!(
        matches!(begun, BeginContact::Started(ref s) if s.account_id.as_deref() == Some(owner))
    );
}

async fn vouch(
    s: &Storage,
    flow: &str,
    who: &str,
    at: i64,
) -> Result<VouchOutcome, ContactFlowRefusal> {
    s.vouch_for_recovery(flow, who, true, 5, 7 * DAY, 2 * DAY, at, |_| {
        Effects::none()
    })
    .await
    .unwrap()
}

async fn concurrent_vouches_count_once_and_start_one_waiting_period(db: &TestDb) {
    let s = &db.storage;
    with_contacts(s, "ann", &["a", "b", "c"], 2).await;
    begin(s, "ann", "cf_1", T0 + 10).await;
    let mut tasks = JoinSet::new();
    for i in 0..32 {
        let s = s.clone();
        let who = ["a", "a", "b"][i % 3];
        tasks.spawn(async move { vouch(&s, "cf_1", who, T0 + 20).await });
    }
    let mut started = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap().unwrap() {
            VouchOutcome::Vouched(v) => {
                assert!(v.vouches <= 2);
                started += usize::from(v.pending_started);
            }
            VouchOutcome::Mismatch { .. } => panic!("a right code"),
        }
    }
    assert_eq!(started, 1, "one waiting period");
    let flow = s.find_contact_flow("cf_1").await.unwrap().unwrap();
    assert_eq!(
        flow.completes_at,
        Some(Timestamp::from_ms(T0 + 20 + 2 * DAY))
    );
    // The status read: the enrolment and the contacts at a glance, in one statement.
    let (enrolment, summary) = s.recovery_status("ann", DAY, T0 + 30).await.unwrap();
    assert_eq!(enrolment.unwrap().code.unwrap().code_id, "c1");
    assert_eq!(
        (
            summary.active,
            summary.threshold,
            summary.open_flows,
            summary.completes_at
        ),
        (3, Some(2), 1, flow.completes_at)
    );
    let (nobody, none) = s.recovery_status("nobody", DAY, T0 + 30).await.unwrap();
    assert!(nobody.is_none());
    assert_eq!((none.active, none.threshold, none.open_flows), (0, None, 0));
    // 32 completions after the wait: one.
    let mut tasks = JoinSet::new();
    for _ in 0..32 {
        let s = s.clone();
        tasks.spawn(async move {
            s.complete_contact_recovery("cf_1", DAY, T0 + 20 + 2 * DAY, |_| Effects::none())
                .await
                .unwrap()
        });
    }
    let (mut won, mut ended) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(done) => {
                won += 1;
                assert_eq!(done.vouched_by, ["a", "b"]);
                assert_eq!(done.revoked_code_id.as_deref(), Some("c1"));
            }
            Err(ContactFlowRefusal::Ended) => ended += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!((won, ended), (1, 31));
}

async fn concurrent_invitations_hold_both_limits(db: &TestDb) {
    let s = &db.storage;
    let mut tasks = JoinSet::new();
    for i in 0..32 {
        let s = s.clone();
        tasks.spawn(async move { invite(&s, "ann", &format!("n{i}")).await });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(()) => ok += 1,
            Err(refusal) => assert_eq!(refusal, ContactRefusal::TooManyForOwner),
        }
    }
    assert_eq!(ok, 10);
    let mut tasks = JoinSet::new();
    for i in 0..32 {
        let s = s.clone();
        tasks.spawn(async move { invite(&s, &format!("o{i}"), "popular").await });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(()) => ok += 1,
            Err(refusal) => assert_eq!(refusal, ContactRefusal::TooManyForContact),
        }
    }
    assert_eq!(ok, 25);
}

async fn old_contact_flows_and_their_vouches_are_cleaned_up(db: &TestDb) {
    let s = &db.storage;
    with_contacts(s, "ann", &["a"], 2).await;
    begin(s, "ann", "cf_old", T0 + 10).await;
    vouch(s, "cf_old", "a", T0 + 20).await.unwrap();
    let before = T0 + 10 + CONTACT_FLOW_RETENTION_MS;
    let report = s.cleanup(before - 1, 0, 0, 100).await.unwrap();
    assert_eq!(report.contact_flows, 0, "kept until its retention ends");
    let report = s.cleanup(before, 0, 0, 100).await.unwrap();
    assert_eq!(report.contact_flows, 1);
    assert!(s.find_contact_flow("cf_old").await.unwrap().is_none());
    // Its vouch went with it: the contact's cooldown record is gone too.
    begin(s, "ann", "cf_new", before + 10).await;
    assert!(matches!(
        vouch(s, "cf_new", "a", before + 20).await,
        Ok(VouchOutcome::Vouched(_))
    ));
}

async fn a_forget_removes_contacts_both_ways_and_withdraws_its_vouches(db: &TestDb) {
    let s = &db.storage;
    with_contacts(s, "ann", &["bob", "cat"], 2).await;
    with_contacts(s, "bob", &["cat"], 1).await;
    begin(s, "ann", "cf_1", T0 + 10).await;
    vouch(s, "cf_1", "bob", T0 + 20).await.unwrap();
    vouch(s, "cf_1", "cat", T0 + 20).await.unwrap();
    assert!(
        s.find_contact_flow("cf_1")
            .await
            .unwrap()
            .unwrap()
            .completes_at
            .is_some()
    );
    s.forget_account("bob", T0 + 30, |_| Effects::none())
        .await
        .unwrap();
    let (ann, _) = s.recovery_contacts("ann", T0 + 40).await.unwrap();
    assert_eq!(
        ann.iter()
            .map(|c| c.contact_account_id.as_str())
            .collect::<Vec<_>>(),
        ["cat"]
    );
    let (bobs, threshold) = s.recovery_contacts("bob", T0 + 40).await.unwrap();
    assert!(bobs.is_empty());
    assert_eq!(threshold, 1, "its threshold went too");
    let flow = s.find_contact_flow("cf_1").await.unwrap().unwrap();
    assert!(
        flow.completes_at.is_none(),
        "bob's vouch was withdrawn: the period stopped"
    );
    assert_eq!(
        s.complete_contact_recovery("cf_1", DAY, T0 + 3 * DAY, |_| Effects::none())
            .await
            .unwrap()
            .unwrap_err(),
        ContactFlowRefusal::Expired,
        "gathering is over and the threshold is not met"
    );
}
