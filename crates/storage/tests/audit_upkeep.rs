//! Keeping the audit trail, on SQLite and PostgreSQL (`RECOVERY_TEST_DATABASE_URL`): rows
//! written in clear (by a release before personal details were sealed) are sealed in the
//! background and the trail still verifies; a broken trail is sealed but not linked again;
//! events past their retention are pruned oldest first behind a MAC'd base, so a pruned trail
//! verifies while a cut or a forged base does not, and pruners racing prune each row once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::{
    collections::{BTreeMap, hash_map::DefaultHasher},
    hash::{Hash as _, Hasher as _},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use common::TestDb;
use recovery_storage::{
    AuditChainKeys, KeyState, PersonalDataKeys, Storage,
    model::{ClientInfo, NewAuditEvent, Timestamp},
};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_800_000_000_000;

on_every_backend!(
    rows_in_clear_are_sealed_and_the_trail_still_verifies,
    a_broken_trail_is_sealed_but_stays_broken,
    pruning_leaves_a_trail_that_verifies_and_a_cut_or_forged_base_breaks_it,
    racing_pruners_prune_each_row_once,
    a_trail_that_does_not_verify_is_not_pruned,
    a_forged_unlinked_row_is_never_blessed_by_pruning_or_sealing,
    a_row_put_behind_the_base_breaks_the_trail,
    details_that_are_not_a_map_are_sealed_whole,
    an_account_that_keeps_its_events_does_not_hold_back_the_others,
);

#[derive(Debug)]
struct Keys;

impl AuditChainKeys for Keys {
    fn current_key_id(&self) -> String {
        "a".into()
    }

    fn link(&self, key_id: &str, previous: &str, event: &[u8]) -> Option<String> {
        let mut h = DefaultHasher::new();
        ("secret", key_id, previous, event).hash(&mut h);
        Some(format!("{:016x}", h.finish()))
    }
}

/// A stand-in sealer: storage only stores what it answers. "Sealing" reverses and hex-encodes
/// the bytes with a tag of the key and the row, so a test can tell sealed from clear, and a
/// wrong key or row does not open.
#[derive(Debug, Default)]
struct Sealer {
    made: AtomicU64,
}

impl PersonalDataKeys for Sealer {
    fn new_key(&self, account_id: &str) -> Result<(String, String), String> {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        Ok((format!("dk{n}"), format!("wrapped-dk{n}-{account_id}")))
    }

    fn check(&self, _account_id: &str, _key_id: &str, _wrapped: &str) -> KeyState {
        KeyState::Current
    }

    fn personal_detail(&self, kind: &str, name: &str) -> bool {
        name == "email_hint" || (name == "reason" && kind == "CODE_REVOKED")
    }

    fn seal(
        &self,
        account_id: &str,
        (key_id, wrapped): (&str, &str),
        bound_to: &str,
        plaintext: &[u8],
    ) -> Result<String, String> {
        let mut bytes = plaintext.to_vec();
        bytes.reverse();
        Ok(format!(
            "{account_id}|{key_id}|{wrapped}|{bound_to}|{}",
            hex(&bytes)
        ))
    }

