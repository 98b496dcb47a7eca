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
    cutting_the_newest_rows_breaks_the_trail,
    a_cut_stays_visible_after_the_next_append,
    a_repeat_never_folds_into_an_edited_row,
    an_append_never_signs_a_forged_anchor,
    a_trail_from_before_anchors_gets_its_anchor_once_it_verifies,
    a_page_verifies_what_it_shows_and_what_was_appended_since,
    a_fold_at_the_checkpoint_keeps_the_trail_valid,
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
        personal: Default::default(),
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
        carry: &[],
        window_ms: HOUR,
        at: format!("t{at}"),
    });
    e
}

/// The trail's status as a page showing every row asks for it.
async fn chain_of(s: &Storage, account: &str) -> recovery_storage::ChainStatus {
    let rows = s.list_audit_events(account, None, 1_000_000).await.unwrap();
    let shown = rows.last().zip(rows.first()).map(|(o, n)| (o.seq, n.seq));
    s.audit_chain_status(account, shown).await.unwrap()
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
    let status = chain_of(&s, "acct").await;
    assert!(status.valid && status.first_broken_event_id.is_none());
    db.execute(&format!(
        "UPDATE {{schema}}.audit_events SET details = '{{\"i\":\"9\"}}' WHERE event_id = '{}'",
        ids[2]
    ))
    .await;
    let status = chain_of(&s, "acct").await;
    assert!(!status.valid);
    assert_eq!(
        status.first_broken_event_id.as_deref(),
        Some(ids[2].as_str())
    );
    // Another account's trail is not touched.
    s.append_audit(event("other", "CODE_CREATED", T0, &[]))
        .await
        .unwrap();
    assert!(chain_of(&s, "other").await.valid);
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
    let status = chain_of(&s, "acct").await;
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
    let status = chain_of(&s, "acct2").await;
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
    assert!(chain_of(&s, "acct").await.valid);
    // An unlinked row after linked ones is not legacy: it breaks the chain.
    let late = event("acct", "CODE_REVOKED", T0 + 2 * MIN, &[]);
    let late_id = late.event_id.clone();
    db.storage.append_audit(late).await.unwrap();
    let status = chain_of(&s, "acct").await;
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
    assert!(chain_of(&s, "acct").await.valid);
    keys.ring.lock().unwrap().remove("a");
    let status = chain_of(&s, "acct").await;
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
    assert!(chain_of(&s, "acct").await.valid);

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
    assert!(chain_of(&s, "acct").await.valid);

    // Folding re-links only the head: an edit of an earlier row still shows.
    db.execute(
        "UPDATE {schema}.audit_events SET details = '{}' WHERE seq = (SELECT MIN(seq) FROM {schema}.audit_events)",
    )
    .await;
    s.append_audit(refusal("acct", T0 + 2 * HOUR + 500, "fl_2"))
        .await
        .unwrap();
    assert!(!chain_of(&s, "acct").await.valid);
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
    assert!(chain_of(&s, "acct").await.valid);
}

async fn cutting_the_newest_rows_breaks_the_trail(db: &TestDb) {
    let keys = Keys::new();
    let s = chained(db, &keys);
    let ids = five(&s).await;
    assert!(chain_of(&s, "acct").await.valid);
    db.execute(&format!(
        "DELETE FROM {{schema}}.audit_events WHERE event_id = '{}'",
        ids[4]
    ))
    .await;
    let status = chain_of(&s, "acct").await;
    assert!(!status.valid, "the newest row deleted");
    assert_eq!(
        status.first_broken_event_id.as_deref(),
        Some(ids[3].as_str())
    );
    db.execute("DELETE FROM {schema}.audit_events WHERE account_id = 'acct'")
        .await;
    assert!(!chain_of(&s, "acct").await.valid, "every row deleted");
    // Rows written after the wipe follow the anchored row that is gone: still broken, at the
    // first of them.
    let ids = five(&s).await;
    let status = chain_of(&s, "acct").await;
    assert_eq!(
        status.first_broken_event_id.as_deref(),
        Some(ids[0].as_str())
    );
    // Deleting the anchor of an intact trail does not make a trail from after anchors look
    // older: the newest row is named.
    let other = {
        let mut ids = Vec::new();
        for i in 0..3 {
            let e = event("acct3", "CODE_CREATED", T0 + i * MIN, &[]);
            ids.push(e.event_id.clone());
            s.append_audit(e).await.unwrap();
        }
        ids
    };
    assert!(chain_of(&s, "acct3").await.valid);
    db.execute("DELETE FROM {schema}.audit_heads WHERE account_id = 'acct3'")
        .await;
    let status = chain_of(&s, "acct3").await;
    assert_eq!(
        status.first_broken_event_id.as_deref(),
        Some(other[2].as_str())
    );
    // A forged anchor (no key) is no anchor.
    let _ = five(&s).await;
    db.execute("UPDATE {schema}.audit_heads SET mac = 'ff' WHERE account_id = 'acct'")
        .await;
    assert!(!chain_of(&s, "acct").await.valid);
}

