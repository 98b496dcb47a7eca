//! The event outbox, run on SQLite and PostgreSQL: written with its change, claimed one
//! account's oldest unpublished event at a time across claimers, published or rescheduled.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::{collections::BTreeSet, sync::Arc};

use common::TestDb;
use recovery_storage::model::{Effects, NewEvent};
use tokio::task::JoinSet;

const MIN: i64 = 60_000;
const T0: i64 = 1_800_000_000_000;

on_every_backend!(
    an_accounts_events_are_claimed_one_at_a_time_in_order,
    a_failed_publish_is_retried_later_and_holds_back_the_accounts_next_event,
    an_expired_claim_is_taken_over,
    concurrent_claimers_never_share_an_event_nor_break_an_accounts_order,
);

fn event(account: &str, n: usize) -> NewEvent {
    NewEvent {
        event_id: format!("evt_{account}_{n}"),
        account_id: account.into(),
        event_type: "recovery_code.created".into(),
        payload: format!("{{\"n\":{n}}}"),
    }
}

async fn write(db: &TestDb, events: Vec<NewEvent>) {
    db.storage
        .write_effects(
            Effects {
                messages: vec![],
                audit: vec![],
                events,
            },
            T0,
        )
        .await
        .unwrap();
}

async fn an_accounts_events_are_claimed_one_at_a_time_in_order(db: &TestDb) {
    let s = &db.storage;
    write(db, vec![event("a", 1), event("b", 1), event("a", 2)]).await;
    let stats = s.event_stats().await.unwrap();
    assert_eq!(stats.backlog, 3);
    assert_eq!(stats.oldest_backlog_at.unwrap().as_ms(), T0);
    let claimed = s.claim_events("p1", 10, MIN, T0).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        ["evt_a_1", "evt_b_1"],
        "a's second waits for its first"
    );
    assert_eq!(claimed[0].attempts, 1);
    assert!(s.claim_events("p2", 10, MIN, T0).await.unwrap().is_empty());
    assert!(
        s.mark_event_published(claimed[0].seq, "p1", T0 + 1)
            .await
            .unwrap()
    );
    assert!(
        !s.mark_event_published(claimed[1].seq, "p2", T0 + 1)
            .await
            .unwrap(),
        "not p2's claim"
    );
    let next = s.claim_events("p2", 10, MIN, T0 + 2).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].event_id, "evt_a_2");
    assert_eq!(next[0].payload, "{\"n\":2}");
    assert!(
        s.mark_event_published(next[0].seq, "p2", T0 + 3)
            .await
            .unwrap()
    );
    assert!(
        s.mark_event_published(claimed[1].seq, "p1", T0 + 3)
            .await
            .unwrap()
    );
    assert_eq!(s.event_stats().await.unwrap().backlog, 0);
    assert_eq!(
        s.cleanup_events(T0 + 1, 100).await.unwrap(),
        0,
        "only what was published before"
    );
    assert_eq!(s.cleanup_events(T0 + 4, 100).await.unwrap(), 3);
}

async fn a_failed_publish_is_retried_later_and_holds_back_the_accounts_next_event(db: &TestDb) {
    let s = &db.storage;
    write(db, vec![event("a", 1), event("a", 2)]).await;
    let first = s.claim_events("p1", 10, MIN, T0).await.unwrap();
    assert!(
        s.reschedule_event(first[0].seq, "p1", T0 + 5_000, "NATS down")
            .await
            .unwrap()
    );
    assert!(
        s.claim_events("p1", 10, MIN, T0 + 4_999)
            .await
            .unwrap()
            .is_empty(),
        "not before its time, and a's second waits"
    );
    let again = s.claim_events("p1", 10, MIN, T0 + 5_000).await.unwrap();
    assert_eq!(again[0].event_id, "evt_a_1");
    assert_eq!(again[0].attempts, 2);
}

async fn an_expired_claim_is_taken_over(db: &TestDb) {
    let s = &db.storage;
    write(db, vec![event("a", 1)]).await;
    let claimed = s.claim_events("dead", 10, MIN, T0).await.unwrap();
    assert!(
        s.claim_events("p2", 10, MIN, T0 + MIN - 1)
            .await
            .unwrap()
            .is_empty()
    );
    let taken = s.claim_events("p2", 10, MIN, T0 + MIN).await.unwrap();
    assert_eq!(taken[0].seq, claimed[0].seq);
    assert!(
        !s.mark_event_published(claimed[0].seq, "dead", T0 + MIN)
            .await
            .unwrap()
    );
    assert!(
        s.mark_event_published(taken[0].seq, "p2", T0 + MIN)
            .await
            .unwrap()
    );
}

async fn concurrent_claimers_never_share_an_event_nor_break_an_accounts_order(db: &TestDb) {
    // 8 accounts with 6 events each; 4 claimers race until everything is published.
    let mut events = Vec::new();
    for n in 0..6 {
        for a in 0..8 {
            events.push(event(&format!("acct{a}"), n));
        }
    }
    write(db, events).await;
    let s = Arc::new(db.storage.clone());
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = JoinSet::new();
    for p in 0..4 {
        let (s, log) = (Arc::clone(&s), Arc::clone(&log));
        tasks.spawn(async move {
            let owner = format!("p{p}");
            for round in 0..200 {
                let claimed = s.claim_events(&owner, 3, MIN, T0 + round).await.unwrap();
                for e in claimed {
                    log.lock().unwrap().push(e.event_id.clone());
                    assert!(
                        s.mark_event_published(e.seq, &owner, T0 + round)
                            .await
                            .unwrap()
                    );
                }
                if s.event_stats().await.unwrap().backlog == 0 {
                    break;
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 48, "each event claimed once");
    assert_eq!(log.iter().collect::<BTreeSet<_>>().len(), 48);
    for a in 0..8 {
        let order: Vec<&String> = log
            .iter()
            .filter(|id| id.starts_with(&format!("evt_acct{a}_")))
            .collect();
        let want: Vec<String> = (0..6).map(|n| format!("evt_acct{a}_{n}")).collect();
        assert_eq!(order, want.iter().collect::<Vec<_>>(), "acct{a} in order");
    }
}