    fn open_all(
        &self,
        account_id: &str,
        (key_id, wrapped): (&str, &str),
        items: &[(String, &str)],
    ) -> Vec<Option<Vec<u8>>> {
        items
            .iter()
            .map(|(bound_to, sealed)| {
                let body =
                    sealed.strip_prefix(&format!("{account_id}|{key_id}|{wrapped}|{bound_to}|"))?;
                let mut bytes: Vec<u8> = (0..body.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&body[i..i + 2], 16).unwrap())
                    .collect();
                bytes.reverse();
                Some(bytes)
            })
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The storage as a release before sealing wrote (chained, personal details in clear), and
/// as this one does.
fn writers(db: &TestDb) -> (Storage, Storage) {
    let clear = db.storage.clone().with_audit_chain(Arc::new(Keys));
    let sealed = clear
        .clone()
        .with_personal_data(Arc::new(Sealer::default()));
    (clear, sealed)
}

fn event(account: &str, kind: &str, at: i64, details: &[(&str, &str)]) -> NewAuditEvent {
    static N: AtomicU64 = AtomicU64::new(0);
    NewAuditEvent {
        event_id: format!("ev-{at}-{}", N.fetch_add(1, Ordering::Relaxed)),
        account_id: account.to_owned(),
        serialize_on: None,
        kind: kind.to_owned(),
        occurred_at: Timestamp::from_ms(at),
        client: ClientInfo {
            ip: Some("198.51.100.7".into()),
            user_agent: Some("Agent/1".into()),
        },
        details: details
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        personal: BTreeMap::new(),
        coalesce: None,
    }
}

async fn chain_of(s: &Storage, account: &str) -> recovery_storage::ChainStatus {
    let rows = s.list_audit_events(account, None, 1_000_000).await.unwrap();
    let shown = rows.last().zip(rows.first()).map(|(o, n)| (o.seq, n.seq));
    s.audit_chain_status(account, shown).await.unwrap()
}

/// `n` events of `account` in clear, a day apart from `T0`.
async fn history(s: &Storage, account: &str, n: i64) {
    for i in 0..n {
        s.append_audit(event(
            account,
            if i % 2 == 0 {
                "CODE_REVOKED"
            } else {
                "EMAIL_UPDATED"
            },
            T0 + i * DAY,
            &[
                ("reason", "lost it at the zoo"),
                ("email_hint", "a***@example.com"),
                ("i", &i.to_string()),
            ],
        ))
        .await
        .unwrap();
    }
}

async fn rows_in_clear_are_sealed_and_the_trail_still_verifies(db: &TestDb) {
    let (clear, sealed) = writers(db);
    history(&clear, "acct", 6).await;
    history(&clear, "other", 2).await;
    // The trail as the old release left it: the reader without a sealer sees it in clear.
    let before = clear.list_audit_events("acct", None, 100).await.unwrap();
    assert!(before.iter().all(|r| r.client.ip.is_some()));

    let mut passes = 0;
    while let Some(n) = sealed.reseal_clear_trails(T0 + 10 * DAY, 3).await.unwrap() {
        passes += 1;
        assert!(passes < 20, "the scan ends (last pass sealed {n})");
    }
    // Nothing personal left in clear: a reader without the sealer sees no client, no hint,
    // no free-text reason; a refusal-like detail that is not personal stays.
    for account in ["acct", "other"] {
        for r in clear.list_audit_events(account, None, 100).await.unwrap() {
            assert_eq!(r.client, ClientInfo::default(), "{r:?}");
            assert!(!r.details.contains_key("email_hint"), "{r:?}");
            assert_eq!(
                r.details.contains_key("reason"),
                r.kind == "EMAIL_UPDATED",
                "only a revocation's reason is free text: {r:?}"
            );
            assert!(r.details.contains_key("i"));
        }
        assert!(chain_of(&sealed, account).await.valid, "{account}");
    }
    // With the sealer, every detail reads as before.
    let after = sealed.list_audit_events("acct", None, 100).await.unwrap();
    assert_eq!(
        after
            .iter()
            .map(|r| (&r.client, &r.details))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|r| (&r.client, &r.details))
            .collect::<Vec<_>>()
    );
    // New appends continue the chain over the sealed rows.
    sealed
        .append_audit(event("acct", "CODE_CREATED", T0 + 11 * DAY, &[]))
        .await
        .unwrap();
    assert!(chain_of(&sealed, "acct").await.valid);
    // A row an old replica writes in clear during a rolling deploy is found by the next pass.
    clear
        .append_audit(event(
            "acct",
            "CODE_REVOKED",
            T0 + 12 * DAY,
            &[("reason", "x")],
        ))
        .await
        .unwrap();
    assert_eq!(
        sealed.reseal_clear_trails(T0 + 13 * DAY, 10).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        sealed.reseal_clear_trails(T0 + 13 * DAY, 10).await.unwrap(),
        None
    );
    assert!(chain_of(&sealed, "acct").await.valid);
}

async fn a_broken_trail_is_sealed_but_stays_broken(db: &TestDb) {
    let (clear, sealed) = writers(db);
    history(&clear, "acct", 4).await;
    db.execute("UPDATE {schema}.audit_events SET kind = 'CODE_CREATED' WHERE seq = (SELECT MIN(seq) FROM {schema}.audit_events)")
        .await;
    assert!(!chain_of(&sealed, "acct").await.valid);
    sealed.reseal_trail("acct", T0 + 5 * DAY).await.unwrap();
    for r in clear.list_audit_events("acct", None, 100).await.unwrap() {
        assert_eq!(r.client, ClientInfo::default());
    }
    assert!(
        !chain_of(&sealed, "acct").await.valid,
        "sealing never launders a break"
    );
}

