//! The audit trail's hash chain in storage, on SQLite and PostgreSQL
//! (`RECOVERY_TEST_DATABASE_URL`): an edited, deleted or reordered row breaks it at that row;
//! legacy rows without a link may only come first; a rotated key keeps old links verifiable
//! while it stays in the ring; and repeats of one refusal fold into one row with the right
//! count, however many writers race, without breaking the chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::{
    collections::{BTreeMap, hash_map::DefaultHasher},
    hash::{Hash as _, Hasher as _},
    sync::{Arc, Mutex},
};

use common::TestDb;
use recovery_storage::{
    AuditChainKeys, Storage,
    model::{ClientInfo, Coalesce, NewAuditEvent, Timestamp},
};
use tokio::task::JoinSet;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const T0: i64 = 1_800_000_000_000;

on_every_backend!(
    a_trail_verifies_and_an_edited_row_breaks_it_there,
    a_deleted_or_reordered_row_breaks_the_chain,
    legacy_rows_without_a_link_may_only_come_first,
    a_rotated_key_verifies_until_it_leaves_the_ring,
    repeats_fold_into_one_row_with_their_count,
    concurrent_repeats_are_all_counted,
);

/// A key ring for the test: links are a keyed hash of (secret, previous, event). The service
/// uses HMAC-SHA-256; the storage only stores and compares what the keys answer.
#[derive(Debug)]
struct Keys {
    current: Mutex<String>,
    ring: Mutex<BTreeMap<String, String>>,
}

impl Keys {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            current: Mutex::new("a".into()),
            ring: Mutex::new(BTreeMap::from([("a".into(), "secret-a".into())])),
        })
    }
}

impl AuditChainKeys for Keys {
    fn current_key_id(&self) -> String {
        self.current.lock().unwrap().clone()
    }

    fn link(&self, key_id: &str, previous: &str, event: &[u8]) -> Option<String> {
        let secret = self.ring.lock().unwrap().get(key_id)?.clone();
        let mut h = DefaultHasher::new();
        (secret, previous, event).hash(&mut h);
        Some(format!("{:016x}", h.finish()))
    }
}

fn chained(db: &TestDb, keys: &Arc<Keys>) -> Storage {
    db.storage.clone().with_audit_chain(Arc::clone(keys) as _)
}

fn event(account: &str, kind: &str, at: i64, details: &[(&str, &str)]) -> NewAuditEvent {
    NewAuditEvent {
        event_id: format!("ev-{kind}-{at}-{}", rand_suffix()),
        account_id: account.to_owned(),
        serialize_on: None,
        kind: kind.to_owned(),
        occurred_at: Timestamp::from_ms(at),
        client: ClientInfo::default(),
        details: details
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        coalesce: None,
    }
}

fn refusal(account: &str, at: i64, flow: &str) -> NewAuditEvent {
    let mut e = event(
        account,
        "SUBMISSION_REFUSED",
        at,
        &[("flow_id", flow), ("reason", "TOO_MANY_ATTEMPTS")],
    );
    e.coalesce = Some(Coalesce {
        on: &["flow_id", "reason"],
        window_ms: HOUR,
        at: format!("t{at}"),
    });
    e
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Five events of `acct`, 1 minute apart; their ids, oldest first.
async fn five(s: &Storage) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..5 {
        let e = event(
            "acct",
            "CODE_CREATED",
            T0 + i * MIN,
            &[("i", &i.to_string())],
        );
        ids.push(e.event_id.clone());
        s.append_audit(e).await.unwrap();
    }
    ids
}

async fn a_trail_verifies_and_an_edited_row_breaks_it_there(db: &TestDb) {
    let keys = Keys::new();
    let s = chained(db, &keys);
    let ids = five(&s).await;
    let status = s.audit_chain_status("acct").await.unwrap();
    assert!(status.valid && status.first_broken_event_id.is_none());
    db.execute(&format!(
        "UPDATE {{schema}}.audit_events SET details = '{{\"i\":\"9\"}}' WHERE event_id = '{}'",
        ids[2]
    ))
    .await;
    let status = s.audit_chain_status("acct").await.unwrap();
    assert!(!status.valid);
    assert_eq!(
        status.first_broken_event_id.as_deref(),
        Some(ids[2].as_str())
    );
    // Another account's trail is not touched.
    s.append_audit(event("other", "CODE_CREATED", T0, &[]))
        .await
        .unwrap();
    assert!(s.audit_chain_status("other").await.unwrap().valid);
}

async fn a_deleted_or_reordered_row_breaks_the_chain(db: &TestDb) {
    let keys = Keys::new();
    let s = chained(db, &keys);
    let ids = five(&s).await;
    db.execute(&format!(
        "DELETE FROM {{schema}}.audit_events WHERE event_id = '{}'",
        ids[1]
    ))
    .await;
    let status = s.audit_chain_status("acct").await.unwrap();
    assert_eq!(
        status.first_broken_event_id.as_deref(),
        Some(ids[2].as_str())
    );

    let ids = {
        let mut ids = Vec::new();
        for i in 0..3 {
            let e = event("acct2", "CODE_CREATED", T0 + i * MIN, &[]);
            ids.push(e.event_id.clone());
            s.append_audit(e).await.unwrap();
        }
        ids
    };
    // Move the middle row after the last.
    let max = db.count("SELECT MAX(seq) FROM {schema}.audit_events").await;
    db.execute(&format!(
        "UPDATE {{schema}}.audit_events SET seq = {} WHERE event_id = '{}'",
        max + 10,
        ids[1]
    ))
    .await;
    let status = s.audit_chain_status("acct2").await.unwrap();
    assert!(!status.valid, "a reordered trail does not verify");
}