async fn a_trail_from_before_anchors_gets_its_anchor_once_it_verifies(db: &TestDb) {
    let keys = Keys::new();
    let s = chained(db, &keys);
    let ids = five(&s).await;
    // As a trail written before anchors: no anchor, every row before `anchored_from_seq`.
    db.execute("DELETE FROM {schema}.audit_heads").await;
    db.execute(
        "UPDATE {schema}.audit_chain_meta SET anchored_from_seq = (SELECT MAX(seq) FROM {schema}.audit_events) WHERE id = 1",
    )
    .await;
    assert!(chain_of(&s, "acct").await.valid);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM {schema}.audit_heads WHERE account_id = 'acct' AND verified_seq IS NOT NULL")
            .await,
        1,
        "anchored and checkpointed at its newest row"
    );
    db.execute(&format!(
        "DELETE FROM {{schema}}.audit_events WHERE event_id = '{}'",
        ids[4]
    ))
    .await;
    assert!(
        !chain_of(&s, "acct").await.valid,
        "from then on a cut shows"
    );
}

async fn a_page_verifies_what_it_shows_and_what_was_appended_since(db: &TestDb) {
    let keys = Keys::new();
    let s = chained(db, &keys);
    let ids = five(&s).await;
    let rows = s.list_audit_events("acct", None, 100).await.unwrap();
    let seq_of = |id: &str| rows.iter().find(|r| r.event_id == id).unwrap().seq;
    assert!(s.audit_chain_status("acct", None).await.unwrap().valid);
    // The checkpoint now names the newest row: an edit of an older row shows on the page
    // that shows it (or the rows after it), not on a page of only newer rows.
    db.execute(&format!(
        "UPDATE {{schema}}.audit_events SET details = '{{\"i\":\"9\"}}' WHERE event_id = '{}'",
        ids[1]
    ))
    .await;
    let newest = (seq_of(&ids[3]), seq_of(&ids[4]));
    assert!(
        s.audit_chain_status("acct", Some(newest))
            .await
            .unwrap()
            .valid
    );
    let older = (seq_of(&ids[0]), seq_of(&ids[2]));
    let status = s.audit_chain_status("acct", Some(older)).await.unwrap();
    assert_eq!(
        status.first_broken_event_id.as_deref(),
        Some(ids[1].as_str())
    );
    // Rows appended after the checkpoint are verified whatever the page.
    s.append_audit(event("acct", "CODE_REVOKED", T0 + HOUR, &[]))
        .await
        .unwrap();
    s.append_audit(event("acct", "CODE_CREATED", T0 + 2 * HOUR, &[]))
        .await
        .unwrap();
    let rows = s.list_audit_events("acct", None, 100).await.unwrap();
    db.execute(&format!(
        "UPDATE {{schema}}.audit_events SET kind = 'CODE_CREATED' WHERE event_id = '{}'",
        rows[1].event_id
    ))
    .await;
    let status = s.audit_chain_status("acct", Some(newest)).await.unwrap();
    assert_eq!(
        status.first_broken_event_id.as_deref(),
        Some(rows[1].event_id.as_str())
    );
}

