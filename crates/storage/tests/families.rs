//! The families part of the storage behaviour suite (membership and organizer-assisted
//! flows), run on SQLite and PostgreSQL. Concurrency tests fire 32 operations at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::sync::Arc;

use common::TestDb;
use recovery_storage::{
    ChangeError, Storage, StorageError,
    model::{
        AssistedEnd, AssistedLimits, AssistedRefusal, BeginAssisted, ClientInfo, Completion,
        CompletionUpdate, Effects, FamilyRole, NewAssistedFlow, NewEnrollment, NewFamilyMember,
        NewFlow, NewMessage, Opaque, StoredCode, Timestamp,
    },
};
use tokio::task::JoinSet;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
const T0: i64 = 1_800_000_000_000;
const LIMITS: AssistedLimits = AssistedLimits {
    window_ms: DAY,
    per_organizer: 5,
    per_member: 3,
};

on_every_backend!(
    an_account_is_in_one_family_and_a_put_moves_it,
    a_membership_change_ends_the_flows_that_involve_the_account,
    begin_checks_organizer_member_and_self_inside_the_transaction,
    a_new_begin_supersedes_the_members_earlier_flow,
    begins_are_limited_per_organizer_and_per_member_in_a_sliding_day,
    code_submissions_stop_at_the_cap_and_verify_once,
    completion_needs_an_organizer_of_the_family_and_verification,
    completion_revokes_the_members_code_and_ends_their_other_flows,
    concurrent_completions_of_one_flow_have_exactly_one_winner,
    the_members_own_recovery_and_an_organizers_completion_race_to_one_winner,
    cancel_is_for_the_member_or_an_organizer_and_happens_once,
    the_family_status_says_who_can_recover_how,
    expired_assisted_flows_are_cleaned_up,
    begins_and_completions_on_the_same_two_accounts_never_deadlock,
    concurrent_cancels_and_a_completion_of_one_flow_end_it_once,
);

fn put(family: &str, account: &str, role: FamilyRole) -> NewFamilyMember {
    NewFamilyMember {
        family_id: family.into(),
        account_id: account.into(),
        role,
        email: format!("{account}@family.example"),
    }
}

async fn member(s: &Storage, family: &str, account: &str, role: FamilyRole) {
    s.put_family_member(put(family, account, role), T0, |_| Effects::none())
        .await
        .unwrap();
}

/// Family `fam`: organizers `org` and `org2`, member `kid`.
async fn family(s: &Storage) {
    member(s, "fam", "org", FamilyRole::Organizer).await;
    member(s, "fam", "org2", FamilyRole::Organizer).await;
    member(s, "fam", "kid", FamilyRole::Member).await;
}

fn new_flow(id: &str, family: &str, organizer: &str, member: &str, now: i64) -> NewAssistedFlow {
    NewAssistedFlow {
        assisted_flow_id: id.into(),
        family_id: family.into(),
        member_account_id: member.into(),
        organizer_account_id: organizer.into(),
        email_code_mac: Opaque("mac".into()),
        mac_key_id: "k1".into(),
        created_at: Timestamp::from_ms(now),
        expires_at: Timestamp::from_ms(now + DAY),
        client: ClientInfo::default(),
    }
}

async fn begin(s: &Storage, id: &str, organizer: &str, member: &str, now: i64) -> BeginAssisted {
    s.begin_assisted_recovery(new_flow(id, "fam", organizer, member, now), LIMITS, |_| {
        Effects::none()
    })
    .await
    .unwrap()
}

async fn verified(s: &Storage, id: &str, organizer: &str, member: &str) {
    assert!(matches!(
        begin(s, id, organizer, member, T0).await,
        BeginAssisted::Started(_)
    ));
    assert!(
        s.verify_assisted_recovery(id, T0 + MIN, Effects::none())
            .await
            .unwrap()
    );
}

fn note(account: &str) -> NewMessage {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    NewMessage {
        message_id: format!("{account}-{}", N.fetch_add(1, Ordering::Relaxed)),
        kind: "assisted_recovery_completed".into(),
        account_id: Some(account.into()),
        recipient: format!("{account}@family.example"),
        payload: Opaque("sealed".into()),
        deliver: true,
    }
}