async fn legacy_rows_without_a_link_may_only_come_first(db: &TestDb) {
    // Written without keys (as before the chain existed), then recorded as legacy.
    db.storage
        .append_audit(event("acct", "CODE_CREATED", T0, &[]))
        .await
        .unwrap();
    db.execute(
        "UPDATE {schema}.audit_chain_meta SET legacy_max_seq = (SELECT MAX(seq) FROM {schema}.audit_events) WHERE id = 1",
    )
    .await;
    let keys = Keys::new();
    let s = chained(db, &keys);
    s.append_audit(event("acct", "CODE_REPLACED", T0 + MIN, &[]))
        .await
        .unwrap();
    assert!(s.audit_chain_status("acct").await.unwrap().valid);
    // An unlinked row after linked ones is not legacy: it breaks the chain.
    let late = event("acct", "CODE_REVOKED", T0 + 2 * MIN, &[]);
    let late_id = late.event_id.clone();
    db.storage.append_audit(late).await.unwrap();
    let status = s.audit_chain_status("acct").await.unwrap();
    assert_eq!(
        status.first_broken_event_id.as_deref(),
        Some(late_id.as_str())
    );
}

async fn a_rotated_key_verifies_until_it_leaves_the_ring(db: &TestDb) {
    let keys = Keys::new();
    let s = chained(db, &keys);
    let ids = five(&s).await;
    keys.ring
        .lock()
        .unwrap()
        .insert("b".into(), "secret-b".into());
    *keys.current.lock().unwrap() = "b".into();
    s.append_audit(event("acct", "CODE_REPLACED", T0 + HOUR, &[]))
        .await
        .unwrap();
    assert!(s.audit_chain_status("acct").await.unwrap().valid);
    keys.ring.lock().unwrap().remove("a");
    let status = s.audit_chain_status("acct").await.unwrap();
    assert_eq!(
        status.first_broken_event_id.as_deref(),
        Some(ids[0].as_str())
    );
}

async fn repeats_fold_into_one_row_with_their_count(db: &TestDb) {
    let keys = Keys::new();
    let s = chained(db, &keys);
    five(&s).await;
    let rows = |s: Storage| async move { s.list_audit_events("acct", None, 1000).await.unwrap() };
    for i in 0..100 {
        s.append_audit(refusal("acct", T0 + HOUR + i, "fl_1"))
            .await
            .unwrap();
    }
    let trail = rows(s.clone()).await;
    assert_eq!(trail.len(), 6, "100 repeats are one row");
    assert_eq!(trail[0].details["count"], "100");
    assert_eq!(trail[0].details["last_at"], format!("t{}", T0 + HOUR + 99));
    assert_eq!(trail[0].occurred_at, Timestamp::from_ms(T0 + HOUR));
    assert!(s.audit_chain_status("acct").await.unwrap().valid);

    // Another flow, another kind in between, or the hour over: a new row each.
    s.append_audit(refusal("acct", T0 + HOUR + 200, "fl_2"))
        .await
        .unwrap();
    s.append_audit(event("acct", "EMAIL_VERIFIED", T0 + HOUR + 300, &[]))
        .await
        .unwrap();
    s.append_audit(refusal("acct", T0 + HOUR + 400, "fl_2"))
        .await
        .unwrap();
    s.append_audit(refusal("acct", T0 + 2 * HOUR + 400, "fl_2"))
        .await
        .unwrap();
    let trail = rows(s.clone()).await;
    assert_eq!(trail.len(), 10);
    assert!(trail[..4].iter().all(|e| !e.details.contains_key("count")));
    assert!(s.audit_chain_status("acct").await.unwrap().valid);

    // Folding re-links only the head: an edit of an earlier row still shows.
    db.execute(
        "UPDATE {schema}.audit_events SET details = '{}' WHERE seq = (SELECT MIN(seq) FROM {schema}.audit_events)",
    )
    .await;
    s.append_audit(refusal("acct", T0 + 2 * HOUR + 500, "fl_2"))
        .await
        .unwrap();
    assert!(!s.audit_chain_status("acct").await.unwrap().valid);
}

async fn concurrent_repeats_are_all_counted(db: &TestDb) {
    let keys = Keys::new();
    let s = chained(db, &keys);
    s.append_audit(refusal("acct", T0, "fl_1")).await.unwrap();
    let mut set = JoinSet::new();
    for i in 0..32 {
        let s = s.clone();
        set.spawn(async move { s.append_audit(refusal("acct", T0 + 1 + i, "fl_1")).await });
    }
    let mut failed = 0;
    while let Some(done) = set.join_next().await {
        if done.unwrap().is_err() {
            failed += 1;
        }
    }
    let trail = s.list_audit_events("acct", None, 1000).await.unwrap();
    let counted: u64 = trail
        .iter()
        .map(|e| e.details.get("count").map_or(1, |c| c.parse().unwrap()))
        .sum();
    assert_eq!(counted, 33 - failed, "every written repeat is counted once");
    assert_eq!(failed, 0, "no writer fails");
    assert!(s.audit_chain_status("acct").await.unwrap().valid);
}