async fn pruning_leaves_a_trail_that_verifies_and_a_cut_or_forged_base_breaks_it(db: &TestDb) {
    let (_, s) = writers(db);
    history(&s, "acct", 10).await;
    // Anchor and checkpoint it, as a read does.
    assert!(chain_of(&s, "acct").await.valid);
    let report = s.prune_audit(T0 + 4 * DAY + 1, 1000, "").await.unwrap();
    assert_eq!(report.account_events, 5);
    let left = s.list_audit_events("acct", None, 100).await.unwrap();
    assert_eq!(left.len(), 5);
    assert_eq!(left.last().unwrap().details["i"], "5");
    assert!(chain_of(&s, "acct").await.valid, "a pruned trail verifies");
    // Pruning again finds nothing more; the newest row is never pruned.
    assert_eq!(
        s.prune_audit(T0 + 4 * DAY + 1, 1000, "")
            .await
            .unwrap()
            .account_events,
        0
    );
    assert_eq!(
        s.prune_audit(T0 + 100 * DAY, 1000, "")
            .await
            .unwrap()
            .account_events,
        4
    );
    assert_eq!(
        s.list_audit_events("acct", None, 100).await.unwrap().len(),
        1
    );
    assert!(chain_of(&s, "acct").await.valid);
    s.append_audit(event("acct", "CODE_CREATED", T0 + 101 * DAY, &[]))
        .await
        .unwrap();
    assert!(chain_of(&s, "acct").await.valid);

    // Deleting the oldest rows without the key (a cut at the start) breaks it...
    history(&s, "cut", 4).await;
    assert!(chain_of(&s, "cut").await.valid);
    db.execute("DELETE FROM {schema}.audit_events WHERE seq = (SELECT MIN(seq) FROM {schema}.audit_events WHERE account_id = 'cut')")
        .await;
    assert!(!chain_of(&s, "cut").await.valid, "a cut at the start");
    // ...and so does a base moved without the key.
    history(&s, "forged", 4).await;
    assert!(chain_of(&s, "forged").await.valid);
    s.prune_audit(T0 + DAY + 1, 1000, "").await.unwrap();
    assert!(chain_of(&s, "forged").await.valid);
    db.execute(
        "UPDATE {schema}.audit_heads SET base_seq = base_seq + 1 WHERE account_id = 'forged'",
    )
    .await;
    assert!(!chain_of(&s, "forged").await.valid, "a forged base");
}

async fn racing_pruners_prune_each_row_once(db: &TestDb) {
    let (_, s) = writers(db);
    for a in 0..8 {
        history(&s, &format!("acct-{a}"), 6).await;
        assert!(chain_of(&s, &format!("acct-{a}")).await.valid);
    }
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let s = s.clone();
        set.spawn(async move { s.prune_audit(T0 + 3 * DAY + 1, 1000, "").await });
    }
    let mut pruned = 0;
    while let Some(done) = set.join_next().await {
        pruned += done.unwrap().unwrap().account_events;
    }
    assert_eq!(pruned, 8 * 4, "each old row pruned by exactly one pruner");
    for a in 0..8 {
        let account = format!("acct-{a}");
        assert_eq!(
            s.list_audit_events(&account, None, 100)
                .await
                .unwrap()
                .len(),
            2
        );
        assert!(chain_of(&s, &account).await.valid);
    }
}

async fn a_trail_that_does_not_verify_is_not_pruned(db: &TestDb) {
    let (_, s) = writers(db);
    history(&s, "acct", 6).await;
    assert!(chain_of(&s, "acct").await.valid);
    db.execute("UPDATE {schema}.audit_events SET details = '{}' WHERE seq = (SELECT MIN(seq) FROM {schema}.audit_events)")
        .await;
    let report = s.prune_audit(T0 + 3 * DAY + 1, 1000, "").await.unwrap();
    assert_eq!((report.account_events, report.kept_broken), (0, 1));
    assert_eq!(
        s.list_audit_events("acct", None, 100).await.unwrap().len(),
        6
    );
    assert!(!chain_of(&s, "acct").await.valid);
}