async fn enroll(s: &Storage, account: &str) -> i64 {
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
    .unwrap()
    .generation
}

async fn complete(
    s: &Storage,
    id: &str,
    organizer: &str,
    now: i64,
) -> Result<recovery_storage::model::AssistedCompletion, AssistedRefusal> {
    s.complete_assisted_recovery(id, organizer, now, |c| Effects {
        messages: vec![note(&c.flow.member_account_id)],
        audit: vec![],
        events: vec![],
    })
    .await
    .unwrap()
}

async fn an_account_is_in_one_family_and_a_put_moves_it(db: &TestDb) {
    let s = &db.storage;
    let first = s
        .put_family_member(put("fam", "kid", FamilyRole::Member), T0, |_| {
            Effects::none()
        })
        .await
        .unwrap();
    assert!(first.previous.is_none());
    assert_eq!(first.member.generation, 1);
    let moved = s
        .put_family_member(put("other", "kid", FamilyRole::Organizer), T0 + MIN, |_| {
            Effects::none()
        })
        .await
        .unwrap();
    assert_eq!(moved.previous.unwrap().family_id, "fam");
    assert_eq!(moved.member.family_id, "other");
    assert_eq!(moved.member.role, FamilyRole::Organizer);
    assert_eq!(moved.member.generation, 2);
    assert_eq!(moved.member.created_at, Timestamp::from_ms(T0), "kept");
    assert!(
        s.family_recovery_status("fam", T0)
            .await
            .unwrap()
            .is_empty(),
        "no longer in the first family"
    );
    assert_eq!(
        s.family_recovery_status("other", T0).await.unwrap().len(),
        1
    );

    // Removal names the family; another family's id is not the account's.
    let err = s
        .remove_family_member("fam", "kid", T0, |_| Effects::none())
        .await
        .unwrap_err();
    assert!(matches!(err, ChangeError::Storage(StorageError::NotFound)));
    s.remove_family_member("other", "kid", T0, |_| Effects::none())
        .await
        .unwrap();
    assert!(s.find_family_member("kid").await.unwrap().is_none());
}

async fn a_membership_change_ends_the_flows_that_involve_the_account(db: &TestDb) {
    let s = &db.storage;
    family(s).await;
    member(s, "fam", "kid2", FamilyRole::Member).await;
    begin(s, "af1", "org", "kid", T0).await;
    begin(s, "af2", "org", "kid2", T0).await;
    begin(s, "af3", "org2", "kid2", T0 + 1).await; // supersedes af2

    // Putting the member again (even unchanged) ends its flow, and only its flow.
    let out = s
        .put_family_member(put("fam", "kid", FamilyRole::Member), T0 + MIN, |_| {
            Effects::none()
        })
        .await
        .unwrap();
    let ended: Vec<_> = out
        .ended
        .iter()
        .map(|f| f.assisted_flow_id.as_str())
        .collect();
    assert_eq!(ended, ["af1"]);
    assert_eq!(
        out.ended[0].end_reason,
        Some(AssistedEnd::MembershipChanged)
    );
    assert!(
        s.find_assisted_flow("af3")
            .await
            .unwrap()
            .unwrap()
            .ended_at
            .is_none()
    );

    // Removing the organizer who began a flow ends it too.
    let removed = s
        .remove_family_member("fam", "org2", T0 + 2 * MIN, |_| Effects::none())
        .await
        .unwrap();
    assert_eq!(removed.ended.len(), 1);
    assert_eq!(removed.ended[0].assisted_flow_id, "af3");
    // An ended flow can neither be verified nor completed.
    assert!(
        !s.verify_assisted_recovery("af3", T0 + 3 * MIN, Effects::none())
            .await
            .unwrap()
    );
    assert_eq!(
        complete(s, "af1", "org", T0 + 3 * MIN).await.unwrap_err(),
        AssistedRefusal::Ended
    );
}