async fn a_fold_at_the_checkpoint_keeps_the_trail_valid(db: &TestDb) {
    let keys = Keys::new();
    let s = chained(db, &keys);
    five(&s).await;
    s.append_audit(refusal("acct", T0 + HOUR, "fl_1"))
        .await
        .unwrap();
    assert!(s.audit_chain_status("acct", None).await.unwrap().valid);
    for i in 1..5 {
        s.append_audit(refusal("acct", T0 + HOUR + i, "fl_1"))
            .await
            .unwrap();
        assert!(s.audit_chain_status("acct", None).await.unwrap().valid);
    }
    assert!(chain_of(&s, "acct").await.valid);
}

async fn a_cut_stays_visible_after_the_next_append(db: &TestDb) {
    let keys = Keys::new();
    let s = chained(db, &keys);
    let ids = five(&s).await;
    db.execute(&format!(
        "DELETE FROM {{schema}}.audit_events WHERE event_id IN ('{}', '{}')",
        ids[3], ids[4]
    ))
    .await;
    // The next write links after the row the anchor names, not after what is left.
    s.append_audit(event("acct", "CODE_REPLACED", T0 + HOUR, &[]))
        .await
        .unwrap();
    assert!(!chain_of(&s, "acct").await.valid, "the cut is still seen");
    s.append_audit(refusal("acct", T0 + 2 * HOUR, "fl_1"))
        .await
        .unwrap();
    assert!(!chain_of(&s, "acct").await.valid);
    // Every row deleted: the next write does not start a fresh, valid trail either.
    db.execute("DELETE FROM {schema}.audit_events WHERE account_id = 'acct'")
        .await;
    s.append_audit(event("acct", "CODE_CREATED", T0 + 3 * HOUR, &[]))
        .await
        .unwrap();
    assert!(!chain_of(&s, "acct").await.valid);
}

async fn a_repeat_never_folds_into_an_edited_row(db: &TestDb) {
    let keys = Keys::new();
    let s = chained(db, &keys);
    five(&s).await;
    for i in 0..5 {
        s.append_audit(refusal("acct", T0 + HOUR + i, "fl_1"))
            .await
            .unwrap();
    }
    // Someone lowers the count of the newest row; the next repeat must not sign that.
    db.execute(
        "UPDATE {schema}.audit_events SET details = REPLACE(details, '\"count\":\"5\"', '\"count\":\"1\"') WHERE seq = (SELECT MAX(seq) FROM {schema}.audit_events)",
    )
    .await;
    assert!(!chain_of(&s, "acct").await.valid);
    s.append_audit(refusal("acct", T0 + HOUR + 10, "fl_1"))
        .await
        .unwrap();
    let rows = s.list_audit_events("acct", None, 100).await.unwrap();
    assert_eq!(rows.len(), 7, "a new row, not a fold into the edited one");
    assert!(!chain_of(&s, "acct").await.valid, "the edit still shows");
}

/// Someone who can write the database but has no key cuts the newest rows and points the
/// anchor at what is left (its MAC unchanged, so wrong): the next appends must not re-sign
/// that anchor and launder the cut, neither a new row nor a repeat folded into the newest.
async fn an_append_never_signs_a_forged_anchor(db: &TestDb) {
    let keys = Keys::new();
    let s = chained(db, &keys);
    let ids = five(&s).await;
    db.execute(&format!(
        "DELETE FROM {{schema}}.audit_events WHERE event_id IN ('{}', '{}')",
        ids[3], ids[4]
    ))
    .await;
    db.execute(&format!(
        "UPDATE {{schema}}.audit_heads SET head_seq = (SELECT seq FROM {{schema}}.audit_events WHERE event_id = '{0}'), \
         head_link = (SELECT chain_hash FROM {{schema}}.audit_events WHERE event_id = '{0}') WHERE account_id = 'acct'",
        ids[2]
    ))
    .await;
    assert!(
        !chain_of(&s, "acct").await.valid,
        "the forged anchor does not verify"
    );
    s.append_audit(event("acct", "CODE_REPLACED", T0 + HOUR, &[]))
        .await
        .unwrap();
    assert!(
        !chain_of(&s, "acct").await.valid,
        "a new row did not launder the cut"
    );
    for i in 0..3 {
        s.append_audit(refusal("acct", T0 + 2 * HOUR + i, "fl_1"))
            .await
            .unwrap();
    }
    assert!(!chain_of(&s, "acct").await.valid, "nor did repeats");
}