/// An attacker deletes the oldest rows and puts in their place an "unlinked legacy" row that
/// carries the deleted row's link (so the next row seems to follow it): the trail does not
/// verify, pruning keeps it, and sealing never links it again.
async fn a_forged_unlinked_row_is_never_blessed_by_pruning_or_sealing(db: &TestDb) {
    let (clear, s) = writers(db);
    history(&clear, "acct", 6).await;
    assert!(chain_of(&s, "acct").await.valid);
    db.execute(
        "INSERT INTO {schema}.audit_events (seq, event_id, account_id, kind, occurred_at, client_ip, details, chain_key_id, chain_hash) \
         SELECT -1, 'forged', 'acct', 'CODE_CREATED', 1, '192.0.2.1', '{}', NULL, chain_hash FROM {schema}.audit_events \
         WHERE account_id = 'acct' ORDER BY seq LIMIT 1 OFFSET 1",
    )
    .await;
    db.execute("DELETE FROM {schema}.audit_events WHERE account_id = 'acct' AND seq > 0 AND seq IN (SELECT seq FROM {schema}.audit_events WHERE account_id = 'acct' AND seq > 0 ORDER BY seq LIMIT 2)")
        .await;
    assert!(!chain_of(&s, "acct").await.valid, "a forged unlinked row");
    let report = s.prune_audit(T0 + 3 * DAY + 1, 1000, "").await.unwrap();
    assert_eq!((report.account_events, report.kept_broken), (0, 1));
    s.reseal_trail("acct", T0 + 10 * DAY).await.unwrap();
    assert!(
        !chain_of(&s, "acct").await.valid,
        "sealing does not bless it"
    );
}

async fn a_row_put_behind_the_base_breaks_the_trail(db: &TestDb) {
    let (_, s) = writers(db);
    history(&s, "acct", 6).await;
    assert!(chain_of(&s, "acct").await.valid);
    assert_eq!(
        s.prune_audit(T0 + 2 * DAY + 1, 1000, "")
            .await
            .unwrap()
            .account_events,
        3
    );
    assert!(chain_of(&s, "acct").await.valid);
    db.execute(
        "INSERT INTO {schema}.audit_events (seq, event_id, account_id, kind, occurred_at, details) \
         VALUES (-5, 'planted', 'acct', 'CODE_CREATED', 1, '{}')",
    )
    .await;
    let status = chain_of(&s, "acct").await;
    assert!(!status.valid);
    assert_eq!(status.first_broken_event_id.as_deref(), Some("planted"));
}

async fn details_that_are_not_a_map_are_sealed_whole(db: &TestDb) {
    let (clear, s) = writers(db);
    history(&clear, "acct", 2).await;
    db.execute(
        "INSERT INTO {schema}.audit_events (event_id, account_id, kind, occurred_at, client_ip, details) \
         VALUES ('odd', 'acct', 'CODE_REVOKED', 5, '192.0.2.9', '[\"not a map\"]')",
    )
    .await;
    // One odd row stops neither the account's sealing nor the scan.
    s.reseal_trail("acct", T0 + 10 * DAY).await.unwrap();
    for r in clear.list_audit_events("acct", None, 100).await.unwrap() {
        assert_eq!(r.client, ClientInfo::default(), "{r:?}");
    }
}

async fn an_account_that_keeps_its_events_does_not_hold_back_the_others(db: &TestDb) {
    let (_, s) = writers(db);
    for account in ["a-broken", "b-fine"] {
        history(&s, account, 4).await;
        assert!(chain_of(&s, account).await.valid);
    }
    db.execute("UPDATE {schema}.audit_events SET details = '{}' WHERE seq = (SELECT MIN(seq) FROM {schema}.audit_events WHERE account_id = 'a-broken')")
        .await;
    // One account per pass: the broken one first, then the pass goes on after it.
    let first = s.prune_audit(T0 + 2 * DAY + 1, 1, "").await.unwrap();
    assert_eq!((first.account_events, first.kept_broken), (0, 1));
    assert_eq!(first.next_account.as_deref(), Some("a-broken"));
    let second = s
        .prune_audit(T0 + 2 * DAY + 1, 1, "a-broken")
        .await
        .unwrap();
    assert_eq!(
        second.account_events, 1,
        "a batch of 1 prunes 1 row of 1 account"
    );
    assert_eq!(second.next_account.as_deref(), Some("b-fine"));
    assert_eq!(
        s.list_audit_events("b-fine", None, 100)
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(chain_of(&s, "b-fine").await.valid);
}