async fn begin_checks_organizer_member_and_self_inside_the_transaction(db: &TestDb) {
    let s = &db.storage;
    family(s).await;
    member(s, "other", "stranger", FamilyRole::Organizer).await;
    member(s, "other", "outsider", FamilyRole::Member).await;
    assert!(matches!(
        begin(s, "af1", "kid", "org", T0).await,
        BeginAssisted::NotOrganizer
    ));
    assert!(matches!(
        begin(s, "af1", "stranger", "kid", T0).await,
        BeginAssisted::NotOrganizer
    ));
    assert!(matches!(
        begin(s, "af1", "nobody", "kid", T0).await,
        BeginAssisted::NotOrganizer
    ));
    assert!(matches!(
        begin(s, "af1", "org", "outsider", T0).await,
        BeginAssisted::NotMember
    ));
    assert!(matches!(
        begin(s, "af1", "org", "nobody", T0).await,
        BeginAssisted::NotMember
    ));
    assert!(matches!(
        begin(s, "af1", "org", "org", T0).await,
        BeginAssisted::SelfRecovery
    ));
    assert!(
        s.find_assisted_flow("af1").await.unwrap().is_none(),
        "nothing stored"
    );
    // An organizer may recover another organizer.
    let BeginAssisted::Started(started) = begin(s, "af1", "org", "org2", T0).await else {
        panic!("started");
    };
    let (parties, organizer, superseded) = (started.parties, started.organizer, started.superseded);
    assert_eq!(organizer.account_id, "org");
    assert_eq!(parties.member.unwrap().account_id, "org2");
    let organizers: Vec<_> = parties
        .organizers
        .iter()
        .map(|o| o.account_id.as_str())
        .collect();
    assert_eq!(organizers, ["org", "org2"]);
    assert!(superseded.is_empty());
    let flow = s.find_assisted_flow("af1").await.unwrap().unwrap();
    assert_eq!(flow.member_generation, 1);
    assert_eq!(flow.expires_at, Timestamp::from_ms(T0 + DAY));
}

async fn a_new_begin_supersedes_the_members_earlier_flow(db: &TestDb) {
    let s = &db.storage;
    family(s).await;
    begin(s, "af1", "org", "kid", T0).await;
    let BeginAssisted::Started(started) = begin(s, "af2", "org2", "kid", T0 + MIN).await else {
        panic!("started");
    };
    let superseded = started.superseded;
    assert_eq!(superseded.len(), 1);
    assert_eq!(superseded[0].assisted_flow_id, "af1");
    assert_eq!(superseded[0].end_reason, Some(AssistedEnd::Superseded));
    assert_eq!(superseded[0].ended_by.as_deref(), Some("org2"));
    assert!(
        s.register_assisted_attempt("af1", 5, T0 + MIN, |_| Effects::none())
            .await
            .unwrap()
            .is_none(),
        "the superseded flow counts nothing"
    );
}

async fn begins_are_limited_per_organizer_and_per_member_in_a_sliding_day(db: &TestDb) {
    let s = &db.storage;
    family(s).await;
    for k in 0..5 {
        member(s, "fam", &format!("m{k}"), FamilyRole::Member).await;
    }
    // 3 per member per 24 h.
    for i in 0..3 {
        assert!(matches!(
            begin(s, &format!("a{i}"), "org2", "kid", T0 + i * HOUR).await,
            BeginAssisted::Started(_)
        ));
    }
    match begin(s, "a3", "org", "kid", T0 + 3 * HOUR).await {
        BeginAssisted::Limited {
            organizer: false,
            retry_after_ms,
        } => assert_eq!(
            retry_after_ms,
            DAY - 3 * HOUR,
            "until the oldest leaves the window"
        ),
        other => panic!("expected the member limit, got {other:?}"),
    }
    // Sliding: 24 h after the first begin, one more is allowed.
    assert!(matches!(
        begin(s, "a4", "org", "kid", T0 + DAY + 1).await,
        BeginAssisted::Started(_)
    ));

    // 5 per organizer per 24 h, across members: `org` began a4, so four more.
    for k in 0..4 {
        assert!(matches!(
            begin(
                s,
                &format!("b{k}"),
                "org",
                &format!("m{k}"),
                T0 + DAY + 2 + k
            )
            .await,
            BeginAssisted::Started(_)
        ));
    }
    match begin(s, "b5", "org", "m4", T0 + DAY + 10).await {
        BeginAssisted::Limited {
            organizer: true, ..
        } => {}
        other => panic!("expected the organizer limit, got {other:?}"),
    }
    assert!(s.find_assisted_flow("b5").await.unwrap().is_none());

    // Exactly the limit, however many race (32 begins by one organizer for 5 members).
    let s = Arc::new(s.clone());
    let later = T0 + 3 * DAY;
    let mut tasks = JoinSet::new();
    for i in 0..32 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            s.begin_assisted_recovery(
                new_flow(
                    &format!("c{i}"),
                    "fam",
                    "org2",
                    &format!("m{}", i % 5),
                    later,
                ),
                LIMITS,
                |_| Effects::none(),
            )
            .await
            .unwrap()
        });
    }
    let mut started = 0;
    while let Some(r) = tasks.join_next().await {
        started += usize::from(matches!(r.unwrap(), BeginAssisted::Started(_)));
    }
    assert_eq!(started, 5);
}

async fn code_submissions_stop_at_the_cap_and_verify_once(db: &TestDb) {
    let s = Arc::new(db.storage.clone());
    family(&s).await;
    begin(&s, "af1", "org", "kid", T0).await;
    let mut tasks = JoinSet::new();
    for _ in 0..32 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            s.register_assisted_attempt("af1", 5, T0 + MIN, |_| Effects::none())
                .await
                .unwrap()
        });
    }
    let mut counted = Vec::new();
    while let Some(r) = tasks.join_next().await {
        counted.extend(r.unwrap());
    }
    counted.sort_unstable();
    assert_eq!(counted, [1, 2, 3, 4, 5]);

    begin(&s, "af2", "org", "kid", T0 + MIN).await;
    let mut tasks = JoinSet::new();
    for _ in 0..32 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            s.verify_assisted_recovery("af2", T0 + 2 * MIN, Effects::none())
                .await
                .unwrap()
        });
    }
    let mut winners = 0;
    while let Some(r) = tasks.join_next().await {
        winners += usize::from(r.unwrap());
    }
    assert_eq!(winners, 1);
    // Past its 24 hours it no longer verifies.
    begin(&s, "af3", "org2", "kid", T0 + 2 * MIN).await;
    assert!(
        !s.verify_assisted_recovery("af3", T0 + 2 * MIN + DAY, Effects::none())
            .await
            .unwrap()
    );
}

async fn completion_needs_an_organizer_of_the_family_and_verification(db: &TestDb) {
    let s = &db.storage;
    family(s).await;
    member(s, "other", "stranger", FamilyRole::Organizer).await;
    begin(s, "af1", "org", "kid", T0).await;
    assert_eq!(
        complete(s, "af9", "org", T0).await.unwrap_err(),
        AssistedRefusal::NotFound
    );
    assert_eq!(
        complete(s, "af1", "org", T0 + MIN).await.unwrap_err(),
        AssistedRefusal::NotVerified
    );
    assert!(
        s.verify_assisted_recovery("af1", T0 + MIN, Effects::none())
            .await
            .unwrap()
    );
    for outsider in ["stranger", "kid", "nobody"] {
        assert_eq!(
            complete(s, "af1", outsider, T0 + 2 * MIN)
                .await
                .unwrap_err(),
            AssistedRefusal::NotAllowed,
            "{outsider}"
        );
    }
    assert_eq!(
        complete(s, "af1", "org", T0 + DAY).await.unwrap_err(),
        AssistedRefusal::Expired
    );
    // Another organizer than the one who began it completes it.
    let done = complete(s, "af1", "org2", T0 + 2 * MIN).await.unwrap();
    assert_eq!(done.flow.end_reason, Some(AssistedEnd::Completed));
    assert_eq!(done.flow.ended_by.as_deref(), Some("org2"));
    assert_eq!(
        complete(s, "af1", "org", T0 + 3 * MIN).await.unwrap_err(),
        AssistedRefusal::Ended
    );

    // An organizer being recovered cannot complete their own flow.
    begin(s, "af2", "org", "org2", T0 + 3 * MIN).await;
    s.verify_assisted_recovery("af2", T0 + 4 * MIN, Effects::none())
        .await
        .unwrap();
    assert_eq!(
        complete(s, "af2", "org2", T0 + 5 * MIN).await.unwrap_err(),
        AssistedRefusal::SelfRecovery
    );
}

async fn completion_revokes_the_members_code_and_ends_their_other_flows(db: &TestDb) {
    let s = &db.storage;
    family(s).await;
    let generation = enroll(s, "kid").await;
    s.begin_recovery(
        NewFlow {
            flow_id: "f1".into(),
            email_lookup: "kid@example.com".into(),
            target: Some(("kid".into(), generation)),
            email_code_mac: Opaque("mac".into()),
            mac_key_id: "k1".into(),
            email_code_expires_at: Timestamp::from_ms(T0 + 15 * MIN),
            created_at: Timestamp::from_ms(T0),
            expires_at: Timestamp::from_ms(T0 + 30 * MIN),
            client: ClientInfo::default(),
        },
        Effects::none(),
    )
    .await
    .unwrap();
    verified(s, "af1", "org", "kid").await;
    let done = complete(s, "af1", "org", T0 + 2 * MIN).await.unwrap();
    assert_eq!(done.revoked_code_id.as_deref(), Some("c1"));
    let e = s.find_enrollment("kid").await.unwrap().unwrap();
    assert!(e.code.is_none());
    assert_eq!(
        e.generation,
        generation + 1,
        "the member's own flows are dead"
    );
    assert_eq!(done.parties.organizers.len(), 2);
    assert_eq!(done.parties.member.unwrap().email, "kid@family.example");
    // The effects were written with the change.
    assert_eq!(
        s.claim_outbox("w", 10, MIN, T0 + 3 * MIN)
            .await
            .unwrap()
            .len(),
        1
    );
    // A member without a code: nothing to revoke.
    verified(s, "af2", "org", "org2").await;
    assert!(
        complete(s, "af2", "org", T0 + 2 * MIN)
            .await
            .unwrap()
            .revoked_code_id
            .is_none()
    );
}

async fn concurrent_completions_of_one_flow_have_exactly_one_winner(db: &TestDb) {
    let s = Arc::new(db.storage.clone());
    family(&s).await;
    enroll(&s, "kid").await;
    verified(&s, "af1", "org", "kid").await;
    let mut tasks = JoinSet::new();
    for i in 0..32 {
        let s = Arc::clone(&s);
        let organizer = if i % 2 == 0 { "org" } else { "org2" };
        tasks.spawn(async move { complete(&s, "af1", organizer, T0 + 2 * MIN).await });
    }
    let (mut won, mut ended) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(done) => {
                won += 1;
                assert_eq!(done.revoked_code_id.as_deref(), Some("c1"));
            }
            Err(AssistedRefusal::Ended) => ended += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((won, ended), (1, 31));
    assert_eq!(
        s.claim_outbox("w", 100, MIN, T0 + 3 * MIN)
            .await
            .unwrap()
            .len(),
        1,
        "one completion's mail"
    );
}

async fn the_members_own_recovery_and_an_organizers_completion_race_to_one_winner(db: &TestDb) {
    for round in 0..8 {
        let s = Arc::new(db.storage.clone());
        let kid = format!("kid{round}");
        let org = format!("org{round}");
        member(&s, "fam", &org, FamilyRole::Organizer).await;
        member(&s, "fam", &kid, FamilyRole::Member).await;
        let generation = enroll(&s, &kid).await;
        let flow_id = format!("f{round}");
        s.begin_recovery(
            NewFlow {
                flow_id: flow_id.clone(),
                email_lookup: format!("{kid}@example.com"),
                target: Some((kid.clone(), generation)),
                email_code_mac: Opaque("mac".into()),
                mac_key_id: "k1".into(),
                email_code_expires_at: Timestamp::from_ms(T0 + 15 * MIN),
                created_at: Timestamp::from_ms(T0),
                expires_at: Timestamp::from_ms(T0 + 30 * MIN),
                client: ClientInfo::default(),
            },
            Effects::none(),
        )
        .await
        .unwrap();
        assert!(
            s.verify_email(&flow_id, T0 + MIN, Effects::none())
                .await
                .unwrap()
        );
        let af = format!("af{round}");
        verified(&s, &af, &org, &kid).await;

        let own = {
            let (s, flow_id) = (Arc::clone(&s), flow_id.clone());
            tokio::spawn(async move {
                s.recover_account(
                    &flow_id,
                    T0 + 2 * MIN,
                    CompletionUpdate {
                        verified_code_id: "c1".into(),
                        ..CompletionUpdate::default()
                    },
                    |done| {
                        assert!(done.ended_assisted.len() <= 1);
                        Effects::none()
                    },
                )
                .await
                .unwrap()
            })
        };
        let assisted = {
            let (s, af, org) = (Arc::clone(&s), af.clone(), org.clone());
            tokio::spawn(async move { complete(&s, &af, &org, T0 + 2 * MIN).await })
        };
        let own = own.await.unwrap();
        let assisted = assisted.await.unwrap();
        let code = s.find_enrollment(&kid).await.unwrap().unwrap().code;
        let flow = s.find_assisted_flow(&af).await.unwrap().unwrap();
        match (&own, &assisted) {
            (Completion::Completed { .. }, Err(AssistedRefusal::Ended)) => {
                assert!(code.is_some(), "the member won: the code is kept");
                assert_eq!(flow.end_reason, Some(AssistedEnd::MemberRecovered));
            }
            (Completion::Cancelled, Ok(done)) => {
                assert!(code.is_none(), "the organizer won: the code is revoked");
                assert_eq!(done.revoked_code_id.as_deref(), Some("c1"));
                assert_eq!(flow.end_reason, Some(AssistedEnd::Completed));
            }
            other => panic!("exactly one must win, got {other:?}"),
        }
    }
}

async fn cancel_is_for_the_member_or_an_organizer_and_happens_once(db: &TestDb) {
    let s = &db.storage;
    family(s).await;
    member(s, "other", "stranger", FamilyRole::Organizer).await;
    member(s, "fam", "sibling", FamilyRole::Member).await;
    begin(s, "af1", "org", "kid", T0).await;
    for outsider in ["stranger", "sibling", "nobody"] {
        let refused = s
            .cancel_assisted_recovery("af1", outsider, T0 + MIN, |_| Effects::none())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(refused, AssistedRefusal::NotAllowed, "{outsider}");
    }
    let cancelled = s
        .cancel_assisted_recovery("af1", "kid", T0 + MIN, |_| Effects::none())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.flow.end_reason, Some(AssistedEnd::Cancelled));
    assert_eq!(cancelled.flow.ended_by.as_deref(), Some("kid"));
    let again = s
        .cancel_assisted_recovery("af1", "org2", T0 + 2 * MIN, |_| Effects::none())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(again, AssistedRefusal::Ended);
    // An organizer cancels too.
    begin(s, "af2", "org", "kid", T0 + 2 * MIN).await;
    assert!(
        s.cancel_assisted_recovery("af2", "org2", T0 + 3 * MIN, |_| Effects::none())
            .await
            .unwrap()
            .is_ok()
    );
}

async fn the_family_status_says_who_can_recover_how(db: &TestDb) {
    let s = &db.storage;
    member(s, "fam", "zed", FamilyRole::Member).await;
    member(s, "fam", "org", FamilyRole::Organizer).await;
    member(s, "fam", "kid", FamilyRole::Member).await;
    enroll(s, "kid").await;
    begin(s, "af1", "org", "zed", T0).await;
    let status = s.family_recovery_status("fam", T0 + MIN).await.unwrap();
    let lines: Vec<_> = status
        .iter()
        .map(|l| (l.member.account_id.as_str(), l.enrolled, l.assisted_pending))
        .collect();
    assert_eq!(
        lines,
        [
            ("org", false, false),
            ("kid", true, false),
            ("zed", false, true)
        ]
    );
    // Expired is not pending.
    let status = s.family_recovery_status("fam", T0 + DAY).await.unwrap();
    assert!(status.iter().all(|l| !l.assisted_pending));
    assert!(
        s.family_recovery_status("nobody", T0)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn expired_assisted_flows_are_cleaned_up(db: &TestDb) {
    let s = &db.storage;
    family(s).await;
    begin(s, "af1", "org", "kid", T0).await;
    let report = s.cleanup(T0 + DAY + HOUR - 1, 0, 0, 100).await.unwrap();
    assert_eq!(report.assisted_flows, 0, "kept an hour past expiry");
    let report = s.cleanup(T0 + DAY + HOUR, 0, 0, 100).await.unwrap();
    assert_eq!(report.assisted_flows, 1);
    assert!(s.find_assisted_flow("af1").await.unwrap().is_none());
}

async fn begins_and_completions_on_the_same_two_accounts_never_deadlock(db: &TestDb) {
    // `a` < `z`: a begin by `z` for `a` locks both rows exclusively while a completion by `z`
    // of a flow for `a` holds them shared; both take them in account-id order.
    let s = Arc::new(db.storage.clone());
    member(&s, "fam", "a", FamilyRole::Organizer).await;
    member(&s, "fam", "z", FamilyRole::Organizer).await;
    for round in 0..12_i64 {
        let now = T0 + round * DAY;
        let id = format!("af{round}");
        assert!(matches!(
            s.begin_assisted_recovery(new_flow(&id, "fam", "z", "a", now), LIMITS, |_| {
                Effects::none()
            })
            .await
            .unwrap(),
            BeginAssisted::Started(_)
        ));
        assert!(
            s.verify_assisted_recovery(&id, now + 1, Effects::none())
                .await
                .unwrap()
        );
        let (s1, s2, id2) = (Arc::clone(&s), Arc::clone(&s), id.clone());
        let next = format!("bf{round}");
        let (begun, completed) = tokio::join!(
            tokio::spawn(async move {
                s1.begin_assisted_recovery(
                    new_flow(&next, "fam", "z", "a", now + 2),
                    LIMITS,
                    |_| Effects::none(),
                )
                .await
            }),
            tokio::spawn(async move {
                s2.complete_assisted_recovery(&id2, "z", now + 2, |_| Effects::none())
                    .await
            }),
        );
        // Neither fails: no deadlock, no serialization error surfaces.
        assert!(begun.unwrap().is_ok(), "round {round}");
        assert!(completed.unwrap().is_ok(), "round {round}");
    }
}

async fn concurrent_cancels_and_a_completion_of_one_flow_end_it_once(db: &TestDb) {
    let s = Arc::new(db.storage.clone());
    family(&s).await;
    verified(&s, "af1", "org", "kid").await;
    let mut tasks = JoinSet::new();
    for i in 0..32 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            if i == 16 {
                complete(&s, "af1", "org2", T0 + 2 * MIN).await.map(drop)
            } else {
                let actor = ["kid", "org", "org2"][i % 3];
                s.cancel_assisted_recovery("af1", actor, T0 + 2 * MIN, |_| Effects {
                    messages: vec![note("kid")],
                    audit: vec![],
                    events: vec![],
                })
                .await
                .unwrap()
                .map(drop)
            }
        });
    }
    let (mut ended, mut refused) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(()) => ended += 1,
            Err(AssistedRefusal::Ended) => refused += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ended, refused), (1, 31), "one step ends the flow");
    assert_eq!(
        s.claim_outbox("w", 100, MIN, T0 + 3 * MIN)
            .await
            .unwrap()
            .len(),
        1,
        "one step's mail"
    );
}
